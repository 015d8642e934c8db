"""The node's view of the network: the consensus it holds plus the swarm mapping derived from it.

The mappings of the last ``history`` views are kept with the time they were replaced, so that a
node can still answer a node that was an account's swarm member a moment ago (hand-over:
``veil.node.peer_rpc``).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from veil.node.directory import Directory
from veil.protocol.announcement import Announcement
from veil.protocol.swarms import SwarmMap

__all__ = ["NetworkState"]


class NetworkState:
    """Answers "which nodes hold this account" from the consensus the node holds."""

    def __init__(self, directory: Directory, swarm_size: int, history: int = 32) -> None:
        self.directory = directory
        self.size = swarm_size
        self.own_id = directory.identity.ed25519_public_key
        self.swarms = SwarmMap(directory.node_ids() or [self.own_id], swarm_size)
        self._replaced: collections.deque[tuple[float, SwarmMap]] = collections.deque(
            maxlen=history
        )

    def rebuild(self) -> None:
        """Recompute the swarm mapping after the view changed. A re-signed announcement changes
        the view but not its nodes: then the mapping, and its cache, stay."""
        ids = self.directory.node_ids() or [self.own_id]
        placements = self.directory.placements
        if tuple(ids) != self.swarms.node_ids or any(
            self.swarms.placements.get(node) != placements.get(node, node) for node in ids
        ):
            self.swarms.forget()  # the cache of a replaced mapping refills only in a hand-over
            self._replaced.append((time.monotonic(), self.swarms))
            self.swarms = SwarmMap(ids, self.size, placements)

    def was_member(self, node_id: bytes, account: bytes, window_ms: int) -> bool:
        """Whether ``node_id`` is in the account's swarm now, or was in a view replaced less than
        ``window_ms`` ago."""
        if self.swarms.holds(node_id, account):
            return True
        since = time.monotonic() - window_ms / 1000
        return any(
            swarms.holds(node_id, account)
            for replaced, swarms in self._replaced
            if replaced >= since
        )

    def swarm(self, account: bytes) -> list[Announcement]:
        nodes = self.directory.nodes
        return [nodes[node_id] for node_id in self.swarms.swarm(account) if node_id in nodes]

    def swarm_size(self, account: bytes) -> int:
        return len(self.swarm(account))

    def serves(self, account: bytes) -> bool:
        return self.swarms.holds(self.own_id, account)

    def swarm_json(self, account: bytes) -> list[dict[str, Any]]:
        return [announcement.to_json() for announcement in self.swarm(account)]

    def nodes_json(self) -> list[dict[str, Any]]:
        return self.directory.announcements()

    def consensus_json(self) -> dict[str, Any] | None:
        return self.directory.consensus_json()

    def usable(self) -> bool:
        """Whether the node may take stores: on its own, or holding a valid consensus."""
        return self.directory.network is None or self.directory.current is not None
