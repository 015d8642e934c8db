"""Node RPCs at the receiving end: what a node answers an admitted peer, account by account.

The link already says which node asks (``veil.node.links``: only nodes in this node's view get a
link at all). Here every RPC is answered only for the accounts whose swarm holds both nodes — the
asking node as a member now or within the hand-over window (``handover_window_s``), this node as a
member now (``replicate``, ``apply``) or within the window (``summary``, ``fetch``, so a node that
just left a swarm can still be synced from). For any other account nothing is stored, returned or
changed, and the refusal is counted (``veil_node_rpc_refusals_total``).

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
from collections.abc import Callable, Iterable

from veil.clock import now_ms
from veil.identity import Identity
from veil.node.config import Limits, NetworkSettings
from veil.node.links import HopFailed
from veil.node.message_rules import acceptable
from veil.node.rpc import StorageRpc, answer_bytes
from veil.node.store import MessageStore, StoreOutcome, Txn
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol.node_rpc import (
    Apply,
    Fetch,
    NodeRpcError,
    Replicate,
    Summary,
    decode_request,
    encode_differ,
    encode_messages,
    encode_receipts,
    encode_status,
    message_entry_size,
)
from veil.protocol.replication import Message, receipt_bytes

__all__ = ["APPLIED_METHODS", "PeerRpc"]

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

    async def handle(self, peer: bytes, body: bytes) -> bytes:
        """One RPC frame's body from the admitted node ``peer``; the answer's body."""
        try:
            request = decode_request(body, max_items=self.settings.rpc_max_items)
        except NodeRpcError:
            self.refusals["malformed"] += 1
            raise HopFailed() from None
        if isinstance(request, Replicate):
            self.counts["replicate"] += 1
            return encode_receipts(await self._replicate(peer, request.messages))
        if isinstance(request, Summary):
            self.counts["summary"] += 1
            return await self._summary(peer, request.accounts)
        if isinstance(request, Fetch):
            self.counts["fetch"] += 1
            return await self._fetch(peer, request.hashes)
        assert isinstance(request, Apply)
        self.counts["apply"] += 1
        return encode_status(*await self._apply(peer, request))

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
        outcomes: Iterable[StoreOutcome] = ()
        if good:

            def put_all(txn: Txn) -> list[StoreOutcome]:
                return [self.store.put(txn, m) for m in good]

            outcomes = await self.writer.submit(
                put_all, if_full=[StoreOutcome.STORAGE_FULL] * len(good)
            )
        held = iter(outcomes)
        receipts: list[bytes | None] = []
        for entry in taken:
            if entry is None:
                receipts.append(None)
            elif next(held) in (StoreOutcome.STORED, StoreOutcome.ALREADY):
                receipts.append(self.identity.sign(receipt_bytes(entry.hash)))
            else:
                receipts.append(None)
        self.counts["taken"] += sum(r is not None for r in receipts)
        return receipts

    async def _summary(self, peer: bytes, accounts: list[tuple[bytes, int, bytes]]) -> bytes:
        allowed = {
            account: (count, digest)
            for account, count, digest in accounts
            if self._allowed(peer, account, here_recently=True)
        }
        return await asyncio.get_running_loop().run_in_executor(None, self._differ, allowed)

    def _differ(self, allowed: dict[bytes, tuple[int, bytes]]) -> bytes:
        """The hashes of the accounts whose summary differs from ours (on a reader thread)."""
        ours = self.store.summaries(list(allowed))
        differ: list[tuple[bytes, list[bytes]]] = []
        used = 0
        for account, theirs in allowed.items():
            if ours.get(account) == theirs:
                continue
            hashes = self.store.hashes_of(account)
            size = 64 + 34 * len(hashes)
            if differ and used + size > self.budget:
                return encode_differ(differ, more=True)
            differ.append((account, hashes))
            used += size
        return encode_differ(differ, more=False)

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
