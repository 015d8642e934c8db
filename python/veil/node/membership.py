"""The network as one node sees it: verified announcements, spread by gossip, expired when stale.

Every ``gossip_interval_s`` a node refreshes its own announcement when due, picks one known node at
random (or a seed while it knows few) and exchanges views with it: it POSTs its announcements to the
peer's ``/gossip`` and merges the peer's answer (push-pull anti-entropy). Each announcement is
verified before it is kept; a newer one of the same identity replaces the older; one from more than
``clock_skew_ms`` in the future is ignored; a node not re-announced within ``node_timeout_s`` is
dropped. The view is a pure function of the announcements held, so two nodes holding the same ones
agree on everything derived from them (swarms, paths).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.protocol.announcement import Announcement, parse_address, sign_announcement
from veil.protocol.peers import PeerInfo

__all__ = ["Membership"]

log = logging.getLogger("veil.node.membership")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Membership:
    """Known nodes by Ed25519 identity, this node's own announcement always among them."""

    def __init__(
        self,
        identity: Identity,
        *,
        version: str,
        seeds: tuple[str, ...],
        node_timeout_s: float,
        announce_interval_s: float,
        gossip_interval_s: float,
        clock_skew_ms: int,
        max_nodes: int = 10_000,
    ) -> None:
        self.identity = identity
        self.version = version
        self.seeds = seeds
        self.node_timeout_s = node_timeout_s
        self.announce_interval_s = announce_interval_s
        self.gossip_interval_s = gossip_interval_s
        self.clock_skew_ms = clock_skew_ms
        self.max_nodes = max_nodes
        self.nodes: dict[bytes, Announcement] = {}
        self.http = ""
        self.link = ""
        self.on_change: list[Callable[[], None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.SystemRandom()
        self.exchanges = 0

    # --- the view -------------------------------------------------------------------------------

    def announce(self, http: str, link: str) -> None:
        """(Re)sign this node's announcement with its addresses."""
        self.http, self.link = http, link
        own = sign_announcement(
            self.identity, http=http, link=link, version=self.version, issued_ms=_now_ms()
        )
        self.nodes[own.ed25519] = own
        self._changed()

    def merge(self, entries: object) -> int:
        """Verify and keep the newer of each announcement; return how many changed the view."""
        if not isinstance(entries, list):
            return 0
        now = _now_ms()
        changed = 0
        for entry in entries[: self.max_nodes]:
            if self._already_known(entry):
                continue  # skip the signature check of what this node already holds
            try:
                announcement = Announcement.from_json(entry)
            except InvalidInputError:
                continue
            if announcement.ed25519 == self.identity.ed25519_public_key:
                continue  # only this node speaks for itself
            if announcement.issued_ms > now + self.clock_skew_ms:
                continue
            if now - announcement.issued_ms > self.node_timeout_s * 1000:
                continue
            known = self.nodes.get(announcement.ed25519)
            if known is not None and known.issued_ms >= announcement.issued_ms:
                continue
            if known is None and len(self.nodes) >= self.max_nodes:
                continue
            self.nodes[announcement.ed25519] = announcement
            changed += 1
        if changed:
            self._changed()
        return changed

    def _already_known(self, entry: object) -> bool:
        """True if ``entry`` is no newer than the announcement held for its identity. Only ever
        used to skip work: nothing is adopted without verification."""
        if not isinstance(entry, dict):
            return False
        try:
            known = self.nodes.get(bytes.fromhex(entry["ed25519"]))
            issued = entry["issued_ms"]
        except (KeyError, TypeError, ValueError):
            return False
        return known is not None and isinstance(issued, int) and issued <= known.issued_ms

    def expire(self) -> int:
        """Drop the nodes not heard from for ``node_timeout_s``."""
        cutoff = _now_ms() - self.node_timeout_s * 1000
        own = self.identity.ed25519_public_key
        stale = [k for k, a in self.nodes.items() if k != own and a.issued_ms < cutoff]
        for key in stale:
            del self.nodes[key]
        if stale:
            self._changed()
        return len(stale)

    def announcements(self) -> list[dict[str, Any]]:
        return [self.nodes[key].to_json() for key in sorted(self.nodes)]

    def peers(self) -> list[PeerInfo]:
        return [PeerInfo.of(a) for _, a in sorted(self.nodes.items())]

    def node_ids(self) -> list[bytes]:
        return sorted(self.nodes)

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    # --- gossip ---------------------------------------------------------------------------------

    async def exchange(self, address: str) -> bool:
        """Push-pull with the node whose client address is ``address``; True if it answered."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        host, port = parse_address(address)
        url = f"http://{host}:{port}/gossip"
        try:
            async with self._session.post(
                url, data=orjson.dumps({"announcements": self.announcements()})
            ) as answer:
                if answer.status != 200:
                    return False
                body = orjson.loads(await answer.read())
        except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError):
            return False
        self.exchanges += 1
        self.merge(body.get("announcements") if isinstance(body, dict) else None)
        return True

    def gossip_targets(self) -> list[str]:
        """Whom to gossip with this round: one known node, plus a seed while the view is small."""
        others = [a.http for k, a in self.nodes.items() if k != self.identity.ed25519_public_key]
        targets = [self._rng.choice(others)] if others else []
        if len(others) < 3 and self.seeds:
            seed = self._rng.choice(self.seeds)
            if seed != self.http and seed not in targets:
                targets.append(seed)
        return targets

    async def run(self) -> None:
        """Gossip forever (cancel to stop)."""
        while True:
            own = self.nodes.get(self.identity.ed25519_public_key)
            if own is not None and _now_ms() - own.issued_ms > self.announce_interval_s * 1000:
                self.announce(self.http, self.link)
            self.expire()
            targets = self.gossip_targets()
            if targets:
                await asyncio.gather(*(self.exchange(t) for t in targets))
            await asyncio.sleep(self.gossip_interval_s * self._rng.uniform(0.75, 1.25))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
