"""Tests for veil.identity.Identity: seeds, recovery phrases, Session IDs, signatures.

The mnemonic word list itself is tested in tests/test_mnemonic.py.
"""

from __future__ import annotations

import nacl.bindings as sodium
import nacl.signing
import pytest

from veil.crypto import encrypt_for_recipient
from veil.errors import InvalidInputError, InvalidKeyError, InvalidSessionIdError, VeilError
from veil.identity import Identity

# Session's own known account: the 16-byte seed 0123456789abcdef0123456789abcdef (padded with 16
# zero bytes) has this Ed25519 key and this X25519 key (its Session ID is "05" + the X25519 key).
# Source: session-foundation/libsession-util tests (test_config_contacts.cpp,
# test_config_convo_info_volatile.cpp) and session-ios' LibSession tests
# ("0123456789abcdef0123456789abcdef" → ed25519 4cb76fdc…, x25519 d2ad010e…).
KNOWN_SEED = bytes.fromhex("0123456789abcdef0123456789abcdef")
KNOWN_ED25519 = "4cb76fdc6d32278e3f83dbf608360ecc6b65727934b85d2fb86862ff98c46ab7"
KNOWN_SESSION_ID = "05d2ad010eeb72d72e561d9de7bd7b6989af77dcabffa03a5111a6c859ae5c3a72"


def test_generated_seeds_end_in_16_zero_bytes_and_have_a_13_word_mnemonic() -> None:
    for _ in range(10):
        identity = Identity.generate()
        assert len(identity.seed) == 32
        assert identity.seed[16:] == bytes(16)
        assert len(identity.mnemonic.split()) == 13


def test_generated_identities_differ() -> None:
    assert len({Identity.generate().seed for _ in range(20)}) == 20


def test_a_16_byte_seed_equals_the_same_seed_padded_with_16_zero_bytes() -> None:
    short = Identity.from_seed(KNOWN_SEED)
    padded = Identity.from_seed(KNOWN_SEED + bytes(16))
    assert short == padded
    assert short.seed == padded.seed == KNOWN_SEED + bytes(16)
    assert short.session_id == padded.session_id
    assert short.x25519_secret_key == padded.x25519_secret_key
    assert hash(short) == hash(padded)


def test_a_32_byte_seed_not_ending_in_zeros_has_a_25_word_mnemonic() -> None:
    identity = Identity.from_seed(bytes(range(1, 33)))
    assert len(identity.mnemonic.split()) == 25
    assert Identity.from_mnemonic(identity.mnemonic) == identity


@pytest.mark.parametrize("seed", [KNOWN_SEED, bytes(range(1, 33)), bytes(16), b"\xff" * 32])
def test_from_mnemonic_round_trips_the_mnemonic(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    restored = Identity.from_mnemonic(identity.mnemonic)
    assert restored == identity
    assert restored.seed == identity.seed
    assert restored.session_id == identity.session_id


def test_a_generated_identity_round_trips_through_its_mnemonic() -> None:
    identity = Identity.generate()
    assert Identity.from_mnemonic(identity.mnemonic) == identity


def test_session_id_is_05_and_the_hex_of_the_x25519_public_key() -> None:
    identity = Identity.generate()
    assert identity.session_id == "05" + identity.x25519_public_key.hex()
    assert len(identity.session_id) == 66
    assert identity.session_id == identity.session_id.lower()


def test_the_x25519_keys_are_libsodiums_conversion_of_the_ed25519_keys() -> None:
    identity = Identity.generate()
    public, secret64 = sodium.crypto_sign_seed_keypair(identity.seed)
    assert identity.ed25519_public_key == bytes(public)
    assert identity.x25519_public_key == bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public))
    assert identity.x25519_secret_key == bytes(
        sodium.crypto_sign_ed25519_sk_to_curve25519(secret64)
    )
    assert bytes(sodium.crypto_scalarmult_base(identity.x25519_secret_key)) == (
        identity.x25519_public_key
    )


def test_sessions_known_seed_gives_its_known_session_id() -> None:
    identity = Identity.from_seed(KNOWN_SEED)
    assert identity.ed25519_public_key.hex() == KNOWN_ED25519
    assert identity.session_id == KNOWN_SESSION_ID


def test_sign_gives_a_signature_pynacl_verifies() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"a message")
    assert len(signature) == 64
    verify_key = nacl.signing.VerifyKey(identity.ed25519_public_key)
    assert verify_key.verify(b"a message", signature) == b"a message"
    assert signature == bytes(nacl.signing.SigningKey(identity.seed).sign(b"a message").signature)


def test_identities_compare_by_seed() -> None:
    a = Identity.from_seed(bytes(range(32)))
    assert a == Identity.from_seed(bytes(range(32)))
    assert a != Identity.from_seed(bytes(range(1, 33)))
    assert a != "not an identity"


@pytest.mark.parametrize(
    "seed",
    [b"", bytes(15), bytes(17), bytes(31), bytes(33), bytes(64), "0" * 32, "0" * 16],
    ids=["0", "15", "17", "31", "33", "64", "str32", "str16"],
)
def test_a_bad_seed_gives_invalid_key_error(seed: bytes) -> None:
    with pytest.raises(InvalidKeyError) as raised:
        Identity.from_seed(seed)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, VeilError)


@pytest.mark.parametrize("seed", [bytes(16), bytes(31), bytes(33), "0" * 32])
def test_the_constructor_accepts_only_32_bytes(seed: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        Identity(seed)


@pytest.mark.parametrize(
    "session_id",
    [
        "",
        "05",
        "06" + "ab" * 32,
        "ab" * 33,
        "05" + "ab" * 31,
        "05" + "ab" * 33,
        "05" + "ab" * 31 + "a",
        "05" + "zz" * 32,
        "05" + "ab" * 31 + "g0",
        "05" + "ab" * 31 + " a",
        "0x" + "ab" * 32,
        "05" + "é" * 64,
    ],
    ids=[
        "empty",
        "prefix_only",
        "wrong_prefix",
        "no_prefix",
        "short",
        "long",
        "odd_length",
        "non_hex",
        "one_non_hex_digit",
        "inner_space",
        "0x_prefix",
        "non_ascii",
    ],
)
def test_a_malformed_session_id_gives_invalid_session_id_error(session_id: str) -> None:
    with pytest.raises(InvalidSessionIdError):
        encrypt_for_recipient(Identity.generate(), session_id, b"hello")


def test_a_session_id_that_is_not_a_string_gives_invalid_session_id_error() -> None:
    recipient = Identity.generate()
    with pytest.raises(InvalidSessionIdError):
        encrypt_for_recipient(Identity.generate(), recipient.session_id.encode(), b"x")  # type: ignore[arg-type]


def test_an_upper_case_session_id_is_accepted() -> None:
    recipient = Identity.generate()
    ciphertext = encrypt_for_recipient(Identity.generate(), recipient.session_id.upper(), b"hi")
    assert len(ciphertext) > 0


def test_a_session_id_of_a_low_order_key_is_refused() -> None:
    # InvalidSessionIdError names "a usable X25519 key": "05" + 64 zeros is well formed but its key
    # has order 1, so a message sealed to it could be opened by anyone.
    with pytest.raises((InvalidSessionIdError, InvalidKeyError)) as raised:
        encrypt_for_recipient(Identity.generate(), "05" + "00" * 32, b"secret")
    assert isinstance(raised.value, InvalidInputError)
