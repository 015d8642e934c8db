//! libsodium-compatible sealed boxes (`crypto_box_seal` / `crypto_box_seal_open`):
//! `ephemeral_pk(32) ‖ crypto_box(m, nonce = BLAKE2b-192(ephemeral_pk ‖ recipient_pk))`.

use crypto_box::{PublicKey, SecretKey};

use crate::error::{Error, Result};

/// Bytes a sealed box adds to its plaintext: the ephemeral public key and the Poly1305 tag.
pub const OVERHEAD: usize = 32 + 16;

/// Seals `plaintext` to `recipient_public` with a fresh ephemeral key.
pub fn seal(recipient_public: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>> {
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
    SecretKey::from(*recipient_secret)
        .unseal(ciphertext)
        .map_err(|_| Error::Decryption)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x25519;

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
}
