"""Attachments in conversations (``Messenger.attachments``) through six in-process nodes: a file to
a contact and to a group, seen on the sender's other device; unsend deletes the chunks; a message
whose manifest is malformed is refused whole; ``save_attachment`` never writes outside its folder;
communities take no attachments."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil.client.account import Book, Entry
from veil.client.attachment_messaging import save_attachment
from veil.client.attachments import TransferError
from veil.client.messaging import Messenger, seal
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.crypto import encrypt_for_recipient
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.protocol.attachments import encode_manifest, make_manifest, seal_attachment
from veil.protocol.content import Content, ContentError, decode_content, encode_content, pad

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)


@asynccontextmanager
async def _people(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Messenger]]]:
    nodes = await start_network(
        StubAuthorities(tmp_path / "authorities"), tmp_path, 6, network=FAST
    )
    networks: list[NetworkClient] = []

    async def device(identity: Identity, **options: Any) -> Messenger:
        network = await NetworkClient(directory_of(nodes[0])).__aenter__()
        networks.append(network)
        options.setdefault("book", Book())
        return Messenger(identity, SwarmClient(network), **options)

    try:
        yield device
    finally:
        for network in networks:
            await network.close()
        for node in nodes:
            await node.stop()


def test_a_file_to_a_contact_and_to_a_group_comes_back_whole_on_every_device(
    tmp_path: Path,
) -> None:
    alice, bob, carol = (Identity.generate() for _ in range(3))
    photo = os.urandom(150_000)
    (tmp_path / "holiday.jpg").write_bytes(photo)
    (tmp_path / "plan.txt").write_bytes(b"day 1: the ridge\n")

    async def main() -> None:
        async with _people(tmp_path) as device:
            a1 = await device(alice, name="Alice", transfer_dir=tmp_path / "a1")
            a2 = await device(alice)
            b = await device(bob, name="Bob")
            c = await device(carol, name="Carol")
            await a1.attachments.send_file(bob.session_id, tmp_path / "holiday.jpg", "look!")
            (event,) = [e for e in await b.fetch() if e.kind == "text"]
            assert event.body == "look!"
            (manifest,) = event.attachments
            assert (manifest.name, manifest.mime, manifest.kind) == (
                "holiday.jpg",
                "image/jpeg",
                "image",
            )
            (held,) = b.attachments.held(alice.session_id)
            assert b.attachments.find(held.id[:6]).manifest == manifest
            assert await b.attachments.download(manifest) == photo
            # Alice's other device has the transcript, with the attachment.
            await a2.fetch()
            (mine,) = a2.attachments.held(bob.session_id)
            assert mine.entry.outgoing
            assert mine.manifest == manifest

            group = await a1.groups.create("hikers", [bob.session_id, carol.session_id])
            for member in (b, c):
                await member.fetch()
                await member.groups.accept(group.account)
            await a1.attachments.send_file(group.account, tmp_path / "plan.txt")
            await c.fetch()
            (in_group,) = c.attachments.held(group.account)
            assert in_group.entry.sender == alice.session_id
            assert in_group.entry.body == ""
            assert await c.attachments.download(in_group.manifest) == b"day 1: the ridge\n"

    run(main())


def test_unsend_deletes_the_attachment_from_the_network(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    (tmp_path / "oops.pdf").write_bytes(os.urandom(80_000))

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b = await device(alice), await device(bob)
            message_id = await a.attachments.send_file(bob.session_id, tmp_path / "oops.pdf")
            await b.fetch()
            (held,) = b.attachments.held()
            await a.unsend(bob.session_id, message_id)
            with pytest.raises(TransferError):
                await b.attachments.download(held.manifest)
            await b.fetch()
            assert b.attachments.held() == []

    run(main())


def test_a_message_whose_manifest_is_malformed_is_refused_whole(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    manifest, _ = seal_attachment(b"x", "x.txt", "text/plain")
    good = encode_content(Content.text("hi", 1, attachments=(manifest,)))
    assert decode_content(good).attachments == (manifest,)
    fields = msgpack.unpackb(encode_manifest(manifest))
    bad_cases = [
        {**fields, "id": bytes(32)},  # an id that is not its key's
        {**fields, "chunks": 7},  # a count the size does not give
        {**fields, "mime": "Text/Plain; charset=x"},
        {**fields, "kind": "voice"},  # a voice message without duration or waveform
    ]
    for case in bad_cases:
        raw = msgpack.packb(
            {
                "v": 1,
                "id": bytes(16),
                "kind": "text",
                "sent_ms": 1,
                "body": "hi",
                "att": [msgpack.packb(case)],
            }
        )
        with pytest.raises(ContentError, match="attachment"):
            decode_content(raw + b"\x80" + bytes(300))
    with pytest.raises(ContentError):
        Content.text("hi", 1, attachments=(manifest,) * 33)

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b = await device(alice), await device(bob)
            raw = msgpack.packb(
                {
                    "v": 1,
                    "id": os.urandom(16),
                    "kind": "text",
                    "sent_ms": 1,
                    "body": "evil",
                    "att": [b"not a manifest"],
                }
            )
            await a.swarm.store(
                bob.session_id, seal(alice, bob.session_id, Content.text("ok", 2)), ttl_ms=60_000
            )
            await a.swarm.store(
                bob.session_id, _sealed_raw(alice, bob.session_id, raw), ttl_ms=60_000
            )
            events = await b.fetch()
            assert [e.body for e in events if e.kind == "text"] == ["ok"]
            assert b.undecryptable == 1

    run(main())


def _sealed_raw(identity: Identity, recipient: str, packed: bytes) -> bytes:
    return encrypt_for_recipient(identity, recipient, pad(packed))


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("../../etc/passwd", "passwd"),
        ("..", "attachment"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("a\\..\\..\\win.ini", "win.ini"),
        ("CON.txt", "_CON.txt"),
        ("evil\x1b[2Jname.txt", "evil[2Jname.txt"),
        ("..hidden", "hidden"),
    ],
)
def test_save_never_writes_outside_the_folder(tmp_path: Path, name: str, saved: str) -> None:
    folder = tmp_path / "downloads"
    manifest = make_manifest(os.urandom(32), b"data", name, "text/plain")
    path = save_attachment(b"data", manifest, folder)
    assert path == folder.resolve() / saved
    assert path.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [saved]


def test_save_takes_a_new_name_and_never_follows_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    target = tmp_path / "outside.txt"
    target.write_bytes(b"keep")
    (folder / "notes.txt").symlink_to(target)
    manifest = make_manifest(os.urandom(32), b"new", "notes.txt", "text/plain")
    first = save_attachment(b"new", manifest, folder)
    second = save_attachment(b"new", manifest, folder)
    assert (first.name, second.name) == ("notes (1).txt", "notes (2).txt")
    assert target.read_bytes() == b"keep"


def test_communities_and_blinded_dms_take_no_attachments() -> None:
    alice = Identity.generate()
    messenger = Messenger(alice, None, book=Book())
    messenger.book.rooms["lobby@example"] = {"link": "x"}
    manifest = make_manifest(os.urandom(32), b"x", "x.txt", "text/plain")

    async def main() -> None:
        for peer in ("lobby@example", "dm:25" + "00" * 32):
            with pytest.raises(InvalidInputError, match="1:1 and group"):
                await messenger.send_text(peer, "hi", attachments=(manifest,))

    run(main())


def test_an_entry_keeps_its_attachments_in_the_saved_book() -> None:
    manifest = make_manifest(os.urandom(32), b"x" * 70_000, "big.bin", "application/x-a")
    entry = Entry.of(Content.text("", 5, attachments=(manifest,)), outgoing=False)
    book = Book()
    book.conversations["05" + "00" * 32] = [entry]
    again = Book.from_json(book.to_json())
    (kept,) = again.conversations["05" + "00" * 32]
    assert kept.manifests() == [manifest]
    kept.attachments = ["damaged"]
    assert kept.manifests() == []


def test_play_hands_a_player_only_real_audio(tmp_path: Path) -> None:
    import av  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from veil.client.attachment_cli import playable  # noqa: PLC0415

    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=16_000, layout="mono")
        samples = (0.3 * np.sin(np.arange(16_000) / 5)).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = 16_000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    assert playable(wav.read_bytes())
    playlist = b"ffconcat version 1.0\nfile '/etc/passwd'\n"
    hls = b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n"
    for hostile in (playlist, hls, b"OggS" + os.urandom(500), b"RIFF" + bytes(40), b""):
        assert not playable(hostile)
