"""The client storage RPC: ``{"method": ..., "params": {...}}`` → a JSON answer (``docs/rpc.md``).

Method names, parameters and signed strings follow oxen-storage-server's client RPC; the signed
strings are made in :mod:`veil.protocol.storage_rpc`, where clients make them too. Every handler
validates its parameters first and answers a typed :class:`RpcError` for bad input; nothing is
written unless the whole request is valid. The same handlers serve ``/storage_rpc/v1`` and (later)
the destination of onion requests.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from veil import __version__, _core
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.node.auth import check_timestamp, parse_account, verify_signature
from veil.node.config import Limits
from veil.node.errors import RpcError
from veil.node.metrics import NodeMetrics
from veil.node.store import MessageStore, StoreOutcome
from veil.node.writer import StorageFull, StoreClosed, StoreWriter
from veil.protocol.hashes import cursor_decode, hash_b64, hash_from_b64, message_hash
from veil.protocol.replication import Message, StoreAuth
from veil.protocol.storage_rpc import (
    NAMESPACE_MAX,
    NAMESPACE_MIN,
    delete_all_string,
    delete_string,
    expire_string,
    get_expiries_string,
    retrieve_string,
    store_string,
)

if TYPE_CHECKING:
    from veil.node.replication import Replicator

__all__ = ["StorageRpc"]

Params = dict[str, Any]


class NetworkView(Protocol):
    """What the RPC needs to know of the network (implemented by the node)."""

    def serves(self, account: bytes) -> bool: ...
    def swarm_size(self, account: bytes) -> int: ...
    def swarm_json(self, account: bytes) -> list[dict[str, Any]]: ...
    def nodes_json(self) -> list[dict[str, Any]]: ...
    def consensus_json(self) -> dict[str, Any] | None: ...
    def usable(self) -> bool: ...


Handler = Callable[[Params, bool], Awaitable[dict[str, Any]]]
"""A method: ``(params, forwarded) -> answer``; ``forwarded`` is True for a request another
member of the account's swarm forwarded here (it is not forwarded again)."""

_VERSION = [int(part) if part.isdigit() else 0 for part in (__version__.split(".") + ["0"] * 3)[:3]]


def _int_param(params: Params, name: str, *, required: bool = True, default: int = 0) -> int:
    value = params.get(name)
    if value is None:
        if required:
            raise RpcError.bad_request(f"{name} is required")
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise RpcError.bad_request(f"{name} must be an integer")
    return value


def _namespace(params: Params) -> int:
    namespace = _int_param(params, "namespace", required=False, default=0)
    if not NAMESPACE_MIN <= namespace <= NAMESPACE_MAX:
        raise RpcError.bad_request("namespace must be a signed 16-bit integer")
    return namespace


def _hash_list(params: Params, limit: int) -> tuple[list[str], list[bytes]]:
    texts = params.get("messages")
    if not isinstance(texts, list) or not texts:
        raise RpcError.bad_request("messages must be a non-empty list of message hashes")
    if len(texts) > limit:
        raise RpcError.too_large(f"at most {limit} message hashes per request")
    try:
        return texts, [hash_from_b64(text) for text in texts]
    except InvalidInputError as exc:
        raise RpcError.bad_request(str(exc)) from None


class StorageRpc:
    """Dispatches parsed requests to their handlers."""

    def __init__(
        self,
        store: MessageStore,
        writer: StoreWriter,
        limits: Limits,
        metrics: NodeMetrics,
        *,
        network: NetworkView | None = None,
        replicator: Replicator | None = None,
        min_swarm_size: int = 1,
        node_info: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.limits = limits
        self.metrics = metrics
        self.node_info = node_info or {}
        """Fields ``info`` answers besides version and time (the node's public keys)."""
        self.network = network
        """The node's view of the network, for swarm checks; None serves every account."""
        self.replicator = replicator
        """Replication to the other swarm members; None for a node on its own."""
        self.min_swarm_size = min_swarm_size
        self.handlers: dict[str, Handler] = {
            "store": self.store_message,
            "retrieve": self.retrieve,
            "delete": self.delete,
            "delete_all": self.delete_all,
            "expire": self.expire,
            "get_expiries": self.get_expiries,
            "info": self.info,
            "batch": self.batch,
            "get_swarm": self.get_swarm,
            "get_nodes": self.get_nodes,
            "get_consensus": self.get_consensus,
        }

    async def handle_body(self, body: bytes) -> tuple[int, bytes]:
        """Parse a request body and answer (status, JSON body). Never raises."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            error = RpcError.bad_request("the body is not valid JSON")
            self.metrics.count("invalid", error.status)
            return error.status, orjson.dumps(error.body())
        method = request.get("method") if isinstance(request, dict) else None
        label = method if isinstance(method, str) and method in self.handlers else "invalid"
        status, answer = await self.call(request)
        self.metrics.count(label, status)
        return status, orjson.dumps(answer)

    async def call(self, request: object, *, forwarded: bool = False) -> tuple[int, dict[str, Any]]:
        """Answer one request object (also a subrequest of ``batch``). ``forwarded``: another
        member of the account's swarm forwarded it (``veil.node.peer_rpc``); it is not forwarded
        again."""
        try:
            if not isinstance(request, dict):
                raise RpcError.bad_request('a request is {"method": ..., "params": {...}}')
            method = request.get("method")
            params = request.get("params", {})
            if not isinstance(method, str):
                raise RpcError.bad_request("method must be a string")
            handler = self.handlers.get(method)
            if handler is None:
                raise RpcError(400, "unknown_method", "unknown method")
            if not isinstance(params, dict):
                raise RpcError.bad_request("params must be an object")
            return 200, await handler(params, forwarded)
        except RpcError as error:
            return error.status, error.body()
        except StorageFull:
            return 507, RpcError.storage_full().body()
        except StoreClosed:
            return 503, RpcError.unavailable("the node is shutting down").body()

    # --- methods --------------------------------------------------------------------------

    def _account(self, params: Params) -> bytes:
        """The request's account, if this node is in its swarm (else 421 with the right swarm)."""
        account = parse_account(params.get("pubkey"))
        if self.network is not None:
            if not self.network.usable():
                raise RpcError.unavailable("this node holds no valid consensus")
            if not self.network.serves(account):
                raise RpcError.wrong_swarm(self.network.swarm_json(account))
            if self.network.swarm_size(account) < self.min_swarm_size:
                raise RpcError.unavailable("the network is too small to hold messages yet")
        return account

    async def store_message(self, params: Params, forwarded: bool) -> dict[str, Any]:
        limits = self.limits
        account = self._account(params)
        namespace = _namespace(params)
        now = now_ms()
        timestamp = _int_param(params, "timestamp")
        if abs(timestamp - now) > limits.clock_skew_ms:
            raise RpcError.not_acceptable("timestamp is too far from the node's clock")
        ttl = _int_param(params, "ttl")
        if not limits.min_ttl_ms <= ttl <= limits.max_ttl_ms:
            raise RpcError.bad_request(
                f"ttl must be between {limits.min_ttl_ms} and {limits.max_ttl_ms} ms"
            )
        data_b64 = params.get("data")
        if not isinstance(data_b64, str):
            raise RpcError.bad_request("data must be a base64 string")
        if len(data_b64) > (limits.max_message_bytes + 2) // 3 * 4:
            raise RpcError.too_large(f"data is larger than {limits.max_message_bytes} bytes")
        try:
            data = binascii.a2b_base64(data_b64, strict_mode=True)
        except (binascii.Error, ValueError):
            raise RpcError.bad_request("data must be valid base64") from None
        if len(data) > limits.max_message_bytes:
            raise RpcError.too_large(f"data is larger than {limits.max_message_bytes} bytes")
        if namespace != 0:
            sig_timestamp = check_timestamp(
                params.get("sig_timestamp", timestamp), now, limits.clock_skew_ms
            )
            signer, signature = verify_signature(
                account, params, store_string(namespace, sig_timestamp)
            )
            auth = StoreAuth(sig_timestamp, signer, signature)
        else:
            auth = None
        digest = message_hash(account, namespace, data)
        message = Message(account, namespace, timestamp, timestamp + ttl, data, digest, auth)
        started = time.perf_counter()
        outcome = await self.writer.submit(
            lambda txn: self.store.put(txn, message), if_full=StoreOutcome.STORAGE_FULL
        )
        if outcome is StoreOutcome.QUOTA_EXCEEDED:
            raise RpcError.quota_exceeded()
        if outcome is StoreOutcome.STORAGE_FULL:
            raise RpcError.storage_full()
        answer: dict[str, Any] = {
            "hash": hash_b64(digest),
            "already": outcome is StoreOutcome.ALREADY,
            "expiry": message.expiry_ms,
        }
        if self.replicator is not None:
            receipts = [self.replicator.receipt(message)]
            receipts += await self.replicator.replicate(message)
            needed = self.replicator.quorum(account)
            if len(receipts) < needed:
                raise RpcError.unavailable(
                    f"held by {len(receipts)} of the {needed} swarm members needed; retry"
                )
            answer["receipts"] = receipts
        self.metrics.store_latency.observe(time.perf_counter() - started)
        return answer

    async def retrieve(self, params: Params, forwarded: bool) -> dict[str, Any]:
        limits = self.limits
        account = self._account(params)
        namespace = _namespace(params)
        now = now_ms()
        timestamp = check_timestamp(params.get("timestamp"), now, limits.clock_skew_ms)
        verify_signature(account, params, retrieve_string(namespace, timestamp))
        after = self._start_cursor(account, namespace, params)
        max_messages = limits.retrieve_max_messages
        if "max_count" in params:
            max_messages = max(1, min(max_messages, _int_param(params, "max_count")))
        messages, more = self.store.retrieve(
            account,
            namespace=namespace,
            after=after,
            now_ms=now,
            max_messages=max_messages,
            max_bytes=limits.retrieve_max_bytes,
        )
        self.metrics.retrieved.inc(len(messages))
        if messages:
            cursor = messages[-1].cursor
        elif after is not None:
            cursor = base64.urlsafe_b64encode(after).rstrip(b"=").decode("ascii")
        else:
            cursor = None
        # The messages array is encoded in Rust, ~3x faster than a list of dicts through orjson
        # (docs/performance.md, "Storage"): [{"hash", "timestamp", "expiration", "data"}, ...],
        # byte for byte what orjson gave. orjson embeds the Fragment as is.
        return {
            "messages": orjson.Fragment(_core.retrieve_messages_json(messages)),
            "more": more,
            "cursor": cursor,
        }

    def _start_cursor(self, account: bytes, namespace: int, params: Params) -> bytes | None:
        cursor = params.get("cursor")
        if cursor not in (None, ""):
            try:
                return cursor_decode(cursor)
            except InvalidInputError as exc:
                raise RpcError.bad_request(str(exc)) from None
        last_hash = params.get("last_hash")
        if last_hash not in (None, ""):
            try:
                digest = hash_from_b64(last_hash)
            except InvalidInputError as exc:
                raise RpcError.bad_request(str(exc)) from None
            return self.store.cursor_of_hash(account, namespace, digest)
        return None

    async def delete(self, params: Params, forwarded: bool) -> dict[str, Any]:
        account = self._account(params)
        texts, hashes = _hash_list(params, self.limits.delete_max_hashes)
        verify_signature(account, params, delete_string(texts))
        deleted = await self.writer.submit(
            lambda txn: self.store.delete_hashes(txn, account, hashes, now_ms=now_ms())
        )
        if not forwarded:
            await self._forward("delete", params, account)
        return {"deleted": sorted(hash_b64(d) for d in deleted)}

    async def delete_all(self, params: Params, forwarded: bool) -> dict[str, Any]:
        account = self._account(params)
        namespace = None if params.get("namespace", 0) == "all" else _namespace(params)
        timestamp = check_timestamp(params.get("timestamp"), now_ms(), self.limits.clock_skew_ms)
        signed = delete_all_string("all" if namespace is None else namespace, timestamp)
        verify_signature(account, params, signed)
        deleted = await self.writer.submit(
            lambda txn: self.store.delete_all(txn, account, namespace)
        )
        if not forwarded:
            await self._forward("delete_all", params, account)
        return {"deleted": sorted(hash_b64(d) for d in deleted)}

    async def expire(self, params: Params, forwarded: bool) -> dict[str, Any]:
        account = self._account(params)
        texts, hashes = _hash_list(params, self.limits.delete_max_hashes)
        expiry = _int_param(params, "expiry")
        shorten, extend = bool(params.get("shorten")), bool(params.get("extend"))
        if shorten and extend:
            raise RpcError.bad_request("shorten and extend cannot both be set")
        mode = "shorten" if shorten else "extend" if extend else ""
        if expiry < now_ms() - self.limits.clock_skew_ms:
            raise RpcError.bad_request("expiry is in the past")
        verify_signature(account, params, expire_string(mode, expiry, texts))
        updated = await self.writer.submit(
            lambda txn: self.store.set_expiry(txn, account, hashes, expiry, mode or "set")
        )
        if not forwarded:
            await self._forward("expire", params, account)
        return {"expiries": {hash_b64(d): e for d, e in updated.items()}}

    async def _forward(self, method: str, params: Params, account: bytes) -> None:
        """A delete or expiry change is answered once the account's other members applied it
        too (or ``replication_timeout_s`` passed): the client may read from any of them next."""
        if self.replicator is not None:
            await self.replicator.forward(method, params, account)

    async def get_expiries(self, params: Params, forwarded: bool) -> dict[str, Any]:
        account = self._account(params)
        texts, hashes = _hash_list(params, self.limits.delete_max_hashes)
        timestamp = check_timestamp(params.get("timestamp"), now_ms(), self.limits.clock_skew_ms)
        verify_signature(account, params, get_expiries_string(timestamp, texts))
        found = self.store.expiries(account, hashes)
        return {"expiries": {hash_b64(d): e for d, e in found.items()}}

    async def info(self, params: Params, forwarded: bool) -> dict[str, Any]:
        return {"version": _VERSION, "timestamp": now_ms(), **self.node_info}

    async def get_swarm(self, params: Params, forwarded: bool) -> dict[str, Any]:
        account = parse_account(params.get("pubkey"))
        if self.network is None:
            return {"swarm": []}
        return {"swarm": self.network.swarm_json(account)}

    async def get_consensus(self, params: Params, forwarded: bool) -> dict[str, Any]:
        """The consensus this node holds, with its authorities' signatures (clients check them
        against their network file; this node's word adds nothing)."""
        document = self.network.consensus_json() if self.network is not None else None
        if document is None:
            raise RpcError.unavailable("this node holds no valid consensus")
        return document

    async def get_nodes(self, params: Params, forwarded: bool) -> dict[str, Any]:
        if self.network is None:
            return {"nodes": []}
        return {"nodes": self.network.nodes_json()}

    async def batch(self, params: Params, forwarded: bool) -> dict[str, Any]:
        requests = params.get("requests")
        if not isinstance(requests, list) or not requests:
            raise RpcError.bad_request("requests must be a non-empty list")
        if len(requests) > self.limits.batch_max_requests:
            raise RpcError.too_large(f"at most {self.limits.batch_max_requests} subrequests")
        results = []
        for request in requests:
            if isinstance(request, dict) and request.get("method") == "batch":
                status, body = 400, RpcError.bad_request("batch cannot nest").body()
            else:
                status, body = await self.call(request)
            results.append({"code": status, "body": body})
        return {"results": results}
