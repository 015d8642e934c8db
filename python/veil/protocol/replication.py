"""A message as swarm members hold and replicate it, the store authorisation it travels with, and
the receipts members sign for it (``docs/protocol.md``, "Node RPCs").

```
message  = account (33) · namespace (signed 16-bit) · timestamp_ms · expiry_ms · data · auth
hash     = veil.protocol.hashes.message_hash(account, namespace, data)      (recomputed, never sent)
auth     = none                                              namespace 0: anyone may store
         | sig_timestamp_ms · signer (Ed25519, 32) · signature (64)
           the account owner's signature of "store" ‖ namespace ‖ sig_timestamp (decimal text),
           as the client's store carried it (veil.protocol.storage_rpc); signer is the account's
           Ed25519 key (for a 05 account, the key whose X25519 form is the account)
receipt  = Ed25519 by the member over "veil-receipt-v1" ‖ hash (32) ‖ expiry_ms (8, big-endian)
```

A member signs a receipt only for a message it validated and holds durably. The client sees the
receipts of a store as ``{"node": hex Ed25519 key, "signature": base64}`` and can check each one
against the member's announced key (:func:`verify_receipt`).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from veil import _core

__all__ = [
    "RECEIPT_CONTEXT",
    "Message",
    "StoreAuth",
    "receipt_bytes",
    "receipt_json",
    "verify_receipt",
]

RECEIPT_CONTEXT = b"veil-receipt-v1"
_EXPIRY = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class StoreAuth:
    """The account owner's authorisation of a store outside namespace 0, kept with the message so
    that every member it is replicated to can check it."""

    sig_timestamp_ms: int
    signer: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A message held for an account. ``hash`` is :func:`veil.protocol.hashes.message_hash` of
    the account, namespace and data."""

    account: bytes
    namespace: int
    timestamp_ms: int
    expiry_ms: int
    data: bytes
    hash: bytes
    auth: StoreAuth | None = None


def receipt_bytes(digest: bytes, expiry_ms: int) -> bytes:
    """What a member signs for a message it holds."""
    return RECEIPT_CONTEXT + digest + _EXPIRY.pack(expiry_ms)


def receipt_json(node: bytes, signature: bytes) -> dict[str, str]:
    """A receipt as a store answer carries it to the client."""
    return {"node": node.hex(), "signature": base64.b64encode(signature).decode("ascii")}


def verify_receipt(receipt: object, digest: bytes, expiry_ms: int) -> bytes | None:
    """The signing node's Ed25519 key if ``receipt`` (client form) is valid for the message."""
    if not isinstance(receipt, dict):
        return None
    try:
        node = bytes.fromhex(receipt["node"])
        signature = base64.b64decode(receipt["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if len(node) != 32 or len(signature) != 64:
        return None
    if not _core.ed25519_verify(node, receipt_bytes(digest, expiry_ms), signature):
        return None
    return node
