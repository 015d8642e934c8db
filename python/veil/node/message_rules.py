"""What a message must be for a node to hold it, however it arrived.

A client's ``store`` is checked field by field by the storage RPC (``veil.node.rpc``), which answers
each failure with its own error. A message that arrives from another swarm member (``replicate``,
or fetched by anti-entropy) has no client to answer, so :func:`acceptable` says yes or no — by the
same rules: its size; where it is placed (:func:`placement_error`); not yet expired, and expiring no
later than ``expire`` could push it (:func:`max_lifetime`) from now;
a timestamp and an arrival time not ahead of the clock window;
and, outside the public inboxes, the store authorisation the client's store carried (the signature
of ``"store" ‖ ns ‖ sig_timestamp`` by the account's key, or by a subaccount that key signed with
write access and that is not revoked here), with a signature time within the clock window of the
message's arrival. The lifetime limits of a store are checked where the client stored; a member
checks only that an expiry is no further than ``expire`` could have pushed it.
"""

from __future__ import annotations

from veil import _core
from veil.node.auth import RevokedCheck, owns, store_access, token_allows
from veil.node.config import Limits
from veil.protocol.attachments import ATTACHMENT_PREFIX, NS_ATTACHMENTS
from veil.protocol.replication import Message
from veil.protocol.storage_rpc import is_public_inbox_namespace, store_string

__all__ = ["acceptable", "max_lifetime", "max_ttl", "placement_error"]

ATTACHMENT_ACCOUNT_MAX_MESSAGES = 1
"""An attachment account (prefix ``0a``) holds one chunk: its key is derived for that chunk alone
(``veil.protocol.attachments``)."""


def max_ttl(limits: Limits, namespace: int) -> int:
    """The longest lifetime a store to ``namespace`` may ask for."""
    if namespace == NS_ATTACHMENTS:
        return limits.attachment_max_ttl_ms
    return limits.max_ttl_ms if is_public_inbox_namespace(namespace) else limits.max_ttl_private_ms


def max_lifetime(limits: Limits, account: bytes) -> int:
    """The furthest from now ``expire`` may push the expiry of a message of ``account``."""
    if account[:1] == bytes([ATTACHMENT_PREFIX]):
        return limits.attachment_max_ttl_ms
    return limits.max_ttl_private_ms


def placement_error(account: bytes, namespace: int) -> str | None:
    """Why ``account`` may not hold a message in ``namespace``, or None. Attachment chunks live
    in namespace 17 of attachment accounts (prefix ``0a``), and those accounts hold nothing else:
    the attachment rules (their lifetime, their cap, one chunk per account) then bind every byte
    of attachment data, and no other message can be passed off as a chunk."""
    chunk_account = account[:1] == bytes([ATTACHMENT_PREFIX])
    if namespace == NS_ATTACHMENTS and not chunk_account:
        return (
            f"namespace {NS_ATTACHMENTS} holds attachment chunks, only for accounts with prefix 0a"
        )
    if chunk_account and namespace != NS_ATTACHMENTS:
        return f"an attachment account (prefix 0a) holds only namespace {NS_ATTACHMENTS}"
    return None


def acceptable(
    message: Message, limits: Limits, now_ms: int, revoked: RevokedCheck | None = None
) -> bool:
    """Whether a message from another member is one a client could have stored here."""
    skew = limits.clock_skew_ms
    timestamp, expiry = message.timestamp_ms, message.expiry_ms
    arrival_ms = message.arrival_us // 1000
    if (
        len(message.data) > limits.max_message_bytes
        or not 0 < timestamp <= now_ms + skew
        or not now_ms < expiry <= now_ms + max_lifetime(limits, message.account) + skew
        or not now_ms - limits.max_ttl_private_ms - skew <= arrival_ms <= now_ms + skew
        or placement_error(message.account, message.namespace) is not None
    ):
        return False
    if is_public_inbox_namespace(message.namespace):
        return True
    auth = message.auth
    if auth is None or abs(auth.sig_timestamp_ms - arrival_ms) > 2 * skew:
        return False
    if not owns(message.account, auth.signer):
        return False
    signer = auth.signer
    if auth.token:
        if not token_allows(
            message.account,
            auth.signer,
            auth.token,
            auth.token_signature,
            access=store_access(message.namespace),
            revoked=revoked,
        ):
            return False
        signer = auth.token[4:]
    signed = store_string(message.namespace, auth.sig_timestamp_ms)
    return _core.ed25519_verify(signer, signed, auth.signature)
