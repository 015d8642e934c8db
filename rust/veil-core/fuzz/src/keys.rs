//! The fixed keys the fuzz targets use, so that the seed corpus holds genuine messages for them.
//! Test keys only: they are public.

use std::sync::OnceLock;

use veil_core::onion::NodeKey;
use veil_core::x25519;

/// X25519 secrets of the three onion hops; the targets peel with the first.
pub const NODE_SECRETS: [[u8; 32]; 3] = [[0x11; 32], [0x12; 32], [0x13; 32]];
/// X25519 secrets of the two ends of a node link.
pub const LINK_INITIATOR_SECRET: [u8; 32] = [0x21; 32];
pub const LINK_RESPONDER_SECRET: [u8; 32] = [0x22; 32];
/// The X25519 secret of the recipient of sealed boxes and Session Protocol messages.
pub const RECIPIENT_SECRET: [u8; 32] = [0x31; 32];
/// The Ed25519 seed of the sender of Session Protocol messages.
pub const SENDER_SEED: [u8; 32] = [0x41; 32];
/// A hop key (onion request or reply).
pub const HOP_KEY: [u8; 32] = [0x51; 32];

/// The three hops, parsed once.
#[must_use]
pub fn nodes() -> &'static [NodeKey; 3] {
    static NODES: OnceLock<[NodeKey; 3]> = OnceLock::new();
    NODES.get_or_init(|| NODE_SECRETS.map(|secret| NodeKey::new(&secret).expect("node key")))
}

#[must_use]
pub fn route() -> [[u8; 32]; 3] {
    let [a, b, c] = nodes();
    [*a.public(), *b.public(), *c.public()]
}

fn public(secret: &[u8; 32]) -> [u8; 32] {
    x25519::public_key(secret).expect("an X25519 public key")
}

#[must_use]
pub fn link_initiator_public() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| public(&LINK_INITIATOR_SECRET))
}

#[must_use]
pub fn link_responder_public() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| public(&LINK_RESPONDER_SECRET))
}

#[must_use]
pub fn recipient_public() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| public(&RECIPIENT_SECRET))
}

/// An X25519 key pair made for one execution of a target.
///
/// Targets that check that a changed message never opens use one: under a fixed key, a genuine
/// message made in an earlier execution (libFuzzer learns such byte strings from its comparison
/// tracing) is a changed message that rightly opens — a replay, which the core leaves to its
/// callers (onion replay tags, handshake timestamps).
pub struct FreshKey {
    pub secret: [u8; 32],
    pub public: [u8; 32],
}

#[must_use]
pub fn fresh() -> FreshKey {
    let secret = *x25519::generate_secret();
    FreshKey {
        secret,
        public: public(&secret),
    }
}
