"""The network client: every request a client makes to a node travels as a three-hop onion request.

:class:`NetworkClient` knows a list of nodes (a seed list or config, for now), keeps a few guard
nodes, and builds each path as guard → relay → destination: three distinct nodes, the destination
never on its own path. It builds each onion with :func:`veil.protocol.onion_request.build_request`,
posts it to the guard over keep-alive HTTP (aiohttp), opens the answer with the reply key
(:func:`~veil.protocol.onion_request.open_reply`), and when a path fails — the guard answers "path
failed" or "overloaded", the guard cannot be reached, or the answer does not open — it avoids those
nodes for a while and builds another path. :meth:`NetworkClient.request` is the only way client
code reaches a node.
"""

from __future__ import annotations

import random
import time
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from veil.errors import InvalidInputError, VeilError
from veil.protocol.onion_request import build_request, open_reply
from veil.protocol.peers import PeerInfo

__all__ = ["NetworkClient", "NetworkError"]


class NetworkError(VeilError):
    """No path delivered the request (after the configured number of attempts)."""


class NetworkClient:
    """Sends requests to nodes through onion paths. Use as ``async with NetworkClient(nodes):``."""

    def __init__(
        self,
        nodes: list[PeerInfo],
        *,
        guards: int = 3,
        attempts: int = 4,
        timeout_s: float = 30.0,
        avoid_s: float = 30.0,
        local_address: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(nodes) < 3:
            raise ValueError("an onion path needs at least three nodes")
        self.nodes = list(nodes)
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.avoid_s = avoid_s
        self.local_address = local_address
        self._rng = rng or random.SystemRandom()
        self._guards = self._rng.sample(self.nodes, min(guards, len(self.nodes)))
        self._avoid: dict[bytes, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self.paths_failed = 0

    async def __aenter__(self) -> NetworkClient:
        connector = aiohttp.TCPConnector(
            limit=0,
            keepalive_timeout=30,
            local_addr=(self.local_address, 0) if self.local_address else None,
        )
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def guards(self) -> list[PeerInfo]:
        """The nodes this client currently enters the network through."""
        return list(self._guards)

    def choose_path(self, destination: PeerInfo) -> tuple[PeerInfo, PeerInfo]:
        """(guard, relay) for a request to ``destination``: three distinct nodes."""
        now = time.monotonic()
        usable = [
            n
            for n in self.nodes
            if n.x25519 != destination.x25519 and self._avoid.get(n.x25519, 0.0) <= now
        ]
        if len(usable) < 2:  # everything failed recently: forget and try anyone
            self._avoid.clear()
            usable = [n for n in self.nodes if n.x25519 != destination.x25519]
        guards = [g for g in self._guards if g in usable]
        if not guards:
            guards = self._guards = self._rng.sample(usable, min(3, len(usable) - 1))
        guard = self._rng.choice(guards)
        relay = self._rng.choice([n for n in usable if n.x25519 != guard.x25519])
        return guard, relay

    async def request(
        self, destination: PeerInfo, method: str, params: dict[str, Any]
    ) -> tuple[int, Any]:
        """Send ``{"method", "params"}`` to ``destination``'s storage RPC through an onion path.

        Returns the destination's (status, answer). Raises :class:`NetworkError` if no path got
        through in ``attempts`` tries.
        """
        payload = orjson.dumps({"method": method, "params": params})
        return await self._send(destination, payload, target="")

    async def request_external(
        self, destination: PeerInfo, url: str, body: bytes
    ) -> tuple[int, bytes, str]:
        """POST ``body`` to an external HTTP service at ``url`` through ``destination``.

        The destination node must list the URL's prefix among its ``external_services``; it answers
        403 otherwise. Returns (status, response body, content type).
        """
        status, (content, content_type) = await self._send(destination, body, target=url)
        return status, content, content_type

    async def _send(self, destination: PeerInfo, payload: bytes, target: str) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("use NetworkClient as an async context manager")
        for _ in range(self.attempts):
            guard, relay = self.choose_path(destination)
            onion, reply_key = build_request(
                [guard.x25519, relay.x25519, destination.x25519], payload, target=target
            )
            url = f"http://{guard.http[0]}:{guard.http[1]}/onion_req"
            try:
                async with self._session.post(
                    url,
                    data=onion,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                ) as answer:
                    body = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                self._path_failed(guard)
                continue
            if status == 503:  # overloaded somewhere on the path: another path, nobody blamed
                self.paths_failed += 1
                continue
            if status != 200:  # the guard answered, so the failure was further along
                self._path_failed(relay)
                continue
            try:
                return open_reply(reply_key, body, external=bool(target))
            except InvalidInputError:  # DecryptionError included
                self._path_failed(guard, relay)
        raise NetworkError(f"no path delivered the request in {self.attempts} attempts")

    def _path_failed(self, *suspects: PeerInfo) -> None:
        self.paths_failed += 1
        until = time.monotonic() + self.avoid_s
        for node in suspects:
            self._avoid[node.x25519] = until
