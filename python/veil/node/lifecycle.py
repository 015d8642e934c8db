"""Running a service in the foreground until SIGTERM or SIGINT (the authority and the community
server; the node has its own, which does not stop what failed to start)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

__all__ = ["Service", "serve_until_signalled"]


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signalled(service: Service, log: logging.Logger) -> None:
    """Start ``service``, wait for SIGTERM or SIGINT, stop it (also if starting failed), and
    give the signals back."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
        await stop.wait()
        log.info("stopping")
    finally:
        await service.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
