"""Node RPCs at the receiving end: what a node answers an admitted peer, account by account.

The link already says which node asks (``veil.node.links``: only nodes in this node's view get a
link at all). Here every RPC is answered only for the accounts whose swarm holds both nodes — the
asking node as a member now or within the hand-over window (``handover_window_s``), this node as a
member now (``replicate``, ``apply``) or within the window (``summary``, ``fetch``, so a node that
just left a swarm can still be synced from). For any other account nothing is stored, returned or
changed, and the refusal is counted (``veil_node_rpc_refusals_total``).

``summary`` also compares each account's revocation state by digest and answers, for those that
differ, the signed ``revoke_subaccount`` / ``unrevoke_subaccount`` requests that decide the
account's tokens here; ``revocations`` takes such requests from a member that found this node lacks
them. A revocation is never taken on a peer's word: each is checked as a client's own request is
(``veil.node.auth.revocation_acceptable``: the owner's signature, the token count, a timestamp not
ahead of the clock) and decides a token only if it is later than the token's decision here
(``MessageStore.merge_revocations``). A body of another node-RPC version (a node of an older Veil)
is refused whole (FAILURE, counted as malformed), and logged once per peer with both versions.

``replicate`` checks a message as strictly as a client's ``store``
(``veil.node.message_rules.acceptable``): its size, its expiry, its timestamp and arrival against
the clock window, and, outside the public inboxes, the signed store authorisation — the owner's or a
subaccount's not revoked here (``veil.protocol.replication.StoreAuth``), verified here. A receipt
(the signature of the message hash) is signed only for a message that passed and is durably
stored. ``apply`` runs a client's own signed swarm write (``APPLIED_METHODS``) through the storage
RPC with ``forwarded=True``: the signature is verified here again, the request is not forwarded
further, and the answer is this node's own signed result.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from veil.clock import now_ms
from veil.identity import Identity
from veil.node.auth import revocation_acceptable
from veil.node.config import Limits, NetworkSettings
from veil.node.links import HopFailed
from veil.node.message_rules import acceptable
from veil.node.rpc import StorageRpc, answer_bytes
from veil.node.store import MessageStore, StoreOutcome, Txn
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol.node_rpc import (
    VERSION,
    Apply,
    Fetch,
    NodeRpcError,
    Replicate,
    Revocation,
    Revocations,
    Summary,
    decode_request,
    encode_differ,
    encode_messages,
    encode_receipts,
    encode_status,
    encode_taken,
    message_entry_size,
    revocation_entry_size,
)
from veil.protocol.replication import Message, receipt_bytes

__all__ = ["APPLIED_METHODS", "PeerRpc", "acceptable_revocations"]

log = logging.getLogger("veil.node.peer_rpc")

_NOTHING = (0, bytes(32))
"""The summary of an account with no messages (held or not)."""
_MAX_VERSION_WARNINGS = 1024
"""Peers remembered as told about (logged) for speaking another node-RPC version."""

APPLIED_METHODS = frozenset(
    {
        "delete",
        "delete_all",
        "delete_before",
        "expire",
        "expire_all",
        "revoke_subaccount",
        "unrevoke_subaccount",
    }
)
"""The client requests a member forwards to the others (``apply``)."""


class PeerRpc:
    """Answers the ``RPC`` frames of admitted peers (``handle`` is the link's RPC handler)."""

    def __init__(
        self,
        *,
        identity: Identity,
        store: MessageStore,
        writer: StoreWriter,
        network: NetworkState,
        storage_rpc: StorageRpc,
        limits: Limits,
        settings: NetworkSettings,
        max_frame: int,
        on_limit: Callable[[str], None],
    ) -> None:
        self.identity = identity
        self.on_limit = on_limit
        """Told the name of a configured limit each time it refuses something."""
        self.store = store
        self.writer = writer
        self.network = network
        self.storage_rpc = storage_rpc
        self.limits = limits
        self.settings = settings
        self.budget = max_frame // 2
        """No answer is built larger than half the largest frame."""
        self.counts: collections.Counter[str] = collections.Counter()
        self.refusals: collections.Counter[str] = collections.Counter()
        self._versions_seen: set[tuple[bytes, int]] = set()

    async def handle(self, peer: bytes, body: bytes) -> bytes:
        """One RPC frame's body from the admitted node ``peer``; the answer's body."""
        try:
            request = decode_request(body, max_items=self.settings.rpc_max_items)
        except NodeRpcError:
            self.refusals["malformed"] += 1
            if body and body[0] != VERSION:
                self._other_version(peer, body[0])
            raise HopFailed() from None
        if isinstance(request, Replicate):
            self.counts["replicate"] += 1
            return encode_receipts(await self._replicate(peer, request.messages))
        if isinstance(request, Summary):
            self.counts["summary"] += 1
            return await self._summary(peer, request)
        if isinstance(request, Fetch):
            self.counts["fetch"] += 1
            return await self._fetch(peer, request.hashes)
        if isinstance(request, Revocations):
            self.counts["revocations"] += 1
            return encode_taken(await self._revocations(peer, request.accounts))
        assert isinstance(request, Apply)
        self.counts["apply"] += 1
        return encode_status(*await self._apply(peer, request))

    def _other_version(self, peer: bytes, version: int) -> None:
        """Say once per peer and version (in the log: the peer's node id, nothing else) that a
        peer speaks another node-RPC version, whose bodies this node refuses whole."""
        if (peer, version) in self._versions_seen:
            return
        if len(self._versions_seen) >= _MAX_VERSION_WARNINGS:
            self._versions_seen.clear()
        self._versions_seen.add((peer, version))
        log.warning(
            "node %s sent a node RPC of version %d; this node speaks version %d and refuses it",
            peer.hex()[:16],
            version,
            VERSION,
        )

    # --- who may ask about what -------------------------------------------------------------

    def _window_ms(self) -> int:
        return int(self.settings.handover_window_s * 1000)

    def _allowed(self, peer: bytes, account: bytes, *, here_recently: bool) -> bool:
        """Both nodes in the account's swarm (see the module); counts a refusal."""
        network, window = self.network, self._window_ms()
        if not network.was_member(peer, account, window):
            self.refusals["peer_not_in_swarm"] += 1
            return False
        here = network.was_member(network.own_id, account, window) if here_recently else None
        if here is None:
            here = network.serves(account)
        if not here:
            self.refusals["not_serving"] += 1
            return False
        return True

    # --- the methods -------------------------------------------------------------------------

    async def _replicate(self, peer: bytes, messages: list[Message]) -> list[bytes | None]:
        now = now_ms()
        taken: list[Message | None] = []
        for message in messages:
            if not self._allowed(peer, message.account, here_recently=False):
                taken.append(None)
            elif not acceptable(message, self.limits, now, self.store.is_revoked):
                self.refusals["invalid_message"] += 1
                taken.append(None)
            else:
                taken.append(message)
        good = [m for m in taken if m is not None]
        outcomes: list[StoreOutcome] = []
        signatures: list[bytes] = []
        if good:

            def put_all(txn: Txn) -> list[StoreOutcome]:
                return [self.store.put(txn, m) for m in good]

            # The receipts are signed on the writer thread once the commit is durable.
            outcomes, signatures = await self.writer.submit_signed(
                put_all,
                self.identity.sign_many,
                [receipt_bytes(m.hash) for m in good],
                if_full=[StoreOutcome.STORAGE_FULL] * len(good),
            )
        made: list[bytes | None] = list(signatures) if signatures else [None] * len(outcomes)
        held = iter(zip(outcomes, made, strict=True))
        receipts: list[bytes | None] = []
        for entry in taken:
            if entry is None:
                receipts.append(None)
                continue
            outcome, signature = next(held)
            kept = outcome in (StoreOutcome.STORED, StoreOutcome.ALREADY)
            receipts.append(signature if kept else None)
        self.counts["taken"] += sum(r is not None for r in receipts)
        return receipts

    async def _summary(self, peer: bytes, request: Summary) -> bytes:
        allowed = {
            account: (count, digest)
            for account, count, digest in request.accounts
            if self._allowed(peer, account, here_recently=True)
        }
        revoked = {a: digest for a, digest in request.revoked.items() if a in allowed}
        return await asyncio.get_running_loop().run_in_executor(
            None, self._differ, allowed, revoked
        )

    def _differ(
        self, allowed: dict[bytes, tuple[int, bytes]], revoked: dict[bytes, bytes]
    ) -> bytes:
        """For the accounts whose summary differs from ours, our hashes; for those whose
        revocation digest differs (``revoked``: the asker's; none listed is no state), our
        signed revocations — none, if we have none (on a reader thread)."""
        ours = self.store.summaries(list(allowed))
        digests = self.store.revocation_digests(list(allowed))
        differ: list[tuple[bytes, list[bytes]]] = []
        carried: list[tuple[bytes, list[Revocation]]] = []
        used = count = 0
        for account, theirs in allowed.items():
            if ours.get(account, _NOTHING) != theirs:
                hashes = self.store.hashes_of(account)
                size = 64 + 34 * len(hashes)
                if (differ or carried) and used + size > self.budget:
                    return encode_differ(differ, True, carried)
                differ.append((account, hashes))
                used += size
            if digests.get(account) != revoked.get(account):
                found = self.store.revocations_of(account)
                size = 64 + sum(map(revocation_entry_size, found))
                full = count + len(found) > self.settings.sync_max_revocations
                if (differ or carried) and (full or used + size > self.budget):
                    return encode_differ(differ, True, carried)
                carried.append((account, found))
                used += size
                count += len(found)
        return encode_differ(differ, False, carried)

    async def _fetch(self, peer: bytes, hashes: list[bytes]) -> bytes:
        messages = await asyncio.get_running_loop().run_in_executor(
            None, self.store.messages_of, hashes
        )
        out: list[Message] = []
        used = 0
        for message in messages:
            if not self._allowed(peer, message.account, here_recently=True):
                continue
            size = message_entry_size(message)
            if out and used + size > self.budget:
                return encode_messages(out, more=True)
            out.append(message)
            used += size
        return encode_messages(out, more=False)

    async def _apply(self, peer: bytes, request: Apply) -> tuple[int, bytes]:
        if request.method not in APPLIED_METHODS:
            self.refusals["apply_method"] += 1
            return 400, b"no such forwarded method"
        pubkey = request.params.get("pubkey")
        try:
            account = bytes.fromhex(pubkey) if isinstance(pubkey, str) else b""
        except ValueError:
            return 400, b"bad pubkey"
        if len(account) != 33 or not self._allowed(peer, account, here_recently=False):
            return 421, b"not a member of this account's swarm"
        status, answer = await self.storage_rpc.call(
            {"method": request.method, "params": request.params}, forwarded=True
        )
        return status, answer_bytes(answer)

    async def _revocations(
        self, peer: bytes, accounts: list[tuple[bytes, list[Revocation]]]
    ) -> int:
        """Take the signed revocations a member found this node lacks; how many changed a
        token's decision here."""
        if sum(len(found) for _, found in accounts) > self.settings.sync_max_revocations:
            self.refusals["too_many_revocations"] += 1
            self.on_limit("sync_max_revocations")
            return 0
        taken = 0
        for account, found in accounts:
            if not self._allowed(peer, account, here_recently=False):
                continue
            good = acceptable_revocations(account, found, self.limits)
            if len(good) < len(found):
                self.refusals["invalid_revocation"] += len(found) - len(good)
            if good:

                def merge(txn: Txn, account: bytes = account, good: list[Revocation] = good) -> int:
                    return self.store.merge_revocations(txn, account, good)

                taken += await self.writer.submit(merge, if_full=0)
        self.counts["revocations_taken"] += taken
        return taken


def acceptable_revocations(
    account: bytes, found: list[Revocation], limits: Limits
) -> list[Revocation]:
    """The revocations among ``found``, from another member, that ``account``'s owner signed and
    that may decide its tokens (``veil.node.auth.revocation_acceptable``); none at all if there
    are more than the account can hold (each kept one decides at least one token)."""
    if len(found) > limits.account_max_revoked + limits.account_max_unrevoked:
        return []
    now = now_ms()
    return [r for r in found if revocation_acceptable(account, r, limits, now)]
