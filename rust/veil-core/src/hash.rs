//! BLAKE2b (RFC 7693), keyed and unkeyed, with any digest size from 1 to 64 bytes — libsodium's
//! `crypto_generichash`. `blake2b_simd` picks the AVX2 or SSE4.1 kernel at run time.

use blake2b_simd::Params;

use crate::error::{Error, Result};

pub const MAX_DIGEST_LEN: usize = 64;
pub const MAX_KEY_LEN: usize = 64;

/// BLAKE2b over the concatenation of `parts`, with an optional key of at most 64 bytes (an empty key
/// is no key, as in libsodium).
pub fn blake2b(parts: &[&[u8]], digest_len: usize, key: Option<&[u8]>) -> Result<Vec<u8>> {
    if digest_len == 0 || digest_len > MAX_DIGEST_LEN {
        return Err(Error::InvalidArgument(
            "digest size must be between 1 and 64 bytes",
        ));
    }
    let mut params = Params::new();
    params.hash_length(digest_len);
    if let Some(key) = key {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidArgument(
                "BLAKE2b key must be at most 64 bytes",
            ));
        }
        params.key(key);
    }
    let mut state = params.to_state();
    for part in parts {
        state.update(part);
    }
    Ok(state.finalize().as_bytes().to_vec())
}

/// Unkeyed BLAKE2b-256 over the concatenation of `parts`.
#[must_use]
pub fn blake2b_256(parts: &[&[u8]]) -> [u8; 32] {
    let mut state = Params::new().hash_length(32).to_state();
    for part in parts {
        state.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7693_appendix_a_abc() {
        let digest = blake2b(&[b"abc"], 64, None).unwrap();
        assert_eq!(
            digest[..8],
            [0xBA, 0x80, 0xA5, 0x3F, 0x98, 0x1C, 0x4D, 0x0D]
        );
    }

    #[test]
    fn parts_hash_as_their_concatenation() {
        assert_eq!(blake2b_256(&[b"ab", b"c"]), blake2b_256(&[b"abc"]));
        assert_eq!(
            blake2b(&[b"abc"], 32, None).unwrap(),
            blake2b_256(&[b"abc"]).to_vec()
        );
    }

    #[test]
    fn sizes_outside_the_domain_are_rejected() {
        assert!(blake2b(&[b""], 0, None).is_err());
        assert!(blake2b(&[b""], 65, None).is_err());
        assert!(blake2b(&[b""], 32, Some(&[0u8; 65])).is_err());
    }
}
