"""``veil chat SESSION_ID`` (or a group's id): a conversation at the terminal, new messages shown
as they come.

On a terminal, prompt_toolkit keeps the input line at the bottom and prints what arrives above it
(``patch_stdout``), so a message never lands in the middle of what is being typed. With stdin not
a terminal (a pipe, a script, a test), every line read is sent and what arrives is printed as it
comes. Lines starting with ``/`` are commands: ``/quit`` (or end of input) leaves, ``/unsend``
takes back the last message sent, ``/file PATH`` sends a file (``/voice PATH`` a recording as a
voice message); ``//`` at the start sends one ``/``. The conversation's
messages are marked read as they are shown, so ``after_read`` timers start then.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from veil.client.messaging import Messenger, Received
from veil.client.network import NetworkError
from veil.client.swarm import StoreError
from veil.client.terminal import error_line
from veil.errors import VeilError

__all__ = ["Chat"]


NOTICES = {
    "group_removed": "you were removed from the group",
    "group_deleted": "the group was deleted",
    "group_admin": "you are now an admin of the group",
}


def _clock(ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ms / 1000))


class Chat:
    def __init__(
        self,
        messenger: Messenger,
        peer: str,
        *,
        poll_s: float = 2.0,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self.messenger = messenger
        self.peer = peer
        self.poll_s = poll_s
        self._out = out or (lambda line: print(line, flush=True))
        self._lock = asyncio.Lock()  # one messenger operation at a time: sends and fetches

    def _line(self, event: Received) -> str | None:
        if event.peer != self.peer:
            if event.outgoing or event.kind != "text":
                return None
            who = event.name or event.peer[:10]
            kind = "message request" if event.request else "message"
            return f"({kind} from {who} — `veil inbox` shows it)"
        name = "you" if event.outgoing else (event.name or event.sender[:10])
        said = {
            "leave": f"{name} left the group",
            "member_added": f"{event.sender[:10]} joined the group",
            "member_removed": f"{event.sender[:10]} was removed from the group",
            "accept": f"{name} accepted your message request",
            "unsend": f"{name} took a message back",
            **NOTICES,
        }
        text = said.get(event.kind, f"{name}: {event.body}")
        if event.kind == "text" and event.attachments:
            from veil.client.attachment_cli import describe  # noqa: PLC0415

            shown = [text] if event.body else [f"{name}:"]
            text = " ".join(shown + [describe(m) for m in event.attachments])
        return f"[{_clock(event.sent_ms)}] {text}"

    async def _fetch_once(self) -> None:
        async with self._lock:
            events = await self.messenger.fetch()
            for event in events:
                line = self._line(event)
                if line is not None:
                    self._out(line)
            self.messenger.mark_read(self.peer)

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(NetworkError, StoreError):
                await self._fetch_once()
            await asyncio.sleep(self.poll_s)

    async def _handle(self, line: str) -> bool:
        """Act on one input line; False to leave."""
        text = line.rstrip("\n")
        if text.strip() == "/quit":
            return False
        async with self._lock:
            try:
                command, _, argument = text.strip().partition(" ")
                if text.strip() == "/unsend":
                    mine = [e for e in self.messenger.conversation(self.peer) if e.outgoing]
                    if mine:
                        await self.messenger.take_back(self.peer, mine[-1].id)
                        self._out("(taken back)")
                elif command in ("/file", "/voice") and argument.strip():
                    await self._attach(command, Path(argument.strip()).expanduser())
                elif text.startswith("/") and not text.startswith("//"):
                    self._out(
                        "(/unsend takes back your last message, /file PATH sends a file, "
                        "/voice PATH a voice message, /quit leaves; "
                        "start a line with // to send a slash)"
                    )
                elif text.strip():
                    if text.startswith("//"):
                        text = text[1:]
                    await self.messenger.send_text(self.peer, text)
            except (NetworkError, StoreError, VeilError) as exc:
                self._out(f"(not sent: {error_line(str(exc))})")
        return True

    async def _attach(self, command: str, path: Path) -> None:
        from veil.client.attachment_cli import send_attachments  # noqa: PLC0415

        if command == "/voice":
            await send_attachments(self.messenger, self.peer, "", files=[], voice=path)
        else:
            await send_attachments(self.messenger, self.peer, "", files=[path])
        self._out(f"(sent {path.name})")

    async def run(self) -> int:
        name = self.messenger.peer_name(self.peer) or self.peer[:10] + "…"
        if self.peer.startswith("05"):
            from veil.client.protection import PROTECTION_LEVELS  # noqa: PLC0415

            self._out(
                f"(protection: {PROTECTION_LEVELS[self.messenger.protection.level(self.peer)]})"
            )
        for entry in self.messenger.conversation(self.peer)[-20:]:
            who = "you" if entry.outgoing else (entry.name or (entry.sender or self.peer)[:10])
            shown = [entry.body] if entry.body else []
            if entry.attachments:
                from veil.client.attachment_cli import describe  # noqa: PLC0415

                shown += [describe(m) for m in entry.manifests()]
            self._out(f"[{_clock(entry.sent_ms)}] {who}: {' '.join(shown)}")
        self.messenger.mark_read(self.peer)
        poller = asyncio.create_task(self._poll())
        try:
            if sys.stdin.isatty():
                await self._terminal(name)
            else:
                await self._pipe()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        return 0

    async def _pipe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or not await self._handle(line):
                return

    async def _terminal(self, name: str) -> None:
        from prompt_toolkit import PromptSession  # noqa: PLC0415
        from prompt_toolkit.patch_stdout import patch_stdout  # noqa: PLC0415

        session: PromptSession[str] = PromptSession()
        self._out(f"talking with {name}; /unsend takes back your last message, /quit leaves")
        with patch_stdout():
            while True:
                try:
                    line = await session.prompt_async(f"to {name}> ")
                except (EOFError, KeyboardInterrupt):
                    return
                if not await self._handle(line):
                    return
