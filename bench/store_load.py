"""Load generator of ``bench_store.py``: HTTP/1.1 keep-alive clients in a process of their own.

Run as ``python bench/store_load.py``; it reads one JSON command per line on stdin and answers one
JSON line on stdout, so that the benchmark can time rounds without paying for this process's start:

- ``{"op": "connect", "port": P, "connections": C}``: open C keep-alive connections to 127.0.0.1:P.
- ``{"op": "prep_store", "n": N, "accounts": A, "size": S}``: build N store requests (namespace
  0, no signature needed) of S random bytes each, spread over A random accounts, and the hash each
  answer must carry. Untimed.
- ``{"op": "prep_retrieve", "n": N, "body": HEX, "expect": M}``: N copies of one retrieve request,
  each answer to carry M messages.
- ``{"op": "go", "time_limit": T}``: send the prepared requests over every connection (each sends
  its next request when the previous answer is in) until all are answered or T seconds pass; answer
  ``{"ok": n, "bad": n, "elapsed": s, "cpu": s, "error": first error or null}``, ``cpu`` being
  this process's CPU time over the round.
- ``{"op": "quit"}``.

Requests are pre-built bytes; answers are checked cheaply (status, and the expected hash or message
count found in the body) so that this process takes as little CPU from the node as possible.
Only 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop

from veil.protocol.hashes import hash_b64, message_hash
from veil.protocol.storage_rpc import store_params

HOST = "127.0.0.1"
TTL_MS = 24 * 3600 * 1000


def http_request(body: bytes) -> bytes:
    head = (
        b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


def store_body(account: bytes, timestamp_ms: int, data: bytes) -> bytes:
    params = store_params(account.hex(), data, TTL_MS, timestamp_ms=timestamp_ms)
    return orjson.dumps({"method": "store", "params": params})


@dataclass
class Work:
    requests: list[bytes] = field(default_factory=list)
    # What each answer's body must contain (a store's hash, or the count of '"hash"').
    expect_text: list[bytes] = field(default_factory=list)
    expect_count: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, body


class Loader:
    def __init__(self) -> None:
        self.connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.work = Work()

    async def connect(self, port: int, count: int) -> dict[str, Any]:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
            self.connections.append((reader, writer))
        return {"connected": len(self.connections)}

    def prep_store(self, n: int, accounts: int, size: int) -> dict[str, Any]:
        owners = [b"\x05" + os.urandom(32) for _ in range(max(1, accounts))]
        now = time.time_ns() // 1_000_000
        blob = os.urandom(n * size)
        work = Work()
        for i in range(n):
            account = owners[i % len(owners)]
            data = blob[i * size : (i + 1) * size]
            digest = hash_b64(message_hash(account, 0, data))
            work.requests.append(http_request(store_body(account, now, data)))
            work.expect_text.append(b'{"hash":"%s","swarm":' % digest.encode())
        self.work = work
        return {"prepared": n, "accounts": [a.hex() for a in owners]}

    def prep_retrieve(self, n: int, body_hex: str, expect: int) -> dict[str, Any]:
        request = http_request(bytes.fromhex(body_hex))
        self.work = Work(requests=[request] * n, expect_count=expect)
        return {"prepared": n}

    async def go(self, time_limit: float) -> dict[str, Any]:
        work = self.work
        n = len(work.requests)
        next_index = 0
        ok = bad = 0
        error: str | None = None
        deadline = time.monotonic() + time_limit

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal next_index, ok, bad, error
            while next_index < n and time.monotonic() < deadline:
                i = next_index
                next_index += 1
                writer.write(work.requests[i])
                status, body = await _read_response(reader)
                if work.expect_text:
                    good = status == 200 and work.expect_text[i] in body
                else:
                    good = status == 200 and body.count(b'"hash":') == work.expect_count
                if good:
                    ok += 1
                else:
                    bad += 1
                    if error is None:
                        error = f"{status} {body[:200]!r}"

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.wait_for(
            asyncio.gather(*(client(r, w) for r, w in self.connections)), time_limit + 10
        )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        return {
            "ok": ok,
            "bad": bad,
            "elapsed": elapsed,
            "cpu": cpu,
            "sent": next_index,
            "error": error,
        }

    async def close(self) -> None:
        for _, writer in self.connections:
            writer.close()
        for _, writer in self.connections:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def main() -> None:
    loop = uvloop.new_event_loop()
    loader = Loader()
    for line in sys.stdin:
        command = orjson.loads(line)
        op = command["op"]
        answer: dict[str, Any]
        try:
            if op == "connect":
                answer = loop.run_until_complete(
                    loader.connect(int(command["port"]), int(command["connections"]))
                )
            elif op == "prep_store":
                answer = loader.prep_store(
                    int(command["n"]), int(command["accounts"]), int(command["size"])
                )
            elif op == "prep_retrieve":
                answer = loader.prep_retrieve(
                    int(command["n"]), str(command["body"]), int(command["expect"])
                )
            elif op == "go":
                answer = loop.run_until_complete(loader.go(float(command["time_limit"])))
            elif op == "quit":
                break
            else:
                answer = {"failed": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the benchmark, which fails the test
            answer = {"failed": repr(exc)}
        sys.stdout.write(orjson.dumps(answer).decode() + "\n")
        sys.stdout.flush()
    loop.run_until_complete(loader.close())
    loop.close()


if __name__ == "__main__":
    main()
