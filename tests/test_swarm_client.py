"""The swarm client over a real network: lagging members, consensuses that change, swarms computed
from the consensus as the nodes compute them."""

from __future__ import annotations

import asyncio
import base64
import collections
import random
import time
from pathlib import Path
from typing import Any

import pytest

import veil.client.swarm as swarm_module
from node_helpers import StubAuthorities, run
from veil.client.directory import ClientDirectory
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.server import Node
from veil.node.store import StoreOutcome
from veil.protocol.hashes import message_hash
from veil.protocol.peers import PeerInfo
from veil.protocol.replication import Message

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
                    assert len(answer["signed_by"]) >= 3
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


class _InOrder(random.Random):
    """A random source whose shuffles leave lists as they are (members asked in the given order)."""

    def shuffle(self, x: Any, *args: Any) -> None:
        del x, args


class _Pinned(SwarmClient):
    """A swarm client that asks the members of ``order``, in that order."""

    def __init__(self, network: NetworkClient, order: list[PeerInfo], **settings: Any) -> None:
        super().__init__(network, rng=_InOrder(), **settings)
        self.order = order

    def swarm(self, account: bytes) -> list[PeerInfo]:
        return list(self.order)


def test_a_message_reaching_a_member_after_later_arrivals_is_still_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages are filed under their arrival at the member they were stored at. One that reaches
    another member late — here member B cannot take it (its storage full) until a message that
    arrived after it has reached B and been read there — lands behind the cursor a reader of B
    already holds: the look-back window still returns it, and only once; a reader without the
    window misses it for good."""
    dave = Identity.generate()
    account = bytes.fromhex(dave.session_id)
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        nodes = await _group(authorities, tmp_path, [f"n{i}" for i in range(5)])
        try:
            signed = authorities.issue(nodes)
            async with NetworkClient(ClientDirectory(authorities.network, signed)) as network:
                swarm = SwarmClient(network).swarm(account)
                assert len(swarm) == 5  # every node
                a, b = swarm[0], swarm[1]
                member_b = next(n for n in nodes if n.identity.ed25519_public_key == b.ed25519)
                refused: set[bytes] = set()
                put = member_b.store.put

                def full_for_refused(txn: Any, message: Message) -> StoreOutcome:
                    if message.hash in refused:
                        return StoreOutcome.STORAGE_FULL
                    return put(txn, message)

                monkeypatch.setattr(member_b.store, "put", full_for_refused)
                writer = _Pinned(network, [a, *swarm[1:]])  # stores at A
                reader = _Pinned(network, [b], read_members=1)  # reads B alone
                blind = _Pinned(network, [b], read_members=1, look_back_ms=0)  # cursor as is
                probe = _Pinned(network, [b], read_members=1)
                refused.add(message_hash(account, 0, b"early"))
                early = await writer.store(dave.session_id, b"early", ttl_ms=600_000)
                assert b.ed25519.hex() not in early["signed_by"]  # B did not take it
                assert len(early["signed_by"]) >= 3
                later = await writer.store(dave.session_id, b"later", ttl_ms=600_000)
                assert b.ed25519.hex() in later["signed_by"]
                assert [m["hash"] for m in await reader.retrieve(dave)] == [later["hash"]]
                assert [m["hash"] for m in await blind.retrieve(dave)] == [later["hash"]]
                refused.clear()  # B takes it now, from the others (anti-entropy)
                deadline = time.monotonic() + 30
                while len(await probe.retrieve(dave, from_start=True)) < 2:
                    assert time.monotonic() < deadline, "the early message never reached B"
                    await asyncio.sleep(0.2)
                # Filed under its arrival at A, before the later one: behind the readers' cursor.
                assert [m["hash"] for m in await reader.retrieve(dave)] == [early["hash"]]
                assert await reader.retrieve(dave) == []  # once
                assert await blind.retrieve(dave) == []  # passed for good without the window
                saved = reader.export_cursors()
                again = SwarmClient(network)  # any members, from where B's reader is
                again.import_cursors(saved)  # the window's hashes travel with the cursors
                assert await again.retrieve(dave) == []
        finally:
            await _stop(nodes)

    run(main())


def test_a_message_with_an_old_timestamp_is_read_even_without_the_look_back_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender's timestamp may be in the past (a message queued while offline); messages are
    filed under their arrival, so such a message is not behind a cursor already passed: a reader
    without the look-back window reads it, once."""
    dave = Identity.generate()
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        nodes = await _group(authorities, tmp_path, [f"n{i}" for i in range(5)])
        try:
            signed = authorities.issue(nodes)
            async with NetworkClient(ClientDirectory(authorities.network, signed)) as network:
                writer = SwarmClient(network)
                blind = SwarmClient(network, look_back_ms=0)  # a cursor taken as is
                await writer.store(dave.session_id, b"on time", ttl_ms=600_000)
                assert [m["data"] for m in await blind.retrieve(dave)] == ["b24gdGltZQ=="]
                real_now = swarm_module._now_ms
                monkeypatch.setattr(swarm_module, "_now_ms", lambda: real_now() - 30_000)
                late = await writer.store(dave.session_id, b"late", ttl_ms=600_000)
                monkeypatch.setattr(swarm_module, "_now_ms", real_now)
                [got] = await blind.retrieve(dave)
                assert got["hash"] == late["hash"]
                assert got["timestamp"] <= real_now() - 30_000  # as the sender set it
                assert await blind.retrieve(dave) == []  # once
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


def test_arrivals_a_member_answers_are_kept_only_when_well_formed_and_one_per_message() -> None:
    """``arrivals`` comes from a member and may lie: a list of the wrong length, or entries that
    are not integer times, give no arrival; the messages themselves are kept either way. (The
    messenger also caps an arrival at the start of the fetch that read it.)"""
    client = SwarmClient.__new__(SwarmClient)
    client.dropped = collections.Counter()
    account = b"\x05" + bytes(32)
    raw = [
        {
            "hash": base64.b64encode(message_hash(account, 0, data)).decode().rstrip("="),
            "timestamp": 1_700_000_000_000,
            "expiration": 1_700_000_060_000,
            "data": base64.b64encode(data).decode(),
        }
        for data in (b"one", b"two")
    ]
    good = client._checked(raw, account, 0, [1_700_000_000_123_456, 1_700_000_000_999_000])
    assert [m["arrival_ms"] for m in good] == [1_700_000_000_123, 1_700_000_000_999]
    for hostile in ([5], [1, 2, 3], ["soon", None], [-1, True], [1 << 64, 2.5]):
        kept = client._checked(raw, account, 0, hostile)
        assert [m["hash"] for m in kept] == [m["hash"] for m in raw]
        assert all("arrival_ms" not in m for m in kept), hostile
