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
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from veil import _core, clock
from veil.client.swarm import StoreError, SwarmClient
from veil.errors import InvalidInputError, VeilError
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.content import pad, unpad
from veil.protocol.groups import (
    MAX_MEMBERS,
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

__all__ = ["Group", "GroupActionError", "GroupMessage", "Groups", "Invite", "member_subaccount"]

TTL_MS = 14 * 24 * 3600 * 1000
"""How long a group's messages, keys and config are kept in its swarm."""
MEMBER_FLAGS = storage_rpc.SUBACCOUNT_READ | storage_rpc.SUBACCOUNT_WRITE


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
    """What a member needs to join: the group's key, its subaccount, and for an admin the seed."""

    group: bytes
    name: str | None
    subaccount_seed: bytes
    token: bytes
    token_signature: bytes
    admin_seed: bytes | None = None

    def __repr__(self) -> str:  # never the seeds
        return f"Invite({group_account(self.group)})"


@dataclass(slots=True)
class Group:
    """One device's view of a group."""

    public_key: bytes
    subaccount: storage_rpc.Subaccount
    seed: bytes | None = None
    keys: dict[int, GroupKey] = field(default_factory=dict)
    config: GroupConfig = field(default_factory=GroupConfig)
    seen: set[str] = field(default_factory=set)

    @property
    def account(self) -> str:
        return group_account(self.public_key)

    @property
    def is_admin(self) -> bool:
        return self.seed is not None

    @property
    def generation(self) -> int:
        return max(self.keys, default=0)

    def __repr__(self) -> str:
        return f"Group({self.account}, generation {self.generation})"


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A message read from a group: its sender's Session ID, its text and the hash it is stored
    under."""

    sender: str
    text: str
    hash: str
    generation: int


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
        group = self._group(seed, self.identity.session_id)
        now = clock.now_ms()
        group.config.set_name(name, now)
        group.config.set_member(self.identity.session_id, "admin", now)
        for member in members:
            group.config.set_member(member, "member", now)
        await self._rekey(group)
        invites = {m: self._invite(group, m) for m in members}
        return group, invites

    async def add(self, group: Group, member: str) -> Invite:
        """Add a member (admins only): a new generation, which it can read from on."""
        self._admin(group)
        group.config.set_member(member, "member", clock.now_ms())
        await self._rekey(group)
        return self._invite(group, member)

    async def remove(self, group: Group, member: str) -> None:
        """Remove a member (admins only): a new generation sealed to the others, and its access
        to the group's swarm revoked."""
        seed = self._admin(group)
        group.config.set_member(member, "member", clock.now_ms(), removed=True)
        await self._rekey(group)
        _, token, _ = member_subaccount(seed, member)
        params = storage_rpc.revocation_params(storage_rpc.KeySigner(seed), [token])
        await self.swarm.swarm_write(bytes.fromhex(group.account), "revoke_subaccount", params)

    def _admin(self, group: Group) -> bytes:
        if group.seed is None:
            raise GroupActionError("only an admin of the group may do that")
        return group.seed

    def _group(self, seed: bytes, session_id: str) -> Group:
        public = _core.ed25519_public_key(seed)
        sub_seed, token, token_sig = member_subaccount(seed, session_id)
        subaccount = storage_rpc.Subaccount(
            group_account(public), token, token_sig, Identity(sub_seed)
        )
        return Group(public, subaccount, seed)

    def _invite(self, group: Group, member: str) -> Invite:
        seed = self._admin(group)
        sub_seed, token, token_sig = member_subaccount(seed, member)
        return Invite(group.public_key, group.config.name[0], sub_seed, token, token_sig)

    async def _rekey(self, group: Group) -> None:
        """A new generation for the members of the config, and the config, stored."""
        seed = self._admin(group)
        members = group.config.current_members()
        if len(members) > MAX_MEMBERS:
            raise GroupActionError(f"a group has at most {MAX_MEMBERS} members")
        key = GroupKey(group.generation + 1, os.urandom(32))
        recipients = [parse_session_id(sid) for sid in members]
        sealed = seal_keys(seed, key, recipients, clock.now_ms())
        signer = storage_rpc.KeySigner(seed)
        await self.swarm.store(
            group.account, sealed, ttl_ms=TTL_MS, namespace=NS_KEYS, identity=signer
        )
        group.keys[key.generation] = key
        config = seal_config(seed, key, group.config)
        await self.swarm.store(
            group.account, config, ttl_ms=TTL_MS, namespace=NS_CONFIG, identity=signer
        )

    # --- members ------------------------------------------------------------------------------

    def join(self, invite: Invite) -> Group:
        """This device's view of a group it was invited to (nothing is read yet: :meth:`sync`)."""
        subaccount = storage_rpc.Subaccount(
            group_account(invite.group),
            invite.token,
            invite.token_signature,
            Identity(invite.subaccount_seed),
        )
        return Group(invite.group, subaccount, invite.admin_seed)

    async def sync(self, group: Group) -> None:
        """Read the group's keys messages and config: the keys sealed to this identity, and the
        config merged (configs and keys not signed by the group are ignored)."""
        for stored in await self.swarm.retrieve(
            group.subaccount, namespace=NS_KEYS, from_start=True
        ):
            try:
                opened = open_keys(group.public_key, self.identity.x25519_secret_key, _data(stored))
            except (GroupError, InvalidInputError):
                continue
            if opened.key is not None:
                group.keys[opened.generation] = opened.key
        for stored in await self.swarm.retrieve(
            group.subaccount, namespace=NS_CONFIG, from_start=True
        ):
            try:
                _, config = open_config(group.public_key, group.keys, _data(stored))
            except (GroupError, InvalidInputError):
                continue
            group.config.merge(config)

    async def send(self, group: Group, text: str) -> str:
        """Send ``text`` to the group under its latest generation; the stored hash."""
        if not group.keys:
            await self.sync(group)
        if not group.keys:
            raise GroupActionError("no keys message of the group is sealed to this member")
        key = group.keys[group.generation]
        sealed = seal_message(group.public_key, key, self.identity.seed, pad(text.encode()))
        try:
            answer = await self.swarm.store(
                group.account,
                sealed,
                ttl_ms=TTL_MS,
                namespace=NS_MESSAGES,
                identity=group.subaccount,
            )
        except StoreError as exc:
            raise GroupActionError(f"the group's swarm did not take the message: {exc}") from exc
        return str(answer["hash"])

    async def fetch(self, group: Group) -> list[GroupMessage]:
        """The group's new messages this device can read, oldest first, from members of the
        config (others, and what does not open, are dropped)."""
        await self.sync(group)
        members = group.config.members
        out = []
        for stored in await self.swarm.retrieve(group.subaccount, namespace=NS_MESSAGES):
            digest = str(stored["hash"])
            if digest in group.seen:
                continue
            try:
                opened = open_message(group.public_key, group.keys, _data(stored))
                text = unpad(opened.padded_content).decode("utf-8")
            except (GroupError, InvalidInputError, UnicodeDecodeError):
                continue
            if opened.sender not in members:
                continue
            group.seen.add(digest)
            out.append(GroupMessage(opened.sender, text, digest, opened.generation))
        return out


def _data(stored: dict[str, object]) -> bytes:
    data = stored.get("data")
    if not isinstance(data, str):
        raise InvalidInputError("no data")
    return base64.b64decode(data, validate=True)
