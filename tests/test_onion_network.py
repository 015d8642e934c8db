"""Onion requests through real nodes on loopback: delivery, failures, replays, and privacy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from client_helpers import directory_listing
from node_helpers import Account, StubAuthorities, make_config, run
from veil.client.directory import ClientDirectory
from veil.client.guards import GuardSet
from veil.client.network import NetworkClient
from veil.crypto import build_onion
from veil.node.http import HttpProtocol
from veil.node.server import Node
from veil.protocol.onion_request import encode_routing

CLIENT_ADDRESS = "127.0.0.5"  # the client's connections come from here; nodes talk from 127.0.0.1


class _Recorder:
    """What one node saw: the remote addresses of its HTTP connections and the requests it ran."""

    def __init__(self, node: Node) -> None:
        self.addresses: set[str] = set()
        self.requests: list[Any] = []
        original_protocol = node.app.protocol
        original_answer = node.rpc.answer_body

        def protocol() -> HttpProtocol:
            proto = original_protocol()
            made = proto.connection_made

            def connection_made(transport: asyncio.BaseTransport) -> None:
                self.addresses.add(transport.get_extra_info("peername")[0])
                made(transport)

            proto.connection_made = connection_made  # type: ignore[method-assign]
            return proto

        async def answer_body(
            body: bytes,
        ) -> tuple[str, int, dict[str, Any] | str]:  # a result, or an error's text
            self.requests.append(orjson.loads(body))
            return await original_answer(body)

        node.app.protocol = protocol  # type: ignore[method-assign]
        node.rpc.answer_body = answer_body  # type: ignore[method-assign]


def _directory(tmp_path: Path, nodes: list[Node]) -> ClientDirectory:
    """What the client holds: a consensus listing the nodes (which themselves run on a static
    peer list and serve every account)."""
    return directory_listing(StubAuthorities(tmp_path / "authorities"), nodes)


@contextlib.asynccontextmanager
async def _network(tmp_path: Path, size: int) -> AsyncIterator[tuple[list[Node], list[_Recorder]]]:
    nodes = [Node(make_config(tmp_path / f"node{i}")) for i in range(size)]
    recorders = [_Recorder(node) for node in nodes]
    started: list[Node] = []
    try:
        for node in nodes:
            await node.start()
            started.append(node)
        peers = [node.peer_info for node in nodes]
        for node in nodes:
            node.set_peers(peers)
        yield nodes, recorders
    finally:
        for node in started:
            if node._server is not None and node._server.is_serving():
                await node.stop()


def _store(account: Account, text: bytes) -> dict[str, Any]:
    return {
        "pubkey": account.pubkey,
        "timestamp": time.time_ns() // 1_000_000,
        "ttl": 600_000,
        "data": base64.b64encode(text).decode(),
    }


def test_no_node_sees_both_the_clients_address_and_its_requests(tmp_path: Path) -> None:
    alice = Account()

    async def main() -> None:
        async with _network(tmp_path, 6) as (nodes, recorders):
            peers = [node.peer_info for node in nodes]
            async with NetworkClient(
                _directory(tmp_path, nodes), guards=GuardSet(size=2), local_address=CLIENT_ADDRESS
            ) as client:
                guards = {g.x25519 for g in client.guards}
                destinations = [p for p in peers if p.x25519 not in guards]
                sent = []
                for i in range(12):
                    params = _store(alice, b"message %d" % i)
                    sent.append(params["data"])
                    status, body = await client.request(destinations[i % 4], "store", params)
                    assert status == 200, body
                for _ in range(6):  # consensus refreshes go to nodes that are not its guards
                    await client.refresh_consensus()
            executed = [
                request["params"]["data"]
                for recorder in recorders
                for request in recorder.requests
                if isinstance(request, dict) and request.get("method") == "store"
            ]
            assert sorted(executed) == sorted(sent)
            saw_client = [CLIENT_ADDRESS in r.addresses for r in recorders]
            assert sum(saw_client) >= 1
            for node, recorder, node_saw_client in zip(nodes, recorders, saw_client, strict=True):
                assert not (node_saw_client and recorder.requests), "a node saw both ends"
                if node_saw_client:
                    assert node.peer_info.x25519 in guards
                else:
                    assert recorder.addresses <= {"127.0.0.1"}

    run(main())


def test_a_message_stored_through_onions_is_retrieved_through_onions(tmp_path: Path) -> None:
    bob = Account()

    async def main() -> None:
        async with _network(tmp_path, 5) as (nodes, _):
            peers = [node.peer_info for node in nodes]
            async with NetworkClient(_directory(tmp_path, nodes)) as client:
                status, stored = await client.request(peers[0], "store", _store(bob, b"hello bob"))
                assert status == 200, stored
                status, answer = await client.request(peers[0], "retrieve", bob.retrieve())
                assert status == 200, answer
                assert [m["hash"] for m in answer["messages"]] == [stored["hash"]]
                assert base64.b64decode(answer["messages"][0]["data"]) == b"hello bob"
                status, info = await client.request(peers[1], "info", {})
                assert status == 200
                assert info["x25519"] == peers[1].x25519.hex()

    run(main())


def test_the_client_routes_around_a_dead_node(tmp_path: Path) -> None:
    carol = Account()

    async def main() -> None:
        async with _network(tmp_path, 6) as (nodes, _):
            peers = [node.peer_info for node in nodes]
            await nodes[5].stop()
            async with NetworkClient(_directory(tmp_path, nodes), attempts=8, avoid_s=60) as client:
                for i in range(10):
                    status, body = await client.request(
                        peers[i % 5], "store", _store(carol, b"c%d" % i)
                    )
                    assert status == 200, body

    run(main())


def _one_onion(nodes: list[Node], payload: bytes, issued_ms: int | None = None) -> bytes:
    issued = time.time_ns() // 1_000_000 if issued_ms is None else issued_ms
    route = [nodes[0].peer_info.x25519, nodes[1].peer_info.x25519, nodes[2].peer_info.x25519]
    onion, _ = build_onion(route, payload, routing=[encode_routing(issued)] * 3)
    return onion


async def _post_onion(node: Node, onion: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{node.port}/onion_req", data=onion) as answer,
    ):
        return answer.status, await answer.read()


def test_a_replayed_onion_is_refused_and_garbage_gets_the_same_answer(tmp_path: Path) -> None:
    async def main() -> None:
        async with _network(tmp_path, 3) as (nodes, _):
            onion = _one_onion(nodes, b'{"method":"info","params":{}}')
            first = await _post_onion(nodes[0], onion)
            assert first[0] == 200
            replay = await _post_onion(nodes[0], onion)
            garbage = await _post_onion(nodes[0], b"\x01" + bytes(200))
            stale = await _post_onion(
                nodes[0],
                _one_onion(nodes, b"{}", issued_ms=time.time_ns() // 1_000_000 - 3_600_000),
            )
            assert replay[0] == garbage[0] == stale[0] == 502
            assert replay[1] == garbage[1] == stale[1]
            assert b"path_failed" in replay[1]
            assert nodes[0].router.counts["replayed"] == 1
            again = await _post_onion(nodes[0], _one_onion(nodes, b'{"method":"info"}'))
            assert again[0] == 200

    run(main())


def test_a_layer_naming_an_unknown_next_hop_fails_the_path(tmp_path: Path) -> None:
    async def main() -> None:
        async with _network(tmp_path, 3) as (nodes, _):
            issued = time.time_ns() // 1_000_000
            route = [nodes[0].peer_info.x25519, bytes(range(32)), nodes[2].peer_info.x25519]
            onion, _ = build_onion(route, b"{}", routing=[encode_routing(issued)] * 3)
            status, body = await _post_onion(nodes[0], onion)
            assert status == 502
            assert b"path_failed" in body
            assert nodes[0].router.counts["unknown_next_hop"] == 1

    run(main())


def test_an_external_service_is_reached_only_when_the_operator_lists_it(tmp_path: Path) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=b"seen: " + await request.read(), content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/files/upload", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        allowed = f"http://127.0.0.1:{port}/files/"
        try:
            configs = [make_config(tmp_path / f"node{i}") for i in range(4)]
            configs[3] = dataclasses.replace(configs[3], external_services=(allowed,))
            nodes = [Node(config) for config in configs]
            for node in nodes:
                await node.start()
            peers = [node.peer_info for node in nodes]
            for node in nodes:
                node.set_peers(peers)
            try:
                async with NetworkClient(_directory(tmp_path, nodes)) as client:
                    status, body, kind = await client.request_external(
                        peers[3], allowed + "upload", b"attachment"
                    )
                    assert (status, body) == (200, b"seen: attachment")
                    assert kind.startswith("text/plain")
                    status, body, _ = await client.request_external(
                        peers[2], allowed + "upload", b"attachment"
                    )
                    assert status == 403
                    assert body == b""
            finally:
                for node in nodes:
                    await node.stop()
        finally:
            await runner.cleanup()

    run(main())


def test_node_logs_never_hold_the_clients_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dave = Account()

    async def main() -> None:
        async with _network(tmp_path, 4) as (nodes, _):
            peers = [node.peer_info for node in nodes]
            async with NetworkClient(
                _directory(tmp_path, nodes), local_address=CLIENT_ADDRESS
            ) as client:
                for i in range(8):
                    await client.request(peers[i % 4], "store", _store(dave, b"d%d" % i))
            await _post_onion(nodes[0], b"garbage" * 30)

    with caplog.at_level(logging.DEBUG, logger="veil"):
        run(main())
    assert caplog.records, "the nodes logged nothing at all; the check would be empty"
    for record in caplog.records:
        text = record.getMessage() + repr(getattr(record, "fields", ""))
        assert CLIENT_ADDRESS not in text
        for i in range(8):
            assert base64.b64encode(b"d%d" % i).decode() not in text


def test_a_route_longer_than_the_hop_limit_is_cut_off(tmp_path: Path) -> None:
    async def main() -> None:
        configs = [make_config(tmp_path / f"node{i}") for i in range(2)]
        configs = [
            dataclasses.replace(c, onion=dataclasses.replace(c.onion, max_hops=3)) for c in configs
        ]
        nodes = [Node(config) for config in configs]
        for node in nodes:
            await node.start()
        peers = [node.peer_info for node in nodes]
        for node in nodes:
            node.set_peers(peers)
        try:
            issued = time.time_ns() // 1_000_000
            a, b = peers[0].x25519, peers[1].x25519
            info = b'{"method":"info","params":{}}'
            three, _ = build_onion([a, b, a], info, routing=[encode_routing(issued)] * 3)
            assert (await _post_onion(nodes[0], three))[0] == 200
            looping, _ = build_onion([a, b, a, b, a], info, routing=[encode_routing(issued)] * 5)
            status, body = await _post_onion(nodes[0], looping)
            assert status == 502
            assert b"path_failed" in body
            assert sum(node.router.counts["too_many_hops"] for node in nodes) == 1
        finally:
            for node in nodes:
                await node.stop()

    run(main())
