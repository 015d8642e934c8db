"""The network as its directory authorities define it: the latest consensus a majority signed.

A node of a network (``[node] network_file`` in node.toml) registers with every authority of the
network file — it posts its signed announcement to ``POST /authority/v1/register`` at start, when
its announcement is re-signed, and once a period while it is not in the consensus — and fetches the
consensus from them (``GET /authority/v1/consensus``, any authority, a random one first) each
period. It adopts a consensus only when a majority of the network file's authorities signed it, it
is newer than the one held and it is in its validity window; nothing a peer or a client says changes
the view. The nodes of the consensus, and the authorities, are whom this node opens its link port
to; their placements are what swarms are computed from (``veil.protocol.swarms``). With every
authority unreachable, the node runs on the consensus it holds until ``valid_until_ms``; past that
it has none (:attr:`Directory.current` is None and stores are refused).

Without a network file the node is on its own: its view is itself.
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

from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.protocol.announcement import Announcement, sign_announcement
from veil.protocol.consensus import SignedConsensus
from veil.protocol.network_file import NetworkFile
from veil.protocol.peers import PeerInfo

__all__ = ["Directory"]

log = logging.getLogger("veil.node.directory")

_ANSWER_MAX = 64 * 1024 * 1024
"""The most of an authority's answer read (a consensus of 100,000 nodes is ~70 MB)."""


class Directory:
    """The consensus this node holds, and its registration with the authorities."""

    def __init__(
        self,
        identity: Identity,
        *,
        network: NetworkFile | None,
        version: str,
        settings: NetworkSettings,
        clock_skew_ms: int,
    ) -> None:
        self.identity = identity
        self.network = network
        self.version = version
        self.settings = settings
        self.clock_skew_ms = clock_skew_ms
        self.own_id = identity.ed25519_public_key
        self.own: Announcement | None = None
        self.consensus: SignedConsensus | None = None
        self.nodes: dict[bytes, Announcement] = {}
        """The nodes of the current consensus (or this node alone), by node id."""
        self.placements: dict[bytes, bytes] = {}
        self.guards: frozenset[bytes] = frozenset()
        self.by_x25519: dict[bytes, bytes] = {}
        """Whom a link handshake may name: the consensus's nodes and the authorities, by X25519."""
        self.on_change: list[Callable[[], None]] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.SystemRandom()
        self._registered_ms = 0
        self._authorities = (
            {a.x25519: a.ed25519 for a in network.authorities} if network is not None else {}
        )
        self.by_x25519 = dict(self._authorities)  # from the start: they check this node's key

    # --- the view ---------------------------------------------------------------------------

    def announce(self, http: str, link: str) -> None:
        """(Re)sign this node's announcement with its addresses."""
        self.own = sign_announcement(
            self.identity, http=http, link=link, version=self.version, issued_ms=now_ms()
        )
        self._registered_ms = 0  # register the new one
        if self.network is None:
            self.nodes = {self.own_id: self.own}
            self._changed()

    @property
    def current(self) -> SignedConsensus | None:
        """The consensus held, if it is still valid."""
        held = self.consensus
        if held is None or not held.consensus.usable_at(now_ms(), self.clock_skew_ms):
            return None
        return held

    def adopt(self, signed: SignedConsensus) -> bool:
        """Take ``signed`` (already verified) if it is newer and in its validity window."""
        consensus = signed.consensus
        held = self.consensus
        if held is not None and consensus.period <= held.consensus.period:
            return False
        if not consensus.usable_at(now_ms(), self.clock_skew_ms):
            self.counts["refused_stale"] += 1
            return False
        self.consensus = signed
        nodes = {e.node_id: e.announcement for e in consensus.nodes}
        placements = {e.node_id: e.placement for e in consensus.nodes}
        guards = frozenset(e.node_id for e in consensus.nodes if e.guard)
        same = (nodes, placements, guards) == (self.nodes, self.placements, self.guards)
        self.nodes, self.placements, self.guards = nodes, placements, guards
        self.counts["adopted"] += 1
        if not same:  # a new period with the same nodes changes nothing a node derives from it
            self._changed()
        return True

    def announcements(self) -> list[dict[str, Any]]:
        """The nodes' announcements, in node-id order (``get_nodes``)."""
        return [self.nodes[key].to_json() for key in sorted(self.nodes)]

    def peers(self) -> list[PeerInfo]:
        return [PeerInfo.of(a) for _, a in sorted(self.nodes.items())]

    def node_ids(self) -> list[bytes]:
        return sorted(self.nodes)

    def consensus_json(self) -> dict[str, Any] | None:
        held = self.current
        return held.to_json() if held is not None else None

    def _changed(self) -> None:
        self.by_x25519 = {a.x25519: k for k, a in self.nodes.items()}
        self.by_x25519.update(self._authorities)
        for callback in self.on_change:
            callback()

    # --- talking to the authorities -----------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.authority_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def fetch(self) -> bool:
        """Ask the authorities, a random one first, for a newer consensus; True if one adopted."""
        if self.network is None:
            return False
        authorities = list(self.network.authorities)
        self._rng.shuffle(authorities)
        for authority in authorities:
            host, port = authority.http
            document = await self._get_json(f"http://{host}:{port}/authority/v1/consensus")
            if document is None:
                continue
            try:
                signed = SignedConsensus.from_json(document, self.network)
            except InvalidInputError:
                self.counts["refused_consensus"] += 1
                continue
            if self.adopt(signed):
                return True
            held = self.current
            if held is not None and signed.consensus.period == held.consensus.period:
                return False  # this authority has the same one: the others will too
        return False

    async def register(self) -> int:
        """Post this node's announcement to every authority; how many accepted it."""
        if self.network is None or self.own is None:
            return 0
        body = orjson.dumps(self.own.to_json())
        answers = await asyncio.gather(
            *(self._post(a.http, "/authority/v1/register", body) for a in self.network.authorities)
        )
        accepted = sum(answers)
        self.counts["registrations_accepted"] += accepted
        self._registered_ms = now_ms()  # tried: again in a period if it is not admitted by then
        return accepted

    async def _get_json(self, url: str) -> Any:
        try:
            async with self._http().get(url, allow_redirects=False) as answer:
                if answer.status != 200:
                    return None
                raw = bytearray()
                async for chunk in answer.content.iter_chunked(65_536):
                    raw += chunk
                    if len(raw) > _ANSWER_MAX:
                        return None
                return orjson.loads(raw)
        except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError):
            self.counts["authority_unreachable"] += 1
            return None

    async def _post(self, address: tuple[str, int], path: str, body: bytes) -> bool:
        url = f"http://{address[0]}:{address[1]}{path}"
        try:
            async with self._http().post(url, data=body, allow_redirects=False) as answer:
                await answer.read()
                return answer.status in (200, 202)
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.counts["authority_unreachable"] += 1
            return False

    async def run(self) -> None:
        """Register and fetch the consensus, forever (cancel to stop)."""
        if self.network is None:
            return
        period_s = self.network.period_s
        while True:
            own = self.own
            interval_ms = self.settings.announce_interval_s * 1000
            if own is not None and now_ms() - own.issued_ms > interval_ms:
                self.announce(own.http, own.link)
            admitted = self.current is not None and self.own_id in self.nodes
            if not self._registered_ms or (
                not admitted and now_ms() - self._registered_ms > period_s * 1000
            ):
                await self.register()  # a new announcement, or not in the consensus a period on
            held = self.current
            if held is None or held.consensus.period < self.network.period_at(now_ms()):
                await self.fetch()
            await asyncio.sleep(min(period_s / 4, 30.0) * self._rng.uniform(0.75, 1.25))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
