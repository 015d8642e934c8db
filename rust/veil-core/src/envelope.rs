//! Veil v2 one-to-one messages: forward secret and post-quantum (`docs/protocol.md`, "Forward
//! secrecy and post-quantum protection").
//!
//! A message is sealed once under a fresh content key (CEK), and the CEK is wrapped for each of the
//! recipient's devices under a fresh hybrid (X25519 + ML-KEM-768) encapsulation to that device's
//! current prekey:
//!
//! ```text
//! envelope = "VEIL" 0x02 ‖ n (1) ‖ slot₁ ‖ … ‖ slotₙ ‖ nonce (24) ‖ body
//! slot     = key_id (8) ‖ kem_ct (1,120) ‖ wrapped (48)
//! kek      = BLAKE2b-256(key = ss, "veil-v2-wrap" ‖ key_id ‖ Y_x ‖ kem_ct)      ss: the KEM's secret
//! wrapped  = XChaCha20-Poly1305(kek, nonce = 0²⁴, aad = "veil-v2-slot", CEK)
//! body     = XChaCha20-Poly1305(CEK, nonce, aad = everything before the body, A_ed ‖ SIG ‖ M)
//! SIG      = Ed25519_sign("veil-v2" ‖ M ‖ A_ed ‖ Y_x)
//! ```
//!
//! `Y_x` is the recipient account's X25519 key (its Session ID), `A_ed` the sender's Ed25519 key.
//! Nothing in an envelope is the same in two messages (every encapsulation and CEK is fresh), so a
//! node that holds them cannot tell which came from the same sender. Opening finds the slots whose
//! key id is one of the device's prekeys, decapsulates, unwraps, decrypts and verifies the
//! signature; every failure is the one [`Error::Decryption`].

use zeroize::Zeroizing;

use crate::aead;
use crate::ed25519::{self, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::error::{Error, Result};
use crate::hash;
use crate::kem::{self, HYBRID_CT_LEN, HYBRID_PUBLIC_LEN, HYBRID_RANDOMNESS_LEN};

/// The first bytes of every v2 message.
pub const MAGIC: &[u8; 5] = b"VEIL\x02";
pub const KEY_ID_LEN: usize = 8;
pub const WRAPPED_LEN: usize = 32 + aead::TAG_LEN;
pub const SLOT_LEN: usize = KEY_ID_LEN + HYBRID_CT_LEN + WRAPPED_LEN;
/// Most recipient devices (slots) in one envelope.
pub const MAX_SLOTS: usize = 16;
const SIGNED_CONTEXT: &[u8] = b"veil-v2";
const WRAP_CONTEXT: &[u8] = b"veil-v2-wrap";
const SLOT_AAD: &[u8] = b"veil-v2-slot";
const HEAD_LEN: usize = MAGIC.len() + 1;

/// One recipient device: its prekey's id and hybrid public key.
pub struct Recipient<'a> {
    pub key_id: [u8; KEY_ID_LEN],
    pub public: &'a [u8],
}

/// The randomness of one seal: the CEK, the body's nonce, and each slot's encapsulation
/// randomness (fixed only for test vectors).
pub struct Randomness {
    pub cek: Zeroizing<[u8; 32]>,
    pub nonce: [u8; aead::NONCE_LEN],
    pub kem: Vec<Zeroizing<[u8; HYBRID_RANDOMNESS_LEN]>>,
}

impl Randomness {
    /// Fresh randomness from the OS for `slots` slots.
    #[must_use]
    pub fn fresh(slots: usize) -> Randomness {
        use rand_core::{OsRng, RngCore};
        let mut cek = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(cek.as_mut());
        let mut nonce = [0u8; aead::NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let kem = (0..slots)
            .map(|_| {
                let mut r = Zeroizing::new([0u8; HYBRID_RANDOMNESS_LEN]);
                OsRng.fill_bytes(r.as_mut());
                r
            })
            .collect();
        Randomness { cek, nonce, kem }
    }
}

fn kek(
    shared: &[u8; 32],
    key_id: [u8; KEY_ID_LEN],
    recipient_x25519: &[u8; 32],
    kem_ct: &[u8],
) -> Result<Zeroizing<[u8; 32]>> {
    let digest = hash::blake2b(
        &[WRAP_CONTEXT, &key_id, recipient_x25519, kem_ct],
        32,
        Some(shared),
    )?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&digest);
    Ok(key)
}

fn signed_bytes(plaintext: &[u8], sender_ed: &[u8; 32], recipient_x25519: &[u8; 32]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(SIGNED_CONTEXT.len() + plaintext.len() + 64);
    signed.extend_from_slice(SIGNED_CONTEXT);
    signed.extend_from_slice(plaintext);
    signed.extend_from_slice(sender_ed);
    signed.extend_from_slice(recipient_x25519);
    signed
}

/// Seals `plaintext` from the sender (Ed25519 seed) to the recipient account's devices.
pub fn seal(
    sender_seed: &[u8; 32],
    recipient_x25519: &[u8; 32],
    recipients: &[Recipient<'_>],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal_with(
        sender_seed,
        recipient_x25519,
        recipients,
        plaintext,
        &Randomness::fresh(recipients.len()),
    )
}

/// [`seal`] with the given randomness (test vectors; a CEK or KEM randomness must never be reused).
pub fn seal_with(
    sender_seed: &[u8; 32],
    recipient_x25519: &[u8; 32],
    recipients: &[Recipient<'_>],
    plaintext: &[u8],
    randomness: &Randomness,
) -> Result<Vec<u8>> {
    if recipients.is_empty() || recipients.len() > MAX_SLOTS {
        return Err(Error::InvalidArgument(
            "an envelope has 1 to 16 recipient devices",
        ));
    }
    if randomness.kem.len() != recipients.len() {
        return Err(Error::InvalidArgument(
            "one KEM randomness per recipient device",
        ));
    }
    let mut envelope = Vec::with_capacity(
        HEAD_LEN + recipients.len() * SLOT_LEN + aead::NONCE_LEN + plaintext.len() + 200,
    );
    envelope.extend_from_slice(MAGIC);
    envelope.push(u8::try_from(recipients.len()).map_err(|_| Error::InvalidArgument("slots"))?);
    for (recipient, kem_randomness) in recipients.iter().zip(&randomness.kem) {
        if recipient.public.len() != HYBRID_PUBLIC_LEN {
            return Err(Error::InvalidLength {
                what: "prekey",
                expected: HYBRID_PUBLIC_LEN,
                actual: recipient.public.len(),
            });
        }
        let (kem_ct, shared) =
            kem::hybrid_encapsulate_deterministic(recipient.public, kem_randomness)?;
        let key = kek(&shared, recipient.key_id, recipient_x25519, &kem_ct)?;
        let wrapped = aead::encrypt(
            &key,
            &[0u8; aead::NONCE_LEN],
            randomness.cek.as_ref(),
            SLOT_AAD,
        )?;
        envelope.extend_from_slice(&recipient.key_id);
        envelope.extend_from_slice(&kem_ct);
        envelope.extend_from_slice(&wrapped);
    }
    envelope.extend_from_slice(&randomness.nonce);
    let sender_ed = ed25519::public_key(sender_seed);
    let signature = ed25519::sign(
        sender_seed,
        &signed_bytes(plaintext, &sender_ed, recipient_x25519),
    );
    let mut inner = Zeroizing::new(Vec::with_capacity(96 + plaintext.len()));
    inner.extend_from_slice(&sender_ed);
    inner.extend_from_slice(&signature);
    inner.extend_from_slice(plaintext);
    let body = aead::encrypt(&randomness.cek, &randomness.nonce, &inner, &envelope)?;
    envelope.extend_from_slice(&body);
    Ok(envelope)
}

/// Whether `data` is a v2 envelope (by its first bytes; opening decides the rest).
#[must_use]
pub fn is_envelope(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// An opened v2 message.
pub struct Opened {
    pub plaintext: Vec<u8>,
    pub sender_ed25519: [u8; PUBLIC_KEY_LEN],
    pub sender_x25519: [u8; 32],
}

/// The CEK from the first slot one of `prekeys` opens.
fn unwrap_cek(
    slots: &[u8],
    recipient_x25519: &[u8; 32],
    prekeys: &[([u8; KEY_ID_LEN], &[u8])],
) -> Result<Zeroizing<[u8; 32]>> {
    for slot in slots.chunks_exact(SLOT_LEN) {
        let (id, rest) = slot.split_at(KEY_ID_LEN);
        let (kem_ct, wrapped) = rest.split_at(HYBRID_CT_LEN);
        for (key_id, secret) in prekeys {
            if id != key_id.as_slice() {
                continue;
            }
            let Ok(prekey) = kem::HybridSecretKey::from_seed_bytes(secret) else {
                continue;
            };
            let Ok(shared) = prekey.decapsulate(kem_ct) else {
                continue;
            };
            let key = kek(&shared, *key_id, recipient_x25519, kem_ct)?;
            if let Ok(cek) = aead::decrypt(&key, &[0u8; aead::NONCE_LEN], wrapped, SLOT_AAD) {
                let mut out = Zeroizing::new([0u8; 32]);
                if cek.len() == 32 {
                    out.copy_from_slice(&cek);
                    return Ok(out);
                }
            }
        }
    }
    Err(Error::Decryption)
}

/// Opens an envelope with the device's prekeys (id, hybrid secret) for the recipient account
/// `recipient_x25519`.
pub fn open(
    envelope: &[u8],
    recipient_x25519: &[u8; 32],
    prekeys: &[([u8; KEY_ID_LEN], &[u8])],
) -> Result<Opened> {
    if !is_envelope(envelope) || envelope.len() < HEAD_LEN {
        return Err(Error::Decryption);
    }
    let count = usize::from(envelope[MAGIC.len()]);
    if count == 0 || count > MAX_SLOTS {
        return Err(Error::Decryption);
    }
    let slots_end = HEAD_LEN + count * SLOT_LEN;
    let body_start = slots_end + aead::NONCE_LEN;
    if envelope.len() < body_start + PUBLIC_KEY_LEN + SIGNATURE_LEN + aead::TAG_LEN {
        return Err(Error::Decryption);
    }
    let cek = unwrap_cek(&envelope[HEAD_LEN..slots_end], recipient_x25519, prekeys)?;
    let nonce: [u8; aead::NONCE_LEN] = envelope[slots_end..body_start]
        .try_into()
        .map_err(|_| Error::Decryption)?;
    let inner = Zeroizing::new(aead::decrypt(
        &cek,
        &nonce,
        &envelope[body_start..],
        &envelope[..body_start],
    )?);
    let sender_ed25519: [u8; PUBLIC_KEY_LEN] = inner[..PUBLIC_KEY_LEN]
        .try_into()
        .map_err(|_| Error::Decryption)?;
    let signature: [u8; SIGNATURE_LEN] = inner[PUBLIC_KEY_LEN..PUBLIC_KEY_LEN + SIGNATURE_LEN]
        .try_into()
        .map_err(|_| Error::Decryption)?;
    let plaintext = inner[PUBLIC_KEY_LEN + SIGNATURE_LEN..].to_vec();
    let sender_x25519 =
        ed25519::public_key_to_x25519(&sender_ed25519).map_err(|_| Error::Decryption)?;
    if !ed25519::verify(
        &sender_ed25519,
        &signed_bytes(&plaintext, &sender_ed25519, recipient_x25519),
        &signature,
    ) {
        return Err(Error::Decryption);
    }
    Ok(Opened {
        plaintext,
        sender_ed25519,
        sender_x25519,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prekey(seed: u8) -> ([u8; KEY_ID_LEN], [u8; 32], [u8; HYBRID_PUBLIC_LEN]) {
        let secret = [seed; 32];
        let public = kem::hybrid_public_key(&secret).unwrap();
        ([seed; KEY_ID_LEN], secret, public)
    }

    #[test]
    fn every_device_opens_its_slot_and_nothing_else_opens() {
        let sender = [7u8; 32];
        let recipient = [9u8; 32];
        let (id_a, secret_a, public_a) = prekey(1);
        let (id_b, secret_b, public_b) = prekey(2);
        let (id_c, secret_c, _) = prekey(3);
        let slots = [
            Recipient {
                key_id: id_a,
                public: &public_a,
            },
            Recipient {
                key_id: id_b,
                public: &public_b,
            },
        ];
        let sealed = seal(&sender, &recipient, &slots, b"hello").unwrap();
        assert_eq!(sealed.len(), HEAD_LEN + 2 * SLOT_LEN + 24 + 16 + 96 + 5);
        for (id, secret) in [(id_a, &secret_a[..]), (id_b, &secret_b[..])] {
            let opened = open(&sealed, &recipient, &[(id, secret)]).unwrap();
            assert_eq!(opened.plaintext, b"hello");
            assert_eq!(opened.sender_ed25519, ed25519::public_key(&sender));
        }
        assert!(open(&sealed, &recipient, &[(id_c, &secret_c[..])]).is_err());
        assert!(open(&sealed, &[8u8; 32], &[(id_a, &secret_a[..])]).is_err());
        for position in [0, 5, 6, 20, HEAD_LEN + SLOT_LEN + 3, sealed.len() - 1] {
            let mut damaged = sealed.clone();
            damaged[position] ^= 1;
            assert_eq!(
                open(
                    &damaged,
                    &recipient,
                    &[(id_a, &secret_a[..]), (id_b, &secret_b[..])]
                )
                .err(),
                Some(Error::Decryption),
                "{position}"
            );
        }
        assert!(open(
            &sealed[..sealed.len() - 1],
            &recipient,
            &[(id_a, &secret_a[..])]
        )
        .is_err());
    }

    #[test]
    fn no_two_seals_share_a_byte_string() {
        let (id, _, public) = prekey(1);
        let slots = [Recipient {
            key_id: id,
            public: &public,
        }];
        let a = seal(&[7u8; 32], &[9u8; 32], &slots, b"same").unwrap();
        let b = seal(&[7u8; 32], &[9u8; 32], &slots, b"same").unwrap();
        // Only the magic, the count and the key id repeat.
        assert_eq!(a[..HEAD_LEN + KEY_ID_LEN], b[..HEAD_LEN + KEY_ID_LEN]);
        assert_ne!(
            a[HEAD_LEN + KEY_ID_LEN..HEAD_LEN + KEY_ID_LEN + 32],
            b[HEAD_LEN + KEY_ID_LEN..HEAD_LEN + KEY_ID_LEN + 32]
        );
        assert_ne!(a[a.len() - 40..], b[b.len() - 40..]);
    }

    #[test]
    fn slot_counts_outside_one_to_sixteen_are_refused() {
        assert!(seal(&[7u8; 32], &[9u8; 32], &[], b"x").is_err());
        let (id, _, public) = prekey(1);
        let many: Vec<Recipient<'_>> = (0..17)
            .map(|_| Recipient {
                key_id: id,
                public: &public,
            })
            .collect();
        assert!(seal(&[7u8; 32], &[9u8; 32], &many, b"x").is_err());
    }
}
