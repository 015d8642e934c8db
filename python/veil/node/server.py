"""A running service node: the store, its writer, the sweeper, and the HTTP server, on uvloop.

:func:`run_node` is what ``veil node run`` calls; :class:`Node` is the same thing for tests and
embedding. Stopping (SIGTERM, SIGINT, or :meth:`Node.stop`) closes the listening socket, lets every
request in flight finish (up to ``drain_timeout_s``), commits what the writer holds, and closes the
store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

import orjson
import uvloop

from veil import __version__, _core
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.node.config import ConfigError, NodeConfig
from veil.node.directory import Directory
from veil.node.http import HttpApp, Request, Response
from veil.node.identity import load_node_key
from veil.node.links import HopFailed, Link, LinkGate, LinkHandlers, LinkPool
from veil.node.metrics import NodeMetrics, StoreFigures, WriterFigures, watch_tables
from veil.node.onion import OnionRouter, UnknownCircuit
from veil.node.peer_rpc import PeerRpc
from veil.node.peers import load_peers
from veil.node.replication import Replicator
from veil.node.rpc import StorageRpc
from veil.node.store import MessageStore, Txn
from veil.node.threads import thread_cpu_seconds
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol.link import FailureCode
from veil.protocol.network_file import load_network_file
from veil.protocol.peers import PeerInfo

__all__ = ["Node", "run_node"]

log = logging.getLogger("veil.node")

_NOT_FOUND = b'{"error":{"code":"not_found","message":"no such endpoint"}}'
_NOT_ALLOWED = b'{"error":{"code":"method_not_allowed","message":"method not allowed"}}'
_PATH_FAILED = (
    b'{"error":{"code":"path_failed",'
    b'"message":"the request did not get through; try another path"}}'
)
_OVERLOADED = (
    b'{"error":{"code":"overloaded","message":"the path is overloaded; try another path"}}'
)
_UNKNOWN_CIRCUIT = (
    b'{"error":{"code":"unknown_circuit","message":"no such circuit here; build another"}}'
)
_NO_CONSENSUS = b'{"error":{"code":"unavailable","message":"this node holds no valid consensus"}}'


class Node:
    """One service node. ``await start()``, then ``await stop()``."""

    def __init__(self, config: NodeConfig, *, drain_timeout_s: float = 4.0) -> None:
        self.config = config
        self.drain_timeout_s = drain_timeout_s
        self.identity = load_node_key(config.key_path)
        self.key = _core.NodeKey(self.identity.x25519_secret_key)
        self.metrics = NodeMetrics()
        self.store = MessageStore(config.store_path, config.store, config.limits)
        self.writer = StoreWriter(self.store)
        self._loop_thread: int | None = None  # the event loop's thread, for the kernel
        self.link_events: collections.Counter[str] = collections.Counter()
        pool = LinkPool(
            key=self.key,
            settings=config.links,
            count=self._link_event,
            wait_turn=self.writer.turn.wait,
        )
        net = config.network
        network_path = config.network_path
        try:
            network = load_network_file(network_path) if network_path is not None else None
        except InvalidInputError as exc:
            raise ConfigError(str(exc)) from None
        self.directory = Directory(
            self.identity,
            network=network,
            version=__version__,
            settings=net,
            clock_skew_ms=config.limits.clock_skew_ms,
        )
        self.network = NetworkState(self.directory, net.swarm_size)
        self.replicator = Replicator(
            identity=self.identity,
            network=self.network,
            pool=pool,
            store=self.store,
            writer=self.writer,
            settings=net,
            limits=config.limits,
            hop_timeout_s=config.onion.hop_timeout_s,
            max_frame=config.links.max_frame,
        )
        self.rpc = StorageRpc(
            self.store,
            self.writer,
            config.limits,
            self.metrics,
            identity=self.identity,
            network=self.network,
            replicator=self.replicator,
            min_swarm_size=net.min_swarm_size,
            node_info={
                "ed25519": self.identity.ed25519_public_key.hex(),
                "x25519": self.identity.x25519_public_key.hex(),
            },
        )
        self.router = OnionRouter(
            key=self.key,
            settings=config.onion,
            pool=pool,
            rpc=self.rpc,
            external_services=config.external_services,
            on_limit=self._limit_refused,
        )
        self.peer_rpc = PeerRpc(
            identity=self.identity,
            store=self.store,
            writer=self.writer,
            network=self.network,
            storage_rpc=self.rpc,
            limits=config.limits,
            settings=net,
            max_frame=config.links.max_frame,
            on_limit=self._limit_refused,
        )
        self.gate = LinkGate(config.links, self._admit, self._link_event)
        self._static_peers = load_peers(config.peers_path)
        self._static_by_x25519 = {p.x25519: p.ed25519 for p in self._static_peers}
        self._known: set[bytes] = set()
        self._started = False
        self.directory.on_change.append(self._view_changed)
        self._view_changed()
        self._link_server: asyncio.Server | None = None
        self.link_port = config.link_port
        self._routes: dict[bytes, tuple[bytes, Callable[[Request], Awaitable[Response]]]] = {
            b"/storage_rpc/v1": (b"POST", self._storage_rpc),
            b"/onion_req": (b"POST", self._onion_req),
            b"/onion2": (b"POST", self._onion2),
            b"/metrics": (b"GET", self._metrics),
            b"/consensus": (b"GET", self._consensus),
        }
        self.app = HttpApp(
            self._route,
            config.limits,
            self._refused,
            on_limit=self._limit_refused,
            routes={path: method for path, (method, _) in self._routes.items()},
            wait_turn=self.writer.turn.wait,
        )
        self.metrics.watch_store(self._store_figures)
        self.metrics.watch_writer(
            lambda: WriterFigures(
                self.writer.commits,
                self.writer.jobs,
                dict(self.writer.seconds),
                self.writer.turn.waits,
                self.writer.turn.waited_s,
            )
        )
        self.metrics.watch_threads(self._thread_cpu)
        self.metrics.watch_counts(
            "veil_link_events",
            "Node-link events: opened, refused and closed, by cause.",
            "event",
            lambda: self.link_events,
        )
        self.metrics.watch_counts(
            "veil_onion_events",
            "Onion layers handled, by outcome.",
            "event",
            lambda: self.router.counts,
        )
        self.metrics.watch_counts(
            "veil_replication_events",
            "Replication, anti-entropy and hand-over, by event.",
            "event",
            lambda: self.replicator.counts,
        )
        self.metrics.watch_counts(
            "veil_directory_events",
            "Registrations with the authorities and consensus fetches, by event.",
            "event",
            lambda: self.directory.counts,
        )
        self.metrics.watch_counts(
            "veil_node_rpc_requests",
            "Node RPCs answered, by method.",
            "method",
            lambda: self.peer_rpc.counts,
        )
        self.metrics.watch_counts(
            "veil_node_rpc_refusals",
            "Node RPC entries refused: a peer or this node not in the account's swarm, an invalid "
            "or malformed body.",
            "reason",
            lambda: self.peer_rpc.refusals,
        )
        watch_tables(self.metrics, self)  # table sizes, read only when /metrics is scraped
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.port = config.listen_port

    async def start(self) -> None:
        self._loop_thread = threading.get_native_id()
        if self.config.store.gil_switch_ms:
            # Process-wide: a process that hosts several nodes takes the last one's.
            sys.setswitchinterval(self.config.store.gil_switch_ms / 1000)
        self.writer.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.app.protocol,
            self.config.listen_host,
            self.config.listen_port,
            reuse_address=True,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        handlers = LinkHandlers(request=self.router.handle_from_peer, rpc=self.peer_rpc.handle)

        def accept_link() -> Link:
            return Link.accepting(
                key=self.key,
                settings=self.config.links,
                count=self._link_event,
                gate=self.gate,
                handlers=handlers,
                wait_turn=self.writer.turn.wait,
            )

        self._link_server = await loop.create_server(
            accept_link,
            self.config.link_host,
            self.config.link_port,
            reuse_address=True,
            backlog=1024,
        )
        self.link_port = self._link_server.sockets[0].getsockname()[1]
        self.directory.announce(
            f"{self.config.listen_host}:{self.port}", f"{self.config.link_host}:{self.link_port}"
        )
        self._started = True
        self._tasks = [
            asyncio.create_task(self.directory.run(), name="directory"),
            asyncio.create_task(self.replicator.run(), name="anti-entropy"),
            asyncio.create_task(self._sweep_forever(), name="sweeper"),
            asyncio.create_task(self._check_readers_forever(), name="reader-check"),
        ]
        log.info(
            "node listening",
            extra={
                "fields": {
                    "node": self.identity.ed25519_public_key.hex(),
                    "listen": f"{self.config.listen_host}:{self.port}",
                    "link": f"{self.config.link_host}:{self.link_port}",
                }
            },
        )

    def set_peers(self, peers: list[PeerInfo]) -> None:
        """Replace the statically configured nodes this node may forward onion layers to (and
        accept node links from)."""
        self._static_peers = list(peers)
        self._static_by_x25519 = {p.x25519: p.ed25519 for p in self._static_peers}
        self._view_changed()

    def _admit(self, x25519: bytes) -> bytes | None:
        """The node id of an admitted node with this static key: in the view, or configured."""
        return self.directory.by_x25519.get(x25519) or self._static_by_x25519.get(x25519)

    def _link_event(self, event: str) -> None:
        self.link_events[event] += 1

    def _limit_refused(self, limit: str) -> None:
        self.metrics.limits.labels(limit=limit).inc()

    def _view_changed(self) -> None:
        peers = [*self._static_peers, *self.directory.peers()]
        self.router.set_peers(peers)
        self.network.rebuild()
        self.gate.retain(set(self.directory.by_x25519.values()) | {p.ed25519 for p in peers})
        self.router.pool.retain({p.x25519 for p in peers} | set(self.directory.by_x25519))
        if self._started:  # a node that joins gets its share now, not at the next sync round
            for node_id, announcement in self.directory.nodes.items():
                if node_id not in self._known and node_id != self.identity.ed25519_public_key:
                    self.replicator.sync_soon(announcement)
        self._known = set(self.directory.nodes)

    @property
    def peer_info(self) -> PeerInfo:
        """This node as other nodes and clients list it."""
        return PeerInfo(
            ed25519=self.identity.ed25519_public_key,
            x25519=self.identity.x25519_public_key,
            http=(self.config.listen_host, self.port),
            link=(self.config.link_host, self.link_port),
        )

    async def stop(self) -> None:
        """Stop serving and close the store; a second call (a stop under way or done) returns
        at once."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._link_server is not None:
            self._link_server.close()
        self.app.close_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.app.idle.wait(), self.drain_timeout_s)
        for connection in list(self.app.connections):
            connection.close()
        for link in self.gate.links():  # peers must see this node go, not wait on it
            link.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.replicator.close()
        await self.router.close()
        await self.directory.close()
        await self.writer.close()
        self.store.close()
        log.info("node stopped")

    async def _route(self, request: Request) -> Response:
        route = self._routes.get(request.path)
        if route is None:
            return Response(404, _NOT_FOUND)
        method, handler = route
        if request.method != method:
            return Response(405, _NOT_ALLOWED)
        return await handler(request)

    async def _storage_rpc(self, request: Request) -> Response:
        status, body, content_type = await self.rpc.handle_body(request.body)
        return Response(status, body, content_type)

    async def _onion_req(self, request: Request) -> Response:
        try:
            answer = await self.router.handle(
                request.body, self.config.onion.request_budget_s, request.source
            )
        except HopFailed as failure:
            if failure.code is FailureCode.OVERLOADED:
                return Response(503, _OVERLOADED)
            return Response(502, _PATH_FAILED)
        return Response(200, answer, b"application/octet-stream")

    async def _onion2(self, request: Request) -> Response:
        try:
            answer = await self.router.handle_v2(
                request.body, self.config.onion.request_budget_s, request.source
            )
        except UnknownCircuit:
            return Response(410, _UNKNOWN_CIRCUIT)
        except HopFailed as failure:
            if failure.code is FailureCode.OVERLOADED:
                return Response(503, _OVERLOADED)
            return Response(502, _PATH_FAILED)
        return Response(200, answer, b"application/octet-stream")

    async def _consensus(self, request: Request) -> Response:
        """The consensus this node holds, as its authorities signed it: anyone may fetch it (its
        signatures, not this node, are what a client trusts)."""
        document = self.directory.consensus_json()
        if document is None:
            return Response(503, _NO_CONSENSUS)
        return Response(200, orjson.dumps(document))

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")

    def _refused(self, status: int) -> None:
        self.metrics.http_errors.labels(status=str(status)).inc()

    def _thread_cpu(self) -> dict[str, tuple[float, float]]:
        """(user, system) CPU seconds of the event loop and the store writer, for ``/metrics``."""
        threads = {"event_loop": self._loop_thread, "store_writer": self.writer.native_id}
        seconds = {name: thread_cpu_seconds(t) for name, t in threads.items() if t is not None}
        return {name: cpu for name, cpu in seconds.items() if cpu is not None}

    def _store_figures(self) -> StoreFigures:
        messages, data_bytes = self.store.totals()
        chunks, chunk_bytes = self.store.attachment_totals()
        used, size = self.store.map_bytes()
        return StoreFigures(messages, data_bytes, chunks, chunk_bytes, used, size)

    async def _sweep_forever(self) -> None:
        settings = self.config.store
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            self.router.replays.expire()  # also when no layer arrives to do it
            self.router.circuits.sweep()
            now = now_ms()
            due = self.store.next_expiry_ms()
            if due is None or due > now:
                continue  # nothing expired: no write transaction (and no writer wake-up)

            def sweep(txn: Txn, now: int = now) -> int:
                return self.store.sweep(txn, now, settings.sweep_max_batch)

            removed = settings.sweep_max_batch
            while removed >= settings.sweep_max_batch:
                removed = await self.writer.submit(sweep, if_full=0)
            if removed:
                log.debug("swept expired messages", extra={"fields": {"removed": removed}})

    async def _check_readers_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.store.reader_check_interval_s)
            cleared = self.store.clear_stale_readers()
            if cleared:
                log.info("cleared stale LMDB readers", extra={"fields": {"cleared": cleared}})


async def _serve_until_signalled(config: NodeConfig) -> None:
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    log.info("stopping")
    await node.stop()


def run_node(config: NodeConfig) -> None:
    """Run a node in the foreground on uvloop until SIGTERM or SIGINT."""
    uvloop.run(_serve_until_signalled(config))
