"""The community server (``docs/community.md``): an in-process server on 127.0.0.1 with an ephemeral
port, spoken to with aiohttp by POSTing sealed bodies to ``/v1`` (the onion part, an exit node doing
that POST, is tested with the client). Blinded IDs are stood in for by plain Ed25519 identities:
``"25" + hex(identity.ed25519_public_key)``; the server needs only Ed25519 verification under the
key. The last tests run ``veil community init | add-room | rooms | run`` as processes."""

from __future__ import annotations

import base64
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from node_helpers import run
from veil import _core
from veil.community.config import (
    DB_FILE,
    CommunityConfig,
    CommunityLimits,
    ConfigError,
    create_server_key,
    load_config,
    render_config,
)
from veil.community.db import LATEST_SQL, MIGRATIONS, POLL_SQL, SCHEMA_VERSION, CommunityDb
from veil.community.rpc import RateLimiter, ReplayCache
from veil.community.server import CommunityServer
from veil.errors import DecryptionError, InvalidInputError, InvalidKeyError
from veil.identity import Identity
from veil.protocol.community import (
    CommunityError,
    build_link,
    check_blinded_id,
    open_answer,
    open_envelope,
    open_request,
    parse_link,
    request_string,
    seal_answer,
    seal_request,
    sign_request,
    verify_post,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "community.md"


class Signer:
    """A stand-in for a blinded key: a plain Ed25519 identity under the ``25`` prefix."""

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()

    @property
    def pubkey(self) -> str:
        return "25" + self.identity.ed25519_public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return _core.ed25519_sign(self.identity.seed, message)


class Client:
    """POSTs sealed requests to one server's ``/v1``."""

    def __init__(self, http: aiohttp.ClientSession, url: str, server_key: bytes) -> None:
        self.http = http
        self.endpoint = url + "/v1"
        self.server_key = server_key

    async def raw(self, body: bytes) -> tuple[int, bytes]:
        async with self.http.post(self.endpoint, data=body) as answer:
            return answer.status, await answer.read()

    async def sealed(self, request: dict[str, Any], server_key: bytes | None = None) -> Any:
        body, key = seal_request(server_key or self.server_key, request)
        status, content = await self.raw(body)
        assert status == 200, status
        return open_answer(key, content)

    async def call(
        self, signer: Signer | None, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The answer ``{"status", "body" | "error"}`` of one request (unsigned if no signer)."""
        params = params or {}
        if signer is None:
            return await self.sealed({"method": method, "params": params})  # type: ignore[no-any-return]
        request = sign_request(signer, self.server_key, method, params)
        return await self.sealed(request)  # type: ignore[no-any-return]

    async def ok(
        self, signer: Signer | None, method: str, params: dict[str, Any] | None = None
    ) -> Any:
        answer = await self.call(signer, method, params)
        assert answer["status"] == 200, answer
        return answer["body"]

    async def refused(
        self, signer: Signer | None, method: str, params: dict[str, Any], status: int
    ) -> str:
        answer = await self.call(signer, method, params)
        assert answer["status"] == status, answer
        assert "body" not in answer
        assert isinstance(answer["error"], str)
        assert "\n" not in answer["error"]
        return str(answer["error"])


class Community:
    """A running server, its database (for setup and for checking what was stored) and a
    client."""

    def __init__(self, server: CommunityServer, client: Client) -> None:
        self.server = server
        self.client = client
        self.db: CommunityDb = server.db

    def add_room(self, token: str, *, read_only: bool = False) -> None:
        assert self.db.create_room(token, token.title(), "", read_only=read_only, now_ms=1)

    def make_moderator(
        self, signer: Signer, room: str | None = None, *, admin: bool = False
    ) -> None:
        user = self.db.user_id(signer.pubkey, 1)
        found = None if room is None else self.db.room(room)
        self.db.set_moderator(
            None if found is None else found.id, user, moderator=True, admin=admin
        )

    def post_count(self) -> int:
        return sum(self.db.post_count(room.id) for room in self.db.rooms())


def make_config(data_dir: Path, **limits: Any) -> CommunityConfig:
    data_dir.mkdir(parents=True, exist_ok=True)
    create_server_key(data_dir / "community.key")
    config = CommunityConfig(
        data_dir=data_dir, listen_port=0, limits=replace(CommunityLimits(), **limits)
    )
    (data_dir / "community.toml").write_text(render_config(config))
    return config


@asynccontextmanager
async def serving(data_dir: Path, **limits: Any) -> AsyncIterator[Community]:
    server = CommunityServer(make_config(data_dir, **limits))
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}"
            yield Community(server, Client(http, url, server.server_key))
    finally:
        await server.stop()


# --- wire format ------------------------------------------------------------------------------


def test_join_links_round_trip_in_both_forms_and_bad_links_are_refused() -> None:
    key = bytes(range(32))
    link = build_link("https://chat.example.org:8443/", key, "lobby")
    assert link.url == "https://chat.example.org:8443"
    assert link.endpoint == "https://chat.example.org:8443/v1"
    veil = link.veil_link()
    assert veil.startswith("veil://community?url=https%3A%2F%2Fchat.example.org%3A8443&pk=")
    assert parse_link(veil) == link
    assert link.session_link() == f"https://chat.example.org:8443/lobby?public_key={key.hex()}"
    assert parse_link(link.session_link()) == link
    prefixed = parse_link(f"http://h/sogs/room-1?public_key={key.hex().upper()}")
    assert (prefixed.url, prefixed.room, prefixed.server_key) == ("http://h/sogs", "room-1", key)
    for bad in (
        "veil://community?url=http%3A%2F%2Fh&pk=00&room=r",
        f"veil://community?url=ftp%3A%2F%2Fh&pk={key.hex()}&room=r",
        f"veil://community?url=http%3A%2F%2Fh&pk={key.hex()}&room=a%20b",
        f"veil://community?url=http%3A%2F%2Fh&pk={key.hex()}",
        f"veil://other?url=http%3A%2F%2Fh&pk={key.hex()}&room=r",
        f"http://h/r?public_key={key.hex()}&x=1",
        f"http://h/?public_key={key.hex()}",
        "mailto:someone",
    ):
        with pytest.raises(InvalidInputError):
            parse_link(bad)


def test_sealing_uses_hop_encryption_keys_and_every_failure_is_the_same_error() -> None:
    secret = _core.x25519_generate_secret()
    public = _core.x25519_public_key(secret)
    body, key = seal_request(public, {"method": "info", "params": {}})
    assert body[0] == 1
    ephemeral = body[1:33]
    # the answer key is hop encryption's: the server's HopKey for E opens what k seals
    assert _core.HopKey.for_server(secret, ephemeral).decrypt(seal_answer(key, {"status": 1}))
    opened, server_key = open_request(secret, body)
    assert opened == {"method": "info", "params": {}}
    assert server_key == key
    errors = set()
    other = _core.x25519_generate_secret()
    tampered = bytearray(body)
    tampered[-1] ^= 1
    aad_changed = bytes([2]) + body[1:]
    low_order = body[:1] + bytes(32) + body[33:]
    for bad in (b"", b"\x01" * 10, bytes(tampered), aad_changed, low_order, body[:-1]):
        with pytest.raises(DecryptionError) as caught:
            open_envelope(secret, bad)
        errors.add(str(caught.value))
    with pytest.raises(DecryptionError) as caught:
        open_envelope(other, body)
    errors.add(str(caught.value))
    with pytest.raises(DecryptionError) as caught:
        open_answer(key, b"\x00" * 60)
    errors.add(str(caught.value))
    assert errors == {"decryption failed"}


def test_the_signed_string_is_the_documented_one_and_blinded_ids_are_checked() -> None:
    server_key = bytes(range(32))
    message = request_string(server_key, "post", {"text": "hi", "room": "a"}, 17, b"n" * 16)
    assert message == (
        b"veil-community-v1" + server_key + b"post\n17\n" + b"n" * 16 + b'{"room":"a","text":"hi"}'
    )
    signer = Signer()
    assert check_blinded_id(signer.pubkey.upper().replace("25", "25", 1))[0] == signer.pubkey
    for bad in (
        "05" + signer.pubkey[2:],
        signer.pubkey[:-1],
        "25" + "ff" * 32,
        7,
        "25" + "00" * 32,
    ):
        with pytest.raises(InvalidKeyError):
            check_blinded_id(bad)


def test_community_toml_round_trips_and_refuses_unknown_keys_and_inconsistent_limits(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path / "c", max_post_bytes=100, post_rate=2)
    loaded = load_config(tmp_path / "c")
    assert loaded.limits == config.limits
    http = loaded.http.limits()  # what the HTTP layer is given: the server's own caps
    assert (http.max_buffered_body_bytes, http.max_pipelined_requests) == (64 << 20, 16)
    assert loaded.url == "http://127.0.0.1:22030"
    text = (tmp_path / "c" / "community.toml").read_text()
    assert "# Longest post text, in bytes of UTF-8." in text
    for broken, why in (
        (text.replace("post_rate = 2", "post_rat = 2"), "unknown setting"),
        (text.replace("post_rate = 2", 'post_rate = "2"'), "must be a int"),
        (text.replace("max_body_bytes = 262_144", "max_body_bytes = 1000"), "max_body_bytes"),
        (
            text.replace("max_buffered_body_bytes = 67_108_864", "max_buffered_body_bytes = 1000"),
            "max_buffered_body_bytes must be at least max_body_bytes",
        ),
        (text.replace("max_pipelined_requests = 16", "max_pipelined_requests = 0"), "pipelined"),
        (text + "\n[extra]\n", "unknown section"),
        (text.replace('url = "http://127.0.0.1:22030"', 'url = "ftp://x"'), "url"),
    ):
        (tmp_path / "c" / "community.toml").write_text(broken)
        with pytest.raises(ConfigError, match=why):
            load_config(tmp_path / "c")


def test_the_database_is_wal_with_its_schema_version_and_polls_use_the_seqno_index(
    tmp_path: Path,
) -> None:
    db = CommunityDb(tmp_path / "c.sqlite3")
    assert db.schema_version == SCHEMA_VERSION
    db.close()
    conn = sqlite3.connect(tmp_path / "c.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for sql, args in ((POLL_SQL, (1, 5, 10)), (LATEST_SQL, (1, 10))):
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)
            plan = " ".join(str(row[-1]) for row in rows)
            assert "SEARCH p USING INDEX posts_room_seqno (room=?" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort: the index is in seqno order
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(ConfigError, match="newer"):
        CommunityDb(tmp_path / "c.sqlite3")


def test_the_replay_cache_and_rate_limiter_are_bounded() -> None:
    cache = ReplayCache(window_ms=1000, max_entries=3, max_per_user=2)
    cache.add("a", b"1", ts_ms=100, now=100)
    with pytest.raises(CommunityError) as caught:
        cache.add("a", b"1", ts_ms=100, now=200)
    assert caught.value.status == 425
    cache.add("a", b"2", ts_ms=100, now=200)
    with pytest.raises(CommunityError) as caught:
        cache.add("a", b"3", ts_ms=100, now=200)
    assert caught.value.status == 429
    cache.add("b", b"1", ts_ms=100, now=200)
    with pytest.raises(CommunityError) as caught:
        cache.add("c", b"1", ts_ms=100, now=200)
    assert caught.value.status == 503
    cache.add("c", b"1", ts_ms=2000, now=1101)  # the first three left the window
    assert len(cache) == 1
    limiter = RateLimiter(count=2, window_ms=1000, max_keys=2)
    assert limiter.allow("x", 0)
    assert limiter.allow("x", 1)
    assert not limiter.allow("x", 2)
    assert limiter.allow("x", 1000)
    assert limiter.allow("y", 0)
    assert limiter.allow("z", 0)  # a third key: the oldest is dropped
    assert len(limiter._events) == 2


# --- rooms, posts, polls ----------------------------------------------------------------------


def test_rooms_and_posts_round_trip(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("lobby")
            c.add_room("news", read_only=True)
            alice, bob = Signer(), Signer()
            info = await c.client.ok(None, "info")
            assert info["limits"]["max_post_bytes"] == 8192
            assert info["unsigned_methods"] == ["info", "rooms"]
            rooms = await c.client.ok(None, "rooms")
            assert [(r["token"], r["read_only"], r["seqno"]) for r in rooms] == [
                ("lobby", False, 0),
                ("news", True, 0),
            ]
            posted = await c.client.ok(alice, "post", {"room": "lobby", "text": "hi", "name": "A"})
            assert posted["seqno"] == 1
            reply = await c.client.ok(
                bob, "post", {"room": "lobby", "text": "héllo 👋", "reply_to": posted["id"]}
            )
            polled = await c.client.ok(bob, "poll", {"rooms": {"lobby": None}})
            lobby = polled["rooms"]["lobby"]
            assert lobby["seqno"] == 2
            assert lobby["more"] is False
            assert lobby["info"]["token"] == "lobby"
            assert lobby["info"]["active_users"] == 1
            first, second = lobby["changes"]
            proof = first.pop("proof")
            assert proof == {
                "method": "post",
                "params": {"room": "lobby", "name": "A"},  # the text is the change's
                "ts": proof["ts"],
                "nonce": proof["nonce"],
                "sig": proof["sig"],
            }
            assert first == {
                "id": posted["id"],
                "seqno": 1,
                "author": alice.pubkey,
                "name": "A",
                "text": "hi",
                "posted": first["posted"],
                "reactions": {},
                "pinned": False,
            }
            assert (second["text"], second["reply_to"], second["author"]) == (
                "héllo 👋",
                posted["id"],
                bob.pubkey,
            )
            assert second["id"] == reply["id"]
            assert second["proof"]["params"] == {"room": "lobby", "reply_to": posted["id"]}
            assert verify_post(c.server.server_key, "lobby", {**first, "proof": proof})
            assert verify_post(c.server.server_key, "lobby", second)
            room = await c.client.ok(alice, "room", {"room": "lobby"})
            assert room["you"] == {"moderator": False, "admin": False}
            assert (room["seqno"], room["moderators"], room["pinned"]) == (2, [], [])
            assert (await c.client.ok(None, "rooms"))[0]["active_users"] == 1
            await c.client.refused(alice, "room", {"room": "nope"}, 404)
            await c.client.refused(alice, "post", {"room": "lobby", "text": ""}, 400)
            await c.client.refused(alice, "post", {"room": "lobby", "text": "x", "x": 1}, 400)
            await c.client.refused(
                alice, "post", {"room": "lobby", "text": "x", "name": "n" * 65}, 400
            )
            await c.client.refused(
                alice, "post", {"room": "lobby", "text": "x", "reply_to": 999}, 404
            )
            assert c.post_count() == 2

    run(scenario())


def test_poll_since_a_seqno_returns_only_the_changes_for_two_rooms_in_one_request(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c", poll_max_changes=3) as c:
            c.add_room("a")
            c.add_room("b")
            alice = Signer()
            for index in range(4):
                await c.client.ok(alice, "post", {"room": "a", "text": f"a{index}"})
            await c.client.ok(alice, "post", {"room": "b", "text": "b0"})
            both = await c.client.ok(alice, "poll", {"rooms": {"a": 0, "b": 0}})
            a, b = both["rooms"]["a"], both["rooms"]["b"]
            assert [ch["text"] for ch in a["changes"]] == ["a0", "a1", "a2"]
            assert (a["more"], a["seqno"]) == (True, 3)
            assert [ch["text"] for ch in b["changes"]] == ["b0"]
            assert (b["more"], b["seqno"]) == (False, 1)
            again = await c.client.ok(alice, "poll", {"rooms": {"a": a["seqno"], "b": b["seqno"]}})
            assert [ch["text"] for ch in again["rooms"]["a"]["changes"]] == ["a3"]
            assert again["rooms"]["a"]["more"] is False
            assert again["rooms"]["b"]["changes"] == []
            assert "info" not in again["rooms"]["b"]
            quiet = await c.client.ok(alice, "poll", {"rooms": {"a": 4, "b": 1}})
            assert quiet["rooms"]["a"] == {"status": 200, "seqno": 4, "changes": [], "more": False}
            latest = await c.client.ok(alice, "poll", {"rooms": {"a": None}})
            assert [ch["text"] for ch in latest["rooms"]["a"]["changes"]] == ["a1", "a2", "a3"]
            missing = await c.client.ok(alice, "poll", {"rooms": {"zz": 0, "b": 1}})
            assert missing["rooms"]["zz"] == {"status": 404, "error": "no such room"}
            assert missing["rooms"]["b"]["status"] == 200
            too_many = {f"r{i}": 0 for i in range(65)}
            await c.client.refused(alice, "poll", {"rooms": too_many}, 400)
            await c.client.refused(alice, "poll", {"rooms": {"a": -1}}, 400)
            await c.client.refused(alice, "poll", {"rooms": {"a b": 0}}, 400)

    run(scenario())


def test_a_poll_is_cut_at_poll_max_bytes_keeping_one_change_per_room(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c", poll_max_bytes=1000) as c:
            c.add_room("a")
            c.add_room("b")
            alice = Signer()
            for _ in range(3):
                await c.client.ok(alice, "post", {"room": "a", "text": "x" * 400})
            await c.client.ok(alice, "post", {"room": "b", "text": "y" * 400})
            polled = await c.client.ok(alice, "poll", {"rooms": {"a": 0, "b": 0}})
            a, b = polled["rooms"]["a"], polled["rooms"]["b"]
            assert (len(a["changes"]), a["more"], a["seqno"]) == (1, True, 1)
            assert (len(b["changes"]), b["more"]) == (1, False)  # over budget: still one
            rest = await c.client.ok(alice, "poll", {"rooms": {"a": a["seqno"]}})
            assert [ch["seqno"] for ch in rest["rooms"]["a"]["changes"]] == [2]

    run(scenario())


def test_edits_deletions_reactions_and_pins_appear_as_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("lobby")
            alice, bob, mod = Signer(), Signer(), Signer()
            c.make_moderator(mod, "lobby")
            one = await c.client.ok(alice, "post", {"room": "lobby", "text": "one"})
            two = await c.client.ok(alice, "post", {"room": "lobby", "text": "two"})
            since = two["seqno"]
            edited = await c.client.ok(
                alice, "edit", {"room": "lobby", "id": one["id"], "text": "1"}
            )
            await c.client.refused(
                bob, "edit", {"room": "lobby", "id": one["id"], "text": "x"}, 403
            )
            reacted = await c.client.ok(
                bob, "react", {"room": "lobby", "id": one["id"], "emoji": "👍"}
            )
            assert reacted["changed"] is True
            again = await c.client.ok(
                bob, "react", {"room": "lobby", "id": one["id"], "emoji": "👍"}
            )
            assert again == {"changed": False, "seqno": None}
            await c.client.ok(alice, "react", {"room": "lobby", "id": one["id"], "emoji": "👍"})
            await c.client.refused(
                bob, "react", {"room": "lobby", "id": one["id"], "emoji": "x" * 13}, 400
            )
            await c.client.refused(bob, "pin", {"room": "lobby", "id": one["id"]}, 403)
            pinned = await c.client.ok(mod, "pin", {"room": "lobby", "id": one["id"]})
            deleted = await c.client.ok(alice, "delete", {"room": "lobby", "id": two["id"]})
            changes = await c.client.ok(bob, "poll", {"rooms": {"lobby": since}})
            lobby = changes["rooms"]["lobby"]
            assert [ch["id"] for ch in lobby["changes"]] == [one["id"], two["id"]]
            first, tombstone = lobby["changes"]
            assert first["text"] == "1"
            assert first["edited"] >= first["posted"]
            assert first["reactions"] == {"👍": {"count": 2, "you": True}}
            assert first["pinned"] is True
            assert first["seqno"] == pinned["seqno"] > edited["seqno"]
            assert tombstone == {"id": two["id"], "seqno": deleted["seqno"], "deleted": True}
            assert lobby["info"]["pinned"] == [one["id"]]  # the pin changed the room's info
            await c.client.ok(bob, "unreact", {"room": "lobby", "id": one["id"], "emoji": "👍"})
            await c.client.ok(mod, "unpin", {"room": "lobby", "id": one["id"]})
            later = await c.client.ok(bob, "poll", {"rooms": {"lobby": lobby["seqno"]}})
            (change,) = later["rooms"]["lobby"]["changes"]
            assert change["reactions"] == {"👍": {"count": 1, "you": False}}
            assert change["pinned"] is False
            assert later["rooms"]["lobby"]["info"]["pinned"] == []
            for method in ("edit", "react", "delete", "pin"):
                params = {"room": "lobby", "id": two["id"], "text": "x", "emoji": "x"}
                wanted = {"edit": ("room", "id", "text"), "react": ("room", "id", "emoji")}
                params = {
                    k: v for k, v in params.items() if k in wanted.get(method, ("room", "id"))
                }
                await c.client.refused(mod if method == "pin" else alice, method, params, 404)

    run(scenario())


# --- proofs: every post's text is signed by its author ----------------------------------------


def _tampered(change: dict[str, Any], **edits: Any) -> dict[str, Any]:
    """A deep copy of ``change`` with ``edits`` applied: ``text=…`` sets the change's field,
    ``proof__ts=…`` the proof's, ``params__text=…`` the signed params'."""
    copy = orjson.loads(orjson.dumps(change))
    for key, value in edits.items():
        target, name = copy, key
        if key.startswith("proof__"):
            target, name = copy["proof"], key[7:]
        elif key.startswith("params__"):
            target, name = copy["proof"]["params"], key[8:]
        if value is _DROP:
            target.pop(name, None)
        else:
            target[name] = value
    return copy  # type: ignore[no-any-return]


_DROP = object()


def test_posts_and_edits_carry_proofs_that_readers_verify_and_tampering_is_refused(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("lobby")
            c.add_room("other")
            key = c.server.server_key
            alice, bob, mod = Signer(), Signer(), Signer()
            c.make_moderator(mod, "lobby")
            text = 'héllo "quoted" \\ back\nslash 👋 \u2028 <b>'
            first = await c.client.ok(alice, "post", {"room": "lobby", "text": "first"})
            params = {"room": "lobby", "text": text, "name": "Ålice", "reply_to": first["id"]}
            request = sign_request(alice, key, "post", params)
            posted = (await c.client.sealed(request))["body"]
            plain = await c.client.ok(bob, "post", {"room": "lobby", "text": "no name"})
            nulled = {"room": "lobby", "text": "null reply", "reply_to": None, "name": ""}
            await c.client.ok(bob, "post", nulled)
            same = await c.client.ok(alice, "post", {"room": "lobby", "text": "same"})
            elsewhere = await c.client.ok(alice, "post", {"room": "other", "text": "same"})
            before_edit = await c.client.ok(alice, "poll", {"rooms": {"lobby": None}})
            old_first = before_edit["rooms"]["lobby"]["changes"][0]
            assert old_first["proof"]["method"] == "post"
            edit = sign_request(
                alice, key, "edit", {"room": "lobby", "id": first["id"], "text": "same"}
            )
            assert (await c.client.sealed(edit))["status"] == 200
            # reactions and pins change a post's seqno, not its proof
            await c.client.ok(bob, "react", {"room": "lobby", "id": posted["id"], "emoji": "👍"})
            await c.client.ok(mod, "pin", {"room": "lobby", "id": posted["id"]})
            polled = await c.client.ok(bob, "poll", {"rooms": {"lobby": 0, "other": 0}})
            lobby = {ch["id"]: ch for ch in polled["rooms"]["lobby"]["changes"]}
            (other,) = polled["rooms"]["other"]["changes"]
            assert other["id"] == elsewhere["id"]
            edited, signed, unnamed = lobby[first["id"]], lobby[posted["id"]], lobby[plain["id"]]
            same_post = lobby[same["id"]]
            assert len(lobby) == 5
            for change in lobby.values():
                assert verify_post(key, "lobby", change), change
            unsent = {k: v for k, v in nulled.items() if k != "text"}
            assert [ch["proof"]["params"] for ch in lobby.values()].count(unsent) == 1
            assert verify_post(key, "other", other)
            # the proof is the request as signed: its params, ts, nonce and signature
            assert signed["proof"] == {
                "method": "post",
                "params": {k: v for k, v in params.items() if k != "text"},
                "ts": request["ts"],
                "nonce": request["nonce"],
                "sig": request["sig"],
            }
            assert (signed["text"], signed["name"], signed["pinned"]) == (text, "Ålice", True)
            assert unnamed["proof"]["params"] == {"room": "lobby"}
            assert unnamed["name"] == ""
            # an edit replaces the post's proof with its own
            assert edited["proof"] == {
                "method": "edit",
                "params": {"room": "lobby", "id": first["id"]},
                "ts": edit["ts"],
                "nonce": edit["nonce"],
                "sig": edit["sig"],
            }
            # what the server stores: the params as signed but for the text, which is the post's
            with sqlite3.connect(tmp_path / "c" / DB_FILE) as conn:
                stored = conn.execute(
                    "SELECT proof_method, proof_params, proof_ts, length(proof_nonce), "
                    "length(proof_sig) FROM posts WHERE id = ?",
                    (posted["id"],),
                ).fetchone()
            assert stored == (
                "post",
                orjson.dumps(
                    {"name": "Ålice", "reply_to": first["id"], "room": "lobby"},
                    option=orjson.OPT_SORT_KEYS,
                ),
                request["ts"],
                16,
                64,
            )
            forgeries = {
                "text": _tampered(signed, text="hello"),
                "text, also signed": _tampered(signed, text="hello", params__text="hello"),
                "name": _tampered(signed, name="Mallory"),
                "name, also signed": _tampered(signed, name="Mallory", params__name="Mallory"),
                "no name shown": _tampered(unnamed, name="Bob"),
                "reply_to": _tampered(signed, reply_to=plain["id"]),
                "reply_to dropped": _tampered(signed, reply_to=_DROP),
                "reply_to added": _tampered(unnamed, reply_to=first["id"]),
                "reply_to, also signed": _tampered(
                    signed, reply_to=plain["id"], params__reply_to=plain["id"]
                ),
                "room, signed": _tampered(signed, params__room="other"),
                "edit's id": _tampered(edited, id=posted["id"]),
                "edit's id, also signed": _tampered(
                    edited, id=posted["id"], params__id=posted["id"]
                ),
                "author": _tampered(signed, author=bob.pubkey),
                "author not a blinded ID": _tampered(signed, author="05" + alice.pubkey[2:]),
                "ts": _tampered(signed, proof__ts=request["ts"] + 1),
                "nonce": _tampered(signed, proof__nonce=base64.b64encode(bytes(16)).decode()),
                "sig": _tampered(signed, proof__sig=edited["proof"]["sig"]),
                "method": _tampered(edited, proof__method="post"),
                "a param the method does not take": _tampered(unnamed, params__id=unnamed["id"]),
                # proofs copied from another post, another room, an older text
                "another author's proof": {**signed, "proof": unnamed["proof"]},
                "another post's proof": {**signed, "proof": same_post["proof"]},
                "the edit's proof on another post with its text": {
                    **same_post,
                    "proof": edited["proof"],
                },
                "the post's proof after an edit": {**edited, "proof": old_first["proof"]},
                "another room's proof": {**same_post, "proof": other["proof"]},
                "no proof": _tampered(signed, proof=_DROP),
            }
            for why, forged in forgeries.items():
                assert not verify_post(key, "lobby", forged), why
            assert not verify_post(key, "other", signed)  # shown in another room
            assert not verify_post(key, "other", same_post)  # the same text, another room
            assert not verify_post(bytes(32), "lobby", signed)  # another server
            # a deleted post is a tombstone: no proof, nothing of it kept
            await c.client.ok(alice, "delete", {"room": "lobby", "id": posted["id"]})
            after = await c.client.ok(
                bob, "poll", {"rooms": {"lobby": polled["rooms"]["lobby"]["seqno"]}}
            )
            (tombstone,) = after["rooms"]["lobby"]["changes"]
            assert tombstone == {"id": posted["id"], "seqno": tombstone["seqno"], "deleted": True}
            assert not verify_post(key, "lobby", tombstone)
            with sqlite3.connect(tmp_path / "c" / DB_FILE) as conn:
                kept = conn.execute(
                    "SELECT proof_method, proof_params, proof_ts, proof_nonce, proof_sig "
                    "FROM posts WHERE id = ?",
                    (posted["id"],),
                ).fetchone()
            assert kept == (None, None, None, None, None)

    run(scenario())


def test_verify_post_refuses_hostile_changes_without_raising() -> None:
    key = bytes(range(32))
    alice = Signer()
    params = {"room": "lobby", "text": "hi", "reply_to": 3}
    request = sign_request(alice, key, "post", params)
    good: dict[str, Any] = {
        "id": 7,
        "seqno": 9,
        "author": alice.pubkey,
        "name": "",
        "text": "hi",
        "reply_to": 3,
        "posted": 1,
        "reactions": {},
        "pinned": False,
        "proof": {
            **{k: request[k] for k in ("method", "ts", "nonce", "sig")},
            "params": {"room": "lobby", "reply_to": 3},  # as signed, but for the text
        },
    }
    assert verify_post(key, "lobby", good)
    assert verify_post(key, "lobby", _tampered(good, author=alice.pubkey.upper()))
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"x": deep}
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    hostile: list[object] = [
        None,
        [],
        "change",
        {},
        {"proof": None},
        _tampered(good, proof=[]),
        _tampered(good, proof__params=[]),
        _tampered(good, proof__params=None),
        _tampered(good, proof__ts="1"),
        _tampered(good, proof__ts=True),
        _tampered(good, proof__ts=-1),
        _tampered(good, proof__ts=1.5),
        _tampered(good, proof__ts=1 << 80),
        _tampered(good, proof__nonce="!!"),
        _tampered(good, proof__nonce=None),
        _tampered(good, proof__nonce=base64.b64encode(bytes(17)).decode()),
        _tampered(good, proof__sig="A" * 100_000),
        _tampered(good, proof__sig=base64.b64encode(bytes(64)).decode()),
        _tampered(good, proof__method=None),
        _tampered(good, proof__method="delete"),
        _tampered(good, proof__method="post\n"),
        _tampered(good, author=None),
        _tampered(good, author=7),
        _tampered(good, author="25" + "00" * 32),  # a small-order point
        _tampered(good, author="25" + "ff" * 32),  # not a point
        _tampered(good, text=None),
        _tampered(good, text=["hi"]),
        _tampered(good, params__text=None),
        _tampered(good, name=None),
        _tampered(good, params__name=None),
        _tampered(good, reply_to=True, params__reply_to=True),
        _tampered(good, reply_to=3.0),
        # values that pass the checks of the params but are not JSON: the signed string fails
        _tampered(good, reply_to=1 << 80, params__reply_to=1 << 80),
        _tampered(good, text="\ud800", params__text="\ud800"),
        _tampered(good, params__room=None),
        _tampered(good, params__deep=deep),
        {**good, "proof": {**good["proof"], "params": {**params, "cycle": cyclic}}},
        {**good, "proof": {**good["proof"], "params": {**params, 1: "x"}}},
        {**good, "proof": {**good["proof"], "params": {**params, "nan": float("nan")}}},
    ]
    edit = sign_request(alice, key, "edit", {"room": "lobby", "id": 1, "text": "hi"})
    edited: dict[str, Any] = {
        **good,
        "id": 1,
        "proof": {
            **{k: edit[k] for k in ("method", "ts", "nonce", "sig")},
            "params": {"room": "lobby", "id": 1},
        },
    }
    assert verify_post(key, "lobby", edited)
    hostile += [
        _tampered(edited, id=True, params__id=True),
        _tampered(edited, id=1.0),
        _tampered(edited, params__id=_DROP),
        _tampered(edited, params__name=""),
    ]
    for index, change in enumerate(hostile):
        assert verify_post(key, "lobby", change) is False, index
    for key_, room in ((b"short", "lobby"), ("00" * 32, "lobby"), (key, None)):
        assert verify_post(key_, room, good) is False  # type: ignore[arg-type]


def test_a_database_of_the_previous_schema_is_migrated_and_its_posts_have_no_proof(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "c"
    data_dir.mkdir()
    alice = Signer()
    old = sqlite3.connect(data_dir / DB_FILE)
    old.executescript(MIGRATIONS[1])
    old.executescript(
        f"""
        INSERT INTO rooms (id, token, name, created_ms, seqno) VALUES (1, 'lobby', 'Lobby', 1, 2);
        INSERT INTO users (id, pubkey, created_ms) VALUES (1, '{alice.pubkey}', 1);
        INSERT INTO posts (id, room, user, seqno, posted_ms, name, text)
            VALUES (1, 1, 1, 1, 5, 'A', 'from before'), (2, 1, 1, 2, 6, 'A', 'edit me');
        PRAGMA user_version = 1;
        """
    )
    old.close()
    assert SCHEMA_VERSION == 2

    async def scenario() -> None:
        async with serving(data_dir) as c:
            assert c.db.schema_version == SCHEMA_VERSION
            key = c.server.server_key
            await c.client.ok(alice, "edit", {"room": "lobby", "id": 2, "text": "edited"})
            new = await c.client.ok(alice, "post", {"room": "lobby", "text": "after"})
            polled = await c.client.ok(alice, "poll", {"rooms": {"lobby": None}})
            changes = polled["rooms"]["lobby"]["changes"]
            assert [(ch["id"], ch["text"]) for ch in changes] == [
                (1, "from before"),
                (2, "edited"),
                (new["id"], "after"),
            ]
            unsigned, edited, fresh = changes
            assert "proof" not in unsigned  # stored before proofs: unverified
            assert not verify_post(key, "lobby", unsigned)
            assert (unsigned["name"], unsigned["posted"]) == ("A", 5)
            assert edited["proof"]["method"] == "edit"
            assert verify_post(key, "lobby", edited)
            assert verify_post(key, "lobby", fresh)

    run(scenario())
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(posts)")]
    assert columns[-5:] == ["proof_method", "proof_params", "proof_ts", "proof_nonce", "proof_sig"]
    assert CommunityDb(data_dir / DB_FILE).schema_version == SCHEMA_VERSION  # opens again as is


# --- moderation --------------------------------------------------------------------------------


def test_a_moderator_deletes_another_users_post_and_a_user_may_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("lobby")
            alice, bob, mod = Signer(), Signer(), Signer()
            c.make_moderator(mod, "lobby")
            post = await c.client.ok(alice, "post", {"room": "lobby", "text": "spam"})
            await c.client.refused(bob, "delete", {"room": "lobby", "id": post["id"]}, 403)
            await c.client.ok(mod, "delete", {"room": "lobby", "id": post["id"]})
            assert c.post_count() == 0
            room = await c.client.ok(mod, "room", {"room": "lobby"})
            assert room["you"] == {"moderator": True, "admin": False}
            assert room["moderators"] == [mod.pubkey]

    run(scenario())


def test_a_ban_refuses_posts_reactions_and_edits_storing_nothing_and_an_unban_lifts_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("lobby")
            alice, troll, mod = Signer(), Signer(), Signer()
            c.make_moderator(mod, "lobby")
            kept = await c.client.ok(troll, "post", {"room": "lobby", "text": "before"})
            target = await c.client.ok(alice, "post", {"room": "lobby", "text": "hello"})
            await c.client.refused(troll, "ban", {"room": "lobby", "user": alice.pubkey}, 403)
            banned = await c.client.ok(mod, "ban", {"room": "lobby", "user": troll.pubkey})
            assert banned == {"changed": True}
            seqno = c.db.room("lobby").seqno  # type: ignore[union-attr]
            error = await c.client.refused(troll, "post", {"room": "lobby", "text": "x"}, 403)
            assert "banned" in error
            react = {"room": "lobby", "id": target["id"], "emoji": "💩"}
            await c.client.refused(troll, "react", react, 403)
            edit = {"room": "lobby", "id": kept["id"], "text": "edited"}
            await c.client.refused(troll, "edit", edit, 403)
            await c.client.refused(troll, "room", {"room": "lobby"}, 403)
            polled = await c.client.ok(troll, "poll", {"rooms": {"lobby": 0}})
            assert polled["rooms"]["lobby"]["status"] == 403
            assert c.post_count() == 2
            assert c.db.room("lobby").seqno == seqno  # type: ignore[union-attr]
            view = await c.client.ok(alice, "poll", {"rooms": {"lobby": 0}})
            assert [ch["text"] for ch in view["rooms"]["lobby"]["changes"]] == ["before", "hello"]
            await c.client.refused(mod, "ban", {"room": "lobby", "user": "25" + "00" * 32}, 400)
            await c.client.refused(mod, "ban", {"room": "lobby", "user": mod.pubkey}, 403)
            assert await c.client.ok(mod, "unban", {"room": "lobby", "user": troll.pubkey}) == {
                "changed": True
            }
            assert await c.client.ok(mod, "unban", {"room": "lobby", "user": alice.pubkey}) == {
                "changed": False
            }
            await c.client.ok(troll, "post", {"room": "lobby", "text": "sorry"})
            await c.client.ok(troll, "react", react)
            assert c.post_count() == 3

    run(scenario())


def test_global_and_room_moderators_and_admins_each_act_only_within_their_scope(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("a")
            c.add_room("b")
            room_mod, room_admin, global_mod, global_admin = Signer(), Signer(), Signer(), Signer()
            user, other = Signer(), Signer()
            c.make_moderator(room_mod, "a")
            c.make_moderator(room_admin, "a", admin=True)
            c.make_moderator(global_mod)
            c.make_moderator(global_admin, admin=True)
            in_b = await c.client.ok(user, "post", {"room": "b", "text": "b"})
            # a room moderator: room a only, no server-wide ban, no moderator changes
            await c.client.ok(room_mod, "ban", {"room": "a", "user": user.pubkey})
            await c.client.refused(room_mod, "ban", {"room": "b", "user": user.pubkey}, 403)
            await c.client.refused(room_mod, "ban", {"global": True, "user": user.pubkey}, 403)
            await c.client.refused(room_mod, "delete", {"room": "b", "id": in_b["id"]}, 403)
            await c.client.refused(
                room_mod, "add_moderator", {"room": "a", "user": other.pubkey}, 403
            )
            await c.client.ok(user, "post", {"room": "b", "text": "still fine in b"})
            await c.client.refused(user, "post", {"room": "a", "text": "x"}, 403)
            # a global moderator: every room and server-wide bans
            await c.client.ok(global_mod, "delete", {"room": "b", "id": in_b["id"]})
            await c.client.ok(global_mod, "ban", {"global": True, "user": user.pubkey})
            await c.client.refused(user, "post", {"room": "b", "text": "x"}, 403)
            await c.client.refused(user, "inbox_send", {"to": other.pubkey, "data": "AA=="}, 403)
            await c.client.ok(global_mod, "unban", {"global": True, "user": user.pubkey})
            await c.client.refused(
                global_mod, "add_moderator", {"room": "b", "user": other.pubkey}, 403
            )
            await c.client.refused(
                global_mod, "ban", {"global": True, "user": global_admin.pubkey}, 403
            )
            # a room admin: moderators of its room only
            await c.client.ok(room_admin, "add_moderator", {"room": "a", "user": other.pubkey})
            await c.client.refused(
                room_admin, "add_moderator", {"room": "b", "user": other.pubkey}, 403
            )
            await c.client.refused(
                room_admin, "add_moderator", {"global": True, "user": other.pubkey}, 403
            )
            assert other.pubkey in (await c.client.ok(other, "room", {"room": "a"}))["moderators"]
            assert (await c.client.ok(other, "room", {"room": "b"}))["you"]["moderator"] is False
            # a global admin: anything, server-wide
            params = {"global": True, "user": other.pubkey, "admin": True}
            assert (await c.client.ok(global_admin, "add_moderator", params))["changed"]
            info_b = await c.client.ok(user, "room", {"room": "b"})
            assert other.pubkey in info_b["admins"]
            await c.client.ok(other, "ban", {"room": "b", "user": user.pubkey})
            await c.client.ok(
                global_admin, "remove_moderator", {"global": True, "user": other.pubkey}
            )
            await c.client.ok(room_admin, "remove_moderator", {"room": "a", "user": other.pubkey})
            await c.client.refused(other, "unban", {"room": "b", "user": user.pubkey}, 403)
            await c.client.refused(
                global_admin, "ban", {"room": "a", "global": True, "user": user.pubkey}, 400
            )
            await c.client.refused(global_admin, "ban", {"user": user.pubkey}, 400)

    run(scenario())


def test_a_read_only_room_takes_posts_from_moderators_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("news", read_only=True)
            user, mod = Signer(), Signer()
            c.make_moderator(mod, "news")
            error = await c.client.refused(user, "post", {"room": "news", "text": "x"}, 403)
            assert "read-only" in error
            post = await c.client.ok(mod, "post", {"room": "news", "text": "news!"})
            await c.client.refused(
                user, "react", {"room": "news", "id": post["id"], "emoji": "👍"}, 403
            )
            polled = await c.client.ok(user, "poll", {"rooms": {"news": 0}})
            assert [ch["text"] for ch in polled["rooms"]["news"]["changes"]] == ["news!"]
            assert c.post_count() == 1

    run(scenario())


def test_posts_past_the_rate_get_429_and_oversized_posts_a_clear_413(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c", post_rate=3, max_post_bytes=100) as c:
            c.add_room("a")
            c.add_room("b")
            alice, bob = Signer(), Signer()
            for index in range(3):
                await c.client.ok(alice, "post", {"room": "a", "text": str(index)})
            error = await c.client.refused(alice, "post", {"room": "a", "text": "x"}, 429)
            assert "at most 3 posts per 16 s" in error
            await c.client.ok(alice, "post", {"room": "b", "text": "other room"})
            await c.client.ok(bob, "post", {"room": "a", "text": "other user"})
            error = await c.client.refused(bob, "post", {"room": "a", "text": "é" * 51}, 413)
            assert error == "text is 102 bytes; a post is at most 100"
            await c.client.ok(bob, "post", {"room": "a", "text": "é" * 50})
            assert c.post_count() == 6

    run(scenario())


# --- bad requests ------------------------------------------------------------------------------


def test_bad_requests_get_clear_errors_and_store_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c") as c:
            c.add_room("lobby")
            client, alice = c.client, Signer()
            params = {"room": "lobby", "text": "x"}
            good = sign_request(alice, client.server_key, "post", params)
            # random bytes, and a request sealed to another key: HTTP 400, empty body
            for body in (b"", b"\x01" + bytes(200), bytes(range(256))):
                assert await client.raw(body) == (400, b"")
            other = _core.x25519_public_key(_core.x25519_generate_secret())
            sealed, _ = seal_request(other, good)
            assert await client.raw(sealed) == (400, b"")
            # a forged signature: another user's, or the request changed after signing
            forged = {**good, "pubkey": Signer().pubkey}
            assert (await client.sealed(forged))["status"] == 401
            changed = {**good, "params": {"room": "lobby", "text": "y"}}
            assert (await client.sealed(changed))["status"] == 401
            other_server = sign_request(alice, other, "post", params)
            assert (await client.sealed(other_server))["status"] == 401
            # stale or future timestamps
            for skew in (-61_000, 61_000):
                stale = sign_request(
                    alice, client.server_key, "post", params, ts_ms=good["ts"] + skew
                )
                answer = await client.sealed(stale)
                assert answer["status"] == 425
                assert "the server's clock" in answer["error"]
            # malformed JSON inside a good envelope: a sealed 400
            for plaintext in (b"{not json", b"[1, 2]", b'"x"', b"\xff\xfe"):
                body, key = _seal_raw(client.server_key, plaintext)
                status, content = await client.raw(body)
                assert status == 200
                answer = open_answer(key, content)
                assert answer["status"] == 400
                assert answer["error"].startswith("the request is not")
            for request, status in (
                ({"method": "post", "params": params}, 401),  # unsigned
                ({**good, "pubkey": "25" + "ff" * 32}, 401),  # not a point
                ({**good, "pubkey": "05" + alice.pubkey[2:]}, 401),
                ({**good, "nonce": "AAAA"}, 400),
                ({**good, "sig": "!!"}, 400),
                ({**good, "ts": "now"}, 400),
                ({**good, "extra": 1}, 400),
                ({**good, "method": "nope"}, 404),
                ({**good, "params": []}, 400),
            ):
                answer = await client.sealed(request)
                assert answer["status"] == status, (request, answer)
            assert c.post_count() == 0
            # the good request once; its replay (the same nonce) is refused
            assert (await client.sealed(good))["status"] == 200
            replayed = await client.sealed(good)
            assert replayed["status"] == 425
            assert "nonce was already used" in replayed["error"]
            assert c.post_count() == 1
            # signed before the server started
            early = sign_request(
                alice, client.server_key, "post", params, ts_ms=c.server.rpc.started_ms - 1
            )
            assert (await client.sealed(early))["status"] == 425
            assert c.post_count() == 1
            # a path or method the server does not serve
            async with client.http.get(client.endpoint) as answer:
                assert answer.status == 405
            async with client.http.post(client.endpoint + "x", data=b"x") as answer:
                assert answer.status == 404

    run(scenario())


def _seal_raw(server_key: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """An envelope around any plaintext (seal_request takes JSON objects only)."""
    secret = _core.x25519_generate_secret()
    ephemeral = _core.x25519_public_key(secret)
    key = _core.blake2b(_core.x25519(secret, server_key) + ephemeral + server_key, 32)
    nonce = bytes(24)
    header = b"\x01" + ephemeral
    return header + nonce + _core.xchacha20poly1305_encrypt(key, nonce, plaintext, header), key


# --- inbox --------------------------------------------------------------------------------------


def test_the_inbox_carries_ciphertext_between_two_blinded_ids_and_a_third_sees_nothing(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path / "c", inbox_max_bytes=64, inbox_poll_max=2) as c:
            alice, bob, eve = Signer(), Signer(), Signer()
            blobs = [bytes([i]) * (10 + i) for i in range(3)]
            ids = []
            for blob in blobs:
                sent = await c.client.ok(
                    alice, "inbox_send", {"to": bob.pubkey, "data": base64.b64encode(blob).decode()}
                )
                ids.append(sent["id"])
            first = await c.client.ok(bob, "inbox_poll", {"since": 0})
            assert first["more"] is True
            assert [m["id"] for m in first["messages"]] == ids[:2]
            assert all(m["from"] == alice.pubkey for m in first["messages"])
            rest = await c.client.ok(bob, "inbox_poll", {"since": ids[1]})
            assert rest["more"] is False
            got = [base64.b64decode(m["data"]) for m in first["messages"] + rest["messages"]]
            assert got == blobs
            assert await c.client.ok(eve, "inbox_poll", {}) == {"messages": [], "more": False}
            assert (await c.client.ok(alice, "inbox_poll", {"since": 0}))["messages"] == []
            big = base64.b64encode(bytes(65)).decode()
            await c.client.refused(alice, "inbox_send", {"to": bob.pubkey, "data": big}, 413)
            await c.client.refused(alice, "inbox_send", {"to": bob.pubkey, "data": "A"}, 400)
            await c.client.refused(
                alice, "inbox_send", {"to": "25" + "00" * 32, "data": "AA=="}, 400
            )
            await c.client.refused(None, "inbox_poll", {}, 401)

    run(scenario())


# --- the command line ----------------------------------------------------------------------------


def _veil(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", "community", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_init_add_room_add_moderator_and_rooms_as_processes(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    made = _veil("init", "--data-dir", str(data_dir), "--url", "https://chat.example.org/")
    assert made.returncode == 0, made.stderr
    server_key = re.search(r"server key\s+([0-9a-f]{64})", made.stdout)
    assert server_key is not None
    assert "url         https://chat.example.org\n" in made.stdout
    assert (data_dir / "community.key").stat().st_mode & 0o777 == 0o600
    assert _veil("init", "--data-dir", str(data_dir)).returncode == 1  # never overwrites
    room = _veil("add-room", "--data-dir", str(data_dir), "lobby", "The Lobby", "--read-only")
    assert room.returncode == 0, room.stderr
    link = re.search(r"join link\s+(\S+)", room.stdout)
    assert link is not None
    parsed = parse_link(link.group(1))
    assert (parsed.url, parsed.room, parsed.server_key.hex()) == (
        "https://chat.example.org",
        "lobby",
        server_key.group(1),
    )
    assert "█" in room.stdout  # the QR code
    assert _veil("add-room", "--data-dir", str(data_dir), "lobby", "Again").returncode == 1
    bad = _veil("add-room", "--data-dir", str(data_dir), "no spaces", "x")
    assert bad.returncode == 1
    assert "room token" in bad.stderr
    mod = Signer().pubkey
    added = _veil("add-moderator", "--data-dir", str(data_dir), mod, "--room", "lobby", "--admin")
    assert added.returncode == 0, added.stderr
    assert _veil("add-moderator", "--data-dir", str(data_dir), "25" + "00" * 32).returncode == 1
    listed = _veil("rooms", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    assert "lobby  The Lobby  posts=0 seqno=1 read-only" in listed.stdout
    assert link.group(1) in listed.stdout
    assert _veil("rooms", "--data-dir", str(tmp_path / "none")).returncode == 1


def test_run_serves_sealed_requests_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    made = _veil("init", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
    assert made.returncode == 0, made.stderr
    assert _veil("add-room", "--data-dir", str(data_dir), "lobby", "Lobby").returncode == 0
    server_key = bytes.fromhex(made.stdout.split()[2])
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "veil", "community", "run", "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = _wait_for_port(log_path, process)
            body, key = seal_request(server_key, {"method": "rooms", "params": {}})
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1", data=body)
            with urllib.request.urlopen(request, timeout=5) as answer:
                rooms = open_answer(key, answer.read())
            assert rooms["body"][0]["token"] == "lobby"
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    urllib.request.Request(f"http://127.0.0.1:{port}/v1", data=b"junk"), timeout=5
                )
            assert refused.value.code == 400
            assert refused.value.read() == b""
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [orjson.loads(line) for line in log_path.read_text().splitlines()]
    assert any(line["msg"] == "community server stopped" for line in lines)
    text = log_path.read_text()
    assert "Traceback" not in text
    assert "127.0.0.1:" + str(port) in text  # the listen address, the only address it logs
    answers = next(line["answers"] for line in lines if line["msg"] == "answers")
    assert answers == {"(sealed) 400": 1, "rooms 200": 1}


def _wait_for_port(log_path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        for line in log_path.read_text().splitlines():
            if '"community server listening"' in line:
                return int(orjson.loads(line)["listen"].rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("the server did not start in time")


# --- the worked example of docs/community.md ---------------------------------------------------


def _example() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### Worked example", 1)[1]
    block = re.findall(r"```\n(.*?)```", section, flags=re.S)[0]
    values: dict[str, str] = {}
    label = ""
    for line in block.splitlines():
        if line.startswith(" ") and label:
            values[label] += line.strip()
            continue
        label, _, rest = line.partition(":")
        label = label.strip()
        values[label] = rest.strip()
    return values


def test_the_worked_example_of_the_document_follows_from_its_inputs() -> None:
    v = _example()
    server_secret = bytes.fromhex(v["server secret s"])
    server_key = _core.x25519_public_key(server_secret)
    assert server_key.hex() == v["server key S"]
    signer = Signer(Identity(bytes.fromhex(v["user seed"])))
    assert signer.pubkey == v["pubkey"]
    params = orjson.loads(v["params"])
    nonce = bytes.fromhex(v["request nonce"])
    signed = sign_request(signer, server_key, "post", params, ts_ms=int(v["ts"]), nonce=nonce)
    string = request_string(server_key, "post", params, int(v["ts"]), nonce)
    assert string.hex() == v["signed string"]
    assert signed["sig"] == v["sig"]
    request_json = orjson.dumps(signed)
    assert request_json.decode() == v["request JSON"]
    body, key = seal_request(
        server_key,
        signed,
        ephemeral_secret=bytes.fromhex(v["ephemeral secret e"]),
        nonce=bytes.fromhex(v["envelope nonce"]),
    )
    assert body[1:33].hex() == v["ephemeral E"]
    shared = _core.x25519(bytes.fromhex(v["ephemeral secret e"]), server_key)
    assert shared.hex() == v["X25519(e, S)"]
    assert key.hex() == v["key k"]
    assert body.hex() == v["request body"]
    answer = seal_answer(
        key, orjson.loads(v["answer JSON"]), nonce=bytes.fromhex(v["answer nonce"])
    )
    assert answer.hex() == v["answer body"]
    opened, opened_key = open_request(server_secret, body)
    assert (opened, opened_key) == (signed, key)


def test_polls_are_recorded_in_batches_and_the_pairs_remembered_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.community import db as db_module  # noqa: PLC0415

    monkeypatch.setattr(db_module, "_TOUCH_MAX_ENTRIES", 100)
    monkeypatch.setattr(db_module, "_TOUCH_BATCH", 50)
    db = CommunityDb(tmp_path / "c.sqlite3")
    room = db.create_room("lobby", "Lobby", "", read_only=False, now_ms=1)
    assert room is not None
    users = [db.user_id(f"25{n:064x}", 1) for n in range(149)]
    commits = 0
    write = db._write

    def counting() -> Any:
        nonlocal commits
        commits += 1
        return write()

    monkeypatch.setattr(db, "_write", counting)
    for user in users[:49]:
        db.touch(room.id, user, 1_000)
    assert commits == 0  # waiting for the batch
    assert db.active_users(room.id, 0) == 49  # counting writes what waits first
    assert commits == 1
    for user in users[49:]:  # 100 more: two batches of 50
        db.touch(room.id, user, 1_000)
    assert commits == 3
    # 149 pairs seen, 100 remembered: the oldest are forgotten, not all of them. A pair still
    # remembered is not written again within the minute; a forgotten one is.
    db.touch(room.id, users[148], 2_000)
    db.touch(room.id, users[0], 2_000)
    db.flush_touches()
    assert commits == 4
    assert db.active_users(room.id, 1_500) == 1  # only the forgotten pair was written again
    db.close()
