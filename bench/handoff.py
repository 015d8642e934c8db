"""What a hand-off costs this machine: the CPU of one round trip of a 1,100-byte message between
two processes over loopback TCP and over a Unix socket pair, and between two threads of one
process over ``queue.SimpleQueue``.

A devnet message is a chain of such hand-offs (a link frame and its answer wake the process at
the other end; a store wakes the writer thread and its result wakes the event loop), so this is
the unit in which the growth of a message's node CPU from 6 to 24 nodes is paid
(docs/performance.md, "A message's node CPU by thread"). Each side blocks on every message, as an
idle node does; the CPU of both sides is counted (``getrusage``).

    .venv/bin/python bench/handoff.py [--trips 20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import queue
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable

SIZE = 1100  # a link frame of a 1 KiB message


def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    for end in (near, far):
        end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return near, far


def _receive(end: socket.socket) -> None:
    got = 0
    while got < SIZE:
        chunk = end.recv(65_536)
        if not chunk:
            raise ConnectionError("the other side closed")
        got += len(chunk)


def processes(pair: Callable[[], tuple[socket.socket, socket.socket]], trips: int) -> float:
    """CPU seconds of both processes per round trip."""
    near, far = pair()
    message = b"x" * SIZE
    pid = os.fork()
    if pid == 0:  # the echoing side: it exits, so its CPU is the parent's children's
        near.close()
        try:
            for _ in range(trips):
                _receive(far)
                far.sendall(message)
        finally:
            os._exit(0)
    far.close()
    children_before, mine_before = _cpu_s(resource.RUSAGE_CHILDREN), _cpu_s()
    try:
        for _ in range(trips):
            near.sendall(message)
            _receive(near)
    finally:
        near.close()
        os.waitpid(pid, 0)
    mine = _cpu_s() - mine_before
    theirs = _cpu_s(resource.RUSAGE_CHILDREN) - children_before
    return (mine + theirs) / trips


def threads(trips: int) -> float:
    """CPU seconds of the process (both threads) per round trip."""
    there: queue.SimpleQueue[int] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        for _ in range(trips):
            back.put(there.get())

    other = threading.Thread(target=echo)
    before = _cpu_s()
    other.start()
    for i in range(trips):
        there.put(i)
        back.get()
    other.join()
    return (_cpu_s() - before) / trips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=20_000, help="round trips a measurement")
    parser.add_argument("--repeat", type=int, default=2, help="measurements of each")
    args = parser.parse_args(argv)
    if not 1 <= args.trips <= 1_000_000 or not 1 <= args.repeat <= 20:
        parser.error("--trips must be 1..1000000 and --repeat 1..20")
    began = time.perf_counter()
    cases: list[tuple[str, Callable[[], float]]] = [
        ("two processes, loopback TCP", lambda: processes(_tcp_pair, args.trips)),
        ("two processes, Unix socket pair", lambda: processes(socket.socketpair, args.trips)),
        ("two threads, queue.SimpleQueue", lambda: threads(args.trips)),
    ]
    print(f"round trips of a {SIZE}-byte message, {args.trips:,} each, CPU of both sides:")
    for label, measure in cases:
        figures = [measure() * 1e6 for _ in range(args.repeat)]
        print(f"  {label:32} " + "  ".join(f"{us:6.1f} us" for us in figures))
    print(f"({time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
