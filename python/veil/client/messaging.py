"""One-to-one messages between accounts: the Python API the ``veil`` messenger wraps.

A message is :mod:`veil.protocol.content` (versioned, padded), encrypted with the Session Protocol
to the recipient's Session ID (:func:`veil.crypto.encrypt_for_recipient`), and stored in the
recipient's swarm through onion paths (:class:`~veil.client.swarm.SwarmClient`). Fetching reads
several swarm members, opens each message, checks the signature (which names the sender), and
drops what was already seen (by content id, so copies from different members show once).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from veil.client.swarm import SwarmClient
from veil.crypto import decrypt_incoming, encrypt_for_recipient
from veil.errors import DecryptionError
from veil.identity import Identity
from veil.protocol.content import Content, ContentError, decode_content, encode_content

__all__ = ["Messenger", "Received"]

DEFAULT_TTL_MS = 14 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Received:
    sender: str
    """The sender's Session ID, proven by the message's signature."""
    body: str
    sent_ms: int
    name: str | None
    hash: str
    id: bytes


class Messenger:
    """Sends and fetches one account's messages."""

    def __init__(self, identity: Identity, swarm: SwarmClient, *, name: str | None = None) -> None:
        self.identity = identity
        self.swarm = swarm
        self.name = name
        self._seen: dict[bytes, None] = {}  # insertion-ordered set
        self.undecryptable = 0

    def export_seen(self, keep: int = 10_000) -> list[str]:
        """The ids of messages already shown (the most recent ``keep``), for the saved state."""
        return [i.hex() for i in list(self._seen)[-keep:]]

    def import_seen(self, saved: object) -> None:
        if isinstance(saved, list):
            for item in saved:
                try:
                    self._seen[bytes.fromhex(str(item))] = None
                except ValueError:
                    continue

    async def send_text(
        self, recipient_session_id: str, text: str, *, ttl_ms: int = DEFAULT_TTL_MS
    ) -> bytes:
        """Send ``text``; returns the message's content id. Raises on a malformed Session ID."""
        content = Content.text(text, time.time_ns() // 1_000_000, name=self.name)
        sealed = encrypt_for_recipient(self.identity, recipient_session_id, encode_content(content))
        await self.swarm.store(recipient_session_id, sealed, ttl_ms=ttl_ms)
        return content.id

    async def fetch(self) -> list[Received]:
        """New messages, oldest first. Messages that do not open are counted, not raised."""
        received = []
        for message in await self.swarm.retrieve(self.identity):
            try:
                sealed = base64.b64decode(message["data"], validate=True)
                plaintext, sender = decrypt_incoming(self.identity, sealed)
                content = decode_content(plaintext)
            except (binascii.Error, ValueError, KeyError, DecryptionError, ContentError):
                self.undecryptable += 1
                continue
            if content.id in self._seen:
                continue
            self._seen[content.id] = None
            received.append(
                Received(
                    sender=sender,
                    body=content.body,
                    sent_ms=content.sent_ms,
                    name=content.name,
                    hash=message["hash"],
                    id=content.id,
                )
            )
        return received
