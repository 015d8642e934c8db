"""Alice and Bob talk through a real network of nodes, over onion paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil.client import swarm as swarm_module
from veil.client.account import Book
from veil.client.messaging import BlockedContactError, Messenger
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import Limits, NetworkSettings
from veil.node.server import Node

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)


# Nodes that take messages living 1 s, so that disappearing messages can be watched disappear.
LIMITS = Limits(min_ttl_ms=1_000)


async def _network(tmp_path: Path, size: int) -> list[Node]:
    """``size`` nodes in one consensus of a network of their own."""
    authorities = StubAuthorities(tmp_path / "authorities")
    return await start_network(authorities, tmp_path, size, network=FAST, limits=LIMITS)


def test_alice_and_bob_exchange_messages_both_ways_and_bob_catches_up(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        nodes = await _network(tmp_path, 6)
        try:
            async with (
                NetworkClient(directory_of(nodes[0])) as net_a,
                NetworkClient(directory_of(nodes[0])) as net_b,
            ):
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


@asynccontextmanager
async def _people(
    tmp_path: Path, size: int = 6
) -> AsyncIterator[Callable[..., Awaitable[Messenger]]]:
    """A network and a factory of messengers, each with its own swarm client (its own device)."""
    nodes = await _network(tmp_path, size)
    networks: list[NetworkClient] = []

    async def device(identity: Identity, **options: Any) -> Messenger:
        network = await NetworkClient(directory_of(nodes[0])).__aenter__()
        networks.append(network)
        options.setdefault("min_ttl_ms", 1_000)
        return Messenger(identity, SwarmClient(network), book=Book(), **options)

    try:
        yield device
    finally:
        for network in networks:
            await network.close()
        for node in nodes:
            await node.stop()


async def _held(messenger: Messenger, namespace: int = 0) -> int:
    """How many messages the account's swarm still holds (read from the start, no cursor)."""
    fresh = SwarmClient(messenger.swarm.network)
    return len(await fresh.retrieve(messenger.identity, namespace=namespace, from_start=True))


def test_a_first_message_is_a_request_until_accepted_and_blocking_drops_a_sender(
    tmp_path: Path,
) -> None:
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b, c = await device(alice, name="Alice"), await device(bob), await device(carol)
            await a.send_text(bob.session_id, "hello Bob")
            assert a.contacts() == {bob.session_id: "accepted"}  # writing first approves
            [request] = await b.fetch()
            assert (request.body, request.request, request.name) == ("hello Bob", True, "Alice")
            assert list(b.requests()) == [alice.session_id]
            assert b.contacts() == {}
            held = await b.accept(alice.session_id)
            assert [e.body for e in held] == ["hello Bob"]
            assert b.requests() == {}
            [accepted] = await a.fetch()
            assert (accepted.kind, accepted.peer) == ("accept", bob.session_id)
            await a.send_text(bob.session_id, "now we talk")
            [message] = await b.fetch()
            assert (message.body, message.request) == ("now we talk", False)

            await c.send_text(bob.session_id, "buy my stuff")
            await b.block(carol.session_id)
            assert await b.fetch() == []  # held back: Carol is blocked
            await c.send_text(bob.session_id, "again")
            assert await b.fetch() == []
            assert b.contacts() == {alice.session_id: "accepted", carol.session_id: "blocked"}
            with pytest.raises(BlockedContactError):
                await b.send_text(carol.session_id, "no")

    run(main())


def test_a_second_device_sees_sent_messages_contacts_name_and_devices(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _people(tmp_path) as device:
            phone, laptop, b = await device(alice), await device(alice), await device(bob)
            phone.book.device_name, laptop.book.device_name = "phone", "laptop"
            await phone.set_name("Alice")
            await laptop.fetch()  # links: pulls the config, adds itself
            assert laptop.name == "Alice"
            assert sorted(d.name for d in laptop.config.live_devices().values()) == [
                "laptop",
                "phone",
            ]
            sent = await phone.send_text(bob.session_id, "from my phone")
            [transcript] = await laptop.fetch()
            assert (transcript.outgoing, transcript.peer, transcript.body, transcript.id) == (
                True,
                bob.session_id,
                "from my phone",
                sent,
            )
            assert laptop.contacts() == {bob.session_id: "accepted"}
            assert [e.body for e in laptop.conversation(bob.session_id)] == ["from my phone"]
            # A request accepted on one device is accepted on the other.
            carol = Identity.generate()
            await (await device(carol)).send_text(alice.session_id, "hi, it's Carol")
            await phone.fetch()
            await laptop.fetch()
            assert carol.session_id in laptop.requests()
            await phone.accept(carol.session_id)
            await laptop.fetch()
            assert laptop.contacts()[carol.session_id] == "accepted"
            assert laptop.requests() == {}
            await laptop.block(carol.session_id)  # blocked on one device: gone on both
            await phone.fetch()
            assert phone.conversation(carol.session_id) == []
            assert phone.contacts()[carol.session_id] == "blocked"
            # The phone's own fetch does not show its own transcript back.
            assert [e.body for e in phone.conversation(bob.session_id)] == ["from my phone"]
            # A note to self reaches the other device once (its copy and its transcript share
            # one id).
            await phone.send_text(alice.session_id, "note to self")
            notes = [m for m in await laptop.fetch() if m.peer == alice.session_id]
            assert [(m.body, m.outgoing) for m in notes] == [("note to self", True)]
            await phone.send_text(bob.session_id, "second")
            assert [m.body for m in await phone.fetch()] == []
            assert [m.body for m in await b.fetch()] == ["from my phone", "second"]

    run(main())


def test_pickup_deletes_from_the_swarm_only_once_every_device_has_the_message(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    window_ms = 300

    async def main() -> None:
        async with _people(tmp_path) as device:
            a = await device(alice)
            # One device: a message is deleted from the swarm as soon as it is fetched.
            lone = await device(bob, pickup_window_ms=window_ms)
            await a.send_text(bob.session_id, "one")
            assert await _held(lone) == 1
            assert [m.body for m in await lone.fetch()] == ["one"]
            assert await _held(lone) == 0
            # A second device: nothing is deleted until both have fetched it.
            other = await device(bob, pickup_window_ms=window_ms)
            await other.fetch()  # registers itself (mark 0)
            await lone.fetch()  # sees the new device
            await a.send_text(bob.session_id, "two")
            assert [m.body for m in await lone.fetch()] == ["two"]
            assert await _held(lone) == 1  # the other device has not picked it up
            await asyncio.sleep(window_ms / 1000 + 0.1)
            assert [m.body for m in await other.fetch()] == ["two"]
            assert await _held(lone) == 1  # the first device's mark does not cover it yet
            await lone.fetch()  # publishes a mark past the message
            await other.fetch()  # now every device has it: deleted
            assert await _held(lone) == 0
            await lone.fetch()
            assert lone.book.pending == {} == other.book.pending
            assert await _held(lone, namespace=2) == 1  # one config, the replaced ones deleted
            # A lost device is taken off the list: pickup deletion stops waiting for it.
            with pytest.raises(InvalidInputError):
                await lone.remove_device(lone.book.device_id)
            await lone.remove_device(other.book.device_id)
            await a.send_text(bob.session_id, "three")
            assert [m.body for m in await lone.fetch()] == ["three"]
            assert await _held(lone) == 0

    run(main())


def test_a_message_with_an_old_timestamp_waits_for_every_device_before_it_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender may store with a timestamp in the past (a message queued while offline; nodes
    accept it). Pickup deletion goes by when a message reached the swarm, not by its timestamp:
    a device whose mark is past the timestamp but which has not fetched the message yet still
    gets it."""
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _people(tmp_path) as device:
            a = await device(alice)
            lone = await device(bob, pickup_window_ms=300)
            other = await device(bob, pickup_window_ms=300)
            await other.fetch()  # registers itself
            await lone.fetch()  # sees the other device
            await a.send_text(bob.session_id, "warm-up")
            assert [m.body for m in await other.fetch()] == ["warm-up"]  # publishes its mark
            assert [m.body for m in await lone.fetch()] == ["warm-up"]  # and sees it
            mark = lone.config.devices[other.book.device_id].picked_ms
            real_now = swarm_module._now_ms
            with monkeypatch.context() as patched:
                patched.setattr(swarm_module, "_now_ms", lambda: real_now() - 600_000)
                await a.send_text(bob.session_id, "queued ten minutes ago")
            assert [m.body for m in await lone.fetch()] == ["queued ten minutes ago"]
            assert 0 < real_now() - 600_000 < mark  # the other's mark is past its timestamp
            assert [m.body for m in await other.fetch()] == ["queued ten minutes ago"]

    run(main())


def test_unsend_and_disappearing_messages(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b = await device(alice), await device(bob)
            await b.accept(alice.session_id)
            kept = await a.send_text(bob.session_id, "kept")
            oops = await a.send_text(bob.session_id, "oops")
            await a.unsend(bob.session_id, oops)  # before Bob fetched: he never sees it
            assert [m.body for m in await b.fetch()] == ["kept"]
            assert [e.body for e in a.conversation(bob.session_id)] == ["kept"]
            await a.unsend(bob.session_id, kept)  # after he fetched: his copy goes
            [event] = await b.fetch()
            assert (event.kind, event.ref) == ("unsend", kept)
            assert b.conversation(alice.session_id) == []

            await a.send_text(bob.session_id, "burn", disappear=("after_send", 1_500))
            await a.send_text(bob.session_id, "read me", disappear=("after_read", 1_500))
            assert [m.body for m in await b.fetch()] == ["burn", "read me"]
            await asyncio.sleep(1.7)
            # after_send: gone everywhere; after_read: Bob has not read it yet, so he keeps it
            assert [e.body for e in b.conversation(alice.session_id)] == ["read me"]
            assert a.conversation(bob.session_id) == []
            [read] = b.mark_read(alice.session_id)
            assert read.expires_ms is not None
            await asyncio.sleep(1.7)
            assert b.conversation(alice.session_id) == []
            with pytest.raises(InvalidInputError):
                await a.send_text(bob.session_id, "x", disappear=("after_send", 10))

    run(main())


def test_what_others_send_cannot_drive_the_terminal(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    hostile = "\x1b]0;pwned\x07\x1b[2Jhi\u202eevil\r\nnext line\tok"

    async def main() -> None:
        async with _people(tmp_path) as device:
            a = await device(alice, name="A\x1b[31mlice\nX" + "y" * 100)
            b = await device(bob)
            await a.send_text(bob.session_id, hostile)
            [got] = await b.fetch()
            assert got.body == "\ufffd]0;pwned\ufffd\ufffd[2Jhi\ufffdevil\ufffd\nnext line\tok"
            assert got.name is not None
            assert "\x1b" not in got.name
            assert "\n" not in got.name
            assert len(got.name) == 64
            [entry] = b.conversation(alice.session_id)
            assert entry.body == got.body

    run(main())
