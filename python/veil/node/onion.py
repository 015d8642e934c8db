"""Onion requests at a node: peel a layer, then forward it to the next hop or execute it.

Two formats: version 1 (``/onion_req``; a fresh X25519 per layer) and version 2 (``/onion2``;
fixed-size cells, one-shot or on circuits: :mod:`veil.protocol.cells`). A v2 circuit's state is
this node's end of it (:class:`CircuitTable`): its hop keys, where it goes next, bounded in number
overall, per client address and per peer, dropped when idle or old, and lost on a restart (its
client builds another).

A node learns from a layer only the next hop's key (or that it is the destination), so no node sees
both the client's connection and the request: the first hop sees the client and the second hop's
key; the destination sees the hop before it and the request. Every failure — a layer that does not
decrypt, a replay, an unknown or unreachable next hop, a timeout — is the one :class:`HopFailed`,
which the previous hop relays as "path failed": the client learns to try another path, and nothing
about where or why.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from veil import _core
from veil.clock import now_ms
from veil.crypto import PeeledLayer
from veil.errors import InvalidInputError
from veil.node.config import OnionSettings
from veil.node.links import HopFailed, LinkPool
from veil.node.rpc import StorageRpc
from veil.node.threads import PEELER, name_this_thread
from veil.protocol import cells
from veil.protocol.link import FailureCode
from veil.protocol.onion_request import decode_routing
from veil.protocol.peers import PeerInfo

__all__ = ["CircuitTable", "LayerPeeler", "OnionRouter", "ReplayCache", "UnknownCircuit"]

log = logging.getLogger("veil.node.onion")


class ReplayCache:
    """Replay tags of recently accepted layers, in three generations of ``window_s`` each.

    A layer is accepted only within ``window_s`` of its issue time, so a tag needs keeping for at
    most twice that; the oldest generation is dropped every ``window_s``. At most ``max_entries``
    tags per generation, and at most ``max_per_source`` from one source (a client address, or a
    peer node), so that one sender cannot fill the cache for everyone: past either, new layers are
    refused as OVERLOADED rather than forgotten.
    """

    def __init__(self, window_s: float, max_entries: int, max_per_source: int) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.max_per_source = max_per_source
        self._generations: collections.deque[set[bytes]] = collections.deque([set()], maxlen=3)
        self._sources: dict[str | bytes, int] = {}
        self._rotated = time.monotonic()

    def expire(self) -> None:
        """Start a new generation if a window passed since the last (the oldest of three is
        dropped): on each layer, and from the node's sweeper, so that a node left idle holds no
        tags older than its window for long."""
        now = time.monotonic()
        if now - self._rotated >= self.window_s:
            self._generations.append(set())
            self._sources = {}
            self._rotated = now

    def check_and_add(self, tag: bytes, source: str | bytes) -> None:
        """Remember ``tag``; raise :class:`HopFailed` if it was seen (a replay) or if full."""
        self.expire()
        for generation in self._generations:  # a plain loop: this is the per-hop hot path
            if tag in generation:
                raise HopFailed()
        current = self._generations[-1]
        if len(current) >= self.max_entries:
            raise HopFailed(FailureCode.OVERLOADED, limit="replay_max_entries")
        held = self._sources.get(source, 0)
        if held >= self.max_per_source:
            raise HopFailed(FailureCode.OVERLOADED, limit="replay_max_entries_per_source")
        current.add(tag)
        self._sources[source] = held + 1

    def __len__(self) -> int:
        return sum(len(generation) for generation in self._generations)


class UnknownCircuit(HopFailed):
    """A data cell for a circuit this node does not hold (never opened, expired, or lost to a
    restart): the client builds another."""


class _Circuit:
    __slots__ = ("hop", "last_used", "next", "opened", "source")

    def __init__(
        self,
        hop: _core.CircuitHop,
        next_hop: tuple[PeerInfo, bytes] | None,
        source: str | bytes,
        now: float,
    ) -> None:
        self.hop = hop
        self.next = next_hop
        self.source = source
        self.opened = now
        self.last_used = now


class CircuitTable:
    """This node's ends of onion v2 circuits, keyed by (where the circuit comes from, its id on
    that link): at most ``max_circuits`` in all, ``per_client`` from one client address and
    ``per_peer`` from one peer node; one unused for ``idle_s`` or opened ``lifetime_s`` ago is
    dropped (swept at most once a second, as circuits are added or used).

    The table is kept in order of last use (a use moves a circuit to the end), so a sweep reads
    only the idle circuits at the front, not the whole table; one past its lifetime but in use is
    dropped at its next use."""

    def __init__(self, settings: OnionSettings) -> None:
        self.settings = settings
        self._circuits: collections.OrderedDict[tuple[str | bytes, bytes], _Circuit]
        self._circuits = collections.OrderedDict()
        self._by_source: collections.Counter[str | bytes] = collections.Counter()
        self._swept = time.monotonic()
        self.expired = 0

    def __len__(self) -> int:
        return len(self._circuits)

    def sweep(self) -> None:
        """Drop idle circuits now (the node's sweeper calls it: as circuits are used, it runs at
        most once a second anyway)."""
        self._sweep(time.monotonic())

    def per_source(self, source: str | bytes) -> int:
        return self._by_source.get(source, 0)

    def admit(self, source: str | bytes) -> None:
        """Raise :class:`HopFailed` (OVERLOADED) if ``source`` may not open one more circuit
        now: checked before a create goes on, so that a refused one leaves nothing behind."""
        self._sweep(time.monotonic(), force=len(self._circuits) >= self.settings.max_circuits)
        if len(self._circuits) >= self.settings.max_circuits:
            raise HopFailed(FailureCode.OVERLOADED, limit="max_circuits")
        cap, name = (
            (self.settings.max_circuits_per_peer, "max_circuits_per_peer")
            if isinstance(source, bytes)
            else (self.settings.max_circuits_per_client, "max_circuits_per_client")
        )
        if self._by_source.get(source, 0) >= cap:
            raise HopFailed(FailureCode.OVERLOADED, limit=name)

    def add(
        self,
        source: str | bytes,
        circuit_id: bytes,
        hop: _core.CircuitHop,
        next_hop: tuple[PeerInfo, bytes] | None,
    ) -> None:
        """Hold a new circuit; raise :class:`HopFailed` (OVERLOADED) past a cap."""
        self.admit(source)
        key = (source, circuit_id)
        if key in self._circuits:  # an id already in use on that link: refused, never replaced
            raise HopFailed()
        self._circuits[key] = _Circuit(hop, next_hop, source, time.monotonic())
        self._by_source[source] += 1

    def get(self, source: str | bytes, circuit_id: bytes) -> _Circuit:
        """The circuit, marked used; raise :class:`UnknownCircuit` if not held (or expired)."""
        now = time.monotonic()
        self._sweep(now)
        key = (source, circuit_id)
        circuit = self._circuits.get(key)
        if circuit is None:
            raise UnknownCircuit()
        if self._expired(circuit, now):
            self._drop(key)
            raise UnknownCircuit()
        circuit.last_used = now
        self._circuits.move_to_end(key)
        return circuit

    def clear(self) -> None:
        self._circuits.clear()
        self._by_source.clear()

    def _expired(self, circuit: _Circuit, now: float) -> bool:
        return (
            now - circuit.last_used > self.settings.circuit_idle_s
            or now - circuit.opened > self.settings.circuit_lifetime_s
        )

    def _sweep(self, now: float, *, force: bool = False) -> None:
        if not force and now - self._swept < 1.0:
            return
        self._swept = now
        idle_since = now - self.settings.circuit_idle_s
        circuits = self._circuits
        while circuits:
            key, oldest = next(iter(circuits.items()))
            if oldest.last_used >= idle_since:
                break  # the rest were used later
            self._drop(key)
        if force:  # full: those past their lifetime go too, however recently used
            for key in [key for key, c in circuits.items() if self._expired(c, now)]:
                self._drop(key)

    def _drop(self, key: tuple[str | bytes, bytes]) -> None:
        circuit = self._circuits.pop(key)
        left = self._by_source[circuit.source] - 1
        if left > 0:
            self._by_source[circuit.source] = left
        else:
            del self._by_source[circuit.source]
        self.expired += 1


class LayerPeeler:
    """Peels layers with the node's key; layers that arrive together are peeled as one batch.

    The first waiting layer schedules a flush for the next turn of the event loop; everything that
    arrives until then (up to ``batch_max``) is peeled together. A batch of at least
    ``worker_min`` layers goes to ``NodeKey.peel_batch`` on a worker thread (it peels on every core
    with the GIL released), so that the event loop goes on reading, forwarding and answering
    meanwhile; one batch is in the worker at a time, and what arrives in the meantime is the next
    batch. Smaller batches (light load) are peeled at once on the loop thread, where a thread hop
    would cost more than it saves.
    """

    def __init__(self, key: _core.NodeKey, batch_max: int, worker_min: int = 8) -> None:
        self._key = key
        self._batch_max = batch_max
        self._worker_min = worker_min
        self._pending: list[tuple[bytes, asyncio.Future[PeeledLayer]]] = []
        self._worker = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=PEELER,
            initializer=name_this_thread,
            initargs=(PEELER,),
        )
        self._in_worker = False
        self.batches = 0
        self.layers = 0

    async def peel(self, onion: bytes) -> PeeledLayer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PeeledLayer] = loop.create_future()
        self._pending.append((onion, future))
        if len(self._pending) == 1 and not self._in_worker:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._in_worker or not self._pending:
            return  # the worker's batch, once done, flushes what waits
        batch = self._pending[: self._batch_max]
        del self._pending[: self._batch_max]
        self.batches += 1
        self.layers += len(batch)
        loop = asyncio.get_running_loop()
        if len(batch) >= self._worker_min:
            self._in_worker = True
            onions = [onion for onion, _ in batch]
            done = loop.run_in_executor(self._worker, self._key.peel_batch, onions)
            done.add_done_callback(lambda f: self._settle_batch(batch, f))
            return
        if self._pending:
            loop.call_soon(self._flush)
        results: list[PeeledLayer | InvalidInputError]
        if len(batch) == 1:
            try:
                results = [self._key.peel(batch[0][0])]
            except InvalidInputError as exc:
                results = [exc]
        else:
            results = self._key.peel_batch([onion for onion, _ in batch])
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)

    def _settle_batch(
        self,
        batch: list[tuple[bytes, asyncio.Future[PeeledLayer]]],
        done: asyncio.Future[list[PeeledLayer | InvalidInputError]],
    ) -> None:
        self._in_worker = False
        if done.cancelled() or done.exception() is not None:
            for _, future in batch:
                if not future.done():
                    future.set_exception(HopFailed())
        else:
            for (_, future), result in zip(batch, done.result(), strict=True):
                _settle(future, result)
        self._flush()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def _settle(future: asyncio.Future[PeeledLayer], result: PeeledLayer | InvalidInputError) -> None:
    if future.done():
        return
    if isinstance(result, InvalidInputError):
        future.set_exception(HopFailed())
    else:
        future.set_result(result)


class OnionRouter:
    """Handles one onion layer addressed to this node, from a client or from a peer."""

    def __init__(
        self,
        *,
        key: _core.NodeKey,
        settings: OnionSettings,
        pool: LinkPool,
        rpc: StorageRpc,
        external_services: tuple[str, ...] = (),
        on_limit: Callable[[str], None] = lambda limit: None,
    ) -> None:
        self.on_limit = on_limit
        """Told the name of a configured limit each time it refuses a layer."""
        self.settings = settings
        self.pool = pool
        self.rpc = rpc
        self.external_services = external_services
        self.peeler = LayerPeeler(key, settings.peel_batch_max)
        self.replays = ReplayCache(
            settings.replay_window_s,
            settings.replay_max_entries,
            settings.replay_max_entries_per_source,
        )
        self.peers: dict[bytes, PeerInfo] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.circuits = CircuitTable(settings)
        self._node_key = key
        self._http: Any = None

    def set_peers(self, peers: list[PeerInfo]) -> None:
        self.peers = {peer.x25519: peer for peer in peers}

    async def handle(self, onion: bytes, budget_s: float, source: str) -> bytes:
        """A layer from a client (this node is the first hop; ``source`` is the client's address
        key, held in memory for the replay cache's share only): the answer to relay back
        (encrypted by the destination), or :class:`HopFailed`."""
        try:
            async with asyncio.timeout(budget_s):
                return await self._handle(onion, budget_s, hops=0, source=source)
        except TimeoutError:
            self.counts["timeout"] += 1
            raise HopFailed() from None

    async def handle_v2(self, body: bytes, budget_s: float, source: str) -> bytes:
        """An onion v2 request from a client (``POST /onion2``: frame type ‖ [circuit id] ‖
        cell): the answer (for a create, the client's new circuit id first), or
        :class:`HopFailed` (:class:`UnknownCircuit` for a circuit this node does not hold)."""
        try:
            async with asyncio.timeout(budget_s):
                return await self._handle_v2(body, budget_s, source, cells.CLIENT_CIRCUIT_ID_LEN)
        except TimeoutError:
            self.counts["timeout"] += 1
            raise HopFailed() from None

    async def handle_from_peer(self, peer: bytes, body: bytes) -> bytes:
        """A REQUEST frame's body (hops ‖ layer, or a v2 frame type ‖ [circuit id] ‖ cell) from
        the previous hop ``peer`` (an admitted node), which keeps its own deadline for the answer;
        at most ``[links] max_streams`` of these run per link."""
        if body and body[0] in cells.CELL_TYPES:
            return await self._handle_v2(
                body, self.settings.hop_timeout_s, peer, cells.LINK_CIRCUIT_ID_LEN
            )
        if not body or body[0] >= self.settings.max_hops:
            self.counts["too_many_hops"] += 1
            raise HopFailed()
        return await self._handle(body[1:], self.settings.hop_timeout_s, hops=body[0], source=peer)

    async def _handle(self, onion: bytes, budget_s: float, hops: int, source: str | bytes) -> bytes:
        if len(onion) > self.settings.max_onion_bytes:
            self.counts["refused"] += 1
            raise HopFailed()
        try:
            layer = await self.peeler.peel(onion)
            issued_ms, target = decode_routing(layer.routing)
        except (HopFailed, InvalidInputError):
            self.counts["undecryptable"] += 1
            raise HopFailed() from None
        if abs(now_ms() - issued_ms) > self.settings.replay_window_s * 1000:
            self.counts["stale"] += 1
            raise HopFailed()
        self._check_replay(layer.replay_tag, source)
        if layer.next_hop is not None:
            peer = self.peers.get(layer.next_hop)
            if peer is None:
                self.counts["unknown_next_hop"] += 1
                raise HopFailed()
            self.counts["forwarded"] += 1
            timeout = min(self.settings.hop_timeout_s, budget_s)
            return await self.pool.request(
                peer.link, peer.x25519, bytes([hops + 1]) + layer.payload, timeout
            )
        assert layer.reply_key is not None
        self.counts["delivered"] += 1
        if not target:
            answer = await self._storage_rpc(layer.payload)
        else:
            answer = await self._external(target, layer.payload)
        return layer.reply_key.encrypt(answer)

    # --- onion v2 ---------------------------------------------------------------------------

    async def _handle_v2(
        self, body: bytes, budget_s: float, source: str | bytes, id_len: int
    ) -> bytes:
        if len(body) > self.settings.max_onion_bytes:
            self.counts["refused"] += 1
            raise HopFailed()
        if not body or body[0] not in cells.CELL_TYPES:
            self.counts["undecryptable"] += 1
            raise HopFailed()
        frame = body[0]
        if frame == cells.FRAME_DATA:
            return await self._data_cell(body[1 : 1 + id_len], body[1 + id_len :], budget_s, source)
        if frame == cells.FRAME_ONESHOT:
            layer = self._peel_routed(_core.CELL_ONESHOT, body[1:], source)
            if layer.next_hop is None:
                return self._seal(layer, await self._deliver(layer))
            peer = self._peer(layer.next_hop)
            self.counts["forwarded"] += 1
            return layer.wrap_reply(
                await self._forward(peer, cells.FRAME_ONESHOT, b"", layer.next, budget_s)
            )
        # A create: on a link the previous node names the circuit; a client is given an id.
        from_peer = isinstance(source, bytes)
        circuit_id = body[1 : 1 + id_len] if from_peer else os.urandom(id_len)
        cell = body[1 + id_len :] if from_peer else body[1:]
        if len(circuit_id) != id_len or len(cell) != _core.CELL_CREATE_HEADER:
            self.counts["undecryptable"] += 1
            raise HopFailed()
        layer = self._peel_routed(_core.CELL_CREATE, cell, source)
        answer = await self._create(layer, source, circuit_id, budget_s)
        return answer if from_peer else circuit_id + answer

    def _peel_routed(self, cell_type: int, cell: bytes, source: str | bytes) -> _core.PeeledCell:
        try:
            layer = self._node_key.peel_cell(cell_type, cell)
        except InvalidInputError:  # DecryptionError included
            self.counts["undecryptable"] += 1
            raise HopFailed() from None
        if abs(time.time() - layer.issued_s) > self.settings.replay_window_s:
            self.counts["stale"] += 1
            raise HopFailed()
        self._check_replay(layer.replay_tag, source)
        return layer

    def _check_replay(self, tag: bytes, source: str | bytes) -> None:
        """Remember a layer's replay tag; :class:`HopFailed` for a replay or a full cache."""
        try:
            self.replays.check_and_add(tag, source)
        except HopFailed as failure:
            if failure.code is FailureCode.OVERLOADED:
                self.counts["replay_cache_full"] += 1
                self.on_limit(failure.limit or "replay_max_entries")
            else:
                self.counts["replayed"] += 1
            raise

    async def _create(
        self, layer: _core.PeeledCell, source: str | bytes, circuit_id: bytes, budget_s: float
    ) -> bytes:
        # Admitted before it goes on, and again when added: creates may be under way meanwhile.
        self._admit_circuit(self.circuits.admit, source)
        try:
            hop, slot = layer.accept_circuit()
        except InvalidInputError:
            self.counts["undecryptable"] += 1
            raise HopFailed() from None
        next_hop: tuple[PeerInfo, bytes] | None = None
        from_next: bytes | None = None
        if layer.next_hop is not None:
            link_id = os.urandom(cells.LINK_CIRCUIT_ID_LEN)
            peer = self._peer(layer.next_hop)
            from_next = await self._forward(peer, cells.FRAME_CREATE, link_id, layer.next, budget_s)
            next_hop = (peer, link_id)
        try:  # before the circuit is kept: a next hop's bad answer leaves nothing here either
            reply = layer.wrap_create_reply(slot, from_next)
        except InvalidInputError:
            raise HopFailed() from None
        self._admit_circuit(lambda s: self.circuits.add(s, circuit_id, hop, next_hop), source)
        self.counts["circuits_opened"] += 1
        return reply

    async def _data_cell(
        self, circuit_id: bytes, cell: bytes, budget_s: float, source: str | bytes
    ) -> bytes:
        try:
            circuit = self.circuits.get(source, circuit_id)
        except UnknownCircuit:
            self.counts["unknown_circuit"] += 1
            raise
        try:
            layer = circuit.hop.peel(cell)
        except InvalidInputError:  # a bad cell or a replayed one, alike
            self.counts["undecryptable"] += 1
            raise HopFailed() from None
        if circuit.next is None:
            return self._seal(layer, await self._deliver(layer))
        peer, link_id = circuit.next
        peer = self._peer(peer.x25519)  # still one of this node's peers
        self.counts["forwarded"] += 1
        return layer.wrap_reply(
            await self._forward(peer, cells.FRAME_DATA, link_id, layer.next, budget_s)
        )

    def _peer(self, x25519: bytes) -> PeerInfo:
        peer = self.peers.get(x25519)
        if peer is None:
            self.counts["unknown_next_hop"] += 1
            raise HopFailed()
        return peer

    def _admit_circuit(self, admit: Callable[[str | bytes], None], source: str | bytes) -> None:
        """``admit(source)``, counting a refusal (past a cap) before it goes on."""
        try:
            admit(source)
        except HopFailed as failure:
            self.counts["circuits_refused"] += 1
            self.on_limit(failure.limit or "max_circuits")
            raise

    async def _forward(
        self, peer: PeerInfo, frame: int, circuit_id: bytes, cell: bytes, budget_s: float
    ) -> bytes:
        timeout = min(self.settings.hop_timeout_s, budget_s)
        return await self.pool.request(
            peer.link, peer.x25519, bytes([frame]) + circuit_id + cell, timeout
        )

    def _seal(self, layer: _core.PeeledCell, answer: bytes) -> bytes:
        try:
            return layer.seal_reply(answer)
        except InvalidInputError:  # an answer past the largest reply bucket
            self.counts["answer_too_large"] += 1
            raise HopFailed() from None

    async def _deliver(self, layer: _core.PeeledCell) -> bytes:
        """The answer to the request a cell delivers here. The cell authenticated, so its sender
        (who built it) gets an answer even when what it carries is malformed: a 400."""
        self.counts["delivered"] += 1
        try:
            target, request = cells.decode_content(layer.content())
        except InvalidInputError:  # a length prefix past the region (DecryptionError), or so
            self.counts["malformed_content"] += 1
            return orjson.dumps({"status": 400, "body": "malformed cell content"})
        if not target:
            return await self._storage_rpc(request)
        return await self._external(target, request)

    async def _storage_rpc(self, request: bytes) -> bytes:
        _, status, body = await self.rpc.answer_body(request)
        self.rpc.metrics.count("onion", status)
        return orjson.dumps({"status": status, "body": body})

    async def _external(self, url: str, body: bytes) -> bytes:
        if not any(url.startswith(prefix) for prefix in self.external_services):
            return orjson.dumps({"status": 403, "body_b64": "", "content_type": ""})
        import aiohttp  # noqa: PLC0415  (only nodes that allow external services need it)

        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.post(url, data=body) as answer:
                content = await answer.content.read(self.settings.max_onion_bytes)
                return orjson.dumps(
                    {
                        "status": answer.status,
                        "body_b64": base64.b64encode(content).decode("ascii"),
                        "content_type": answer.headers.get("Content-Type", ""),
                    }
                )
        except (aiohttp.ClientError, OSError):
            raise HopFailed() from None

    async def close(self) -> None:
        self.circuits.clear()
        self.peeler.close()
        await self.pool.close()
        if self._http is not None:
            await self._http.close()
