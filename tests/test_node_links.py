"""Node links, version 2: the handshake admits only known nodes, records hide everything, and the
link keeps multiplexing, bounding in-flight work, timing out and reconnecting as before."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import pytest

from node_helpers import answer_until_closed, run
from veil import _core
from veil.clock import now_ms
from veil.node import links as links_module
from veil.node.links import (
    HopFailed,
    Link,
    LinkGate,
    LinkHandlers,
    LinkPool,
    LinkSettings,
)
from veil.node.source import address_key, subnet_key
from veil.protocol.link import (
    FailureCode,
    FrameDecoder,
    FrameKind,
    encode_frame,
)

SETTINGS = LinkSettings(
    max_frame=1 << 20,
    max_streams=8,
    connect_timeout_s=1.0,
    backoff_max_s=0.5,
    handshake_timeout_s=1.0,
    partial_frame_timeout_s=1.0,
)

Handler = Callable[[bytes, bytes], Awaitable[bytes]]


@dataclass
class Keys:
    secret: bytes

    @property
    def node(self) -> _core.NodeKey:
        return _core.NodeKey(self.secret)

    @property
    def x25519(self) -> bytes:
        return _core.x25519_public_key(self.secret)

    @property
    def node_id(self) -> bytes:
        return b"id:" + self.x25519[:8]


def _keys() -> Keys:
    return Keys(_core.x25519_generate_secret())


@dataclass
class Server:
    address: tuple[str, int]
    keys: Keys
    gate: LinkGate
    events: Counter[str]
    seen: list[bytes]


@contextlib.asynccontextmanager
async def _server(
    handler: Handler,
    admitted: list[Keys],
    settings: LinkSettings = SETTINGS,
    keys: Keys | None = None,
    wait_turn: Callable[[], None] | None = None,
) -> AsyncIterator[Server]:
    keys = keys if keys is not None else _keys()
    events: Counter[str] = Counter()
    by_key = {k.x25519: k.node_id for k in admitted}
    gate = LinkGate(settings, by_key.get, _counter(events))
    seen: list[bytes] = []

    async def request(peer: bytes, body: bytes) -> bytes:
        seen.append(peer)
        return await handler(peer, body)

    node = keys.node
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Link.accepting(
            key=node,
            settings=settings,
            count=_counter(events),
            gate=gate,
            handlers=LinkHandlers(request=request, rpc=request),
            wait_turn=wait_turn,
        ),
        "127.0.0.1",
        0,
    )
    try:
        yield Server(("127.0.0.1", server.sockets[0].getsockname()[1]), keys, gate, events, seen)
    finally:
        server.close()
        for link in gate.links():
            link.abort()


def _counter(events: Counter[str]) -> Callable[[str], None]:
    return lambda event: events.update((event,))


def _pool(
    keys: Keys, settings: LinkSettings = SETTINGS, wait_turn: Callable[[], None] | None = None
) -> LinkPool:
    return LinkPool(
        key=keys.node, settings=settings, count=_counter(Counter()), wait_turn=wait_turn
    )


async def _echo(peer: bytes, body: bytes) -> bytes:
    await asyncio.sleep(0.001 * (body[0] % 5))  # answers come back out of order
    return body[::-1]


def test_a_member_and_the_node_it_calls_authenticate_each_other_and_multiplex_requests() -> None:
    client = _keys()
    settings = replace(SETTINGS, max_streams=64)

    async def main() -> None:
        async with _server(_echo, [client], settings) as server:
            pool = _pool(client, settings)
            try:
                bodies = [bytes([i]) + b"payload" for i in range(50)]
                answers = await asyncio.gather(
                    *(
                        pool.request(server.address, server.keys.x25519, b, 5.0, FrameKind.RPC)
                        for b in bodies
                    )
                )
                assert answers == [b[::-1] for b in bodies]
                assert len(pool._links) == 1
                # The accepting side's handler was told which node asked.
                assert set(server.seen) == {client.node_id}
                assert server.events["opened_accepting"] == 1
            finally:
                await pool.close()

    run(main())


def test_every_read_on_either_end_of_a_link_first_waits_its_turn() -> None:
    """A node's links wait for its store writer's turn (``ApplyTurn.wait``) before they open a
    read, on the accepting end and on the calling end: no frame is handled while the writer
    applies a batch."""
    client = _keys()
    turns: Counter[str] = Counter()

    async def main() -> None:
        accepting = _counter(turns)
        async with _server(_echo, [client], wait_turn=lambda: accepting("accepting")) as server:
            pool = _pool(client, wait_turn=lambda: turns.update(("calling",)))
            try:
                body = bytes([3]) + b"payload"
                answer = await pool.request(server.address, server.keys.x25519, body, 5.0)
                assert answer == body[::-1]
            finally:
                await pool.close()

    run(main())
    # The handshake's read and the request's on the accepting end; the handshake answer's and
    # the response's on the calling end.
    assert turns["accepting"] >= 2
    assert turns["calling"] >= 2


def test_a_node_whose_key_is_not_admitted_is_closed_after_the_handshake_message() -> None:
    stranger = _keys()

    async def main() -> None:
        async with _server(_echo, [_keys()]) as server:
            pool = _pool(stranger)
            with pytest.raises(HopFailed):
                await pool.request(server.address, server.keys.x25519, b"x", 2.0)
            await pool.close()
            assert server.seen == []
            assert server.events["refused_not_admitted"] == 1
            assert server.events["opened_accepting"] == 0

    run(main())


def test_a_caller_with_the_wrong_key_for_the_node_cannot_complete_the_handshake() -> None:
    client = _keys()

    async def main() -> None:
        async with _server(_echo, [client]) as server:
            pool = _pool(client)
            with pytest.raises(HopFailed):  # addressed to another node's key
                await pool.request(server.address, _keys().x25519, b"x", 2.0)
            await pool.close()
            assert server.events["closed_bad_handshake"] == 1
            assert server.seen == []

    run(main())


def test_raw_version_1_frames_and_garbage_get_the_connection_closed_and_nothing_else() -> None:
    async def main() -> None:
        async with _server(_echo, [_keys()]) as server:
            for payload in (
                encode_frame(FrameKind.RPC, 1, b'{"method":"fetch","hashes":[]}'),
                encode_frame(FrameKind.PING, 9),
                b"\x00\x68" + bytes(104),  # the right length, not a handshake
                b"GET / HTTP/1.1\r\n\r\n",
            ):
                reader, writer = await asyncio.open_connection(*server.address)
                writer.write(payload)
                await writer.drain()
                assert await answer_until_closed(reader) == (b"", True)
                writer.close()
            assert server.seen == []
            assert server.events["closed_bad_handshake"] == 4

    run(main())


def test_a_valid_handshake_followed_by_bytes_before_the_answer_is_refused() -> None:
    client = _keys()

    async def main() -> None:
        async with _server(_echo, [client]) as server:
            initiator = client.node.link_initiate(server.keys.x25519, now_ms())
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(initiator.message + b"early")
            await writer.drain()
            assert await answer_until_closed(reader) == (b"", True)
            writer.close()
            assert server.seen == []

    run(main())


def test_a_connection_that_never_finishes_its_handshake_is_closed_in_time() -> None:
    async def main() -> None:
        async with _server(_echo, [_keys()]) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(b"\x00\x68" + bytes(10))  # a tenth of a handshake, then silence
            await writer.drain()
            started = time.monotonic()
            assert await answer_until_closed(reader, timeout=5.0) == (b"", True)
            assert time.monotonic() - started < 3.0
            writer.close()
            assert server.events["closed_handshake_timeout"] == 1

    run(main())


def test_unauthenticated_connections_are_capped_per_source_address() -> None:
    settings = replace(SETTINGS, max_handshakes_per_address=4, handshake_timeout_s=5.0)

    async def main() -> None:
        async with _server(_echo, [_keys()], settings) as server:
            held = [await asyncio.open_connection(*server.address) for _ in range(4)]
            reader, writer = await asyncio.open_connection(*server.address)
            assert await answer_until_closed(reader, timeout=2.0) == (b"", True)
            writer.close()
            assert server.events["refused_handshakes_per_address"] >= 1
            assert server.gate.handshaking == 4
            for _, held_writer in held:
                held_writer.close()
            await asyncio.sleep(0.1)
            assert server.gate.handshaking == 0

    run(main())


def test_unauthenticated_connections_are_capped_per_subnet_across_its_addresses() -> None:
    """Six addresses of one /24, two silent connections each, against a subnet cap of 5: the
    sixth connection on is refused though no address is at its own cap; another /24 still
    gets in, and the count goes back to 0 as they close."""
    settings = replace(
        SETTINGS,
        max_handshakes_per_address=4,
        max_handshakes_per_subnet=5,
        handshake_timeout_s=30.0,
    )

    async def main() -> None:
        async with _server(_echo, [_keys()], settings) as server:
            held = []
            for address in range(2, 8):
                for _ in range(2):
                    _, writer = await asyncio.open_connection(
                        *server.address, local_addr=(f"127.0.9.{address}", 0)
                    )
                    held.append(writer)
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert server.gate.handshaking == 5
            assert server.events["refused_handshakes_per_subnet"] == 7
            assert server.events["refused_handshakes_per_address"] == 0
            _, other = await asyncio.open_connection(*server.address, local_addr=("127.0.8.2", 0))
            held.append(other)
            await asyncio.sleep(0.05)
            assert server.gate.handshaking == 6
            for writer in held:
                writer.close()
            await asyncio.sleep(0.1)
            assert server.gate.handshaking == 0

    run(main())


def test_when_the_handshake_slots_are_full_the_oldest_silent_connection_goes_not_the_peer() -> None:
    client = _keys()
    settings = replace(
        SETTINGS, max_handshakes=4, max_handshakes_per_address=64, handshake_timeout_s=30.0
    )

    async def main() -> None:
        async with _server(_echo, [client], settings) as server:
            # Twelve connections that never say a word: never more than four held at once, and
            # each newcomer past four closes the oldest.
            silent = []
            for _ in range(12):
                silent.append(await asyncio.open_connection(*server.address))
                await asyncio.sleep(0.01)
                assert server.gate.handshaking <= 4
            assert server.gate.handshaking == 4
            assert server.events["closed_oldest_handshake"] == 8
            for reader, _ in silent[:8]:
                assert await answer_until_closed(reader, timeout=2.0) == (b"", True)
            # An admitted peer still gets its link, well before any handshake timeout.
            pool = _pool(client)
            assert await pool.request(server.address, server.keys.x25519, b"\x01ab", 2.0) == (
                b"ba\x01"
            )
            assert server.events["closed_oldest_handshake"] == 9
            assert server.events["refused_handshakes_full"] == 0
            assert server.events["closed_handshake_timeout"] == 0
            await pool.close()
            for _, writer in silent:
                writer.close()
            await asyncio.sleep(0.1)
            assert server.gate.handshaking == 0

    run(main())


def test_a_peer_keeps_at_most_the_configured_number_of_links_and_the_oldest_goes() -> None:
    client = _keys()
    settings = replace(SETTINGS, max_links_per_peer=2)

    async def main() -> None:
        async with _server(_echo, [client], settings) as server:
            pools = [_pool(client) for _ in range(3)]
            for pool in pools:
                await pool.request(server.address, server.keys.x25519, b"\x01x", 2.0)
            await asyncio.sleep(0.1)
            assert len(server.gate.links()) == 2
            assert server.events["closed_beyond_links_per_peer"] == 1
            assert not pools[0]._links[(server.address, server.keys.x25519)].is_open
            assert await pools[2].request(server.address, server.keys.x25519, b"\x01y", 2.0)
            for pool in pools:
                await pool.close()

    run(main())


def test_a_half_sent_frame_is_closed_after_the_partial_frame_timeout() -> None:
    client = _keys()

    async def main() -> None:
        async with _server(_echo, [client]) as server:
            pool = _pool(client)
            link = await pool.get(server.address, server.keys.x25519)
            assert link.transport is not None
            assert link._cipher is not None
            frame = encode_frame(FrameKind.REQUEST, 1, b"\x01" + bytes(1000))
            link.transport.write(link._cipher.seal(frame[:500]))  # half a frame, then nothing
            await asyncio.wait_for(link.closed.wait(), 4.0)
            assert server.events["closed_partial_frame_timeout"] == 1
            await pool.close()

    run(main())


def test_an_open_links_watchdog_wakes_at_its_own_timeouts_on_a_shared_grid() -> None:
    """The handshake timeout (seconds) sets the watchdog's period only while the handshake runs;
    an open link is checked a quarter of its shortest open-state timeout apart, and on a grid of
    that period: the links a node holds to every other node wake it once per check, not once
    each, and not every second."""
    client = _keys()
    settings = replace(
        SETTINGS,
        handshake_timeout_s=2.0,
        partial_frame_timeout_s=40.0,
        idle_timeout_s=300.0,
        rekey_interval_s=600.0,
    )

    def due(link: Link) -> float:
        assert link._watchdog is not None
        return link._watchdog.when()

    def on_grid(when: float, step: float) -> bool:  # (uvloop keeps timers to the millisecond)
        offset = when - links_module._WATCH_PHASE * step
        return abs(offset - round(offset / step) * step) <= 0.002

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with _server(_echo, [client], settings) as server:
            pool = _pool(client, settings)
            link = await pool.get(server.address, server.keys.x25519)
            # Armed in handshake: on this process's grid of 2 s / 4.
            assert on_grid(due(link), 0.5)
            assert 0 < due(link) - loop.time() <= 0.5
            link._watch()  # the next check, now that the link is open: on the grid of 40 s / 4
            assert on_grid(due(link), 10.0)
            assert 0 < due(link) - loop.time() <= 10.0
            # Other links armed at other times share that wake-up.
            await asyncio.sleep(0.05)
            other = await _pool(client, settings).get(server.address, server.keys.x25519)
            other._watch()
            link._watch()  # (again, a few microseconds later: the same tick but once in 10^6)
            assert due(other) == pytest.approx(due(link), abs=0.002)
            assert await pool.request(server.address, server.keys.x25519, b"\x00ok", 2.0) == (
                b"ko\x00"
            )
            other.close()
            await pool.close()

    run(main())


def test_requests_past_the_in_flight_limit_are_answered_overloaded() -> None:
    client = _keys()
    release = asyncio.Event()

    async def stuck(peer: bytes, body: bytes) -> bytes:
        await release.wait()
        return b"late"

    async def main() -> None:
        async with _server(stuck, [client], replace(SETTINGS, max_streams=4)) as server:
            pool = _pool(client)
            target = (server.address, server.keys.x25519)
            waiting = [asyncio.create_task(pool.request(*target, b"x", 5.0)) for _ in range(4)]
            await asyncio.sleep(0.1)
            with pytest.raises(HopFailed) as refused:
                await pool.request(*target, b"y", 5.0)
            assert refused.value.code is FailureCode.OVERLOADED
            release.set()
            assert await asyncio.gather(*waiting) == [b"late"] * 4
            await pool.close()

    run(main())


def test_request_bodies_past_the_links_serving_bytes_are_answered_overloaded() -> None:
    client = _keys()
    release = asyncio.Event()
    settings = replace(SETTINGS, max_streams=64, max_serving_bytes=2_500)

    async def stuck(peer: bytes, body: bytes) -> bytes:
        await release.wait()
        return body[:4]

    async def main() -> None:
        async with _server(stuck, [client], settings) as server:
            pool = _pool(client)
            target = (server.address, server.keys.x25519)
            body = bytes(1_000)
            waiting = [asyncio.create_task(pool.request(*target, body, 5.0)) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(HopFailed) as refused:  # 3,000 bytes would be held
                await pool.request(*target, body, 5.0)
            assert refused.value.code is FailureCode.OVERLOADED
            assert server.events["refused_serving_bytes_full"] == 1
            waiting.append(asyncio.create_task(pool.request(*target, bytes(400), 5.0)))
            await asyncio.sleep(0.1)
            assert not waiting[-1].done()  # 2,400 bytes fit: it is being answered
            release.set()
            assert await asyncio.gather(*waiting) == [bytes(4)] * 3
            # Answered requests no longer count: the same bodies are taken again.
            assert await asyncio.gather(*(pool.request(*target, body, 5.0) for _ in range(2))) == (
                [bytes(4)] * 2
            )
            assert server.events["refused_serving_bytes_full"] == 1
            await pool.close()

    run(main())


def test_a_next_hop_that_never_answers_times_out_as_path_failed() -> None:
    client = _keys()

    async def silent(peer: bytes, body: bytes) -> bytes:
        await asyncio.sleep(60)
        return b""

    async def main() -> None:
        async with _server(silent, [client]) as server:
            pool = _pool(client)
            with pytest.raises(HopFailed) as failed:
                await pool.request(server.address, server.keys.x25519, b"x", 0.2)
            assert failed.value.code is FailureCode.PATH_FAILED
            await pool.close()

    run(main())


def test_a_failing_handler_becomes_path_failed_for_the_caller() -> None:
    client = _keys()

    async def broken(peer: bytes, body: bytes) -> bytes:
        raise HopFailed

    async def main() -> None:
        async with _server(broken, [client]) as server:
            pool = _pool(client)
            with pytest.raises(HopFailed):
                await pool.request(server.address, server.keys.x25519, b"x", 2.0)
            await pool.close()

    run(main())


def test_ping_is_answered_with_pong_inside_the_encrypted_link() -> None:
    client = _keys()

    async def main() -> None:
        async with _server(_echo, [client]) as server:
            initiator = client.node.link_initiate(server.keys.x25519, now_ms())
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(initiator.message)
            cipher = initiator.finish(await asyncio.wait_for(reader.readexactly(50), 2.0))
            writer.write(cipher.seal(encode_frame(FrameKind.PING, 9)))
            await writer.drain()
            record = await asyncio.wait_for(reader.readexactly(2 + 1 + 9 + 16), 2.0)
            frames = FrameDecoder().feed(cipher.open(record))
            assert [(f.kind, f.stream) for f in frames] == [(FrameKind.PONG, 9)]
            writer.close()

    run(main())


def test_links_of_a_peer_that_left_the_view_are_closed() -> None:
    client = _keys()

    async def main() -> None:
        async with _server(_echo, [client]) as server:
            pool = _pool(client)
            link = await pool.get(server.address, server.keys.x25519)
            assert server.gate.retain([]) == 1
            await asyncio.wait_for(link.closed.wait(), 2.0)
            await pool.close()

    run(main())


def test_a_peer_that_moved_keeps_one_slot_in_the_pool_and_its_old_link_is_closed() -> None:
    client, moving = _keys(), _keys()

    async def main() -> None:
        pool = _pool(client)
        async with _server(_echo, [client], keys=moving) as gone:
            dead = gone.address
        with pytest.raises(HopFailed):  # a dial that fails leaves back-off state for the slot
            await pool.get(dead, moving.x25519)
        async with (
            _server(_echo, [client], keys=moving) as first,
            _server(_echo, [client], keys=moving) as second,
        ):
            old = await pool.get(first.address, moving.x25519)
            new = await pool.get(second.address, moving.x25519)
            assert new is not old
            await asyncio.wait_for(old.closed.wait(), 2.0)
            slots = {*pool._links, *pool._locks, *pool._backoff}
            assert slots == {(second.address, moving.x25519)}
            assert await pool.request(second.address, moving.x25519, b"ab", 2.0) == b"ba"
            pool.retain([])  # and a key that leaves the view leaves nothing behind
            assert not {*pool._links, *pool._locks, *pool._backoff}
        await pool.close()

    run(main())


def test_an_unreachable_peer_fails_fast_then_is_retried_after_the_backoff() -> None:
    client = _keys()

    async def main() -> None:
        pool = _pool(client)
        async with _server(_echo, [client]) as server:
            address, key = server.address, server.keys.x25519
        with pytest.raises(HopFailed):
            await pool.request(address, key, b"x", 1.0)
        started = time.monotonic()
        with pytest.raises(HopFailed):  # within the backoff: refused without trying
            await pool.request(address, key, b"x", 1.0)
        assert time.monotonic() - started < 0.05
        await pool.close()

    run(main())


def test_a_link_older_than_its_maximum_age_is_replaced_by_a_fresh_handshake() -> None:
    client = _keys()
    settings = replace(SETTINGS, max_age_s=0.2)

    async def main() -> None:
        async with _server(_echo, [client], settings) as server:
            pool = _pool(client, settings)
            target = (server.address, server.keys.x25519)
            first = await pool.get(*target)
            await asyncio.sleep(0.3)
            assert await pool.request(*target, b"\x01ab", 2.0) == b"ba\x01"
            second = await pool.get(*target)
            assert second is not first
            await asyncio.wait_for(first.closed.wait(), 2.0)
            assert server.events["opened_accepting"] == 2
            await pool.close()

    run(main())


def test_address_keys_group_ipv6_by_64_and_keep_ipv4_whole() -> None:
    assert address_key(("192.0.2.7", 5000)) == "192.0.2.7"
    assert address_key(("2001:db8::1", 5000, 0, 0)) == address_key(("2001:db8::ffff", 1, 0, 0))
    assert address_key(("2001:db8:0:1::1", 5000, 0, 0)) != address_key(("2001:db8::1", 1, 0, 0))
    assert address_key(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"


def test_subnet_keys_are_the_ipv4_24_and_the_ipv6_48_of_a_source() -> None:
    assert subnet_key(address_key(("192.0.2.7", 1))) == subnet_key("192.0.2.250") == "192.0.2.0/24"
    assert subnet_key("192.0.3.7") != subnet_key("192.0.2.7")
    v6 = address_key(("2001:db8:0:1::1", 1, 0, 0))  # a /64 source
    assert subnet_key(v6) == subnet_key(address_key(("2001:db8:0:ffff::1", 1, 0, 0)))
    assert subnet_key(v6) == "2001:db8::/48"
    assert subnet_key(address_key(("2001:db8:1::1", 1, 0, 0))) != subnet_key(v6)
    assert subnet_key(address_key(("::ffff:192.0.2.7", 1, 0, 0))) == "192.0.2.0/24"
    assert subnet_key("") == ""
    assert subnet_key("/tmp/socket") == "/tmp/socket"
