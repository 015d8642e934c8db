//! The Session Protocol for one-to-one messages:
//!
//! ```text
//! SIG = Ed25519_sign(M ‖ A_ed ‖ Y_x)
//! CT  = crypto_box_seal(M ‖ A_ed ‖ SIG, to Y_x)
//! ```
//!
//! `A_ed` is the sender's Ed25519 public key, `Y_x` the recipient's X25519 public key. Opening checks the
//! signature and that `A_ed` converts to an X25519 key (the sender's Session ID); every failure is the
//! one opaque [`Error::Decryption`].

use crate::ed25519::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::error::{Error, Result};
use crate::sealed_box;

/// Encrypts `plaintext` from the sender (Ed25519 seed) to the recipient's X25519 public key.
pub fn encrypt(
    sender_seed: &[u8; 32],
    recipient_x25519: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let sender_ed = ed25519::public_key(sender_seed);
    let mut signed = Vec::with_capacity(plaintext.len() + 2 * PUBLIC_KEY_LEN);
    signed.extend_from_slice(plaintext);
    signed.extend_from_slice(&sender_ed);
    signed.extend_from_slice(recipient_x25519);
    let signature = ed25519::sign(sender_seed, &signed);

    signed.truncate(plaintext.len() + PUBLIC_KEY_LEN);
    signed.extend_from_slice(&signature);
    sealed_box::seal(recipient_x25519, &signed)
}

/// A decrypted one-to-one message.
pub struct Opened {
    pub plaintext: Vec<u8>,
    pub sender_ed25519: [u8; 32],
    pub sender_x25519: [u8; 32],
}

/// Opens a message with the recipient's X25519 key pair.
pub fn decrypt(
    recipient_secret: &[u8; 32],
    recipient_public: &[u8; 32],
    ciphertext: &[u8],
) -> Result<Opened> {
    let mut content = sealed_box::open(recipient_secret, ciphertext)?;
    let Some(message_len) = content.len().checked_sub(PUBLIC_KEY_LEN + SIGNATURE_LEN) else {
        return Err(Error::Decryption);
    };
    let signature: [u8; SIGNATURE_LEN] = content[message_len + PUBLIC_KEY_LEN..]
        .try_into()
        .map_err(|_| Error::Decryption)?;
    let sender_ed25519: [u8; PUBLIC_KEY_LEN] = content[message_len..message_len + PUBLIC_KEY_LEN]
        .try_into()
        .map_err(|_| Error::Decryption)?;
    content.truncate(message_len + PUBLIC_KEY_LEN);
    content.extend_from_slice(recipient_public);
    if !ed25519::verify(&sender_ed25519, &content, &signature) {
        return Err(Error::Decryption);
    }
    let sender_x25519 =
        ed25519::public_key_to_x25519(&sender_ed25519).map_err(|_| Error::Decryption)?;
    content.truncate(message_len);
    Ok(Opened {
        plaintext: content,
        sender_ed25519,
        sender_x25519,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x25519;

    #[test]
    fn message_round_trip_names_the_sender() {
        let alice_seed = [1u8; 32];
        let bob_seed = [2u8; 32];
        let bob_secret = ed25519::seed_to_x25519(&bob_seed);
        let bob_public = x25519::public_key(&bob_secret).unwrap();
        let ct = encrypt(&alice_seed, &bob_public, b"hi bob").unwrap();
        let opened = decrypt(&bob_secret, &bob_public, &ct).unwrap();
        assert_eq!(opened.plaintext, b"hi bob");
        assert_eq!(opened.sender_ed25519, ed25519::public_key(&alice_seed));
        assert_eq!(
            opened.sender_x25519,
            ed25519::public_key_to_x25519(&ed25519::public_key(&alice_seed)).unwrap()
        );
    }

    #[test]
    fn a_message_for_someone_else_fails_opaquely() {
        let bob_secret = ed25519::seed_to_x25519(&[2u8; 32]);
        let bob_public = x25519::public_key(&bob_secret).unwrap();
        let carol_secret = ed25519::seed_to_x25519(&[3u8; 32]);
        let carol_public = x25519::public_key(&carol_secret).unwrap();
        let ct = encrypt(&[1u8; 32], &bob_public, b"hi bob").unwrap();
        assert!(matches!(
            decrypt(&carol_secret, &carol_public, &ct),
            Err(Error::Decryption)
        ));
    }

    #[test]
    fn a_sealed_box_without_a_signature_fails_opaquely() {
        let bob_secret = ed25519::seed_to_x25519(&[2u8; 32]);
        let bob_public = x25519::public_key(&bob_secret).unwrap();
        let ct = sealed_box::seal(&bob_public, &[0u8; 95]).unwrap();
        assert!(matches!(
            decrypt(&bob_secret, &bob_public, &ct),
            Err(Error::Decryption)
        ));
        let ct = sealed_box::seal(&bob_public, &[0u8; 200]).unwrap();
        assert!(matches!(
            decrypt(&bob_secret, &bob_public, &ct),
            Err(Error::Decryption)
        ));
    }
}
