"""pytest-benchmark suite of closed groups' cryptography (``docs/performance.md``, "Closed groups").

In one run, side by side:

- ``group-rekey``: ``seal_keys`` for 10 and for 100 members (one X25519 and one AEAD per member,
  the padding, one signature) — what an admin pays for each removal; and ``open_keys`` by the
  member whose entry is tried last (one X25519, one signature check, up to 100 AEAD openings).
- ``group-vs-1to1``: sending and reading 1 KiB of padded content in a group
  (``seal_message``/``open_message``: one signature, one AEAD; one AEAD, one signature check)
  against a 1:1 message (``encrypt_for_recipient``/``decrypt_incoming``, the Session Protocol).

- ``group-network`` (``test_network_group_vs_1to1``): through the network, on ``NET_NODES``
  in-process nodes (nodes and clients on one event loop), each device with its own network and
  swarm client; in ``NET_REPEAT`` repetitions, candidates interleaved (order rotated): **send**
  (``SEND_BATCH`` one after the other) with ``Groups.send``, ``Messenger.send_text`` (1:1, contact
  made beforehand) and the floor, ``SwarmClient.store`` of a 1:1 message sealed in advance; **fetch
  of ``FETCH_NEW`` new messages** and then **idle** with ``Groups.fetch`` (a group of
  ``GROUP_MEMBERS`` made afresh each repetition), ``Messenger.fetch`` and the floor,
  ``SwarmClient.retrieve``. Medians per operation, ratios of medians and onion requests per
  operation (and messages the retrieves carried) are printed at the end of the module
  (``docs/performance.md``, "Closed groups: through the network").

Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``): each then runs
once as a correctness check (every result is checked; the network benchmark one short repetition).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import statistics
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from benchkit import Benchmark, pick
from veil import clock
from veil.client.account import Book
from veil.client.directory import ClientDirectory
from veil.client.groups import Group, Groups
from veil.client.messaging import Messenger, seal
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.crypto import decrypt_incoming, encrypt_for_recipient
from veil.identity import Identity
from veil.node.config import NodeConfig, StoreSettings
from veil.node.identity import create_node_key
from veil.node.server import Node
from veil.protocol.consensus import SignedConsensus, Vote, VoteEntry, assemble, commit_of
from veil.protocol.content import Content, pad
from veil.protocol.groups import GroupKey, open_keys, open_message, seal_keys, seal_message
from veil.protocol.network_file import AuthorityInfo, NetworkFile
from veil.protocol.peers import PeerInfo

T = TypeVar("T")
NOW = 1_700_000_000_000


@pytest.mark.parametrize("members", [10, 100])
def test_rekey_seal(benchmark: Benchmark, members: int) -> None:
    benchmark.group = "group-rekey"
    seed = os.urandom(32)
    keys = [Identity.generate().x25519_public_key for _ in range(members)]
    key = GroupKey(2, os.urandom(32))
    sealed = benchmark(seal_keys, seed, key, keys, NOW)
    benchmark.extra_info["bytes"] = len(sealed)
    assert len(sealed) < 76_800


@pytest.mark.parametrize("members", [10, 100])
def test_rekey_open(benchmark: Benchmark, members: int) -> None:
    benchmark.group = "group-rekey"
    seed = os.urandom(32)
    group = Identity(seed).ed25519_public_key
    reader = Identity.generate()
    others = [Identity.generate().x25519_public_key for _ in range(members - 1)]
    key = GroupKey(2, os.urandom(32))
    sealed = seal_keys(seed, key, [*others, reader.x25519_public_key], NOW)
    opened = benchmark(open_keys, group, reader.x25519_secret_key, sealed)
    assert opened.key is not None
    assert (opened.key.generation, opened.key.key) == (key.generation, key.key)


@pytest.mark.parametrize("kind", ["group", "1to1"])
def test_send_and_read(benchmark: Benchmark, kind: str) -> None:
    benchmark.group = "group-vs-1to1"
    alice, bob = Identity.generate(), Identity.generate()
    content = pad(os.urandom(1024))
    group = Identity.generate().ed25519_public_key
    key = GroupKey(1, os.urandom(32))

    def group_round() -> bytes:
        sealed = seal_message(group, key, alice.seed, content)
        return open_message(group, {1: key}, sealed).padded_content

    def one_to_one_round() -> bytes:
        sealed = encrypt_for_recipient(alice, bob.session_id, content)
        return decrypt_incoming(bob, sealed)[0]

    got = benchmark(group_round if kind == "group" else one_to_one_round)
    assert got == content


# --- through the network: group send and fetch against 1:1, in-process nodes ----------------------

NET_NODES = 6
NET_REPEAT = (25, 1)  # interleaved repetitions (enabled, disabled)
SEND_BATCH = (10, 2)  # sends per candidate per repetition, one after the other
FETCH_NEW = (10, 2)  # messages waiting for each "fetch, new" round
GROUP_MEMBERS = 100  # the fetch rounds' groups (the largest a group may be)
NET_TIME_LIMIT_S = 300.0
NET_TTL_MS = 3600 * 1000
TEXT = "a group or a 1:1 message of sixty-four characters, padded alike."
SEND_CANDIDATES = ("group", "1to1", "floor")
FETCH_CANDIDATES = ("group", "1to1", "floor")

FIGURES: dict[str, Any] = {}


class _Authorities:
    """Three directory authorities held by the benchmark: they sign one consensus listing the
    in-process nodes and hand it to them (as ``tests/node_helpers.StubAuthorities`` does; the
    network file names them at an address nothing listens on). Hour-long periods, so that clients
    do not refresh the consensus during the run."""

    def __init__(self, directory: Path) -> None:
        self.identities = [Identity.generate() for _ in range(3)]
        self.network = NetworkFile(
            name="bench",
            authorities=tuple(
                AuthorityInfo(
                    f"auth{i}",
                    a.ed25519_public_key,
                    a.x25519_public_key,
                    ("127.0.0.1", 9),
                    ("127.0.0.1", 9),
                )
                for i, a in enumerate(self.identities)
            ),
            period_s=3600.0,
            valid_periods=24,
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "network.json"
        self.path.write_text(json.dumps(self.network.to_json()), encoding="utf-8")
        self.signed: SignedConsensus | None = None

    def issue(self, nodes: list[Node]) -> None:
        period = self.network.period_at(clock.now_ms())
        announcements = [n.directory.own for n in nodes if n.directory.own is not None]
        entries = tuple(VoteEntry(a, period, True) for a in announcements)
        votes = [
            Vote(
                self.network.name,
                period,
                a.ed25519_public_key,
                entries,
                commit_of(os.urandom(32)),
                os.urandom(32),
            )
            for a in self.identities
        ]
        consensus = assemble(votes, self.network, period, None, {})
        digest = consensus.digest()
        self.signed = SignedConsensus(
            consensus, {a.ed25519_public_key: a.sign(digest) for a in self.identities}
        )
        for node in nodes:
            node.directory.adopt(self.signed)

    def directory(self) -> ClientDirectory:
        """A client's directory, taken as a client takes one: from JSON, checked."""
        assert self.signed is not None
        return ClientDirectory(
            self.network, SignedConsensus.from_json(self.signed.to_json(), self.network)
        )


@asynccontextmanager
async def _in_process_network(directory: Path) -> AsyncIterator[_Authorities]:
    authorities = _Authorities(directory / "authorities")
    nodes: list[Node] = []
    try:
        for i in range(NET_NODES):
            data_dir = directory / f"node{i}"
            data_dir.mkdir(parents=True)
            config = NodeConfig(
                data_dir=data_dir,
                listen_port=0,
                network_file=str(authorities.path),
                store=StoreSettings(map_size_bytes=64 * 1024 * 1024),
            )
            create_node_key(config.key_path)
            nodes.append(Node(config))
            await nodes[-1].start()
        authorities.issue(nodes)
        yield authorities
    finally:
        for node in nodes:
            await node.stop()


class _CountingNetworkClient(NetworkClient):
    """Counts onion requests by method, and the messages retrieve answers carry."""

    def __init__(self, directory: ClientDirectory) -> None:
        super().__init__(directory)
        self.methods: Counter[str] = Counter()

    async def request(
        self,
        destination: PeerInfo,
        method: str,
        params: dict[str, Any],
        *,
        onion: str | None = None,
    ) -> tuple[int, Any]:
        self.methods[method] += 1
        status, body = await super().request(destination, method, params, onion=onion)
        if method == "retrieve" and isinstance(body, dict):
            self.methods["retrieved messages"] += len(body.get("messages") or ())
        return status, body


@dataclass
class _Device:
    identity: Identity
    network: _CountingNetworkClient
    swarm: SwarmClient
    groups: Groups
    messenger: Messenger

    @classmethod
    async def open(cls, authorities: _Authorities, identity: Identity | None = None) -> _Device:
        identity = identity or Identity.generate()
        network = _CountingNetworkClient(authorities.directory())
        await network.__aenter__()
        swarm = SwarmClient(network)
        book = Book(device_name="bench")
        messenger = Messenger(identity, swarm, book=book, ttl_ms=NET_TTL_MS)
        return cls(identity, network, swarm, Groups(identity, swarm), messenger)


@dataclass
class _Samples:
    """Per candidate: seconds per operation, one value per repetition, and onion requests."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    requests: dict[str, Counter[str]] = field(default_factory=dict)
    operations: Counter[str] = field(default_factory=Counter)

    async def time(
        self, name: str, device: _Device, ops: int, op: Callable[[], Awaitable[object]]
    ) -> list[object]:
        before = Counter(device.network.methods)
        results = []
        started = time.perf_counter()
        for _ in range(ops):
            results.append(await op())
        self.seconds.setdefault(name, []).append((time.perf_counter() - started) / ops)
        after = Counter(device.network.methods)
        after.subtract(before)
        self.requests.setdefault(name, Counter()).update(+after)
        self.operations[name] += ops
        return results


def _rotated(names: tuple[str, ...], repetition: int) -> list[str]:
    start = repetition % len(names)
    return [*names[start:], *names[:start]]


async def _group_vs_1to1(directory: Path, repeat: int, batch: int, new: int) -> dict[str, Any]:
    async with _in_process_network(directory) as authorities:
        devices: list[_Device] = []

        async def device(identity: Identity | None = None) -> _Device:
            devices.append(await _Device.open(authorities, identity))
            return devices[-1]

        try:
            return await _measure(device, repeat, batch, new)
        finally:
            for d in devices:
                await d.network.close()


async def _measure(
    device: Callable[..., Awaitable[_Device]], repeat: int, batch: int, new: int
) -> dict[str, Any]:
    admin, sender, reader = await device(), await device(), await device()
    floor_reader = await device()
    send_sink = Identity.generate().session_id  # the 1:1 and floor sends go nowhere read
    others = [Identity.generate().session_id for _ in range(GROUP_MEMBERS - 3)]

    async def new_group(members: list[str]) -> tuple[Group, Group, Group]:
        """A group of the admin, the sender, the reader and ``members``: each one's view."""
        group, invites = await admin.groups.create("bench", members)
        sender_view = sender.groups.join(invites[sender.identity.session_id])
        reader_view = reader.groups.join(invites[reader.identity.session_id])
        await sender.groups.sync(sender_view)
        await reader.groups.sync(reader_view)
        return group, sender_view, reader_view

    def sealed_1to1(recipient: str) -> bytes:
        return seal(sender.identity, recipient, Content.text(TEXT, clock.now_ms()))

    # Warm-up: every path in use once; the 1:1 contact made (its first message also stores the
    # sender's config), the reader's first fetches done.
    roles = [sender.identity.session_id, reader.identity.session_id]
    _, send_view, _ = await new_group(roles)
    await sender.groups.send(send_view, TEXT)
    for _ in range(2):
        await sender.messenger.send_text(send_sink, TEXT)
        await sender.messenger.send_text(reader.identity.session_id, TEXT)
        await sender.swarm.store(send_sink, sealed_1to1(send_sink), ttl_ms=NET_TTL_MS)
    for _ in range(3):
        await reader.messenger.fetch()
    await floor_reader.swarm.retrieve(floor_reader.identity)

    send, fetch_new, fetch_idle = _Samples(), _Samples(), _Samples()
    floor_sealed = [sealed_1to1(send_sink) for _ in range(batch * repeat)]
    fetch_sealed = [sealed_1to1(floor_reader.identity.session_id) for _ in range(new * repeat)]
    ops = {
        "group": lambda: sender.groups.send(send_view, TEXT),
        "1to1": lambda: sender.messenger.send_text(send_sink, TEXT),
        "floor": lambda: sender.swarm.store(send_sink, floor_sealed.pop(), ttl_ms=NET_TTL_MS),
    }
    for repetition in range(repeat):
        for name in _rotated(SEND_CANDIDATES, repetition):
            await send.time(name, sender, batch, ops[name])

        # A fresh group for each fetch round: its reader holds no cursor of it yet (the group's
        # older messages would come again within the swarm client's look-back window).
        _, sender_view, reader_view = await new_group([*roles, *others])
        for _ in range(new):
            await sender.groups.send(sender_view, TEXT)
            await sender.messenger.send_text(reader.identity.session_id, TEXT)
            await sender.swarm.store(
                floor_reader.identity.session_id, fetch_sealed.pop(), ttl_ms=NET_TTL_MS
            )
        fetches: dict[str, tuple[_Device, Callable[[], Awaitable[list[Any]]]]] = {
            "group": (reader, functools.partial(reader.groups.fetch, reader_view)),
            "1to1": (reader, reader.messenger.fetch),
            "floor": (floor_reader, lambda: floor_reader.swarm.retrieve(floor_reader.identity)),
        }
        floor_read: list[str] = []
        for samples, expected in ((fetch_new, new), (fetch_idle, 0)):
            for name in _rotated(FETCH_CANDIDATES, repetition):
                who, op = fetches[name]
                (got,) = await samples.time(name, who, 1, op)
                assert isinstance(got, list)
                assert len(got) == expected, (name, expected, got)
                if name == "group":
                    assert all(m.text == TEXT for m in got)
                elif name == "1to1":
                    assert all(r.kind == "text" and r.body == TEXT for r in got)
                else:
                    floor_read += [m["hash"] for m in got]
        # The floor's reader deletes what it read (untimed), as Messenger.fetch does.
        assert len(await floor_reader.swarm.delete(floor_reader.identity, floor_read)) == new
    return {"send": send, "fetch-new": fetch_new, "fetch-idle": fetch_idle}


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the network figures (medians over the repetitions, ratios of medians) once the
    module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    lines = [
        "",
        f"closed groups through {NET_NODES} in-process nodes, {FIGURES['repeat']} interleaved"
        " repetitions (median ms per operation [min-max]; onion requests per operation):",
    ]
    for kind in ("send", "fetch-new", "fetch-idle"):
        samples: _Samples = FIGURES[kind]
        medians = {n: statistics.median(v) for n, v in samples.seconds.items()}
        for name, values in samples.seconds.items():
            requests = samples.requests[name]
            per_op = ", ".join(
                f"{method} {count / samples.operations[name]:.2f}"
                for method, count in sorted(requests.items())
            )
            lines.append(
                f"  {kind:10} {name:5} {medians[name] * 1e3:7.2f} ms"
                f" [{min(values) * 1e3:.2f}-{max(values) * 1e3:.2f}]  ({per_op})"
            )
        lines.append(
            f"  {kind:10} group / 1to1 {medians['group'] / medians['1to1']:.2f},"
            f"  group / floor {medians['group'] / medians['floor']:.2f},"
            f"  1to1 / floor {medians['1to1'] / medians['floor']:.2f}"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.mark.timeout(NET_TIME_LIMIT_S + 30)
def test_network_group_vs_1to1(benchmark: Benchmark, tmp_path: Path) -> None:
    """Group send and fetch (``veil.client.groups``) against 1:1 (``Messenger.send_text``,
    ``Messenger.fetch``) and the floor (one ``SwarmClient.store`` of a sealed 1:1 message; one
    ``SwarmClient.retrieve``), interleaved in one run on one network of in-process nodes."""
    benchmark.group = "group-network"
    repeat, batch, new = (pick(benchmark, c) for c in (NET_REPEAT, SEND_BATCH, FETCH_NEW))

    def run() -> dict[str, Any]:
        return _run(_group_vs_1to1(tmp_path, repeat, batch, new))

    figures = benchmark.pedantic(run, rounds=1)
    for kind, names in (
        ("send", SEND_CANDIDATES),
        ("fetch-new", FETCH_CANDIDATES),
        ("fetch-idle", FETCH_CANDIDATES),
    ):
        samples: _Samples = figures[kind]
        assert sorted(samples.seconds) == sorted(names)
        assert all(len(v) == repeat for v in samples.seconds.values())
        for name, values in samples.seconds.items():
            benchmark.extra_info[f"{kind}/{name}/median_ms"] = round(
                statistics.median(values) * 1e3, 3
            )
    # A group send is one onion store; a 1:1 send two (the message and the sender's transcript).
    assert figures["send"].requests["group"]["store"] == batch * repeat
    assert figures["send"].requests["1to1"]["store"] == 2 * batch * repeat
    if not benchmark.disabled:
        FIGURES.update(figures, repeat=repeat)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` on a fresh uvloop loop, bounded by ``NET_TIME_LIMIT_S``; a ResourceWarning (a
    server or connection left open) fails it instead of raising inside uvloop's callbacks."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = uvloop.run(asyncio.wait_for(coro, NET_TIME_LIMIT_S))
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    for w in caught:
        if not issubclass(w.category, ResourceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert not leaks, f"left open when the loop closed: {leaks}"
    return result
