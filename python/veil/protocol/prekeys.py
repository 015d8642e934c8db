"""Prekey bundles: the signed list of an account's devices' current hybrid (X25519 + ML-KEM-768)
public keys, which senders encrypt Veil v2 messages to (``docs/protocol.md``, "Forward secrecy and
post-quantum protection").

Each device makes its own prekey (a hybrid key pair from 32 random bytes, ``_core.hybrid_keypair``;
the secret never leaves the device) and rotates it every 12 hours. The public half goes into the
account config (``veil.client.account``: ``prekeys``, one entry per device), and any device of the
account publishes the bundle of every live device's current prekey, signed by the account's
identity key, in the account's public outbox namespace ``-21`` (one message, replaced by the next;
anyone may read it). Byte for byte::

    body   = msgpack {"v": 1,
                      "ed": bytes (32),          the account's Ed25519 key (its X25519 form is the
                                                 Session ID)
                      "t": int,                  the latest ``created`` among the keys (ms)
                      "keys": [[device (str, 16 hex), public (1,216 bytes), created (ms)], …]}
                                                 1 to 16 keys, sorted by device
    signed = "veil-prekeys-v1" ‖ Session ID key (32) ‖ body
    bundle = msgpack {"b": body, "s": Ed25519 signature of signed (64)}

The body depends only on the keys, so two devices that publish the same keys publish the same
bytes. A key's id, which a v2 message names so that the right device finds its slot, is
``BLAKE2b-64(key = "veil-prekey-id", public)``.

:func:`open_bundle` checks everything and raises :class:`PrekeyError` for anything wrong: a
signature that does not verify, an Ed25519 key that is not the account's, a malformed field, too
many keys, a public key of the wrong size. A sender takes the newest valid bundle it can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from veil import _core
from veil.errors import InvalidInputError, InvalidKeyError

__all__ = [
    "BUNDLE_NAMESPACE",
    "HYBRID_PUBLIC_LEN",
    "KEY_ID_LEN",
    "MAX_DEVICES",
    "Bundle",
    "Prekey",
    "PrekeyError",
    "key_id",
    "open_bundle",
    "sign_bundle",
]

VERSION = 1
BUNDLE_NAMESPACE = -21
"""The account's public outbox for its bundle (anyone reads it; only the account stores)."""
HYBRID_PUBLIC_LEN = 32 + 1184
KEY_ID_LEN = 8
MAX_DEVICES = 16
MAX_BUNDLE_BYTES = 32 * 1024
_CONTEXT = b"veil-prekeys-v1"
_ID_KEY = b"veil-prekey-id"


class PrekeyError(InvalidInputError):
    """A prekey bundle that is malformed or not signed by its account."""


def key_id(public: bytes) -> bytes:
    """``BLAKE2b-64(key = "veil-prekey-id", public)``: how a v2 message names a prekey."""
    return _core.blake2b(public, KEY_ID_LEN, _ID_KEY)


@dataclass(frozen=True, slots=True)
class Prekey:
    """One device's current prekey, as a bundle lists it."""

    device: str
    public: bytes
    created_ms: int

    @property
    def id(self) -> bytes:
        return key_id(self.public)


@dataclass(frozen=True, slots=True)
class Bundle:
    """An account's verified bundle."""

    account: bytes
    """The Session ID's X25519 key (32 bytes)."""
    published_ms: int
    keys: tuple[Prekey, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _body(ed25519_public: bytes, keys: list[Prekey]) -> bytes:
    ordered = sorted(keys, key=lambda k: k.device)
    fields = {
        "v": VERSION,
        "ed": ed25519_public,
        "t": max(k.created_ms for k in ordered),
        "keys": [[k.device, k.public, k.created_ms] for k in ordered],
    }
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def sign_bundle(seed: bytes, keys: list[Prekey]) -> bytes:
    """The bundle of ``keys`` signed by the account whose Ed25519 seed is ``seed``."""
    if not 0 < len(keys) <= MAX_DEVICES:
        raise PrekeyError(f"a bundle lists 1 to {MAX_DEVICES} prekeys")
    for key in keys:
        _check_prekey(key.device, key.public, key.created_ms)
    ed25519_public = _core.ed25519_public_key(seed)
    account = _core.ed25519_public_key_to_x25519(ed25519_public)
    body = _body(ed25519_public, keys)
    signature = _core.ed25519_sign(seed, _CONTEXT + account + body)
    packed: bytes = msgpack.packb({"b": body, "s": signature}, use_bin_type=True)
    return packed


def _check_prekey(device: object, public: object, created: object) -> None:
    if (
        not isinstance(device, str)
        or len(device) != 16
        or any(c not in "0123456789abcdef" for c in device)
        or not isinstance(public, bytes)
        or len(public) != HYBRID_PUBLIC_LEN
        or not _is_int(created)
        or not 0 < created < 2**63  # type: ignore[operator]
    ):
        raise PrekeyError("a bundle's prekey entry is malformed")


def _unpack(data: object) -> Any:
    if not isinstance(data, bytes) or len(data) > MAX_BUNDLE_BYTES:
        raise PrekeyError("a bundle is bytes, at most 32 KiB")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise PrekeyError("a bundle is not valid msgpack") from exc


def open_bundle(data: object, account: bytes) -> Bundle:
    """The bundle ``data`` of the account whose Session ID key is ``account``, checked whole."""
    outer = _unpack(data)
    if not isinstance(outer, dict):
        raise PrekeyError("a bundle is a map")
    body, signature = outer.get("b"), outer.get("s")
    if not isinstance(body, bytes) or not isinstance(signature, bytes) or len(signature) != 64:
        raise PrekeyError("a bundle has no body or signature")
    fields = _unpack(body)
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise PrekeyError("unsupported bundle version")
    ed25519_public, published, entries = fields.get("ed"), fields.get("t"), fields.get("keys")
    if not isinstance(ed25519_public, bytes) or len(ed25519_public) != 32:
        raise PrekeyError("a bundle's Ed25519 key is malformed")
    try:
        owner = _core.ed25519_public_key_to_x25519(ed25519_public)
    except InvalidKeyError:
        raise PrekeyError("a bundle's Ed25519 key is not a valid point") from None
    if owner != account:
        raise PrekeyError("a bundle's key is not the account's")
    if not _core.ed25519_verify(ed25519_public, _CONTEXT + account + body, signature):
        raise PrekeyError("a bundle's signature does not verify")
    if not isinstance(entries, list) or not 0 < len(entries) <= MAX_DEVICES:
        raise PrekeyError(f"a bundle lists 1 to {MAX_DEVICES} prekeys")
    keys = []
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 3:
            raise PrekeyError("a bundle's prekey entry is malformed")
        _check_prekey(*entry)
        keys.append(Prekey(entry[0], entry[1], entry[2]))
    if len({k.device for k in keys}) != len(keys) or not isinstance(published, int):
        raise PrekeyError("a bundle lists a device twice or has no time")
    return Bundle(account=account, published_ms=published, keys=tuple(keys))
