"""Which nodes hold an account's messages: rendezvous (highest-random-weight) hashing.

The swarm of an account is the ``size`` nodes with the highest ``BLAKE2b-64(account ‖ node id)``,
among the nodes of the view (all of them if there are fewer). It is a pure function of the view, so
two nodes with the same view agree; and when one node joins or leaves, only the accounts whose top
``size`` it enters or leaves change — each losing or gaining one member — so about ``size / N`` of
all stored messages move, the least any placement can move (``tests/test_swarms.py`` measures it).
Nodes and clients compute it alike: a node to know which accounts it holds, a client to know which
nodes to ask.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

__all__ = ["SwarmMap"]


class SwarmMap:
    """The swarm mapping for one view (a set of node ids, the nodes' Ed25519 keys)."""

    def __init__(self, node_ids: Sequence[bytes], size: int) -> None:
        if size < 1:
            raise ValueError("a swarm has at least one member")
        self.node_ids = tuple(sorted(set(node_ids)))
        self.size = size
        self._swarm = functools.lru_cache(maxsize=65_536)(self._compute)

    def swarm(self, account: bytes) -> tuple[bytes, ...]:
        """The account's swarm, highest weight first."""
        return self._swarm(account)

    def holds(self, node_id: bytes, account: bytes) -> bool:
        """Whether ``node_id`` is a member of the account's swarm."""
        return node_id in self.swarm(account)

    def _compute(self, account: bytes) -> tuple[bytes, ...]:
        def weight(node_id: bytes) -> tuple[bytes, bytes]:
            return hashlib.blake2b(account + node_id, digest_size=8).digest(), node_id

        ranked = sorted(self.node_ids, key=weight, reverse=True)
        return tuple(ranked[: self.size])
