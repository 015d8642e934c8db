"""Node links, version 2: what two service nodes exchange over one persistent TCP connection.

The connection opens with a Noise_IK handshake keyed by the nodes' identity keys, after which every
byte is an encrypted record (``veil._core.NodeKey.link_initiate`` / ``link_respond`` and
``LinkCipher``; ``docs/protocol.md``, "Node links, version 2"):

```
handshake = 00 68 ‖ msg1 (104 bytes)  caller → accepter: e, es, s, ss (+ timestamp payload)
            00 30 ‖ msg2 (48 bytes)   accepter → caller: e, ee, se (+ empty payload)
record    = length (2, big-endian) ‖ ChaCha20-Poly1305 of (flags (1) ‖ data), ≤ 65,535 bytes
```

The records' data, in order, is a stream of the frames below. A link carries many requests at
once; each frame names the stream it belongs to, so answers may come back in any order. This module
is the frames' vocabulary (kinds, failure codes) and their sans-IO Python codec:
:class:`FrameDecoder` turns the records' data into :class:`Frame` objects and :func:`encode_frame`
turns a frame into bytes. The node itself splits and encodes frames in Rust, in the same call that
opens or seals the records (``LinkCipher.open_frames`` / ``seal_frames``: measured 3.6 to 4.2
times faster, ``bench/bench_link_frames.py``); both follow the format below and are tested against
each other.

```
frame     = length (4, big-endian: the bytes that follow) ‖ kind (1) ‖ stream (4, big-endian) ‖ body
kind      = 0x01 REQUEST   body: hops (1) ‖ an onion layer for the receiving node
            0x02 RESPONSE  body: the answer, relayed unchanged
            0x03 FAILURE   body: one byte, a FailureCode
            0x04 PING      body: empty          0x05 PONG  body: empty
            0x06 RPC       body: a node-to-node request (veil.protocol.node_rpc), answered by
                           RESPONSE or FAILURE
```

Example: a REQUEST on stream 7 carrying the three bytes ``ab c`` … is
``00 00 00 08 | 01 | 00 00 00 07 | 61 62 63`` (length 8 = kind 1 + stream 4 + body 3).

``hops`` counts the nodes the request has passed through before the receiver (1 when the sender is
the first hop); a node refuses a layer whose count exceeds its ``max_hops``, so a crafted onion that
loops between nodes stops after a few hops.

A frame whose length is below 5, above the decoder's ``max_frame`` or whose kind is unknown is a
:class:`LinkProtocolError`; the link is then closed (the peer is broken or hostile). The length is
checked as soon as its 4 bytes arrive, so an oversized frame is refused before it is buffered.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from veil.errors import VeilError

__all__ = [
    "HANDSHAKE_INIT_LEN",
    "HANDSHAKE_RESPONSE_LEN",
    "FailureCode",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "LinkProtocolError",
    "encode_frame",
]

_HEADER = struct.Struct(">IBI")  # length, kind, stream
HEADER_LEN = _HEADER.size  # 9
MIN_LENGTH = 5
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


HANDSHAKE_INIT_LEN = 2 + 104
"""The caller's handshake message, length prefix included."""
HANDSHAKE_RESPONSE_LEN = 2 + 48
"""The accepter's handshake message, length prefix included."""


class LinkProtocolError(VeilError):
    """The peer sent bytes that are not a valid frame."""


class FrameKind(enum.IntEnum):
    REQUEST = 0x01
    RESPONSE = 0x02
    FAILURE = 0x03
    PING = 0x04
    PONG = 0x05
    RPC = 0x06


class FailureCode(enum.IntEnum):
    """Why a request failed, as much as the previous hop may know: nothing about where or why."""

    PATH_FAILED = 0x01
    """The request could not be delivered or answered; the client should try another path."""
    OVERLOADED = 0x02
    """The node is shedding load; try again later or elsewhere."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    stream: int
    body: bytes


def encode_frame(kind: FrameKind, stream: int, body: bytes = b"") -> bytes:
    """The bytes of one frame."""
    if not 0 <= stream <= 0xFFFF_FFFF:
        raise ValueError("stream id must fit in 32 bits")
    return _HEADER.pack(MIN_LENGTH + len(body), kind, stream) + body


class FrameDecoder:
    """Accumulates received bytes and yields complete frames, in order."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames (for backpressure)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; return every frame now complete. Raises :class:`LinkProtocolError`."""
        self._buffer += data
        frames: list[Frame] = []
        view = memoryview(self._buffer)
        offset = 0
        try:
            while len(view) - offset >= 4:
                (length,) = struct.unpack_from(">I", view, offset)
                if length < MIN_LENGTH or length > self.max_frame:
                    raise LinkProtocolError(f"frame length {length} is out of range")
                if len(view) - offset >= 5:  # the kind is checked as soon as it is here
                    kind = view[offset + 4]
                    if kind not in _KINDS:
                        raise LinkProtocolError(f"unknown frame kind {kind}")
                end = offset + 4 + length
                if end > len(view):
                    break
                _, kind, stream = _HEADER.unpack_from(view, offset)
                frames.append(
                    Frame(FrameKind(kind), stream, bytes(view[offset + HEADER_LEN : end]))
                )
                offset = end
        finally:
            view.release()
        del self._buffer[:offset]
        return frames


_KINDS = frozenset(int(k) for k in FrameKind)
