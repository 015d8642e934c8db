//! Ed25519 (RFC 8032) and the standard Ed25519 → X25519 conversions (libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519` / `crypto_sign_ed25519_sk_to_curve25519`).

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub const SEED_LEN: usize = 32;
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// The Ed25519 public key of a 32-byte seed.
#[must_use]
pub fn public_key(seed: &[u8; SEED_LEN]) -> [u8; PUBLIC_KEY_LEN] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// Signs `message` with the key pair of `seed` (deterministic, RFC 8032).
#[must_use]
pub fn sign(seed: &[u8; SEED_LEN], message: &[u8]) -> [u8; SIGNATURE_LEN] {
    SigningKey::from_bytes(seed).sign(message).to_bytes()
}

/// Verifies an Ed25519 signature. Returns `false` for any invalid signature or unusable public key.
///
/// Uses `verify_strict`: rejects non-canonical `S`, small-order `R` and small-order public keys, so
/// that a signature cannot be mauled into another valid one (Wycheproof's expectations).
#[must_use]
pub fn verify(
    public_key: &[u8; PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// The key pair of a signer that signs often (a node: its store results and receipts), held as
/// AWS-LC's: [`sign`] derives the public key from the seed on every call, which costs about as
/// much as the signature itself, and AWS-LC's signing (s2n-bignum's constant-time fixed-base
/// multiplication) measured 1.73–1.79× faster than ed25519-dalek's here (7.1–7.5 against
/// 12.6–13.0 µs; docs/performance.md). Signatures are deterministic (RFC 8032), so they are the
/// same bytes [`sign`] makes. Verification stays ed25519-dalek's `verify_strict`: AWS-LC's was
/// only 1.05–1.10× faster, and checks less (small-order points). The secret lives in AWS-LC's
/// memory, which it wipes when it frees it (`OPENSSL_free` cleanses).
pub struct KeyPair {
    key: aws_lc_rs::signature::Ed25519KeyPair,
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl KeyPair {
    /// Fails only if AWS-LC cannot make the key (it refuses no 32-byte seed).
    pub fn new(seed: &[u8; SEED_LEN]) -> Result<Self> {
        use aws_lc_rs::signature::KeyPair as _;
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| Error::InvalidKey("Ed25519 seed"))?;
        let public_key = <[u8; PUBLIC_KEY_LEN]>::try_from(key.public_key().as_ref())
            .map_err(|_| Error::InvalidKey("Ed25519 seed"))?;
        Ok(Self { key, public_key })
    }

    #[must_use]
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public_key
    }

    /// The same signature [`sign`] makes with this key pair's seed. Fails only if AWS-LC fails
    /// (it cannot allocate).
    pub fn sign(&self, message: &[u8]) -> Result<[u8; SIGNATURE_LEN]> {
        let signature = self
            .key
            .try_sign(message)
            .map_err(|_| Error::InvalidKey("Ed25519 key pair"))?;
        <[u8; SIGNATURE_LEN]>::try_from(signature.as_ref())
            .map_err(|_| Error::InvalidKey("Ed25519 key pair"))
    }
}

/// An Ed25519 public key decompressed once, for a key that verifies many signatures (a swarm
/// member's receipts): [`verify`] decompresses the key on every call.
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Fails for an encoding that is not a point.
    pub fn new(public_key: &[u8; PUBLIC_KEY_LEN]) -> Result<Self> {
        VerifyingKey::from_bytes(public_key)
            .map(Self)
            .map_err(|_| Error::InvalidKey("Ed25519 public key"))
    }

    /// What [`verify`] answers for this key (strict verification).
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// The X25519 public key that corresponds to an Ed25519 public key (birational map `u = (1+y)/(1-y)`).
///
/// Rejects, as libsodium does, encodings that are not points, points of small order and points outside
/// the prime-order subgroup.
pub fn public_key_to_x25519(public_key: &[u8; PUBLIC_KEY_LEN]) -> Result<[u8; 32]> {
    let point = CompressedEdwardsY(*public_key)
        .decompress()
        .ok_or(Error::InvalidKey("Ed25519 public key"))?;
    if point.is_small_order() || !point.is_torsion_free() {
        return Err(Error::InvalidKey("Ed25519 public key"));
    }
    Ok(point.to_montgomery().to_bytes())
}

/// Whether `x25519` is the X25519 form of `ed25519` (see [`public_key_to_x25519`]) and `signature`
/// is a valid (strict) signature of `message` by `ed25519`: one check of a signed identity, as a
/// node announcement carries it. Compared in constant time.
#[must_use]
pub fn verify_identity(
    ed25519: &[u8; PUBLIC_KEY_LEN],
    x25519: &[u8; 32],
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(derived) = public_key_to_x25519(ed25519) else {
        return false;
    };
    bool::from(derived.ct_eq(x25519)) && verify(ed25519, message, signature)
}

/// One input of [`verify_identity_batch`], as received (lengths not yet checked).
pub struct IdentityCheck<'a> {
    pub ed25519: &'a [u8],
    pub x25519: &'a [u8],
    pub message: &'a [u8],
    pub signature: &'a [u8],
}

/// [`verify_identity`] of each input, on every core; an input of the wrong lengths is `false`.
#[must_use]
pub fn verify_identity_batch(items: &[IdentityCheck<'_>]) -> Vec<bool> {
    use rayon::prelude::*;
    items
        .par_iter()
        .map(|item| {
            let (Ok(ed), Ok(x), Ok(signature)) = (
                <&[u8; PUBLIC_KEY_LEN]>::try_from(item.ed25519),
                <&[u8; 32]>::try_from(item.x25519),
                <&[u8; SIGNATURE_LEN]>::try_from(item.signature),
            ) else {
                return false;
            };
            verify_identity(ed, x, item.message, signature)
        })
        .collect()
}

/// The X25519 secret key of an Ed25519 seed: the clamped first half of SHA-512(seed).
#[must_use]
pub fn seed_to_x25519(seed: &[u8; SEED_LEN]) -> Zeroizing<[u8; 32]> {
    let digest = Zeroizing::new(Sha512::digest(seed));
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&digest[..32]);
    secret[0] &= 0b1111_1000;
    secret[31] &= 0b0111_1111;
    secret[31] |= 0b0100_0000;
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x25519;

    #[test]
    fn rfc8032_test_1_empty_message() {
        let seed: [u8; 32] =
            hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .try_into()
                .unwrap();
        let pk = public_key(&seed);
        assert_eq!(
            pk.to_vec(),
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let sig = sign(&seed, b"");
        assert_eq!(sig.to_vec(), hex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"));
        assert!(verify(&pk, b"", &sig));
        assert!(!verify(&pk, b"x", &sig));
    }

    #[test]
    fn signer_and_verifier_agree_with_the_one_shot_functions() {
        for seed in [[0u8; 32], [7u8; 32], [0xff; 32]] {
            let signer = KeyPair::new(&seed).unwrap();
            assert_eq!(signer.public_key(), public_key(&seed));
            let verifier = PublicKey::new(&signer.public_key()).unwrap();
            for message in [&b""[..], b"receipt", &[0x5a; 1000]] {
                let signature = signer.sign(message).unwrap();
                assert_eq!(signature, sign(&seed, message));
                assert!(verifier.verify(message, &signature));
                let mut tampered = signature;
                tampered[5] ^= 1;
                assert!(!verifier.verify(message, &tampered));
                assert!(!verifier.verify(b"other", &signature));
            }
        }
        // Not a point (y = 2 has no x on the curve): refused when the verifier is made.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(PublicKey::new(&not_a_point).is_err());
    }

    #[test]
    fn converted_secret_and_public_keys_agree() {
        let seed = [7u8; 32];
        let x_secret = seed_to_x25519(&seed);
        let from_public = public_key_to_x25519(&public_key(&seed)).unwrap();
        assert_eq!(x25519::public_key(&x_secret).unwrap(), from_public);
    }

    #[test]
    fn identity_point_does_not_convert() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(public_key_to_x25519(&identity).is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
