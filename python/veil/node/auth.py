"""Signed client requests, as oxen-storage-server checks them.

A signed request carries ``pubkey`` (the account in hex: ``05`` + an X25519 key for a Session ID,
or ``03`` + an Ed25519 key), ``signature`` (base64 Ed25519 signature) and, for a ``05`` account,
``pubkey_ed25519`` (hex), which must convert to the account's X25519 key. What is signed depends on
the method (``docs/rpc.md``); most sign the method name, the namespace in decimal (empty for 0) and
a timestamp in milliseconds that must be within ``clock_skew_ms`` of the node's clock.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from veil import _core
from veil.errors import InvalidKeyError
from veil.node.errors import RpcError

__all__ = ["parse_account", "verify_signature"]

_HEX = frozenset("0123456789abcdefABCDEF")
SESSION_PREFIX = 0x05
ED25519_PREFIX = 0x03


def parse_account(pubkey: object) -> bytes:
    """The 33-byte account of a ``pubkey`` parameter (66 hex digits, ``05`` or ``03`` first)."""
    if not isinstance(pubkey, str) or len(pubkey) != 66 or not _HEX.issuperset(pubkey):
        raise RpcError.bad_request("pubkey must be 66 hexadecimal digits")
    account = bytes.fromhex(pubkey)
    if account[0] not in {SESSION_PREFIX, ED25519_PREFIX}:
        raise RpcError.bad_request("pubkey must start with 05 (Session ID) or 03 (Ed25519 key)")
    return account


def _signing_key(account: bytes, pubkey_ed25519: object) -> bytes:
    if account[0] == ED25519_PREFIX:
        return account[1:]
    if (
        not isinstance(pubkey_ed25519, str)
        or len(pubkey_ed25519) != 64
        or not _HEX.issuperset(pubkey_ed25519)
    ):
        raise RpcError.unauthorized("pubkey_ed25519 (64 hexadecimal digits) is required")
    try:
        ed_key = bytes.fromhex(pubkey_ed25519)
        x_key = _core.ed25519_public_key_to_x25519(ed_key)
    except (ValueError, InvalidKeyError):
        raise RpcError.unauthorized("pubkey_ed25519 is not a valid Ed25519 key") from None
    if not hmac.compare_digest(x_key, account[1:]):
        raise RpcError.unauthorized("pubkey_ed25519 does not belong to pubkey")
    return ed_key


def check_timestamp(timestamp: object, now_ms: int, skew_ms: int) -> int:
    """A signature timestamp (ms) within ``skew_ms`` of ``now_ms``."""
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise RpcError.bad_request("timestamp must be an integer (milliseconds since the epoch)")
    if abs(timestamp - now_ms) > skew_ms:
        raise RpcError.not_acceptable("timestamp is too far from the node's clock")
    return timestamp


def verify_signature(
    account: bytes, params: dict[str, object], signed: bytes
) -> tuple[bytes, bytes]:
    """Check ``params["signature"]`` over ``signed`` for ``account``; raise 401 if it fails.
    Returns (the Ed25519 key that signed, the signature)."""
    signature_b64 = params.get("signature")
    if not isinstance(signature_b64, str):
        raise RpcError.unauthorized("this request must be signed (signature is missing)")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise RpcError.bad_request("signature must be base64") from None
    key = _signing_key(account, params.get("pubkey_ed25519"))
    if len(signature) != 64 or not _core.ed25519_verify(key, signed, signature):
        raise RpcError.unauthorized("signature verification failed")
    return key, signature
