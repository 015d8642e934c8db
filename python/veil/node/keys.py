"""Storage layout of one message and its index keys (``docs/storage.md``).

Every multi-byte integer is big-endian so that LMDB's byte order is numeric order. The namespace, a
signed 16-bit integer, is stored offset by 0x8000 so that -32768 sorts first.

```
account        = type(1) ‖ key(32)                                    33 bytes (0x05 ‖ X25519 key)
message key    = account ‖ namespace+0x8000 (2) ‖ arrival_us (8) ‖ hash (32)           75 bytes
message value  = expiry_ms (8) ‖ timestamp_ms (8) ‖ data
expiry key     = expiry_ms (8) ‖ message key                                            83 bytes
hash key       = hash (32)                      → value: message key
account key    = account                        → value: count (8) ‖ bytes (8)
cursor         = arrival_us (8) ‖ hash (32)     (the tail of a message key; the same on every node)
```

The message hash, the cursor and their text forms, which clients use too, are defined in
:mod:`veil.protocol.hashes`.
"""

from __future__ import annotations

import struct

from veil import _core
from veil.protocol.hashes import ACCOUNT_LEN, CURSOR_LEN

__all__ = [
    "MESSAGE_KEY_LEN",
    "NAMESPACE_PREFIX_LEN",
    "expiry_key",
    "message_key",
    "namespace_prefix",
    "split_message_key",
]

NAMESPACE_PREFIX_LEN = ACCOUNT_LEN + 2
MESSAGE_KEY_LEN = NAMESPACE_PREFIX_LEN + CURSOR_LEN

_NS = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_KEY_TAIL = struct.Struct(">HQ")


def namespace_prefix(account: bytes, namespace: int) -> bytes:
    """The first 35 bytes of every message key of one account's namespace."""
    return account + _NS.pack(namespace + 0x8000)


def message_key(account: bytes, namespace: int, arrival_us: int, digest: bytes) -> bytes:
    """The 75-byte key of a message in the messages table.

    In Rust (``veil._core.store_message_key``): measured 2x faster than the ``struct`` version
    (docs/performance.md, "Storage"). ``account`` must be 33 bytes and ``digest`` 32.
    """
    return _core.store_message_key(account, namespace, arrival_us, digest)


def expiry_key(expiry_ms: int, key: bytes) -> bytes:
    """The 83-byte key of a message in the expiry index."""
    return _U64.pack(expiry_ms) + key


def split_message_key(key: bytes) -> tuple[bytes, int, int, bytes]:
    """(account, namespace, arrival_us, hash) of a message key."""
    ns, arrival_us = _KEY_TAIL.unpack_from(key, ACCOUNT_LEN)
    return key[:ACCOUNT_LEN], ns - 0x8000, arrival_us, key[NAMESPACE_PREFIX_LEN + 8 :]
