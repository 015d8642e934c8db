"""Frames through a node link: the Rust codec (``LinkCipher.seal_frames`` / ``open_frames``: frames
encoded and split in the same call that seals or opens the records) against the Python one it
replaced (``veil.protocol.link.encode_frame`` + ``b"".join`` + ``seal``, then ``open`` +
``FrameDecoder.feed``), in the same run.

One operation is what a forwarding node does per flush under load: 64 REQUEST frames of a 1,225-byte
body (hops ‖ a 1,224-byte layer) sealed on one end and opened and split on the other; the figure is
per frame. ``--benchmark-enable`` times both; the default run only checks that they agree.

```sh
.venv/bin/python -m pytest bench/bench_link_frames.py --benchmark-enable -p no:cacheprovider
```
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from veil import _core
from veil.clock import now_ms
from veil.protocol.link import FrameDecoder, FrameKind, encode_frame

FRAMES = 64
BODY = 1 + 1224
MAX_FRAME = 1 << 24

Benchmark = Any


def _pair() -> tuple[_core.LinkCipher, _core.LinkCipher]:
    caller, callee = _core.NodeKey(os.urandom(32)), _core.NodeKey(os.urandom(32))
    initiator = caller.link_initiate(callee.public, now_ms())
    _, _, answer, accepter = callee.link_respond(initiator.message)
    return initiator.finish(answer), accepter


def _frames() -> list[tuple[int, int, bytes]]:
    return [(int(FrameKind.REQUEST), stream, os.urandom(BODY)) for stream in range(FRAMES)]


def python_round(
    sender: _core.LinkCipher, receiver: _core.LinkCipher, frames: list[tuple[int, int, bytes]]
) -> list[tuple[int, int, bytes]]:
    decoder = FrameDecoder(MAX_FRAME)
    sealed = sender.seal(b"".join(encode_frame(FrameKind(k), s, b) for k, s, b in frames))
    return [(int(f.kind), f.stream, f.body) for f in decoder.feed(receiver.open(sealed))]


def rust_round(
    sender: _core.LinkCipher, receiver: _core.LinkCipher, frames: list[tuple[int, int, bytes]]
) -> list[tuple[int, int, bytes]]:
    return receiver.open_frames(sender.seal_frames(frames), MAX_FRAME)


CANDIDATES: dict[str, Callable[..., list[tuple[int, int, bytes]]]] = {
    "python": python_round,
    "rust": rust_round,
}


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_both_codecs_deliver_the_same_frames(name: str) -> None:
    sender, receiver = _pair()
    frames = _frames()
    assert CANDIDATES[name](sender, receiver, frames) == frames


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_frames_per_flush(benchmark: Benchmark, name: str) -> None:
    benchmark.group = "link-frames (64 x 1,225 B per round)"
    sender, receiver = _pair()
    frames = _frames()
    round_trip = CANDIDATES[name]
    result = benchmark.pedantic(
        round_trip, args=(sender, receiver, frames), rounds=2_000, warmup_rounds=50
    )
    assert result == frames
