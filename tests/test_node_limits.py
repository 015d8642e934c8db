"""Limits that keep one source from taking a node for itself, tried at their size: a flood posted
to the gossip endpoint that is gone, a thousand connections from one address, handshakes held open
on the link port, and one client's share of the onion replay cache. Each is refused at its limit,
counted, and leaves the node serving everyone else (another address, a member's link)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import http.client
import logging
import os
import re
import resource
import select
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest

from node_helpers import (
    HttpClient,
    NodeThread,
    answer_until_closed,
    link_pool,
    make_config,
    now_ms,
    peer_info,
    rpc_once,
    run,
    running_node,
    until,
)
from veil import _core
from veil.identity import Identity
from veil.node.config import Limits, LinkSettings, OnionSettings
from veil.node.links import HopFailed, LinkPool
from veil.node.server import Node
from veil.protocol.announcement import sign_announcement
from veil.protocol.link import HANDSHAKE_RESPONSE_LEN, FrameDecoder, FrameKind, encode_frame
from veil.protocol.node_rpc import Summary, decode_differ, encode_request
from veil.protocol.onion_request import build_request, open_reply

OTHER_ADDRESS = "127.0.0.2"  # Linux routes all of 127/8 to lo: a second client address


def _metric(text: str, name: str, label: str, value: str) -> float:
    """A counter's value in ``/metrics`` text (0 when the labelled series is absent)."""
    pattern = rf'^{re.escape(name)}{{{label}="{re.escape(value)}"}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _metrics(port: int) -> str:
    async with await HttpClient.connect(port) as client:
        response = await client.request("GET", "/metrics")
    assert response.status == 200
    return response.body.decode()


async def _info_status(port: int, local_host: str | None = None) -> int:
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    async with HttpClient(reader, writer) as client:
        status, _ = await client.rpc("info", {})
    return status


# --- POST /gossip and the gossip RPC, gone --------------------------------------------------------


def _announcement_shaped(count: int) -> list[dict[str, Any]]:
    """Entries with every field of an announcement, none of them signed."""
    issued = now_ms()
    return [
        {
            "ed25519": os.urandom(32).hex(),
            "x25519": os.urandom(32).hex(),
            "http": "127.0.0.1:9",
            "link": "127.0.0.1:9",
            "version": "0",
            "issued_ms": issued,
            "signature": base64.b64encode(os.urandom(64)).decode("ascii"),
        }
        for _ in range(count)
    ]


def _signed_announcements(count: int) -> list[dict[str, Any]]:
    issued = now_ms()
    return [
        sign_announcement(
            Identity.generate(),
            http="127.0.0.1:9",
            link="127.0.0.1:9",
            version="0",
            issued_ms=issued,
        ).to_json()
        for _ in range(count)
    ]


def _gossip_head(length: int) -> bytes:
    return (
        f"POST /gossip HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _member_pool(member: Identity) -> contextlib.AbstractAsyncContextManager[LinkPool]:
    """Links dialled as ``member``, with the default link settings."""
    return link_pool(_core.NodeKey(member.x25519_secret_key), LinkSettings())


def test_post_gossip_is_gone_and_what_is_posted_there_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_node(make_config(tmp_path)) as node:
            body = orjson.dumps({"announcements": _signed_announcements(3)})
            async with await HttpClient.connect(node.port) as client:
                response = await client.request("POST", "/gossip", body)
                assert response.status == 404
                assert response.json()["error"]["code"] == "not_found"
                assert await client.at_eof()  # refused from its headers, its body unread
            status, _ = await rpc_once(node.port, "info", {})  # and the node serves on
            assert status == 200
            assert node.directory.node_ids() == [node.identity.ed25519_public_key]
            assert sum(node.directory.counts.values()) == 0

    run(main())


def test_a_gossip_flood_of_ten_thousand_entries_is_refused_unread_and_the_node_serves_on(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with running_node(make_config(tmp_path)) as node:
            body = orjson.dumps({"announcements": _announcement_shaped(10_000)})
            assert len(body) < node.config.limits.max_body_bytes  # refused for its path alone
            async with await HttpClient.connect(node.port) as client:
                await client.send_raw(_gossip_head(len(body)))  # the body never follows
                response = await client.read_response(timeout=5.0)
                assert response.status in (404, 413)
                assert await client.at_eof()
            # The whole flood in one write: refused the same way. The node answers and closes;
            # the part of the body it never read resets the connection, which may cost this end
            # the answer.
            async with await HttpClient.connect(node.port) as client:
                with contextlib.suppress(ConnectionError):
                    await client.send_raw(_gossip_head(len(body)) + body)
                with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5.0)
                    assert head.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 413 "))
                assert await client.at_eof()
            assert await _info_status(node.port) == 200
            text = await _metrics(node.port)
            refusals = [
                _metric(text, "veil_http_errors_total", "status", s) for s in ("404", "413")
            ]
            assert sum(refusals) == 2
            assert node.directory.node_ids() == [node.identity.ed25519_public_key]
            assert sum(node.directory.counts.values()) == 0  # not one entry was parsed

    run(main())


def test_a_members_gossip_of_ten_thousand_entries_over_its_link_is_refused_and_the_link_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    member = Identity.generate()

    async def main() -> None:
        async with running_node(make_config(tmp_path)) as node:
            node.set_peers([peer_info(member)])
            async with _member_pool(member) as pool:
                entries = _signed_announcements(10_000)
                body = b"\x01" + msgpack.packb({"m": "gossip", "announcements": entries})
                with pytest.raises(HopFailed):
                    await pool.request(
                        node.peer_info.link, node.peer_info.x25519, body, 10.0, FrameKind.RPC
                    )
                assert node.peer_rpc.refusals["malformed"] == 1  # no such method
                assert node.directory.node_ids() == [node.identity.ed25519_public_key]
                # The link itself stays up for the member's next request.
                answer = await pool.request(
                    node.peer_info.link,
                    node.peer_info.x25519,
                    encode_request(Summary([])),
                    5.0,
                    FrameKind.RPC,
                )
                assert decode_differ(answer, max_items=4) == ([], False)

    with caplog.at_level(logging.ERROR):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- connections per address on the HTTP port ----------------------------------------------------


def _raise_open_files_limit(need: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``need`` (within the hard limit); the limits before."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    if soft >= need:
        return before
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return before


def _closed_by_peer(sockets: list[socket.socket]) -> list[socket.socket]:
    """The sockets the other end has closed (readable, hung up or reset: the node sends nothing
    unasked on an idle HTTP connection)."""
    poller = select.poll()
    by_fd = {}
    for sock in sockets:
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        by_fd[sock.fileno()] = sock
    return [by_fd[fd] for fd, _ in poller.poll(0)]


def _http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request from OTHER_ADDRESS (a blocking client: the node runs on its own thread)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=5, source_address=(OTHER_ADDRESS, 0)
    )
    try:
        connection.request(method, path, body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("cap", "count"),
    [(64, 1_000), (Limits().max_connections_per_address, 1_000)],
    ids=["cap 64", "default cap"],
)
def test_connections_past_the_per_address_cap_are_closed_and_another_address_is_served(
    tmp_path: Path, cap: int, count: int
) -> None:
    before = _raise_open_files_limit(2 * count + 256)  # both ends live in this process
    thread = NodeThread(make_config(tmp_path, limits=Limits(max_connections_per_address=cap)))
    thread.start()
    assert thread.node is not None
    node = thread.node
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            held.append(socket.create_connection(("127.0.0.1", thread.port), timeout=5))
        deadline = time.monotonic() + 10
        closed = _closed_by_peer(held)
        while len(closed) < count - cap and time.monotonic() < deadline:
            time.sleep(0.05)
            closed = _closed_by_peer(held)
        time.sleep(0.2)  # and no more than that are closed
        closed = _closed_by_peer(held)
        assert len(closed) == count - cap
        assert node.app.by_source.get("127.0.0.1") == cap
        status, body = _http(
            thread.port, "POST", "/storage_rpc/v1", b'{"method":"info","params":{}}'
        )
        assert status == 200, body
        status, metrics = _http(thread.port, "GET", "/metrics")
        assert status == 200
        text = metrics.decode()
        assert _metric(
            text, "veil_limit_refusals_total", "limit", "max_connections_per_address"
        ) == (count - cap)
        assert _metric(text, "veil_http_errors_total", "status", "503") == count - cap
        # Once the held connections go, the address is served again.
        for sock in held:
            sock.close()
        held.clear()
        deadline = time.monotonic() + 5
        while node.app.by_source.get("127.0.0.1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.app.by_source.get("127.0.0.1") is None
    finally:
        for sock in held:
            sock.close()
        thread.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


# --- handshakes on the link port ------------------------------------------------------------------


async def _ping_from(node: Node, key: _core.NodeKey, local_host: str) -> bool:
    """Open a link to ``node`` from ``local_host`` by hand; whether a PING gets its PONG."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.link_port, local_addr=(local_host, 0)
    )
    try:
        initiator = key.link_initiate(node.identity.x25519_public_key, now_ms())
        writer.write(initiator.message)
        answer = await asyncio.wait_for(reader.readexactly(HANDSHAKE_RESPONSE_LEN), 3.0)
        cipher = initiator.finish(answer)
        writer.write(cipher.seal(encode_frame(FrameKind.PING, 1)))
        decoder = FrameDecoder()
        async with asyncio.timeout(3.0):
            while True:
                frames = decoder.feed(cipher.open(await reader.read(65_536)))
                if frames:
                    return [f.kind for f in frames] == [FrameKind.PONG]
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _held_connections(
    port: int, count: int
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            held.append(await asyncio.open_connection("127.0.0.1", port))
        yield held
    finally:
        for _, writer in held:
            writer.close()


def test_handshakes_held_open_past_the_per_address_cap_are_closed_then_time_out(
    tmp_path: Path,
) -> None:
    links = LinkSettings(
        max_handshakes_per_address=4,
        handshake_timeout_s=1.5,
        connect_timeout_s=1.0,
        backoff_max_s=0.2,
    )
    member = Identity.generate()
    member_key = _core.NodeKey(member.x25519_secret_key)
    config = dataclasses.replace(make_config(tmp_path), links=links)

    async def ask_from_loopback(node: Node) -> bytes:
        async with link_pool(member_key, links) as pool:
            return await pool.request(
                node.peer_info.link,
                node.peer_info.x25519,
                encode_request(Summary([])),
                3.0,
                FrameKind.RPC,
            )

    async def main() -> None:
        async with running_node(config) as node:
            node.set_peers([peer_info(member)])
            events = node.link_events
            async with _held_connections(node.link_port, 4) as held:
                await until(lambda: node.gate.handshaking == 4, 3)
                async with _held_connections(node.link_port, 6) as excess:
                    for reader, _ in excess:
                        assert await answer_until_closed(reader, timeout=3.0) == (b"", True)
                assert events["refused_handshakes_per_address"] == 6
                assert events["closed_handshake_timeout"] == 0  # the cap closed them, not time
                assert node.gate.handshaking == 4
                # A member's link from the same address waits its turn like anyone's handshake;
                # from another address it opens.
                with pytest.raises(HopFailed):
                    await ask_from_loopback(node)
                assert events["refused_handshakes_per_address"] == 7
                assert await _ping_from(node, member_key, OTHER_ADDRESS)
                # The held connections are closed at the handshake timeout, having had nothing.
                for reader, _ in held:
                    assert await answer_until_closed(reader, timeout=5.0) == (b"", True)
                assert events["closed_handshake_timeout"] == 4
                assert node.gate.handshaking == 0
            assert decode_differ(await ask_from_loopback(node), max_items=4) == ([], False)

    run(main())


# --- the replay cache's share per source ----------------------------------------------------------


def test_one_client_address_fills_only_its_share_of_the_replay_cache(tmp_path: Path) -> None:
    onion = OnionSettings(replay_max_entries_per_source=5)
    config = dataclasses.replace(make_config(tmp_path), onion=onion)
    info = b'{"method":"info","params":{}}'

    async def post(client: HttpClient, node: Node) -> tuple[int, Any]:
        """A fresh onion with ``node`` as its only hop; (HTTP status, the RPC status or body)."""
        packet, reply_key = build_request([node.identity.x25519_public_key], info)
        response = await client.request("POST", "/onion_req", packet)
        if response.status != 200:
            return response.status, response.json()["error"]["code"]
        return response.status, open_reply(reply_key, response.body, external=False)[0]

    async def main() -> None:
        async with running_node(config) as node:
            async with await HttpClient.connect(node.port) as client:
                for _ in range(5):
                    assert await post(client, node) == (200, 200)
                assert await post(client, node) == (503, "overloaded")
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", node.port, local_addr=(OTHER_ADDRESS, 0)
            )
            async with HttpClient(reader, writer) as other:
                for _ in range(5):
                    assert await post(other, node) == (200, 200)
            async with await HttpClient.connect(node.port) as client:
                assert await post(client, node) == (503, "overloaded")
            assert len(node.router.replays) == 10

    run(main())
