"""Message hashes and cursors (``veil.protocol.hashes``): the docstring's example, round trips,
and one text form per value."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.errors import InvalidInputError
from veil.protocol.hashes import (
    CURSOR_LEN,
    cursor_decode,
    cursor_encode,
    hash_b64,
    hash_from_b64,
    message_hash,
)

DIGEST = st.binary(min_size=32, max_size=32)


def test_the_documented_example_holds() -> None:
    assert hash_b64(bytes(32)) == "A" * 43
    assert cursor_encode(1, bytes(32)) == "AAAAAAAAAAE" + "A" * 43


def test_the_message_hash_is_blake2b_of_account_namespace_and_data() -> None:
    account = b"\x05" + bytes(range(32))
    expected = hashlib.blake2b(
        account + (-2).to_bytes(2, "big", signed=True) + b"hi", digest_size=32
    )
    assert message_hash(account, -2, b"hi") == expected.digest()


@given(DIGEST)
def test_a_hash_survives_its_text_form(digest: bytes) -> None:
    assert hash_from_b64(hash_b64(digest)) == digest


@given(st.integers(0, 2**64 - 1), DIGEST)
def test_a_cursor_survives_its_text_form(timestamp_ms: int, digest: bytes) -> None:
    raw = cursor_decode(cursor_encode(timestamp_ms, digest))
    assert len(raw) == CURSOR_LEN
    assert raw == timestamp_ms.to_bytes(8, "big") + digest


@pytest.mark.parametrize("text", ["", "A" * 42, "A" * 44, "A" * 42 + "B", "A" * 42 + "!", 7])
def test_a_hash_has_one_text_form(text: object) -> None:
    with pytest.raises(InvalidInputError):
        hash_from_b64(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "A" * 53, "A" * 53 + "B", "A" * 53 + "+", None])
def test_a_cursor_has_one_text_form(text: object) -> None:
    with pytest.raises(InvalidInputError):
        cursor_decode(text)  # type: ignore[arg-type]
