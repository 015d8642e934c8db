"""The client storage RPC's signed requests: what each method signs, and its signed ``params``.

A node verifies (``veil.node.rpc``) and a client signs (the builders below) the same strings, made
here once. ``‖`` is concatenation of UTF-8 text; numbers are in decimal (``docs/rpc.md``):

```
store         "store" ‖ namespace ‖ sig_timestamp          (only outside namespace 0)
retrieve      "retrieve" ‖ ns ‖ timestamp                  ns: "" for namespace 0
delete        "delete" ‖ hash₁ ‖ hash₂ ‖ …
delete_all    "delete_all" ‖ ns ‖ timestamp                ns: "" for 0, or "all"
expire        "expire" ‖ mode ‖ expiry ‖ hash₁ ‖ …         mode: "", "shorten" or "extend"
get_expiries  "get_expiries" ‖ timestamp ‖ hash₁ ‖ …
```

Example: Alice's retrieve of namespace 0 at 1700000000000 ms signs ``retrieve1700000000000``; of
namespace -5, ``retrieve-51700000000000``. Hashes are the 43-character text of
:mod:`veil.protocol.hashes`.

The builders return the complete ``params`` a node expects: ``pubkey`` (the account's Session ID),
``pubkey_ed25519`` (hex) and ``signature`` (base64) beside the method's own fields. They check
what they sign (a namespace is a signed 16-bit integer, every hash a well-formed message hash) and
raise :class:`InvalidInputError` otherwise, so a client never signs a string a node chose.
Timestamps default to now.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal

from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.protocol.hashes import hash_from_b64
from veil.session_id import parse_session_id

__all__ = [
    "EXPIRE_MODES",
    "NAMESPACE_MAX",
    "NAMESPACE_MIN",
    "delete_all_params",
    "delete_all_string",
    "delete_params",
    "delete_string",
    "expire_params",
    "expire_string",
    "get_expiries_params",
    "get_expiries_string",
    "retrieve_params",
    "retrieve_string",
    "store_params",
    "store_string",
]

Params = dict[str, Any]

NAMESPACE_MIN, NAMESPACE_MAX = -32768, 32767
EXPIRE_MODES = ("", "shorten", "extend")


# --- the signed strings ---------------------------------------------------------------------------


def _ns_text(namespace: int) -> str:
    return "" if namespace == 0 else str(namespace)


def store_string(namespace: int, sig_timestamp: int) -> bytes:
    """What a store outside namespace 0 signs: ``"store" ‖ namespace ‖ sig_timestamp``."""
    return f"store{namespace}{sig_timestamp}".encode()


def retrieve_string(namespace: int, timestamp: int) -> bytes:
    """What a retrieve signs: ``"retrieve" ‖ namespace ("" for 0) ‖ timestamp``."""
    return f"retrieve{_ns_text(namespace)}{timestamp}".encode()


def delete_string(hashes: Sequence[str]) -> bytes:
    """What a delete signs: ``"delete" ‖ hash₁ ‖ hash₂ ‖ …``."""
    return ("delete" + "".join(hashes)).encode()


def delete_all_string(namespace: int | Literal["all"], timestamp: int) -> bytes:
    """What a delete_all signs: ``"delete_all" ‖ namespace ("" for 0, or "all") ‖ timestamp``."""
    ns_text = "all" if namespace == "all" else _ns_text(int(namespace))
    return f"delete_all{ns_text}{timestamp}".encode()


def expire_string(mode: str, expiry: int, hashes: Sequence[str]) -> bytes:
    """What an expire signs: ``"expire" ‖ mode ‖ expiry ‖ hash₁ ‖ …``."""
    return f"expire{mode}{expiry}{''.join(hashes)}".encode()


def get_expiries_string(timestamp: int, hashes: Sequence[str]) -> bytes:
    """What a get_expiries signs: ``"get_expiries" ‖ timestamp ‖ hash₁ ‖ …``."""
    return f"get_expiries{timestamp}{''.join(hashes)}".encode()


# --- the builders ---------------------------------------------------------------------------------


def _namespace(namespace: object) -> int:
    if not isinstance(namespace, int) or isinstance(namespace, bool):
        raise InvalidInputError("a namespace is an integer")
    if not NAMESPACE_MIN <= namespace <= NAMESPACE_MAX:
        raise InvalidInputError("a namespace is a signed 16-bit integer")
    return namespace


def _hashes(hashes: Sequence[str]) -> list[str]:
    listed = list(hashes)
    if not listed:
        raise InvalidInputError("a request names at least one message hash")
    for text in listed:
        hash_from_b64(text)
    return listed


def _signature(identity: Identity, signed: bytes) -> Params:
    return {
        "pubkey_ed25519": identity.ed25519_public_key.hex(),
        "signature": base64.b64encode(identity.sign(signed)).decode("ascii"),
    }


def _signed(identity: Identity, signed: bytes, **fields: Any) -> Params:
    return {"pubkey": identity.session_id, **_signature(identity, signed), **fields}


def store_params(
    recipient_session_id: str,
    data: bytes,
    ttl_ms: int,
    *,
    namespace: int = 0,
    identity: Identity | None = None,
    timestamp_ms: int | None = None,
) -> Params:
    """A store of ``data`` for a Session ID. Namespace 0 takes anyone's messages unsigned; the
    others only the account's own, signed by its ``identity``."""
    parse_session_id(recipient_session_id)
    namespace = _namespace(namespace)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    fields: Params = {
        "pubkey": recipient_session_id,
        "timestamp": timestamp,
        "ttl": ttl_ms,
        "data": base64.b64encode(data).decode("ascii"),
    }
    if namespace == 0:
        return fields
    if identity is None or identity.session_id != recipient_session_id:
        raise InvalidInputError("only the account itself stores outside namespace 0")
    return {
        **fields,
        "namespace": namespace,
        **_signature(identity, store_string(namespace, timestamp)),
    }


def retrieve_params(
    identity: Identity,
    *,
    namespace: int = 0,
    cursor: str | None = None,
    timestamp_ms: int | None = None,
) -> Params:
    """A retrieve of the account's messages in ``namespace``, after ``cursor`` if one is given."""
    namespace = _namespace(namespace)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    params = _signed(identity, retrieve_string(namespace, timestamp), timestamp=timestamp)
    if namespace != 0:
        params["namespace"] = namespace
    if cursor:
        params["cursor"] = cursor
    return params


def delete_params(identity: Identity, hashes: Sequence[str]) -> Params:
    """A delete of the account's messages ``hashes``."""
    listed = _hashes(hashes)
    return _signed(identity, delete_string(listed), messages=listed)


def delete_all_params(
    identity: Identity, namespace: int | Literal["all"] = 0, *, timestamp_ms: int | None = None
) -> Params:
    """A delete of every message of the account in ``namespace`` (or in all, for ``"all"``)."""
    if namespace != "all":
        namespace = _namespace(namespace)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    return _signed(
        identity,
        delete_all_string(namespace, timestamp),
        namespace=namespace,
        timestamp=timestamp,
    )


def expire_params(
    identity: Identity, hashes: Sequence[str], expiry_ms: int, *, mode: str = ""
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
    identity: Identity, hashes: Sequence[str], *, timestamp_ms: int | None = None
) -> Params:
    """A query of the expiries of the account's messages ``hashes``."""
    listed = _hashes(hashes)
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    return _signed(
        identity, get_expiries_string(timestamp, listed), messages=listed, timestamp=timestamp
    )
