"""Which nodes hold an account's messages: rendezvous (highest-random-weight) hashing.

The swarm of an account is the ``size`` nodes with the highest ``BLAKE2b-64(key ‖ placement)``,
among the nodes of the view (all of them if there are fewer), where ``key`` is the account's 32-byte
key without its prefix — as Session places accounts, so that ``05…`` and ``03…`` of one key share a
swarm (a subaccount with the any-prefix flag reaches every prefix of its account there); a node's
placement is the consensus's (see :class:`SwarmMap`). It is a pure function of the view, so
two nodes with the same view agree; and when one node joins or leaves, only the accounts whose top
``size`` it enters or leaves change — each losing or gaining one member — so about ``size / N`` of
all stored messages move, the least any placement can move (``tests/test_swarms.py`` measures it).
Nodes and clients compute it alike: a node to know which accounts it holds, a client to know which
nodes to ask.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["SwarmMap"]


class SwarmMap:
    """The swarm mapping for one view: a set of node ids (the nodes' Ed25519 keys), each with its
    placement — in a network with directory authorities, the value the consensus gives it
    (``veil.protocol.consensus.placement_of``: its key and a shared random value revealed after it
    registered, so that no one can choose a key for a place); by default its id."""

    def __init__(
        self,
        node_ids: Sequence[bytes],
        size: int,
        placements: Mapping[bytes, bytes] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a swarm has at least one member")
        self.node_ids = tuple(sorted(set(node_ids)))
        self.size = size
        placements = placements or {}
        self.placements = {node: placements.get(node, node) for node in self.node_ids}
        self._swarm = functools.lru_cache(maxsize=65_536)(self._compute)

    def swarm(self, account: bytes) -> tuple[bytes, ...]:
        """The account's swarm, highest weight first."""
        return self._swarm(account)

    def forget(self) -> None:
        """Empty the cache of computed swarms (a mapping kept only for the odd hand-over
        question should not hold one of up to 65,536 entries)."""
        self._swarm.cache_clear()

    def holds(self, node_id: bytes, account: bytes) -> bool:
        """Whether ``node_id`` is a member of the account's swarm."""
        return node_id in self.swarm(account)

    def _compute(self, account: bytes) -> tuple[bytes, ...]:
        placements = self.placements

        key = account[-32:]

        def weight(node_id: bytes) -> tuple[bytes, bytes]:
            return hashlib.blake2b(key + placements[node_id], digest_size=8).digest(), node_id

        ranked = sorted(self.node_ids, key=weight, reverse=True)
        return tuple(ranked[: self.size])
