"""Shared helpers for the service node tests: configs, signed requests, a raw HTTP/1.1 client.

The client speaks HTTP/1.1 over asyncio streams by hand (keep-alive, Content-Length), so tests can
also send what no well-behaved client would: garbage, oversized headers, half a request.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import uvloop

from veil import _core
from veil.clock import now_ms as now_ms  # noqa: PLC0414  (re-exported for the tests)
from veil.identity import Identity
from veil.node.config import Limits, LinkSettings, NodeConfig, StoreSettings
from veil.node.identity import create_node_key
from veil.node.links import LinkPool
from veil.node.metrics import NodeMetrics
from veil.node.rpc import StorageRpc
from veil.node.server import Node
from veil.node.store import Message, MessageStore
from veil.node.writer import StoreWriter
from veil.protocol import storage_rpc
from veil.protocol.announcement import Announcement
from veil.protocol.consensus import (
    Consensus,
    SignedConsensus,
    Vote,
    VoteEntry,
    assemble,
    commit_of,
)
from veil.protocol.hashes import message_hash
from veil.protocol.network_file import AuthorityInfo, NetworkFile
from veil.protocol.peers import PeerInfo

T = TypeVar("T")

RPC_PATH = "/storage_rpc/v1"
TTL_MS = 3_600_000
SMALL_MAP = 8 * 1024 * 1024


RUN_TIMEOUT_S = 100.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh uvloop event loop, failing (not hanging) after
    ``RUN_TIMEOUT_S``: pytest-timeout's alarm does not reach a loop blocked in uvloop.

    A server or connection still open when the loop closes is a failure naming it, not a hang:
    uvloop closes what is left with a ResourceWarning first, and with warnings as errors
    (pyproject) the warning would raise inside its C callback, the handle would never be closed and
    ``loop.close()`` would wait on it forever, out of reach of pytest-timeout."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = uvloop.run(asyncio.wait_for(coro, RUN_TIMEOUT_S))
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    for w in caught:  # every other warning is raised as pytest configures it
        if not issubclass(w.category, ResourceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    assert not leaks, f"left open when the loop closed: {leaks}"
    return result


def free_port() -> int:
    """A loopback port free at the moment of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Wait, polling every 50 ms, until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- configs and nodes ---------------------------------------------------------------------------


def make_config(
    data_dir: Path, *, limits: Limits | None = None, store: StoreSettings | None = None
) -> NodeConfig:
    """A node config in ``data_dir`` (created, with a fresh node key) listening on a free port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = NodeConfig(
        data_dir=data_dir,
        listen_port=0,
        limits=limits if limits is not None else Limits(),
        store=store if store is not None else StoreSettings(map_size_bytes=SMALL_MAP),
    )
    create_node_key(config.key_path)
    return config


@asynccontextmanager
async def running_node(config: NodeConfig) -> AsyncIterator[Node]:
    node = Node(config)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


class NodeThread:
    """A node on its own uvloop loop in a background thread, shared by many tests."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.loop = uvloop.new_event_loop()
        self.node: Node | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        assert self.node is not None
        return self.node.port

    def start(self) -> None:
        self._thread.start()
        self.node = Node(self.config)
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(10)

    def stop(self) -> None:
        assert self.node is not None
        asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# --- links between nodes -------------------------------------------------------------------------


def peer_info(identity: Identity) -> PeerInfo:
    """``identity`` as a peer: its keys, at a placeholder address (127.0.0.1:9). Enough for a node
    to admit its links."""
    return PeerInfo(
        identity.ed25519_public_key, identity.x25519_public_key, ("127.0.0.1", 9), ("127.0.0.1", 9)
    )


@asynccontextmanager
async def link_pool(key: _core.NodeKey, settings: LinkSettings) -> AsyncIterator[LinkPool]:
    """A pool of links dialled as ``key`` (counting nothing), closed on leaving."""
    pool = LinkPool(key=key, settings=settings, count=lambda event: None)
    try:
        yield pool
    finally:
        await pool.close()


async def answer_until_closed(
    reader: asyncio.StreamReader, timeout: float = 3.0
) -> tuple[bytes, bool]:
    """Every byte the node sent, and whether it closed the connection within ``timeout``."""
    received = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65_536):
                received += chunk
    except TimeoutError:
        return bytes(received), False
    except ConnectionResetError:
        pass
    return bytes(received), True


# --- accounts and signed requests ----------------------------------------------------------------


class Account:
    """A client account (a Session ID, ``05`` + X25519 key) whose requests are built as a client
    builds them (:mod:`veil.protocol.storage_rpc`). :meth:`sign` and :meth:`signed` are for tests
    that forge what no client would send."""

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity if identity is not None else Identity.generate()

    @property
    def pubkey(self) -> str:
        return self.identity.session_id

    @property
    def account_bytes(self) -> bytes:
        return bytes.fromhex(self.pubkey)

    @property
    def ed_hex(self) -> str:
        return self.identity.ed25519_public_key.hex()

    def sign(self, text: str) -> str:
        return b64(self.identity.sign(text.encode()))

    def signed(self, text: str, **params: Any) -> dict[str, Any]:
        return {
            "pubkey": self.pubkey,
            "pubkey_ed25519": self.ed_hex,
            "signature": self.sign(text),
            **params,
        }

    def store(
        self,
        data: bytes,
        *,
        namespace: int = 0,
        ttl: int = TTL_MS,
        timestamp: int | None = None,
        sign: bool = True,
    ) -> dict[str, Any]:
        """A store to this account; ``sign=False`` leaves a namespaced store unsigned."""
        if sign or namespace == 0:
            return storage_rpc.store_params(
                self.pubkey,
                data,
                ttl,
                namespace=namespace,
                identity=self.identity,
                timestamp_ms=timestamp,
            )
        return storage_rpc.store_params(self.pubkey, data, ttl, timestamp_ms=timestamp) | {
            "namespace": namespace
        }

    def retrieve(
        self, *, namespace: int = 0, timestamp: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        params = storage_rpc.retrieve_params(
            self.identity, namespace=namespace, timestamp_ms=timestamp
        )
        return params | extra

    def delete(self, hashes: list[str]) -> dict[str, Any]:
        return storage_rpc.delete_params(self.identity, hashes)

    def delete_all(self, namespace: int | Literal["all"] = 0) -> dict[str, Any]:
        return storage_rpc.delete_all_params(self.identity, namespace)

    def expire(self, hashes: list[str], expiry: int, mode: str = "") -> dict[str, Any]:
        return storage_rpc.expire_params(self.identity, hashes, expiry, mode=mode)

    def get_expiries(self, hashes: list[str]) -> dict[str, Any]:
        return storage_rpc.get_expiries_params(self.identity, hashes)


def make_message(
    account: bytes,
    data: bytes,
    *,
    namespace: int = 0,
    timestamp_ms: int | None = None,
    ttl_ms: int = TTL_MS,
    expiry_ms: int | None = None,
    arrival_us: int | None = None,
) -> Message:
    """A store-level message, hashed as the node hashes it, arriving at its timestamp (unless
    ``arrival_us`` says otherwise)."""
    ts = now_ms() if timestamp_ms is None else timestamp_ms
    expiry = ts + ttl_ms if expiry_ms is None else expiry_ms
    digest = message_hash(account, namespace, data)
    arrival = ts * 1000 if arrival_us is None else arrival_us
    return Message(account, namespace, ts, expiry, data, digest, None, arrival)


# --- a raw HTTP/1.1 client -----------------------------------------------------------------------


@dataclass(slots=True)
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return orjson.loads(self.body)

    def answer(self) -> Any:
        """The RPC answer: JSON for a result (and a 421's swarm), the text of an error."""
        if self.headers.get("content-type", "").startswith("text/plain"):
            return self.body.decode("utf-8")
        return self.json()


class HttpClient:
    """One keep-alive connection to a node."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> HttpClient:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, timeout: float = 10.0) -> HttpResponse:
        """Read one response: status line, headers, and a Content-Length body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return HttpResponse(int(status), reason[0] if reason else "", headers, body)

    async def at_eof(self, timeout: float = 5.0) -> bool:
        """Whether the server closed the connection (nothing more to read) within ``timeout``."""
        try:
            rest = await asyncio.wait_for(self.reader.read(1), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return rest == b""

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        lines = [f"{method} {path} HTTP/1.1", "Host: node", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        await self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.read_response()

    async def post_json(self, payload: Any) -> HttpResponse:
        return await self.request(
            "POST", RPC_PATH, orjson.dumps(payload), {"Content-Type": "application/json"}
        )

    async def rpc(self, method: str, params: Any) -> tuple[int, Any]:
        """(status, answer): the JSON result, or an error's text (``HttpResponse.answer``)."""
        response = await self.post_json({"method": method, "params": params})
        return response.status, response.answer()


async def rpc_once(port: int, method: str, params: Any) -> tuple[int, Any]:
    async with await HttpClient.connect(port) as client:
        return await client.rpc(method, params)


async def retrieve_all(client: HttpClient, account: Account, namespace: int = 0) -> list[Any]:
    """Every message of one namespace, following the cursor."""
    messages: list[Any] = []
    cursor = ""
    for _ in range(10_000):
        extra: dict[str, Any] = {"cursor": cursor}
        status, body = await client.rpc("retrieve", account.retrieve(namespace=namespace, **extra))
        assert status == 200, body
        messages += body["messages"]
        cursor = body["cursor"]
        if not body["more"]:
            return messages
    raise AssertionError("retrieve never finished")


# --- networks of in-process nodes, with a consensus signed by test authorities --------------------


class StubAuthorities:
    """A network's directory authorities, held by the test: they sign consensuses for in-process
    nodes directly (:meth:`issue`), as a majority of real authorities would after their votes.

    The network file names them at an address nothing listens on, so the nodes' own fetches and
    registrations fail (and are counted) while the test hands them each consensus. Periods are one
    second long, so each :meth:`issue` can take the next period at once.
    """

    def __init__(self, directory: Path, count: int = 3, valid_periods: int = 10_000) -> None:
        self.identities = [Identity.generate() for _ in range(count)]
        self.network = NetworkFile(
            name="test",
            authorities=tuple(
                AuthorityInfo(
                    f"auth{i}",
                    a.ed25519_public_key,
                    a.x25519_public_key,
                    ("127.0.0.1", 9),
                    ("127.0.0.1", 9),
                )
                for i, a in enumerate(self.identities)
            ),
            period_s=1.0,
            valid_periods=valid_periods,
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "network.json"
        self.path.write_text(json.dumps(self.network.to_json()), encoding="utf-8")
        self.last: Consensus | None = None
        self.srv_history: dict[int, bytes] = {}

    def config(self, data_dir: Path, **changes: Any) -> NodeConfig:
        """``make_config`` for a node of this network (``changes`` as ``dataclasses.replace``)."""
        return dataclasses.replace(make_config(data_dir), network_file=str(self.path), **changes)

    def sign(self, consensus: Consensus, signers: int | None = None) -> SignedConsensus:
        chosen = self.identities[: self.network.majority if signers is None else signers]
        digest = consensus.digest()
        return SignedConsensus(consensus, {a.ed25519_public_key: a.sign(digest) for a in chosen})

    def issue(
        self,
        nodes: Sequence[Node],
        *,
        to: Sequence[Node] | None = None,
        guards: bool = True,
        others: Sequence[Announcement] = (),
    ) -> SignedConsensus:
        """Sign the next consensus listing ``nodes`` (their current announcements) and ``others``
        (announcements of nodes not running here) and give it to ``to`` (by default ``nodes``).
        Each node's admission period, once given, stays."""
        period = max(self.network.period_at(now_ms()), (self.last.period + 1) if self.last else 0)
        announcements = [n.directory.own for n in nodes if n.directory.own is not None]
        entries = tuple(
            VoteEntry(a, self._admitted(a.ed25519, period), guards)
            for a in [*announcements, *others]
        )
        reveals = [os.urandom(32) for _ in self.identities]
        votes = [
            Vote("test", period, a.ed25519_public_key, entries, commit_of(os.urandom(32)), r)
            for a, r in zip(self.identities, reveals, strict=True)
        ]
        consensus = assemble(votes, self.network, period, None, self.srv_history)
        self.srv_history[period] = consensus.srv
        self.last = consensus
        signed = self.sign(consensus)
        for node in nodes if to is None else to:
            node.directory.adopt(signed)
        return signed

    def _admitted(self, node_id: bytes, period: int) -> int:
        if self.last is not None:
            entry = self.last.entry(node_id)
            if entry is not None:
                return entry.admitted
        return period


async def start_network(
    authorities: StubAuthorities, directory: Path, size: int, **changes: Any
) -> list[Node]:
    """``size`` in-process nodes of ``authorities``' network, started, all in one consensus."""
    nodes = [Node(authorities.config(directory / f"node{i}", **changes)) for i in range(size)]
    for node in nodes:
        await node.start()
    authorities.issue(nodes)
    return nodes


async def stop_network(nodes: Sequence[Node]) -> None:
    """Stop those of ``nodes`` still serving (a test may have stopped some already)."""
    for node in nodes:
        if node._server is not None and node._server.is_serving():
            await node.stop()


class RpcOverStore:
    """A storage RPC over a real LMDB store and its writer thread, on its own uvloop loop (no
    HTTP, no network view: it serves every account). ``close`` stops the writer and the store."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.loop = uvloop.new_event_loop()
        self.store = MessageStore(path, StoreSettings(map_size_bytes=SMALL_MAP), limits)
        self.writer = StoreWriter(self.store)
        self.loop.run_until_complete(self._start())
        self.rpc = StorageRpc(self.store, self.writer, limits, NodeMetrics())

    async def _start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.loop.run_until_complete(self.writer.close())
        self.store.close()
        self.loop.close()
