"""Node RPCs, version 3: the bodies of ``RPC`` frames between the members of a swarm, and of their
answers (``docs/protocol.md``, "Node RPCs", with a worked example).

Every body is ``version (1) = 0x03 ‖ msgpack map``; byte strings are msgpack ``bin``, never base64.

```
request   = {"m": "replicate", "msgs": [message, …]}           → {"receipts": [sig | nil, …]}
          | {"m": "summary", "accounts": [[account, count, xor (, rdigest)], …]}
                                                     → {"differ": [[account, [hash, …]], …],
                                                        "revoked": [[account, [revocation, …]], …],
                                                        "more": bool}    ("revoked": optional)
          | {"m": "fetch", "hashes": [hash, …]}                 → {"msgs": [message, …],
                                                                   "more": bool}
          | {"m": "apply", "method": str, "params": map}        → {"status": int, "body": bin}
          | {"m": "revocations", "accounts": [[account, [revocation, …]], …]}
                                                                → {"taken": int}
message   = [account (bin 33), namespace (int), timestamp_ms (int), expiry_ms (int), data (bin),
             auth, arrival_us (int)]
auth      = nil | [sig_timestamp_ms (int), signer (bin 32), signature (bin 64)]
                | [sig_timestamp_ms, signer, signature, token (bin 36), token_sig (bin 64)]
revocation = [kind (0 unrevoke | 1 revoke), timestamp_ms (int), [token (bin 36), …],
              signature (bin 64), pubkey_ed25519 (bin 32) | nil]
```

``receipts`` answer ``replicate`` in order, one per message: the member's 64-byte signature
(:func:`veil.protocol.replication.receipt_bytes`; the link says which member) or nil for a message
it did not take. ``summary`` compares accounts by message count and XOR of message hashes, and by
the digest of their revocation state (``rdigest``, :func:`revocation_digest`; an account without
it has none); it answers, for those whose messages differ, the member's hashes, and for
those whose revocation state differs, the member's signed revocations. ``fetch`` answers the
messages asked for that it holds. Both stop at a size budget and say ``more``; the caller asks
again for the rest. ``apply`` carries a client's own signed storage-RPC request (``delete``,
``delete_all``, ``delete_before``, ``expire``, ``expire_all``, ``revoke_subaccount``,
``unrevoke_subaccount``), which the member verifies and applies itself; it answers the status and
the body it would give the client (JSON of its signed result, or the error text), which the member
the client asked puts in its swarm answer. ``revocations`` hands a member the signed revocations it
lacks; it answers how many changed its state.

A revocation is the client's own ``revoke_subaccount`` or ``unrevoke_subaccount`` as it signed it:
every member checks the owner's signature itself before it takes one.

Decoding checks structure and hard bounds only (types, lengths, counts, integer ranges) and raises
:class:`NodeRpcError` for anything else; what a message or a revocation may be (sizes, lifetimes,
signatures) is the receiving node's to check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from veil.errors import InvalidInputError
from veil.protocol.hashes import ACCOUNT_LEN, HASH_LEN, message_hash
from veil.protocol.replication import Message, StoreAuth
from veil.protocol.storage_rpc import SUBACCOUNT_TOKEN_LEN, revoke_string

__all__ = [
    "VERSION",
    "Apply",
    "Fetch",
    "NodeRpcError",
    "Replicate",
    "Request",
    "Revocation",
    "Revocations",
    "Summary",
    "SummaryAnswer",
    "decode_differ",
    "decode_messages",
    "decode_receipts",
    "decode_request",
    "decode_status",
    "decode_summary_answer",
    "decode_taken",
    "encode_differ",
    "encode_messages",
    "encode_receipts",
    "encode_request",
    "encode_status",
    "encode_taken",
    "message_entry_size",
    "revocation_digest",
    "revocation_entry_size",
]

VERSION = 3
"""3: ``summary`` compares revocation state too, and ``revocations`` carries it (2: messages only).
A body of another version is refused whole (the link answers FAILURE)."""
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
    revoked: dict[bytes, bytes] = field(default_factory=dict)
    """The revocation digest of each listed account that has any revocation state (sent as the
    fourth field of the account's entry; one for an account not listed is not sent)."""


@dataclass(frozen=True, slots=True)
class Fetch:
    hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class Apply:
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Revocation:
    """A client's signed ``revoke_subaccount`` (``revoke``) or ``unrevoke_subaccount``, kept as
    the client signed it so that any member can check it again: the timestamp and tokens it
    signed, the signature, and for a ``05`` account the ``pubkey_ed25519`` it named (else None)."""

    revoke: bool
    timestamp_ms: int
    tokens: tuple[bytes, ...]
    signature: bytes
    ed25519: bytes | None = None

    @property
    def method(self) -> str:
        return "revoke_subaccount" if self.revoke else "unrevoke_subaccount"

    def signed(self) -> bytes:
        """What the owner signed: ``method ‖ timestamp ‖ token…``."""
        return revoke_string(self.method, self.timestamp_ms, self.tokens)

    def canonical(self) -> bytes:
        """kind (1) ‖ timestamp (8) ‖ key length (1) ‖ pubkey_ed25519 (0 or 32) ‖ signature (64)
        ‖ token (36) ‖ …: how the store keeps it, and what :attr:`id` hashes."""
        ed = self.ed25519 or b""
        return (
            bytes([int(self.revoke)])
            + self.timestamp_ms.to_bytes(8, "big")
            + bytes([len(ed)])
            + ed
            + self.signature
            + b"".join(self.tokens)
        )

    @property
    def id(self) -> bytes:
        """BLAKE2b-256 of :meth:`canonical`: the same on every member."""
        return hashlib.blake2b(self.canonical(), digest_size=32).digest()

    @classmethod
    def from_canonical(cls, raw: bytes) -> Revocation | None:
        """The revocation :meth:`canonical` made, or None if ``raw`` is not one."""
        if len(raw) < 10:
            return None
        ed_len = raw[9]
        tokens_at = 10 + ed_len + SIGNATURE_LEN
        rest = len(raw) - tokens_at
        if raw[0] > 1 or ed_len not in (0, 32) or rest <= 0 or rest % SUBACCOUNT_TOKEN_LEN:
            return None
        tokens = tuple(
            raw[i : i + SUBACCOUNT_TOKEN_LEN]
            for i in range(tokens_at, len(raw), SUBACCOUNT_TOKEN_LEN)
        )
        return cls(
            revoke=raw[0] == 1,
            timestamp_ms=int.from_bytes(raw[1:9], "big"),
            tokens=tokens,
            signature=raw[10 + ed_len : tokens_at],
            ed25519=raw[10 : 10 + ed_len] if ed_len else None,
        )


@dataclass(frozen=True, slots=True)
class Revocations:
    accounts: list[tuple[bytes, list[Revocation]]]


@dataclass(frozen=True, slots=True)
class SummaryAnswer:
    """A ``summary`` answer: the hashes of the accounts whose messages differ, the revocations of
    those whose revocation state differs, and whether the answer stopped at its budget."""

    differ: list[tuple[bytes, list[bytes]]]
    revoked: list[tuple[bytes, list[Revocation]]]
    more: bool


Request = Replicate | Summary | Fetch | Apply | Revocations


def revocation_digest(entries: list[tuple[bytes, bool, int, bytes]]) -> bytes:
    """The digest two members compare an account's revocation state by: BLAKE2b-256 over each
    token's decision — token (36) ‖ kind (1) ‖ timestamp (8) ‖ revocation id (32) — in token
    order. ``entries`` are (token, revoke, timestamp_ms, id), sorted by token."""
    digest = hashlib.blake2b(digest_size=32)
    for token, revoke, timestamp_ms, rid in entries:
        digest.update(token + bytes([int(revoke)]) + timestamp_ms.to_bytes(8, "big") + rid)
    return digest.digest()


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


def _revocation(revocation: Revocation) -> list[Any]:
    return [
        int(revocation.revoke),
        revocation.timestamp_ms,
        list(revocation.tokens),
        revocation.signature,
        revocation.ed25519,
    ]


def _revoked(entries: list[tuple[bytes, list[Revocation]]]) -> list[list[Any]]:
    return [[account, [_revocation(r) for r in found]] for account, found in entries]


def message_entry_size(message: Message) -> int:
    """An upper bound of the bytes ``message`` takes in a body (for chunking by size)."""
    return len(message.data) + 200


def revocation_entry_size(revocation: Revocation) -> int:
    """An upper bound of the bytes ``revocation`` takes in a body (for chunking by size)."""
    return 38 * len(revocation.tokens) + 130


def encode_request(request: Request) -> bytes:
    """The body of an ``RPC`` frame."""
    if isinstance(request, Replicate):
        return _pack({"m": "replicate", "msgs": [_entry(m) for m in request.messages]})
    if isinstance(request, Summary):
        revoked = request.revoked
        accounts = [
            [*entry, revoked[entry[0]]] if entry[0] in revoked else list(entry)
            for entry in request.accounts
        ]
        return _pack({"m": "summary", "accounts": accounts})
    if isinstance(request, Fetch):
        return _pack({"m": "fetch", "hashes": request.hashes})
    if isinstance(request, Revocations):
        return _pack({"m": "revocations", "accounts": _revoked(request.accounts)})
    return _pack({"m": "apply", "method": request.method, "params": request.params})


def encode_receipts(receipts: list[bytes | None]) -> bytes:
    return _pack({"receipts": receipts})


def encode_differ(
    differ: list[tuple[bytes, list[bytes]]],
    more: bool,
    revoked: list[tuple[bytes, list[Revocation]]] | None = None,
) -> bytes:
    """The answer to ``summary``; ``revoked`` only when some account's revocations differ."""
    fields: dict[str, Any] = {"differ": [[account, hashes] for account, hashes in differ]}
    if revoked:
        fields["revoked"] = _revoked(revoked)
    fields["more"] = more
    return _pack(fields)


def encode_messages(messages: list[Message], more: bool) -> bytes:
    return _pack({"msgs": [_entry(m) for m in messages], "more": more})


def encode_status(status: int, body: bytes = b"") -> bytes:
    """The answer to ``apply``: the status and body the member would give the client."""
    return _pack({"status": status, "body": body})


def encode_taken(taken: int) -> bytes:
    """The answer to ``revocations``: how many of them changed the member's state."""
    return _pack({"taken": taken})


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


def _revocation_entry(entry: object) -> Revocation:
    fields = _list(entry)
    if len(fields) != 5:
        raise NodeRpcError("a revocation has five fields")
    tokens = _list(fields[2])
    if not tokens:
        raise NodeRpcError("a revocation names at least one token")
    return Revocation(
        revoke=_int(fields[0], 0, 2) == 1,
        timestamp_ms=_int(fields[1], 0, _INT64),
        tokens=tuple(_bytes(t, SUBACCOUNT_TOKEN_LEN) for t in tokens),
        signature=_bytes(fields[3], SIGNATURE_LEN),
        ed25519=None if fields[4] is None else _bytes(fields[4], 32),
    )


def _revoked_entries(value: object) -> list[tuple[bytes, list[Revocation]]]:
    out = []
    for entry in _list(value):
        item = _list(entry)
        if len(item) != 2:
            raise NodeRpcError("an account's revocations are [account, revocations]")
        out.append((_bytes(item[0], ACCOUNT_LEN), [_revocation_entry(r) for r in _list(item[1])]))
    return out


def decode_request(body: bytes, *, max_items: int) -> Request:
    """A request body; at most ``max_items`` entries in any list or map."""
    fields = _unpack(body, max_items)
    method = fields.get("m")
    if method == "replicate":
        return Replicate([_message(entry) for entry in _list(fields.get("msgs"))])
    if method == "summary":
        accounts = []
        revoked = {}
        for entry in _list(fields.get("accounts")):
            item = _list(entry)
            if len(item) not in (3, 4):
                raise NodeRpcError("an account summary has three fields, or four with revocations")
            account = _bytes(item[0], ACCOUNT_LEN)
            accounts.append((account, _int(item[1], 0, _INT64), _bytes(item[2], HASH_LEN)))
            if len(item) == 4:
                revoked[account] = _bytes(item[3], HASH_LEN)
        return Summary(accounts, revoked)
    if method == "fetch":
        return Fetch([_bytes(h, HASH_LEN) for h in _list(fields.get("hashes"))])
    if method == "revocations":
        return Revocations(_revoked_entries(fields.get("accounts")))
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


def decode_summary_answer(body: bytes, *, max_items: int) -> SummaryAnswer:
    fields = _unpack(body, max_items)
    differ = []
    for entry in _list(fields.get("differ")):
        item = _list(entry)
        if len(item) != 2:
            raise NodeRpcError("a differing account is [account, hashes]")
        differ.append((_bytes(item[0], ACCOUNT_LEN), [_bytes(h, HASH_LEN) for h in _list(item[1])]))
    revoked = _revoked_entries(fields.get("revoked", []))
    return SummaryAnswer(differ, revoked, _bool(fields.get("more")))


def decode_differ(body: bytes, *, max_items: int) -> tuple[list[tuple[bytes, list[bytes]]], bool]:
    """The message part of a ``summary`` answer: (differing accounts and hashes, more)."""
    answer = decode_summary_answer(body, max_items=max_items)
    return answer.differ, answer.more


def decode_messages(body: bytes, *, max_items: int) -> tuple[list[Message], bool]:
    fields = _unpack(body, max_items)
    return [_message(entry) for entry in _list(fields.get("msgs"))], _bool(fields.get("more"))


def decode_status(body: bytes) -> tuple[int, bytes]:
    """(status, body) of an ``apply`` answer."""
    fields = _unpack(body, 4)
    return _int(fields.get("status"), 0, 1000), _bytes(fields.get("body", b""))


def decode_taken(body: bytes) -> int:
    """How many revocations a ``revocations`` answer says changed the member's state."""
    return _int(_unpack(body, 4).get("taken"), 0, _INT64)
