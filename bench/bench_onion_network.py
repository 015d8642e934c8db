"""pytest-benchmark suite of onion routing through real node processes (``docs/performance.md``,
"Onion routing"). Every process is ``onion_load.py`` in one of its roles; only 127.0.0.1 is used.

Part A — the forwarding rate of one node against the single-core Rust peel rate (target: ≥ 50 %),
over node links version 2 (Noise handshake, encrypted records), and what the link costs per hop:

- ``onion-hop``: the per-hop crypto side by side, each per call of 256 operations on this
  process's one thread: ``test_peel_single_core`` (``veil._core.NodeKey.peel`` over distinct first
  layers of two-hop onions around 1 KiB, the layers the node under test gets), ``test_link_cipher``
  (``LinkCipher.seal`` then ``open`` at the other end, one record per frame: the REQUEST frame the
  node gets, and the RESPONSE frame of the sink's 7-byte answer) and ``test_link_handshake``
  (``link_initiate`` + ``link_respond`` + ``finish``: both ends of one handshake).
- ``onion-forwarding``: the node under test in its own process; a sink process as the next hop
  (accepts any caller's link, answers every request at once: one open and one seal per read); a
  load process with a node identity of its own, which the node admits (it is added to the node's
  peers), linked to the node's link port as a peer, keeping ``WINDOW`` REQUEST frames in flight,
  each a distinct pre-built onion [node, sink], sealed per write. One round = N layers; forwarded
  hops per second = N / median round. Before each round, in the same run, the peel rate, the link
  cipher's cost per hop (open the incoming request, seal the outgoing one, open the answer, seal it
  back) and the handshake are measured again; the ratio and the costs are printed at the end.

Part B — a three-hop onion request against the same request sent directly (``rpc-info``,
``rpc-store``, ``rpc-info-sequential``): four node processes that all know each other; a client
process sends ``info`` or 1 KiB ``store`` requests to node 0 from ``CONCURRENCY`` coroutines,
through ``NetworkClient`` (guard → relay → node 0; ``onion``: version 1 onions, a fresh X25519 per
hop; ``circuit``: onion v2 circuits, the client's default) or directly (``POST /storage_rpc/v1``,
aiohttp keep-alive). The ``sequential`` group sends one request at a time: its latency difference
gives the unloaded cost of a hop.

Benchmarks are disabled by default (``--benchmark-disable``): each then runs once, small, as a
correctness check. Every answer is checked (forwarded layers: the sink's answer, and sampled bodies
peel with the sink's key to the original request; ``info`` must come from node 0; ``store`` must
carry the expected hash). ``--benchmark-enable`` times them; a summary is printed at the end.
``VEIL_BENCH_PROFILE=node.prof`` writes a cProfile of the forwarding node's event-loop thread.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchkit import Benchmark, ChildProcess, median_s, now_ms, pick
from onion_load import SINK_ANSWER, SINK_SAMPLES
from veil import _core
from veil.node.config import NodeConfig, StoreSettings, render_config
from veil.node.identity import create_node_key, load_node_key
from veil.protocol.link import FrameKind, encode_frame
from veil.protocol.onion_request import build_request
from veil.protocol.peers import PeerInfo, peer_from_json, peer_to_json

HELPER = Path(__file__).with_name("onion_load.py")
SIZE = 1024
WINDOW = 128
CONCURRENCY = 32
TIME_LIMIT_S = 60.0
PEEL_LOOP = (4000, 200)  # layers per peel timing (enabled, disabled)
LINK_LOOP = (4000, 200)  # frames per seal / open timing
HANDSHAKE_LOOP = (300, 10)  # handshakes per timing
PER_CALL = 256  # operations per call of the onion-hop rows
N_FORWARD = (20000, 300)
ROUNDS_FORWARD = (5, 1)
N_RPC = (2000, 64)
N_RPC_SEQUENTIAL = (300, 16)
ROUNDS_RPC = (5, 1)
SMALL_MAP = 256 * 1024 * 1024
# If set, the node under test of the forwarding benchmark is profiled (cProfile of its event-loop
# thread, during the rounds) and the stats are written to this path.
PROFILE_VARIABLE = "VEIL_BENCH_PROFILE"

FIGURES: dict[str, Any] = {}


# --- processes ------------------------------------------------------------------------------------


class Helper(ChildProcess):
    """``onion_load.py ROLE`` in a child process, driven one JSON line at a time."""

    def __init__(self, log: Path, *args: str) -> None:
        super().__init__(HELPER, *args, log=log)


class Processes:
    """Every helper process of one test; all stopped (killed if need be) on exit."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.helpers: list[Helper] = []

    def start(self, name: str, *args: str) -> Helper:
        helper = Helper(self.base / f"{name}.log", *args)
        self.helpers.append(helper)
        return helper

    def node_dir(self, name: str, peers: list[PeerInfo]) -> tuple[Path, bytes]:
        """A node's data dir (node.toml, node key, peers.json); returns it and its X25519 secret."""
        data_dir = self.base / name
        data_dir.mkdir(parents=True)
        config = NodeConfig(
            data_dir=data_dir,
            listen_port=0,
            link_port=0,
            log_level="warning",
            store=StoreSettings(map_size_bytes=SMALL_MAP),
        )
        create_node_key(config.key_path)
        (data_dir / "node.toml").write_text(render_config(config), encoding="utf-8")
        config.peers_path.write_bytes(orjson.dumps([peer_to_json(p) for p in peers]))
        return data_dir, load_node_key(config.key_path).x25519_secret_key

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for helper in reversed(self.helpers):
            helper.stop()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints this run's figures and ratios once every benchmark of the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    f = FIGURES
    lines = ["", "onion routing benchmarks, this run (medians):"]
    if "peel" in f:
        lines.append(f"  single-core Rust peel       {f['peel']:9.0f} layers/s")
    for name in ("peel", "link-request", "link-answer", "handshake"):
        if f"hop/{name}" in f:
            lines.append(f"  onion-hop {name:17} {f[f'hop/{name}']:9.2f} us per operation")
    if "forward" in f:
        fw = f["forward"]
        lines.append(
            f"  node forwarding             {fw['rate']:9.0f} hops/s"
            f"   (peel in the same test {fw['peel']:.0f}/s)"
        )
        lines.append(
            f"  forwarding / peel           {fw['ratio']:9.1%}    (target >= 50%: "
            f"{'met' if fw['ratio'] >= 0.5 else 'MISSED'})"
        )
        lines.append(
            f"  CPU per hop: node {fw['node_cpu_us']:.1f} us, sink {fw['sink_cpu_us']:.1f} us,"
            f" peer {fw['load_cpu_us']:.1f} us; {fw['layers_per_batch']:.1f} layers/peel batch"
        )
        link = fw["link_us"]
        lines.append(
            f"  link cipher per hop         {link['hop']:9.2f} us  (open request"
            f" {link['open_request']:.2f}, seal request {link['seal_request']:.2f}, open answer"
            f" {link['open_answer']:.2f}, seal answer {link['seal_answer']:.2f});"
            f" peel {1e6 / fw['peel']:.2f} us; link / peel {link['hop'] * fw['peel'] / 1e6:.1%}"
        )
        lines.append(
            f"  link handshake, both ends   {link['handshake']:9.1f} us"
            f"  (= {link['handshake'] * fw['peel'] / 1e6:.1f} peels)"
        )
    fc = f.get("forward-circuits")
    if fc:
        lines.append(
            f"  forwarding on circuits      {fc['rate']:9.0f} hops/s against {fc['v1_rate']:.0f}"
            f" with a fresh X25519 per hop (same run): {fc['ratio']:.2f}x"
            f"  (rounds: circuits {fc['circuit_rates']}, version 1 {fc['v1_rates']})"
        )
    for group in ("rpc-info", "rpc-store", "rpc-info-sequential"):
        direct = f.get(f"{group}/direct")
        if not direct:
            continue
        ways = [(n, f[f"{group}/{n}"]) for n in ("onion", "circuit") if f"{group}/{n}" in f]
        for name, r in (("direct", direct), *ways):
            lines.append(
                f"  {group:20} {name:7} {r['rate']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms"
                f"  p99 {r['p99_ms']:7.2f} ms  client CPU {r['client_cpu_us']:5.0f} us/req"
            )
        for name, r in ways:
            hop_ms = (r["p50_ms"] - direct["p50_ms"]) / 3
            hop_cost_us = (1 / r["rate"] - 1 / direct["rate"]) / 3 * 1e6
            lines.append(
                f"  {group:20} direct/{name} rate {direct['rate'] / r['rate']:.2f}x, p50"
                f" {r['p50_ms'] / direct['p50_ms']:.2f}x; per hop: +{hop_ms:.2f} ms p50 latency,"
                f" +{hop_cost_us:.0f} us of throughput time"
            )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


# --- Part A: forwarding against peeling ----------------------------------------------------------


def forward_layers(node_public: bytes, sink_public: bytes, n: int) -> list[bytes]:
    issued = now_ms()
    blob = os.urandom(SIZE + n)
    route = [node_public, sink_public]
    return [build_request(route, blob[i : i + SIZE], issued_ms=issued)[0] for i in range(n)]


def peel_rate(secret: bytes, layers: list[bytes], count: int) -> float:
    """Layers per second of ``NodeKey.peel`` on this thread (median of 3 timings of count)."""
    peel = _core.NodeKey(secret).peel
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        done = 0
        while done < count:
            for layer in layers:
                peel(layer)
            done += len(layers)
        rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


def cipher_pair() -> tuple[_core.LinkCipher, _core.LinkCipher]:
    """Both ends of a fresh link between two new keys: (caller's cipher, accepter's cipher)."""
    caller = _core.NodeKey(_core.x25519_generate_secret())
    accepter = _core.NodeKey(_core.x25519_generate_secret())
    initiator = caller.link_initiate(accepter.public, now_ms())
    remote, _, answer, accepting = accepter.link_respond(initiator.message)
    assert remote == caller.public
    return initiator.finish(answer), accepting


def hop_frames(node_secret: bytes, layer: bytes) -> dict[str, bytes]:
    """The frames one hop of the forwarding benchmark carries: the REQUEST the node gets, the
    REQUEST it sends on (the layer peeled), and the sink's RESPONSE, which it relays back."""
    inner = _core.NodeKey(node_secret).peel(layer).payload
    return {
        "request": encode_frame(FrameKind.REQUEST, 1, b"\x01" + layer),
        "forwarded": encode_frame(FrameKind.REQUEST, 1, b"\x02" + inner),
        "answer": encode_frame(FrameKind.RESPONSE, 1, SINK_ANSWER),
    }


def seal_open_us(frame: bytes, count: int) -> tuple[float, float]:
    """Microseconds per ``seal`` and per ``open`` of ``frame`` (one record each) on a fresh link,
    on this thread: the median of 3 timings of ``count``."""
    sender, receiver = cipher_pair()
    seal, open_ = sender.seal, receiver.open
    seals, opens = [], []
    for _ in range(3):
        started = time.perf_counter()
        records = [seal(frame) for _ in range(count)]
        sealed = time.perf_counter()
        for record in records:
            opened = open_(record)
        opens.append((time.perf_counter() - sealed) / count * 1e6)
        seals.append((sealed - started) / count * 1e6)
        assert opened == frame
    return statistics.median(seals), statistics.median(opens)


def handshake_us(count: int) -> float:
    """Microseconds per link handshake, both ends (median of 3 timings of ``count``)."""
    caller = _core.NodeKey(_core.x25519_generate_secret())
    accepter = _core.NodeKey(_core.x25519_generate_secret())
    remote, clock = accepter.public, now_ms()
    times = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            clock += 1
            initiator = caller.link_initiate(remote, clock)
            _, _, answer, _ = accepter.link_respond(initiator.message)
            initiator.finish(answer)
        times.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(times)


def link_cost_us(frames: dict[str, bytes], count: int, handshakes: int) -> dict[str, float]:
    """The link cipher's work for one forwarded hop, in microseconds: open the incoming request,
    seal the outgoing one, open the answer, seal it back (one record per frame: the node seals
    what one loop turn queued as one record, so this is the most a hop pays); and a handshake."""
    _, open_request = seal_open_us(frames["request"], count)
    seal_request, _ = seal_open_us(frames["forwarded"], count)
    seal_answer, open_answer = seal_open_us(frames["answer"], count)
    return {
        "open_request": open_request,
        "seal_request": seal_request,
        "open_answer": open_answer,
        "seal_answer": seal_answer,
        "hop": open_request + seal_request + open_answer + seal_answer,
        "handshake": handshake_us(handshakes),
    }


def _per_operation(benchmark: Benchmark, name: str) -> None:
    median = median_s(benchmark)
    if median is not None:
        FIGURES[f"hop/{name}"] = median / PER_CALL * 1e6
        benchmark.extra_info["us_per_operation"] = round(median / PER_CALL * 1e6, 3)


def test_peel_single_core(benchmark: Benchmark) -> None:
    benchmark.group = "onion-hop"
    secret = _core.x25519_generate_secret()
    sink_public = _core.x25519_public_key(_core.x25519_generate_secret())
    layers = forward_layers(_core.x25519_public_key(secret), sink_public, 256)
    loop = pick(benchmark, PEEL_LOOP)
    key = _core.NodeKey(secret)

    def peel_all() -> list[Any]:
        return [key.peel(layer) for layer in layers]

    peeled = benchmark(peel_all)
    assert all(p.next_hop == sink_public and p.reply_key is None for p in peeled)
    assert len({p.replay_tag for p in peeled}) == len(layers)
    assert peel_rate(secret, layers, loop) > 0
    median = median_s(benchmark)
    if median is not None:
        FIGURES["peel"] = len(layers) / median
        benchmark.extra_info["layers_per_s"] = round(len(layers) / median, 1)
    _per_operation(benchmark, "peel")


@pytest.mark.parametrize("frame", ["request", "answer"])
def test_link_cipher(benchmark: Benchmark, frame: str) -> None:
    """Seal one frame, open it at the other end, 256 times: a REQUEST of this benchmark's size
    (hops ‖ a 1 KiB onion's first layer) or the RESPONSE carrying the sink's answer."""
    benchmark.group = "onion-hop"
    secret = _core.x25519_generate_secret()
    sink_public = _core.x25519_public_key(_core.x25519_generate_secret())
    layer = forward_layers(_core.x25519_public_key(secret), sink_public, 1)[0]
    data = hop_frames(secret, layer)[frame]
    sender, receiver = cipher_pair()

    def seal_open() -> list[bytes]:
        return [receiver.open(sender.seal(data)) for _ in range(PER_CALL)]

    opened = benchmark(seal_open)
    assert opened == [data] * PER_CALL
    assert len(sender.seal(data)) == len(data) + 2 + 1 + 16  # length, flags, tag
    _per_operation(benchmark, f"link-{frame}")


def test_link_handshake(benchmark: Benchmark) -> None:
    """Both ends of one link handshake, 256 times, between the same two keys."""
    benchmark.group = "onion-hop"
    caller = _core.NodeKey(_core.x25519_generate_secret())
    accepter = _core.NodeKey(_core.x25519_generate_secret())

    def handshakes() -> list[tuple[_core.LinkCipher, _core.LinkCipher]]:
        pairs, clock = [], now_ms()
        for tick in range(PER_CALL):
            initiator = caller.link_initiate(accepter.public, clock + tick)
            _, _, answer, accepting = accepter.link_respond(initiator.message)
            pairs.append((initiator.finish(answer), accepting))
        return pairs

    pairs = benchmark(handshakes)
    calling, accepting = pairs[-1]
    assert accepting.open(calling.seal(b"hop")) == b"hop"
    assert calling.remote_static == accepter.public
    assert accepting.remote_static == caller.public
    _per_operation(benchmark, "handshake")


@dataclass
class Forwarding:
    """The processes of Part A: the node under test, its next hop (the sink), and the load linked
    to the node as a peer."""

    node: Helper
    sink: Helper
    load: Helper
    node_peer: PeerInfo
    node_secret: bytes


def start_forwarding(procs: Processes, sink_secret: bytes) -> Forwarding:
    sink_public = _core.x25519_public_key(sink_secret)
    sink = procs.start("sink", "sink")
    load = procs.start("load", "load")
    sink_link = int(sink.read()["link"])
    assert sink.ask(op="key", x25519_secret=sink_secret.hex())["x25519"] == sink_public.hex()
    sink_peer = PeerInfo(
        ed25519=os.urandom(32),  # never checked on the forwarding path
        x25519=sink_public,
        http=("127.0.0.1", 1),  # never used: the node reaches the sink over its link
        link=("127.0.0.1", sink_link),
    )
    data_dir, node_secret = procs.node_dir("node", [sink_peer])
    node = procs.start("node", "node", str(data_dir))
    node_peer = peer_from_json(node.read()["peer"])
    # The node admits links only from the nodes it knows: the load joins its peers.
    load_peer = load.ask(op="identity")["peer"]
    node.ask(op="peers", peers=[peer_to_json(sink_peer), load_peer])
    load.ask(op="connect_link", port=node_peer.link[1], x25519=node_peer.x25519.hex())
    return Forwarding(node, sink, load, node_peer, node_secret)


@contextmanager
def profiled(node: Helper) -> Iterator[None]:
    """A cProfile of the node's event-loop thread while inside, if ``VEIL_BENCH_PROFILE`` names a
    file for it."""
    profile = os.environ.get(PROFILE_VARIABLE)
    if profile:
        node.ask(op="profile_start")
    yield
    if profile:
        node.ask(op="profile_stop", path=str(Path(profile).resolve()))


@pytest.mark.timeout(600)
def test_node_forwarding(benchmark: Benchmark, tmp_path: Path) -> None:
    benchmark.group = "onion-forwarding"
    n = pick(benchmark, N_FORWARD)
    peel_count = pick(benchmark, PEEL_LOOP)
    link_count, handshakes = pick(benchmark, LINK_LOOP), pick(benchmark, HANDSHAKE_LOOP)
    sink_secret = _core.x25519_generate_secret()
    sink_public = _core.x25519_public_key(sink_secret)
    results: list[dict[str, Any]] = []
    peel_rates: list[float] = []
    link_costs: list[dict[str, float]] = []
    with Processes(tmp_path) as procs:
        started = start_forwarding(procs, sink_secret)
        node, sink, load = started.node, started.sink, started.load
        node_peer, node_secret = started.node_peer, started.node_secret
        peel_layers = forward_layers(node_peer.x25519, sink_public, 256)
        frames = hop_frames(node_secret, peel_layers[0])
        route = [node_peer.x25519.hex(), sink_public.hex()]

        def setup() -> tuple[tuple[()], dict[str, Any]]:
            prepared = load.ask(op="prep_forward", n=n, route=route, size=SIZE)
            assert prepared["frame_bytes"] == len(frames["request"])
            peel_rates.append(peel_rate(node_secret, peel_layers, peel_count))
            link_costs.append(link_cost_us(frames, link_count, handshakes))
            return (), {}

        def go() -> dict[str, Any]:
            result = load.ask(op="go_forward", window=WINDOW, time_limit=TIME_LIMIT_S)
            results.append(result)
            return result

        with profiled(node):
            before = (node.ask(op="stats"), sink.ask(op="stats"))
            benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, ROUNDS_FORWARD))
            node_stats, sink_stats = node.ask(op="stats"), sink.ask(op="stats")

    for result in results:
        assert (result["ok"], result["bad"], result["sent"]) == (n, 0, n), result
    total = n * len(results)
    assert node_stats["counts"] == {"forwarded": total}, node_stats
    assert node_stats["layers"] == total
    assert sink_stats["requests"] == total
    for sample in sink_stats["samples"]:  # what the sink got is the layer built for it
        hops, layer = bytes.fromhex(sample)[0], bytes.fromhex(sample)[1:]
        assert hops == 2  # the load was hop 1, the node under test hop 2
        inner = _core.NodeKey(sink_secret).peel(layer)
        assert inner.next_hop is None
        assert inner.reply_key is not None
        assert len(inner.payload) == SIZE
    median = median_s(benchmark)
    if median is None:
        return
    rate = n / median
    peel = statistics.median(peel_rates)
    node_cpu = node_stats["cpu_s"] - before[0]["cpu_s"]
    sink_cpu = sink_stats["cpu_s"] - before[1]["cpu_s"]
    load_cpu = sum(r["cpu_s"] for r in results)
    figures = {
        "rate": rate,
        "peel": peel,
        "ratio": rate / peel,
        "link_us": {k: statistics.median(c[k] for c in link_costs) for k in link_costs[0]},
        "frame_bytes": {k: len(v) for k, v in frames.items()},
        "loader_rates": [round(n / r["elapsed"], 1) for r in results],
        "peel_rates": [round(p, 1) for p in peel_rates],
        "node_cpu_us": node_cpu / total * 1e6,
        "sink_cpu_us": sink_cpu / total * 1e6,
        "load_cpu_us": load_cpu / total * 1e6,
        "layers_per_batch": node_stats["layers"] / max(1, node_stats["batches"]),
    }
    FIGURES["forward"] = figures
    benchmark.extra_info.update(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    )
    benchmark.extra_info["link_us"] = {k: round(v, 3) for k, v in figures["link_us"].items()}


CIRCUITS = 16
"""Circuits the load opens through the node under test (data cells go round robin over them)."""


@pytest.mark.timeout(600)
def test_node_forwarding_on_circuits(benchmark: Benchmark, tmp_path: Path) -> None:
    """Part A on onion v2: the same node, sink and load; rounds of version 1 layers (a fresh
    X25519 per hop) and of data cells on circuits alternate, so both rates come from one run."""
    benchmark.group = "onion-forwarding-circuits"
    n = pick(benchmark, N_FORWARD)
    # Half as many version 1 layers per round: with every round's, the load's replay tags stay
    # under the node's per-source cap (replay_max_entries_per_source) within one window.
    n_v1 = n // 2
    sink_secret = _core.x25519_generate_secret()
    sink_public = _core.x25519_public_key(sink_secret)
    v1_results: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    with Processes(tmp_path) as procs:
        started = start_forwarding(procs, sink_secret)
        node, sink, load, node_peer = started.node, started.sink, started.load, started.node_peer
        route = [node_peer.x25519.hex(), sink_public.hex()]
        opened = load.ask(op="open_circuits", k=CIRCUITS, route=route)
        assert opened == {"opened": CIRCUITS, "ok": CIRCUITS}, opened

        def v1_round() -> None:
            load.ask(op="prep_forward_v1", n=n_v1, route=route, size=SIZE)
            v1_results.append(load.ask(op="go_forward", window=WINDOW, time_limit=TIME_LIMIT_S))

        def setup() -> tuple[tuple[()], dict[str, Any]]:
            v1_round()  # the fresh-DH rate, in the same run, just before
            load.ask(op="prep_circuit_forward", n=n)
            return (), {}

        def go() -> dict[str, Any]:
            result = load.ask(op="go_forward", window=WINDOW, time_limit=TIME_LIMIT_S)
            results.append(result)
            return result

        with profiled(node):
            before = node.ask(op="stats")
            benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, ROUNDS_FORWARD))
            node_stats, sink_stats = node.ask(op="stats"), sink.ask(op="stats")

    for result in v1_results:
        assert result["sent"] == n_v1
    for result in [*results, *v1_results]:
        done = (result["ok"], result["bad"], result["sent"])
        assert done in {(n, 0, n), (n_v1, 0, n_v1)}, result["error"]
    total = n * len(results) + n_v1 * len(v1_results)
    counts = node_stats["counts"]
    assert counts.get("forwarded", 0) - before["counts"].get("forwarded", 0) == total, counts
    assert counts.get("circuits_opened") == CIRCUITS, counts
    assert set(counts) <= {"forwarded", "circuits_opened"}, counts
    assert sink_stats["circuits"] == CIRCUITS
    assert sink_stats["requests"] == total
    assert sink_stats["verified"] == SINK_SAMPLES  # data cells peeled to their request at the sink
    median = median_s(benchmark)
    if median is None:
        return
    rate = n / median
    v1_rate = statistics.median(n_v1 / r["elapsed"] for r in v1_results)
    figures = {
        "rate": rate,
        "v1_rate": v1_rate,
        "ratio": rate / v1_rate,
        "circuit_rates": [round(n / r["elapsed"], 1) for r in results],
        "v1_rates": [round(n_v1 / r["elapsed"], 1) for r in v1_results],
    }
    FIGURES["forward-circuits"] = figures
    benchmark.extra_info.update(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    )


# --- Part B: three-hop onion requests against direct RPC ------------------------------------------


class Network:
    def __init__(self, procs: Processes, client: Helper, nodes: list[Helper]) -> None:
        self.procs = procs
        self.client = client
        self.nodes = nodes


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    base = tmp_path_factory.mktemp("onion-network")
    with Processes(base) as procs:
        client = procs.start("client", "load")
        nodes = [
            procs.start(f"node{i}", "node", str(procs.node_dir(f"node{i}", [])[0]))
            for i in range(4)
        ]
        peers = [node.read()["peer"] for node in nodes]
        for node in nodes:
            node.ask(op="peers", peers=peers)
        client.ask(op="network", nodes=peers, destination=0)
        yield Network(procs, client, nodes)


def _rpc_benchmark(
    benchmark: Benchmark, network: Network, method: str, mode: str, concurrency: int, n: int
) -> None:
    client = network.client
    results: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        client.ask(op="prep_rpc", method=method, n=n)
        return (), {}

    def go() -> dict[str, Any]:
        result = client.ask(
            op="go_rpc", mode=mode, concurrency=concurrency, time_limit=TIME_LIMIT_S
        )
        results.append(result)
        return result

    benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, ROUNDS_RPC))
    for result in results:
        assert (result["ok"], result["bad"], result["sent"]) == (n, 0, n), result
        assert result["paths_failed"] == 0, result
    median = median_s(benchmark)
    if median is None:
        return
    figures = {
        "rate": n / median,
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": statistics.median(r["p99_ms"] for r in results),
        "client_cpu_us": sum(r["cpu_s"] for r in results) / (n * len(results)) * 1e6,
    }
    FIGURES[f"{benchmark.group}/{mode}"] = figures
    benchmark.extra_info.update({k: round(v, 3) for k, v in figures.items()})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["direct", "onion", "circuit"])
@pytest.mark.parametrize("method", ["info", "store"])
def test_rpc(benchmark: Benchmark, network: Network, method: str, mode: str) -> None:
    benchmark.group = f"rpc-{method}"
    _rpc_benchmark(benchmark, network, method, mode, CONCURRENCY, pick(benchmark, N_RPC))
    if mode != "direct":  # every onion request went through three distinct nodes
        counts = [node.ask(op="stats")["counts"] for node in network.nodes]
        assert counts[0].get("delivered", 0) > 0
        assert sum(c.get("forwarded", 0) for c in counts) == 2 * sum(
            c.get("delivered", 0) for c in counts
        )
        assert all(set(c) <= {"forwarded", "delivered", "circuits_opened"} for c in counts), counts


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["direct", "onion", "circuit"])
def test_rpc_sequential(benchmark: Benchmark, network: Network, mode: str) -> None:
    benchmark.group = "rpc-info-sequential"
    _rpc_benchmark(benchmark, network, "info", mode, 1, pick(benchmark, N_RPC_SEQUENTIAL))
