"""Community rooms in the messenger: joining by link, reading by polling, posting, and the
moderators' actions (``docs/community.md``, "The client").

A room is kept as a conversation under its **room key**, ``token@<server key hex>``, with each
entry's sender the author's blinded ID and its display name; the user is known in the room by its
own blinded ID for that server, never its Session ID. The rooms joined are in the account config
(``communities``: the join link), so every device of the account reads them; each device keeps its
own poll cursor (the room's ``seqno``) in its book.

A fetch polls every server once for all of the account's rooms on it (one ``poll`` request, so
the server answers only what changed since each room's cursor) and applies the changes: a new post
is added, an edited or reacted-to one replaced, a deleted one dropped. A post is kept only if its
proof — its author's signed ``post`` or ``edit`` request — covers the text, name and reply shown
(:func:`veil.protocol.community.verify_post`): the server cannot alter a post or put words under
someone's name; others are counted in ``unverified`` and not shown.

**Direct messages** between two users of a server go through the server's inbox, end to end
encrypted with the key the two blinded keys agree on (``BlindedIdentity.dm_key``)::

    data = nonce (24) ‖ XChaCha20-Poly1305(key, nonce, padded content, aad = B_sender ‖ B_recipient)

Only the holder of the sender's blinded key (or the recipient) can make a message that opens, so a
server that names another sender makes it fail. Such a conversation is kept under
``dm:<blinded ID>@<server key hex>``. A sender may share its Session ID in the content (``sid``);
the recipient takes it only if the sender's blinded key is that Session ID's on this server
(``session_id_matches``), and from then on the conversation is a normal 1:1 one (a message
request until accepted).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeGuard

from veil import _core
from veil.client.account import Entry
from veil.client.community import CommunityClient, OnionTransport, Transport
from veil.client.network import NetworkError
from veil.client.terminal import printable
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.protocol.blinding import parse_blinded_id, session_id_matches
from veil.protocol.community import CommunityError, CommunityLink, parse_link, verify_post
from veil.protocol.content import Content, decode_content, encode_content

if TYPE_CHECKING:
    from veil.client.messaging import Messenger, Received

__all__ = ["MessengerCommunities", "dm_key_of", "room_key"]

log = logging.getLogger("veil.client")


def room_key(link: CommunityLink) -> str:
    """How the book names a room: ``token@<server key hex>``."""
    return f"{link.room}@{link.server_key.hex()}"


def dm_key_of(blinded_id: str, server_key: bytes) -> str:
    """How the book names a direct conversation with a blinded user of a server."""
    return f"dm:{blinded_id}@{server_key.hex()}"


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class MessengerCommunities:
    """The community rooms of one account on one device (``messenger.communities``)."""

    def __init__(
        self, messenger: Messenger, transport: Callable[[], Transport] | None = None
    ) -> None:
        self.m = messenger
        self._transport = transport
        self._clients: dict[tuple[str, bytes], CommunityClient] = {}
        self.unverified = 0
        """Posts a server showed without their author's signature over what it showed (a post
        from before the server kept proofs, or one the server altered): not kept."""

    # --- what the device holds ----------------------------------------------------------------

    def rooms(self) -> dict[str, CommunityLink]:
        """The rooms this device reads: room key → its link."""
        out = {}
        for key, held in sorted(self.m.book.rooms.items()):
            try:
                out[key] = parse_link(str(held.get("link")))
            except InvalidInputError:
                continue
        return out

    def find(self, text: str) -> str:
        """The room a text names: its room key, its token if only one joined room has it, or
        ``token@`` and the start of the server key."""
        rooms = self.rooms()
        if text in rooms:
            return text
        if text.startswith("dm:"):
            direct = [k for k in self.m.book.conversations if k.startswith(text)]
            if len(direct) == 1:
                return direct[0]
        token, _, server = text.partition("@")
        matches = [
            key
            for key, link in rooms.items()
            if link.room == token and link.server_key.hex().startswith(server)
        ]
        if len(matches) != 1:
            raise InvalidInputError(
                f"{text!r} names no room this account joined"
                if not matches
                else f"{text!r} names {len(matches)} rooms; add @ and the server key's start"
            )
        return matches[0]

    def client(self, link: CommunityLink) -> CommunityClient:
        """The signed-request client for the link's server (one per server)."""
        held = self._clients.get((link.url, link.server_key))
        if held is None:
            transport = (
                self._transport() if self._transport else OnionTransport(self.m.swarm.network)
            )
            held = CommunityClient(self.m.identity, link.url, link.server_key, transport)
            self._clients[(link.url, link.server_key)] = held
        return held

    def link(self, key: str) -> CommunityLink:
        link = self.rooms().get(key)
        if link is None:
            raise InvalidInputError(f"this account has not joined room {key}")
        return link

    def blinded_id(self, key: str) -> str:
        """How the room's server knows this account."""
        return self.client(self.link(key)).blinded_id

    # --- the account's config -----------------------------------------------------------------

    def reconcile(self) -> None:
        """Follow the account's config: read the rooms another device joined, stop reading those
        another device left."""
        for key, (joined, _, link) in self.m.config.communities.items():
            if joined and link is not None and key not in self.m.book.rooms:
                try:
                    if room_key(parse_link(link)) == key:
                        self.m.book.rooms[key] = {"link": link, "since": None}
                except InvalidInputError:
                    continue
            elif not joined and key in self.m.book.rooms:
                del self.m.book.rooms[key]
                self.m.book.conversations.pop(key, None)

    # --- joining and leaving ------------------------------------------------------------------

    async def join(self, text: str) -> tuple[str, dict[str, Any]]:
        """Join the room of a link (``veil://community?…`` or ``https://host/room?public_key=…``):
        (its room key, its info). The server is asked for the room first, so a wrong link or a
        ban is an error and nothing is recorded."""
        link = parse_link(text.strip())
        info = await self.client(link).room(link.room)
        key = room_key(link)
        self.m.book.rooms[key] = {"link": link.veil_link(), "since": None}
        self.m.config.set_community(key, link.veil_link(), now_ms())
        self.m.config_dirty = True
        await self.m.sync()
        return key, info

    async def leave(self, key: str) -> None:
        self.link(key)
        del self.m.book.rooms[key]
        self.m.book.conversations.pop(key, None)
        self.m.config.set_community(key, None, now_ms())
        self.m.config_dirty = True
        await self.m.sync()

    # --- posting and moderating ---------------------------------------------------------------

    async def post(self, key: str, text: str, *, reply_to: int | None = None) -> str:
        """Post ``text`` under this account's display name; the post's id."""
        link = self.link(key)
        client = self.client(link)
        answer = await client.post(link.room, text, name=self.m.name, reply_to=reply_to)
        post_id = str(answer.get("id"))
        now = now_ms()
        self._upsert(
            key,
            Entry(
                id=post_id,
                outgoing=True,
                body=text,
                sent_ms=now,
                name=self.m.name,
                read_ms=now,
                sender=client.blinded_id,
                reply_to=None if reply_to is None else str(reply_to),
            ),
        )
        return post_id

    async def delete(self, key: str, post_id: str) -> None:
        """Delete a post: one's own, or (a moderator) anyone's."""
        link = self.link(key)
        await self.client(link).delete(link.room, _post_id(post_id))
        self.m.book.conversations[key] = [
            e for e in self.m.book.conversations.get(key, []) if e.id != post_id
        ]

    async def edit(self, key: str, post_id: str, text: str) -> None:
        """Change the text of one's own post."""
        link = self.link(key)
        await self.client(link).edit(link.room, _post_id(post_id), text)
        for entry in self.m.book.conversations.get(key, []):
            if entry.id == post_id:
                entry.body = text

    async def pin(self, key: str, post_id: str, *, remove: bool = False) -> None:
        """Pin a post to the room, or unpin it (moderators)."""
        link = self.link(key)
        await self.client(link).pin(link.room, _post_id(post_id), remove=remove)

    async def react(self, key: str, post_id: str, emoji: str, *, remove: bool = False) -> None:
        link = self.link(key)
        await self.client(link).react(link.room, _post_id(post_id), emoji, remove=remove)

    async def moderate(
        self, key: str, method: str, user: str, *, everywhere: bool = False, admin: bool = False
    ) -> bool:
        """``ban``, ``unban``, ``add_moderator``, ``remove_moderator`` of a blinded ID in the
        room, or server-wide with ``everywhere``; whether anything changed."""
        link = self.link(key)
        room = None if everywhere else link.room
        return await self.client(link).moderate(method, user, room=room, admin=admin)

    # --- direct messages ----------------------------------------------------------------------

    async def send_dm(self, key: str, to: str, text: str, *, share_session_id: bool = False) -> str:
        """Send ``text`` to the user ``to`` (a blinded ID) of the room's server through its inbox;
        with ``share_session_id`` the content also carries this account's Session ID. The
        conversation's key (``dm:…``)."""
        link = self.link(key)
        client = self.client(link)
        parse_blinded_id(to)
        content = dataclasses.replace(
            Content.text(text, now_ms(), name=self.m.name),
            sid=self.m.me if share_session_id else None,
        )
        dm_key = client.blinded.dm_key(to, sending=True)
        nonce = secrets.token_bytes(24)
        aad = client.blinded.public_key + bytes.fromhex(to[2:])
        sealed = nonce + _core.xchacha20poly1305_encrypt(
            dm_key, nonce, encode_content(content), aad
        )
        await client.inbox_send(to, base64.b64encode(sealed).decode("ascii"))
        conversation = dm_key_of(to, link.server_key)
        self.m._seen[content.id.hex()] = None
        self.m._add(conversation, Entry.of(content, outgoing=True, sender=client.blinded_id))
        return conversation

    async def reply_dm(self, conversation: str, text: str) -> None:
        """Send ``text`` in a direct conversation (``dm:<blinded ID>@<server key hex>``)."""
        blinded, _, server = conversation.removeprefix("dm:").partition("@")
        key = next((k for k, link in self.rooms().items() if link.server_key.hex() == server), None)
        if key is None:
            raise InvalidInputError("no room of that community is joined any more")
        await self.send_dm(key, blinded, text)

    async def _read_inbox(self, link: CommunityLink, keys: list[str]) -> list[Received]:
        """The server's inbox for this account: each message opened, checked and kept."""
        client = self.client(link)
        since = max(int(self.m.book.rooms[k].get("inbox") or 0) for k in keys)
        answer = await client.inbox_poll(since)
        events: list[Received] = []
        messages = answer.get("messages")
        for message in messages if isinstance(messages, list) else []:
            if not isinstance(message, dict) or not _is_count(message.get("id")):
                continue
            since = max(since, message["id"])
            event = self._open_dm(client, link, message)
            if event is not None:
                events.append(event)
        for k in keys:
            self.m.book.rooms[k]["inbox"] = since
        return events

    def _open_dm(
        self, client: CommunityClient, link: CommunityLink, message: dict[str, Any]
    ) -> Received | None:
        from veil.client.messaging import Received  # noqa: PLC0415

        sender, data = message.get("from"), message.get("data")
        if not _is_blinded_id(sender) or not isinstance(data, str):
            return None
        try:
            sealed = base64.b64decode(data, validate=True)
            aad = bytes.fromhex(sender[2:]) + client.blinded.public_key
            padded = _core.xchacha20poly1305_decrypt(
                client.blinded.dm_key(sender, sending=False), sealed[:24], sealed[24:], aad
            )
            content = decode_content(padded)
        except (ValueError, InvalidInputError):
            self.m.undecryptable += 1
            return None
        if content.kind != "text" or content.id.hex() in self.m._seen:
            return None
        self.m._seen[content.id.hex()] = None
        shared = content.sid
        if shared is not None and session_id_matches(sender, shared, link.server_key):
            peer, who = shared, None  # a normal 1:1 conversation from now on
        else:
            peer, who = dm_key_of(sender, link.server_key), sender
        if self.m.config.contact(peer) == "blocked":
            return None
        entry = Entry.of(
            dataclasses.replace(
                content,
                body=printable(content.body),
                name=printable(content.name, one_line=True) if content.name else None,
            ),
            outgoing=False,
            sender=who,
        )
        self.m._add(peer, entry)
        return Received(
            kind="text",
            peer=peer,
            sender=peer if who is None else sender,
            body=entry.body,
            sent_ms=entry.sent_ms,
            name=entry.name,
            hash="",
            id=content.id,
            request=who is None and self.m.config.contact(peer) is None,
            room=None if who is None else peer,
        )

    # --- reading ------------------------------------------------------------------------------

    async def fetch(self) -> list[Received]:
        """Poll every server once for the rooms on it; a server not reached now, or refusing,
        is left for the next fetch."""
        by_server: dict[tuple[str, bytes], dict[str, CommunityLink]] = {}
        for key, link in self.rooms().items():
            by_server.setdefault((link.url, link.server_key), {})[key] = link
        events: list[Received] = []
        for rooms in by_server.values():
            first = next(iter(rooms.values()))
            since = {link.room: self.m.book.rooms[key].get("since") for key, link in rooms.items()}
            try:
                answer = await self.client(first).poll(since)
            except (NetworkError, CommunityError) as exc:
                log.warning("community not read: %s", type(exc).__name__)
                continue
            for key, link in rooms.items():
                entry = answer.get(link.room)
                if isinstance(entry, dict) and entry.get("status") == 200:
                    events += self._apply(key, link, entry)
            try:
                events += await self._read_inbox(first, list(rooms))
            except (NetworkError, CommunityError) as exc:
                log.warning("community inbox not read: %s", type(exc).__name__)
        return events

    def _apply(self, key: str, link: CommunityLink, polled: dict[str, Any]) -> list[Received]:
        """Apply one room's poll answer to its conversation (``key``, ``link``)."""
        from veil.client.messaging import Received  # noqa: PLC0415  (a cycle otherwise)

        mine = self.client(link).blinded_id
        held = {e.id: e for e in self.m.book.conversations.get(key, [])}
        events = []
        changes = polled.get("changes")
        for change in changes if isinstance(changes, list) else []:
            entry = _entry(change, mine)
            if entry is None:
                continue
            if entry.sent_ms >= 0 and not verify_post(link.server_key, link.room, change):
                self.unverified += 1  # its author's signature does not cover what is shown
                continue
            if entry.sent_ms < 0:  # deleted
                if held.pop(entry.id, None) is not None:
                    self._drop(key, entry.id)
                    events.append(_event(Received, "delete", key, entry))
                continue
            before = held.get(entry.id)
            if before is not None:
                entry.read_ms = before.read_ms
            self._upsert(key, entry)
            held[entry.id] = entry
            if before is None:
                events.append(_event(Received, "post", key, entry))
            elif (before.body, before.reactions) != (entry.body, entry.reactions):
                events.append(_event(Received, "edit", key, entry))
        seqno = polled.get("seqno")
        if isinstance(seqno, int) and not isinstance(seqno, bool) and seqno >= 0:
            self.m.book.rooms[key]["since"] = seqno
        return events

    def _upsert(self, key: str, entry: Entry) -> None:
        self._drop(key, entry.id)
        self.m._add(key, entry)

    def _drop(self, key: str, post_id: str) -> None:
        entries = self.m.book.conversations.get(key, [])
        self.m.book.conversations[key] = [e for e in entries if e.id != post_id]


_HEX = frozenset("0123456789abcdef")


def _is_blinded_id(value: object) -> TypeGuard[str]:
    """``25`` and 64 lower-case hex digits (whether it is a point is the server's to check)."""
    return (
        isinstance(value, str)
        and len(value) == 66
        and value.startswith("25")
        and _HEX.issuperset(value)
    )


def _post_id(text: str) -> int:
    if not text.isdigit():
        raise InvalidInputError(f"{text!r} is not a post id (a number)")
    return int(text)


def _entry(change: object, mine: str) -> Entry | None:
    """The entry a poll's change says (a deleted post: ``sent_ms`` -1), or None if malformed."""
    if not isinstance(change, dict):
        return None
    post_id = change.get("id")
    if not isinstance(post_id, int) or isinstance(post_id, bool) or post_id < 0:
        return None
    if change.get("deleted") is True:
        return Entry(id=str(post_id), outgoing=False, body="", sent_ms=-1)
    author, text, posted = change.get("author"), change.get("text"), change.get("posted")
    name, reply_to, reactions = change.get("name"), change.get("reply_to"), change.get("reactions")
    if (
        not _is_blinded_id(author)
        or not isinstance(text, str)
        or not isinstance(posted, int)
        or isinstance(posted, bool)
    ):
        return None
    counts = {}
    for emoji, held in reactions.items() if isinstance(reactions, dict) else ():
        count = held.get("count") if isinstance(held, dict) else None
        if isinstance(emoji, str) and isinstance(count, int) and count > 0:
            counts[printable(emoji, one_line=True)] = count
    return Entry(
        id=str(post_id),
        outgoing=author == mine,
        body=printable(text),
        sent_ms=posted,
        name=printable(name, one_line=True)[:64] if isinstance(name, str) and name else None,
        read_ms=posted if author == mine else None,
        sender=author,
        reply_to=str(reply_to) if isinstance(reply_to, int) else None,
        reactions=counts or None,
    )


def _event(received: type[Received], kind: str, key: str, entry: Entry) -> Received:
    return received(
        kind=kind,
        peer=key,
        sender=entry.sender or "",
        body=entry.body,
        sent_ms=entry.sent_ms,
        name=entry.name,
        hash="",
        id=b"",
        outgoing=entry.outgoing,
        room=key,
    )
