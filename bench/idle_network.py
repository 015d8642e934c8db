"""The idle cost of a devnet: its nodes' CPU and wake-ups with no load, once the links are open.

Run as ``.venv/bin/python bench/idle_network.py [--nodes 24] [--rest 40] [--window 20]``: a devnet
of N nodes (``veil.benchmarks.network``'s session: devnet up, a load client), 200 warm-up stores
through three-hop onion requests (so that nodes hold links to one another, as they do in use),
``--rest`` seconds for replication and anti-entropy to settle, then two ``--window`` second
windows of the node processes' CPU (``/proc/PID/stat``, as a share of one core) and of their
threads' context switches per second (``/proc/PID/task/*/status``: voluntary and involuntary,
that is the wake-ups and preemptions). The devnet is taken down at the end, whatever happened.
Figures in ``docs/performance.md``, "The data plane".
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from veil.benchmarks.network import Config, Session

WARMUP = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=24)
    parser.add_argument("--rest", type=float, default=40.0)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    config = Config(nodes=(args.nodes,), warmup=WARMUP, idle_seconds=0)
    with (
        tempfile.TemporaryDirectory(prefix="veil-idle-") as work,
        Session(args.nodes, config, Path(work)) as session,
    ):
        session.warm_up()
        time.sleep(args.rest)
        devnet = session.devnet
        for window in (1, 2):
            cpu, switches = devnet.cpu_seconds(), devnet.context_switches()
            began = time.perf_counter()
            time.sleep(args.window)
            elapsed = time.perf_counter() - began
            cpu = devnet.cpu_seconds() - cpu
            switches = devnet.context_switches() - switches
            print(
                f"{args.nodes} nodes idle, window {window}: {cpu / elapsed:.1%} of one core, "
                f"{switches / elapsed:,.0f} context switches/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
