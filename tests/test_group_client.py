"""Closed groups through the network (``veil.client.groups``): six in-process nodes, one swarm
client (one device) per person.

Alice creates a group with Bob and Carol; they exchange messages; Dave, not invited, can neither
retrieve from the group's swarm nor open what he captures; Alice removes Carol, who then gets no key
for what follows and cannot even retrieve any more; a non-admin cannot rekey or remove.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil.client.groups import GroupActionError, Groups, member_subaccount
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.protocol import storage_rpc
from veil.protocol.groups import NS_KEYS, NS_MESSAGES, GroupError, open_keys, open_message

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)


@asynccontextmanager
async def _people(tmp_path: Path) -> AsyncIterator[Callable[[Identity], Awaitable[Groups]]]:
    authorities = StubAuthorities(tmp_path / "authorities")
    nodes = await start_network(authorities, tmp_path, 6, network=FAST)
    networks: list[NetworkClient] = []

    async def person(identity: Identity) -> Groups:
        network = await NetworkClient(directory_of(nodes[0])).__aenter__()
        networks.append(network)
        return Groups(identity, SwarmClient(network))

    try:
        yield person
    finally:
        for network in networks:
            await network.close()
        for node in nodes:
            await node.stop()


def test_a_group_of_three_talks_an_outsider_reads_nothing_and_a_removed_member_is_cut_off(
    tmp_path: Path,
) -> None:
    alice, bob, carol, dave = (Identity.generate() for _ in range(4))

    async def main() -> None:
        async with _people(tmp_path) as person:
            a, b, c, d = [await person(p) for p in (alice, bob, carol, dave)]
            group, invites = await a.create("hikers", [bob.session_id, carol.session_id])
            assert set(invites) == {bob.session_id, carol.session_id}
            gb, gc = b.join(invites[bob.session_id]), c.join(invites[carol.session_id])
            await b.sync(gb)
            assert gb.config.name[0] == "hikers"
            assert gb.config.current_members() == {
                alice.session_id: "admin",
                bob.session_id: "member",
                carol.session_id: "member",
            }
            await a.send(group, "hello all")
            await b.send(gb, "hi from bob")
            await c.send(gc, "carol here")
            for groups, view in ((a, group), (b, gb), (c, gc)):
                got = {(m.sender, m.text) for m in await groups.fetch(view)}
                assert got == {
                    (alice.session_id, "hello all"),
                    (bob.session_id, "hi from bob"),
                    (carol.session_id, "carol here"),
                }
                assert await groups.fetch(view) == []  # each read once

            # Dave was not invited: no token, so the swarm refuses him; and what he captures
            # (a member's retrieve, say) does not open without a key of the group.
            uninvited = storage_rpc.Subaccount(
                group.account, b"\x03\x03\x00\x00" + dave.ed25519_public_key, bytes(64), dave
            )
            with pytest.raises(RuntimeError, match=r"^401 retrieve signature verification failed$"):
                await _retrieve_or_raise(d.swarm, uninvited)
            captured = await b.swarm.retrieve(gb.subaccount, namespace=NS_MESSAGES, from_start=True)
            assert len(captured) == 3
            for message in captured:
                with pytest.raises(GroupError):
                    open_message(group.public_key, {}, base64.b64decode(message["data"]))

            # Alice removes Carol: a new generation without her, and her token revoked.
            await a.remove(group, carol.session_id)
            await b.sync(gb)
            assert carol.session_id not in gb.config.current_members()
            assert gb.generation == group.generation == 2
            await a.send(group, "after carol left")
            assert [(m.text, m.generation) for m in await b.fetch(gb)] == [("after carol left", 2)]
            with pytest.raises(RuntimeError, match=r"^401 retrieve signature verification failed$"):
                await _retrieve_or_raise(c.swarm, gc.subaccount)
            await c.sync(gc)  # refused by the swarm now: nothing new
            assert 2 not in gc.keys
            # Even given every keys message (as a member could pass them on), she opens none of
            # generation 2: it was not sealed to her.
            keys_messages = await b.swarm.retrieve(
                gb.subaccount, namespace=NS_KEYS, from_start=True
            )
            opened = [
                open_keys(group.public_key, carol.x25519_secret_key, base64.b64decode(m["data"]))
                for m in keys_messages
            ]
            assert sorted((o.generation, o.key is not None) for o in opened) == [
                (1, True),
                (2, False),
            ]
            # Bob is not an admin: he can neither remove nor add.
            with pytest.raises(GroupActionError):
                await b.remove(gb, alice.session_id)
            with pytest.raises(GroupActionError):
                await b.add(gb, dave.session_id)

    run(main())


def test_a_member_added_later_reads_from_then_on_only(tmp_path: Path) -> None:
    alice, bob, erin = (Identity.generate() for _ in range(3))

    async def main() -> None:
        async with _people(tmp_path) as person:
            a, b, e = [await person(p) for p in (alice, bob, erin)]
            group, invites = await a.create("book club", [bob.session_id])
            gb = b.join(invites[bob.session_id])
            await a.send(group, "before erin")
            invite = await a.add(group, erin.session_id)
            ge = e.join(invite)
            await a.send(group, "welcome erin")
            assert [m.text for m in await e.fetch(ge)] == ["welcome erin"]
            assert [m.text for m in await b.fetch(gb)] == ["before erin", "welcome erin"]
            # The subaccount is the group's own derivation: any admin can recompute it.
            assert member_subaccount(group.seed or b"", erin.session_id)[1] == invite.token

    run(main())


async def _retrieve_or_raise(swarm: SwarmClient, signer: storage_rpc.Signer) -> None:
    """A retrieve of the group's messages as ``signer``; raise if no member answered 200."""
    account = bytes.fromhex(signer.pubkey)
    member = swarm.swarm(account)[0]
    params = storage_rpc.retrieve_params(signer, namespace=NS_MESSAGES)
    status, body = await swarm.network.request(member, "retrieve", params)
    if status != 200:
        raise RuntimeError(f"{status} {body}")
