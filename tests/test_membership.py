"""Membership by gossip, signed announcements, and the swarm answers that follow from the view."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from node_helpers import Account, HttpClient, make_config, run, until
from veil import _core
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import LinkSettings, NetworkSettings, NodeConfig
from veil.node.links import LinkPool
from veil.node.membership import Membership
from veil.node.server import Node
from veil.protocol.announcement import Announcement, sign_announcement

FAST = NetworkSettings(gossip_interval_s=0.05, announce_interval_s=0.5, node_timeout_s=2.0)


def _config(path: Path, seeds: tuple[str, ...] = ()) -> NodeConfig:
    return dataclasses.replace(make_config(path), network=FAST, seeds=seeds)


def _membership(identity: Identity, settings: NetworkSettings | None = None) -> Membership:
    links = LinkSettings()
    pool = LinkPool(
        key=_core.NodeKey(identity.x25519_secret_key), settings=links, count=lambda event: None
    )
    return Membership(
        identity,
        version="0",
        seeds=(),
        settings=settings or NetworkSettings(node_timeout_s=60),
        clock_skew_ms=60_000,
        pool=pool,
        hop_timeout_s=1.0,
    )


def test_an_announcement_round_trips_and_any_change_breaks_its_signature() -> None:
    identity = Identity.generate()
    signed = sign_announcement(
        identity, http="127.0.0.1:1000", link="127.0.0.1:1001", version="0.1.0", issued_ms=5
    )
    assert Announcement.from_json(signed.to_json()) == signed
    for field, value in [("http", "127.0.0.1:1002"), ("issued_ms", 6), ("version", "9")]:
        forged = {**signed.to_json(), field: value}
        with pytest.raises(InvalidInputError):
            Announcement.from_json(forged)
    other = Identity.generate()
    mismatched = {**signed.to_json(), "x25519": other.x25519_public_key.hex()}
    with pytest.raises(InvalidInputError):
        Announcement.from_json(mismatched)


def test_a_node_never_takes_another_nodes_word_for_itself_and_keeps_the_newest() -> None:
    me, them = Identity.generate(), Identity.generate()

    async def main() -> None:
        view = _membership(me)
        view.announce("127.0.0.1:1", "127.0.0.1:2")
        now = time.time_ns() // 1_000_000
        old = sign_announcement(them, http="h:1", link="h:2", version="0", issued_ms=now - 1000)
        new = sign_announcement(them, http="h:3", link="h:4", version="0", issued_ms=now)
        fake_me = sign_announcement(me, http="evil:1", link="e:2", version="0", issued_ms=now + 1)
        future = sign_announcement(
            them, http="h:5", link="h:6", version="0", issued_ms=now + 3_600_000
        )
        entries = [new.to_json(), old.to_json(), fake_me.to_json(), future.to_json()]
        assert await view.merge(entries) == 1
        assert view.nodes[them.ed25519_public_key].http == "h:3"
        assert view.nodes[me.ed25519_public_key].http == "127.0.0.1:1"
        assert await view.merge(["junk", {"ed25519": "00"}, None]) == 0

    run(main())


def test_nodes_find_each_other_from_one_seed_and_drop_a_silent_one(tmp_path: Path) -> None:
    async def main() -> None:
        seed = Node(_config(tmp_path / "seed"))
        await seed.start()
        address = f"127.0.0.1:{seed.port}"
        others = [Node(_config(tmp_path / f"n{i}", (address,))) for i in range(4)]
        for node in others:
            await node.start()
        nodes = [seed, *others]
        try:
            await until(lambda: all(len(n.membership.nodes) == 5 for n in nodes), 10)
            views = {tuple(n.membership.node_ids()) for n in nodes}
            assert len(views) == 1
            await others[-1].stop()
            await until(lambda: all(len(n.membership.nodes) == 4 for n in nodes[:-1]), 15)
        finally:
            for node in nodes[:-1]:
                await node.stop()

    run(main())


def test_a_node_outside_the_swarm_answers_421_with_the_right_swarm(tmp_path: Path) -> None:
    alice = Account()

    async def main() -> None:
        seed = Node(_config(tmp_path / "seed"))
        await seed.start()
        address = f"127.0.0.1:{seed.port}"
        nodes = [seed] + [Node(_config(tmp_path / f"n{i}", (address,))) for i in range(6)]
        for node in nodes[1:]:
            await node.start()
        try:
            await until(lambda: all(len(n.membership.nodes) == 7 for n in nodes), 10)
            swarm = nodes[0].network.swarm(alice.account_bytes)
            assert len(swarm) == 5
            members = {a.ed25519 for a in swarm}
            outsider = next(n for n in nodes if n.identity.ed25519_public_key not in members)
            insider = next(n for n in nodes if n.identity.ed25519_public_key in members)
            async with await HttpClient.connect(outsider.port) as client:
                status, body = await client.rpc("store", alice.store(b"hi"))
                assert status == 421
                assert body["error"]["code"] == "wrong_swarm"
                named = {bytes.fromhex(a["ed25519"]) for a in body["error"]["swarm"]}
                assert named == members
                status, answer = await client.rpc("get_swarm", {"pubkey": alice.pubkey})
                assert {bytes.fromhex(a["ed25519"]) for a in answer["swarm"]} == members
                status, listing = await client.rpc("get_nodes", {})
                assert len(listing["nodes"]) == 7
                for entry in listing["nodes"]:
                    Announcement.from_json(entry)
            async with await HttpClient.connect(insider.port) as client:
                status, body = await client.rpc("store", alice.store(b"hi"))
                assert status == 200, body
        finally:
            for node in nodes:
                await node.stop()

    run(main())
