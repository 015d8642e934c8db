"""The reachability check: is a node at its announced link address, and does it hold its key?

The authority opens a node link (``docs/protocol.md``, "Node links, version 2") to the node's
announced ``link`` address as the caller, with the node's announced X25519 key as the key it
expects, and with its own X25519 key (the conversion of its Ed25519 key in the network file, which
nodes admit on their link port). The Noise_IK handshake completes only if the node holds the secret
of that key — an announcement naming another node's address, or a key its operator does not hold,
fails — and only if the node admits the authority. The link is then closed: no frame is sent.

Each handshake carries a timestamp that grows from one to the next (nodes refuse a replayed one),
at most ``check_concurrency`` checks run at once, and each has ``check_timeout_s`` to connect and
as long again to finish the handshake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from veil import _core
from veil.clock import now_ms
from veil.errors import VeilError
from veil.node.config import LinkSettings
from veil.node.links import HopFailed, Link

__all__ = ["LinkProbe"]


class LinkProbe:
    def __init__(
        self,
        *,
        key: _core.NodeKey,
        timeout_s: float,
        concurrency: int,
        count: Callable[[str], None],
    ) -> None:
        self.key = key
        self.settings = LinkSettings(connect_timeout_s=timeout_s, handshake_timeout_s=timeout_s)
        self.count = count
        self._slots = asyncio.Semaphore(concurrency)
        self._stamp = 0

    def _timestamp(self) -> int:
        self._stamp = max(now_ms(), self._stamp + 1)
        return self._stamp

    async def check(self, address: tuple[str, int], x25519: bytes) -> bool:
        """Whether a link handshake with ``x25519`` at ``address`` completes in time."""
        async with self._slots:
            return await self._handshake(address, x25519)

    async def _handshake(self, address: tuple[str, int], x25519: bytes) -> bool:
        loop = asyncio.get_running_loop()
        settings = self.settings
        link: Link | None = None

        def calling() -> Link:
            nonlocal link
            link = Link.calling(
                key=self.key,
                settings=settings,
                count=self.count,
                remote_x25519=x25519,
                timestamp_ms=self._timestamp(),
            )
            return link

        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await loop.create_connection(calling, address[0], address[1])
            assert link is not None
            async with asyncio.timeout(settings.handshake_timeout_s):
                await link.ready
        except (OSError, TimeoutError, HopFailed, VeilError):
            return False
        finally:
            if link is not None and link.ready.done():
                link.close()
            elif link is not None:
                link.abort()
        return True
