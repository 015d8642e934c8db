"""pytest-benchmark suite of onion v2's per-hop cryptography against version 1's, in one run
(``docs/performance.md``, "Onion v2").

Groups (each timed per call of ``CALL`` operations on this process's one thread):

- ``hop-1KiB``: what one hop pays to pass a request of 1 KiB on: version 1's peel (a fresh X25519
  per layer: ``NodeKey.peel``), onion v2's one-shot peel (X25519 as well, fixed-size cells:
  ``NodeKey.peel_cell``), a data cell on a circuit (symmetric only: ``CircuitHop.peel``, its replay
  window included), and the floor: XChaCha20-Poly1305 over the same 1 KiB.
- ``circuit-setup``: a node's side of one hop of a circuit (peel the create cell, then
  ``accept_circuit``: X25519, ML-KEM-768 encapsulation, a second X25519) against a one-shot peel
  (X25519 alone); the client's side of a three-hop circuit (build the create cell, open the three
  answers) against building a three-hop one-shot cell.

Benchmarks are disabled by default (``--benchmark-disable``): each then runs once, as a check.
Every call checks its results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from benchkit import Benchmark
from veil import _core
from veil.protocol import cells
from veil.protocol.onion_request import build_request

CALL = 128
SIZE = 1024
ROUNDS = 15


def _keys(n: int) -> list[_core.NodeKey]:
    return [_core.NodeKey(_core.x25519_generate_secret()) for _ in range(n)]


def _circuit(keys: list[_core.NodeKey]) -> tuple[cells.Circuit, list[_core.CircuitHop]]:
    """A circuit through ``keys``, opened in process."""
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


def _run(
    benchmark: Benchmark,
    setup: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]],
    target: Callable[..., int],
) -> None:
    done = benchmark.pedantic(target, setup=setup, rounds=ROUNDS)
    assert done == CALL
    if benchmark.stats is not None:
        benchmark.extra_info["per_op_median_us"] = benchmark.stats.stats.median / CALL * 1e6


# --- hop-1KiB ---------------------------------------------------------------------------------


def test_hop_v1_peel(benchmark: Benchmark) -> None:
    benchmark.group = "hop-1KiB"
    node, nxt = _keys(2)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        layers = [
            build_request([node.public, nxt.public], os.urandom(SIZE))[0] for _ in range(CALL)
        ]
        return (layers,), {}

    def peel(layers: list[bytes]) -> int:
        return sum(node.peel(layer).next_hop == nxt.public for layer in layers)

    _run(benchmark, setup, peel)


def test_hop_oneshot_peel(benchmark: Benchmark) -> None:
    benchmark.group = "hop-1KiB"
    keys = _keys(3)
    path = [k.public for k in keys]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ([cells.build_oneshot(path, os.urandom(SIZE - 16))[0][1:] for _ in range(CALL)],), {}

    def peel(layers: list[bytes]) -> int:
        return sum(
            keys[0].peel_cell(_core.CELL_ONESHOT, layer).next_hop == path[1] for layer in layers
        )

    _run(benchmark, setup, peel)


def test_hop_circuit_peel(benchmark: Benchmark) -> None:
    benchmark.group = "hop-1KiB"
    keys = _keys(3)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        circuit, hops = _circuit(keys)  # a fresh circuit: its cells are new to its first hop
        skip = 1 + cells.CLIENT_CIRCUIT_ID_LEN
        return (hops[0], [circuit.seal(os.urandom(SIZE - 16))[0][skip:] for _ in range(CALL)]), {}

    def peel(hop: _core.CircuitHop, layers: list[bytes]) -> int:
        return sum(len(hop.peel(layer).next) == len(layer) for layer in layers)

    _run(benchmark, setup, peel)


def test_hop_floor(benchmark: Benchmark) -> None:
    benchmark.group = "hop-1KiB"
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = _core.xchacha20poly1305_encrypt(key, nonce, os.urandom(SIZE), b"")

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {}

    def decrypt() -> int:
        return sum(
            len(_core.xchacha20poly1305_decrypt(key, nonce, sealed, b"")) == SIZE
            for _ in range(CALL)
        )

    _run(benchmark, setup, decrypt)


# --- circuit-setup ---------------------------------------------------------------------------


def test_setup_node_hop_create(benchmark: Benchmark) -> None:
    benchmark.group = "circuit-setup"
    keys = _keys(3)
    path = [k.public for k in keys]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ([cells.build_create(path)[0][1:] for _ in range(CALL)],), {}

    def accept(layers: list[bytes]) -> int:
        done = 0
        for layer in layers:
            _, slot = keys[0].peel_cell(_core.CELL_CREATE, layer).accept_circuit()
            done += len(slot) > 0
        return done

    _run(benchmark, setup, accept)


def test_setup_node_hop_oneshot(benchmark: Benchmark) -> None:
    benchmark.group = "circuit-setup"
    keys = _keys(3)
    path = [k.public for k in keys]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ([cells.build_oneshot(path, b"{}")[0][1:] for _ in range(CALL)],), {}

    def peel(layers: list[bytes]) -> int:
        return sum(
            keys[0].peel_cell(_core.CELL_ONESHOT, layer).next_hop == path[1] for layer in layers
        )

    _run(benchmark, setup, peel)


@pytest.mark.parametrize("way", ["circuit", "oneshot"])
def test_setup_client_three_hops(benchmark: Benchmark, way: str) -> None:
    """The client's cryptography for a three-hop circuit (create cell, then the answers; the
    nodes' answers made in the set-up) or a three-hop one-shot cell."""
    benchmark.group = "circuit-setup"
    keys = _keys(3)
    path = [k.public for k in keys]

    def answered() -> tuple[_core.PendingCircuit, bytes]:
        create, pending = cells.build_create(path)
        layers, cell = [], create[1:]
        for key in keys:
            layer = key.peel_cell(_core.CELL_CREATE, cell)
            layers.append(layer)
            cell = layer.next
        reply: bytes | None = None
        for layer in reversed(layers):
            reply = layer.wrap_create_reply(layer.accept_circuit()[1], reply)
        assert reply is not None
        return pending, bytes(cells.CLIENT_CIRCUIT_ID_LEN) + reply

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ([answered() for _ in range(CALL)] if way == "circuit" else [],), {}

    def client(answers: list[tuple[_core.PendingCircuit, bytes]]) -> int:
        if way == "oneshot":
            return sum(len(cells.build_oneshot(path, b"{}")[0]) > 0 for _ in range(CALL))
        done = 0
        for _ in answers:
            # As the client does it: build a create cell, then finish a circuit from its answer
            # (each answer belongs to a create built in the set-up).
            cells.build_create(path)
        for pending, answer in answers:
            done += cells.Circuit.finish(pending, answer).keys.hops == 3
        return done

    _run(benchmark, setup, client)
