"""The names a node's threads carry where the kernel shows them (``top -H``, ``ps -L``,
``/proc/PID/task/TID/comm``), so that an operator, and ``veil bench network``, can tell the store
writer's CPU from the event loop's. Python 3.11 names its threads only for itself."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PEELER", "WRITER", "name_this_thread", "thread_cpu_seconds"]

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


def thread_cpu_seconds(native_id: int) -> tuple[float, float] | None:
    """The user and system CPU seconds so far of this process's thread ``native_id``
    (``threading.get_native_id()``), in clock ticks as the kernel counts them
    (``/proc/self/task/ID/stat``); None if it cannot be read (the thread ended, or not Linux)."""
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 13 or not fields[11].isdigit() or not fields[12].isdigit():
        return None
    per_second = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / per_second, int(fields[12]) / per_second
