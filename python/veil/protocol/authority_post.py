"""Who posts to an authority: a signed header checked before the body is read.

A vote may be as large as ``max_vote_bytes`` (128 MiB by default), and a vote's own signature can
only be checked once it has been read whole. So the authority that posts one says who it is in a
header, and the receiving authority checks that header as soon as the request's headers are in:
a stranger's body is refused unread (``veil.node.http.BodyGate``).

```
Veil-Authority-Auth: <sender Ed25519 key, 64 hex>.<timestamp ms>.<signature, 128 hex>
```

The signature is the sender's Ed25519 signature over ``signed_bytes``: a domain tag, the sender's
and the receiver's keys, the path, the body's Content-Length and the timestamp. The receiver takes
it only from an authority of its network file, for itself, for that path and length, within its
clock skew of now, and with a timestamp later than the last one it took from that sender: a header
seen on the wire cannot be used again, nor at another authority, nor for a larger body.
"""

from __future__ import annotations

import struct

from veil.errors import InvalidInputError

__all__ = ["HEADER", "HEADER_KEY", "parse", "signed_bytes", "value"]

HEADER = "Veil-Authority-Auth"
HEADER_KEY = HEADER.lower().encode()
"""The header's name as the HTTP layer hands it to a gate (lower-case bytes)."""
_DOMAIN = b"veil-authority-post-v1\x00"
_KEY_HEX = 64
_SIGNATURE_HEX = 128
_MAX_VALUE = _KEY_HEX + 1 + 20 + 1 + _SIGNATURE_HEX
"""The longest value parsed at all (a timestamp of up to 20 digits)."""


def signed_bytes(
    sender: bytes, receiver: bytes, path: bytes, content_length: int, timestamp_ms: int
) -> bytes:
    """What the sender signs (keys of 32 bytes; ``path`` at most 65,535 bytes)."""
    return b"".join(
        (
            _DOMAIN,
            sender,
            receiver,
            struct.pack(">H", len(path)),
            path,
            struct.pack(">QQ", content_length, timestamp_ms),
        )
    )


def value(sender: bytes, timestamp_ms: int, signature: bytes) -> str:
    """The header's value."""
    return f"{sender.hex()}.{timestamp_ms}.{signature.hex()}"


def parse(raw: bytes) -> tuple[bytes, int, bytes]:
    """``(sender key, timestamp ms, signature)`` from a header's value; :class:`InvalidInputError`
    for anything not of that form."""
    if not raw or len(raw) > _MAX_VALUE:
        raise InvalidInputError("malformed authority header")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise InvalidInputError("malformed authority header")
    key, stamp, signature = parts
    if len(key) != _KEY_HEX or len(signature) != _SIGNATURE_HEX or not stamp.isdigit():
        raise InvalidInputError("malformed authority header")
    try:
        sender, signed = bytes.fromhex(key.decode("ascii")), bytes.fromhex(signature.decode())
    except (UnicodeDecodeError, ValueError):
        raise InvalidInputError("malformed authority header") from None
    if len(sender) != _KEY_HEX // 2 or len(signed) != _SIGNATURE_HEX // 2:  # (fromhex skips spaces)
        raise InvalidInputError("malformed authority header")
    return sender, int(stamp), signed
