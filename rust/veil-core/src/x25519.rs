//! X25519 (RFC 7748): key generation and Diffie-Hellman.
//!
//! This module is the single place that names the X25519 implementation. It is AWS-LC's (through
//! `aws-lc-rs`), whose s2n-bignum assembly measured 2.1× faster than `x25519-dalek` and 1.24× faster
//! than libsodium on the reference machine (`docs/performance.md`).

use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, X25519};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub const KEY_LEN: usize = 32;

const LOW_ORDER: Error = Error::InvalidKey("X25519 public key (low order)");

/// A parsed X25519 secret key with its public key; parse once, agree many times.
pub struct StaticSecret {
    key: PrivateKey,
    public: [u8; KEY_LEN],
}

impl StaticSecret {
    /// Parses a 32-byte secret (RFC 7748 clamping applies) and computes its public key.
    pub fn from_bytes(secret: &[u8; KEY_LEN]) -> Result<Self> {
        let key = PrivateKey::from_private_key(&X25519, secret)
            .map_err(|_| Error::InvalidKey("X25519 secret key"))?;
        Self::with_public(key)
    }

    /// A fresh key from AWS-LC's CSPRNG.
    pub fn generate() -> Result<Self> {
        let key =
            PrivateKey::generate(&X25519).map_err(|_| Error::InvalidKey("X25519 secret key"))?;
        Self::with_public(key)
    }

    fn with_public(key: PrivateKey) -> Result<Self> {
        let public = key
            .compute_public_key()
            .map_err(|_| Error::InvalidKey("X25519 secret key"))?;
        let public: [u8; KEY_LEN] = public
            .as_ref()
            .try_into()
            .map_err(|_| Error::InvalidKey("X25519 secret key"))?;
        Ok(Self { key, public })
    }

    #[must_use]
    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// `X25519(self, peer)`. Fails with [`Error::InvalidKey`] when the peer's key is of low order
    /// (the shared secret would be all zeros), as libsodium's `crypto_scalarmult` does.
    pub fn diffie_hellman(&self, peer: &[u8; KEY_LEN]) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        agree(
            &self.key,
            UnparsedPublicKey::new(&X25519, peer),
            LOW_ORDER,
            |shared| {
                let mut out = Zeroizing::new([0u8; KEY_LEN]);
                if shared.len() != KEY_LEN {
                    return Err(LOW_ORDER);
                }
                out.copy_from_slice(shared);
                Ok(out)
            },
        )
    }
}

/// A fresh secret key from the operating system's CSPRNG.
#[must_use]
pub fn generate_secret() -> Zeroizing<[u8; KEY_LEN]> {
    let mut secret = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(secret.as_mut());
    secret
}

/// The public key `X25519(secret, 9)`.
pub fn public_key(secret: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN]> {
    Ok(*StaticSecret::from_bytes(secret)?.public())
}

/// `X25519(secret, public)`; see [`StaticSecret::diffie_hellman`].
pub fn diffie_hellman(
    secret: &[u8; KEY_LEN],
    public: &[u8; KEY_LEN],
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    StaticSecret::from_bytes(secret)?.diffie_hellman(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn rfc7748_section_6_1_shared_secret() {
        let alice = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob = hex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let alice_pub = public_key(&alice).unwrap();
        let bob_pub = public_key(&bob).unwrap();
        assert_eq!(
            alice_pub,
            hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            bob_pub,
            hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let expected = hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*diffie_hellman(&alice, &bob_pub).unwrap(), expected);
        assert_eq!(*diffie_hellman(&bob, &alice_pub).unwrap(), expected);
    }

    #[test]
    fn rfc7748_section_5_2_second_vector_with_high_bit_set() {
        let scalar = hex32("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d");
        let u = hex32("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493");
        let expected = hex32("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
        assert_eq!(*diffie_hellman(&scalar, &u).unwrap(), expected);
    }

    #[test]
    fn low_order_points_are_rejected() {
        let secret = *generate_secret();
        let mut one = [0u8; 32];
        one[0] = 1;
        for point in [[0u8; 32], one] {
            assert_eq!(diffie_hellman(&secret, &point), Err(LOW_ORDER));
        }
    }

    #[test]
    fn generated_keys_agree() {
        let a = StaticSecret::generate().unwrap();
        let b = StaticSecret::generate().unwrap();
        assert_eq!(
            *a.diffie_hellman(b.public()).unwrap(),
            *b.diffie_hellman(a.public()).unwrap()
        );
    }
}
