"""Replication between the members of an account's swarm: the sending side.

- **Writes**: the member a client stores at keeps the message durably, sends it to the other
  members over node links (``replicate``), and answers with every member's signed receipt once
  all have answered — never before ``write_quorum`` members in all hold it, and at most
  ``swarm_answer_grace_s`` after that for the rest; those still going finish in the background.
- **Deletes, expiry changes and revocations** are forwarded to the other members (``apply``) with
  the client's own signed request, which each member verifies and applies itself, answering its
  own signed result; a deleted message leaves a tombstone.
- **Anti-entropy**: every ``sync_interval_s`` a node compares, with one other node, the accounts
  both serve — by (message count, XOR of hashes) and by the digest of their revocation state — and
  exchanges only what differs: for messages it pushes what the other lacks and fetches what it
  lacks; for revocations the other answers the signed requests that decide the account's tokens
  there, this node checks each as a client's own and takes those later than its own decisions, and
  pushes (``revocations``) those of its own that are later than the other's. A node that joins gets
  its share this way (others sync with it as soon as they see it), and one that was down catches
  up — so a member that missed a forwarded revocation refuses the revoked token after one round.
- **Hand-over**: an account this node no longer serves (the view changed) is pushed to its current
  swarm, its signed revocations with it, and its messages deleted here only once enough members
  acknowledged them.

No frame this side builds is larger than half the largest frame: summaries go in chunks of
``sync_max_accounts`` accounts, messages in chunks by size, fetches until the peer says no more.
What the other side answers, and for which accounts, is :mod:`veil.node.peer_rpc`'s; the bodies
are :mod:`veil.protocol.node_rpc`'s.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import orjson

from veil import _core
from veil.clock import now_ms
from veil.errors import InvalidKeyError
from veil.identity import Identity
from veil.node.config import Limits, NetworkSettings
from veil.node.links import HopFailed, LinkPool
from veil.node.message_rules import acceptable
from veil.node.peer_rpc import acceptable_revocations
from veil.node.store import MessageStore, StoreOutcome, Txn
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol.announcement import Announcement
from veil.protocol.hashes import hash_b64
from veil.protocol.link import FrameKind
from veil.protocol.node_rpc import (
    Apply,
    Fetch,
    NodeRpcError,
    Replicate,
    Request,
    Revocation,
    Revocations,
    Summary,
    decode_messages,
    decode_receipts,
    decode_status,
    decode_summary_answer,
    decode_taken,
    encode_request,
    message_entry_size,
    revocation_entry_size,
)
from veil.protocol.replication import Message, receipt_bytes

__all__ = ["Replicator"]

log = logging.getLogger("veil.node.replication")

_T = TypeVar("_T")

_FAILED = object()
"""A queued replication's outcome when the member did not answer (or answered garbage)."""
_MAX_PUBLIC_KEYS = 4096
"""Members' decompressed keys kept at most (a swarm's members, and those anti-entropy meets)."""

_NOTHING = (0, bytes(32))
"""The summary of an account with no messages here (listed for its revocations)."""


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
        self._queued: dict[bytes, tuple[Announcement, list[tuple[Message, asyncio.Future[Any]]]]]
        self._queued = {}
        """Stores of this turn of the event loop waiting for their ``replicate`` frame, by
        member."""
        self._public_keys: dict[bytes, _core.Ed25519PublicKey | None] = {}

    # --- receipts and writes ------------------------------------------------------------------

    def receipt(self, message: Message) -> bytes:
        """This node's signature for a message it holds durably (its part of a store answer)."""
        return self.identity.sign(receipt_bytes(message.hash))

    def quorum(self, account: bytes, swarm: list[Announcement] | None = None) -> int:
        """Members that must hold a store before it is answered (W, or the whole swarm if less);
        ``swarm``: the account's, if already looked up."""
        members = self.network.swarm(account) if swarm is None else swarm
        return min(self.settings.write_quorum, max(1, len(members)))

    def others(self, account: bytes, swarm: list[Announcement] | None = None) -> list[Announcement]:
        members = self.network.swarm(account) if swarm is None else swarm
        return [a for a in members if a.ed25519 != self.own_id]

    async def replicate(self, message: Message) -> tuple[dict[str, dict[str, Any]], int]:
        """Send a stored message to the other members; return each one's part of the swarm
        answer (``{"hash", "signature", "expiry"}``, or ``{"failed": true, …}``), keyed by its
        Ed25519 key in hex, and the quorum the store needs (:meth:`quorum`, of the swarm the
        message went to). Waits for all of them, up to ``replication_timeout_s``, and at most
        ``swarm_answer_grace_s`` once the quorum holds the message. The receipts that make the
        quorum are verified, and one that does not verify fails its member's part; the rest are
        passed on as the members gave them (:meth:`_verifies`).

        Messages stored in the same turn of the event loop travel to each member together: one
        ``replicate`` frame, one commit and one answer for all of them (:meth:`_send_queued`)."""
        swarm = self.network.swarm(message.account)
        members = self.others(message.account, swarm)
        quorum = self.quorum(message.account, swarm)
        need = quorum - 1
        pending = {self._queue_push(member, message): member for member in members}
        results: dict[str, dict[str, Any]] = {}
        held = 0

        def took(pushed: asyncio.Future[Any], member: Announcement) -> None:
            nonlocal held
            key = member.ed25519.hex()
            signature = pushed.result()
            if signature is _FAILED:
                results[key] = {"failed": True, "code": 502, "reason": "no answer on the link"}
                return
            if signature is None:
                results[key] = {"failed": True, "code": 507, "reason": "did not take the message"}
                return
            if held < need and not self._verifies(member, message, signature):
                self.counts["bad_receipt"] += 1
                results[key] = {"failed": True, "code": 502, "reason": "receipt does not verify"}
                return
            held += 1
            results[key] = {
                "hash": hash_b64(message.hash),
                "signature": base64.b64encode(signature).decode("ascii"),
                "expiry": message.expiry_ms,
            }

        await self._gather(pending, took, lambda: held >= need)
        if held < need:
            self.counts["quorum_timeout"] += 1
        for member in members:
            results.setdefault(member.ed25519.hex(), {"failed": True, "timeout": True})
        return results, quorum

    def _queue_push(self, member: Announcement, message: Message) -> asyncio.Future[Any]:
        """``message`` for ``member``'s next ``replicate`` frame; the future is its valid
        receipt, ``None`` if the member took no copy, or ``_FAILED`` if no answer came."""
        loop = asyncio.get_running_loop()
        pushed: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._send_queued)
        self._queued.setdefault(member.ed25519, (member, []))[1].append((message, pushed))
        return pushed

    def _send_queued(self) -> None:
        """One task per member for what this turn queued, in frames within the budget."""
        queued, self._queued = self._queued, {}
        for member, entries in queued.values():
            for chunk in self._by_size(entries, lambda entry: message_entry_size(entry[0])):
                self._push_soon(member, chunk)

    def _push_soon(
        self, member: Announcement, entries: list[tuple[Message, asyncio.Future[Any]]]
    ) -> None:
        if self._bounded(self._push_queued(member, entries)) is None:
            for _, pushed in entries:  # past max_background_tasks: this member misses them
                pushed.set_result(_FAILED)

    async def _push_queued(
        self, member: Announcement, entries: list[tuple[Message, asyncio.Future[Any]]]
    ) -> None:
        self.counts["replicate_frames"] += 1
        signatures: list[Any] = [_FAILED] * len(entries)
        try:
            signatures = await self._push(member, [message for message, _ in entries])
        except HopFailed:
            pass
        finally:  # also when cancelled: every waiting store learns the outcome
            for (_, pushed), signature in zip(entries, signatures, strict=True):
                if not pushed.done():
                    pushed.set_result(signature)

    async def _gather(
        self,
        tasks: dict[asyncio.Future[Any], Announcement],
        took: Callable[[asyncio.Future[Any], Announcement], None],
        enough: Callable[[], bool],
    ) -> None:
        """Collect ``tasks`` as they finish (``took``), until all did, or
        ``replication_timeout_s`` passed, or ``swarm_answer_grace_s`` passed since ``enough``.
        One future and a done-callback per task: no wait set rebuilt per answer."""
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()
        left = len(tasks)
        grace: asyncio.TimerHandle | None = None

        def settle() -> None:
            if not settled.done():
                settled.set_result(None)

        def finished(task: asyncio.Future[Any]) -> None:
            nonlocal left, grace
            if settled.done():
                return
            took(task, tasks[task])
            left -= 1
            if left == 0:
                settle()
            elif grace is None and enough():
                grace = loop.call_later(self.settings.swarm_answer_grace_s, settle)

        for task in tasks:
            task.add_done_callback(finished)
        if enough():
            grace = loop.call_later(self.settings.swarm_answer_grace_s, settle)
        deadline = loop.call_later(self.settings.replication_timeout_s, settle)
        try:
            await settled
        finally:
            deadline.cancel()
            if grace is not None:
                grace.cancel()
            for task in tasks:
                task.remove_done_callback(finished)

    async def _push(self, member: Announcement, messages: list[Message]) -> list[bytes | None]:
        """Replicate ``messages`` (one frame's worth) to ``member``; its receipt for each, in
        order, as it gave it (64 bytes, not verified here), ``None`` where it took none."""
        answer = await self._rpc(member, Replicate(messages))
        try:
            receipts = decode_receipts(answer, expected=len(messages))
        except NodeRpcError:
            self.counts["bad_answer"] += 1
            raise HopFailed() from None
        self.counts["pushed"] += sum(receipt is not None for receipt in receipts)
        return receipts

    def _verifies(self, member: Announcement, message: Message, receipt: bytes) -> bool:
        """Whether ``receipt`` is ``member``'s signature of ``message``'s receipt text.

        A store checks only the receipts that make the write quorum (:meth:`replicate`), so that
        a 200 store carries at least W valid signatures. The receipts after those go to the
        client as the members gave them, as Session's storage servers pass on every peer's
        result: the link the answer came on is authenticated as that member, a valid signature
        proves no more about durability than the member's word, and the client checks each
        receipt itself (``verify_swarm``). That saves about half the verifications of a store
        (two of four with R = 5, W = 3), at ~33 µs each (docs/performance.md). Background pushes
        (:meth:`_push_all`) check every receipt: hand-over drops this node's copy on them."""
        key = self._public_key(member.ed25519)
        return key is not None and key.verify(receipt_bytes(message.hash), receipt)

    def _public_key(self, ed25519: bytes) -> _core.Ed25519PublicKey | None:
        """A member's key, decompressed once (``None`` if it is not a point): receipts from the
        same few members are checked for every store."""
        if ed25519 in self._public_keys:
            return self._public_keys[ed25519]
        if len(self._public_keys) >= _MAX_PUBLIC_KEYS:
            self._public_keys.clear()  # members churn: start again rather than track age
        key: _core.Ed25519PublicKey | None = None
        with contextlib.suppress(InvalidKeyError):
            key = _core.Ed25519PublicKey(ed25519)
        self._public_keys[ed25519] = key
        return key

    async def _push_all(self, member: Announcement, hashes: list[bytes]) -> int:
        """Replicate the messages ``hashes`` to ``member`` in frames of bounded size; how many
        it took, by receipts that verify (hand-over drops this node's copy on that count)."""
        taken = 0
        for batch in _chunks(hashes, self.settings.sync_batch_messages):
            messages = await self._read(batch)
            for chunk in self._by_size(messages, message_entry_size):
                received = await self._push(member, chunk)
                taken += sum(
                    receipt is not None and self._verifies(member, message, receipt)
                    for message, receipt in zip(chunk, received, strict=True)
                )
        return taken

    def _by_size(self, items: list[_T], size_of: Callable[[_T], int]) -> Iterator[list[_T]]:
        """``items`` in frames' worth: at most ``sync_batch_messages`` and the frame budget."""
        chunk: list[_T] = []
        used = 0
        for item in items:
            size = size_of(item)
            full = len(chunk) >= self.settings.sync_batch_messages
            if chunk and (full or used + size > self.budget):
                yield chunk
                chunk, used = [], 0
            chunk.append(item)
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

    async def forward(
        self, method: str, params: dict[str, Any], account: bytes
    ) -> dict[str, dict[str, Any]]:
        """Send a client's signed request (``APPLIED_METHODS``) to the account's other members
        and return each one's part of the swarm answer — its signed result, or ``{"failed":
        true, …}`` — keyed by its Ed25519 key in hex. Waits up to ``replication_timeout_s``;
        members still being retried then finish in the background."""
        request = Apply(method, params)
        members = self.others(account)
        tasks: dict[asyncio.Future[Any], Announcement] = {}
        results: dict[str, dict[str, Any]] = {}
        for member in members:
            task = self._bounded(self._forward_to(member, request))
            if task is None:
                results[member.ed25519.hex()] = {"failed": True, "code": 503}
            else:
                tasks[task] = member

        def took(task: asyncio.Future[Any], member: Announcement) -> None:
            key = member.ed25519.hex()
            if task.cancelled() or task.exception() is not None:
                results[key] = {"failed": True, "timeout": True}
                return
            status, body = task.result()
            results[key] = _member_result(status, body)

        await self._gather(tasks, took, lambda: False)
        for member in members:
            results.setdefault(member.ed25519.hex(), {"failed": True, "timeout": True})
        return results

    async def _forward_to(self, member: Announcement, request: Apply) -> tuple[int, bytes]:
        """Send ``request`` to ``member`` until it answers other than 5xx, at most
        ``forward_attempts`` times, waiting 1 s, 2 s, 4 s… between tries."""
        status, body = 0, b""
        for attempt in range(max(1, self.settings.forward_attempts)):
            if attempt:
                self.counts["forward_retried"] += 1
                await asyncio.sleep(min(2.0 ** (attempt - 1), 30.0))
            try:
                status, body = decode_status(await self._rpc(member, request))
            except (HopFailed, NodeRpcError):
                status, body = 0, b""
            if 0 < status < 500:
                return status, body
        self.counts["forward_failed"] += 1
        return status, body

    # --- anti-entropy and hand-over -----------------------------------------------------------

    def _shared_accounts(self, peer: bytes) -> list[bytes]:
        """The accounts this node holds messages or revocations of, that both nodes serve."""
        held = dict.fromkeys(self.store.held_accounts())
        held.update(dict.fromkeys(self.store.revocation_accounts()))
        return [
            account
            for account in held
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
        """(hashes to push, hashes to fetch) for the accounts whose summaries differ; the
        revocations of those whose revocation state differs are exchanged on the way."""
        summaries = self.store.summaries(accounts)
        digests = self.store.revocation_digests(accounts)
        request = Summary([(a, *summaries.get(a, _NOTHING)) for a in accounts], digests)
        try:
            answer = decode_summary_answer(
                await self._rpc(peer, request), max_items=self.settings.rpc_max_items
            )
        except NodeRpcError:
            self.counts["bad_answer"] += 1
            return [], []
        asked = set(accounts)
        push: list[bytes] = []
        pull: list[bytes] = []
        for account, their_hashes in answer.differ:
            if account not in asked:
                continue
            mine = set(self.store.hashes_of(account))
            theirs = set(their_hashes)
            push.extend(mine - theirs)
            pull.extend(theirs - mine)
        revoked = [(a, found) for a, found in answer.revoked if a in asked]
        if revoked:
            await self._exchange_revocations(peer, revoked)
        return push, pull

    async def _exchange_revocations(
        self, peer: Announcement, theirs: list[tuple[bytes, list[Revocation]]]
    ) -> None:
        """Take the peer's revocations that are later than this node's decisions (each checked
        as a client's own request), then push the peer this node's that it may lack."""
        if sum(len(found) for _, found in theirs) > self.settings.sync_max_revocations:
            self.counts["bad_answer"] += 1
            return
        pushes: list[tuple[bytes, list[Revocation]]] = []
        for account, found in theirs:
            good = acceptable_revocations(account, found, self.limits)
            if len(good) < len(found):
                self.counts["revocations_refused"] += len(found) - len(good)
            if good:

                def merge(txn: Txn, account: bytes = account, good: list[Revocation] = good) -> int:
                    return self.store.merge_revocations(txn, account, good)

                self.counts["revocations_taken"] += await self.writer.submit(merge, if_full=0)
            ours = self._not_decided_by(account, good)
            if ours:
                pushes.append((account, ours))
        await self._push_revocations(peer, pushes)

    async def _push_revocations(
        self, member: Announcement, pushes: list[tuple[bytes, list[Revocation]]]
    ) -> None:
        for chunk in self._revocation_chunks(pushes):
            try:
                taken = decode_taken(await self._rpc(member, Revocations(chunk)))
            except NodeRpcError:
                self.counts["bad_answer"] += 1
                return
            self.counts["revocations_pushed"] += taken

    def _not_decided_by(self, account: bytes, theirs: list[Revocation]) -> list[Revocation]:
        """This node's requests that decide a token of ``account`` which ``theirs`` (the peer's
        checked requests) may not decide alike: unless the one request of theirs that names the
        token is the one deciding it here. (With two of theirs naming it, which one decides it
        there is not known here; pushing a request the peer holds is a no-op there.)"""
        naming: dict[bytes, set[bytes]] = {}
        for request in theirs:
            rid = request.id
            for token in request.tokens:
                naming.setdefault(token, set()).add(rid)
        wanted = {
            rid
            for token, (_revoke, _ts, rid) in self.store.revocation_decisions(account).items()
            if naming.get(token) != {rid}
        }
        return [r for r in self.store.revocations_of(account) if r.id in wanted]

    def _revocation_chunks(
        self, pushes: list[tuple[bytes, list[Revocation]]]
    ) -> Iterator[list[tuple[bytes, list[Revocation]]]]:
        """``pushes`` in bodies of at most ``sync_max_revocations`` revocations and the frame
        budget (one account's are never split)."""
        chunk: list[tuple[bytes, list[Revocation]]] = []
        used = count = 0
        for account, found in pushes:
            size = 64 + sum(map(revocation_entry_size, found))
            full = count + len(found) > self.settings.sync_max_revocations
            if chunk and (full or used + size > self.budget):
                yield chunk
                chunk, used, count = [], 0, 0
            chunk.append((account, found))
            used += size
            count += len(found)
        if chunk:
            yield chunk

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
            if self.network.serves(m.account)
            and acceptable(m, self.limits, now, self.store.is_revoked)
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
            revocations = self.store.revocations_of(account)
            held_by = 0
            for member in members:
                try:
                    if revocations:
                        await self._push_revocations(member, [(account, revocations)])
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
        """Sync with a node just seen (a join), without waiting for the next round (if there is
        room: otherwise the next round will)."""
        self._bounded(self.sync_with(peer))

    # --- bookkeeping ------------------------------------------------------------------------------

    def _bounded(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """``coroutine`` as a background task, unless ``max_background_tasks`` are running
        (replications and forwarded writes outlive the request that made them: a member that
        does not answer holds them up to its timeouts). None, counted, if there is no room."""
        if len(self._background) >= self.settings.max_background_tasks:
            coroutine.close()
            self.counts["background_full"] += 1
            return None
        return self._spawn(coroutine)

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


def _member_result(status: int, body: bytes) -> dict[str, Any]:
    """A member's part of a swarm answer from its ``apply`` answer: its result if it answered
    200 with a JSON object, else ``{"failed": true, "code", "reason"}`` (a member's own words,
    cut short; the client checks every signature anyway)."""
    if status == 200:
        try:
            result = orjson.loads(body)
        except orjson.JSONDecodeError:
            result = None
        if isinstance(result, dict):
            return result
        return {"failed": True, "bad_peer_response": True}
    if status == 0:
        return {"failed": True, "timeout": True}
    return {"failed": True, "code": status, "reason": body[:200].decode("utf-8", "replace")}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
