"""The swarm client over a real network: lagging members, consensuses that change, swarms computed
from the consensus as the nodes compute them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import veil.client.swarm as swarm_module
from node_helpers import StubAuthorities, run
from veil.client.directory import ClientDirectory
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.server import Node

FAST = NetworkSettings(sync_interval_s=0.3, replication_timeout_s=2.0)


async def _group(authorities: StubAuthorities, tmp_path: Path, names: list[str]) -> list[Node]:
    """Nodes of ``authorities``' network, started, in no consensus yet."""
    nodes = [Node(authorities.config(tmp_path / name, network=FAST)) for name in names]
    for node in nodes:
        await node.start()
    return nodes


async def _stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node._server is not None and node._server.is_serving():
            await node.stop()


def test_messages_survive_a_stopped_member_and_reads_merge_three_members(tmp_path: Path) -> None:
    bob = Identity.generate()
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        nodes = await _group(authorities, tmp_path, [f"n{i}" for i in range(10)])
        try:
            signed = authorities.issue(nodes)
            async with NetworkClient(ClientDirectory(authorities.network, signed)) as network:
                client = SwarmClient(network)
                assert len(network.nodes) == 10
                sent = set()
                for i in range(12):
                    answer = await client.store(bob.session_id, b"msg %d" % i, ttl_ms=600_000)
                    assert len(answer["receipts"]) >= 3
                    sent.add(answer["hash"])
                account = bytes.fromhex(bob.session_id)
                swarm = {a.ed25519 for a in nodes[0].network.swarm(account)}  # as the nodes place
                victim = next(n for n in nodes if n.identity.ed25519_public_key in swarm)
                await victim.stop()
                got = await client.retrieve(bob)
                assert {m["hash"] for m in got} == sent
                assert len(got) == len(sent)  # merged from several members, no duplicates
        finally:
            await _stop(nodes)

    run(main())


def test_two_halves_that_did_not_know_each_other_still_deliver_every_message(
    tmp_path: Path,
) -> None:
    carol = Identity.generate()
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        left = await _group(authorities, tmp_path, [f"l{i}" for i in range(5)])
        right = await _group(authorities, tmp_path, [f"r{i}" for i in range(5)])
        nodes = left + right
        try:
            # Each half holds a consensus that lists only itself.
            left_only = authorities.issue(left)
            authorities.issue(right)
            assert all(len(n.directory.nodes) == 5 for n in nodes)
            sent = set()
            async with NetworkClient(ClientDirectory(authorities.network, left_only)) as network:
                client = SwarmClient(network)
                for i in range(8):
                    answer = await client.store(carol.session_id, b"left %d" % i, ttl_ms=600_000)
                    sent.add(answer["hash"])
            # the halves meet in the next consensus; anti-entropy and hand-over settle the rest
            both = authorities.issue(nodes)
            assert all(len(n.directory.nodes) == 10 for n in nodes)
            async with NetworkClient(ClientDirectory(authorities.network, both)) as network:
                client = SwarmClient(network)

                seen: set[str] = set()

                async def delivered() -> bool:  # cursors advance: collect across polls
                    seen.update(m["hash"] for m in await client.retrieve(carol))
                    return seen >= sent

                deadline = time.monotonic() + 30
                while not await delivered():
                    assert time.monotonic() < deadline, "messages not delivered after merge"
                    await asyncio.sleep(0.5)
        finally:
            await _stop(nodes)

    run(main())


def test_a_message_landing_behind_a_cursor_is_still_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes take timestamps up to 60 s off their clock, so a message can arrive after a reader
    passed its timestamp: the look-back window still returns it, and only once."""
    dave = Identity.generate()
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        nodes = await _group(authorities, tmp_path, [f"n{i}" for i in range(5)])
        try:
            signed = authorities.issue(nodes)
            async with NetworkClient(ClientDirectory(authorities.network, signed)) as network:
                writer = SwarmClient(network)
                reader = SwarmClient(network)
                blind = SwarmClient(network, look_back_ms=0)  # a cursor taken as is
                await writer.store(dave.session_id, b"on time", ttl_ms=600_000)
                assert [m["data"] for m in await reader.retrieve(dave)] == ["b24gdGltZQ=="]
                assert len(await blind.retrieve(dave)) == 1
                real_now = swarm_module._now_ms
                monkeypatch.setattr(swarm_module, "_now_ms", lambda: real_now() - 30_000)
                late = await writer.store(dave.session_id, b"late", ttl_ms=600_000)
                monkeypatch.setattr(swarm_module, "_now_ms", real_now)
                assert [m["hash"] for m in await reader.retrieve(dave)] == [late["hash"]]
                assert await reader.retrieve(dave) == []  # once
                assert await blind.retrieve(dave) == []  # passed for good without the window
                saved = reader.export_cursors()
                again = SwarmClient(network)
                again.import_cursors(saved)  # the window's hashes travel with the cursors
                assert await again.retrieve(dave) == []
        finally:
            await _stop(nodes)

    run(main())


def test_a_client_computes_the_same_swarms_as_the_nodes_of_one_consensus(tmp_path: Path) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    accounts = [bytes.fromhex(Identity.generate().session_id) for _ in range(50)]

    async def main() -> None:
        nodes = await _group(authorities, tmp_path, [f"n{i}" for i in range(10)])
        try:
            signed = authorities.issue(nodes)
            async with NetworkClient(ClientDirectory(authorities.network, signed)) as network:
                client = SwarmClient(network)
                assert len(network.nodes) == 10
                for account in accounts:
                    assert [p.ed25519 for p in client.swarm(account)] == [
                        a.ed25519 for a in nodes[0].network.swarm(account)
                    ]
        finally:
            await _stop(nodes)

    run(main())
