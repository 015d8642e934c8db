"""Two limits of the client HTTP front end (``veil.node.http``) against hostile input: the bytes of
request bodies held over all connections (``max_buffered_body_bytes``), and the requests parsed
ahead on one connection (``max_pipelined_requests``).

The node-wide cap is tried over real loopback connections (an ``HttpApp`` served by uvloop). The
pipelining cap is tried over a socket, and over ``test_fuzz_http``'s in-process transport, which
delivers exactly the reads it is given (here often one ``data_received`` holding every request).
With its strategies, a queue of one to three must change nothing a client or a handler sees.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_helpers import HttpClient, HttpResponse, run, until
from test_fuzz_http import (
    ROOMY,
    RecordingTransport,
    clean_requests,
    converse,
    cut_points,
    request_specs,
    split_at,
)
from veil.node.config import ConfigError, Limits, NodeConfig, load_config, render_config
from veil.node.http import HttpApp, HttpProtocol, Request, Response

# --- an app on a socket, and one in process ------------------------------------------------------


@dataclass
class Served:
    app: HttpApp
    port: int
    limits_hit: list[str] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    held_while_handled: list[int] = field(default_factory=list)
    """``app.buffered_body_bytes`` as each handler call began."""

    def check_zero(self) -> None:
        assert self.app.buffered_body_bytes == 0
        assert all(connection._held == 0 for connection in self.app.connections)


@contextlib.asynccontextmanager
async def serving(limits: Limits, gate: asyncio.Event | None = None) -> AsyncIterator[Served]:
    """An ``HttpApp`` on a loopback port whose handler echoes the request's path and body size
    (after ``gate`` is set, when given)."""
    served: Served

    async def handler(request: Request) -> Response:
        served.requests.append(request)
        served.held_while_handled.append(served.app.buffered_body_bytes)
        if gate is not None:
            await gate.wait()
        body = {"path": request.path.decode(), "body_bytes": len(request.body)}
        return Response(200, orjson.dumps(body))

    limits_hit: list[str] = []
    refused: list[int] = []
    app = HttpApp(handler, limits, refused.append, on_limit=limits_hit.append)
    server = await asyncio.get_running_loop().create_server(app.protocol, "127.0.0.1", 0)
    served = Served(app, server.sockets[0].getsockname()[1], limits_hit, refused)
    try:
        yield served
    finally:
        server.close()
        for connection in list(app.connections):
            connection.close()
        await server.wait_closed()
        await until(lambda: not app.connections, 2.0)


async def connect(port: int) -> HttpClient:
    return await HttpClient.connect(port)


def head(path: str, length: int) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: n\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length)


def post(path: str, body: bytes) -> bytes:
    return head(path, len(body)) + body


def assert_refused(response: HttpResponse, status: int, code: str) -> None:
    assert response.status == status
    assert response.json()["error"]["code"] == code


class WatchedQueue(collections.deque[tuple[Request, bool]]):
    """``HttpProtocol._pending``, remembering the most requests it ever held."""

    most = 0

    def append(self, item: tuple[Request, bool]) -> None:
        super().append(item)
        self.most = max(self.most, len(self))


@dataclass
class InProcess:
    app: HttpApp
    protocol: HttpProtocol
    transport: RecordingTransport
    queue: WatchedQueue
    paths: list[bytes] = field(default_factory=list)
    unparsed: list[int] = field(default_factory=list)
    """``len(protocol._unparsed)`` as each handler call began."""

    def answers(self) -> list[tuple[int, Any]]:
        """(status, JSON body) of every response written, in order."""
        out, data = [], bytes(self.transport.written)
        while data:
            end = data.index(b"\r\n\r\n") + 4
            status = int(data.split(b" ", 2)[1])
            length = int(data[: end - 4].split(b"Content-Length: ")[1].split(b"\r\n")[0])
            out.append((status, orjson.loads(data[end : end + length])))
            data = data[end + length :]
        return out

    async def settle(self) -> None:
        async with asyncio.timeout(3):
            while self.protocol.busy or not self.app.idle.is_set():
                await asyncio.sleep(0)


def in_process(limits: Limits) -> InProcess:
    async def handler(request: Request) -> Response:
        state.paths.append(request.path)
        state.unparsed.append(len(protocol._unparsed))
        await asyncio.sleep(0)  # answered on a later loop turn, as a real handler is
        return Response(200, orjson.dumps({"path": request.path.decode()}))

    app = HttpApp(handler, limits, lambda status: None)
    protocol = app.protocol()
    queue = WatchedQueue()
    protocol._pending = queue
    transport = RecordingTransport(protocol)
    protocol.connection_made(transport)
    state = InProcess(app, protocol, transport, queue)
    return state


def mixed_requests(count: int) -> list[bytes]:
    """Small GETs and POSTs, each to its own path (``/r/<i>``). A third are GETs without a header:
    two LFs each, as few as a request can have, so that the slices' bound is tight."""
    kinds = [
        lambda i: b"GET /r/%d HTTP/1.1\r\n\r\n" % i,
        lambda i: b"GET /r/%d HTTP/1.1\r\nHost: n\r\n\r\n" % i,
        lambda i: post(f"/r/{i}", b"x" * (i % 7)),
    ]
    return [kinds[i % 3](i) for i in range(count)]


# --- max_buffered_body_bytes ---------------------------------------------------------------------

CAP_LIMITS = Limits(max_body_bytes=64_000, max_buffered_body_bytes=200_000)


def test_bodies_past_the_node_wide_cap_are_refused_503_and_the_bytes_come_back() -> None:
    """Four connections each hold 50,000 bytes of a 60,000-byte body that never completes: the
    node holds its cap. A fifth request's Content-Length no longer fits (503 from its headers); a
    body whose headers came before the cap filled is refused at its first byte (503). Once the
    four hang up, the count is 0 again and a request is served."""

    async def main() -> None:
        async with serving(CAP_LIMITS) as served:
            app = served.app
            early = await connect(served.port)
            await early.send_raw(head("/early", 1_000))
            await until(lambda: any(c._content_length == 1_000 for c in app.connections), 2.0)
            # Headers first: each Content-Length is checked against the room left at the time.
            fillers = [await connect(served.port) for _ in range(4)]
            for client in fillers:
                await client.send_raw(head("/fill", 60_000))
            await until(lambda: sum(c._content_length == 60_000 for c in app.connections) == 4, 2)
            for client in fillers:
                await client.send_raw(b"f" * 50_000)
            await until(lambda: app.buffered_body_bytes == 200_000, 2.0)
            assert served.limits_hit == []

            late = await connect(served.port)
            await late.send_raw(head("/late", 10))
            assert_refused(await late.read_response(), 503, "overloaded")
            assert await late.at_eof()
            assert served.limits_hit == ["max_buffered_body_bytes"]

            await early.send_raw(b"e" * 1_000)
            response = await early.read_response()
            assert_refused(response, 503, "overloaded")
            assert response.json()["error"]["message"] == "too many request bodies in flight"
            assert await early.at_eof()
            assert served.limits_hit == ["max_buffered_body_bytes"] * 2
            assert served.refused == [503, 503]
            assert app.buffered_body_bytes == 200_000  # the refused ones took nothing

            for client in [early, late, *fillers]:
                await client.close()
            await until(lambda: not app.connections, 2.0)
            served.check_zero()
            assert served.requests == []  # no handler ever saw a partial body

            async with await connect(served.port) as client:
                response = await client.request("POST", "/after", b"a" * 60_000)
            assert response.status == 200
            assert response.json() == {"path": "/after", "body_bytes": 60_000}
            served.check_zero()

    run(main())


def test_a_chunked_body_is_refused_503_once_it_would_pass_the_cap() -> None:
    """Without a Content-Length the cap is checked chunk by chunk: the body is refused at the
    chunk that would pass it, and what it held so far is released at once."""
    limits = Limits(max_body_bytes=64_000, max_buffered_body_bytes=64_000)

    async def main() -> None:
        async with serving(limits) as served:
            app = served.app
            holder = await connect(served.port)
            await holder.send_raw(head("/hold", 50_000) + b"h" * 40_000)
            await until(lambda: app.buffered_body_bytes == 40_000, 2.0)
            async with await connect(served.port) as client:
                await client.send_raw(
                    b"POST /c HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"2710\r\n"
                    + b"c" * 10_000
                    + b"\r\n"  # 10,000: fits (50,000 held)
                )
                await until(lambda: app.buffered_body_bytes == 50_000, 2.0)
                await client.send_raw(b"3a98\r\n" + b"c" * 15_000 + b"\r\n")  # 65,000: past it
                assert_refused(await client.read_response(), 503, "overloaded")
                assert app.buffered_body_bytes == 40_000
                assert await client.at_eof()
            assert served.limits_hit == ["max_buffered_body_bytes"]
            await holder.close()
            await until(lambda: not app.connections, 2.0)
            served.check_zero()

    run(main())


def test_the_count_returns_to_zero_after_completed_refused_and_aborted_requests() -> None:
    limits = Limits(max_body_bytes=10_000, max_buffered_body_bytes=100_000)

    async def main() -> None:
        gate = asyncio.Event()
        gate.set()
        async with serving(limits, gate) as served:
            app = served.app
            # Completed: counted while handled, released once answered (connection kept).
            async with await connect(served.port) as client:
                assert (await client.request("POST", "/a", b"a" * 5_000)).status == 200
                assert served.held_while_handled == [5_000]
                served.check_zero()
                # Pipelined: the second body is held (queued) while the first is handled.
                await client.send_raw(post("/b", b"b" * 3_000) + post("/c", b"c" * 4_000))
                assert [(await client.read_response()).status for _ in range(2)] == [200, 200]
                served.check_zero()
                first, second = served.held_while_handled[1:]
                assert 3_000 <= first <= 7_000  # 7,000 when both came in one read
                assert second == 4_000

            # Refused 413 after part of a chunked body was counted: released with the refusal.
            async with await connect(served.port) as client:
                await client.send_raw(
                    b"POST /d HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"1770\r\n"
                    + b"d" * 6_000
                    + b"\r\n"
                )
                await until(lambda: app.buffered_body_bytes == 6_000, 2.0)
                await client.send_raw(b"1770\r\n" + b"d" * 6_000 + b"\r\n")
                assert_refused(await client.read_response(), 413, "too_large")
                assert app.buffered_body_bytes == 0
            # Refused 413 from its Content-Length, behind a request whose body is queued.
            async with await connect(served.port) as client:
                await client.send_raw(post("/e", b"e" * 2_000) + head("/big", 20_000))
                assert (await client.read_response()).status == 200
                assert_refused(await client.read_response(), 413, "too_large")
                assert await client.at_eof()
            await until(lambda: not app.connections, 2.0)
            served.check_zero()

            # Aborted mid-body: released when the connection is lost.
            client = await connect(served.port)
            await client.send_raw(head("/f", 9_000) + b"f" * 4_000)
            await until(lambda: app.buffered_body_bytes == 4_000, 2.0)
            await client.close()
            await until(lambda: not app.connections, 2.0)
            served.check_zero()

            # Dropped while handled, with a pipelined request queued behind it (the node cannot
            # see a client hang up while reading is paused, so the node drops it here): released
            # when the connection is lost, and the handler's return later releases nothing twice.
            gate.clear()
            client = await connect(served.port)
            await client.send_raw(post("/g", b"g" * 3_000) + post("/h", b"h" * 2_000))
            await until(lambda: len(served.requests) == 5, 2.0)
            assert 3_000 <= app.buffered_body_bytes <= 5_000  # 5,000 when both came in one read
            (protocol,) = app.connections
            assert protocol.transport is not None
            protocol.transport.abort()
            await until(lambda: app.buffered_body_bytes == 0, 2.0)
            gate.set()
            await until(lambda: not app.connections and app.idle.is_set(), 2.0)
            assert app.buffered_body_bytes == 0
            assert protocol._held == 0
            await client.close()
            assert served.limits_hit == ["max_body_bytes", "max_body_bytes"]

    run(main())


def test_a_refused_body_is_released_at_once_not_when_its_connection_goes() -> None:
    """A body refused behind a request still waiting for its answer: the connection stays open
    until that answer is written, but the refused body's bytes are released with the refusal."""
    limits = Limits(max_body_bytes=10_000, max_buffered_body_bytes=100_000)
    too_long = (
        b"POST /too_long HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"1770\r\n" + b"d" * 6_000 + b"\r\n") * 2
    )

    async def main() -> None:
        state = in_process(limits)
        state.protocol.data_received(post("/first", b"a" * 1_000) + too_long)
        assert len(state.protocol._pending) == 1
        assert state.app.buffered_body_bytes == 1_000
        await state.settle()
        assert [status for status, _ in state.answers()] == [200, 413]
        assert state.paths == [b"/first"]
        assert state.app.buffered_body_bytes == 0
        assert state.transport.closed
        await asyncio.sleep(0)

    run(main())


# --- max_pipelined_requests ----------------------------------------------------------------------

PIPELINE_LIMITS = Limits(max_pipelined_requests=16)


def test_a_thousand_pipelined_requests_in_one_read_are_all_answered_in_order_16_at_a_time() -> None:
    """One read of 1,000 small GETs and POSTs: llhttp is never fed past the 16th waiting request
    (the rest of the read waits unparsed), and all 1,000 are answered, in order, on a connection
    that stays open."""
    raw = b"".join(mixed_requests(1_000))

    async def main() -> None:
        state = in_process(PIPELINE_LIMITS)
        state.protocol.data_received(raw)
        assert state.queue.most == 16
        assert 0 < len(state.protocol._unparsed) < len(raw)
        await state.settle()
        assert state.queue.most == 16
        assert state.paths == [b"/r/%d" % i for i in range(1_000)]
        assert [status for status, _ in state.answers()] == [200] * 1_000
        assert [body["path"] for _, body in state.answers()] == [f"/r/{i}" for i in range(1_000)]
        assert max(state.unparsed) < len(raw)
        assert not state.transport.closed
        assert state.transport.is_reading()
        assert state.protocol._unparsed == b""
        assert state.app.buffered_body_bytes == 0
        state.transport.close()
        await asyncio.sleep(0)

    run(main())


@pytest.mark.parametrize(
    "first",
    [b"GET /r/first HTTP/1.1\r\nHo", head("/r/first", 10) + b"01234"],
    ids=["mid-headers", "mid-body"],
)
def test_pipelined_requests_after_a_request_in_progress_are_held_16_at_a_time(first: bytes) -> None:
    """A read that begins inside a request (its headers, or its Content-Length body) is fed in
    slices from the start: the same limit, the same order. Behind it, the smallest requests there
    are (two LFs each), and a body's end that completes its request without an LF: the tightest
    case of the slices' bound."""
    rest = b"st: n\r\n\r\n" if first.startswith(b"GET") else b"56789"
    tiny = b"".join(b"GET /r/%d HTTP/1.1\r\n\r\n" % i for i in range(100))

    async def main() -> None:
        state = in_process(PIPELINE_LIMITS)
        state.protocol.data_received(first)
        assert state.paths == []
        state.protocol.data_received(rest + tiny)
        assert state.queue.most == 16
        await state.settle()
        assert state.queue.most == 16
        assert state.paths == [b"/r/first"] + [b"/r/%d" % i for i in range(100)]
        assert [status for status, _ in state.answers()] == [200] * 101
        state.transport.close()
        await asyncio.sleep(0)

    run(main())


def test_a_malformed_request_behind_a_full_queue_is_refused_after_the_ones_before_it() -> None:
    bad = b"BREW /pot HTCPCP/1.0\r\n\r\n"
    raw = b"".join(mixed_requests(40)) + bad + b"".join(mixed_requests(3))

    async def main() -> None:
        state = in_process(PIPELINE_LIMITS)
        state.protocol.data_received(raw)
        await state.settle()
        assert state.queue.most == 16
        statuses = [status for status, _ in state.answers()]
        assert statuses == [200] * 40 + [400]
        assert state.transport.closed

    run(main())


def test_a_request_the_slices_did_not_foresee_is_refused_429_not_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backstop: were llhttp ever to complete more requests in a slice than its LFs allow,
    the one past the limit is refused (429) after the 16 before it, never queued."""
    monkeypatch.setattr(HttpProtocol, "_slice_end", lambda self, data, start, end, room: end)

    async def main() -> None:
        state = in_process(PIPELINE_LIMITS)
        state.protocol.data_received(b"".join(mixed_requests(20)))
        await state.settle()
        assert state.queue.most == 16
        answers = state.answers()
        assert [status for status, _ in answers] == [200] * 16 + [429]
        assert answers[-1][1]["error"]["code"] == "too_many_requests"
        assert state.paths == [b"/r/%d" % i for i in range(16)]
        assert state.transport.closed
        await asyncio.sleep(0)
        assert state.app.buffered_body_bytes == 0

    run(main())


@given(
    specs=st.lists(st.one_of(clean_requests(max_body=64), request_specs()), min_size=1, max_size=8),
    cap=st.integers(1, 3),
    data=st.data(),
)
def test_a_small_queue_changes_no_answer_however_the_requests_are_split(
    specs: list[Any], cap: int, data: st.DataObject
) -> None:
    """Clean and hostile requests pipelined, in one read or split anywhere: with a queue of one
    to three, the handler sees the same requests and the client gets the same bytes as with a
    queue of a thousand in one read."""
    raw = b"".join(spec.render() for spec in specs)
    small = dataclasses.replace(ROOMY, max_pipelined_requests=cap)
    expected = converse([raw], dataclasses.replace(ROOMY, max_pipelined_requests=1_000))
    assert converse([raw], small) == expected
    assert converse(split_at(raw, data.draw(cut_points(raw))), small) == expected


def test_a_thousand_pipelined_requests_in_one_write_over_a_socket() -> None:
    async def main() -> None:
        async with serving(PIPELINE_LIMITS) as served:
            async with await connect(served.port) as client:
                await until(lambda: len(served.app.connections) == 1, 2.0)
                (protocol,) = served.app.connections
                queue = WatchedQueue()
                protocol._pending = queue
                await client.send_raw(b"".join(mixed_requests(1_000)))
                paths = [(await client.read_response()).json()["path"] for _ in range(1_000)]
                assert paths == [f"/r/{i}" for i in range(1_000)]
                assert 1 <= queue.most <= 16
            served.check_zero()

    run(main())


# --- node.toml -----------------------------------------------------------------------------------


def test_the_new_limits_are_in_node_toml_and_checked(tmp_path: Path) -> None:
    text = render_config(NodeConfig(data_dir=tmp_path))
    assert "\nmax_buffered_body_bytes = 268_435_456\n" in text
    assert "\nmax_pipelined_requests = 16\n" in text
    (tmp_path / "node.toml").write_text(text)
    assert load_config(tmp_path).limits == Limits()
    for setting, why in [
        ("max_pipelined_requests = 16", "max_pipelined_requests must be at least 1"),
        ("max_buffered_body_bytes = 268_435_456", "max_buffered_body_bytes must be at least"),
        ("max_handshakes_per_subnet = 64", "per_subnet must be at least max_handshakes_per"),
    ]:
        wrong = text.replace(setting, setting.split(" = ")[0] + " = 0")
        (tmp_path / "node.toml").write_text(wrong)
        with pytest.raises(ConfigError, match=why):
            load_config(tmp_path)


# --- request_timeout_s ----------------------------------------------------------------------------

TIMEOUT_LIMITS = Limits(request_timeout_s=0.4)


def test_a_handler_past_the_request_timeout_is_answered_503_and_the_connection_goes_on() -> None:
    cancelled: list[bytes] = []

    async def handler(request: Request) -> Response:
        if request.path == b"/slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(request.path)
                raise
        return Response(200, orjson.dumps({"path": request.path.decode()}))

    async def main() -> None:
        app = HttpApp(handler, TIMEOUT_LIMITS, lambda status: None)
        server = await asyncio.get_running_loop().create_server(app.protocol, "127.0.0.1", 0)
        try:
            async with await connect(server.sockets[0].getsockname()[1]) as client:
                for _ in range(2):  # the timer is re-armed for each request
                    await client.send_raw(post("/slow", b"s"))
                    assert_refused(await client.read_response(timeout=3.0), 503, "timeout")
                    response = await client.request("POST", "/fast", b"f")
                    assert (response.status, response.json()) == (200, {"path": "/fast"})
            assert cancelled == [b"/slow", b"/slow"]  # the handler was stopped, not left running
            await until(lambda: app.idle.is_set() and not app.connections, 2.0)
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_idle_and_unfinished_connections_close_after_the_request_timeout_busy_ones_do_not() -> None:
    async def main() -> None:
        async with serving(TIMEOUT_LIMITS) as served:
            idle = await connect(served.port)
            assert (await idle.request("POST", "/once", b"x")).status == 200
            unfinished = await connect(served.port)
            await unfinished.send_raw(b"POST /half HTTP/1.1\r\nContent-Le")
            busy = await connect(served.port)
            started = asyncio.get_running_loop().time()
            for i in range(12):  # 1.2 s of requests 0.1 s apart: three timeouts' worth
                response = await busy.request("POST", f"/busy/{i}", b"b")
                assert response.status == 200
                await asyncio.sleep(0.1)
            assert await idle.at_eof(timeout=0.1)
            assert await unfinished.at_eof(timeout=0.1)
            assert asyncio.get_running_loop().time() - started > 0.8
            assert not await busy.at_eof(timeout=0.1)  # still open
            await asyncio.sleep(0.6)
            assert await busy.at_eof(timeout=1.0)  # idle now: closed in its turn
            for client in (idle, unfinished, busy):
                await client.close()

    run(main())
