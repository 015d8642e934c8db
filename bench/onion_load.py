"""The processes of ``bench_onion_network.py``: a node, a sink, and a load generator / client.

Run as ``python bench/onion_load.py ROLE``. Every role reads one JSON command per line on stdin and
answers one JSON line on stdout, so the benchmark times rounds without paying for process start-up;
``node`` and ``sink`` first print one line saying where they listen. Only 127.0.0.1 is used.

- ``node DIR``: the service node of ``DIR/node.toml`` (a real :class:`veil.node.server.Node` on
  uvloop, as ``veil node run`` starts it). Commands: ``peers`` (replace its peer list), ``stats``
  (onion counters, peel batches, the process's CPU seconds), ``profile_start`` / ``profile_stop``
  (cProfile of the event-loop thread, written to ``path``), ``quit``.
- ``sink``: the next hop of the forwarding benchmark. It accepts node links (version 2: the Noise
  handshake, then encrypted records) and answers every ``REQUEST`` frame at once with
  :data:`SINK_ANSWER`, straight from ``data_received`` (no task; one ``open`` of what arrived and
  one ``seal`` of all its answers), so that it costs as little CPU as possible. It keeps the first
  few request bodies, which the benchmark peels with the sink's key to check that the node
  forwarded the right layer. Commands: ``{"op": "key", "x25519_secret": hex}`` (its link key,
  before any node connects), ``stats``, ``quit``.
- ``load``: connects to a node's link port as a peer would, or to nodes' HTTP ports as a client:

  - ``{"op": "identity"}``: make this process a node identity (a random Ed25519 seed and the X25519
    key derived from it, as a node's); answers ``{"peer": peer json}`` for the node under test's
    peer list, which it must admit the link from.
  - ``{"op": "connect_link", "port": P, "x25519": hex}``: one node link to 127.0.0.1:P, the node
    whose key is ``x25519``; answers once the handshake is done.
  - ``{"op": "prep_forward", "n": N, "route": [hex, hex], "size": S}``: build N distinct two-hop
    onions of S random bytes (untimed) and encode each as a REQUEST frame (sealed when sent).
  - ``{"op": "go_forward", "window": W, "time_limit": T}``: keep W requests in flight until all are
    answered or T seconds pass; the frames written at once are sealed at once, as a node's link
    does. ``{"ok", "bad", "elapsed", "error"}``.
  - ``{"op": "network", "nodes": [peer json...], "destination": i}``: a ``NetworkClient`` over the
    nodes, and a keep-alive aiohttp session for direct requests to node ``i``. The nodes run on a
    static peer list, without a network file: there are no authorities and no consensus, and each
    node serves every account. The client's directory (``ClientDirectory``: a network file and a
    consensus) is therefore made here: each node's own signed announcement is fetched from it
    (``get_nodes``, which lists that node alone) and verified, and a consensus listing them all as
    Guards is signed by an authority key made up for the run (:func:`bench_directory`).
  - ``{"op": "prep_rpc", "method": "info" | "store", "n": N}``: N requests' params (untimed).
  - ``{"op": "go_rpc", "mode": "onion" | "direct", "concurrency": C, "time_limit": T}``: send the
    prepared requests from C coroutines; every answer is checked (``info`` must carry the
    destination's key, ``store`` the expected hash). Answers counts, elapsed, latency percentiles
    and this process's CPU seconds.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from loadkit import percentile, read_line, serve, write_line
from veil import _core
from veil.client.directory import ClientDirectory
from veil.client.network import NetworkClient
from veil.errors import DecryptionError
from veil.identity import Identity
from veil.protocol.announcement import Announcement
from veil.protocol.cells import FRAME_CREATE, FRAME_DATA, LINK_CIRCUIT_ID_LEN
from veil.protocol.consensus import SignedConsensus, Vote, VoteEntry, assemble
from veil.protocol.hashes import hash_b64, message_hash
from veil.protocol.link import (
    HANDSHAKE_INIT_LEN,
    HANDSHAKE_RESPONSE_LEN,
    FrameDecoder,
    FrameKind,
    LinkProtocolError,
    encode_frame,
)
from veil.protocol.network_file import AuthorityInfo, NetworkFile
from veil.protocol.onion_request import build_request
from veil.protocol.peers import PeerInfo, peer_from_json, peer_to_json
from veil.protocol.storage_rpc import store_params

HOST = "127.0.0.1"
SINK_ANSWER = b"sink-ok"
SINK_SAMPLES = 8
CIRCUIT_REQUEST_BYTES = 1000
"""A forwarded data cell's request: with its 2-byte target length, in the 1 KiB bucket."""
MAX_FRAME = 1 << 24
TTL_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- node -----------------------------------------------------------------------------------------


async def run_node(data_dir: Path) -> None:
    from veil.node.config import load_config  # noqa: PLC0415
    from veil.node.server import Node  # noqa: PLC0415

    node = Node(load_config(data_dir))
    await node.start()
    profile: cProfile.Profile | None = None
    write_line({"peer": peer_to_json(node.peer_info)})
    try:
        while line := await read_line():
            command = orjson.loads(line)
            op = command["op"]
            answer: dict[str, Any] = {}
            if op == "peers":
                node.set_peers([peer_from_json(p) for p in command["peers"]])
                answer = {"peers": len(command["peers"])}
            elif op == "stats":
                router = node.router
                answer = {
                    "counts": dict(router.counts),
                    "batches": router.peeler.batches,
                    "layers": router.peeler.layers,
                    "replay_tags": len(router.replays),
                    "cpu_s": time.process_time(),
                }
            elif op == "profile_start":
                profile = cProfile.Profile()
                profile.enable()
            elif op == "profile_stop":
                if profile is not None:
                    profile.disable()
                    profile.dump_stats(command["path"])
                    profile = None
            elif op == "quit":
                break
            else:
                answer = {"failed": f"unknown op {op!r}"}
            write_line(answer)
    finally:
        await node.stop()


# --- sink -----------------------------------------------------------------------------------------


class SinkProtocol(asyncio.Protocol):
    """The accepting end of a node link, as cheap as it can be.

    It answers the handshake of *any* caller: it is the benchmark's sink, not a node, and admitting
    everyone is fine here (a node admits only the nodes in its view or its peers, ``LinkGate``).
    """

    key: _core.NodeKey | None = None  # set by the "key" command, before the node connects
    requests = 0
    samples: list[bytes] = []  # noqa: RUF012  (shared by every connection on purpose)
    circuits: dict[bytes, _core.CircuitHop] = {}  # noqa: RUF012  (link circuit id -> its hop)
    checked = 0
    verified = 0
    """Sampled data cells that peeled, with the sink's end of their circuit, to a whole request."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(MAX_FRAME)
        self.transport: asyncio.Transport | None = None
        self.cipher: _core.LinkCipher | None = None
        self.handshake = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.cipher is None:
            data = self._respond(data)
        if not data or self.cipher is None:
            return
        try:
            frames = self.decoder.feed(self.cipher.open(data))
        except (DecryptionError, LinkProtocolError):
            self.transport.abort()
            return
        out = []
        for frame in frames:
            if frame.kind is FrameKind.REQUEST:
                answer = SINK_ANSWER
                if frame.body[:1] == bytes([FRAME_CREATE]):
                    answer = self._accept_circuit(frame.body)
                else:
                    SinkProtocol.requests += 1
                    if frame.body[:1] == bytes([FRAME_DATA]):
                        self._verify(frame.body)
                    elif len(SinkProtocol.samples) < SINK_SAMPLES:
                        SinkProtocol.samples.append(frame.body)
                out.append(encode_frame(FrameKind.RESPONSE, frame.stream, answer))
            elif frame.kind is FrameKind.PING:
                out.append(encode_frame(FrameKind.PONG, frame.stream))
        if out:
            self.transport.write(self.cipher.seal(b"".join(out)))

    @staticmethod
    def _accept_circuit(body: bytes) -> bytes:
        """The sink's end of a circuit the node under test extends to it (an onion v2 create)."""
        assert SinkProtocol.key is not None
        circuit_id, cell = body[1 : 1 + LINK_CIRCUIT_ID_LEN], body[1 + LINK_CIRCUIT_ID_LEN :]
        layer = SinkProtocol.key.peel_cell(_core.CELL_CREATE, cell)
        hop, slot = layer.accept_circuit()
        SinkProtocol.circuits[circuit_id] = hop
        return layer.wrap_create_reply(slot)

    @staticmethod
    def _verify(body: bytes) -> None:
        """Peel the first data cells of each circuit, which arrive in order (the rest are only
        counted: the sink stays cheap)."""
        hop = SinkProtocol.circuits.get(body[1 : 1 + LINK_CIRCUIT_ID_LEN])
        if hop is not None and SinkProtocol.checked < SINK_SAMPLES:
            SinkProtocol.checked += 1
            content = hop.peel(body[1 + LINK_CIRCUIT_ID_LEN :]).content()
            SinkProtocol.verified += len(content) == 2 + CIRCUIT_REQUEST_BYTES

    def _respond(self, data: bytes) -> bytes:
        """Take handshake bytes; once the caller's message is whole, answer it and return what
        followed it (records)."""
        assert self.transport is not None
        self.handshake += data
        if len(self.handshake) < HANDSHAKE_INIT_LEN:
            return b""
        message, rest = self.handshake[:HANDSHAKE_INIT_LEN], self.handshake[HANDSHAKE_INIT_LEN:]
        self.handshake = b""
        try:
            if SinkProtocol.key is None:
                raise DecryptionError("the sink has no key yet")
            _caller, _clock, answer, self.cipher = SinkProtocol.key.link_respond(message)
        except DecryptionError:
            self.transport.abort()
            return b""
        self.transport.write(answer)
        return rest


async def run_sink() -> None:
    server = await asyncio.get_running_loop().create_server(SinkProtocol, HOST, 0)
    try:
        write_line({"link": server.sockets[0].getsockname()[1]})
        while line := await read_line():
            command = orjson.loads(line)
            op = command["op"]
            if op == "quit":
                break
            if op == "key":
                SinkProtocol.key = _core.NodeKey(bytes.fromhex(command["x25519_secret"]))
                write_line({"x25519": SinkProtocol.key.public.hex()})
                continue
            write_line(
                {
                    "requests": SinkProtocol.requests,
                    "samples": [s.hex() for s in SinkProtocol.samples],
                    "circuits": len(SinkProtocol.circuits),
                    "verified": SinkProtocol.verified,
                    "cpu_s": time.process_time(),
                }
            )
    finally:
        server.close()


# --- load: node-link peer -------------------------------------------------------------------------


class PeerProtocol(asyncio.Protocol):
    """The connecting end of a node link: the handshake, then pre-encoded frames with a window in
    flight, sealed per write (one ``seal`` of the frames written at once, as a node's link does)."""

    def __init__(self, initiator: _core.LinkInitiator) -> None:
        self.initiator = initiator
        self.cipher: _core.LinkCipher | None = None
        self.handshake = b""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.decoder = FrameDecoder(MAX_FRAME)
        self.transport: asyncio.Transport | None = None
        self.frames: list[bytes] = []
        self.sent = self.ok = self.bad = 0
        self.error: str | None = None
        self.deadline = 0.0
        self.done: asyncio.Future[None] | None = None
        self.lost = False
        self.answer_len = len(SINK_ANSWER)
        """RESPONSE bodies must be SINK_ANSWER, or with ``keep`` this long."""
        self.keep: dict[int, bytes] | None = None
        """When set, every RESPONSE body by stream."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.initiator.message)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for future in (self.ready, self.done):
            if future is not None and not future.done():
                future.set_exception(ConnectionError("the node closed the link"))

    def start(self, frames: list[bytes], window: int, time_limit: float) -> asyncio.Future[None]:
        assert self.transport is not None
        assert self.cipher is not None
        self.frames = frames
        self.sent = self.ok = self.bad = 0
        self.error = None
        self.deadline = time.monotonic() + time_limit
        self.done = asyncio.get_running_loop().create_future()
        first = frames[:window]
        self.sent = len(first)
        self.transport.write(self.cipher.seal(b"".join(first)))
        return self.done

    def data_received(self, data: bytes) -> None:
        if self.cipher is None:
            data = self._finish(data)
        if not data or self.cipher is None:
            return
        answered = 0
        for frame in self.decoder.feed(self.cipher.open(data)):
            if frame.kind is FrameKind.PONG:
                continue
            answered += 1
            if self.keep is not None and frame.kind is FrameKind.RESPONSE:
                self.keep[frame.stream] = frame.body
            if frame.kind is FrameKind.RESPONSE and (
                frame.body == SINK_ANSWER
                or (self.keep is not None and len(frame.body) == self.answer_len)
            ):
                self.ok += 1
            else:
                self.bad += 1
                if self.error is None:
                    self.error = f"{frame.kind.name} {frame.body[:64]!r}"
        if self.done is None or self.done.done():
            return
        more = 0
        if time.monotonic() < self.deadline:
            more = min(answered, len(self.frames) - self.sent)
        if more and self.transport is not None:
            batch = b"".join(self.frames[self.sent : self.sent + more])
            self.transport.write(self.cipher.seal(batch))
            self.sent += more
        if self.ok + self.bad >= self.sent and (
            self.sent == len(self.frames) or time.monotonic() >= self.deadline
        ):
            self.done.set_result(None)

    def _finish(self, data: bytes) -> bytes:
        """Take the node's handshake answer; return what followed it (records)."""
        self.handshake += data
        if len(self.handshake) < HANDSHAKE_RESPONSE_LEN:
            return b""
        answer = self.handshake[:HANDSHAKE_RESPONSE_LEN]
        rest = self.handshake[HANDSHAKE_RESPONSE_LEN:]
        self.handshake = b""
        try:
            self.cipher = self.initiator.finish(answer)
        except DecryptionError as exc:
            self.ready.set_exception(exc)
            if self.transport is not None:
                self.transport.abort()
            return b""
        self.ready.set_result(None)
        return rest


# --- load: network client -------------------------------------------------------------------------

BENCH_PERIOD_S = 30 * 24 * 3600.0
"""The made-up network's consensus period: long, so that the client never refreshes it in a run."""


async def node_announcement(session: aiohttp.ClientSession, peer: PeerInfo) -> Announcement:
    """``peer``'s own announcement (``get_nodes`` of a node on a static peer list lists only
    itself), verified, and naming the peer's keys and addresses."""
    url = f"http://{peer.http[0]}:{peer.http[1]}/storage_rpc/v1"
    payload = orjson.dumps({"method": "get_nodes", "params": {}})
    async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as a:
        entries = orjson.loads(await a.read())["nodes"]
    for entry in entries:
        announcement = Announcement.from_json(entry)  # raises unless its signature verifies
        if (announcement.ed25519, announcement.x25519) == (peer.ed25519, peer.x25519):
            if PeerInfo.of(announcement) != peer:
                raise RuntimeError(f"node {peer.ed25519.hex()[:16]} announces other addresses")
            return announcement
    raise RuntimeError(f"node {peer.ed25519.hex()[:16]} does not list itself")


def bench_directory(announcements: list[Announcement]) -> ClientDirectory:
    """A client's directory for nodes that have no authorities: a network file naming one
    authority key made up here (at an address nothing listens on), and the consensus that this
    authority, voting for ``announcements`` (all Guards), assembles and signs."""
    authority = Identity.from_seed(os.urandom(32))
    network = NetworkFile(
        name="onion-bench",
        authorities=(
            AuthorityInfo(
                "bench",
                authority.ed25519_public_key,
                authority.x25519_public_key,
                (HOST, 9),
                (HOST, 9),
            ),
        ),
        period_s=BENCH_PERIOD_S,
        valid_periods=2,
    )
    period = network.period_at(now_ms())
    entries = tuple(VoteEntry(a, period, True) for a in announcements)
    vote = Vote(network.name, period, authority.ed25519_public_key, entries, bytes(32), bytes(32))
    consensus = assemble([vote], network, period, None, {})
    signature = authority.sign(consensus.digest())
    signed = SignedConsensus(consensus, {authority.ed25519_public_key: signature})
    return ClientDirectory(network, signed)


class Loader:
    def __init__(self) -> None:
        self.identity: Identity | None = None
        self.peer: PeerProtocol | None = None
        self.frames: list[bytes] = []
        self.circuits: list[tuple[bytes, _core.ClientCircuit]] = []
        self.nodes: list[PeerInfo] = []
        self.destination: PeerInfo | None = None
        self.client: NetworkClient | None = None
        self.session: aiohttp.ClientSession | None = None
        self.method = "info"
        self.params: list[dict[str, Any]] = []
        self.expect: list[str] = []

    def make_identity(self) -> dict[str, Any]:
        self.identity = Identity.from_seed(os.urandom(32))
        me = PeerInfo(
            ed25519=self.identity.ed25519_public_key,
            x25519=self.identity.x25519_public_key,
            http=(HOST, 1),  # never used: the node under test only answers this peer's link
            link=(HOST, 1),
        )
        return {"peer": peer_to_json(me)}

    async def connect_link(self, port: int, x25519: bytes) -> dict[str, Any]:
        assert self.identity is not None, "identity first"
        key = _core.NodeKey(self.identity.x25519_secret_key)
        initiator = key.link_initiate(x25519, now_ms())  # the node refuses a stale clock
        _, self.peer = await asyncio.get_running_loop().create_connection(
            lambda: PeerProtocol(initiator), HOST, port
        )
        await asyncio.wait_for(self.peer.ready, 10)
        return {"connected": True}

    def prep_forward(self, n: int, route: list[str], size: int) -> dict[str, Any]:
        keys_ = [bytes.fromhex(k) for k in route]
        issued = now_ms()
        blob = os.urandom(size + n)
        frames = []
        for i in range(n):
            onion, _reply = build_request(keys_, blob[i : i + size], issued_ms=issued)
            # hops = 1: the load stands for the hop before the node under test
            frames.append(encode_frame(FrameKind.REQUEST, i + 1, b"\x01" + onion))
        self.frames = frames
        return {"prepared": n, "frame_bytes": len(frames[0]) if frames else 0}

    async def open_circuits(self, k: int, route: list[str]) -> dict[str, Any]:
        """``k`` onion v2 circuits along ``route`` (the node under test, then the sink), opened
        with create cells over the load's link, as the hop before the node would."""
        assert self.peer is not None
        path = [bytes.fromhex(key) for key in route]
        pending, frames = [], []
        for i in range(k):
            cell, circuit = _core.build_create_cell(path, [int(time.time())] * len(path))
            circuit_id = os.urandom(LINK_CIRCUIT_ID_LEN)
            pending.append((circuit_id, circuit))
            body = bytes([FRAME_CREATE]) + circuit_id + cell
            frames.append(encode_frame(FrameKind.REQUEST, i + 1, body))
        self.peer.keep, self.peer.answer_len = {}, _core.CELL_CREATE_REPLY_LEN
        await asyncio.wait_for(self.peer.start(frames, k, 60), 75)
        answers = self.peer.keep
        self.circuits = [
            (circuit_id, circuit.finish(answers[i + 1]))
            for i, (circuit_id, circuit) in enumerate(pending)
        ]
        return {"opened": len(self.circuits), "ok": self.peer.ok}

    def prep_circuit_forward(self, n: int) -> dict[str, Any]:
        """``n`` data cells, round robin over the open circuits, each carrying a fresh request of
        ``CIRCUIT_REQUEST_BYTES``."""
        assert self.peer is not None
        blob = os.urandom(CIRCUIT_REQUEST_BYTES + n)
        frames = []
        for i in range(n):
            circuit_id, circuit = self.circuits[i % len(self.circuits)]
            content = b"\x00\x00" + blob[i : i + CIRCUIT_REQUEST_BYTES]  # no target
            cell, _reply = circuit.seal(content)
            body = bytes([FRAME_DATA]) + circuit_id + cell
            frames.append(encode_frame(FrameKind.REQUEST, i + 1, body))
        self.frames = frames
        self.peer.keep, self.peer.answer_len = {}, len(SINK_ANSWER)
        return {"prepared": n, "frame_bytes": len(frames[0]) if frames else 0}

    def prep_forward_v1(self, n: int, route: list[str], size: int) -> dict[str, Any]:
        assert self.peer is not None
        self.peer.keep = None
        return self.prep_forward(n, route, size)

    async def go_forward(self, window: int, time_limit: float) -> dict[str, Any]:
        assert self.peer is not None
        cpu = time.process_time()
        started = time.perf_counter()
        done = self.peer.start(self.frames, window, time_limit)
        await asyncio.wait_for(done, time_limit + 15)
        elapsed = time.perf_counter() - started
        peer = self.peer
        return {
            "ok": peer.ok,
            "bad": peer.bad,
            "sent": peer.sent,
            "elapsed": elapsed,
            "error": peer.error,
            "cpu_s": time.process_time() - cpu,
        }

    async def network(self, nodes: list[Any], destination: int) -> dict[str, Any]:
        self.nodes = [peer_from_json(p) for p in nodes]
        self.destination = self.nodes[destination]
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        )
        session = self.session
        announcements = [await node_announcement(session, peer) for peer in self.nodes]
        self.client = NetworkClient(bench_directory(announcements), attempts=1)
        await self.client.__aenter__()
        return {"nodes": len(self.nodes)}

    def prep_rpc(self, method: str, n: int) -> dict[str, Any]:
        self.method = method
        if method == "info":
            self.params = [{}] * n
            self.expect = []
            return {"prepared": n}
        account = b"\x05" + os.urandom(32)
        now = now_ms()
        blob = os.urandom(n * 1024)
        self.params, self.expect = [], []
        for i in range(n):
            data = blob[i * 1024 : (i + 1) * 1024]
            self.params.append(store_params(account.hex(), data, TTL_MS, timestamp_ms=now))
            self.expect.append(hash_b64(message_hash(account, 0, data)))
        return {"prepared": n}

    def check(self, i: int, status: int, body: Any) -> str | None:
        """Why answer ``i`` is wrong, or None."""
        if status != 200 or not isinstance(body, dict):
            return f"{status} {str(body)[:200]}"
        assert self.destination is not None
        if self.method == "info":
            if body.get("x25519") != self.destination.x25519.hex():
                return f"info from the wrong node: {body}"
        elif body.get("hash") != self.expect[i] or any(
            isinstance(r, dict) and r.get("already") for r in (body.get("swarm") or {}).values()
        ):
            return f"store answer {str(body)[:300]} does not match {self.expect[i]}"
        return None

    async def go_rpc(self, mode: str, concurrency: int, time_limit: float) -> dict[str, Any]:
        assert self.client is not None
        assert self.session is not None
        assert self.destination is not None
        client, session, destination = self.client, self.session, self.destination
        url = f"http://{destination.http[0]}:{destination.http[1]}/storage_rpc/v1"
        n = len(self.params)
        latencies: list[float] = []
        ok = bad = 0
        error: str | None = None
        next_index = 0
        deadline = time.monotonic() + time_limit
        failed_before = client.paths_failed

        async def one(i: int) -> tuple[int, Any]:
            if mode in ("onion", "circuit"):  # onion: version 1; circuit: onion v2's circuits
                way = "v1" if mode == "onion" else "circuit"
                return await client.request(destination, self.method, self.params[i], onion=way)
            payload = orjson.dumps({"method": self.method, "params": self.params[i]})
            async with session.post(
                url, data=payload, headers={"Content-Type": "application/json"}
            ) as answer:
                return answer.status, orjson.loads(await answer.read())

        async def worker() -> None:
            nonlocal next_index, ok, bad, error
            while next_index < n and time.monotonic() < deadline:
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                try:
                    status, body = await one(i)
                    why = self.check(i, status, body)
                except Exception as exc:  # counted and reported: the benchmark fails on it
                    why = repr(exc)
                latencies.append(time.perf_counter() - t0)
                if why is None:
                    ok += 1
                else:
                    bad += 1
                    error = error or why

        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), time_limit + 30
        )
        elapsed = time.perf_counter() - started
        return {
            "ok": ok,
            "bad": bad,
            "sent": next_index,
            "elapsed": elapsed,
            "error": error,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": sum(latencies) / len(latencies) * 1000 if latencies else 0.0,
            "paths_failed": client.paths_failed - failed_before,
            "cpu_s": time.process_time() - cpu,
        }

    async def close(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        if self.client is not None:
            await self.client.close()
        if self.session is not None:
            await self.session.close()


async def handle_load(loader: Loader, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "identity":
        return loader.make_identity()
    if op == "connect_link":
        return await loader.connect_link(int(command["port"]), bytes.fromhex(command["x25519"]))
    if op == "prep_forward":
        return loader.prep_forward(int(command["n"]), list(command["route"]), int(command["size"]))
    if op == "open_circuits":
        return await loader.open_circuits(int(command["k"]), list(command["route"]))
    if op == "prep_circuit_forward":
        return loader.prep_circuit_forward(int(command["n"]))
    if op == "prep_forward_v1":
        return loader.prep_forward_v1(
            int(command["n"]), list(command["route"]), int(command["size"])
        )
    if op == "go_forward":
        return await loader.go_forward(int(command["window"]), float(command["time_limit"]))
    if op == "network":
        return await loader.network(list(command["nodes"]), int(command["destination"]))
    if op == "prep_rpc":
        return loader.prep_rpc(str(command["method"]), int(command["n"]))
    if op == "go_rpc":
        return await loader.go_rpc(
            str(command["mode"]), int(command["concurrency"]), float(command["time_limit"])
        )
    return {"failed": f"unknown op {op!r}"}


async def run_load() -> None:
    loader = Loader()
    await serve(lambda command: handle_load(loader, command), loader.close)


def main() -> None:
    role = sys.argv[1]
    if role == "node":
        uvloop.run(run_node(Path(sys.argv[2])))
    elif role == "sink":
        uvloop.run(run_sink())
    elif role == "load":
        uvloop.run(run_load())
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
