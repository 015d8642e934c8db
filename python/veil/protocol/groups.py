"""Closed groups: what a group stores in its own swarm, byte by byte (``docs/protocol.md``, "Closed
groups").

A group is an Ed25519 key pair. Its account is ``03`` ‖ public key (its swarm, by Session's
placement); its admins hold the secret key (the seed), its members do not. Three things live in the
group's swarm, each signed or sealed so that a node that stores them learns nothing and can forge
nothing:

```
keys message   (namespace 12)  the group key of one generation, sealed for each current member
config         (namespace 13)  name, description, members and roles: signed by the group key,
                               encrypted with the current group key
message        (namespace 11)  content encrypted with a generation's group key, signed by its
                               sender's own key
```

**Keys message** — one per rekey (every removal makes one: the removed member is not among the
recipients and never learns the new key):

```
keys     = 0x01 ‖ generation (8) ‖ created_ms (8) ‖ ephemeral X25519 public key (32)
           ‖ count (2) ‖ entry₁ … entry_count (48 each) ‖ signature (64)
entry    = XChaCha20-Poly1305(k_i, nonce 0²⁴, aad = group key ‖ generation (8), the group key (32))
k_i      = BLAKE2b-256(key = "veil-group-keys1", X25519(ephemeral, member_i) ‖ ephemeral public
           ‖ member_i ‖ group public key ‖ generation (8))
signature = Ed25519 by the group key over "veil-group-keys-v1" ‖ everything before it
```

``member_i`` is the member's X25519 key (its Session ID without ``05``). Each ``k_i`` is used once
(a fresh ephemeral key per keys message), so the fixed nonce is safe. The entries are in a random
order and padded with random 48-byte blocks to a multiple of :data:`KEY_ENTRY_BLOCK`, so the message
tells the group's size only to that granularity and nobody but a member learns which entry is
whose; a member finds its own by trying (one X25519, at most ``count`` AEAD openings).

**Config** — the group's state, merged entry by entry as the account config is (the later change
wins; ties go to the larger value, so every member ends with the same config whatever order it
merges in), signed by the group key and sealed with the current group key:

```
config   = 0x01 ‖ generation (8) ‖ nonce (24) ‖ XChaCha20-Poly1305(group key, nonce,
           aad = group public key ‖ generation ‖ "config", signature (64) ‖ JSON)
JSON     = {"name": [text | null, changed_ms], "description": [text | null, changed_ms],
            "members": {session_id: ["admin" | "member", removed, changed_ms], ...},
            "deleted": [bool, changed_ms],
            "keyed": [generation, members digest, changed_ms]}   (keys sorted, no spaces)
members digest = hex of BLAKE2b-128(key = "veil-group-mset", the members' Session IDs sorted,
                 joined by ",") — the members the latest rekey was sealed to
signature = Ed25519 by the group key over "veil-group-config-v1" ‖ group public key ‖ JSON
```

**Message** — content (:mod:`veil.protocol.content`, padded) signed by its sender and encrypted
with the group key of a generation:

```
message  = 0x01 ‖ generation (8) ‖ nonce (24) ‖ XChaCha20-Poly1305(group key, nonce,
           aad = group public key ‖ generation, sender Ed25519 key (32) ‖ signature (64) ‖ padded)
signature = Ed25519 by the sender over "veil-group-msg-v1" ‖ group public key ‖ generation ‖ padded
```

Every way a keys message or a message fails to open or verify raises the same
:class:`GroupError`, with no detail of which check failed.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from veil import _core
from veil.errors import DecryptionError, InvalidInputError, InvalidKeyError

__all__ = [
    "GROUP_PREFIX",
    "KEY_ENTRY_BLOCK",
    "MAX_MEMBERS",
    "NS_CONFIG",
    "NS_KEYS",
    "NS_MESSAGES",
    "GroupConfig",
    "GroupError",
    "GroupKey",
    "Keys",
    "OpenedMessage",
    "group_account",
    "members_digest",
    "open_config",
    "open_keys",
    "open_message",
    "seal_config",
    "seal_keys",
    "seal_message",
    "sign_removal",
    "verify_removal",
]

GROUP_PREFIX = 0x03
NS_MESSAGES, NS_KEYS, NS_CONFIG = 11, 12, 13
"""The group swarm's namespaces (Session's numbers for group messages, keys and info)."""
MAX_MEMBERS = 100
KEY_ENTRY_BLOCK = 25
"""A keys message's entries are padded to a multiple of this."""

VERSION = 0x01
KEY_LEN = 32
_ENTRY_LEN = KEY_LEN + 16
_KEYS_HEAD = struct.Struct(">BQQ32sH")
_MSG_HEAD = struct.Struct(">BQ24s")
_GEN = struct.Struct(">Q")
_KEYS_CONTEXT = b"veil-group-keys-v1"
_ENTRY_KDF_KEY = b"veil-group-keys1"
_MESSAGE_CONTEXT = b"veil-group-msg-v1"
_CONFIG_CONTEXT = b"veil-group-config-v1"
_REMOVED_CONTEXT = b"veil-group-removed-v1"
ROLES = ("admin", "member")
MAX_TEXT = 1000
"""Longest group name or description, in characters."""
_NONCE0 = bytes(24)


class GroupError(InvalidInputError):
    """A keys message or a group message that does not open or does not verify (one error for
    every cause)."""


@dataclass(frozen=True, slots=True)
class GroupKey:
    """A generation of the group's symmetric key."""

    generation: int
    key: bytes
    created_ms: int = 0
    """When its keys message was made (the retention window counts from it)."""

    def __repr__(self) -> str:  # never the key
        return f"GroupKey(generation={self.generation})"


Keys = Mapping[int, "GroupKey | Sequence[GroupKey]"]
"""The keys a member holds, by generation: one, or several when two admins rekeyed at once and
made two keys of the same generation (each opens what was sealed with it)."""


def _candidates(keys: Keys, generation: int) -> Sequence[GroupKey]:
    held = keys.get(generation)
    if held is None:
        return ()
    return (held,) if isinstance(held, GroupKey) else held


def group_account(group_public_key: bytes) -> str:
    """The group's account: ``03`` ‖ its Ed25519 public key, in hex."""
    if len(group_public_key) != 32:
        raise InvalidKeyError("a group key is 32 bytes")
    return f"{GROUP_PREFIX:02x}{group_public_key.hex()}"


def _entry_key(
    shared: bytes, ephemeral: bytes, member: bytes, group: bytes, generation: int
) -> bytes:
    return _core.blake2b(
        shared + ephemeral + member + group + _GEN.pack(generation), 32, _ENTRY_KDF_KEY
    )


def seal_keys(
    group_seed: bytes,
    key: GroupKey,
    members_x25519: Iterable[bytes],
    created_ms: int,
) -> bytes:
    """A keys message giving ``key`` to each of ``members_x25519`` (at most :data:`MAX_MEMBERS`
    distinct 32-byte X25519 keys), signed by the group key."""
    members = list(dict.fromkeys(members_x25519))
    if not members or len(members) > MAX_MEMBERS:
        raise InvalidInputError(f"a keys message is for 1 to {MAX_MEMBERS} members")
    if any(len(m) != 32 for m in members) or len(key.key) != KEY_LEN:
        raise InvalidKeyError("member keys and the group key are 32 bytes")
    group = _core.ed25519_public_key(group_seed)
    ephemeral_secret = _core.x25519_generate_secret()
    ephemeral = _core.x25519_public_key(ephemeral_secret)
    aad = group + _GEN.pack(key.generation)
    entries = []
    for member in members:
        shared = _core.x25519(ephemeral_secret, member)
        k = _entry_key(shared, ephemeral, member, group, key.generation)
        entries.append(_core.xchacha20poly1305_encrypt(k, _NONCE0, key.key, aad))
    padded = -len(entries) % KEY_ENTRY_BLOCK
    entries += [secrets.token_bytes(_ENTRY_LEN) for _ in range(padded)]
    secrets.SystemRandom().shuffle(entries)
    body = _KEYS_HEAD.pack(VERSION, key.generation, created_ms, ephemeral, len(entries))
    body += b"".join(entries)
    return body + _core.ed25519_sign(group_seed, _KEYS_CONTEXT + body)


@dataclass(frozen=True, slots=True)
class OpenedKeys:
    """What a keys message says, once its signature verified: its generation and time, and the
    key if it was sealed for the reader (None otherwise)."""

    generation: int
    created_ms: int
    key: GroupKey | None


def open_keys(group_public_key: bytes, member_x25519_secret: bytes, message: object) -> OpenedKeys:
    """Verify a keys message of the group and take the reader's key from it, if there is one;
    :class:`GroupError` if it is malformed or not signed by the group."""
    if not isinstance(message, bytes) or len(message) < _KEYS_HEAD.size + 64:
        raise GroupError("not a keys message of this group")
    body, signature = message[:-64], message[-64:]
    try:
        version, generation, created_ms, ephemeral, count = _KEYS_HEAD.unpack_from(body)
    except struct.error:
        raise GroupError("not a keys message of this group") from None
    if (
        version != VERSION
        or count > MAX_MEMBERS
        or len(body) != _KEYS_HEAD.size + count * _ENTRY_LEN
        or not _core.ed25519_verify(group_public_key, _KEYS_CONTEXT + body, signature)
    ):
        raise GroupError("not a keys message of this group")
    member = _core.x25519_public_key(member_x25519_secret)
    try:
        shared = _core.x25519(member_x25519_secret, ephemeral)
    except InvalidKeyError:
        raise GroupError("not a keys message of this group") from None
    k = _entry_key(shared, ephemeral, member, group_public_key, generation)
    aad = group_public_key + _GEN.pack(generation)
    for index in range(count):
        start = _KEYS_HEAD.size + index * _ENTRY_LEN
        try:
            key = _core.xchacha20poly1305_decrypt(k, _NONCE0, body[start : start + _ENTRY_LEN], aad)
        except DecryptionError:
            continue
        return OpenedKeys(generation, created_ms, GroupKey(generation, key, created_ms))
    return OpenedKeys(generation, created_ms, None)


def seal_message(
    group_public_key: bytes, key: GroupKey, sender_seed: bytes, padded_content: bytes
) -> bytes:
    """Content (already padded) signed by the sender and encrypted with ``key``."""
    generation = _GEN.pack(key.generation)
    signature = _core.ed25519_sign(
        sender_seed, _MESSAGE_CONTEXT + group_public_key + generation + padded_content
    )
    plaintext = _core.ed25519_public_key(sender_seed) + signature + padded_content
    nonce = secrets.token_bytes(24)
    sealed = _core.xchacha20poly1305_encrypt(
        key.key, nonce, plaintext, group_public_key + generation
    )
    return _MSG_HEAD.pack(VERSION, key.generation, nonce) + sealed


@dataclass(frozen=True, slots=True)
class OpenedMessage:
    """A group message that opened and verified: its generation, the sender's Session ID and the
    padded content."""

    generation: int
    sender: str
    padded_content: bytes


def _decrypt(
    candidates: Sequence[GroupKey], nonce: bytes, sealed: bytes, aad: bytes
) -> bytes | None:
    for key in candidates:
        try:
            return _core.xchacha20poly1305_decrypt(key.key, nonce, sealed, aad)
        except DecryptionError:
            continue
    return None


def open_message(group_public_key: bytes, keys: Keys, message: object) -> OpenedMessage:
    """Decrypt a group message with the key of its generation (from ``keys``) and verify its
    sender's signature; :class:`GroupError` otherwise (no key held for it included)."""
    if not isinstance(message, bytes) or len(message) < _MSG_HEAD.size + 16 + 96:
        raise GroupError("not a message of this group that this member can read")
    version, generation, nonce = _MSG_HEAD.unpack_from(message)
    if version != VERSION:
        raise GroupError("not a message of this group that this member can read")
    aad = group_public_key + _GEN.pack(generation)
    plaintext = _decrypt(_candidates(keys, generation), nonce, message[_MSG_HEAD.size :], aad)
    if plaintext is None:
        raise GroupError("not a message of this group that this member can read")
    sender, signature, padded = plaintext[:32], plaintext[32:96], plaintext[96:]
    signed = _MESSAGE_CONTEXT + group_public_key + _GEN.pack(generation) + padded
    try:
        verified = _core.ed25519_verify(sender, signed, signature)
        sender_x25519 = _core.ed25519_public_key_to_x25519(sender)
    except InvalidKeyError:
        verified = False
    if not verified:
        raise GroupError("not a message of this group that this member can read")
    return OpenedMessage(generation, "05" + sender_x25519.hex(), padded)


# --- the config ----------------------------------------------------------------------------------


def _later(a: list[Any], b: list[Any]) -> list[Any]:
    """Of two entries ``[value…, changed_ms]`` (the time always last), the later change (ties:
    the larger value, compared as canonical JSON)."""
    key_a = (a[-1], orjson.dumps(a, option=orjson.OPT_SORT_KEYS))
    key_b = (b[-1], orjson.dumps(b, option=orjson.OPT_SORT_KEYS))
    return a if key_a >= key_b else b


@dataclass(slots=True)
class GroupConfig:
    """The group's state: last-writer-wins entries, merged commutatively (:meth:`merge`)."""

    name: list[Any] = field(default_factory=lambda: [None, 0])
    description: list[Any] = field(default_factory=lambda: [None, 0])
    members: dict[str, list[Any]] = field(default_factory=dict)
    deleted: list[Any] = field(default_factory=lambda: [False, 0])
    keyed: list[Any] = field(default_factory=lambda: [0, "", 0])
    """[generation, :func:`members_digest` of the members it was sealed to, changed_ms]: the
    latest rekey, so that an admin who finds the members changed since (another admin's
    concurrent change, a leave) rekeys for the members as they are."""

    def set_name(self, name: str | None, now_ms: int) -> None:
        self.name = [_text(name), now_ms]

    def set_description(self, text: str | None, now_ms: int) -> None:
        self.description = [_text(text), now_ms]

    def set_member(self, session_id: str, role: str, now_ms: int, *, removed: bool = False) -> None:
        if role not in ROLES:
            raise InvalidInputError('a role is "admin" or "member"')
        _session_id(session_id)
        self.members[session_id] = [role, removed, now_ms]

    def mark_deleted(self, now_ms: int) -> None:
        self.deleted = [True, now_ms]

    def set_keyed(self, generation: int, now_ms: int) -> None:
        """Record a rekey for the current members."""
        self.keyed = [generation, members_digest(self.current_members()), now_ms]

    def needs_rekey(self, generation: int) -> bool:
        """Whether the members are not those the latest rekey (``generation``, the newest this
        member holds) was sealed to."""
        keyed_generation, keyed_members = int(self.keyed[0]), str(self.keyed[1])
        return keyed_generation != generation or keyed_members != members_digest(
            self.current_members()
        )

    def admins(self) -> list[str]:
        return sorted(sid for sid, role in self.current_members().items() if role == "admin")

    def current_members(self) -> dict[str, str]:
        """Session ID → role of every member not removed."""
        return {sid: entry[0] for sid, entry in self.members.items() if not entry[1]}

    def merge(self, other: GroupConfig) -> bool:
        """Take what ``other`` changed later; whether anything changed here."""
        before = self.wire()
        self.name = _later(self.name, other.name)
        self.description = _later(self.description, other.description)
        self.deleted = _later(self.deleted, other.deleted)
        self.keyed = _later(self.keyed, other.keyed)
        for sid, entry in other.members.items():
            mine = self.members.get(sid)
            self.members[sid] = entry if mine is None else _later(mine, entry)
        return self.wire() != before

    def wire(self) -> dict[str, Any]:
        return {
            "name": list(self.name),
            "description": list(self.description),
            "members": {sid: list(entry) for sid, entry in sorted(self.members.items())},
            "deleted": list(self.deleted),
            "keyed": list(self.keyed),
        }

    @classmethod
    def from_wire(cls, value: object) -> GroupConfig:
        """A config from its JSON; :class:`GroupError` for anything malformed."""
        if not isinstance(value, dict) or set(value) != {
            "name",
            "description",
            "members",
            "deleted",
            "keyed",
        }:
            raise GroupError("not a config of this group")
        members = value["members"]
        if not isinstance(members, dict) or len(members) > 4 * MAX_MEMBERS:
            raise GroupError("not a config of this group")
        config = cls(
            name=_text_entry(value["name"]),
            description=_text_entry(value["description"]),
            deleted=_flag_entry(value["deleted"]),
            keyed=_keyed_entry(value["keyed"]),
        )
        for sid, entry in members.items():
            if not _is_session_id(sid) or not isinstance(entry, list) or len(entry) != 3:
                raise GroupError("not a config of this group")
            role, removed, changed = entry
            if role not in ROLES or not _is_ms(changed) or not isinstance(removed, bool):
                raise GroupError("not a config of this group")
            config.members[sid] = [role, removed, changed]
        return config


def _text(text: str | None) -> str | None:
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
        raise InvalidInputError(f"a group name or description is text of at most {MAX_TEXT}")
    return text


def _is_ms(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _text_entry(value: object) -> list[Any]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not _is_ms(value[1])
        or not (value[0] is None or (isinstance(value[0], str) and len(value[0]) <= MAX_TEXT))
    ):
        raise GroupError("not a config of this group")
    return [value[0], value[1]]


def _flag_entry(value: object) -> list[Any]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], bool)
        or not _is_ms(value[1])
    ):
        raise GroupError("not a config of this group")
    return [value[0], value[1]]


def _keyed_entry(value: object) -> list[Any]:
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not _is_ms(value[0])
        or not isinstance(value[1], str)
        or len(value[1]) > 32
        or not _is_ms(value[2])
    ):
        raise GroupError("not a config of this group")
    return [value[0], value[1], value[2]]


def members_digest(members: Iterable[str]) -> str:
    """16 bytes (hex) naming a set of Session IDs."""
    return _core.blake2b(",".join(sorted(members)).encode(), 16, b"veil-group-mset").hex()


_HEX = frozenset("0123456789abcdef")


def _is_session_id(session_id: object) -> bool:
    return (
        isinstance(session_id, str)
        and len(session_id) == 66
        and session_id.startswith("05")
        and _HEX.issuperset(session_id)
    )


def _session_id(session_id: object) -> None:
    if not _is_session_id(session_id):
        raise InvalidInputError("a member is a Session ID: 05 and 64 lower-case hex digits")


def seal_config(group_seed: bytes, key: GroupKey, config: GroupConfig) -> bytes:
    """The config, signed by the group key and encrypted with ``key``."""
    group = _core.ed25519_public_key(group_seed)
    body = orjson.dumps(config.wire(), option=orjson.OPT_SORT_KEYS)
    signature = _core.ed25519_sign(group_seed, _CONFIG_CONTEXT + group + body)
    nonce = secrets.token_bytes(24)
    generation = _GEN.pack(key.generation)
    sealed = _core.xchacha20poly1305_encrypt(
        key.key, nonce, signature + body, group + generation + b"config"
    )
    return _MSG_HEAD.pack(VERSION, key.generation, nonce) + sealed


def open_config(group_public_key: bytes, keys: Keys, message: object) -> tuple[int, GroupConfig]:
    """(generation, config) of a sealed config signed by the group; :class:`GroupError`
    otherwise."""
    refused = GroupError("not a config of this group that this member can read")
    if not isinstance(message, bytes) or len(message) < _MSG_HEAD.size + 16 + 64:
        raise refused
    version, generation, nonce = _MSG_HEAD.unpack_from(message)
    if version != VERSION:
        raise refused
    aad = group_public_key + _GEN.pack(generation) + b"config"
    plaintext = _decrypt(_candidates(keys, generation), nonce, message[_MSG_HEAD.size :], aad)
    if plaintext is None:
        raise refused
    signature, body = plaintext[:64], plaintext[64:]
    if not _core.ed25519_verify(
        group_public_key, _CONFIG_CONTEXT + group_public_key + body, signature
    ):
        raise refused
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise refused from None
    return generation, GroupConfig.from_wire(value)


# --- the notice to a removed member --------------------------------------------------------------


def sign_removal(group_seed: bytes, member: str) -> bytes:
    """The group key's signature that ``member`` (a Session ID) was removed: what an admin sends
    the removed member (by 1:1 message), who can no longer read the group's config to learn it."""
    _session_id(member)
    group = _core.ed25519_public_key(group_seed)
    return _core.ed25519_sign(group_seed, _REMOVED_CONTEXT + group + member.encode())


def verify_removal(group_public_key: bytes, member: str, signature: object) -> bool:
    if not isinstance(signature, bytes) or len(signature) != 64 or not _is_session_id(member):
        return False
    try:
        return _core.ed25519_verify(
            group_public_key, _REMOVED_CONTEXT + group_public_key + member.encode(), signature
        )
    except InvalidKeyError:
        return False
