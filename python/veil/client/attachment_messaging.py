"""Attachments in conversations: ``Messenger.attachments``.

A file, an image, an audio file or a voice message is uploaded first
(:class:`veil.client.attachments.Transfers`: sealed, chunk by chunk, into swarms of its own), and
then sent as a ``text`` that carries its manifest — to a contact or a group alike, with or without
text, to the account's other devices in the transcript as any message. The recipient's devices
list what their conversations hold (:meth:`MessengerAttachments.held`), fetch one on demand
(:meth:`MessengerAttachments.download`: checked whole before it is returned) and save it with
:func:`save_attachment`, which never writes outside the folder it is given. Unsending a message
deletes its attachments' chunks too (only holders of the manifest can). Communities take no
attachments: their posts live on the community server, which keeps no files.

A voice message is an Ogg Opus recording with its duration and a waveform summary, made at send
time by :mod:`veil.client.voice`; an audio file sent as a file gets the same summary if it can be
read, so that it shows its length.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from veil.client.attachments import Progress, TransferError, Transfers
from veil.client.network import NetworkError
from veil.client.swarm import StoreError
from veil.errors import InvalidInputError
from veil.protocol.attachments import AttachmentError, Manifest, safe_file_name

if TYPE_CHECKING:
    from veil.client.account import Entry
    from veil.client.messaging import Messenger

__all__ = ["Held", "MessengerAttachments", "Prepared", "prepare_file", "save_attachment"]

MIN_ID_PREFIX = 4
"""Fewest hex digits of an attachment id that name it (``veil save ID``)."""


@dataclass(frozen=True, slots=True)
class Held:
    """An attachment a conversation on this device holds."""

    peer: str
    """The conversation: a Session ID or a group's account."""
    entry: Entry
    """The message that carries it."""
    manifest: Manifest

    @property
    def id(self) -> str:
        return self.manifest.id.hex()


def _kind_of(mime: str) -> str:
    if mime.startswith("image/"):
        return "image"
    if mime.startswith("audio/"):
        return "audio"
    return "file"


def _read(path: Path, max_size: int) -> bytes:
    """The file's bytes, its size checked before it is read."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InvalidInputError(f"{path.name} is not a regular file")
        if size > max_size:
            raise AttachmentError(
                f"{path.name} is {size:,} bytes; an attachment is at most {max_size:,}"
            )
        with path.open("rb") as handle:
            data = handle.read(max_size + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_size:  # it grew while read
        raise AttachmentError(f"{path.name} is larger than {max_size:,} bytes")
    return data


@dataclass(frozen=True, slots=True)
class Prepared:
    """A file read for sending: its bytes, MIME type (from its name), kind, and for audio that
    could be decoded its duration and waveform."""

    data: bytes
    mime: str
    kind: str
    duration_ms: int | None = None
    waveform: bytes | None = None


def prepare_file(path: Path, max_size: int) -> Prepared:
    """Read the file at ``path`` (at most ``max_size`` bytes) for sending."""
    data = _read(path, max_size)
    mime = (mimetypes.guess_type(path.name, strict=False)[0] or "").lower()
    mime = mime or "application/octet-stream"
    kind = _kind_of(mime)
    if kind == "audio":
        from veil.client.voice import VoiceError, audio_summary  # noqa: PLC0415  (PyAV)

        with contextlib.suppress(VoiceError):
            duration, waveform = audio_summary(data)
            return Prepared(data, mime, kind, duration, waveform)
    return Prepared(data, mime, kind)


class MessengerAttachments:
    """Sending, listing and fetching the attachments of one account's conversations."""

    def __init__(self, messenger: Messenger, transfer_dir: Path | None) -> None:
        self.m = messenger
        self.transfer_dir = transfer_dir
        self._transfers: Transfers | None = None

    @property
    def transfers(self) -> Transfers:
        if self._transfers is None:
            self._transfers = Transfers(self.m.swarm, state_dir=self.transfer_dir)
        return self._transfers

    # --- sending --------------------------------------------------------------------------------

    async def upload(
        self,
        data: bytes,
        name: str,
        mime: str,
        kind: str = "file",
        *,
        duration_ms: int | None = None,
        waveform: bytes | None = None,
        progress: Progress | None = None,
        disappear: tuple[str, int] | None = None,
    ) -> Manifest:
        """Store an attachment on the network (to send with ``Messenger.send_text``), for as long
        as the message that will carry it lives (``disappear``: that message's timer)."""
        ttl = self.m.ttl_ms
        if disappear is not None and disappear[0] == "after_send":
            ttl = max(self.m.min_ttl_ms, min(ttl, disappear[1]))
        return await self.transfers.upload(
            data,
            name,
            mime,
            kind,
            duration_ms=duration_ms,
            waveform=waveform,
            progress=progress,
            ttl_ms=ttl,
        )

    async def upload_prepared(
        self,
        prepared: Prepared,
        name: str,
        *,
        progress: Progress | None = None,
        disappear: tuple[str, int] | None = None,
    ) -> Manifest:
        """Store a file :func:`prepare_file` read, under ``name``."""
        return await self.upload(
            prepared.data,
            name,
            prepared.mime,
            prepared.kind,
            duration_ms=prepared.duration_ms,
            waveform=prepared.waveform,
            progress=progress,
            disappear=disappear,
        )

    async def send_file(
        self,
        recipient: str,
        path: Path,
        text: str = "",
        *,
        disappear: tuple[str, int] | None = None,
        progress: Progress | None = None,
    ) -> bytes:
        """Upload the file at ``path`` and send it (with ``text``) to a contact or a group; the
        message's content id. Its MIME type comes from its name; an audio file gets its duration
        and waveform if it can be decoded."""
        prepared = prepare_file(path, self.transfers.max_size)
        manifest = await self.upload_prepared(
            prepared, path.name, progress=progress, disappear=disappear
        )
        return await self.m.send_text(recipient, text, disappear=disappear, attachments=(manifest,))

    async def send_voice(
        self,
        recipient: str,
        path: Path,
        text: str = "",
        *,
        disappear: tuple[str, int] | None = None,
        progress: Progress | None = None,
    ) -> bytes:
        """Send the recording at ``path`` (any audio PyAV reads) as a voice message: converted to
        Ogg Opus, with its duration and waveform."""
        from veil.client.voice import encode_voice  # noqa: PLC0415  (PyAV)

        note = encode_voice(path)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        manifest = await self.upload(
            note.data,
            f"voice-message-{stamp}.ogg",
            note.mime,
            "voice",
            duration_ms=note.duration_ms,
            waveform=note.waveform,
            progress=progress,
            disappear=disappear,
        )
        return await self.m.send_text(recipient, text, disappear=disappear, attachments=(manifest,))

    async def delete_sent(self, peer: str, message_id: str) -> int:
        """Delete from the network the attachments of a message this account sent (on unsend);
        the number of chunks deleted. Failures are left to the chunks' lifetime."""
        deleted = 0
        for entry in self.m.book.conversations.get(peer, []):
            if entry.id != message_id or not entry.outgoing:
                continue
            for manifest in entry.manifests():
                with contextlib.suppress(TransferError, NetworkError, StoreError):
                    deleted += await self.transfers.delete(manifest)
        return deleted

    # --- what conversations hold ----------------------------------------------------------------

    def held(self, peer: str | None = None) -> list[Held]:
        """Every attachment of this device's conversations (or of ``peer``'s), oldest first."""
        peers = [peer] if peer is not None else list(self.m.book.conversations)
        found = [
            Held(p, entry, manifest)
            for p in peers
            for entry in self.m.conversation(p)
            for manifest in entry.manifests()
        ]
        return sorted(found, key=lambda h: h.entry.sent_ms)

    def find(self, reference: str) -> Held:
        """The attachment whose id starts with ``reference`` (at least four hex digits)."""
        reference = reference.strip().lower()
        if len(reference) < MIN_ID_PREFIX or any(c not in "0123456789abcdef" for c in reference):
            raise InvalidInputError(
                f"an attachment is named by at least {MIN_ID_PREFIX} hex digits of its id "
                "(`veil attachments` lists them)"
            )
        matches = {h.id: h for h in self.held() if h.id.startswith(reference)}
        if not matches:
            raise InvalidInputError(f"no attachment {reference} in the conversations here")
        if len(matches) > 1:
            raise InvalidInputError(f"{reference} names {len(matches)} attachments; give more")
        return next(iter(matches.values()))

    async def download(self, manifest: Manifest, *, progress: Progress | None = None) -> bytes:
        """The attachment, fetched and checked whole (:class:`TransferError` otherwise)."""
        return await self.transfers.download(manifest, progress=progress)


def save_attachment(data: bytes, manifest: Manifest, folder: Path) -> Path:
    """Write ``data`` into ``folder`` (created if missing) under the attachment's cleaned name,
    ``name (1).ext`` and so on if taken; never outside ``folder``, never over an existing file,
    never through a link. Returns the path written (mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    name = safe_file_name(manifest.name)
    stem, dot, extension = name.rpartition(".")
    if not stem:
        stem, dot, extension = name, "", ""
    for copy in range(1000):
        candidate = name if copy == 0 else f"{stem} ({copy}){dot}{extension}"
        path = root / candidate
        if path.parent != root:  # a cleaned name has no separator; never trust that blindly
            raise InvalidInputError("the attachment's name is not a plain file name")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path
    raise InvalidInputError(f"{root} already holds 1000 files named like {name}")
