//! The storage encodings (`veil_core::store_index`) and the plain `store` request
//! (`veil_core::store_request`).
//!
//! `store_index`: nothing there parses: it encodes values that came from the network (account,
//! namespace, timestamps, message data) into index keys, hashes and the `retrieve` answer. The fuzz
//! target checks lengths are enforced and every encoding against a plain reimplementation of
//! `docs/storage.md`.
//!
//! `account (bytes) ‖ namespace (2) ‖ timestamp (8) ‖ digest (bytes) ‖ data (bytes) ‖ count (1) ‖
//! [hash (bytes) ‖ timestamp (8) ‖ expiry (8) ‖ data (bytes)]…`
//!
//! `store_request`: any request body. What `plain_store` reads must be what a separate reading of
//! the same JSON (`serde_json::Value`) finds in exactly the plain shape, the data's base64 must be
//! the one canonical encoding of what it decoded, and the hash Session's.
//!
//! `max_data (u16) ‖ body (rest)`

use std::fmt::Write as _;

use serde_json::Value;
use veil_core::hash::blake2b_256;
use veil_core::store_index::{
    message_hash, message_key, retrieve_json, retrieve_json_len, RetrievedMessage, ACCOUNT_LEN,
    HASH_LEN,
};
use veil_core::store_request::plain_store;
use veil_core::Error;

use crate::input::{Reader, Writer};

pub fn store_index(data: &[u8]) {
    let mut r = Reader::new(data);
    let account = r.bytes();
    let namespace = i16::from_be_bytes(r.array());
    let timestamp = u64::from_be_bytes(r.array());
    let digest = r.bytes();
    let body = r.bytes();

    let lengths_ok = account.len() == ACCOUNT_LEN && digest.len() == HASH_LEN;
    match message_key(account, namespace, timestamp, digest) {
        Ok(key) => {
            assert!(lengths_ok);
            let namespace_key = (i32::from(namespace) + 0x8000).to_be_bytes();
            let expected = [
                account,
                &namespace_key[2..],
                &timestamp.to_be_bytes(),
                digest,
            ]
            .concat();
            assert_eq!(key[..], expected[..]);
        }
        Err(error) => {
            assert!(!lengths_ok);
            assert!(matches!(error, Error::InvalidLength { .. }));
        }
    }
    // Session's message hash: the namespace in decimal text, nothing for namespace 0.
    let namespace_text = if namespace == 0 {
        String::new()
    } else {
        format!("{namespace}")
    };
    match message_hash(account, namespace, body) {
        Ok(hash) => assert_eq!(
            hash,
            blake2b_256(&[account, namespace_text.as_bytes(), body])
        ),
        Err(error) => {
            assert_ne!(account.len(), ACCOUNT_LEN);
            assert!(matches!(error, Error::InvalidLength { .. }));
        }
    }

    let count = usize::from(r.byte() % 6);
    let messages: Vec<RetrievedMessage<'_>> = (0..count)
        .map(|_| RetrievedMessage {
            hash: r.bytes(),
            timestamp_ms: u64::from_be_bytes(r.array()),
            expiry_ms: u64::from_be_bytes(r.array()),
            data: r.bytes(),
        })
        .collect();
    let hashes_ok = messages.iter().all(|m| m.hash.len() == HASH_LEN);
    match retrieve_json(&messages) {
        Ok(json) => {
            assert!(hashes_ok);
            assert_eq!(Ok(json.len()), retrieve_json_len(&messages));
            assert_eq!(
                String::from_utf8(json).expect("JSON is ASCII"),
                reference_json(&messages)
            );
        }
        Err(error) => {
            assert!(!hashes_ok);
            assert!(matches!(error, Error::InvalidLength { .. }));
        }
    }
}

/// Standard base64, padded, one bit at a time (RFC 4648, section 4).
fn reference_base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bits: Vec<bool> = input
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1 == 1))
        .collect();
    let mut out: String = bits
        .chunks(6)
        .map(|sextet| {
            let value = (0..6).fold(0usize, |acc, i| {
                acc << 1 | usize::from(sextet.get(i) == Some(&true))
            });
            char::from(ALPHABET[value])
        })
        .collect();
    while out.len() % 4 != 0 {
        out.push('=');
    }
    out
}

/// What `orjson.dumps` makes of the list of messages.
fn reference_json(messages: &[RetrievedMessage<'_>]) -> String {
    let mut out = String::from("[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let hash = reference_base64(m.hash);
        write!(
            out,
            r#"{{"hash":"{}","timestamp":{},"expiration":{},"data":"{}"}}"#,
            hash.trim_end_matches('='),
            m.timestamp_ms,
            m.expiry_ms,
            reference_base64(m.data)
        )
        .expect("writing to a String");
    }
    out.push(']');
    out
}

#[must_use]
pub fn store_index_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let message = |w: Writer, hash: &[u8], data: &[u8]| {
        w.bytes(hash)
            .raw(&1_700_000_000_123u64.to_be_bytes())
            .raw(&u64::MAX.to_be_bytes())
            .bytes(data)
    };
    let header = |account: &[u8]| {
        Writer::new()
            .bytes(account)
            .raw(&(-2i16).to_be_bytes())
            .raw(&42u64.to_be_bytes())
            .bytes(&[7; 32])
            .bytes(b"message data")
    };
    let two = message(
        message(header(&[5; 33]).byte(2), &[1; 32], b"fo"),
        &[0xFF; 32],
        b"",
    );
    let bad = message(header(&[5; 32]).byte(1), &[1; 31], b"foo");
    vec![
        ("two-messages", two.finish()),
        ("wrong-lengths", bad.finish()),
    ]
}

pub fn store_request(data: &[u8]) {
    let mut r = Reader::new(data);
    let max_data = usize::from(r.u16());
    let body = r.take(usize::MAX);
    let Some(store) = plain_store(body, max_data) else {
        return;
    };
    let request: Value = serde_json::from_slice(body).expect("read: valid JSON");
    let request = request.as_object().expect("read: an object");
    assert_eq!(request.len(), 2);
    assert_eq!(request["method"], "store");
    let params = request["params"]
        .as_object()
        .expect("read: params is an object");
    for key in params.keys() {
        assert!(["pubkey", "timestamp", "ttl", "data", "namespace"].contains(&key.as_str()));
    }
    let pubkey = params["pubkey"].as_str().expect("read: a pubkey text");
    let hex = store.account.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").expect("writing to a String");
        out
    });
    assert_eq!(pubkey.to_ascii_lowercase(), hex);
    assert_eq!(params["timestamp"].as_u64(), Some(store.timestamp_ms));
    assert_eq!(params["ttl"].as_u64(), Some(store.ttl_ms));
    let namespace = params.get("namespace").unwrap_or(&Value::Null);
    if namespace.is_null() {
        assert_eq!(store.namespace, 0);
    } else {
        assert_eq!(namespace.as_i64(), Some(i64::from(store.namespace)));
    }
    assert!(store.data.len() <= max_data);
    assert_eq!(
        params["data"].as_str(),
        Some(&*reference_base64(&store.data))
    );
    let namespace_text = if store.namespace == 0 {
        String::new()
    } else {
        format!("{}", store.namespace)
    };
    assert_eq!(
        store.hash,
        blake2b_256(&[&store.account, namespace_text.as_bytes(), &store.data])
    );
}

#[must_use]
pub fn store_request_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let account = format!("05{}", "ab".repeat(32));
    let body = |params: &str| {
        Writer::new()
            .raw(&96u16.to_be_bytes())
            .raw(format!(r#"{{"method":"store","params":{{{params}}}}}"#).as_bytes())
            .finish()
    };
    let plain = format!(
        r#""pubkey":"{account}","timestamp":1700000000000,"ttl":1209600000,"data":"aGVsbG8gd29ybGQ=""#
    );
    vec![
        ("plain", body(&plain)),
        ("namespace", body(&format!(r#"{plain},"namespace":-10"#))),
        (
            "signed",
            body(&format!(r#"{plain},"namespace":3,"signature":"AA==""#)),
        ),
        ("spaced", body(&format!(" {} ", plain.replace(':', " : ")))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_base64_matches_rfc4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(reference_base64(input.as_bytes()), expected);
        }
    }
}
