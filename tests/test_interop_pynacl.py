"""Interoperability with PyNaCl (libsodium), in both directions.

The Session Protocol, libsession's hop encryption and one Veil onion layer are re-implemented here
in plain PyNaCl, from their specifications, so that the Rust core is checked against an independent
implementation rather than against itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil import _core
from veil.crypto import HopKey, decrypt_incoming, encrypt_for_recipient, peel_onion
from veil.errors import InvalidKeyError
from veil.identity import Identity

SEEDS = [bytes(32), bytes(range(32)), b"\xff" * 32, os.urandom(32)]
MESSAGES = [b"", b"m", b"hello, libsodium", os.urandom(1000)]


# --- Plain-PyNaCl reference implementations ---------------------------------------------------


def nacl_blake2b(data: bytes, digest_size: int = 32, key: bytes = b"") -> bytes:
    return bytes(
        sodium.crypto_generichash_blake2b_salt_personal(data, digest_size=digest_size, key=key)
    )


def nacl_x25519_public(secret: bytes) -> bytes:
    return bytes(sodium.crypto_scalarmult_base(secret))


def nacl_hop_key(own_secret: bytes, client_public: bytes, server_public: bytes) -> bytes:
    """libsession's "xchacha20" hop key: BLAKE2b-256(X25519(a, B) ‖ A ‖ B)."""
    other = server_public if nacl_x25519_public(own_secret) == client_public else client_public
    shared = bytes(sodium.crypto_scalarmult(own_secret, other))
    return nacl_blake2b(shared + client_public + server_public)


def nacl_aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key))


def nacl_aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
    return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key))


def nacl_hop_encrypt(key: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(24)
    return nonce + nacl_aead_encrypt(key, nonce, plaintext)


def nacl_hop_decrypt(key: bytes, blob: bytes) -> bytes:
    return nacl_aead_decrypt(key, blob[:24], blob[24:])


def nacl_session_encrypt(sender_seed: bytes, recipient_x25519: bytes, message: bytes) -> bytes:
    """SIG = sign(M ‖ A_ed ‖ Y_x); CT = SealedBox(Y_x).encrypt(M ‖ A_ed ‖ SIG)."""
    signing_key = nacl.signing.SigningKey(sender_seed)
    sender_ed = bytes(signing_key.verify_key)
    signature = signing_key.sign(message + sender_ed + recipient_x25519).signature
    box = nacl.public.SealedBox(nacl.public.PublicKey(recipient_x25519))
    return bytes(box.encrypt(message + sender_ed + signature))


def nacl_session_decrypt(recipient_x25519_secret: bytes, ciphertext: bytes) -> tuple[bytes, str]:
    secret = nacl.public.PrivateKey(recipient_x25519_secret)
    content = bytes(nacl.public.SealedBox(secret).decrypt(ciphertext))
    message, sender_ed, signature = content[:-96], content[-96:-64], content[-64:]
    nacl.signing.VerifyKey(sender_ed).verify(
        message + sender_ed + bytes(secret.public_key), signature
    )
    sender_x = bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(sender_ed))
    return message, "05" + sender_x.hex()


def nacl_onion_layer(
    node_public: bytes, body: bytes, *, next_hop: bytes | None = None, routing: bytes = b""
) -> tuple[bytes, bytes]:
    """One v1 layer (rust/veil-core/src/onion.rs) and its key."""
    ephemeral = os.urandom(32)
    ephemeral_public = nacl_x25519_public(ephemeral)
    key = nacl_hop_key(ephemeral, ephemeral_public, node_public)
    header = b"\x01" + ephemeral_public
    kind = b"\x01" if next_hop is None else b"\x00" + next_hop
    plaintext = kind + len(routing).to_bytes(2, "big") + routing + body
    nonce = os.urandom(24)
    return header + nonce + nacl_aead_encrypt(key, nonce, plaintext, header), key


@dataclass
class NaclPeeled:
    next_hop: bytes | None
    routing: bytes
    payload: bytes
    key: bytes


def nacl_peel(node_secret: bytes, layer: bytes) -> NaclPeeled:
    assert layer[0] == 1
    header, nonce, ciphertext = layer[:33], layer[33:57], layer[57:]
    key = nacl_hop_key(node_secret, header[1:], nacl_x25519_public(node_secret))
    plaintext = nacl_aead_decrypt(key, nonce, ciphertext, header)
    if plaintext[0] == 0:
        next_hop: bytes | None = plaintext[1:33]
        at = 33
    else:
        assert plaintext[0] == 1
        next_hop, at = None, 1
    length = int.from_bytes(plaintext[at : at + 2], "big")
    routing = plaintext[at + 2 : at + 2 + length]
    return NaclPeeled(next_hop, routing, plaintext[at + 2 + length :], key)


def _x25519_pair() -> tuple[bytes, bytes]:
    secret = os.urandom(32)
    return secret, nacl_x25519_public(secret)


# --- Sealed boxes -----------------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "one", "text", "1000"])
def test_our_sealed_box_opens_with_pynacl(message: bytes) -> None:
    secret = nacl.public.PrivateKey.generate()
    sealed = _core.sealed_box_seal(bytes(secret.public_key), message)
    assert len(sealed) == len(message) + _core.SEALED_BOX_OVERHEAD
    assert nacl.public.SealedBox(secret).decrypt(sealed) == message


@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "one", "text", "1000"])
def test_a_pynacl_sealed_box_opens_with_ours(message: bytes) -> None:
    secret = nacl.public.PrivateKey.generate()
    sealed = nacl.public.SealedBox(secret.public_key).encrypt(message)
    assert _core.sealed_box_open(bytes(secret), bytes(sealed)) == message


# --- Ed25519 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS, ids=["zero", "counting", "ones", "random"])
@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "one", "text", "1000"])
def test_ed25519_signatures_are_identical_and_verify_both_ways(seed: bytes, message: bytes) -> None:
    theirs = nacl.signing.SigningKey(seed)
    public = bytes(theirs.verify_key)
    assert _core.ed25519_public_key(seed) == public
    ours = _core.ed25519_sign(seed, message)
    their_signature = bytes(theirs.sign(message).signature)
    assert ours == their_signature
    assert theirs.verify_key.verify(message, ours) == message
    assert _core.ed25519_verify(public, message, their_signature) is True
    with pytest.raises(nacl.exceptions.BadSignatureError):
        theirs.verify_key.verify(message + b"!", ours)
    assert _core.ed25519_verify(public, message + b"!", their_signature) is False
    # The expanded key pair and the decompressed public key a node keeps: the same answers.
    key_pair = _core.Ed25519KeyPair(seed)
    assert key_pair.public_key == public
    assert key_pair.sign(message) == their_signature
    verifier = _core.Ed25519PublicKey(public)
    assert verifier.verify(message, their_signature) is True
    assert verifier.verify(message + b"!", their_signature) is False
    assert verifier.verify(message, their_signature[:63]) is False


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2048))
def test_a_nodes_key_pair_signs_the_same_bytes_as_libsodium_and_the_one_shot_signer(
    seed: bytes, message: bytes
) -> None:
    """A node signs with AWS-LC (``Ed25519KeyPair``), a client with ed25519-dalek
    (``ed25519_sign``): Ed25519 signatures are deterministic, so both must be libsodium's bytes,
    for any seed and message, one at a time or in a batch."""
    theirs = bytes(nacl.signing.SigningKey(seed).sign(message).signature)
    key_pair = _core.Ed25519KeyPair(seed)
    assert key_pair.public_key == bytes(nacl.signing.SigningKey(seed).verify_key)
    assert key_pair.sign(message) == theirs
    assert _core.ed25519_sign(seed, message) == theirs
    assert key_pair.sign_many([message, message + b"!"]) == [
        theirs,
        bytes(nacl.signing.SigningKey(seed).sign(message + b"!").signature),
    ]


def test_an_ed25519_public_key_that_is_not_a_point_is_refused() -> None:
    not_a_point = bytes([2]) + bytes(31)
    with pytest.raises(InvalidKeyError):
        _core.Ed25519PublicKey(not_a_point)
    assert _core.ed25519_verify(not_a_point, b"m", bytes(64)) is False


@pytest.mark.parametrize("seed", SEEDS, ids=["zero", "counting", "ones", "random"])
def test_ed25519_to_x25519_conversion_matches_libsodium(seed: bytes) -> None:
    public, secret64 = sodium.crypto_sign_seed_keypair(seed)
    expected_public = bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public))
    expected_secret = bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(secret64))
    assert _core.ed25519_public_key_to_x25519(bytes(public)) == expected_public
    assert _core.ed25519_seed_to_x25519(seed) == expected_secret
    assert _core.x25519_public_key(expected_secret) == expected_public


# --- X25519, BLAKE2b, XChaCha20-Poly1305 ------------------------------------------------------


@pytest.mark.parametrize("round_", range(4))
def test_x25519_matches_crypto_scalarmult(round_: int) -> None:
    del round_
    a, a_public = _x25519_pair()
    b, b_public = _x25519_pair()
    assert _core.x25519_public_key(a) == a_public
    shared = bytes(sodium.crypto_scalarmult(a, b_public))
    assert _core.x25519(a, b_public) == shared
    assert _core.x25519(b, a_public) == shared


@pytest.mark.parametrize("digest_size", [32, 64])
@pytest.mark.parametrize("key", [None, b"k" * 32, bytes(range(64))], ids=["unkeyed", "32", "64"])
@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 5], ids=["empty", "abc", "1280"])
def test_blake2b_matches_libsodium(digest_size: int, key: bytes | None, data: bytes) -> None:
    expected = nacl_blake2b(data, digest_size, key or b"")
    assert _core.blake2b(data, digest_size, key) == expected


@pytest.mark.parametrize("aad", [b"", b"associated data"], ids=["no_aad", "aad"])
@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "one", "text", "1000"])
def test_xchacha20poly1305_interoperates_both_ways(aad: bytes, message: bytes) -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    ours = _core.xchacha20poly1305_encrypt(key, nonce, message, aad)
    assert ours == nacl_aead_encrypt(key, nonce, message, aad)
    assert nacl_aead_decrypt(key, nonce, ours, aad) == message
    other_nonce = os.urandom(24)
    theirs = nacl_aead_encrypt(key, other_nonce, message, aad)
    assert _core.xchacha20poly1305_decrypt(key, other_nonce, theirs, aad) == message


# --- Hop encryption ---------------------------------------------------------------------------


def test_hop_key_of_the_client_matches_libsessions_derivation_both_ways() -> None:
    client, client_public = _x25519_pair()
    server, server_public = _x25519_pair()
    key = nacl_hop_key(client, client_public, server_public)
    assert key == nacl_hop_key(server, client_public, server_public)
    ours = HopKey.for_client(client, server_public)
    blob = ours.encrypt(b"request")
    assert len(blob) == len(b"request") + _core.HOP_OVERHEAD
    assert nacl_hop_decrypt(key, blob) == b"request"
    assert ours.decrypt(nacl_hop_encrypt(key, b"response")) == b"response"


def test_hop_key_of_the_server_matches_libsessions_derivation_both_ways() -> None:
    client, client_public = _x25519_pair()
    server, server_public = _x25519_pair()
    key = nacl_hop_key(client, client_public, server_public)
    ours = HopKey.for_server(server, client_public)
    assert ours.decrypt(nacl_hop_encrypt(key, b"request")) == b"request"
    assert nacl_hop_decrypt(key, ours.encrypt(b"response")) == b"response"


# --- The Session Protocol ---------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "one", "text", "1000"])
def test_we_open_a_session_message_sealed_by_pynacl_and_name_its_sender(message: bytes) -> None:
    sender, recipient = Identity.generate(), Identity.generate()
    ciphertext = nacl_session_encrypt(sender.seed, recipient.x25519_public_key, message)
    assert decrypt_incoming(recipient, ciphertext) == (message, sender.session_id)


@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "one", "text", "1000"])
def test_pynacl_opens_our_session_message_and_names_its_sender(message: bytes) -> None:
    sender, recipient = Identity.generate(), Identity.generate()
    ciphertext = encrypt_for_recipient(sender, recipient.session_id, message)
    opened = nacl_session_decrypt(recipient.x25519_secret_key, ciphertext)
    assert opened == (message, sender.session_id)


# --- One onion layer --------------------------------------------------------------------------


@pytest.mark.parametrize("routing", [b"", b"routing data"], ids=["no_routing", "routing"])
def test_a_final_onion_layer_built_by_pynacl_peels_with_ours(routing: bytes) -> None:
    node, node_public = _x25519_pair()
    layer, key = nacl_onion_layer(node_public, b"the request", routing=routing)
    peeled = peel_onion(node, layer)
    assert peeled.next_hop is None
    assert peeled.payload == b"the request"
    assert peeled.routing == routing
    assert peeled.reply_key is not None
    assert nacl_hop_decrypt(key, peeled.reply_key.encrypt(b"reply")) == b"reply"
    assert peeled.reply_key.decrypt(nacl_hop_encrypt(key, b"again")) == b"again"


def test_a_forward_onion_layer_built_by_pynacl_peels_with_ours() -> None:
    node, node_public = _x25519_pair()
    next_hop = os.urandom(32)
    layer, _key = nacl_onion_layer(node_public, b"inner", next_hop=next_hop, routing=b"r")
    peeled = peel_onion(node, layer)
    assert peeled.next_hop == next_hop
    assert peeled.routing == b"r"
    assert peeled.payload == b"inner"
    assert peeled.reply_key is None


@pytest.mark.parametrize("routing", [None, [b"", b"to the last hop"]], ids=["none", "routing"])
def test_an_onion_built_by_ours_peels_with_a_plain_pynacl_peel(
    routing: list[bytes] | None,
) -> None:
    first, first_public = _x25519_pair()
    last, last_public = _x25519_pair()
    onion, reply_key = _core.build_onion([first_public, last_public], b"payload", routing)
    outer = nacl_peel(first, onion)
    assert outer.next_hop == last_public
    assert outer.routing == b""
    inner = nacl_peel(last, outer.payload)
    assert inner.next_hop is None
    assert inner.routing == (b"to the last hop" if routing else b"")
    assert inner.payload == b"payload"
    assert nacl_hop_decrypt(inner.key, reply_key.encrypt(b"reply")) == b"reply"
