"""Property-based tests (Hypothesis): round trips, single-bit tampering, and batch peeling."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
from veil.errors import DecryptionError
from veil.identity import Identity

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=24, max_size=24)
messages = st.binary(max_size=2048)
seeds = st.binary(min_size=32, max_size=32)


def _flip_bit(blob: bytes, index: int) -> bytes:
    flipped = bytearray(blob)
    flipped[index // 8] ^= 1 << (index % 8)
    return bytes(flipped)


def _flip_one_bit(data: st.DataObject, blob: bytes) -> bytes:
    """`blob` with one bit, chosen by Hypothesis, inverted."""
    return _flip_bit(blob, data.draw(st.integers(0, len(blob) * 8 - 1), label="bit"))


def _raises_decryption_error(call: object, *args: object) -> bool:
    assert callable(call)
    try:
        call(*args)
    except DecryptionError:
        return True
    return False


# --- Round trips ------------------------------------------------------------------------------


@given(key=keys, nonce=nonces, message=messages, aad=st.binary(max_size=64))
def test_aead_decrypt_inverts_encrypt(key: bytes, nonce: bytes, message: bytes, aad: bytes) -> None:
    sealed = _core.xchacha20poly1305_encrypt(key, nonce, message, aad)
    assert len(sealed) == len(message) + 16
    assert _core.xchacha20poly1305_decrypt(key, nonce, sealed, aad) == message


@given(secret=keys, message=messages)
def test_sealed_box_open_inverts_seal(secret: bytes, message: bytes) -> None:
    sealed = _core.sealed_box_seal(_core.x25519_public_key(secret), message)
    assert len(sealed) == len(message) + _core.SEALED_BOX_OVERHEAD
    assert _core.sealed_box_open(secret, sealed) == message


@given(client=keys, server=keys, request=messages, response=messages)
def test_hop_keys_of_client_and_server_open_each_others_blobs(
    client: bytes, server: bytes, request: bytes, response: bytes
) -> None:
    to_server = HopKey.for_client(client, _core.x25519_public_key(server))
    at_server = HopKey.for_server(server, _core.x25519_public_key(client))
    blob = to_server.encrypt(request)
    assert len(blob) == len(request) + _core.HOP_OVERHEAD
    assert at_server.decrypt(blob) == request
    assert to_server.decrypt(at_server.encrypt(response)) == response


@given(sender_seed=seeds, recipient_seed=seeds, message=messages)
def test_session_protocol_round_trip_names_the_sender(
    sender_seed: bytes, recipient_seed: bytes, message: bytes
) -> None:
    sender, recipient = Identity.from_seed(sender_seed), Identity.from_seed(recipient_seed)
    ciphertext = encrypt_for_recipient(sender, recipient.session_id, message)
    assert decrypt_incoming(recipient, ciphertext) == (message, sender.session_id)


@st.composite
def routes(draw: st.DrawFn) -> tuple[list[bytes], list[bytes] | None]:
    secrets = draw(st.lists(keys, min_size=1, max_size=_core.MAX_ROUTE_LEN))
    routing = draw(
        st.none() | st.lists(st.binary(max_size=64), min_size=len(secrets), max_size=len(secrets))
    )
    return secrets, routing


@given(route=routes(), payload=st.binary(max_size=1024), reply=st.binary(max_size=256))
def test_onion_peels_hop_by_hop_to_the_payload(
    route: tuple[list[bytes], list[bytes] | None], payload: bytes, reply: bytes
) -> None:
    secrets, routing = route
    publics = [_core.x25519_public_key(secret) for secret in secrets]
    onion, reply_key = build_onion(publics, payload, routing=routing)
    layer = onion
    for i, secret in enumerate(secrets):
        peeled = peel_onion(secret, layer)
        assert peeled.routing == (routing[i] if routing else b"")
        if i + 1 < len(secrets):
            assert peeled.next_hop == publics[i + 1]
            assert peeled.reply_key is None
        else:
            assert peeled.next_hop is None
            assert peeled.payload == payload
            assert peeled.reply_key is not None
            assert reply_key.decrypt(peeled.reply_key.encrypt(reply)) == reply
        layer = peeled.payload


# --- Single-bit tampering ---------------------------------------------------------------------


@given(data=st.data(), key=keys, nonce=nonces, message=messages, aad=st.binary(max_size=32))
def test_any_flipped_bit_of_an_aead_ciphertext_is_rejected(
    data: st.DataObject, key: bytes, nonce: bytes, message: bytes, aad: bytes
) -> None:
    sealed = _flip_one_bit(data, _core.xchacha20poly1305_encrypt(key, nonce, message, aad))
    assert _raises_decryption_error(_core.xchacha20poly1305_decrypt, key, nonce, sealed, aad)


@given(data=st.data(), secret=keys, message=messages)
def test_any_flipped_bit_of_a_sealed_box_is_rejected(
    data: st.DataObject, secret: bytes, message: bytes
) -> None:
    sealed = _core.sealed_box_seal(_core.x25519_public_key(secret), message)
    assert _raises_decryption_error(_core.sealed_box_open, secret, _flip_one_bit(data, sealed))


@given(data=st.data(), client=keys, server=keys, message=messages)
def test_any_flipped_bit_of_a_hop_blob_is_rejected(
    data: st.DataObject, client: bytes, server: bytes, message: bytes
) -> None:
    to_server = HopKey.for_client(client, _core.x25519_public_key(server))
    at_server = HopKey.for_server(server, _core.x25519_public_key(client))
    blob = _flip_one_bit(data, to_server.encrypt(message))
    assert _raises_decryption_error(at_server.decrypt, blob)


@given(data=st.data(), sender_seed=seeds, recipient_seed=seeds, message=messages)
def test_any_flipped_bit_of_a_session_ciphertext_is_rejected(
    data: st.DataObject, sender_seed: bytes, recipient_seed: bytes, message: bytes
) -> None:
    sender, recipient = Identity.from_seed(sender_seed), Identity.from_seed(recipient_seed)
    ciphertext = encrypt_for_recipient(sender, recipient.session_id, message)
    assert _raises_decryption_error(decrypt_incoming, recipient, _flip_one_bit(data, ciphertext))


@given(data=st.data(), route=routes(), payload=st.binary(max_size=256))
def test_any_flipped_bit_of_an_onion_layer_is_rejected(
    data: st.DataObject, route: tuple[list[bytes], list[bytes] | None], payload: bytes
) -> None:
    secrets, routing = route
    publics = [_core.x25519_public_key(secret) for secret in secrets]
    onion, _ = build_onion(publics, payload, routing=routing)
    depth = data.draw(st.integers(0, len(secrets) - 1), label="layer")
    layer = onion
    for secret in secrets[:depth]:
        layer = peel_onion(secret, layer).payload
    assert _raises_decryption_error(peel_onion, secrets[depth], _flip_one_bit(data, layer))


# --- Batch peeling ----------------------------------------------------------------------------


@st.composite
def onion_batches(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    node = draw(keys, label="node")
    node_public = _core.x25519_public_key(node)
    other_public = _core.x25519_public_key(draw(keys, label="other node"))
    items: list[bytes] = []
    for _ in range(draw(st.integers(0, 12), label="count")):
        hops = [node_public] + [other_public] * draw(st.integers(0, 2), label="hops")
        onion, _ = build_onion(hops, draw(st.binary(max_size=128)))
        kind = draw(st.sampled_from(["valid", "truncated", "corrupted", "garbage", "elsewhere"]))
        if kind == "truncated":
            onion = onion[: draw(st.integers(0, len(onion) - 1), label="cut")]
        elif kind == "corrupted":
            onion = _flip_bit(onion, draw(st.integers(0, len(onion) * 8 - 1), label="bit"))
        elif kind == "garbage":
            onion = draw(st.binary(max_size=200), label="garbage")
        elif kind == "elsewhere":
            onion, _ = build_onion([other_public], b"not for this node")
        items.append(onion)
        if draw(st.booleans(), label="duplicate"):
            items.append(onion)
    return node, items


def _same_layer(batch: PeeledLayer, single: PeeledLayer) -> bool:
    return (
        batch.payload == single.payload
        and batch.next_hop == single.next_hop
        and batch.routing == single.routing
        and batch.replay_tag == single.replay_tag
        and (batch.reply_key is None) == (single.reply_key is None)
    )


@given(batch=onion_batches())
def test_peel_onion_batch_equals_peel_onion_one_by_one(batch: tuple[bytes, list[bytes]]) -> None:
    node, onions = batch
    results = peel_onion_batch(node, onions)
    assert len(results) == len(onions)
    for onion, result in zip(onions, results, strict=True):
        single: PeeledLayer | DecryptionError
        try:
            single = peel_onion(node, onion)
        except DecryptionError as error:
            single = error
        if isinstance(single, DecryptionError):
            assert type(result) is DecryptionError
            assert str(result) == str(single)
        else:
            assert isinstance(result, PeeledLayer)
            assert _same_layer(result, single)
