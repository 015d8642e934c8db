"""Session IDs: ``"05"`` followed by the 64 lowercase hex digits of an X25519 public key.

Example: the X25519 key ``bb...`` (32 bytes) is the Session ID ``"05bb..."`` (66 characters).
"""

from __future__ import annotations

from veil.errors import InvalidSessionIdError

__all__ = ["SESSION_ID_PREFIX", "format_session_id", "parse_session_id"]

SESSION_ID_PREFIX = "05"
_HEX_DIGITS = frozenset("0123456789abcdef")


def format_session_id(x25519_public_key: bytes) -> str:
    """Return the Session ID of a 32-byte X25519 public key."""
    if len(x25519_public_key) != 32:
        raise InvalidSessionIdError("an X25519 public key is 32 bytes")
    return SESSION_ID_PREFIX + x25519_public_key.hex()


def parse_session_id(session_id: str) -> bytes:
    """Return the X25519 public key named by a Session ID (either case is accepted)."""
    if not isinstance(session_id, str):
        raise InvalidSessionIdError("a Session ID is a string")
    text = session_id.strip().lower()
    if len(text) != 66 or not text.startswith(SESSION_ID_PREFIX):
        raise InvalidSessionIdError("a Session ID is '05' followed by 64 hexadecimal digits")
    if not _HEX_DIGITS.issuperset(text[2:]):
        raise InvalidSessionIdError("a Session ID is '05' followed by 64 hexadecimal digits")
    return bytes.fromhex(text[2:])
