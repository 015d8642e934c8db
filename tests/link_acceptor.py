"""A node's link port reduced to its handshake, for many identities at once: what an operator who
registers many node keys needs to pass an authority's reachability check, and no more."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from veil import _core
from veil.errors import DecryptionError
from veil.identity import Identity
from veil.protocol.link import HANDSHAKE_INIT_LEN

__all__ = ["LinkPort"]


class _Acceptor(asyncio.Protocol):
    def __init__(self, port: LinkPort) -> None:
        self.port = port
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.open.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if len(self.buffer) >= HANDSHAKE_INIT_LEN:
            return  # handshake done: what follows is not read
        self.buffer += data
        if len(self.buffer) < HANDSHAKE_INIT_LEN:
            return
        message = bytes(self.buffer[:HANDSHAKE_INIT_LEN])
        for key in self.port.keys:
            try:
                responder = key.link_accept(message)
            except DecryptionError:
                continue
            if responder.remote not in self.port.admitted:
                break
            answer, _ = responder.answer()
            self.port.handshakes += 1
            self.transport.write(answer)
            return
        self.transport.abort()


class LinkPort:
    """Answers the link handshake of callers whose X25519 key is one of ``admitted`` (the
    authorities') for any of ``identities``, on ``host``, and closes on anyone else."""

    def __init__(
        self, identities: Iterable[Identity], admitted: Iterable[bytes], host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.keys = [_core.NodeKey(i.x25519_secret_key) for i in identities]
        self.admitted = set(admitted)
        self.handshakes = 0
        self.open: set[_Acceptor] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> LinkPort:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Acceptor(self), self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def __aenter__(self) -> LinkPort:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
