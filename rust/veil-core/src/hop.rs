//! Hop encryption, as libsession-util's onion requests do it ("xchacha20"):
//!
//! ```text
//! key  = BLAKE2b-256( X25519(a, B) ‖ A ‖ B )      A: the client's public key, B: the server's
//! blob = nonce(24, random) ‖ XChaCha20-Poly1305(key, nonce, plaintext) (ciphertext ‖ tag(16))
//! ```
//!
//! The same key serves both directions. The raw X25519 output is never used as a key.

use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::hash::blake2b_256;
use crate::x25519::StaticSecret;

/// Bytes `HopKey::encrypt` adds to a plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A symmetric key shared by a client and one hop. Zeroed when dropped; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HopKey([u8; 32]);

impl std::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKey(..)")
    }
}

impl HopKey {
    /// The key a client holding `client_secret` shares with the server whose key is `server_public`.
    pub fn for_client(client_secret: &[u8; 32], server_public: &[u8; 32]) -> Result<Self> {
        Self::client_side(&StaticSecret::from_bytes(client_secret)?, server_public)
    }

    /// The key a server holding `server_secret` shares with the client whose key is `client_public`.
    pub fn for_server(server_secret: &[u8; 32], client_public: &[u8; 32]) -> Result<Self> {
        Self::server_side(&StaticSecret::from_bytes(server_secret)?, client_public)
    }

    /// As [`HopKey::for_client`], with the client's key already parsed.
    pub fn client_side(client: &StaticSecret, server_public: &[u8; 32]) -> Result<Self> {
        let shared = client.diffie_hellman(server_public)?;
        Ok(Self(blake2b_256(&[
            &shared[..],
            client.public(),
            server_public,
        ])))
    }

    /// As [`HopKey::for_server`], with the server's key already parsed (the node's hot path).
    pub fn server_side(server: &StaticSecret, client_public: &[u8; 32]) -> Result<Self> {
        let shared = server.diffie_hellman(client_public)?;
        Ok(Self(blake2b_256(&[
            &shared[..],
            client_public,
            server.public(),
        ])))
    }

    /// A key from its 32 raw bytes.
    #[must_use]
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The raw key. Callers must not log it.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `nonce ‖ ciphertext ‖ tag` with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.encrypt_with_aad(plaintext, b"")
    }

    /// As [`HopKey::encrypt`], authenticating `aad` as well.
    pub fn encrypt_with_aad(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = aead::encrypt(&self.0, &nonce, plaintext, aad)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`. Any failure, including a blob too short to hold a nonce and
    /// a tag, is [`Error::Decryption`].
    pub fn decrypt(&self, blob: &[u8]) -> Result<Vec<u8>> {
        self.decrypt_with_aad(blob, b"")
    }

    /// As [`HopKey::decrypt`], checking `aad` as well.
    pub fn decrypt_with_aad(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if blob.len() < OVERHEAD {
            return Err(Error::Decryption);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Decryption)?;
        aead::decrypt(&self.0, nonce, ciphertext, aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_derive_the_same_key() {
        let client = crate::x25519::generate_secret();
        let server = crate::x25519::generate_secret();
        let to_server =
            HopKey::for_client(&client, &crate::x25519::public_key(&server).unwrap()).unwrap();
        let at_server =
            HopKey::for_server(&server, &crate::x25519::public_key(&client).unwrap()).unwrap();
        assert_eq!(to_server.as_bytes(), at_server.as_bytes());
        let blob = to_server.encrypt(b"request").unwrap();
        assert_eq!(blob.len(), 7 + OVERHEAD);
        assert_eq!(at_server.decrypt(&blob).unwrap(), b"request");
        let reply = at_server.encrypt(b"response").unwrap();
        assert_eq!(to_server.decrypt(&reply).unwrap(), b"response");
    }

    #[test]
    fn short_or_tampered_blobs_fail_alike() {
        let key = HopKey::from_bytes([9u8; 32]);
        let mut blob = key.encrypt(b"x").unwrap();
        assert_eq!(key.decrypt(&blob[..OVERHEAD - 1]), Err(Error::Decryption));
        blob[30] ^= 0x80;
        assert_eq!(key.decrypt(&blob), Err(Error::Decryption));
    }
}
