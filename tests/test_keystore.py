"""The account key file: plain and sealed round trips, tampering, truncation, KDF bounds."""

from __future__ import annotations

import struct
import time
import unicodedata

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.pwhash import argon2id

from veil.client.keystore import (
    ENCRYPTED_FILE_LEN,
    MAGIC,
    KdfParams,
    KeyFileError,
    PassphraseRequired,
    decode_key_file,
    encode_key_file,
    is_encrypted,
)
from veil.errors import InvalidInputError, InvalidKeyError

FAST = KdfParams(opslimit=1, memlimit=8192 * 1024)
SEED = bytes(range(32))
PASSPHRASE = "correct horse battery staple"
WRONG = "correct horse battery stapler"

# Byte offsets of the encrypted format (see the module docstring).
SALT = slice(9, 25)
OPSLIMIT = slice(25, 29)
MEMLIMIT = slice(29, 37)
NONCE = slice(37, 61)
HEADER_LEN = 61
# Bits 24-31 of the memory limit: flipping its high bits turns 8 MiB into 2-4 GiB, in bounds.
MEMLIMIT_COSTLY_BYTE = 33

# encode_key_file(SEED, PASSPHRASE, FAST, _salt=bytes(range(16)), _nonce=bytes(range(100, 124)))
KNOWN_ANSWER = bytes.fromhex(
    "7665696c2d6b657901"  # magic "veil-key" 0x01
    "000102030405060708090a0b0c0d0e0f"  # salt
    "00000001"  # opslimit 1
    "0000000000800000"  # memlimit 8 MiB
    "6465666768696a6b6c6d6e6f707172737475767778797a7b"  # nonce
    "bca3a18551f5f16555c694b959d53f3c45168ac415236b48c453e3707557a69e"  # sealed seed
    "faa27065acafde35eaf2d891a5dd229a"  # tag
)


@pytest.fixture(scope="module")
def sealed() -> bytes:
    return encode_key_file(SEED, PASSPHRASE, FAST)


def _with_limits(blob: bytes, opslimit: int, memlimit: int) -> bytes:
    return blob[: OPSLIMIT.start] + struct.pack(">IQ", opslimit, memlimit) + blob[MEMLIMIT.stop :]


def _flip(blob: bytes, index: int, mask: int) -> bytes:
    flipped = bytearray(blob)
    flipped[index] ^= mask
    return bytes(flipped)


def _no_kdf(*args: object, **kwargs: object) -> bytes:
    raise AssertionError("the KDF must not run for out-of-bounds limits")


def test_plain_round_trip_is_the_bare_seed() -> None:
    blob = encode_key_file(SEED, None)
    assert blob == SEED
    assert not is_encrypted(blob)
    assert decode_key_file(blob, None) == SEED
    # A plain file reads the same whatever passphrase is given (is_encrypted tells the caller).
    assert decode_key_file(blob, PASSPHRASE) == SEED


def test_encrypted_round_trip(sealed: bytes) -> None:
    assert len(sealed) == ENCRYPTED_FILE_LEN == 109
    assert sealed.startswith(MAGIC)
    assert is_encrypted(sealed)
    assert SEED not in sealed
    assert decode_key_file(sealed, PASSPHRASE) == SEED
    again = encode_key_file(SEED, PASSPHRASE, FAST)
    assert again[SALT] != sealed[SALT]
    assert again[NONCE] != sealed[NONCE]
    assert decode_key_file(again, PASSPHRASE) == SEED


def test_default_params_are_3_passes_over_64_mib() -> None:
    blob = encode_key_file(SEED, PASSPHRASE)
    assert struct.unpack(">I", blob[OPSLIMIT]) == (3,)
    assert struct.unpack(">Q", blob[MEMLIMIT]) == (64 * 1024 * 1024,)
    assert decode_key_file(blob, PASSPHRASE) == SEED


def test_layout_matches_the_documented_format(sealed: bytes) -> None:
    """Open the file with PyNaCl directly, following the module docstring byte by byte."""
    assert sealed[:9] == b"veil-key\x01"
    (opslimit,) = struct.unpack(">I", sealed[OPSLIMIT])
    (memlimit,) = struct.unpack(">Q", sealed[MEMLIMIT])
    assert (opslimit, memlimit) == (FAST.opslimit, FAST.memlimit)
    password = unicodedata.normalize("NFC", PASSPHRASE).encode("utf-8")
    key = argon2id.kdf(32, password, sealed[SALT], opslimit=opslimit, memlimit=memlimit)
    seed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        sealed[HEADER_LEN:], sealed[:HEADER_LEN], sealed[NONCE], key
    )
    assert seed == SEED


def test_known_answer_vector() -> None:
    blob = encode_key_file(
        SEED, PASSPHRASE, FAST, _salt=bytes(range(16)), _nonce=bytes(range(100, 124))
    )
    assert blob == KNOWN_ANSWER
    assert decode_key_file(KNOWN_ANSWER, PASSPHRASE) == SEED


def test_wrong_passphrase_is_key_file_error(sealed: bytes) -> None:
    with pytest.raises(KeyFileError) as caught:
        decode_key_file(sealed, WRONG)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_encrypted_file_without_passphrase_asks_for_one(sealed: bytes) -> None:
    with pytest.raises(PassphraseRequired):
        decode_key_file(sealed, None)


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_single_byte_flip_is_refused(sealed: bytes, mask: int) -> None:
    with pytest.raises(KeyFileError) as wrong:
        decode_key_file(sealed, WRONG)
    for index in range(len(sealed)):
        if mask != 0x01 and index == MEMLIMIT_COSTLY_BYTE:
            continue  # an in-bounds 2-4 GiB Argon2id run: correct, but too costly for a test
        with pytest.raises(KeyFileError) as caught:
            decode_key_file(_flip(sealed, index, mask), PASSPHRASE)
        if index >= len(MAGIC):  # still reads as encrypted: the very message of a wrong passphrase
            assert str(caught.value) == str(wrong.value), index


def test_truncated_and_extended_files_are_refused(sealed: bytes) -> None:
    for length in range(len(sealed)):
        for passphrase in (PASSPHRASE, None):
            with pytest.raises(KeyFileError):
                decode_key_file(sealed[:length], passphrase)
    for passphrase in (PASSPHRASE, None):
        with pytest.raises(KeyFileError):
            decode_key_file(sealed + b"\x00", passphrase)
        for plain in (SEED[:31], SEED + b"\x00", b""):
            with pytest.raises(KeyFileError):
                decode_key_file(plain, passphrase)


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [
        (0, 8 * 1024 * 1024),
        (33, 8 * 1024 * 1024),
        (2**32 - 1, 8 * 1024 * 1024),
        (1, 8 * 1024 - 1),
        (1, 0),
        (1, 4 * 1024**3 + 1),
        (1, 2**40),
        (1, 2**64 - 1),
    ],
)
def test_out_of_bounds_kdf_limits_are_refused_before_the_kdf(
    sealed: bytes, monkeypatch: pytest.MonkeyPatch, opslimit: int, memlimit: int
) -> None:
    crafted = _with_limits(sealed, opslimit, memlimit)
    monkeypatch.setattr(argon2id, "kdf", _no_kdf)
    started = time.perf_counter()
    for passphrase in (PASSPHRASE, None):
        with pytest.raises(KeyFileError):
            decode_key_file(crafted, passphrase)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("opslimit", "memlimit"), [(1, 8 * 1024), (32, 4 * 1024**3)])
def test_bounds_are_inclusive(
    sealed: bytes, monkeypatch: pytest.MonkeyPatch, opslimit: int, memlimit: int
) -> None:
    calls: list[tuple[int, int]] = []

    def spy(size: int, password: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
        calls.append((opslimit, memlimit))
        return bytes(size)  # not the real key: the tag fails, without spending 4 GiB

    monkeypatch.setattr(argon2id, "kdf", spy)
    with pytest.raises(KeyFileError):
        decode_key_file(_with_limits(sealed, opslimit, memlimit), PASSPHRASE)
    assert calls == [(opslimit, memlimit)]
    assert KdfParams(opslimit=opslimit, memlimit=memlimit).memlimit == memlimit


@pytest.mark.parametrize(
    "params",
    [
        {"opslimit": 0},
        {"opslimit": 33},
        {"opslimit": True},
        {"memlimit": 8 * 1024 - 1},
        {"memlimit": 4 * 1024**3 + 1},
        {"memlimit": 8.0 * 1024 * 1024},
    ],
)
def test_kdf_params_out_of_bounds_are_invalid_input(params: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        KdfParams(**params)  # type: ignore[arg-type]


def test_empty_or_invalid_passphrase_is_invalid_input(sealed: bytes) -> None:
    for bad in ("", "\ud800"):
        with pytest.raises(InvalidInputError):
            encode_key_file(SEED, bad, FAST)
        with pytest.raises(InvalidInputError):
            decode_key_file(sealed, bad)
    with pytest.raises(ValueError, match="empty"):
        encode_key_file(SEED, "", FAST)


def test_bad_seeds_and_injected_values_are_refused() -> None:
    for seed in (b"", SEED[:31], SEED + b"\x00"):
        with pytest.raises(InvalidKeyError):
            encode_key_file(seed, PASSPHRASE, FAST)
        with pytest.raises(InvalidKeyError):
            encode_key_file(seed, None)
    # A plain seed that starts with the magic would read back as an encrypted file.
    with pytest.raises(InvalidKeyError):
        encode_key_file(MAGIC + bytes(23), None)
    assert decode_key_file(encode_key_file(MAGIC + bytes(23), PASSPHRASE, FAST), PASSPHRASE) == (
        MAGIC + bytes(23)
    )
    with pytest.raises(InvalidInputError):
        encode_key_file(SEED, PASSPHRASE, FAST, _salt=bytes(15))
    with pytest.raises(InvalidInputError):
        encode_key_file(SEED, PASSPHRASE, FAST, _nonce=bytes(25))


def test_nfc_and_nfd_passphrases_give_the_same_key() -> None:
    composed = unicodedata.normalize("NFC", "Ça für naïve café 한국어")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    fixed = {"_salt": bytes(16), "_nonce": bytes(24)}
    assert encode_key_file(SEED, composed, FAST, **fixed) == encode_key_file(
        SEED, decomposed, FAST, **fixed
    )
    assert decode_key_file(encode_key_file(SEED, decomposed, FAST), composed) == SEED


def test_error_messages_never_contain_the_passphrase_or_key_bytes(
    sealed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-Passphrase-ü"
    blob = encode_key_file(SEED, secret, FAST)
    errors: list[Exception] = []
    attempts: list[tuple[bytes, str | None]] = [
        (blob, secret + "!"),
        (_flip(blob, 70, 1), secret),
        (_flip(blob, 3, 1), secret),
        (blob[:100], secret),
        (blob, None),
        (_with_limits(blob, 99, 2**50), secret),
    ]
    for data, passphrase in attempts:
        with pytest.raises((KeyFileError, PassphraseRequired)) as caught:
            decode_key_file(data, passphrase)
        errors.append(caught.value)
    with pytest.raises(InvalidInputError) as caught_input:
        decode_key_file(sealed, "\ud800" + secret)
    errors.append(caught_input.value)
    for error in errors:
        text = f"{error} {error!r}"
        for needle in (secret, secret + "!", SEED.hex(), repr(SEED), blob[HEADER_LEN:].hex()):
            assert needle not in text
        assert error.__cause__ is None


@settings(max_examples=10, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    passphrase=st.text(min_size=1, max_size=40),
    index=st.integers(len(MAGIC), ENCRYPTED_FILE_LEN - 1),
    mask=st.integers(1, 255),
)
def test_round_trip_and_tamper_property(
    seed: bytes, passphrase: str, index: int, mask: int
) -> None:
    blob = encode_key_file(seed, passphrase, FAST)
    assert len(blob) == ENCRYPTED_FILE_LEN
    assert decode_key_file(blob, passphrase) == seed
    assert decode_key_file(blob, unicodedata.normalize("NFD", passphrase)) == seed
    with pytest.raises(KeyFileError):
        decode_key_file(blob, passphrase + "x")
    if index == MEMLIMIT_COSTLY_BYTE:
        mask = 1  # 24 MiB rather than an in-bounds 2-4 GiB Argon2id run
    with pytest.raises(KeyFileError):
        decode_key_file(_flip(blob, index, mask), passphrase)
