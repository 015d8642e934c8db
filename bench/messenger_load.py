"""The client process of ``bench_messenger.py``: messenger accounts that send and fetch (devnet).

Run as ``python bench/messenger_load.py``; one JSON command per line on stdin, one JSON answer per
line on stdout (as ``veil.benchmarks.network_load``), so the benchmark times operations without
paying for process start-up, and the client never shares an interpreter with the node processes or
pytest.

Every account is a *device* of its own: an :class:`~veil.client.messaging.Messenger` with its own
:class:`~veil.client.account.Book`, on its own :class:`~veil.client.swarm.SwarmClient` and its own
counting :class:`~veil.client.network.NetworkClient` (own guards, own connections), with
``persist=None``. Every message is 64 characters of text: content v1 padded to the 256-byte bucket,
400 bytes once sealed, for the floor and the messenger alike (checked).

- ``{"op": "devnet", "dir": D}``: the devnet in ``D``: its network file (``D/network.json``) and
  seeds (``D/devnet.json``). Every device then fetches the consensus from a seed, as a client
  without a home does (``GET /consensus``, taken only if a majority of the network file's
  authorities signed it), and computes swarms from its nodes and placements.
- ``{"op": "crypto", "n": N}``: µs per ``seal`` and per open (``decrypt_incoming`` +
  ``decode_content``) of one such message, median of 3 passes of N, on this process's thread.
- ``{"op": "senders", "count": K, "warmup": W}``: K sender devices, each writing to a recipient of
  its own; each sends one message (first contact: message, transcript, config) then W more.
- ``{"op": "floor", "n": N, "senders": K, "time_limit": T}``: the first K senders store N messages
  between them (N / K each, one after the other, all K at once), sealed before the clock starts,
  with ``SwarmClient.store``: one onion store each.
- ``{"op": "send", ...}``: the same with ``Messenger.send_text``.
- ``{"op": "check_send"}``: each recipient fetches (a fresh device) and must find every message sent
  to it (floor and messenger), nothing else; a fresh second device of each sender fetches and must
  find the transcript of every ``send_text``.
- ``{"op": "fetch_setup"}``: a recipient device, a sender device, and a floor ``SwarmClient`` on the
  recipient's network client; the recipient fetches twice (the first stores its config).
- ``{"op": "retrieve_idle"}``: ``SwarmClient.retrieve`` of the recipient's namespace 0 (the
  messenger's own swarm client, so with its cursors): what ``fetch`` does after the config read.
- ``{"op": "fill", "n": N, "time_limit": T}``: wait until the recipient's swarm holds no message
  (the previous fetch's deletion done; bounded), then the sender stores N sealed messages for it.
- ``{"op": "retrieve_all"}``: the floor: ``SwarmClient.retrieve(from_start=True)`` of the filled
  messages (a separate swarm client, same network client); every filled hash must be there.
- ``{"op": "fetch"}``: ``Messenger.fetch`` of the recipient; answers what it took (the checks are
  the benchmark's: count, content ids, sender, nothing left pending for deletion).
- ``{"op": "drained", "time_limit": T}``: wait until the recipient's swarm holds no message.
- ``{"op": "delivery", "n": N, "poll_ms": P, "gap_ms": [A, B], "time_limit": T, "wait_s": W}``:
  a fresh sender and recipient (first contact made and seen before the clock starts); the recipient
  fetches every P ms (a fetch starts P ms after the previous one started, at once if that one took
  longer) while the sender sends N messages with ``send_text``, one after the other with a random
  gap of A to B ms before each. Latency: from the start of ``send_text`` to the end of the fetch
  that returned the message. Stops when all were seen, or W s after the last send, or after T s.
- ``{"op": "quit"}``.

Answers carry the client's onion requests by method and status (``requests``), and its CPU seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from loadkit import percentile, serve
from veil.benchmarks.network_load import CountingNetworkClient
from veil.client.account import Book
from veil.client.bootstrap import open_directory
from veil.client.messaging import Messenger, Received, seal
from veil.client.swarm import SwarmClient
from veil.crypto import decrypt_incoming
from veil.devnet.state import load_state
from veil.identity import Identity
from veil.protocol.content import Content, decode_content
from veil.protocol.network_file import NetworkFile, load_network_file

TTL_MS = 3600 * 1000
SEALED_SIZE = 256 + 144  # the 256-byte bucket, sealed (Session Protocol)
FILL_CONCURRENCY = 8
DRAIN_POLL_S = 0.05


def _text(i: int) -> str:
    return f"veil bench message {i:08d} ".ljust(64, ".")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


class Device:
    """One account on one device: a Messenger on a swarm client on a network client of its own."""

    def __init__(self, identity: Identity, network: CountingNetworkClient) -> None:
        self.identity = identity
        self.network = network
        self.swarm = SwarmClient(network)
        self.messenger = Messenger(
            identity, self.swarm, book=Book(device_name="bench"), ttl_ms=TTL_MS
        )

    @classmethod
    async def open(
        cls, network: NetworkFile, seeds: list[str], nodes: int, identity: Identity | None = None
    ) -> Device:
        """A new device: the consensus from a seed, checked against ``network``; it must list
        the devnet's ``nodes``."""
        directory = await open_directory(network, seeds, None)
        if len(directory.nodes) != nodes:
            raise RuntimeError(f"the consensus lists {len(directory.nodes)} of {nodes} nodes")
        client = CountingNetworkClient(directory)
        await client.__aenter__()
        return cls(identity or Identity.generate(), client)

    @property
    def me(self) -> str:
        return self.identity.session_id


class Loader:
    def __init__(self) -> None:
        self.network_file: NetworkFile | None = None
        self.seeds: list[str] = []
        self.nodes = 0
        self.networks: list[CountingNetworkClient] = []
        self.rng = random.Random()
        # the send benchmark
        self.senders: list[Device] = []
        self.recipients: list[Identity] = []
        self.sent: dict[str, set[str]] = {}  # recipient -> content ids (hex), floor and messenger
        self.transcripts: dict[str, set[str]] = {}  # sender -> content ids sent with send_text
        self.counter = 0
        # the fetch benchmarks
        self.fetcher: Device | None = None
        self.filler: Device | None = None
        self.floor_swarm: SwarmClient | None = None
        self.filled: dict[str, str] = {}  # hash -> content id (hex)

    # --- helpers ------------------------------------------------------------------------------

    async def device(self, identity: Identity | None = None) -> Device:
        if self.network_file is None:
            raise RuntimeError("no devnet yet: the devnet op comes first")
        device = await Device.open(self.network_file, self.seeds, self.nodes, identity)
        self.networks.append(device.network)
        return device

    def statuses(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for network in self.networks:
            total.update(network.statuses)
        return total

    def paths_failed(self) -> int:
        return sum(n.paths_failed for n in self.networks)

    async def measured(self, work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """``work()``'s answer with the elapsed seconds, CPU seconds, onion requests by method and
        status, and paths failed, all over ``work`` alone."""
        before = Counter(self.statuses())
        failed = self.paths_failed()
        cpu = time.process_time()
        started = time.perf_counter()
        answer = await work()
        elapsed = time.perf_counter() - started
        statuses = self.statuses()
        statuses.subtract(before)
        answer.update(
            elapsed=elapsed,
            cpu_s=time.process_time() - cpu,
            requests={k: v for k, v in statuses.items() if v},
            paths_failed=self.paths_failed() - failed,
        )
        return answer

    def sealed(self, sender: Identity, recipient: str) -> tuple[bytes, str]:
        self.counter += 1
        content = Content.text(_text(self.counter), _now_ms())
        data = seal(sender, recipient, content)
        if len(data) != SEALED_SIZE:
            raise RuntimeError(f"a sealed message of {len(data)} bytes, not {SEALED_SIZE}")
        return data, content.id.hex()

    # --- set-up and micro costs ---------------------------------------------------------------

    def devnet(self, directory: str) -> dict[str, Any]:
        state = load_state(Path(directory).resolve())
        if state is None:
            raise RuntimeError(f"no devnet in {directory}")
        self.network_file = load_network_file(state.network_path)
        self.seeds = list(state.seeds)
        self.nodes = len(state.nodes)
        return {"nodes": self.nodes}

    def crypto(self, n: int) -> dict[str, Any]:
        sender, recipient = Identity.generate(), Identity.generate()
        contents = [Content.text(_text(i), _now_ms()) for i in range(n)]
        sealed = [seal(sender, recipient.session_id, c) for c in contents]
        seal_us, open_us = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            for content in contents:
                seal(sender, recipient.session_id, content)
            seal_us.append((time.perf_counter() - t0) / n * 1e6)
            t0 = time.perf_counter()
            for data in sealed:
                plaintext, who = decrypt_incoming(recipient, data)
                decode_content(plaintext)
            open_us.append((time.perf_counter() - t0) / n * 1e6)
            if who != sender.session_id:
                raise RuntimeError("opened a message from the wrong sender")
        return {
            "seal_us": statistics.median(seal_us),
            "open_us": statistics.median(open_us),
            "size": len(sealed[0]),
        }

    # --- sending ------------------------------------------------------------------------------

    async def make_senders(self, count: int, warmup: int) -> dict[str, Any]:
        async def first_contact() -> dict[str, Any]:
            for sender, recipient in zip(self.senders, self.recipients, strict=True):
                await self.send_one(sender, recipient)
            return {}

        async def warm() -> dict[str, Any]:
            for _ in range(warmup):
                for sender, recipient in zip(self.senders, self.recipients, strict=True):
                    await self.send_one(sender, recipient)
            return {}

        self.senders = [await self.device() for _ in range(count)]
        self.recipients = [Identity.generate() for _ in range(count)]
        first = await self.measured(first_contact)
        warmed = await self.measured(warm)
        dirty = [s.messenger.config_dirty for s in self.senders]
        return {"first": first, "warmup": warmed, "config_dirty": sum(dirty)}

    async def send_one(self, sender: Device, recipient: Identity) -> None:
        self.counter += 1
        content_id = await sender.messenger.send_text(recipient.session_id, _text(self.counter))
        self.sent.setdefault(recipient.session_id, set()).add(content_id.hex())
        self.transcripts.setdefault(sender.me, set()).add(content_id.hex())

    async def round(self, kind: str, n: int, senders: int, time_limit: float) -> dict[str, Any]:
        """N sends from the first ``senders`` senders at once (N / senders each, in turn)."""
        share = n // senders
        pairs = list(zip(self.senders[:senders], self.recipients[:senders], strict=True))
        prepared: list[list[tuple[bytes, str]]] = []
        if kind == "floor":
            prepared = [
                [self.sealed(s.identity, r.session_id) for _ in range(share)] for s, r in pairs
            ]
        latencies: list[float] = []
        ok = bad = 0
        error: str | None = None
        deadline = time.monotonic() + time_limit

        async def sender(k: int) -> None:
            nonlocal ok, bad, error
            device, recipient = pairs[k]
            for i in range(share):
                if time.monotonic() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    if kind == "floor":
                        data, content_id = prepared[k][i]
                        await device.swarm.store(recipient.session_id, data, ttl_ms=TTL_MS)
                        self.sent.setdefault(recipient.session_id, set()).add(content_id)
                    else:
                        await self.send_one(device, recipient)
                    ok += 1
                except Exception as exc:  # counted and reported: the benchmark fails on it
                    bad += 1
                    error = error or repr(exc)
                latencies.append(time.perf_counter() - t0)

        async def work() -> dict[str, Any]:
            await asyncio.wait_for(
                asyncio.gather(*(sender(k) for k in range(len(pairs)))), time_limit + 60
            )
            return {}

        answer = await self.measured(work)
        answer.update(
            n=share * len(pairs),
            ok=ok,
            bad=bad,
            error=error,
            p50_ms=_ms(latencies, 0.50),
            p95_ms=_ms(latencies, 0.95),
            max_ms=max(latencies, default=0.0) * 1000,
            config_dirty=sum(s.messenger.config_dirty for s, _ in pairs),
        )
        return answer

    async def check_send(self) -> dict[str, Any]:
        expected = found = unexpected = wrong = 0
        t_expected = t_found = t_unexpected = 0
        reader = await self.device()
        for sender, recipient in zip(self.senders, self.recipients, strict=True):
            device = Device(recipient, reader.network)
            got = await self.fetch_all(device)
            ids = {e.id.hex() for e in got}
            wrong += sum(1 for e in got if e.sender != sender.me or e.kind != "text" or e.outgoing)
            want = self.sent.get(recipient.session_id, set())
            expected += len(want)
            found += len(want & ids)
            unexpected += len(ids - want)
            second = Device(sender.identity, reader.network)  # another device of the sender
            got = await self.fetch_all(second)
            ids = {e.id.hex() for e in got if e.outgoing and e.peer == recipient.session_id}
            want = self.transcripts.get(sender.me, set())
            t_expected += len(want)
            t_found += len(want & ids)
            t_unexpected += len({e.id.hex() for e in got} - want)
        return {
            "expected": expected,
            "found": found,
            "unexpected": unexpected,
            "wrong": wrong,
            "transcripts_expected": t_expected,
            "transcripts_found": t_found,
            "transcripts_unexpected": t_unexpected,
        }

    @staticmethod
    async def fetch_all(device: Device, rounds: int = 3) -> list[Received]:
        """What a fresh device takes in one fetch (and up to ``rounds - 1`` more if a member had
        not all of it yet)."""
        got: list[Received] = []
        for _ in range(rounds):
            new = await device.messenger.fetch()
            got.extend(new)
            if not new and got:
                break
        return got

    # --- fetching -----------------------------------------------------------------------------

    async def fetch_setup(self) -> dict[str, Any]:
        self.fetcher = await self.device()
        self.filler = await self.device()
        self.floor_swarm = SwarmClient(self.fetcher.network)
        fetcher = self.fetcher

        async def warm() -> dict[str, Any]:
            first = len(await fetcher.messenger.fetch())
            second = len(await fetcher.messenger.fetch())
            return {"received": first + second}

        return await self.measured(warm)

    async def retrieve_idle(self) -> dict[str, Any]:
        fetcher = self.fetcher
        assert fetcher is not None

        async def work() -> dict[str, Any]:
            got = await fetcher.swarm.retrieve(fetcher.identity)
            return {"count": len(got)}

        return await self.measured(work)

    async def left(self) -> int:
        assert self.fetcher is not None
        assert self.floor_swarm is not None
        return len(await self.floor_swarm.retrieve(self.fetcher.identity, from_start=True))

    async def drained(self, time_limit: float) -> dict[str, Any]:
        """Wait (bounded) until the recipient's swarm (3 members read) holds nothing in
        namespace 0: the deletion of what the last fetch picked up has reached them."""
        started = time.perf_counter()
        deadline = time.monotonic() + time_limit
        left = await self.left()
        while left and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
            left = await self.left()
        return {"left": left, "wait_ms": (time.perf_counter() - started) * 1000}

    async def fill(self, n: int, time_limit: float) -> dict[str, Any]:
        fetcher, filler = self.fetcher, self.filler
        assert fetcher is not None
        assert filler is not None
        drained = await self.drained(time_limit)
        prepared = [self.sealed(filler.identity, fetcher.me) for _ in range(n)]
        self.filled = {}
        queue = list(reversed(prepared))

        async def worker() -> None:
            while queue:
                data, content_id = queue.pop()
                answer = await filler.swarm.store(fetcher.me, data, ttl_ms=TTL_MS)
                self.filled[str(answer["hash"])] = content_id

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY))), time_limit
        )
        return {"stored": len(self.filled), **drained}

    async def retrieve_all(self) -> dict[str, Any]:
        fetcher, floor = self.fetcher, self.floor_swarm
        assert fetcher is not None
        assert floor is not None

        async def work() -> dict[str, Any]:
            got = await floor.retrieve(fetcher.identity, from_start=True)
            return {"hashes": [m["hash"] for m in got]}

        answer = await self.measured(work)
        hashes = set(answer.pop("hashes"))
        answer.update(
            count=len(hashes),
            found=len(hashes & set(self.filled)),
            extra=len(hashes - set(self.filled)),
        )
        return answer

    async def fetch(self) -> dict[str, Any]:
        fetcher, filler = self.fetcher, self.filler
        assert fetcher is not None
        assert filler is not None
        messenger = fetcher.messenger
        undecryptable = messenger.undecryptable

        async def work() -> dict[str, Any]:
            return {"received": await messenger.fetch()}

        answer = await self.measured(work)
        received: list[Received] = answer.pop("received")
        filled = set(self.filled.values())
        answer.update(
            count=len(received),
            found=len({e.id.hex() for e in received} & filled),
            wrong=sum(1 for e in received if e.sender != filler.me or e.kind != "text"),
            pending=len(messenger.book.pending),
            undecryptable=messenger.undecryptable - undecryptable,
        )
        return answer

    # --- delivery -----------------------------------------------------------------------------

    async def delivery(
        self,
        n: int,
        poll_ms: float,
        gap_ms: tuple[float, float],
        time_limit: float,
        wait_s: float,
    ) -> dict[str, Any]:
        sender, recipient = await self.device(), await self.device()
        # First contact, seen by the recipient, before the clock starts.
        first = await sender.messenger.send_text(recipient.me, "hello")
        warm_seen = False
        for _ in range(50):
            if any(e.id == first for e in await recipient.messenger.fetch()):
                warm_seen = True
                break
            await asyncio.sleep(0.1)
        if not warm_seen:
            raise RuntimeError("the first-contact message never arrived")
        await recipient.messenger.fetch()

        sent_at: dict[bytes, float] = {}
        seen_at: dict[bytes, float] = {}
        sent_ms: dict[bytes, float] = {}
        send_ms: list[float] = []
        fetch_idle_ms: list[float] = []
        fetch_busy_ms: list[float] = []
        wrong = 0
        started = time.monotonic()
        deadline = started + time_limit
        sending_done: list[float] = []

        async def send() -> None:
            for i in range(n):
                await asyncio.sleep(self.rng.uniform(*gap_ms) / 1000)
                if time.monotonic() >= deadline:
                    break
                t0 = time.perf_counter()
                text = _text(i)
                content_id = await sender.messenger.send_text(recipient.me, text)
                sent_at[content_id] = t0
                sent_ms[content_id] = (time.perf_counter() - t0) * 1000
                send_ms.append(sent_ms[content_id])
            sending_done.append(time.monotonic())

        async def poll() -> None:
            nonlocal wrong
            while time.monotonic() < deadline:
                if sending_done and (
                    all(i in seen_at for i in sent_at)
                    or time.monotonic() > sending_done[0] + wait_s
                ):
                    return
                t0 = time.perf_counter()
                got = await recipient.messenger.fetch()
                t1 = time.perf_counter()
                (fetch_busy_ms if got else fetch_idle_ms).append((t1 - t0) * 1000)
                for event in got:
                    if event.sender != sender.me or event.kind != "text":
                        wrong += 1
                    seen_at.setdefault(event.id, t1)
                await asyncio.sleep(max(0.0, poll_ms / 1000 - (time.perf_counter() - t0)))

        async def work() -> dict[str, Any]:
            await asyncio.wait_for(asyncio.gather(send(), poll()), time_limit + 60)
            return {}

        answer = await self.measured(work)
        latencies = [seen_at[i] - t for i, t in sent_at.items() if i in seen_at]
        answer.update(
            sent=len(sent_at),
            seen=sum(1 for i in sent_at if i in seen_at),
            unexpected=sum(1 for i in seen_at if i not in sent_at),
            wrong=wrong,
            pending=len(recipient.messenger.book.pending),
            p50_ms=_ms(latencies, 0.50),
            p95_ms=_ms(latencies, 0.95),
            max_ms=max(latencies, default=0.0) * 1000,
            min_ms=min(latencies, default=0.0) * 1000,
            send_p50_ms=percentile(send_ms, 0.50),
            send_p95_ms=percentile(send_ms, 0.95),
            send_max_ms=max(send_ms, default=0.0),
            slowest=sorted(  # the five slowest deliveries: [latency, its send_text], in ms
                (
                    [round((seen_at[i] - t) * 1000, 1), round(sent_ms[i], 1)]
                    for i, t in sent_at.items()
                    if i in seen_at
                ),
                reverse=True,
            )[:5],
            fetch_idle_p50_ms=percentile(fetch_idle_ms, 0.50),
            fetch_busy_p50_ms=percentile(fetch_busy_ms, 0.50),
            polls=len(fetch_idle_ms) + len(fetch_busy_ms),
            busy_polls=len(fetch_busy_ms),
        )
        return answer

    async def close(self) -> None:
        for network in self.networks:
            with contextlib.suppress(Exception):
                await network.close()


async def handle(loader: Loader, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    limit = float(command.get("time_limit", 60.0))
    if op == "devnet":
        return loader.devnet(str(command["dir"]))
    if op == "crypto":
        return loader.crypto(int(command["n"]))
    if op == "senders":
        return await loader.make_senders(int(command["count"]), int(command["warmup"]))
    if op in ("floor", "send"):
        return await loader.round(op, int(command["n"]), int(command["senders"]), limit)
    if op == "check_send":
        return await loader.check_send()
    if op == "fetch_setup":
        return await loader.fetch_setup()
    if op == "retrieve_idle":
        return await loader.retrieve_idle()
    if op == "fill":
        return await loader.fill(int(command["n"]), limit)
    if op == "retrieve_all":
        return await loader.retrieve_all()
    if op == "fetch":
        return await loader.fetch()
    if op == "drained":
        return await loader.drained(limit)
    if op == "delivery":
        low, high = command["gap_ms"]
        return await loader.delivery(
            int(command["n"]),
            float(command["poll_ms"]),
            (float(low), float(high)),
            limit,
            float(command["wait_s"]),
        )
    return {"failed": f"unknown op {op!r}"}


async def run() -> None:
    loader = Loader()
    await serve(lambda command: handle(loader, command), loader.close)


if __name__ == "__main__":
    uvloop.run(run())
