"""Node links, version 2: authenticated, encrypted, multiplexed connections between service nodes.

A link opens with a Noise_IK handshake keyed by both nodes' identity keys (``veil._core.NodeKey``;
``docs/protocol.md``, "Node links, version 2"). The connecting node already knows, from its
announcement, the key of the node it calls; the accepting node learns the caller's key from the
first message and asks :class:`LinkGate` whether that key belongs to a node it admits *before* it
answers: a stranger gets the connection closed, having had no frame parsed, no onion peeled and no
JSON read. After the handshake every byte is an encrypted record (``LinkCipher``); inside the
records run the frames of :mod:`veil.protocol.link`.

One :class:`Link` per connection, in both directions: the side that connected sends ``REQUEST`` and
``RPC`` frames and waits for a ``RESPONSE`` or ``FAILURE`` with the same stream id; the side that
accepted answers them with its handlers, which are told which node asked. :class:`LinkPool` keeps
one outgoing link per peer, opens it on first use (handshake included), replaces it when it grows
old, and after a failure waits (exponential backoff, capped) before trying that peer again.

Bounds (``[links]`` in node.toml), each counted in ``veil_link_events_total`` when it triggers:
unauthenticated connections in handshake, overall, per source address and per subnet (IPv4 /24,
IPv6 /48); links per admitted peer
(the oldest goes); a handshake that does not finish in time; a frame left half-received; an idle
link; a peer that does not read what it is sent (write buffer cap); at most ``max_streams`` requests
and ``max_serving_bytes`` of their bodies in flight per link (more are answered ``OVERLOADED``);
frames larger than the limit. When the handshake slots are full, a new connection closes the oldest
one still in handshake. Writes of answers and requests wait while the transport is over its
high-water mark; the small control answers (``PONG`` is dropped then, ``FAILURE`` is queued) are
bounded by the write-buffer cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from veil import _core
from veil.clock import now_ms
from veil.errors import DecryptionError, InvalidInputError, VeilError
from veil.node.config import LinkSettings
from veil.node.source import address_key, subnet_key
from veil.protocol.link import (
    HANDSHAKE_INIT_LEN,
    HANDSHAKE_RESPONSE_LEN,
    FailureCode,
    FrameKind,
)

__all__ = [
    "HopFailed",
    "Link",
    "LinkGate",
    "LinkHandlers",
    "LinkPool",
    "LinkSettings",
    "PeerHandler",
]

log = logging.getLogger("veil.node.links")

_REQUEST, _RESPONSE, _FAILURE = (
    int(FrameKind.REQUEST),
    int(FrameKind.RESPONSE),
    int(FrameKind.FAILURE),
)
_PING, _RPC = int(FrameKind.PING), int(FrameKind.RPC)

PeerHandler = Callable[[bytes, bytes], Awaitable[bytes]]
"""An accepting link's handler: ``(peer node id, frame body) -> answer body``."""

Count = Callable[[str], None]


class HopFailed(Exception):
    """A request could not be carried or answered; ``code`` is what the previous hop may learn,
    ``limit`` the configured limit that refused it, if one did (for the node's counters only)."""

    def __init__(
        self, code: FailureCode = FailureCode.PATH_FAILED, *, limit: str | None = None
    ) -> None:
        super().__init__(code.name)
        self.code = code
        self.limit = limit


@dataclass(frozen=True, slots=True)
class LinkHandlers:
    """What an accepting link does with the requests of an admitted peer."""

    request: PeerHandler
    """``REQUEST`` frames: an onion layer (hops ‖ layer)."""
    rpc: PeerHandler
    """``RPC`` frames: node-to-node requests (``veil.protocol.node_rpc``)."""


class _State(enum.Enum):
    HANDSHAKE = 1
    OPEN = 2
    CLOSED = 3


class LinkGate:
    """The accepting side's admission: who may open a link, and how many may be open at once.

    ``admit(x25519)`` answers the node id (Ed25519 key) of an admitted node with that static key,
    or ``None``; it is the node's current view (plus its configured peers). :meth:`retain` closes
    the links of nodes that left it.
    """

    def __init__(
        self, settings: LinkSettings, admit: Callable[[bytes], bytes | None], count: Count
    ) -> None:
        self.settings = settings
        self.admit = admit
        self.count = count
        self._in_handshake: dict[Link, tuple[str, str]] = {}
        """Connections in handshake, oldest first, each with its source's address and subnet."""
        self._handshakes_by_address: dict[str, int] = {}
        self._handshakes_by_subnet: dict[str, int] = {}
        self._links_by_peer: dict[bytes, list[Link]] = {}
        self._last_handshake: dict[bytes, int] = {}
        """The newest handshake timestamp of each admitted node's X25519 key."""

    @property
    def handshaking(self) -> int:
        """Connections in handshake now (accepted, not yet authenticated)."""
        return len(self._in_handshake)

    def start_handshake(self, link: Link, source: str) -> bool:
        """Room for one more unauthenticated connection from ``source``? (Counts it if so.)

        An address, or a subnet, at its own cap is refused. When all ``max_handshakes`` slots are
        taken, the oldest connection still in handshake is closed to make room (the slowloris
        defence): a node's honest caller sends its whole first message as it connects and is
        answered within one round trip, so connections that sit in handshake are the ones that
        go, and holding the slots takes opening connections faster than honest handshakes
        finish, not just opening them once.
        """
        settings = self.settings
        if self._handshakes_by_address.get(source, 0) >= settings.max_handshakes_per_address:
            self.count("refused_handshakes_per_address")
            return False
        subnet = subnet_key(source)
        if self._handshakes_by_subnet.get(subnet, 0) >= settings.max_handshakes_per_subnet:
            self.count("refused_handshakes_per_subnet")
            return False
        if len(self._in_handshake) >= settings.max_handshakes:
            if not self._in_handshake:
                self.count("refused_handshakes_full")
                return False
            self.count("closed_oldest_handshake")
            oldest = next(iter(self._in_handshake))
            oldest.abort()
            self.end_handshake(oldest)  # its slot is free now, not once the loop reports it closed
        self._in_handshake[link] = (source, subnet)
        _add(self._handshakes_by_address, source, 1)
        _add(self._handshakes_by_subnet, subnet, 1)
        return True

    def end_handshake(self, link: Link) -> None:
        """``link`` is out of handshake (authenticated, refused or closed); only once counts."""
        counted = self._in_handshake.pop(link, None)
        if counted is None:
            return
        source, subnet = counted
        _add(self._handshakes_by_address, source, -1)
        _add(self._handshakes_by_subnet, subnet, -1)

    def open(self, link: Link, remote_x25519: bytes, timestamp_ms: int) -> bytes | None:
        """The peer's node id if it is admitted and its handshake's timestamp is fresh and newer
        than the last one it sent (a replayed first message is not); its oldest links beyond the
        cap are closed."""
        peer = self.admit(remote_x25519)
        if peer is None:
            self.count("refused_not_admitted")
            return None
        skew_ms = self.settings.handshake_max_skew_s * 1000
        last = self._last_handshake.get(remote_x25519, -1)
        if abs(timestamp_ms - now_ms()) > skew_ms or timestamp_ms <= last:
            self.count("refused_stale_or_replayed_handshake")
            return None
        self._last_handshake[remote_x25519] = timestamp_ms
        links = self._links_by_peer.setdefault(peer, [])
        links.append(link)
        while len(links) > self.settings.max_links_per_peer:
            self.count("closed_beyond_links_per_peer")
            links.pop(0).close()
        return peer

    def closed(self, link: Link) -> None:
        if link.peer is None:
            return
        links = self._links_by_peer.get(link.peer)
        if links is not None and link in links:
            links.remove(link)
            if not links:
                del self._links_by_peer[link.peer]

    def retain(self, admitted: Iterable[bytes]) -> int:
        """Close the links of every peer not in ``admitted`` (node ids); return how many."""
        keep = set(admitted)
        self._last_handshake = {
            k: t for k, t in self._last_handshake.items() if self.admit(k) is not None
        }
        closed = 0
        for peer in [p for p in self._links_by_peer if p not in keep]:
            for link in list(self._links_by_peer.get(peer, [])):
                link.close()
                closed += 1
        if closed:
            self.count("closed_peer_left_view")
        return closed

    def links(self) -> list[Link]:
        return [link for links in self._links_by_peer.values() for link in links]


class Link(asyncio.Protocol):
    """One node-link connection (either end). Build it with :meth:`accepting` or :meth:`calling`."""

    def __init__(
        self,
        *,
        key: _core.NodeKey,
        settings: LinkSettings,
        count: Count,
        remote_x25519: bytes | None,
        timestamp_ms: int,
        gate: LinkGate | None,
        handlers: LinkHandlers | None,
        wait_turn: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._wait_turn = wait_turn
        """Called before each read is opened; may block briefly (the node's store writer
        applying a batch: ``veil.node.writer.ApplyTurn``)."""
        self.count = count
        self.peer: bytes | None = None
        """The node id (Ed25519 key) at the other end, known once the handshake is done."""
        self._key = key
        self._gate = gate
        self._handlers = handlers
        self._initiator = (
            key.link_initiate(remote_x25519, timestamp_ms) if remote_x25519 is not None else None
        )
        self._cipher: _core.LinkCipher | None = None
        self._state = _State.HANDSHAKE
        self._handshake_buffer = bytearray()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._serving: dict[asyncio.Task[None], int] = {}
        """Requests being answered, with their bodies' sizes."""
        self._serving_bytes = 0
        self._stream_ids = itertools.count(1)
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._outbox: list[tuple[int, int, bytes]] = []
        now = time.monotonic()
        self.opened_at = now
        self.fresh_until = now + settings.max_age_s
        self._last_activity = now
        self._progress_at = now
        self._rekeyed_at = now
        self._sealed_since_rekey = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self.retired = False

    @classmethod
    def accepting(
        cls,
        *,
        key: _core.NodeKey,
        settings: LinkSettings,
        count: Count,
        gate: LinkGate,
        handlers: LinkHandlers,
        wait_turn: Callable[[], None] | None = None,
    ) -> Link:
        """The accepting end: answers only nodes ``gate`` admits."""
        return cls(
            key=key,
            settings=settings,
            count=count,
            remote_x25519=None,
            timestamp_ms=0,
            gate=gate,
            handlers=handlers,
            wait_turn=wait_turn,
        )

    @classmethod
    def calling(
        cls,
        *,
        key: _core.NodeKey,
        settings: LinkSettings,
        count: Count,
        remote_x25519: bytes,
        timestamp_ms: int,
        wait_turn: Callable[[], None] | None = None,
    ) -> Link:
        """The connecting end, to the node whose announced X25519 key is ``remote_x25519``;
        ``timestamp_ms`` must grow from one handshake to the next (:class:`LinkPool` sees to it)."""
        return cls(
            key=key,
            settings=settings,
            count=count,
            remote_x25519=remote_x25519,
            timestamp_ms=timestamp_ms,
            gate=None,
            handlers=None,
            wait_turn=wait_turn,
        )

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._gate is not None:
            source = address_key(transport.get_extra_info("peername"))
            if not self._gate.start_handshake(self, source):
                self.abort()
                return
        elif self._initiator is not None:
            transport.write(self._initiator.message)  # type: ignore[attr-defined]
        self._arm_watchdog()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_handshake()
        self._state = _State.CLOSED
        if self._gate is not None:
            self._gate.closed(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if not self.ready.done():
            self.ready.set_exception(HopFailed())
            self.ready.exception()  # retrieved: a failed dial is reported by the pool
        self.closed.set()
        self._can_write.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(HopFailed())
        self._waiting.clear()
        for task in list(self._serving):
            task.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        if self._wait_turn is not None:
            self._wait_turn()
        if self._state is _State.HANDSHAKE:
            data = self._handshake(data)
            if not data:
                return
        if self._cipher is None:
            return
        self._last_activity = time.monotonic()
        try:
            # Records opened and frames split in one Rust call (docs/performance.md, "Node links").
            frames = self._cipher.open_frames(data, self.settings.max_frame)
        except DecryptionError:
            self.count("closed_bad_record")
            self.abort()
            return
        except InvalidInputError:
            self.count("closed_bad_frame")
            self.abort()
            return
        if frames or not self._cipher.pending:
            self._progress_at = self._last_activity
        for kind, stream, body in frames:
            if kind == _REQUEST:
                self._serve(self._handlers.request if self._handlers else None, stream, body)
            elif kind == _RPC:
                self._serve(self._handlers.rpc if self._handlers else None, stream, body)
            elif kind in (_RESPONSE, _FAILURE):
                self._settle(kind, stream, body)
            elif kind == _PING and self._can_write.is_set():
                self._send(FrameKind.PONG, stream, b"")

    # --- the handshake ------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        """Take handshake bytes; return what follows the handshake (records), if anything."""
        self._handshake_buffer += data
        buffered = self._handshake_buffer
        want = HANDSHAKE_RESPONSE_LEN if self._initiator is not None else HANDSHAKE_INIT_LEN
        if len(buffered) >= 2 and int.from_bytes(buffered[:2], "big") != want - 2:
            return self._refuse("closed_bad_handshake")
        if len(buffered) < want:
            return b""
        message, rest = bytes(buffered[:want]), bytes(buffered[want:])
        self._handshake_buffer = bytearray()
        if self._initiator is not None:
            return self._finish_calling(message, rest)
        return self._finish_accepting(message, rest)

    def _finish_calling(self, message: bytes, rest: bytes) -> bytes:
        assert self._initiator is not None
        try:
            self._cipher = self._initiator.finish(message)
        except DecryptionError:
            return self._refuse("closed_bad_handshake")
        self._initiator = None
        self._state = _State.OPEN
        self.count("opened_calling")
        if not self.ready.done():
            self.ready.set_result(None)
        return rest

    def _finish_accepting(self, message: bytes, rest: bytes) -> bytes:
        assert self._gate is not None
        if rest:  # the caller may send records only once it has the answer
            return self._refuse("closed_bad_handshake")
        try:
            responder = self._key.link_accept(message)  # reads; answers only once admitted
        except DecryptionError:
            return self._refuse("closed_bad_handshake")
        self._end_handshake()
        peer = self._gate.open(self, responder.remote, responder.timestamp_ms)
        if peer is None:
            self.abort()
            return b""
        answer, cipher = responder.answer()
        self.peer = peer
        self._cipher = cipher
        self._state = _State.OPEN
        self.count("opened_accepting")
        if not self.ready.done():
            self.ready.set_result(None)
        if self.transport is not None:
            self.transport.write(answer)
        return b""

    def _refuse(self, event: str) -> bytes:
        self.count(event)
        self.abort()
        return b""

    def _end_handshake(self) -> None:
        if self._gate is not None:
            self._gate.end_handshake(self)

    # --- both ends ----------------------------------------------------------------------------

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping anything not yet written (a hostile or broken peer)."""
        self._state = _State.CLOSED
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    @property
    def serving_bytes(self) -> int:
        """Bytes of the peer's requests being answered on this link."""
        return self._serving_bytes

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._serving)

    def _send(self, kind: FrameKind, stream: int, body: bytes) -> None:
        """Queue a frame; the frames queued in one turn of the event loop go out in one write."""
        if self.transport is None or self.transport.is_closing() or self._cipher is None:
            return
        self._outbox.append((kind, stream, body))
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        transport, cipher = self.transport, self._cipher
        if transport is None or transport.is_closing() or cipher is None or not frames:
            return
        now = time.monotonic()
        self._sealed_since_rekey += sum(len(body) + 9 for _, _, body in frames)
        rekey = (
            self._sealed_since_rekey >= self.settings.rekey_bytes
            or now - self._rekeyed_at >= self.settings.rekey_interval_s
        )
        if rekey:
            self._sealed_since_rekey = 0
            self._rekeyed_at = now
            self.count("rekeyed")
        transport.write(cipher.seal_frames(frames, rekey))
        self._last_activity = now
        if transport.get_write_buffer_size() > self.settings.max_write_buffer_bytes:
            self.count("closed_write_buffer_full")
            self.abort()

    def _settle(self, kind: int, stream: int, body: bytes) -> None:
        future = self._waiting.pop(stream, None)
        if future is None or future.done():
            return
        if kind == _RESPONSE:
            future.set_result(body)
            return
        try:
            failure = FailureCode(body[0]) if body else FailureCode.PATH_FAILED
        except ValueError:
            failure = FailureCode.PATH_FAILED
        future.set_exception(HopFailed(failure))

    def _arm_watchdog(self) -> None:
        """Check again within a quarter of the shortest timeout that applies in this state: in
        handshake the handshake timeout (seconds); on an open link the partial-frame, idle and
        rekey timeouts (tens of seconds and more). A node holds a link to most other nodes, each
        with its own timer, so two things keep an idle node's wake-ups few: the open link's longer
        period, and checks on a grid of that period (timer coalescing) rather than a period after
        each link's own start, so that one wake-up checks all of a node's links."""
        settings = self.settings
        if self._state is _State.HANDSHAKE:
            period = settings.handshake_timeout_s
        else:
            period = min(
                settings.partial_frame_timeout_s, settings.idle_timeout_s, settings.rekey_interval_s
            )
        step = max(0.05, period / 4)
        loop = asyncio.get_running_loop()
        shift = _WATCH_PHASE * step  # nodes sharing a host do not all wake at the same instant
        tick = (math.floor((loop.time() - shift) / step) + 1) * step + shift
        self._watchdog = loop.call_at(tick, self._watch)

    def _watch(self) -> None:
        """Enforce the handshake, partial-frame and idle timeouts; rekey an idle link when due."""
        if self.closed.is_set():
            return
        now, settings = time.monotonic(), self.settings
        if self._state is _State.HANDSHAKE:
            if now - self.opened_at > settings.handshake_timeout_s:
                self.count("closed_handshake_timeout")
                self.abort()
                return
        elif self._cipher is not None:
            partial = self._cipher.pending
            if partial and now - self._progress_at > settings.partial_frame_timeout_s:
                self.count("closed_partial_frame_timeout")
                self.abort()
                return
            if not self.in_flight and now - self._last_activity > settings.idle_timeout_s:
                self.count("closed_idle")
                self.close()
                return
            if now - self._rekeyed_at >= settings.rekey_interval_s and not self._outbox:
                self._rekeyed_at = now
                self._sealed_since_rekey = 0
                self.count("rekeyed")
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(self._cipher.seal(b"", True))
        self._arm_watchdog()

    # --- the accepting end --------------------------------------------------------------------

    def _serve(self, handler: PeerHandler | None, stream: int, body: bytes) -> None:
        settings = self.settings
        if handler is None or self.peer is None or len(self._serving) >= settings.max_streams:
            self.count("refused_streams_full" if handler is not None else "refused_no_handler")
            self._send(FrameKind.FAILURE, stream, bytes([FailureCode.OVERLOADED]))
            return
        if self._serving_bytes + len(body) > settings.max_serving_bytes:
            self.count("refused_serving_bytes_full")
            self._send(FrameKind.FAILURE, stream, bytes([FailureCode.OVERLOADED]))
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(handler, self.peer, stream, body)
        )
        self._serving[task] = len(body)
        self._serving_bytes += len(body)
        task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._serving_bytes -= self._serving.pop(task, 0)

    async def _answer(self, handler: PeerHandler, peer: bytes, stream: int, body: bytes) -> None:
        try:
            answer = await handler(peer, body)
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
        if not self.is_open or self.transport is None:
            raise HopFailed()
        if len(self._waiting) >= self.settings.max_streams:
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
            if self.retired and not self.in_flight:
                self.close()


_WATCH_PHASE = random.random()  # noqa: S311  (a timer's phase, not a secret)
"""Where in each period this process's link watchdogs wake (a fraction of it): one grid for all
of a node's links, another for the next node's."""


def _add(counts: dict[str, int], key: str, step: int) -> None:
    """Count ``step`` more under ``key``; a count that reaches 0 goes (the maps stay bounded)."""
    left = counts.get(key, 0) + step
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(HopFailed())


class LinkPool:
    """One outgoing link per peer (address and key), opened and authenticated on demand, replaced
    after ``max_age_s``, with capped exponential backoff after a failure."""

    def __init__(
        self,
        *,
        key: _core.NodeKey,
        settings: LinkSettings,
        count: Count,
        wait_turn: Callable[[], None] | None = None,
    ) -> None:
        self.key = key
        self.settings = settings
        self.count = count
        self.wait_turn = wait_turn
        self._links: dict[tuple[tuple[str, int], bytes], Link] = {}
        self._locks: dict[tuple[tuple[str, int], bytes], asyncio.Lock] = {}
        self._backoff: dict[tuple[tuple[str, int], bytes], tuple[float, float]] = {}
        self._stamp = 0

    def _timestamp(self) -> int:
        """This node's clock for a new handshake, never the same twice."""
        self._stamp = max(now_ms(), self._stamp + 1)
        return self._stamp

    def _usable(self, link: Link | None) -> Link | None:
        if link is None or not link.is_open:
            return None
        if time.monotonic() - link.opened_at > self.settings.max_age_s:
            link.retired = True  # new requests go to a fresh link; this one closes when drained
            if not link.in_flight:
                link.close()
            return None
        return link

    async def get(self, address: tuple[str, int], x25519: bytes) -> Link:
        """The open link to the node at ``address`` whose key is ``x25519`` (opened if need be)."""
        slot = (address, x25519)
        link = self._links.get(slot)
        if link is not None and link.fresh_until > time.monotonic() and link.is_open:
            return link  # the hot path: an open link, younger than max_age_s
        link = self._usable(link)
        if link is not None:
            return link
        lock = self._locks.setdefault(slot, asyncio.Lock())
        async with lock:
            link = self._usable(self._links.get(slot))
            if link is not None:
                return link
            until, delay = self._backoff.get(slot, (0.0, 0.0))
            if time.monotonic() < until:
                raise HopFailed()
            try:
                link = await self._dial(address, x25519)
            except (OSError, TimeoutError, HopFailed, VeilError):
                self.count("dial_failed")
                delay = min(self.settings.backoff_max_s, max(0.1, delay * 2))
                self._backoff[slot] = (time.monotonic() + delay, delay)
                raise HopFailed() from None
            self._backoff.pop(slot, None)
            self._links[slot] = link
            self._forget(x25519, but=slot)  # a node that moved: its old address's slot goes
            return link

    async def _dial(self, address: tuple[str, int], x25519: bytes) -> Link:
        loop = asyncio.get_running_loop()
        settings = self.settings
        async with asyncio.timeout(settings.connect_timeout_s + settings.handshake_timeout_s):
            _, link = await loop.create_connection(
                lambda: Link.calling(
                    key=self.key,
                    settings=settings,
                    count=self.count,
                    remote_x25519=x25519,
                    timestamp_ms=self._timestamp(),
                    wait_turn=self.wait_turn,
                ),
                address[0],
                address[1],
            )
            try:
                await link.ready
            except BaseException:
                link.abort()
                raise
        return link

    async def request(
        self,
        address: tuple[str, int],
        x25519: bytes,
        body: bytes,
        timeout: float,
        kind: FrameKind = FrameKind.REQUEST,
    ) -> bytes:
        link = await self.get(address, x25519)
        return await link.request(body, timeout, kind)

    def retain(self, admitted: Iterable[bytes]) -> None:
        """Close the outgoing links to keys no longer admitted (X25519 keys), and forget their
        dial state."""
        keep = set(admitted)
        for slot in {*self._links, *self._locks, *self._backoff}:
            if slot[1] not in keep:
                self._drop(slot)

    def _forget(self, x25519: bytes, *, but: tuple[tuple[str, int], bytes]) -> None:
        """Drop every slot of ``x25519`` other than ``but`` (at most one slot a key is kept)."""
        for slot in {*self._links, *self._locks, *self._backoff}:
            if slot[1] == x25519 and slot != but:
                self._drop(slot)

    def _drop(self, slot: tuple[tuple[str, int], bytes]) -> None:
        link = self._links.pop(slot, None)
        if link is not None:
            link.close()
        self._backoff.pop(slot, None)
        self._locks.pop(slot, None)

    async def close(self) -> None:
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            link.close()
        for link in links:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await link.closed.wait()
