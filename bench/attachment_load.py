"""The client process of ``bench_attachment_network.py``: attachments up and down a running devnet,
through onion paths (``veil.client.attachments.Transfers``) and, for comparison, straight to a
swarm member (``POST /storage_rpc/v1``, no onion).

Run as ``python bench/attachment_load.py``. It reads one JSON command per line on stdin and answers
one JSON line on stdout (``loadkit.serve``), so the benchmark times transfers without paying for
process start-up, and the client never shares an interpreter with the node processes (nor with
pytest). Only loopback is used.

- ``{"op": "devnet", "dir": D}``: find the devnet as a client does (its network file, and the
  consensus from a seed, checked: ``veil.benchmarks.network_load.devnet_directory``), open a
  counting :class:`~veil.client.network.NetworkClient` and a
  :class:`~veil.client.swarm.SwarmClient` on it, and a keep-alive aiohttp session for the direct
  requests (``veil.client.http.client_session``, as the client's own). Answers the devnet's number
  of nodes and the number the consensus lists.
- ``{"op": "prep", "size": S}``: two fresh attachments of S random bytes (untimed): one for the
  onion upload (``Transfers`` seals it as it goes), one sealed here at once
  (``seal_attachment``: its chunks and their keys) for the direct store. Fresh keys every time, so
  every chunk goes to an account that holds nothing yet: no store is answered ``already``.
- ``{"op": "upload", "parallel": P}``: ``Transfers(swarm, parallel=P).upload`` of the onion
  attachment, timed: every chunk sealed, stored through a three-hop onion at a member of its swarm
  and acknowledged by at least W = 3 signed results (``SwarmClient.store`` raises otherwise, and
  ``Transfers`` then fails). The progress callback must add up to the manifest's stored size.
- ``{"op": "download", "parallel": P}``: ``Transfers(swarm, parallel=P).download`` of what the
  last upload stored, timed; the bytes must be the uploaded bytes, else the command fails.
- ``{"op": "store", "parallel": P}``: the sealed chunks of the direct attachment, each stored with
  ``POST /storage_rpc/v1`` at one member of its swarm (shuffled, the next one of up to three on a
  failure, as ``SwarmClient`` does), P at a time, timed. The params are built and signed in the
  timed loop, as ``SwarmClient.store`` builds them (``store_params``, namespace 17, signed with the
  chunk's key ``KeySigner(seed, prefix=0x0a)``, the same lifetime as ``Transfers``), and every
  answer is checked as ``SwarmClient`` checks it: status 200, the chunk's hash (recomputed here),
  at least W = 3 signed results for that hash that verify from members of the swarm computed from
  the consensus (``verify_swarm``, stopping at W); and none ``already``.
- ``{"op": "retrieve", "parallel": P}``: those chunks fetched back, each with a signed
  ``retrieve`` (``retrieve_params(KeySigner…, namespace=17)``, from the start) posted straight to
  one member of its swarm, in random order, the next member if one gives nothing (as
  ``Transfers`` does), P at a time, timed. Every answer must carry exactly the stored bytes.
- ``{"op": "delete"}``: the chunks of both attachments deleted (untimed), each with a signed
  ``delete_all`` of namespace 17 posted straight to a member of its swarm, so that the nodes'
  stores stay small from round to round. Answers how many the swarm acknowledged.
- ``{"op": "quit"}``.

Every timed command answers its wall time, the process's CPU time (``time.process_time``, and user
and system time apart), how many chunks moved on to another member, and the onion requests it
sent by method and status (consensus refreshes, ``get_consensus``, included: the devnet's period
is 2 s). Each takes ``"profile": PATH`` to run under ``cProfile`` and write the statistics there
(for a look at where the client's time goes; not for timed figures).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import cProfile
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import uvloop

from loadkit import serve
from veil.benchmarks.network_load import CountingNetworkClient, devnet_directory
from veil.client.attachments import ATTACHMENT_TTL_MS, Transfers
from veil.client.http import MAX_ANSWER_BYTES, client_session, read_bounded, url
from veil.client.swarm import SwarmClient
from veil.protocol.attachments import (
    ATTACHMENT_PREFIX,
    NS_ATTACHMENTS,
    Manifest,
    SealedChunk,
    chunk_seed,
    seal_attachment,
)
from veil.protocol.hashes import hash_b64, message_hash
from veil.protocol.peers import PeerInfo
from veil.protocol.storage_rpc import (
    KeySigner,
    delete_all_params,
    retrieve_params,
    store_params,
    verify_swarm,
)

NAME = "bench.bin"
MIME = "application/octet-stream"
QUORUM = 3
TRIES = 3  # members a direct store is tried at, as SwarmClient._write


class Failed(Exception):
    """A transfer whose result is wrong: the command fails (and with it the benchmark)."""


class Loader:
    def __init__(self) -> None:
        self.network: CountingNetworkClient | None = None
        self.swarm: SwarmClient | None = None
        self.session: aiohttp.ClientSession | None = None
        self.data = b""
        self.manifest: Manifest | None = None
        self.sealed: tuple[Manifest, list[SealedChunk]] | None = None
        self.rng = random.SystemRandom()

    async def devnet(self, directory: str) -> dict[str, Any]:
        client_directory, nodes = await devnet_directory(directory)
        self.network = CountingNetworkClient(client_directory)
        await self.network.__aenter__()
        self.swarm = SwarmClient(self.network)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self.session = client_session(connector=connector)
        return {"nodes": nodes, "view": len(client_directory.nodes)}

    def prep(self, size: int) -> dict[str, Any]:
        self.data = os.urandom(size)
        self.manifest = None
        self.sealed = seal_attachment(os.urandom(size), NAME, MIME)
        manifest = self.sealed[0]
        return {"size": size, "chunks": manifest.chunks, "stored": manifest.stored_size}

    # --- timing ---------------------------------------------------------------------------------

    async def timed(
        self, work: Callable[[], Awaitable[dict[str, Any]]], profile: str | None = None
    ) -> dict[str, Any]:
        """``work()``'s answer, with its wall and CPU time, and the onion requests it sent."""
        network = self.network
        assert network is not None
        statuses = Counter(network.statuses)
        failed = network.paths_failed
        profiler = cProfile.Profile() if profile else None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = time.process_time()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            answer = await work()
        finally:
            if profiler is not None:
                profiler.disable()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_SELF)
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        sent = Counter(network.statuses)
        sent.subtract(statuses)
        return {
            **answer,
            "elapsed": elapsed,
            "cpu_s": cpu,
            "user_s": after.ru_utime - usage.ru_utime,
            "sys_s": after.ru_stime - usage.ru_stime,
            "requests": {k: v for k, v in sent.items() if v},
            "paths_failed": network.paths_failed - failed,
        }

    async def each(self, count: int, parallel: int, work: Callable[[int], Awaitable[None]]) -> None:
        """``work(i)`` for i in 0..count-1, at most ``parallel`` at once (as ``Transfers._run``);
        the first failure is raised."""
        queue = list(reversed(range(count)))

        async def worker() -> None:
            while queue:
                await work(queue.pop())

        await asyncio.gather(*(worker() for _ in range(min(parallel, count))))

    # --- through onion paths: Transfers ---------------------------------------------------------

    async def upload(self, parallel: int, profile: str | None) -> dict[str, Any]:
        assert self.swarm is not None
        transfers = Transfers(self.swarm, parallel=parallel)
        progressed = 0

        def progress(stored: int) -> None:
            nonlocal progressed
            progressed += stored

        async def work() -> dict[str, Any]:
            self.manifest = await transfers.upload(self.data, NAME, MIME, progress=progress)
            return {}

        answer = await self.timed(work, profile)
        manifest = self.manifest
        assert manifest is not None
        if progressed != manifest.stored_size or manifest.size != len(self.data):
            raise Failed(f"progress {progressed}, stored size {manifest.stored_size}")
        return {
            **answer,
            "size": manifest.size,
            "stored": manifest.stored_size,
            "chunks": manifest.chunks,
            "moved_on": transfers.retried,
        }

    async def download(self, parallel: int, profile: str | None) -> dict[str, Any]:
        assert self.swarm is not None
        manifest = self.manifest
        if manifest is None:
            raise Failed("nothing uploaded")
        transfers = Transfers(self.swarm, parallel=parallel)
        got = b""

        async def work() -> dict[str, Any]:
            nonlocal got
            got = await transfers.download(manifest)
            return {}

        answer = await self.timed(work, profile)
        if got != self.data:
            raise Failed(f"downloaded {len(got)} bytes that are not the {len(self.data)} uploaded")
        return {
            **answer,
            "size": manifest.size,
            "stored": manifest.stored_size,
            "chunks": manifest.chunks,
            "moved_on": transfers.retried,
            "verified": True,
        }

    # --- straight to a swarm member -------------------------------------------------------------

    def members(self, account: bytes) -> list[PeerInfo]:
        assert self.swarm is not None
        members = self.swarm.swarm(account)
        self.rng.shuffle(members)
        return members

    async def rpc(self, member: PeerInfo, method: str, params: dict[str, Any]) -> tuple[int, Any]:
        """``{"method", "params"}`` posted to ``member``'s storage RPC (no onion); (status,
        answer), the answer read as the client reads any (bounded)."""
        assert self.session is not None
        payload = orjson.dumps({"method": method, "params": params})
        async with self.session.post(
            url(member.http, "/storage_rpc/v1"),
            data=payload,
            headers={"Content-Type": "application/json"},
            allow_redirects=False,
        ) as answer:
            body = await read_bounded(answer, MAX_ANSWER_BYTES, "a member")
            status = answer.status
        try:
            return status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, body.decode(errors="replace")

    def check_store(
        self, chunk: SealedChunk, params: dict[str, Any], status: int, body: Any
    ) -> str | None:
        """Why a direct store answer does not count, or None (``SwarmClient._acknowledged``)."""
        assert self.swarm is not None
        if status != 200 or not isinstance(body, dict):
            return f"status {status}: {str(body)[:200]}"
        text = hash_b64(message_hash(chunk.account, NS_ATTACHMENTS, chunk.data))
        if body.get("hash") != text:
            return f"answer {str(body)[:200]} is not for this chunk"
        members = [p.ed25519 for p in self.swarm.swarm(chunk.account)]
        signers = verify_swarm(
            "store",
            params,
            body,
            members,
            enough=QUORUM,
            accept=lambda result: result.get("hash") == text,
        )
        if len(signers) < QUORUM:
            return f"acknowledged by {len(signers)} of the {QUORUM} members needed"
        if any(body["swarm"][m.hex()].get("already") for m in signers):
            return "a member already held the chunk"
        return None

    async def store(self, parallel: int, profile: str | None) -> dict[str, Any]:
        if self.sealed is None:
            raise Failed("nothing prepared")
        manifest, chunks = self.sealed
        moved_on = 0

        async def one(i: int) -> None:
            nonlocal moved_on
            chunk = chunks[i]
            signer = KeySigner(chunk.seed, prefix=ATTACHMENT_PREFIX)
            why = "no member"
            for attempt, member in enumerate(self.members(chunk.account)[:TRIES]):
                moved_on += attempt > 0
                params = store_params(
                    chunk.account_hex,
                    chunk.data,
                    ATTACHMENT_TTL_MS,
                    namespace=NS_ATTACHMENTS,
                    identity=signer,
                )
                try:
                    status, body = await self.rpc(member, "store", params)
                except (aiohttp.ClientError, OSError) as exc:
                    why = repr(exc)
                    continue
                why = self.check_store(chunk, params, status, body) or ""
                if not why:
                    return
            raise Failed(f"chunk {i} was not stored: {why}")

        answer = await self.timed(lambda: self._all(len(chunks), parallel, one), profile)
        return {
            **answer,
            "size": manifest.size,
            "stored": manifest.stored_size,
            "chunks": manifest.chunks,
            "moved_on": moved_on,
        }

    async def retrieve(self, parallel: int, profile: str | None) -> dict[str, Any]:
        if self.sealed is None:
            raise Failed("nothing prepared")
        manifest, chunks = self.sealed
        moved_on = 0

        async def one(i: int) -> None:
            nonlocal moved_on
            chunk = chunks[i]
            signer = KeySigner(chunk.seed, prefix=ATTACHMENT_PREFIX)
            why = "no member"
            for attempt, member in enumerate(self.members(chunk.account)):
                moved_on += attempt > 0
                params = retrieve_params(signer, namespace=NS_ATTACHMENTS, cursor="")
                try:
                    status, body = await self.rpc(member, "retrieve", params)
                except (aiohttp.ClientError, OSError) as exc:
                    why = repr(exc)
                    continue
                messages = body.get("messages") if isinstance(body, dict) else None
                if status != 200 or not isinstance(messages, list):
                    why = f"status {status}: {str(body)[:200]}"
                    continue
                if not messages:
                    why = "no member held it"
                    continue
                try:
                    got = [base64.b64decode(m["data"], validate=True) for m in messages]
                except (binascii.Error, KeyError, TypeError, ValueError):
                    raise Failed(f"chunk {i}: malformed answer {str(body)[:200]}") from None
                if got != [chunk.data]:
                    raise Failed(f"chunk {i}: {len(got)} messages, not the stored bytes")
                return
            raise Failed(f"chunk {i} was not fetched: {why}")

        answer = await self.timed(lambda: self._all(len(chunks), parallel, one), profile)
        return {
            **answer,
            "size": manifest.size,
            "stored": manifest.stored_size,
            "chunks": manifest.chunks,
            "moved_on": moved_on,
            "verified": True,
        }

    async def _all(self, count: int, parallel: int, one: Callable[[int], Awaitable[None]]) -> Any:
        await self.each(count, parallel, one)
        return {}

    async def delete(self) -> dict[str, Any]:
        """Both attachments' chunks deleted (``delete_all`` of namespace 17, at a member)."""
        signers: list[tuple[bytes, KeySigner]] = []
        if self.manifest is not None:
            manifest = self.manifest
            for i in range(manifest.chunks):
                signer = KeySigner(chunk_seed(manifest.key, i), prefix=ATTACHMENT_PREFIX)
                signers.append((manifest.account(i), signer))
        if self.sealed is not None:
            for chunk in self.sealed[1]:
                signers.append((chunk.account, KeySigner(chunk.seed, prefix=ATTACHMENT_PREFIX)))
        deleted = 0

        async def one(i: int) -> None:
            nonlocal deleted
            account, signer = signers[i]
            for member in self.members(account)[:TRIES]:
                params = delete_all_params(signer, namespace=NS_ATTACHMENTS)
                try:
                    status, body = await self.rpc(member, "delete_all", params)
                except (aiohttp.ClientError, OSError):
                    continue
                if status == 200 and isinstance(body, dict):
                    deleted += 1
                    return

        await self.each(len(signers), 8, one)
        self.manifest = self.sealed = None
        return {"chunks": len(signers), "deleted": deleted}

    async def close(self) -> None:
        if self.network is not None:
            await self.network.close()
        if self.session is not None:
            await self.session.close()


async def handle(loader: Loader, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    profile = command.get("profile")
    if op == "devnet":
        return await loader.devnet(str(command["dir"]))
    if op == "prep":
        return loader.prep(int(command["size"]))
    if op == "upload":
        return await loader.upload(int(command["parallel"]), profile)
    if op == "download":
        return await loader.download(int(command["parallel"]), profile)
    if op == "store":
        return await loader.store(int(command["parallel"]), profile)
    if op == "retrieve":
        return await loader.retrieve(int(command["parallel"]), profile)
    if op == "delete":
        return await loader.delete()
    return {"failed": f"unknown op {op!r}"}


async def run() -> None:
    loader = Loader()
    await serve(lambda command: handle(loader, command), loader.close)


if __name__ == "__main__":
    uvloop.run(run())
