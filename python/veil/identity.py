"""Accounts: an Ed25519 key pair, its X25519 twin, its Session ID and its recovery phrase.

Byte-compatible with Session: a new account's 32-byte Ed25519 seed is 16 random bytes followed by
16 zero bytes (so that its recovery phrase has 13 words); the X25519 key pair is the standard
conversion of the Ed25519 one; the Session ID is ``"05"`` + hex(X25519 public key).
"""

from __future__ import annotations

import hmac
import secrets

from veil import _core
from veil.errors import InvalidKeyError
from veil.mnemonic import mnemonic_decode, mnemonic_encode
from veil.session_id import format_session_id

__all__ = ["Identity", "mnemonic_decode", "mnemonic_encode"]

_ZERO_HALF = bytes(16)


class Identity:
    """One account's keys: use :meth:`generate`, :meth:`from_seed` or :meth:`from_mnemonic`.

    The repr names the Session ID only; the seed and secret keys never appear in a repr or an error.
    """

    __slots__ = (
        "_ed25519_public_key",
        "_key_pair",
        "_seed",
        "_x25519_public_key",
        "_x25519_secret_key",
    )

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise InvalidKeyError("an Identity seed is 32 bytes (use Identity.from_seed for 16)")
        self._seed = seed
        # Expanded once: signing from the seed would expand it again on every signature (2x the
        # cost of a node's receipt).
        self._key_pair = _core.Ed25519KeyPair(seed)
        self._ed25519_public_key = self._key_pair.public_key
        self._x25519_secret_key = _core.ed25519_seed_to_x25519(seed)
        self._x25519_public_key = _core.x25519_public_key(self._x25519_secret_key)

    @classmethod
    def generate(cls) -> Identity:
        """A new account: 16 random bytes followed by 16 zero bytes, as Session does."""
        return cls(secrets.token_bytes(16) + _ZERO_HALF)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """An account from its 32-byte seed, or from 16 bytes padded with 16 zero bytes."""
        if not isinstance(seed, bytes):
            raise InvalidKeyError("a seed is bytes")
        if len(seed) == 16:
            return cls(seed + _ZERO_HALF)
        if len(seed) == 32:
            return cls(seed)
        raise InvalidKeyError(f"a seed is 16 or 32 bytes, got {len(seed)}")

    @classmethod
    def from_mnemonic(cls, phrase: str) -> Identity:
        """An account from its 13- or 25-word recovery phrase."""
        return cls.from_seed(mnemonic_decode(phrase))

    @property
    def seed(self) -> bytes:
        """The 32-byte Ed25519 seed. Secret."""
        return self._seed

    @property
    def mnemonic(self) -> str:
        """The recovery phrase: 13 words when the seed's last 16 bytes are zero, else 25."""
        if self._seed[16:] == _ZERO_HALF:
            return mnemonic_encode(self._seed[:16])
        return mnemonic_encode(self._seed)

    @property
    def session_id(self) -> str:
        return format_session_id(self._x25519_public_key)

    @property
    def ed25519_public_key(self) -> bytes:
        return self._ed25519_public_key

    @property
    def x25519_public_key(self) -> bytes:
        return self._x25519_public_key

    @property
    def x25519_secret_key(self) -> bytes:
        """The X25519 secret key (clamped SHA-512 of the seed, first half). Secret."""
        return self._x25519_secret_key

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``message``."""
        return self._key_pair.sign(message)

    def sign_many(self, messages: list[bytes]) -> list[bytes]:
        """The signature of each of ``messages``, made with the GIL released (for a thread that
        signs while the event loop runs)."""
        return self._key_pair.sign_many(messages)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self._ed25519_public_key)

    def __repr__(self) -> str:
        return f"Identity(session_id={self.session_id!r})"
