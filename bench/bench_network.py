"""pytest-benchmark suite of the whole network, end to end (the second front end of
``veil.benchmarks.network``; ``docs/performance.md``, "The network: end to end"): messages per
second, p50 and p99 latency of a store — onion request, store, replication to the write quorum —
on a devnet of 6, 12 and 24 node processes, node CPU per message, also in peel units.

For each N, :class:`veil.benchmarks.network.Session` starts ``python -m veil devnet up --detach
--nodes N`` in a temporary directory and the client process
(``python -m veil.benchmarks.network_load``) on it; ``warm_up`` and ``measure_idle`` run untimed,
then pytest-benchmark times ``run_round`` (``prepare_round`` as its setup: the messages), and
``check_delivery`` reads a sample back. Every store answer, signed result and read-back message is
checked there; a wrong one fails the test. ``veil devnet down`` runs when the session ends,
whatever happened. The single-core onion peel (``measure_peel``), the unit of the peel-unit figures,
is measured once, before the first devnet starts.

Benchmarks are disabled by default (``--benchmark-disable``): only N = 6 then runs, once, with a few
dozen messages, as a correctness check (the others are skipped). ``--benchmark-enable`` runs all
three sizes and prints a summary at the end; ``veil bench network`` gives the same figures as a
table, JSON and PNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchkit import Benchmark, pick
from veil.benchmarks import network
from veil.devnet.state import ProcessRef

NODES = network.DEFAULT_NODES
N_MESSAGES = (network.DEFAULT_MESSAGES, 48)  # per round (enabled, disabled)
N_WARMUP = (network.DEFAULT_WARMUP, 0)  # untimed stores before the rounds: connections, paths
ROUNDS = (network.DEFAULT_ROUNDS, 1)
IDLE_S = (int(network.DEFAULT_IDLE_SECONDS), 0)  # the nodes' own CPU use without load
SAMPLE = (network.DEFAULT_SAMPLE, 8)  # recipients whose messages are read back

FIGURES: dict[int, network.NodesResult] = {}
PEEL: list[network.PeelTime] = []

# What bench_messenger.py and bench_attachment_network.py import from here: the devnet as a context
# (``veil devnet down`` on exit, whatever happened) and the nodes' CPU seconds by pid.
Devnet = network.Devnet


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/PID/stat``)."""
    return network.cpu_seconds(ProcessRef.of(pid) for pid in pids)


def config(benchmark: Benchmark, nodes: int) -> network.Config:
    return network.Config(
        nodes=(nodes,),
        messages=pick(benchmark, N_MESSAGES),
        rounds=pick(benchmark, ROUNDS),
        warmup=pick(benchmark, N_WARMUP),
        idle_seconds=pick(benchmark, IDLE_S),
        sample=pick(benchmark, SAMPLE),
    )


def peel_us() -> float:
    """The single-core peel time of this run, measured on first use (no devnet running then)."""
    if not PEEL:
        PEEL.append(network.measure_peel())
    return PEEL[0].median_us


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints this run's figures once every benchmark of the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    lines = [
        "",
        f"network end to end, this run ({network.SIZE} B stores, "
        f"{network.DEFAULT_CONCURRENCY} concurrent, medians over rounds; peel unit: "
        f"NodeKey.peel of a 1 KiB onion, {PEEL[0].median_us:.2f} us of one core's CPU):",
    ]
    for n in sorted(FIGURES):
        f = FIGURES[n].summary()
        lines.append(
            f"  {n:2} nodes  {f['rate']:7.0f} msgs/s  p50 {f['p50_ms']:7.1f} ms"
            f"  p99 {f['p99_ms']:7.1f} ms  CPU/msg: nodes {f['nodes_cpu_us']:5.0f} us"
            f" ({f['nodes_cpu_busy_us']:5.0f} beyond idle {f['idle_cpu']:.0%} of a vCPU)"
            f" = {f['peel_units']:5.1f} peel units ({f['peel_units_busy']:5.1f}),"
            f" client {f['client_cpu_us']:4.0f} us;  node context switches/msg"
            f" {f['switches_per_msg']:.1f}, commits/msg"
            f" {network.figure(f['commits_per_msg'], '.2f')}"
            f" ({network.figure(f['jobs_per_commit'], '.1f')} jobs each);  onion requests/store"
            f" {f['requests_per_store']:.3f}; delivered {f['found']}/{f['expected']}"
            + by_thread(f["threads_cpu_us"])
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
    setup = config(benchmark, nodes)
    unit = None if benchmark.disabled else peel_us()
    with network.Session(nodes, setup, tmp_path) as session:
        session.warm_up()
        idle = session.measure_idle()
        benchmark.pedantic(session.run_round, setup=session.prepare_round, rounds=setup.rounds)
        delivery = session.check_delivery()
        result = session.result(idle, delivery, unit)

    assert [r.ok for r in result.rounds] == [setup.messages] * setup.rounds, result.rounds
    assert delivery.recipients == setup.sample, delivery
    assert delivery.found == delivery.expected > 0, delivery
    if benchmark.disabled or getattr(benchmark, "stats", None) is None:
        return
    FIGURES[nodes] = result
    benchmark.extra_info.update({k: rounded(v) for k, v in result.summary().items()})


def by_thread(us: dict[str, float] | None) -> str:
    """The summary's node CPU a message by thread (µs), or nothing if it was not read."""
    if us is None:
        return ""
    return (
        f";  by thread: event loops {us['loop_user'] + us['loop_system']:.0f} us"
        f" ({us['loop_system']:.0f} system), store writers"
        f" {us['writer_user'] + us['writer_system']:.0f} us ({us['writer_system']:.0f} system)"
    )


def rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value
