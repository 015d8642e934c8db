"""The client storage RPC: ``{"method": ..., "params": {...}}`` → an answer (``docs/rpc.md``).

Methods, parameters, signed strings, answers, status codes and error texts are those of Session's
storage servers (session-storage-server 2.8), so that clients and tools written for them work
against a Veil node; the few deliberate differences are marked in ``docs/rpc.md``. Each method is
two steps: a parser, which reads and checks the parameters and raises :class:`RpcError` (400,
``invalid request: …``) before anything runs, and a handler. ``batch`` and ``sequence`` parse all
their subrequests before running any.

Writes answer for the whole swarm: the member a client asked applies the request, has the other
members apply it (``veil.node.replication``), and answers ``{"swarm": {member: its signed result},
…}``. A member asked by another (``forwarded``) answers its own signed result alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from veil import __version__, _core
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.auth import (
    Authorised,
    parse_account,
    parse_signer,
    parse_token,
    store_access,
    verify_request,
)
from veil.node.config import Limits
from veil.node.errors import RpcError
from veil.node.message_rules import max_lifetime, max_ttl, placement_error
from veil.node.metrics import NodeMetrics
from veil.node.store import MessageStore, StoreOutcome
from veil.node.writer import StorageFull, StoreClosed, StoreWriter
from veil.protocol.hashes import cursor_decode, hash_b64, hash_from_b64, message_hash
from veil.protocol.node_rpc import Revocation
from veil.protocol.replication import Message, StoreAuth
from veil.protocol.storage_rpc import (
    NAMESPACE_MAX,
    NAMESPACE_MIN,
    SUBACCOUNT_DELETE,
    SUBACCOUNT_READ,
    SUBACCOUNT_WRITE,
    Namespace,
    delete_all_string,
    delete_before_string,
    delete_string,
    expire_all_string,
    expire_string,
    get_expiries_string,
    is_noauth_retrieve_namespace,
    is_public_inbox_namespace,
    is_unrevocable_namespace,
    member_signed,
    retrieve_string,
    revoke_string,
    store_string,
)

if TYPE_CHECKING:
    from veil.node.replication import Replicator
    from veil.protocol.announcement import Announcement

__all__ = ["HF", "STORAGE_RPC_VERSION", "StorageRpc", "answer_bytes"]

Params = dict[str, Any]
Answer = dict[str, Any] | str

HF = [19, 4]
"""The Session network revision whose storage features this RPC has (``hf`` in answers): 19.3
brought namespaces and signed retrieves, 19.4 several expiries in one ``expire``."""

STORAGE_RPC_VERSION = [2, 8, 0]
"""The session-storage-server release whose client RPC this node speaks (``info``'s ``version``,
``ifelse``'s ``v`` conditions); Veil's own version is ``veil_version``."""

SIGNATURE_TOLERANCE_FORWARDED_MS = 10_000
"""A forwarded request's timestamp may be this much older than a direct one's (it travelled)."""

_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_MIN_TIMESTAMP_MS = 1_000_000_000
"""Below this a timestamp is taken for seconds, not milliseconds, and refused."""

_META = frozenset({"batch", "sequence", "ifelse"})


def answer_bytes(answer: Answer) -> bytes:
    """An answer's body: JSON for a result, the text itself for an error."""
    return answer.encode("utf-8") if isinstance(answer, str) else orjson.dumps(answer)


class NetworkView(Protocol):
    """What the RPC needs to know of the network (implemented by the node)."""

    def serves(self, account: bytes) -> bool: ...
    def swarm(self, account: bytes) -> list[Announcement]: ...
    def swarm_size(self, account: bytes) -> int: ...
    def nodes_json(self) -> list[dict[str, Any]]: ...
    def consensus_json(self) -> dict[str, Any] | None: ...
    def usable(self) -> bool: ...


# --- parameters, read as Session's storage servers read them --------------------------------------


def _excerpt(text: str) -> str:
    """A piece of the request quoted in an error: its first 64 characters, escaped as in JSON
    (ASCII, no control characters), so that an answer is one short line whatever was sent."""
    return json.dumps(text[:64])[1:-1]


def _get(params: Params, name: str) -> Any:
    """A parameter, or None if missing or null."""
    return params.get(name)


def _integer(params: Params, name: str, *, what: str = "integer") -> int | None:
    value = _get(params, name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RpcError.invalid(f"Invalid value given for '{name}': expected {what}")
    return value


def _stringified(params: Params, name: str, *, unsigned: bool) -> int | None:
    """An integer that may also come as decimal text (``store``'s timestamp and ttl)."""
    value = _get(params, name)
    if isinstance(value, str):
        text = value[1:] if value.startswith("-") and not unsigned else value
        if not text.isdigit() or not text.isascii():
            raise RpcError.invalid(f"Invalid value given for '{name}': {json.dumps(value[:40])}")
        return int(value)
    got = _integer(params, name, what="positive integer" if unsigned else "integer")
    if unsigned and got is not None and got < 0:
        raise RpcError.invalid(f"Invalid value given for '{name}': expected positive integer")
    return got


def _timestamp(params: Params, name: str) -> int | None:
    value = _integer(params, name, what="integer timestamp (in milliseconds)")
    if value is None:
        return None
    if value < 0:
        raise RpcError.invalid(
            f"Invalid value given for '{name}': expected integer timestamp (in milliseconds)"
        )
    if value < _MIN_TIMESTAMP_MS:
        raise RpcError.invalid(f"Invalid timestamp for '{name}': timestamp must be in milliseconds")
    return value


def _timestamps(params: Params, name: str) -> list[int] | None:
    value = _get(params, name)
    if value is None:
        return None
    listed = value if isinstance(value, list) else [value]
    out = []
    for item in listed:
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            raise RpcError.invalid(f"Invalid value given for '{name}': expected timestamp array")
        out.append(item)
    return out


def _require(name: str, value: Any) -> Any:
    if value is None:
        raise RpcError.invalid(f"Required field '{name}' missing")
    return value


def _namespace(params: Params) -> int:
    value = _get(params, "namespace")
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise RpcError.invalid("Invalid value given for 'namespace': expected 16-bit integer")
    if not NAMESPACE_MIN <= value <= NAMESPACE_MAX:
        raise RpcError.invalid("Invalid value given for 'namespace': value out of range")
    return value


def _namespace_or_all(params: Params) -> Namespace:
    value = _get(params, "namespace")
    if value == "all":
        return "all"
    if value is not None and not isinstance(value, int):
        raise RpcError.invalid("Invalid value given for 'namespace': expected integer or \"all\"")
    return _namespace(params)


def _strings(params: Params, name: str) -> list[str] | None:
    value = _get(params, name)
    if value is None:
        return None
    listed = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in listed):
        raise RpcError.invalid(f"Invalid value given for '{name}': expected string array")
    return listed


def _boolean(params: Params, name: str) -> bool:
    value = _get(params, name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RpcError.invalid(f"Invalid value given for '{name}': expected boolean")
    return value


def _pubkey(params: Params, *, alias: bool = False) -> bytes:
    """The account of ``pubkey`` (or its old name ``pubKey`` where Session takes it)."""
    new, old = _get(params, "pubkey"), _get(params, "pubKey") if alias else None
    if new is not None and old is not None:
        raise RpcError.invalid("Cannot specify both 'pubkey' and 'pubKey'")
    return parse_account(_require("pubkey", new if new is not None else old))


def _hash_texts(params: Params, limits: Limits, *, check: bool = True) -> list[str]:
    texts: list[str] = _require("messages", _strings(params, "messages"))
    if not texts:
        raise RpcError.invalid("messages does not contain any message hashes")
    if len(texts) > limits.delete_max_hashes:
        raise RpcError(413, f"too many message hashes (at most {limits.delete_max_hashes})")
    if check:
        _check_hash_texts(texts)
    return texts


def _check_hash_texts(texts: list[str]) -> None:
    """Refuse a text that is not 43 characters of base64, as Session's storage servers do."""
    for text in texts:
        if len(text) != 43 or not _B64.issuperset(text):
            raise RpcError.invalid(f"invalid message hash: {_excerpt(text)}")


def _retrieve_bounds(limits: Limits, count: int | None, size: int | None) -> tuple[int, int]:
    """(most messages, most bytes) of a retrieve, as Session's storage servers read max_count
    and max_size: 0 is unset; a negative size is a fraction of the largest (-5: a fifth); with
    neither, a fifth. Veil also caps the count at ``retrieve_max_messages``."""
    count, size = count or None, size or None
    if count is None and size is None:
        size = -5
    if size is not None and size < 0:
        size = limits.retrieve_max_bytes // -size
    elif size is None or size > limits.retrieve_max_bytes:
        size = limits.retrieve_max_bytes
    most = limits.retrieve_max_messages
    return (most if count is None else max(1, min(most, count))), size


def _cursor(params: Params) -> tuple[str | None, bytes | None]:
    """Veil's ``cursor`` (text, raw bytes): absent, ``""`` (from the start) or a cursor."""
    cursor = _get(params, "cursor")
    if cursor is None:
        return None, None
    if not isinstance(cursor, str):
        raise RpcError.invalid("Invalid value given for 'cursor': expected string")
    if not cursor:
        return cursor, None
    try:
        return cursor, cursor_decode(cursor)
    except InvalidInputError as exc:
        raise RpcError.invalid(str(exc)) from None


def _digest(text: str) -> bytes | None:
    """The 32 bytes a hash text names, or None (it names no message here)."""
    try:
        return hash_from_b64(text)
    except InvalidInputError:
        return None


def _signed_fields(params: Params, account: bytes, *, subaccount: bool = True) -> None:
    """Check the shape of the signature fields now (parse errors come before any work)."""
    parse_signer(account, params)
    if subaccount and _get(params, "subaccount") not in (None, ""):
        parse_token(params["subaccount"])
        if _get(params, "subaccount_sig") is None:
            raise RpcError.invalid(
                "invalid subaccount: subaccount_sig is required when using subaccount"
            )


# --- parsed requests ------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """A parsed request: its method, its params as sent (forwarded as they are) and the values
    read from them."""

    method: str
    params: Params
    account: bytes = b""
    values: dict[str, Any] = field(default_factory=dict)
    subrequests: list[Call] = field(default_factory=list)


def _store_call(
    params: Params,
    account: bytes,
    *,
    namespace: int,
    timestamp: int,
    expiry: int,
    data: bytes,
    digest: bytes,
    signed: bool,
    sig_timestamp: int,
) -> Call:
    """The :class:`Call` of a parsed ``store``."""
    return Call(
        "store",
        params,
        account,
        {
            "namespace": namespace,
            "timestamp": timestamp,
            "expiry": expiry,
            "data": data,
            "hash": digest,
            "signed": signed,
            "sig_timestamp": sig_timestamp,
        },
    )


def _plain_store_call(plain: tuple[bytes, int, int, int, bytes, bytes]) -> Call:
    """The :class:`Call` ``_parse_store`` makes of a plain store, from ``_core.plain_store``'s
    (account, namespace, timestamp, ttl, data, hash): no signature, no expiry, a TTL. Its params
    are not kept: only a signed store reads them."""
    account, namespace, timestamp, ttl, data, digest = plain
    return _store_call(
        {},
        account,
        namespace=namespace,
        timestamp=timestamp,
        expiry=timestamp + ttl,
        data=data,
        digest=digest,
        signed=False,
        sig_timestamp=timestamp,
    )


Parser = Callable[[Params], Call]
Handler = Callable[[Call, bool], Awaitable[tuple[int, Answer]]]


class StorageRpc:
    """Parses requests and dispatches them to their handlers."""

    def __init__(
        self,
        store: MessageStore,
        writer: StoreWriter,
        limits: Limits,
        metrics: NodeMetrics,
        *,
        identity: Identity | None = None,
        network: NetworkView | None = None,
        replicator: Replicator | None = None,
        min_swarm_size: int = 1,
        node_info: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.limits = limits
        self.metrics = metrics
        self.identity = identity if identity is not None else Identity.generate()
        """The node's key: it signs the node's part of every swarm answer."""
        self.own_hex = self.identity.ed25519_public_key.hex()
        self.node_info = node_info or {}
        """Fields ``info`` answers besides versions and time (the node's public keys)."""
        self.network = network
        """The node's view of the network, for swarm checks; None serves every account."""
        self.replicator = replicator
        """Replication to the other swarm members; None for a node on its own."""
        self.min_swarm_size = min_swarm_size
        self._last_arrival_us = 0
        self.methods: dict[str, tuple[Parser, Handler]] = {
            "store": (self._parse_store, self._store),
            "retrieve": (self._parse_retrieve, self._retrieve),
            "delete": (self._parse_delete, self._swarm_write),
            "delete_all": (self._parse_delete_all, self._swarm_write),
            "delete_before": (self._parse_delete_before, self._swarm_write),
            "expire": (self._parse_expire, self._swarm_write),
            "expire_all": (self._parse_expire_all, self._swarm_write),
            "revoke_subaccount": (self._parse_revoke, self._swarm_write),
            "unrevoke_subaccount": (self._parse_unrevoke, self._swarm_write),
            "get_expiries": (self._parse_get_expiries, self._get_expiries),
            "info": (self._parse_nothing, self._info),
            "get_swarm": (self._parse_get_swarm, self._get_swarm),
            "batch": (self._parse_batch, self._batch),
            "sequence": (self._parse_sequence, self._sequence),
            "ifelse": (self._parse_ifelse, self._ifelse),
            "get_nodes": (self._parse_nothing, self._get_nodes),
            "get_consensus": (self._parse_nothing, self._get_consensus),
        }
        self._appliers: dict[str, Callable[[Call, bool], Awaitable[dict[str, Any]]]] = {
            "delete": self._apply_delete,
            "delete_all": self._apply_delete_all,
            "delete_before": self._apply_delete_before,
            "expire": self._apply_expire,
            "expire_all": self._apply_expire_all,
            "revoke_subaccount": self._apply_revoke,
            "unrevoke_subaccount": self._apply_revoke,
        }

    # --- entry points -------------------------------------------------------------------------

    async def handle_body(self, body: bytes) -> tuple[int, bytes, bytes]:
        """Answer a request body: (status, body, content type). Never raises."""
        label, status, answer = await self.answer_body(body)
        self.metrics.count(label, status)
        text = isinstance(answer, str)
        kind = b"text/plain; charset=utf-8" if text else b"application/json"
        return status, answer_bytes(answer), kind

    async def answer_body(self, body: bytes) -> tuple[str, int, Answer]:
        """A request body's method as the metrics name it (``invalid`` for none of this RPC's),
        its status and its answer. Never raises.

        The common unsigned ``store`` is read in one call to ``_core.plain_store``; every other
        body, and any that call leaves (``None``), goes through ``orjson`` and the parsers here,
        which alone answer errors (``tests/test_store_fast_path.py`` holds the two to one
        reading)."""
        plain = _core.plain_store(body, self.limits.max_message_bytes)
        if plain is not None:
            status, answer = await self.run(_plain_store_call(plain))
            return "store", status, answer
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return "invalid", 400, "invalid json"
        status, answer = await self.call(request)
        method = request.get("method") if isinstance(request, dict) else None
        label = method if isinstance(method, str) and method in self.methods else "invalid"
        return label, status, answer

    async def call(self, request: object, *, forwarded: bool = False) -> tuple[int, Answer]:
        """Answer one request object. ``forwarded``: another member of the account's swarm sent
        it (``veil.node.peer_rpc``); the answer is this node's own part, not the swarm's."""
        if not isinstance(request, dict):
            return 400, "invalid json"
        method = request.get("method")
        if not isinstance(method, str):
            return 400, "invalid json: no `method` field"
        params = request.get("params")
        if not isinstance(params, dict):
            return 400, "invalid json: no `params` field"
        if method not in self.methods:
            return 400, f"no method {_excerpt(method)}"
        try:
            parsed = self.parse(method, params)
        except RpcError as error:
            return error.status, error.body()
        return await self.run(parsed, forwarded)

    def parse(self, method: str, params: Params) -> Call:
        """Parse the params of a known ``method``; raise :class:`RpcError` (400)."""
        call = self.methods[method][0](params)
        call.method = method
        return call

    async def run(self, call: Call, forwarded: bool = False) -> tuple[int, Answer]:
        """Run a parsed request; typed errors become their answer."""
        try:
            return await self.methods[call.method][1](call, forwarded)
        except RpcError as error:
            return error.status, error.body()
        except StorageFull:
            return RpcError.storage_full().status, RpcError.storage_full().body()
        except StoreClosed:
            return 503, "the node is shutting down"

    def _misc(self, answer: dict[str, Any], now: int | None = None) -> dict[str, Any]:
        answer["t"] = now_ms() if now is None else now
        answer["hf"] = HF
        return answer

    def _serve(self, account: bytes) -> None:
        """Refuse an account this node does not serve: 421 with its swarm, or 503."""
        if self.network is None:
            return
        if not self.network.usable():
            raise RpcError.unavailable("this node holds no valid consensus")
        if not self.network.serves(account):
            raise RpcError.wrong_swarm(self._swarm_answer(account))
        if self.network.swarm_size(account) < self.min_swarm_size:
            raise RpcError.unavailable("the network is too small to hold messages yet")

    def _sign(self, signed: bytes) -> str:
        return base64.b64encode(self.identity.sign(signed)).decode("ascii")

    def _tolerance(self, forwarded: bool) -> int:
        """How far a signature's timestamp may be from the clock (more for a forwarded one)."""
        return self.limits.clock_skew_ms + (SIGNATURE_TOLERANCE_FORWARDED_MS if forwarded else 0)

    def _window(self, value: int, now: int, forwarded: bool) -> bool:
        return abs(value - now) <= self._tolerance(forwarded)

    # --- store ----------------------------------------------------------------------------------

    def _parse_store(self, params: Params) -> Call:
        limits = self.limits
        data_b64 = _get(params, "data")
        if data_b64 is not None and not isinstance(data_b64, str):
            raise RpcError.invalid("Invalid value given for 'data': expected string")
        expiry = _timestamp(params, "expiry")
        namespace = _namespace(params)
        timestamp = _stringified(params, "timestamp", unsigned=False)
        ttl = _stringified(params, "ttl", unsigned=True)
        sig_timestamp = _timestamp(params, "sig_timestamp")
        _require("timestamp", timestamp)
        assert timestamp is not None
        if expiry is not None and ttl is not None:
            raise RpcError.invalid("Cannot specify both 'expiry' and 'ttl'")
        if expiry is None and ttl is None:
            raise RpcError.invalid("Required field 'expiry' or 'ttl' missing")
        account = _pubkey(params, alias=True)
        signed = _get(params, "signature") is not None
        if signed:
            _signed_fields(params, account)
        if data_b64 is None:
            raise RpcError.invalid("Required field 'data' missing")
        if len(data_b64) > limits.max_message_bytes // 3 * 4 + 4:
            raise RpcError.invalid(
                f"Message body exceeds maximum allowed length of {limits.max_message_bytes} bytes"
            )
        try:
            data = binascii.a2b_base64(data_b64, strict_mode=True)
        except (binascii.Error, ValueError):
            raise RpcError.invalid("Invalid 'data' value: not base64 encoded") from None
        if len(data) > limits.max_message_bytes:
            raise RpcError.invalid(
                f"Message body exceeds maximum allowed length of {limits.max_message_bytes} bytes"
            )
        return _store_call(
            params,
            account,
            namespace=namespace,
            timestamp=timestamp,
            expiry=expiry if expiry is not None else timestamp + (ttl or 0),
            data=data,
            digest=message_hash(account, namespace, data),
            signed=signed,
            sig_timestamp=sig_timestamp if sig_timestamp is not None else timestamp,
        )

    def _arrival_us(self) -> int:
        """Now in µs, strictly after the last arrival this node gave (the retrieve order)."""
        self._last_arrival_us = max(time.time_ns() // 1000, self._last_arrival_us + 1)
        return self._last_arrival_us

    async def _store(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        limits, v, account = self.limits, call.values, call.account
        self._serve(account)
        namespace, timestamp, expiry = v["namespace"], v["timestamp"], v["expiry"]
        if not limits.min_ttl_ms <= expiry - timestamp <= max_ttl(limits, namespace):
            raise RpcError(403, "Provided expiry/TTL is not valid.")
        misplaced = placement_error(account, namespace)
        if misplaced is not None:
            raise RpcError(400, f"store: {misplaced}")
        now = now_ms()
        tolerance = limits.store_tolerance_ms
        if timestamp > now + tolerance or expiry < now - tolerance:
            raise RpcError(406, "Timestamp error: check your clock")
        auth = None
        if not is_public_inbox_namespace(namespace):
            if not v["signed"]:
                raise RpcError(401, f"store: signature required to store to namespace {namespace}")
            if not self._window(v["sig_timestamp"], now, False):
                raise RpcError(406, "store signature timestamp too far from current time")
            who = verify_request(
                "store",
                account,
                call.params,
                store_string(namespace, v["sig_timestamp"]),
                access=store_access(namespace),
                revoked=self.store.is_revoked,
            )
            auth = _store_auth(v["sig_timestamp"], who)
        digest = v["hash"]
        message = Message(
            account, namespace, timestamp, expiry, v["data"], digest, auth, self._arrival_us()
        )
        started = time.perf_counter()
        text = hash_b64(digest)
        outcome, signatures = await self.writer.submit_signed(
            lambda txn: self.store.put(txn, message),
            self.identity.sign_many,  # this node's result, signed off the event loop
            [text.encode("ascii")],
            if_full=StoreOutcome.STORAGE_FULL,
        )
        if outcome is StoreOutcome.QUOTA_EXCEEDED:
            raise RpcError.quota_exceeded()
        if outcome is StoreOutcome.STORAGE_FULL:
            raise RpcError.storage_full()
        mine: dict[str, Any] = {
            "hash": text,
            "signature": base64.b64encode(signatures[0]).decode("ascii"),
            "expiry": expiry,
        }
        if outcome is StoreOutcome.ALREADY:
            mine["already"] = True
            mine["expiry"] = self.store.expiries(account, [digest]).get(digest, expiry)
        swarm = {self.own_hex: mine}
        if self.replicator is not None:
            others, needed = await self.replicator.replicate(message)
            swarm.update(others)
            held = sum("signature" in result for result in swarm.values())
            if held < needed:
                raise RpcError.unavailable(
                    f"held by {held} of the {needed} swarm members needed; retry"
                )
        self.metrics.store_latency.observe(time.perf_counter() - started)
        mine["t"] = now
        return 200, self._misc({"hash": text, "swarm": swarm}, now)

    # --- retrieve -------------------------------------------------------------------------------

    def _parse_retrieve(self, params: Params) -> Call:
        last_hashes = [_get(params, "lastHash"), _get(params, "last_hash")]
        for name, value in zip(("lastHash", "last_hash"), last_hashes, strict=True):
            if value is not None and not isinstance(value, str):
                raise RpcError.invalid(f"Invalid value given for '{name}': expected string")
        max_count = _integer(params, "max_count")
        max_size = _integer(params, "max_size")
        namespace_given = _get(params, "namespace") is not None
        namespace = _namespace(params)
        account = _pubkey(params, alias=True)
        timestamp = _timestamp(params, "timestamp")
        check = (
            _get(params, "pubkey_ed25519") is not None
            or _get(params, "signature") is not None
            or timestamp is not None
            or (namespace_given and not is_noauth_retrieve_namespace(namespace))
        )
        if check:
            _signed_fields(params, account)
            _require("timestamp", timestamp)
        if all(value is not None for value in last_hashes):
            raise RpcError.invalid("Cannot specify both 'last_hash' and 'lastHash'")
        last_hash = last_hashes[0] if last_hashes[0] is not None else last_hashes[1]
        if last_hash == "":
            last_hash = None
        if last_hash is not None:
            if len(last_hash) != 43:
                raise RpcError.invalid("Invalid last_hash: expected base64 (43 chars)")
            if not _B64.issuperset(last_hash):
                raise RpcError.invalid("Invalid last_hash: not base64")
        cursor, after = _cursor(params)
        return Call(
            "retrieve",
            params,
            account,
            {
                "namespace": namespace,
                "timestamp": timestamp,
                "check": check,
                "last_hash": last_hash,
                "cursor": cursor,
                "after": after,
                "max_count": max_count,
                "max_size": max_size,
            },
        )

    async def _retrieve(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        limits, v, account = self.limits, call.values, call.account
        self._serve(account)
        namespace = v["namespace"]
        now = now_ms()
        if not is_noauth_retrieve_namespace(namespace) and not v["check"]:
            raise RpcError(401, "retrieve: request signature required")
        if v["check"]:
            if not self._window(v["timestamp"], now, False):
                raise RpcError(406, "retrieve timestamp too far from current time")
            verify_request(
                "retrieve",
                account,
                call.params,
                retrieve_string(namespace, v["timestamp"]),
                access=SUBACCOUNT_READ,
                revoked=None if is_unrevocable_namespace(namespace) else self.store.is_revoked,
            )
        max_messages, max_size = _retrieve_bounds(limits, v["max_count"], v["max_size"])
        after = v["after"]
        if after is None and v["last_hash"] is not None:
            digest = _digest(v["last_hash"])
            if digest is not None:
                after = self.store.cursor_of_hash(account, namespace, digest)
        messages, more = self.store.retrieve(
            account,
            namespace=namespace,
            after=after,
            now_ms=now,
            max_messages=max_messages,
            max_bytes=max_size,
        )
        self.metrics.retrieved.inc(len(messages))
        # The messages array is encoded in Rust, ~3x faster than a list of dicts through orjson
        # (docs/performance.md, "Storage"): [{"hash", "timestamp", "expiration", "data"}, ...],
        # byte for byte what orjson gave. orjson embeds the Fragment as is.
        answer: dict[str, Any] = {
            "messages": orjson.Fragment(_core.retrieve_messages_json(messages)),
            "more": more,
        }
        if v["cursor"] is not None:
            answer["arrivals"] = [m.arrival_us for m in messages]
            if messages:
                answer["cursor"] = messages[-1].cursor
            elif after is not None:
                answer["cursor"] = base64.urlsafe_b64encode(after).rstrip(b"=").decode("ascii")
            else:
                answer["cursor"] = None
        return 200, self._misc(answer, now)

    # --- the swarm writes: delete, delete_all, delete_before, expire, expire_all, revoke --------

    def _parse_delete(self, params: Params) -> Call:
        account = _pubkey(params)
        _signed_fields(params, account)
        texts = _hash_texts(params, self.limits)
        return Call(
            "delete", params, account, {"texts": texts, "required": _boolean(params, "required")}
        )

    def _parse_delete_all(self, params: Params) -> Call:
        return _parse_account_wide("delete_all", params, "timestamp")

    def _parse_delete_before(self, params: Params) -> Call:
        return _parse_account_wide("delete_before", params, "before")

    def _parse_expire_all(self, params: Params) -> Call:
        return _parse_account_wide("expire_all", params, "expiry")

    def _parse_expire(self, params: Params) -> Call:
        expiries = _timestamps(params, "expiry")
        extend, shorten = _boolean(params, "extend"), _boolean(params, "shorten")
        account = _pubkey(params)
        _signed_fields(params, account)
        expiries = _require("expiry", expiries)
        if not expiries:
            raise RpcError.invalid("'expiry' does not contain any expiration timestamps")
        if shorten and extend:
            raise RpcError.invalid("cannot specify both 'shorten' and 'extend'")
        texts = _hash_texts(params, self.limits, check=False)
        if len(expiries) > 1 and len(expiries) != len(texts):
            raise RpcError.invalid(
                "'expiry' must be a single expiry, or the same length as 'messages'"
            )
        _check_hash_texts(texts)
        mode = "shorten" if shorten else "extend" if extend else ""
        return Call("expire", params, account, {"expiries": expiries, "texts": texts, "mode": mode})

    def _parse_revoke(self, params: Params) -> Call:
        return self._parse_revocation(params, "revoke_subaccount", "revoke")

    def _parse_unrevoke(self, params: Params) -> Call:
        return self._parse_revocation(params, "unrevoke_subaccount", "unrevoke")

    def _parse_revocation(self, params: Params, method: str, name: str) -> Call:
        account = _pubkey(params)
        _signed_fields(params, account, subaccount=False)
        listed = _require(name, _strings(params, name))
        limit = (
            self.limits.account_max_revoked if name == "revoke" else self.limits.delete_max_hashes
        )
        if len(listed) > limit:
            raise RpcError.invalid(
                f"invalid {name}: cannot {name} more than {limit} subaccounts at once"
            )
        tokens = [parse_token(text, name) for text in listed]
        timestamp = _require("timestamp", _timestamp(params, "timestamp"))
        return Call(method, params, account, {"tokens": tokens, "timestamp": timestamp})

    async def _swarm_write(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        """Apply a write here and, asked by the client, on the account's other members: the
        answer is ``{"swarm": {member: its signed result}}``, 200 unless every member failed."""
        self._serve(call.account)
        now = now_ms()
        mine = await self._appliers[call.method](call, forwarded)
        if forwarded:
            return 200, mine
        swarm: dict[str, dict[str, Any]] = {self.own_hex: mine}
        if self.replicator is not None:
            swarm.update(await self.replicator.forward(call.method, call.params, call.account))
        answer = self._misc({"swarm": swarm}, now)
        required = call.method == "delete" and call.values["required"]
        if required and not any(result.get("deleted") for result in swarm.values()):
            return 404, answer  # a delete with "required": nothing was deleted anywhere
        return 200, answer

    def _verify(
        self, call: Call, signed: bytes, access: int, failure: str | None = None
    ) -> Authorised:
        return verify_request(
            call.method,
            call.account,
            call.params,
            signed,
            access=access,
            revoked=self.store.is_revoked,
            allow_subaccount=not call.method.endswith("revoke_subaccount"),
            failure=failure,
        )

    def _result(self, call: Call, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` signed by this node as Session's storage servers sign it."""
        signed = member_signed(call.method, call.account.hex(), call.params, result)
        result["signature"] = self._sign(signed)
        return result

    async def _apply_delete(self, call: Call, forwarded: bool) -> dict[str, Any]:
        texts = call.values["texts"]
        self._verify(
            call,
            delete_string(texts),
            SUBACCOUNT_DELETE,
            "delete_msgs signature verification failed",
        )
        digests = [d for d in map(_digest, texts) if d is not None]
        deleted = await self.writer.submit(
            lambda txn: self.store.delete_hashes(txn, call.account, digests, now_ms=now_ms())
        )
        return self._result(call, {"deleted": sorted(hash_b64(d) for d in deleted)})

    async def _apply_delete_all(self, call: Call, forwarded: bool) -> dict[str, Any]:
        namespace, timestamp = call.values["namespace"], call.values["timestamp"]
        if not self._window(timestamp, now_ms(), forwarded):
            raise RpcError(406, "delete_all timestamp too far from current time")
        self._verify(call, delete_all_string(namespace, timestamp), SUBACCOUNT_DELETE)
        scope = None if namespace == "all" else namespace
        removed = await self.writer.submit(
            lambda txn: self.store.delete_all(txn, call.account, scope)
        )
        return self._result(call, {"deleted": _by_namespace(removed, namespace)})

    async def _apply_delete_before(self, call: Call, forwarded: bool) -> dict[str, Any]:
        namespace, before = call.values["namespace"], call.values["before"]
        if before > now_ms() + self.limits.clock_skew_ms:
            raise RpcError(401, "delete_before timestamp too far in the future")
        self._verify(call, delete_before_string(namespace, before), SUBACCOUNT_DELETE)
        scope = None if namespace == "all" else namespace
        removed = await self.writer.submit(
            lambda txn: self.store.delete_before(txn, call.account, scope, before)
        )
        return self._result(call, {"deleted": _by_namespace(removed, namespace)})

    async def _apply_expire_all(self, call: Call, forwarded: bool) -> dict[str, Any]:
        namespace, expiry = call.values["namespace"], call.values["expiry"]
        if expiry < now_ms() - self._tolerance(forwarded):
            raise RpcError(406, "expire_all timestamp should be >= current time")
        self._verify(call, expire_all_string(namespace, expiry), SUBACCOUNT_DELETE)
        scope = None if namespace == "all" else namespace
        changed = await self.writer.submit(
            lambda txn: self.store.expire_all(txn, call.account, scope, expiry)
        )
        return self._result(call, {"updated": _by_namespace(changed, namespace)})

    async def _apply_expire(self, call: Call, forwarded: bool) -> dict[str, Any]:
        v = call.values
        now = now_ms()
        ceiling = now + max_lifetime(self.limits, call.account)
        for expiry in v["expiries"]:
            if expiry < now - self.limits.clock_skew_ms:
                raise RpcError(401, "expire: timestamp should be >= current time")
        applied = [min(ceiling, expiry) for expiry in v["expiries"]]
        who = self._verify(
            call,
            expire_string(v["mode"], v["expiries"], v["texts"]),
            SUBACCOUNT_WRITE,
            "expire: signature verification failed",
        )
        mode = v["mode"]
        if who.token and not who.token[1] & SUBACCOUNT_DELETE:
            # Write access extends expiries; shortening one is as good as deleting it.
            if mode == "shorten":
                raise RpcError(
                    400,
                    "expire: shorten parameter cannot be used with this subaccount token "
                    "(missing delete access)",
                )
            mode = "extend"
        digests = [_digest(text) for text in v["texts"]]
        if len(applied) > 1:
            pairs = [(d, e) for d, e in zip(digests, applied, strict=True) if d is not None]
        else:
            pairs = [(d, applied[0]) for d in digests if d is not None]

        def update(txn: Any) -> list[tuple[bytes, int]]:
            return self.store.update_expiry(
                txn, call.account, [d for d, _ in pairs], [e for _, e in pairs], mode
            )

        updated = sorted((hash_b64(d), e) for d, e in await self.writer.submit(update))
        result: dict[str, Any] = {
            "expiry": [e for _, e in updated] if len(applied) > 1 else applied[0],
            "updated": [h for h, _ in updated],
        }
        if v["mode"]:
            done = {h for h, _ in updated}
            rest = [d for d in digests if d is not None and hash_b64(d) not in done]
            result["unchanged"] = {
                hash_b64(d): e for d, e in self.store.expiries(call.account, rest).items()
            }
        return self._result(call, result)

    async def _apply_revoke(self, call: Call, forwarded: bool) -> dict[str, Any]:
        """revoke_subaccount, unrevoke_subaccount: the request decides its tokens here whatever
        decided them before (as in Session's storage servers), and is kept as the owner signed it
        so that anti-entropy can hand it to a member that missed it (``veil.node.replication``)."""
        v = call.values
        if not self._window(v["timestamp"], now_ms(), forwarded):
            raise RpcError(406, f"{call.method} timestamp too far from current time")
        who = self._verify(call, revoke_string(call.method, v["timestamp"], v["tokens"]), 0)
        ed_key, _signature = parse_signer(call.account, call.params)
        request = Revocation(
            revoke=call.method == "revoke_subaccount",
            timestamp_ms=v["timestamp"],
            tokens=tuple(v["tokens"]),
            signature=who.signature,
            ed25519=ed_key,
        )
        applied_us = self._arrival_us()
        count = await self.writer.submit(
            lambda txn: self.store.revoke(txn, call.account, request, applied_us)
        )
        return self._result(call, {} if request.revoke else {"count": count})

    # --- reads and the rest ---------------------------------------------------------------------

    def _parse_get_expiries(self, params: Params) -> Call:
        account = _pubkey(params)
        _signed_fields(params, account)
        timestamp = _require("timestamp", _timestamp(params, "timestamp"))
        texts = _hash_texts(params, self.limits, check=False)
        return Call("get_expiries", params, account, {"timestamp": timestamp, "texts": texts})

    async def _get_expiries(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        self._serve(call.account)
        v = call.values
        if not self._window(v["timestamp"], now_ms(), False):
            raise RpcError(406, "get_expiries timestamp too far from current time")
        self._verify(call, get_expiries_string(v["timestamp"], v["texts"]), SUBACCOUNT_READ)
        digests = [d for d in map(_digest, v["texts"]) if d is not None]
        found = self.store.expiries(call.account, digests)
        return 200, {"expiries": {hash_b64(d): e for d, e in found.items()}}

    def _parse_nothing(self, params: Params) -> Call:
        return Call("", params)

    async def _info(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        answer = {
            "version": STORAGE_RPC_VERSION,
            "veil_version": __version__,
            "timestamp": now_ms(),
            **self.node_info,
        }
        return 200, self._misc(answer)

    def _parse_get_swarm(self, params: Params) -> Call:
        return Call("get_swarm", params, _pubkey(params, alias=True))

    async def _get_swarm(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        return 200, self._swarm_answer(call.account)

    def _swarm_answer(self, account: bytes) -> dict[str, Any]:
        """The account's swarm as Session's storage servers give it: ``snodes`` and a swarm id
        (Veil has no numbered swarms: the id names the member set)."""
        members = self.network.swarm(account) if self.network is not None else []
        snodes = []
        for member in members:
            try:
                host, port = member.http_address
            except InvalidInputError:
                continue
            snodes.append(
                {
                    "ip": host,
                    "port": str(port),
                    "port_https": port,
                    "pubkey_ed25519": member.ed25519.hex(),
                    "pubkey_x25519": member.x25519.hex(),
                    "pubkey_legacy": member.ed25519.hex(),
                }
            )
        ids = b"".join(sorted(member.ed25519 for member in members))
        swarm_id = hashlib.blake2b(ids, digest_size=8).hexdigest()
        return self._misc({"snodes": snodes, "swarm": swarm_id})

    async def _get_consensus(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        """The consensus this node holds, with its authorities' signatures (clients check them
        against their network file; this node's word adds nothing)."""
        document = self.network.consensus_json() if self.network is not None else None
        if document is None:
            raise RpcError.unavailable("this node holds no valid consensus")
        return 200, document

    async def _get_nodes(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        if self.network is None:
            return 200, {"nodes": []}
        return 200, {"nodes": self.network.nodes_json()}

    # --- batch, sequence, ifelse ----------------------------------------------------------------

    def _subrequest(self, request: object, where: str) -> Call:
        if not isinstance(request, dict):
            raise RpcError.invalid(f"Invalid {where} request: requests must be objects")
        method, params = request.get("method"), request.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            raise RpcError.invalid(
                f"Invalid {where} request: subrequests must have method/params keys"
            )
        if method not in self.methods:
            raise RpcError.invalid(
                f'Invalid {where} subrequest: invalid method "{_excerpt(method)}"'
            )
        if method in _META:
            raise RpcError.invalid(
                f"Invalid {where} subrequest: subrequests may not contain meta-requests"
            )
        return self.parse(method, params)

    def _parse_batch(self, params: Params) -> Call:
        return self._parse_subrequests(params, "batch")

    def _parse_sequence(self, params: Params) -> Call:
        return self._parse_subrequests(params, "sequence")

    def _parse_subrequests(self, params: Params, method: str) -> Call:
        requests = params.get("requests")
        if not isinstance(requests, list) or not requests:
            raise RpcError.invalid('Invalid batch request: no valid "requests" field')
        if len(requests) > self.limits.batch_max_requests:
            raise RpcError.invalid("Invalid batch request: subrequest limit exceeded")
        subrequests = [self._subrequest(request, "batch") for request in requests]
        return Call(method, params, subrequests=subrequests)

    async def _batch(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        """Every subrequest, in order, whatever each answers; their answers in order. In order,
        not at once: a subrequest sees what those before it did (an ``expire`` then a
        ``retrieve`` reads the new expiry), as Session's storage servers apply them."""
        results = [await self.run(sub) for sub in call.subrequests]
        return 200, {"results": [{"code": s, "body": b} for s, b in results]}

    async def _sequence(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        """The subrequests one after another, stopping after the first that fails."""
        results = []
        for sub in call.subrequests:
            status, body = await self.run(sub)
            results.append({"code": status, "body": body})
            if not 200 <= status <= 299:
                break
        return 200, {"results": results}

    def _parse_ifelse(self, params: Params) -> Call:
        condition = params.get("if")
        if not isinstance(condition, dict):
            raise RpcError.invalid('Invalid ifelse request: no valid "if" field')
        if "height_at_least" in condition or "height_before" in condition:
            raise RpcError.invalid(
                "Invalid ifelse request: this network has no block height (use hf or v conditions)"
            )
        bounds = {}
        for name, size in (
            ("hf_at_least", 2),
            ("hf_before", 2),
            ("v_at_least", 3),
            ("v_before", 3),
        ):
            value = condition.get(name)
            if value is None:
                continue
            listed = value if isinstance(value, list) else [value]
            if not listed or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in listed
            ):
                raise RpcError.invalid(f"Invalid value given for '{name}': expected integer array")
            bounds[name] = (listed + [0] * size)[:size]
        if not bounds:
            raise RpcError.invalid(
                'Invalid ifelse request: must specify at least one "if" condition'
            )
        branches: dict[str, Call] = {}
        for key in ("then", "else"):
            branch = params.get(key)
            if branch is None:
                continue
            if not isinstance(branch, dict):
                raise RpcError.invalid(f"Invalid ifelse request: {key} must be an object")
            method, sub = branch.get("method"), branch.get("params")
            if not isinstance(method, str) or sub is None:
                raise RpcError.invalid(
                    f"Invalid ifelse request: {key} must have method/params keys"
                )
            if method not in self.methods or not isinstance(sub, dict):
                raise RpcError.invalid(f'Invalid ifelse request method "{key}"')
            branches[key] = self.parse(method, sub)
        if not branches:
            raise RpcError.invalid('Invalid ifelse request: at least one of "then"/"else" required')
        return Call("ifelse", params, values={"bounds": bounds, "branches": branches})

    async def _ifelse(self, call: Call, forwarded: bool) -> tuple[int, Answer]:
        bounds = call.values["bounds"]
        checks = {
            "hf_at_least": lambda b: b <= HF,
            "hf_before": lambda b: b > HF,
            "v_at_least": lambda b: b <= STORAGE_RPC_VERSION,
            "v_before": lambda b: b > STORAGE_RPC_VERSION,
        }
        condition = all(checks[name](bound) for name, bound in bounds.items())
        answer: dict[str, Any] = {
            "hf": HF,
            "v": STORAGE_RPC_VERSION,
            "condition": condition,
        }
        branch = call.values["branches"].get("then" if condition else "else")
        if branch is not None:
            status, body = await self.run(branch)
            answer["result"] = {"code": status, "body": body}
        return 200, answer


def _parse_account_wide(method: str, params: Params, stamp: str) -> Call:
    """delete_all, delete_before, expire_all: a namespace (or "all"), the account's signature and
    one time (``stamp``: timestamp, before or expiry)."""
    value = _timestamp(params, stamp)
    namespace = _namespace_or_all(params)
    account = _pubkey(params)
    _signed_fields(params, account)
    _require(stamp, value)
    return Call(method, params, account, {"namespace": namespace, stamp: value})


def _store_auth(sig_timestamp: int, who: Authorised) -> StoreAuth:
    return StoreAuth(sig_timestamp, who.owner, who.signature, who.token, who.token_signature)


def _by_namespace(
    removed: list[tuple[int, bytes]], namespace: Namespace
) -> list[str] | dict[str, list[str]]:
    """A result's hashes: sorted, or for ``"all"`` sorted within each namespace."""
    if namespace != "all":
        return sorted(hash_b64(d) for _, d in removed)
    grouped: dict[str, list[str]] = {}
    for ns, digest in sorted(removed, key=lambda item: hash_b64(item[1])):
        grouped.setdefault(str(ns), []).append(hash_b64(digest))
    return grouped
