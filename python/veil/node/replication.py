"""Replication between the members of an account's swarm: the sending side.

- **Writes**: the member a client stores at keeps the message durably, sends it to the other
  members over node links (``replicate``), and answers once ``write_quorum`` members in all hold
  it, with each one's signed receipt; the rest get it in the background.
- **Deletes and expiry changes** are forwarded to the other members (``apply``) with the client's
  own signed request, which each member verifies itself; a deleted message leaves a tombstone.
- **Anti-entropy**: every ``sync_interval_s`` a node compares, with one other node, the accounts
  both serve — by (message count, XOR of hashes) — and exchanges only the messages of accounts
  that differ: it pushes what the other lacks and fetches what it lacks. A node that joins gets its
  share this way (others sync with it as soon as they see it), and one that was down catches up.
- **Hand-over**: an account this node no longer serves (the view changed) is pushed to its current
  swarm, and deleted here only once enough members acknowledged it.

No frame this side builds is larger than half the largest frame: summaries go in chunks of
``sync_max_accounts`` accounts, messages in chunks by size, fetches until the peer says no more.
What the other side answers, and for which accounts, is :mod:`veil.node.peer_rpc`'s; the bodies
are :mod:`veil.protocol.node_rpc`'s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Coroutine, Iterator
from typing import Any

from veil import _core
from veil.clock import now_ms
from veil.identity import Identity
from veil.node.config import Limits, NetworkSettings
from veil.node.links import HopFailed, LinkPool
from veil.node.message_rules import acceptable
from veil.node.store import MessageStore, StoreOutcome, Txn
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol.announcement import Announcement
from veil.protocol.link import FrameKind
from veil.protocol.node_rpc import (
    Apply,
    Fetch,
    NodeRpcError,
    Replicate,
    Request,
    Summary,
    decode_differ,
    decode_messages,
    decode_receipts,
    decode_status,
    encode_request,
    message_entry_size,
)
from veil.protocol.replication import Message, receipt_bytes, receipt_json

__all__ = ["Replicator"]

log = logging.getLogger("veil.node.replication")


class Replicator:
    def __init__(
        self,
        *,
        identity: Identity,
        network: NetworkState,
        pool: LinkPool,
        store: MessageStore,
        writer: StoreWriter,
        settings: NetworkSettings,
        limits: Limits,
        hop_timeout_s: float,
        max_frame: int,
    ) -> None:
        self.identity = identity
        self.network = network
        self.pool = pool
        self.store = store
        self.writer = writer
        self.settings = settings
        self.limits = limits
        self.timeout_s = hop_timeout_s
        self.budget = max_frame // 2
        """No frame this side sends is larger than half the largest frame."""
        self.own_id = identity.ed25519_public_key
        self._background: set[asyncio.Task[Any]] = set()
        self._rng = random.SystemRandom()
        self.counts: collections.Counter[str] = collections.Counter()

    # --- receipts and writes ------------------------------------------------------------------

    def receipt(self, message: Message) -> dict[str, str]:
        """This node's receipt for a message it holds durably, as the client sees it."""
        signature = self.identity.sign(receipt_bytes(message.hash, message.expiry_ms))
        return receipt_json(self.own_id, signature)

    def quorum(self, account: bytes) -> int:
        """Members that must hold a store before it is answered (W, or the whole swarm if less)."""
        return min(self.settings.write_quorum, max(1, len(self.network.swarm(account))))

    async def replicate(self, message: Message) -> list[dict[str, str]]:
        """Send a stored message to the other members; return the receipts of those that took it
        before the quorum was reached (or the timeout passed). The others go on in background."""
        members = [a for a in self.network.swarm(message.account) if a.ed25519 != self.own_id]
        need = self.quorum(message.account) - 1
        tasks = [self._spawn(self._push(member, [message])) for member in members]
        receipts: list[dict[str, str]] = []
        if need <= 0 or not tasks:
            return receipts
        try:
            for next_done in asyncio.as_completed(
                tasks, timeout=self.settings.replication_timeout_s
            ):
                try:
                    got = await next_done
                except HopFailed:
                    continue
                receipts.extend(got[:1])
                if len(receipts) >= need:
                    break
        except TimeoutError:
            self.counts["quorum_timeout"] += 1
        return receipts

    async def _push(self, member: Announcement, messages: list[Message]) -> list[dict[str, str]]:
        """Replicate ``messages`` (one frame's worth) to ``member``; its valid receipts."""
        answer = await self._rpc(member, Replicate(messages))
        try:
            signatures = decode_receipts(answer, expected=len(messages))
        except NodeRpcError:
            self.counts["bad_answer"] += 1
            raise HopFailed() from None
        valid = []
        for message, signature in zip(messages, signatures, strict=True):
            if signature is not None and _core.ed25519_verify(
                member.ed25519, receipt_bytes(message.hash, message.expiry_ms), signature
            ):
                valid.append(receipt_json(member.ed25519, signature))
        self.counts["pushed"] += len(valid)
        return valid

    async def _push_all(self, member: Announcement, hashes: list[bytes]) -> int:
        """Replicate the messages ``hashes`` to ``member`` in frames of bounded size; how many
        it took."""
        taken = 0
        for batch in _chunks(hashes, self.settings.sync_batch_messages):
            messages = await self._read(batch)
            for chunk in self._by_size(messages):
                taken += len(await self._push(member, chunk))
        return taken

    def _by_size(self, messages: list[Message]) -> Iterator[list[Message]]:
        chunk: list[Message] = []
        used = 0
        for message in messages:
            size = message_entry_size(message)
            if chunk and used + size > self.budget:
                yield chunk
                chunk, used = [], 0
            chunk.append(message)
            used += size
        if chunk:
            yield chunk

    async def _read(self, hashes: list[bytes]) -> list[Message]:
        """The messages ``hashes`` that this node holds, read on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.store.messages_of, hashes
        )

    async def _rpc(self, member: Announcement, request: Request) -> bytes:
        return await self.pool.request(
            member.link_address,
            member.x25519,
            encode_request(request),
            self.timeout_s,
            FrameKind.RPC,
        )

    async def forward(self, method: str, params: dict[str, Any], account: bytes) -> int:
        """Send a client's signed request (delete, delete_all, expire) to the account's other
        members and wait, up to ``replication_timeout_s``, until they have applied it; those
        still going then finish in the background. Returns how many members answered 200."""
        request = Apply(method, params)
        tasks = [
            self._spawn(self._forward_to(member, request))
            for member in self.network.swarm(account)
            if member.ed25519 != self.own_id
        ]
        if not tasks:
            return 0
        done, _pending = await asyncio.wait(tasks, timeout=self.settings.replication_timeout_s)
        return sum(task.result() == 200 for task in done)

    async def _forward_to(self, member: Announcement, request: Apply) -> int:
        """Send ``request`` to ``member`` until it answers other than 5xx, at most
        ``forward_attempts`` times, waiting 1 s, 2 s, 4 s… between tries."""
        status = 0
        for attempt in range(max(1, self.settings.forward_attempts)):
            if attempt:
                self.counts["forward_retried"] += 1
                await asyncio.sleep(min(2.0 ** (attempt - 1), 30.0))
            try:
                status = decode_status(await self._rpc(member, request))
            except (HopFailed, NodeRpcError):
                status = 0
            if 0 < status < 500:
                return status
        self.counts["forward_failed"] += 1
        return status

    # --- anti-entropy and hand-over -----------------------------------------------------------

    def _shared_accounts(self, peer: bytes) -> list[bytes]:
        return [
            account
            for account in self.store.held_accounts()
            if self.network.serves(account) and peer in self.network.swarms.swarm(account)
        ]

    async def sync_with(self, peer: Announcement) -> tuple[int, int]:
        """Compare shared accounts with ``peer``; return (messages pushed, messages fetched)."""
        pushed = fetched = 0
        limit = self.settings.sync_max_messages
        try:
            for accounts in _chunks(
                self._shared_accounts(peer.ed25519), self.settings.sync_max_accounts
            ):
                push, pull = await self._compare(peer, accounts)
                pushed += await self._push_all(peer, push[: max(0, limit - pushed)])
                fetched += await self._fetch_all(peer, pull[: max(0, limit - fetched)])
                if pushed >= limit and fetched >= limit:
                    break
        except HopFailed:
            self.counts["sync_failed"] += 1
        self.counts["synced_pushed"] += pushed
        self.counts["synced_fetched"] += fetched
        return pushed, fetched

    async def _compare(
        self, peer: Announcement, accounts: list[bytes]
    ) -> tuple[list[bytes], list[bytes]]:
        """(hashes to push, hashes to fetch) for the accounts whose summaries differ."""
        summaries = self.store.summaries(accounts)
        request = Summary([(a, count, digest) for a, (count, digest) in summaries.items()])
        try:
            differ, _more = decode_differ(
                await self._rpc(peer, request), max_items=self.settings.rpc_max_items
            )
        except NodeRpcError:
            self.counts["bad_answer"] += 1
            return [], []
        asked = set(accounts)
        push: list[bytes] = []
        pull: list[bytes] = []
        for account, their_hashes in differ:
            if account not in asked:
                continue
            mine = set(self.store.hashes_of(account))
            theirs = set(their_hashes)
            push.extend(mine - theirs)
            pull.extend(theirs - mine)
        return push, pull

    async def _fetch_all(self, peer: Announcement, hashes: list[bytes]) -> int:
        """Fetch ``hashes`` from ``peer``, a batch at a time; within a batch, ask again while the
        peer says its answer stopped at its size budget."""
        fetched = 0
        for batch in _chunks(hashes, self.settings.sync_batch_messages):
            wanted = set(batch)
            while wanted:
                try:
                    messages, more = decode_messages(
                        await self._rpc(peer, Fetch(sorted(wanted))),
                        max_items=self.settings.rpc_max_items,
                    )
                except NodeRpcError:
                    self.counts["bad_answer"] += 1
                    return fetched
                got = [m for m in messages if m.hash in wanted]
                fetched += await self._take(got)
                wanted -= {m.hash for m in got}
                if not more or not got:
                    break
        return fetched

    async def _take(self, messages: list[Message]) -> int:
        """Store messages fetched from a swarm member, checked as a replicated message is."""
        now = now_ms()
        good = [
            m
            for m in messages
            if self.network.serves(m.account) and acceptable(m, self.limits, now)
        ]
        if not good:
            return 0

        def put_all(txn: Txn) -> list[StoreOutcome]:
            return [self.store.put(txn, m) for m in good]

        outcomes = await self.writer.submit(
            put_all, if_full=[StoreOutcome.STORAGE_FULL] * len(good)
        )
        return sum(o is StoreOutcome.STORED for o in outcomes)

    async def hand_over(self) -> int:
        """Push the accounts this node no longer serves to their swarms; drop them once held."""
        dropped = 0
        for account in self.store.held_accounts():
            if self.network.serves(account):
                continue
            members = self.network.swarm(account)
            if not members:
                continue
            hashes = self.store.hashes_of(account)
            held_by = 0
            for member in members:
                try:
                    taken = await self._push_all(member, hashes)
                except HopFailed:
                    continue
                if taken == len(hashes):
                    held_by += 1
            if held_by >= self.quorum(account):

                def drop(txn: Txn, account: bytes = account) -> int:
                    return self.store.drop_account(txn, account)

                dropped += await self.writer.submit(drop, if_full=0)
        self.counts["handed_over"] += dropped
        return dropped

    async def run(self) -> None:
        """Anti-entropy and hand-over, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.settings.sync_interval_s * self._rng.uniform(0.75, 1.25))
            others = [a for k, a in self.network.directory.nodes.items() if k != self.own_id]
            if others:
                await self.sync_with(self._rng.choice(others))
            await self.hand_over()

    def sync_soon(self, peer: Announcement) -> None:
        """Sync with a node just seen (a join), without waiting for the next round."""
        self._spawn(self.sync_with(peer))

    # --- bookkeeping ------------------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, HopFailed):
                await task


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
