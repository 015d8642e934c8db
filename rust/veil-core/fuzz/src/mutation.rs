//! Damage done to a genuine message before it is parsed: whatever it is, the parser must fail
//! cleanly unless the bytes came out unchanged.
//!
//! ```text
//! mutation        = kind (1) ‖ fields
//!   0 none
//!   1 flip bit      at (u16) ‖ bit (1)          at modulo the length, bit modulo 8
//!   2 truncate      len (u16)                    keeps the first len bytes
//!   3 append        bytes
//!   4 insert        at (u16) ‖ bytes             at modulo the length + 1
//!   5 remove        at (u16) ‖ len (u16)
//!   6 overwrite     at (u16) ‖ bytes
//! record mutation = kind (1) ‖ fields            (on a list of link records)
//!   0 bytes         mutation                     on the concatenated records
//!   1 swap          i (1) ‖ j (1)                indices modulo the count
//!   2 duplicate     i (1)                        the copy follows the original
//!   3 drop          i (1)
//! ```

use crate::input::{Reader, Writer};

/// A change to a byte string (it may leave the bytes as they were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    None,
    FlipBit { at: u16, bit: u8 },
    Truncate { len: u16 },
    Append(Vec<u8>),
    Insert { at: u16, bytes: Vec<u8> },
    Remove { at: u16, len: u16 },
    Overwrite { at: u16, bytes: Vec<u8> },
}

impl Mutation {
    pub fn read(r: &mut Reader<'_>) -> Self {
        match r.byte() % 7 {
            0 => Self::None,
            1 => Self::FlipBit {
                at: r.u16(),
                bit: r.byte(),
            },
            2 => Self::Truncate { len: r.u16() },
            3 => Self::Append(r.bytes().to_vec()),
            4 => Self::Insert {
                at: r.u16(),
                bytes: r.bytes().to_vec(),
            },
            5 => Self::Remove {
                at: r.u16(),
                len: r.u16(),
            },
            _ => Self::Overwrite {
                at: r.u16(),
                bytes: r.bytes().to_vec(),
            },
        }
    }

    #[must_use]
    pub fn write(&self, w: Writer) -> Writer {
        match self {
            Self::None => w.byte(0),
            Self::FlipBit { at, bit } => w.byte(1).u16(*at).byte(*bit),
            Self::Truncate { len } => w.byte(2).u16(*len),
            Self::Append(bytes) => w.byte(3).bytes(bytes),
            Self::Insert { at, bytes } => w.byte(4).u16(*at).bytes(bytes),
            Self::Remove { at, len } => w.byte(5).u16(*at).u16(*len),
            Self::Overwrite { at, bytes } => w.byte(6).u16(*at).bytes(bytes),
        }
    }

    pub fn apply(&self, target: &mut Vec<u8>) {
        let len = target.len();
        match self {
            Self::None => {}
            Self::FlipBit { at, bit } => {
                if len > 0 {
                    target[usize::from(*at) % len] ^= 1 << (bit % 8);
                }
            }
            Self::Truncate { len: keep } => target.truncate(usize::from(*keep)),
            Self::Append(bytes) => target.extend_from_slice(bytes),
            Self::Insert { at, bytes } => {
                let at = usize::from(*at) % (len + 1);
                target.splice(at..at, bytes.iter().copied());
            }
            Self::Remove { at, len: n } => {
                let at = usize::from(*at).min(len);
                let end = (at + usize::from(*n)).min(len);
                target.drain(at..end);
            }
            Self::Overwrite { at, bytes } => {
                if len > 0 {
                    let at = usize::from(*at) % len;
                    let n = bytes.len().min(len - at);
                    target[at..at + n].copy_from_slice(&bytes[..n]);
                }
            }
        }
    }

    /// The mutated copy of `bytes`.
    #[must_use]
    pub fn applied(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        self.apply(&mut out);
        out
    }
}

/// A change to a stream of link records: to its bytes, or to the order of whole records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordMutation {
    Bytes(Mutation),
    Swap(u8, u8),
    Duplicate(u8),
    Drop(u8),
}

impl RecordMutation {
    pub fn read(r: &mut Reader<'_>) -> Self {
        match r.byte() % 4 {
            0 => Self::Bytes(Mutation::read(r)),
            1 => Self::Swap(r.byte(), r.byte()),
            2 => Self::Duplicate(r.byte()),
            _ => Self::Drop(r.byte()),
        }
    }

    #[must_use]
    pub fn write(&self, w: Writer) -> Writer {
        match self {
            Self::Bytes(mutation) => mutation.write(w.byte(0)),
            Self::Swap(i, j) => w.byte(1).byte(*i).byte(*j),
            Self::Duplicate(i) => w.byte(2).byte(*i),
            Self::Drop(i) => w.byte(3).byte(*i),
        }
    }

    /// The records, changed, as the bytes that go on the wire.
    #[must_use]
    pub fn wire(&self, records: &[Vec<u8>]) -> Vec<u8> {
        let mut records = records.to_vec();
        let count = records.len();
        let index = |i: u8| usize::from(i) % count.max(1);
        match self {
            Self::Bytes(mutation) => return mutation.applied(&records.concat()),
            Self::Swap(i, j) if count > 0 => records.swap(index(*i), index(*j)),
            Self::Duplicate(i) if count > 0 => {
                let copy = records[index(*i)].clone();
                records.insert(index(*i) + 1, copy);
            }
            Self::Drop(i) if count > 0 => {
                records.remove(index(*i));
            }
            _ => {}
        }
        records.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutation_reads_back_as_written_and_applies_within_bounds() {
        let mutations = [
            Mutation::None,
            Mutation::FlipBit { at: 9, bit: 3 },
            Mutation::Truncate { len: 2 },
            Mutation::Append(vec![1, 2]),
            Mutation::Insert {
                at: 1,
                bytes: vec![7],
            },
            Mutation::Remove { at: 3, len: 100 },
            Mutation::Overwrite {
                at: 2,
                bytes: vec![9, 9, 9, 9],
            },
        ];
        let expected: [&[u8]; 7] = [
            b"\x00\x01\x02\x03",
            b"\x00\x09\x02\x03",
            b"\x00\x01",
            b"\x00\x01\x02\x03\x01\x02",
            b"\x00\x07\x01\x02\x03",
            b"\x00\x01\x02",
            b"\x00\x01\x09\x09",
        ];
        for (mutation, expected) in mutations.iter().zip(expected) {
            let bytes = mutation.write(Writer::new()).finish();
            assert_eq!(&Mutation::read(&mut Reader::new(&bytes)), mutation);
            assert_eq!(mutation.applied(&[0, 1, 2, 3]), expected, "{mutation:?}");
            assert!(mutation.applied(&[]).len() <= 2);
        }
    }

    #[test]
    fn record_mutations_reorder_whole_records() {
        let records = [vec![1], vec![2, 2], vec![3]];
        assert_eq!(RecordMutation::Swap(0, 5).wire(&records), [3, 2, 2, 1]);
        assert_eq!(
            RecordMutation::Duplicate(1).wire(&records),
            [1, 2, 2, 2, 2, 3]
        );
        assert_eq!(RecordMutation::Drop(4).wire(&records), [1, 3]);
        assert_eq!(RecordMutation::Drop(0).wire(&[]), Vec::<u8>::new());
    }
}
