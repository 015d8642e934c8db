//! Onion layers (`veil_core::onion::peel`): the bytes a node receives from any client.
//!
//! - [`peel_bytes`]: arbitrary bytes, peeled with the first hop's key.
//! - [`peel_layer`]: structured —
//!   `0 ‖ hops-1 (1) ‖ payload (bytes) ‖ with-routing (1) ‖ [routing (bytes) per hop] ‖ mutation`:
//!   a genuine onion (to hops made for the execution: see [`crate::keys::fresh`]), mutated; it
//!   peels hop by hop to its payload if unchanged, and fails otherwise.
//!   `1 ‖ ephemeral secret (32) ‖ nonce (24) ‖ plaintext (rest)`: a layer that authenticates but
//!   whose plaintext is anything; peel must agree with a reading of the specification.

use veil_core::aead;
use veil_core::hop::HopKey;
use veil_core::onion::{self, NodeKey, PeeledLayer, HEADER_LEN, VERSION};
use veil_core::x25519::StaticSecret;
use veil_core::Error;

use crate::input::{Reader, Writer};
use crate::keys::{fresh, nodes, route};
use crate::mutation::Mutation;

/// What every layer that peels must satisfy.
fn check_layer(layer: &PeeledLayer) {
    assert_eq!(layer.next_hop.is_none(), layer.reply_key.is_some());
}

pub fn peel_bytes(data: &[u8]) {
    match onion::peel(&nodes()[0], data) {
        Ok(layer) => check_layer(&layer),
        Err(Error::TooLarge { .. }) => assert!(data.len() > onion::MAX_ONION_LEN),
        Err(error) => assert_eq!(error, Error::Decryption),
    }
}

pub fn peel_layer(data: &[u8]) {
    let mut r = Reader::new(data);
    if r.byte() % 2 == 0 {
        genuine(&mut r);
    } else {
        crafted(&mut r);
    }
}

fn genuine(r: &mut Reader<'_>) {
    let hops = 1 + usize::from(r.byte() % 3);
    let payload = r.bytes();
    let routing: Vec<&[u8]> = if r.byte() % 2 == 1 {
        (0..hops).map(|_| r.bytes()).collect()
    } else {
        Vec::new()
    };
    let mutation = Mutation::read(r);
    let nodes: Vec<NodeKey> = (0..hops)
        .map(|_| NodeKey::new(&fresh().secret).expect("node key"))
        .collect();
    let route: Vec<[u8; 32]> = nodes.iter().map(|node| *node.public()).collect();
    let (onion, reply_key) = onion::build(&route, payload, &routing).expect("build");
    let mutated = mutation.applied(&onion);
    if mutated != onion {
        assert_eq!(
            onion::peel(&nodes[0], &mutated).err(),
            Some(Error::Decryption)
        );
        return;
    }
    let mut layer = onion;
    for (i, node) in nodes.iter().enumerate() {
        let peeled = onion::peel(node, &layer).expect("a genuine layer peels");
        check_layer(&peeled);
        assert_eq!(peeled.next_hop.as_ref(), route.get(i + 1));
        assert_eq!(peeled.routing(), routing.get(i).copied().unwrap_or(b""));
        if let Some(key) = &peeled.reply_key {
            assert_eq!(key.as_bytes(), reply_key.as_bytes());
            assert_eq!(peeled.payload(), payload);
        }
        layer = peeled.payload().to_vec();
    }
}

/// The plaintext as `docs/protocol.md` reads it: `(next_hop, routing, payload)`, or `None` if it
/// is malformed.
#[allow(clippy::type_complexity)]
fn reference_reading(plaintext: &[u8]) -> Option<(Option<[u8; 32]>, &[u8], &[u8])> {
    let (next_hop, rest) = match plaintext.split_first()? {
        (0x00, rest) if rest.len() >= 32 => {
            let (next, rest) = rest.split_at(32);
            (Some(next.try_into().ok()?), rest)
        }
        (0x01, rest) => (None, rest),
        _ => return None,
    };
    if rest.len() < 2 {
        return None;
    }
    let (len, rest) = rest.split_at(2);
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if rest.len() < len {
        return None;
    }
    let (routing, payload) = rest.split_at(len);
    Some((next_hop, routing, payload))
}

fn crafted(r: &mut Reader<'_>) {
    let ephemeral = StaticSecret::from_bytes(&r.array()).expect("ephemeral key");
    let nonce: [u8; 24] = r.array();
    let plaintext = r.rest();
    let node = &nodes()[0];
    let key = HopKey::client_side(&ephemeral, node.public()).expect("hop key");
    let mut layer = Vec::with_capacity(HEADER_LEN + nonce.len() + plaintext.len() + 16);
    layer.push(VERSION);
    layer.extend_from_slice(ephemeral.public());
    let ciphertext = aead::encrypt(key.as_bytes(), &nonce, plaintext, &layer).expect("encrypt");
    layer.extend_from_slice(&nonce);
    layer.extend_from_slice(&ciphertext);

    match (onion::peel(node, &layer), reference_reading(plaintext)) {
        (Ok(peeled), Some((next_hop, routing, payload))) => {
            check_layer(&peeled);
            assert_eq!(peeled.next_hop, next_hop);
            assert_eq!(peeled.routing(), routing);
            assert_eq!(peeled.payload(), payload);
            if let Some(reply_key) = &peeled.reply_key {
                assert_eq!(reply_key.as_bytes(), key.as_bytes());
            }
        }
        (Err(Error::Decryption), None) => {}
        (got, expected) => panic!(
            "peel and the specification disagree: {:?} vs {expected:?}",
            got.map(|layer| (layer.next_hop, layer.routing().to_vec()))
        ),
    }
}

#[must_use]
pub fn peel_bytes_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let route = route();
    let build = |hops: usize, payload: &[u8], routing: &[&[u8]]| {
        onion::build(&route[..hops], payload, routing)
            .expect("build")
            .0
    };
    vec![
        ("deliver", build(1, b"{\"method\":\"info\"}", &[])),
        ("forward-3-hops", build(3, b"request", &[])),
        (
            "forward-with-routing",
            build(2, b"request", &[b"first", b"second"]),
        ),
        ("empty", Vec::new()),
    ]
}

#[must_use]
pub fn peel_layer_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let genuine = |hops: u8, payload: &[u8], routing: Option<&[&[u8]]>, mutation: Mutation| {
        let mut w = Writer::new().byte(0).byte(hops - 1).bytes(payload);
        w = match routing {
            None => w.byte(0),
            Some(entries) => entries.iter().fold(w.byte(1), |w, entry| w.bytes(entry)),
        };
        mutation.write(w).finish()
    };
    let crafted = |plaintext: &[u8]| {
        Writer::new()
            .byte(1)
            .raw(&[0x61; 32])
            .raw(&[0x62; 24])
            .raw(plaintext)
            .finish()
    };
    let mut forward = vec![0x00];
    forward.extend_from_slice(&route()[1]);
    forward.extend_from_slice(&[0, 3]);
    forward.extend_from_slice(b"abcbody");
    vec![
        (
            "genuine-1-hop",
            genuine(1, b"request", None, Mutation::None),
        ),
        (
            "genuine-3-hops-routing",
            genuine(3, b"request", Some(&[b"a", b"bb", b"ccc"]), Mutation::None),
        ),
        (
            "genuine-flipped",
            genuine(2, b"request", None, Mutation::FlipBit { at: 40, bit: 1 }),
        ),
        (
            "genuine-truncated",
            genuine(1, b"request", None, Mutation::Truncate { len: 80 }),
        ),
        ("crafted-deliver", crafted(b"\x01\x00\x02rtbody")),
        ("crafted-forward", crafted(&forward)),
        ("crafted-routing-too-long", crafted(b"\x01\xff\xffshort")),
        ("crafted-bad-kind", crafted(b"\x02\x00\x00")),
    ]
}
