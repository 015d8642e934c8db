"""pytest-benchmark suite of the whole network, end to end (``docs/performance.md``, "The network:
end to end"): messages per second, p50 and p99 latency of a store — onion request, store,
replication to the write quorum — on a devnet of 6, 12 and 24 node processes.

For each N: ``python -m veil devnet up --detach --nodes N`` in a temporary directory (3 directory
authorities and N nodes; the figures are the nodes'), then a client process (``network_load.py``,
its own interpreter: it shares nothing with the nodes or with pytest) finds the network as a client
does — the devnet's network file, and the consensus from one of the seeds in ``devnet.json``,
taken only if a majority of the authorities signed it and listing all N nodes — and stores
messages of ``SIZE`` random bytes, each for a recipient drawn from ``RECIPIENTS`` identities, from
``CONCURRENCY`` coroutines with ``SwarmClient.store``: a three-hop onion request (guard → relay → a
member of the recipient's swarm), which stores the message and answers with the swarm's signed
results once W = 3 of the R = 5 members hold it. Every answer must carry the message's hash and at
least three signed results that verify from distinct swarm members. One round = ``N_MESSAGES``
stores (or ``TIME_LIMIT_S``); messages/s = count / median round; p50/p99 = median over rounds of
each round's percentile. After the rounds,
``SAMPLE`` recipients read their messages with ``SwarmClient.retrieve``: every acknowledged hash
must be there. Then ``veil devnet down`` — in a ``finally``, as is the client's ``quit``.

Benchmarks are disabled by default (``--benchmark-disable``): only N = 6 then runs, once, with a few
dozen messages, as a correctness check (the others are skipped). ``--benchmark-enable`` runs all
three sizes and prints a summary at the end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchkit import Benchmark, ChildProcess, pick
from veil.devnet.state import load_state, process_start

HELPER = Path(__file__).with_name("network_load.py")
NODES = (6, 12, 24)
SIZE = 1024
CONCURRENCY = 32
RECIPIENTS = 256
TIME_LIMIT_S = 60.0
N_MESSAGES = (2000, 48)  # per round (enabled, disabled)
N_WARMUP = (200, 0)  # untimed stores before the rounds: connections, first paths
ROUNDS = (3, 1)
IDLE_S = (3, 0)  # the nodes' own CPU use (consensus fetches, anti-entropy) measured without load
SAMPLE = (32, 8)  # recipients whose messages are read back
UP_TIMEOUT_S = 120.0
DOWN_TIMEOUT_S = 60.0

FIGURES: dict[int, dict[str, Any]] = {}


# --- processes ------------------------------------------------------------------------------------


class Client(ChildProcess):
    """``network_load.py`` in a child process, driven one JSON line at a time."""

    def __init__(self, log: Path) -> None:
        super().__init__(HELPER, log=log)


def veil_devnet(log: Path, timeout: float, *args: str) -> subprocess.CompletedProcess[bytes]:
    with log.open("ab") as out:
        return subprocess.run(
            [sys.executable, "-m", "veil", "devnet", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            timeout=timeout,
            check=False,
        )


def node_pids(devnet: Path) -> list[int]:
    state = load_state(devnet.resolve())
    if state is None:
        return []
    return [n.process.pid for n in state.nodes if n.process is not None and n.running()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/PID/stat``)."""
    ticks = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        fields = stat[stat.rfind(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Devnet:
    """``veil devnet up --detach`` on entry, ``veil devnet down`` on exit (whatever happened)."""

    def __init__(self, base: Path, nodes: int) -> None:
        self.dir = base / "devnet"
        self.log = base / "devnet-commands.log"
        self.nodes = nodes
        self.pids: list[int] = []

    def __enter__(self) -> Devnet:
        try:
            started = time.monotonic()
            done = veil_devnet(
                self.log,
                UP_TIMEOUT_S,
                "up",
                "--detach",
                "--nodes",
                str(self.nodes),
                "--dir",
                str(self.dir),
                "--timeout",
                str(UP_TIMEOUT_S - 10),
            )
            assert done.returncode == 0, self.log.read_text(errors="replace")[-2000:]
            self.up_s = time.monotonic() - started
            self.pids = node_pids(self.dir)
            assert len(self.pids) == self.nodes, self.pids
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        if not (self.dir / "devnet.json").exists():
            return
        done = veil_devnet(self.log, DOWN_TIMEOUT_S, "down", "--dir", str(self.dir))
        assert done.returncode == 0, self.log.read_text(errors="replace")[-2000:]
        left = [pid for pid in self.pids if process_start(pid) is not None]  # zombies: gone
        assert not left, f"node processes still running after devnet down: {left}"

    def __exit__(self, *exc: object) -> None:
        self.down()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints this run's figures once every benchmark of the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    lines = [
        "",
        f"network end to end, this run ({SIZE} B stores, {CONCURRENCY} concurrent, "
        "medians over rounds):",
    ]
    for n in sorted(FIGURES):
        f = FIGURES[n]
        lines.append(
            f"  {n:2} nodes  {f['rate']:7.0f} msgs/s  p50 {f['p50_ms']:7.1f} ms"
            f"  p99 {f['p99_ms']:7.1f} ms  CPU/msg: nodes {f['nodes_cpu_us']:5.0f} us"
            f" ({f['nodes_cpu_busy_us']:5.0f} beyond idle {f['idle_cpu']:.0%} of a vCPU),"
            f" client {f['client_cpu_us']:4.0f} us;  onion requests/store"
            f" {f['requests_per_store']:.3f}; delivered {f['found']}/{f['expected']}"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("nodes", NODES)
def test_network_store(benchmark: Benchmark, tmp_path: Path, nodes: int) -> None:
    if benchmark.disabled and nodes != NODES[0]:
        pytest.skip(f"only {NODES[0]} nodes without --benchmark-enable (a quick check)")
    benchmark.group = "network-store"
    n = pick(benchmark, N_MESSAGES)
    results: list[dict[str, Any]] = []
    cpu: list[float] = []
    idle_cpu = 0.0
    with Devnet(tmp_path, nodes) as devnet:
        client = Client(tmp_path / "client.log")
        try:
            ready = client.ask(op="devnet", dir=str(devnet.dir), recipients=RECIPIENTS)
            assert ready == {"nodes": nodes, "view": nodes}, ready
            warmup = pick(benchmark, N_WARMUP)
            if warmup:
                client.ask(op="prep", n=warmup, size=SIZE)
                result = client.ask(op="go", concurrency=CONCURRENCY, time_limit=TIME_LIMIT_S)
                assert (result["ok"], result["bad"]) == (warmup, 0), result
            idle_s = pick(benchmark, IDLE_S)
            if idle_s:
                time.sleep(1.0)  # the warm-up's background replication
                before = cpu_seconds(devnet.pids)
                time.sleep(idle_s)
                idle_cpu = (cpu_seconds(devnet.pids) - before) / idle_s

            def setup() -> tuple[tuple[()], dict[str, Any]]:
                client.ask(op="prep", n=n, size=SIZE)
                return (), {}

            def go() -> dict[str, Any]:
                before = cpu_seconds(devnet.pids)
                result = client.ask(op="go", concurrency=CONCURRENCY, time_limit=TIME_LIMIT_S)
                cpu.append(cpu_seconds(devnet.pids) - before)
                results.append(result)
                return result

            benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, ROUNDS))
            delivery = client.ask(op="check", sample=pick(benchmark, SAMPLE))
        finally:
            client.stop()

    for result in results:
        assert (result["ok"], result["bad"], result["sent"]) == (n, 0, n), result
    assert delivery["recipients"] == pick(benchmark, SAMPLE), delivery
    assert delivery["found"] == delivery["expected"] > 0, delivery
    assert (delivery["unexpected"], delivery["corrupt"]) == (0, 0), delivery
    stats = getattr(benchmark, "stats", None)
    if benchmark.disabled or stats is None:
        return
    median = float(stats.stats.median)
    stores = n * len(results)
    requests = sum(v for r in results for k, v in r["requests"].items() if k.startswith("store"))
    figures: dict[str, Any] = {
        "rate": n / median,
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "max_ms": max(r["max_ms"] for r in results),
        "round_rates": [round(n / r["elapsed"], 1) for r in results],
        "nodes_cpu_us": sum(cpu) / stores * 1e6,
        "idle_cpu": idle_cpu,
        "nodes_cpu_busy_us": (sum(cpu) - idle_cpu * sum(r["elapsed"] for r in results))
        / stores
        * 1e6,
        "client_cpu_us": sum(r["cpu_s"] for r in results) / stores * 1e6,
        "requests_per_store": requests / stores,
        "paths_failed": sum(r["paths_failed"] for r in results),
        "found": delivery["found"],
        "expected": delivery["expected"],
        "up_s": devnet.up_s,
    }
    FIGURES[nodes] = figures
    benchmark.extra_info.update(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    )
