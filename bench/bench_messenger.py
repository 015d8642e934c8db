"""pytest-benchmark suite of the messenger on a devnet (``docs/performance.md``, "The messenger"):
what ``Messenger.send_text`` and ``Messenger.fetch`` cost against the one swarm operation each is
built on, and how long a message takes from ``send_text`` to a polling recipient.

One devnet for the module: ``python -m veil devnet up --detach --nodes 6`` in a temporary
directory (3 authorities and 6 nodes), brought down in a ``finally`` (the module fixture's) whatever
happens. The client is ``messenger_load.py`` in its own interpreter (it shares nothing with the
nodes or with pytest); on this 2-vCPU machine all ten processes share the two vCPUs. Every account
is a device of its own (Messenger, Book, SwarmClient, NetworkClient, and a directory of its own: the
consensus fetched from a seed and checked against the devnet's network file), ``persist=None``;
every message is 64 characters of text, sealed into the 256-byte bucket (400 bytes stored).
Onion requests are counted per operation without the clients' consensus refreshes
(``get_consensus``, due every 2 s devnet period), which are counted apart.

- ``messenger-send``: ``SENDERS`` senders, each writing to a recipient of its own, contact warmed
  (the first message to a new contact also stores the config; then ``SEND_WARMUP`` more each). A
  round: ``SEND_N`` operations between the senders, all sending at once, each one after the other.
  Before each timed round, the floor round: the same senders store as many pre-sealed messages
  with ``SwarmClient.store`` (one onion store each); the timed round sends with
  ``Messenger.send_text`` (message + transcript to the sender's own swarm: two onion stores). Before
  the rounds, the same with one sender alone (unloaded latency). Afterwards every recipient fetches
  and must find every message sent to it, and a second device of every sender must find every
  transcript.
- ``messenger-fetch-idle``: ``Messenger.fetch`` with nothing new (config read from 3 members +
  messages read from 3 members), each round preceded by its floor, ``SwarmClient.retrieve`` of the
  messages alone.
- ``messenger-fetch-50``: ``FILL`` messages stored for the recipient (untimed), read by the floor
  (``SwarmClient.retrieve``, a swarm client of its own, from the start), then ``Messenger.fetch``
  (config read, messages read, opened, pickup deletion of all of them in one signed delete). Every
  round first waits until the recipient's swarm is empty: the last fetch's deletion arrived.
- ``messenger-delivery``: a sender sends ``DELIVERY`` messages with ``send_text``, one after the
  other with a random gap of ``GAP_MS``; the recipient fetches every ``POLL_MS``. Latency: start of
  ``send_text`` to the end of the fetch that returned the message. One round.

Every loop is bounded in count and in time (``TIME_LIMIT_S``). Benchmarks are disabled by default
(``--benchmark-disable``): each then runs once, with a few messages, as a correctness check (all
sent, delivered, opened, deleted). ``--benchmark-enable`` runs the figures and prints a summary.
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

HELPER = Path(__file__).with_name("messenger_load.py")
NODES = 6
TIME_LIMIT_S = 60.0
IDLE_S = (3, 0)  # the devnet's own CPU use without load (enabled, disabled)
CRYPTO_N = (500, 5)  # seals and opens timed in the client process
SENDERS = (8, 2)
SEND_WARMUP = (5, 1)  # untimed sends per sender after the first contact
SEND_N = (800, 4)  # operations per round, between the senders
SEND_ROUNDS = (5, 1)
SEQUENTIAL_N = (30, 2)  # one sender alone: floor, then messenger, per pass
SEQUENTIAL_PASSES = (2, 1)
IDLE_ROUNDS = (30, 1)
FILL = (50, 5)
FILL_ROUNDS = (10, 1)
DELIVERY = (100, 3)
POLL_MS = 100
GAP_MS = (150, 350)
DELIVERY_WAIT_S = 10.0  # after the last send, for the last message to be seen
CONSENSUS_REFRESH = "get_consensus"

FIGURES: dict[str, dict[str, Any]] = {}


class Client(ChildProcess):
    """``messenger_load.py`` in a child process, driven one JSON line at a time."""

    def __init__(self, log: Path) -> None:
        super().__init__(HELPER, log=log)


class Net:
    """The module's devnet and client; ``ask`` adds the node processes' CPU seconds and the wall
    time of the command."""

    def __init__(self, devnet: Devnet, client: Client) -> None:
        self.devnet = devnet
        self.client = client
        self.idle_cpu: float | None = None

    def ask(self, **command: Any) -> dict[str, Any]:
        before = cpu_seconds(self.devnet.pids)
        started = time.perf_counter()
        answer = self.client.ask(**command)
        answer["wall_s"] = time.perf_counter() - started
        answer["nodes_cpu_s"] = cpu_seconds(self.devnet.pids) - before
        return answer

    def measure_idle(self, seconds: float) -> float:
        """The devnet's CPU use without load, share of one vCPU (measured once)."""
        if self.idle_cpu is None and seconds > 0:
            time.sleep(1.0)  # what was sent before: replication, deletion
            before = cpu_seconds(self.devnet.pids)
            time.sleep(seconds)
            self.idle_cpu = (cpu_seconds(self.devnet.pids) - before) / seconds
        return self.idle_cpu or 0.0


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("messenger")
    with Devnet(base, NODES) as devnet:  # veil devnet down on exit, whatever happened
        client = Client(base / "client.log")
        try:
            ready = client.ask(op="devnet", dir=str(devnet.dir))
            assert ready == {"nodes": NODES}, ready
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
    lines = ["", f"messenger on a {NODES}-node devnet, this run (medians; [min-max over rounds]):"]
    if s := FIGURES.get("send"):
        lines += [
            f"  send, {s['senders']} senders at once, {s['n']} operations per round,"
            f" {s['rounds']} rounds:",
            f"    floor  SwarmClient.store   p50 {s['floor_p50_ms']:6.1f} ms"
            f" {_range(s['floor_p50s'])}  p95 {s['floor_p95_ms']:6.1f} ms"
            f"  {s['floor_rate']:6.1f} ops/s {_range(s['floor_rates'], 0)}",
            f"    Messenger.send_text        p50 {s['send_p50_ms']:6.1f} ms"
            f" {_range(s['send_p50s'])}  p95 {s['send_p95_ms']:6.1f} ms"
            f"  {s['send_rate']:6.1f} ops/s {_range(s['send_rates'], 0)}",
            f"    send / floor: p50 {s['ratio_p50']:.2f} {_range(s['ratio_p50s'], 2)},"
            f" time per op (1/rate) {s['ratio_rate']:.2f} {_range(s['ratio_rates'], 2)}",
            f"    one sender alone: floor p50 {s['seq_floor_p50_ms']:.1f} ms,"
            f" send_text p50 {s['seq_send_p50_ms']:.1f} ms"
            f" (ratio {s['seq_send_p50_ms'] / s['seq_floor_p50_ms']:.2f})",
            f"    onion requests per op: floor {s['floor_requests']:.3f},"
            f" send_text {s['send_requests']:.3f}; first contact {s['first_requests']:.2f}"
            f" (consensus refreshes apart: {s['consensus_refreshes']})",
            f"    node CPU per op (beyond idle {s['idle_cpu']:.0%} of a vCPU):"
            f" floor {s['floor_nodes_cpu_ms']:.2f} ms, send_text {s['send_nodes_cpu_ms']:.2f} ms;"
            f" client CPU per op: floor {s['floor_client_cpu_ms']:.2f} ms,"
            f" send_text {s['send_client_cpu_ms']:.2f} ms",
            f"    seal {s['seal_us']:.0f} us, open {s['open_us']:.0f} us (client process)",
            f"    delivered {s['found']}/{s['expected']},"
            f" transcripts {s['transcripts_found']}/{s['transcripts_expected']}",
        ]
    for key, label in (("fetch_idle", "idle (0 new)"), ("fetch_50", "50 new")):
        if f := FIGURES.get(key):
            lines += [
                f"  fetch, {label}, {f['rounds']} rounds:",
                f"    floor  SwarmClient.retrieve {f['floor_ms']:6.1f} ms"
                f" [p10-p90 {f['floor_p10_ms']:.1f}-{f['floor_p90_ms']:.1f}]"
                f"  requests/op {_requests(f['floor_requests'])}",
                f"    Messenger.fetch             {f['fetch_ms']:6.1f} ms"
                f" [p10-p90 {f['fetch_p10_ms']:.1f}-{f['fetch_p90_ms']:.1f}]"
                f"  requests/op {_requests(f['fetch_requests'])}",
                f"    fetch / floor {f['ratio']:.2f};"
                f"  client CPU per op: floor {f['floor_client_cpu_ms']:.2f} ms,"
                f" fetch {f['fetch_client_cpu_ms']:.2f} ms",
            ]
    if d := FIGURES.get("delivery"):
        lines += [
            f"  delivery, {d['n']} messages, poll every {POLL_MS} ms:"
            f" p50 {d['p50_ms']:.1f} ms  p95 {d['p95_ms']:.1f} ms  max {d['max_ms']:.1f} ms"
            f"  (min {d['min_ms']:.1f} ms); seen {d['seen']}/{d['sent']};"
            f" send_text p50 {d['send_p50_ms']:.1f} ms, p95 {d['send_p95_ms']:.1f} ms,"
            f" max {d['send_max_ms']:.1f} ms; fetch p50: idle"
            f" {d['fetch_idle_p50_ms']:.1f} ms, with a message {d['fetch_busy_p50_ms']:.1f} ms;"
            f" {d['polls']} polls",
            f"    slowest deliveries (latency, its send_text), ms: {d['slowest']}",
        ]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def _range(values: list[float], digits: int = 1) -> str:
    return f"[{min(values):.{digits}f}-{max(values):.{digits}f}]"


def _requests(per_op: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_op.items()))


def _operation(requests: dict[str, int]) -> dict[str, int]:
    """The onion requests of the operations themselves: without the network clients' consensus
    refreshes (``get_consensus``), which come when the consensus is due, not with an operation."""
    return {k: v for k, v in requests.items() if not k.startswith(CONSENSUS_REFRESH)}


def _refreshes(results: list[dict[str, Any]]) -> int:
    return sum(
        v for r in results for k, v in r["requests"].items() if k.startswith(CONSENSUS_REFRESH)
    )


def _per_op(results: list[dict[str, Any]], ops: int) -> dict[str, float]:
    """Onion requests per operation, by method and status (consensus refreshes apart)."""
    total: dict[str, int] = {}
    for result in results:
        for key, count in _operation(result["requests"]).items():
            total[key] = total.get(key, 0) + count
    return {k: v / ops for k, v in total.items()}


def _stores(result: dict[str, Any]) -> int:
    return int(result["requests"].get("store 200", 0))


def _beyond_idle_ms(results: list[dict[str, Any]], idle: float, ops: int) -> float:
    """The node processes' CPU per operation less what they use when idle, in ms."""
    cpu = sum(float(r["nodes_cpu_s"]) for r in results)
    wall = sum(float(r["wall_s"]) for r in results)
    return (cpu - idle * wall) / ops * 1000


def _client_ms(results: list[dict[str, Any]], ops: int) -> float:
    return sum(float(r["cpu_s"]) for r in results) / ops * 1000


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.timeout(900)
def test_messenger_send(benchmark: Benchmark, net: Net) -> None:
    benchmark.group = "messenger-send"
    senders = pick(benchmark, SENDERS)
    n = pick(benchmark, SEND_N)
    warmup = pick(benchmark, SEND_WARMUP)
    crypto = net.ask(op="crypto", n=pick(benchmark, CRYPTO_N))
    assert crypto["size"] == 400, crypto
    made = net.ask(op="senders", count=senders, warmup=warmup)
    # The first message to a new contact: message, transcript, config. Then two stores a send.
    assert _stores(made["first"]) == 3 * senders, made
    assert _stores(made["warmup"]) == 2 * senders * warmup, made
    assert made["config_dirty"] == 0, made
    idle = net.measure_idle(pick(benchmark, IDLE_S))

    sequential: dict[str, list[dict[str, Any]]] = {"floor": [], "send": []}
    seq_n = pick(benchmark, SEQUENTIAL_N)
    for _ in range(pick(benchmark, SEQUENTIAL_PASSES)):
        for kind in ("floor", "send"):
            sequential[kind].append(net.ask(op=kind, n=seq_n, senders=1, time_limit=TIME_LIMIT_S))

    floors: list[dict[str, Any]] = []
    sends: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        floors.append(net.ask(op="floor", n=n, senders=senders, time_limit=TIME_LIMIT_S))
        return (), {}

    def go() -> dict[str, Any]:
        result = net.ask(op="send", n=n, senders=senders, time_limit=TIME_LIMIT_S)
        sends.append(result)
        return result

    benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, SEND_ROUNDS))
    check = net.ask(op="check_send")

    for result in [*floors, *sequential["floor"]]:
        assert (result["ok"], result["bad"]) == (result["n"], 0), result
        assert _stores(result) == result["n"], result  # one onion store each
    for result in [*sends, *sequential["send"]]:
        assert (result["ok"], result["bad"]) == (result["n"], 0), result
        assert _stores(result) == 2 * result["n"], result  # message + transcript, no config
        assert result["config_dirty"] == 0, result
    assert all(r["n"] == n for r in [*floors, *sends]), (floors, sends)
    assert check["found"] == check["expected"] > 0, check
    assert (check["unexpected"], check["wrong"]) == (0, 0), check
    assert check["transcripts_found"] == check["transcripts_expected"] > 0, check
    assert check["transcripts_unexpected"] == 0, check
    if benchmark.disabled:
        return

    floor_p50s = [r["p50_ms"] for r in floors]
    send_p50s = [r["p50_ms"] for r in sends]
    floor_rates = [n / r["elapsed"] for r in floors]
    send_rates = [n / r["elapsed"] for r in sends]
    ops = n * len(sends)
    figures: dict[str, Any] = {
        "senders": senders,
        "n": n,
        "rounds": len(sends),
        "floor_p50_ms": statistics.median(floor_p50s),
        "send_p50_ms": statistics.median(send_p50s),
        "floor_p95_ms": statistics.median(r["p95_ms"] for r in floors),
        "send_p95_ms": statistics.median(r["p95_ms"] for r in sends),
        "floor_p50s": floor_p50s,
        "send_p50s": send_p50s,
        "floor_rate": statistics.median(floor_rates),
        "send_rate": statistics.median(send_rates),
        "floor_rates": floor_rates,
        "send_rates": send_rates,
        "ratio_p50s": [s / f for s, f in zip(send_p50s, floor_p50s, strict=True)],
        "ratio_rates": [f / s for s, f in zip(send_rates, floor_rates, strict=True)],
        "seq_floor_p50_ms": statistics.median(r["p50_ms"] for r in sequential["floor"]),
        "seq_send_p50_ms": statistics.median(r["p50_ms"] for r in sequential["send"]),
        "floor_requests": sum(sum(_operation(r["requests"]).values()) for r in floors) / ops,
        "send_requests": sum(sum(_operation(r["requests"]).values()) for r in sends) / ops,
        "first_requests": sum(_operation(made["first"]["requests"]).values()) / senders,
        "consensus_refreshes": _refreshes([*floors, *sends]),
        "idle_cpu": idle,
        "floor_nodes_cpu_ms": _beyond_idle_ms(floors, idle, ops),
        "send_nodes_cpu_ms": _beyond_idle_ms(sends, idle, ops),
        "floor_client_cpu_ms": _client_ms(floors, ops),
        "send_client_cpu_ms": _client_ms(sends, ops),
        "paths_failed": sum(r["paths_failed"] for r in [*floors, *sends]),
        "seal_us": crypto["seal_us"],
        "open_us": crypto["open_us"],
        **check,
    }
    figures["ratio_p50"] = figures["send_p50_ms"] / figures["floor_p50_ms"]
    figures["ratio_rate"] = figures["floor_rate"] / figures["send_rate"]
    FIGURES["send"] = figures
    benchmark.extra_info.update(_rounded(figures))


def _fetch_figures(floors: list[dict[str, Any]], fetches: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fetch figures. No node CPU: /proc counts it in 10 ms ticks, too coarse for a few
    milliseconds of work per round."""
    floor_ms = [r["elapsed"] * 1000 for r in floors]
    fetch_ms = [r["elapsed"] * 1000 for r in fetches]
    figures: dict[str, Any] = {
        "rounds": len(fetches),
        "floor_ms": statistics.median(floor_ms),
        "fetch_ms": statistics.median(fetch_ms),
        "floor_p10_ms": _quantile(floor_ms, 0.1),
        "floor_p90_ms": _quantile(floor_ms, 0.9),
        "fetch_p10_ms": _quantile(fetch_ms, 0.1),
        "fetch_p90_ms": _quantile(fetch_ms, 0.9),
        "floor_requests": _per_op(floors, len(floors)),
        "fetch_requests": _per_op(fetches, len(fetches)),
        "floor_client_cpu_ms": _client_ms(floors, len(floors)),
        "fetch_client_cpu_ms": _client_ms(fetches, len(fetches)),
        "paths_failed": sum(r["paths_failed"] for r in [*floors, *fetches]),
    }
    figures["ratio"] = figures["fetch_ms"] / figures["floor_ms"]
    return figures


@pytest.mark.timeout(900)
def test_messenger_fetch_idle(benchmark: Benchmark, net: Net) -> None:
    benchmark.group = "messenger-fetch-idle"
    ready = net.ask(op="fetch_setup")
    assert ready["received"] == 0, ready
    floors: list[dict[str, Any]] = []
    fetches: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        floors.append(net.ask(op="retrieve_idle"))
        return (), {}

    def go() -> dict[str, Any]:
        result = net.ask(op="fetch")
        fetches.append(result)
        return result

    benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, IDLE_ROUNDS))
    for result in floors:
        assert result["count"] == 0, result
    for result in fetches:
        assert (result["count"], result["pending"], result["undecryptable"]) == (0, 0, 0), result
        # Nothing to store or delete: the config is in the swarm and nothing was picked up.
        assert not any(k.startswith(("store", "delete")) for k in result["requests"]), result
    if benchmark.disabled:
        return
    figures = _fetch_figures(floors, fetches)
    FIGURES["fetch_idle"] = figures
    benchmark.extra_info.update(_rounded(figures))


@pytest.mark.timeout(900)
def test_messenger_fetch_50(benchmark: Benchmark, net: Net) -> None:
    benchmark.group = "messenger-fetch-50"
    fill = pick(benchmark, FILL)
    ready = net.ask(op="fetch_setup")
    assert ready["received"] == 0, ready
    floors: list[dict[str, Any]] = []
    fetches: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        filled = net.ask(op="fill", n=fill, time_limit=TIME_LIMIT_S)
        assert (filled["stored"], filled["left"]) == (fill, 0), filled
        floors.append(net.ask(op="retrieve_all"))
        return (), {}

    def go() -> dict[str, Any]:
        result = net.ask(op="fetch")
        fetches.append(result)
        return result

    benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, FILL_ROUNDS))
    drained = net.ask(op="drained", time_limit=TIME_LIMIT_S)
    for result in floors:
        assert result["found"] == fill, result
    for result in fetches:
        assert (result["count"], result["found"], result["wrong"]) == (fill, fill, 0), result
        assert (result["pending"], result["undecryptable"]) == (0, 0), result
        assert result["requests"].get("delete 200") == 1, result  # all picked up, one delete
    assert drained["left"] == 0, drained  # the deletion reached the swarm
    if benchmark.disabled:
        return
    figures = _fetch_figures(floors, fetches)
    figures["extra"] = sum(r["extra"] for r in floors)
    FIGURES["fetch_50"] = figures
    benchmark.extra_info.update(_rounded(figures))


@pytest.mark.timeout(900)
def test_messenger_delivery(benchmark: Benchmark, net: Net) -> None:
    benchmark.group = "messenger-delivery"
    n = pick(benchmark, DELIVERY)
    results: list[dict[str, Any]] = []

    def go() -> dict[str, Any]:
        result = net.ask(
            op="delivery",
            n=n,
            poll_ms=POLL_MS,
            gap_ms=list(GAP_MS),
            time_limit=TIME_LIMIT_S,
            wait_s=DELIVERY_WAIT_S,
        )
        results.append(result)
        return result

    benchmark.pedantic(go, rounds=1)
    (result,) = results
    assert (result["sent"], result["seen"]) == (n, n), result
    assert (result["unexpected"], result["wrong"], result["pending"]) == (0, 0, 0), result
    if benchmark.disabled:
        return
    figures = {k: v for k, v in result.items() if k not in ("requests", "wall_s")}
    figures["n"] = n
    figures["requests"] = result["requests"]
    FIGURES["delivery"] = figures
    benchmark.extra_info.update(_rounded(figures))


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 3)
        if isinstance(value, list):
            return [rounded(v) for v in value]
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    return {k: rounded(v) for k, v in figures.items()}
