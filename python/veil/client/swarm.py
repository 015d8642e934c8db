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
import base64
import random
import time
from typing import Any

from veil.client.network import NetworkClient, NetworkError
from veil.errors import InvalidInputError, VeilError
from veil.identity import Identity
from veil.node.peers import PeerInfo
from veil.node.swarms import SwarmMap
from veil.protocol.announcement import Announcement
from veil.session_id import parse_session_id

__all__ = ["StoreError", "SwarmClient"]


class StoreError(VeilError):
    """The swarm refused a message (with the node's error code) or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SwarmClient:
    def __init__(
        self,
        network: NetworkClient,
        *,
        swarm_size: int = 5,
        read_members: int = 3,
        rng: random.Random | None = None,
    ) -> None:
        self.network = network
        self.swarm_size = swarm_size
        self.read_members = read_members
        self._rng = rng or random.SystemRandom()
        self._map = SwarmMap([p.ed25519 for p in network.nodes], swarm_size)
        self._corrections: dict[bytes, list[PeerInfo]] = {}
        self._cursors: dict[tuple[bytes, bytes, int], str] = {}

    # --- the view -----------------------------------------------------------------------------

    async def refresh_nodes(self) -> int:
        """Fetch the node list from a node and keep the announcements that verify."""
        source = self._rng.choice(self.network.nodes)
        status, body = await self.network.request(source, "get_nodes", {})
        if status != 200 or not isinstance(body, dict):
            return 0
        peers = []
        for entry in body.get("nodes", []):
            try:
                peers.append(PeerInfo.of(Announcement.from_json(entry)))
            except InvalidInputError:
                continue
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
        if not isinstance(error, dict):
            return False
        members = []
        for entry in error.get("error", {}).get("swarm", []):
            try:
                members.append(PeerInfo.of(Announcement.from_json(entry)))
            except InvalidInputError:
                continue
        if not members:
            return False
        self._corrections[account] = members
        return True

    def export_cursors(self) -> dict[str, str]:
        """The retrieve cursors, for the client's saved state."""
        return {f"{a.hex()}:{m.hex()}:{ns}": c for (a, m, ns), c in self._cursors.items()}

    def import_cursors(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        for key, cursor in saved.items():
            try:
                account, member, ns = str(key).split(":")
                self._cursors[(bytes.fromhex(account), bytes.fromhex(member), int(ns))] = str(
                    cursor
                )
            except ValueError:
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
        self, recipient_session_id: str, data: bytes, *, ttl_ms: int, namespace: int = 0
    ) -> dict[str, Any]:
        """Deposit a message for an account (namespace 0: no signature needed)."""
        account = b"\x05" + parse_session_id(recipient_session_id)
        params = {
            "pubkey": recipient_session_id,
            "timestamp": _now_ms(),
            "ttl": ttl_ms,
            "data": base64.b64encode(data).decode("ascii"),
            "namespace": namespace,
        }
        last = ("unreachable", "no swarm member answered")
        members = self.swarm(account)
        self._rng.shuffle(members)
        for member in members[:3]:
            try:
                _, status, body = await self._swarm_request(account, "store", params, [member])
            except NetworkError:
                continue
            if status == 200 and isinstance(body, dict):
                return body
            error = body.get("error", {}) if isinstance(body, dict) else {}
            last = (str(error.get("code", status)), str(error.get("message", "")))
            if status in (400, 401, 406, 413, 507):
                break  # the message itself is refused: another member would say the same
        raise StoreError(*last)

    def _retrieve_params(
        self, identity: Identity, namespace: int, cursor: str | None
    ) -> dict[str, Any]:
        timestamp = _now_ms()
        ns = "" if namespace == 0 else str(namespace)
        signature = identity.sign(f"retrieve{ns}{timestamp}".encode())
        params: dict[str, Any] = {
            "pubkey": identity.session_id,
            "pubkey_ed25519": identity.ed25519_public_key.hex(),
            "timestamp": timestamp,
            "signature": base64.b64encode(signature).decode("ascii"),
            "namespace": namespace,
        }
        if cursor:
            params["cursor"] = cursor
        return params

    async def _drain(
        self, identity: Identity, member: PeerInfo, namespace: int
    ) -> list[dict[str, Any]]:
        account = bytes.fromhex(identity.session_id)
        key = (account, member.ed25519, namespace)
        messages: list[dict[str, Any]] = []
        for _ in range(64):  # pages, bounded
            params = self._retrieve_params(identity, namespace, self._cursors.get(key))
            try:
                _, status, body = await self._swarm_request(account, "retrieve", params, [member])
            except NetworkError:
                break
            if status != 200 or not isinstance(body, dict):
                break
            messages.extend(body.get("messages", []))
            if body.get("cursor"):
                self._cursors[key] = body["cursor"]
            if not body.get("more"):
                break
        return messages

    async def retrieve(self, identity: Identity, *, namespace: int = 0) -> list[dict[str, Any]]:
        """New messages of the account from ``read_members`` swarm members, merged, de-duplicated
        by hash, in cursor order (timestamp, then hash)."""
        account = bytes.fromhex(identity.session_id)
        members = self.swarm(account)
        self._rng.shuffle(members)
        pages = await asyncio.gather(
            *(self._drain(identity, m, namespace) for m in members[: self.read_members])
        )
        merged: dict[str, dict[str, Any]] = {}
        for page in pages:
            for message in page:
                merged.setdefault(message["hash"], message)
        return sorted(merged.values(), key=lambda m: (m["timestamp"], m["hash"]))
