"""Errors: wrong lengths and types, limits, and the one opaque DecryptionError."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from veil import _core
from veil.crypto import (
    HopKey,
    PeeledLayer,
    build_onion,
    decrypt_incoming,
    encrypt_for_recipient,
    peel_onion,
    peel_onion_batch,
)
from veil.errors import (
    DecryptionError,
    InputTooLargeError,
    InvalidInputError,
    InvalidKeyError,
    VeilError,
)
from veil.identity import Identity

GOOD_SECRET = _core.x25519_generate_secret()
GOOD_PUBLIC = _core.x25519_public_key(GOOD_SECRET)
GOOD_SEED = bytes(range(100, 132))
GOOD_ED_PUBLIC = _core.ed25519_public_key(GOOD_SEED)
NONCE = bytes(24)

# Each function that takes a key, with the key argument replaced by `k`.
KEY_TAKERS: dict[str, Callable[[Any], object]] = {
    "x25519_public_key": _core.x25519_public_key,
    "x25519.secret": lambda k: _core.x25519(k, GOOD_PUBLIC),
    "x25519.public": lambda k: _core.x25519(GOOD_SECRET, k),
    "ed25519_public_key": _core.ed25519_public_key,
    "ed25519_sign": lambda k: _core.ed25519_sign(k, b"message"),
    "ed25519_verify": lambda k: _core.ed25519_verify(k, b"message", bytes(64)),
    "ed25519_public_key_to_x25519": _core.ed25519_public_key_to_x25519,
    "ed25519_seed_to_x25519": _core.ed25519_seed_to_x25519,
    "xchacha20poly1305_encrypt": lambda k: _core.xchacha20poly1305_encrypt(k, NONCE, b"m"),
    "xchacha20poly1305_decrypt": lambda k: _core.xchacha20poly1305_decrypt(k, NONCE, bytes(17)),
    "sealed_box_seal": lambda k: _core.sealed_box_seal(k, b"m"),
    "sealed_box_open": lambda k: _core.sealed_box_open(k, bytes(64)),
    "session_encrypt.seed": lambda k: _core.session_encrypt(k, GOOD_PUBLIC, b"m"),
    "session_encrypt.public": lambda k: _core.session_encrypt(GOOD_SEED, k, b"m"),
    "session_decrypt.secret": lambda k: _core.session_decrypt(k, GOOD_PUBLIC, bytes(200)),
    "session_decrypt.public": lambda k: _core.session_decrypt(GOOD_SECRET, k, bytes(200)),
    "HopKey.for_client.secret": lambda k: HopKey.for_client(k, GOOD_PUBLIC),
    "HopKey.for_client.public": lambda k: HopKey.for_client(GOOD_SECRET, k),
    "HopKey.for_server.secret": lambda k: HopKey.for_server(k, GOOD_PUBLIC),
    "HopKey.for_server.public": lambda k: HopKey.for_server(GOOD_SECRET, k),
    "build_onion.route": lambda k: build_onion([GOOD_PUBLIC, k], b"payload"),
    "peel_onion": lambda k: peel_onion(k, bytes(200)),
    "peel_onion_batch": lambda k: peel_onion_batch(k, [bytes(200)]),
    "Identity.from_seed": Identity.from_seed,
}

# Recognisable byte patterns, so that a message quoting the key would be caught.
WRONG_LENGTH_KEYS = {
    "0": b"",
    "31": bytes(range(0xA0, 0xA0 + 31)),
    "33": bytes(range(0xC0, 0xC0 + 33)),
}


def _leaks(message: str, key: bytes) -> bool:
    if not key:
        return False
    return any(
        form in message for form in (key.hex(), key.hex().upper(), repr(key), str(list(key)))
    )


@pytest.mark.parametrize("length", sorted(WRONG_LENGTH_KEYS))
@pytest.mark.parametrize("function", sorted(KEY_TAKERS))
def test_a_key_of_the_wrong_length_gives_invalid_key_error_without_echoing_it(
    function: str, length: str
) -> None:
    key = WRONG_LENGTH_KEYS[length]
    with pytest.raises(InvalidKeyError) as raised:
        KEY_TAKERS[function](key)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, VeilError)
    assert not _leaks(str(raised.value), key)
    assert not _leaks(repr(raised.value), key)


@pytest.mark.parametrize("function", sorted(set(KEY_TAKERS) - {"Identity.from_seed"}))
@pytest.mark.parametrize("value", ["a" * 32, None], ids=["str", "None"])
def test_a_key_of_the_wrong_type_gives_type_error(function: str, value: object) -> None:
    with pytest.raises(TypeError):
        KEY_TAKERS[function](value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: _core.blake2b("abc"),  # type: ignore[arg-type]
        lambda: _core.blake2b(None),  # type: ignore[arg-type]
        lambda: _core.sealed_box_seal(GOOD_PUBLIC, "plaintext"),  # type: ignore[arg-type]
        lambda: _core.xchacha20poly1305_encrypt(bytes(32), NONCE, "m"),  # type: ignore[arg-type]
        lambda: _core.xchacha20poly1305_decrypt(bytes(32), NONCE, None),  # type: ignore[arg-type]
        lambda: HopKey.for_client(GOOD_SECRET, GOOD_PUBLIC).encrypt("m"),  # type: ignore[arg-type]
        lambda: HopKey.for_client(GOOD_SECRET, GOOD_PUBLIC).decrypt(None),  # type: ignore[arg-type]
        lambda: peel_onion(GOOD_SECRET, "onion"),  # type: ignore[arg-type]
        lambda: build_onion([GOOD_PUBLIC], "payload"),  # type: ignore[arg-type]
        lambda: build_onion(["a" * 32], b"payload"),  # type: ignore[list-item]
        lambda: build_onion([GOOD_PUBLIC], b"p", routing=["r"]),  # type: ignore[list-item]
        lambda: build_onion(GOOD_PUBLIC, b"payload"),  # type: ignore[arg-type]
        lambda: peel_onion_batch(GOOD_SECRET, ["onion"]),  # type: ignore[list-item]
        lambda: peel_onion_batch(GOOD_SECRET, None),  # type: ignore[arg-type]
    ],
    ids=[
        "blake2b_str",
        "blake2b_none",
        "seal_str",
        "aead_encrypt_str",
        "aead_decrypt_none",
        "hop_encrypt_str",
        "hop_decrypt_none",
        "peel_str",
        "build_payload_str",
        "build_route_of_str",
        "build_routing_of_str",
        "build_route_bare_bytes",
        "batch_of_str",
        "batch_none",
    ],
)
def test_data_of_the_wrong_type_gives_type_error(call: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        call()


def test_peel_onion_batch_refuses_a_bare_bytes_argument_with_type_error() -> None:
    onion, _ = build_onion([GOOD_PUBLIC], b"payload")
    with pytest.raises(TypeError):
        peel_onion_batch(GOOD_SECRET, onion)  # type: ignore[arg-type]


def test_a_nonce_of_the_wrong_length_gives_invalid_input_error() -> None:
    for nonce in (b"", bytes(12), bytes(23), bytes(25)):
        for call in (_core.xchacha20poly1305_encrypt, _core.xchacha20poly1305_decrypt):
            with pytest.raises(InvalidInputError) as raised:
                call(bytes(32), nonce, bytes(32))
            assert not isinstance(raised.value, DecryptionError)


@pytest.mark.parametrize("digest_size", [0, 65, 1000])
def test_blake2b_refuses_a_digest_size_outside_1_to_64(digest_size: int) -> None:
    with pytest.raises(InvalidInputError):
        _core.blake2b(b"abc", digest_size)


def test_blake2b_refuses_a_key_over_64_bytes_without_echoing_it() -> None:
    key = bytes(range(65))
    with pytest.raises(InvalidInputError) as raised:
        _core.blake2b(b"abc", 32, key)
    assert not _leaks(str(raised.value), key)


def test_an_onion_over_the_maximum_length_gives_input_too_large_error() -> None:
    with pytest.raises(InputTooLargeError):
        peel_onion(GOOD_SECRET, bytes(_core.MAX_ONION_LEN + 1))


def test_building_an_onion_over_the_maximum_length_gives_input_too_large_error() -> None:
    with pytest.raises(InputTooLargeError):
        build_onion([GOOD_PUBLIC], bytes(_core.MAX_ONION_LEN))


@pytest.mark.parametrize("hops", [0, _core.MAX_ROUTE_LEN + 1, 100])
def test_a_route_of_no_hops_or_too_many_gives_invalid_input_error(hops: int) -> None:
    with pytest.raises(InvalidInputError) as raised:
        build_onion([GOOD_PUBLIC] * hops, b"payload")
    assert type(raised.value) is InvalidInputError


@pytest.mark.parametrize("count", [1, 3], ids=["too_few", "too_many"])
def test_routing_with_the_wrong_number_of_entries_gives_invalid_input_error(count: int) -> None:
    with pytest.raises(InvalidInputError) as raised:
        build_onion([GOOD_PUBLIC, GOOD_PUBLIC], b"payload", routing=[b"r"] * count)
    assert type(raised.value) is InvalidInputError


def test_routing_data_over_its_limit_gives_input_too_large_error() -> None:
    with pytest.raises(InputTooLargeError):
        build_onion([GOOD_PUBLIC], b"payload", routing=[bytes(_core.MAX_ROUTING_LEN + 1)])


def test_routing_data_at_its_limit_is_accepted() -> None:
    onion, _ = build_onion([GOOD_PUBLIC], b"p", routing=[bytes(_core.MAX_ROUTING_LEN)])
    assert peel_onion(GOOD_SECRET, onion).routing == bytes(_core.MAX_ROUTING_LEN)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", bytes(_core.ONION_LAYER_OVERHEAD + 2), os.urandom(500), b"\x01" * 1000],
    ids=["empty", "version_only", "one_short_of_minimum", "random", "ones"],
)
def test_empty_truncated_and_garbage_inputs_give_decryption_error(blob: bytes) -> None:
    for call in (
        lambda: peel_onion(GOOD_SECRET, blob),
        lambda: _core.sealed_box_open(GOOD_SECRET, blob),
        lambda: HopKey.for_client(GOOD_SECRET, GOOD_PUBLIC).decrypt(blob),
        lambda: _core.session_decrypt(GOOD_SECRET, GOOD_PUBLIC, blob),
        lambda: _core.xchacha20poly1305_decrypt(bytes(32), NONCE, blob),
    ):
        with pytest.raises(DecryptionError):
            call()


# --- The one opaque DecryptionError -----------------------------------------------------------


def _low_order_layer(node_public: bytes) -> bytes:
    """A layer whose ephemeral key is a point of order 8, sealed with the key an implementation that
    skipped the low-order check would derive (an all-zero shared secret)."""
    low_order = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    key = _core.blake2b(bytes(32) + low_order + node_public)
    header = b"\x01" + low_order
    plaintext = b"\x01" + bytes(2) + b"request"
    return header + NONCE + _core.xchacha20poly1305_encrypt(key, NONCE, plaintext, header)


def _collect_decryption_errors() -> dict[str, DecryptionError]:
    node, node_public = GOOD_SECRET, GOOD_PUBLIC
    other = _core.x25519_generate_secret()
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    onion, _ = build_onion([node_public], b"payload")
    bad_version = b"\x02" + onion[1:]
    bad_tag = onion[:-1] + bytes([onion[-1] ^ 1])
    sealed = _core.sealed_box_seal(node_public, b"secret")
    message = encrypt_for_recipient(alice, bob.session_id, b"hi")
    hop = HopKey.for_client(node, _core.x25519_public_key(other))
    blob = hop.encrypt(b"x")
    aead = _core.xchacha20poly1305_encrypt(bytes(32), NONCE, b"x")
    causes: dict[str, Callable[[], object]] = {
        "onion_wrong_node": lambda: peel_onion(other, onion),
        "onion_truncated": lambda: peel_onion(node, onion[:60]),
        "onion_bad_tag": lambda: peel_onion(node, bad_tag),
        "onion_bad_version": lambda: peel_onion(node, bad_version),
        "onion_low_order_ephemeral": lambda: peel_onion(node, _low_order_layer(node_public)),
        "sealed_box_wrong_key": lambda: _core.sealed_box_open(other, sealed),
        "sealed_box_truncated": lambda: _core.sealed_box_open(node, sealed[:40]),
        "session_wrong_recipient": lambda: decrypt_incoming(carol, message),
        "session_unsigned": lambda: decrypt_incoming(
            bob, _core.sealed_box_seal(bob.x25519_public_key, bytes(120))
        ),
        "hop_wrong_key": lambda: HopKey.for_client(other, node_public).decrypt(blob),
        "hop_truncated": lambda: hop.decrypt(blob[:39]),
        "aead_bad_tag": lambda: _core.xchacha20poly1305_decrypt(bytes(32), NONCE, aead[:-1] + b"?"),
        "aead_wrong_aad": lambda: _core.xchacha20poly1305_decrypt(bytes(32), NONCE, aead, b"a"),
    }
    errors: dict[str, DecryptionError] = {}
    for name, cause in causes.items():
        with pytest.raises(DecryptionError) as raised:
            cause()
        errors[name] = raised.value
    for name, result in zip(
        ["batch_wrong_node", "batch_bad_version", "batch_low_order"],
        peel_onion_batch(
            other, [onion, bad_version, _low_order_layer(_core.x25519_public_key(other))]
        ),
        strict=True,
    ):
        assert isinstance(result, DecryptionError)
        errors[name] = result
    return errors


def test_every_decryption_failure_is_the_same_opaque_error() -> None:
    errors = _collect_decryption_errors()
    assert len(errors) >= 16
    messages = {str(error) for error in errors.values()}
    assert len(messages) == 1, messages
    (message,) = messages
    for name, error in errors.items():
        assert type(error) is DecryptionError, name
        assert error.args == (message,), name
        assert error.__cause__ is None, name


def test_the_decryption_error_names_no_key() -> None:
    for error in _collect_decryption_errors().values():
        for key in (GOOD_SECRET, GOOD_PUBLIC):
            assert not _leaks(str(error), key)
            assert not _leaks(repr(error), key)


def test_peel_onion_batch_returns_errors_in_place_instead_of_raising() -> None:
    good, _ = build_onion([GOOD_PUBLIC], b"good")
    results = peel_onion_batch(GOOD_SECRET, [good, b"", b"\x01" * 200, good[:-1]])
    assert len(results) == 4
    first = results[0]
    assert isinstance(first, PeeledLayer)
    assert first.payload == b"good"
    assert all(type(result) is DecryptionError for result in results[1:])


def test_peel_onion_batch_of_nothing_is_an_empty_list() -> None:
    assert peel_onion_batch(GOOD_SECRET, []) == []


# --- No key material in reprs -----------------------------------------------------------------


def test_repr_of_a_hop_key_shows_no_key_material() -> None:
    client = _core.x25519_generate_secret()
    key = HopKey.for_client(client, GOOD_PUBLIC)
    shared = _core.x25519(client, GOOD_PUBLIC)
    raw = _core.blake2b(shared + _core.x25519_public_key(client) + GOOD_PUBLIC)
    for secret in (raw, shared, client):
        assert not _leaks(repr(key), secret)
        assert not _leaks(str(key), secret)


def test_repr_of_an_identity_shows_its_session_id_and_no_secret() -> None:
    identity = Identity.generate()
    text = repr(identity)
    assert identity.session_id in text
    for secret in (identity.seed, identity.seed[:16], identity.x25519_secret_key):
        assert not _leaks(text, secret)
        assert not _leaks(str(identity), secret)
    assert identity.mnemonic not in text
    # No word of the phrase appears as a word of the repr ("session" is both a field name and a
    # word of the list, so it is looked for only outside the field name).
    words = set(re.findall(r"[a-z]+", text.replace("session_id=", "")))
    assert not words & set(identity.mnemonic.split())


def test_repr_of_a_peeled_layer_shows_no_key_or_payload() -> None:
    onion, _ = build_onion([GOOD_PUBLIC], b"a secret request")
    layer = peel_onion(GOOD_SECRET, onion)
    assert b"a secret request".hex() not in repr(layer)
    assert "a secret request" not in repr(layer)
    assert layer.replay_tag.hex() not in repr(layer)


# --- Unusable keys --------------------------------------------------------------------------


def test_x25519_with_a_low_order_public_key_gives_invalid_key_error() -> None:
    with pytest.raises(InvalidKeyError):
        _core.x25519(GOOD_SECRET, bytes(32))


def test_hop_key_with_a_low_order_public_key_gives_invalid_key_error() -> None:
    with pytest.raises(InvalidKeyError):
        HopKey.for_client(GOOD_SECRET, bytes(32))
    with pytest.raises(InvalidKeyError):
        HopKey.for_server(GOOD_SECRET, (1).to_bytes(32, "little"))


LOW_ORDER_POINTS = {
    "zero": bytes(32),
    "one": (1).to_bytes(32, "little"),
    "order_8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
}


@pytest.mark.parametrize("point", sorted(LOW_ORDER_POINTS))
def test_sealing_to_a_low_order_public_key_gives_invalid_key_error(point: str) -> None:
    # libsodium's crypto_box_seal refuses such a key: the shared secret is all zero, so anyone
    # could open the box. So must we.
    with pytest.raises(InvalidKeyError):
        _core.sealed_box_seal(LOW_ORDER_POINTS[point], b"to nobody")


@pytest.mark.parametrize("point", sorted(LOW_ORDER_POINTS))
def test_a_session_message_to_a_low_order_key_gives_invalid_key_error(point: str) -> None:
    with pytest.raises(InvalidKeyError):
        _core.session_encrypt(GOOD_SEED, LOW_ORDER_POINTS[point], b"to nobody")


def test_an_ed25519_key_off_the_curve_does_not_convert_to_x25519() -> None:
    with pytest.raises(InvalidKeyError):
        _core.ed25519_public_key_to_x25519((2).to_bytes(32, "little"))
    with pytest.raises(InvalidKeyError):
        _core.ed25519_public_key_to_x25519((1).to_bytes(32, "little"))


def test_a_signature_of_the_wrong_length_is_false_not_an_error() -> None:
    signature = _core.ed25519_sign(GOOD_SEED, b"m")
    for bad in (b"", signature[:63], signature + b"\x00", signature * 2):
        assert _core.ed25519_verify(GOOD_ED_PUBLIC, b"m", bad) is False
