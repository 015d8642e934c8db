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


# Vectors computed with hashlib.blake2b (digest_size=32) over the bytes spelled out in each case.
HASH_VECTORS = [
    # account ‖ "-2" ‖ "hi"
    (-2, b"hi", "07f1ac783b4e4b29e743ea7fc445037f123dba534927e15940d0689723ca34b6"),
    # account ‖ "hi": namespace 0 adds nothing
    (0, b"hi", "75ac0637b7d80e3742ee79fe136b9e7006426c8eeca205964788b846a0a3a609"),
    # account ‖ "12345" ‖ "hello"
    (12345, b"hello", "9892af20a48f5f218e1a5bc4d12ff31d108fc139bc7746d1851e2ceeb816306e"),
]


@pytest.mark.parametrize(("namespace", "data", "expected"), HASH_VECTORS)
def test_the_message_hash_is_blake2b_of_account_decimal_namespace_and_data(
    namespace: int, data: bytes, expected: str
) -> None:
    """Session's message hash: BLAKE2b-256(account (33) ‖ namespace in decimal text, empty for
    namespace 0 ‖ data)."""
    account = b"\x05" + bytes(range(32))
    text = b"" if namespace == 0 else str(namespace).encode("ascii")
    independent = hashlib.blake2b(account + text + data, digest_size=32).digest()
    assert independent.hex() == expected
    assert message_hash(account, namespace, data) == independent


@given(st.integers(-(2**15), 2**15 - 1), st.binary(max_size=64))
def test_the_message_hash_matches_hashlib_for_any_namespace_and_data(
    namespace: int, data: bytes
) -> None:
    account = b"\x03" + bytes(range(1, 33))
    text = b"" if namespace == 0 else str(namespace).encode("ascii")
    expected = hashlib.blake2b(account + text + data, digest_size=32).digest()
    assert message_hash(account, namespace, data) == expected


def test_the_decimal_namespace_makes_the_documented_collisions() -> None:
    """docs/rpc.md, "Message hashes": namespace 1 with "2x" hashes as namespace 12 with "x", and
    namespace 0 as any namespace whose digits start the data."""
    account = b"\x05" + bytes(32)
    assert message_hash(account, 1, b"2x") == message_hash(account, 12, b"x")
    assert message_hash(account, 0, b"-5x") == message_hash(account, -5, b"x")
    assert message_hash(account, 1, b"x") != message_hash(account, 2, b"x")


@given(DIGEST)
def test_a_hash_survives_its_text_form(digest: bytes) -> None:
    assert hash_from_b64(hash_b64(digest)) == digest


@given(st.integers(0, 2**64 - 1), DIGEST)
def test_a_cursor_survives_its_text_form(arrival_us: int, digest: bytes) -> None:
    raw = cursor_decode(cursor_encode(arrival_us, digest))
    assert len(raw) == CURSOR_LEN
    assert raw == arrival_us.to_bytes(8, "big") + digest


@pytest.mark.parametrize("text", ["", "A" * 42, "A" * 44, "A" * 42 + "B", "A" * 42 + "!", 7])
def test_a_hash_has_one_text_form(text: object) -> None:
    with pytest.raises(InvalidInputError):
        hash_from_b64(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "A" * 53, "A" * 53 + "B", "A" * 53 + "+", None])
def test_a_cursor_has_one_text_form(text: object) -> None:
    with pytest.raises(InvalidInputError):
        cursor_decode(text)  # type: ignore[arg-type]
