//! The storage RPC's common `store`, read in one call (`python/veil/node/rpc.py`,
//! `StorageRpc.answer_body`).
//!
//! Most stores a node takes are one shape: `{"method": "store", "params": {"pubkey", "timestamp",
//! "ttl", "data"[, "namespace"]}}`, unsigned, as a sender leaves a message in a public inbox.
//! [`plain_store`] reads exactly that shape and nothing else: the JSON, the account's hex, the
//! data's base64 and the message's hash, in one pass with no Python objects in between. Any other
//! body, well-formed or not, gives `None` and is read by the Python parser, which alone answers
//! errors: so a body this accepts is one the Python parser takes with the same values, and every
//! refusal keeps its one wording. `tests/test_store_fast_path.py` checks the two against each
//! other on bodies built to differ in every field.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use crate::store_index::{message_hash, ACCOUNT_LEN, HASH_LEN};

/// A plain `store` request's values.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainStore {
    pub account: [u8; ACCOUNT_LEN],
    pub namespace: i16,
    pub timestamp_ms: u64,
    pub ttl_ms: u64,
    pub data: Vec<u8>,
    pub hash: [u8; HASH_LEN],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    method: &'a str,
    #[serde(borrow)]
    params: Params<'a>,
}

// `&str` fields borrow from the body, so a string with an escape in it does not deserialize: it
// goes to the Python parser, as does every field or type not named here (a duplicate key too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params<'a> {
    pubkey: &'a str,
    timestamp: u64,
    ttl: u64,
    data: &'a str,
    #[serde(default)]
    namespace: Option<i16>,
}

/// The values of `body` if it is a plain `store` (see the module's documentation) whose data,
/// decoded, is at most `max_data` bytes; else `None`.
#[must_use]
pub fn plain_store(body: &[u8], max_data: usize) -> Option<PlainStore> {
    let request: Request<'_> = serde_json::from_slice(body).ok()?;
    if request.method != "store" {
        return None;
    }
    let params = request.params;
    let account = account_hex(params.pubkey)?;
    // The Python parser's bound on the text, before decoding anything.
    if params.data.len() > max_data / 3 * 4 + 4 {
        return None;
    }
    // Padded, canonical (no stray bits in the last character), no whitespace.
    let data = STANDARD.decode(params.data).ok()?;
    if data.len() > max_data {
        return None;
    }
    let namespace = params.namespace.unwrap_or(0);
    let hash = message_hash(&account, namespace, &data).ok()?;
    Some(PlainStore {
        account,
        namespace,
        timestamp_ms: params.timestamp,
        ttl_ms: params.ttl,
        data,
        hash,
    })
}

/// 66 hex digits, either case, as 33 bytes.
fn account_hex(text: &str) -> Option<[u8; ACCOUNT_LEN]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * ACCOUNT_LEN {
        return None;
    }
    let mut account = [0u8; ACCOUNT_LEN];
    for (byte, pair) in account.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(account)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "05aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899";

    fn body(params: &str) -> Vec<u8> {
        format!(r#"{{"method":"store","params":{{{params}}}}}"#).into_bytes()
    }

    #[test]
    fn reads_a_plain_store() {
        let got = plain_store(
            &body(&format!(
                r#""pubkey":"{ACCOUNT}","timestamp":1700000000000,"ttl":86400000,"data":"aGVsbG8=","namespace":-10"#
            )),
            76_800,
        );
        let store = got.unwrap_or_else(|| unreachable!("a plain store"));
        assert_eq!(store.account[0], 0x05);
        assert_eq!(store.namespace, -10);
        assert_eq!(store.timestamp_ms, 1_700_000_000_000);
        assert_eq!(store.ttl_ms, 86_400_000);
        assert_eq!(store.data, b"hello");
        assert_eq!(
            Some(store.hash),
            message_hash(&store.account, -10, b"hello").ok()
        );
    }

    #[test]
    fn leaves_every_other_shape_to_the_python_parser() {
        let plain = format!(r#""pubkey":"{ACCOUNT}","timestamp":1,"ttl":2,"data":"aGVsbG8=""#);
        assert!(plain_store(&body(&plain), 76_800).is_some());
        for other in [
            body(&format!(r#"{plain},"signature":"x""#)), // signed
            body(&format!(r#"{plain},"pubkey":"{ACCOUNT}""#)), // a duplicate key
            body(&plain.replace("aGVsbG8=", "aGVsbG8")),  // unpadded
            body(&plain.replace("aGVsbG8=", "aGVsbG9=")), // non-canonical bits
            body(&plain.replace("aGVsbG8=", r"aGVs\u0062G8=")), // an escape
            body(&plain.replace("\"ttl\":2", "\"ttl\":-2")),
            body(&plain.replace("\"ttl\":2", "\"ttl\":2.0")),
            body(&plain.replace("\"ttl\":2", "\"ttl\":\"2\"")),
            body(&plain.replace("\"ttl\":2", "\"expiry\":2")),
            body(&plain.replace("05aa", "05ag")),
            body(&plain.replace("05aa", "05a")),
            body(&format!(r#"{plain},"namespace":32768"#)),
            format!(r#"{{"method":"retrieve","params":{{{plain}}}}}"#).into_bytes(),
            format!(r#"{{"method":"store","params":{{{plain}}},"id":1}}"#).into_bytes(),
            format!(r#"{{"method":"store","params":{{{plain}}}}} x"#).into_bytes(),
            b"[]".to_vec(),
            b"\xff".to_vec(),
        ] {
            assert!(
                plain_store(&other, 76_800).is_none(),
                "{}",
                String::from_utf8_lossy(&other)
            );
        }
        assert!(plain_store(&body(&plain), 4).is_none()); // 5 bytes of data past the limit
        assert!(plain_store(&body(&plain), 5).is_some());
    }
}
