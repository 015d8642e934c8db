"""The network as a client knows it: the authorities of its network file, and the last consensus a
majority of them signed (``docs/messenger.md``, "Finding the network").

The client trusts the authority keys in its network file and nothing else. A seed, a node, or the
client's own saved copy only *carry* a consensus; :func:`check_consensus` takes one only if

- it is of the network file's network,
- a majority of the file's authorities signed this very document
  (:meth:`veil.protocol.consensus.SignedConsensus.from_json`), and
- it is in its validity window now (``valid_after_ms`` less a clock margin, to ``valid_until_ms``),

and otherwise says why in one line (``the consensus from 127.0.0.1:4000 is signed by 1 of the
network's 3 authorities; it needs 2``). :class:`ClientDirectory` holds the one in use: its nodes are
whom paths are built from, its placements what swarms are computed from, its Guard nodes whom the
client may enter through. It takes a newer one (:meth:`ClientDirectory.adopt`) only through the
same check, and hands each one taken to ``keep`` (the client's home saves it).

A seed is asked with a plain ``GET /consensus`` on its HTTP port (no redirects; the answer read up
to a bound, :mod:`veil.client.http`), one seed after another until one gives a consensus that
passes (:func:`fetch_consensus`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import aiohttp
import orjson

from veil.client.http import MAX_ANSWER_BYTES, AnswerTooLarge, read_bounded, url
from veil.client.terminal import printable
from veil.clock import now_ms
from veil.errors import InvalidInputError, VeilError
from veil.protocol.announcement import parse_address
from veil.protocol.consensus import Consensus, SignedConsensus
from veil.protocol.network_file import NetworkFile
from veil.protocol.peers import PeerInfo

__all__ = [
    "CLOCK_SKEW_MS",
    "ClientDirectory",
    "ConsensusRefused",
    "check_consensus",
    "fetch_consensus",
]

CLOCK_SKEW_MS = 60_000
"""How far before its ``valid_after_ms`` a consensus is taken (the client's clock may be behind)."""
SEED_TIMEOUT_S = 10.0


class ConsensusRefused(VeilError):
    """No consensus the client can trust: the message says why, in one line."""


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def check_consensus(
    document: object, network: NetworkFile, source: str, now: int, skew_ms: int = CLOCK_SKEW_MS
) -> SignedConsensus:
    """``document`` (a signed consensus as JSON) if ``network``'s authorities make it usable at
    ``now``; else :class:`ConsensusRefused` naming ``source`` and what is wrong."""
    prefix = f"the consensus from {source}"
    body = document.get("consensus") if isinstance(document, dict) else None
    name = body.get("network") if isinstance(body, dict) else None
    if isinstance(name, str) and name != network.name:
        shown = printable(name, one_line=True)
        raise ConsensusRefused(f"{prefix} is of network {shown!r}, not {network.name!r}")
    try:
        signed = SignedConsensus.from_json(document, network)
    except InvalidInputError as exc:
        reason = str(exc)
        if reason.startswith("the consensus is "):  # "… is signed by 1 of the network's 3 …"
            raise ConsensusRefused(
                f"{prefix} is {reason.removeprefix('the consensus is ')}"
            ) from None
        raise ConsensusRefused(f"{prefix} is not one: {reason}") from None
    consensus = signed.consensus
    if now >= consensus.valid_until_ms:
        raise ConsensusRefused(f"{prefix} expired at {_when(consensus.valid_until_ms)}")
    if now < consensus.valid_after_ms - skew_ms:
        raise ConsensusRefused(f"{prefix} is not valid before {_when(consensus.valid_after_ms)}")
    return signed


async def _from_seed(
    session: aiohttp.ClientSession, seed: str, network: NetworkFile, limit: int
) -> SignedConsensus:
    """The consensus ``seed`` serves, checked; :class:`ConsensusRefused` saying why not."""
    try:
        address = parse_address(seed)
    except InvalidInputError:
        raise ConsensusRefused(f"{seed!r} is not a seed address (HOST:PORT)") from None
    try:
        async with session.get(
            url(address, "/consensus"),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=SEED_TIMEOUT_S),
        ) as answer:
            if answer.status == 503:
                raise ConsensusRefused(f"{seed} holds no consensus")
            if answer.status != 200:
                raise ConsensusRefused(f"{seed} answered {answer.status} for the consensus")
            raw = await read_bounded(answer, limit, seed)
    except AnswerTooLarge as exc:
        raise ConsensusRefused(str(exc)) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else "unreachable"
        raise ConsensusRefused(f"cannot reach {seed} ({reason})") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConsensusRefused(f"the answer from {seed} is not JSON") from None
    return check_consensus(document, network, seed, now_ms())


async def fetch_consensus(
    session: aiohttp.ClientSession,
    seeds: Sequence[str],
    network: NetworkFile,
    *,
    newer_than: int = -1,
    limit: int = MAX_ANSWER_BYTES,
) -> SignedConsensus:
    """The first consensus of period above ``newer_than`` that a seed gives and that passes
    :func:`check_consensus`, seeds tried in order; :class:`ConsensusRefused` with every seed's
    reason otherwise."""
    if not seeds:
        raise ConsensusRefused("no seed to fetch the consensus from")
    reasons = []
    for seed in seeds:
        try:
            signed = await _from_seed(session, seed, network, limit)
        except ConsensusRefused as exc:
            reasons.append(str(exc))
            continue
        if signed.consensus.period > newer_than:
            return signed
        reasons.append(f"{seed} has no newer consensus")
    raise ConsensusRefused("; ".join(reasons))


class ClientDirectory:
    """The consensus a client uses, and the network file it was checked against.

    ``keep`` is called with each consensus taken after this one (to save it); ``seeds`` are where
    :meth:`fetch_from_seeds` asks when nodes cannot be reached through onion paths."""

    def __init__(
        self,
        network: NetworkFile,
        signed: SignedConsensus,
        *,
        seeds: Sequence[str] = (),
        keep: Callable[[SignedConsensus], None] | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        if signed.consensus.network != network.name:
            raise ConsensusRefused(f"the consensus given is not of network {network.name!r}")
        self.network = network
        self.seeds = tuple(seeds)
        self.keep = keep
        self.max_answer_bytes = max_answer_bytes
        self.signed = signed
        self.nodes: list[PeerInfo] = []
        self.placements: dict[bytes, bytes] = {}
        self.guard_ids: frozenset[bytes] = frozenset()
        self._by_id: dict[bytes, PeerInfo] = {}
        self._take(signed)

    @property
    def consensus(self) -> Consensus:
        return self.signed.consensus

    def _take(self, signed: SignedConsensus) -> None:
        self.signed = signed
        entries = signed.consensus.nodes
        self.nodes = [PeerInfo.of(e.announcement) for e in entries]
        self._by_id = {p.ed25519: p for p in self.nodes}
        self.placements = {e.node_id: e.placement for e in entries}
        self.guard_ids = frozenset(e.node_id for e in entries if e.guard)

    def peer(self, node_id: bytes) -> PeerInfo | None:
        """The node of the consensus with this id, if it lists one."""
        return self._by_id.get(node_id)

    def fresh(self, now: int) -> bool:
        """Whether no newer consensus is due yet (before ``fresh_until_ms``)."""
        return now < self.consensus.fresh_until_ms

    def usable(self, now: int) -> bool:
        return self.consensus.usable_at(now, CLOCK_SKEW_MS)

    def check(self, document: object, source: str) -> SignedConsensus:
        """:func:`check_consensus` against this directory's network file, now."""
        return check_consensus(document, self.network, source, now_ms())

    def adopt(self, signed: SignedConsensus) -> bool:
        """Take ``signed`` (from :meth:`check`) if it is newer than the one held and usable."""
        if signed.consensus.network != self.network.name:
            return False
        if signed.consensus.period <= self.consensus.period:
            return False
        if not signed.consensus.usable_at(now_ms(), CLOCK_SKEW_MS):
            return False
        self._take(signed)
        if self.keep is not None:
            self.keep(signed)
        return True

    async def fetch_from_seeds(self, session: aiohttp.ClientSession) -> bool:
        """Ask the seeds for a newer consensus; True if one was taken. Never raises for what a
        seed answers."""
        if not self.seeds:
            return False
        try:
            signed = await fetch_consensus(
                session,
                self.seeds,
                self.network,
                newer_than=self.consensus.period,
                limit=self.max_answer_bytes,
            )
        except ConsensusRefused:
            return False
        return self.adopt(signed)
