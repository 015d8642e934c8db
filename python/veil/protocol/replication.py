"""A message as swarm members hold and replicate it, the store authorisation it travels with, and
the receipts members sign for it (``docs/protocol.md``, "Node RPCs").

```
message  = account (33) · namespace (signed 16-bit) · timestamp_ms · expiry_ms · data · auth
           · arrival_us
hash     = veil.protocol.hashes.message_hash(account, namespace, data)      (recomputed, never sent)
auth     = none                                      a public inbox (namespace % 10 == 0)
         | sig_timestamp_ms · signer (Ed25519, 32) · signature (64) · token (0 or 36) · token_sig
           the signature of "store" ‖ ns ‖ sig_timestamp (veil.protocol.storage_rpc) the client's
           store carried: by the account's Ed25519 key, or by a subaccount's key (token, and the
           account key's signature of it, token_sig)
arrival  = when the member the client stored at took the message (µs since the epoch); every
           member files the message under it, so retrieve order (arrival order) and the cursor
           are the same on every member
receipt  = Ed25519 by the member over the message hash in text (43 characters of base64): what
           Session's storage servers sign for a store
```

A member signs a receipt only for a message it validated and holds durably. The client sees the
receipts of a store in the answer's ``swarm`` block (``docs/rpc.md``) and checks each one against
the member's key (:func:`veil.protocol.storage_rpc.verify_swarm`).
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.protocol.hashes import hash_b64

__all__ = ["Message", "StoreAuth", "receipt_bytes"]


@dataclass(frozen=True, slots=True)
class StoreAuth:
    """The authorisation of a store outside the public inboxes, kept with the message so that
    every member it is replicated to can check it."""

    sig_timestamp_ms: int
    signer: bytes
    signature: bytes
    token: bytes = b""
    token_signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Message:
    """A message held for an account. ``hash`` is :func:`veil.protocol.hashes.message_hash` of
    the account, namespace and data; ``arrival_us`` orders it (0: not yet taken by a node)."""

    account: bytes
    namespace: int
    timestamp_ms: int
    expiry_ms: int
    data: bytes
    hash: bytes
    auth: StoreAuth | None = None
    arrival_us: int = 0


def receipt_bytes(digest: bytes) -> bytes:
    """What a member signs for a message it holds: the hash as clients see it."""
    return hash_b64(digest).encode("ascii")
