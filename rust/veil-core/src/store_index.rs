//! Storage encodings of the service node (`python/veil/node/keys.py`, `docs/storage.md`).
//!
//! - [`message_key`]: account(33) ‖ (namespace + 0x8000) as u16 BE ‖ `timestamp_ms` u64 BE ‖ hash(32).
//! - [`message_hash`]: BLAKE2b-256(account ‖ namespace as i16 BE ‖ data).
//! - [`retrieve_json`]: the `messages` array of a `retrieve` answer, byte for byte what the Python
//!   node produces with `orjson.dumps` of a list of `{"hash", "timestamp", "expiration", "data"}`.

use crate::error::{Error, Result};
use crate::hash;

pub const ACCOUNT_LEN: usize = 33;
pub const HASH_LEN: usize = 32;
pub const MESSAGE_KEY_LEN: usize = ACCOUNT_LEN + 2 + 8 + HASH_LEN;

fn check_len(what: &'static str, bytes: &[u8], expected: usize) -> Result<()> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(Error::InvalidLength {
            what,
            expected,
            actual: bytes.len(),
        })
    }
}

/// The 75-byte key of a message in the messages table.
pub fn message_key(
    account: &[u8],
    namespace: i16,
    timestamp_ms: u64,
    digest: &[u8],
) -> Result<[u8; MESSAGE_KEY_LEN]> {
    check_len("account", account, ACCOUNT_LEN)?;
    check_len("message hash", digest, HASH_LEN)?;
    let mut key = [0u8; MESSAGE_KEY_LEN];
    let (account_part, rest) = key.split_at_mut(ACCOUNT_LEN);
    account_part.copy_from_slice(account);
    let (namespace_part, rest) = rest.split_at_mut(2);
    // The sign bit flipped is namespace + 0x8000 as an unsigned 16-bit integer.
    namespace_part
        .copy_from_slice(&(u16::from_be_bytes(namespace.to_be_bytes()) ^ 0x8000).to_be_bytes());
    let (timestamp_part, digest_part) = rest.split_at_mut(8);
    timestamp_part.copy_from_slice(&timestamp_ms.to_be_bytes());
    digest_part.copy_from_slice(digest);
    Ok(key)
}

/// BLAKE2b-256(account ‖ namespace ‖ data), the namespace in decimal text and left out for
/// namespace 0 — the hash Session's storage servers give a message, so that clients written for
/// them name a message alike on a Veil node.
pub fn message_hash(account: &[u8], namespace: i16, data: &[u8]) -> Result<[u8; HASH_LEN]> {
    check_len("account", account, ACCOUNT_LEN)?;
    let text = if namespace == 0 {
        String::new()
    } else {
        namespace.to_string()
    };
    Ok(hash::blake2b_256(&[account, text.as_bytes(), data]))
}

/// One message of a `retrieve` answer.
#[derive(Debug, Clone, Copy)]
pub struct RetrievedMessage<'a> {
    pub hash: &'a [u8],
    pub timestamp_ms: u64,
    pub expiry_ms: u64,
    pub data: &'a [u8],
}

const PREFIX_HASH: &[u8] = b"{\"hash\":\"";
const PREFIX_TIMESTAMP: &[u8] = b"\",\"timestamp\":";
const PREFIX_EXPIRATION: &[u8] = b",\"expiration\":";
const PREFIX_DATA: &[u8] = b",\"data\":\"";
const SUFFIX: &[u8] = b"\"}";
const UNPADDED_HASH_LEN: usize = 43;

const fn padded_b64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn decimal_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 10 {
        value /= 10;
        len += 1;
    }
    len
}

/// The exact length of [`retrieve_json`]'s output.
pub fn retrieve_json_len(messages: &[RetrievedMessage<'_>]) -> Result<usize> {
    let fixed = PREFIX_HASH.len()
        + UNPADDED_HASH_LEN
        + PREFIX_TIMESTAMP.len()
        + PREFIX_EXPIRATION.len()
        + PREFIX_DATA.len()
        + SUFFIX.len();
    let mut len = 2 + messages.len().saturating_sub(1); // brackets and commas
    for message in messages {
        check_len("message hash", message.hash, HASH_LEN)?;
        len += fixed
            + decimal_len(message.timestamp_ms)
            + decimal_len(message.expiry_ms)
            + padded_b64_len(message.data.len());
    }
    Ok(len)
}

/// The JSON array `[{"hash":…,"timestamp":…,"expiration":…,"data":…},…]`: the hash in standard base64
/// without padding, the data in standard padded base64, no whitespace (as `orjson.dumps`).
pub fn retrieve_json(messages: &[RetrievedMessage<'_>]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; retrieve_json_len(messages)?];
    retrieve_json_into(messages, &mut out)?;
    Ok(out)
}

/// [`retrieve_json`] into `out`, which must be exactly [`retrieve_json_len`] bytes long.
pub fn retrieve_json_into(messages: &[RetrievedMessage<'_>], out: &mut [u8]) -> Result<()> {
    let expected = retrieve_json_len(messages)?;
    check_len("retrieve answer buffer", out, expected)?;
    let mut w = Writer { out, pos: 0 };
    w.put(b"[");
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            w.put(b",");
        }
        w.put(PREFIX_HASH);
        // 32 bytes are 44 padded characters; the last is '=' and is dropped.
        let mut padded = [0u8; UNPADDED_HASH_LEN + 1];
        base64_encode(message.hash, &mut padded);
        w.put(&padded[..UNPADDED_HASH_LEN]);
        w.put(PREFIX_TIMESTAMP);
        w.decimal(message.timestamp_ms);
        w.put(PREFIX_EXPIRATION);
        w.decimal(message.expiry_ms);
        w.put(PREFIX_DATA);
        let data_b64 = w.take(padded_b64_len(message.data.len()));
        base64_encode(message.data, data_b64);
        w.put(SUFFIX);
    }
    w.put(b"]");
    Ok(())
}

/// Writes into a buffer whose length was computed in advance.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn take(&mut self, n: usize) -> &mut [u8] {
        let start = self.pos;
        self.pos += n;
        &mut self.out[start..self.pos]
    }

    fn put(&mut self, bytes: &[u8]) {
        self.take(bytes.len()).copy_from_slice(bytes);
    }

    fn decimal(&mut self, mut value: u64) {
        let digits = self.take(decimal_len(value));
        for digit in digits.iter_mut().rev() {
            // The remainder is below 10.
            *digit = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
        }
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn sextet(n: u32, shift: u32) -> u8 {
    ALPHABET[((n >> shift) & 0x3F) as usize]
}

/// Standard padded base64 of `input` into `out`, which is exactly `padded_b64_len(input.len())`.
fn base64_encode(input: &[u8], out: &mut [u8]) {
    let full = input.chunks_exact(3);
    let tail = full.remainder();
    let mut quads = out.chunks_exact_mut(4);
    for (chunk, quad) in full.zip(&mut quads) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        quad[0] = sextet(n, 18);
        quad[1] = sextet(n, 12);
        quad[2] = sextet(n, 6);
        quad[3] = sextet(n, 0);
    }
    if let Some(quad) = quads.next() {
        match *tail {
            [a] => {
                let n = u32::from(a) << 16;
                quad.copy_from_slice(&[sextet(n, 18), sextet(n, 12), b'=', b'=']);
            }
            [a, b] => {
                let n = u32::from(a) << 16 | u32::from(b) << 8;
                quad.copy_from_slice(&[sextet(n, 18), sextet(n, 12), sextet(n, 6), b'=']);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(input: &[u8]) -> String {
        let mut out = vec![0u8; padded_b64_len(input.len())];
        base64_encode(input, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(input.as_bytes()), expected);
        }
        assert_eq!(b64(&[0xFB, 0xFF, 0xBF]), "+/+/");
    }

    #[test]
    fn message_key_layout() {
        let account = [5u8; 33];
        let digest = [7u8; 32];
        let key = message_key(&account, -32768, 0x0102_0304_0506_0708, &digest).unwrap();
        assert_eq!(key[..33], account);
        assert_eq!(key[33..35], [0, 0]);
        assert_eq!(key[35..43], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(key[43..], digest);
        let key = message_key(&account, 0, 0, &digest).unwrap();
        assert_eq!(key[33..35], [0x80, 0]);
        let key = message_key(&account, 32767, 0, &digest).unwrap();
        assert_eq!(key[33..35], [0xFF, 0xFF]);
        let key = message_key(&account, -1, 0, &digest).unwrap();
        assert_eq!(key[33..35], [0x7F, 0xFF]);
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert!(message_key(&[5u8; 32], 0, 0, &[0u8; 32]).is_err());
        assert!(message_key(&[5u8; 33], 0, 0, &[0u8; 31]).is_err());
        assert!(message_hash(&[5u8; 34], 0, b"").is_err());
        let bad = RetrievedMessage {
            hash: &[0u8; 31],
            timestamp_ms: 0,
            expiry_ms: 0,
            data: b"",
        };
        assert!(retrieve_json(&[bad]).is_err());
        let good = RetrievedMessage {
            hash: &[0u8; 32],
            ..bad
        };
        let mut short = vec![0u8; retrieve_json_len(&[good]).unwrap() - 1];
        assert!(retrieve_json_into(&[good], &mut short).is_err());
    }

    #[test]
    fn message_hash_is_blake2b_of_account_namespace_text_data() {
        let account = [5u8; 33];
        let expected = hash::blake2b_256(&[&account, b"-2", b"hello"]);
        assert_eq!(message_hash(&account, -2, b"hello").unwrap(), expected);
        let expected = hash::blake2b_256(&[&account, b"hello"]);
        assert_eq!(message_hash(&account, 0, b"hello").unwrap(), expected);
    }

    #[test]
    fn retrieve_json_matches_orjson() {
        assert_eq!(retrieve_json(&[]).unwrap(), b"[]");
        let hash: Vec<u8> = (0u8..32).collect();
        let messages = [
            RetrievedMessage {
                hash: &hash,
                timestamp_ms: 1_700_000_000_123,
                expiry_ms: u64::MAX,
                data: b"fo",
            },
            RetrievedMessage {
                hash: &[0xFF; 32],
                timestamp_ms: 0,
                expiry_ms: 9,
                data: b"",
            },
        ];
        let expected = concat!(
            r#"[{"hash":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","timestamp":1700000000123,"#,
            r#""expiration":18446744073709551615,"data":"Zm8="},"#,
            r#"{"hash":"//////////////////////////////////////////8","timestamp":0,"#,
            r#""expiration":9,"data":""}]"#,
        );
        let json = retrieve_json(&messages).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), expected);
    }

    #[test]
    fn decimal_lengths() {
        for (value, len) in [(0, 1), (9, 1), (10, 2), (99, 2), (100, 3), (u64::MAX, 20)] {
            assert_eq!(decimal_len(value), len);
        }
    }
}
