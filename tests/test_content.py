"""Message content v1: round trips, padding buckets, and refusal of malformed content."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.protocol.content import (
    BUCKETS,
    Content,
    ContentError,
    decode_content,
    encode_content,
    pad,
    unpad,
)


@given(st.text(max_size=3000), st.integers(0, 2**62), st.none() | st.text(max_size=40))
def test_content_round_trips(body: str, sent_ms: int, name: str | None) -> None:
    content = Content.text(body, sent_ms, name=name)
    assert decode_content(encode_content(content)) == content


@given(st.binary(max_size=70_000))
def test_padding_rounds_up_to_a_bucket_and_comes_off_exactly(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) in BUCKETS or len(padded) % 65536 == 0
    assert len(padded) > len(data)
    assert unpad(padded) == data


def test_messages_of_similar_length_look_alike() -> None:
    sizes = {len(encode_content(Content.text("x" * n, 0))) for n in range(1, 180)}
    assert sizes == {256}


@pytest.mark.parametrize(
    "padded",
    [
        b"",
        bytes(64),
        b"no marker" + bytes(10),
        pad(b"\xc1"),  # not msgpack
        pad(msgpack.packb({"v": 2, "id": bytes(16), "sent_ms": 0, "body": ""})),
        pad(msgpack.packb({"v": 1, "id": bytes(15), "sent_ms": 0, "body": ""})),
        pad(msgpack.packb({"v": 1, "id": bytes(16), "sent_ms": "0", "body": ""})),
        pad(msgpack.packb([1, 2, 3])),
        # a group invitation or removal notice that names no group, or a group that is no map
        pad(
            msgpack.packb(
                {"v": 1, "id": bytes(16), "sent_ms": 0, "body": "", "kind": "group_invite"}
            )
        ),
        pad(
            msgpack.packb(
                {"v": 1, "id": bytes(16), "sent_ms": 0, "body": "", "kind": "group_removed"}
            )
        ),
        pad(
            msgpack.packb(
                {
                    "v": 1,
                    "id": bytes(16),
                    "sent_ms": 0,
                    "body": "",
                    "kind": "group_invite",
                    "group": [1],
                }
            )
        ),
    ],
)
def test_malformed_content_is_a_content_error(padded: bytes) -> None:
    with pytest.raises(ContentError):
        decode_content(padded)


def test_oversized_content_is_refused_before_sending() -> None:
    with pytest.raises(ContentError):
        encode_content(Content.text("x" * 70_000, 0))


def test_group_fields_round_trip() -> None:
    content = Content.control("group_invite", 5, group={"pk": bytes(32), "name": "g"})
    assert decode_content(encode_content(content)) == content
    leave = Content.control("leave", 6)
    assert decode_content(encode_content(leave)).kind == "leave"
