"""Crash safety of the service node: a store answered 200 survives SIGKILL, exactly once.

The node runs as a real process. Concurrent keep-alive HTTP/1.1 clients store unique messages while,
at a random moment, the process is killed with SIGKILL; the node is restarted on the same data
directory and the load repeats for a few rounds. At the end every acknowledged store must be
retrievable exactly once with the data that was sent, and nothing may appear twice. Stores that
were in flight at the kill were never acknowledged: they may or may not be present (once at most).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from node_helpers import free_port
from veil.identity import Identity

SEED = 0x5EED_C0DE
ROUNDS = 4
CLIENTS = 16
ACCOUNTS = 8
KILL_AFTER_S = (0.2, 1.5)
TTL_MS = 600_000
READY_ATTEMPTS = 300  # x 50 ms: at most 15 s for a node to answer `info`
REQUEST_TIMEOUT_S = 10.0
ROUND_TIMEOUT_S = 15.0
RETRIEVE_MAX_PAGES = 400
MIN_ACKNOWLEDGED = 100
# Bounds each client's loop by count too; 4 rounds x 16 clients x 1000 stores over 8 accounts stays
# under the per-account quota (10 000 messages).
MAX_STORES_PER_CLIENT = 1_000


# --------------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client over asyncio streams


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.open = True

    @classmethod
    async def connect(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), REQUEST_TIMEOUT_S
        )
        return cls(reader, writer)

    async def rpc(self, method: str, params: dict[str, Any]) -> tuple[int, Any]:
        """POST one request to /storage_rpc/v1; return (status, answer): the parsed JSON, or
        an error's text (a ``text/plain`` body)."""
        body = orjson.dumps({"method": method, "params": params})
        head = (
            b"POST /storage_rpc/v1 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        self.writer.write(head + body)
        await self.writer.drain()
        raw_head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        payload = await asyncio.wait_for(self.reader.readexactly(length), REQUEST_TIMEOUT_S)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        if headers.get("content-type", "").startswith("text/plain"):
            return status, payload.decode("utf-8", errors="replace")
        return status, orjson.loads(payload)

    async def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await self.writer.wait_closed()


_CONNECTION_ERRORS = (OSError, asyncio.IncompleteReadError, TimeoutError)


# --------------------------------------------------------------------------------------------------
# The node process


def _init_node(data_dir: Path, port: int) -> None:
    """``veil node init`` (``python -m veil``, the interpreter running the tests)."""
    command = [sys.executable, "-m", "veil", "node", "init", "--data-dir", str(data_dir)]
    done = subprocess.run(
        [*command, "--listen", f"127.0.0.1:{port}", "--link-listen", f"127.0.0.1:{free_port()}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"veil node init failed: {done.stdout}{done.stderr}"


@dataclass
class NodeProcesses:
    """Every node process started, and the stderr file of each."""

    data_dir: Path
    port: int
    logs_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    _files: list[TextIO] = field(default_factory=list)

    def start(self, label: str) -> subprocess.Popen[bytes]:
        log_path = self.logs_dir / f"node-{len(self.procs)}-{label}.stderr"
        log_file = log_path.open("w", encoding="utf-8")
        self._files.append(log_file)
        self.logs.append(log_path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "veil", "node", "run", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for log_file in self._files:
            log_file.close()

    def dump_logs(self) -> str:
        parts = []
        for path in self.logs:
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(f"----- {path.name} -----\n{text}")
        return "\n".join(parts)


async def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(READY_ATTEMPTS):
        if proc.poll() is not None:
            raise AssertionError(f"the node exited with {proc.returncode} before answering")
        try:
            connection = await HttpConnection.connect(port)
        except _CONNECTION_ERRORS:
            await asyncio.sleep(0.05)
            continue
        try:
            status, body = await connection.rpc("info", {})
        except _CONNECTION_ERRORS:
            await asyncio.sleep(0.05)
            continue
        finally:
            await connection.close()
        assert status == 200, body
        return
    raise AssertionError(f"the node did not answer `info` within {READY_ATTEMPTS * 0.05:.0f} s")


# --------------------------------------------------------------------------------------------------
# The load


@dataclass(frozen=True, slots=True)
class Ack:
    account: str
    data: bytes
    round: int


@dataclass
class RoundResult:
    acks: list[tuple[str, Ack]] = field(default_factory=list)  # (hash, what was stored)
    unexpected: list[str] = field(default_factory=list)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _client(
    index: int,
    round_no: int,
    port: int,
    accounts: list[Identity],
    rng: random.Random,
    killed: asyncio.Event,
    result: RoundResult,
    attempted: dict[str, set[bytes]],
    deadline: float,
) -> None:
    connection: HttpConnection | None = None
    sequence = 0
    try:
        while time.monotonic() < deadline and sequence < MAX_STORES_PER_CLIENT:
            if connection is None or not connection.open:
                if killed.is_set():
                    return
                try:
                    connection = await HttpConnection.connect(port)
                except _CONNECTION_ERRORS as exc:
                    if not killed.is_set():
                        result.unexpected.append(f"client {index}: connect failed: {exc!r}")
                    return
            account = accounts[rng.randrange(len(accounts))].session_id
            tag = f"round {round_no} client {index} message {sequence} ".encode()
            data = tag + rng.randbytes(rng.randrange(0, 300))
            sequence += 1
            attempted[account].add(data)
            params = {
                "pubkey": account,
                "namespace": 0,
                "timestamp": _now_ms(),
                "ttl": TTL_MS,
                "data": base64.b64encode(data).decode("ascii"),
            }
            try:
                status, body = await connection.rpc("store", params)
            except _CONNECTION_ERRORS as exc:
                # Not acknowledged: fine once the node was killed, a failure before.
                if not killed.is_set():
                    result.unexpected.append(f"client {index}: request failed: {exc!r}")
                return
            if status != 200:
                result.unexpected.append(f"client {index}: store answered {status}: {body}")
                return
            # One node: the swarm answer has its part alone, for this message and not "already"
            # (a unique message was never held before).
            parts = list(body["swarm"].values())
            if len(parts) != 1 or parts[0].get("hash") != body["hash"]:
                result.unexpected.append(f"client {index}: not one member's result: {body}")
            if "already" in body or any("already" in part for part in parts):
                result.unexpected.append(f"client {index}: a unique store said already: {body}")
            result.acks.append((body["hash"], Ack(account, data, round_no)))
    finally:
        if connection is not None:
            await connection.close()


async def _load_and_kill(
    round_no: int,
    port: int,
    proc: subprocess.Popen[bytes],
    accounts: list[Identity],
    rng: random.Random,
    attempted: dict[str, set[bytes]],
) -> RoundResult:
    result = RoundResult()
    killed = asyncio.Event()
    kill_after = rng.uniform(*KILL_AFTER_S)
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    clients = [
        asyncio.create_task(
            _client(
                index,
                round_no,
                port,
                accounts,
                random.Random(rng.getrandbits(64)),
                killed,
                result,
                attempted,
                deadline,
            )
        )
        for index in range(CLIENTS)
    ]
    await asyncio.sleep(kill_after)
    killed.set()
    proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*clients), ROUND_TIMEOUT_S)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, f"round {round_no}: exit {proc.returncode}"
    return result


async def _retrieve_all(port: int, identity: Identity) -> list[tuple[str, bytes]]:
    """Every message of the account in namespace 0, paging with the cursor: (hash, data)."""
    connection = await HttpConnection.connect(port)
    found: list[tuple[str, bytes]] = []
    cursor = ""  # from the start; a retrieve with a cursor is answered with the next one
    try:
        for _ in range(RETRIEVE_MAX_PAGES):
            timestamp = _now_ms()
            signature = identity.sign(f"retrieve{timestamp}".encode())
            params: dict[str, Any] = {
                "pubkey": identity.session_id,
                "pubkey_ed25519": identity.ed25519_public_key.hex(),
                "timestamp": timestamp,
                "signature": base64.b64encode(signature).decode("ascii"),
                "cursor": cursor,
            }
            status, body = await connection.rpc("retrieve", params)
            assert status == 200, body
            found.extend((m["hash"], base64.b64decode(m["data"])) for m in body["messages"])
            if not body["more"]:
                return found
            assert body["cursor"] not in (None, cursor), f"the cursor did not advance: {body}"
            cursor = body["cursor"]
    finally:
        await connection.close()
    raise AssertionError(f"retrieve still said more after {RETRIEVE_MAX_PAGES} pages")


# --------------------------------------------------------------------------------------------------
# The test


async def _scenario(nodes: NodeProcesses, accounts: list[Identity]) -> None:
    rng = random.Random(SEED)
    attempted: dict[str, set[bytes]] = {identity.session_id: set() for identity in accounts}
    acknowledged: list[tuple[str, Ack]] = []
    per_round: list[int] = []
    for round_no in range(ROUNDS):
        proc = nodes.start(f"round{round_no}")
        await _wait_ready(nodes.port, proc)
        result = await _load_and_kill(round_no, nodes.port, proc, accounts, rng, attempted)
        assert not result.unexpected, f"round {round_no}: {result.unexpected[:10]}"
        per_round.append(len(result.acks))
        acknowledged.extend(result.acks)
    print(f"acknowledged stores per round: {per_round}, total {len(acknowledged)}")

    proc = nodes.start("verify")
    await _wait_ready(nodes.port, proc)
    by_hash: dict[str, Ack] = {}
    for digest, ack in acknowledged:
        assert digest not in by_hash, (
            f"one hash acknowledged twice: {digest} {ack} {by_hash[digest]}"
        )
        by_hash[digest] = ack

    retrieved: dict[str, list[tuple[str, bytes]]] = {}
    for identity in accounts:
        retrieved[identity.session_id] = await _retrieve_all(nodes.port, identity)

    problems: list[str] = []
    all_hashes: Counter[str] = Counter()
    for account, messages in retrieved.items():
        all_hashes.update(digest for digest, _ in messages)
        for digest, data in messages:
            sent = by_hash.get(digest)
            if sent is not None:
                if sent.account != account or sent.data != data:
                    problems.append(f"{digest}: retrieved {data!r} for {account}, stored {sent}")
            elif data not in attempted[account]:
                problems.append(f"{digest}: retrieved data never sent to {account}: {data!r}")
    duplicated = {digest: n for digest, n in all_hashes.items() if n > 1}
    missing = [(digest, ack) for digest, ack in by_hash.items() if all_hashes[digest] == 0]
    lost_per_round = Counter(ack.round for _, ack in missing)
    unacknowledged_kept = sum(1 for digest in all_hashes if digest not in by_hash)
    print(
        f"retrieved {sum(all_hashes.values())} messages; "
        f"{unacknowledged_kept} of them were in flight at a kill (never acknowledged)"
    )
    assert not duplicated, f"{len(duplicated)} hashes retrieved more than once: {duplicated}"
    assert not missing, (
        f"{len(missing)} acknowledged stores lost (per round {dict(lost_per_round)}): {missing[:5]}"
    )
    assert not problems, f"{len(problems)} retrieved messages differ: {problems[:5]}"
    assert len(acknowledged) > MIN_ACKNOWLEDGED, f"only {per_round} stores acknowledged"


def test_every_acknowledged_store_survives_sigkill_exactly_once(tmp_path: Path) -> None:
    nodes = NodeProcesses(data_dir=tmp_path / "node", port=free_port(), logs_dir=tmp_path)
    _init_node(nodes.data_dir, nodes.port)
    accounts = [Identity.generate() for _ in range(ACCOUNTS)]
    try:
        asyncio.run(_scenario(nodes, accounts))
    except BaseException:
        nodes.kill_all()
        print(nodes.dump_logs(), file=sys.stderr)
        raise
    finally:
        nodes.kill_all()
