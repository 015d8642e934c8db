//! Node links (`veil_core::link`): the handshake messages and records a node receives from another.
//!
//! - [`handshake`]: `mode (1) ‖ …` —
//!   `0 ‖ message (rest)`: `respond` to arbitrary first messages;
//!   `1 ‖ answer (rest)`: `Initiator::finish` with arbitrary answers (no answer can be forged);
//!   `2 ‖ timestamp (8) ‖ mutation`: a genuine first message (to a responder key made for the
//!   execution), mutated: accepted exactly when unchanged, with its timestamp;
//!   `3 ‖ mutation`: a genuine answer, mutated: accepted exactly when unchanged.
//! - [`records`]: `mode (1) ‖ direction (1) ‖ …` on an established link —
//!   `0 ‖ piece (bytes)…`: arbitrary bytes, in pieces, to `open`; nothing authenticates;
//!   `1 ‖ count-1 (1) ‖ [data (bytes) ‖ padding KiB (1) ‖ rekey (1)]… ‖ record mutation ‖
//!   piece size (u16)…`: genuine records, mutated, delivered in pieces of the given sizes (the rest in
//!   one piece): what opens is a prefix of what was sealed, a changed stream fails, and after a
//!   failure everything fails;
//!   `2 ‖ count-1 (1) ‖ [plaintext (bytes)]…`: records that authenticate but carry any plaintext
//!   (flags and data), sealed by `snow` itself (always the initiator; the direction byte is unused):
//!   each opens exactly when its flags are valid and no record before it failed.

use snow::params::NoiseParams;
use snow::{Builder, TransportState};
use veil_core::link::{
    self, Initiator, LinkCipher, FLAG_REKEY, LENGTH_PREFIX, MAX_MESSAGE, MAX_RECORD_DATA,
    NOISE_PROTOCOL, PROLOGUE, RESPONSE_LEN,
};
use veil_core::Error;

use crate::input::{Reader, Writer};
use crate::keys::{
    fresh, link_initiator_public, link_responder_public, LINK_INITIATOR_SECRET,
    LINK_RESPONDER_SECRET,
};
use crate::mutation::{Mutation, RecordMutation};

/// The clock in the first messages the targets make (any value will do).
const TIMESTAMP_MS: u64 = 1_700_000_000_000;

fn initiator(timestamp_ms: u64) -> Initiator {
    Initiator::new(
        &LINK_INITIATOR_SECRET,
        &link_responder_public(),
        timestamp_ms,
    )
    .expect("initiator")
}

/// An established link: (initiator, responder).
fn pair() -> (LinkCipher, LinkCipher) {
    let initiator = initiator(TIMESTAMP_MS);
    let response = link::respond(&LINK_RESPONDER_SECRET, initiator.message()).expect("respond");
    let initiator = initiator.finish(&response.answer).expect("finish");
    (initiator, response.cipher)
}

/// The cipher that sends and the cipher that receives, by the input's direction byte.
fn ends(direction: u8) -> (LinkCipher, LinkCipher) {
    let (initiator, responder) = pair();
    if direction % 2 == 0 {
        (initiator, responder)
    } else {
        (responder, initiator)
    }
}

/// Both ends of a link just made can talk.
fn check_link(initiator: &mut LinkCipher, responder: &mut LinkCipher, responder_public: [u8; 32]) {
    assert_eq!(initiator.remote_static(), &responder_public);
    assert_eq!(responder.remote_static(), &link_initiator_public());
    let there = initiator.seal(b"ping", false).expect("seal");
    assert_eq!(responder.open(&there).expect("open"), b"ping");
    let back = responder.seal(b"pong", true).expect("seal");
    assert_eq!(initiator.open(&back).expect("open"), b"pong");
}

/// A cipher that has failed refuses everything, sealing included.
fn check_poisoned(cipher: &mut LinkCipher, peer: &mut LinkCipher) {
    let genuine = peer.seal(b"after the failure", false).expect("seal");
    assert_eq!(cipher.open(&genuine), Err(Error::Decryption));
    assert_eq!(cipher.open(&[]), Err(Error::Decryption));
    assert_eq!(cipher.seal(b"x", false), Err(Error::Decryption));
    assert_eq!(cipher.pending(), 0);
}

pub fn handshake(data: &[u8]) {
    let mut r = Reader::new(data);
    match r.byte() % 4 {
        0 => match link::respond(&LINK_RESPONDER_SECRET, r.rest()) {
            Ok(response) => {
                assert_eq!(response.answer.len(), LENGTH_PREFIX + RESPONSE_LEN);
                assert_eq!(response.cipher.remote_static(), &response.remote);
            }
            Err(error) => assert_eq!(error, Error::Decryption),
        },
        1 => assert_eq!(
            initiator(TIMESTAMP_MS).finish(r.rest()).err(),
            Some(Error::Decryption),
            "an answer made without the handshake's keys finished it"
        ),
        2 => {
            // To a responder made for the execution (see `keys::fresh`): a genuine first message
            // from an earlier execution would be a replay, which the caller refuses by timestamp.
            let responder = fresh();
            let timestamp_ms = u64::from_be_bytes(r.array());
            let initiator = Initiator::new(&LINK_INITIATOR_SECRET, &responder.public, timestamp_ms)
                .expect("initiator");
            let message = Mutation::read(&mut r).applied(initiator.message());
            match link::respond(&responder.secret, &message) {
                Ok(mut response) => {
                    assert_eq!(
                        message,
                        initiator.message(),
                        "a changed message was accepted"
                    );
                    assert_eq!(response.remote, link_initiator_public());
                    assert_eq!(response.timestamp_ms, timestamp_ms);
                    let mut initiator = initiator.finish(&response.answer).expect("finish");
                    check_link(&mut initiator, &mut response.cipher, responder.public);
                }
                Err(error) => {
                    assert_eq!(error, Error::Decryption);
                    assert_ne!(
                        message,
                        initiator.message(),
                        "a genuine message was refused"
                    );
                }
            }
        }
        _ => {
            let initiator = initiator(TIMESTAMP_MS);
            let mut response =
                link::respond(&LINK_RESPONDER_SECRET, initiator.message()).expect("respond");
            let answer = Mutation::read(&mut r).applied(&response.answer);
            match initiator.finish(&answer) {
                Ok(mut initiator) => {
                    assert_eq!(answer, response.answer, "a changed answer was accepted");
                    check_link(
                        &mut initiator,
                        &mut response.cipher,
                        link_responder_public(),
                    );
                }
                Err(error) => {
                    assert_eq!(error, Error::Decryption);
                    assert_ne!(answer, response.answer, "a genuine answer was refused");
                }
            }
        }
    }
}

pub fn records(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.byte() % 3;
    let direction = r.byte();
    match mode {
        0 => arbitrary_records(&mut r, direction),
        1 => mutated_records(&mut r, direction),
        _ => any_plaintext(&mut r),
    }
}

/// Opens `pieces` in turn; returns the data opened and whether (and where) the cipher failed.
/// Checks that nothing opens after a failure and that at most one record's bytes wait.
fn open_pieces<'a>(
    receiver: &mut LinkCipher,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> (Vec<u8>, bool) {
    let mut opened = Vec::new();
    let mut failed = false;
    for piece in pieces {
        match receiver.open(piece) {
            Ok(data) => {
                assert!(!failed, "a record opened after a failure");
                opened.extend_from_slice(&data);
            }
            Err(error) => {
                assert_eq!(error, Error::Decryption);
                failed = true;
            }
        }
        assert!(receiver.pending() < LENGTH_PREFIX + MAX_MESSAGE);
    }
    (opened, failed)
}

fn arbitrary_records(r: &mut Reader<'_>, direction: u8) {
    let (mut sender, mut receiver) = ends(direction);
    let pieces = std::iter::from_fn(|| (!r.is_empty()).then(|| r.bytes()));
    let (opened, failed) = open_pieces(&mut receiver, pieces);
    assert!(opened.is_empty(), "bytes nobody sealed opened");
    if failed {
        check_poisoned(&mut receiver, &mut sender);
    }
}

fn mutated_records(r: &mut Reader<'_>, direction: u8) {
    let (mut sender, mut receiver) = ends(direction);
    let count = 1 + usize::from(r.byte() % 6);
    let mut sent = Vec::new();
    let mut records = Vec::new();
    for _ in 0..count {
        let mut data = r.bytes().to_vec();
        data.resize(data.len() + 1024 * usize::from(r.byte()), 0xA5);
        let sealed = sender.seal(&data, r.byte() % 2 == 1).expect("seal");
        records.extend(split_records(&sealed));
        sent.extend_from_slice(&data);
    }
    let genuine = records.concat();
    let wire = RecordMutation::read(r).wire(&records);

    let mut rest = &wire[..];
    let pieces = std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        let size = if r.is_empty() {
            rest.len()
        } else {
            usize::from(r.u16()).min(rest.len())
        };
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        Some(piece)
    });
    let (opened, failed) = open_pieces(&mut receiver, pieces);

    assert!(sent.starts_with(&opened), "opened data that was not sent");
    if failed {
        assert_ne!(wire, genuine, "genuine records failed");
        check_poisoned(&mut receiver, &mut sender);
    } else {
        // Every byte consumed was a genuine record, in order.
        let consumed = wire.len() - receiver.pending();
        assert_eq!(
            wire[..consumed],
            genuine[..consumed],
            "changed records opened"
        );
        if wire == genuine {
            assert_eq!(opened, sent);
            assert_eq!(receiver.pending(), 0);
        }
    }
}

/// Splits the output of `seal` (trusted) into its records.
fn split_records(mut sealed: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    while !sealed.is_empty() {
        let len = usize::from(u16::from_be_bytes([sealed[0], sealed[1]]));
        let (record, rest) = sealed.split_at(LENGTH_PREFIX + len);
        records.push(record.to_vec());
        sealed = rest;
    }
    records
}

/// `snow`'s own initiator (its default primitives) and our responder, linked.
fn reference_pair() -> (TransportState, LinkCipher) {
    let params: NoiseParams = NOISE_PROTOCOL.parse().expect("Noise parameters");
    let responder = link_responder_public();
    let mut reference = Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(&LINK_INITIATOR_SECRET))
        .and_then(|b| b.remote_public_key(&responder))
        .and_then(Builder::build_initiator)
        .expect("reference initiator");
    let mut first = vec![0u8; MAX_MESSAGE];
    let n = reference
        .write_message(&TIMESTAMP_MS.to_be_bytes(), &mut first)
        .expect("write");
    let mut message = u16::try_from(n).expect("length").to_be_bytes().to_vec();
    message.extend_from_slice(&first[..n]);
    let response = link::respond(&LINK_RESPONDER_SECRET, &message).expect("respond");
    let mut payload = [0u8; 64];
    reference
        .read_message(&response.answer[LENGTH_PREFIX..], &mut payload)
        .expect("read answer");
    let reference = reference.into_transport_mode().expect("transport");
    (reference, response.cipher)
}

fn any_plaintext(r: &mut Reader<'_>) {
    let (mut reference, mut ours) = reference_pair();
    let count = 1 + usize::from(r.byte() % 6);
    let mut failed = false;
    let mut buffer = vec![0u8; MAX_MESSAGE];
    for _ in 0..count {
        let plaintext = r.bytes();
        let plaintext = &plaintext[..plaintext.len().min(MAX_RECORD_DATA + 1)];
        let n = reference
            .write_message(plaintext, &mut buffer)
            .expect("write");
        let mut record = u16::try_from(n).expect("length").to_be_bytes().to_vec();
        record.extend_from_slice(&buffer[..n]);
        let valid = matches!(plaintext.first(), Some(flags) if flags & !FLAG_REKEY == 0);
        match ours.open(&record) {
            Ok(data) => {
                assert!(valid && !failed, "a record with invalid flags opened");
                assert_eq!(data, plaintext[1..]);
                if plaintext[0] & FLAG_REKEY != 0 {
                    reference.rekey_outgoing();
                }
            }
            Err(error) => {
                assert_eq!(error, Error::Decryption);
                assert!(!valid || failed, "a valid record failed");
                failed = true;
            }
        }
    }
}

#[must_use]
pub fn handshake_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let first = initiator(TIMESTAMP_MS).message().to_vec();
    let answer = link::respond(&LINK_RESPONDER_SECRET, &first)
        .expect("respond")
        .answer;
    let mutated = |mode: u8, mutation: Mutation| {
        let mut w = Writer::new().byte(mode);
        if mode == 2 {
            w = w.raw(&TIMESTAMP_MS.to_be_bytes());
        }
        mutation.write(w).finish()
    };
    vec![
        (
            "respond-genuine",
            Writer::new().byte(0).raw(&first).finish(),
        ),
        (
            "respond-short",
            Writer::new().byte(0).raw(&[0, 104, 1]).finish(),
        ),
        (
            "finish-stale-answer",
            Writer::new().byte(1).raw(&answer).finish(),
        ),
        ("first-unchanged", mutated(2, Mutation::None)),
        (
            "first-flipped",
            mutated(2, Mutation::FlipBit { at: 50, bit: 0 }),
        ),
        (
            "first-length",
            mutated(
                2,
                Mutation::Overwrite {
                    at: 0,
                    bytes: vec![0, 103],
                },
            ),
        ),
        ("answer-unchanged", mutated(3, Mutation::None)),
        (
            "answer-truncated",
            mutated(3, Mutation::Truncate { len: 49 }),
        ),
    ]
}

#[must_use]
pub fn records_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (mut sender, _) = pair();
    let genuine = sender.seal(b"hello", false).expect("seal");
    let sealed = |direction: u8, messages: &[(&[u8], u8, bool)], mutation: RecordMutation| {
        let count = u8::try_from(messages.len() - 1).expect("count");
        let w = messages.iter().fold(
            Writer::new().byte(1).byte(direction).byte(count),
            |w, (data, kib, rekey)| w.bytes(data).byte(*kib).byte(u8::from(*rekey)),
        );
        mutation.write(w).finish()
    };
    let three: &[(&[u8], u8, bool)] = &[(b"one", 0, false), (b"two", 0, true), (b"", 0, true)];
    let plaintexts = |texts: &[&[u8]]| {
        let count = u8::try_from(texts.len() - 1).expect("count");
        texts
            .iter()
            .fold(Writer::new().byte(2).byte(0).byte(count), |w, text| {
                w.bytes(text)
            })
            .finish()
    };
    vec![
        (
            "arbitrary-pieces",
            Writer::new()
                .byte(0)
                .byte(0)
                .bytes(&genuine[..7])
                .bytes(&genuine[7..])
                .finish(),
        ),
        (
            "sealed-unchanged",
            sealed(0, three, RecordMutation::Bytes(Mutation::None)),
        ),
        (
            "sealed-swapped",
            sealed(1, three, RecordMutation::Swap(0, 1)),
        ),
        (
            "sealed-duplicated",
            sealed(0, three, RecordMutation::Duplicate(0)),
        ),
        ("sealed-dropped", sealed(0, three, RecordMutation::Drop(1))),
        (
            "sealed-flipped",
            sealed(
                0,
                three,
                RecordMutation::Bytes(Mutation::FlipBit { at: 30, bit: 7 }),
            ),
        ),
        (
            "sealed-large-in-pieces",
            Writer::new()
                .raw(&sealed(
                    0,
                    &[(b"big", 70, false)],
                    RecordMutation::Bytes(Mutation::None),
                ))
                .u16(1000)
                .u16(0)
                .u16(65_535)
                .finish(),
        ),
        (
            "plaintext-flags",
            plaintexts(&[b"\x00data", b"\x01rekey", b"\x00after", b"\x02bad"]),
        ),
        ("plaintext-empty", plaintexts(&[b""])),
    ]
}
