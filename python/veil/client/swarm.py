"""Storing and fetching an account's messages through the network, as a Veil client does.

:class:`SwarmClient` keeps the node list (from ``get_nodes``, every announcement verified), computes
an account's swarm with the same rendezvous hashing as the nodes, and corrects itself from a node's
``421 wrong_swarm`` answer when its view was stale. It stores at one swarm member (another on
failure) and reads from ``read_members`` members at once — with ``read_members = R - W + 1`` (3 for
5 and 3) at least one of them holds every acknowledged message — then merges and de-duplicates by
hash, so one slow or lagging node cannot hide a message. Every request goes through
:class:`~veil.client.network.NetworkClient`, that is, through onion paths.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from veil import clock
from veil.client.network import NetworkClient, NetworkError
from veil.errors import InvalidInputError, VeilError
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.announcement import Announcement
from veil.protocol.hashes import cursor_decode, cursor_encode, hash_from_b64
from veil.protocol.peers import PeerInfo
from veil.protocol.swarms import SwarmMap
from veil.session_id import parse_session_id

__all__ = ["StoreError", "SwarmClient"]


class StoreError(VeilError):
    """The swarm refused a message (with the node's error code) or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_now_ms = clock.now_ms  # a module name of its own, so that a test can set the client's clock


class SwarmClient:
    def __init__(
        self,
        network: NetworkClient,
        *,
        swarm_size: int = 5,
        read_members: int = 3,
        look_back_ms: int = 60_000,
        rng: random.Random | None = None,
    ) -> None:
        self.network = network
        self.swarm_size = swarm_size
        self.read_members = read_members
        self._rng = rng or random.SystemRandom()
        self._map = SwarmMap([p.ed25519 for p in network.nodes], swarm_size)
        self._corrections: dict[bytes, list[PeerInfo]] = {}
        self._cursors: dict[tuple[bytes, bytes, int], str] = {}
        # A message may reach a member up to the nodes' clock window (60 s) after messages with
        # later timestamps, that is, behind a cursor already passed (docs/storage.md). Reads
        # therefore start ``look_back_ms`` before the cursor, and the hashes returned inside that
        # window are kept so that a message is returned once.
        self.look_back_ms = look_back_ms
        self._recent: dict[tuple[bytes, int], dict[str, int]] = {}

    # --- the view -----------------------------------------------------------------------------

    async def refresh_nodes(self) -> int:
        """Fetch the node list from a node and keep the announcements that verify."""
        source = self._rng.choice(self.network.nodes)
        status, body = await self.network.request(source, "get_nodes", {})
        if status != 200 or not isinstance(body, dict):
            return 0
        peers = _verified_nodes(body.get("nodes"))
        if len(peers) >= 3:
            self.network.nodes = peers
            self._map = SwarmMap([p.ed25519 for p in peers], self.swarm_size)
            self._corrections.clear()
        return len(peers)

    def swarm(self, account: bytes) -> list[PeerInfo]:
        corrected = self._corrections.get(account)
        if corrected:
            return corrected
        by_id = {p.ed25519: p for p in self.network.nodes}
        return [by_id[i] for i in self._map.swarm(account) if i in by_id]

    def _correct(self, account: bytes, error: object) -> bool:
        """Take the swarm named in a 421 answer; True if it named one."""
        members = _verified_nodes(_error_of(error).get("swarm"))
        if not members:
            return False
        self._corrections[account] = members
        return True

    def export_cursors(self) -> dict[str, Any]:
        """The retrieve cursors and the hashes inside their look-back window, for saved state."""
        saved: dict[str, Any] = {
            f"{a.hex()}:{m.hex()}:{ns}": c for (a, m, ns), c in self._cursors.items()
        }
        saved["recent"] = {
            f"{a.hex()}:{ns}": dict(seen) for (a, ns), seen in self._recent.items() if seen
        }
        return saved

    def import_cursors(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        for key, cursor in saved.items():
            if key == "recent":
                self._import_recent(cursor)
                continue
            try:
                account, member, ns = str(key).split(":")
                cursor_decode(str(cursor))
                self._cursors[(bytes.fromhex(account), bytes.fromhex(member), int(ns))] = str(
                    cursor
                )
            except (ValueError, InvalidInputError):
                continue

    def _import_recent(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        for key, seen in saved.items():
            try:
                account, ns = str(key).split(":")
                entries = {str(h): int(t) for h, t in dict(seen).items()}
                self._recent[(bytes.fromhex(account), int(ns))] = entries
            except (ValueError, TypeError):
                continue

    # --- requests -----------------------------------------------------------------------------

    async def _swarm_request(
        self, account: bytes, method: str, params: dict[str, Any], members: list[PeerInfo]
    ) -> tuple[PeerInfo, int, Any]:
        status, body = await self.network.request(members[0], method, params)
        if status == 421 and self._correct(account, body):
            retry = self._rng.choice(self.swarm(account))
            status, body = await self.network.request(retry, method, params)
            return retry, status, body
        return members[0], status, body

    async def store(
        self,
        recipient_session_id: str,
        data: bytes,
        *,
        ttl_ms: int,
        namespace: int = 0,
        identity: Identity | None = None,
    ) -> dict[str, Any]:
        """Deposit a message for an account. Namespace 0 takes anyone's messages; the others only
        the account's own, signed by ``identity`` (else :class:`InvalidInputError`)."""
        account = b"\x05" + parse_session_id(recipient_session_id)
        params = storage_rpc.store_params(
            recipient_session_id,
            data,
            ttl_ms,
            namespace=namespace,
            identity=identity,
            timestamp_ms=_now_ms(),
        )
        # A message refused for what it is: another member would say the same.
        return await self._write(account, "store", params, final=(400, 401, 406, 413, 507))

    def _retrieve_params(
        self, identity: Identity, namespace: int, cursor: str | None
    ) -> dict[str, Any]:
        if cursor:
            # Step back by the look-back window (a cursor on a timestamp and the zero hash).
            cursor_ts = int.from_bytes(cursor_decode(cursor)[:8], "big")
            cursor = cursor_encode(max(0, cursor_ts - self.look_back_ms), bytes(32))
        return storage_rpc.retrieve_params(
            identity, namespace=namespace, cursor=cursor, timestamp_ms=_now_ms()
        )

    async def _drain(
        self, identity: Identity, member: PeerInfo, namespace: int, *, from_start: bool
    ) -> list[dict[str, Any]]:
        account = bytes.fromhex(identity.session_id)
        key = (account, member.ed25519, namespace)
        messages: list[dict[str, Any]] = []
        cursor = None if from_start else self._cursors.get(key) or self._best(account, namespace)
        for _ in range(64):  # pages, bounded
            params = self._retrieve_params(identity, namespace, cursor)
            if cursor is not None and messages:
                params["cursor"] = cursor  # later pages continue exactly where the last ended
            try:
                _, status, body = await self._swarm_request(account, "retrieve", params, [member])
            except NetworkError:
                break
            if status != 200 or not isinstance(body, dict):
                break
            raw = body.get("messages")
            page = [m for m in raw if _well_formed(m)] if isinstance(raw, list) else []
            messages.extend(page)
            if page and _is_cursor(body.get("cursor")):
                cursor = body["cursor"]
                if not from_start:
                    self._cursors[key] = cursor
            if body.get("more") is not True or not page:
                break
        return messages

    async def retrieve(
        self, identity: Identity, *, namespace: int = 0, from_start: bool = False
    ) -> list[dict[str, Any]]:
        """New messages of the account from ``read_members`` swarm members, merged, de-duplicated
        by hash, in cursor order (timestamp, then hash). ``from_start``: every message held, with
        no cursor used or kept (for small namespaces read whole, such as the account's config)."""
        account = bytes.fromhex(identity.session_id)
        members = self.swarm(account)
        self._rng.shuffle(members)
        pages = await asyncio.gather(
            *(
                self._drain(identity, m, namespace, from_start=from_start)
                for m in members[: self.read_members]
            )
        )
        merged: dict[str, dict[str, Any]] = {}
        for page in pages:
            for message in page:
                merged.setdefault(message["hash"], message)
        ordered = sorted(merged.values(), key=lambda m: (m["timestamp"], m["hash"]))
        if from_start:
            return ordered
        recent = self._recent.setdefault((account, namespace), {})
        fresh = [m for m in ordered if m["hash"] not in recent]
        for message in ordered:
            recent[message["hash"]] = message["timestamp"]
        self._prune_recent(account, namespace)
        return fresh

    def _best(self, account: bytes, namespace: int) -> str | None:
        """The furthest cursor any member gave for the account: a member read for the first time
        starts there (cursors are the same on every member: timestamp, then hash)."""
        cursors = [
            c for (a, _m, ns), c in self._cursors.items() if a == account and ns == namespace
        ]
        return max(cursors, key=cursor_decode, default=None)

    def _prune_recent(self, account: bytes, namespace: int) -> None:
        """Forget hashes that no read can return again: older than every member's window."""
        starts = [
            int.from_bytes(cursor_decode(c)[:8], "big") - self.look_back_ms
            for (a, _m, ns), c in self._cursors.items()
            if a == account and ns == namespace
        ]
        if not starts:
            return
        floor = min(starts)
        recent = self._recent[(account, namespace)]
        for digest in [h for h, t in recent.items() if t < floor]:
            del recent[digest]

    async def _write(
        self,
        account: bytes,
        method: str,
        params: dict[str, Any],
        *,
        final: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """A write at one swarm member (which replicates or forwards it to the rest), tried at up
        to three members in random order; a status in ``final`` is not tried elsewhere."""
        members = self.swarm(account)
        self._rng.shuffle(members)
        last = ("unreachable", "no swarm member answered")
        for member in members[:3]:
            try:
                _, status, body = await self._swarm_request(account, method, params, [member])
            except NetworkError:
                continue
            if status == 200 and isinstance(body, dict):
                return body
            error = _error_of(body)
            last = (_text(error.get("code"), str(status)), _text(error.get("message"), ""))
            if status in final:
                break
        raise StoreError(*last)

    async def delete(self, identity: Identity, hashes: list[str]) -> list[str]:
        """Delete the account's messages ``hashes`` from its swarm; the hashes deleted. A malformed
        hash is refused here, unsigned, as a node would refuse it (:class:`StoreError`)."""
        if not hashes:
            return []
        try:
            params = storage_rpc.delete_params(identity, hashes)
        except InvalidInputError as exc:
            raise StoreError("bad_request", str(exc)) from None
        body = await self._write(bytes.fromhex(identity.session_id), "delete", params)
        deleted = body.get("deleted")
        return [h for h in deleted if h in hashes] if isinstance(deleted, list) else []


# --- what a node answers, checked before it is used ----------------------------------------------


def _error_of(body: object) -> dict[str, Any]:
    """The ``error`` object of an answer, or an empty one."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _text(value: object, default: str) -> str:
    """A short text from a node, for an error message (never more than 200 characters)."""
    return value[:200] if isinstance(value, str) else default


def _verified_nodes(entries: object) -> list[PeerInfo]:
    """The distinct nodes among ``entries`` whose announcements verify (by identity and key)."""
    if not isinstance(entries, list):
        return []
    nodes: dict[bytes, PeerInfo] = {}
    keys: set[bytes] = set()
    for entry in entries:
        try:
            peer = PeerInfo.of(Announcement.from_json(entry))
        except InvalidInputError:
            continue
        if peer.ed25519 not in nodes and peer.x25519 not in keys:
            nodes[peer.ed25519] = peer
            keys.add(peer.x25519)
    return list(nodes.values())


def _well_formed(message: object) -> bool:
    """A retrieved message with a canonical hash, an integer timestamp and text data."""
    if not isinstance(message, dict):
        return False
    timestamp, data = message.get("timestamp"), message.get("data")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        return False
    digest = message.get("hash")
    if not isinstance(data, str) or not isinstance(digest, str):
        return False
    try:
        hash_from_b64(digest)
    except InvalidInputError:
        return False
    return True


def _is_cursor(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        cursor_decode(value)
    except InvalidInputError:
        return False
    return True
