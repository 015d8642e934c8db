"""Helpers of the Veil load test (``loadtest/locustfile.py``), free of Locust so they stay plain.

- :func:`resolve_seeds`: which nodes to learn the network from (``VEIL_SEEDS``, ``--host`` or the
  local devnet's ``.devnet/devnet.json``).
- :class:`Directory`: the verified node announcements a simulated user knows, the swarm of an
  account computed from them (rendezvous hashing, as the nodes do), and onion paths.
- :func:`build_request` / :func:`open_reply`: one storage RPC request as a three-hop onion, and the
  destination's answer decrypted with the reply key (over :mod:`veil.protocol.onion_request`, as
  the client's).

The RPC parameters are built, and signed where needed, by :mod:`veil.protocol.storage_rpc`, as the
client builds them.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from veil.crypto import HopKey
from veil.errors import DecryptionError, InvalidInputError
from veil.protocol import onion_request
from veil.protocol.announcement import Announcement, parse_address
from veil.protocol.swarms import SwarmMap

__all__ = [
    "DEVNET_FILE",
    "RPC_PATH",
    "SWARM_SIZE",
    "BadReply",
    "Directory",
    "OnionRequest",
    "build_request",
    "error_code",
    "now_ms",
    "open_reply",
    "resolve_seeds",
    "swarm_size",
    "verify_announcements",
    "wait_range",
]

RPC_PATH = "/storage_rpc/v1"
DEVNET_FILE = Path(".devnet") / "devnet.json"
SWARM_SIZE = 5
"""Nodes per swarm: the nodes' default ``[network] swarm_size``."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- where the cluster is ------------------------------------------------------------------------


def _address(text: str) -> str:
    """``host:port`` from ``host:port`` or ``http://host:port/``; raise ValueError if malformed."""
    text = text.strip().removeprefix("http://").rstrip("/")
    try:
        parse_address(text)
    except InvalidInputError:
        raise ValueError(f"a seed is host:port, got {text!r}") from None
    return text


def resolve_seeds(
    host: str | None,
    env: Mapping[str, str] | None = None,
    devnet_file: Path = DEVNET_FILE,
) -> list[str]:
    """The seed nodes (``host:port``): ``VEIL_SEEDS``, else ``host`` (Locust's ``--host``), else the
    devnet described by ``devnet_file``; raise ValueError if none of them names a node."""
    env = os.environ if env is None else env
    listed = [s for s in env.get("VEIL_SEEDS", "").split(",") if s.strip()]
    if listed:
        return [_address(s) for s in listed]
    if host:
        return [_address(host)]
    if devnet_file.is_file():
        devnet = json.loads(devnet_file.read_text(encoding="utf-8"))
        seeds = devnet.get("seeds") or [n["http"] for n in devnet.get("nodes", [])]
        if seeds:
            return [_address(str(s)) for s in seeds]
    raise ValueError(
        "no Veil cluster to test: set VEIL_SEEDS=host:port,... or --host, "
        f"or start a devnet (`veil devnet up --detach`) so that {devnet_file} exists"
    )


def swarm_size(
    host: str | None, env: Mapping[str, str] | None = None, devnet_file: Path = DEVNET_FILE
) -> int:
    """The cluster's swarm size: ``VEIL_SWARM_SIZE``, else the devnet's (when the devnet is the
    cluster under test), else the nodes' default 5. A wrong guess costs "wrong swarm" retries."""
    env = os.environ if env is None else env
    if env.get("VEIL_SWARM_SIZE"):
        return int(env["VEIL_SWARM_SIZE"])
    if not env.get("VEIL_SEEDS", "").strip() and not host and devnet_file.is_file():
        size = json.loads(devnet_file.read_text(encoding="utf-8")).get("swarm_size")
        if isinstance(size, int) and size > 0:
            return size
    return SWARM_SIZE


def wait_range(env: Mapping[str, str] | None = None) -> tuple[float, float]:
    """Each user's pause between tasks, in seconds: ``VEIL_WAIT_S="min,max"`` (default 0.5,1.5)."""
    env = os.environ if env is None else env
    low, _, high = env.get("VEIL_WAIT_S", "0.5,1.5").partition(",")
    return float(low), float(high or low)


# --- nodes, swarms and paths ---------------------------------------------------------------------


def verify_announcements(entries: object) -> tuple[list[Announcement], int]:
    """(the announcements that verify, how many did not)."""
    if not isinstance(entries, list):
        return [], 1
    good: list[Announcement] = []
    bad = 0
    for entry in entries:
        try:
            good.append(Announcement.from_json(entry))
        except InvalidInputError:
            bad += 1
    return good, bad


class Directory:
    """The nodes one user knows, by Ed25519 id; swarms are computed from them as the nodes do.

    A node that answers "wrong swarm" names the account's swarm as it sees it: :meth:`learn_swarm`
    takes that list (verified) and uses it for the account until the node list is next replaced.
    """

    def __init__(self, announcements: Iterable[Announcement], swarm_size: int = SWARM_SIZE) -> None:
        self.swarm_size = swarm_size
        self.nodes: dict[bytes, Announcement] = {}
        self._learned: dict[bytes, tuple[bytes, ...]] = {}
        self._map = SwarmMap([], 1)
        self.replace(announcements)

    def replace(self, announcements: Iterable[Announcement]) -> None:
        """A fresh node list (newest announcement of each identity wins)."""
        self.nodes = {}
        self._learned.clear()
        self._merge(announcements)

    def _merge(self, announcements: Iterable[Announcement]) -> None:
        for a in announcements:
            known = self.nodes.get(a.ed25519)
            if known is None or known.issued_ms < a.issued_ms:
                self.nodes[a.ed25519] = a
        self._map = SwarmMap(list(self.nodes), self.swarm_size)

    def swarm(self, account: bytes) -> list[Announcement]:
        """The account's swarm, highest rendezvous weight first."""
        ids = self._learned.get(account) or self._map.swarm(account)
        return [self.nodes[i] for i in ids if i in self.nodes]

    def learn_swarm(self, account: bytes, entries: object) -> bool:
        """Use the swarm a node named in a "wrong swarm" answer; False if it names none."""
        swarm, _ = verify_announcements(entries)
        if not swarm:
            return False
        self._merge(swarm)
        self._learned[account] = tuple(a.ed25519 for a in swarm)
        return True

    def path(
        self, destination: Announcement, rng: random.Random, guards: Sequence[bytes] = ()
    ) -> tuple[Announcement, Announcement]:
        """(guard, relay): two distinct nodes, neither the destination. The guard is one of
        ``guards`` (the user's preferred entry nodes) when one of them is usable."""
        others = [a for a in self.nodes.values() if a.ed25519 != destination.ed25519]
        if len(others) < 2:
            raise ValueError("an onion path needs at least three known nodes")
        preferred = [a for a in others if a.ed25519 in guards]
        guard = rng.choice(preferred or others)
        relay = rng.choice([a for a in others if a.ed25519 != guard.ed25519])
        return guard, relay


# --- onion requests ------------------------------------------------------------------------------


class BadReply(Exception):
    """The guard's 200 answer did not decrypt to ``{"status", "body"}``."""


@dataclass(frozen=True, slots=True)
class OnionRequest:
    url: str
    """``http://GUARD/onion_req``: where the onion is posted."""
    onion: bytes
    reply_key: HopKey
    destination: Announcement


def build_request(
    guard: Announcement,
    relay: Announcement,
    destination: Announcement,
    method: str,
    params: Mapping[str, Any],
) -> OnionRequest:
    """``{"method", "params"}`` for ``destination``'s storage RPC, through guard → relay."""
    onion, reply_key = onion_request.build_request(
        [guard.x25519, relay.x25519, destination.x25519],
        orjson.dumps({"method": method, "params": params}),
    )
    return OnionRequest(f"http://{guard.http}/onion_req", onion, reply_key, destination)


def open_reply(reply_key: HopKey, body: bytes) -> tuple[int, Any]:
    """The destination's (status, RPC answer); raise :class:`BadReply`."""
    try:
        return onion_request.open_reply(reply_key, body, external=False)
    except DecryptionError:
        raise BadReply("the answer does not decrypt with the reply key") from None
    except InvalidInputError:
        raise BadReply('the decrypted answer is not {"status", "body"}') from None


def error_code(body: object) -> str:
    """The ``error.code`` of an RPC error answer, or ``""``."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code", ""))
    return ""
