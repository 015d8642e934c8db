"""Node-link frames: round trips under any split of the byte stream, and refusal of bad frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
