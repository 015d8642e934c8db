"""A node's view is the consensus its network's authorities signed: which consensus it adopts, whom
it admits on its link port, the swarms that follow from the consensus's placements, and what it
serves of it. A node without a network file is on its own.

The authorities are held by the test (``StubAuthorities``); where the node's own fetch is what is
checked, an HTTP server stands in for them at the address the network file gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node_helpers import (
    Account,
    HttpClient,
    StubAuthorities,
    link_pool,
    make_config,
    now_ms,
    rpc_once,
    run,
    running_node,
    start_network,
    until,
)
from veil import _core
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.config import LinkSettings, NetworkSettings
from veil.node.directory import Directory
from veil.node.links import HopFailed, LinkPool
from veil.node.server import Node
from veil.protocol.announcement import Announcement, sign_announcement
from veil.protocol.consensus import Consensus, SignedConsensus
from veil.protocol.link import FrameKind
from veil.protocol.network_file import NetworkFile, load_network_file
from veil.protocol.node_rpc import Summary, decode_differ, encode_request
from veil.protocol.swarms import SwarmMap

LINKS = LinkSettings(handshake_timeout_s=0.5, connect_timeout_s=1.0, backoff_max_s=0.2)


def _announcement(identity: Identity) -> Announcement:
    """The announcement of a node that is not running here (nothing listens at its address)."""
    return sign_announcement(
        identity, http="127.0.0.1:9", link="127.0.0.1:9", version="0", issued_ms=now_ms()
    )


def _at_period(
    authorities: StubAuthorities, consensus: Consensus, period: int, **changes: Any
) -> SignedConsensus:
    """``consensus`` moved to ``period`` with its validity window, changed as ``changes`` say,
    and signed by a majority of ``authorities``."""
    network = authorities.network
    window = {
        "valid_after_ms": network.period_start_ms(period),
        "fresh_until_ms": network.period_start_ms(period + 1),
        "valid_until_ms": network.period_start_ms(period + network.valid_periods),
    }
    return authorities.sign(dataclasses.replace(consensus, period=period, **window | changes))


def _answering_at(network: NetworkFile, port: int) -> NetworkFile:
    """``network`` with every authority's HTTP address at ``127.0.0.1:port``."""
    return dataclasses.replace(
        network,
        authorities=tuple(
            dataclasses.replace(a, http=("127.0.0.1", port)) for a in network.authorities
        ),
    )


class _AuthorityServer:
    """HTTP as the network's authorities answer it: ``document`` is served as the consensus (404
    while it is None), and the announcements registered are kept."""

    def __init__(self) -> None:
        self.document: Any = None
        self.registered: list[Any] = []
        self.port = 0

    async def _consensus(self, request: web.Request) -> web.Response:
        if self.document is None:
            return web.Response(status=404)
        return web.json_response(self.document)

    async def _register(self, request: web.Request) -> web.Response:
        self.registered.append(await request.json())
        return web.Response(status=202)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_AuthorityServer]:
        app = web.Application()
        app.router.add_get("/authority/v1/consensus", self._consensus)
        app.router.add_post("/authority/v1/register", self._register)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        try:
            yield self
        finally:
            await runner.cleanup()


def _key(identity: Identity) -> _core.NodeKey:
    return _core.NodeKey(identity.x25519_secret_key)


Differ = tuple[list[tuple[bytes, list[bytes]]], bool]
"""A ``summary`` answer: the accounts that differ, with their hashes, and whether there is more."""


async def _summary(pool: LinkPool, node: Node) -> Differ:
    """An empty ``summary`` asked of ``node`` over the pool's link (HopFailed if not admitted)."""
    body = encode_request(Summary([]))
    answer = await pool.request(
        node.peer_info.link, node.peer_info.x25519, body, 3.0, FrameKind.RPC
    )
    return decode_differ(answer, max_items=4)


async def _summary_as(identity: Identity, node: Node) -> Differ:
    async with link_pool(_key(identity), LINKS) as pool:
        return await _summary(pool, node)


# --- announcements --------------------------------------------------------------------------------


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


# --- which consensus a node adopts ----------------------------------------------------------------


def test_a_node_adopts_only_a_newer_consensus_a_majority_signed_inside_its_validity_window(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    strangers = StubAuthorities(tmp_path / "strangers")  # a network of the same name, other keys
    listed = _announcement(Identity.generate())
    base = authorities.issue([], others=[listed]).consensus
    period, valid_periods = base.period, authorities.network.valid_periods
    good = authorities.sign(base)
    tampered = good.to_json()
    tampered["consensus"]["nodes"][0]["http"] = "203.0.113.9:1"  # after it was signed
    refused = {
        "signed by one of three authorities": authorities.sign(base, signers=1).to_json(),
        "signed by no authority": authorities.sign(base, signers=0).to_json(),
        "signed by a majority of strangers": strangers.sign(base).to_json(),
        "signed by one authority and one stranger": SignedConsensus(
            base,
            {**authorities.sign(base, signers=1).signatures, **strangers.sign(base, 1).signatures},
        ).to_json(),
        "of another network": _at_period(authorities, base, period, network="other").to_json(),
        "changed after it was signed": tampered,
        "not a consensus": {"consensus": None, "signatures": {}},
    }
    out_of_window = {
        "expired": _at_period(authorities, base, period - valid_periods - 5).to_json(),
        "not valid yet": _at_period(authorities, base, period + 3_600).to_json(),
    }

    async def main() -> None:
        async with _AuthorityServer().running() as server:
            directory = Directory(
                Identity.generate(),
                network=_answering_at(authorities.network, server.port),
                version="0",
                settings=NetworkSettings(),
                clock_skew_ms=60_000,
            )
            try:
                for name, document in refused.items():
                    server.document = document
                    before = directory.counts["refused_consensus"]
                    assert not await directory.fetch(), name
                    # asked of each of the three authorities, and refused from each
                    assert directory.counts["refused_consensus"] - before == 3, name
                    assert directory.current is None, name
                for name, document in out_of_window.items():
                    server.document = document
                    before = directory.counts["refused_stale"]
                    assert not await directory.fetch(), name
                    assert directory.counts["refused_stale"] - before == 3, name
                    assert directory.current is None, name
                assert directory.counts["adopted"] == 0
                assert directory.nodes == {}

                server.document = good.to_json()
                assert await directory.fetch()
                assert directory.current == good
                assert list(directory.nodes.values()) == [listed]
                for name, older in [
                    ("the same", good),
                    ("an older", _at_period(authorities, base, period - 1, nodes=())),
                ]:
                    server.document = older.to_json()
                    assert not await directory.fetch(), name
                    assert directory.current == good, name
                newer = _at_period(authorities, base, period + 1, nodes=())
                server.document = newer.to_json()
                assert await directory.fetch()
                assert directory.current == newer
                assert directory.nodes == {}
                assert directory.counts["adopted"] == 2
            finally:
                await directory.close()

    run(main())


def test_a_new_period_with_the_same_nodes_reuses_their_parsed_entries_and_changes_no_view(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    network = authorities.network
    base = authorities.issue([], others=[_announcement(Identity.generate())]).consensus
    first = SignedConsensus.from_json(authorities.sign(base).to_json(), network)
    same_nodes = _at_period(authorities, base, base.period + 1)
    again = SignedConsensus.from_json(same_nodes.to_json(), network)
    assert again.consensus.nodes[0] is first.consensus.nodes[0]  # parsed once
    tampered = same_nodes.to_json()
    tampered["consensus"]["nodes"][0]["http"] = "203.0.113.9:1"  # not the cached entry's
    with pytest.raises(InvalidInputError):
        SignedConsensus.from_json(tampered, network)

    directory = Directory(
        Identity.generate(),
        network=network,
        version="0",
        settings=NetworkSettings(),
        clock_skew_ms=60_000,
    )
    changes: list[int] = []
    directory.on_change.append(lambda: changes.append(len(directory.nodes)))
    assert directory.adopt(first)
    assert directory.adopt(again)  # held, and nothing derived from it recomputed
    assert directory.adopt(_at_period(authorities, base, base.period + 2, nodes=()))
    assert changes == [1, 0]
    assert directory.counts["adopted"] == 3


def test_a_node_of_a_network_registers_with_its_authorities_and_adopts_the_consensus_they_serve(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        async with _AuthorityServer().running() as server:
            network_file = tmp_path / "network.json"
            network = _answering_at(authorities.network, server.port)
            network_file.write_text(json.dumps(network.to_json()), encoding="utf-8")
            config = dataclasses.replace(
                make_config(tmp_path / "node"), network_file=str(network_file)
            )
            async with running_node(config) as node:
                await until(lambda: len(server.registered) >= 3, 10)  # with each authority
                assert node.directory.own is not None
                assert server.registered[0] == node.directory.own.to_json()
                assert node.directory.current is None
                signed = authorities.issue(
                    [], others=[Announcement.from_json(server.registered[0])]
                )
                server.document = signed.to_json()
                await until(lambda: node.directory.current is not None, 10)
                assert node.directory.current == signed
                assert node.directory.node_ids() == [node.identity.ed25519_public_key]
                status, body = await rpc_once(node.port, "store", Account().store(b"admitted"))
                assert status == 200, body

    run(main())


# --- the view and the link port -------------------------------------------------------------------


def test_nodes_holding_one_consensus_share_one_view_and_a_node_left_out_of_the_next_is_dropped(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        nodes = await start_network(authorities, tmp_path, 5)
        try:
            held = nodes[0].directory.current
            assert held is not None
            ids = sorted(n.identity.ed25519_public_key for n in nodes)
            placements = {e.node_id: e.placement for e in held.consensus.nodes}
            for node in nodes:
                assert node.directory.current == held
                assert node.directory.node_ids() == ids
                assert node.directory.placements == placements
            gone = nodes[-1]
            await gone.stop()
            authorities.issue(nodes[:-1])
            left = [i for i in ids if i != gone.identity.ed25519_public_key]
            for node in nodes[:-1]:
                assert node.directory.node_ids() == left
                assert gone.identity.x25519_public_key not in node.directory.by_x25519
                assert [a["ed25519"] for a in node.network.nodes_json()] == [i.hex() for i in left]
        finally:
            for node in nodes[:-1]:
                await node.stop()

    run(main())


def test_only_the_nodes_of_the_consensus_and_the_authorities_are_admitted_on_the_link_port(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    member, stranger = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with running_node(authorities.config(tmp_path / "node", links=LINKS)) as node:
            events = node.link_events
            authorities.issue([node], others=[_announcement(member)])
            async with link_pool(_key(member), LINKS) as pool:
                assert await _summary(pool, node) == ([], False)
                assert member.ed25519_public_key in {link.peer for link in node.gate.links()}
                for authority in authorities.identities:
                    assert await _summary_as(authority, node) == ([], False)
                with pytest.raises(HopFailed):
                    await _summary_as(stranger, node)
                assert events["refused_not_admitted"] == 1
                # The next consensus leaves the member out: its open link is closed, and a new
                # one refused.
                authorities.issue([node])
                await until(
                    lambda: (
                        member.ed25519_public_key not in {link.peer for link in node.gate.links()}
                    ),
                    3,
                )
                assert events["closed_peer_left_view"] == 1
            with pytest.raises(HopFailed):
                await _summary_as(member, node)
            assert events["refused_not_admitted"] == 2
            assert await _summary_as(authorities.identities[0], node) == ([], False)

    run(main())


def test_the_authorities_are_admitted_on_the_link_port_before_the_node_holds_a_consensus(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        async with running_node(authorities.config(tmp_path / "node", links=LINKS)) as node:
            assert node.directory.current is None
            for authority in authorities.identities:
                assert await _summary_as(authority, node) == ([], False)
            assert node.link_events["refused_not_admitted"] == 0

    run(main())


# --- swarms ---------------------------------------------------------------------------------------


def test_nodes_holding_one_consensus_agree_on_every_swarm_and_follow_its_placements(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    accounts = [Account() for _ in range(200)]

    def swarms(node: Node) -> list[tuple[bytes, ...]]:
        return [tuple(a.ed25519 for a in node.network.swarm(x.account_bytes)) for x in accounts]

    async def main() -> None:
        nodes = await start_network(authorities, tmp_path, 7)
        try:
            held = nodes[0].directory.current
            assert held is not None
            consensus = held.consensus
            size = nodes[0].config.network.swarm_size
            ids = [e.node_id for e in consensus.nodes]
            placed = SwarmMap(ids, size, {e.node_id: e.placement for e in consensus.nodes})
            expected = [placed.swarm(x.account_bytes) for x in accounts]
            for node in nodes:
                assert swarms(node) == expected
            by_id = SwarmMap(ids, size)  # what the swarms would be without the placements
            assert expected != [by_id.swarm(x.account_bytes) for x in accounts]

            # The authorities place the nodes anew: every node's swarms follow the next consensus.
            moved = tuple(dataclasses.replace(e, placement=os.urandom(32)) for e in consensus.nodes)
            signed = _at_period(authorities, consensus, consensus.period + 1, nodes=moved)
            for node in nodes:
                assert node.directory.adopt(signed)
            replaced = SwarmMap(ids, size, {e.node_id: e.placement for e in moved})
            after = [replaced.swarm(x.account_bytes) for x in accounts]
            for node in nodes:
                assert swarms(node) == after
            # An account whose swarm lost a member (not only one reordered: the test would have
            # no former member to ask).
            account, before, now = next(
                (x, b, a)
                for x, b, a in zip(accounts, expected, after, strict=True)
                if set(b) - set(a)
            )
            # A node that left the account's swarm sends a client to the new one.
            former = next(
                n for n in nodes if n.identity.ed25519_public_key in set(before) - set(now)
            )
            status, body = await rpc_once(former.port, "store", account.store(b"moved"))
            assert status == 421  # with the account's swarm, as get_swarm gives it
            assert [bytes.fromhex(a["pubkey_ed25519"]) for a in body["snodes"]] == list(now)
        finally:
            for node in nodes:
                await node.stop()

    run(main())


def test_a_node_outside_the_swarm_answers_421_with_the_right_swarm(tmp_path: Path) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    alice = Account()

    async def main() -> None:
        nodes = await start_network(authorities, tmp_path, 7)
        try:
            swarm = nodes[0].network.swarm(alice.account_bytes)
            assert len(swarm) == 5
            members = {a.ed25519 for a in swarm}
            outsider = next(n for n in nodes if n.identity.ed25519_public_key not in members)
            insider = next(n for n in nodes if n.identity.ed25519_public_key in members)
            async with await HttpClient.connect(outsider.port) as client:
                status, body = await client.rpc("store", alice.store(b"hi"))
                assert status == 421
                assert set(body) == {"snodes", "swarm", "t", "hf"}  # the account's swarm
                named = {bytes.fromhex(a["pubkey_ed25519"]) for a in body["snodes"]}
                assert named == members
                by_key = {a.ed25519: a for a in swarm}
                for snode in body["snodes"]:  # each member's address and keys
                    member = by_key[bytes.fromhex(snode["pubkey_ed25519"])]
                    assert f"{snode['ip']}:{snode['port']}" == member.http
                    assert bytes.fromhex(snode["pubkey_x25519"]) == member.x25519
                status, answer = await client.rpc("get_swarm", {"pubkey": alice.pubkey})
                assert status == 200, answer
                assert answer["snodes"] == body["snodes"]
                assert answer["swarm"] == body["swarm"]
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


# --- what a node serves of its consensus ----------------------------------------------------------


def test_get_consensus_and_the_consensus_endpoint_serve_what_verifies_against_the_network_file(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    strangers = StubAuthorities(tmp_path / "strangers")
    network = load_network_file(authorities.path)

    async def main() -> None:
        nodes = await start_network(authorities, tmp_path, 3)
        try:
            issued = nodes[0].directory.current
            assert issued is not None
            for node in nodes:
                async with await HttpClient.connect(node.port) as client:
                    response = await client.request("GET", "/consensus")
                    assert response.status == 200
                    assert SignedConsensus.from_json(response.json(), network) == issued
                    status, body = await client.rpc("get_consensus", {})
                    assert status == 200, body
                    assert SignedConsensus.from_json(body, network) == issued
                    with pytest.raises(InvalidInputError):
                        SignedConsensus.from_json(body, strangers.network)
        finally:
            for node in nodes:
                await node.stop()

    run(main())


def test_a_node_of_a_network_refuses_stores_until_it_holds_a_valid_consensus_and_once_it_expired(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities", valid_periods=2)  # 1 to 2 s
    alice = Account()

    async def refused(node: Node) -> None:
        status, body = await rpc_once(node.port, "store", alice.store(b"refused"))
        assert (status, body) == (503, "this node holds no valid consensus")
        status, body = await rpc_once(node.port, "retrieve", alice.retrieve())
        assert (status, body) == (503, "this node holds no valid consensus")
        status, body = await rpc_once(node.port, "get_consensus", {})
        assert (status, body) == (503, "this node holds no valid consensus")
        async with await HttpClient.connect(node.port) as client:
            response = await client.request("GET", "/consensus")
        assert response.status == 503
        assert response.json()["error"]["code"] == "unavailable"

    async def main() -> None:
        async with running_node(authorities.config(tmp_path / "node")) as node:
            await refused(node)
            signed = authorities.issue([node])
            status, body = await rpc_once(node.port, "store", alice.store(b"taken"))
            assert status == 200, body
            await until(lambda: node.directory.current is None, 5)
            assert now_ms() >= signed.consensus.valid_until_ms
            await refused(node)
            assert node.store.totals()[0] == 1

    run(main())


def test_a_node_without_a_network_file_serves_every_account_alone(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_node(make_config(tmp_path)) as node:
            own = node.identity.ed25519_public_key.hex()
            assert node.directory.network is None
            async with await HttpClient.connect(node.port) as client:
                for account in [Account() for _ in range(5)]:
                    status, body = await client.rpc("store", account.store(b"alone"))
                    assert status == 200, body
                    status, answer = await client.rpc("get_swarm", {"pubkey": account.pubkey})
                    assert status == 200, answer
                    assert [a["pubkey_ed25519"] for a in answer["snodes"]] == [own]
                status, listing = await client.rpc("get_nodes", {})
                assert [a["ed25519"] for a in listing["nodes"]] == [own]
                response = await client.request("GET", "/consensus")  # none exists on its own
                assert response.status == 503
            assert node.store.totals()[0] == 5

    run(main())
