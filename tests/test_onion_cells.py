"""Onion v2 (``veil.protocol.cells`` over the core's ``cells.rs``): what each hop sees of a
request, cell sizes, replays, tagging, circuit state at a node, and circuits through real nodes."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network, stop_network
from veil import _core
from veil.client.http import url as http_url
from veil.client.network import NetworkClient
from veil.errors import DecryptionError
from veil.node.config import OnionSettings
from veil.node.links import HopFailed
from veil.node.onion import CircuitTable, ReplayCache, UnknownCircuit
from veil.node.server import Node
from veil.protocol import cells
from veil.protocol.link import FailureCode

# --- in process: what the hops of one request see ----------------------------------------------


@dataclass
class View:
    """Everything one hop saw of one request: the bytes in, the bytes out, its header fields."""

    blobs: list[bytes] = field(default_factory=list)
    fields: list[int] = field(default_factory=list)


def _keys(n: int = 3) -> list[_core.NodeKey]:
    return [_core.NodeKey(_core.x25519_generate_secret()) for _ in range(n)]


def _common_runs(a: list[bytes], b: list[bytes], run: int = 8) -> list[bytes]:
    """Every ``run``-byte sequence found in one of ``a`` and one of ``b``."""
    seen = {blob[i : i + run] for blob in a for i in range(len(blob) - run + 1)}
    return [
        blob[i : i + run]
        for blob in b
        for i in range(len(blob) - run + 1)
        if blob[i : i + run] in seen
    ]


def _through_circuit(request: bytes, rounds: int = 1) -> tuple[list[View], list[int], list[int]]:
    """A circuit through three in-process hops carrying ``request`` ``rounds`` times; what each
    hop saw, and the cell and reply sizes on each link."""
    keys = _keys()
    circuit, hops = _open(keys)
    views = [View() for _ in keys]
    sizes: list[int] = []
    reply_sizes: list[int] = []
    for _ in range(rounds):
        body, opener = circuit.seal(request)
        cell = body[1 + cells.CLIENT_CIRCUIT_ID_LEN :]
        peeled = []
        for hop, view in zip(hops, views, strict=True):
            view.blobs.append(cell)
            sizes.append(len(cell))
            layer = hop.peel(cell)
            view.fields.append(layer.seq)
            peeled.append(layer)
            cell = layer.next
        views[2].blobs.append(peeled[2].content())
        answer = peeled[2].seal_reply(b'{"status": 200, "body": {}}')
        for i in (2, 1, 0):
            if i < 2:
                answer = peeled[i].wrap_reply(answer)
            views[i].blobs.append(answer)
            reply_sizes.append(len(answer))
        assert cells.open_answer(opener, answer, external=False) == (200, {})
    return views, sizes, reply_sizes


def test_a_colluding_guard_and_destination_find_no_field_in_common() -> None:
    views, _, _ = _through_circuit(b'{"method": "info", "params": {}}', rounds=20)
    guard, _, destination = views
    assert _common_runs(guard.blobs, destination.blobs) == []
    assert not set(guard.fields) & set(destination.fields)  # sequence numbers: none shared
    # Control: the same check finds what one hop sends and the next receives... nowhere either
    # (the next hop's layer is re-encrypted), but it does find a blob shared with itself.
    assert _common_runs(guard.blobs[:1], guard.blobs[:1])


def test_one_shot_layers_carry_issue_times_of_their_own() -> None:
    keys = _keys()
    same = 0
    for _ in range(40):
        body, _ = cells.build_oneshot([k.public for k in keys], b"{}")
        cell, issued = body[1:], []
        for key in keys:
            layer = key.peel_cell(_core.CELL_ONESHOT, cell)
            issued.append(layer.issued_s)
            cell = layer.next
        assert max(issued) - min(issued) <= cells.ISSUE_JITTER_S
        same += issued[0] == issued[2]
    # Drawn independently, the guard's and the destination's agree about one time in 21.
    assert same < 12


@pytest.mark.parametrize("sizes", [(1, 500, 1018), (1019, 1500, 2042)])
def test_every_link_carries_the_same_size_for_a_bucket(sizes: tuple[int, ...]) -> None:
    seen = set()
    replies = set()
    for size in sizes:
        _, cell_sizes, reply_sizes = _through_circuit(b"x" * size)
        seen |= set(cell_sizes)
        replies |= set(reply_sizes)
    assert len(seen) == 1  # every hop, every request size in the bucket
    assert len(replies) == 1


def test_a_bit_flipped_at_the_guard_fails_at_the_next_hop() -> None:
    keys = _keys()
    body, _ = cells.build_oneshot([k.public for k in keys], b"secret request")
    first = keys[0].peel_cell(_core.CELL_ONESHOT, body[1:])
    rng = random.Random(5)
    for _ in range(50):
        tagged = bytearray(first.next)
        tagged[rng.randrange(len(tagged))] ^= 1 << rng.randrange(8)
        with pytest.raises(DecryptionError):
            keys[1].peel_cell(_core.CELL_ONESHOT, bytes(tagged))
    # Untouched, it goes on.
    assert keys[1].peel_cell(_core.CELL_ONESHOT, first.next).next_hop == keys[2].public


def test_a_data_cell_is_accepted_once() -> None:
    circuit, (hop,) = _open(_keys(1))
    body, _ = circuit.seal(b"{}")
    cell = body[1 + cells.CLIENT_CIRCUIT_ID_LEN :]
    hop.peel(cell)
    with pytest.raises(DecryptionError):
        hop.peel(cell)


# --- a node's circuit table --------------------------------------------------------------------


def _table(**changes: Any) -> CircuitTable:
    return CircuitTable(OnionSettings(**changes))


def _hop() -> _core.CircuitHop:
    key = _keys(1)[0]
    create, _ = cells.build_create([key.public])
    return key.peel_cell(_core.CELL_CREATE, create[1:]).accept_circuit()[0]


def _refused(add: Callable[[], None]) -> str | None:
    """The limit that refused ``add`` (as OVERLOADED)."""
    with pytest.raises(HopFailed) as refused:
        add()
    assert refused.value.code is FailureCode.OVERLOADED
    return refused.value.limit


def test_circuit_state_stays_within_its_caps() -> None:
    table = _table(max_circuits=10, max_circuits_per_client=3, max_circuits_per_peer=6)
    hop = _hop()
    for i in range(3):
        table.add("client a", b"%d" % i, hop, None)
    assert _refused(lambda: table.add("client a", b"x", hop, None)) == "max_circuits_per_client"
    for i in range(6):
        table.add(b"peer", b"%d" % i, hop, None)
    assert _refused(lambda: table.add(b"peer", b"x", hop, None)) == "max_circuits_per_peer"
    table.add("client b", b"0", hop, None)
    assert len(table) == 10
    assert _refused(lambda: table.add("client c", b"0", hop, None)) == "max_circuits"
    with pytest.raises(HopFailed):  # an id in use on that link is never replaced
        table.add("client b", b"0", hop, None)
    assert len(table) == 10


def test_idle_and_old_circuits_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    table = _table(circuit_idle_s=10.0, circuit_lifetime_s=25.0)
    hop = _hop()
    table.add("a", b"busy", hop, None)
    table.add("a", b"idle", hop, None)
    for _ in range(2):
        now[0] += 8
        table.get("a", b"busy")
    now[0] += 4  # "idle" unused for 20 s
    with pytest.raises(UnknownCircuit):
        table.get("a", b"idle")
    assert table.per_source("a") == 1
    now[0] += 6  # "busy" opened 26 s ago
    with pytest.raises(UnknownCircuit):
        table.get("a", b"busy")
    assert len(table) == 0
    assert table.expired == 2


def test_a_sweep_drops_every_idle_circuit_and_a_full_table_also_the_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    table = _table(circuit_idle_s=10.0, circuit_lifetime_s=25.0, max_circuits=4)
    hop = _hop()
    for i in range(4):
        table.add("a", b"%d" % i, hop, None)
    now[0] += 6
    for i in (3, 1):  # used out of their order of opening
        table.get("a", b"%d" % i)
    now[0] += 5  # 0 and 2 idle for 11 s; 1 and 3 for 5 s
    table.add("b", b"0", hop, None)  # sweeps (more than a second since the last one)
    assert len(table) == 3
    assert table.expired == 2
    for step in range(3):  # 1 and 3 in use, 1,024 the last time: 24 s old, 2 s idle at 1,026
        now[0] += 6.5 if step else 0.0
        table.get("a", b"1")
        table.get("a", b"3")
    now[0] += 2
    table.add("c", b"0", hop, None)  # "b"/"0" idle for 15 s is swept; 1 and 3 are not idle
    assert len(table) == 3
    table.add("c", b"1", hop, None)
    table.admit("d")  # full: this sweep also drops those past their lifetime (26 s)
    assert len(table) == 2
    assert table.expired == 5
    with pytest.raises(UnknownCircuit):
        table.get("a", b"1")


def test_an_idle_nodes_replay_cache_and_circuits_are_emptied_by_its_sweeper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the node's sweeper calls each second: with no layer arriving, tags older than three
    windows and idle circuits are dropped all the same."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    replays = ReplayCache(window_s=10.0, max_entries=100, max_per_source=100)
    for i in range(50):
        replays.check_and_add(b"tag %d" % i, "a")
    table = _table(circuit_idle_s=10.0)
    table.add("a", b"0", _hop(), None)
    for _ in range(3):
        now[0] += 10.5
        replays.expire()
        table.sweep()
    assert len(replays) == 0
    assert len(table) == 0
    replays.check_and_add(b"tag 0", "a")  # long gone: no longer a replay


# --- through real nodes ------------------------------------------------------------------------


async def _network(tmp_path: Path, size: int = 5) -> tuple[StubAuthorities, list[Node]]:
    authorities = StubAuthorities(tmp_path / "authorities")
    return authorities, await start_network(authorities, tmp_path, size)


def _opened(nodes: list[Node]) -> int:
    return sum(n.router.counts["circuits_opened"] for n in nodes)


def test_requests_go_on_one_circuit_per_destination(tmp_path: Path) -> None:
    async def main() -> None:
        _, nodes = await _network(tmp_path)
        try:
            async with NetworkClient(directory_of(nodes[0])) as client:
                guards = {g.x25519 for g in client.guards}
                destination = next(p for p in client.nodes if p.x25519 not in guards)
                for _ in range(10):
                    status, body = await client.request(destination, "info", {})
                    assert status == 200, body
                assert client.circuits_opened == 1
                assert _opened(nodes) == 3  # one circuit: its three hops
                assert client._circuits[destination.x25519].keys.requests == 10
        finally:
            await stop_network(nodes)

    run(main())


def test_a_replayed_request_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        _, nodes = await _network(tmp_path)
        try:
            async with NetworkClient(directory_of(nodes[0])) as client:
                guard, relay = client.choose_path(client.nodes[-1])
                path = [guard.x25519, relay.x25519, client.nodes[-1].x25519]
                session = client._session
                assert session is not None
                url = http_url(guard.http, "/onion2")
                request = orjson.dumps({"method": "info", "params": {}})
                for body in (
                    cells.build_oneshot(path, request)[0],
                    cells.build_create(path)[0],
                ):
                    async with session.post(url, data=body) as first:
                        assert first.status == 200
                    async with session.post(url, data=body) as again:
                        assert again.status == 502
                create, pending = cells.build_create(path)
                async with session.post(url, data=create) as answer:
                    circuit = cells.Circuit.finish(pending, await answer.read())
                data, _ = circuit.seal(request)
                statuses = []
                for _ in range(2):
                    async with session.post(url, data=data) as answer:
                        statuses.append(answer.status)
                assert statuses == [200, 502]
                # An unknown circuit is said so, for the client to build another.
                forged = data[:1] + bytes(16) + data[17:]
                async with session.post(url, data=forged) as answer:
                    assert answer.status == 410
        finally:
            await stop_network(nodes)

    run(main())


def test_a_tagged_cell_never_reaches_the_destination(tmp_path: Path) -> None:
    async def main() -> None:
        _, nodes = await _network(tmp_path)
        try:
            async with NetworkClient(directory_of(nodes[0]), attempts=1) as client:
                destination = client.nodes[-1]
                guard, relay = client.choose_path(destination)
                by_key = {n.peer_info.x25519: n for n in nodes}
                guard_node = by_key[guard.x25519]
                pool = guard_node.router.pool
                honest = pool.request

                async def tagging(*args: Any) -> bytes:
                    address, x25519, body, timeout = args
                    flipped = bytearray(body)
                    flipped[len(flipped) // 2] ^= 0x10
                    return await honest(address, x25519, bytes(flipped), timeout)

                pool.request = tagging  # type: ignore[method-assign,assignment]
                path = [guard.x25519, relay.x25519, destination.x25519]
                body, _ = cells.build_oneshot(path, orjson.dumps({"method": "info", "params": {}}))
                session = client._session
                assert session is not None
                url = http_url(guard.http, "/onion2")
                async with session.post(url, data=body) as answer:
                    assert answer.status == 502
                assert by_key[relay.x25519].router.counts["undecryptable"] == 1
                assert by_key[destination.x25519].router.counts["delivered"] == 0
        finally:
            await stop_network(nodes)

    run(main())


def test_a_node_restart_drops_its_circuits_and_the_client_builds_another(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        authorities, nodes = await _network(tmp_path)
        try:
            async with NetworkClient(directory_of(nodes[0])) as client:
                guards = {g.x25519 for g in client.guards}
                destination = next(p for p in client.nodes if p.x25519 not in guards)
                assert (await client.request(destination, "info", {}))[0] == 200
                for role in ("guard", "relay"):
                    circuit = client._circuits[destination.x25519]
                    gone = circuit.guard if role == "guard" else circuit.relay
                    i = next(i for i, n in enumerate(nodes) if n.peer_info.x25519 == gone.x25519)
                    await nodes[i].stop()
                    nodes[i] = Node(nodes[i].config)  # the same keys, data and ports
                    await nodes[i].start()
                    authorities.issue(nodes)
                    assert len(nodes[i].router.circuits) == 0
                    status, _ = await client.request(destination, "info", {})
                    assert status == 200
                    assert client._circuits[destination.x25519] is not circuit
                # At least one new circuit per restart (more if a path failed while the other
                # nodes' links to the restarted one were coming back).
                assert client.circuits_opened >= 3
        finally:
            await stop_network(nodes)

    run(main())


def test_circuits_past_a_nodes_caps_are_refused_and_its_table_stays_within_them(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        authorities = StubAuthorities(tmp_path / "authorities")
        nodes = await start_network(
            authorities,
            tmp_path,
            4,
            onion=OnionSettings(max_circuits_per_client=5, max_circuits=8),
        )
        try:
            async with NetworkClient(directory_of(nodes[0])) as client:
                session = client._session
                assert session is not None
                guard, others = nodes[0].peer_info, [n.peer_info for n in nodes[1:]]
                url = http_url(guard.http, "/onion2")
                statuses = []
                for i in range(12):  # one client address: five, then refused
                    relay, destination = others[i % 3], others[(i + 1) % 3]
                    path = [guard.x25519, relay.x25519, destination.x25519]
                    async with session.post(url, data=cells.build_create(path)[0]) as answer:
                        statuses.append(answer.status)
                assert statuses == [200] * 5 + [503] * 7
                assert len(nodes[0].router.circuits) == 5
                assert nodes[0].router.counts["circuits_refused"] == 7
                # Each relay and destination holds its ends: all within max_circuits.
                assert all(len(n.router.circuits) <= 8 for n in nodes)
        finally:
            await stop_network(nodes)

    run(main())


def test_the_sizes_docs_protocol_gives_for_a_store_on_a_circuit() -> None:
    """docs/protocol.md, "Sizes of a store on a circuit", from the implementation."""
    request = b"x" * 700
    _, sizes, reply_sizes = _through_circuit(request)
    assert set(sizes) == {1168}
    assert set(reply_sizes) == {1024}
    keys = _keys()
    circuit, _ = _open(keys)
    body, _ = circuit.seal(request)
    assert len(body) == 1185
    assert len(body) - 1 - cells.CLIENT_CIRCUIT_ID_LEN + 1 + cells.LINK_CIRCUIT_ID_LEN == 1177
    create, _ = cells.build_create([k.public for k in keys])
    assert len(create) - 1 == 3891
    assert _core.CELL_CREATE_REPLY_LEN == 3408
    # The largest answer that fits a 1024-byte reply: 980 bytes.
    layer = keys[0].peel_cell(_core.CELL_ONESHOT, cells.build_oneshot([keys[0].public], b"")[0][1:])
    assert len(layer.seal_reply(b"a" * 980)) == 1024
    assert len(layer.seal_reply(b"a" * 981)) == 2048


def _open(keys: list[_core.NodeKey]) -> tuple[cells.Circuit, list[_core.CircuitHop]]:
    path = [k.public for k in keys]
    create, pending = cells.build_create(path)
    layers, cell = [], create[1:]
    for key in keys:
        layer = key.peel_cell(_core.CELL_CREATE, cell)
        layers.append(layer)
        cell = layer.next
    accepted = [layer.accept_circuit() for layer in layers]
    reply: bytes | None = None
    for layer, (_, slot) in zip(reversed(layers), reversed(accepted), strict=True):
        reply = layer.wrap_create_reply(slot, reply)
    assert reply is not None
    circuit = cells.Circuit.finish(pending, bytes(cells.CLIENT_CIRCUIT_ID_LEN) + reply)
    return circuit, [hop for hop, _ in accepted]


class _Layer:
    """What a hostile client can make a destination peel: a cell that authenticates (its sender
    built it) but whose payload region's length prefix runs past the region."""

    next_hop = None
    replay_tag = b"\x07" * 16

    def __init__(self) -> None:
        self.issued_s = int(time.time())

    def content(self) -> bytes:
        raise DecryptionError("decryption failed")

    def seal_reply(self, answer: bytes) -> bytes:
        return answer


class _Key:
    def peel_cell(self, cell_type: int, cell: bytes) -> _Layer:
        return _Layer()


def test_malformed_content_in_a_cell_that_opens_gets_a_400_answer(tmp_path: Path) -> None:
    async def main() -> None:
        _, nodes = await _network(tmp_path, 3)
        try:
            router = nodes[0].router
            router._node_key = _Key()  # type: ignore[assignment]
            body = bytes([cells.FRAME_ONESHOT]) + b"\x00" * _core.CELL_ONESHOT_HEADER
            answer = await router.handle_v2(body, 5.0, "a client")
            assert orjson.loads(answer) == {"status": 400, "body": "malformed cell content"}
            assert router.counts["malformed_content"] == 1
        finally:
            await stop_network(nodes)

    run(main())


def test_garbage_gets_the_answer_a_bad_cell_gets(tmp_path: Path) -> None:
    async def main() -> None:
        _, nodes = await _network(tmp_path, 3)
        try:
            async with NetworkClient(directory_of(nodes[0])) as client:
                session = client._session
                assert session is not None
                url = http_url(nodes[0].peer_info.http, "/onion2")
                bodies = [
                    b"",
                    b"\x00",
                    b"\xc4" + bytes(2000),
                    bytes([cells.FRAME_ONESHOT]),
                    bytes([cells.FRAME_ONESHOT]) + bytes(5000),
                    bytes([cells.FRAME_CREATE]) + bytes(_core.CELL_CREATE_HEADER),
                    bytes([cells.FRAME_CREATE]) + bytes(10),
                    bytes([cells.FRAME_DATA]) + bytes(3),
                ]
                answers = []
                for body in bodies:
                    async with session.post(url, data=body) as answer:
                        answers.append((answer.status, await answer.read()))
            assert {status for status, _ in answers} <= {502, 410}
            assert len({content for status, content in answers if status == 502}) == 1
            # A data cell names a circuit first: too short to name one, it names none held.
            assert [status for status, _ in answers][-1] == 410
        finally:
            await stop_network(nodes)

    run(main())


def test_a_peer_node_sending_garbage_or_forged_answers_gets_a_failure_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """What another node sends on a link is as hostile as what a client sends: v2 frames too short
    to name a circuit or hold a cell, unknown circuits, and a next hop whose answer to a create is
    not a create reply."""

    async def main() -> None:
        _, nodes = await _network(tmp_path, 3)
        try:
            router = nodes[0].router
            peer = nodes[1].peer_info.ed25519
            bodies = [
                bytes([cells.FRAME_ONESHOT]),
                bytes([cells.FRAME_CREATE]) + bytes(3),
                bytes([cells.FRAME_CREATE]) + bytes(cells.LINK_CIRCUIT_ID_LEN + 10),
                bytes([cells.FRAME_CREATE, *bytes(8)]) + bytes(_core.CELL_CREATE_HEADER),
                bytes([cells.FRAME_DATA]) + bytes(2),
                bytes([cells.FRAME_DATA]) + bytes(8 + 1168),
            ]
            for body in bodies:
                with pytest.raises(HopFailed):
                    await router.handle_from_peer(peer, body)
            assert len(router.circuits) == 0

            # A next hop that answers a create with anything but a create reply.
            async def lying(*args: Any) -> bytes:
                return b"not a create reply"

            router.pool.request = lying  # type: ignore[method-assign,assignment]
            path = [n.peer_info.x25519 for n in nodes]
            create = cells.build_create(path)[0]
            with pytest.raises(HopFailed):
                await router.handle_v2(create, 5.0, "a client")
            assert router.counts["circuits_opened"] == 0
            assert len(router.circuits) == 0
        finally:
            await stop_network(nodes)

    run(main())
