"""Hostile bytes at the v2 and attachment parsers a client runs on what the network gives it: a
prekey bundle read from a peer's swarm, an envelope in an inbox, message content with manifests.
Whatever the bytes, each answers with its one typed error (or a valid result), never another
exception."""

from __future__ import annotations

import contextlib

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from veil import _core
from veil.crypto import decrypt_v2, encrypt_v2
from veil.errors import DecryptionError
from veil.identity import Identity
from veil.protocol.attachments import make_manifest
from veil.protocol.content import Content, ContentError, decode_content, encode_content
from veil.protocol.prekeys import Prekey, PrekeyError, key_id, open_bundle, sign_bundle

BOB = Identity.from_seed(bytes(range(32)))
ALICE = Identity.from_seed(bytes(range(1, 33)))
PUBLIC, SECRET = _core.hybrid_keypair(bytes(32))
SECRETS = [(key_id(PUBLIC), SECRET)]
ENVELOPE = encrypt_v2(ALICE, BOB.session_id, [(key_id(PUBLIC), PUBLIC)], b"padded content")
BUNDLE = sign_bundle(BOB.seed, [Prekey("00" * 8, PUBLIC, 1_700_000_000_000)])
ACCOUNT = BOB.x25519_public_key
MANIFEST = make_manifest(bytes(32), b"hello", "a.txt", "text/plain")
CONTENT = encode_content(Content.text("hi", 1, attachments=(MANIFEST,)))


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] ^= value or 1
    return bytes(out[:cut] if cut is not None else out)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(EDITS, st.none() | st.integers(0, len(ENVELOPE)))
def test_a_damaged_envelope_is_only_ever_the_decryption_error(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    damaged = _mutate(ENVELOPE, edits, cut)
    try:
        plaintext, sender = decrypt_v2(BOB, damaged, SECRETS)
    except DecryptionError:
        return
    assert (plaintext, sender) == (b"padded content", ALICE.session_id)  # an edit undone


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_after_the_magic_are_the_decryption_error(tail: bytes) -> None:
    try:
        decrypt_v2(BOB, b"VEIL\x02" + tail, SECRETS)
    except DecryptionError:
        return
    raise AssertionError("random bytes opened")


@settings(max_examples=200, deadline=None)
@given(EDITS, st.none() | st.integers(0, len(BUNDLE)))
def test_a_damaged_bundle_is_only_ever_the_prekey_error(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    damaged = _mutate(BUNDLE, edits, cut)
    try:
        bundle = open_bundle(damaged, ACCOUNT)
    except PrekeyError:
        return
    assert bundle.keys[0].public == PUBLIC  # an edit that msgpack or the signature ignores


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.binary(max_size=40)
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_msgpack_as_a_bundle_or_a_manifest_list_is_a_typed_error(value: object) -> None:
    packed = msgpack.packb(value)
    with contextlib.suppress(PrekeyError):
        open_bundle(packed, ACCOUNT)
    fields = {"v": 1, "id": bytes(16), "kind": "text", "sent_ms": 1, "body": "", "att": value}
    try:
        decode_content(msgpack.packb(fields) + b"\x80")
    except ContentError:
        return


@settings(max_examples=200, deadline=None)
@given(EDITS)
def test_damaged_content_with_a_manifest_is_the_content_error_or_reads(
    edits: list[tuple[int, int]],
) -> None:
    damaged = _mutate(CONTENT, edits, None)
    try:
        decode_content(damaged)
    except ContentError:
        return
