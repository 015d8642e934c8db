"""Signed client requests, checked as Session's storage servers check them (``docs/rpc.md``).

A request names its account in ``pubkey``: 66 hex digits, a one-byte prefix and a 32-byte key.
``05`` is a Session ID (an X25519 key): its owner signs with the Ed25519 key whose X25519 form is
the account, given as ``pubkey_ed25519``, or without it with the 32 bytes read as an Ed25519 key.
Every other prefix (``03`` for groups) is an Ed25519 key that signs itself. ``signature`` is base64
of a 64-byte Ed25519 signature over the method's string (:mod:`veil.protocol.storage_rpc`).

With ``subaccount`` (a 36-byte token, base64 or hex) and ``subaccount_sig`` (the account key's
signature of the token), the request is signed by the token's own key instead, and is allowed
only what the token's flags allow, for the token's prefix (or any with the any-prefix flag), and
only while the account has not revoked the token.

A ``revoke_subaccount`` or ``unrevoke_subaccount`` a member learns from another by anti-entropy is
the owner's own signed request, kept as signed; ``revocation_acceptable`` checks it as the storage
RPC checks one from a client (the owner's signature, no subaccount, as many tokens as a client may
name), and refuses a timestamp further ahead of the clock than ``clock_skew_ms``.

Every way a signature can fail — a bad signature, a ``pubkey_ed25519`` that is not the account's,
a token not signed by the account, lacking the flag, for another prefix, or revoked — answers the
same 401 text, so an answer does not tell which part was wrong. Comparisons of keys are constant
time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from veil import _core
from veil.errors import InvalidKeyError
from veil.node.config import Limits
from veil.node.errors import RpcError
from veil.protocol.node_rpc import Revocation
from veil.protocol.storage_rpc import (
    SUBACCOUNT_ANY_PREFIX,
    SUBACCOUNT_DELETE,
    SUBACCOUNT_TOKEN_LEN,
    SUBACCOUNT_WRITE,
    is_public_outbox_namespace,
)

__all__ = [
    "Authorised",
    "owns",
    "parse_account",
    "parse_token",
    "revocation_acceptable",
    "store_access",
    "token_allows",
    "verify_request",
]

_HEX = frozenset("0123456789abcdefABCDEF")
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
SESSION_PREFIX = 0x05
MIN_TIMESTAMP_MS = 1_000_000_000
"""Below this a signed timestamp is taken for seconds, not milliseconds (as the storage RPC reads
them), and refused."""

RevokedCheck = Callable[[bytes, bytes], bool]
"""``(account, token) -> revoked?`` — the node's store answers it."""


@dataclass(frozen=True, slots=True)
class Authorised:
    """Who authorised a request: the account's own Ed25519 key (``owner``), the signature, and
    the subaccount token and its signature if a subaccount signed (else empty)."""

    owner: bytes
    signature: bytes
    token: bytes = b""
    token_signature: bytes = b""


def token_allows(
    account: bytes,
    owner: bytes,
    token: bytes,
    token_signature: bytes,
    *,
    access: int,
    revoked: RevokedCheck | None,
) -> bool:
    """Whether a subaccount ``token`` lets its key act for ``account``: for the account's prefix
    (or any, with the any-prefix flag), with every flag of ``access``, signed by the account's key
    ``owner``, and not revoked (``revoked`` None: not checked)."""
    return (
        (token[0] == account[0] or bool(token[1] & SUBACCOUNT_ANY_PREFIX))
        and token[1] & access == access
        and _core.ed25519_verify(owner, token, token_signature)
        and not (revoked is not None and revoked(account, token))
    )


def store_access(namespace: int) -> int:
    """The subaccount flags a store to ``namespace`` needs: write, and delete too in a public
    outbox (storing there replaces what it held)."""
    return SUBACCOUNT_WRITE | (SUBACCOUNT_DELETE if is_public_outbox_namespace(namespace) else 0)


def owns(account: bytes, key: bytes) -> bool:
    """Whether the Ed25519 ``key`` is ``account``'s own: its key, or for a Session ID (05) the
    key whose X25519 form it is."""
    if len(key) != 32:
        return False
    if hmac.compare_digest(key, account[1:]):
        return True
    if account[0] != SESSION_PREFIX:
        return False
    try:
        return hmac.compare_digest(_core.ed25519_public_key_to_x25519(key), account[1:])
    except InvalidKeyError:
        return False


def parse_account(pubkey: object) -> bytes:
    """The 33-byte account of a ``pubkey`` parameter (66 hex digits)."""
    if not isinstance(pubkey, str) or len(pubkey) != 66 or not _HEX.issuperset(pubkey):
        raise RpcError.invalid("Pubkey must be 66 hex digits (33 bytes) long")
    return bytes.fromhex(pubkey)


def _b64_signature(text: object, what: str) -> bytes:
    if (
        not isinstance(text, str)
        or not (len(text) == 86 or (len(text) == 88 and text.endswith("==")))
        or not _B64.issuperset(text)
    ):
        raise RpcError.invalid(f"invalid {what}: expected base64 encoded Ed25519 signature")
    try:
        return base64.b64decode(text + ("==" if len(text) == 86 else ""), validate=True)
    except (binascii.Error, ValueError):
        raise RpcError.invalid(
            f"invalid {what}: expected base64 encoded Ed25519 signature"
        ) from None


def parse_token(text: object, what: str = "subaccount") -> bytes:
    """A 36-byte subaccount token given as base64 (48 characters) or hex (72 digits)."""
    if isinstance(text, str):
        try:
            if len(text) == SUBACCOUNT_TOKEN_LEN * 4 // 3 and _B64.issuperset(text):
                return base64.b64decode(text, validate=True)
            if len(text) == SUBACCOUNT_TOKEN_LEN * 2 and _HEX.issuperset(text):
                return bytes.fromhex(text)
        except (binascii.Error, ValueError):
            pass
    raise RpcError.invalid(f"invalid {what}: expected base64 or hex-encoded subaccount token")


def parse_signer(account: bytes, params: dict[str, object]) -> tuple[bytes | None, bytes]:
    """(``pubkey_ed25519`` if given, the signature) of a signed request; 400 if malformed."""
    if params.get("signature") is None:
        raise RpcError.invalid("Required field 'signature' missing")
    ed_text = params.get("pubkey_ed25519")
    ed_key = None
    if ed_text is not None:
        if account[0] != SESSION_PREFIX:
            raise RpcError.invalid("pubkey_ed25519 is only permitted for 05[...] pubkeys")
        if not isinstance(ed_text, str) or len(ed_text) != 64:
            raise RpcError.invalid("Invalid pubkey_ed25519: expected 64 hex char or 32 byte pubkey")
        if not _HEX.issuperset(ed_text):
            raise RpcError.invalid("invalid pubkey_ed25519: value is not hex")
        ed_key = bytes.fromhex(ed_text)
    return ed_key, _b64_signature(params.get("signature"), "signature")


def verify_request(
    method: str,
    account: bytes,
    params: dict[str, object],
    signed: bytes,
    *,
    access: int,
    revoked: RevokedCheck | None,
    allow_subaccount: bool = True,
    failure: str | None = None,
) -> Authorised:
    """Check a signed request for ``account``; raise 400 if malformed, 401 if it does not verify.

    ``access`` is the subaccount flags the method needs; ``revoked`` None skips the revocation
    check (namespaces a removed member may still read). ``failure`` is the 401 text (by default
    ``"<method> signature verification failed"``)."""
    ed_key, signature = parse_signer(account, params)
    token = token_signature = b""
    if allow_subaccount and params.get("subaccount") not in (None, ""):
        token = parse_token(params.get("subaccount"))
        if params.get("subaccount_sig") is None:
            raise RpcError.invalid(
                "invalid subaccount: subaccount_sig is required when using subaccount"
            )
        token_signature = _b64_signature(params.get("subaccount_sig"), "subaccount signature")
    refused = RpcError(401, failure or f"{method} signature verification failed")
    owner = account[1:]
    if ed_key is not None:
        try:
            x_key = _core.ed25519_public_key_to_x25519(ed_key)
        except InvalidKeyError:
            raise refused from None
        if not hmac.compare_digest(x_key, account[1:]):
            raise refused
        owner = ed_key
    signer = owner
    if token:
        if not token_allows(account, owner, token, token_signature, access=access, revoked=revoked):
            raise refused
        signer = token[4:]
    if not _core.ed25519_verify(signer, signed, signature):
        raise refused
    return Authorised(owner, signature, token, token_signature)


def revocation_acceptable(account: bytes, request: Revocation, limits: Limits, now_ms: int) -> bool:
    """Whether a signed revocation learnt from another member may decide ``account``'s tokens:
    at most as many tokens as a client's request may name (``account_max_revoked`` to revoke,
    ``delete_max_hashes`` to unrevoke), a timestamp in milliseconds and no more than
    ``clock_skew_ms`` ahead of ``now_ms``, and signed by the account's owner — checked by
    :func:`verify_request` as the storage RPC checks a ``revoke_subaccount`` (no subaccount)."""
    most = limits.account_max_revoked if request.revoke else limits.delete_max_hashes
    if not 0 < len(request.tokens) <= most:
        return False
    if not MIN_TIMESTAMP_MS <= request.timestamp_ms <= now_ms + limits.clock_skew_ms:
        return False
    params: dict[str, object] = {"signature": base64.b64encode(request.signature).decode("ascii")}
    if request.ed25519 is not None:
        params["pubkey_ed25519"] = request.ed25519.hex()
    try:
        verify_request(
            request.method,
            account,
            params,
            request.signed(),
            access=0,
            revoked=None,
            allow_subaccount=False,
        )
    except RpcError:
        return False
    return True
