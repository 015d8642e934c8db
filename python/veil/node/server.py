"""A running service node: the store, its writer, the sweeper, and the HTTP server, on uvloop.

:func:`run_node` is what ``veil node run`` calls; :class:`Node` is the same thing for tests and
embedding. Stopping (SIGTERM, SIGINT, or :meth:`Node.stop`) closes the listening socket, lets every
request in flight finish (up to ``drain_timeout_s``), commits what the writer holds, and closes the
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import weakref
from collections.abc import Awaitable, Callable

import orjson
import uvloop

from veil import __version__, _core
from veil.node.config import NodeConfig
from veil.node.http import HttpApp, Request, Response
from veil.node.identity import load_node_key
from veil.node.links import HopFailed, Link, LinkPool
from veil.node.membership import Membership
from veil.node.metrics import NodeMetrics
from veil.node.onion import OnionRouter
from veil.node.peers import load_peers
from veil.node.replication import Replicator
from veil.node.rpc import StorageRpc
from veil.node.store import MessageStore, Txn
from veil.node.view import NetworkState
from veil.node.writer import StoreWriter
from veil.protocol.link import FailureCode
from veil.protocol.peers import PeerInfo

__all__ = ["Node", "run_node"]

log = logging.getLogger("veil.node")

_NOT_FOUND = b'{"error":{"code":"not_found","message":"no such endpoint"}}'
_NOT_ALLOWED = b'{"error":{"code":"method_not_allowed","message":"method not allowed"}}'
_PATH_FAILED = (
    b'{"error":{"code":"path_failed",'
    b'"message":"the request did not get through; try another path"}}'
)
_BAD_GOSSIP = b'{"error":{"code":"bad_request","message":"gossip is a JSON object"}}'
_OVERLOADED = (
    b'{"error":{"code":"overloaded","message":"the path is overloaded; try another path"}}'
)


class Node:
    """One service node. ``await start()``, then ``await stop()``."""

    def __init__(self, config: NodeConfig, *, drain_timeout_s: float = 4.0) -> None:
        self.config = config
        self.drain_timeout_s = drain_timeout_s
        self.identity = load_node_key(config.key_path)
        self.metrics = NodeMetrics()
        self.store = MessageStore(config.store_path, config.store, config.limits)
        self.writer = StoreWriter(self.store)
        self.rpc = StorageRpc(self.store, self.writer, config.limits, self.metrics)
        self.rpc.node_info = {
            "ed25519": self.identity.ed25519_public_key.hex(),
            "x25519": self.identity.x25519_public_key.hex(),
        }
        onion = config.onion
        self.router = OnionRouter(
            key=_core.NodeKey(self.identity.x25519_secret_key),
            settings=onion,
            pool=LinkPool(
                max_frame=onion.max_onion_bytes + 64,
                max_streams=onion.link_max_streams,
                connect_timeout_s=onion.link_connect_timeout_s,
                backoff_max_s=onion.link_backoff_max_s,
            ),
            rpc=self.rpc,
            external_services=config.external_services,
        )
        self._static_peers = load_peers(config.peers_path)
        net = config.network
        self.membership = Membership(
            self.identity,
            version=__version__,
            seeds=config.seeds,
            node_timeout_s=net.node_timeout_s,
            announce_interval_s=net.announce_interval_s,
            gossip_interval_s=net.gossip_interval_s,
            clock_skew_ms=config.limits.clock_skew_ms,
        )
        self.network = NetworkState(self.membership, net.swarm_size)
        self.rpc.network = self.network
        self.rpc.min_swarm_size = net.min_swarm_size
        self.replicator = Replicator(
            identity=self.identity,
            network=self.network,
            pool=self.router.pool,
            store=self.store,
            writer=self.writer,
            settings=net,
            hop_timeout_s=config.onion.hop_timeout_s,
        )
        self.replicator.client_rpc = self.rpc
        self.rpc.replicator = self.replicator
        self._known: set[bytes] = set()
        self._started = False
        self.membership.on_change.append(self._view_changed)
        self._view_changed()
        self._link_server: asyncio.Server | None = None
        self._accepted_links: weakref.WeakSet[Link] = weakref.WeakSet()
        self.link_port = config.link_port
        self._routes: dict[bytes, tuple[bytes, Callable[[Request], Awaitable[Response]]]] = {
            b"/storage_rpc/v1": (b"POST", self._storage_rpc),
            b"/onion_req": (b"POST", self._onion_req),
            b"/metrics": (b"GET", self._metrics),
            b"/gossip": (b"POST", self._gossip),
        }
        self.app = HttpApp(self._route, config.limits, self._refused)
        self.metrics.watch_store(self._store_figures)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = config.listen_port

    async def start(self) -> None:
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
        onion = self.config.onion

        def accept_link() -> Link:
            link = Link(
                self.router.handle_from_peer,
                max_frame=onion.max_onion_bytes + 64,
                max_streams=onion.link_max_streams,
                rpc_handler=self.replicator.handle_rpc,
            )
            self._accepted_links.add(link)
            return link

        self._link_server = await loop.create_server(
            accept_link,
            self.config.link_host,
            self.config.link_port,
            reuse_address=True,
            backlog=1024,
        )
        self.link_port = self._link_server.sockets[0].getsockname()[1]
        self.membership.announce(
            f"{self.config.listen_host}:{self.port}", f"{self.config.link_host}:{self.link_port}"
        )
        self._started = True
        self._tasks = [
            asyncio.create_task(self.membership.run(), name="gossip"),
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
        """Replace the statically configured nodes this node may forward onion layers to."""
        self._static_peers = list(peers)
        self._view_changed()

    def _view_changed(self) -> None:
        self.router.set_peers([*self._static_peers, *self.membership.peers()])
        self.network.rebuild()
        if self._started:  # a node that joins gets its share now, not at the next sync round
            for node_id, announcement in self.membership.nodes.items():
                if node_id not in self._known and node_id != self.identity.ed25519_public_key:
                    self.replicator.sync_soon(announcement)
        self._known = set(self.membership.nodes)

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
        if self._server is not None:
            self._server.close()
        if self._link_server is not None:
            self._link_server.close()
        self.app.close_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.app.idle.wait(), self.drain_timeout_s)
        for connection in list(self.app.connections):
            connection.close()
        for link in list(self._accepted_links):  # peers must see this node go, not wait on it
            link.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.replicator.close()
        await self.router.close()
        await self.membership.close()
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
        status, body = await self.rpc.handle_body(request.body)
        return Response(status, body)

    async def _onion_req(self, request: Request) -> Response:
        try:
            answer = await self.router.handle(request.body, self.config.onion.request_budget_s)
        except HopFailed as failure:
            if failure.code is FailureCode.OVERLOADED:
                return Response(503, _OVERLOADED)
            return Response(502, _PATH_FAILED)
        return Response(200, answer, b"application/octet-stream")

    async def _gossip(self, request: Request) -> Response:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return Response(400, _BAD_GOSSIP)
        if isinstance(body, dict):
            self.membership.merge(body.get("announcements"))
        return Response(200, orjson.dumps({"announcements": self.membership.announcements()}))

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")

    def _refused(self, status: int) -> None:
        self.metrics.http_errors.labels(status=str(status)).inc()

    def _store_figures(self) -> tuple[int, int, int, int]:
        messages, data_bytes = self.store.totals()
        used, size = self.store.map_bytes()
        return messages, data_bytes, used, size

    async def _sweep_forever(self) -> None:
        settings = self.config.store
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            now = time.time_ns() // 1_000_000

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
