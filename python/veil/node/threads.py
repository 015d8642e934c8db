"""The names a node's threads carry where the kernel shows them (``top -H``, ``ps -L``,
``/proc/PID/task/TID/comm``), so that an operator, and ``veil bench network``, can tell the store
writer's CPU from the event loop's. Python 3.11 names its threads only for itself."""

from __future__ import annotations

import contextlib

__all__ = ["PEELER", "WRITER", "name_this_thread"]

WRITER = "veil-writer"
"""The store's writer thread (``veil.node.writer``)."""
PEELER = "veil-peel"
"""The worker that peels large batches of onion layers (``veil.node.onion``)."""


def name_this_thread(name: str) -> None:
    """Give the calling thread ``name`` (the kernel keeps 15 bytes) where the kernel lets a thread
    name itself (Linux); elsewhere nothing happens."""
    with (
        contextlib.suppress(OSError),
        open("/proc/thread-self/comm", "w", encoding="ascii") as comm,
    ):
        comm.write(name[:15])
