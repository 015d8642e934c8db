//! XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), libsodium's `crypto_aead_xchacha20poly1305_ietf`.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// Encrypts `plaintext`, returning ciphertext ‖ tag.
pub fn encrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::TooLarge {
            what: "plaintext",
            limit: usize::MAX,
        })
}

/// Decrypts ciphertext ‖ tag. Any failure is [`Error::Decryption`].
pub fn decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    if ciphertext.len() < TAG_LEN {
        return Err(Error::Decryption);
    }
    let (body, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
    let mut buffer = body.to_vec();
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut buffer,
            Tag::from_slice(tag),
        )
        .map_err(|_| Error::Decryption)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = [1u8; 32];
        let nonce = [2u8; 24];
        let mut ct = encrypt(&key, &nonce, b"hello", b"ad").unwrap();
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(decrypt(&key, &nonce, &ct, b"ad").unwrap(), b"hello");
        assert_eq!(decrypt(&key, &nonce, &ct, b"AD"), Err(Error::Decryption));
        ct[0] ^= 1;
        assert_eq!(decrypt(&key, &nonce, &ct, b"ad"), Err(Error::Decryption));
        assert_eq!(
            decrypt(&key, &nonce, &ct[..15], b"ad"),
            Err(Error::Decryption)
        );
    }
}
