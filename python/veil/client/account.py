"""What an account keeps: its settings shared by every device, and one device's own book.

**AccountConfig** is what the devices of one account agree on — the display name, contacts (accepted
or blocked Session IDs) and the list of devices with each one's pickup mark. It travels as a
``config`` message (:mod:`veil.protocol.content`) that the account encrypts to itself and stores in
its own swarm, namespace 2, where only the account can store (signed). Every entry carries the time
it was last changed, and two configs merge entry by entry, the later change winning (ties broken by
value, so every device ends with the same result whatever order it merges in): a device may merge
configs written concurrently by others and keep both sides' changes.

```
config = {
    "name":     [name or nil, changed_ms],
    "contacts": {session_id: ["accepted" | "blocked", changed_ms], ...},
    "devices":  {device_id (hex): [device name, linked_ms, picked_ms, changed_ms, removed], ...},
    "groups":   {group account (03…): [joined, changed_ms, invitation or nil], ...},
    "communities": {room key: [joined, changed_ms, join link or nil], ...},
}
```

``groups``: the closed groups the account joined (with the invitation that lets each device read
and write the group's swarm: ``veil.client.groups.Invite``, and for an admin the group's seed) or
left (``joined`` false, no invitation kept). A device reads them from the config, so every device
of the account is in the same groups.

``picked_ms``: the device has fetched every message of namespace 0 with a timestamp up to it. A
message is deleted from the swarm (pickup deletion) only once every device's mark has passed it, so
a device that is away does not lose what the others already read.

**Book** is one device's local state (saved by :class:`veil.client.home.ClientHome`): its device id,
the merged config, the conversations (a group's under the group's account), the retrieve cursors,
seen content ids, the hashes picked up but not yet deletable, the groups it is in (keys, config)
and the group invitations it holds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from veil.errors import InvalidSessionIdError
from veil.protocol.attachments import AttachmentError, Manifest, manifest_from_text, manifest_text
from veil.protocol.content import Content
from veil.protocol.prekeys import HYBRID_PUBLIC_LEN
from veil.session_id import parse_session_id

__all__ = ["CONTACT_STATES", "AccountConfig", "Book", "Device", "Entry"]

CONTACT_STATES = ("accepted", "blocked")


@dataclass(slots=True)
class Device:
    name: str
    linked_ms: int
    picked_ms: int
    changed_ms: int
    removed: bool = False

    def wire(self) -> list[Any]:
        return [self.name, self.linked_ms, self.picked_ms, self.changed_ms, self.removed]

    @classmethod
    def from_wire(cls, value: object) -> Device | None:
        if not isinstance(value, list) or len(value) != 5:
            return None
        name, linked, picked, changed, removed = value
        if (
            not isinstance(name, str)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in (linked, picked))
            or not isinstance(changed, int)
            or not isinstance(removed, bool)
        ):
            return None
        return cls(name[:64], linked, picked, changed, removed)


@dataclass(slots=True)
class AccountConfig:
    name: str | None = None
    name_ms: int = 0
    contacts: dict[str, tuple[str, int]] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    groups: dict[str, tuple[bool, int, dict[str, Any] | None]] = field(default_factory=dict)
    communities: dict[str, tuple[bool, int, str | None]] = field(default_factory=dict)
    prekeys: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    """Each device's current prekey (its public half, when it was made): what the account's
    bundle lists (``veil.protocol.prekeys``)."""

    # --- reading ------------------------------------------------------------------------------

    def contact(self, session_id: str) -> str | None:
        entry = self.contacts.get(session_id)
        return entry[0] if entry else None

    def live_devices(self) -> dict[str, Device]:
        return {i: d for i, d in self.devices.items() if not d.removed}

    # --- changing -----------------------------------------------------------------------------

    def set_name(self, name: str | None, now_ms: int) -> None:
        self.name, self.name_ms = name, max(now_ms, self.name_ms + 1)

    def set_contact(self, session_id: str, state: str, now_ms: int) -> None:
        if state not in CONTACT_STATES:
            raise ValueError(f"unknown contact state {state!r}")
        previous = self.contacts.get(session_id, ("", 0))[1]
        self.contacts[session_id] = (state, max(now_ms, previous + 1))

    def set_group(
        self, account: str, joined: bool, invite: dict[str, Any] | None, now_ms: int
    ) -> None:
        previous = self.groups.get(account, (False, 0, None))[1]
        self.groups[account] = (joined, max(now_ms, previous + 1), invite if joined else None)

    def set_community(self, room: str, link: str | None, now_ms: int) -> None:
        """Joined (``link``: the room's join link) or left (None)."""
        previous = self.communities.get(room, (False, 0, None))[1]
        self.communities[room] = (link is not None, max(now_ms, previous + 1), link)

    def set_prekey(self, device_id: str, public: bytes, created_ms: int) -> None:
        self.prekeys[device_id] = (public, created_ms)

    def set_device(self, device_id: str, device: Device) -> None:
        previous = self.devices.get(device_id)
        if previous is not None:
            device.changed_ms = max(device.changed_ms, previous.changed_ms + 1)
        self.devices[device_id] = device

    # --- merging ------------------------------------------------------------------------------

    def merge(self, other: AccountConfig) -> bool:
        """Take every entry of ``other`` changed later than ours; True if anything changed."""
        changed = False
        # A change wins if it is later; equal times are broken by the value, the same everywhere.
        if (other.name_ms, str(other.name)) > (self.name_ms, str(self.name)):
            self.name, self.name_ms = other.name, other.name_ms
            changed = True
        for sid, (state, ms) in other.contacts.items():
            mine = self.contacts.get(sid)
            if mine is None or (ms, state) > (mine[1], mine[0]):
                self.contacts[sid] = (state, ms)
                changed = True
        for account, entry in other.groups.items():
            ours = self.groups.get(account)
            if ours is None or (entry[1], repr(entry)) > (ours[1], repr(ours)):
                self.groups[account] = entry
                changed = True
        for room, joined in other.communities.items():
            held = self.communities.get(room)
            if held is None or (joined[1], repr(joined)) > (held[1], repr(held)):
                self.communities[room] = joined
                changed = True
        for device_id, device in other.devices.items():
            current = self.devices.get(device_id)
            if current is None or (device.changed_ms, repr(device.wire())) > (
                current.changed_ms,
                repr(current.wire()),
            ):
                self.devices[device_id] = Device(*device.wire())
                changed = True
        for device_id, (public, created) in other.prekeys.items():
            held_key = self.prekeys.get(device_id)
            if held_key is None or (created, public) > (held_key[1], held_key[0]):
                self.prekeys[device_id] = (public, created)
                changed = True
        return changed

    # --- the wire -----------------------------------------------------------------------------

    def wire(self) -> dict[str, Any]:
        return {
            "name": [self.name, self.name_ms],
            "contacts": {sid: [state, ms] for sid, (state, ms) in sorted(self.contacts.items())},
            "devices": {i: d.wire() for i, d in sorted(self.devices.items())},
            "groups": {a: list(entry) for a, entry in sorted(self.groups.items())},
            "communities": {r: list(entry) for r, entry in sorted(self.communities.items())},
            "prekeys": {
                d: [base64.b64encode(pk).decode("ascii"), ms]
                for d, (pk, ms) in sorted(self.prekeys.items())
            },
        }

    @classmethod
    def from_wire(cls, value: object) -> AccountConfig:
        """A config from its wire form; malformed entries are skipped, never raised."""
        config = cls()
        if not isinstance(value, dict):
            return config
        name = value.get("name")
        if (
            isinstance(name, list)
            and len(name) == 2
            and (name[0] is None or isinstance(name[0], str))
            and isinstance(name[1], int)
        ):
            config.name, config.name_ms = (name[0][:64] if name[0] else None), name[1]
        contacts = value.get("contacts")
        for sid, entry in contacts.items() if isinstance(contacts, dict) else ():
            try:
                parse_session_id(sid)
            except (InvalidSessionIdError, TypeError):
                continue
            if (
                isinstance(entry, list)
                and len(entry) == 2
                and entry[0] in CONTACT_STATES
                and isinstance(entry[1], int)
            ):
                config.contacts[sid] = (entry[0], entry[1])
        devices = value.get("devices")
        for device_id, entry in devices.items() if isinstance(devices, dict) else ():
            device = Device.from_wire(entry)
            if isinstance(device_id, str) and len(device_id) == 16 and device is not None:
                config.devices[device_id] = device
        groups = value.get("groups")
        for account, entry in groups.items() if isinstance(groups, dict) else ():
            if (
                _is_group_account(account)
                and isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[0], bool)
                and isinstance(entry[1], int)
                and (entry[2] is None or isinstance(entry[2], dict))
            ):
                config.groups[account] = (entry[0], entry[1], entry[2] if entry[0] else None)
        communities = value.get("communities")
        for room, entry in communities.items() if isinstance(communities, dict) else ():
            if (
                isinstance(room, str)
                and len(room) <= 200
                and isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[0], bool)
                and isinstance(entry[1], int)
                and (entry[2] is None or (isinstance(entry[2], str) and len(entry[2]) <= 1000))
                and entry[0] == (entry[2] is not None)
            ):
                config.communities[room] = (entry[0], entry[1], entry[2])
        config.prekeys = _prekeys_from_wire(value.get("prekeys"))
        return config


def _prekeys_from_wire(prekeys: object) -> dict[str, tuple[bytes, int]]:
    found = {}
    for device_id, entry in prekeys.items() if isinstance(prekeys, dict) else ():
        public = _prekey_public(entry)
        if isinstance(device_id, str) and len(device_id) == 16 and public is not None:
            found[device_id] = (public, entry[1])
    return found


def _prekey_public(entry: object) -> bytes | None:
    """The public key of a ``prekeys`` entry ``[base64, created_ms]``, if it is one."""
    if (
        not isinstance(entry, list)
        or len(entry) != 2
        or not isinstance(entry[0], str)
        or len(entry[0]) > 2 * HYBRID_PUBLIC_LEN
        or not isinstance(entry[1], int)
        or isinstance(entry[1], bool)
    ):
        return None
    try:
        public = base64.b64decode(entry[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    return public if len(public) == HYBRID_PUBLIC_LEN else None


def _is_group_account(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 66
        and value.startswith("03")
        and all(c in "0123456789abcdef" for c in value)
    )


@dataclass(slots=True)
class Entry:
    """One message of a conversation, as a device keeps it."""

    id: str
    outgoing: bool
    body: str
    sent_ms: int
    name: str | None = None
    disappear: tuple[str, int] | None = None
    read_ms: int | None = None
    expires_ms: int | None = None
    sender: str | None = None
    """In a group: who wrote it (a Session ID); in a community room its blinded ID. In a 1:1
    conversation: None (the peer)."""
    reply_to: str | None = None
    """In a community room: the post it answers."""
    reactions: dict[str, int] | None = None
    """In a community room: emoji → how many reacted so."""
    attachments: list[str] | None = None
    """The manifests of the attachments it carries (``manifest_text``), if any."""
    unprotected: bool = False
    """Received without forward secrecy from a peer pinned to v2 (``veil.client.protection``)."""

    def manifests(self) -> list[Manifest]:
        """The attachments it carries; one that does not read back (a damaged book) is left
        out."""
        kept = []
        for text in self.attachments or []:
            with contextlib.suppress(AttachmentError):
                kept.append(manifest_from_text(text))
        return kept

    @classmethod
    def of(cls, content: Content, *, outgoing: bool, sender: str | None = None) -> Entry:
        """The entry for a text as a device keeps it: a message of our own is read, and its
        timer (if it disappears) runs from its sending; so does another's ``after_send`` timer,
        while an ``after_read`` one starts when it is shown (``Messenger.mark_read``)."""
        dis = content.disappear
        timed = dis is not None and (outgoing or dis[0] == "after_send")
        return cls(
            id=content.id.hex(),
            outgoing=outgoing,
            body=content.body,
            sent_ms=content.sent_ms,
            name=content.name,
            disappear=dis,
            read_ms=content.sent_ms if outgoing else None,
            expires_ms=content.sent_ms + dis[1] if dis is not None and timed else None,
            sender=sender,
            attachments=[manifest_text(m) for m in content.attachments] or None,
        )

    def wire(self) -> dict[str, Any]:
        return {
            "from": self.sender,
            "id": self.id,
            "out": self.outgoing,
            "body": self.body,
            "sent_ms": self.sent_ms,
            "name": self.name,
            "dis": list(self.disappear) if self.disappear else None,
            "read_ms": self.read_ms,
            "expires_ms": self.expires_ms,
            "re": self.reply_to,
            "rx": self.reactions,
            "att": self.attachments,
            "v1": self.unprotected or None,
        }

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> Entry:
        dis = value.get("dis")
        return cls(
            id=str(value["id"]),
            outgoing=bool(value["out"]),
            body=str(value["body"]),
            sent_ms=int(value["sent_ms"]),
            name=value.get("name"),
            disappear=(str(dis[0]), int(dis[1])) if dis else None,
            read_ms=value.get("read_ms"),
            expires_ms=value.get("expires_ms"),
            sender=value.get("from"),
            reply_to=value.get("re"),
            reactions=value.get("rx"),
            attachments=[str(a) for a in value.get("att") or []] or None,
            unprotected=bool(value.get("v1")),
        )


@dataclass(slots=True)
class Book:
    """One device's state. ``from_json(to_json())`` gives it back whole."""

    device_id: str = field(default_factory=lambda: secrets.token_hex(8))
    device_name: str = field(default_factory=lambda: socket.gethostname()[:64] or "device")
    config: AccountConfig = field(default_factory=AccountConfig)
    config_hashes: dict[str, int] = field(default_factory=dict)  # namespace-2 hash -> timestamp
    config_dirty: bool = False  # changed here, not stored in the swarm yet
    received_to_ms: int = 0  # start of the latest fetch that picked up something from namespace 0
    conversations: dict[str, list[Entry]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # picked up, not yet deleted: hash -> ts
    cursors: dict[str, Any] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The groups this device is in (``veil.client.groups.Group.to_json``), by account."""
    invites: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Invitations not accepted yet, by group account: ``{"invite", "from", "sent_ms"}``."""
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Community rooms this device reads, by room key: ``{"link", "since"}``."""
    prekeys: list[dict[str, Any]] = field(default_factory=list)
    """This device's prekeys, secrets included (``veil.client.prekeys.PrekeyRing``)."""
    bundle_stored_ms: int = 0
    """When this device last stored the account's prekey bundle."""
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Peers' prekey bundles as last read: ``{"data": base64, "read_ms"}``, by Session ID."""
    pinned: dict[str, int] = field(default_factory=dict)
    """Peers that have shown v2 (a bundle or a v2 message), and since when."""

    def to_json(self) -> dict[str, Any]:
        return {
            "device": {"id": self.device_id, "name": self.device_name},
            "config": self.config.wire(),
            "config_hashes": self.config_hashes,
            "config_dirty": self.config_dirty,
            "received_to_ms": self.received_to_ms,
            "conversations": {
                sid: [e.wire() for e in entries] for sid, entries in self.conversations.items()
            },
            "pending": self.pending,
            "cursors": self.cursors,
            "seen": self.seen,
            "groups": self.groups,
            "invites": self.invites,
            "rooms": self.rooms,
            "prekeys": self.prekeys,
            "bundle_stored_ms": self.bundle_stored_ms,
            "bundles": self.bundles,
            "pinned": self.pinned,
        }

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> Book:
        book = cls()
        device = state.get("device")
        if isinstance(device, dict) and isinstance(device.get("id"), str):
            book.device_id = device["id"]
            book.device_name = str(device.get("name") or book.device_name)
        book.config = AccountConfig.from_wire(state.get("config"))
        if state.get("name") and book.config.name is None:  # state written before config existed
            book.config.name = str(state["name"])
        book.config_hashes = dict(state.get("config_hashes") or {})
        book.config_dirty = bool(state.get("config_dirty"))
        book.received_to_ms = int(state.get("received_to_ms") or 0)
        conversations = state.get("conversations") or {}
        book.conversations = {
            sid: [Entry.from_wire(e) for e in entries] for sid, entries in conversations.items()
        }
        book.pending = {str(h): int(t) for h, t in (state.get("pending") or {}).items()}
        book.cursors = dict(state.get("cursors") or {})
        book.seen = [str(s) for s in state.get("seen") or []]
        book.groups = dict(state.get("groups") or {})
        book.invites = dict(state.get("invites") or {})
        book.rooms = dict(state.get("rooms") or {})
        book.prekeys = list(state.get("prekeys") or [])
        book.bundle_stored_ms = int(state.get("bundle_stored_ms") or 0)
        book.bundles = dict(state.get("bundles") or {})
        book.pinned = {str(p): int(t) for p, t in (state.get("pinned") or {}).items()}
        return book
