"""Closed groups in the messenger: invitations through the 1:1 inbox, the groups an account is
in shared by its devices, and a group's messages kept as a conversation (``docs/messenger.md``,
"Closed groups").

What travels where:

- An admin invites a member with a ``group_invite`` message (:mod:`veil.protocol.content`) in the
  member's 1:1 inbox: the :class:`~veil.client.groups.Invite` (group key, subaccount, and for a new
  admin the group's seed), which proves itself (the token is signed by the group key). Every device
  of the member picks it up and holds it as an invitation until the account accepts it; from a
  blocked Session ID it is dropped.
- Accepting puts the group in the account's config (``groups``), with the invitation: the
  account's other devices join from there, and leaving or being removed takes it out again.
- The group's messages are read from the group's swarm by every device (each with its own
  cursor); a message this account sent shows as outgoing on its other devices.
- A removed member cannot read the group's config any more (it is sealed with a key it never
  gets), so the admin who removes it tells it so: a ``group_removed`` message in its 1:1 inbox,
  with the group key's signature over its Session ID.

A group's conversation is kept in the book under the group's account (``03…``), with each entry's
sender; disappearing messages and unsend work as in a 1:1 conversation (an unsend is honoured
only from the message's own sender).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from veil.client.account import Entry
from veil.client.groups import TTL_MS, Group, GroupActionError, GroupMessage, Groups, Invite
from veil.client.network import NetworkError
from veil.client.swarm import StoreError
from veil.client.terminal import printable
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.protocol.attachments import Manifest
from veil.protocol.content import Content
from veil.protocol.groups import GroupError, sign_removal, verify_removal
from veil.session_id import parse_session_id

if TYPE_CHECKING:
    from veil.client.messaging import Messenger, Received

__all__ = ["MessengerGroups", "is_group_id"]

log = logging.getLogger("veil.client")


def is_group_id(text: str) -> bool:
    """Whether ``text`` is a group's account (``03`` and 64 lower-case hex digits)."""
    return len(text) == 66 and text.startswith("03") and all(c in "0123456789abcdef" for c in text)


class MessengerGroups:
    """The groups of one account on one device (``messenger.groups``)."""

    def __init__(self, messenger: Messenger) -> None:
        self.m = messenger
        self._api: Groups | None = None
        self.groups: dict[str, Group] = {}
        for account, saved in messenger.book.groups.items():
            try:
                self.groups[account] = Group.from_json(saved)
            except (InvalidInputError, TypeError, ValueError, KeyError, AttributeError):
                log.warning("a saved group could not be read; it is left out")

    @property
    def api(self) -> Groups:
        if self._api is None:
            self._api = Groups(self.m.identity, self.m.swarm)
        return self._api

    def save(self) -> None:
        self.m.book.groups = {a: g.to_json() for a, g in self.groups.items()}

    # --- what the device holds ----------------------------------------------------------------

    def joined(self) -> dict[str, Group]:
        return {a: g for a, g in sorted(self.groups.items()) if g.state == "joined"}

    def invitations(self) -> dict[str, dict[str, Any]]:
        return dict(self.m.book.invites)

    def find(self, text: str) -> str:
        """The group a text names: the account of a group or invitation this device holds, or a
        prefix of it (at least 6 characters) that only one of them starts with."""
        text = text.strip().lower()
        known = set(self.groups) | set(self.m.book.invites)
        if text in known:
            return text
        matches = [a for a in known if len(text) >= 6 and a.startswith(text)]
        if len(matches) != 1:
            raise InvalidInputError(
                f"{text!r} names no group of this account"
                if not matches
                else f"{text!r} names {len(matches)} groups; give more of the id"
            )
        return matches[0]

    def get(self, account: str) -> Group:
        group = self.groups.get(account)
        if group is None:
            raise GroupActionError(f"this account is not in group {account}")
        return group

    def _live(self, account: str) -> Group:
        group = self.get(account)
        if group.state != "joined":
            raise GroupActionError(f"this account has {group.state} the group")
        return group

    # --- the account's config -----------------------------------------------------------------

    def _record(self, group: Group, *, joined: bool) -> None:
        self.m.config.set_group(
            group.account, joined, group.invite.to_json() if joined else None, now_ms()
        )
        self.m.config_dirty = True

    def reconcile(self) -> None:
        """Follow the account's config: join what another device joined (or was made admin
        of), stop reading what another device left."""
        for account, (joined, _, saved) in self.m.config.groups.items():
            group = self.groups.get(account)
            if not joined:
                if group is not None and group.state == "joined":
                    group.state = "left"
                self.m.book.invites.pop(account, None)
                continue
            try:
                invite = Invite.from_json(saved)
            except GroupError:
                continue
            if invite.account != account:
                continue
            self.m.book.invites.pop(account, None)
            if group is None or group.state == "left":
                self.groups[account] = Group(invite)
            elif invite.admin_seed is not None and not group.is_admin:
                group.invite = invite

    # --- 1:1 messages about groups ------------------------------------------------------------

    def take_direct(self, content: Content, sender: str) -> dict[str, Any] | None:
        """A ``group_invite`` or ``group_removed`` from ``sender`` (not blocked): what to show
        (fields for :class:`~veil.client.messaging.Received`), or None."""
        if content.kind == "group_invite":
            return self._take_invite(content, sender)
        if content.kind == "group_removed" and isinstance(content.group, dict):
            return self._take_removal(content.group)
        return None

    def _take_invite(self, content: Content, sender: str) -> dict[str, Any] | None:
        try:
            invite = Invite.from_wire(content.group)
        except GroupError:
            return None
        account = invite.account
        group = self.groups.get(account)
        if group is None or group.state != "joined":
            self.m.book.invites[account] = {
                "invite": invite.to_json(),
                "from": sender,
                "sent_ms": content.sent_ms,
            }
            return {
                "kind": "group_invite",
                "peer": sender,
                "body": invite.name or "",
                "group": account,
            }
        if invite.admin_seed is None or group.is_admin:
            return None
        group.invite = invite  # made an admin
        self._record(group, joined=True)
        return {"kind": "group_admin", "peer": account, "body": group.name or ""}

    def _take_removal(self, notice: dict[str, Any]) -> dict[str, Any] | None:
        group = self.groups.get(_account_of(notice.get("pk")))
        if (
            group is None
            or group.state != "joined"
            or not verify_removal(group.public_key, self.m.me, notice.get("sig"))
        ):
            return None
        group.state = "removed"
        self._record(group, joined=False)
        return {"kind": "group_removed", "peer": group.account, "body": group.name or ""}

    async def _tell(self, member: str, content: Content) -> None:
        await self.m._send_content(member, content, ttl_ms=self.m.ttl_ms)

    def _invite_content(self, invite: Invite) -> Content:
        return Content.control("group_invite", now_ms(), group=invite.wire(), name=self.m.name)

    # --- admins -------------------------------------------------------------------------------

    async def create(self, name: str, members: list[str]) -> Group:
        """A new group with this account as its admin; each member gets an invitation."""
        for member in members:
            parse_session_id(member)
        group, invites = await self.api.create(name, members)
        self.groups[group.account] = group
        self._record(group, joined=True)
        await self.m.sync()
        for member, invite in invites.items():
            await self._tell(member, self._invite_content(invite))
        return group

    async def invite(self, account: str, member: str, *, history: bool = False) -> None:
        parse_session_id(member)
        group = self._live(account)
        invite = await self.api.add(group, member, history=history)
        await self._tell(member, self._invite_content(invite))

    async def remove(self, account: str, member: str) -> None:
        parse_session_id(member)
        group = self._live(account)
        if member not in group.config.current_members():
            raise GroupActionError("that Session ID is not a member of the group")
        await self.api.remove(group, member)
        seed = group.seed
        if seed is not None:
            notice = {"pk": group.public_key, "sig": sign_removal(seed, member)}
            await self._tell(member, Content.control("group_removed", now_ms(), group=notice))

    async def promote(self, account: str, member: str) -> None:
        parse_session_id(member)
        group = self._live(account)
        invite = await self.api.promote(group, member)
        await self._tell(member, self._invite_content(invite))

    async def rename(self, account: str, name: str) -> None:
        await self.api.rename(self._live(account), name)

    async def delete(self, account: str) -> None:
        group = self._live(account)
        await self.api.delete(group)
        self._record(group, joined=False)
        await self.m.sync()

    # --- members ------------------------------------------------------------------------------

    async def accept(self, account: str) -> Group:
        """Join a group this account was invited to."""
        held = self.m.book.invites.get(account)
        if held is None:
            raise GroupActionError(f"no invitation to group {account} on this device")
        group = Group(Invite.from_json(held.get("invite")))
        await self.api.sync(group)
        self.groups[account] = group
        del self.m.book.invites[account]
        self._record(group, joined=True)
        await self.m.sync()
        return group

    async def leave(self, account: str) -> None:
        group = self._live(account)
        await self.api.leave(group)
        self._record(group, joined=False)
        await self.m.sync()

    async def send_text(
        self,
        account: str,
        text: str,
        *,
        disappear: tuple[str, int] | None = None,
        attachments: tuple[Manifest, ...] = (),
    ) -> bytes:
        group = self._live(account)
        now = now_ms()
        content = Content.text(
            text, now, name=self.m.name, disappear=disappear, attachments=attachments
        )
        ttl = min(TTL_MS, disappear[1]) if disappear and disappear[0] == "after_send" else TTL_MS
        await self.api.send_content(group, content, ttl_ms=ttl)
        self.m._seen[content.id.hex()] = None
        self.m._add(account, Entry.of(content, outgoing=True, sender=self.m.me))
        return content.id

    async def unsend(self, account: str, message_id: bytes) -> None:
        group = self._live(account)
        content = Content.control("unsend", now_ms(), ref=message_id)
        await self.api.send_content(group, content)
        self.m._seen[content.id.hex()] = None
        self.m._drop(account, message_id.hex(), outgoing=True)

    # --- reading ------------------------------------------------------------------------------

    async def fetch(self) -> list[Received]:
        """What is new in every group this device is in; a group whose swarm cannot be read
        now is left for the next fetch."""
        events: list[Received] = []
        for account, group in self.joined().items():
            before = set(group.config.current_members())
            try:
                messages = await self.api.fetch(group)
            except (NetworkError, StoreError, GroupActionError) as exc:
                log.warning("group %s not read: %s", account[:10], type(exc).__name__)
                continue
            if group.state in ("deleted", "removed"):
                self._record(group, joined=False)
                events.append(self._notice(group, f"group_{group.state}"))
                continue
            after = set(group.config.current_members())
            if before:  # not on the first read of a group: every member would be news
                events += [self._notice(group, "member_added", s) for s in sorted(after - before)]
                events += [self._notice(group, "member_removed", s) for s in sorted(before - after)]
            events.extend(e for e in (self._take(group, m) for m in messages) if e is not None)
        return events

    def _notice(self, group: Group, kind: str, member: str | None = None) -> Received:
        """``group_removed``, ``group_deleted`` (this account's), or ``member_added`` and
        ``member_removed`` (``member``, as the config now says)."""
        from veil.client.messaging import Received  # noqa: PLC0415  (a cycle otherwise)

        return Received(
            kind=kind,
            peer=group.account,
            sender=member or self.m.me,
            body=group.name or "",
            sent_ms=now_ms(),
            name=None,
            hash="",
            id=b"",
            group=group.account,
        )

    def _take(self, group: Group, message: GroupMessage) -> Received | None:
        from veil.client.messaging import Received  # noqa: PLC0415

        content = message.content
        if content.id.hex() in self.m._seen:
            return None
        self.m._seen[content.id.hex()] = None
        content = dataclasses.replace(
            content,
            body=printable(content.body),
            name=printable(content.name, one_line=True) if content.name else None,
        )
        outgoing = message.sender == self.m.me
        account = group.account
        if content.kind == "unsend":
            ref = content.ref or b""
            entries = self.m.book.conversations.get(account, [])
            mine = [e for e in entries if e.id == ref.hex() and e.sender == message.sender]
            if not mine:
                self.m._seen[ref.hex()] = None  # should the message itself come later
                return None
            self.m.book.conversations[account] = [e for e in entries if e not in mine]
        elif content.kind == "text":
            self.m._add(account, Entry.of(content, outgoing=outgoing, sender=message.sender))
        return Received(
            kind=content.kind,
            peer=account,
            sender=message.sender,
            body=content.body,
            sent_ms=content.sent_ms,
            name=content.name,
            hash=message.hash,
            id=content.id,
            outgoing=outgoing,
            disappear=content.disappear,
            ref=content.ref,
            group=account,
            attachments=content.attachments,
        )


def _account_of(public_key: object) -> str:
    return (
        "03" + public_key.hex() if isinstance(public_key, bytes) and len(public_key) == 32 else ""
    )
