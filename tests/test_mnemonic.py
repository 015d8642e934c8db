"""Tests for veil.mnemonic: Session's 13-word (Monero electrum-style) recovery phrase."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import zlib
from collections.abc import Callable
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.errors import MnemonicError, VeilError
from veil.mnemonic import mnemonic_decode, mnemonic_encode

# (hex seed, phrase) pairs published by others; every one was also cross-checked
# against the `monero` PyPI package (1.1.1), which is not a dependency of Veil.
VECTORS = [
    # @session.js/mnemonic tests and README (Session's own 13-word phrases).
    (
        "39038c8988db02c1af44e8c847bd9713",
        "puffin luxury annoyed rustled memoir faxed smidgen puddle kiwi nylon utopia zinger kiwi",
    ),
    # session-foundation/libsession-util tests/test_mnemonics.cpp, "checksum word matches the
    # reference algorithm" (produced from oxen-core's electrum-words.cpp and session-ios).
    (
        "000102030405060708090a0b0c0d0e0f",
        "amaze buffet cake entrance symptoms tiger lamb maze nestle python dusted faxed faxed",
    ),
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "amaze buffet cake entrance symptoms tiger lamb maze nestle python dusted faxed "
        "update vague zinger boxes ornament renting glass gained island nabbing afield "
        "calamity boxes",
    ),
    # Same file, "an all-zero seed still checksums".
    (
        "00000000000000000000000000000000",
        " ".join(["abbey"] * 13),
    ),
    # monero-python (monero-ecosystem/monero-python) tests/test_seed.py: a known good 25-word seed.
    (
        "8ffa9f586b86d294d93731765d192765311bddc76a4fa60311f8af36bbf6fb06",
        "wedge going quick racetrack auburn physics lectures light waist axes whipped habitat "
        "square awkward together injury niece nugget guarded hive obnoxious waxing faked "
        "folding square",
    ),
    # MMGen test/modtest_d/xmrseed.py, a vector it credits to the Monero repo.
    (
        "148d78d2aba7dbca5cd8f6abcfb0b3c009ffbdbea1ff373d50ed94d78286640e",
        "velvet lymph giddy number token physics poetry unquoted nibs useful sabotage limits "
        "benches lifestyle eden nitrogen anvil fewest avoid batch vials washing fences goat "
        "unquoted",
    ),
]

# session-foundation/libsession-util tests/test_mnemonics.cpp pins the English list with
# SHA-512("libsession-util mnemonic test vector") encoded without checksum words; these are the
# first 24 of its 48 words, i.e. the data words of the first 32 bytes of that digest.
LIBSESSION_DIGEST = hashlib.sha512(b"libsession-util mnemonic test vector").digest()
LIBSESSION_WORDS = [
    *("threaten", "efficient", "wives", "skirting", "repent", "ashtray"),
    *("rural", "ammo", "reunion", "yoyo", "already", "tucks"),
    *("attire", "waxing", "uphill", "template", "ghetto", "anxiety"),
    *("utensils", "newt", "safety", "paper", "quote", "pebbles"),
]

# Phrases that Session clients accept (session.js and session_py_client tests derive Session IDs
# from them); they must decode and re-encode to themselves.
SESSION_PHRASES = [
    " ".join(["session"] * 13),
    " ".join(["love"] * 13),
    "unknown number jukebox pledge lipstick sieve tumbling federal womanly outbreak tapestry "
    "gorilla sieve",
]

REFERENCE = VECTORS[1][1].split()  # amaze buffet ... faxed faxed


def _word_list() -> list[str]:
    text = resources.files("veil.wordlists").joinpath("english.txt").read_text("ascii")
    return text.split()


def _with_checksum(data_words: list[str]) -> str:
    """Append the checksum word, computed independently of veil.mnemonic."""
    crc = zlib.crc32("".join(w[:3] for w in data_words).encode("ascii"))
    return " ".join([*data_words, data_words[crc % len(data_words)]])


# --- the word list ----------------------------------------------------------------------------


def test_the_word_list_has_1626_distinct_lowercase_ascii_words() -> None:
    words = _word_list()
    assert len(words) == 1626
    assert len(set(words)) == 1626
    assert all(w.isascii() and w.isalpha() and w.islower() and len(w) >= 4 for w in words)
    assert (words[0], words[-1]) == ("abbey", "zoom")


def test_every_word_in_the_list_has_a_unique_three_letter_prefix() -> None:
    assert len({w[:3] for w in _word_list()}) == 1626


def test_the_word_list_is_byte_for_byte_the_monero_english_list() -> None:
    data = resources.files("veil.wordlists").joinpath("english.txt").read_bytes()
    assert (
        hashlib.sha256(data).hexdigest()
        == "eaa6bce7dd92f4d6dd74f224264e0ef4ad21095d68ec77616b26ceb599baf4f7"
    )


def test_the_word_list_matches_libsession_pinned_words() -> None:
    assert mnemonic_encode(LIBSESSION_DIGEST[:32]).split()[:24] == LIBSESSION_WORDS
    assert mnemonic_encode(LIBSESSION_DIGEST[:16]).split()[:12] == LIBSESSION_WORDS[:12]


def test_bytes_01020304_map_to_word_indices_967_84_109() -> None:
    # Worked by hand: x = 0x04030201 = 67305985 = 967 + 1626 * 41393, 41393 = 25 * 1626 + 743;
    # w1 = 967, w2 = (41393 + 967) % 1626 = 84, w3 = (25 + 84) % 1626 = 109.
    words = _word_list()
    phrase = mnemonic_encode(bytes([1, 2, 3, 4]) * 4).split()
    assert phrase[:3] == [words[967], words[84], words[109]] == ["object", "anxiety", "asked"]


def test_importing_the_module_does_not_read_the_word_list() -> None:
    code = "import veil.mnemonic as m; assert m._words.cache_info().currsize == 0"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- known vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed_hex", "phrase"), VECTORS)
def test_encode_produces_the_known_phrase(seed_hex: str, phrase: str) -> None:
    assert mnemonic_encode(bytes.fromhex(seed_hex)) == phrase


@pytest.mark.parametrize(("seed_hex", "phrase"), VECTORS)
def test_decode_recovers_the_known_seed(seed_hex: str, phrase: str) -> None:
    assert mnemonic_decode(phrase) == bytes.fromhex(seed_hex)


@pytest.mark.parametrize("phrase", SESSION_PHRASES)
def test_phrases_session_accepts_decode_and_encode_back_to_themselves(phrase: str) -> None:
    seed = mnemonic_decode(phrase)
    assert len(seed) == 16
    assert mnemonic_encode(seed) == phrase


def test_an_all_zero_seed_encodes_to_abbey_thirteen_times_and_back() -> None:
    phrase = mnemonic_encode(bytes(16))
    assert phrase == " ".join(["abbey"] * 13)
    assert mnemonic_decode(phrase) == bytes(16)
    assert mnemonic_decode(mnemonic_encode(bytes(32))) == bytes(32)


def test_the_checksum_word_repeats_one_of_the_data_words() -> None:
    words = mnemonic_encode(bytes(range(16))).split()
    assert words[-1] in words[:-1]


# --- round trips ------------------------------------------------------------------------------


@given(st.binary(min_size=16, max_size=16))
def test_a_random_16_byte_seed_round_trips_through_13_words(seed: bytes) -> None:
    phrase = mnemonic_encode(seed)
    assert len(phrase.split(" ")) == 13
    assert phrase == phrase.lower()
    assert mnemonic_decode(phrase) == seed


@given(st.binary(min_size=32, max_size=32))
def test_a_random_32_byte_seed_round_trips_through_25_words(seed: bytes) -> None:
    phrase = mnemonic_encode(seed)
    assert len(phrase.split(" ")) == 25
    assert mnemonic_decode(phrase) == seed


@given(st.binary(min_size=16, max_size=16), st.randoms(use_true_random=False))
def test_a_phrase_decodes_however_it_is_cased_spaced_or_abbreviated(
    seed: bytes, rnd: random.Random
) -> None:
    mangled = []
    for original in mnemonic_encode(seed).split():
        word = rnd.choice(
            [original, original[:3], original[:3] + "xyz", original.upper(), original.title()]
        )
        mangled.append(word + rnd.choice([" ", "  ", "\t", "\n", " \r\n "]))
    assert mnemonic_decode(" \n" + "".join(mangled)) == seed


# --- lenient input ----------------------------------------------------------------------------


def test_decode_accepts_mixed_case_and_extra_whitespace() -> None:
    phrase = "  PUFFIN\tLuxury annoyed\n\nrustled MEMOIR faxed smidgen puddle kiwi nylon "
    phrase += "Utopia   zinger   KiWi \n"
    assert mnemonic_decode(phrase) == bytes.fromhex(VECTORS[0][0])


def test_decode_accepts_words_given_as_their_three_letter_prefix() -> None:
    phrase = " ".join(w[:3] for w in REFERENCE)
    assert mnemonic_decode(phrase) == bytes(range(16))


def test_decode_accepts_words_with_a_different_suffix() -> None:
    # From libsession-util tests/test_mnemonics.cpp, "typos past the third letter".
    phrase = (
        "amazing buffalo cakewalk entropy symbol tigger lambda mazurka nestling pythons "
        "dustpan faxing faxing"
    )
    assert mnemonic_decode(phrase) == bytes(range(16))


def test_decode_accepts_a_checksum_word_with_a_mistyped_tail() -> None:
    assert mnemonic_decode(" ".join([*REFERENCE[:12], "faxidermy"])) == bytes(range(16))


# --- rejected input ---------------------------------------------------------------------------


def test_decode_rejects_a_phrase_with_a_wrong_checksum_word() -> None:
    with pytest.raises(MnemonicError, match="checksum"):
        mnemonic_decode(" ".join([*REFERENCE[:12], "amaze"]))


def test_decode_rejects_a_phrase_with_two_data_words_transposed() -> None:
    swapped = [REFERENCE[1], REFERENCE[0], *REFERENCE[2:]]
    with pytest.raises(MnemonicError, match="checksum"):
        mnemonic_decode(" ".join(swapped))


def test_decode_rejects_a_phrase_with_one_data_word_changed() -> None:
    changed = [*REFERENCE[:11], "gagged", REFERENCE[12]]
    with pytest.raises(MnemonicError, match="checksum"):
        mnemonic_decode(" ".join(changed))


@pytest.mark.parametrize("position", [1, 7, 13])
def test_decode_rejects_an_unknown_word_and_names_its_position(position: int) -> None:
    words = list(REFERENCE)
    words[position - 1] = "zzzzz"
    with pytest.raises(MnemonicError, match=f"word {position} is not in the word list"):
        mnemonic_decode(" ".join(words))


@pytest.mark.parametrize("bad", ["ab", "a", "éclair", "\u212aiwi", "ki-wi", "123"])
def test_decode_rejects_short_non_ascii_or_non_letter_words(bad: str) -> None:
    # "\u212a" is the Kelvin sign, which lowercases to an ASCII "k".
    with pytest.raises(MnemonicError, match="word 9 is not in the word list"):
        mnemonic_decode(" ".join([*REFERENCE[:8], bad, *REFERENCE[9:]]))


def test_error_messages_do_not_echo_the_phrase() -> None:
    phrase = " ".join([*REFERENCE[:12], "zzzzz"])
    for bad in (phrase, " ".join([*REFERENCE[:12], "amaze"]), " ".join(REFERENCE[:12])):
        with pytest.raises(MnemonicError) as info:
            mnemonic_decode(bad)
        message = str(info.value)
        assert not any(word in message for word in {*REFERENCE, "zzzzz"})


@pytest.mark.parametrize("count", [0, 1, 3, 12, 14, 24, 26, 37])
def test_decode_rejects_a_phrase_with_the_wrong_number_of_words(count: int) -> None:
    words = (REFERENCE * 3)[:count]
    with pytest.raises(MnemonicError, match=f"13 or 25 words, got {count}"):
        mnemonic_decode(" ".join(words))


def test_decode_rejects_12_and_24_words_without_the_checksum_word() -> None:
    for phrase in (VECTORS[1][1], VECTORS[2][1]):
        with pytest.raises(MnemonicError, match="13 or 25 words"):
            mnemonic_decode(phrase.rsplit(" ", 1)[0])


def test_decode_rejects_a_word_triple_that_overflows_32_bits() -> None:
    # abbey abbey zoom: 0 + 0 + 1625 * 1626**2 = 4_296_298_500 > 2**32 - 1 (libsession-util test).
    phrase = _with_checksum(["abbey", "abbey", "zoom", *["abbey"] * 9])
    with pytest.raises(MnemonicError, match="words 1 to 3 do not encode 4 bytes"):
        mnemonic_decode(phrase)


@pytest.mark.parametrize("value", [b"abbey " * 13, None, 13, ["abbey"] * 13])
def test_decode_rejects_input_that_is_not_a_str(value: object) -> None:
    with pytest.raises(MnemonicError, match="must be a str"):
        mnemonic_decode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 4, 12, 15, 17, 20, 24, 31, 33, 64])
def test_encode_rejects_a_seed_that_is_not_16_or_32_bytes(length: int) -> None:
    with pytest.raises(MnemonicError, match=f"16 or 32 bytes, got {length}"):
        mnemonic_encode(bytes(length))


@pytest.mark.parametrize("value", ["00" * 16, None, list(range(16))])
def test_encode_rejects_a_seed_that_is_not_bytes(value: object) -> None:
    with pytest.raises(MnemonicError, match="must be bytes"):
        mnemonic_encode(value)  # type: ignore[arg-type]


def test_every_error_is_a_mnemonic_error_a_veil_error_and_a_value_error() -> None:
    bad_calls: list[Callable[[], object]] = [
        lambda: mnemonic_decode(" ".join([*REFERENCE[:12], "amaze"])),
        lambda: mnemonic_decode(" ".join([*REFERENCE[:12], "zzzzz"])),
        lambda: mnemonic_decode(" ".join(REFERENCE[:12])),
        lambda: mnemonic_decode(b"abbey"),  # type: ignore[arg-type]
        lambda: mnemonic_encode(bytes(15)),
    ]
    for call in bad_calls:
        with pytest.raises(MnemonicError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, VeilError)
