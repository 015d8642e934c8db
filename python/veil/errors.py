"""Veil's exception tree.

Every error Veil raises is a :class:`VeilError`. Errors caused by the caller's input also subclass
:class:`ValueError`, so that code written against the standard library catches them naturally.

Messages never contain key material, plaintext, or anything an attacker could use as an oracle:
every failure to decrypt or authenticate is the same :class:`DecryptionError` with the same message.
"""

from __future__ import annotations


class VeilError(Exception):
    """Base class of every Veil error."""


class InvalidInputError(VeilError, ValueError):
    """The input is malformed: wrong length, wrong type of value, out of its documented range."""


class InvalidKeyError(InvalidInputError):
    """A key has the wrong length, or cannot be used (a low-order point, not a curve point)."""


class InvalidSessionIdError(InvalidInputError):
    """A Session ID is not ``05`` followed by 64 hexadecimal digits of a usable X25519 key."""


class MnemonicError(InvalidInputError):
    """A recovery phrase has an unknown word, the wrong number of words, or a wrong checksum."""


class InputTooLargeError(InvalidInputError):
    """An input exceeds a documented size limit."""


class DecryptionError(InvalidInputError):
    """Decryption or authentication failed. Carries no detail by design."""
