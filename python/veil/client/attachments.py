"""Uploading and downloading attachments through the network (the formats are
``veil.protocol.attachments``'s; the nodes' rules for them are in ``docs/rpc.md``, "Attachment
chunks").

**Upload.** :meth:`Transfers.upload` seals the file under a fresh key and stores each chunk in the
swarm of its own account (``0a`` ‖ the chunk's key), signed with the chunk's key, through onion
paths like every request: at most ``parallel`` chunks in flight, each sealed only when a worker
takes it (memory stays at a few chunks whatever the file's size). A chunk counts as stored when
``write_quorum`` members of its swarm signed its hash (``SwarmClient.store``); a chunk that fails
is retried (``attempts`` times, at other members) before the upload fails.

**Download.** :meth:`Transfers.download` fetches each chunk from one member of its swarm at a time,
in random order, and opens it (``open_chunk``: authenticated, its place and the padding checked)
before it counts: a member that gives nothing, or a chunk that does not open (tampered, or
another chunk), is passed over for the next member. The whole is then checked against the
manifest (every chunk, the size, the digest) before any byte is returned: the caller gets the
file exactly as sent, or :class:`TransferError` naming the first chunk no member gave — never a
corrupt file.

**Resuming.** With a ``state_dir`` (the CLI's ``HOME/transfers``, mode 0700 like the home), an
interrupted transfer resumes where it stopped: an upload records the attachment's key and the
chunks acknowledged under the file's digest (so sending the same file again reuses that key and
skips those chunks; the record is dropped once the upload completes), a download keeps each chunk
that opened, as stored (ciphertext), under the attachment's id (dropped once the file is whole).
Nothing is written outside ``state_dir``, with mode 0600.

**Progress.** ``progress`` (optional) is called with the number of stored bytes each chunk adds,
as chunks complete (resumed chunks at once): the CLI draws a bar from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.client.home import write_private
from veil.client.network import NetworkError
from veil.client.swarm import StoreError, SwarmClient
from veil.clock import now_ms
from veil.errors import VeilError
from veil.protocol.attachments import (
    ATTACHMENT_PREFIX,
    MAX_ATTACHMENT_SIZE,
    NS_ATTACHMENTS,
    STORED_OVERHEAD,
    AttachmentError,
    Manifest,
    assemble,
    chunk_seed,
    make_manifest,
    open_chunk,
    seal_chunk,
)
from veil.protocol.peers import PeerInfo
from veil.protocol.storage_rpc import KeySigner, delete_all_params

__all__ = [
    "ATTACHMENT_TTL_MS",
    "PARALLEL_CHUNKS",
    "Progress",
    "TransferError",
    "Transfers",
]

ATTACHMENT_TTL_MS = 14 * 24 * 3600 * 1000
"""How long uploaded chunks live: as long as the message that names them (nodes allow up to
``attachment_max_ttl_ms``, 21 days)."""
PARALLEL_CHUNKS = 4
"""Chunks in flight at once, by default: enough to keep several onion paths busy, few enough
that one client does not load a swarm with dozens of 64 KiB stores at once."""
ATTEMPTS = 3
"""Times a chunk's store is tried (each at up to three swarm members) before an upload fails."""
RETRY_PAUSE_S = 0.5
"""Pause before asking a chunk's members again (times the round)."""
UPLOAD_STATE_TTL_MS = 7 * 24 * 3600 * 1000
"""An unfinished upload's record is reused only this long (its chunks outlive it by a week)."""

Progress = Callable[[int], None]


class TransferError(VeilError):
    """An attachment could not be stored or fetched whole. ``chunk`` is the index of the chunk at
    fault (None for the attachment as a whole); the message says what failed, never any key or
    content."""

    def __init__(self, message: str, chunk: int | None = None) -> None:
        super().__init__(message)
        self.chunk = chunk


@dataclass(frozen=True, slots=True)
class _Chunk:
    index: int
    signer: KeySigner

    @property
    def account_hex(self) -> str:
        return self.signer.pubkey


def _chunk(manifest: Manifest, index: int) -> _Chunk:
    return _Chunk(index, KeySigner(chunk_seed(manifest.key, index), prefix=ATTACHMENT_PREFIX))


def _ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


class Transfers:
    """Attachment uploads and downloads for one client, over its :class:`SwarmClient`."""

    def __init__(
        self,
        swarm: SwarmClient,
        *,
        state_dir: Path | None = None,
        parallel: int = PARALLEL_CHUNKS,
        ttl_ms: int = ATTACHMENT_TTL_MS,
        attempts: int = ATTEMPTS,
        max_size: int = MAX_ATTACHMENT_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        if parallel < 1 or attempts < 1:
            raise ValueError("parallel and attempts are at least 1")
        self.swarm = swarm
        self.state_dir = state_dir
        self.parallel = parallel
        self.ttl_ms = ttl_ms
        self.attempts = attempts
        self.max_size = max_size
        self._rng = rng or random.SystemRandom()
        self.retried = 0
        """Chunk stores tried again, and chunk fetches that moved on to another member."""

    # --- upload ---------------------------------------------------------------------------------

    async def upload(
        self,
        data: bytes,
        name: str,
        mime: str,
        kind: str = "file",
        *,
        duration_ms: int | None = None,
        waveform: bytes | Iterable[int] | None = None,
        progress: Progress | None = None,
        ttl_ms: int | None = None,
    ) -> Manifest:
        """Store ``data`` on the network for ``ttl_ms`` (else the default); its manifest (to send
        in a message). Raises
        :class:`~veil.protocol.attachments.AttachmentError` for data the format refuses (too
        large, a bad MIME type…) and :class:`TransferError` if a chunk could not be stored."""
        digest = hashlib.blake2b(data, digest_size=32).digest()
        record = self._upload_record(digest)
        key = record.get("key") if record else None
        manifest = make_manifest(
            bytes.fromhex(key) if isinstance(key, str) else secrets.token_bytes(32),
            data,
            name,
            mime,
            kind,
            duration_ms=duration_ms,
            waveform=waveform,
            max_size=self.max_size,
        )
        done: set[int] = set()
        if record:
            done = {i for i in record.get("done", []) if isinstance(i, int)}
            done &= set(range(manifest.chunks))
        else:
            self._save_upload(digest, manifest, done)
        stored = manifest.chunk_size + STORED_OVERHEAD
        if progress is not None and done:
            progress(len(done) * stored)
        pending = [i for i in range(manifest.chunks) if i not in done]

        lifetime = self.ttl_ms if ttl_ms is None else ttl_ms

        async def store(index: int) -> None:
            await self._store_chunk(manifest, data, index, lifetime)
            done.add(index)
            self._save_upload(digest, manifest, done)
            if progress is not None:
                progress(stored)

        await self._run(pending, store)
        self._forget_upload(digest)
        return manifest

    async def _store_chunk(self, manifest: Manifest, data: bytes, index: int, ttl_ms: int) -> None:
        chunk = _chunk(manifest, index)
        sealed = seal_chunk(manifest, data, index).data
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                self.retried += 1
            try:
                await self.swarm.store(
                    chunk.account_hex,
                    sealed,
                    ttl_ms=ttl_ms,
                    namespace=NS_ATTACHMENTS,
                    identity=chunk.signer,
                )
                return
            except StoreError as exc:
                last = exc
                if exc.code in ("400", "401", "403", "507"):
                    break  # refused for what it is: another try would be refused too
            except NetworkError as exc:
                last = exc
        raise TransferError(
            f"chunk {index + 1} of {manifest.chunks} was not stored: {last}", chunk=index
        )

    async def _run(self, indices: list[int], work: Callable[[int], Any]) -> None:
        """``work`` for every index, at most ``parallel`` at once; the first failure cancels the
        rest and is raised."""
        queue = list(reversed(indices))

        async def worker() -> None:
            while queue:
                await work(queue.pop())

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.parallel, len(queue)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    # --- download -------------------------------------------------------------------------------

    async def download(self, manifest: Manifest, *, progress: Progress | None = None) -> bytes:
        """The attachment's bytes, checked whole against ``manifest``; :class:`TransferError` if
        some chunk no swarm member gave, or gave only in a form that does not open."""
        if manifest.size > self.max_size:
            raise TransferError(f"the attachment is larger than {self.max_size} bytes")
        pieces: dict[int, bytes] = self._saved_chunks(manifest)
        stored_size = manifest.chunk_size + STORED_OVERHEAD
        if progress is not None and pieces:
            progress(len(pieces) * stored_size)
        pending = [i for i in range(manifest.chunks) if i not in pieces]

        async def fetch(index: int) -> None:
            stored, pieces[index] = await self._fetch_chunk(manifest, index)
            self._save_chunk(manifest, index, stored)
            if progress is not None:
                progress(stored_size)

        await self._run(pending, fetch)
        try:
            data = assemble(manifest, pieces)
        except AttachmentError:
            # Every chunk opened, so only a sender's manifest that does not match what it sealed
            # (a wrong digest) gets here: nothing to fetch again.
            self._forget_download(manifest)
            raise TransferError("the attachment does not match its manifest") from None
        self._forget_download(manifest)
        return data

    async def _fetch_chunk(self, manifest: Manifest, index: int) -> tuple[bytes, bytes]:
        """(stored chunk, the attachment bytes it holds) of chunk ``index``: the members are
        asked one at a time, and asked again (up to ``attempts`` rounds, after a pause) while
        some did not answer — a path through a node that is down fails, another may not."""
        chunk = _chunk(manifest, index)
        members = self.swarm.swarm(bytes.fromhex(chunk.account_hex))
        counts: dict[str, int] = {}
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(RETRY_PAUSE_S * attempt)
            self._rng.shuffle(members)
            found, counts = await self._ask_members(chunk, manifest, members)
            if found is not None:
                return found
            if not counts["silent"]:
                break  # every member answered: asking again would tell the same
        raise TransferError(
            f"chunk {index + 1} of {manifest.chunks} is not on the network "
            f"({len(members)} members asked: {counts['missing']} did not hold it, "
            f"{counts['tampered']} gave one that does not open, {counts['silent']} did not "
            "answer)",
            chunk=index,
        )

    async def _ask_members(
        self, chunk: _Chunk, manifest: Manifest, members: list[PeerInfo]
    ) -> tuple[tuple[bytes, bytes] | None, dict[str, int]]:
        counts = {"missing": 0, "tampered": 0, "silent": 0}
        for position, member in enumerate(members):
            if position:
                self.retried += 1
            try:
                messages = await self.swarm.retrieve_from(
                    chunk.signer, member, namespace=NS_ATTACHMENTS
                )
            except NetworkError:
                messages = None
            if messages is None:
                counts["silent"] += 1
                continue
            if not messages:
                counts["missing"] += 1
                continue
            for message in messages:
                stored = message["raw"]
                with contextlib.suppress(AttachmentError):
                    return (stored, open_chunk(manifest, chunk.index, stored)), counts
            counts["tampered"] += 1
        return None, counts

    # --- deletion -------------------------------------------------------------------------------

    async def delete(self, manifest: Manifest) -> int:
        """Delete the attachment's chunks from their swarms (whoever holds the manifest can);
        the number of chunks whose swarm acknowledged it. Failures are counted, not raised: a
        chunk left behind expires with its lifetime."""
        deleted = 0

        async def delete_chunk(index: int) -> None:
            nonlocal deleted
            chunk = _chunk(manifest, index)
            params = delete_all_params(chunk.signer, namespace=NS_ATTACHMENTS)
            account = bytes.fromhex(chunk.account_hex)
            with contextlib.suppress(StoreError, NetworkError):
                await self.swarm.swarm_write(account, "delete_all", params)
                deleted += 1

        await self._run(list(range(manifest.chunks)), delete_chunk)
        return deleted

    # --- what is kept to resume -----------------------------------------------------------------

    def _uploads(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / "uploads"

    def _upload_record(self, digest: bytes) -> dict[str, Any] | None:
        folder = self._uploads()
        if folder is None:
            return None
        try:
            record = json.loads((folder / f"{digest.hex()}.json").read_bytes())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("key"), str)
            or len(record["key"]) != 64
            or not isinstance(record.get("started_ms"), int)
            or now_ms() - record["started_ms"] > UPLOAD_STATE_TTL_MS
            or not isinstance(record.get("done"), list)
        ):
            return None
        try:
            bytes.fromhex(record["key"])
        except ValueError:
            return None
        return record

    def _save_upload(self, digest: bytes, manifest: Manifest, done: set[int]) -> None:
        folder = self._uploads()
        if folder is None:
            return
        path = _ensure_private_dir(folder) / f"{digest.hex()}.json"
        started = now_ms()
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(path.read_bytes())
            if isinstance(previous, dict) and isinstance(previous.get("started_ms"), int):
                started = previous["started_ms"]
        record = {"key": manifest.key.hex(), "started_ms": started, "done": sorted(done)}
        write_private(path, json.dumps(record).encode())

    def _forget_upload(self, digest: bytes) -> None:
        folder = self._uploads()
        if folder is not None:
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{digest.hex()}.json").unlink()

    def _download_dir(self, manifest: Manifest) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / "downloads" / manifest.id.hex()

    def _saved_chunks(self, manifest: Manifest) -> dict[int, bytes]:
        """What the chunks an interrupted download kept hold, each opened again (a damaged file
        is dropped and fetched anew)."""
        folder = self._download_dir(manifest)
        if folder is None or not folder.is_dir():
            return {}
        saved: dict[int, bytes] = {}
        for index in range(manifest.chunks):
            path = folder / f"{index}.chunk"
            try:
                saved[index] = open_chunk(manifest, index, path.read_bytes())
            except (OSError, AttachmentError):
                continue
        return saved

    def _save_chunk(self, manifest: Manifest, index: int, stored: bytes) -> None:
        folder = self._download_dir(manifest)
        if folder is not None:
            with contextlib.suppress(OSError):
                write_private(_ensure_private_dir(folder) / f"{index}.chunk", stored)

    def _forget_download(self, manifest: Manifest) -> None:
        folder = self._download_dir(manifest)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
