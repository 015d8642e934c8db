"""Alice and Bob talk through a real network of nodes, over onion paths."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from node_helpers import make_config, run
from veil.client.messaging import Messenger
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.server import Node

FAST = NetworkSettings(gossip_interval_s=0.05, sync_interval_s=0.5, replication_timeout_s=2.0)


async def _network(tmp_path: Path, size: int) -> list[Node]:
    first = Node(dataclasses.replace(make_config(tmp_path / "n0"), network=FAST))
    await first.start()
    seed = (f"127.0.0.1:{first.port}",)
    nodes = [first] + [
        Node(dataclasses.replace(make_config(tmp_path / f"n{i}"), network=FAST, seeds=seed))
        for i in range(1, size)
    ]
    for node in nodes[1:]:
        await node.start()
    deadline = time.monotonic() + 15
    while not all(len(n.membership.nodes) == size for n in nodes):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return nodes


def test_alice_and_bob_exchange_messages_both_ways_and_bob_catches_up(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        nodes = await _network(tmp_path, 6)
        try:
            peers = [n.peer_info for n in nodes]
            async with NetworkClient(peers) as net_a, NetworkClient(peers) as net_b:
                a = Messenger(alice, SwarmClient(net_a), name="Alice")
                b = Messenger(bob, SwarmClient(net_b), name="Bob")
                await a.send_text(bob.session_id, "hello Bob")
                got = await b.fetch()
                assert [(m.sender, m.body, m.name) for m in got] == [
                    (alice.session_id, "hello Bob", "Alice")
                ]
                await b.send_text(alice.session_id, "hi Alice")
                assert [m.body for m in await a.fetch()] == ["hi Alice"]
                # Bob is away; Alice sends three more; back, he gets all of them once, in order
                for text in ("one", "two", "three"):
                    await a.send_text(bob.session_id, text)
                assert [m.body for m in await b.fetch()] == ["one", "two", "three"]
                assert await b.fetch() == []
                assert a.undecryptable == b.undecryptable == 0
        finally:
            for node in nodes:
                await node.stop()

    run(main())
