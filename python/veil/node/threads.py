"""The names a node's threads carry where the kernel shows them (``top -H``, ``ps -L``,
``/proc/PID/task/TID/comm``), and each thread's CPU as the kernel counts it, so that an operator
(``/metrics``) and ``veil bench network`` can tell the store writer's CPU from the event loop's.
Python 3.11 names its threads only for itself."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PEELER", "WRITER", "name_this_thread", "thread_cpu_seconds", "thread_stat"]

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


def thread_stat(pid: int | str, tid: int) -> tuple[str, float, float] | None:
    """The name and the user and system CPU seconds so far of thread ``tid`` of process ``pid``
    (``"self"``: this one), in clock ticks as the kernel counts them (``/proc/PID/task/TID/stat``);
    None if it cannot be read (the thread ended, or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    name = stat[stat.find("(") + 1 : stat.rfind(")")]
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 13 or not fields[11].isdigit() or not fields[12].isdigit():
        return None
    per_second = os.sysconf("SC_CLK_TCK")
    return name, int(fields[11]) / per_second, int(fields[12]) / per_second


def thread_cpu_seconds(native_id: int) -> tuple[float, float] | None:
    """The user and system CPU seconds so far of this process's thread ``native_id``
    (``threading.get_native_id()``); None if it cannot be read."""
    stat = thread_stat("self", native_id)
    return None if stat is None else stat[1:]
