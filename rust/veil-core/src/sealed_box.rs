//! libsodium-compatible sealed boxes (`crypto_box_seal` / `crypto_box_seal_open`):
//! `ephemeral_pk(32) ‖ crypto_box(m, nonce = BLAKE2b-192(ephemeral_pk ‖ recipient_pk))`.

use crypto_box::{PublicKey, SecretKey};

use crate::error::{Error, Result};
use crate::x25519;

/// Bytes a sealed box adds to its plaintext: the ephemeral public key and the Poly1305 tag.
pub const OVERHEAD: usize = 32 + 16;

/// Seals `plaintext` to `recipient_public` with a fresh ephemeral key.
///
/// A low-order recipient key is refused with [`Error::InvalidKey`], as libsodium refuses it: the box
/// key would be a public constant. (`crypto_box` does not check; the test is one X25519 against the
/// key, which fails exactly for the points of small order.)
pub fn seal(recipient_public: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>> {
    reject_low_order(recipient_public)
        .map_err(|_| Error::InvalidKey("X25519 public key (low order)"))?;
    PublicKey::from(*recipient_public)
        .seal(&mut rand_core::OsRng, plaintext)
        .map_err(|_| Error::TooLarge {
            what: "plaintext",
            limit: usize::MAX,
        })
}

/// Opens a sealed box with the recipient's secret key. Any failure is [`Error::Decryption`].
pub fn open(recipient_secret: &[u8; 32], ciphertext: &[u8]) -> Result<Vec<u8>> {
    if ciphertext.len() < OVERHEAD {
        return Err(Error::Decryption);
    }
    let ephemeral: [u8; 32] = ciphertext[..32].try_into().map_err(|_| Error::Decryption)?;
    reject_low_order(&ephemeral).map_err(|_| Error::Decryption)?;
    SecretKey::from(*recipient_secret)
        .unseal(ciphertext)
        .map_err(|_| Error::Decryption)
}

/// Fails for exactly the X25519 public keys of small order: a clamped scalar is a multiple of the
/// cofactor, so X25519 with any scalar gives all zeros for those points and only for them.
fn reject_low_order(public: &[u8; 32]) -> Result<()> {
    x25519::StaticSecret::generate()?
        .diffie_hellman(public)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_box_round_trip() {
        let secret = x25519::generate_secret();
        let public = x25519::public_key(&secret).unwrap();
        let sealed = seal(&public, b"to you").unwrap();
        assert_eq!(sealed.len(), 6 + OVERHEAD);
        assert_eq!(open(&secret, &sealed).unwrap(), b"to you");
        let other = x25519::generate_secret();
        assert_eq!(open(&other, &sealed), Err(Error::Decryption));
        assert_eq!(
            open(&secret, &sealed[..OVERHEAD - 1]),
            Err(Error::Decryption)
        );
    }

    #[test]
    fn low_order_keys_are_refused_both_ways() {
        let mut one = [0u8; 32];
        one[0] = 1;
        for point in [[0u8; 32], one] {
            assert!(matches!(seal(&point, b"x"), Err(Error::InvalidKey(_))));
            let mut forged = vec![0u8; OVERHEAD + 1];
            forged[..32].copy_from_slice(&point);
            let secret = x25519::generate_secret();
            assert_eq!(open(&secret, &forged), Err(Error::Decryption));
        }
    }
}
