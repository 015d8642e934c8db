"""Soak: node processes under steady and hostile load keep their memory and their tables bounded.

A devnet of real processes (three ``veil authority run``, four ``veil node run``), so that each
node's RSS is its own, with small caps and short expiries so that both filling the tables and their
falling back show within a short run. For ``VEIL_SOAK_S`` seconds (default 20) the test process
sends, from many client addresses (``127.1.0.0/16`` and up: all of ``127/8`` is loopback, and a
node counts each address as a client of its own):

- steady load: onion v2 circuits (a create, then data cells carrying stores), one-shot cells
  carrying stores, and direct stores, to many accounts; the nodes replicate every store;
- hostile load: replayed cells, data cells on circuits that do not exist, creates past the circuit
  caps, floods of one-shot cells past the replay cache's per-source cap, link connections that
  never finish their handshake, and HTTP requests that never finish their headers.

Every second, each node's RSS (``/proc/PID/status``) and its table gauges
(``veil_node_table_entries``) are sampled. Checked: RSS after the warm-up grows by less than
``RSS_GROWTH_BOUND_KB``; every table stays within its configured cap throughout; once the load
stops and the expiries pass, the tables fall back to (nearly) nothing. ``docs/soak.md`` says what
bounds each table. A longer run: ``VEIL_SOAK_S=600 .venv/bin/python -m pytest -m soak
tests/test_soak.py`` (``VEIL_SOAK_TRACE=FILE`` writes every sample to a CSV file).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from node_helpers import Account, HttpClient, make_config, running_node, until
from veil import _core
from veil.devnet.network import (
    Stoppable,
    prepare_nodes,
    start_authority,
    start_node,
    stop_all,
    wait_until_converged,
)
from veil.devnet.state import NETWORK_FILE
from veil.errors import VeilError
from veil.node.config import CONFIG_FILE, Limits, LinkSettings, OnionSettings, load_config
from veil.node.config import render_config as render_node_config
from veil.node.metrics import BUFFERS_METRIC, NODE_BUFFERS, NODE_TABLES, TABLES_METRIC
from veil.protocol import cells

SOAK_S = float(os.environ.get("VEIL_SOAK_S", "20"))
"""How long the load runs."""
TRACE = os.environ.get("VEIL_SOAK_TRACE", "")
"""A file to write every sample to (CSV: seconds, node, VmRSS kB, RssAnon kB, then the tables)."""
WARMUP_S = min(60.0, max(6.0, SOAK_S / 4))
"""The first part of the load, while the tables fill and the allocator grows its arenas: RSS growth
is measured from its end."""
NODES = 4
SAMPLE_S = 1.0
REQUEST_TIMEOUT_S = 10.0
"""A client's wait for one answer (the node's own budget, ``request_timeout_s``, is less)."""
MAX_ROUNDS = int(SOAK_S * 1000) + 1000
"""A bound on every load loop's rounds, besides its deadline."""
TTL_MS = 10_000
"""Stored messages expire (and are swept) within the run: the store holds a steady amount."""
ACCOUNTS = 400

# Small caps and short expiries, so that the tables fill and drain within seconds. Cells are built
# without the clients' issue-time jitter (up to 20 s, which needs a longer replay window).
ONION = OnionSettings(
    hop_timeout_s=3.0,
    request_budget_s=6.0,
    replay_window_s=4.0,
    replay_max_entries=400,
    replay_max_entries_per_source=40,
    circuit_idle_s=3.0,
    circuit_lifetime_s=8.0,
    max_circuits=96,
    max_circuits_per_client=6,
    max_circuits_per_peer=64,
)
LINKS = LinkSettings(
    handshake_timeout_s=2.0, max_handshakes=24, max_handshakes_per_address=4, idle_timeout_s=5.0
)
LIMITS = Limits(max_connections=160, max_connections_per_address=6, request_timeout_s=8.0)
PEERS = NODES + 3
"""Every node and authority of the devnet: whom a node may hold links with."""

GAUGES = [*NODE_TABLES, *(f"{buffer}_bytes" for buffer in NODE_BUFFERS)]
"""Every table, and every buffer (``veil_node_buffered_bytes``) as ``<buffer>_bytes``."""

CAPS: dict[str, int] = {
    "replay": 3 * ONION.replay_max_entries,  # three generations
    "replay_sources": ONION.replay_max_entries,  # each holds a tag of the current generation
    "circuits": ONION.max_circuits,
    "circuit_sources": ONION.max_circuits,  # each holds a circuit
    "links_in": LINKS.max_links_per_peer * PEERS,
    "links_out": PEERS,
    "link_locks": PEERS,
    "link_backoff": PEERS,
    "link_handshakes": LINKS.max_handshakes,
    "link_handshake_times": PEERS,
    "link_streams": LINKS.max_streams * (LINKS.max_links_per_peer + 1) * PEERS,
    "http_connections": LIMITS.max_connections,
    "http_sources": LIMITS.max_connections,
    "replication_keys": 4096,
    "version_warnings": 1024,
    "swarm_views": 32,
    "http_bodies_bytes": LIMITS.max_buffered_body_bytes,
    "link_serving_bytes": LINKS.max_serving_bytes * LINKS.max_links_per_peer * PEERS,
}
"""What bounds each table with these settings (docs/soak.md). The others are bounded by the load's
concurrency (requests in flight), and are checked to drain."""

DRAINED: dict[str, int] = {
    "circuits": 0,
    "circuit_sources": 0,
    "replay": 60,  # the probes' own tags: ~2 a second for three windows
    "replay_sources": 1,  # the prober
    "link_handshakes": 0,
    "link_streams": 0,
    "http_sources": 1,  # the sampler and the prober, both from 127.0.0.1
    "http_connections": 3,
    "replication_tasks": 0,
    "peel_pending": 0,
    "writer_queue": 0,
    "http_bodies_bytes": 0,
    "link_serving_bytes": 0,
}
"""Each table's most once the load stopped and the expiries passed."""
FINISH_S = REQUEST_TIMEOUT_S + LIMITS.request_timeout_s + 5
"""The most the load loops take to finish what is in flight once the load stops."""
DRAIN_S = 3 * (ONION.replay_window_s + 1) + LIMITS.request_timeout_s + 10
"""Replay tags go after three rotations (a rotation needs a window and a layer); half-open HTTP
connections after ``request_timeout_s``; circuits after ``circuit_idle_s``."""

RSS_GROWTH_BOUND_KB = 12 * 1024
"""RSS growth allowed from the end of the warm-up to the peak after it (under load, then draining).

Measured on a 2-core machine with benchmarks running alongside (docs/soak.md has the figures): a
node starts at ~55 MB, grows 3-6 MB in the warm-up while its tables fill to their caps, and then by
0-6 MB more, in 20-s and 120-s runs alike: the heap levels off, and the LMDB map's file pages (the
rest of VmRSS) settle once stored messages expire as fast as they come. 12 MB is twice the most
seen, room for bigger backlogs on a busier machine. A node made to keep 4 kB per onion request
(~100 requests a second each) grew 7-9 MB in a 20-s run and 15-17 MB in a 40-s run, which fails:
the default run catches a leak of ~8 kB a request or more, longer runs (VEIL_SOAK_S) smaller
ones."""


# --- the devnet -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    index: int
    host: str
    port: int
    link_port: int
    x25519: bytes
    pid: int


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _start_devnet(root: Path) -> tuple[list[_Node], list[subprocess.Popen[bytes]]]:
    """Authorities and nodes started, every node holding a consensus that lists them all; the
    nodes, and every process (to stop)."""
    state = prepare_nodes(root, NODES)
    for record in state.nodes:
        config = load_config(record.data_dir)
        config = dataclasses.replace(config, onion=ONION, links=LINKS, limits=LIMITS)
        (record.data_dir / CONFIG_FILE).write_text(render_node_config(config), encoding="utf-8")
    processes = [start_authority(a, root / NETWORK_FILE) for a in state.authorities]
    try:
        processes += [start_node(record) for record in state.nodes]
        records = [*state.authorities, *state.nodes]
        wait_until_converged(records, processes, 90.0, lambda: False)
    except BaseException:
        _stop(processes)
        raise
    nodes = [
        _Node(
            record.index,
            *_address(record.http),
            _address(record.link)[1],
            bytes.fromhex(record.x25519),
            process.pid,
        )
        for record, process in zip(state.nodes, processes[len(state.authorities) :], strict=True)
    ]
    return nodes, processes


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    stop_all([Stoppable.child(process) for process in processes])


# --- a client -----------------------------------------------------------------------------------


class _Client:
    """A client at one source address: a keep-alive connection to each node it asks, reopened
    after a failure."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._open: dict[int, HttpClient] = {}

    async def request(
        self, node: _Node, path: str, body: bytes = b"", method: str = "POST"
    ) -> tuple[int, bytes]:
        """(status, body); status 0 if the connection failed or no answer came in time."""
        client = self._open.get(node.index)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if client is None:
                    reader, writer = await asyncio.open_connection(
                        node.host, node.port, local_addr=(self.source, 0), limit=1 << 22
                    )
                    client = self._open[node.index] = HttpClient(reader, writer)
                answer = await client.request(method, path, body)
        except (OSError, TimeoutError, EOFError, ValueError):
            await self._drop(node)
            return 0, b""
        if answer.headers.get("connection") == "close":
            await self._drop(node)
        return answer.status, answer.body

    async def _drop(self, node: _Node) -> None:
        client = self._open.pop(node.index, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for client in self._open.values():
            await client.close()
        self._open.clear()


def _issued(hops: int) -> list[int]:
    """Issue times for a cell's layers: now, rounded (no jitter: the replay window is short)."""
    return [round(time.time())] * hops


def _oneshot(path: list[_Node], request: bytes) -> tuple[bytes, _core.CellReply]:
    content = cells.encode_content(request)
    cell, reply = _core.build_oneshot_cell([n.x25519 for n in path], content, _issued(len(path)))
    return bytes([cells.FRAME_ONESHOT]) + cell, reply


def _create(path: list[_Node]) -> tuple[bytes, _core.PendingCircuit]:
    cell, pending = _core.build_create_cell([n.x25519 for n in path], _issued(len(path)))
    return bytes([cells.FRAME_CREATE]) + cell, pending


_INFO = orjson.dumps({"method": "info", "params": {}})


def _store(account: Account, rng: random.Random) -> bytes:
    data = rng.randbytes(rng.randint(40, 600))
    return orjson.dumps({"method": "store", "params": account.store(data, ttl=TTL_MS)})


def _answer_status(reply: _core.CellReply, body: bytes) -> int:
    """The destination's status in an answer; -1 if the answer does not open."""
    try:
        status, _ = cells.open_answer(reply, body, external=False)
    except VeilError:
        return -1
    return status


# --- the load -------------------------------------------------------------------------------------


@dataclass
class _Load:
    nodes: list[_Node]
    accounts: list[Account]
    stop_at: float
    tally: collections.Counter[str] = field(default_factory=collections.Counter)

    def going(self) -> bool:
        return time.monotonic() < self.stop_at


_Round = Callable[[_Client, int], Awaitable[None]]
"""One round of a client: ``(client, round number)``."""


async def _rounds(load: _Load, source: Callable[[int], str], one: _Round) -> None:
    """``one(client, round)`` until the load stops (at most ``MAX_ROUNDS``), each round from the
    address ``source(round)``, its connections closed after it."""
    for round_ in range(MAX_ROUNDS):
        if not load.going():
            return
        client = _Client(source(round_))
        try:
            await one(client, round_)
        finally:
            await client.close()


def _circuit_clients(load: _Load, worker: int) -> _Round:
    """Each round a new client address opens a circuit over three nodes, stores through it one to
    four times, and leaves it to expire."""
    rng = random.Random(worker)

    async def one(client: _Client, round_: int) -> None:
        path = rng.sample(load.nodes, 3)
        create, pending = _create(path)
        status, body = await client.request(path[0], "/onion2", create)
        load.tally[f"circuit_create_{status}"] += 1
        if status != 200:
            return
        try:
            circuit = cells.Circuit.finish(pending, body)
        except VeilError:
            load.tally["circuit_create_bad_answer"] += 1
            return
        for _ in range(rng.randint(1, 4)):
            data, reply = circuit.seal(_store(rng.choice(load.accounts), rng))
            status, body = await client.request(path[0], "/onion2", data)
            stored = _answer_status(reply, body) if status == 200 else status
            load.tally[f"circuit_store_{stored}"] += 1

    return one


def _oneshot_clients(load: _Load, worker: int) -> _Round:
    """Stores in one-shot cells over three nodes."""
    rng = random.Random(100 + worker)

    async def one(client: _Client, round_: int) -> None:
        path = rng.sample(load.nodes, 3)
        body, reply = _oneshot(path, _store(rng.choice(load.accounts), rng))
        status, answer = await client.request(path[0], "/onion2", body)
        stored = _answer_status(reply, answer) if status == 200 else status
        load.tally[f"oneshot_store_{stored}"] += 1

    return one


def _direct_clients(load: _Load, worker: int) -> _Round:
    """Stores straight to a node's storage RPC (each replicated to the account's swarm)."""
    rng = random.Random(200 + worker)

    async def one(client: _Client, round_: int) -> None:
        request = _store(rng.choice(load.accounts), rng)
        status, _ = await client.request(rng.choice(load.nodes), "/storage_rpc/v1", request)
        load.tally[f"direct_store_{status}"] += 1

    return one


def _replayers(load: _Load) -> _Round:
    """Every cell sent twice: one-shot cells, creates and data cells. The second is refused."""
    rng = random.Random(300)

    async def one(client: _Client, round_: int) -> None:
        path = rng.sample(load.nodes, 3)
        kind = round_ % 3
        if kind == 0:
            body, _ = _oneshot(path, _INFO)
        elif kind == 1:
            body, _ = _create(path)
        else:
            create, pending = _create(path)
            _, answer = await client.request(path[0], "/onion2", create)
            try:
                circuit = cells.Circuit.finish(pending, answer)
            except VeilError:  # not a create reply: a refusal (status 503) or a failed path
                return
            body, _ = circuit.seal(_INFO)
        first, _ = await client.request(path[0], "/onion2", body)
        if first == 200:
            again, _ = await client.request(path[0], "/onion2", body)
            load.tally[f"replayed_{again}"] += 1

    return one


def _unknown_circuits(load: _Load) -> _Round:
    """Data cells naming circuits no node holds."""
    rng = random.Random(400)

    async def one(client: _Client, round_: int) -> None:
        circuit_id = rng.randbytes(cells.CLIENT_CIRCUIT_ID_LEN)
        body = bytes([cells.FRAME_DATA]) + circuit_id + rng.randbytes(1168)
        status, _ = await client.request(rng.choice(load.nodes), "/onion2", body)
        load.tally[f"unknown_circuit_{status}"] += 1

    return one


CREATE_FLOOD_ADDRESSES = 18
"""Addresses a burst of creates comes from, per node: with max_circuits_per_client + 1 creates
from each, past both the per-client cap and the node's."""


async def _create_flood(load: _Load, node: _Node) -> None:
    """Bursts of one-hop creates, left to expire, every ``circuit_idle_s + 1``: four addresses at a
    time, each sending its creates one after the other."""
    for burst in range(MAX_ROUNDS):
        if not load.going():
            return
        started = time.monotonic()
        first = (burst % 10) * CREATE_FLOOD_ADDRESSES + 1
        for group in range(0, CREATE_FLOOD_ADDRESSES, 4):
            sources = [f"127.2.{node.index}.{first + group + a}" for a in range(4)]
            await asyncio.gather(*(_creates(load, node, source) for source in sources))
        await asyncio.sleep(max(0.0, ONION.circuit_idle_s + 1 - (time.monotonic() - started)))


async def _creates(load: _Load, node: _Node, source: str) -> None:
    client = _Client(source)
    try:
        for _ in range(ONION.max_circuits_per_client + 1):
            if not load.going():
                return
            status, _ = await client.request(node, "/onion2", _create([node])[0])
            load.tally[f"flood_create_{status}"] += 1
    finally:
        await client.close()


FILLER_CONNECTIONS = LIMITS.max_connections_per_address - 1


async def _replay_filler(load: _Load) -> None:
    """Each replay window, one node (the next each window): one-hop one-shot cells from one address
    after another, each on several connections at once and as fast as answered, until the replay
    cache refuses it (OVERLOADED: past its per-source cap); once one is refused before any of its
    cells got in, the whole generation is full (``replay_max_entries``): then the next window."""
    per_window = ONION.replay_max_entries // ONION.replay_max_entries_per_source + 2
    for window in range(MAX_ROUNDS):
        if not load.going():
            return
        node = load.nodes[window % len(load.nodes)]
        ends = time.monotonic() + ONION.replay_window_s
        for address in range(per_window):
            source = f"127.3.{window % 200}.{address + 1}"
            clients = [_Client(source) for _ in range(FILLER_CONNECTIONS)]
            try:
                taken = await _fill(load, clients, node, ends)
            finally:
                for client in clients:
                    await client.close()
            if taken == 0:
                break
        await asyncio.sleep(max(0.0, ends - time.monotonic()))


async def _fill(load: _Load, clients: list[_Client], node: _Node, ends: float) -> int:
    """Cells from ``clients`` (one address) until one is refused; how many were taken."""
    refused = asyncio.Event()
    taken = 0

    async def send(client: _Client) -> None:
        nonlocal taken
        for _ in range(ONION.replay_max_entries_per_source):
            if refused.is_set() or not load.going() or time.monotonic() >= ends:
                return
            status, _ = await client.request(node, "/onion2", _oneshot([node], _INFO)[0])
            load.tally[f"filler_{status}"] += 1
            taken += status == 200
            if status == 503:
                refused.set()

    await asyncio.gather(*(send(client) for client in clients))
    return taken


HALF_OPEN_ADDRESSES = 8
"""Addresses holding link connections in handshake at each node: each one past its per-address cap,
all together past ``max_handshakes`` (the oldest silent connections are closed for new ones, so the
authorities' reachability checks and the peers' dials still get in and the node stays in the
consensus)."""


async def _half_open(
    load: _Load,
    node: _Node,
    port: int,
    addresses: list[str],
    per_address: int,
    opening: bytes,
    closed_after_s: float,
    tally: str,
) -> None:
    """Connections to ``port`` from each of ``addresses`` (``per_address`` each) that send
    ``opening`` and never finish, held until the node closes them (after ``closed_after_s``; waited
    for a little longer), round after round."""
    for _ in range(MAX_ROUNDS):
        if not load.going():
            return
        held: list[asyncio.StreamWriter] = []
        readers: list[asyncio.StreamReader] = []
        try:
            for address in addresses:
                for _connection in range(per_address):
                    with contextlib.suppress(OSError):
                        reader, writer = await asyncio.open_connection(
                            node.host, port, local_addr=(address, 0)
                        )
                        writer.write(opening)
                        held.append(writer)
                        readers.append(reader)
            load.tally[tally] += len(held)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(closed_after_s + 3):
                    for reader in readers:
                        with contextlib.suppress(OSError):
                            await reader.read()
        finally:
            for writer in held:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _half_open_links(load: _Load, node: _Node) -> None:
    """Connections to the link port, from many addresses, that never send a handshake."""
    addresses = [f"127.4.{node.index}.{a + 1}" for a in range(HALF_OPEN_ADDRESSES)]
    per_address = LINKS.max_handshakes_per_address + 1
    closed_after_s = LINKS.handshake_timeout_s
    await _half_open(
        load, node, node.link_port, addresses, per_address, b"", closed_after_s, "half_open_links"
    )


HALF_REQUEST_ADDRESSES = 6
"""Addresses holding HTTP connections with half a request at each node, each past its cap."""


async def _half_requests(load: _Load, node: _Node) -> None:
    """HTTP connections, from many addresses, whose request never finishes its headers."""
    addresses = [f"127.5.{node.index}.{a + 1}" for a in range(HALF_REQUEST_ADDRESSES)]
    per_address = LIMITS.max_connections_per_address + 1
    opening = b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: node\r\n"
    closed_after_s = LIMITS.request_timeout_s
    await _half_open(
        load, node, node.port, addresses, per_address, opening, closed_after_s, "half_requests"
    )


def _load_tasks(load: _Load) -> list[asyncio.Task[None]]:
    def at(worker: int, offset: int) -> Callable[[int], str]:
        return lambda round_: f"127.1.{offset + worker}.{round_ % 250 + 1}"

    jobs: list[Awaitable[None]] = []
    jobs += [_rounds(load, at(w, 0), _circuit_clients(load, w)) for w in range(6)]
    jobs += [_rounds(load, at(w, 20), _oneshot_clients(load, w)) for w in range(4)]
    jobs += [_rounds(load, at(w, 40), _direct_clients(load, w)) for w in range(3)]
    jobs += [_rounds(load, at(0, 60), _replayers(load))]
    jobs += [_rounds(load, at(0, 61), _unknown_circuits(load))]
    jobs += [_create_flood(load, node) for node in load.nodes]
    jobs += [_replay_filler(load)]
    jobs += [_half_open_links(load, node) for node in load.nodes]
    jobs += [_half_requests(load, node) for node in load.nodes]
    return [asyncio.ensure_future(job) for job in jobs]


# --- sampling -----------------------------------------------------------------------------------


@dataclass
class _Sample:
    at: float
    """Seconds since the load started."""
    rss_kb: int
    anon_kb: int
    tables: dict[str, float]
    counters: dict[str, float]
    """Every counter series, as ``name_total{label value}``."""


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()[0] if value.split() else "0"
    return int(fields["VmRSS"]), int(fields.get("RssAnon", "0"))


def _parse_metrics(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(tables, counters) from a node's /metrics text."""
    tables: dict[str, float] = {}
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == TABLES_METRIC:
                tables[sample.labels["table"]] = sample.value
            elif family.name == BUFFERS_METRIC:  # bytes, checked as the tables are
                tables[f"{sample.labels['buffer']}_bytes"] = sample.value
            elif family.type == "counter" and sample.name.endswith("_total"):
                label = ",".join(sample.labels.values())
                counters[f"{sample.name}{{{label}}}"] = sample.value
    return tables, counters


class _Sampler:
    """Samples every node's memory and tables, each ``SAMPLE_S``, from 127.0.0.1."""

    def __init__(self, nodes: list[_Node], started: float) -> None:
        self.nodes = nodes
        self.started = started
        self.samples: dict[int, list[_Sample]] = {node.index: [] for node in nodes}
        self.missed = 0
        self._client = _Client("127.0.0.1")

    async def sample(self) -> None:
        for node in self.nodes:
            rss, anon = _memory_kb(node.pid)
            status, text = await self._client.request(node, "/metrics", method="GET")
            if status != 200:
                self.missed += 1
                continue
            tables, counters = _parse_metrics(text.decode())
            at = time.monotonic() - self.started
            self.samples[node.index].append(_Sample(at, rss, anon, tables, counters))

    async def every_second_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Sample each ``SAMPLE_S`` until ``done()`` (checked after each sample) or ``timeout``."""
        ends = time.monotonic() + timeout
        for _ in range(int(timeout / SAMPLE_S) + 2):
            started = time.monotonic()
            await self.sample()
            if done() or time.monotonic() >= ends:
                return
            await asyncio.sleep(max(0.0, SAMPLE_S - (time.monotonic() - started)))

    def last(self, node: _Node) -> _Sample:
        return self.samples[node.index][-1]

    async def close(self) -> None:
        await self._client.close()


def _drained(sample: _Sample) -> bool:
    return all(sample.tables[table] <= most for table, most in DRAINED.items())


async def _probe(nodes: list[_Node], prober: _Client) -> None:
    """What makes each node look at its expiries, as any traffic does: a one-hop one-shot (replay
    generations rotate when a layer arrives) and a data cell on no circuit (circuits are swept when
    one is looked up)."""
    for node in nodes:
        await prober.request(node, "/onion2", _oneshot([node], _INFO)[0])
        unknown = bytes([cells.FRAME_DATA]) + os.urandom(cells.CLIENT_CIRCUIT_ID_LEN + 1168)
        await prober.request(node, "/onion2", unknown)


@dataclass
class _Run:
    sampler: _Sampler
    tally: collections.Counter[str]
    load_s: float
    drain_s: float


async def _soak(nodes: list[_Node]) -> _Run:
    rng = random.Random(7)
    accounts = [Account() for _ in range(ACCOUNTS)]
    rng.shuffle(accounts)
    started = time.monotonic()
    sampler = _Sampler(nodes, started)
    load = _Load(nodes, accounts, started + SOAK_S)
    tasks = _load_tasks(load)
    prober = _Client("127.0.0.1")
    try:
        # Every loop stops at its deadline; what is in flight then finishes within a request's
        # timeout (a half-open connection: within the node's). Sampled until all have finished.
        await sampler.every_second_until(lambda: all(t.done() for t in tasks), SOAK_S + FINISH_S)
        async with asyncio.timeout(SAMPLE_S):
            await asyncio.gather(*tasks)  # (raising what a load loop raised)
        load_s = time.monotonic() - started

        # Then only probes, until every node's tables have fallen back (or DRAIN_S passed).
        drain_started = time.monotonic()
        for _ in range(int(DRAIN_S / 0.5) + 1):
            await _probe(nodes, prober)
            await sampler.sample()
            if all(_drained(sampler.last(node)) for node in nodes):
                break
            if time.monotonic() - drain_started > DRAIN_S:
                break
            await asyncio.sleep(0.5)
        return _Run(sampler, load.tally, load_s, time.monotonic() - drain_started)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await prober.close()
        await sampler.close()


def _counter(sample: _Sample, name: str, label: str) -> float:
    return sample.counters.get(f"{name}_total{{{label}}}", 0.0)


@dataclass(frozen=True)
class _Memory:
    """A node's RSS over the run (kB): at the first sample, at the end of the warm-up, its peak
    after the warm-up (the load and the drain after it), and at the last sample."""

    start: int
    warm: int
    peak: int
    end: int

    @classmethod
    def of(cls, series: list[_Sample], load_s: float, kind: str) -> _Memory:
        measured = [s for s in series if s.at >= WARMUP_S]
        assert len(measured) >= (load_s - WARMUP_S) / 4, "too few samples after the warm-up"
        values = [getattr(s, kind) for s in measured]
        return cls(getattr(series[0], kind), values[0], max(values), getattr(series[-1], kind))

    def __str__(self) -> str:
        mb = [f"{kb / 1024:.0f}" for kb in (self.start, self.warm, self.peak, self.end)]
        return "/".join(mb)


def _write_trace(path: Path, samples: dict[int, list[_Sample]]) -> None:
    tables = GAUGES
    lines = [",".join(["seconds", "node", "rss_kb", "anon_kb", *tables])]
    for index, series in samples.items():
        for s in series:
            values = [f"{s.at:.1f}", str(index), str(s.rss_kb), str(s.anon_kb)]
            lines.append(",".join(values + [f"{s.tables[t]:.0f}" for t in tables]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.soak
@pytest.mark.timeout(int(240 + 1.5 * SOAK_S))
def test_a_node_under_steady_and_hostile_load_keeps_memory_and_tables_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes, processes = _start_devnet(tmp_path / "devnet")
    by_pid = {process.pid: process for process in processes}
    try:
        run = uvloop.run(asyncio.wait_for(_soak(nodes), SOAK_S + FINISH_S + DRAIN_S + 120))
        exited = [node.index for node in nodes if by_pid[node.pid].poll() is not None]
    finally:
        _stop(processes)
    assert not exited, f"nodes {exited} exited under load"
    samples, tally = run.sampler.samples, run.tally
    rss = {n.index: _Memory.of(samples[n.index], run.load_s, "rss_kb") for n in nodes}
    anon = {n.index: _Memory.of(samples[n.index], run.load_s, "anon_kb") for n in nodes}
    peaks = {
        table: max(s.tables[table] for series in samples.values() for s in series)
        for table in GAUGES
    }
    if TRACE:
        _write_trace(Path(TRACE), samples)
    with capsys.disabled():  # the figures, in every run (docs/soak.md quotes them)
        print(
            f"\nsoak {SOAK_S:g} s (load {run.load_s:.0f} s, drain {run.drain_s:.0f} s, "
            f"{run.sampler.missed} scrapes missed): RSS MB start/warm/peak/end (anon): "
            + "; ".join(f"node{i} {rss[i]} ({anon[i]})" for i in rss)
            + "\n  table peaks: "
            + " ".join(f"{table}={peak:.0f}" for table, peak in peaks.items())
            + "\n  answers: "
            + " ".join(f"{key}={value}" for key, value in sorted(tally.items()))
        )

    # RSS after the warm-up grows by less than the bound, on every node.
    for i, memory in rss.items():
        assert memory.peak - memory.warm < RSS_GROWTH_BOUND_KB, f"node {i}: {memory}"

    # Every table within its cap, in every sample.
    for node in nodes:
        for sample in samples[node.index]:
            for table, cap in CAPS.items():
                assert sample.tables[table] <= cap, (node.index, sample.at, table)
            assert sample.tables["swarm_cache"] <= 65_536 * (1 + sample.tables["swarm_views"])

    # ...and back to (nearly) nothing once the load stopped and the expiries passed.
    for node in nodes:
        last = run.sampler.last(node)
        kept = {t: last.tables[t] for t, most in DRAINED.items() if last.tables[t] > most}
        assert not kept, f"node {node.index} kept {kept} after {run.drain_s:.0f} s"

    # The load was what it says: stores answered on circuits, in one-shot cells and directly, and
    # replicated; replays refused; and the hostile part reached every cap it aims at.
    assert tally["circuit_store_200"] > 0
    assert tally["oneshot_store_200"] > 0
    assert tally["direct_store_200"] > 0
    assert tally["replayed_502"] > 0
    assert tally["replayed_200"] == 0, "a replayed cell was answered"
    assert tally["unknown_circuit_410"] > 0
    assert tally["unknown_circuit_200"] == 0
    final = [run.sampler.last(node) for node in nodes]

    def total(name: str, label: str) -> float:
        return sum(_counter(sample, name, label) for sample in final)

    assert total("veil_replication_events", "pushed") > 0
    assert total("veil_onion_events", "replayed") > 0
    assert total("veil_onion_events", "unknown_circuit") > 0
    for limit in (
        "max_circuits",
        "max_circuits_per_client",
        "replay_max_entries",
        "replay_max_entries_per_source",
        "max_connections_per_address",
    ):
        assert total("veil_limit_refusals", limit) > 0, limit
    assert total("veil_link_events", "closed_handshake_timeout") > 0
    assert total("veil_link_events", "refused_handshakes_per_address") > 0
    assert total("veil_link_events", "closed_oldest_handshake") > 0
    assert peaks["circuits"] == ONION.max_circuits
    assert peaks["circuit_sources"] >= CREATE_FLOOD_ADDRESSES
    assert peaks["replay_sources"] >= CREATE_FLOOD_ADDRESSES


# --- the gauges, in process ----------------------------------------------------------------------


def test_the_table_gauges_count_what_each_table_holds(tmp_path: Path) -> None:
    """``veil_node_table_entries`` as a scrape sees it: circuits and replay tags a client's creates
    left, and the scraping connections themselves."""

    async def main() -> None:
        config = dataclasses.replace(make_config(tmp_path / "node"), onion=ONION)
        async with running_node(config) as node:
            me = _Node(0, "127.0.0.1", node.port, 0, node.peer_info.x25519, os.getpid())
            client, other = _Client("127.1.0.1"), _Client("127.1.0.2")
            try:
                for _ in range(3):
                    status, _ = await client.request(me, "/onion2", _create([me])[0])
                    assert status == 200
                await other.request(me, "/onion2", _oneshot([me], _INFO)[0])
                _, partial = await asyncio.open_connection("127.0.0.1", node.port)
                partial.write(b"POST /storage_rpc/v1 HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")
                partial.write(bytes(1_200))
                await until(lambda: node.app.buffered_body_bytes == 1_200, 3.0)
                status, text = await client.request(me, "/metrics", method="GET")
                assert status == 200
                tables, _ = _parse_metrics(text.decode())
            finally:
                await client.close()
                await other.close()
            partial.close()
            assert set(tables) == set(GAUGES)
            assert tables["http_bodies_bytes"] == 1_200  # the body still arriving
            assert tables["link_serving_bytes"] == 0
            assert tables["circuits"] == 3 == len(node.router.circuits)
            assert tables["circuit_sources"] == 1
            assert tables["replay"] == 4
            assert tables["replay_sources"] == 2
            assert tables["http_connections"] == 3
            assert tables["http_sources"] == 3
            assert tables["links_in"] == tables["links_out"] == tables["link_streams"] == 0

    uvloop.run(asyncio.wait_for(main(), 60))
