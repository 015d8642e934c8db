"""HTTP/1.1 for the client RPC: llhttp (``httptools``) parses; a thin ``asyncio.Protocol`` drives.

One request at a time per connection: reading pauses while a request is handled and resumes once
its answer is written, so a client cannot queue unbounded work. Requests pipelined into one read
are queued and answered in order, at most ``max_pipelined_requests`` of them parsed and waiting;
the bytes after the one that fills the queue wait unparsed (at most one read, reading paused) and
are parsed once the queue is answered. llhttp parses whatever it is fed and tells no offsets, so:
a read that begins between requests is fed whole (a single request costs nothing more), and only
if it completes one request too many does ``on_message_complete`` stop llhttp; that read's work is
then undone (a fresh parser is in the same state, between requests) and the read fed again in
slices that cannot complete more requests than the queue has room for. Besides the request in
progress, each request that completes in a slice has two LFs in it (llhttp wants CRLF: its request
line's and its blank line's), and a Content-Length body in progress ends its request where it ends,
so a slice ends before the (2 * room)-th LF counted from there (``memchr``). A read that begins
inside a request is fed in such slices too. Were llhttp ever to complete more in a slice, that
request would be refused (429) after the answers of those before it, never queued.

Bodies over ``max_body_bytes`` are refused from their ``Content-Length`` (or, when chunked, as soon
as they pass the limit) with 413 and the connection closed, never read whole; a route may set a
smaller limit. Over all connections, at most ``max_buffered_body_bytes`` of request bodies are held
(``HttpApp.buffered_body_bytes``). A body counts from its first byte received until its request's
handler has answered, so also while it waits in the queue and while the handler holds it; it stops
counting when it is refused and when its connection is lost. A body that would take the node past
the cap is refused with 503 (``overloaded``), from its Content-Length when that alone does not fit
the room left, and the connection closed unread. A request with a body, for a path the app does
not serve or with another method, is refused (404, 405) as soon as its headers are in, its body
unread (one without a body is answered the same, and the connection kept). A route may have a
gate (``BodyGate``): its request must prove who sent it from its headers (and its Content-Length;
a chunked body is refused 411) before any byte of its body is kept, or it is refused with the
gate's answer, its body unread. ``gated_reserve_bytes`` of the cap are for gated routes' bodies
alone, so that strangers' partial bodies to other routes cannot starve them. A header section over
``max_header_bytes`` gets 431 (also while a header is still unfinished), a malformed request 400
(after the answers of the requests before it), a protocol upgrade or ``CONNECT`` 400 before any
handler sees it; an idle or slow connection is closed after ``request_timeout_s``. At most
``max_connections`` connections, and ``max_connections_per_address`` from one IPv4 address or IPv6
/64, are open at once; more are closed at once.

Each request carries its connection's address key (``Request.source``) for per-source limits; it
lives in memory only. Nothing here logs a peer address.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httptools

from veil.node.config import Limits
from veil.node.source import address_key

__all__ = ["BodyGate", "HttpApp", "HttpProtocol", "Request", "Response"]

log = logging.getLogger("veil.node.http")

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    408: b"Request Timeout",
    411: b"Length Required",
    413: b"Content Too Large",
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    507: b"Insufficient Storage",
}


@dataclass(slots=True)
class Request:
    method: bytes
    path: bytes
    body: bytes
    source: str = ""
    """The client's address key (IPv4 address or IPv6 /64): for per-source limits, never logged."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


class _ChunkedBody:
    """Where a chunked request body ends, found by walking its framing as it arrives (chunk-size
    lines, data and its CRLF, the trailer section up to its empty line), so that the bytes that
    follow it in a read are fed to llhttp as the next request's. Only positions are tracked:
    llhttp checks the framing, and refuses a body that breaks it."""

    __slots__ = ("chunks", "left", "limit", "line", "midline", "over", "state")

    SIZE, DATA, TRAILERS = 0, 1, 2
    _SIZE_PREFIX = 24  # past leading zeros, enough hex digits for any size llhttp takes

    def __init__(self, limit: int) -> None:
        self.state = self.SIZE
        self.left = 0  # in DATA: the chunk's bytes still to come, and its CRLF
        self.line = b""  # in SIZE: the start of a size line split across reads; else its length
        self.midline = False  # a size line began in an earlier read
        self.chunks = 0  # size lines begun
        self.limit = limit
        self.over = False  # a size line past ``limit`` begins where the walk stopped

    def end(self, data: bytes, pos: int, stop: int) -> int:
        """Walk ``data[pos:stop]``; the index just past the body's end if it ends there, else
        ``stop``; or, once ``limit`` chunks are in, where the next size line begins (``over``),
        so that exactly the bytes before it are parsed however the body was split."""
        while pos < stop:
            if self.state == self.SIZE and not self.midline:
                if self.chunks >= self.limit:
                    self.over = True
                    return pos
                self.chunks += 1
                self.midline = True
            if self.state == self.DATA:
                step = min(self.left, stop - pos)
                self.left -= step
                pos += step
                if not self.left:
                    self.state = self.SIZE
                continue
            lf = data.find(b"\n", pos, stop)
            if lf < 0:
                self._carry(data, pos, stop)
                return stop
            if self.state == self.SIZE:
                head = (self.line + data[pos:lf]).lstrip(b"0")[: self._SIZE_PREFIX]
                self.line = b""
                self.midline = False
                digits = len(head) - len(head.lstrip(b"0123456789abcdefABCDEF"))
                size = int(head[:digits], 16) if digits else 0  # no digits: llhttp refuses it
                if not size:
                    self.state = self.TRAILERS
                elif lf + 3 + size <= stop:  # the whole chunk is here: on to the next size line
                    pos = lf + 3 + size
                    continue
                else:
                    self.state, self.left = self.DATA, size + 2
            else:
                empty = len(self.line) + (lf - pos) <= 1  # a CRLF alone ends the trailers
                self.line = b""
                if empty:
                    self.state = self.SIZE
                    return lf + 1
            pos = lf + 1
        return stop

    def _carry(self, data: bytes, pos: int, stop: int) -> None:
        """Keep what a line split across reads needs: a size line's first bytes, or, for a
        trailer line, its length (as that many placeholder bytes, at most two)."""
        if self.state == self.SIZE:  # (llhttp takes leading zeros: any number of them)
            self.line = (self.line + data[pos:stop]).lstrip(b"0")[: self._SIZE_PREFIX]
        else:
            self.line = (self.line + data[pos:stop])[:2]


class _QueueFull(Exception):
    """Raised in ``on_message_complete`` to stop llhttp when the queue of requests is full."""


def _error(status: int, code: str, message: str) -> Response:
    body = b'{"error":{"code":"%s","message":"%s"}}' % (code.encode(), message.encode())
    return Response(status, body)


@dataclass(frozen=True, slots=True)
class BodyGate:
    """A route whose sender must be proven from the request's headers before its body is read."""

    headers: frozenset[bytes]
    """The (lower-case) header names ``check`` reads; a name sent twice is given as ``b""``."""
    check: Callable[[Mapping[bytes, bytes], int], Response | None]
    """``(those headers, Content-Length)`` → ``None`` to read the body, or the refusal."""


class HttpApp:
    """Shared state of every connection: the handler, limits, and the set of live connections."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        on_refused: Callable[[int], None],
        *,
        body_limits: dict[bytes, tuple[int, str]] | None = None,
        on_limit: Callable[[str], None] | None = None,
        routes: Mapping[bytes, bytes] | None = None,
        body_gates: Mapping[bytes, BodyGate] | None = None,
        gated_reserve_bytes: int = 0,
        wait_turn: Callable[[], None] | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.on_refused = on_refused
        self.body_limits = body_limits or {}
        """A smaller body limit for some paths, with the limit's name."""
        self.on_limit = on_limit or (lambda limit: None)
        """Told the name of a limit each time it refuses a connection."""
        self.routes = routes
        """Path → method; a request for another is refused when its headers are in, its body
        unread (None: the handler answers every request)."""
        self.body_gates = body_gates or {}
        """Path → the gate its requests pass before their bodies are read."""
        self.gate_headers = frozenset(name for g in self.body_gates.values() for name in g.headers)
        self.gated_reserve_bytes = gated_reserve_bytes
        """Bytes of ``max_buffered_body_bytes`` that only bodies of gated routes may use."""
        self.wait_turn = wait_turn
        """Called before each read is parsed; may block briefly (a node's store writer applying
        a batch: ``veil.node.writer.ApplyTurn``)."""
        self.connections: set[HttpProtocol] = set()
        self.by_source: dict[str, int] = {}
        self.in_flight = 0
        self.buffered_body_bytes = 0
        """Bytes of request bodies held over all connections (at most max_buffered_body_bytes)."""
        self.idle = asyncio.Event()
        self.idle.set()

    def protocol(self) -> HttpProtocol:
        return HttpProtocol(self)

    def close_idle(self) -> None:
        """Close every connection not handling a request (for shutdown)."""
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.busy = False
        self._pending: collections.deque[tuple[Request, bool]] = collections.deque()
        self._url = bytearray()
        self._path = b""
        """The request's path (its URL up to ``?``), once its headers are in."""
        self._body: list[bytes] = []
        self._body_len = 0
        self._partial = 0
        """Bytes of the body being received counted in ``app.buffered_body_bytes``."""
        self._held = 0
        """Everything this connection counts there: ``_partial`` and the bodies of the requests
        queued or being handled."""
        self._unparsed = b""
        """Bytes of a read kept back, unparsed, while the queue of parsed requests is full."""
        self._in_message = False
        """Whether llhttp is inside a request (from its first byte until it is complete)."""
        self._overflowed = False
        """Set when ``on_message_complete`` stopped llhttp: one request too many for the queue."""
        self._content_length = 0
        self._chunked = False
        self._gate_values: dict[bytes, bytes] = {}
        self._gated = False
        """The request being received passed its route's gate (it may use the reserve)."""
        self._refused = False
        self._in_headers = True
        self._pending_header_bytes = 0
        """Bytes of the header section being received (``max_header_bytes``)."""
        self._tail = b""
        """The last bytes fed, while inside a request: a CRLF CRLF may straddle two reads."""
        self._chunks = _ChunkedBody(app.limits.max_body_chunks)
        """The framing of the chunked body being received."""
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        """When the current wait ends (loop time): for the next request, or for the handler."""
        self._handling: asyncio.Task[None] | None = None
        """The task in the handler, while it is there (it is cancelled past the deadline)."""
        self._timed_out = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.source = ""
        self._final: Response | None = None
        """A refusal to send once the requests before it are answered."""

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        app = self.app
        if len(app.connections) >= app.limits.max_connections:
            app.on_refused(503)
            app.on_limit("max_connections")
            self.transport.abort()  # type: ignore[union-attr]
            return
        source = address_key(transport.get_extra_info("peername"))
        if app.by_source.get(source, 0) >= app.limits.max_connections_per_address:
            app.on_refused(503)
            app.on_limit("max_connections_per_address")
            self.transport.abort()  # type: ignore[union-attr]
            return
        self.source = source
        app.by_source[source] = app.by_source.get(source, 0) + 1
        app.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.app.connections:
            self.app.connections.discard(self)
            left = self.app.by_source.get(self.source, 0) - 1
            if left > 0:
                self.app.by_source[self.source] = left
            else:
                self.app.by_source.pop(self.source, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._can_write.set()
        # Whatever it still counts: the body being received, the queued requests' and the handled
        # one's (later releases for those are no-ops once _held is 0).
        self._drop_body()
        self._release(self._held)
        self._unparsed = b""

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.app.wait_turn is not None:
            self.app.wait_turn()
        if self._unparsed:  # (reading is paused while bytes are kept back: not expected)
            data = self._unparsed + data
            self._unparsed = b""
            self._feed_slices(data)
        elif self._in_message:
            self._feed_slices(data)
        else:
            self._feed_whole(data)

    def _feed_whole(self, data: bytes) -> None:
        """Parse a read that starts between requests in one go: a single request costs nothing
        more. Should the read complete more requests than the queue has room for,
        ``on_message_complete`` stops llhttp at the first one too many; what the read did is
        undone and it is parsed again in slices, from the same state (between requests: a fresh
        parser's)."""
        before = len(self._pending)
        header_bytes = self._pending_header_bytes
        if self._parse(data) or not self._overflowed:
            return
        while len(self._pending) > before:
            request, _ = self._pending.pop()
            self._release(len(request.body))
        self._drop_body()
        self._overflowed = False
        self._in_message = False
        self._in_headers = True
        self._pending_header_bytes = header_bytes
        self.parser = httptools.HttpRequestParser(self)
        self._feed_slices(data)

    def _feed_slices(self, data: bytes) -> None:
        """Parse ``data`` in slices that never complete more requests than the queue has room
        for (``max_pipelined_requests``): the bytes after the request that fills it are kept in
        ``_unparsed``, reading paused, until the queue is answered."""
        start, end = 0, len(data)
        cap = self.app.limits.max_pipelined_requests
        while start < end:
            room = cap - len(self._pending)
            if room <= 0:
                self._unparsed = data[start:]
                return
            cut = self._slice_end(data, start, end, room)
            if not self._parse(data, start, cut):
                if self._overflowed and not self._refused:  # (the slices' bound did not hold)
                    self._refuse(_error(429, "too_many_requests", "too many pipelined requests"))
                return
            start = cut

    def _parse(self, data: bytes, start: int = 0, end: int | None = None) -> bool:
        """Feed llhttp ``data[start:end]``; whether to go on (False: refused, or stopped by a full
        queue).

        ``max_header_bytes`` bounds a header section's bytes as received, from the request line's
        first byte to the blank line's LF, the same however the bytes are split into reads. The
        bytes are fed in slices that each end where a header section may end (a CRLF CRLF: llhttp
        wants CRLF), where a Content-Length body ends, or where a chunked body ends (its framing
        walked as it arrives, :class:`_ChunkedBody`); a header slice never holds more than the one
        byte past the limit that shows it was passed. So every header section's bytes are counted
        exactly, whatever comes before them in the read. A request that arrives in one read is two
        feeds: its headers, its body."""
        end = len(data) if end is None else end
        pos = start
        limit = self.app.limits.max_header_bytes
        view: memoryview | None = None
        while pos < end:
            stop = self._slice_stop(data, pos, end, limit)
            if pos == 0 and stop == len(data):
                piece: bytes | memoryview = data
            else:
                if view is None:
                    view = memoryview(data)
                piece = view[pos:stop]
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                if not self._refused:
                    self._refuse(_error(400, "bad_request", "protocol upgrades are not supported"))
                return False
            except httptools.HttpParserError:
                if not self._refused and not self._overflowed:
                    self._refuse(_error(400, "bad_request", "malformed HTTP request"))
                return False
            if self._refused:
                return False
            if self._chunks.over and self._chunked and not self._in_headers:
                self.app.on_limit("max_body_chunks")
                self._refuse(_error(413, "too_large", "too many chunks in the request body"))
                return False
            # A header section still open past the limit: refused before it grows any further.
            if self._in_headers and self._pending_header_bytes > limit:
                self._refuse(_error(431, "too_large", "request headers too large"))
                return False
            pos = stop
        if self._in_message:  # a CRLF CRLF may straddle this read and the next
            self._tail = (self._tail + data[max(start, end - 3) : end])[-3:]
        return True

    def _slice_stop(self, data: bytes, pos: int, end: int, limit: int) -> int:
        """Where the slice of ``data`` fed from ``pos`` ends (see :meth:`_parse`); counts the
        header bytes in it."""
        if self._in_headers:
            room = limit - self._pending_header_bytes + 1
            stop = self._boundary(data, pos, min(end, pos + room))
            self._pending_header_bytes += stop - pos
            return stop
        if self._chunked:
            return self._chunks.end(data, pos, end)
        if self._content_length > self._body_len:
            return min(end, pos + self._content_length - self._body_len)
        return end

    def _boundary(self, data: bytes, start: int, stop: int) -> int:
        """The end of the first CRLF CRLF that ends in ``data[start:stop]``, or ``stop``. At the
        start of a read in the middle of a request, one may have begun in the read before (the
        last bytes fed, ``_tail``); inside a read, every slice before ``start`` ended where its
        own request's part did, so none straddles ``start``."""
        if start == 0 and self._in_message and self._tail:
            joined = self._tail + data[: min(3, stop)]
            found = joined.find(b"\r\n\r\n")
            if found >= 0:
                return found + 4 - len(self._tail)
        found = data.find(b"\r\n\r\n", start, stop)
        return stop if found < 0 else found + 4

    def _slice_end(self, data: bytes, start: int, end: int, room: int) -> int:
        """The end of the longest slice of ``data`` from ``start`` that cannot complete more than
        ``room`` requests. Besides the request in progress, each request that completes in the
        slice has at least two LFs in it (llhttp wants CRLF: its request line's and its blank
        line's), so the slice may hold 2 * room - 1 LFs. A Content-Length body in progress ends
        its request exactly where it ends: LFs are counted from there. (Each ``find`` is a
        ``memchr``; only reads that begin inside a request, or hold too many, come here.)"""
        pos = start
        if not self._in_headers and not self._chunked:
            left = self._content_length - self._body_len
            if left > 0:
                pos += left
        budget = 2 * room - 1
        find = data.find
        while pos < end:
            pos = find(b"\n", pos, end)  # memchr
            if pos < 0:
                return end
            budget -= 1
            if budget < 0:
                return pos
            pos += 1
        return end

    # --- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url.clear()
        self._body.clear()
        self._body_len = 0
        self._content_length = 0
        self._chunked = False
        self._gate_values.clear()
        self._gated = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" and value.strip().isdigit():
            self._content_length = int(value)
        elif lowered == b"transfer-encoding":
            self._chunked = True
        if lowered in self.app.gate_headers:  # (bounded: max_header_bytes)
            self._gate_values[lowered] = b"" if lowered in self._gate_values else value

    def on_headers_complete(self) -> None:
        self._path = bytes(self._url).split(b"?", 1)[0]
        self._in_headers = False
        header_bytes, self._pending_header_bytes = self._pending_header_bytes, 0
        if self._chunked:
            self._chunks = _ChunkedBody(self.app.limits.max_body_chunks)
        if self._refused:
            return
        refusal = None
        if header_bytes > self.app.limits.max_header_bytes:  # it ended one byte past the limit
            refusal = _error(431, "too_large", "request headers too large")
        elif self.parser.should_upgrade() or self.parser.get_method() == b"CONNECT":
            refusal = _error(400, "bad_request", "protocol upgrades are not supported")
        if refusal is not None:
            self._refuse(refusal)
            return
        routes = self.app.routes
        if routes is not None and (self._content_length or self._chunked):
            method = routes.get(self._path)
            if method is None:
                self._refuse(_error(404, "not_found", "no such endpoint"))
                return
            if method != self.parser.get_method():
                self._refuse(_error(405, "method_not_allowed", "method not allowed"))
                return
        limit, name = self._body_limit()
        if self._content_length > limit:
            self.app.on_limit(name)
            self._refuse(_error(413, "too_large", "request body too large"))
            return
        if not self._through_gate():
            return
        if self._content_length > self._buffer_room():
            self._overloaded()

    def _through_gate(self) -> bool:
        """Whether the request may go on to its body: its route has no gate, or it passed it."""
        gate = self.app.body_gates.get(self._path)
        if gate is None:
            return True
        if self._chunked:
            self._refuse(_error(411, "length_required", "this route needs a Content-Length"))
            return False
        refusal = gate.check(self._gate_values, self._content_length)
        if refusal is not None:
            self._refuse(refusal)
            return False
        self._gated = True
        return True

    def _buffer_room(self) -> int:
        """Bytes of request bodies the node may still take for the request being received."""
        app = self.app
        reserve = 0 if self._gated else app.gated_reserve_bytes
        return app.limits.max_buffered_body_bytes - reserve - app.buffered_body_bytes

    def _body_limit(self) -> tuple[int, str]:
        default = (self.app.limits.max_body_bytes, "max_body_bytes")
        return self.app.body_limits.get(self._path, default)

    def on_body(self, chunk: bytes) -> None:
        if self._refused:
            return
        n = len(chunk)
        self._body_len += n
        limit, name = self._body_limit()
        if self._body_len > limit:
            self.app.on_limit(name)
            self._refuse(_error(413, "too_large", "request body too large"))
            return
        if n > self._buffer_room():
            self._overloaded()
            return
        app = self.app
        app.buffered_body_bytes += n
        self._held += n
        self._partial += n
        self._body.append(chunk)

    def _overloaded(self) -> None:
        self.app.on_limit("max_buffered_body_bytes")
        self._refuse(_error(503, "overloaded", "too many request bodies in flight"))

    def on_message_complete(self) -> None:
        self._in_headers = True
        self._in_message = False
        if self._refused or self.transport is None:
            return
        if len(self._pending) >= self.app.limits.max_pipelined_requests:
            # One request too many in a read fed whole: stop llhttp here (_feed_whole parses the
            # read again, in slices). In a slice, it cannot happen (_feed_slices refuses it).
            self._overflowed = True
            raise _QueueFull
        request = Request(
            self.parser.get_method(),
            self._path,
            b"".join(self._body),
            self.source,
        )
        self._body.clear()
        self._partial = 0  # its bytes stay counted, now as the request's, until it is answered
        keep_alive = bool(self.parser.should_keep_alive())
        # Pipelined requests that arrived in the same read wait their turn: answers keep order.
        self._pending.append((request, keep_alive))
        self.transport.pause_reading()
        if not self.busy:
            self.busy = True
            self.app.in_flight += 1
            self.app.idle.clear()
            asyncio.get_running_loop().create_task(self._serve_pending())

    # --- internals -----------------------------------------------------------------------------

    async def _serve_pending(self) -> None:
        keep_alive = True
        try:
            while self._pending and keep_alive:
                request, keep_alive = self._pending.popleft()
                self._arm_timer()  # the handler's time
                try:
                    response = await self._answer(request)
                finally:
                    if request.body:
                        self._release(len(request.body))
                await self._can_write.wait()
                self._write(response, keep_alive)
                if not self._pending and self._unparsed and keep_alive:
                    # The bytes kept back while the queue was full, parsed now that it is empty
                    # (reading stays paused): they may queue more requests, or refuse one.
                    rest, self._unparsed = self._unparsed, b""
                    if self.transport is not None and not self.transport.is_closing():
                        self._feed_slices(rest)
        finally:
            while self._pending:  # not answered: the connection closes
                request, _ = self._pending.popleft()
                self._release(len(request.body))
            self._unparsed = b""
            self.busy = False
            self.app.in_flight -= 1
            if self.app.in_flight == 0:
                self.app.idle.set()
        if self._final is not None:  # refused behind the requests just answered
            if keep_alive:  # (unless the last answer already closed the connection)
                self.app.on_refused(self._final.status)
                self._write(self._final, keep_alive=False)
            self.close()
            return
        if keep_alive and self.transport is not None and not self.transport.is_closing():
            self._arm_timer()
            self.transport.resume_reading()
        else:
            self.close()

    async def _answer(self, request: Request) -> Response:
        task = self._handling = asyncio.current_task()
        try:
            return await self.app.handler(request)
        except asyncio.CancelledError:
            if not self._timed_out:
                raise  # the connection or the node is going away
            return _error(503, "timeout", "the request took too long")
        except Exception:
            log.exception("request handler failed")
            return _error(500, "internal", "internal error")
        finally:
            self._handling = None
            if self._timed_out:  # (also when the handler swallowed the cancellation)
                self._timed_out = False
                if task is not None:
                    task.uncancel()

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = [
            b"HTTP/1.1 %d %s\r\n" % (response.status, _REASONS.get(response.status, b"Unknown")),
            b"Content-Type: %s\r\n" % response.content_type,
            b"Content-Length: %d\r\n" % len(response.body),
        ]
        head.extend(b"%s: %s\r\n" % header for header in response.extra_headers)
        head.append(
            b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n"
        )
        self.transport.write(b"".join(head) + response.body)

    def _release(self, n: int) -> None:
        """Stop counting ``n`` bytes of this connection's bodies (never more than it counts)."""
        n = min(n, self._held)
        self._held -= n
        self.app.buffered_body_bytes -= n

    def _drop_body(self) -> None:
        """Forget the body being received, and stop counting it."""
        self._release(self._partial)
        self._partial = 0
        self._body.clear()

    def _refuse(self, response: Response) -> None:
        """Answer an error and close without reading the rest of the request. Requests received
        before it are answered first, in order."""
        self._refused = True
        self._unparsed = b""
        self._drop_body()  # the refused request's body so far
        if self.busy or self._pending:
            self._final = response
            return
        self.app.on_refused(response.status)
        self._write(response, keep_alive=False)
        self.close()

    def _arm_timer(self) -> None:
        """Start ``request_timeout_s`` for what the connection waits for now: the next request
        (read whole), or the handler's answer. One timer per connection, moved lazily: on the hot
        path this only sets ``_deadline``, and the timer, when it fires early, sleeps again."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.app.limits.request_timeout_s
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:  # the deadline moved since the timer was set
            self._timer = loop.call_at(self._deadline, self._on_timeout)
        elif self._handling is not None:  # the handler is too slow: it is stopped, 503
            self._timed_out = True
            self._handling.cancel()
            self._arm_timer()
        elif not self.busy:  # no request read whole in time
            self.close()
        else:  # between a handler and its answer's write: the next handler, or the idle wait
            self._arm_timer()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
