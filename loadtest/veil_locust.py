"""Helpers of the Veil load test (``loadtest/locustfile.py``), free of Locust so they stay plain.

- :func:`load_network`: the network file a simulated user trusts (``VEIL_NETWORK``, else the local
  devnet's ``.devnet/network.json``): the network's directory authorities, as a client has it.
- :func:`resolve_seeds`: which nodes to fetch the consensus from (``VEIL_SEEDS``, ``--host``, or
  the ``seeds`` of the ``devnet.json`` beside the network file). Seeds are trusted with nothing:
  they only carry the consensus.
- :func:`verify_consensus`: a seed's ``GET /consensus`` answer, taken only if a majority of the
  network file's authorities signed it (``SignedConsensus.from_json``) and it is valid now.
- :class:`Directory`: the consensus a user holds: its nodes (whom paths are built from), its Guard
  nodes (whom the user enters through), and the swarm of an account computed from its nodes and
  placements, as the nodes compute it.
- :func:`build_create` / :func:`finish_circuit`: an onion v2 circuit guard → relay → destination
  (a create cell, and the circuit from the guard's answer); :func:`build_request` /
  :func:`open_reply`: one storage RPC request in a data cell on such a circuit, and the
  destination's answer (over :mod:`veil.protocol.cells`, as the client's). The user keeps one
  circuit per destination, as the client does.

The RPC parameters are built, and signed where needed, by :mod:`veil.protocol.storage_rpc`, as the
client builds them.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from veil import _core
from veil.errors import DecryptionError, InvalidInputError
from veil.protocol import cells
from veil.protocol.announcement import Announcement, parse_address
from veil.protocol.consensus import SignedConsensus
from veil.protocol.network_file import NetworkFile, load_network_file
from veil.protocol.swarms import SwarmMap

__all__ = [
    "CLOCK_SKEW_MS",
    "CONSENSUS_PATH",
    "DEVNET_DIR",
    "GUARDS",
    "NETWORK_FILE",
    "RPC_PATH",
    "SWARM_SIZE",
    "BadReply",
    "Directory",
    "OnionRequest",
    "OpenCircuit",
    "build_create",
    "build_request",
    "devnet_file",
    "error_code",
    "finish_circuit",
    "load_network",
    "network_path",
    "now_ms",
    "open_reply",
    "resolve_seeds",
    "swarm_size",
    "verify_consensus",
    "wait_range",
]

RPC_PATH = "/storage_rpc/v1"
CONSENSUS_PATH = "/consensus"
DEVNET_DIR = Path(".devnet")
NETWORK_FILE = DEVNET_DIR / "network.json"
DEVNET_STATE = "devnet.json"
SWARM_SIZE = 5
"""Nodes per swarm: the nodes' default ``[network] swarm_size``."""
GUARDS = 3
"""Entry nodes a user keeps, drawn from the consensus's Guard nodes (as the client's guard set)."""
CLOCK_SKEW_MS = 60_000
"""How far before its ``valid_after_ms`` a consensus is taken (as the client takes it)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- where the network is ------------------------------------------------------------------------


def network_path(env: Mapping[str, str] | None = None, default: Path = NETWORK_FILE) -> Path:
    """Where the network file is: ``VEIL_NETWORK``, else ``default`` (the devnet's)."""
    env = os.environ if env is None else env
    given = env.get("VEIL_NETWORK", "").strip()
    return Path(given) if given else default


def load_network(env: Mapping[str, str] | None = None, default: Path = NETWORK_FILE) -> NetworkFile:
    """The network file (:func:`network_path`), parsed; ValueError saying what to set if there is
    none or it cannot be read."""
    path = network_path(env, default)
    if not path.is_file():
        raise ValueError(
            f"no network file at {path}: set VEIL_NETWORK=FILE (the network file of the cluster "
            f"under test), or start a devnet (`veil devnet up --detach`) so that {default} exists"
        )
    try:
        return load_network_file(path)
    except InvalidInputError as exc:
        raise ValueError(f"the network file {exc}") from None


def devnet_file(env: Mapping[str, str] | None = None) -> Path:
    """The ``devnet.json`` beside the network file (``veil devnet up --dir DIR`` writes both)."""
    return network_path(env).parent / DEVNET_STATE


def _address(text: str) -> str:
    """``host:port`` from ``host:port`` or ``http://host:port/``; raise ValueError if malformed."""
    text = text.strip().removeprefix("http://").rstrip("/")
    try:
        parse_address(text)
    except InvalidInputError:
        raise ValueError(f"a seed is host:port, got {text!r}") from None
    return text


def _devnet(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def resolve_seeds(
    host: str | None,
    env: Mapping[str, str] | None = None,
    devnet: Path | None = None,
) -> list[str]:
    """The seed nodes (``host:port``): ``VEIL_SEEDS``, else ``host`` (Locust's ``--host``), else the
    ``seeds`` of ``devnet`` (by default the ``devnet.json`` beside the network file); raise
    ValueError if none of them names a node."""
    env = os.environ if env is None else env
    listed = [s for s in env.get("VEIL_SEEDS", "").split(",") if s.strip()]
    if listed:
        return [_address(s) for s in listed]
    if host:
        return [_address(host)]
    devnet = devnet_file(env) if devnet is None else devnet
    state = _devnet(devnet)
    seeds, nodes = state.get("seeds"), state.get("nodes")
    if not isinstance(seeds, list) or not seeds:
        listed_nodes = nodes if isinstance(nodes, list) else []
        seeds = [n.get("http") for n in listed_nodes if isinstance(n, dict) and n.get("http")]
    if seeds:
        return [_address(str(s)) for s in seeds]
    raise ValueError(
        "no seed to fetch the consensus from: set VEIL_SEEDS=host:port,... or --host, "
        f"or start a devnet (`veil devnet up --detach`) so that {devnet} exists"
    )


def swarm_size(env: Mapping[str, str] | None = None, devnet: Path | None = None) -> int:
    """The network's swarm size (the consensus does not carry it): ``VEIL_SWARM_SIZE``, else the
    devnet's (when the network file is a devnet's), else the nodes' default 5."""
    env = os.environ if env is None else env
    if env.get("VEIL_SWARM_SIZE"):
        return int(env["VEIL_SWARM_SIZE"])
    size = _devnet(devnet_file(env) if devnet is None else devnet).get("swarm_size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    return SWARM_SIZE


def wait_range(env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """Each user's pause between tasks, in seconds: ``VEIL_WAIT_S="min,max"`` (default 0.5,1.5)."""
    env = os.environ if env is None else env
    low, _, high = env.get("VEIL_WAIT_S", "0.5,1.5").partition(",")
    return float(low), float(high or low)


# --- the consensus, swarms and paths -------------------------------------------------------------


def verify_consensus(document: object, network: NetworkFile, now: int) -> SignedConsensus:
    """``document`` (a ``GET /consensus`` answer) if a majority of ``network``'s authorities signed
    it and it is in its validity window at ``now``; else ValueError saying why."""
    try:
        signed = SignedConsensus.from_json(document, network)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None
    consensus = signed.consensus
    if not consensus.usable_at(now, CLOCK_SKEW_MS):
        raise ValueError(
            f"the consensus of period {consensus.period} is not valid now "
            f"(valid from {consensus.valid_after_ms} to {consensus.valid_until_ms} ms, now {now})"
        )
    return signed


class Directory:
    """The consensus one user holds, by node id.

    Swarms are computed from its nodes *with their placements*, as the nodes compute them
    (``SwarmMap(ids, swarm_size, placements)``). Only a consensus that :func:`verify_consensus`
    took is ever held: a node's "wrong swarm" answer changes nothing here (what it names is never
    used); it is only a reason to fetch the consensus again.
    """

    def __init__(self, signed: SignedConsensus, swarm_size: int = SWARM_SIZE) -> None:
        self.swarm_size = swarm_size
        self.signed = signed
        self.nodes: dict[bytes, Announcement] = {}
        self.guard_ids: frozenset[bytes] = frozenset()
        self._map = SwarmMap([], 1)
        self._take(signed)

    @property
    def period(self) -> int:
        return self.signed.consensus.period

    def _take(self, signed: SignedConsensus) -> None:
        entries = signed.consensus.nodes
        self.signed = signed
        self.nodes = {e.node_id: e.announcement for e in entries}
        self.guard_ids = frozenset(e.node_id for e in entries if e.guard)
        placements = {e.node_id: e.placement for e in entries}
        self._map = SwarmMap(list(self.nodes), self.swarm_size, placements)

    def adopt(self, signed: SignedConsensus) -> bool:
        """Take ``signed`` (from :func:`verify_consensus`) if it is newer than the one held."""
        if signed.consensus.period <= self.period:
            return False
        self._take(signed)
        return True

    def swarm(self, account: bytes) -> list[Announcement]:
        """The account's swarm, highest rendezvous weight first."""
        return [self.nodes[i] for i in self._map.swarm(account) if i in self.nodes]

    def pick_guards(
        self, rng: random.Random, held: Sequence[bytes] = (), count: int = GUARDS
    ) -> list[bytes]:
        """The user's guards: those of ``held`` still Guard nodes of the consensus, filled up to
        ``count`` with Guard nodes drawn at random (a guard is never replaced for failing)."""
        kept = [g for g in held if g in self.guard_ids]
        others = sorted(self.guard_ids - set(kept))
        return kept + rng.sample(others, min(len(others), max(0, count - len(kept))))

    def path(
        self, destination: Announcement, rng: random.Random, guards: Sequence[bytes] = ()
    ) -> tuple[Announcement, Announcement]:
        """(guard, relay): two distinct nodes, neither the destination. The guard is one of
        ``guards`` (the user's) if one of them is not the destination, else another Guard node."""
        usable = [g for g in guards if g in self.nodes and g != destination.ed25519]
        usable = usable or sorted(g for g in self.guard_ids if g != destination.ed25519)
        if not usable:
            raise ValueError("no Guard node other than the destination to enter through")
        guard = self.nodes[rng.choice(usable)]
        relays = [
            a for a in self.nodes.values() if a.ed25519 not in (guard.ed25519, destination.ed25519)
        ]
        if not relays:
            raise ValueError("an onion path needs at least three nodes in the consensus")
        return guard, rng.choice(relays)


# --- onion requests ------------------------------------------------------------------------------


class BadReply(Exception):
    """The guard's 200 answer did not decrypt to ``{"status", "body"}`` (or to a circuit)."""


@dataclass(frozen=True, slots=True)
class OnionRequest:
    url: str
    """``http://GUARD/onion2``: where the cell is posted."""
    onion: bytes
    reply: _core.CellReply
    destination: Announcement


@dataclass(frozen=True, slots=True)
class OpenCircuit:
    """A circuit a user holds: its guard and relay, and its keys."""

    guard: Announcement
    relay: Announcement
    keys: cells.Circuit


def build_create(
    guard: Announcement, relay: Announcement, destination: Announcement
) -> tuple[str, bytes, _core.PendingCircuit]:
    """(URL, body, what finishes it) of a create for a circuit guard → relay → ``destination``."""
    body, pending = cells.build_create([guard.x25519, relay.x25519, destination.x25519])
    return f"http://{guard.http}/onion2", body, pending


def finish_circuit(
    guard: Announcement, relay: Announcement, pending: _core.PendingCircuit, answer: bytes
) -> OpenCircuit:
    """The circuit from the guard's 200 answer to a create; raise :class:`BadReply`."""
    try:
        return OpenCircuit(guard, relay, cells.Circuit.finish(pending, answer))
    except InvalidInputError:  # DecryptionError included
        raise BadReply("the answer to a create does not open") from None


def build_request(
    circuit: OpenCircuit, destination: Announcement, method: str, params: Mapping[str, Any]
) -> OnionRequest:
    """``{"method", "params"}`` for ``destination``'s storage RPC, on ``circuit``."""
    body, reply = circuit.keys.seal(orjson.dumps({"method": method, "params": params}))
    return OnionRequest(f"http://{circuit.guard.http}/onion2", body, reply, destination)


def open_reply(reply: _core.CellReply, body: bytes) -> tuple[int, Any]:
    """The destination's (status, RPC answer); raise :class:`BadReply`."""
    try:
        return cells.open_answer(reply, body, external=False)
    except DecryptionError:
        raise BadReply("the answer does not decrypt with the reply keys") from None
    except InvalidInputError:
        raise BadReply('the decrypted answer is not {"status", "body"}') from None


def error_code(body: object) -> str:
    """The text of an RPC error answer (its first 60 characters), or ``""``."""
    return body[:60] if isinstance(body, str) else ""
