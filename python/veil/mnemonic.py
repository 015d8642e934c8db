"""Session's recovery phrase: Monero's "electrum-style" mnemonic, English list.

A 16-byte seed becomes 13 words and a 32-byte seed 25 words. Each 4-byte chunk,
read little-endian as ``x``, becomes three indices into the 1626-word list::

    w1 = x % n
    w2 = (x // n + w1) % n
    w3 = (x // n**2 + w2) % n

and a checksum word is appended: the data word at index
``crc32(first 3 letters of each data word, concatenated) % (number of data words)``.

Only a word's first three letters are significant (they are unique in the list),
so a phrase may be typed in any case, with any whitespace, and with words
truncated to their prefix or with a mistyped tail.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from importlib import resources

from veil.errors import MnemonicError

__all__ = ["mnemonic_decode", "mnemonic_encode"]

_N = 1626
_PREFIX_LEN = 3
_SEED_LENGTHS = (16, 32)
_WORD_COUNTS = (13, 25)  # 3 words per 4 bytes, plus the checksum word


@functools.cache
def _words() -> tuple[str, ...]:
    """Return the English word list, loaded from the package on first use."""
    text = resources.files("veil.wordlists").joinpath("english.txt").read_text("ascii")
    words = tuple(text.split())
    if len(words) != _N:
        raise RuntimeError(f"veil/wordlists/english.txt has {len(words)} words, expected {_N}")
    return words


@functools.cache
def _prefix_index() -> Mapping[str, int]:
    """Map each word's 3-letter prefix to its index in the list."""
    index = {word[:_PREFIX_LEN]: i for i, word in enumerate(_words())}
    if len(index) != _N:
        raise RuntimeError("veil/wordlists/english.txt: 3-letter prefixes are not unique")
    return index


def _checksum_index(prefixes: Sequence[str]) -> int:
    """Return the index of the data word that serves as the checksum word."""
    return zlib.crc32("".join(prefixes).encode("ascii")) % len(prefixes)


def mnemonic_encode(seed: bytes) -> str:
    """Encode a 16- or 32-byte seed as a 13- or 25-word phrase (lowercase, single spaces)."""
    if not isinstance(seed, bytes):
        raise MnemonicError("seed must be bytes")
    if len(seed) not in _SEED_LENGTHS:
        raise MnemonicError(f"seed must be 16 or 32 bytes, got {len(seed)}")
    words = _words()
    out: list[str] = []
    for i in range(0, len(seed), 4):
        x = int.from_bytes(seed[i : i + 4], "little")
        w1 = x % _N
        w2 = (x // _N + w1) % _N
        w3 = (x // _N**2 + w2) % _N
        out += (words[w1], words[w2], words[w3])
    out.append(out[_checksum_index([w[:_PREFIX_LEN] for w in out])])
    return " ".join(out)


def _word_index(word: str, position: int) -> int:
    """Return the list index of ``word`` by its 3-letter prefix; ``position`` is 1-based."""
    index = _prefix_index().get(word[:_PREFIX_LEN].lower()) if word.isascii() else None
    if index is None:
        raise MnemonicError(f"recovery phrase word {position} is not in the word list")
    return index


def mnemonic_decode(phrase: str) -> bytes:
    """Decode a 13- or 25-word phrase to its 16- or 32-byte seed, verifying the checksum word."""
    if not isinstance(phrase, str):
        raise MnemonicError("recovery phrase must be a str")
    given = phrase.split()
    if len(given) not in _WORD_COUNTS:
        raise MnemonicError(f"recovery phrase must have 13 or 25 words, got {len(given)}")
    indices = [_word_index(word, pos) for pos, word in enumerate(given, start=1)]
    data, check = indices[:-1], indices[-1]

    words = _words()
    prefixes = [words[i][:_PREFIX_LEN] for i in data]
    if data[_checksum_index(prefixes)] != check:
        raise MnemonicError("recovery phrase checksum word does not match")

    out = bytearray()
    for t in range(0, len(data), 3):
        w1, w2, w3 = data[t : t + 3]
        x = w1 + _N * ((w2 - w1) % _N) + _N**2 * ((w3 - w2) % _N)
        if x >= 2**32:
            raise MnemonicError(f"recovery phrase words {t + 1} to {t + 3} do not encode 4 bytes")
        out += x.to_bytes(4, "little")
    return bytes(out)
