"""The node's layer peeler (``veil.node.onion.LayerPeeler``): layers that arrive in one turn of the
event loop are peeled as one batch, a large batch on the worker thread, each caller getting its
own layer's result."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from veil import _core
from veil.crypto import PeeledLayer, build_onion
from veil.node.links import HopFailed
from veil.node.onion import LayerPeeler
from veil.node.threads import PEELER


class RecordingKey:
    """A node key that notes on which thread, by its kernel name, each batch was peeled."""

    def __init__(self) -> None:
        self.secret = os.urandom(32)
        self.public = _core.x25519_public_key(self.secret)
        self._key = _core.NodeKey(self.secret)
        self.batches: list[tuple[str, int]] = []

    def peel(self, onion: bytes) -> PeeledLayer:
        self.batches.append((_thread_name(), 1))
        return self._key.peel(onion)

    def peel_batch(self, onions: list[bytes]) -> list[Any]:
        self.batches.append((_thread_name(), len(onions)))
        return self._key.peel_batch(onions)


def _thread_name() -> str:
    return Path("/proc/thread-self/comm").read_text("ascii").strip()


def _onion(to: bytes, payload: bytes) -> bytes:
    return build_onion([to], payload)[0]


@pytest.mark.parametrize("layers", [1, 3, 8, 20])
def test_layers_of_one_turn_are_peeled_together_a_large_batch_on_the_named_worker(
    layers: int,
) -> None:
    key = RecordingKey()
    payloads = [f"layer {i}".encode() for i in range(layers)]
    onions = [_onion(key.public, p) for p in payloads]
    onions[layers // 2] = onions[layers // 2][:-1] + bytes([onions[layers // 2][-1] ^ 1])

    async def main() -> list[Any]:
        peeler = LayerPeeler(cast(_core.NodeKey, key), batch_max=64, worker_min=8)
        try:
            return await asyncio.gather(*(peeler.peel(o) for o in onions), return_exceptions=True)
        finally:
            peeler.close()

    results = asyncio.run(main())
    loop_thread = _thread_name()
    # each caller got its own layer; the spoiled one failed alone, as a hop failure
    for i, (result, payload) in enumerate(zip(results, payloads, strict=True)):
        if i == layers // 2:
            assert isinstance(result, HopFailed)
        else:
            assert isinstance(result, PeeledLayer)
            assert result.payload == payload
    # one batch, on the worker (named so for `top -H` and `veil bench network`) if it is large
    (where, size), *rest = key.batches
    assert (size, rest) == (layers, [])
    assert where == (PEELER if layers >= 8 else loop_thread)
    assert threading.current_thread() is threading.main_thread()
