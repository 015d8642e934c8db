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

import uvloop

from veil.node.config import NodeConfig
from veil.node.http import HttpApp, Request, Response
from veil.node.identity import load_node_key
from veil.node.metrics import NodeMetrics
from veil.node.rpc import StorageRpc
from veil.node.store import MessageStore, Txn
from veil.node.writer import StoreWriter

__all__ = ["Node", "run_node"]

log = logging.getLogger("veil.node")

_NOT_FOUND = b'{"error":{"code":"not_found","message":"no such endpoint"}}'
_NOT_ALLOWED = b'{"error":{"code":"method_not_allowed","message":"method not allowed"}}'


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
        self._tasks = [
            asyncio.create_task(self._sweep_forever(), name="sweeper"),
            asyncio.create_task(self._check_readers_forever(), name="reader-check"),
        ]
        log.info(
            "node listening",
            extra={
                "fields": {
                    "node": self.identity.ed25519_public_key.hex(),
                    "listen": f"{self.config.listen_host}:{self.port}",
                }
            },
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.app.close_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.app.idle.wait(), self.drain_timeout_s)
        for connection in list(self.app.connections):
            connection.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.close()
        self.store.close()
        log.info("node stopped")

    async def _route(self, request: Request) -> Response:
        if request.path == b"/storage_rpc/v1":
            if request.method != b"POST":
                return Response(405, _NOT_ALLOWED)
            status, body = await self.rpc.handle_body(request.body)
            return Response(status, body)
        if request.path == b"/metrics":
            if request.method != b"GET":
                return Response(405, _NOT_ALLOWED)
            return Response(200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")
        return Response(404, _NOT_FOUND)

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
