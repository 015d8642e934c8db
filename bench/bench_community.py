"""pytest-benchmark suite of the community server (``docs/community.md``, "Cost").

The server's own cost per request, in process, without HTTP: ``CommunityRpc.handle`` of a sealed,
signed request (open the envelope, parse, check the clock, verify the Ed25519 signature, the
replay cache, the database work, the answer JSON and its seal). Each round's request is made and
sealed in ``setup`` (untimed; every one has its own nonce). On a SQLite file in a temporary
directory (WAL, ``synchronous=NORMAL``) holding ``HISTORY`` posts in each of 10 rooms:

- ``community-poll``: a poll of 1 and of 10 rooms, with 0 and with 100 new changes per room (the
  ``since`` of each room is its seqno, or its seqno - 100). Every post is stored with its proof
  (the signed request), as the server stores it, so each change carries one.
- ``community-post``: one 200-byte post (a new row and the room's counter, one commit).
- ``community-floor``: a signed ``info`` (the envelope, the signature, the replay cache: what every
  signed request costs before its method runs), and the hop to a single worker thread and back
  (``run_in_executor`` of a no-op on uvloop), the price of moving the database off the event loop.
- ``test_db_size_per_10k_posts``: the database file after 10,000 posts of 100 and of 1,000 bytes
  with their proofs (WAL checkpointed), in bytes per post.

Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``): each then runs
once, small, as a correctness check. ``--benchmark-enable`` times them; the medians are printed at
the end of the module::

    .venv/bin/python -m pytest bench/bench_community.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from benchkit import Benchmark, median_s, pick
from veil import _core
from veil.community.config import CommunityLimits
from veil.community.db import CommunityDb, Proof
from veil.community.rpc import CommunityRpc, proof_of
from veil.identity import Identity
from veil.protocol.community import open_answer, parse_request, seal_request, sign_request

ROOMS = 10
HISTORY = (2_000, 150)
NEW = 100
ROUNDS = (300, 1)
SIZE_POSTS = (10_000, 200)

FIGURES: dict[str, float] = {}


class Signer:
    """A stand-in for a blinded key (a plain Ed25519 identity under the ``25`` prefix)."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.pubkey = "25" + self.identity.ed25519_public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return _core.ed25519_sign(self.identity.seed, message)


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints this run's medians once every benchmark of the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    lines = ["", "community server, this run (median per request, in process, no HTTP):"]
    for key, value in FIGURES.items():
        if key.startswith("size/"):
            lines.append(f"  {key[5:]:28} {value:9.0f} bytes per post")
        elif key.startswith("bytes/"):
            lines.append(f"  {key[6:]:28} {value:9.0f} bytes of answer JSON")
        else:
            lines.append(f"  {key:28} {value * 1e6:9.1f} us")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


class Server:
    """An rpc over a database of ``ROOMS`` rooms with ``history`` posts each."""

    def __init__(self, path: Path, history: int) -> None:
        limits = CommunityLimits(
            post_rate=1 << 30, replay_max_entries=1 << 24, replay_max_entries_per_user=1 << 24
        )
        self.db = CommunityDb(path)
        self.rpc = CommunityRpc(self.db, limits, _core.x25519_generate_secret())
        self.signer = Signer()
        self.tokens = [f"room{index}" for index in range(ROOMS)]
        author = Signer()
        writer = self.db.user_id(author.pubkey, 1)
        text = "x" * 200
        for token in self.tokens:
            room = self.db.create_room(token, token, "", read_only=False, now_ms=1)
            assert room is not None
            for _ in range(history):
                params = {"room": token, "text": text, "name": "name"}
                proof = _proof(author, self.rpc.server_key, params)
                self.db.add_post(
                    room.id, writer, "name", text, reply_to=None, now_ms=1, proof=proof
                )
        self.seqno = {token: self.db.room(token).seqno for token in self.tokens}  # type: ignore[union-attr]

    def sealed(self, method: str, params: dict[str, Any]) -> tuple[bytes, bytes]:
        request = sign_request(self.signer, self.rpc.server_key, method, params)
        return seal_request(self.rpc.server_key, request)


def _proof(signer: Signer, server_key: bytes, params: dict[str, Any]) -> Proof:
    """What the server keeps of a signed ``post`` of ``params``."""
    return proof_of(parse_request(sign_request(signer, server_key, "post", params)))


def _disabled(config: pytest.Config) -> bool:
    """As pytest-benchmark decides: --benchmark-disable (the default here) unless
    --benchmark-enable."""
    return bool(config.getoption("benchmark_disable")) and not config.getoption("benchmark_enable")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    history = HISTORY[1] if _disabled(request.config) else HISTORY[0]
    made = Server(tmp_path_factory.mktemp("community") / "c.sqlite3", history)
    yield made
    made.db.close()


def _time(benchmark: Benchmark, server: Server, name: str, make: Any) -> Any:
    """Times ``server.rpc.handle`` of a request made by ``make()`` in each round's setup."""
    last: list[Any] = []

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        body, key = make()
        last[:] = [key]
        return (body,), {}

    answer = benchmark.pedantic(
        server.rpc.handle, setup=setup, rounds=pick(benchmark, ROUNDS), warmup_rounds=0
    )
    assert answer is not None
    opened = open_answer(last[0], answer)
    assert opened["status"] == 200, opened
    median = median_s(benchmark)
    if median is not None:
        FIGURES[name] = median
    return opened["body"]


@pytest.mark.parametrize("rooms", [1, 10])
@pytest.mark.parametrize("new", [0, NEW])
def test_poll(benchmark: Benchmark, server: Server, rooms: int, new: int) -> None:
    benchmark.group = "community-poll"
    since = {token: server.seqno[token] - new for token in server.tokens[:rooms]}
    body = _time(
        benchmark,
        server,
        f"poll {rooms:2} room(s), {new:3} new",
        lambda: server.sealed("poll", {"rooms": since}),
    )
    assert len(body["rooms"]) == rooms
    for entry in body["rooms"].values():
        assert len(entry["changes"]) == new
        assert entry["more"] is False
    benchmark.extra_info["answer_bytes"] = len(orjson.dumps(body))
    if not benchmark.disabled and new:
        FIGURES[f"bytes/poll {rooms:2} room(s), {new:3} new"] = len(orjson.dumps(body))


def test_post(benchmark: Benchmark, server: Server) -> None:
    benchmark.group = "community-post"
    text = "y" * 200
    body = _time(
        benchmark,
        server,
        "post (200 bytes)",
        lambda: server.sealed("post", {"room": server.tokens[-1], "text": text, "name": "n"}),
    )
    assert body["seqno"] > server.seqno[server.tokens[-1]]


def test_signed_info_floor(benchmark: Benchmark, server: Server) -> None:
    benchmark.group = "community-floor"
    body = _time(benchmark, server, "signed info (floor)", lambda: server.sealed("info", {}))
    assert body["version"] == 1


def test_worker_thread_hop(benchmark: Benchmark) -> None:
    benchmark.group = "community-floor"
    rounds = pick(benchmark, (2000, 10))

    async def hops() -> list[float]:
        loop = asyncio.get_running_loop()
        samples = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
            for _ in range(rounds):
                start = time.perf_counter()
                await loop.run_in_executor(worker, int)
                samples.append(time.perf_counter() - start)
        return samples

    samples = benchmark.pedantic(lambda: uvloop.run(hops()), rounds=1)
    samples.sort()
    median = samples[len(samples) // 2]
    benchmark.extra_info["median_hop_s"] = median
    if not benchmark.disabled:
        FIGURES["worker-thread hop"] = median


@pytest.mark.parametrize("size", [100, 1000])
def test_db_size_per_10k_posts(tmp_path: Path, request: pytest.FixtureRequest, size: int) -> None:
    disabled = _disabled(request.config)
    posts = SIZE_POSTS[1] if disabled else SIZE_POSTS[0]
    path = tmp_path / "size.sqlite3"
    db = CommunityDb(path)
    signers = [Signer() for _ in range(50)]
    users = [db.user_id(signer.pubkey, 1) for signer in signers]
    room = db.create_room("lobby", "Lobby", "", read_only=False, now_ms=1)
    assert room is not None
    text = "z" * size
    server_key = _core.x25519_public_key(_core.x25519_generate_secret())
    for index in range(posts):
        params = {"room": "lobby", "text": text, "name": "A name"}
        proof = _proof(signers[index % 50], server_key, params)
        db.add_post(
            room.id, users[index % 50], "A name", text, reply_to=None, now_ms=index, proof=proof
        )
    db.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    per_post = path.stat().st_size / posts
    assert per_post > size
    if not disabled:
        FIGURES[f"size/db, {size}-byte posts"] = per_post
