//! The one error type of the core crate.
//!
//! Messages never contain key material, plaintext or anything derived from a secret. Every failure to
//! decrypt or authenticate is the single variant [`Error::Decryption`], so that callers (and attackers
//! watching them) cannot tell one cause from another.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A key, nonce or other fixed-size input had the wrong length.
    InvalidLength {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A key of the right length that cannot be used: a low-order X25519 point, an Ed25519 public key
    /// that is not a point of the prime-order subgroup.
    InvalidKey(&'static str),
    /// Decryption or authentication failed. Deliberately carries no detail.
    Decryption,
    /// An input exceeded a documented size limit.
    TooLarge { what: &'static str, limit: usize },
    /// An argument outside its documented domain (an empty route, a digest size of 0...).
    InvalidArgument(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidLength {
                what,
                expected,
                actual,
            } => write!(f, "{what} must be {expected} bytes, got {actual}"),
            Self::InvalidKey(what) => write!(f, "invalid {what}"),
            Self::Decryption => f.write_str("decryption failed"),
            Self::TooLarge { what, limit } => {
                write!(f, "{what} exceeds the limit of {limit} bytes")
            }
            Self::InvalidArgument(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Converts a slice to a fixed-size array, naming the input in the error.
pub fn fixed<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| Error::InvalidLength {
        what,
        expected: N,
        actual: bytes.len(),
    })
}
