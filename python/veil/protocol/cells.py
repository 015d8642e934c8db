"""Onion v2 as a client builds it: one-shot cells, circuits and their data cells (sans-IO).

The cryptography is the core's (:mod:`veil._core`, ``rust/veil-core/src/cells.rs``; the format is
``docs/protocol.md``, "Onion v2"). This module adds what the cells carry and how they travel, and
is the one builder that the client (:mod:`veil.client.network`), the load test and the benchmarks
share. The caller owns the transport.

What a one-shot or data cell delivers to its destination (its content)::

    content = target_len (2, big-endian) ‖ target (UTF-8) ‖ request
    target  = empty for the node's storage RPC, else the URL of an external service

The answer is the JSON of :func:`veil.protocol.onion_request.parse_answer`.

Each layer of a one-shot or create cell carries its own issue time (whole seconds): the client's
clock minus a random 0 to ``ISSUE_JITTER_S`` seconds, drawn for each layer on its own, so that two
layers of one cell hold no common value (version 1 put the same millisecond in every layer).

On the wire, client to first hop (``POST /onion2``) and node to node (a link ``REQUEST`` frame)::

    request = type (1: one-shot 0xC1, create 0xC2, data 0xC3) ‖ [circuit id if data] ‖ cell
    circuit id = 16 bytes from the first hop to its client (in the answer to a create), 8 bytes
                 on a node link (chosen by the node that opens the circuit on that link)
    answer to a create = [circuit id (16), to the client only] ‖ the create reply
    answer otherwise   = the reply
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from veil import _core
from veil.errors import InvalidInputError
from veil.protocol.onion_request import parse_answer

__all__ = [
    "CLIENT_CIRCUIT_ID_LEN",
    "FRAME_CREATE",
    "FRAME_DATA",
    "FRAME_ONESHOT",
    "ISSUE_JITTER_S",
    "LINK_CIRCUIT_ID_LEN",
    "Circuit",
    "build_create",
    "build_oneshot",
    "decode_content",
    "encode_content",
    "issue_times",
    "open_answer",
]

FRAME_ONESHOT = 0xC1
FRAME_CREATE = 0xC2
FRAME_DATA = 0xC3
CELL_TYPES = {
    FRAME_ONESHOT: _core.CELL_ONESHOT,
    FRAME_CREATE: _core.CELL_CREATE,
    FRAME_DATA: _core.CELL_DATA,
}
CLIENT_CIRCUIT_ID_LEN = 16
LINK_CIRCUIT_ID_LEN = 8
ISSUE_JITTER_S = 20
_TARGET_LEN = struct.Struct(">H")

_system_random = random.SystemRandom()


def encode_content(request: bytes, target: str = "") -> bytes:
    """What a cell delivers: ``target_len ‖ target ‖ request``."""
    encoded = target.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise InvalidInputError("the target URL is longer than 65,535 bytes")
    return _TARGET_LEN.pack(len(encoded)) + encoded + request


def decode_content(content: bytes) -> tuple[str, bytes]:
    """(target, request); raise :class:`InvalidInputError` if malformed."""
    if len(content) < _TARGET_LEN.size:
        raise InvalidInputError("cell content is shorter than its target length")
    (length,) = _TARGET_LEN.unpack_from(content)
    end = _TARGET_LEN.size + length
    if end > len(content):
        raise InvalidInputError("cell content is shorter than its target")
    try:
        target = content[_TARGET_LEN.size : end].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("cell target is not UTF-8") from None
    return target, content[end:]


def issue_times(hops: int, now_s: int | None = None, rng: random.Random | None = None) -> list[int]:
    """One issue time per layer, each the clock minus its own random jitter."""
    now = int(time.time()) if now_s is None else now_s
    draw = rng or _system_random
    return [now - draw.randint(0, ISSUE_JITTER_S) for _ in range(hops)]


def build_oneshot(
    path: list[bytes], request: bytes, *, target: str = ""
) -> tuple[bytes, _core.CellReply]:
    """``POST /onion2`` body carrying ``request`` along ``path`` (X25519 keys, first hop first)
    without a circuit, and what opens the reply."""
    cell, reply = _core.build_oneshot_cell(
        path, encode_content(request, target), issue_times(len(path))
    )
    return bytes([FRAME_ONESHOT]) + cell, reply


def build_create(path: list[bytes]) -> tuple[bytes, _core.PendingCircuit]:
    """``POST /onion2`` body that opens a circuit along ``path``, and what finishes it."""
    cell, pending = _core.build_create_cell(path, issue_times(len(path)))
    return bytes([FRAME_CREATE]) + cell, pending


@dataclass
class Circuit:
    """A client's open circuit: the first hop's circuit id and the core's keys."""

    circuit_id: bytes
    keys: _core.ClientCircuit
    opened_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    requests: int = 0

    @classmethod
    def finish(cls, pending: _core.PendingCircuit, answer: bytes) -> Circuit:
        """The circuit from the first hop's answer to a create; raise
        :class:`~veil.errors.DecryptionError` (or :class:`InvalidInputError`) if it is not one."""
        if len(answer) != CLIENT_CIRCUIT_ID_LEN + _core.CELL_CREATE_REPLY_LEN:
            raise InvalidInputError("the answer to a create has the wrong size")
        keys = pending.finish(answer[CLIENT_CIRCUIT_ID_LEN:])
        return cls(answer[:CLIENT_CIRCUIT_ID_LEN], keys)

    def seal(self, request: bytes, *, target: str = "") -> tuple[bytes, _core.CellReply]:
        """``POST /onion2`` body carrying ``request`` on this circuit, and what opens the reply."""
        cell, reply = self.keys.seal(encode_content(request, target))
        self.requests += 1
        self.last_used = time.monotonic()
        return bytes([FRAME_DATA]) + self.circuit_id + cell, reply


def open_answer(reply: _core.CellReply, body: bytes, *, external: bool) -> tuple[int, Any]:
    """The destination's answer (as :func:`veil.protocol.onion_request.open_reply`)."""
    return parse_answer(reply.open(body), external=external)
