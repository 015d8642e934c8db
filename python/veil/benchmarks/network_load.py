"""The client process of the network benchmark (``veil bench network``, ``bench/bench_network.py``):
stores and fetches messages on a running devnet.

Run as ``python -m veil.benchmarks.network_load`` (by :mod:`veil.benchmarks.network`). It reads one
JSON command per line on stdin and answers one JSON line on stdout, so the benchmark times rounds
without paying for process start-up, and the client never shares an interpreter with the node
processes (nor with the benchmark). Only loopback is used: the devnet's nodes listen there (node K
on 127.0.K+1.1). A command that fails is answered ``{"failed": ...}``; the driving side voids the
run on it.

- ``{"op": "devnet", "dir": D, "recipients": K}``: read ``D/devnet.json`` and the network file
  ``D/network.json``, fetch the consensus from a seed (``GET /consensus``, taken only if a majority
  of the network file's authorities signed it: ``veil.client.bootstrap.open_directory``), open a
  :class:`~veil.client.network.NetworkClient` on that directory and a
  :class:`~veil.client.swarm.SwarmClient` on it (swarms computed from the consensus's nodes and
  placements), and make K recipient identities. Answers the devnet's number of nodes and the
  number the consensus lists.
- ``{"op": "prep", "n": N, "size": S}``: N messages of S random bytes, each for a recipient drawn at
  random (untimed).
- ``{"op": "go", "concurrency": C, "time_limit": T}``: store the prepared messages from C coroutines
  with ``SwarmClient.store`` (so through onion paths: guard → relay → a member of the recipient's
  swarm), until all are sent or T seconds pass. Every answer is checked: the message's hash,
  no member saying ``already``, and at least ``write_quorum`` (3) signed results in its
  ``swarm`` block that verify (``verify_swarm``) from members of the recipient's swarm, each with
  the expiry asked for. Answers counts, elapsed
  seconds, latency percentiles, the client's onion requests by status, paths that failed and this
  process's CPU seconds. Acknowledged hashes are remembered per recipient.
- ``{"op": "check", "sample": K}``: for K recipients that were sent messages (chosen at
  random), ``SwarmClient.retrieve`` (3 members polled, merged by hash); every acknowledged hash
  must be there, nothing else, and every message's data must hash to its hash.
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from veil.benchmarks.loadkit import percentile, serve
from veil.client.bootstrap import open_directory
from veil.client.directory import ClientDirectory
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.clock import now_ms
from veil.devnet.state import load_state
from veil.identity import Identity
from veil.protocol.hashes import hash_b64, message_hash
from veil.protocol.network_file import load_network_file
from veil.protocol.peers import PeerInfo
from veil.protocol.storage_rpc import verify_swarm

__all__ = ["CountingNetworkClient", "Loader", "devnet_directory", "handle", "main"]

TTL_MS = 3600 * 1000
QUORUM = 3


class NotOpenError(RuntimeError):
    """A command that needs the devnet came before ``{"op": "devnet"}``."""

    def __init__(self) -> None:
        super().__init__('no devnet open: send {"op": "devnet", ...} first')


async def devnet_directory(directory: str) -> tuple[ClientDirectory, int]:
    """A client's directory for the devnet in ``directory``, found as a client finds it: the
    network file ``network.json``, and the consensus from one of the seeds of ``devnet.json``,
    checked against it. With the devnet's number of nodes."""
    state = load_state(Path(directory).resolve())
    if state is None:
        raise RuntimeError(f"no devnet in {directory}")
    network = load_network_file(state.network_path)
    return await open_directory(network, state.seeds, None), len(state.nodes)


class CountingNetworkClient(NetworkClient):
    """A ``NetworkClient`` that counts the onion requests it sends (its consensus refreshes,
    ``get_consensus``, included), by method and the destination's status."""

    def __init__(self, directory: ClientDirectory) -> None:
        super().__init__(directory)
        self.statuses: Counter[str] = Counter()

    async def request(
        self,
        destination: PeerInfo,
        method: str,
        params: dict[str, Any],
        *,
        onion: str | None = None,
    ) -> tuple[int, Any]:
        try:
            status, body = await super().request(destination, method, params, onion=onion)
        except Exception as exc:
            self.statuses[f"{method} {type(exc).__name__}"] += 1
            raise
        self.statuses[f"{method} {status}"] += 1
        return status, body


class Loader:
    def __init__(self) -> None:
        self.network: CountingNetworkClient | None = None
        self.swarm: SwarmClient | None = None
        self.recipients: list[Identity] = []
        self.prepared: list[tuple[Identity, bytes]] = []
        self.acked: dict[str, set[str]] = {}
        # which recipient gets which message, and who is read back: not a secret
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))  # noqa: S311

    def _opened(self) -> tuple[CountingNetworkClient, SwarmClient]:
        if self.network is None or self.swarm is None:
            raise NotOpenError
        return self.network, self.swarm

    async def devnet(self, directory: str, recipients: int) -> dict[str, Any]:
        if self.network is not None:
            raise RuntimeError("a devnet is already open")
        if recipients < 1:
            raise ValueError(f"recipients must be at least 1, not {recipients}")
        client_directory, nodes = await devnet_directory(directory)
        self.network = CountingNetworkClient(client_directory)
        await self.network.__aenter__()
        self.swarm = SwarmClient(self.network)
        self.recipients = [Identity.generate() for _ in range(recipients)]
        return {"nodes": nodes, "view": len(client_directory.nodes)}

    def prep(self, n: int, size: int) -> dict[str, Any]:
        if n < 0 or size < 0:
            raise ValueError(f"n and size must not be negative: {n}, {size}")
        if not self.recipients:
            raise NotOpenError
        blob = os.urandom(n + size)
        self.prepared = [(self.rng.choice(self.recipients), blob[i : i + size]) for i in range(n)]
        return {"prepared": n}

    def check_store(
        self, recipient: Identity, data: bytes, answer: Any, sent_ms: int
    ) -> str | None:
        """Why a store answer is wrong, or None."""
        _, swarm_client = self._opened()
        if not isinstance(answer, dict):
            return f"not an object: {str(answer)[:200]}"
        account = bytes.fromhex(recipient.session_id)
        digest = message_hash(account, 0, data)
        text = hash_b64(digest)
        results = answer.get("swarm")
        if answer.get("hash") != text or not isinstance(results, dict):
            return f"store answer {str(answer)[:200]} is not for this message"
        swarm = [p.ed25519 for p in swarm_client.swarm(account)]
        params = {"pubkey": recipient.session_id}
        valid = verify_swarm("store", params, answer, swarm)
        for member in valid:
            result = results[member.hex()]
            expiry = result.get("expiry")
            if result.get("hash") != text or result.get("already"):
                return f"member {member.hex()[:8]}: {str(result)[:200]} is not for a new message"
            if not isinstance(expiry, int) or not sent_ms + TTL_MS <= expiry <= now_ms() + TTL_MS:
                return f"expiry {expiry} does not match the ttl"
        if len(valid) < QUORUM:
            return (
                f"signed results: {len(results)}, valid from swarm members: {len(valid)} "
                f"(need {QUORUM})"
            )
        return None

    async def go(self, concurrency: int, time_limit: float) -> dict[str, Any]:
        network, swarm = self._opened()
        if concurrency < 1 or not time_limit > 0:
            raise ValueError(f"concurrency {concurrency} and time_limit {time_limit} must be > 0")
        messages = self.prepared
        n = len(messages)
        latencies: list[float] = []
        ok = bad = 0
        error: str | None = None
        next_index = 0
        deadline = time.monotonic() + time_limit
        failed_before = network.paths_failed
        statuses_before = Counter(network.statuses)

        async def worker() -> None:
            nonlocal next_index, ok, bad, error
            while next_index < n and time.monotonic() < deadline:
                recipient, data = messages[next_index]
                next_index += 1
                sent_ms = now_ms()
                t0 = time.perf_counter()
                try:
                    answer = await swarm.store(recipient.session_id, data, ttl_ms=TTL_MS)
                    latencies.append(time.perf_counter() - t0)
                    why = self.check_store(recipient, data, answer, sent_ms)
                except Exception as exc:  # counted and reported: the benchmark fails on it
                    latencies.append(time.perf_counter() - t0)
                    why = repr(exc)
                    answer = None
                if why is None and isinstance(answer, dict):
                    ok += 1
                    self.acked.setdefault(recipient.session_id, set()).add(answer["hash"])
                else:
                    bad += 1
                    error = error or why or f"not an answer: {str(answer)[:200]}"

        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), time_limit + 60
        )
        elapsed = time.perf_counter() - started
        statuses = Counter(network.statuses)
        statuses.subtract(statuses_before)
        return {
            "ok": ok,
            "bad": bad,
            "sent": next_index,
            "elapsed": elapsed,
            "error": error,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": max(latencies, default=0.0) * 1000,
            "mean_ms": sum(latencies) / len(latencies) * 1000 if latencies else 0.0,
            "requests": {k: v for k, v in statuses.items() if v},
            "paths_failed": network.paths_failed - failed_before,
            "cpu_s": time.process_time() - cpu,
        }

    async def check(self, sample: int) -> dict[str, Any]:
        _, swarm = self._opened()
        by_id = {r.session_id: r for r in self.recipients}
        chosen = self.rng.sample(sorted(self.acked), min(sample, len(self.acked)))
        expected = found = unexpected = corrupt = 0
        missing: list[str] = []
        started = time.perf_counter()
        for session_id in chosen:
            recipient = by_id[session_id]
            got = await swarm.retrieve(recipient)
            account = bytes.fromhex(session_id)
            hashes = set()
            for message in got:
                data = base64.b64decode(message["data"])
                if hash_b64(message_hash(account, 0, data)) != message["hash"]:
                    corrupt += 1
                hashes.add(message["hash"])
            acked = self.acked[session_id]
            expected += len(acked)
            found += len(acked & hashes)
            unexpected += len(hashes - acked)
            missing.extend(sorted(acked - hashes)[:4])
        return {
            "recipients": len(chosen),
            "expected": expected,
            "found": found,
            "unexpected": unexpected,
            "corrupt": corrupt,
            "missing": missing[:16],
            "elapsed": time.perf_counter() - started,
        }

    async def close(self) -> None:
        if self.network is not None:
            await self.network.close()


async def handle(loader: Loader, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "devnet":
        return await loader.devnet(str(command["dir"]), int(command["recipients"]))
    if op == "prep":
        return loader.prep(int(command["n"]), int(command["size"]))
    if op == "go":
        return await loader.go(int(command["concurrency"]), float(command["time_limit"]))
    if op == "check":
        return await loader.check(int(command["sample"]))
    return {"failed": f"unknown op {op!r}"}


async def run() -> None:
    loader = Loader()
    await serve(lambda command: handle(loader, command), loader.close)


def main() -> None:
    """Serves commands on stdin until ``{"op": "quit"}`` or the end of input."""
    uvloop.run(run())


if __name__ == "__main__":
    main()
