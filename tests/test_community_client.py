"""Community rooms through the messenger (``veil.client.community_messaging``): six in-process
nodes that allow the community servers as external services, two in-process community servers,
and every request an onion request whose exit node POSTs the sealed request to the server."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil import _core
from veil.client.account import Book
from veil.client.messaging import Messenger
from veil.client.network import NetworkClient
from veil.client.swarm import SwarmClient
from veil.community.config import CommunityConfig, create_server_key
from veil.community.server import CommunityServer
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.server import Node
from veil.protocol.blinding import session_id_matches
from veil.protocol.community import (
    CommunityError,
    build_link,
    open_request,
    seal_answer,
    sign_request,
)
from veil.protocol.content import Content, encode_content

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)


@dataclass
class World:
    nodes: list[Node]
    servers: list[CommunityServer]
    networks: list[NetworkClient] = field(default_factory=list)

    def link(self, server: int, room: str) -> str:
        s = self.servers[server]
        return build_link(f"http://127.0.0.1:{s.port}", s.server_key, room).veil_link()

    async def device(
        self, identity: Identity, name: str | None = None, **options: object
    ) -> Messenger:
        network = await NetworkClient(directory_of(self.nodes[0])).__aenter__()
        self.networks.append(network)
        book = options.pop("book", None) or Book()
        assert isinstance(book, Book)
        return Messenger(identity, SwarmClient(network), book=book, name=name)


@asynccontextmanager
async def _world(tmp_path: Path) -> AsyncIterator[World]:
    servers = []
    for i in range(2):
        data_dir = tmp_path / f"community{i}"
        data_dir.mkdir()
        create_server_key(data_dir / "community.key")
        server = CommunityServer(CommunityConfig(data_dir=data_dir, listen_port=0))
        await server.start()
        assert server.db.create_room("lobby", "The lobby", "say hi", read_only=False, now_ms=1)
        servers.append(server)
    authorities = StubAuthorities(tmp_path / "authorities")
    nodes = await start_network(
        authorities, tmp_path, 6, network=FAST, external_services=("http://127.0.0.1:",)
    )
    world = World(nodes, servers)
    try:
        yield world
    finally:
        for network in world.networks:
            await network.close()
        for node in nodes:
            await node.stop()
        for server in servers:
            await server.stop()


def _posts(messenger: Messenger, room: str) -> list[tuple[str | None, str]]:
    return [(e.name, e.body) for e in messenger.conversation(room)]


def test_three_users_post_reply_react_and_a_moderator_deletes_and_bans(tmp_path: Path) -> None:
    alice, bob, carol = (Identity.generate() for _ in range(3))

    async def main() -> None:
        async with _world(tmp_path) as world:
            a = await world.device(alice, "Alice")
            b = await world.device(bob, "Bob")
            c = await world.device(carol, "Carol")
            link = world.link(0, "lobby")
            for m in (a, b, c):
                key, info = await m.communities.join(link)
                assert info["name"] == "The lobby"
            assert key.startswith("lobby@")

            first = await a.communities.post(key, "hello room")
            await b.fetch()
            await b.communities.post(key, "hi alice", reply_to=int(first))
            await c.fetch()
            await c.communities.react(key, first, "👍")
            for m in (a, b, c):
                await m.fetch()
                assert _posts(m, key) == [("Alice", "hello room"), ("Bob", "hi alice")]
            # Alice edits her post; the others see the new text at their next fetch.
            await a.communities.edit(key, first, "hello, room")
            events = await b.fetch()
            assert [(e.kind, e.body) for e in events if e.room == key] == [("edit", "hello, room")]
            with pytest.raises(CommunityError) as refused:  # not Bob's post to edit
                await b.communities.edit(key, first, "hijacked")
            assert refused.value.status == 403
            await c.fetch()
            await a.fetch()
            entries = a.conversation(key)
            assert entries[0].reactions == {"👍": 1}
            assert entries[1].reply_to == first
            # Authors are blinded IDs, never Session IDs.
            assert {e.sender for e in entries} == {
                a.communities.blinded_id(key),
                b.communities.blinded_id(key),
            }
            assert all((e.sender or "").startswith("25") for e in entries)
            assert bob.session_id not in repr(c.book.to_json())

            # Alice becomes a moderator (the operator's add-moderator), deletes Bob's post and
            # bans Carol, whose next post is refused and stores nothing.
            server = world.servers[0]
            server.db.set_moderator(
                server.db.room("lobby").id,  # type: ignore[union-attr]
                server.db.user_id(a.communities.blinded_id(key), 1),
                moderator=True,
                admin=False,
            )
            second = entries[1].id
            await a.communities.delete(key, second)
            await c.fetch()
            assert _posts(c, key) == [("Alice", "hello, room")]
            assert await a.communities.moderate(key, "ban", c.communities.blinded_id(key))
            posts_before = server.db.post_count(server.db.room("lobby").id)  # type: ignore[union-attr]
            with pytest.raises(CommunityError) as refused:
                await c.communities.post(key, "let me in")
            assert refused.value.status == 403
            assert server.db.post_count(server.db.room("lobby").id) == posts_before  # type: ignore[union-attr]
            # Bob (not a moderator) cannot ban.
            with pytest.raises(CommunityError) as refused:
                await b.communities.moderate(key, "ban", a.communities.blinded_id(key))
            assert refused.value.status == 403

    run(main())


def test_two_servers_see_unlinkable_ids_and_a_second_device_reads_the_rooms(
    tmp_path: Path,
) -> None:
    bob = Identity.generate()

    async def main() -> None:
        async with _world(tmp_path) as world:
            b = await world.device(bob, "Bob")
            one, _ = await b.communities.join(world.link(0, "lobby"))
            two, _ = await b.communities.join(world.link(1, "lobby"))
            await b.communities.post(one, "on the first")
            await b.communities.post(two, "on the second")
            first_id, second_id = b.communities.blinded_id(one), b.communities.blinded_id(two)
            assert first_id != second_id
            for server, blinded in zip(world.servers, (first_id, second_id), strict=True):
                # The server can confirm a Session ID it guesses, and nothing more: what it
                # stores holds neither the Session ID nor the account's keys.
                assert session_id_matches(blinded, bob.session_id, server.server_key)
                assert not session_id_matches(
                    blinded, Identity.generate().session_id, server.server_key
                )
                stored = b"".join(
                    p.read_bytes() for p in server.config.data_dir.iterdir() if p.is_file()
                )
                assert blinded[2:].encode() in stored or bytes.fromhex(blinded[2:]) in stored
                for secret in (
                    bob.session_id[2:].encode(),
                    bob.ed25519_public_key.hex().encode(),
                    bob.x25519_public_key,
                    bob.ed25519_public_key,
                ):
                    assert secret not in stored

            # Bob's second device reads both rooms from the account's config.
            b2 = await world.device(bob)
            await b2.fetch()
            assert set(b2.communities.rooms()) == {one, two}
            assert [e.body for e in b2.conversation(one)] == ["on the first"]
            assert [e.outgoing for e in b2.conversation(two)] == [True]
            # Leaving on one device leaves on the other at its next fetch.
            await b2.communities.leave(two)
            await b.fetch()
            assert set(b.communities.rooms()) == {one}

    run(main())


def test_direct_messages_are_end_to_end_and_a_shared_session_id_makes_a_1to1(
    tmp_path: Path,
) -> None:
    alice, bob, carol, mallory = (Identity.generate() for _ in range(4))

    async def main() -> None:
        async with _world(tmp_path) as world:
            a, b, c, m = [
                await world.device(p, n)
                for p, n in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol"), (mallory, "M"))
            ]
            link = world.link(0, "lobby")
            for device in (a, b, c, m):
                key, _ = await device.communities.join(link)
            bob_blinded = b.communities.blinded_id(key)
            # Alice writes to Bob's blinded ID: only Bob reads it; what the server keeps is
            # ciphertext.
            conversation = await a.communities.send_dm(key, bob_blinded, "psst, bob")
            events = await b.fetch()
            direct = [e for e in events if e.room and e.room.startswith("dm:")]
            assert [(e.body, e.name) for e in direct] == [("psst, bob", "Alice")]
            alice_conv = direct[0].peer
            assert (
                alice_conv
                == f"dm:{a.communities.blinded_id(key)}@{world.servers[0].server_key.hex()}"
            )
            assert [e for e in await c.fetch() if e.room and e.room.startswith("dm:")] == []
            data_dir = world.servers[0].config.data_dir
            stored = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
            assert len(stored) > 10_000  # the database and its write-ahead log
            assert b"psst, bob" not in stored
            # Bob answers in the same conversation; Alice reads it under hers.
            await b.send_text(alice_conv, "hi alice")
            await a.fetch()
            assert [e.body for e in a.conversation(conversation)] == ["psst, bob", "hi alice"]

            # Mallory claims to be Alice (her Session ID in the content): not taken, the message
            # stays with Mallory's blinded ID.
            await m.communities.send_dm(key, bob_blinded, "it's alice, really")
            # A server that names another sender makes the message fail to open.
            server = world.servers[0]
            forged = _sealed_dm(m, key, bob_blinded, "from alice, says the server")
            server.db.inbox_add(
                server.db.user_id(bob_blinded, 1),
                server.db.user_id(a.communities.blinded_id(key), 1),
                forged,
                now_ms=1,
                expires_ms=2**62,
            )
            before = b.undecryptable
            await b.fetch()
            assert b.undecryptable == before + 1
            assert alice.session_id not in b.book.conversations
            mallory_conv = f"dm:{m.communities.blinded_id(key)}@{server.server_key.hex()}"
            assert [e.body for e in b.conversation(mallory_conv)] == ["it's alice, really"]

            # Alice shares her Session ID: it checks out, and the conversation is a 1:1 one (a
            # message request, as any first message from a stranger).
            await a.communities.send_dm(key, bob_blinded, "this is me", share_session_id=True)
            await b.fetch()
            assert [e.body for e in b.conversation(alice.session_id)] == ["this is me"]
            assert alice.session_id in b.requests()

    run(main())


def _sealed_dm(sender: Messenger, key: str, to: str, text: str) -> bytes:
    """What ``sender`` would store for ``to``, sealed as the module's docstring says."""
    blinded = sender.communities.client(sender.communities.link(key)).blinded
    nonce = os.urandom(24)
    content = encode_content(Content.text(text, 0))
    aad = blinded.public_key + bytes.fromhex(to[2:])
    return nonce + _core.xchacha20poly1305_encrypt(
        blinded.dm_key(to, sending=True), nonce, content, aad
    )


class _NoTransport:
    async def post(self, url: str, body: bytes) -> bytes:
        raise AssertionError("no request is made here")


def _signed_change(
    author: Identity, server_key: bytes, post_id: int, params: dict[str, Any]
) -> dict[str, Any]:
    """A poll's change for a post ``author`` made with ``params``, with its proof."""
    signer = _StandIn(author)
    request = sign_request(signer, server_key, "post", params)
    return {
        "id": post_id,
        "author": signer.pubkey,
        "text": params["text"],
        "name": params.get("name", ""),
        "posted": 10,
        "proof": {
            **{k: request[k] for k in ("method", "ts", "nonce", "sig")},
            "params": {k: v for k, v in params.items() if k != "text"},
        },
    }


class _StandIn:
    """A plain Ed25519 key under the ``25`` prefix, as a server's test stands in for a blinded
    key (the client checks a signature under whatever key a post names)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    @property
    def pubkey(self) -> str:
        return "25" + self.identity.ed25519_public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return self.identity.sign(message)


def test_what_a_hostile_server_polls_back_is_checked_before_it_is_kept() -> None:
    from veil.client.community_messaging import MessengerCommunities  # noqa: PLC0415

    me, writer = Identity.generate(), Identity.generate()
    messenger = Messenger(me, None, book=Book())
    messenger.communities = MessengerCommunities(messenger, transport=_NoTransport)
    link = build_link("http://127.0.0.1:9", bytes(range(32)), "lobby")
    key = f"lobby@{link.server_key.hex()}"
    messenger.book.rooms[key] = {"link": link.veil_link(), "since": 5}
    good = _signed_change(
        writer, link.server_key, 1, {"room": "lobby", "text": "fine", "name": "N"}
    )
    author = good["author"]
    hostile: list[object] = [
        None,
        "text",
        [],
        {**good, "id": -1},
        {**good, "id": True},
        {**good, "id": "1"},
        {**good, "author": "05" + author[2:]},  # a Session ID is no author here
        {**good, "author": author.upper()},
        {**good, "author": author + "00"},
        {**good, "text": 5},
        {**good, "posted": "10"},
        {**good, "posted": False},
        {"id": 2, "deleted": "yes"},  # neither a post nor a tombstone
    ]
    # Well formed, but not what the author signed: the server changed the text, the name or the
    # reply, put it under another author or in another room, or dropped the proof.
    unsigned = [
        {**good, "id": 4, "text": "altered"},
        {**good, "id": 5, "name": "Someone else"},
        {**good, "id": 6, "reply_to": 1},
        {**good, "id": 7, "author": "25" + Identity.generate().ed25519_public_key.hex()},
        {**_signed_change(writer, link.server_key, 8, {"room": "other", "text": "x"})},
        {key: value for key, value in good.items() if key != "proof"} | {"id": 9},
    ]
    odd_params = {"room": "lobby", "text": "line\x1b[31m red", "name": "\x07" + "n" * 100}
    odd = _signed_change(writer, link.server_key, 3, odd_params)
    odd["reactions"] = {"👍": {"count": 2}, "x": {"count": -1}, "y": "many", "z": None}
    events = messenger.communities._apply(
        key, link, {"changes": [*hostile, *unsigned, good, odd], "seqno": -4}
    )
    assert [e.kind for e in events] == ["post", "post"]
    assert messenger.communities.unverified == len(unsigned)
    kept = {e.id: e for e in messenger.conversation(key)}
    assert set(kept) == {"1", "3"}
    assert "\x1b" not in kept["3"].body
    assert kept["3"].name is not None
    assert "\x07" not in kept["3"].name
    assert len(kept["3"].name) <= 64
    assert kept["3"].reactions == {"👍": 2}
    assert messenger.book.rooms[key]["since"] == 5  # a negative seqno moves no cursor
    # A tombstone removes; a repeated one changes nothing.
    events = messenger.communities._apply(
        key, link, {"changes": [{"id": 1, "deleted": True}] * 2, "seqno": 9}
    )
    assert [e.kind for e in events] == ["delete"]
    assert [e.id for e in messenger.conversation(key)] == ["3"]
    assert messenger.book.rooms[key]["since"] == 9


class _FakeServer:
    """A transport that answers as a community server holding ``secret`` would: ``answer``
    returns the answer object for a request (or raw bytes, sent as they are)."""

    def __init__(self, answer: Any) -> None:
        self.secret = os.urandom(32)
        self.public = _core.x25519_public_key(self.secret)
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    async def post(self, url: str, body: bytes) -> bytes:
        request, key = open_request(self.secret, body)
        self.requests.append(request)
        answer = self.answer(request)
        return answer if isinstance(answer, bytes) else seal_answer(key, answer)


def test_a_hostile_server_answer_is_a_typed_error_and_a_hostile_inbox_keeps_nothing() -> None:
    from veil.client.community import CommunityClient  # noqa: PLC0415
    from veil.client.community_messaging import MessengerCommunities  # noqa: PLC0415

    me = Identity.generate()

    async def main() -> None:
        for answer, status in (
            (lambda r: os.urandom(40), 502),  # does not open
            (lambda r: b"", 502),
            (lambda r: {"status": 403, "error": "you are banned"}, 403),
            (lambda r: {"status": 200, "body": ["not", "a", "room"]}, 502),
            (lambda r: {"status": 500}, 500),
        ):
            server = _FakeServer(answer)
            client = CommunityClient(me, "http://127.0.0.1:9", server.public, server)
            with pytest.raises(CommunityError) as refused:
                await client.room("lobby")
            assert refused.value.status == status
            assert "\n" not in str(refused.value)

        # An inbox answer with every kind of junk: nothing kept, nothing raised.
        junk: list[object] = [
            None,
            {"id": True, "from": "25" + "ab" * 32, "data": ""},
            {"id": -1, "from": "25" + "ab" * 32, "data": ""},
            {"id": 1, "from": "05" + "ab" * 32, "data": ""},
            {"id": 2, "from": "25" + "ab" * 32, "data": "%%%"},
            {"id": 3, "from": "25" + "ab" * 32, "data": base64.b64encode(b"short").decode()},
            {"id": 4, "from": "25" + "ab" * 32, "data": base64.b64encode(os.urandom(80)).decode()},
        ]
        server = _FakeServer(lambda r: {"status": 200, "body": {"messages": junk, "more": False}})
        messenger = Messenger(me, None, book=Book())
        messenger.communities = MessengerCommunities(messenger, transport=lambda: server)
        link = build_link("http://127.0.0.1:9", server.public, "lobby")
        key = f"lobby@{server.public.hex()}"
        messenger.book.rooms[key] = {"link": link.veil_link(), "since": None}
        assert await messenger.communities._read_inbox(link, [key]) == []
        assert not any(k.startswith("dm:") for k in messenger.book.conversations)
        assert messenger.book.rooms[key]["inbox"] == 4  # read past, not read again
        assert server.requests[-1]["params"] == {"since": 0}

    run(main())


def test_the_exit_node_is_tried_again_elsewhere_only_when_another_could_answer() -> None:
    from veil.client.community import OnionTransport  # noqa: PLC0415
    from veil.client.network import NetworkError  # noqa: PLC0415

    class Network:
        def __init__(self, statuses: list[int]) -> None:
            self.statuses = statuses
            self.nodes = [f"node{i}" for i in range(6)]
            self.asked: list[str] = []

        async def request_external(self, node: str, url: str, body: bytes) -> Any:
            self.asked.append(node)
            return self.statuses[len(self.asked) - 1], b"answer", "application/octet-stream"

    async def main() -> None:
        network = Network([403, 403, 200])  # two nodes that do not allow the server
        assert await OnionTransport(network).post("http://x/v1", b"body") == b"answer"  # type: ignore[arg-type]
        assert len(set(network.asked)) == 3
        network = Network([403, 403, 403, 200])
        with pytest.raises(NetworkError, match="does not allow"):
            await OnionTransport(network).post("http://x/v1", b"body")  # type: ignore[arg-type]
        assert len(network.asked) == 3  # at most EXIT_TRIES
        network = Network([400, 200])  # the server could not open it: no other exit helps
        with pytest.raises(CommunityError) as refused:
            await OnionTransport(network).post("http://x/v1", b"body")  # type: ignore[arg-type]
        assert refused.value.status == 400
        assert len(network.asked) == 1

    run(main())
