"""Attachments through six in-process nodes (``veil.client.attachments``): a file stored chunk by
chunk and fetched back whole by another client; nothing of the plaintext on any node's disk; a
chunk tampered with or missing at some members fetched from another; a member stopped in the
middle of a download; uploads and downloads that resume; chunks deleted."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil.client.attachments import TransferError, Transfers
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.node.config import NetworkSettings
from veil.node.server import Node
from veil.protocol.attachments import NS_ATTACHMENTS, Manifest, chunk_seed, seal_attachment
from veil.protocol.hashes import message_hash
from veil.protocol.replication import Message
from veil.protocol.storage_rpc import KeySigner

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)


class Interrupted(Exception):
    pass


@asynccontextmanager
async def _network(tmp_path: Path, count: int = 6) -> AsyncIterator[tuple[list[Node], Any]]:
    nodes = await start_network(
        StubAuthorities(tmp_path / "authorities"), tmp_path, count, network=FAST
    )
    clients: list[NetworkClient] = []

    async def transfers(**options: Any) -> Transfers:
        network = await NetworkClient(directory_of(nodes[0])).__aenter__()
        clients.append(network)
        return Transfers(SwarmClient(network), **options)

    try:
        yield nodes, transfers
    finally:
        for client in clients:
            await client.close()
        for node in nodes:
            await node.stop()


def _text_file(size: int) -> bytes:
    lines = (
        f"line {i:07d} of a file that must never reach a node in the clear\n".encode()
        for i in range(size // 60 + 1)
    )
    return b"".join(lines)[:size]


def _holders(nodes: list[Node], manifest: Manifest, index: int) -> list[Node]:
    account = manifest.account(index)
    return [n for n in nodes if n.store.hashes_of(account)]


def test_a_file_goes_up_in_chunks_and_comes_back_whole_with_nothing_in_the_clear_on_disk(
    tmp_path: Path,
) -> None:
    data = _text_file(1_000_000)

    async def main() -> None:
        async with _network(tmp_path) as (nodes, transfers):
            sender, receiver = await transfers(), await transfers()
            uploaded: list[int] = []
            manifest = await sender.upload(
                data, "notes.txt", "text/plain", progress=uploaded.append
            )
            assert manifest.chunks == 19
            assert sum(uploaded) == manifest.stored_size
            downloaded: list[int] = []
            assert await receiver.download(manifest, progress=downloaded.append) == data
            assert sum(downloaded) == manifest.stored_size
            # Each chunk sits in its own swarm (with 6 nodes and swarms of 5, most of them).
            for index in range(manifest.chunks):
                assert len(_holders(nodes, manifest, index)) >= 3
            for node in nodes:
                node.store.env.sync(True)
            windows = {data[i : i + 48] for i in range(0, len(data) - 48, 997)}
            for path in tmp_path.rglob("*.mdb"):
                disk = path.read_bytes()
                assert not any(w in disk for w in windows), path

    run(main())


def _tamper(node: Node, manifest: Manifest, index: int) -> None:
    """Replace what ``node`` holds of chunk ``index`` with other bytes under their own (correct)
    hash: a member that lies about a chunk's content."""
    account = manifest.account(index)
    (digest,) = node.store.hashes_of(account)
    (held,) = node.store.messages_of([digest])
    forged = bytearray(held.data)
    forged[100] ^= 1
    tampered = Message(
        account=account,
        namespace=NS_ATTACHMENTS,
        timestamp_ms=held.timestamp_ms,
        expiry_ms=held.expiry_ms,
        data=bytes(forged),
        hash=message_hash(account, NS_ATTACHMENTS, bytes(forged)),
        auth=held.auth,
        arrival_us=held.arrival_us,
    )

    def swap(txn: Any) -> None:
        node.store.delete_all(txn, account, None)
        node.store.put(txn, tampered)

    node.store.write(swap)


def test_a_tampered_or_missing_chunk_is_fetched_from_another_member_and_never_returned(
    tmp_path: Path,
) -> None:
    data = os.urandom(300_000)

    async def main() -> None:
        async with _network(tmp_path) as (nodes, transfers):
            sender, receiver = await transfers(), await transfers()
            manifest = await sender.upload(data, "a.bin", "application/octet-stream")
            holders = _holders(nodes, manifest, 0)
            _tamper(holders[0], manifest, 0)
            assert await receiver.download(manifest) == data
            for node in holders:
                _tamper(node, manifest, 0)
            with pytest.raises(TransferError) as caught:
                await receiver.download(manifest)
            assert caught.value.chunk == 0
            assert "does not open" in str(caught.value)

    run(main())


def test_a_member_stopped_in_the_middle_of_a_download_is_passed_over(tmp_path: Path) -> None:
    data = os.urandom(2_000_000)

    async def main() -> None:
        async with _network(tmp_path) as (nodes, transfers):
            victim = nodes[-1]

            class VictimFirst(random.Random):
                """Asks the stopped member first wherever it is in a chunk's swarm."""

                def shuffle(self, x: Any) -> None:
                    x.sort(key=lambda m: m.ed25519 != victim.identity.ed25519_public_key)

            sender = await transfers(parallel=2)
            receiver = await transfers(parallel=2, rng=VictimFirst())
            manifest = await sender.upload(data, "big.bin", "application/octet-stream")
            stopped: list[asyncio.Task[None]] = []

            def progress(_: int) -> None:
                if not stopped:
                    stopped.append(asyncio.ensure_future(victim.stop()))

            assert await receiver.download(manifest, progress=progress) == data
            await asyncio.gather(*stopped)
            assert stopped
            assert receiver.retried > 0  # chunks the stopped member held came from others

    run(main())


def test_an_interrupted_upload_and_download_resume_where_they_stopped(tmp_path: Path) -> None:
    data = os.urandom(700_000)  # 12 chunks

    def interrupt_after(count: int) -> Any:
        seen: list[int] = []

        def progress(size: int) -> None:
            seen.append(size)
            if len(seen) == count:
                raise Interrupted

        return progress

    async def main() -> None:
        async with _network(tmp_path) as (_nodes, transfers):
            sender = await transfers(state_dir=tmp_path / "sender", parallel=1)
            stores: list[str] = []
            real_store = sender.swarm.store

            async def counting_store(account: str, *args: Any, **kwargs: Any) -> Any:
                stores.append(account)
                return await real_store(account, *args, **kwargs)

            sender.swarm.store = counting_store
            with pytest.raises(Interrupted):
                await sender.upload(data, "x.bin", "", progress=interrupt_after(5))
            assert len(stores) == 5
            manifest = await sender.upload(data, "x.bin", "")
            assert manifest.chunks == 12
            assert len(stores) == 12  # the five stored before were not sent again
            assert len(set(stores)) == 12
            assert not list((tmp_path / "sender" / "uploads").iterdir())

            receiver = await transfers(state_dir=tmp_path / "receiver", parallel=1)
            fetched: list[int] = []
            real_fetch = receiver.swarm.retrieve_from

            async def counting_fetch(*args: Any, **kwargs: Any) -> Any:
                fetched.append(1)
                return await real_fetch(*args, **kwargs)

            receiver.swarm.retrieve_from = counting_fetch
            with pytest.raises(Interrupted):
                await receiver.download(manifest, progress=interrupt_after(7))
            assert len(fetched) == 7
            kept = tmp_path / "receiver" / "downloads" / manifest.id.hex()
            assert len(list(kept.iterdir())) == 7
            # A kept chunk damaged on disk is fetched again, not trusted.
            (kept / "0.chunk").write_bytes(b"damaged")
            assert await receiver.download(manifest) == data
            assert len(fetched) == 7 + 5 + 1
            assert not kept.exists()

    run(main())


def test_deleted_chunks_are_gone_from_their_swarms(tmp_path: Path) -> None:
    data = os.urandom(200_000)

    async def main() -> None:
        async with _network(tmp_path) as (nodes, transfers):
            sender, receiver = await transfers(), await transfers()
            manifest = await sender.upload(data, "a.bin", "")
            assert await sender.delete(manifest) == manifest.chunks
            for index in range(manifest.chunks):
                assert not _holders(nodes, manifest, index)
            with pytest.raises(TransferError, match="did not hold it"):
                await receiver.download(manifest)
            # Only the manifest's holder can: the chunk keys come from its key alone.
            signer = KeySigner(chunk_seed(manifest.key, 0), prefix=0x0A)
            assert signer.pubkey == manifest.account(0).hex()

    run(main())


def test_a_chunk_whose_members_do_not_answer_is_asked_for_again_after_a_pause() -> None:
    """Paths through a node that is down fail for a while: a round where no member answered is
    tried again; a round where every member answered is final."""
    manifest, chunks = seal_attachment(b"x" * 100, "a.txt", "text/plain")

    class Swarm:
        def __init__(self, silent_rounds: int) -> None:
            self.silent_rounds = silent_rounds
            self.asked = 0

        def swarm(self, account: bytes) -> list[str]:
            return ["m1", "m2", "m3"]

        async def retrieve_from(self, signer: Any, member: str, *, namespace: int) -> Any:
            self.asked += 1
            if self.asked <= 3 * self.silent_rounds:
                return None
            return [{"raw": chunks[0].data}]

    async def main() -> None:
        flaky = Swarm(silent_rounds=2)
        transfers = Transfers(flaky, attempts=3)  # type: ignore[arg-type]
        assert await transfers.download(manifest) == b"x" * 100
        assert flaky.asked == 7
        down = Swarm(silent_rounds=5)
        with pytest.raises(TransferError, match="3 did not answer"):
            await Transfers(down, attempts=3).download(manifest)  # type: ignore[arg-type]
        assert down.asked == 9

    run(main())
