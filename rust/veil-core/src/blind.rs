//! Blinded identities for communities ("blind25": Veil's form of Session's 25-blinding).
//!
//! A user appears on a community server under a key derived from their identity and the server's
//! public key `S`, so that two servers cannot link them and a server cannot recover their Session
//! ID (it can only confirm a guessed one). With `seed` the user's Ed25519 seed:
//!
//! ```text
//! h   = SHA-512(seed)            a = clamp(h[0..32]) mod ℓ      A = a·G (the Ed25519 public key)
//! sid = 0x05 ‖ u(A)              (33 bytes: the Session ID, u the Montgomery form of A)
//! k   = BLAKE2b-512(key = "veil-blind25-v1", sid ‖ S) mod ℓ        (k ≠ 0)
//! A⁺  = A with its sign bit cleared     a⁺ = a, or −a when A's sign bit is set (so a⁺·G = A⁺)
//! b   = k·a⁺ mod ℓ               B = b·G = k·A⁺      blinded ID = "25" ‖ hex(B)
//! ```
//!
//! `B` depends on `A` only through `u(A)`, so anyone holding a Session ID can compute it
//! ([`blinded_public`], with `A⁺` recovered from `u` with sign 0); nobody without the Session ID
//! can, since `k` is a keyed hash of it. Signatures are standard Ed25519 under `B` with a
//! deterministic, domain-separated nonce ([`BlindedKey::sign`]). Two blinded users agree on a key
//! for direct messages through the server with `u(b₁·B₂) = u(b₂·B₁)` ([`BlindedKey::dm_key`]).
//! The full statement and its reasons are in `python/veil/protocol/blinding.py` and
//! `docs/protocol.md`, "Blinded IDs (communities)".

use blake2b_simd::Params;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{clamp_integer, Scalar};
use sha2::{Digest, Sha512};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub const SEED_LEN: usize = 32;
pub const SERVER_KEY_LEN: usize = 32;
/// `0x05 ‖ u`: a Session ID in bytes.
pub const SESSION_ID_LEN: usize = 33;
pub const SESSION_ID_PREFIX: u8 = 0x05;
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SECRET_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
pub const DM_KEY_LEN: usize = 32;

/// The BLAKE2b key of the blinding factor `k`.
pub const FACTOR_KEY: &[u8] = b"veil-blind25-v1";
/// The prefix of the signature nonce's hash input.
pub const NONCE_DOMAIN: &[u8] = b"veil-blind25-nonce";
/// The BLAKE2b key of the direct-message key.
pub const DM_KEY: &[u8] = b"veil-blind25-dm";

const BAD_SESSION_ID: Error = Error::InvalidKey("Session ID");
const BAD_BLINDED_KEY: Error = Error::InvalidKey("blinded public key");
const BAD_FACTOR: Error = Error::InvalidKey("server public key (blinding factor is zero)");

/// `k = BLAKE2b-512(key = "veil-blind25-v1", sid ‖ S) mod ℓ`; refuses `k = 0` (probability 2⁻²⁵²).
pub fn blinding_factor(
    session_id: &[u8; SESSION_ID_LEN],
    server_pk: &[u8; SERVER_KEY_LEN],
) -> Result<Scalar> {
    let mut state = Params::new().hash_length(64).key(FACTOR_KEY).to_state();
    state.update(session_id);
    state.update(server_pk);
    let k = Scalar::from_bytes_mod_order_wide(&wide(state.finalize().as_bytes()));
    if k == Scalar::ZERO {
        return Err(BAD_FACTOR);
    }
    Ok(k)
}

/// The point a blinded public key encodes: a canonical encoding of a point of the prime-order
/// subgroup other than the identity. Anything else is refused (a 32-byte key from the network).
pub fn parse_public(public: &[u8; PUBLIC_KEY_LEN]) -> Result<EdwardsPoint> {
    let point = CompressedEdwardsY(*public)
        .decompress()
        .ok_or(BAD_BLINDED_KEY)?;
    // decompress() reduces y mod p and accepts x = 0 with the sign bit set: re-encoding catches both.
    if point.compress().as_bytes() != public || point.is_small_order() || !point.is_torsion_free() {
        return Err(BAD_BLINDED_KEY);
    }
    Ok(point)
}

/// The blinded public key `B = k·A⁺` of a Session ID on the server `S`: what anyone holding the
/// Session ID can compute (a server testing a guess; a member addressing a known contact).
///
/// Refuses a Session ID that does not start with `0x05` or whose `u` is not the canonical encoding
/// of a point of the prime-order subgroup (other than of small order).
pub fn blinded_public(
    session_id: &[u8; SESSION_ID_LEN],
    server_pk: &[u8; SERVER_KEY_LEN],
) -> Result<[u8; PUBLIC_KEY_LEN]> {
    if session_id[0] != SESSION_ID_PREFIX {
        return Err(BAD_SESSION_ID);
    }
    let u = MontgomeryPoint(session_id[1..].try_into().map_err(|_| BAD_SESSION_ID)?);
    let a_plus = u.to_edwards(0).ok_or(BAD_SESSION_ID)?;
    // to_edwards() reads u mod p and ignores its top bit (and MontgomeryPoint's == compares mod p):
    // the byte-wise round trip refuses other encodings.
    if a_plus.to_montgomery().as_bytes() != u.as_bytes()
        || a_plus.is_small_order()
        || !a_plus.is_torsion_free()
    {
        return Err(BAD_SESSION_ID);
    }
    let k = blinding_factor(session_id, server_pk)?;
    Ok((k * a_plus).compress().to_bytes())
}

/// Whether `blinded` is the blinded public key of `session_id` on `server_pk` (a server testing a
/// guessed Session ID). Compared in constant time.
pub fn matches(
    blinded: &[u8; PUBLIC_KEY_LEN],
    session_id: &[u8; SESSION_ID_LEN],
    server_pk: &[u8; SERVER_KEY_LEN],
) -> Result<bool> {
    Ok(blinded_public(session_id, server_pk)?.ct_eq(blinded).into())
}

/// A user's blinded key pair on one server, with what signing needs; derived once from the seed.
pub struct BlindedKey {
    /// `b = k·a⁺ mod ℓ`.
    secret: Zeroizing<Scalar>,
    /// `SHA-512(seed)[32..64]`, the Ed25519 nonce prefix.
    nonce_prefix: Zeroizing<[u8; 32]>,
    /// `B = b·G`, compressed.
    public: [u8; PUBLIC_KEY_LEN],
}

impl BlindedKey {
    /// The blinded key pair of the identity `seed` on the server `server_pk`.
    pub fn new(seed: &[u8; SEED_LEN], server_pk: &[u8; SERVER_KEY_LEN]) -> Result<Self> {
        let digest = Zeroizing::new(wide(&Sha512::digest(seed)));
        let mut lower = Zeroizing::new([0u8; 32]);
        lower.copy_from_slice(&digest[..32]);
        let mut nonce_prefix = Zeroizing::new([0u8; 32]);
        nonce_prefix.copy_from_slice(&digest[32..]);
        *lower = clamp_integer(*lower);
        let a = Zeroizing::new(Scalar::from_bytes_mod_order(*lower));
        let public_a = EdwardsPoint::mul_base(&a);
        let negative = Choice::from(public_a.compress().as_bytes()[31] >> 7);
        let a_plus = Zeroizing::new(Scalar::conditional_select(&a, &-&*a, negative));
        let mut session_id = [0u8; SESSION_ID_LEN];
        session_id[0] = SESSION_ID_PREFIX;
        session_id[1..].copy_from_slice(public_a.to_montgomery().as_bytes());
        let k = blinding_factor(&session_id, server_pk)?;
        let secret = Zeroizing::new(k * *a_plus);
        let public = EdwardsPoint::mul_base(&secret).compress().to_bytes();
        Ok(Self {
            secret,
            nonce_prefix,
            public,
        })
    }

    /// `B`, the blinded public key (the blinded ID without its `25`).
    #[must_use]
    pub fn public(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// `b` as 32 little-endian bytes. Secret.
    #[must_use]
    pub fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// An Ed25519 signature of `message` under `B`, verifiable by any Ed25519 verifier:
    /// `r = SHA-512("veil-blind25-nonce" ‖ SHA-512(seed)[32..64] ‖ B ‖ message) mod ℓ`,
    /// `R = r·G`, `c = SHA-512(R ‖ B ‖ message) mod ℓ`, `s = r + c·b mod ℓ`; the signature `R ‖ s`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut nonce_hash = Sha512::new();
        nonce_hash.update(NONCE_DOMAIN);
        nonce_hash.update(self.nonce_prefix.as_ref());
        nonce_hash.update(self.public);
        nonce_hash.update(message);
        let nonce_wide = Zeroizing::new(wide(&nonce_hash.finalize()));
        let r = Zeroizing::new(Scalar::from_bytes_mod_order_wide(&nonce_wide));
        let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
        let mut challenge = Sha512::new();
        challenge.update(big_r);
        challenge.update(self.public);
        challenge.update(message);
        let c = Scalar::from_bytes_mod_order_wide(&wide(&challenge.finalize()));
        let s = *r + c * *self.secret;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature[..32].copy_from_slice(&big_r);
        signature[32..].copy_from_slice(s.as_bytes());
        signature
    }

    /// The key for direct messages between this user and the blinded key `other` on the same
    /// server: `shared = u(b·B_other)` (X25519-style, by the unclamped `b`),
    /// then `BLAKE2b-256(key = "veil-blind25-dm", shared ‖ B_sender ‖ B_recipient)`, where this
    /// user is the sender when `sending`. Both ends derive the same key: `b₁·B₂ = b₂·B₁`.
    ///
    /// Refuses an `other` that is not a valid blinded key ([`parse_public`]) and an all-zero
    /// shared value.
    pub fn dm_key(
        &self,
        other: &[u8; PUBLIC_KEY_LEN],
        sending: bool,
    ) -> Result<Zeroizing<[u8; DM_KEY_LEN]>> {
        // u(b·B_other), computed on the Edwards curve: the same bytes as the Montgomery ladder
        // `u(B_other) * b` (a test checks it), in half the time here (AVX2 backend, 30 µs vs 61).
        let shared = Zeroizing::new((*self.secret * parse_public(other)?).to_montgomery());
        if bool::from(shared.as_bytes().ct_eq(&[0u8; 32])) {
            return Err(BAD_BLINDED_KEY);
        }
        let (sender, recipient) = if sending {
            (&self.public, other)
        } else {
            (other, &self.public)
        };
        let mut state = Params::new().hash_length(DM_KEY_LEN).key(DM_KEY).to_state();
        state.update(shared.as_bytes());
        state.update(sender);
        state.update(recipient);
        let mut key = Zeroizing::new([0u8; DM_KEY_LEN]);
        key.copy_from_slice(state.finalize().as_bytes());
        Ok(key)
    }
}

/// A 64-byte digest as an array (SHA-512 and BLAKE2b-512 always give 64 bytes).
fn wide(digest: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(&digest[..64]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ed25519;

    const SERVER: [u8; 32] = [0x5e; 32];

    fn session_id(seed: &[u8; 32]) -> [u8; 33] {
        let x = ed25519::public_key_to_x25519(&ed25519::public_key(seed)).unwrap();
        let mut sid = [SESSION_ID_PREFIX; 33];
        sid[1..].copy_from_slice(&x);
        sid
    }

    /// Seeds whose Ed25519 public key has its sign bit set, and clear.
    fn seeds_of_both_signs() -> ([u8; 32], [u8; 32]) {
        let (mut negative, mut positive) = (None, None);
        for i in 0u8..=255 {
            let seed = [i; 32];
            if ed25519::public_key(&seed)[31] & 0x80 == 0 {
                positive.get_or_insert(seed);
            } else {
                negative.get_or_insert(seed);
            }
        }
        (negative.unwrap(), positive.unwrap())
    }

    #[test]
    fn key_pair_matches_the_session_id_for_both_signs() {
        let (negative, positive) = seeds_of_both_signs();
        for seed in [negative, positive] {
            let key = BlindedKey::new(&seed, &SERVER).unwrap();
            assert_eq!(
                blinded_public(&session_id(&seed), &SERVER).unwrap(),
                *key.public()
            );
            assert!(matches(key.public(), &session_id(&seed), &SERVER).unwrap());
            assert!(!matches(key.public(), &session_id(&[9; 32]), &SERVER).unwrap());
            let secret = Scalar::from_canonical_bytes(*key.secret_bytes()).unwrap();
            assert_eq!(
                EdwardsPoint::mul_base(&secret).compress().to_bytes(),
                *key.public()
            );
        }
    }

    #[test]
    fn signatures_verify_under_the_blinded_key() {
        let (negative, positive) = seeds_of_both_signs();
        for seed in [negative, positive] {
            let key = BlindedKey::new(&seed, &SERVER).unwrap();
            let signature = key.sign(b"hello");
            assert!(ed25519::verify(key.public(), b"hello", &signature));
            assert!(!ed25519::verify(key.public(), b"hellO", &signature));
            assert_eq!(signature, key.sign(b"hello"));
        }
    }

    #[test]
    fn servers_give_different_keys() {
        let seed = [3u8; 32];
        let one = BlindedKey::new(&seed, &SERVER).unwrap();
        let two = BlindedKey::new(&seed, &[0x6f; 32]).unwrap();
        assert_ne!(one.public(), two.public());
    }

    #[test]
    fn dm_keys_agree_both_ways() {
        let alice = BlindedKey::new(&[1u8; 32], &SERVER).unwrap();
        let bob = BlindedKey::new(&[2u8; 32], &SERVER).unwrap();
        let to_bob = alice.dm_key(bob.public(), true).unwrap();
        assert_eq!(*to_bob, *bob.dm_key(alice.public(), false).unwrap());
        let to_alice = bob.dm_key(alice.public(), true).unwrap();
        assert_eq!(*to_alice, *alice.dm_key(bob.public(), false).unwrap());
        assert_ne!(*to_bob, *to_alice);
    }

    #[test]
    fn dm_shared_value_is_the_montgomery_ladder() {
        let alice = BlindedKey::new(&[1u8; 32], &SERVER).unwrap();
        let bob = BlindedKey::new(&[2u8; 32], &SERVER).unwrap();
        let bob_u = parse_public(bob.public()).unwrap().to_montgomery();
        let shared = bob_u * *alice.secret;
        let mut state = Params::new().hash_length(DM_KEY_LEN).key(DM_KEY).to_state();
        state.update(shared.as_bytes());
        state.update(alice.public());
        state.update(bob.public());
        assert_eq!(
            state.finalize().as_bytes(),
            alice.dm_key(bob.public(), true).unwrap().as_ref()
        );
    }

    #[test]
    fn hostile_keys_are_refused() {
        let key = BlindedKey::new(&[1u8; 32], &SERVER).unwrap();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut order_two = [0xffu8; 32]; // y = −1 (p − 1), x = 0
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        let mut negated = *key.public();
        negated[31] ^= 0x80; // −B: a valid key
        let mut y_over_p = [0xffu8; 32];
        y_over_p[31] = 0x7f; // y = 2²⁵⁵ − 1 ≥ p
        let torsioned = (parse_public(key.public()).unwrap()
            + CompressedEdwardsY(order_two).decompress().unwrap())
        .compress()
        .to_bytes();
        for bad in [[0u8; 32], identity, order_two, y_over_p, torsioned] {
            assert_eq!(parse_public(&bad).err(), Some(BAD_BLINDED_KEY));
            assert_eq!(key.dm_key(&bad, true).err(), Some(BAD_BLINDED_KEY));
        }
        assert!(parse_public(&negated).is_ok());
        let mut sid = session_id(&[1u8; 32]);
        sid[0] = 0x15;
        assert_eq!(blinded_public(&sid, &SERVER), Err(BAD_SESSION_ID));
        let mut high_bit = session_id(&[1u8; 32]);
        high_bit[32] |= 0x80;
        assert_eq!(blinded_public(&high_bit, &SERVER), Err(BAD_SESSION_ID));
        for u in [[0u8; 32], identity, [0xff; 32]] {
            let mut sid = [SESSION_ID_PREFIX; 33];
            sid[1..].copy_from_slice(&u);
            assert_eq!(blinded_public(&sid, &SERVER), Err(BAD_SESSION_ID));
        }
    }
}
