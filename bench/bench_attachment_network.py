"""pytest-benchmark suite of attachments through the network (``docs/performance.md``,
"Attachments: through the network"): how fast ``Transfers`` moves a 10 MB attachment up and down
a devnet through onion paths, against the same chunks stored and fetched straight at a swarm
member in the same run, and what it costs the client's CPU.

One devnet for the module: ``python -m veil devnet up --detach --nodes 6`` in a temporary
directory (3 authorities and 6 nodes; R = 5, W = 3, a consensus every 2 s), brought down in a
``finally`` whatever happens (``bench_network.Devnet``). The client is ``attachment_load.py`` in
its own interpreter (it shares nothing with the nodes or with pytest). For each parallelism P
(chunks in flight), every round takes two fresh attachments of ``SIZE`` random bytes and runs
four timed transfers, each pair interleaved (which of the two goes first alternates from round
to round) so that both share the machine's noise:

- **upload** (onion): ``Transfers(swarm, parallel=P).upload`` — each 64 KiB chunk sealed, stored
  through a three-hop onion at a member of its own account's swarm, acknowledged by W = 3 signed
  results that the client verifies;
- **store** (direct): the other attachment, sealed beforehand (``seal_attachment``, untimed), each
  chunk stored with a signed ``store`` posted straight to a member of its swarm, P at a time, every
  answer checked the same way (hash, W verifying signed results, none ``already``);
- **download** (onion): ``Transfers.download`` of the uploaded attachment (each chunk fetched from
  one member through a three-hop onion, opened; the whole checked), compared byte for byte with
  what was uploaded;
- **retrieve** (direct): the stored chunks fetched back with signed ``retrieve`` requests posted
  straight to a member, each answer compared with the bytes stored.

Then both attachments' chunks are deleted (untimed), so that the nodes' stores stay small. Figures
per P, medians over rounds: MB/s of plaintext (and of stored bytes: chunks are padded), the ratio
onion / direct (ratio of the medians, and the median of the per-round ratios) against the target
(≥ 0.5 for upload and download), the client's CPU seconds per MB of plaintext (its process time)
and the nodes' (``/proc/PID/stat`` of the 6 node processes), how busy they kept the machine (CPU
seconds per wall second), and the ratio of the CPU per MB (client + nodes) direct / onion: where
the machine is the limit, as on a 2-vCPU VM running seven processes, the throughput ratio follows
it. Every transfer is verified: a wrong or missing byte fails the command, and so the test.

Benchmarks are disabled by default (``--benchmark-disable``): then one round of a 1 MB attachment
with P = 4 runs as a correctness check (a few seconds after the devnet is up).
``--benchmark-enable`` runs the rounds above and prints a summary at the end.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench_network import Devnet, cpu_seconds
from benchkit import Benchmark, ChildProcess, pick

HELPER = Path(__file__).with_name("attachment_load.py")
NODES = 6
SIZE = (10_000_000, 1_000_000)  # plaintext bytes of each attachment (enabled, disabled)
WARMUP_SIZE = 1_000_000  # one untimed round first (enabled): connections, paths
PARALLEL = (4, 8)
ROUNDS = (5, 1)
IDLE_S = (3, 0)  # the devnet's own CPU use without load
TARGET = 0.5  # onion throughput / direct throughput, upload and download
MB = 1e6

FIGURES: dict[int, dict[str, Any]] = {}
PAIRS = (("upload", "store"), ("download", "retrieve"))


class Client(ChildProcess):
    """``attachment_load.py`` in a child process, driven one JSON line at a time."""

    def __init__(self, log: Path) -> None:
        super().__init__(HELPER, log=log)


class Net:
    """The module's devnet and client; ``ask`` adds the node processes' CPU seconds."""

    def __init__(self, devnet: Devnet, client: Client) -> None:
        self.devnet = devnet
        self.client = client
        self.idle_cpu = 0.0
        self.warm = False

    def ask(self, **command: Any) -> dict[str, Any]:
        before = cpu_seconds(self.devnet.pids)
        answer = self.client.ask(**command)
        answer["nodes_cpu_s"] = cpu_seconds(self.devnet.pids) - before
        return answer

    def round(self, size: int, parallel: int, first: int) -> dict[str, dict[str, Any]]:
        """One round: fresh attachments, the two pairs (``first`` = 0: onion first, 1: direct
        first), every transfer checked; then both attachments deleted."""
        prepared = self.client.ask(op="prep", size=size)
        done: dict[str, dict[str, Any]] = {}
        for pair in PAIRS:
            for op in pair[first:] + pair[:first]:
                done[op] = self.ask(op=op, parallel=parallel)
        for op, result in done.items():
            assert (result["size"], result["chunks"]) == (size, prepared["chunks"]), (op, result)
            assert result["stored"] == prepared["stored"], (op, result)
        assert done["download"]["verified"] is True
        assert done["retrieve"]["verified"] is True
        deleted = self.client.ask(op="delete")
        assert deleted["deleted"] == deleted["chunks"] == 2 * prepared["chunks"], deleted
        return done


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("attachments")
    with Devnet(base, NODES) as devnet:  # veil devnet down on exit, whatever happened
        client = Client(base / "client.log")
        try:
            ready = client.ask(op="devnet", dir=str(devnet.dir))
            assert ready == {"nodes": NODES, "view": NODES}, ready
            yield Net(devnet, client)
        finally:
            client.stop()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints this run's figures once every benchmark of the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    lines = [
        "",
        f"attachments through a {NODES}-node devnet, this run ({SIZE[0]:,} B attachments;"
        " medians over rounds, [min-max]):",
    ]
    for parallel in sorted(FIGURES):
        f = FIGURES[parallel]
        lines.append(f"  parallel = {parallel}, {f['rounds']} rounds, {f['chunks']} chunks:")
        for op in ("upload", "store", "download", "retrieve"):
            o = f[op]
            lines.append(
                f"    {op:8} {'onion ' if op in ('upload', 'download') else 'direct'}"
                f" {o['mbps']:6.2f} MB/s {_range(o['mbps_rounds'])}"
                f" ({o['stored_mbps']:5.2f} MB/s stored)  CPU per MB: client"
                f" {o['client_cpu_per_mb']:.3f} s + nodes {o['nodes_cpu_per_mb']:.3f} s;"
                f" busy: client {o['client_busy']:.0%} of a vCPU, all {o['busy']:.2f} vCPU;"
                f" moved on {o['moved_on']}, paths failed {o['paths_failed']},"
                f" onion requests {o['requests']}"
            )
        for onion, direct in PAIRS:
            r = f[f"{onion}/{direct}"]
            mark = "met" if r["ratio"] >= TARGET else "MISSED"
            lines.append(
                f"    {onion}/{direct} {r['ratio']:.2f} (per round {_range(r['rounds'])},"
                f" median {r['median_of_rounds']:.2f}) target >= {TARGET}: {mark};"
                f" CPU per MB {direct}/{onion} {r['cpu_ratio']:.2f}"
            )
    lines.append(f"  devnet idle: {FIGURES[min(FIGURES)]['idle_cpu']:.1%} of a vCPU")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def _range(values: list[float]) -> str:
    return f"[{min(values):.2f}-{max(values):.2f}]"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("parallel", PARALLEL)
def test_attachment_transfer(benchmark: Benchmark, net: Net, parallel: int) -> None:
    if benchmark.disabled and parallel != PARALLEL[0]:
        pytest.skip(f"only parallel = {PARALLEL[0]} without --benchmark-enable (a quick check)")
    benchmark.group = "attachment-network"
    size = pick(benchmark, SIZE)
    if not benchmark.disabled and not net.warm:
        net.round(WARMUP_SIZE, parallel, 0)
        idle_s = pick(benchmark, IDLE_S)
        time.sleep(1.0)  # the warm-up's last replication and deletion
        before = cpu_seconds(net.devnet.pids)
        time.sleep(idle_s)
        net.idle_cpu = (cpu_seconds(net.devnet.pids) - before) / idle_s
        net.warm = True
    rounds: list[dict[str, dict[str, Any]]] = []

    def one_round() -> None:
        rounds.append(net.round(size, parallel, len(rounds) % 2))

    benchmark.pedantic(one_round, rounds=pick(benchmark, ROUNDS))
    assert len(rounds) == pick(benchmark, ROUNDS)
    if benchmark.disabled:
        return
    figures: dict[str, Any] = {
        "rounds": len(rounds),
        "chunks": rounds[0]["upload"]["chunks"],
        "idle_cpu": net.idle_cpu,
    }
    for op in ("upload", "store", "download", "retrieve"):
        results = [r[op] for r in rounds]
        elapsed = statistics.median(r["elapsed"] for r in results)
        plain_mb = sum(r["size"] for r in results) / MB
        requests: dict[str, int] = {}
        for r in results:
            for key, count in r["requests"].items():
                requests[key] = requests.get(key, 0) + count
        figures[op] = {
            "elapsed_s": elapsed,
            "mbps": size / elapsed / MB,
            "mbps_rounds": [r["size"] / r["elapsed"] / MB for r in results],
            "stored_mbps": results[0]["stored"] / elapsed / MB,
            "client_cpu_per_mb": sum(r["cpu_s"] for r in results) / plain_mb,
            "client_user_per_mb": sum(r["user_s"] for r in results) / plain_mb,
            "client_sys_per_mb": sum(r["sys_s"] for r in results) / plain_mb,
            "nodes_cpu_per_mb": sum(r["nodes_cpu_s"] for r in results) / plain_mb,
            "cpu_per_mb": sum(r["cpu_s"] + r["nodes_cpu_s"] for r in results) / plain_mb,
            "client_busy": sum(r["cpu_s"] for r in results) / sum(r["elapsed"] for r in results),
            "busy": sum(r["cpu_s"] + r["nodes_cpu_s"] for r in results)
            / sum(r["elapsed"] for r in results),
            "moved_on": sum(r["moved_on"] for r in results),
            "paths_failed": sum(r["paths_failed"] for r in results),
            "requests": requests,
        }
    for onion, direct in PAIRS:
        per_round = [r[direct]["elapsed"] / r[onion]["elapsed"] for r in rounds]
        figures[f"{onion}/{direct}"] = {
            "ratio": figures[direct]["elapsed_s"] / figures[onion]["elapsed_s"],
            "rounds": per_round,
            "median_of_rounds": statistics.median(per_round),
            "cpu_ratio": figures[direct]["cpu_per_mb"] / figures[onion]["cpu_per_mb"],
            "target": TARGET,
        }
    FIGURES[parallel] = figures
    benchmark.extra_info.update(
        {
            f"{op} {key}": round(value, 4) if isinstance(value, float) else value
            for op in ("upload", "store", "download", "retrieve")
            for key, value in figures[op].items()
            if key in ("mbps", "client_cpu_per_mb", "nodes_cpu_per_mb", "busy")
        }
    )
    for onion, direct in PAIRS:
        benchmark.extra_info[f"{onion}/{direct}"] = round(figures[f"{onion}/{direct}"]["ratio"], 3)
