"""Directory votes and the consensus: who the nodes of a network are, signed by its authorities
(``docs/network.md``, "Admission and the consensus"; the authorities are in the network file).

Time is cut into periods of ``period_s`` counted from the Unix epoch. During period ``n - 1`` each
authority signs a **vote** for period ``n``: the nodes it admits (their signed announcements, the
period each was first admitted, whether it has earned the Guard role), a **reveal** — the random
value it committed to in its previous vote — and a **commit** (BLAKE2b-256 of the random value it
will reveal next). From the votes of period ``n``, every authority computes the same **consensus**
(:func:`assemble`, a pure function) and signs its digest; a consensus counts once a majority of the
network file's authorities signed it.

```
vote        = {"v": 1, "network", "period", "authority": hex, "nodes": [vote entry, …],
               "commit": hex (32), "reveal": hex (32)}                 + Ed25519 over digest
vote entry  = {"announcement": {…signed announcement…}, "admitted": period, "guard": bool}
consensus   = {"v": 1, "network", "period", "valid_after_ms", "fresh_until_ms", "valid_until_ms",
               "srv": hex (32), "commits": {authority hex: commit hex},
               "nodes": [{"ed25519", "x25519", "http", "link", "version", "issued_ms",
                          "signature", "admitted", "placement": hex (32), "guard"}, …]}
digest      = BLAKE2b-256(context ‖ JSON with sorted keys, no spaces)   context "veil-vote-v1" or
                                                                       "veil-consensus-v1"
srv(n)      = BLAKE2b-256("veil-srv-v1" ‖ n (8) ‖ srv(n - 1) ‖ reveals, by authority key)
              only the reveals that match their authority's commit in consensus n - 1
placement   = BLAKE2b-256("veil-placement-v1" ‖ node id ‖ srv(the period it was first admitted))
```

A node enters the consensus when a majority of all the network's authorities vote for it; its
announcement is the newest any of them carries, ``admitted`` the earliest period by which a majority
had admitted it, Guard when a majority says so. Its **placement** — what swarms are computed from,
``veil.protocol.swarms`` — depends on a shared random value revealed after the node registered, so
a key cannot be chosen (ground) for a place in a given account's swarm. A consensus of period
``n`` is valid from the start of ``n`` to the start of ``n + valid_periods``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from veil import _core
from veil.errors import InvalidInputError
from veil.protocol.announcement import Announcement
from veil.protocol.network_file import NetworkFile

__all__ = [
    "Consensus",
    "NodeEntry",
    "SignedConsensus",
    "SignedVote",
    "Vote",
    "VoteEntry",
    "assemble",
    "commit_of",
    "placement_of",
]

VERSION = 1
_VOTE_CONTEXT = b"veil-vote-v1"
_CONSENSUS_CONTEXT = b"veil-consensus-v1"
_SRV_CONTEXT = b"veil-srv-v1"
_PLACEMENT_CONTEXT = b"veil-placement-v1"
_PERIOD = struct.Struct(">Q")
MAX_NODES = 100_000


def _digest(context: bytes, body: dict[str, Any]) -> bytes:
    return _core.blake2b(context + orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def commit_of(reveal: bytes) -> bytes:
    """The commit of a random value an authority will reveal: BLAKE2b-256 of it."""
    return _core.blake2b(reveal)


def placement_of(node_id: bytes, srv: bytes) -> bytes:
    """Where a node sits for swarm placement, from the shared random value of its admission."""
    return _core.blake2b(_PLACEMENT_CONTEXT + node_id + srv)


def _srv(period: int, previous_srv: bytes, reveals: Mapping[bytes, bytes]) -> bytes:
    parts = [_SRV_CONTEXT, _PERIOD.pack(period), previous_srv]
    parts += [reveals[key] for key in sorted(reveals)]
    return _core.blake2b(b"".join(parts))


def _hex(value: object, length: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise InvalidInputError(f"{what} is {length} bytes of hex")
    return raw


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise InvalidInputError(f"{what} is a non-negative integer")
    return value


def _signature_b64(signature: bytes) -> str:
    return base64.b64encode(signature).decode("ascii")


def _signature_from(value: object) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise InvalidInputError("a signature is 64 bytes of base64")
    return raw


# --- votes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteEntry:
    announcement: Announcement
    admitted: int
    guard: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "announcement": self.announcement.to_json(),
            "admitted": self.admitted,
            "guard": self.guard,
        }


@dataclass(frozen=True, slots=True)
class Vote:
    network: str
    period: int
    authority: bytes
    nodes: tuple[VoteEntry, ...]
    commit: bytes
    reveal: bytes

    def body(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "network": self.network,
            "period": self.period,
            "authority": self.authority.hex(),
            "nodes": [entry.to_json() for entry in self.nodes],
            "commit": self.commit.hex(),
            "reveal": self.reveal.hex(),
        }

    def digest(self) -> bytes:
        return _digest(_VOTE_CONTEXT, self.body())


@dataclass(frozen=True, slots=True)
class SignedVote:
    vote: Vote
    signature: bytes

    @classmethod
    def sign(cls, vote: Vote, sign: Any) -> SignedVote:
        """``sign`` is the authority's signing function (``Identity.sign``)."""
        return cls(vote, sign(vote.digest()))

    def to_json(self) -> dict[str, Any]:
        return {"vote": self.vote.body(), "signature": _signature_b64(self.signature)}

    @classmethod
    def from_json(cls, document: object, network: NetworkFile) -> SignedVote:
        """Parse a vote, check it is one of ``network``'s authorities' and its signature; each
        announcement in it is parsed but not verified (the authorities verified them)."""
        if not isinstance(document, dict) or not isinstance(document.get("vote"), dict):
            raise InvalidInputError("a signed vote is {vote, signature}")
        body = document["vote"]
        if body.get("v") != VERSION or body.get("network") != network.name:
            raise InvalidInputError("a vote of another version or network")
        authority = _hex(body.get("authority"), 32, "a vote's authority")
        if network.authority(authority) is None:
            raise InvalidInputError(
                "a vote from a key that is not one of the network's authorities"
            )
        raw_nodes = body.get("nodes")
        if not isinstance(raw_nodes, list) or len(raw_nodes) > MAX_NODES:
            raise InvalidInputError("a vote lists its nodes")
        entries = []
        for raw in raw_nodes:
            if not isinstance(raw, dict) or not isinstance(raw.get("guard"), bool):
                raise InvalidInputError("a vote entry is {announcement, admitted, guard}")
            announcement, _ = Announcement.parse(raw.get("announcement"))
            entries.append(
                VoteEntry(announcement, _int(raw.get("admitted"), "admitted"), raw["guard"])
            )
        vote = Vote(
            network=network.name,
            period=_int(body.get("period"), "a vote's period"),
            authority=authority,
            nodes=tuple(entries),
            commit=_hex(body.get("commit"), 32, "a commit"),
            reveal=_hex(body.get("reveal"), 32, "a reveal"),
        )
        signature = _signature_from(document.get("signature"))
        if not _core.ed25519_verify(authority, vote.digest(), signature):
            raise InvalidInputError("the vote's signature does not verify")
        return cls(vote, signature)


# --- the consensus -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeEntry:
    announcement: Announcement
    admitted: int
    placement: bytes
    guard: bool

    @property
    def node_id(self) -> bytes:
        return self.announcement.ed25519

    def to_json(self) -> dict[str, Any]:
        return {
            **self.announcement.to_json(),
            "admitted": self.admitted,
            "placement": self.placement.hex(),
            "guard": self.guard,
        }

    @classmethod
    def from_json(cls, entry: object) -> NodeEntry:
        if not isinstance(entry, dict) or not isinstance(entry.get("guard"), bool):
            raise InvalidInputError("a consensus entry is an announcement with its roles")
        fields = tuple(entry.get(k) for k in _ENTRY_FIELDS)
        if all(type(value) in _PLAIN for value in fields):
            # Each period's consensus repeats most entries of the last: parsed once (a pure
            # function of these fields; what fails to parse is not cached).
            return _parsed_entry(fields)
        return _parse_entry(fields)


_ENTRY_FIELDS = (
    "ed25519",
    "x25519",
    "http",
    "link",
    "version",
    "issued_ms",
    "signature",
    "admitted",
    "placement",
    "guard",
)
_PLAIN = (str, int, bool, type(None))


def _parse_entry(fields: tuple[Any, ...]) -> NodeEntry:
    """An entry from its :data:`_ENTRY_FIELDS`: the announcement's seven, then its roles."""
    announcement, _ = Announcement.parse(dict(zip(_ENTRY_FIELDS[:7], fields[:7], strict=True)))
    admitted, placement, guard = fields[7:]
    return NodeEntry(
        announcement, _int(admitted, "admitted"), _hex(placement, 32, "a placement"), guard
    )


_parsed_entry = functools.lru_cache(maxsize=4096)(_parse_entry)


@dataclass(frozen=True, slots=True)
class Consensus:
    network: str
    period: int
    valid_after_ms: int
    fresh_until_ms: int
    valid_until_ms: int
    srv: bytes
    commits: Mapping[bytes, bytes]
    nodes: tuple[NodeEntry, ...]

    def body(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "network": self.network,
            "period": self.period,
            "valid_after_ms": self.valid_after_ms,
            "fresh_until_ms": self.fresh_until_ms,
            "valid_until_ms": self.valid_until_ms,
            "srv": self.srv.hex(),
            "commits": {k.hex(): v.hex() for k, v in sorted(self.commits.items())},
            "nodes": [entry.to_json() for entry in self.nodes],
        }

    def digest(self) -> bytes:
        return _digest(_CONSENSUS_CONTEXT, self.body())

    def usable_at(self, now_ms: int, skew_ms: int = 60_000) -> bool:
        """Whether the consensus is in its validity window at ``now_ms`` (with a clock margin at
        its start)."""
        return self.valid_after_ms - skew_ms <= now_ms < self.valid_until_ms

    def entry(self, node_id: bytes) -> NodeEntry | None:
        return next((e for e in self.nodes if e.node_id == node_id), None)

    @classmethod
    def from_body(cls, body: object) -> Consensus:
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise InvalidInputError(f"a consensus is a JSON object of version {VERSION}")
        network = body.get("network")
        if not isinstance(network, str):
            raise InvalidInputError("a consensus names its network")
        raw_commits, raw_nodes = body.get("commits"), body.get("nodes")
        if not isinstance(raw_commits, dict) or not isinstance(raw_nodes, list):
            raise InvalidInputError("a consensus has commits and nodes")
        if len(raw_nodes) > MAX_NODES or len(raw_commits) > 64:
            raise InvalidInputError("a consensus is larger than any network")
        nodes = tuple(NodeEntry.from_json(entry) for entry in raw_nodes)
        if [n.node_id for n in nodes] != sorted({n.node_id for n in nodes}):
            raise InvalidInputError("a consensus lists each node once, in order")
        return cls(
            network=network,
            period=_int(body.get("period"), "period"),
            valid_after_ms=_int(body.get("valid_after_ms"), "valid_after_ms"),
            fresh_until_ms=_int(body.get("fresh_until_ms"), "fresh_until_ms"),
            valid_until_ms=_int(body.get("valid_until_ms"), "valid_until_ms"),
            srv=_hex(body.get("srv"), 32, "srv"),
            commits={
                _hex(k, 32, "a commit's authority"): _hex(v, 32, "a commit")
                for k, v in raw_commits.items()
            },
            nodes=nodes,
        )


@dataclass(frozen=True, slots=True)
class SignedConsensus:
    consensus: Consensus
    signatures: Mapping[bytes, bytes]
    """Authority Ed25519 key → signature of the consensus digest (only valid ones are kept)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "consensus": self.consensus.body(),
            "signatures": {k.hex(): _signature_b64(v) for k, v in sorted(self.signatures.items())},
        }

    @classmethod
    def from_json(cls, document: object, network: NetworkFile) -> SignedConsensus:
        """Parse a consensus and check its signatures against ``network``'s authorities; raise
        :class:`InvalidInputError` unless a majority of them signed this very document."""
        if not isinstance(document, dict):
            raise InvalidInputError("a signed consensus is {consensus, signatures}")
        consensus = Consensus.from_body(document.get("consensus"))
        if consensus.network != network.name:
            raise InvalidInputError(
                f"a consensus of network {consensus.network!r}, not {network.name!r}"
            )
        raw = document.get("signatures")
        if not isinstance(raw, dict) or len(raw) > 64:
            raise InvalidInputError("a consensus carries its signatures by authority")
        digest = consensus.digest()
        valid: dict[bytes, bytes] = {}
        for key_hex, signature_b64 in raw.items():
            try:
                key = _hex(key_hex, 32, "an authority key")
                signature = _signature_from(signature_b64)
            except InvalidInputError:
                continue
            if network.authority(key) is not None and _core.ed25519_verify(key, digest, signature):
                valid[key] = signature
        if len(valid) < network.majority:
            raise InvalidInputError(
                f"the consensus is signed by {len(valid)} of the network's "
                f"{len(network.authorities)} authorities; it needs {network.majority}"
            )
        return cls(consensus, valid)


def assemble(
    votes: Iterable[Vote],
    network: NetworkFile,
    period: int,
    previous: Consensus | None,
    srv_history: Mapping[int, bytes],
) -> Consensus:
    """The consensus of ``period`` from that period's votes: the same bytes for everyone who has
    the same votes, previous consensus and history of shared random values (see the module)."""
    by_authority = {v.authority: v for v in votes if v.period == period}
    majority = network.majority
    prior = previous if previous is not None and previous.period == period - 1 else None
    previous_srv = prior.srv if prior is not None else bytes(32)
    if prior is not None:
        reveals = {
            key: vote.reveal
            for key, vote in by_authority.items()
            if prior.commits.get(key) == commit_of(vote.reveal)
        }
    else:  # no consensus before this one to hold commitments: take every reveal
        reveals = {key: vote.reveal for key, vote in by_authority.items()}
    srv = _srv(period, previous_srv, reveals)
    history = {**srv_history, period: srv}
    listed: dict[bytes, list[VoteEntry]] = {}
    for vote in by_authority.values():
        for entry in vote.nodes:
            listed.setdefault(entry.announcement.ed25519, []).append(entry)
    nodes = []
    for node_id in sorted(listed):
        entries = listed[node_id]
        if len(entries) < majority:
            continue
        newest = max(entries, key=lambda e: (e.announcement.issued_ms, e.announcement.signature))
        admitted = min(sorted(e.admitted for e in entries)[majority - 1], period)
        if admitted not in history:  # its admission's random value is unknown: admitted now
            admitted = period
        guard = sum(e.guard for e in entries) >= majority
        placement = placement_of(node_id, history[admitted])
        nodes.append(NodeEntry(newest.announcement, admitted, placement, guard))
    start = network.period_start_ms(period)
    return Consensus(
        network=network.name,
        period=period,
        valid_after_ms=start,
        fresh_until_ms=network.period_start_ms(period + 1),
        valid_until_ms=network.period_start_ms(period + network.valid_periods),
        srv=srv,
        commits={key: vote.commit for key, vote in sorted(by_authority.items())},
        nodes=tuple(nodes),
    )
