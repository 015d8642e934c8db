"""Helpers for the oxen-storage-server compatibility tests (``test_storage_compat.py``).

Five in-process nodes run on a background thread with their own uvloop loop, so that one network
serves a whole test module; the tests talk to them synchronously over ``http.client``, one
connection per request. Requests are built and answers checked with PyNaCl alone (keys, signatures,
BLAKE2b), never with Veil's own builders, so the tests pin the wire format rather than Veil's code.

The forms are those of Session's storage server (oxen-storage-server): account ids, message hashes,
subaccount tokens and the strings each swarm member signs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http.client
import json
import threading
import time
import warnings
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from nacl.encoding import Base64Encoder
from nacl.exceptions import BadSignatureError
from nacl.hash import blake2b
from nacl.signing import SigningKey, VerifyKey

from node_helpers import RPC_PATH, StubAuthorities, start_network
from veil.node.server import Node

T = TypeVar("T")

SECOND_MS = 1_000
DAY_MS = 24 * 3600 * SECOND_MS
MAX_EXPIRY_MS = 30 * DAY_MS
"""oxen's TTL_MAXIMUM_PRIVATE: ``expire`` clamps an expiry to now + 30 days."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign(sk: SigningKey, text: str | bytes) -> str:
    """The base64 Ed25519 signature of ``text`` (UTF-8 when a string) by ``sk``."""
    message = text.encode() if isinstance(text, str) else text
    return b64(sk.sign(message).signature)


def account_id(prefix: int, public_key: bytes) -> str:
    """An account as oxen writes it: a one-byte prefix and a 32-byte key, in hex."""
    assert 0 <= prefix <= 0xFF, prefix
    assert len(public_key) == 32, public_key
    return f"{prefix:02x}{public_key.hex()}"


def ed_account(prefix: int, sk: SigningKey) -> str:
    """``prefix`` ‖ the Ed25519 public key of ``sk`` (the peer tests' ``'03' + sk.verify_key``)."""
    return account_id(prefix, sk.verify_key.encode())


def ns_text(namespace: int) -> str:
    """A namespace as oxen writes it into hashes and signed strings: empty for 0."""
    return str(namespace) if namespace else ""


def msg_hash(account: str, namespace: int, data: bytes) -> str:
    """oxen's message hash: unpadded base64 of BLAKE2b-256(prefix ‖ key ‖ namespace text ‖ data)."""
    preimage = bytes.fromhex(account) + ns_text(namespace).encode() + data
    digest: bytes = blake2b(preimage, encoder=Base64Encoder)
    return digest.decode("ascii").rstrip("=")


def make_subaccount(
    prefix: int,
    owner: SigningKey,
    *,
    read: bool = True,
    write: bool = True,
    delete: bool = False,
    any_prefix: bool = False,
) -> tuple[SigningKey, bytes, bytes]:
    """A new subaccount key for ``owner``'s account: (its key, its 36-byte token, the owner's
    signature of the token). The token is prefix ‖ flags ‖ 00 00 ‖ Ed25519 public key, the flags
    bits being read 1, write 2, delete 4 and any-prefix 8."""
    subkey = SigningKey.generate()
    flags = int(read) | int(write) << 1 | int(delete) << 2 | int(any_prefix) << 3
    token = bytes([prefix, flags, 0, 0]) + subkey.verify_key.encode()
    return subkey, token, owner.sign(token).signature


def signed_by(member_ed25519_hex: str, message: bytes, signature_b64: object) -> bool:
    """Whether ``signature_b64`` is the member's Ed25519 signature of ``message``."""
    if not isinstance(signature_b64, str):
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        VerifyKey(bytes.fromhex(member_ed25519_hex)).verify(message, signature)
    except (BadSignatureError, binascii.Error, ValueError, TypeError):
        return False
    return True


# --- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """A node's HTTP answer to one storage RPC request."""

    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:400]!r})"


def ok(answer: Answer) -> dict[str, Any]:
    """The JSON object of a 200 answer (a failed assertion for anything else)."""
    assert answer.status == 200, answer
    try:
        body = json.loads(answer.body)
    except ValueError:
        raise AssertionError(f"a 200 answer whose body is not JSON: {answer!r}") from None
    assert isinstance(body, dict), answer
    return body


def assert_refused(answer: Answer, status: int, text: str) -> None:
    """The answer is ``status`` with exactly oxen's plain-text ``text`` as its body (the peer
    tests' ``r == [b'STATUS', b'TEXT']``)."""
    assert (answer.status, answer.text) == (status, text), answer


# --- the network ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One node as the tests reach it."""

    port: int
    ed25519: str
    x25519: str


class CompatNetwork:
    """``size`` nodes of one consensus (five: every account's swarm is all of them), running on a
    background thread's uvloop loop until :meth:`stop`."""

    def __init__(self, directory: Path, size: int = 5) -> None:
        self.directory = directory
        self.size = size
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.nodes: list[Node] = []
        self.members: list[Member] = []

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        authorities = StubAuthorities(self.directory / "authorities")
        self.nodes = self._call(start_network(authorities, self.directory, self.size), 60)
        self.members = [
            Member(
                node.port,
                node.identity.ed25519_public_key.hex(),
                node.identity.x25519_public_key.hex(),
            )
            for node in self.nodes
        ]

    def stop(self) -> None:
        async def stop_all() -> None:
            for node in self.nodes:
                if node._server is not None and node._server.is_serving():
                    await node.stop()

        try:
            self._call(stop_all(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                self.loop.close()
            leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
            assert not leaks, f"left open when the nodes' loop closed: {leaks}"

    @property
    def member_ids(self) -> set[str]:
        """Every node's Ed25519 key in hex: the swarm of every account."""
        return {m.ed25519 for m in self.members}

    def rpc(self, member: int, method: str, params: Any, timeout: float = 60.0) -> Answer:
        """``POST /storage_rpc/v1`` ``{"method", "params"}`` to member number ``member``."""
        body = json.dumps({"method": method, "params": params}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.members[member].port, timeout=timeout)
        try:
            conn.request("POST", RPC_PATH, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return Answer(response.status, response.read())
        finally:
            conn.close()

    def swarm_results(self, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The ``swarm`` map of a swarm answer, checked to hold one object per swarm member."""
        swarm = body.get("swarm")
        assert isinstance(swarm, dict), body
        assert set(swarm) == self.member_ids, sorted(swarm)
        assert all(isinstance(v, dict) for v in swarm.values()), swarm
        return swarm

    def signed_swarm(self, body: dict[str, Any], message: bytes) -> dict[str, dict[str, Any]]:
        """:meth:`swarm_results`, each one signed over ``message`` by the member it is filed
        under."""
        swarm = self.swarm_results(body)
        for member, result in swarm.items():
            assert signed_by(member, message, result.get("signature")), (
                f"{member[:12]}… did not sign {message!r}: {result}"
            )
        return swarm


def running_network(directory: Path) -> Iterator[CompatNetwork]:
    """A module fixture's body: five nodes started in ``directory``, stopped after the module."""
    network = CompatNetwork(directory)
    network.start()
    try:
        yield network
    finally:
        network.stop()


# --- requests as the peer tests build them -------------------------------------------------------


def retrieve_params(
    sk: SigningKey, account: str, *, timestamp: int | None = None, namespace: int = 0, **extra: Any
) -> dict[str, Any]:
    """A retrieve signed by ``sk``: ``"retrieve" ‖ namespace ‖ timestamp``."""
    ts = now_ms() if timestamp is None else timestamp
    params: dict[str, Any] = {"pubkey": account, "timestamp": ts}
    if namespace:
        params["namespace"] = namespace
    params["signature"] = sign(sk, f"retrieve{ns_text(namespace)}{ts}")
    return params | extra


@dataclass(slots=True)
class Stored:
    """One message stored by :func:`store_n`."""

    data: bytes
    timestamp: int
    expiry: int
    hash: str


def store_n(
    net: CompatNetwork,
    member: int,
    account: str,
    base: bytes,
    n: int,
    *,
    now: int | None = None,
    ttl_ms: int = 30 * SECOND_MS,
) -> list[Stored]:
    """Store ``n`` messages ``base + b"0"``, ``base + b"1"``… to ``account`` (namespace 0,
    unsigned) through ``member``, the i-th with timestamp ``now - i`` seconds and expiry
    ``ttl_ms`` after it; each is checked held by every swarm member under its hash (the peer's
    ``ss.store_n``)."""
    start = now_ms() if now is None else now
    stored = []
    for i in range(n):
        data = base + str(i).encode()
        timestamp = start - i * SECOND_MS
        expiry = timestamp + ttl_ms
        params = {"pubkey": account, "timestamp": timestamp, "expiry": expiry, "data": b64(data)}
        digest = msg_hash(account, 0, data)
        swarm = net.swarm_results(ok(net.rpc(member, "store", params)))
        assert not any("failed" in v for v in swarm.values()), swarm
        assert all(v.get("hash") == digest for v in swarm.values()), (digest, swarm)
        stored.append(Stored(data, timestamp, expiry, digest))
    assert len({m.hash for m in stored}) == n
    return stored


def message_json(m: Stored, expiration: int | None = None) -> dict[str, Any]:
    """The message as retrieve answers it."""
    return {
        "data": b64(m.data),
        "expiration": m.expiry if expiration is None else expiration,
        "hash": m.hash,
        "timestamp": m.timestamp,
    }
