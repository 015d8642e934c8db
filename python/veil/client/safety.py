"""Safety numbers: 60 digits two people compare in person to know no one sits between them.

Each side's half is a fingerprint of its Session ID, stretched so that finding another key with
the same digits is expensive (as Signal's numeric fingerprints are):

```
digest = SHA-512(version (2, big-endian) = 0 ‖ x25519 public key)
repeat 5,200 times: digest = SHA-512(digest ‖ x25519 public key)
half   = the first 30 bytes as six 5-byte big-endian numbers, each mod 100,000, as 5 digits
number = the two halves in ascending order, concatenated: 60 digits, shown in groups of five
```

Both people get the same number, whoever computes it.
"""

from __future__ import annotations

import hashlib

from veil.session_id import parse_session_id

__all__ = ["safety_number"]

_VERSION = b"\x00\x00"
_ITERATIONS = 5200


def _half(x25519_public_key: bytes) -> str:
    digest = hashlib.sha512(_VERSION + x25519_public_key).digest()
    for _ in range(_ITERATIONS):
        digest = hashlib.sha512(digest + x25519_public_key).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def safety_number(session_id_a: str, session_id_b: str) -> str:
    """The 60-digit safety number of two accounts, in twelve groups of five."""
    halves = sorted(_half(parse_session_id(s)) for s in (session_id_a, session_id_b))
    digits = "".join(halves)
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))
