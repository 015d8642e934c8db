"""The account key file, ``HOME/identity.key``: the 32-byte Ed25519 seed, plain or sealed.

Without a passphrase the file is the seed as is (32 bytes, the format the client has always
written). With one, the seed is sealed with XChaCha20-Poly1305 under a key derived by Argon2id:

```
offset  size  field
     0     9  magic       "veil-key" 0x01   (the last byte is the format version)
     9    16  salt        random, the Argon2id salt
    25     4  opslimit    u32 big-endian, Argon2id passes               1 ≤ opslimit ≤ 32
    29     8  memlimit    u64 big-endian, Argon2id memory in bytes      8 KiB ≤ memlimit ≤ 4 GiB
    37    24  nonce       random, the XChaCha20-Poly1305 nonce
    61    48  sealed      XChaCha20-Poly1305(key, nonce, ad = bytes 0..60, seed (32)) ‖ tag (16)
   109        end of file

key = Argon2id(password = UTF-8(NFC(passphrase)), salt, opslimit, memlimit, 32 bytes)
```

The whole header (bytes 0 to 60) is the associated data, so the KDF limits cannot be changed
without the tag failing. The limits are checked against the bounds above *before* the KDF runs,
so a crafted file cannot make the client spend gigabytes of memory or minutes of time. A file
that starts with the magic is an encrypted file (whatever its length); any other file must be
exactly 32 bytes.

Every failure to open an encrypted file — a wrong passphrase, a truncated or altered file, limits
out of bounds — is the same :class:`KeyFileError` with the same message, which never contains the
passphrase or any key bytes. Reading an encrypted file without a passphrase is
:class:`PassphraseRequired`.
"""

from __future__ import annotations

import secrets
import struct
import unicodedata
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
from nacl.pwhash import argon2id

from veil.errors import InvalidInputError, InvalidKeyError, VeilError

__all__ = [
    "ENCRYPTED_FILE_LEN",
    "MAGIC",
    "SEED_LEN",
    "KdfParams",
    "KeyFileError",
    "PassphraseRequired",
    "decode_key_file",
    "encode_key_file",
    "is_encrypted",
]

MAGIC = b"veil-key\x01"
SEED_LEN = 32
_SALT_LEN = 16
_NONCE_LEN = 24
_TAG_LEN = 16
_LIMITS = struct.Struct(">IQ")  # opslimit (u32), memlimit (u64)
_HEADER_LEN = len(MAGIC) + _SALT_LEN + _LIMITS.size + _NONCE_LEN  # 61
ENCRYPTED_FILE_LEN = _HEADER_LEN + SEED_LEN + _TAG_LEN  # 109

_OPSLIMIT_MIN = 1
_OPSLIMIT_MAX = 32
_MEMLIMIT_MIN = 8 * 1024  # 8 KiB, Argon2id's own floor
_MEMLIMIT_MAX = 4 * 1024 * 1024 * 1024  # 4 GiB

_DAMAGED = "the key file is damaged, or the passphrase is wrong"
_DAMAGED_PLAIN = "the key file is damaged: an unencrypted key file is a 32-byte seed"


class KeyFileError(VeilError):
    """The key file is damaged, or encrypted and the passphrase is wrong (one message for both)."""


class PassphraseRequired(VeilError):
    """The key file is encrypted and no passphrase was given."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost: ``opslimit`` passes over ``memlimit`` bytes of memory.

    Raises :class:`~veil.errors.InvalidInputError` outside 1 ≤ opslimit ≤ 32 and
    8 KiB ≤ memlimit ≤ 4 GiB, the bounds :func:`decode_key_file` accepts.
    """

    opslimit: int = 3  # Argon2id passes
    memlimit: int = 64 * 1024 * 1024  # bytes

    def __post_init__(self) -> None:
        for value, low, high in (
            (self.opslimit, _OPSLIMIT_MIN, _OPSLIMIT_MAX),
            (self.memlimit, _MEMLIMIT_MIN, _MEMLIMIT_MAX),
        ):
            if type(value) is not int or not low <= value <= high:
                raise InvalidInputError(
                    f"KDF limits must be 1 ≤ opslimit ≤ 32 and 8 KiB ≤ memlimit ≤ 4 GiB "
                    f"(got opslimit={self.opslimit!r}, memlimit={self.memlimit!r})"
                )


_DEFAULT_PARAMS = KdfParams()


def _password(passphrase: object) -> bytes:
    """The Argon2id password: the passphrase NFC-normalised, as UTF-8."""
    if not isinstance(passphrase, str):
        raise InvalidInputError("a passphrase is text (str)")
    if not passphrase:
        raise InvalidInputError("a passphrase cannot be empty")
    try:
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("a passphrase must be valid Unicode text") from None


def _derive_key(password: bytes, salt: bytes, params: KdfParams) -> bytes:
    key: bytes = argon2id.kdf(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES,
        password,
        salt,
        opslimit=params.opslimit,
        memlimit=params.memlimit,
    )
    return key


def _random_or(value: bytes | None, length: int, what: str) -> bytes:
    if value is None:
        return secrets.token_bytes(length)
    if not isinstance(value, bytes) or len(value) != length:
        raise InvalidInputError(f"the {what} is {length} bytes")
    return value


def encode_key_file(
    seed: bytes,
    passphrase: str | None,
    params: KdfParams = _DEFAULT_PARAMS,
    *,
    _salt: bytes | None = None,
    _nonce: bytes | None = None,
) -> bytes:
    """The key file's bytes for ``seed``.

    Plain (``passphrase`` None): the 32-byte seed as is. Encrypted: ``MAGIC ‖ salt (16) ‖ opslimit
    (u32 BE) ‖ memlimit (u64 BE) ‖ nonce (24) ‖ XChaCha20-Poly1305(seed) (48)``, with the whole
    header (everything before the ciphertext) as the associated data; see the module docstring.

    ``_salt`` and ``_nonce`` fix the otherwise random salt and nonce, for known-answer tests only.
    Raises :class:`~veil.errors.InvalidKeyError` unless ``seed`` is 32 bytes, and
    :class:`~veil.errors.InvalidInputError` for an empty passphrase.
    """
    if not isinstance(seed, bytes) or len(seed) != SEED_LEN:
        raise InvalidKeyError("a seed is 32 bytes")
    if not isinstance(params, KdfParams):
        raise InvalidInputError("params must be KdfParams")
    if passphrase is None:
        if seed.startswith(MAGIC):  # would read back as a (broken) encrypted file; odds 2**-72
            raise InvalidKeyError("this seed cannot be stored unencrypted; set a passphrase")
        return seed
    password = _password(passphrase)
    salt = _random_or(_salt, _SALT_LEN, "salt")
    nonce = _random_or(_nonce, _NONCE_LEN, "nonce")
    header = MAGIC + salt + _LIMITS.pack(params.opslimit, params.memlimit) + nonce
    key = _derive_key(password, salt, params)
    sealed: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        seed, header, nonce, key
    )
    return header + sealed


def is_encrypted(data: bytes) -> bool:
    """Whether ``data`` is (or claims to be) an encrypted key file: it starts with MAGIC."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def decode_key_file(data: bytes, passphrase: str | None) -> bytes:
    """The 32-byte seed stored in key file ``data``.

    A plain file is returned as is, whatever ``passphrase`` is (:func:`is_encrypted` tells the
    caller that it should be re-encrypted). Raises :class:`PassphraseRequired` if the file is
    encrypted and ``passphrase`` is None; :class:`KeyFileError` for a wrong passphrase, a truncated
    or altered file, a wrong length, or KDF limits out of bounds (checked before the KDF runs);
    :class:`~veil.errors.InvalidInputError` for an empty passphrase.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInputError("key file data is bytes")
    data = bytes(data)
    password = None if passphrase is None else _password(passphrase)
    if not is_encrypted(data):
        if len(data) != SEED_LEN:
            raise KeyFileError(_DAMAGED_PLAIN)
        return data
    if len(data) != ENCRYPTED_FILE_LEN:
        raise KeyFileError(_DAMAGED)
    at = len(MAGIC)
    salt = data[at : at + _SALT_LEN]
    at += _SALT_LEN
    opslimit, memlimit = _LIMITS.unpack_from(data, at)
    at += _LIMITS.size
    nonce = data[at : at + _NONCE_LEN]
    header, sealed = data[:_HEADER_LEN], data[_HEADER_LEN:]
    try:
        params = KdfParams(opslimit=opslimit, memlimit=memlimit)
    except InvalidInputError:
        raise KeyFileError(_DAMAGED) from None
    if password is None:
        raise PassphraseRequired("the key file is encrypted; a passphrase is needed")
    try:
        key = _derive_key(password, salt, params)
        seed: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed, header, nonce, key
        )
    except (nacl.exceptions.CryptoError, RuntimeError, MemoryError):
        raise KeyFileError(_DAMAGED) from None
    if len(seed) != SEED_LEN:  # cannot happen with a valid tag over a 109-byte file
        raise KeyFileError(_DAMAGED)
    return seed
