"""What a message must be for a node to hold it, however it arrived.

A client's ``store`` is checked field by field by the storage RPC (``veil.node.rpc``), which answers
each failure with its own error. A message that arrives from another swarm member (``replicate``,
or fetched by anti-entropy) has no client to answer, so :func:`acceptable` says yes or no — by the
same rules: its size, a lifetime no longer than ``max_ttl_ms`` from its timestamp, a timestamp
neither ahead of the clock window nor older than the longest lifetime, not yet expired, and,
outside namespace 0, the account owner's store authorisation (the signature of ``"store" ‖
namespace ‖ sig_timestamp`` the client's store carried, by the account's Ed25519 key, with a
signature time within twice the clock window of the message's timestamp).
"""

from __future__ import annotations

import hmac

from veil import _core
from veil.errors import InvalidKeyError
from veil.node.config import Limits
from veil.protocol.replication import Message
from veil.protocol.storage_rpc import store_string

__all__ = ["acceptable", "signer_owns"]

_SESSION, _ED25519 = 0x05, 0x03


def acceptable(message: Message, limits: Limits, now_ms: int) -> bool:
    """Whether a message from another member is one a client could have stored here."""
    skew, ttl = limits.clock_skew_ms, limits.max_ttl_ms
    timestamp, expiry = message.timestamp_ms, message.expiry_ms
    if (
        len(message.data) > limits.max_message_bytes
        or not now_ms - ttl <= timestamp <= now_ms + skew
        or not max(timestamp, now_ms + 1) <= expiry <= timestamp + ttl
    ):
        return False
    if message.namespace == 0:
        return True
    auth = message.auth
    if auth is None or abs(auth.sig_timestamp_ms - message.timestamp_ms) > 2 * skew:
        return False
    if not signer_owns(message.account, auth.signer):
        return False
    signed = store_string(message.namespace, auth.sig_timestamp_ms)
    return _core.ed25519_verify(auth.signer, signed, auth.signature)


def signer_owns(account: bytes, signer: bytes) -> bool:
    """Whether ``signer`` (an Ed25519 key) is the key of ``account`` (05: by its X25519 form)."""
    if account[0] == _ED25519:
        return hmac.compare_digest(account[1:], signer)
    if account[0] != _SESSION:
        return False
    try:
        return hmac.compare_digest(_core.ed25519_public_key_to_x25519(signer), account[1:])
    except InvalidKeyError:
        return False
