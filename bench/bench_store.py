"""pytest-benchmark suite of the node's store (``docs/performance.md``, section "Storage").

Part A — store encodings, the Python of ``veil.node.keys``, ``veil.protocol.hashes`` and ``rpc.py``
against the Rust of ``veil._core`` (``rust/veil-core/src/store_index.rs``), side by side in one run:

- ``store-key``: the 75-byte message key (account ‖ namespace ‖ arrival_us ‖ hash).
- ``message-hash``: BLAKE2b-256(account ‖ namespace in decimal, empty for 0 ‖ data) of 1 KiB of
  data (Session's message hash).
- ``retrieve-encode-256x1KiB``, ``retrieve-encode-256x100B``: the ``messages`` JSON array of one
  retrieve page (the list of dicts + ``orjson.dumps`` of ``rpc.py`` against
  ``_core.retrieve_messages_json``).
- ``read-store-1KiB``: a plain store's body (1 KiB of data) read into its values: ``orjson`` and
  ``rpc.py``'s parser (which hashes the message) against ``_core.plain_store``
  (``rust/veil-core/src/store_request.rs``).

Part B — throughput, on LMDB stores in a temporary directory (ext4, durable commits: the store
opens LMDB with ``sync=True``), 1 KiB messages:

- ``store-throughput``: ``group-commit`` (N stores from 64 coroutines through ``StoreWriter``),
  ``txn-per-store`` (the same N stores, each in its own durable transaction, one after the
  other), ``http`` (an in-process ``Node`` on uvloop in a background thread, loaded over 64
  keep-alive HTTP/1.1 connections by ``store_load.py`` in a separate process; its store is kept
  across the rounds) and ``group-commit-one-store`` (group commit as ``http`` stores: every round
  into one store, which fills; the HTTP path's ratio is taken against it). One round = N
  stores; its ``extra_info`` has stores per second at the median (``http``: also the writer's
  time a commit by phase, apply, commit and sign, as ``veil_store_writer_seconds_total`` counts
  it, and the load generator's CPU a store).
- ``commit-cpu``: the CPU (``time.process_time``, every thread) a durable store costs, by how many
  stores share a commit: one transaction per store on the calling thread; through the writer
  thread with one store in flight (one store a commit, as on a node that sees few stores at
  once); with 16 in flight. ``extra_info`` has µs of CPU per store at the median.
- ``lmdb-call``: one py-lmdb ``put`` alone, and beside a thread that runs Python (as the event
  loop does while the writer applies a batch): py-lmdb gives up the GIL for every call, and the
  caller waits for it back. ``extra_info`` has µs per call at the median.
- ``retrieve-256x1KiB``: one retrieve page of 256 messages, in process
  (``StorageRpc.handle_body`` of a signed request: parse, verify, read, encode) and over HTTP (8
  connections); ``extra_info`` has messages per second.

Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``): each then runs
once, with a small N, as a correctness check. Every benchmark checks its results (every store
acknowledged and retrievable, every page complete). ``--benchmark-enable`` times them; a summary of
the ratios is printed at the end of the module.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import orjson
import pytest
import uvloop

from benchkit import Benchmark, ChildProcess, median_s, now_ms, pick
from veil import _core
from veil.node import keys
from veil.node.config import Limits, NodeConfig, StoreSettings
from veil.node.identity import create_node_key
from veil.node.metrics import NodeMetrics
from veil.node.rpc import Call, StorageRpc, _plain_store_call
from veil.node.server import Node
from veil.node.store import Message, MessageStore, StoredMessage, StoreOutcome
from veil.node.writer import PHASES, StoreWriter
from veil.protocol.hashes import cursor_decode, hash_b64, message_hash
from veil.protocol.storage_rpc import retrieve_string, store_params

LOADER = Path(__file__).with_name("store_load.py")
SIZE = 1024
TTL_MS = 24 * 3600 * 1000
CONCURRENCY = 64
PAGE = 256
# Enabled / disabled (a quick correctness run).
N_STORES = (2000, 48)
ROUNDS_GROUP = (7, 1)
ROUNDS_TXN = (3, 1)  # 2000 durable commits of ~10 ms each: ~20 s per round
ROUNDS_HTTP = (7, 1)
RETRIEVE_STORED = (1024, 300)
HTTP_RETRIEVES = (400, 8)
HTTP_RETRIEVE_CONNECTIONS = 8
TIME_LIMIT_S = 60.0

# Figures of this run, for the summary printed at the end of the module.
FIGURES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the ratios of this run once every benchmark of the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    f = FIGURES
    lines = ["", "store benchmarks, this run (medians):"]
    encodings = (
        "store-key",
        "message-hash",
        "retrieve-encode-256x1KiB",
        "retrieve-encode-256x100B",
        "read-store-1KiB",
    )
    for group in encodings:
        py, rs = f.get(f"{group}/python"), f.get(f"{group}/rust")
        if py and rs:
            lines.append(
                f"  {group:26} python {py * 1e6:9.3f} us  rust {rs * 1e6:9.3f} us"
                f"  python/rust {py / rs:5.2f}x"
            )
    grouped, txn, http = (f.get(k) for k in ("group-commit", "txn-per-store", "http-store"))
    if grouped:
        lines.append(f"  group commit        {grouped:9.0f} stores/s")
    if txn:
        lines.append(f"  txn per store       {txn:9.0f} stores/s")
    if grouped and txn:
        lines.append(f"  group / per-txn     {grouped / txn:9.1f}x   (target >= 5x)")
    if http:
        lines.append(f"  HTTP store path     {http:9.0f} stores/s")
    one_store = f.get("group-commit-one-store")
    if one_store:
        lines.append(f"  group commit, one store filling {one_store:9.0f} stores/s")
    if one_store and http:
        lines.append(
            f"  HTTP / group commit, one store each {http / one_store:9.1%}    (target >= 40%)"
        )
    if grouped and http:
        lines.append(f"  HTTP / group commit into fresh stores {http / grouped:9.1%}")
    if "http-writer/jobs" in f:
        apply, commit, sign = (f[f"http-writer/{phase}"] * 1e3 for phase in PHASES)
        stores = f["http-writer/jobs"]
        lines.append(
            f"  HTTP, the writer a commit: {stores:.1f} stores; apply {apply:.2f} ms,"
            f" commit {commit:.2f} ms, sign {sign:.2f} ms"
        )
    for candidate in COMMIT_CPU_CANDIDATES:
        cpu = f.get(f"commit-cpu/{candidate}")
        if cpu:
            lines.append(f"  CPU a store, {candidate:19} {cpu * 1e6:7.1f} us")
    alone, busy = (f.get(f"lmdb-call/{c}") for c in LMDB_CALL_CANDIDATES)
    if alone and busy:
        lines.append(
            f"  py-lmdb put, alone {alone * 1e6:7.2f} us; beside a busy thread"
            f" {busy * 1e6:9.1f} us ({busy / alone:.0f}x)"
        )
    for key in ("retrieve-rpc", "retrieve-http"):
        if key in f:
            lines.append(f"  {key:19} {f[key]:9.0f} messages/s")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


# --------------------------------------------------------------------------------------------------
# Part A: encodings. The Python candidates are the code of keys.py / rpc.py before any Rust went in
# (for the hash: the same code over Session's hash input).

_KEY_TAIL = struct.Struct(">HQ")


def python_message_key(account: bytes, namespace: int, arrival_us: int, digest: bytes) -> bytes:
    return account + _KEY_TAIL.pack(namespace + 0x8000, arrival_us) + digest


def python_message_hash(account: bytes, namespace: int, data: bytes) -> bytes:
    h = hashlib.blake2b(account, digest_size=32)
    h.update(str(namespace).encode() if namespace else b"")
    h.update(data)
    return h.digest()


def python_retrieve_json(messages: list[StoredMessage]) -> bytes:
    return orjson.dumps(
        [
            {
                "hash": hash_b64(m.hash),
                "timestamp": m.timestamp_ms,
                "expiration": m.expiry_ms,
                "data": base64.b64encode(m.data).decode("ascii"),
            }
            for m in messages
        ]
    )


KEY_CANDIDATES: dict[str, Callable[[bytes, int, int, bytes], bytes]] = {
    "python": python_message_key,
    "rust": _core.store_message_key,
}
HASH_CANDIDATES: dict[str, Callable[[bytes, int, bytes], bytes]] = {
    "python": python_message_hash,
    "rust": _core.store_message_hash,
}
ENCODE_CANDIDATES: dict[str, Callable[[list[StoredMessage]], bytes]] = {
    "python": python_retrieve_json,
    "rust": _core.retrieve_messages_json,
}
ENCODE_SIZES = {"256x1KiB": 1024, "256x100B": 100}

ACCOUNT = b"\x05" + bytes(range(32))
DIGEST = bytes(range(100, 132))
ARRIVAL_US = 1_700_000_000_000_000


@pytest.mark.parametrize("candidate", list(KEY_CANDIDATES))
def test_store_key(benchmark: Benchmark, candidate: str) -> None:
    benchmark.group = "store-key"
    function = KEY_CANDIDATES[candidate]
    for namespace in (-32768, -1, 0, 1, 32767):
        assert function(ACCOUNT, namespace, ARRIVAL_US, DIGEST) == python_message_key(
            ACCOUNT, namespace, ARRIVAL_US, DIGEST
        )
    key = benchmark(function, ACCOUNT, -3, ARRIVAL_US, DIGEST)
    assert key == python_message_key(ACCOUNT, -3, ARRIVAL_US, DIGEST)
    assert keys.split_message_key(key) == (ACCOUNT, -3, ARRIVAL_US, DIGEST)
    _record(benchmark, f"store-key/{candidate}")


@pytest.mark.parametrize("candidate", list(HASH_CANDIDATES))
def test_message_hash(benchmark: Benchmark, candidate: str) -> None:
    benchmark.group = "message-hash"
    function = HASH_CANDIDATES[candidate]
    data = os.urandom(SIZE)
    for namespace in (-32768, -1, 0, 1, 32767):
        assert function(ACCOUNT, namespace, data) == python_message_hash(ACCOUNT, namespace, data)
    # the namespace as text: namespace 1 with data "2x" is namespace 12 with data "x"
    assert function(ACCOUNT, 1, b"2x") == function(ACCOUNT, 12, b"x")
    assert function(ACCOUNT, 0, data) == hashlib.blake2b(ACCOUNT + data, digest_size=32).digest()
    digest = benchmark(function, ACCOUNT, 5, data)
    assert digest == python_message_hash(ACCOUNT, 5, data)
    _record(benchmark, f"message-hash/{candidate}")


def stored_messages(count: int, size: int) -> list[StoredMessage]:
    now = now_ms()
    return [
        StoredMessage(
            os.urandom(32), now - count + i, now + TTL_MS + i, os.urandom(size), (now + i) * 1000
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("candidate", list(ENCODE_CANDIDATES))
@pytest.mark.parametrize("label", list(ENCODE_SIZES))
def test_retrieve_encode(benchmark: Benchmark, label: str, candidate: str) -> None:
    benchmark.group = f"retrieve-encode-{label}"
    function = ENCODE_CANDIDATES[candidate]
    messages = stored_messages(PAGE, ENCODE_SIZES[label])
    assert function([]) == b"[]"
    encoded = benchmark(function, messages)
    assert encoded == python_retrieve_json(messages)
    decoded = orjson.loads(encoded)
    assert [base64.b64decode(m["data"]) for m in decoded] == [m.data for m in messages]
    _record(benchmark, f"retrieve-encode-{label}/{candidate}")


def python_read_store(rpc: StorageRpc, body: bytes) -> Call:
    """What the node did with every store body before ``_core.plain_store``: ``orjson``, then the
    checks of ``StorageRpc.call`` and ``parse`` (which hashes the message)."""
    request = orjson.loads(body)
    if not isinstance(request, dict) or request.get("method") != "store":
        raise AssertionError("not a store")
    params = request.get("params")
    if not isinstance(params, dict):
        raise AssertionError("a store without params")
    return rpc.parse("store", params)


def read_store_case(store: MessageStore, size: int) -> tuple[StorageRpc, bytes]:
    """An RPC over ``store`` (only its parser is used) and a plain store's body of ``size``
    random bytes, checked to be read alike by the Python parser and ``_core.plain_store``."""
    rpc = StorageRpc(store, StoreWriter(store), store.limits, NodeMetrics())
    params = store_params(ACCOUNT.hex(), os.urandom(size), TTL_MS)
    body = orjson.dumps({"method": "store", "params": params})
    plain = _core.plain_store(body, store.limits.max_message_bytes)
    assert plain is not None
    assert _plain_store_call(plain).values == python_read_store(rpc, body).values
    return rpc, body


@pytest.mark.parametrize("candidate", ["python", "rust"])
def test_read_store(benchmark: Benchmark, tmp_path: Path, candidate: str) -> None:
    """A plain 1 KiB store's body read into its values: the Python parser, or one Rust call."""
    benchmark.group = "read-store-1KiB"
    store = open_store(tmp_path / "store")
    try:
        rpc, body = read_store_case(store, SIZE)
        expected = python_read_store(rpc, body).values
        if candidate == "python":
            values = benchmark(python_read_store, rpc, body).values
        else:
            plain = benchmark(_core.plain_store, body, store.limits.max_message_bytes)
            assert plain is not None
            values = _plain_store_call(plain).values
        assert values == expected
    finally:
        store.close()
    _record(benchmark, f"read-store-1KiB/{candidate}")


def _record(benchmark: Benchmark, key: str) -> None:
    median = median_s(benchmark)
    if median is not None:
        FIGURES[key] = median


# --------------------------------------------------------------------------------------------------
# Part B: throughput


def make_messages(n: int, accounts: int = CONCURRENCY) -> list[Message]:
    owners = [b"\x05" + os.urandom(32) for _ in range(accounts)]
    now = now_ms()
    blob = os.urandom(n * SIZE)
    out = []
    for i in range(n):
        account = owners[i % accounts]
        data = blob[i * SIZE : (i + 1) * SIZE]
        digest = message_hash(account, 0, data)
        # arriving one µs apart, as a node files the stores it takes
        out.append(Message(account, 0, now, now + TTL_MS, data, digest, None, now * 1000 + i))
    return out


def open_store(path: Path) -> MessageStore:
    return MessageStore(path, StoreSettings(), Limits())


def count_retrievable(store: MessageStore, accounts: set[bytes]) -> int:
    """Every message of the accounts' namespace 0, read back page by page; returns the count."""
    total = 0
    now = now_ms()
    for account in accounts:
        after = None
        for _ in range(100_000):
            page, more = store.retrieve(
                account,
                namespace=0,
                after=after,
                now_ms=now,
                max_messages=PAGE,
                max_bytes=7 << 20,
            )
            total += len(page)
            if not more:
                break
            after = cursor_decode(page[-1].cursor)
    return total


def check_stored(store: MessageStore, messages: list[Message]) -> None:
    assert store.totals() == (len(messages), len(messages) * SIZE)
    assert count_retrievable(store, {m.account for m in messages}) == len(messages)
    sample = messages[:: max(1, len(messages) // 50)]
    for m in sample:
        assert store.expiries(m.account, [m.hash]) == {m.hash: m.expiry_ms}


def put_op(store: MessageStore, message: Message) -> Callable[[Any], StoreOutcome]:
    """The write operation of one store (as ``rpc.py`` submits it)."""
    return lambda txn: store.put(txn, message)


async def group_commit(store: MessageStore, messages: list[Message]) -> list[StoreOutcome]:
    """Every message stored through the writer by CONCURRENCY coroutines; the outcomes in order."""
    return await through_writer(store, messages, CONCURRENCY)


async def through_writer(
    store: MessageStore, messages: list[Message], in_flight: int
) -> list[StoreOutcome]:
    """Every message stored through the writer by ``in_flight`` coroutines, each waiting for its
    store to be durable before the next (with one in flight every commit holds one store); the
    outcomes in order."""
    writer = StoreWriter(store)
    writer.start()
    outcomes: list[StoreOutcome | None] = [None] * len(messages)

    async def client(first: int) -> None:
        for i in range(first, len(messages), in_flight):
            outcomes[i] = await writer.submit(put_op(store, messages[i]))

    try:
        await asyncio.gather(*(client(k) for k in range(in_flight)))
    finally:
        await writer.close()
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def txn_per_store(store: MessageStore, messages: list[Message]) -> list[StoreOutcome]:
    """What a naive node does: one durable write transaction per store, one after the other."""
    outcomes: list[StoreOutcome] = [store.write(put_op(store, m)) for m in messages]
    return outcomes


class Rounds:
    """Fresh messages per round, and a fresh store per round or, ``one_store``, one store that
    every round fills further, as the HTTP benchmark's node's (the setup of a pedantic round,
    untimed)."""

    def __init__(self, base: Path, n: int, *, one_store: bool = False) -> None:
        self.base = base
        self.n = n
        self.one_store = one_store
        self.stores: list[tuple[MessageStore, list[Message]]] = []
        """Each store opened, and every message stored into it."""

    def setup(self) -> tuple[tuple[MessageStore, list[Message]], dict[str, Any]]:
        messages = make_messages(self.n)
        if self.one_store and self.stores:
            store, held = self.stores[0]
            held.extend(messages)
        else:
            store = open_store(self.base / f"round{len(self.stores)}")
            self.stores.append((store, list(messages)))
        return (store, messages), {}

    def close(self) -> None:
        for store, _ in self.stores:
            store.close()

    def time(
        self,
        benchmark: Benchmark,
        one_round: Callable[[MessageStore, list[Message]], list[StoreOutcome]],
        rounds: int,
    ) -> None:
        """Time ``one_round`` over ``rounds`` rounds, check that each store holds every message
        stored into it, and close them."""
        try:
            outcomes = benchmark.pedantic(one_round, setup=self.setup, rounds=rounds)
            assert outcomes == [StoreOutcome.STORED] * self.n
            for store, messages in self.stores:
                check_stored(store, messages)
        finally:
            self.close()


def test_group_commit(benchmark: Benchmark, tmp_path: Path) -> None:
    benchmark.group = "store-throughput"
    n = pick(benchmark, N_STORES)
    rounds = Rounds(tmp_path, n)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:

        def one_round(store: MessageStore, messages: list[Message]) -> list[StoreOutcome]:
            return runner.run(group_commit(store, messages))

        rounds.time(benchmark, one_round, pick(benchmark, ROUNDS_GROUP))
    _record_rate(benchmark, "group-commit", n, "stores_per_s")


def test_group_commit_one_store(benchmark: Benchmark, tmp_path: Path) -> None:
    """Group commit into one store that fills round by round, as the HTTP benchmark's node does
    (the same N, rounds and 64 fresh accounts a round): the HTTP path is compared with this. An
    empty store flatters large commits: a commit of 62 stores into 2,000 messages shares leaf pages
    that it would not share in a store that holds more (``docs/performance.md``, "The HTTP store
    path against a store like its own")."""
    benchmark.group = "store-throughput"
    n = pick(benchmark, N_STORES)
    rounds = Rounds(tmp_path, n, one_store=True)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:

        def one_round(store: MessageStore, messages: list[Message]) -> list[StoreOutcome]:
            return runner.run(group_commit(store, messages))

        rounds.time(benchmark, one_round, pick(benchmark, ROUNDS_HTTP))
    _record_rate(benchmark, "group-commit-one-store", n, "stores_per_s")


@pytest.mark.timeout(600)
def test_txn_per_store(benchmark: Benchmark, tmp_path: Path) -> None:
    benchmark.group = "store-throughput"
    n = pick(benchmark, N_STORES)
    Rounds(tmp_path, n).time(benchmark, txn_per_store, pick(benchmark, ROUNDS_TXN))
    _record_rate(benchmark, "txn-per-store", n, "stores_per_s")


COMMIT_CPU_STORES = (600, 24)
COMMIT_CPU_ROUNDS = (3, 1)
COMMIT_CPU_CANDIDATES = {"txn-per-store": 0, "writer-1-in-flight": 1, "writer-16-in-flight": 16}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("candidate", list(COMMIT_CPU_CANDIDATES))
def test_commit_cpu_by_batch(benchmark: Benchmark, tmp_path: Path, candidate: str) -> None:
    """The CPU a durable store costs this process (every thread: ``time.process_time``) by how
    many stores share a commit: one transaction per store on the calling thread; through the
    writer thread with one store in flight (one store a commit: what a node of a large devnet
    sees); and with 16 in flight (group commit). The first two differ by the writer's hand-offs
    (two thread wake-ups a commit)."""
    benchmark.group = "commit-cpu"
    n = pick(benchmark, COMMIT_CPU_STORES)
    in_flight = COMMIT_CPU_CANDIDATES[candidate]
    rounds = Rounds(tmp_path, n)
    cpu_per_store: list[float] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:

        def one_round(store: MessageStore, messages: list[Message]) -> list[StoreOutcome]:
            began = time.process_time()
            if in_flight:
                outcomes = runner.run(through_writer(store, messages, in_flight))
            else:
                outcomes = txn_per_store(store, messages)
            cpu_per_store.append((time.process_time() - began) / len(messages))
            return outcomes

        rounds.time(benchmark, one_round, pick(benchmark, COMMIT_CPU_ROUNDS))
    if not benchmark.disabled:
        median = statistics.median(cpu_per_store)
        FIGURES[f"commit-cpu/{candidate}"] = median
        benchmark.extra_info["cpu_us_per_store"] = round(median * 1e6, 1)


LMDB_CALLS = (400, 20)
LMDB_CALL_ROUNDS = (5, 1)
LMDB_CALL_CANDIDATES = ("alone", "busy-thread")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("beside", LMDB_CALL_CANDIDATES)
def test_lmdb_call_beside_a_busy_thread(benchmark: Benchmark, tmp_path: Path, beside: str) -> None:
    """What one py-lmdb call costs a thread while another thread of the process runs Python, as
    the event loop does while the store writer applies a batch. py-lmdb gives up the GIL for every
    call (``txn.put``, ``txn.get``, each item of ``putmulti``), and the caller gets it back only
    when the other thread lets it go: at its next blocking call, or after the interpreter's switch
    interval. ``alone``: nothing else runs; ``busy-thread``: a thread spins Python meanwhile. N puts
    of 1 KiB in one write transaction, aborted (the GIL is measured here, not the disk)."""
    benchmark.group = "lmdb-call"
    n = pick(benchmark, LMDB_CALLS)
    env = lmdb.open(str(tmp_path), map_size=1 << 26, max_dbs=1, sync=False)
    value = os.urandom(SIZE)
    stop = threading.Event()

    def spin() -> None:
        turns = 0
        while not stop.is_set():
            turns += 1

    def puts() -> int:
        txn = env.begin(write=True)
        try:
            for i in range(n):
                txn.put(i.to_bytes(4, "big"), value)
            held: int = txn.stat(env.open_db(None, txn=txn))["entries"]
        finally:
            txn.abort()
        return held

    spinner = threading.Thread(target=spin, daemon=True)
    if beside == "busy-thread":
        spinner.start()
    try:
        held = benchmark.pedantic(puts, rounds=pick(benchmark, LMDB_CALL_ROUNDS))
    finally:
        stop.set()
        if spinner.is_alive():
            spinner.join(10)
        env.close()
    assert held == n
    median = median_s(benchmark)
    if median is not None:
        FIGURES[f"lmdb-call/{beside}"] = median / n
        benchmark.extra_info["us_per_call"] = round(median / n * 1e6, 2)


def _record_rate(benchmark: Benchmark, key: str, per_round: int, unit: str) -> None:
    median = median_s(benchmark)
    if median is not None:
        FIGURES[key] = per_round / median
        benchmark.extra_info[unit] = round(per_round / median, 1)
        benchmark.extra_info["per_round"] = per_round


# --- the HTTP path: an in-process node, a load generator in another process -----------------------


class NodeThread:
    """A node on its own uvloop event loop in a background thread of this process."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config = NodeConfig(data_dir=data_dir, listen_host="127.0.0.1", listen_port=0)
        create_node_key(self.config.key_path)
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.node: Node | None = None

    def __enter__(self) -> Node:
        self._thread.start()
        self.node = Node(self.config)
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(10)
        return self.node

    def __exit__(self, *exc: object) -> None:
        if self.node is not None:
            asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LoadProcess(ChildProcess):
    """``store_load.py`` in a child process, driven one JSON line at a time."""

    def __init__(self) -> None:
        super().__init__(LOADER)


@pytest.mark.timeout(300)
def test_http_store(benchmark: Benchmark, tmp_path: Path) -> None:
    benchmark.group = "store-throughput"
    n = pick(benchmark, N_STORES)
    accounts: set[bytes] = set()
    results: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        prepared = loader.ask(op="prep_store", n=n, accounts=CONCURRENCY, size=SIZE)
        accounts.update(bytes.fromhex(a) for a in prepared["accounts"])
        return (), {}

    def go() -> dict[str, Any]:
        result = loader.ask(op="go", time_limit=TIME_LIMIT_S)
        results.append(result)
        return result

    with NodeThread(tmp_path / "node") as node, LoadProcess() as loader:
        loader.ask(op="connect", port=node.port, connections=CONCURRENCY)
        benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, ROUNDS_HTTP))
        for result in results:
            assert (result["ok"], result["bad"]) == (n, 0), result
        total = n * len(results)
        assert node.store.totals() == (total, total * SIZE)
        assert count_retrievable(node.store, accounts) == total
        assert node.writer.jobs >= total
    _record_rate(benchmark, "http-store", n, "stores_per_s")
    if results and not benchmark.disabled:
        benchmark.extra_info["loader_median_stores_per_s"] = round(
            statistics.median_high(n / r["elapsed"] for r in results), 1
        )
        benchmark.extra_info["loader_cpu_us_per_store"] = round(
            statistics.median_high(r["cpu"] / n * 1e6 for r in results), 1
        )
        benchmark.extra_info["commits"] = node.writer.commits
        commits = max(1, node.writer.commits)
        per_commit = {k: v / commits for k, v in node.writer.seconds.items()}
        benchmark.extra_info["writer_ms_per_commit"] = {
            k: round(v * 1e3, 3) for k, v in per_commit.items()
        }
        FIGURES.update({f"http-writer/{k}": v for k, v in per_commit.items()})
        FIGURES["http-writer/jobs"] = node.writer.jobs / commits


# --- retrieve -------------------------------------------------------------------------------------


def populate(store: MessageStore, account: bytes, count: int) -> list[Message]:
    now = now_ms()
    messages = []
    for i in range(count):
        data = os.urandom(SIZE)
        digest = message_hash(account, 0, data)
        timestamp = now - count + i
        arrival_us = timestamp * 1000  # arriving in order: retrieve answers in arrival order
        messages.append(
            Message(account, 0, timestamp, now + TTL_MS, data, digest, None, arrival_us)
        )

    def put_all(txn: Any) -> None:
        for m in messages:
            assert store.put(txn, m) is StoreOutcome.STORED

    store.write(put_all)
    return messages


def retrieve_body(seed: bytes) -> bytes:
    """A signed retrieve of the first page of namespace 0 of the account ``03`` ‖ Ed25519 key."""
    timestamp = now_ms()
    signature = _core.ed25519_sign(seed, retrieve_string(0, timestamp))
    params = {
        "pubkey": "03" + _core.ed25519_public_key(seed).hex(),
        "timestamp": timestamp,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return orjson.dumps({"method": "retrieve", "params": params})


def check_page(body: bytes, messages: list[Message]) -> None:
    answer = orjson.loads(body)
    assert answer["more"] is (len(messages) > PAGE)
    page = answer["messages"]
    assert [m["hash"] for m in page] == [hash_b64(m.hash) for m in messages[:PAGE]]
    assert [base64.b64decode(m["data"]) for m in page] == [m.data for m in messages[:PAGE]]
    assert [m["expiration"] for m in page] == [m.expiry_ms for m in messages[:PAGE]]


def test_retrieve_rpc(benchmark: Benchmark, tmp_path: Path) -> None:
    benchmark.group = "retrieve-256x1KiB"
    seed = os.urandom(32)
    account = b"\x03" + _core.ed25519_public_key(seed)
    store = open_store(tmp_path / "store")
    try:
        messages = populate(store, account, pick(benchmark, RETRIEVE_STORED))
        rpc = StorageRpc(store, StoreWriter(store), Limits(), NodeMetrics())
        body = retrieve_body(seed)
        loop = uvloop.new_event_loop()
        try:

            def call() -> tuple[int, bytes, bytes]:
                return loop.run_until_complete(rpc.handle_body(body))

            status, answer, content_type = benchmark(call)
        finally:
            loop.close()
        assert status == 200, answer
        assert content_type == b"application/json"
        check_page(answer, messages)
    finally:
        store.close()
    _record_rate(benchmark, "retrieve-rpc", PAGE, "messages_per_s")


@pytest.mark.timeout(300)
def test_retrieve_http(benchmark: Benchmark, tmp_path: Path) -> None:
    benchmark.group = "retrieve-256x1KiB"
    seed = os.urandom(32)
    account = b"\x03" + _core.ed25519_public_key(seed)
    data_dir = tmp_path / "node"
    store = open_store(NodeConfig(data_dir=data_dir).store_path)
    try:
        messages = populate(store, account, pick(benchmark, RETRIEVE_STORED))
    finally:
        store.close()
    requests = pick(benchmark, HTTP_RETRIEVES)
    results: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        loader.ask(op="prep_retrieve", n=requests, body=retrieve_body(seed).hex(), expect=PAGE)
        return (), {}

    def go() -> dict[str, Any]:
        result = loader.ask(op="go", time_limit=TIME_LIMIT_S)
        results.append(result)
        return result

    with NodeThread(data_dir) as node, LoadProcess() as loader:
        loader.ask(op="connect", port=node.port, connections=HTTP_RETRIEVE_CONNECTIONS)
        benchmark.pedantic(go, setup=setup, rounds=pick(benchmark, ROUNDS_HTTP))
        for result in results:
            assert (result["ok"], result["bad"]) == (requests, 0), result
        page, _more = node.store.retrieve(
            account, namespace=0, after=None, now_ms=now_ms(), max_messages=PAGE, max_bytes=7 << 20
        )
        assert [m.data for m in page] == [m.data for m in messages[:PAGE]]
    _record_rate(benchmark, "retrieve-http", requests * PAGE, "messages_per_s")
