"""Node links: multiplexing, bounded in-flight work, timeouts, bad frames, and reconnection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from node_helpers import run
from veil.node.links import HopFailed, Link, LinkPool, RequestHandler
from veil.protocol.link import FailureCode, FrameDecoder, FrameKind, encode_frame


@contextlib.asynccontextmanager
async def _server(handler: RequestHandler, max_streams: int = 8) -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Link(handler, max_frame=1 << 20, max_streams=max_streams), "127.0.0.1", 0
    )
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()


def _pool() -> LinkPool:
    return LinkPool(max_frame=1 << 20, max_streams=64, connect_timeout_s=1.0, backoff_max_s=0.5)


async def _echo(body: bytes) -> bytes:
    await asyncio.sleep(0.001 * (body[0] % 5))  # answers come back out of order
    return body[::-1]


def test_many_requests_share_one_connection_and_get_their_own_answers() -> None:
    async def main() -> None:
        async with _server(_echo, max_streams=64) as address:
            pool = _pool()
            try:
                bodies = [bytes([i]) + b"payload" for i in range(50)]
                answers = await asyncio.gather(*(pool.request(address, b, 5.0) for b in bodies))
                assert answers == [b[::-1] for b in bodies]
                assert len(pool._links) == 1
            finally:
                await pool.close()

    run(main())


def test_requests_past_the_in_flight_limit_are_answered_overloaded() -> None:
    release = asyncio.Event()

    async def stuck(body: bytes) -> bytes:
        await release.wait()
        return b"late"

    async def main() -> None:
        async with _server(stuck, max_streams=4) as address:
            pool = _pool()
            waiting = [asyncio.create_task(pool.request(address, b"x", 5.0)) for _ in range(4)]
            await asyncio.sleep(0.05)
            with pytest.raises(HopFailed) as refused:
                await pool.request(address, b"y", 5.0)
            assert refused.value.code is FailureCode.OVERLOADED
            release.set()
            assert await asyncio.gather(*waiting) == [b"late"] * 4
            await pool.close()

    run(main())


def test_a_next_hop_that_never_answers_times_out_as_path_failed() -> None:
    async def silent(body: bytes) -> bytes:
        await asyncio.sleep(60)
        return b""

    async def main() -> None:
        async with _server(silent) as address:
            pool = _pool()
            with pytest.raises(HopFailed) as failed:
                await pool.request(address, b"x", 0.2)
            assert failed.value.code is FailureCode.PATH_FAILED
            await pool.close()

    run(main())


def test_a_failing_handler_becomes_path_failed_for_the_caller() -> None:
    async def broken(body: bytes) -> bytes:
        raise HopFailed

    async def main() -> None:
        async with _server(broken) as address:
            pool = _pool()
            with pytest.raises(HopFailed):
                await pool.request(address, b"x", 2.0)
            await pool.close()

    run(main())


def test_a_malformed_frame_closes_the_link() -> None:
    async def main() -> None:
        async with _server(_echo) as (host, port):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write((3).to_bytes(4, "big") + b"junk")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()

    run(main())


def test_ping_is_answered_with_pong() -> None:
    async def main() -> None:
        async with _server(_echo) as (host, port):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(encode_frame(FrameKind.PING, 9))
            await writer.drain()
            frames = FrameDecoder().feed(await asyncio.wait_for(reader.readexactly(9), 2.0))
            assert [(f.kind, f.stream) for f in frames] == [(FrameKind.PONG, 9)]
            writer.close()

    run(main())


def test_an_unreachable_peer_fails_fast_then_is_retried_after_the_backoff() -> None:
    async def main() -> None:
        pool = _pool()
        async with _server(_echo) as address:
            pass  # the port is free again: nothing listens there now
        with pytest.raises(HopFailed):
            await pool.request(address, b"x", 1.0)
        with pytest.raises(HopFailed):  # within the backoff: refused without trying
            await pool.request(address, b"x", 1.0)
        await pool.close()

    run(main())
