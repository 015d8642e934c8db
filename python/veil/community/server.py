"""A running community server: ``POST /v1`` on uvloop, over the node's HTTP layer.

The HTTP layer is ``veil.node.http`` (the one nodes and authorities serve with: llhttp parsing, body
limits refused from ``Content-Length``, per-address connection caps, timeouts), not aiohttp's web
server: the server has one route and needs nothing else, and this way its HTTP limits are the ones
the rest of Veil is tested against. Routes::

    POST /v1    a sealed request (docs/community.md) → 200 and the sealed answer
                (application/octet-stream), whatever the request's own status; 400 and an empty
                body when the body does not open

Anything else is 404/405 before its body is read. The database is used from the event loop's thread
with synchronous calls: a poll or a post costs tens of microseconds (``bench/bench_community.py``),
less than handing it to a worker thread would. Every minute the server removes expired inbox
messages and logs the number of answers by method and status: JSON lines, never a client address
(there is none to log: requests come from exit nodes), a blinded ID or a post's contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvloop

from veil.clock import now_ms
from veil.community.config import CommunityConfig, load_server_key
from veil.community.db import CommunityDb
from veil.community.rpc import CommunityRpc
from veil.node.http import HttpApp, Request, Response
from veil.node.lifecycle import serve_until_signalled

__all__ = ["CommunityServer", "run_server"]

log = logging.getLogger("veil.community")

_PATH = b"/v1"
_HOUSEKEEPING_S = 60.0


class CommunityServer:
    """``await start()`` opens the port, ``await stop()`` closes it, its connections and the
    database (idempotent)."""

    def __init__(self, config: CommunityConfig, *, housekeeping_s: float = _HOUSEKEEPING_S) -> None:
        self.config = config
        secret, self.server_key = load_server_key(config.key_path)
        self.db = CommunityDb(config.db_path)
        self.rpc = CommunityRpc(self.db, config.limits, secret)
        self.app = HttpApp(
            self._handle,
            config.http.limits(),
            self._refused,
            routes={_PATH: b"POST"},
        )
        self.port = config.listen_port
        self._housekeeping_s = housekeeping_s
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def _handle(self, request: Request) -> Response:
        # the HTTP layer refuses a body for another route; one without a body is refused here
        if request.path.split(b"?", 1)[0] != _PATH:
            return Response(404, b'{"error":{"code":"not_found","message":"no such endpoint"}}')
        if request.method != b"POST":
            return Response(
                405, b'{"error":{"code":"method_not_allowed","message":"method not allowed"}}'
            )
        sealed = self.rpc.handle(request.body)
        if sealed is None:
            return Response(400, b"", b"application/octet-stream")
        return Response(200, sealed, b"application/octet-stream")

    def _refused(self, status: int) -> None:
        self.rpc.counts["(http)", status] += 1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self._server = await loop.create_server(
            self.app.protocol, config.listen_host, config.listen_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._task = asyncio.create_task(self._housekeeping(), name="community-housekeeping")
        log.info(
            "community server listening",
            extra={
                "fields": {
                    "listen": f"{config.listen_host}:{self.port}",
                    "url": config.url,
                    "server_key": self.server_key.hex(),
                    "rooms": len(self.db.rooms()),
                }
            },
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.app.close_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.app.idle.wait(), self.config.http.drain_timeout_s)
        for connection in list(self.app.connections):
            connection.close()
        self._report()
        self.db.close()
        log.info("community server stopped")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self._housekeeping_s)
            try:
                self.db.flush_touches()
                swept = self.db.sweep(now_ms())
                if swept:
                    log.info("expired inbox messages removed", extra={"fields": {"count": swept}})
            except Exception:
                log.exception("the inbox sweep failed")
            self.rpc.replay.prune(now_ms())
            self._report()

    def _report(self) -> None:
        counts = self.rpc.counts
        if not counts:
            return
        answers = {f"{method} {status}": n for (method, status), n in sorted(counts.items())}
        counts.clear()
        log.info("answers", extra={"fields": {"answers": answers}})


async def _serve_until_signalled(config: CommunityConfig) -> None:
    await serve_until_signalled(CommunityServer(config), log)


def run_server(config: CommunityConfig) -> None:
    """Serve in the foreground on uvloop until SIGTERM or SIGINT."""
    uvloop.run(_serve_until_signalled(config))
