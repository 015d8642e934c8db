"""The network as one node sees it: verified announcements, spread by gossip, expired when stale.

Every ``gossip_interval_s`` a node refreshes its own announcement when due, picks one known node at
random and exchanges views with it over their node link (``gossip`` RPC: authenticated and
encrypted, like everything between nodes). While it knows fewer than three other nodes — at start,
or cut off — it also posts its view to a seed's ``POST /gossip`` (HTTP: a node that is not yet in
anyone's view cannot open a link to them). An exchange carries at most ``gossip_max_entries``
announcements each way: all of them while the view is that small, else this node's own and a random
sample of the rest.

Every announcement is verified before it is kept — its X25519 key must be its Ed25519 key's, its
signature valid — in one batch per exchange, on a worker thread (``veil._core.
verify_identity_batch`` releases the GIL), after the cheap checks: already known, too far in the
future, too old, more than ``gossip_max_entries`` in one exchange (refused whole). A newer
announcement of the same identity replaces the older; a node not re-announced within
``node_timeout_s`` is dropped; the view never holds more than ``max_nodes``. The view is a pure
function of the announcements held, so two nodes holding the same ones agree on everything derived
from them (swarms, paths). Listeners are told once per exchange that changed it, not per entry.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from veil import _core
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.links import HopFailed, LinkPool
from veil.protocol.announcement import Announcement, parse_address, sign_announcement
from veil.protocol.link import FrameKind
from veil.protocol.node_rpc import Gossip, NodeRpcError, decode_announcements, encode_request
from veil.protocol.peers import PeerInfo

__all__ = ["Membership", "TooManyAnnouncements"]

log = logging.getLogger("veil.node.membership")


class TooManyAnnouncements(InvalidInputError):
    """An exchange carried more announcements than ``gossip_max_entries``."""


class Membership:
    """Known nodes by Ed25519 identity, this node's own announcement always among them."""

    def __init__(
        self,
        identity: Identity,
        *,
        version: str,
        seeds: tuple[str, ...],
        settings: NetworkSettings,
        clock_skew_ms: int,
        pool: LinkPool,
        hop_timeout_s: float,
    ) -> None:
        self.identity = identity
        self.version = version
        self.seeds = seeds
        self.settings = settings
        self.clock_skew_ms = clock_skew_ms
        self.pool = pool
        self.hop_timeout_s = hop_timeout_s
        self.nodes: dict[bytes, Announcement] = {}
        self.by_x25519: dict[bytes, bytes] = {}
        """Node id (Ed25519) by X25519 key: whom a link's handshake names."""
        self.http = ""
        self.link = ""
        self.on_change: list[Callable[[], None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.SystemRandom()
        self.exchanges = 0
        self.counts: collections.Counter[str] = collections.Counter()

    # --- the view -------------------------------------------------------------------------------

    def announce(self, http: str, link: str) -> None:
        """(Re)sign this node's announcement with its addresses."""
        self.http, self.link = http, link
        own = sign_announcement(
            self.identity, http=http, link=link, version=self.version, issued_ms=now_ms()
        )
        self.nodes[own.ed25519] = own
        self._changed()

    async def merge(self, entries: object) -> int:
        """Verify and keep the newer of each announcement; return how many changed the view.
        Raises :class:`TooManyAnnouncements` for more than ``gossip_max_entries``."""
        if not isinstance(entries, list):
            return 0
        if len(entries) > self.settings.gossip_max_entries:
            self.counts["refused_too_many"] += 1
            raise TooManyAnnouncements("too many announcements in one exchange")
        candidates = self._candidates(entries)
        if not candidates:
            return 0
        checks = [(a.ed25519, a.x25519, signed, a.signature) for a, signed in candidates]
        verdicts = await asyncio.get_running_loop().run_in_executor(
            None, _core.verify_identity_batch, checks
        )
        changed = 0
        for (announcement, _), valid in zip(candidates, verdicts, strict=True):
            if not valid:
                self.counts["refused_bad_signature"] += 1
                continue
            known = self.nodes.get(announcement.ed25519)
            if known is not None and known.issued_ms >= announcement.issued_ms:
                continue  # a newer one arrived while this batch was verified
            if known is None and len(self.nodes) >= self.settings.max_nodes:
                self.counts["refused_view_full"] += 1
                continue
            self.nodes[announcement.ed25519] = announcement
            changed += 1
        if changed:
            self._changed()
        return changed

    def _candidates(self, entries: list[Any]) -> list[tuple[Announcement, bytes]]:
        """The entries worth verifying: well-formed, newer than what is held, in the window."""
        now = now_ms()
        own = self.identity.ed25519_public_key
        out: dict[bytes, tuple[Announcement, bytes]] = {}
        for entry in entries:
            if self._already_known(entry):
                continue  # skip the parse and the signature check of what is held
            try:
                announcement, signed = Announcement.parse(entry)
            except InvalidInputError:
                self.counts["refused_malformed"] += 1
                continue
            if announcement.ed25519 == own:
                continue  # only this node speaks for itself
            if announcement.issued_ms > now + self.clock_skew_ms:
                continue
            if now - announcement.issued_ms > self.settings.node_timeout_s * 1000:
                continue
            earlier = out.get(announcement.ed25519)
            if earlier is None or earlier[0].issued_ms < announcement.issued_ms:
                out[announcement.ed25519] = (announcement, signed)
        return list(out.values())

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
        cutoff = now_ms() - self.settings.node_timeout_s * 1000
        own = self.identity.ed25519_public_key
        stale = [k for k, a in self.nodes.items() if k != own and a.issued_ms < cutoff]
        for key in stale:
            del self.nodes[key]
        if stale:
            self._changed()
        return len(stale)

    def announcements(self) -> list[dict[str, Any]]:
        """Every announcement held, in node-id order (``get_nodes``)."""
        return [self.nodes[key].to_json() for key in sorted(self.nodes)]

    def gossip_sample(self) -> list[dict[str, Any]]:
        """What one exchange carries: everything while the view is small, else this node's own
        announcement and a random sample of the rest, ``gossip_max_entries`` in all."""
        limit = self.settings.gossip_max_entries
        if len(self.nodes) <= limit:
            return self.announcements()
        own = self.identity.ed25519_public_key
        others = [a for k, a in self.nodes.items() if k != own]
        picked = self._rng.sample(others, limit - 1)
        return [self.nodes[own].to_json(), *(a.to_json() for a in picked)]

    def peers(self) -> list[PeerInfo]:
        return [PeerInfo.of(a) for _, a in sorted(self.nodes.items())]

    def node_ids(self) -> list[bytes]:
        return sorted(self.nodes)

    def _changed(self) -> None:
        self.by_x25519 = {a.x25519: k for k, a in self.nodes.items()}
        for callback in self.on_change:
            callback()

    # --- gossip ---------------------------------------------------------------------------------

    async def exchange_link(self, peer: Announcement) -> bool:
        """Push-pull with a known node over its link; True if it answered."""
        body = encode_request(Gossip(self.gossip_sample()))
        try:
            answer = await self.pool.request(
                peer.link_address, peer.x25519, body, self.hop_timeout_s, FrameKind.RPC
            )
            entries = decode_announcements(answer, max_items=self.settings.gossip_max_entries)
            await self.merge(entries)
        except (HopFailed, NodeRpcError):
            self.counts["link_exchange_failed"] += 1
            return False
        self.exchanges += 1
        return True

    async def exchange_http(self, address: str) -> bool:
        """Push-pull with a seed over HTTP (``POST /gossip``); True if it answered."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        host, port = parse_address(address)
        url = f"http://{host}:{port}/gossip"
        try:
            async with self._session.post(
                url, data=orjson.dumps({"announcements": self.gossip_sample()})
            ) as answer:
                if answer.status != 200:
                    return False
                raw = bytearray()
                async for chunk in answer.content.iter_chunked(65_536):
                    raw += chunk
                    if len(raw) > _HTTP_ANSWER_MAX:
                        return False
                body = orjson.loads(raw)
            await self.merge(body.get("announcements") if isinstance(body, dict) else None)
        except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError):
            return False
        except InvalidInputError:
            self.counts["seed_answer_refused"] += 1
            return False
        self.exchanges += 1
        return True

    async def gossip_round(self) -> None:
        """One round: one known node over its link, plus a seed while the view is small."""
        own = self.identity.ed25519_public_key
        others = [a for k, a in self.nodes.items() if k != own]
        rounds = []
        if others:
            rounds.append(self.exchange_link(self._rng.choice(others)))
        if len(others) < 3 and self.seeds:
            seed = self._rng.choice(self.seeds)
            if seed != self.http:
                rounds.append(self.exchange_http(seed))
        if rounds:
            await asyncio.gather(*rounds)

    async def run(self) -> None:
        """Gossip forever (cancel to stop)."""
        while True:
            own = self.nodes.get(self.identity.ed25519_public_key)
            interval_ms = self.settings.announce_interval_s * 1000
            if own is not None and now_ms() - own.issued_ms > interval_ms:
                self.announce(self.http, self.link)
            self.expire()
            await self.gossip_round()
            await asyncio.sleep(self.settings.gossip_interval_s * self._rng.uniform(0.75, 1.25))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_HTTP_ANSWER_MAX = 4 * 1024 * 1024
"""The most of a seed's gossip answer read (256 announcements are ~100 KB)."""
