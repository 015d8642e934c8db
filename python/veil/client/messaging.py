"""One-to-one messages between accounts: the Python API the ``veil`` messenger wraps.

A message is :mod:`veil.protocol.content` (versioned, padded), encrypted with the Session Protocol
to the recipient's Session ID (:func:`veil.crypto.encrypt_for_recipient`), and stored in the
recipient's swarm (namespace 0) through onion paths (:class:`~veil.client.swarm.SwarmClient`).
Fetching reads several swarm members, opens each message, checks the signature (which names the
sender), and drops what was already seen (by content id, so copies from different members show
once).

Around that, what a messenger needs (all of it in :class:`Messenger`):

- **Message requests.** A message from a Session ID that is not a contact is kept as a request until
  :meth:`Messenger.accept` (the sender is told with an ``accept`` message) or
  :meth:`Messenger.block` (its messages are dropped from then on). Writing to someone makes them a
  contact: the first message is the request.
- **Several devices.** The devices of an account share its config (:mod:`veil.client.account`:
  name, contacts, devices), stored encrypted to the account itself in its own swarm, namespace 2,
  and merged entry by entry. Each message sent is also sent, as a ``sent`` transcript, to the
  account's own swarm, so that its other devices show it.
- **Pickup deletion.** A device deletes what it picked up from the swarm once every device of the
  account has picked it up: each device publishes, in the config, the time up to which it has
  fetched everything that reached the swarm (``picked_ms``; the fetch's start less
  ``pickup_window_ms``, which covers the nodes' clock window), and a message that reached the swarm
  (its arrival, as the members give it) no later than every other device's mark is deleted. With
  one device, a message is deleted as soon as it is fetched. A device that never comes back holds
  messages back until they expire (the TTL), never longer.
- **Disappearing messages** (``after_send``: gone ``ttl`` after it was sent, on the nodes too;
  ``after_read``: gone ``ttl`` after the recipient first showed it) and **unsend** (the recipient's
  devices and the sender's other devices drop the message).
- **Attachments** (files, images, audio, voice messages): stored on the network chunk by chunk,
  their manifests carried in a ``text`` (:attr:`Messenger.attachments`,
  :mod:`veil.client.attachment_messaging`).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.client.account import AccountConfig, Book, Device, Entry
from veil.client.attachment_messaging import MessengerAttachments
from veil.client.community_messaging import MessengerCommunities
from veil.client.group_messaging import MessengerGroups, is_group_id
from veil.client.network import NetworkError
from veil.client.protection import MessengerProtection
from veil.client.swarm import StoreError, SwarmClient
from veil.client.terminal import printable
from veil.clock import now_ms
from veil.crypto import encrypt_for_recipient
from veil.errors import DecryptionError, InvalidInputError
from veil.identity import Identity
from veil.protocol.attachments import Manifest
from veil.protocol.content import (
    GROUP_KINDS,
    Content,
    ContentError,
    decode_content,
    encode_content,
)
from veil.session_id import parse_session_id

__all__ = [
    "CONFIG_NAMESPACE",
    "BlockedContactError",
    "Messenger",
    "Received",
    "printable",
    "seal",
]

log = logging.getLogger("veil.client")

DEFAULT_TTL_MS = 14 * 24 * 3600 * 1000
MIN_TTL_MS = 10_000  # the nodes' shortest message lifetime (their min_ttl_ms)
CONFIG_NAMESPACE = 2
DELETE_CHUNK = 100  # hashes per signed delete (a node takes up to delete_max_hashes)
SEEN_KEPT = 10_000


def seal(identity: Identity, recipient: str, content: Content) -> bytes:
    """A message as stored in the recipient's swarm: the padded content, encrypted with the
    Session Protocol from ``identity`` to ``recipient``."""
    return encrypt_for_recipient(identity, recipient, encode_content(content))


class BlockedContactError(InvalidInputError):
    """A message to a Session ID this account has blocked."""


@dataclass(frozen=True, slots=True)
class Received:
    """Something new in a conversation, from a fetch."""

    kind: str
    """``text``, ``accept`` (the peer accepted our request), ``unsend`` (``ref`` taken back);
    in groups also ``leave`` (the sender left), ``member_added`` and ``member_removed`` (the
    config now says so of ``sender``), ``group_invite``, ``group_admin`` (this account was made an
    admin), ``group_removed`` and ``group_deleted``."""
    peer: str
    """The other side of the conversation."""
    sender: str
    """Who wrote it, proven by the message's signature (our own Session ID if ``outgoing``)."""
    body: str
    sent_ms: int
    name: str | None
    hash: str
    id: bytes
    outgoing: bool = False
    """Sent by another device of this account (a transcript)."""
    request: bool = False
    """From someone who is not a contact yet: held as a message request."""
    disappear: tuple[str, int] | None = None
    ref: bytes | None = None
    group: str | None = None
    """The group's account, for what happened in a group (``peer`` is then the group too),
    and for an invitation to one (``peer`` is the inviter)."""
    room: str | None = None
    """The community room's key (``peer`` too) for ``post``, ``edit`` and ``delete``; ``sender``
    is then the author's blinded ID."""
    attachments: tuple[Manifest, ...] = ()
    """What a ``text`` carries: its attachments, fetched on demand (``Messenger.attachments``)."""


class Messenger:
    """Sends and fetches one account's messages on one device.

    ``persist`` (if given) is called with the book after a fetch has taken new messages and before
    any of them is deleted from the swarm, so that a message picked up is always saved first."""

    def __init__(
        self,
        identity: Identity,
        swarm: SwarmClient | None,
        *,
        book: Book | None = None,
        name: str | None = None,
        pickup_window_ms: int = 120_000,
        ttl_ms: int = DEFAULT_TTL_MS,
        min_ttl_ms: int = MIN_TTL_MS,
        persist: Callable[[Book], None] | None = None,
        transfer_dir: Path | None = None,
        prekey_clock: Callable[[], int] | None = None,
        v2: bool = True,
    ) -> None:
        self.identity = identity
        self._swarm = swarm
        self.book = book or Book()
        self.pickup_window_ms = pickup_window_ms
        self.ttl_ms = ttl_ms
        self.min_ttl_ms = min_ttl_ms
        self.persist = persist
        self.undecryptable = 0
        self._seen = dict.fromkeys(self.book.seen)  # insertion-ordered set of content ids (hex)
        if swarm is not None:
            swarm.import_cursors(self.book.cursors)
        if name is not None and self.book.config.name != name:
            self.book.config.set_name(name, now_ms())
            self.config_dirty = True
        self.groups = MessengerGroups(self)
        self.communities = MessengerCommunities(self)
        self.attachments = MessengerAttachments(self, transfer_dir)
        self.protection = MessengerProtection(self, prekey_clock, enabled=v2)

    # --- what the device holds ----------------------------------------------------------------

    @property
    def swarm(self) -> SwarmClient:
        if self._swarm is None:
            raise RuntimeError("this Messenger has no network: only ingest() and reading work")
        return self._swarm

    @property
    def me(self) -> str:
        return self.identity.session_id

    @property
    def name(self) -> str | None:
        return self.book.config.name

    @property
    def config(self) -> AccountConfig:
        return self.book.config

    @property
    def config_dirty(self) -> bool:
        """The config changed here and is not in the swarm yet (kept in the book: a failed
        store is retried by the next run)."""
        return self.book.config_dirty

    @config_dirty.setter
    def config_dirty(self, value: bool) -> None:
        self.book.config_dirty = value

    def save(self) -> Book:
        """The book with the swarm cursors and seen ids brought up to date, ready to be saved."""
        if self._swarm is not None:
            self.book.cursors = self._swarm.export_cursors()
        self.book.seen = list(self._seen)[-SEEN_KEPT:]
        self.groups.save()
        self.protection.save()
        return self.book

    def conversation(self, peer: str) -> list[Entry]:
        self._purge_expired()
        return list(self.book.conversations.get(peer, []))

    def contacts(self) -> dict[str, str]:
        """Session ID -> ``accepted`` or ``blocked``."""
        return {sid: state for sid, (state, _) in sorted(self.config.contacts.items())}

    def requests(self) -> dict[str, list[Entry]]:
        """Conversations started by someone who is not a contact: their held messages."""
        self._purge_expired()
        return {
            sid: entries
            for sid, entries in self.book.conversations.items()
            if sid.startswith("05")
            and self.config.contact(sid) is None
            and any(not e.outgoing for e in entries)
        }

    def peer_name(self, peer: str) -> str | None:
        if is_group_id(peer):
            group = self.groups.groups.get(peer)
            return group.name if group else None
        if peer in self.book.rooms:
            return peer.partition("@")[0]
        for entry in reversed(self.book.conversations.get(peer, [])):
            if not entry.outgoing and entry.name:
                return entry.name
        return None

    def mark_read(self, peer: str) -> list[Entry]:
        """Mark the peer's unread messages read (starting ``after_read`` timers); returns them."""
        now = now_ms()
        marked = []
        for entry in self.book.conversations.get(peer, []):
            if entry.outgoing or entry.read_ms is not None:
                continue
            entry.read_ms = now
            if entry.disappear and entry.disappear[0] == "after_read":
                entry.expires_ms = now + entry.disappear[1]
            marked.append(entry)
        return marked

    def _purge_expired(self) -> None:
        now = now_ms()
        for sid, entries in list(self.book.conversations.items()):
            kept = [e for e in entries if e.expires_ms is None or e.expires_ms > now]
            if kept:
                self.book.conversations[sid] = kept
            else:
                del self.book.conversations[sid]

    def _add(self, peer: str, entry: Entry) -> None:
        """Insert in sent order. Every caller has just checked the id against the seen set, so
        the conversation holds no copy of it; new messages mostly land at the end."""
        bisect.insort_right(
            self.book.conversations.setdefault(peer, []), entry, key=lambda e: e.sent_ms
        )

    def _drop(self, peer: str, message_id: str, *, outgoing: bool) -> bool:
        entries = self.book.conversations.get(peer, [])
        kept = [e for e in entries if not (e.id == message_id and e.outgoing == outgoing)]
        self.book.conversations[peer] = kept
        return len(kept) != len(entries)

    # --- changing the account's config --------------------------------------------------------

    async def set_name(self, name: str | None) -> None:
        self.config.set_name(name, now_ms())
        self.config_dirty = True
        await self.sync()

    async def accept(self, peer: str) -> list[Entry]:
        """Accept ``peer``'s message request (or unblock them); returns the messages held."""
        parse_session_id(peer)
        self.config.set_contact(peer, "accepted", now_ms())
        self.config_dirty = True
        await self._send_content(peer, Content.control("accept", now_ms()), ttl_ms=self.ttl_ms)
        await self.sync()
        return self.conversation(peer)

    async def remove_device(self, device_id: str) -> None:
        """Take a device (a lost one, say) off the account's list: pickup deletion stops
        waiting for it. A removed device that comes back online adds itself again."""
        device = self.config.devices.get(device_id)
        if device is None or device.removed:
            raise InvalidInputError(f"no device {device_id!r} on this account")
        if device_id == self.book.device_id:
            raise InvalidInputError("this is the device in use; remove it from another one")
        device.removed = True
        device.changed_ms = max(now_ms(), device.changed_ms + 1)
        self.config_dirty = True
        await self.sync()

    async def block(self, peer: str) -> None:
        """Block ``peer``: their messages are dropped, here and on the account's other devices."""
        parse_session_id(peer)
        self.config.set_contact(peer, "blocked", now_ms())
        self.config_dirty = True
        self.book.conversations.pop(peer, None)
        await self.sync()

    # --- sending ------------------------------------------------------------------------------

    async def _send_content(self, recipient: str, content: Content, *, ttl_ms: int) -> str:
        """Store ``content`` for ``recipient``: a v2 envelope to its devices' prekeys when it
        publishes them, else the Session Protocol (``Messenger.protection``)."""
        sealed = await self.protection.seal(recipient, encode_content(content))
        answer = await self.swarm.store(recipient, sealed, ttl_ms=ttl_ms)
        return str(answer.get("hash", ""))

    def _transcript(self, peer: str, content: Content) -> Content:
        return Content(
            body=content.body,
            sent_ms=content.sent_ms,
            id=content.id,
            kind="sent" if content.kind == "text" else content.kind,
            name=content.name,
            to=peer,
            ref=content.ref,
            disappear=content.disappear,
            attachments=content.attachments,
        )

    async def send_text(
        self,
        recipient_session_id: str,
        text: str,
        *,
        disappear: tuple[str, int] | None = None,
        attachments: tuple[Manifest, ...] = (),
    ) -> bytes:
        """Send ``text``; returns the message's content id.

        ``recipient_session_id`` may be a group's account (``03…``) this account is in.
        ``attachments`` are manifests of uploaded attachments (``self.attachments.upload``); the
        text may then be empty.

        Raises :class:`~veil.errors.InvalidSessionIdError` for a malformed Session ID,
        :class:`BlockedContactError` for a blocked one, and the network's errors if the message
        was not stored (then nothing was recorded as sent)."""
        if disappear is not None and disappear[1] < self.min_ttl_ms:
            raise InvalidInputError(
                f"a disappearing message lives at least {self.min_ttl_ms // 1000} seconds"
            )
        if is_group_id(recipient_session_id):
            return await self.groups.send_text(
                recipient_session_id, text, disappear=disappear, attachments=attachments
            )
        if attachments and (
            recipient_session_id.startswith("dm:") or recipient_session_id in self.book.rooms
        ):
            raise InvalidInputError("attachments go in 1:1 and group conversations only")
        if recipient_session_id.startswith("dm:"):
            await self.communities.reply_dm(recipient_session_id, text)
            return b""
        if recipient_session_id in self.book.rooms:
            if disappear is not None:
                raise InvalidInputError("a community post does not disappear")
            post_id = await self.communities.post(recipient_session_id, text)
            return post_id.encode()
        parse_session_id(recipient_session_id)
        if self.config.contact(recipient_session_id) == "blocked":
            raise BlockedContactError(
                f"{recipient_session_id} is blocked; `veil accept` it to write again"
            )
        ttl = self.ttl_ms
        if disappear is not None and disappear[0] == "after_send":
            ttl = min(ttl, disappear[1])
        now = now_ms()
        content = Content.text(
            text, now, name=self.name, disappear=disappear, attachments=attachments
        )
        await self._send_content(recipient_session_id, content, ttl_ms=ttl)
        self._seen[content.id.hex()] = None
        self._add(recipient_session_id, Entry.of(content, outgoing=True))
        if self.config.contact(recipient_session_id) is None:
            self.config.set_contact(recipient_session_id, "accepted", now)
            self.config_dirty = True
        await self._to_own_devices(self._transcript(recipient_session_id, content), ttl)
        if self.config_dirty:
            await self.sync()
        return content.id

    async def unsend(self, peer: str, message_id: bytes) -> None:
        """Take back a message sent to ``peer`` (a Session ID or a group's account): its devices
        and ours drop it. Its attachments, if it carried any, are deleted from the network."""
        await self.attachments.delete_sent(peer, message_id.hex())
        if is_group_id(peer):
            await self.groups.unsend(peer, message_id)
            return
        parse_session_id(peer)
        content = Content.control("unsend", now_ms(), ref=message_id)
        await self._send_content(peer, content, ttl_ms=self.ttl_ms)
        self._drop(peer, message_id.hex(), outgoing=True)
        await self._to_own_devices(self._transcript(peer, content), self.ttl_ms)

    async def take_back(self, peer: str, entry_id: str) -> None:
        """Take back the message of a conversation whose entry id is ``entry_id``: an unsend in
        a 1:1 conversation or a group, a deletion of one's post in a community room."""
        if peer in self.book.rooms:
            await self.communities.delete(peer, entry_id)
        else:
            await self.unsend(peer, bytes.fromhex(entry_id))

    async def _to_own_devices(self, content: Content, ttl_ms: int) -> None:
        """A transcript for the account's other devices. Failing to store it does not unsend
        what was sent; it is logged, and the other devices miss the transcript."""
        self._seen[content.id.hex()] = None  # our own copy is not news to this device
        try:
            await self._send_content(self.me, content, ttl_ms=ttl_ms)
        except (NetworkError, StoreError) as exc:
            log.warning("transcript for own devices not stored: %s", type(exc).__name__)

    # --- fetching -----------------------------------------------------------------------------

    def _open(self, message: dict[str, Any]) -> tuple[Content, str, bool] | None:
        """``(content, sender, v2?)`` of a retrieved message, or None (counted)."""
        try:
            data = message["data"]
            if not isinstance(data, str):
                raise ValueError("data is not text")
            sealed = base64.b64decode(data, validate=True)
            plaintext, sender, v2 = self.protection.open(sealed)
            return decode_content(plaintext), sender, v2
        except (binascii.Error, ValueError, KeyError, DecryptionError, ContentError):
            self.undecryptable += 1
            return None

    async def fetch(self) -> list[Received]:
        """What is new, oldest first: messages (requests flagged), transcripts of what the
        account's other devices sent, accepts and unsends. Messages that do not open are
        counted in ``undecryptable``, not raised. Then publishes this device's pickup mark and
        config if needed and deletes from the swarm what every device has picked up."""
        started = now_ms()
        prekeys_started = self.protection.ring.clock()
        await self._pull_config()
        messages = await self.swarm.retrieve(self.identity)
        for message in messages:
            # Pending under when it reached the swarm: the arrival the members give (the same for
            # every device), never later than this fetch began. Not its timestamp, which a sender
            # may set in the past (a message queued while offline).
            arrival = message.get("arrival_ms")
            reached = min(arrival, started) if isinstance(arrival, int) else started
            self.book.pending[str(message["hash"])] = reached
            self.book.received_to_ms = max(self.book.received_to_ms, reached)
        received = self.ingest(messages)
        received += await self.groups.fetch()
        received += await self.communities.fetch()
        self._advance_mark(started)
        if self.persist is not None:
            self.persist(self.save())  # kept on this device before anything leaves the swarm
        await self._keep_prekeys()
        self.protection.destroy_old(prekeys_started)  # every message it can open was read now
        await self._delete_picked_up()
        self._purge_expired()
        return received

    async def _keep_prekeys(self) -> None:
        """Rotate this device's prekey if due, store the config (which lists it) and publish the
        account's bundle when it changed."""
        publish = self.protection.maintain()
        await self.sync()
        if publish and not self.config_dirty:  # the bundle follows the config, never leads it
            await self.protection.publish()

    def ingest(self, messages: list[dict[str, Any]]) -> list[Received]:
        """Open retrieved messages (``retrieve``'s dicts, in order) and apply them to the book:
        the network-free half of :meth:`fetch`, for callers with their own transport."""
        received = []
        for message in messages:
            digest = str(message["hash"])
            opened = self._open(message)
            if opened is None:
                continue
            content, sender, v2 = opened
            if content.id.hex() in self._seen:
                continue
            self._seen[content.id.hex()] = None
            unprotected = self.protection.downgraded(sender, content.sent_ms, v2)
            event = self._take(content, sender, digest, unprotected=unprotected)
            if event is not None:
                received.append(event)
        # A message taken back in the same fetch is not shown at all.
        unsent = {e.ref for e in received if e.kind == "unsend"}
        shown = {e.id for e in received}
        return [
            e
            for e in received
            if e.id not in unsent and not (e.kind == "unsend" and e.ref in shown)
        ]

    def _take(
        self, content: Content, sender: str, digest: str, *, unprotected: bool = False
    ) -> Received | None:
        """Apply one opened message to the book; the event to show, if any."""
        if sender == self.me:
            if content.kind == "text":
                peer, outgoing = self.me, True  # a note to self: sent to our own Session ID
            elif content.to is None:
                return None  # a config in namespace 0, or a control without a peer
            else:
                peer, outgoing = content.to, True
        else:
            if content.kind in ("sent", "config"):
                return None  # only the account itself speaks for its own devices
            peer, outgoing = sender, False
        state = self.config.contact(peer)
        if state == "blocked" and not outgoing:
            return None
        if content.kind in GROUP_KINDS or content.kind == "leave":
            # A leave belongs in a group, and a notice is never sent to oneself.
            return None if outgoing else self._take_group_notice(content, sender, digest)
        content = dataclasses.replace(
            content,
            body=printable(content.body),
            name=printable(content.name, one_line=True) if content.name else None,
        )
        if content.kind == "unsend":
            assert content.ref is not None  # decode_content guarantees it
            self._seen[content.ref.hex()] = None  # should the message itself come later
            if not self._drop(peer, content.ref.hex(), outgoing=outgoing):
                return None
        elif content.kind in ("text", "sent"):
            entry = Entry.of(content, outgoing=outgoing)
            entry.unprotected = unprotected
            self._add(peer, entry)
        return Received(
            kind="text" if content.kind == "sent" else content.kind,
            peer=peer,
            sender=sender,
            body=content.body,
            sent_ms=content.sent_ms,
            name=content.name,
            hash=digest,
            id=content.id,
            outgoing=outgoing,
            request=not outgoing and state is None,
            disappear=content.disappear,
            ref=content.ref,
            attachments=content.attachments,
        )

    def _take_group_notice(self, content: Content, sender: str, digest: str) -> Received | None:
        """An invitation to a group, or a notice of removal from one, from ``sender``."""
        shown = self.groups.take_direct(content, sender)
        if shown is None:
            return None
        return Received(
            kind=shown["kind"],
            peer=shown["peer"],
            sender=sender,
            body=printable(shown["body"], one_line=True),
            sent_ms=content.sent_ms,
            name=printable(content.name, one_line=True) if content.name else None,
            hash=digest,
            id=content.id,
            request=self.config.contact(sender) is None,
            group=shown.get("group", shown["peer"]),
        )

    # --- the account's config and pickup deletion ---------------------------------------------

    def _register_device(self) -> None:
        """Put this device in the config (again, if another device removed it)."""
        mine = self.config.devices.get(self.book.device_id)
        if mine is None or mine.removed or mine.name != self.book.device_name:
            now = now_ms()
            self.config.set_device(
                self.book.device_id,
                Device(
                    name=self.book.device_name,
                    linked_ms=mine.linked_ms if mine and not mine.removed else now,
                    picked_ms=mine.picked_ms if mine else 0,
                    changed_ms=now,
                ),
            )
            self.config_dirty = True

    def _advance_mark(self, fetch_started_ms: int) -> None:
        """Publish how far this device has fetched, when another device waits for it: only if
        something was picked up that the published mark does not cover yet."""
        others = [i for i in self.config.live_devices() if i != self.book.device_id]
        mark = fetch_started_ms - self.pickup_window_ms
        mine = self.config.devices[self.book.device_id]  # registered by the fetch's config pull
        if not others or mine.picked_ms >= self.book.received_to_ms or mark <= mine.picked_ms:
            return
        mine.picked_ms = mark
        mine.changed_ms = max(now_ms(), mine.changed_ms + 1)
        self.config_dirty = True

    async def _pull_config(self) -> None:
        messages = await self.swarm.retrieve(
            self.identity, namespace=CONFIG_NAMESPACE, from_start=True
        )
        hashes = {}
        newest = 0
        for message in messages:
            opened = self._open(message)
            hashes[str(message["hash"])] = int(message.get("timestamp", 0))
            if opened is None or opened[1] != self.me or opened[0].kind != "config":
                continue
            assert opened[0].config is not None  # decode_content guarantees it
            self.config.merge(AccountConfig.from_wire(opened[0].config))
            newest = max(newest, int(message.get("timestamp", 0)))
        self.book.config_hashes = hashes
        self._register_device()
        self.groups.reconcile()
        self.communities.reconcile()
        # One config in the swarm, refreshed before it expires (or stored again if it has).
        if len(hashes) != 1 or newest < now_ms() - self.ttl_ms // 2:
            self.config_dirty = True
        for peer, (state, _) in self.config.contacts.items():
            if state == "blocked":  # perhaps on another device
                self.book.conversations.pop(peer, None)

    async def refresh_config(self) -> None:
        """Read the account's config from the swarm (contacts, name, devices) without fetching
        messages, and make sure this device's prekey is published: what a device does before it
        sends."""
        await self._pull_config()
        await self._keep_prekeys()

    async def sync(self) -> None:
        """Store the config if it changed, then delete the configs it replaces. A failure leaves
        it to the next call (``config_dirty`` stays set)."""
        self._register_device()
        if not self.config_dirty:
            return
        now = now_ms()
        content = Content.control("config", now, config=self.config.wire())
        try:
            encoded = encode_content(content)
        except ContentError:
            log.warning("config too large to store (%d contacts)", len(self.config.contacts))
            return
        sealed = encrypt_for_recipient(self.identity, self.me, encoded)
        try:
            answer = await self.swarm.store(
                self.me,
                sealed,
                ttl_ms=self.ttl_ms,
                namespace=CONFIG_NAMESPACE,
                identity=self.identity,
            )
        except (NetworkError, StoreError) as exc:
            log.warning("config not stored: %s", type(exc).__name__)
            return
        self.config_dirty = False
        replaced = [h for h in self.book.config_hashes if h != answer.get("hash")]
        self.book.config_hashes = {str(answer.get("hash")): now}
        # If this fails, the next pull finds more than one config and stores a merged one again.
        with contextlib.suppress(NetworkError, StoreError):
            await self.swarm.delete(self.identity, replaced)

    async def _delete_picked_up(self) -> None:
        expired = now_ms() - self.ttl_ms  # the nodes dropped these already
        for digest in [h for h, ts in self.book.pending.items() if ts < expired]:
            del self.book.pending[digest]
        others = [d for i, d in self.config.live_devices().items() if i != self.book.device_id]
        floor = min((d.picked_ms for d in others), default=None)
        ready = [h for h, ts in self.book.pending.items() if floor is None or ts <= floor]
        for start in range(0, len(ready), DELETE_CHUNK):
            chunk = ready[start : start + DELETE_CHUNK]
            try:
                await self.swarm.delete(self.identity, chunk)
            except (NetworkError, StoreError):
                return  # kept pending: the next fetch tries again
            for digest in chunk:
                del self.book.pending[digest]
