"""The client storage RPC's signed strings, as Session's storage servers define them.

A node verifies (``veil.node.rpc``) and a client signs (the builders below) the same strings, made
here once; a node signs its own part of a swarm answer (``docs/rpc.md``, "Swarm answers") and a
client checks it with the same functions. ``‖`` is concatenation; numbers are decimal text; ``ns``
is the namespace in decimal, empty for namespace 0, or ``all`` where a method takes ``"all"``:

```
what the client signs                               what each swarm member signs back
store          "store" ‖ ns ‖ sig_timestamp          hash
retrieve       "retrieve" ‖ ns ‖ timestamp           —
delete         "delete" ‖ hash₁ ‖ hash₂ ‖ …          pubkey ‖ requested… ‖ deleted… (sorted)
delete_all     "delete_all" ‖ ns ‖ timestamp         pubkey ‖ timestamp ‖ deleted… (sorted)
delete_before  "delete_before" ‖ ns ‖ before         pubkey ‖ before ‖ deleted… (sorted)
expire_all     "expire_all" ‖ ns ‖ expiry            pubkey ‖ expiry ‖ updated… (sorted)
expire         "expire" ‖ mode ‖ expiry… ‖ hash…     pubkey ‖ expiry… ‖ requested… ‖ updated…
                                                       ‖ (hash ‖ expiry of each unchanged, by hash)
get_expiries   "get_expiries" ‖ timestamp ‖ hash…    —
revoke_subaccount   "revoke_subaccount" ‖ timestamp ‖ token…      pubkey ‖ timestamp ‖ token…
unrevoke_subaccount "unrevoke_subaccount" ‖ timestamp ‖ token…    pubkey ‖ timestamp ‖ token…
```

``pubkey`` is the account in hex (66 digits), ``mode`` is ``""``, ``"shorten"`` or ``"extend"``,
tokens are the raw 36 bytes of subaccount tokens. Example: Alice's retrieve of namespace 0 at
1700000000000 ms signs ``retrieve1700000000000``; of namespace -5, ``retrieve-51700000000000``.

A subaccount token (``subaccount_token``) lets another Ed25519 key act for an account: prefix (1)
‖ flags (1: read 1, write 2, delete 4, any prefix 8) ‖ 0 0 ‖ its Ed25519 key (32), signed by the
account's key; the request is then signed by the subaccount's key.

The builders return the complete ``params`` a node expects: ``pubkey`` (the account's Session ID),
``pubkey_ed25519`` (hex) and ``signature`` (base64) beside the method's own fields. They check
what they sign (a namespace is a signed 16-bit integer, every hash a well-formed message hash) and
raise :class:`InvalidInputError` otherwise, so a client never signs a string a node chose.
Timestamps default to now.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from veil import _core
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.protocol.hashes import hash_from_b64
from veil.session_id import parse_session_id

__all__ = [
    "EXPIRE_MODES",
    "NAMESPACE_MAX",
    "NAMESPACE_MIN",
    "SUBACCOUNT_ANY_PREFIX",
    "SUBACCOUNT_DELETE",
    "SUBACCOUNT_READ",
    "SUBACCOUNT_TOKEN_LEN",
    "SUBACCOUNT_WRITE",
    "IdentitySigner",
    "KeySigner",
    "Namespace",
    "Signer",
    "Subaccount",
    "account_bytes",
    "delete_all_params",
    "delete_all_string",
    "delete_before_params",
    "delete_before_string",
    "delete_params",
    "delete_string",
    "expire_all_params",
    "expire_all_string",
    "expire_params",
    "expire_string",
    "get_expiries_params",
    "get_expiries_string",
    "is_noauth_retrieve_namespace",
    "is_public_inbox_namespace",
    "is_public_outbox_namespace",
    "is_unrevocable_namespace",
    "member_signed",
    "retrieve_params",
    "retrieve_string",
    "revocation_params",
    "revoke_string",
    "signer_of",
    "store_params",
    "store_string",
    "subaccount_token",
    "verify_swarm",
]

Params = dict[str, Any]
Namespace = int | Literal["all"]

NAMESPACE_MIN, NAMESPACE_MAX = -32768, 32767
EXPIRE_MODES = ("", "shorten", "extend")

SUBACCOUNT_READ, SUBACCOUNT_WRITE, SUBACCOUNT_DELETE, SUBACCOUNT_ANY_PREFIX = 1, 2, 4, 8
SUBACCOUNT_TOKEN_LEN = 36


# --- namespaces, as Session's storage servers define them -----------------------------------------


def is_public_inbox_namespace(namespace: int) -> bool:
    """Anyone may store to a namespace divisible by 10 (0 is where 1:1 messages arrive)."""
    return namespace % 10 == 0


def is_public_outbox_namespace(namespace: int) -> bool:
    """-1, -21, -41…: one message at a time, stored by the owner, retrieved by anyone."""
    return namespace < 0 and -namespace % 20 == 1


def is_noauth_retrieve_namespace(namespace: int) -> bool:
    """Retrieved without a signature: the public outboxes and the legacy closed-group -10."""
    return namespace == -10 or is_public_outbox_namespace(namespace)


def is_unrevocable_namespace(namespace: int) -> bool:
    """-11, -111, -211…: a revoked subaccount may still read here (a removed group member's
    notice)."""
    return namespace < 0 and -namespace % 100 == 11


# --- the signed strings ---------------------------------------------------------------------------


def _ns_text(namespace: Namespace) -> str:
    if namespace == "all":
        return "all"
    return "" if namespace == 0 else str(namespace)


def store_string(namespace: int, sig_timestamp: int) -> bytes:
    """What a store outside the public inboxes signs: ``"store" ‖ ns ‖ sig_timestamp``."""
    return f"store{_ns_text(namespace)}{sig_timestamp}".encode()


def retrieve_string(namespace: int, timestamp: int) -> bytes:
    """What a retrieve signs: ``"retrieve" ‖ ns ‖ timestamp``."""
    return f"retrieve{_ns_text(namespace)}{timestamp}".encode()


def delete_string(hashes: Sequence[str]) -> bytes:
    """What a delete signs: ``"delete" ‖ hash₁ ‖ hash₂ ‖ …``."""
    return ("delete" + "".join(hashes)).encode()


def delete_all_string(namespace: Namespace, timestamp: int) -> bytes:
    """What a delete_all signs: ``"delete_all" ‖ ns ‖ timestamp``."""
    return f"delete_all{_ns_text(namespace)}{timestamp}".encode()


def delete_before_string(namespace: Namespace, before: int) -> bytes:
    """What a delete_before signs: ``"delete_before" ‖ ns ‖ before``."""
    return f"delete_before{_ns_text(namespace)}{before}".encode()


def expire_all_string(namespace: Namespace, expiry: int) -> bytes:
    """What an expire_all signs: ``"expire_all" ‖ ns ‖ expiry``."""
    return f"expire_all{_ns_text(namespace)}{expiry}".encode()


def expire_string(mode: str, expiries: int | Sequence[int], hashes: Sequence[str]) -> bytes:
    """What an expire signs: ``"expire" ‖ mode ‖ expiry… ‖ hash…``."""
    listed = [expiries] if isinstance(expiries, int) else list(expiries)
    return f"expire{mode}{''.join(map(str, listed))}{''.join(hashes)}".encode()


def get_expiries_string(timestamp: int, hashes: Sequence[str]) -> bytes:
    """What a get_expiries signs: ``"get_expiries" ‖ timestamp ‖ hash…``."""
    return f"get_expiries{timestamp}{''.join(hashes)}".encode()


def revoke_string(method: str, timestamp: int, tokens: Sequence[bytes]) -> bytes:
    """What a revoke_subaccount or unrevoke_subaccount signs: method ‖ timestamp ‖ token…"""
    return f"{method}{timestamp}".encode() + b"".join(tokens)


# --- what each swarm member signs back -----------------------------------------------------------


def member_signed(
    method: str, pubkey: str, request: Mapping[str, Any], result: Mapping[str, Any]
) -> bytes:
    """What a swarm member signs for its ``result`` of ``method`` (the client's ``request``
    params); raises :class:`InvalidInputError` if the result lacks what is signed."""
    try:
        if method == "store":
            return str(result["hash"]).encode()
        if method == "delete":
            return (pubkey + "".join(request["messages"]) + "".join(result["deleted"])).encode()
        if method in ("delete_all", "delete_before", "expire_all"):
            stamp = {"delete_all": "timestamp", "delete_before": "before", "expire_all": "expiry"}
            key = "updated" if method == "expire_all" else "deleted"
            return (pubkey + str(request[stamp[method]]) + "".join(_flat(result[key]))).encode()
        if method == "expire":
            expiries = result["expiry"]
            listed = expiries if isinstance(expiries, list) else [expiries]
            unchanged = result.get("unchanged") or {}
            return (
                pubkey
                + "".join(str(e) for e in listed)
                + "".join(request["messages"])
                + "".join(result["updated"])
                + "".join(f"{h}{unchanged[h]}" for h in sorted(unchanged))
            ).encode()
        if method in ("revoke_subaccount", "unrevoke_subaccount"):
            listed = request["revoke" if method == "revoke_subaccount" else "unrevoke"]
            tokens = [_token_bytes(t) for t in (listed if isinstance(listed, list) else [listed])]
            return f"{pubkey}{request['timestamp']}".encode() + b"".join(tokens)
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"a {method} result lacks what its member signs") from None
    raise InvalidInputError(f"{method} has no swarm answer")


def _flat(hashes: object) -> list[str]:
    """The hashes of a result, sorted: a list, or a map of namespace → list (for ``"all"``)."""
    if isinstance(hashes, dict):
        return sorted(h for listed in hashes.values() for h in listed)
    if isinstance(hashes, list):
        return [str(h) for h in hashes]
    raise TypeError("hashes")


def verify_swarm(
    method: str,
    request: Mapping[str, Any],
    answer: object,
    members: Iterable[bytes],
    *,
    enough: int | None = None,
    accept: Callable[[dict[str, Any]], bool] | None = None,
) -> list[bytes]:
    """The Ed25519 keys of the swarm members (among ``members``) whose signed result in a swarm
    answer verifies (and that ``accept`` takes, if given); a member missing, failed or with a bad
    signature is left out. With ``enough``, stops once that many verified."""
    if not isinstance(answer, dict) or not isinstance(answer.get("swarm"), dict):
        return []
    pubkey = str(request.get("pubkey", "")).lower()  # members sign the account in lower case
    good = []
    for member in members:
        result = answer["swarm"].get(member.hex())
        if not isinstance(result, dict) or result.get("failed"):
            continue
        if accept is not None and not accept(result):
            continue
        try:
            signature = base64.b64decode(str(result.get("signature")), validate=True)
            signed = member_signed(method, pubkey, request, result)
        except (binascii.Error, ValueError, InvalidInputError):
            continue
        if len(signature) == 64 and _core.ed25519_verify(member, signed, signature):
            good.append(member)
            if enough is not None and len(good) >= enough:
                break
    return good


# --- subaccounts ----------------------------------------------------------------------------------


class Signer(Protocol):
    """Who signs requests for an account: the account in hex (``pubkey``), the signature, and the
    params that say whose signature it is."""

    @property
    def pubkey(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...

    def auth_params(self) -> Params: ...


@dataclass(frozen=True, slots=True)
class IdentitySigner:
    """A Session ID's own signature (``pubkey_ed25519`` names the key)."""

    identity: Identity

    @property
    def pubkey(self) -> str:
        return self.identity.session_id

    def sign(self, data: bytes) -> bytes:
        return self.identity.sign(data)

    def auth_params(self) -> Params:
        return {"pubkey_ed25519": self.identity.ed25519_public_key.hex()}


@dataclass(frozen=True, slots=True)
class KeySigner:
    """An Ed25519 account's own key (a group's, held by its admins): ``prefix`` ‖ public key."""

    seed: bytes
    prefix: int = 0x03
    pubkey: str = field(init=False)
    """The account in hex, derived once (a request may name it several times)."""

    def __post_init__(self) -> None:
        pubkey = f"{self.prefix:02x}{_core.ed25519_public_key(self.seed).hex()}"
        object.__setattr__(self, "pubkey", pubkey)

    def sign(self, data: bytes) -> bytes:
        return _core.ed25519_sign(self.seed, data)

    def auth_params(self) -> Params:
        return {}

    def __repr__(self) -> str:  # never the seed
        return f"KeySigner({self.pubkey})"


@dataclass(frozen=True, slots=True)
class Subaccount:
    """A delegation to ``identity`` for the account ``account`` (hex): the 36-byte token and the
    account key's signature of it. Requests are then signed by ``identity``."""

    account: str
    token: bytes
    token_signature: bytes
    identity: Identity

    @property
    def pubkey(self) -> str:
        return self.account

    def sign(self, data: bytes) -> bytes:
        return self.identity.sign(data)

    def auth_params(self) -> Params:
        return {
            "subaccount": base64.b64encode(self.token).decode("ascii"),
            "subaccount_sig": base64.b64encode(self.token_signature).decode("ascii"),
        }


def subaccount_token(prefix: int, flags: int, ed25519_key: bytes) -> bytes:
    """prefix ‖ flags ‖ 0 0 ‖ Ed25519 key: what an account owner signs to delegate access."""
    if not 0 <= prefix <= 255 or not 0 <= flags <= 15 or len(ed25519_key) != 32:
        raise InvalidInputError("a subaccount token is a prefix, flags 0-15 and a 32-byte key")
    return bytes([prefix, flags, 0, 0]) + ed25519_key


def _token_bytes(text: object) -> bytes:
    if isinstance(text, str):
        if len(text) == 48:
            raw = base64.b64decode(text, validate=True)
        elif len(text) == 72:
            raw = bytes.fromhex(text)
        else:
            raise ValueError("token")
        if len(raw) == SUBACCOUNT_TOKEN_LEN:
            return raw
    raise ValueError("token")


# --- the builders ---------------------------------------------------------------------------------


def _namespace(namespace: object) -> int:
    if not isinstance(namespace, int) or isinstance(namespace, bool):
        raise InvalidInputError("a namespace is an integer")
    if not NAMESPACE_MIN <= namespace <= NAMESPACE_MAX:
        raise InvalidInputError("a namespace is a signed 16-bit integer")
    return namespace


def _namespace_or_all(namespace: object) -> Namespace:
    return "all" if namespace == "all" else _namespace(namespace)


def _hashes(hashes: Sequence[str]) -> list[str]:
    listed = list(hashes)
    if not listed:
        raise InvalidInputError("a request names at least one message hash")
    for text in listed:
        hash_from_b64(text)
    return listed


def signer_of(who: Identity | Signer) -> Signer:
    """``who`` as a :class:`Signer` (an :class:`Identity` signs for its own Session ID)."""
    return IdentitySigner(who) if isinstance(who, Identity) else who


def _signature(who: Identity | Signer, signed: bytes) -> Params:
    signer = signer_of(who)
    return {
        **signer.auth_params(),
        "signature": base64.b64encode(signer.sign(signed)).decode("ascii"),
    }


def _signed(who: Identity | Signer, signed: bytes, **fields: Any) -> Params:
    return {"pubkey": signer_of(who).pubkey, **_signature(who, signed), **fields}


def account_bytes(pubkey: str) -> bytes:
    """The 33 bytes of an account named in hex: a Session ID (checked as one), or any other
    one-byte prefix and 32-byte key (a group's ``03`` account); :class:`InvalidInputError`
    otherwise."""
    if pubkey.startswith("05"):
        return b"\x05" + parse_session_id(pubkey)
    if len(pubkey) != 66 or any(c not in "0123456789abcdef" for c in pubkey):
        raise InvalidInputError("an account is 66 lower-case hex digits")
    return bytes.fromhex(pubkey)


def store_params(
    recipient_session_id: str,
    data: bytes,
    ttl_ms: int,
    *,
    namespace: int = 0,
    identity: Identity | Signer | None = None,
    timestamp_ms: int | None = None,
) -> Params:
    """A store of ``data`` for an account (a Session ID, or a group's ``03`` account). The public
    inboxes (namespaces divisible by 10, 0 among them) take anyone's messages unsigned; the others
    only what the account signs (``identity``: its own, or a signer for it)."""
    account_bytes(recipient_session_id)
    namespace = _namespace(namespace)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    fields: Params = {
        "pubkey": recipient_session_id,
        "timestamp": timestamp,
        "ttl": ttl_ms,
        "data": base64.b64encode(data).decode("ascii"),
    }
    if namespace != 0:
        fields["namespace"] = namespace
    if is_public_inbox_namespace(namespace):
        return fields
    if identity is None or not hmac.compare_digest(
        signer_of(identity).pubkey.encode(), recipient_session_id.encode()
    ):
        raise InvalidInputError("only the account itself stores outside the public inboxes")
    return {**fields, **_signature(identity, store_string(namespace, timestamp))}


def retrieve_params(
    identity: Identity | Signer,
    *,
    namespace: int = 0,
    cursor: str | None = None,
    last_hash: str | None = None,
    max_count: int | None = None,
    max_size: int | None = None,
    timestamp_ms: int | None = None,
) -> Params:
    """A retrieve of the account's messages in ``namespace``, after ``cursor`` (Veil's stable
    cursor; ``""`` asks for one from the start) or ``last_hash`` (Session's) if given."""
    namespace = _namespace(namespace)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    params = _signed(identity, retrieve_string(namespace, timestamp), timestamp=timestamp)
    if namespace != 0:
        params["namespace"] = namespace
    if cursor is not None:
        params["cursor"] = cursor
    if last_hash is not None:
        params["last_hash"] = last_hash
    if max_count is not None:
        params["max_count"] = max_count
    if max_size is not None:
        params["max_size"] = max_size
    return params


def delete_params(
    identity: Identity | Signer, hashes: Sequence[str], *, required: bool = False
) -> Params:
    """A delete of the account's messages ``hashes``; ``required``: answer 404 if no member
    deleted any."""
    listed = _hashes(hashes)
    params = _signed(identity, delete_string(listed), messages=listed)
    if required:
        params["required"] = True
    return params


def delete_all_params(
    identity: Identity | Signer, namespace: Namespace = 0, *, timestamp_ms: int | None = None
) -> Params:
    """A delete of every message of the account in ``namespace`` (or in all, for ``"all"``)."""
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    return _account_wide(identity, delete_all_string, namespace, "timestamp", timestamp)


def delete_before_params(
    identity: Identity | Signer, before_ms: int, namespace: Namespace = 0
) -> Params:
    """A delete of the account's messages with a timestamp at or before ``before_ms``."""
    return _account_wide(identity, delete_before_string, namespace, "before", before_ms)


def expire_all_params(
    identity: Identity | Signer, expiry_ms: int, namespace: Namespace = 0
) -> Params:
    """A new expiry ``expiry_ms`` for every message of the account that expires later."""
    return _account_wide(identity, expire_all_string, namespace, "expiry", expiry_ms)


def _account_wide(
    identity: Identity | Signer,
    string: Callable[[Namespace, int], bytes],
    namespace: Namespace,
    name: str,
    value: int,
) -> Params:
    """delete_all, delete_before, expire_all: ``string(namespace, value)`` signed, and the
    namespace and ``name``: ``value`` in the params."""
    namespace = _namespace_or_all(namespace)
    return _signed(identity, string(namespace, value), namespace=namespace, **{name: value})


def expire_params(
    identity: Identity | Signer, hashes: Sequence[str], expiry_ms: int, *, mode: str = ""
) -> Params:
    """A new expiry for the account's messages ``hashes``: set it (``mode=""``), or only shorten
    or only extend it."""
    if mode not in EXPIRE_MODES:
        raise InvalidInputError('an expire mode is "", "shorten" or "extend"')
    listed = _hashes(hashes)
    params = _signed(identity, expire_string(mode, expiry_ms, listed), messages=listed)
    params["expiry"] = expiry_ms
    if mode:
        params[mode] = True
    return params


def get_expiries_params(
    identity: Identity | Signer, hashes: Sequence[str], *, timestamp_ms: int | None = None
) -> Params:
    """A query of the expiries of the account's messages ``hashes``."""
    listed = _hashes(hashes)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    return _signed(
        identity, get_expiries_string(timestamp, listed), messages=listed, timestamp=timestamp
    )


def revocation_params(
    owner: Identity | Signer,
    tokens: Sequence[bytes],
    *,
    unrevoke: bool = False,
    timestamp_ms: int | None = None,
) -> Params:
    """A ``revoke_subaccount`` (or ``unrevoke_subaccount``) of ``tokens``, by the account itself."""
    listed = list(tokens)
    if not listed or any(len(t) != SUBACCOUNT_TOKEN_LEN for t in listed):
        raise InvalidInputError("revocations name at least one 36-byte subaccount token")
    method = "unrevoke_subaccount" if unrevoke else "revoke_subaccount"
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    texts = [base64.b64encode(t).decode("ascii") for t in listed]
    return _signed(
        owner,
        revoke_string(method, timestamp, listed),
        timestamp=timestamp,
        **{"unrevoke" if unrevoke else "revoke": texts},
    )
