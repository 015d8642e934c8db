"""Replication between the members of an account's swarm.

- **Writes**: the member a client stores at keeps the message durably, sends it to the other
  members over node links (RPC frame ``replicate``), and answers once ``write_quorum`` members in
  all hold it, with each one's signed receipt; the rest get it in the background.
- **Deletes and expiry changes** are forwarded to the other members with the client's own signed
  request, which each member verifies itself; a deleted message leaves a tombstone (``store.py``).
- **Anti-entropy**: every ``sync_interval_s`` a node compares, with one other node, the accounts
  both serve — by (message count, XOR of hashes) — and exchanges only the messages of accounts that
  differ: it pushes what the other lacks and fetches what it lacks. A node that joins gets its share
  this way (others sync with it as soon as they see it), and one that was down catches up.
- **Hand-over**: an account this node no longer serves (the view changed) is pushed to its current
  swarm, and deleted here only once enough members acknowledged it.

Receipt: Ed25519 by the member over ``"veil-receipt-v1" ‖ hash (32) ‖ expiry_ms (8, big-endian)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import struct
from typing import Any

import orjson

from veil import _core
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.links import HopFailed, LinkPool
from veil.node.replication_context import FORWARDED
from veil.node.store import Message, MessageStore, StoreOutcome, Txn
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol import hashes as keys
from veil.protocol.announcement import Announcement
from veil.protocol.link import FrameKind

__all__ = ["FORWARDED", "Replicator", "message_from_json", "message_to_json", "verify_receipt"]

log = logging.getLogger("veil.node.replication")

RECEIPT_CONTEXT = b"veil-receipt-v1"


def message_to_json(message: Message) -> dict[str, Any]:
    return {
        "account": message.account.hex(),
        "namespace": message.namespace,
        "timestamp": message.timestamp_ms,
        "expiry": message.expiry_ms,
        "data": base64.b64encode(message.data).decode("ascii"),
    }


def message_from_json(entry: object) -> Message:
    """A replicated message; its hash is recomputed, so a peer cannot mislabel one."""
    if not isinstance(entry, dict):
        raise InvalidInputError("a message is an object")
    try:
        account = bytes.fromhex(entry["account"])
        namespace, timestamp, expiry = entry["namespace"], entry["timestamp"], entry["expiry"]
        data = base64.b64decode(entry["data"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise InvalidInputError("a replicated message is malformed") from None
    if len(account) != keys.ACCOUNT_LEN or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (namespace, timestamp, expiry)
    ):
        raise InvalidInputError("a replicated message is malformed")
    if not -32768 <= namespace <= 32767 or not 0 <= timestamp <= expiry < 1 << 63:
        raise InvalidInputError("a replicated message is malformed")
    digest = keys.message_hash(account, namespace, data)
    return Message(account, namespace, timestamp, expiry, data, digest)


def _receipt_bytes(digest: bytes, expiry_ms: int) -> bytes:
    return RECEIPT_CONTEXT + digest + struct.pack(">Q", expiry_ms)


def verify_receipt(receipt: object, digest: bytes, expiry_ms: int) -> bytes | None:
    """The signing node's Ed25519 key if ``receipt`` is valid for the message, else None."""
    if not isinstance(receipt, dict):
        return None
    try:
        node = bytes.fromhex(receipt["node"])
        signature = base64.b64decode(receipt["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if len(node) != 32 or len(signature) != 64:
        return None
    if not _core.ed25519_verify(node, _receipt_bytes(digest, expiry_ms), signature):
        return None
    return node


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
        hop_timeout_s: float,
    ) -> None:
        self.identity = identity
        self.network = network
        self.pool = pool
        self.store = store
        self.writer = writer
        self.settings = settings
        self.timeout_s = hop_timeout_s
        self.own_id = identity.ed25519_public_key
        self._background: set[asyncio.Task[Any]] = set()
        self._rng = random.SystemRandom()
        self.counts: dict[str, int] = {}
        self.client_rpc: Any = None  # StorageRpc, for forwarded deletes

    # --- receipts and writes ------------------------------------------------------------------

    def receipt(self, message: Message) -> dict[str, str]:
        signature = self.identity.sign(_receipt_bytes(message.hash, message.expiry_ms))
        return {
            "node": self.own_id.hex(),
            "signature": base64.b64encode(signature).decode("ascii"),
        }

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
            self._count("quorum_timeout")
        return receipts

    async def _push(self, member: Announcement, messages: list[Message]) -> list[dict[str, str]]:
        """Replicate ``messages`` to ``member``; return its valid receipts, in order."""
        body = orjson.dumps(
            {"method": "replicate", "messages": [message_to_json(m) for m in messages]}
        )
        answer = await self.pool.request(member.link_address, body, self.timeout_s, FrameKind.RPC)
        try:
            receipts = orjson.loads(answer).get("receipts", [])
        except (orjson.JSONDecodeError, AttributeError):
            raise HopFailed() from None
        valid = []
        for message, receipt in zip(messages, receipts, strict=False):
            if verify_receipt(receipt, message.hash, message.expiry_ms) == member.ed25519:
                valid.append(receipt)
        self._count("pushed", len(valid))
        return valid

    def forward(self, request: dict[str, Any], account: bytes) -> None:
        """Send a client's signed request (delete, expire) to the account's other members."""
        if FORWARDED.get():
            return
        body = orjson.dumps({"method": "apply", "request": request})
        for member in self.network.swarm(account):
            if member.ed25519 != self.own_id:
                self._spawn(self._rpc(member, body))

    async def _rpc(self, member: Announcement, body: bytes) -> bytes | None:
        try:
            return await self.pool.request(member.link_address, body, self.timeout_s, FrameKind.RPC)
        except HopFailed:
            self._count("rpc_failed")
            return None

    # --- the other end ------------------------------------------------------------------------

    async def handle_rpc(self, body: bytes) -> bytes:
        """A node-to-node request (RPC frame)."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise HopFailed() from None
        if not isinstance(request, dict):
            raise HopFailed()
        method = request.get("method")
        if method == "replicate":
            return orjson.dumps({"receipts": await self._take(request.get("messages"))})
        if method == "summary":
            return orjson.dumps({"differ": self._differ(request.get("accounts"))})
        if method == "fetch":
            return orjson.dumps({"messages": self._fetch(request.get("hashes"))})
        if method == "apply" and self.client_rpc is not None:
            token = FORWARDED.set(True)
            try:
                status, _answer = await self.client_rpc.call(request.get("request"))
            finally:
                FORWARDED.reset(token)
            return orjson.dumps({"status": status})
        raise HopFailed()

    async def _take(self, entries: object) -> list[dict[str, str] | None]:
        if not isinstance(entries, list):
            return []
        messages: list[Message | None] = []
        for entry in entries[: self.settings.sync_max_messages]:
            try:
                messages.append(message_from_json(entry))
            except InvalidInputError:
                messages.append(None)
        good = [m for m in messages if m is not None]

        def put_all(txn: Txn) -> list[StoreOutcome]:
            return [self.store.put(txn, m) for m in good]

        outcomes = iter(
            await self.writer.submit(put_all, if_full=[StoreOutcome.STORAGE_FULL] * len(good))
        )
        receipts: list[dict[str, str] | None] = []
        for message in messages:
            if message is None:
                receipts.append(None)
                continue
            outcome = next(outcomes)
            held = outcome in (StoreOutcome.STORED, StoreOutcome.ALREADY)
            receipts.append(self.receipt(message) if held else None)
        self._count("taken", sum(r is not None for r in receipts))
        return receipts

    def _shared_accounts(self, peer: bytes) -> list[bytes]:
        return [
            account
            for account in self.store.held_accounts()
            if peer in self.network.swarms.swarm(account)
        ]

    def _differ(self, accounts: object) -> dict[str, list[str]]:
        """For each account whose summary differs from ours, our hashes (the caller diffs)."""
        if not isinstance(accounts, dict):
            return {}
        theirs: dict[bytes, tuple[int, str]] = {}
        for account_hex, summary in list(accounts.items())[:100_000]:
            try:
                theirs[bytes.fromhex(account_hex)] = (int(summary[0]), str(summary[1]))
            except (ValueError, TypeError, IndexError):
                continue
        ours = self.store.summaries(list(theirs))
        differ: dict[str, list[str]] = {}
        for account, (count, digest_hex) in theirs.items():
            mine = ours.get(account)
            if mine is None or mine[0] != count or mine[1].hex() != digest_hex:
                differ[account.hex()] = [keys.hash_b64(h) for h in self.store.hashes_of(account)]
        return differ

    def _fetch(self, hashes: object) -> list[dict[str, Any]]:
        if not isinstance(hashes, list):
            return []
        wanted = []
        for text in hashes[: self.settings.sync_max_messages]:
            try:
                wanted.append(keys.hash_from_b64(text))
            except InvalidInputError:
                continue
        return [message_to_json(m) for m in self.store.messages_of(wanted)]

    # --- anti-entropy and hand-over -----------------------------------------------------------

    async def sync_with(self, peer: Announcement) -> tuple[int, int]:
        """Compare shared accounts with ``peer``; return (messages pushed, messages fetched)."""
        accounts = self._shared_accounts(peer.ed25519)
        summaries = self.store.summaries(accounts)
        body = orjson.dumps(
            {
                "method": "summary",
                "accounts": {a.hex(): [c, d.hex()] for a, (c, d) in summaries.items()},
            }
        )
        answer = await self._rpc(peer, body)
        if answer is None:
            return 0, 0
        try:
            differ = orjson.loads(answer).get("differ", {})
        except (orjson.JSONDecodeError, AttributeError):
            return 0, 0
        push: list[bytes] = []
        pull: list[str] = []
        for account_hex, their_hashes in differ.items():
            try:
                account = bytes.fromhex(account_hex)
                theirs = {keys.hash_from_b64(h) for h in their_hashes}
            except (ValueError, TypeError, InvalidInputError):
                continue
            mine = set(self.store.hashes_of(account))
            push.extend(mine - theirs)
            pull.extend(keys.hash_b64(h) for h in theirs - mine)
        limit = self.settings.sync_max_messages
        pushed = fetched = 0
        if push:
            with contextlib.suppress(HopFailed):
                pushed = len(await self._push(peer, self.store.messages_of(push[:limit])))
        if pull:
            answer = await self._rpc(
                peer, orjson.dumps({"method": "fetch", "hashes": pull[:limit]})
            )
            if answer is not None:
                try:
                    entries = orjson.loads(answer).get("messages", [])
                except (orjson.JSONDecodeError, AttributeError):
                    entries = []
                fetched = sum(r is not None for r in await self._take(entries))
        self._count("synced_pushed", pushed)
        self._count("synced_fetched", fetched)
        return pushed, fetched

    async def hand_over(self) -> int:
        """Push the accounts this node no longer serves to their swarms; drop them once held."""
        dropped = 0
        for account in self.store.held_accounts():
            if self.network.serves(account):
                continue
            members = self.network.swarm(account)
            if not members:
                continue
            messages = self.store.messages_of(self.store.hashes_of(account))
            held_by = 0
            for member in members:
                try:
                    receipts = await self._push(member, messages)
                except HopFailed:
                    continue
                if len(receipts) == len(messages):
                    held_by += 1
            if held_by >= self.quorum(account):

                def drop(txn: Txn, account: bytes = account) -> int:
                    return self.store.drop_account(txn, account)

                dropped += await self.writer.submit(drop, if_full=0)
        self._count("handed_over", dropped)
        return dropped

    async def run(self) -> None:
        """Anti-entropy and hand-over, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.settings.sync_interval_s * self._rng.uniform(0.75, 1.25))
            others = [a for k, a in self.network.membership.nodes.items() if k != self.own_id]
            if others:
                await self.sync_with(self._rng.choice(others))
            await self.hand_over()

    def sync_soon(self, peer: Announcement) -> None:
        """Sync with a node just seen (a join), without waiting for the next round."""
        self._spawn(self.sync_with(peer))

    # --- bookkeeping ------------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, HopFailed):
                await task
