"""Node RPCs, version 2: the bodies of ``RPC`` frames between the members of a swarm, and of their
answers (``docs/protocol.md``, "Node RPCs", with a worked example).

Every body is ``version (1) = 0x01 ‖ msgpack map``; byte strings are msgpack ``bin``, never base64.

```
request   = {"m": "replicate", "msgs": [message, …]}           → {"receipts": [sig | nil, …]}
          | {"m": "summary", "accounts": [[account, count, xor], …]}
                                                     → {"differ": [[account, [hash, …]], …],
                                                        "more": bool}
          | {"m": "fetch", "hashes": [hash, …]}                 → {"msgs": [message, …],
                                                                   "more": bool}
          | {"m": "apply", "method": str, "params": map}        → {"status": int, "body": bin}
message   = [account (bin 33), namespace (int), timestamp_ms (int), expiry_ms (int), data (bin),
             auth, arrival_us (int)]
auth      = nil | [sig_timestamp_ms (int), signer (bin 32), signature (bin 64)]
                | [sig_timestamp_ms, signer, signature, token (bin 36), token_sig (bin 64)]
```

``receipts`` answer ``replicate`` in order, one per message: the member's 64-byte signature
(:func:`veil.protocol.replication.receipt_bytes`; the link says which member) or nil for a message
it did not take. ``summary`` compares accounts by message count and XOR of message hashes and
answers, for those that differ, the member's hashes; ``fetch`` answers the messages asked for that
it holds. Both stop at a size budget and say ``more``; the caller asks again for the rest.
``apply`` carries a client's own signed storage-RPC request (``delete``, ``delete_all``,
``delete_before``, ``expire``, ``expire_all``, ``revoke_subaccount``, ``unrevoke_subaccount``),
which the member verifies and applies itself; it answers the status and the body it would give the
client (JSON of its signed result, or the error text), which the member the client asked puts in
its swarm answer.

Decoding checks structure and hard bounds only (types, lengths, counts, integer ranges) and raises
:class:`NodeRpcError` for anything else; what a message may be (sizes, lifetimes, signatures) is
the receiving node's to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from veil.errors import InvalidInputError
from veil.protocol.hashes import ACCOUNT_LEN, HASH_LEN, message_hash
from veil.protocol.replication import Message, StoreAuth

__all__ = [
    "VERSION",
    "Apply",
    "Fetch",
    "NodeRpcError",
    "Replicate",
    "Request",
    "Summary",
    "decode_differ",
    "decode_messages",
    "decode_receipts",
    "decode_request",
    "decode_status",
    "encode_differ",
    "encode_messages",
    "encode_receipts",
    "encode_request",
    "encode_status",
    "message_entry_size",
]

VERSION = 2
SIGNATURE_LEN = 64
_INT64 = 1 << 63


class NodeRpcError(InvalidInputError):
    """A node-RPC body or answer that is not well-formed."""


@dataclass(frozen=True, slots=True)
class Replicate:
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class Summary:
    accounts: list[tuple[bytes, int, bytes]]


@dataclass(frozen=True, slots=True)
class Fetch:
    hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class Apply:
    method: str
    params: dict[str, Any]


Request = Replicate | Summary | Fetch | Apply


# --- encoding -----------------------------------------------------------------------------------


def _pack(fields: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes([VERSION]) + packed


def _entry(message: Message) -> list[Any]:
    auth = message.auth
    return [
        message.account,
        message.namespace,
        message.timestamp_ms,
        message.expiry_ms,
        message.data,
        None if auth is None else _auth(auth),
        message.arrival_us,
    ]


def _auth(auth: StoreAuth) -> list[Any]:
    fields: list[Any] = [auth.sig_timestamp_ms, auth.signer, auth.signature]
    if auth.token:
        fields += [auth.token, auth.token_signature]
    return fields


def message_entry_size(message: Message) -> int:
    """An upper bound of the bytes ``message`` takes in a body (for chunking by size)."""
    return len(message.data) + 200


def encode_request(request: Request) -> bytes:
    """The body of an ``RPC`` frame."""
    if isinstance(request, Replicate):
        return _pack({"m": "replicate", "msgs": [_entry(m) for m in request.messages]})
    if isinstance(request, Summary):
        return _pack({"m": "summary", "accounts": [list(entry) for entry in request.accounts]})
    if isinstance(request, Fetch):
        return _pack({"m": "fetch", "hashes": request.hashes})
    return _pack({"m": "apply", "method": request.method, "params": request.params})


def encode_receipts(receipts: list[bytes | None]) -> bytes:
    return _pack({"receipts": receipts})


def encode_differ(differ: list[tuple[bytes, list[bytes]]], more: bool) -> bytes:
    return _pack({"differ": [[account, hashes] for account, hashes in differ], "more": more})


def encode_messages(messages: list[Message], more: bool) -> bytes:
    return _pack({"msgs": [_entry(m) for m in messages], "more": more})


def encode_status(status: int, body: bytes = b"") -> bytes:
    """The answer to ``apply``: the status and body the member would give the client."""
    return _pack({"status": status, "body": body})


# --- decoding -----------------------------------------------------------------------------------


def _unpack(body: bytes, max_items: int) -> dict[str, Any]:
    if not body or body[0] != VERSION:
        raise NodeRpcError("unknown node-RPC version")
    try:
        fields = msgpack.unpackb(
            body[1:],
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_array_len=max_items,
            max_map_len=max_items,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise NodeRpcError("a node-RPC body is not valid msgpack") from None
    if not isinstance(fields, dict):
        raise NodeRpcError("a node-RPC body is a map")
    return fields


def _int(value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
        raise NodeRpcError("an integer field is out of range")
    return value


def _bytes(value: object, length: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        raise NodeRpcError("a byte-string field has the wrong type or length")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise NodeRpcError("a list field is not a list")
    return value


def _message(entry: object) -> Message:
    fields = _list(entry)
    if len(fields) != 7:
        raise NodeRpcError("a message has seven fields")
    account = _bytes(fields[0], ACCOUNT_LEN)
    namespace = _int(fields[1], -(1 << 15), 1 << 15)
    timestamp = _int(fields[2], 0, _INT64)
    expiry = _int(fields[3], timestamp, _INT64)
    data = _bytes(fields[4])
    auth = None
    if fields[5] is not None:
        raw = _list(fields[5])
        if len(raw) not in (3, 5):
            raise NodeRpcError("a store authorisation has three or five fields")
        auth = StoreAuth(
            sig_timestamp_ms=_int(raw[0], 0, _INT64),
            signer=_bytes(raw[1], 32),
            signature=_bytes(raw[2], SIGNATURE_LEN),
            token=_bytes(raw[3], 36) if len(raw) == 5 else b"",
            token_signature=_bytes(raw[4], SIGNATURE_LEN) if len(raw) == 5 else b"",
        )
    arrival = _int(fields[6], 1, _INT64)
    digest = message_hash(account, namespace, data)  # recomputed: a peer cannot mislabel one
    return Message(account, namespace, timestamp, expiry, data, digest, auth, arrival)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise NodeRpcError("a flag is not a boolean")
    return value


def decode_request(body: bytes, *, max_items: int) -> Request:
    """A request body; at most ``max_items`` entries in any list or map."""
    fields = _unpack(body, max_items)
    method = fields.get("m")
    if method == "replicate":
        return Replicate([_message(entry) for entry in _list(fields.get("msgs"))])
    if method == "summary":
        accounts = []
        for entry in _list(fields.get("accounts")):
            item = _list(entry)
            if len(item) != 3:
                raise NodeRpcError("an account summary has three fields")
            accounts.append(
                (_bytes(item[0], ACCOUNT_LEN), _int(item[1], 0, _INT64), _bytes(item[2], HASH_LEN))
            )
        return Summary(accounts)
    if method == "fetch":
        return Fetch([_bytes(h, HASH_LEN) for h in _list(fields.get("hashes"))])
    if method == "apply":
        name, params = fields.get("method"), fields.get("params")
        if not isinstance(name, str) or not isinstance(params, dict):
            raise NodeRpcError("apply carries a method name and its params")
        return Apply(name, params)
    raise NodeRpcError("unknown node-RPC method")


def decode_receipts(body: bytes, *, expected: int) -> list[bytes | None]:
    """The receipts of a ``replicate`` of ``expected`` messages (None where a member took none)."""
    receipts = _list(_unpack(body, max(expected, 1)).get("receipts"))
    if len(receipts) != expected:
        raise NodeRpcError("one receipt per replicated message")
    return [None if r is None else _bytes(r, SIGNATURE_LEN) for r in receipts]


def decode_differ(body: bytes, *, max_items: int) -> tuple[list[tuple[bytes, list[bytes]]], bool]:
    fields = _unpack(body, max_items)
    differ = []
    for entry in _list(fields.get("differ")):
        item = _list(entry)
        if len(item) != 2:
            raise NodeRpcError("a differing account is [account, hashes]")
        differ.append((_bytes(item[0], ACCOUNT_LEN), [_bytes(h, HASH_LEN) for h in _list(item[1])]))
    return differ, _bool(fields.get("more"))


def decode_messages(body: bytes, *, max_items: int) -> tuple[list[Message], bool]:
    fields = _unpack(body, max_items)
    return [_message(entry) for entry in _list(fields.get("msgs"))], _bool(fields.get("more"))


def decode_status(body: bytes) -> tuple[int, bytes]:
    """(status, body) of an ``apply`` answer."""
    fields = _unpack(body, 4)
    return _int(fields.get("status"), 0, 1000), _bytes(fields.get("body", b""))
