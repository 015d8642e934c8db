"""Closed groups on the client: create a group, hand out invitations, send, read, add and remove
members (``docs/messenger.md``, "Closed groups"; formats in :mod:`veil.protocol.groups`).

A group lives in its own swarm (its ``03`` account). What each party holds:

- an **admin** holds the group's seed: it signs keys messages and the config, stores them as the
  account itself, and issues and revokes the members' access;
- a **member** holds the group's keys (from keys messages sealed to its Session ID) and a
  **subaccount** of the group's account: a key of its own for the group, and the token the group
  key signed for it (read and write), with which it retrieves and stores in the group's swarm.

A member's subaccount key is derived from the group's seed and the member's Session ID
(``BLAKE2b-256(key = group seed, "veil-group-member" ‖ session id)``), so that any admin can
recompute, and revoke, any member's token; the member receives it in its invitation (which travels
end to end encrypted, as a 1:1 message would). Every membership change makes a new generation of
the group key, sealed to the members of the new config only: a removed member never gets it, and a
new member reads nothing sent before it joined. A removal also revokes the removed member's token on
the group's swarm, so it cannot even retrieve the ciphertexts any more.

Two admins may change the group at once: configs merge entry by entry, and the config records the
members the latest rekey was sealed to (``keyed``). An admin who syncs and finds the members
changed since (the other admin's change, a member who left) rekeys for the members as they are;
two keys made for the same generation at once are both kept, and each opens what it sealed.

Keys are kept while messages sealed with them may still be in the swarm: a generation is dropped
:data:`KEY_RETENTION_MS` after the next one was made (the swarm's TTL), the newest never.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from veil import _core, clock
from veil.client.network import NetworkError
from veil.client.swarm import StoreError, SwarmClient
from veil.errors import InvalidInputError, VeilError
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.content import Content, ContentError, decode_content, encode_content
from veil.protocol.groups import (
    MAX_MEMBERS,
    MAX_TEXT,
    NS_CONFIG,
    NS_KEYS,
    NS_MESSAGES,
    GroupConfig,
    GroupError,
    GroupKey,
    group_account,
    open_config,
    open_keys,
    open_message,
    seal_config,
    seal_keys,
    seal_message,
)
from veil.session_id import parse_session_id

__all__ = [
    "KEY_RETENTION_MS",
    "Group",
    "GroupActionError",
    "GroupMessage",
    "Groups",
    "Invite",
    "member_subaccount",
]

TTL_MS = 14 * 24 * 3600 * 1000
"""How long a group's messages, keys and config are kept in its swarm."""
KEY_RETENTION_MS = TTL_MS
"""How long a generation's key is kept after the next generation was made."""
log = logging.getLogger("veil.client")

MEMBER_FLAGS = storage_rpc.SUBACCOUNT_READ | storage_rpc.SUBACCOUNT_WRITE
SEEN_KEPT = 5_000
STATES = ("joined", "left", "removed", "deleted")


class GroupActionError(VeilError):
    """A group action this device may not take (not an admin, not a member, too many members)."""


def member_subaccount(group_seed: bytes, member: Identity | str) -> tuple[bytes, bytes, bytes]:
    """(subaccount seed, token, the group key's signature of the token) of a member."""
    session_id = member if isinstance(member, str) else member.session_id
    parse_session_id(session_id)
    seed = _core.blake2b(b"veil-group-member" + session_id.encode(), 32, group_seed)
    token = storage_rpc.subaccount_token(0x03, MEMBER_FLAGS, _core.ed25519_public_key(seed))
    return seed, token, _core.ed25519_sign(group_seed, token)


@dataclass(frozen=True, slots=True)
class Invite:
    """What a member needs to join: the group's key, its subaccount, and for an admin the seed.

    It travels in a ``group_invite`` message (:meth:`wire`, msgpack) and is kept in the account's
    config and the device's book (:meth:`to_json`). :meth:`from_wire` and :meth:`from_json` take
    only an invitation that proves itself: a token for the subaccount key it comes with, signed by
    the group key, and an admin seed (if any) that is the group's."""

    group: bytes
    name: str | None
    subaccount_seed: bytes
    token: bytes
    token_signature: bytes
    admin_seed: bytes | None = None

    def __repr__(self) -> str:  # never the seeds
        return f"Invite({group_account(self.group)})"

    @property
    def account(self) -> str:
        return group_account(self.group)

    def wire(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "pk": self.group,
            "name": self.name,
            "sub": self.subaccount_seed,
            "token": self.token,
            "tsig": self.token_signature,
        }
        if self.admin_seed is not None:
            fields["admin"] = self.admin_seed
        return fields

    def to_json(self) -> dict[str, Any]:
        return {k: v.hex() if isinstance(v, bytes) else v for k, v in self.wire().items()}

    @classmethod
    def from_wire(cls, value: object) -> Invite:
        """An invitation from a message; :class:`GroupError` unless it proves itself."""
        if not isinstance(value, dict):
            raise GroupError("not an invitation to a group")
        pk, sub, token, tsig = (value.get(k) for k in ("pk", "sub", "token", "tsig"))
        name, admin = value.get("name"), value.get("admin")
        if (
            not isinstance(pk, bytes)
            or not isinstance(sub, bytes)
            or not isinstance(token, bytes)
            or not isinstance(tsig, bytes)
            or (len(pk), len(sub), len(token), len(tsig))
            != (32, 32, storage_rpc.SUBACCOUNT_TOKEN_LEN, 64)
            or not (name is None or (isinstance(name, str) and len(name) <= MAX_TEXT))
            or not (admin is None or _is_bytes(admin, 32))
        ):
            raise GroupError("not an invitation to a group")
        expected = storage_rpc.subaccount_token(0x03, MEMBER_FLAGS, _core.ed25519_public_key(sub))
        try:
            signed = _core.ed25519_verify(pk, token, tsig)
        except InvalidInputError:
            signed = False
        if token != expected or not signed:
            raise GroupError("not an invitation to a group")
        if isinstance(admin, bytes) and _core.ed25519_public_key(admin) != pk:
            raise GroupError("not an invitation to a group")
        return cls(pk, name, sub, token, tsig, admin if isinstance(admin, bytes) else None)

    @classmethod
    def from_json(cls, value: object) -> Invite:
        if not isinstance(value, dict):
            raise GroupError("not an invitation to a group")
        try:
            raw = {
                k: bytes.fromhex(v) if k != "name" and isinstance(v, str) else v
                for k, v in value.items()
            }
        except ValueError:
            raise GroupError("not an invitation to a group") from None
        return cls.from_wire(raw)


def _is_bytes(value: object, length: int) -> bool:
    return isinstance(value, bytes) and len(value) == length


@dataclass(slots=True)
class Group:
    """One device's view of a group: the invitation it joined with, the keys it opened (by
    generation; the first of a generation is the one it sends with), the merged config, the
    message hashes read, and whether it is still in the group."""

    invite: Invite
    keys: dict[int, list[GroupKey]] = field(default_factory=dict)
    config: GroupConfig = field(default_factory=GroupConfig)
    seen: dict[str, None] = field(default_factory=dict)
    state: str = "joined"
    config_hashes: set[str] = field(default_factory=set)
    config_unread: bool = False
    """A config read last time did not open: the next sync reads them all again."""
    leaving: set[str] = field(default_factory=set)
    """Members whose ``leave`` was read and who are still in the config (for an admin to
    remove)."""
    _subaccount: storage_rpc.Subaccount | None = None

    @property
    def public_key(self) -> bytes:
        return self.invite.group

    @property
    def seed(self) -> bytes | None:
        return self.invite.admin_seed

    @property
    def account(self) -> str:
        return group_account(self.public_key)

    @property
    def subaccount(self) -> storage_rpc.Subaccount:
        if self._subaccount is None:
            self._subaccount = storage_rpc.Subaccount(
                self.account,
                self.invite.token,
                self.invite.token_signature,
                Identity(self.invite.subaccount_seed),
            )
        return self._subaccount

    @property
    def is_admin(self) -> bool:
        return self.seed is not None

    @property
    def name(self) -> str | None:
        name = self.config.name[0]
        return name if isinstance(name, str) else self.invite.name

    @property
    def generation(self) -> int:
        return max(self.keys, default=0)

    def current_key(self) -> GroupKey | None:
        held = self.keys.get(self.generation)
        return held[0] if held else None

    def add_key(self, key: GroupKey) -> bool:
        """Keep a key opened or made (the first of its generation, by time then bytes, is the
        one sent with, so that members who hold both choose the same); whether it is new."""
        held = self.keys.setdefault(key.generation, [])
        if any(k.key == key.key for k in held):
            return False
        held.append(key)
        held.sort(key=lambda k: (k.created_ms, k.key), reverse=True)
        return True

    def drop_old_keys(self, now_ms: int) -> None:
        """Forget generations whose successor was made more than :data:`KEY_RETENTION_MS` ago."""
        generations = sorted(self.keys)
        for older, newer in itertools.pairwise(generations):
            made = min(k.created_ms for k in self.keys[newer])
            if made and made < now_ms - KEY_RETENTION_MS:
                del self.keys[older]

    def mark_seen(self, digest: str) -> None:
        self.seen[digest] = None
        while len(self.seen) > SEEN_KEPT:
            del self.seen[next(iter(self.seen))]

    def to_json(self) -> dict[str, Any]:
        return {
            "invite": self.invite.to_json(),
            "keys": {
                str(gen): [[k.key.hex(), k.created_ms] for k in keys]
                for gen, keys in self.keys.items()
            },
            "config": self.config.wire(),
            "seen": list(self.seen),
            "state": self.state,
            "config_hashes": sorted(self.config_hashes),
            "leaving": sorted(self.leaving),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Group:
        group = cls(Invite.from_json(value.get("invite")))
        for gen, keys in (value.get("keys") or {}).items():
            for key, created in keys:
                group.add_key(GroupKey(int(gen), bytes.fromhex(key), int(created)))
        group.config = GroupConfig.from_wire(value.get("config"))
        group.seen = dict.fromkeys(str(h) for h in value.get("seen") or [])
        state = value.get("state")
        group.state = state if state in STATES else "joined"
        group.config_hashes = {str(h) for h in value.get("config_hashes") or []}
        group.leaving = {str(m) for m in value.get("leaving") or []}
        return group

    def __repr__(self) -> str:
        return f"Group({self.account}, generation {self.generation})"


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A message read from a group: its sender's Session ID, its content, the hash it is stored
    under and the generation it was sealed with."""

    sender: str
    content: Content
    hash: str
    generation: int

    @property
    def text(self) -> str:
        return self.content.body


class Groups:
    """Closed groups for one identity, through a :class:`SwarmClient`."""

    def __init__(self, identity: Identity, swarm: SwarmClient) -> None:
        self.identity = identity
        self.swarm = swarm

    # --- admins -------------------------------------------------------------------------------

    async def create(self, name: str, members: list[str]) -> tuple[Group, dict[str, Invite]]:
        """A new group with this identity as its admin and ``members`` (Session IDs); the
        invitations to hand to them."""
        seed = os.urandom(32)
        me = self.identity.session_id
        sub_seed, token, token_sig = member_subaccount(seed, me)
        group = Group(
            Invite(_core.ed25519_public_key(seed), name, sub_seed, token, token_sig, seed)
        )
        now = clock.now_ms()
        group.config.set_name(name, now)
        group.config.set_member(me, "admin", now)
        for member in members:
            if member != me:
                group.config.set_member(member, "member", now)
        await self._rekey(group)
        invites = {m: self.invite_for(group, m) for m in members if m != me}
        return group, invites

    async def add(self, group: Group, member: str, *, history: bool = False) -> Invite:
        """Add a member (admins only): a new generation, which it can read from on; with
        ``history``, also the keys of the generations still kept (what the swarm still holds of
        the group's messages)."""
        seed = self._admin(group)
        now = clock.now_ms()
        group.config.set_member(member, "member", now)
        if history:
            recipient = [parse_session_id(member)]
            for generation in sorted(group.keys):
                for key in group.keys[generation]:
                    sealed = seal_keys(seed, key, recipient, key.created_ms or now)
                    await self._store_as_group(group, sealed, NS_KEYS)
        await self._rekey(group)
        return self.invite_for(group, member)

    async def remove(self, group: Group, member: str) -> None:
        """Remove a member (admins only): a new generation sealed to the others, and its access
        to the group's swarm revoked."""
        seed = self._admin(group)
        entry = group.config.members.get(member)
        role = entry[0] if entry else "member"
        group.config.set_member(member, role, clock.now_ms(), removed=True)
        await self._rekey(group)
        _, token, _ = member_subaccount(seed, member)
        params = storage_rpc.revocation_params(storage_rpc.KeySigner(seed), [token])
        await self.swarm.swarm_write(bytes.fromhex(group.account), "revoke_subaccount", params)

    async def promote(self, group: Group, member: str) -> Invite:
        """Make a member an admin (admins only): the config says so, and the invitation returned
        carries the group's seed (hand it to the member, end to end encrypted)."""
        self._admin(group)
        if member not in group.config.current_members():
            raise GroupActionError("only a member of the group can be made an admin")
        group.config.set_member(member, "admin", clock.now_ms())
        await self._store_config(group)
        return self.invite_for(group, member, admin=True)

    async def rename(self, group: Group, name: str) -> None:
        self._admin(group)
        group.config.set_name(name, clock.now_ms())
        await self._store_config(group)

    async def delete(self, group: Group) -> None:
        """Delete the group for everyone (admins only): the config says so, and its messages
        are deleted from the swarm."""
        seed = self._admin(group)
        group.config.mark_deleted(clock.now_ms())
        await self._store_config(group)
        params = storage_rpc.delete_all_params(storage_rpc.KeySigner(seed), NS_MESSAGES)
        await self.swarm.swarm_write(bytes.fromhex(group.account), "delete_all", params)
        group.state = "deleted"

    def invite_for(self, group: Group, member: str, *, admin: bool = False) -> Invite:
        seed = self._admin(group)
        sub_seed, token, token_sig = member_subaccount(seed, member)
        return Invite(
            group.public_key, group.name, sub_seed, token, token_sig, seed if admin else None
        )

    def _admin(self, group: Group) -> bytes:
        if group.seed is None:
            raise GroupActionError("only an admin of the group may do that")
        if group.state != "joined":
            raise GroupActionError(f"this account has {group.state} the group")
        return group.seed

    async def _store_as_group(self, group: Group, data: bytes, namespace: int) -> str:
        signer = storage_rpc.KeySigner(self._admin(group))
        answer = await self.swarm.store(
            group.account, data, ttl_ms=TTL_MS, namespace=namespace, identity=signer
        )
        return str(answer.get("hash", ""))

    async def _rekey(self, group: Group) -> None:
        """A new generation for the members of the config, and the config, stored."""
        seed = self._admin(group)
        members = group.config.current_members()
        if len(members) > MAX_MEMBERS:
            raise GroupActionError(f"a group has at most {MAX_MEMBERS} members")
        now = clock.now_ms()
        key = GroupKey(group.generation + 1, os.urandom(32), now)
        recipients = [parse_session_id(sid) for sid in members]
        await self._store_as_group(group, seal_keys(seed, key, recipients, now), NS_KEYS)
        group.add_key(key)
        group.config.set_keyed(key.generation, now)
        await self._store_config(group)

    async def _store_config(self, group: Group) -> None:
        """Store the config sealed with the current key, then delete the configs it replaces
        (if that fails, they stay until their TTL: every member merges them all)."""
        key = group.current_key()
        seed = self._admin(group)
        if key is None:
            raise GroupActionError("no key of the group is held here")
        digest = await self._store_as_group(group, seal_config(seed, key, group.config), NS_CONFIG)
        replaced = sorted(group.config_hashes - {digest})
        group.config_hashes = {digest}
        if replaced:
            try:
                await self.swarm.delete(storage_rpc.KeySigner(seed), replaced)
            except StoreError:
                group.config_hashes.update(replaced)

    # --- members ------------------------------------------------------------------------------

    def join(self, invite: Invite) -> Group:
        """This device's view of a group it was invited to (nothing is read yet: :meth:`sync`)."""
        return Group(invite)

    async def sync(self, group: Group) -> None:
        """Read the group's keys messages and config: the keys sealed to this identity, and the
        config merged (configs and keys not signed by the group are ignored). An admin then
        rekeys if the members changed since the latest rekey."""
        await self._read(group, messages=False)

    async def _read(self, group: Group, *, messages: bool) -> list[dict[str, Any]]:
        """:meth:`sync`, and with ``messages`` the new messages read in the same round (the three
        namespaces are read at once; keys are taken first, so a message or config sealed with a
        key read in the same round opens). Whole the first time (or after the group was joined
        again), then only what is new: the keys held and the merged config are kept in the
        group."""
        whole_config = not group.config.members or group.config_unread
        group.config_unread = False
        reads = [
            self.swarm.retrieve(group.subaccount, namespace=NS_KEYS, from_start=not group.keys),
            self.swarm.retrieve(group.subaccount, namespace=NS_CONFIG, from_start=whole_config),
        ]
        if messages:
            reads.append(self.swarm.retrieve(group.subaccount, namespace=NS_MESSAGES))
        keys, configs, *rest = await asyncio.gather(*reads)
        for stored in keys:
            try:
                opened = open_keys(group.public_key, self.identity.x25519_secret_key, _data(stored))
            except (GroupError, InvalidInputError):
                continue
            if opened.key is not None:
                group.add_key(opened.key)
        for stored in configs:
            data = b""
            try:
                data = _data(stored)
                _, config = open_config(group.public_key, group.keys, data)
            except (GroupError, InvalidInputError):
                # Sealed with a generation newer than any key held (its keys message missed by
                # this read)? Then read them all again next time rather than pass it by.
                newer = int.from_bytes(data[1:9], "big") > group.generation
                group.config_unread = group.config_unread or (len(data) > 9 and newer)
                continue
            group.config_hashes.add(str(stored["hash"]))
            group.config.merge(config)
        group.drop_old_keys(clock.now_ms())
        mine = group.config.members.get(self.identity.session_id)
        if group.config.deleted[0]:
            group.state = "deleted"
        elif mine is not None and mine[1] and group.state == "joined":
            group.state = "removed"  # (a config that does not list us yet is no removal)
        elif (
            group.is_admin
            and group.state == "joined"
            and group.keys
            and group.config.needs_rekey(group.generation)
        ):
            await self._rekey(group)
        return rest[0] if rest else []

    async def send(
        self,
        group: Group,
        text: str,
        *,
        name: str | None = None,
        disappear: tuple[str, int] | None = None,
    ) -> str:
        """Send ``text`` to the group under its latest generation; the stored hash."""
        content = Content.text(text, clock.now_ms(), name=name, disappear=disappear)
        ttl = min(TTL_MS, disappear[1]) if disappear and disappear[0] == "after_send" else TTL_MS
        return await self.send_content(group, content, ttl_ms=ttl)

    async def send_content(self, group: Group, content: Content, *, ttl_ms: int = TTL_MS) -> str:
        """Send any content (a text, an unsend, a leave) to the group; the stored hash."""
        if group.state != "joined":
            raise GroupActionError(f"this account has {group.state} the group")
        if not group.keys:
            await self.sync(group)
        key = group.current_key()
        if key is None:
            raise GroupActionError("no keys message of the group is sealed to this member")
        sealed = seal_message(group.public_key, key, self.identity.seed, encode_content(content))
        try:
            answer = await self.swarm.store(
                group.account,
                sealed,
                ttl_ms=ttl_ms,
                namespace=NS_MESSAGES,
                identity=group.subaccount,
            )
        except StoreError as exc:
            raise GroupActionError(f"the group's swarm did not take the message: {exc}") from exc
        return str(answer["hash"])

    async def leave(self, group: Group) -> None:
        """Leave the group: the admins are told (a ``leave`` message; the next admin to read it
        removes this member and rekeys) and this device stops reading it."""
        await self.send_content(group, Content.control("leave", clock.now_ms()))
        group.state = "left"

    async def fetch(self, group: Group) -> list[GroupMessage]:
        """The group's new messages this device can read, oldest first, from members of the
        config (others, and what does not open, are dropped). An admin removes a member whose
        ``leave`` it reads."""
        read = await self._read(group, messages=True)
        if group.state != "joined":
            return []
        members = group.config.members
        out = []
        for stored in read:
            digest = str(stored["hash"])
            if digest in group.seen:
                continue
            try:
                opened = open_message(group.public_key, group.keys, _data(stored))
                content = decode_content(opened.padded_content)
            except (GroupError, InvalidInputError, ContentError):
                continue
            if opened.sender not in members or content.kind not in ("text", "unsend", "leave"):
                continue
            group.mark_seen(digest)
            out.append(GroupMessage(opened.sender, content, digest, opened.generation))
        group.leaving.update(m.sender for m in out if m.content.kind == "leave")
        await self._remove_leavers(group)
        return out

    async def _remove_leavers(self, group: Group) -> None:
        """An admin removes the members whose ``leave`` it read; one that fails is tried again
        at the next fetch (the messages read are returned whatever happens here)."""
        for member in sorted(group.leaving):
            if member not in group.config.current_members():
                group.leaving.discard(member)
            elif group.is_admin:
                try:
                    await self.remove(group, member)
                except (StoreError, NetworkError, GroupActionError) as exc:
                    log.warning("a leaving member not removed yet: %s", type(exc).__name__)
                    return
                group.leaving.discard(member)


def _data(stored: dict[str, object]) -> bytes:
    data = stored.get("data")
    if not isinstance(data, str):
        raise InvalidInputError("no data")
    return base64.b64decode(data, validate=True)
