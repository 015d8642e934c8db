"""Node links: persistent, multiplexed TCP connections between service nodes.

One :class:`Link` per connection, in both directions: the side that connected sends ``REQUEST``
frames and waits for a ``RESPONSE`` or ``FAILURE`` with the same stream id; the side that accepted
answers them with its handler. Many requests share one connection, so forwarding an onion layer
costs no TCP or HTTP set-up. :class:`LinkPool` keeps one outgoing link per peer, opens it on first
use, and after a failure waits (exponential backoff, capped) before trying that peer again —
failing fast meanwhile, so the client can take another path. Frames: :mod:`veil.protocol.link`.

Backpressure: a link accepts at most ``max_streams`` requests in flight (more are answered
``OVERLOADED`` at once); writes wait while the transport's buffer is over its high-water mark; the
frame decoder refuses frames over ``max_frame`` before buffering them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from veil.protocol.link import (
    FailureCode,
    FrameDecoder,
    FrameKind,
    LinkProtocolError,
    encode_frame,
)

__all__ = ["HopFailed", "Link", "LinkPool"]

log = logging.getLogger("veil.node.links")

RequestHandler = Callable[[bytes], Awaitable[bytes]]


class HopFailed(Exception):
    """A request could not be carried or answered; ``code`` is what the previous hop may learn."""

    def __init__(self, code: FailureCode = FailureCode.PATH_FAILED) -> None:
        super().__init__(code.name)
        self.code = code


class Link(asyncio.Protocol):
    """One node-link connection (either end)."""

    def __init__(
        self,
        handler: RequestHandler | None,
        *,
        max_frame: int,
        max_streams: int,
        rpc_handler: RequestHandler | None = None,
    ) -> None:
        self.handler = handler
        self.rpc_handler = rpc_handler
        self.max_streams = max_streams
        self.decoder = FrameDecoder(max_frame)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._stream_ids = itertools.count(1)
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._outbox: list[bytes] = []

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self._can_write.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(HopFailed())
        self._waiting.clear()
        for task in self._serving:
            task.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except LinkProtocolError:
            log.warning("closing a node link that sent a malformed frame")
            self.close()
            return
        for frame in frames:
            if frame.kind is FrameKind.REQUEST:
                self._serve(self.handler, frame.stream, frame.body)
            elif frame.kind is FrameKind.RPC:
                self._serve(self.rpc_handler, frame.stream, frame.body)
            elif frame.kind in (FrameKind.RESPONSE, FrameKind.FAILURE):
                future = self._waiting.pop(frame.stream, None)
                if future is None or future.done():
                    continue
                if frame.kind is FrameKind.RESPONSE:
                    future.set_result(frame.body)
                else:
                    code = frame.body[0] if frame.body else FailureCode.PATH_FAILED
                    try:
                        failure = FailureCode(code)
                    except ValueError:
                        failure = FailureCode.PATH_FAILED
                    future.set_exception(HopFailed(failure))
            elif frame.kind is FrameKind.PING:
                self._send(FrameKind.PONG, frame.stream, b"")

    # --- both ends ----------------------------------------------------------------------------

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._serving)

    def _send(self, kind: FrameKind, stream: int, body: bytes) -> None:
        """Queue a frame; the frames queued in one turn of the event loop go out in one write."""
        if self.transport is None or self.transport.is_closing():
            return
        self._outbox.append(encode_frame(kind, stream, body))
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(frames))

    # --- the accepting end --------------------------------------------------------------------

    def _serve(self, handler: RequestHandler | None, stream: int, body: bytes) -> None:
        if handler is None or len(self._serving) >= self.max_streams:
            self._send(FrameKind.FAILURE, stream, bytes([FailureCode.OVERLOADED]))
            return
        task = asyncio.get_running_loop().create_task(self._answer(handler, stream, body))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _answer(self, handler: RequestHandler, stream: int, body: bytes) -> None:
        try:
            answer = await handler(body)
        except HopFailed as failure:
            self._send(FrameKind.FAILURE, stream, bytes([failure.code]))
            return
        except Exception:
            log.exception("node-link request handler failed")
            self._send(FrameKind.FAILURE, stream, bytes([FailureCode.PATH_FAILED]))
            return
        if not self._can_write.is_set():
            await self._can_write.wait()
        self._send(FrameKind.RESPONSE, stream, answer)

    # --- the connecting end -------------------------------------------------------------------

    async def request(
        self, body: bytes, timeout: float, kind: FrameKind = FrameKind.REQUEST
    ) -> bytes:
        """Send ``body`` as a REQUEST (or RPC) and return the RESPONSE; raise :class:`HopFailed`."""
        if self.closed.is_set() or self.transport is None:
            raise HopFailed()
        if len(self._waiting) >= self.max_streams:
            raise HopFailed(FailureCode.OVERLOADED)
        stream = next(self._stream_ids) & 0xFFFF_FFFF
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._waiting[stream] = future
        # A plain timer rather than asyncio.timeout(): this is the per-hop hot path.
        timer = loop.call_later(timeout, _expire, future)
        try:
            if not self._can_write.is_set():
                await self._can_write.wait()
            self._send(kind, stream, body)
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(stream, None)


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(HopFailed())


class LinkPool:
    """One outgoing link per peer address, opened on demand, with capped exponential backoff."""

    def __init__(
        self,
        *,
        max_frame: int,
        max_streams: int,
        connect_timeout_s: float,
        backoff_max_s: float,
    ) -> None:
        self.max_frame = max_frame
        self.max_streams = max_streams
        self.connect_timeout_s = connect_timeout_s
        self.backoff_max_s = backoff_max_s
        self._links: dict[tuple[str, int], Link] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._backoff: dict[tuple[str, int], tuple[float, float]] = {}  # address: (until, delay)

    async def get(self, address: tuple[str, int]) -> Link:
        link = self._links.get(address)
        if link is not None and not link.closed.is_set():
            return link
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            link = self._links.get(address)
            if link is not None and not link.closed.is_set():
                return link
            until, delay = self._backoff.get(address, (0.0, 0.0))
            if time.monotonic() < until:
                raise HopFailed()
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, link = await asyncio.get_running_loop().create_connection(
                        lambda: Link(None, max_frame=self.max_frame, max_streams=self.max_streams),
                        address[0],
                        address[1],
                    )
            except (OSError, TimeoutError):
                delay = min(self.backoff_max_s, max(0.1, delay * 2))
                self._backoff[address] = (time.monotonic() + delay, delay)
                raise HopFailed() from None
            self._backoff.pop(address, None)
            self._links[address] = link
            return link

    async def request(
        self,
        address: tuple[str, int],
        body: bytes,
        timeout: float,
        kind: FrameKind = FrameKind.REQUEST,
    ) -> bytes:
        link = await self.get(address)
        return await link.request(body, timeout, kind)

    async def close(self) -> None:
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            link.close()
        for link in links:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await link.closed.wait()
