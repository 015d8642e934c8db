"""``veil.node.threads``: the thread names the kernel shows, and a thread's CPU as it counts it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from veil.node.threads import name_this_thread, thread_cpu_seconds


def test_a_thread_names_itself_for_the_kernel_and_long_names_are_cut_to_fifteen_bytes() -> None:
    seen: list[str] = []

    def run(name: str) -> None:
        name_this_thread(name)
        seen.append(Path("/proc/thread-self/comm").read_text("ascii").strip())

    for name in ("veil-writer", "a-name-longer-than-fifteen"):
        thread = threading.Thread(target=run, args=(name,))
        thread.start()
        thread.join()
    assert seen == ["veil-writer", "a-name-longer-t"]


def test_a_threads_cpu_is_read_by_its_native_id() -> None:
    me = threading.get_native_id()
    before = thread_cpu_seconds(me)
    began = time.thread_time()
    while time.thread_time() - began < 0.2:
        pass
    after = thread_cpu_seconds(me)
    assert before is not None
    assert after is not None
    tick = 1 / os.sysconf("SC_CLK_TCK")
    spent = (after[0] + after[1]) - (before[0] + before[1])
    assert 0.2 - 2 * tick <= spent <= time.thread_time() - began + 2 * tick


def test_a_thread_that_is_not_there_reads_as_none() -> None:
    assert thread_cpu_seconds(2**31 - 1) is None
