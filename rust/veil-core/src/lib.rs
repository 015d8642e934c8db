//! Veil's cryptographic core: the primitives and formats on the hot path of a Veil service node and
//! client, in pure Rust with no Python dependency (the `veil-py` crate binds it as `veil._core`).
//!
//! - [`x25519`], [`ed25519`]: key agreement, signatures and the Ed25519 → X25519 conversions.
//! - [`hash`]: BLAKE2b. [`aead`]: XChaCha20-Poly1305. [`sealed_box`]: libsodium sealed boxes.
//! - [`hop`]: the per-hop key and encryption of onion requests. [`onion`]: Veil's onion layers.
//! - [`link`]: node links (a Noise handshake bound to the nodes' keys, then encrypted records).
//! - [`session`]: the Session Protocol for one-to-one messages.
//! - [`blind`]: blinded identities for communities (blind25).
//! - [`kem`]: ML-KEM-768 and the hybrid KEM `veil-hybrid-v1` (X25519 + ML-KEM-768).
//! - [`store_index`]: the service node's storage encodings; [`store_request`]: its common `store`
//!   request read in one pass.

pub mod aead;
pub mod blind;
pub mod cells;
pub mod ed25519;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod hop;
pub mod kem;
pub mod link;
pub mod onion;
pub mod sealed_box;
pub mod session;
pub mod store_index;
pub mod store_request;
pub mod x25519;

pub use error::{Error, Result};
