//! The byte format of the structured fuzz inputs: a reader that never fails (missing bytes read as
//! zeros, missing lengths as empty), so every input the fuzzer makes is a valid one, and the writer
//! that the seed corpus is written with.
//!
//! ```text
//! byte  = 1 byte
//! u16   = 2 bytes, big-endian
//! array = N bytes
//! bytes = length (u16) ‖ that many bytes (fewer if the input ends first)
//! rest  = every byte left
//! ```

/// Reads a fuzz input front to back.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer only at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    pub fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let [high, low] = self.array();
        u16::from_be_bytes([high, low])
    }

    /// `N` bytes, zero-padded if the input ends first.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let bytes = self.take(N);
        out[..bytes.len()].copy_from_slice(bytes);
        out
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16());
        self.take(len)
    }

    /// Every byte left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes what [`Reader`] reads: the seed corpus is made with it.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn byte(mut self, value: u8) -> Self {
        self.out.push(value);
        self
    }

    #[must_use]
    pub fn u16(mut self, value: u16) -> Self {
        self.out.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Bytes as they are (an array, or the rest).
    #[must_use]
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// A length-prefixed byte string (at most 65,535 bytes).
    #[must_use]
    pub fn bytes(self, bytes: &[u8]) -> Self {
        let len = u16::try_from(bytes.len()).expect("a seed's byte string fits a u16 length");
        self.u16(len).raw(bytes)
    }

    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_reads_what_the_writer_wrote_and_zeros_past_the_end() {
        let data = Writer::new()
            .byte(7)
            .u16(0x0102)
            .raw(&[9, 9, 9])
            .bytes(b"abc")
            .raw(b"tail")
            .finish();
        let mut r = Reader::new(&data);
        assert_eq!(r.byte(), 7);
        assert_eq!(r.u16(), 0x0102);
        assert_eq!(r.array::<3>(), [9, 9, 9]);
        assert_eq!(r.bytes(), b"abc");
        assert_eq!(r.rest(), b"tail");
        assert!(r.is_empty());
        assert_eq!(r.byte(), 0);
        assert_eq!(r.array::<2>(), [0, 0]);
        assert_eq!(r.bytes(), b"");
    }
}
