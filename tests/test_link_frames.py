"""Node-link frames: round trips under any split of the byte stream, and refusal of bad frames."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from veil import _core
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.protocol.link import (
    Frame,
    FrameDecoder,
    FrameKind,
    LinkProtocolError,
    encode_frame,
)

frames = st.builds(
    Frame,
    kind=st.sampled_from(list(FrameKind)),
    stream=st.integers(0, 0xFFFF_FFFF),
    body=st.binary(max_size=300),
)


def test_the_documented_example_encodes_as_shown() -> None:
    assert encode_frame(FrameKind.REQUEST, 7, b"abc").hex() == "000000080100000007616263"


@given(st.lists(frames, max_size=8), st.data())
def test_frames_survive_any_split_of_the_stream(sent: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f.kind, f.stream, f.body) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    received: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        received += decoder.feed(stream[start:cut])
        start = cut
    assert received == sent
    assert decoder.buffered == 0


def test_an_oversized_frame_is_refused_from_its_length_alone() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(LinkProtocolError):
        decoder.feed((2048).to_bytes(4, "big"))


@pytest.mark.parametrize("length", [0, 1, 4])
def test_a_frame_too_short_to_hold_its_header_is_refused(length: int) -> None:
    with pytest.raises(LinkProtocolError):
        FrameDecoder().feed(length.to_bytes(4, "big") + b"\x01" * 8)


def test_an_unknown_kind_is_refused_before_the_body_arrives() -> None:
    header = (5 + 100).to_bytes(4, "big") + b"\x09" + (1).to_bytes(4, "big")
    with pytest.raises(LinkProtocolError):
        FrameDecoder().feed(header)


def test_a_stream_id_beyond_32_bits_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="32 bits"):
        encode_frame(FrameKind.PING, 1 << 32)


# --- the node's Rust codec against this one ------------------------------------------------------


def _cipher_pair() -> tuple[_core.LinkCipher, _core.LinkCipher]:
    caller, callee = _core.NodeKey(os.urandom(32)), _core.NodeKey(os.urandom(32))
    initiator = caller.link_initiate(callee.public, now_ms())
    _, _, answer, accepter = callee.link_respond(initiator.message)
    return initiator.finish(answer), accepter


@given(st.lists(frames, max_size=8), st.data())
def test_the_rust_codec_reads_and_writes_the_same_frames_as_this_one(
    sent: list[Frame], data: st.DataObject
) -> None:
    sender, receiver = _cipher_pair()
    as_tuples = [(int(f.kind), f.stream, f.body) for f in sent]
    sealed = sender.seal_frames(as_tuples)
    # What seal_frames sealed is exactly what encode_frame writes.
    expected = b"".join(encode_frame(f.kind, f.stream, f.body) for f in sent)
    assert receiver.open(sealed) == expected
    # And open_frames splits any stream of them as FrameDecoder does, whatever the reads.
    sender, receiver = _cipher_pair()
    stream = sender.seal(b"".join(encode_frame(f.kind, f.stream, f.body) for f in sent))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    got: list[tuple[int, int, bytes]] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(receiver.open_frames(stream[start:end], 1 << 20))
    assert got == as_tuples


@given(
    st.binary(min_size=4, max_size=64)
    | st.builds(
        lambda length, kind, rest: length.to_bytes(4, "big") + bytes([kind]) + rest,
        st.integers(0, 5000),
        st.integers(0, 255),
        st.binary(max_size=8),
    )
)
@example(b"\x00\x00\x00\x05\x07")  # a valid length, an unknown kind, nothing after it
def test_the_rust_codec_refuses_what_this_one_refuses(prefix: bytes) -> None:
    sender, receiver = _cipher_pair()
    try:
        FrameDecoder(4096).feed(prefix)
        python_refuses = False
    except LinkProtocolError:
        python_refuses = True
    try:
        receiver.open_frames(sender.seal(prefix), 4096)
        rust_refuses = False
    except InvalidInputError:
        rust_refuses = True
    assert rust_refuses == python_refuses
