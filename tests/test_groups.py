"""Closed groups' formats (``veil.protocol.groups``, ``docs/protocol.md`` "Closed groups"): keys
messages, group messages and the group config — who can open what, and that every forged, stale,
tampered or foreign input is refused with the one ``GroupError``."""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.signing import VerifyKey

from veil import _core
from veil.client.groups import Invite, member_subaccount
from veil.identity import Identity
from veil.protocol.content import pad, unpad
from veil.protocol.groups import (
    KEY_ENTRY_BLOCK,
    MAX_MEMBERS,
    GroupConfig,
    GroupError,
    GroupKey,
    group_account,
    members_digest,
    open_config,
    open_keys,
    open_message,
    seal_config,
    seal_keys,
    seal_message,
    sign_removal,
    verify_removal,
)

NOW = 1_700_000_000_000


def _group() -> tuple[bytes, bytes]:
    seed = os.urandom(32)
    return seed, Identity(seed).ed25519_public_key


def _members(n: int) -> list[Identity]:
    return [Identity.generate() for _ in range(n)]


def test_each_member_opens_its_key_and_no_one_else_does() -> None:
    seed, group = _group()
    alice, bob, carol = _members(3)
    key = GroupKey(7, os.urandom(32))
    sealed = seal_keys(seed, key, [m.x25519_public_key for m in (alice, bob, carol)], NOW)
    for member in (alice, bob, carol):
        opened = open_keys(group, member.x25519_secret_key, sealed)
        assert (opened.generation, opened.created_ms, opened.key) == (
            7,
            NOW,
            GroupKey(7, key.key, NOW),
        )
    dave = Identity.generate()
    assert open_keys(group, dave.x25519_secret_key, sealed).key is None
    assert group_account(group) == "03" + group.hex()


@pytest.mark.parametrize("members", [1, 24, 25, 26, MAX_MEMBERS])
def test_entries_are_padded_to_a_block_and_a_full_group_fits_one_message(members: int) -> None:
    seed, _ = _group()
    sealed = seal_keys(
        seed, GroupKey(1, os.urandom(32)), [os.urandom(32) for _ in range(members)], NOW
    )
    count = struct.unpack_from(">H", sealed, 1 + 8 + 8 + 32)[0]
    assert count % KEY_ENTRY_BLOCK == 0
    assert count - KEY_ENTRY_BLOCK < members <= count
    assert len(sealed) == 51 + count * 48 + 64
    assert len(sealed) < 76_800  # one stored message, even at 100 members


def test_a_keys_message_opens_from_its_documented_format_alone() -> None:
    """PyNaCl, from docs/protocol.md's formula: X25519, keyed BLAKE2b, XChaCha20-Poly1305."""
    seed, group = _group()
    bob = Identity.generate()
    key = GroupKey(3, os.urandom(32))
    sealed = seal_keys(seed, key, [bob.x25519_public_key], NOW)
    body, signature = sealed[:-64], sealed[-64:]
    VerifyKey(group).verify(b"veil-group-keys-v1" + body, signature)
    _, generation, _, ephemeral, count = struct.unpack_from(">BQQ32sH", body)
    shared = bindings.crypto_scalarmult(bob.x25519_secret_key, ephemeral)
    k = blake2b(
        shared + ephemeral + bob.x25519_public_key + group + struct.pack(">Q", generation),
        digest_size=32,
        key=b"veil-group-keys1",
        encoder=RawEncoder,
    )
    opened = []
    for i in range(count):
        entry = body[51 + 48 * i : 51 + 48 * (i + 1)]
        try:
            opened.append(
                bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    entry, group + struct.pack(">Q", generation), bytes(24), k
                )
            )
        except Exception:
            continue
    assert opened == [key.key]


def test_keys_messages_not_signed_by_the_group_or_altered_are_refused() -> None:
    seed, group = _group()
    bob = Identity.generate()
    sealed = seal_keys(seed, GroupKey(1, os.urandom(32)), [bob.x25519_public_key], NOW)
    other_seed, _ = _group()
    forged = seal_keys(other_seed, GroupKey(1, os.urandom(32)), [bob.x25519_public_key], NOW)
    bad = [forged, sealed[:-1], sealed + b"\0", b"", b"\x02" + sealed[1:]]
    bad += [
        sealed[:i] + bytes([sealed[i] ^ 1]) + sealed[i + 1 :] for i in range(0, len(sealed), 97)
    ]
    for message in bad:
        with pytest.raises(GroupError, match=r"^not a keys message of this group$"):
            open_keys(group, bob.x25519_secret_key, message)


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_any_bytes_as_a_keys_message_raise_group_error_or_nothing(data: bytes) -> None:
    _, group = _group()
    with pytest.raises(GroupError):
        open_keys(group, Identity.generate().x25519_secret_key, data)


def test_messages_open_for_holders_of_their_generation_and_name_their_sender() -> None:
    _, group = _group()
    alice, carol = _members(2)
    old, new = GroupKey(1, os.urandom(32)), GroupKey(2, os.urandom(32))
    padded = pad(b"hello group")
    sealed = seal_message(group, old, alice.seed, padded)
    opened = open_message(group, {1: old}, sealed)
    assert (opened.generation, opened.sender, unpad(opened.padded_content)) == (
        1,
        alice.session_id,
        b"hello group",
    )
    # Carol was removed at the rekey to generation 2: she holds only generation 1.
    after = seal_message(group, new, alice.seed, pad(b"after the removal"))
    with pytest.raises(GroupError):
        open_message(group, {1: old}, after)
    assert open_message(group, {1: old, 2: new}, after).sender == alice.session_id
    _, other_group = _group()
    with pytest.raises(GroupError):  # the same key bound to another group
        open_message(other_group, {1: old}, sealed)
    _ = carol


def test_a_member_cannot_write_in_another_members_name_and_tampering_is_refused() -> None:
    _, group = _group()
    alice, mallory = _members(2)
    key = GroupKey(1, os.urandom(32))
    genuine = seal_message(group, key, alice.seed, pad(b"from alice"))
    # Mallory holds the group key: she re-encrypts Alice's key and signature over other content.
    plaintext = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        genuine[33:], group + struct.pack(">Q", 1), genuine[9:33], key.key
    )
    forged_plain = plaintext[:96] + pad(b"from alice, says mallory")
    nonce = os.urandom(24)
    forged = (
        genuine[:9]
        + nonce
        + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            forged_plain, group + struct.pack(">Q", 1), nonce, key.key
        )
    )
    for message in (forged, genuine[:-1], genuine[:40] + bytes([genuine[40] ^ 1]) + genuine[41:]):
        with pytest.raises(
            GroupError, match=r"^not a message of this group that this member can read$"
        ):
            open_message(group, {1: key}, message)
    assert open_message(group, {1: key}, genuine).sender == alice.session_id
    _ = mallory


def _config(members: list[Identity]) -> GroupConfig:
    config = GroupConfig()
    config.set_name("friends", NOW)
    for i, member in enumerate(members):
        config.set_member(member.session_id, "admin" if i == 0 else "member", NOW)
    return config


def test_the_config_round_trips_sealed_and_only_the_group_key_signs_it() -> None:
    seed, group = _group()
    members = _members(3)
    key = GroupKey(4, os.urandom(32))
    config = _config(members)
    generation, opened = open_config(group, {4: key}, seal_config(seed, key, config))
    assert generation == 4
    assert opened.wire() == config.wire()
    assert opened.current_members() == {
        members[0].session_id: "admin",
        members[1].session_id: "member",
        members[2].session_id: "member",
    }
    other_seed, _ = _group()
    with pytest.raises(GroupError):  # a config a non-admin (another key) signed
        open_config(group, {4: key}, seal_config(other_seed, key, config))
    with pytest.raises(GroupError):  # no key for its generation
        open_config(group, {3: key}, seal_config(seed, key, config))


K = [0, "", 0]


@pytest.mark.parametrize(
    "wire",
    [
        [],
        {"name": [None, 0], "description": [None, 0], "members": {}, "deleted": [False, 0]},
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {},
            "deleted": [False, 0],
            "keyed": [1, "ab"],
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {},
            "deleted": [False, 0],
            "keyed": [-1, "", 0],
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {},
            "deleted": [False, 0],
            "keyed": [1, "a" * 33, 0],
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {},
            "deleted": [False, 0],
            "keyed": [1, 5, 0],
        },
        {
            "name": [None, -1],
            "description": [None, 0],
            "members": {},
            "deleted": [False, 0],
            "keyed": K,
        },
        {
            "name": ["x" * 1001, 0],
            "description": [None, 0],
            "members": {},
            "deleted": [False, 0],
            "keyed": K,
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {"03" + "a" * 64: ["member", False, 0]},
            "deleted": [False, 0],
            "keyed": K,
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {"05" + "a" * 64: ["owner", False, 0]},
            "deleted": [False, 0],
            "keyed": K,
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {"05" + "a" * 64: ["member", 1, 0]},
            "deleted": [False, 0],
            "keyed": K,
        },
        {
            "name": [None, 0],
            "description": [None, 0],
            "members": {},
            "deleted": ["yes", 0],
            "keyed": K,
        },
    ],
)
def test_malformed_configs_are_refused(wire: object) -> None:
    with pytest.raises(GroupError, match=r"^not a config of this group$"):
        GroupConfig.from_wire(orjson.loads(orjson.dumps(wire)))


_ids = st.sampled_from(["05" + c * 64 for c in "abcd"])
_edits = st.lists(
    st.one_of(
        st.tuples(st.just("name"), st.one_of(st.none(), st.text(max_size=5)), st.integers(0, 9)),
        st.tuples(
            st.just("member"),
            st.tuples(_ids, st.sampled_from(["admin", "member"]), st.booleans()),
            st.integers(0, 9),
        ),
        st.tuples(st.just("delete"), st.none(), st.integers(0, 9)),
        st.tuples(st.just("keyed"), st.integers(0, 3), st.integers(0, 9)),
    ),
    max_size=6,
)


def _apply(edits: list[tuple[str, Any, int]]) -> GroupConfig:
    config = GroupConfig()
    for kind, value, at in edits:
        if kind == "name":
            config.set_name(value, at)
        elif kind == "member":
            sid, role, removed = value
            config.set_member(sid, role, at, removed=removed)
        elif kind == "keyed":
            config.set_keyed(value, at)
        else:
            config.mark_deleted(at)
    return config


@given(_edits, _edits, _edits)
def test_merging_configs_is_commutative_associative_and_idempotent(
    a: list[tuple[str, Any, int]],
    b: list[tuple[str, Any, int]],
    c: list[tuple[str, Any, int]],
) -> None:
    def merged(*parts: GroupConfig) -> dict[str, object]:
        out = GroupConfig()
        for part in parts:
            out.merge(GroupConfig.from_wire(part.wire()))
        return out.wire()

    x, y, z = _apply(a), _apply(b), _apply(c)
    assert merged(x, y) == merged(y, x)
    assert merged(merged_config(x, y), z) == merged(x, merged_config(y, z))
    assert merged(x, x) == merged(x)


def test_the_later_change_of_a_member_wins_whichever_config_merges_first() -> None:
    bob = Identity.generate().session_id
    added, removed, readded = GroupConfig(), GroupConfig(), GroupConfig()
    added.set_member(bob, "member", NOW)
    removed.set_member(bob, "member", NOW + 1, removed=True)
    readded.set_member(bob, "admin", NOW + 2)
    assert merged_config(added, removed).current_members() == {}
    assert merged_config(removed, added).current_members() == {}
    assert merged_config(merged_config(removed, readded), added).current_members() == {bob: "admin"}
    name_a, name_b = GroupConfig(), GroupConfig()
    name_a.set_name("old", NOW)
    name_b.set_name("new", NOW + 5)
    assert merged_config(name_b, name_a).name == ["new", NOW + 5]


def merged_config(a: GroupConfig, b: GroupConfig) -> GroupConfig:
    out = GroupConfig.from_wire(a.wire())
    out.merge(b)
    return out


# --- invitations, removal notices, rekey bookkeeping ---------------------------------------------


def _invite_wire(seed: bytes, *, admin: bool = False) -> dict[str, Any]:
    return member_invite_wire(seed, Identity.generate().session_id, admin=admin)


def member_invite_wire(seed: bytes, member: str, *, admin: bool = False) -> dict[str, Any]:
    sub, token, tsig = member_subaccount(seed, member)
    wire: dict[str, Any] = {
        "pk": Identity(seed).ed25519_public_key,
        "name": "g",
        "sub": sub,
        "token": token,
        "tsig": tsig,
    }
    if admin:
        wire["admin"] = seed
    return wire


def test_an_invitation_is_taken_only_if_it_proves_itself() -> None:
    seed, group = _group()
    good = Invite.from_wire(_invite_wire(seed, admin=True))
    assert (good.group, good.admin_seed, good.name) == (group, seed, "g")
    assert Invite.from_json(good.to_json()) == good
    assert seed.hex() not in repr(good)
    other_seed, _ = _group()
    bad_cases: list[dict[str, Any]] = []
    wire = _invite_wire(seed)
    for key in ("pk", "sub", "token", "tsig"):
        for bad in (None, "text", b"", wire[key][:-1], wire[key] + b"\0"):
            bad_cases.append({**wire, key: bad})
    bad_cases += [
        {**wire, "tsig": os.urandom(64)},  # not the group's signature
        {**wire, "pk": Identity(other_seed).ed25519_public_key},  # another group's key
        {**wire, "sub": os.urandom(32)},  # a token for another subaccount key
        {**wire, "admin": other_seed},  # an admin seed that is not the group's
        {**wire, "admin": b"short"},
        {**wire, "name": "x" * 1001},
        {**wire, "name": 7},
        {
            **wire,
            "token": b"\x03\x0f\x00\x00" + wire["token"][4:],  # more flags than a member gets
            "tsig": _core.ed25519_sign(seed, b"\x03\x0f\x00\x00" + wire["token"][4:]),
        },
    ]
    for case in bad_cases:
        with pytest.raises(GroupError, match=r"^not an invitation to a group$"):
            Invite.from_wire(case)
    junks: list[object] = [None, [], "x", {"pk": 1}]
    for junk in junks:
        with pytest.raises(GroupError):
            Invite.from_wire(junk)
    with pytest.raises(GroupError):
        Invite.from_json({"pk": "zz"})


def test_a_removal_notice_verifies_only_for_its_member_and_group() -> None:
    seed, group = _group()
    bob, carol = (Identity.generate().session_id for _ in range(2))
    signature = sign_removal(seed, bob)
    assert verify_removal(group, bob, signature)
    assert not verify_removal(group, carol, signature)
    assert not verify_removal(_group()[1], bob, signature)
    for junk in (None, b"", signature[:-1], bytes(64), "text"):
        assert not verify_removal(group, bob, junk)
    assert not verify_removal(group, "05zz", signature)
    assert not verify_removal(b"\0" * 31, bob, signature)


def test_the_config_says_when_the_members_changed_since_the_latest_rekey() -> None:
    alice, bob, carol = (Identity.generate().session_id for _ in range(3))
    config = GroupConfig()
    config.set_member(alice, "admin", NOW)
    config.set_member(bob, "member", NOW)
    assert config.needs_rekey(1)  # never rekeyed
    config.set_keyed(1, NOW)
    assert not config.needs_rekey(1)
    assert config.needs_rekey(2)  # a newer generation than the config records
    config.set_member(bob, "admin", NOW + 1)  # a promotion is no membership change
    assert not config.needs_rekey(1)
    config.set_member(carol, "member", NOW + 2)
    assert config.needs_rekey(1)
    assert members_digest([alice, bob]) == members_digest([bob, alice])


def test_two_keys_of_one_generation_each_open_what_they_sealed() -> None:
    seed, group = _group()
    sender = Identity.generate()
    first, second = GroupKey(2, os.urandom(32), NOW), GroupKey(2, os.urandom(32), NOW + 1)
    by_first = seal_message(group, first, sender.seed, pad(b"one"))
    by_second = seal_message(group, second, sender.seed, pad(b"two"))
    both = {2: [second, first]}
    assert unpad(open_message(group, both, by_first).padded_content) == b"one"
    assert unpad(open_message(group, both, by_second).padded_content) == b"two"
    with pytest.raises(GroupError):
        open_message(group, {2: [first]}, by_second)
    config = seal_config(seed, second, GroupConfig())
    assert open_config(group, both, config)[0] == 2
