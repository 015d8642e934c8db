"""Closed groups in the messenger (``veil.client.group_messaging``) through six in-process nodes:
invitations through the 1:1 inbox, accepting them, a member's second device, unsend and
disappearing messages, leave, promote, rename, delete, removal notices, two admins at once, and a
book saved and read back."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil.client.account import Book
from veil.client.groups import GroupActionError, Invite, member_subaccount
from veil.client.messaging import Messenger
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import Limits, NetworkSettings
from veil.protocol.content import Content
from veil.protocol.groups import (
    NS_CONFIG,
    NS_KEYS,
    GroupConfig,
    GroupKey,
    seal_config,
    seal_keys,
    sign_removal,
)

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)
LIMITS = Limits(min_ttl_ms=1_000)


@asynccontextmanager
async def _people(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Messenger]]]:
    nodes = await start_network(
        StubAuthorities(tmp_path / "authorities"), tmp_path, 6, network=FAST, limits=LIMITS
    )
    networks: list[NetworkClient] = []

    async def device(identity: Identity, **options: Any) -> Messenger:
        network = await NetworkClient(directory_of(nodes[0])).__aenter__()
        networks.append(network)
        options.setdefault("min_ttl_ms", 1_000)
        options.setdefault("book", Book())
        return Messenger(identity, SwarmClient(network), **options)

    try:
        yield device
    finally:
        for network in networks:
            await network.close()
        for node in nodes:
            await node.stop()


def _texts(messenger: Messenger, group: str) -> list[tuple[str | None, str]]:
    return [(e.sender, e.body) for e in messenger.conversation(group)]


def test_an_invitation_waits_for_accept_then_the_group_talks_on_every_device(
    tmp_path: Path,
) -> None:
    alice, bob, carol = (Identity.generate() for _ in range(3))

    async def main() -> None:
        async with _people(tmp_path) as device:
            a = await device(alice, name="Alice")
            b1, b2 = await device(bob, name="Bob"), await device(bob)
            c = await device(carol, name="Carol")
            group = await a.groups.create("hikers", [bob.session_id, carol.session_id])
            gid = group.account
            await a.send_text(gid, "welcome")

            # Bob's first device sees the invitation (a request: Alice is no contact), not the
            # group, until he accepts it.
            events = await b1.fetch()
            assert [(e.kind, e.peer, e.group, e.body, e.request) for e in events] == [
                ("group_invite", alice.session_id, gid, "hikers", True)
            ]
            assert b1.groups.joined() == {}
            assert b1.conversation(gid) == []
            await b1.groups.accept(gid)
            assert [(e.sender, e.body) for e in await b1.fetch() if e.kind == "text"] == [
                (alice.session_id, "welcome")
            ]
            # His second device joins from the account's config and reads the same.
            await b2.fetch()
            assert list(b2.groups.joined()) == [gid]
            assert _texts(b2, gid) == [(alice.session_id, "welcome")]

            await c.fetch()
            await c.groups.accept(gid)
            await b1.send_text(gid, "hi from bob")
            await c.fetch()
            await c.send_text(gid, "carol here")
            for messenger in (a, b1, b2, c):
                await messenger.fetch()
            expected = [
                (alice.session_id, "welcome"),
                (bob.session_id, "hi from bob"),
                (carol.session_id, "carol here"),
            ]
            for messenger in (a, b1, b2, c):
                assert _texts(messenger, gid) == expected
            # What Bob sent from his first device shows as his own on the second.
            assert [e.outgoing for e in b2.conversation(gid)] == [False, True, False]
            assert gid not in b1.requests()

            # A book saved and read back holds the group: a fresh messenger goes on from it.
            saved = Book.from_json(b1.save().to_json())
            b1_again = await device(bob, book=saved)
            assert list(b1_again.groups.joined()) == [gid]
            await a.send_text(gid, "still here?")
            assert [e.body for e in await b1_again.fetch() if e.kind == "text"] == ["still here?"]

            # Alice's second device is in the group as its admin, from the account's config.
            a2 = await device(alice)
            await a2.fetch()
            assert a2.groups.get(gid).is_admin
            assert [e.body for e in a2.conversation(gid)][-1] == "still here?"
            # From it she removes Carol: the others see it; Carol keeps her history, is told,
            # and reads nothing sent after.
            await a2.groups.remove(gid, carol.session_id)
            await a2.send_text(gid, "after carol")
            events = await b1.fetch()
            assert ("member_removed", carol.session_id) in [(e.kind, e.sender) for e in events]
            assert [e.body for e in b1.conversation(gid)][-1] == "after carol"
            events = await c.fetch()
            assert ("group_removed", gid) in [(e.kind, e.peer) for e in events]
            bodies = [e.body for e in c.conversation(gid)]
            assert "welcome" in bodies
            assert "after carol" not in bodies
            assert c.groups.joined() == {}

    run(main())


def test_unsend_disappearing_leave_promote_rename_delete(tmp_path: Path) -> None:
    alice, bob, carol = (Identity.generate() for _ in range(3))

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b, c = [await device(p) for p in (alice, bob, carol)]
            gid = (await a.groups.create("club", [bob.session_id, carol.session_id])).account
            for m in (b, c):
                await m.fetch()
                await m.groups.accept(gid)

            # Unsend: Bob takes back his message; Carol's copy goes. Carol cannot take back
            # Bob's message in his name (an unsend counts only from the message's sender).
            sent = await b.send_text(gid, "oops")
            await c.fetch()
            assert [e.body for e in c.conversation(gid)] == ["oops"]
            forged = Content.control("unsend", 0, ref=sent)
            await c.groups.api.send_content(c.groups.get(gid), forged)
            await a.fetch()
            assert [e.body for e in a.conversation(gid)] == ["oops"]
            await b.unsend(gid, sent)
            await c.fetch()
            await a.fetch()
            assert c.conversation(gid) == []
            assert a.conversation(gid) == []

            # A disappearing message goes from the conversation after its time.
            await a.send_text(gid, "brief", disappear=("after_send", 1_000))
            await c.fetch()
            assert [e.body for e in c.conversation(gid)] == ["brief"]
            await asyncio.sleep(1.2)
            assert c.conversation(gid) == []

            # Rename and promote: Carol, made an admin, can rename too.
            await a.groups.rename(gid, "the club")
            await a.groups.promote(gid, carol.session_id)
            events = await c.fetch()
            assert ("group_admin", gid) in [(e.kind, e.peer) for e in events]
            assert c.groups.get(gid).is_admin
            assert c.groups.get(gid).name == "the club"
            await c.groups.rename(gid, "carol's club")
            with pytest.raises(GroupActionError):
                await b.groups.rename(gid, "bob's")
            await b.fetch()
            assert b.groups.get(gid).name == "carol's club"

            # Bob leaves: an admin reading his leave removes him and rekeys without him.
            generation = a.groups.get(gid).generation
            await b.groups.leave(gid)
            await a.fetch()
            group = a.groups.get(gid)
            assert bob.session_id not in group.config.current_members()
            assert group.generation == generation + 1
            with pytest.raises(GroupActionError):
                await b.send_text(gid, "still in?")

            # Alice deletes the group: Carol is told on her next fetch.
            await a.groups.delete(gid)
            events = await c.fetch()
            assert ("group_deleted", gid) in [(e.kind, e.peer) for e in events]
            assert c.groups.joined() == {}

    run(main())


def test_a_removed_member_is_told_and_a_forged_notice_is_ignored(tmp_path: Path) -> None:
    alice, bob, mallory = (Identity.generate() for _ in range(3))

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b, m = [await device(p) for p in (alice, bob, mallory)]
            gid = (await a.groups.create("team", [bob.session_id])).account
            await b.fetch()
            await b.groups.accept(gid)
            # Mallory signs a removal with a key of her own: Bob stays.
            forged = {"pk": bytes.fromhex(gid[2:]), "sig": sign_removal(bytes(32), bob.session_id)}
            await m._send_content(
                bob.session_id,
                Content.control("group_removed", 0, group=forged),
                ttl_ms=m.ttl_ms,
            )
            # A forged invitation (a token not signed by the group) is no invitation at all.
            bad = {"pk": bytes(32), "sub": bytes(32), "token": bytes(36), "tsig": bytes(64)}
            await m._send_content(
                bob.session_id,
                Content.control("group_invite", 0, group=bad),
                ttl_ms=m.ttl_ms,
            )
            events = await b.fetch()
            assert [e.kind for e in events] == []
            assert list(b.groups.joined()) == [gid]
            assert list(b.groups.invitations()) == []

            await a.groups.remove(gid, bob.session_id)
            events = await b.fetch()
            assert [(e.kind, e.peer) for e in events] == [("group_removed", gid)]
            assert b.groups.joined() == {}
            assert b.config.groups[gid][0] is False

    run(main())


def test_two_admins_changing_the_group_at_once_converge(tmp_path: Path) -> None:
    alice, carol, bob, dave, erin = (Identity.generate() for _ in range(5))

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, c, b, d, e = [await device(p) for p in (alice, carol, bob, dave, erin)]
            gid = (await a.groups.create("two admins", [carol.session_id, bob.session_id])).account
            for m in (c, b):
                await m.fetch()
                await m.groups.accept(gid)
            await a.groups.promote(gid, carol.session_id)
            await c.fetch()
            assert c.groups.get(gid).is_admin
            # At once: Alice adds Dave and renames; Carol removes Bob and adds Erin.
            await asyncio.gather(
                a.groups.invite(gid, dave.session_id),
                c.groups.remove(gid, bob.session_id),
            )
            await asyncio.gather(
                a.groups.rename(gid, "renamed by alice"),
                c.groups.invite(gid, erin.session_id),
            )
            # Each admin reads the other's change, finds the members changed since the latest
            # rekey, and rekeys for the members as they are; then both hold the same config.
            await a.fetch()
            await c.fetch()
            await a.fetch()
            ga, gc = a.groups.get(gid), c.groups.get(gid)
            assert ga.config.wire() == gc.config.wire()
            assert set(ga.config.current_members()) == {
                alice.session_id,
                carol.session_id,
                dave.session_id,
                erin.session_id,
            }
            assert ga.name == "renamed by alice"
            # The latest generation was sealed to exactly those: Dave and Erin read, Bob not.
            for m in (d, e):
                await m.fetch()
                await m.groups.accept(gid)
            await a.send_text(gid, "all four of us")
            for m in (c, d, e):
                await m.fetch()
                assert [x.body for x in m.conversation(gid)][-1] == "all four of us"
            assert not ga.config.needs_rekey(ga.generation)
            assert bob.session_id not in ga.config.current_members()

    run(main())


def test_damaged_saved_groups_and_hostile_config_entries_are_left_out() -> None:
    alice = Identity.generate()
    seed = bytes(range(32))
    good = Invite(*_invite_fields(seed, alice.session_id))
    book = Book()
    book.groups = {
        "03" + "a" * 64: {"invite": {"pk": "zz"}},
        good.account: {"invite": good.to_json(), "keys": 5},
        "03" + "d" * 64: {"invite": good.to_json(), "keys": {"1": [["zz", 0]]}},
    }
    # The account config (as another device, or a damaged store, might have it): an entry whose
    # invitation does not prove itself, one filed under another group's id, and a good one.
    forged = dict(good.to_json(), tsig="00" * 64)
    book.config.groups = {
        "03" + "b" * 64: (True, 1, forged),
        "03" + "c" * 64: (True, 1, good.to_json()),
        good.account: (True, 1, good.to_json()),
    }
    messenger = Messenger(alice, None, book=book)
    assert messenger.groups.groups == {}  # both saved groups were damaged
    messenger.groups.reconcile()
    assert list(messenger.groups.groups) == [good.account]
    assert messenger.groups.find(good.account[:8]) == good.account
    with pytest.raises(InvalidInputError):
        messenger.groups.find("03")  # too short to name a group
    with pytest.raises(InvalidInputError):
        messenger.groups.find("03" + "b" * 64)  # not a group this device holds


def _invite_fields(seed: bytes, member: str) -> tuple[bytes, str, bytes, bytes, bytes]:
    sub, token, tsig = member_subaccount(seed, member)
    return Identity(seed).ed25519_public_key, "g", sub, token, tsig


def test_a_members_forged_or_replayed_config_and_keys_change_nothing(tmp_path: Path) -> None:
    """Bob is a member, not an admin: a config or keys message he signs with a key of his own,
    stored with his subaccount, is ignored by everyone; an old config stored again (a replay)
    loses to the newer one."""
    alice, bob, carol = (Identity.generate() for _ in range(3))

    async def main() -> None:
        async with _people(tmp_path) as device:
            a, b, c = [await device(p) for p in (alice, bob, carol)]
            gid = (await a.groups.create("real name", [bob.session_id, carol.session_id])).account
            for m in (b, c):
                await m.fetch()
                await m.groups.accept(gid)
            gb = b.groups.get(gid)
            first_config = [
                base64.b64decode(stored["data"])
                for stored in await b.swarm.retrieve(
                    gb.subaccount, namespace=NS_CONFIG, from_start=True
                )
            ]
            await a.groups.rename(gid, "renamed")
            # Bob's forgeries: a config naming himself admin, a keys message with a key of his.
            mine = os.urandom(32)
            fake = GroupConfig.from_wire(gb.config.wire())
            fake.set_name("bob's group", 2**62)
            fake.set_member(bob.session_id, "admin", 2**62)
            key = gb.current_key()
            assert key is not None
            forged_keys = seal_keys(
                mine, GroupKey(99, os.urandom(32), 0), [bob.x25519_public_key], 0
            )
            for data, namespace in [
                (seal_config(mine, key, fake), NS_CONFIG),
                (forged_keys, NS_KEYS),
                *[(old, NS_CONFIG) for old in first_config],  # the replay
            ]:
                await b.swarm.store(
                    gid, data, ttl_ms=60_000, namespace=namespace, identity=gb.subaccount
                )
            for m in (a, c):
                await m.fetch()
                group = m.groups.get(gid)
                assert group.name == "renamed"
                assert group.config.current_members()[bob.session_id] == "member"
                assert 99 not in group.keys

    run(main())
