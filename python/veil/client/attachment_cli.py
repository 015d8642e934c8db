"""The messenger's attachment commands: ``veil send … --file PATH`` / ``--voice FILE``,
``veil attachments [PEER]``, ``veil save ID [--to DIR]``, ``veil play ID``, and how messages that
carry attachments are shown (``describe``). Uploads and downloads draw a progress bar on a
terminal (``rich``, on stderr; nothing when stderr is not a terminal)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from veil.client.attachment_messaging import save_attachment
from veil.protocol.attachments import Manifest

if TYPE_CHECKING:
    from veil.client.messaging import Messenger

__all__ = ["add_attachment_commands", "describe", "playable", "send_attachments", "transfer_bar"]

SHORT_ID = 8
"""Hex digits of an attachment id shown (``veil save`` takes any unique prefix of four or more)."""
PLAY_TIMEOUT_S = 3600
AUDIO_MAGIC = (b"OggS", b"RIFF", b"fLaC", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
"""Containers `veil play` hands to a player: a sender's file must be real audio, never a text
playlist (an ffconcat or HLS list would make a player such as ffplay open local files or URLs)."""


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"


def describe(manifest: Manifest) -> str:
    """One line for an attachment: ``[voice 1a2b3c4d] voice message 0:07 ▁▃▇█▅▂``, ``[file
    1a2b3c4d] report.pdf, 1.2 MB``…"""
    short = manifest.id.hex()[:SHORT_ID]
    if manifest.kind in ("voice", "audio") and manifest.duration_ms:
        from veil.client.voice import format_duration, render_waveform  # noqa: PLC0415

        length = format_duration(manifest.duration_ms)
        wave = f" {render_waveform(manifest.waveform)}" if manifest.waveform else ""
        if manifest.kind == "voice":
            return f"[voice {short}] voice message {length}{wave}"
        return f"[audio {short}] {manifest.name}, {length}{wave}, {_size(manifest.size)}"
    return f"[{manifest.kind} {short}] {manifest.name}, {_size(manifest.size)}, {manifest.mime}"


@contextlib.asynccontextmanager
async def transfer_bar(what: str, total: int) -> AsyncIterator[Callable[[int], None]]:
    """A progress callback drawing a bar of ``total`` bytes on a terminal (else a no-op)."""
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(what, total=total)
        yield lambda done: progress.advance(task, done)


def _stored_size(size: int) -> int:
    from veil.protocol.attachments import STORED_OVERHEAD, chunk_layout  # noqa: PLC0415

    chunks, chunk_size = chunk_layout(size)
    return chunks * (chunk_size + STORED_OVERHEAD)


async def send_attachments(
    messenger: Messenger,
    peer: str,
    text: str,
    *,
    files: list[Path],
    voice: Path | None = None,
    disappear: tuple[str, int] | None = None,
) -> None:
    """Upload every file (and the voice recording), then send one message carrying them all."""
    manifests: list[Manifest] = []
    for path in files:
        manifests.append(await _upload_file(messenger, path, disappear))
    if voice is not None:
        from veil.client.voice import encode_voice  # noqa: PLC0415

        note = encode_voice(voice)
        async with transfer_bar("voice message", _stored_size(len(note.data))) as bar:
            manifests.append(
                await messenger.attachments.upload(
                    note.data,
                    "voice-message.ogg",
                    note.mime,
                    "voice",
                    duration_ms=note.duration_ms,
                    waveform=note.waveform,
                    progress=bar,
                    disappear=disappear,
                )
            )
    await messenger.send_text(peer, text, disappear=disappear, attachments=tuple(manifests))


async def _upload_file(
    messenger: Messenger, path: Path, disappear: tuple[str, int] | None
) -> Manifest:
    from veil.client.attachment_messaging import prepare_file  # noqa: PLC0415

    prepared = prepare_file(path, messenger.attachments.transfers.max_size)
    async with transfer_bar(path.name, _stored_size(len(prepared.data))) as bar:
        return await messenger.attachments.upload_prepared(
            prepared, path.name, progress=bar, disappear=disappear
        )


# --- the commands -------------------------------------------------------------------------------


def add_attachment_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """``veil attachments``, ``veil save``, ``veil play`` (``command`` is the CLI's factory)."""
    listing = command(
        "attachments", "list the attachments of your conversations", _attachments, network=True
    )
    listing.add_argument(
        "session_id", nargs="?", metavar="SESSION_ID|GROUP", help="only this conversation's"
    )
    save = command("save", "fetch an attachment and save it", _save, network=True)
    save.add_argument("id", metavar="ID", help="the attachment (its id or a prefix, 4+ digits)")
    save.add_argument(
        "--to", type=Path, default=Path.cwd(), metavar="DIR", help="folder (the current one)"
    )
    play = command(
        "play", "play a voice message or audio (saved if no player exists)", _play, network=True
    )
    play.add_argument("id", metavar="ID", help="the attachment (its id or a prefix, 4+ digits)")
    play.add_argument(
        "--to", type=Path, default=Path.cwd(), metavar="DIR", help="where to save it without player"
    )


def _attachments(args: argparse.Namespace) -> int:
    from veil.client.cli import _online, _target, _when, _who  # noqa: PLC0415

    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        peer = _target(messenger, args.session_id) if args.session_id else None
        held = messenger.attachments.held(peer)
        for item in held:
            who = "you" if item.entry.outgoing else (item.entry.name or _who(messenger, item.peer))
            where = "" if peer else f" ({_who(messenger, item.peer)})"
            print(f"{_when(item.entry.sent_ms)}  {who}{where}: {describe(item.manifest)}")
        if not held:
            print("no attachments")
        return 0

    return _online(args, action)


async def _fetch(messenger: Messenger, reference: str) -> tuple[Manifest, bytes]:
    held = messenger.attachments.find(reference)
    manifest = held.manifest
    async with transfer_bar(manifest.name, manifest.stored_size) as bar:
        data = await messenger.attachments.download(manifest, progress=bar)
    return manifest, data


def _save(args: argparse.Namespace) -> int:
    from veil.client.cli import _online  # noqa: PLC0415

    async def action(messenger: Messenger) -> int:
        manifest, data = await _fetch(messenger, args.id)
        path = save_attachment(data, manifest, args.to)
        print(f"saved {path} ({_size(len(data))})")
        return 0

    return _online(args, action)


def playable(data: bytes) -> bool:
    """Whether a received file may go to an audio player: a known audio container that PyAV
    (which may open no URL) decodes."""
    from veil.client.voice import VoiceError, audio_summary  # noqa: PLC0415

    if not data.startswith(AUDIO_MAGIC):
        return False
    try:
        audio_summary(data)
    except VoiceError:
        return False
    return True


def _play(args: argparse.Namespace) -> int:
    from veil.client.cli import CommandFailed, _online  # noqa: PLC0415
    from veil.client.voice import find_player  # noqa: PLC0415

    async def action(messenger: Messenger) -> int:
        manifest, data = await _fetch(messenger, args.id)
        if manifest.kind not in ("voice", "audio"):
            raise CommandFailed(f"{manifest.name} is not audio; `veil save` saves it")
        if not playable(data):
            raise CommandFailed(f"{manifest.name} is not playable audio; `veil save` saves it")
        player = find_player()
        if player is None:
            path = save_attachment(data, manifest, args.to)
            print(f"no audio player found (ffplay, mpv, paplay, …); saved {path}")
            return 0
        with tempfile.TemporaryDirectory(prefix="veil-play-") as folder:
            path = save_attachment(data, manifest, Path(folder))
            print(f"playing {describe(manifest)}")
            process = await asyncio.create_subprocess_exec(*player, str(path))
            try:
                await asyncio.wait_for(process.wait(), PLAY_TIMEOUT_S)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        return 0

    return _online(args, action)
