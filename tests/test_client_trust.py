"""What a client trusts — its network file's authority keys, and nothing else — and what it does
with what seeds and nodes tell it (``docs/messenger.md``, "Finding the network" and "Guards").

- A seed that lies (a bare node list, a consensus signed by strangers or by one authority of three,
  an expired one, one of another network, a signed one with a node slipped in, junk, 100 MB) is
  refused, and the ``veil`` command says why in one line; a lying seed is passed over for an
  honest one, and a consensus saved in the home is checked again like any other.
- Swarm members that lie (hashes such as ``_all…``, junk data under a real hash, timestamps of the
  wrong type or from the future, 100 MB answers, error texts full of escape sequences, stores
  acknowledged with forged signed results, results signed by strangers, or too few) leave the
  client correct: the real messages shown and nothing else, no signed string a node chose, a store
  that is not acknowledged not counted as sent, every error one clean line.
- Guards are kept in the home across runs, are not replaced when requests through them fail, are
  replaced when the consensus no longer lists them as Guards, and rotate after their lifetime.
- Redirects, from a seed or from a guard, are not followed; a guard's answer is read up to a bound.

The ``421`` hint (never a member list adopted) is covered in ``test_fuzz_client_answers.py``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from client_helpers import consensus_of, directory_of, network_of, signed_by
from node_helpers import StubAuthorities, now_ms, run, start_network, stop_network
from veil import _core
from veil.cli import main as veil_main
from veil.client.bootstrap import find_seeds, network_path, open_directory
from veil.client.directory import ClientDirectory, ConsensusRefused
from veil.client.guards import GUARD_LIFETIME_MS, GuardSet
from veil.client.home import ClientHome
from veil.client.http import client_session
from veil.client.messaging import Messenger
from veil.client.network import NetworkClient, NetworkError
from veil.client.swarm import StoreError, SwarmClient
from veil.identity import Identity
from veil.node.server import Node
from veil.protocol import storage_rpc
from veil.protocol.announcement import Announcement, sign_announcement
from veil.protocol.hashes import (
    cursor_decode,
    cursor_encode,
    hash_b64,
    hash_from_b64,
    message_hash,
)
from veil.protocol.peers import PeerInfo
from veil.protocol.replication import receipt_bytes

MiB = 1024 * 1024
# What a terminal acts on: C0 controls but tab and newline, DEL, C1 controls.
CONTROLS = frozenset(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (9, 10))
HOSTILE_TEXT = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202e\x9b1m" + "line\r\n" * 40


def _announce(identity: Identity, http: str = "127.0.0.1:9") -> Announcement:
    return sign_announcement(
        identity, http=http, link="127.0.0.1:9", version="1", issued_ms=now_ms()
    )


def _sybils(count: int = 5) -> list[Announcement]:
    return [_announce(Identity.generate()) for _ in range(count)]


# --- an HTTP server of the test's own: a lying seed, a guard, a redirect's target ----------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Stub:
    """An HTTP server on a free loopback port: ``handler`` answers every request; ``hits`` lists
    the paths asked."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.hits: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        return await self.handler(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@asynccontextmanager
async def stub(handler: Handler) -> AsyncIterator[Stub]:
    server = Stub(handler)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def json_answer(document: object) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(document)

    return handler


def huge_answer(size: int, *, declared: bool, written: list[int]) -> Handler:
    """A 200 of ``size`` bytes (its length declared, or chunked), written 1 MiB at a time until
    the other side stops reading; how much was written is appended to ``written``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if declared:
            response.content_length = size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        chunk = b"\0" * MiB
        try:
            while sent < size:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        written.append(sent)
        return response

    return handler


def redirect_to(target: str, status: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": f"http://{target}{request.path}"})

    return handler


# --- the veil command, run as a user runs it ------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("VEIL_NETWORK", "VEIL_SEEDS", "VEIL_GUARD_LIFETIME", "VEIL_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .devnet/ here


async def veil(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``veil ARGV`` in a thread of its own (it runs its own event loop, while this test's loop
    serves the nodes and stubs it talks to): exit code, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(veil_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def account(capsys: pytest.CaptureFixture[str], home: Path) -> str:
    """A new account in ``home`` (``veil init``, offline); its Session ID."""
    assert veil_main(["init", "--home", str(home)]) == 0
    return capsys.readouterr().out.split("Your Session ID: ")[1].split()[0]


def one_clean_line(err: str, prefix: str) -> str:
    """``err`` is one line starting with ``prefix``, with nothing a terminal acts on; its text."""
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not CONTROLS & set(err[:-1]), err
    assert err.startswith(prefix), err
    return err[len(prefix) :].strip()


# --- a seed that lies -----------------------------------------------------------------------------


def _lies(authorities: StubAuthorities) -> dict[str, tuple[Any, str]]:
    """Documents a lying seed may serve, each with what the client says of it."""
    network, signers = authorities.network, authorities.identities
    period = network.period_at(now_ms())
    sybils = _sybils()
    honest = signed_by(consensus_of(network, _sybils(3), period), signers).to_json()
    slipped = json.loads(json.dumps(honest))
    slipped["consensus"]["nodes"].append(
        {**sybils[0].to_json(), "admitted": period, "placement": "00" * 32, "guard": True}
    )
    slipped["consensus"]["nodes"].sort(key=lambda node: node["ed25519"])
    strangers = [Identity.generate() for _ in signers]
    return {
        "a bare node list": (
            {"nodes": [a.to_json() for a in sybils]},
            "is not one: a consensus is a JSON object of version 1",
        ),
        "signed by strangers": (
            signed_by(consensus_of(network, sybils, period), strangers).to_json(),
            "is signed by 0 of the network's 3 authorities; it needs 2",
        ),
        "all Sybils, signed by 1 of 3": (
            signed_by(consensus_of(network, sybils, period), signers[:1]).to_json(),
            "is signed by 1 of the network's 3 authorities; it needs 2",
        ),
        "a node slipped into a signed one": (
            slipped,
            "is signed by 0 of the network's 3 authorities; it needs 2",
        ),
        "expired": (
            signed_by(consensus_of(network, sybils, period - 20_000), signers).to_json(),
            "expired at",
        ),
        "of another network": (
            signed_by(
                dataclasses.replace(consensus_of(network, sybils, period), network="other"),
                signers,
            ).to_json(),
            "is of network 'other', not 'test'",
        ),
    }


LIES = [
    "a bare node list",
    "signed by strangers",
    "all Sybils, signed by 1 of 3",
    "a node slipped into a signed one",
    "expired",
    "of another network",
]


@pytest.mark.parametrize("lie", LIES)
def test_a_seed_that_lies_is_refused_and_the_command_says_why_in_one_line(
    lie: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    document, reason = _lies(authorities)[lie]
    home = tmp_path / "home"
    account(capsys, home)

    async def main() -> None:
        async with stub(json_answer(document)) as seed:
            with pytest.raises(ConsensusRefused) as refused:
                await open_directory(authorities.network, [seed.address], ClientHome(home))
            assert str(refused.value).startswith(f"the consensus from {seed.address} ")
            assert reason in str(refused.value)
            code, out, err = await veil(
                capsys,
                "inbox",
                "--home",
                str(home),
                "--network",
                str(authorities.path),
                "--seed",
                seed.address,
            )
            assert code == 1
            assert out == ""
            said = one_clean_line(err, f"veil inbox: the consensus from {seed.address} ")
            assert reason in said
            assert seed.hits == ["/consensus", "/consensus"]
        assert not (home / "consensus.json").exists()  # nothing taken, nothing saved
        assert not (home / "guards.json").exists()

    run(main())


def test_what_is_not_a_consensus_at_all_is_refused_in_one_line_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    home = tmp_path / "home"
    account(capsys, home)
    written: list[int] = []

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>\x1b[2Jhello</html>", content_type="text/html")

    async def main() -> None:
        network = ["--network", str(authorities.path)]
        async with (
            stub(html) as junk,
            stub(huge_answer(100 * MiB, declared=False, written=written)) as huge,
        ):
            for seed, reason in [
                (junk, f"the answer from {junk.address} is not JSON"),
                (huge, f"the answer from {huge.address} is larger than 16 MiB"),
            ]:
                code, _, err = await veil(
                    capsys, "inbox", "--home", str(home), *network, "--seed", seed.address
                )
                assert code == 1
                assert one_clean_line(err, "veil inbox: ") == reason
        assert written
        assert max(written) < 100 * MiB  # the client stopped reading
        # No network file: none given, none in the environment, no .devnet/ here.
        code, _, err = await veil(capsys, "inbox", "--home", str(home))
        assert code == 1
        assert one_clean_line(err, "veil inbox: ").startswith("no network given: use --network")
        (tmp_path / "broken.json").write_text("{", encoding="utf-8")
        code, _, err = await veil(
            capsys, "inbox", "--home", str(home), "--network", str(tmp_path / "broken.json")
        )
        assert code == 1
        assert one_clean_line(err, "veil inbox: ").startswith("the network file ")

    run(main())


def test_a_lying_seed_is_passed_over_and_a_saved_consensus_is_checked_again(
    tmp_path: Path,
) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    network, signers = authorities.network, authorities.identities
    period = network.period_at(now_ms())
    honest = signed_by(consensus_of(network, _sybils(4), period), signers)
    older = signed_by(consensus_of(network, _sybils(4), period - 1), signers)
    sybil = signed_by(consensus_of(network, _sybils(4), period + 1), signers[:1])
    lies = _lies(authorities)
    home = ClientHome(tmp_path / "home")
    home.root.mkdir(mode=0o700)
    serving: dict[str, object] = {"liar": lies["all Sybils, signed by 1 of 3"][0]}

    async def liar_answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(serving["liar"])

    async def main() -> None:
        async with stub(liar_answer) as liar, stub(json_answer(honest.to_json())) as good:
            directory = await open_directory(network, [liar.address, good.address], home)
            assert directory.consensus == honest.consensus
            assert liar.hits == good.hits == ["/consensus"]
            assert home.saved_consensus() == json.loads(json.dumps(honest.to_json()))
            # The next run takes the saved one, checked: no seed is asked.
            again = await open_directory(network, [liar.address], home)
            assert again.consensus == honest.consensus
            assert liar.hits == ["/consensus"]
            # Nothing a seed serves replaces it unless the authorities made it newer.
            async with client_session() as session:
                for document in [older.to_json(), *(lie for lie, _ in lies.values())]:
                    serving["liar"] = document
                    assert not await again.fetch_from_seeds(session)
                    assert again.consensus == honest.consensus
                serving["liar"] = sybil.to_json()  # "newer", and signed by one
                assert not await again.fetch_from_seeds(session)
                assert again.consensus == honest.consensus
            assert not again.adopt(older)
            # A saved consensus changed on disk is refused like one from a seed.
            tampered = json.loads(home.consensus_path.read_text())
            slipped = lies["a node slipped into a signed one"][0]
            tampered["consensus"]["nodes"] = slipped["consensus"]["nodes"]
            home.consensus_path.write_text(json.dumps(tampered))
            serving["liar"] = lies["expired"][0]
            with pytest.raises(ConsensusRefused, match="expired at"):
                await open_directory(network, [liar.address], home)
            fetched = await open_directory(network, [good.address], home)
            assert fetched.consensus == honest.consensus
            # A consensus saved for another network file is refused too.
            others = StubAuthorities(tmp_path / "others")
            with pytest.raises(ConsensusRefused, match="signed by 0 of the network's 3"):
                await open_directory(others.network, [good.address], home)

    run(main())


# --- redirects and answers past the bound ------------------------------------------------------


def test_a_redirect_from_a_seed_is_not_followed(tmp_path: Path) -> None:
    authorities = StubAuthorities(tmp_path / "authorities")
    network = authorities.network
    honest = signed_by(
        consensus_of(network, _sybils(4), network.period_at(now_ms())), authorities.identities
    )

    async def main() -> None:
        async with stub(json_answer(honest.to_json())) as target:
            for status in (301, 302, 303, 307, 308):
                async with stub(redirect_to(target.address, status)) as seed:
                    with pytest.raises(ConsensusRefused) as refused:
                        await open_directory(network, [seed.address], None)
                    assert str(refused.value) == (
                        f"{seed.address} answered {status} for the consensus"
                    )
            assert target.hits == []

    run(main())


@asynccontextmanager
async def _behind_a_guard(
    handler: Handler,
) -> AsyncIterator[tuple[Stub, NetworkClient, list[PeerInfo]]]:
    """A network client whose only guard is ``handler`` (the consensus's one Guard node; three
    other nodes, unreachable, are the relays and destinations)."""
    signers = [Identity.generate() for _ in range(3)]
    network = network_of(signers, period_s=1e6)  # fresh for the whole test: no refresh
    async with stub(handler) as guard:
        guard_node = _announce(Identity.generate(), guard.address)
        others = _sybils(3)
        consensus = consensus_of(
            network,
            [guard_node, *others],
            network.period_at(now_ms()),
            guards={guard_node.ed25519},
        )
        directory = ClientDirectory(network, signed_by(consensus, signers))
        async with NetworkClient(directory, attempts=3) as client:
            assert client.guard_set.ids == [guard_node.ed25519]
            assert client.guard_set.shortfall == 2
            yield guard, client, [PeerInfo.of(a) for a in others]


def test_a_redirect_from_a_guard_is_not_followed_nor_the_guard_replaced(tmp_path: Path) -> None:
    async def main() -> None:
        async with stub(json_answer({})) as target:
            for status in (302, 307, 308):
                async with _behind_a_guard(redirect_to(target.address, status)) as (
                    guard,
                    client,
                    others,
                ):
                    before = client.guard_set.to_json()
                    with pytest.raises(NetworkError, match="in 3 attempts"):
                        await client.request(others[0], "retrieve", {})
                    assert guard.hits == ["/onion2"] * 3  # a create each time, never followed
                    assert client.guard_set.to_json() == before
            assert target.hits == []

    run(main())


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
def test_a_guard_that_answers_100_MB_is_cut_off_at_the_bound(
    tmp_path: Path, declared: bool
) -> None:
    written: list[int] = []

    async def main() -> None:
        answer = huge_answer(100 * MiB, declared=declared, written=written)
        async with _behind_a_guard(answer) as (guard, client, others):
            with pytest.raises(NetworkError, match="larger than 16 MiB"):
                await client.request(others[0], "retrieve", {})
            assert len(guard.hits) == 3
        await asyncio.sleep(0.1)  # the handlers see the connections go
        assert len(written) == 3
        assert max(written) < 48 * MiB  # 16 MiB read at most, the rest in socket buffers

    run(main())


@pytest.mark.parametrize("onion", ["circuit", "oneshot"])
def test_a_guard_that_forges_onion_v2_answers_gets_nothing_opened(
    tmp_path: Path, onion: str
) -> None:
    """A guard answers 200 with bytes of the right sizes that it made up: a create's answer that
    no handshake opens, a reply no hop sealed. Nothing opens; the guard is avoided, not replaced."""

    async def forged(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        size = 16 + _core.CELL_CREATE_REPLY_LEN if body[:1] == b"\xc2" else 1024
        return web.Response(body=bytes(random.getrandbits(8) for _ in range(size)))

    async def main() -> None:
        async with _behind_a_guard(forged) as (guard, client, others):
            client.onion = onion
            before = client.guard_set.to_json()
            with pytest.raises(NetworkError, match="did not open"):
                await client.request(others[0], "retrieve", {})
            assert guard.hits == ["/onion2"] * 3
            assert client.circuits_opened == 0
            assert client.guard_set.to_json() == before

    run(main())


# --- swarm members that lie -----------------------------------------------------------------------


async def _network(tmp_path: Path, size: int = 6) -> tuple[StubAuthorities, list[Node]]:
    authorities = StubAuthorities(tmp_path / "authorities")
    return authorities, await start_network(authorities, tmp_path, size)


Call = Callable[..., Awaitable[tuple[int, Any]]]


def _intercept(
    node: Node, answer: Callable[[Any, Call], Awaitable[tuple[int, Any]] | None]
) -> None:
    """Make ``node`` answer a client's request (not one a peer forwards) with what ``answer``
    returns, given the request and the node's own ``call``; None: as the node would."""
    original = node.rpc.call
    original_body = node.rpc.answer_body

    async def call(request: object, *, forwarded: bool = False) -> tuple[int, Any]:
        if not forwarded:
            made = answer(request, original)
            if made is not None:
                return await made
        return await original(request, forwarded=forwarded)

    async def answer_body(body: bytes) -> tuple[str, int, Any]:
        # A plain store never reaches ``call`` (``_core.plain_store`` reads it): seen here.
        try:
            made = answer(orjson.loads(body), original)
        except orjson.JSONDecodeError:
            made = None
        if made is not None:
            return ("intercepted", *await made)
        return await original_body(body)

    node.rpc.call = call  # type: ignore[method-assign]
    node.rpc.answer_body = answer_body  # type: ignore[method-assign]


def _for(request: Any, method: str, who: Identity) -> bool:
    """Whether ``request`` is a ``method`` of ``who``'s account."""
    if not isinstance(request, dict) or request.get("method") != method:
        return False
    params = request.get("params")
    return isinstance(params, dict) and params.get("pubkey") == who.session_id


def _members(nodes: list[Node], who: Identity) -> list[Node]:
    """The nodes of ``who``'s swarm, as the nodes place it."""
    swarm = {a.ed25519 for a in nodes[0].network.swarm(bytes.fromhex(who.session_id))}
    return [n for n in nodes if n.identity.ed25519_public_key in swarm]


def test_swarm_members_that_lie_about_messages_wipe_hide_and_show_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    signed: list[bytes] = []
    sign = Identity.sign

    def recording(identity: Identity, message: bytes) -> bytes:
        if identity == bob:
            signed.append(message)
        return sign(identity, message)

    monkeypatch.setattr(Identity, "sign", recording)

    async def main() -> None:
        _, nodes = await _network(tmp_path)
        try:
            async with (
                NetworkClient(directory_of(nodes[0])) as net_a,
                NetworkClient(directory_of(nodes[0]), attempts=2) as net_b,
            ):
                a = Messenger(alice, SwarmClient(net_a))
                for text in ("one", "two"):
                    await a.send_text(bob.session_id, text)
                real = await SwarmClient(net_b).retrieve(bob, from_start=True)
                assert len(real) == 2
                real_hashes = {m["hash"] for m in real}
                account = bytes.fromhex(bob.session_id)
                junk = base64.b64encode(b"junk").decode()
                future = now_ms() + 3_600_000
                lies = [
                    {"hash": f"_all{now_ms()}", "timestamp": now_ms(), "data": real[0]["data"]},
                    {"hash": "_all" + "A" * 39, "timestamp": now_ms(), "data": junk},
                    {"hash": "\x1b[2J" + "A" * 39, "timestamp": now_ms(), "data": junk},
                    {**real[0], "data": junk},  # junk under a real message's hash
                    {**real[1], "timestamp": str(real[1]["timestamp"])},
                    {**real[1], "timestamp": float(real[1]["timestamp"])},
                    {**real[1], "timestamp": None},
                    {  # well formed, its hash right, from an hour ahead
                        "hash": hash_b64(message_hash(account, 0, b"junk")),
                        "timestamp": future,
                        "data": junk,
                    },
                ]
                liar, bloated = _members(nodes, bob)[:2]

                def lie(request: Any, call: Call) -> Awaitable[tuple[int, Any]] | None:
                    if not _for(request, "retrieve", bob):
                        return None
                    page = {
                        "messages": lies,
                        "more": False,
                        "cursor": cursor_encode(future * 1000, bytes(32)),  # an arrival, µs
                    }
                    return asyncio.sleep(0, (200, page))

                huge = {"hash": real[0]["hash"], "timestamp": 1, "data": "A" * (100 * MiB)}

                def bloat(request: Any, call: Call) -> Awaitable[tuple[int, Any]] | None:
                    if not _for(request, "retrieve", bob) or "namespace" in request["params"]:
                        return None  # namespace 0 only
                    return asyncio.sleep(0, (200, {"messages": [huge], "more": False}))

                _intercept(liar, lie)
                _intercept(bloated, bloat)
                b = Messenger(bob, SwarmClient(net_b, read_members=5))  # every member read
                got = await b.fetch()
                assert [(e.sender, e.body) for e in got] == [
                    (alice.session_id, "one"),
                    (alice.session_id, "two"),
                ]
                assert list(b.book.conversations) == [alice.session_id]
                assert b.undecryptable == 0  # nothing the liars sent got as far as opening
                dropped = b.swarm.dropped
                assert dropped["malformed"] >= 6
                assert dropped["wrong_hash"] >= 1
                assert dropped["future"] >= 1
                # Bob signed retrieves, a config store and the delete of what he picked up: no
                # string a node chose, and no delete of anything but the two real messages.
                assert signed
                deletes = [s for s in signed if s.startswith(b"delete")]
                assert deletes
                assert not any(s.startswith(b"delete_all") for s in signed)
                for delete in deletes:
                    hashes = delete[len(b"delete") :].decode()
                    assert len(hashes) % 43 == 0
                    chunks = {hashes[i : i + 43] for i in range(0, len(hashes), 43)}
                    assert all(hash_from_b64(h) for h in chunks)
                    assert chunks <= real_hashes
                # Nothing else wiped: Bob's config is still held, and a new message comes.
                config = await SwarmClient(net_a).retrieve(bob, namespace=2, from_start=True)
                assert len(config) == 1
                await a.send_text(bob.session_id, "three")
                assert [e.body for e in await b.fetch()] == ["three"]
        finally:
            await stop_network(nodes)

    run(main())


def test_a_delete_never_signs_what_is_not_a_message_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    bob = Identity.generate()
    signed: list[bytes] = []
    sign = Identity.sign

    def recording(identity: Identity, message: bytes) -> bytes:
        if identity == bob:
            signed.append(message)
        return sign(identity, message)

    monkeypatch.setattr(Identity, "sign", recording)
    signers = [Identity.generate() for _ in range(3)]
    network = network_of(signers, period_s=1e6)
    members = [Identity.generate() for _ in range(5)]
    consensus = consensus_of(network, [_announce(m) for m in members], network.period_at(now_ms()))
    sent: list[list[str]] = []

    class Answering(SwarmClient):  # members that say they deleted more than they were asked
        async def _write(
            self, account: bytes, method: str, params: dict[str, Any], **_: Any
        ) -> Any:
            sent.append(params["messages"])
            # Signed, and so counted: the hashes asked, and a "hash" of the member's choosing.
            result = {"deleted": [*params["messages"], f"_all{now_ms()}"]}
            text = storage_rpc.member_signed("delete", params["pubkey"], params, result)
            swarm = {
                m.ed25519_public_key.hex(): {
                    **result,
                    "signature": base64.b64encode(m.sign(text)).decode(),
                }
                for m in members[1:]
            }
            # Not even signable: a member that lists what is not a text at all.
            swarm[members[0].ed25519_public_key.hex()] = {
                "deleted": [*params["messages"], None],
                "signature": base64.b64encode(bytes(64)).decode(),
            }
            return {"swarm": swarm}

    async def main() -> None:
        directory = ClientDirectory(network, signed_by(consensus, signers))
        async with NetworkClient(directory) as network_client:
            client = Answering(network_client)
            real = hash_b64(bytes(32))
            hostile = [f"_all{now_ms()}", "\x1b[2J", "", real + "=", real[:-1], "A" * 44]
            assert await client.delete(bob, hostile) == []
            assert sent == []  # nothing left to sign: nothing signed, nothing sent
            assert signed == []
            assert await client.delete(bob, [*hostile, real, real]) == [real]
            assert sent == [[real]]
            assert signed == [f"delete{real}".encode()]
            assert client.dropped["bad_hash"] == 2 * len(hostile)

    run(main())


class _InOrder(random.Random):
    """A random source whose shuffles leave lists as they are (members read in the given order)."""

    def shuffle(self, x: Any, *args: Any) -> None:
        del x, args


@pytest.mark.parametrize("ahead", ["in 2100", "four minutes on"])
def test_a_member_that_makes_up_a_cursor_cannot_make_the_others_skip_a_message(ahead: str) -> None:
    """The only member read first says it is far ahead (a message from four minutes on, which
    passes every check, and a cursor — an arrival in µs — in the year 2100, which the client does
    not take, or four minutes on, which it takes for that member alone); a member read for the
    first time after it still gives the message stored since."""
    bob = Identity.generate()
    account = bytes.fromhex(bob.session_id)
    signers = [Identity.generate() for _ in range(3)]
    network = network_of(signers, period_s=1e6)
    nodes = _sybils(5)
    consensus = consensus_of(network, nodes, network.period_at(now_ms()))
    liar, honest = (PeerInfo.of(a) for a in nodes[:2])
    held: list[tuple[bytes, dict[str, Any]]] = []  # what the honest member holds, by position

    def stored(data: bytes, timestamp: int) -> dict[str, Any]:
        digest = hash_b64(message_hash(account, 0, data))
        return {"hash": digest, "timestamp": timestamp, "data": base64.b64encode(data).decode()}

    class Members(NetworkClient):
        async def request(
            self,
            destination: PeerInfo,
            method: str,
            params: dict[str, Any],
            *,
            onion: str | None = None,
        ) -> tuple[int, Any]:
            assert method == "retrieve"
            if destination == liar:
                made_up = stored(b"made up", now_ms() + 4 * 60_000)
                arrival_us = (
                    4_102_444_800_000_000 if ahead == "in 2100" else (now_ms() + 4 * 60_000) * 1000
                )
                cursor = cursor_encode(arrival_us, bytes(32))
                return 200, {"messages": [made_up], "cursor": cursor, "more": False}
            after = cursor_decode(params["cursor"]) if params.get("cursor") else b""
            page = [(position, m) for position, m in held if position > after]
            answer: dict[str, Any] = {"messages": [m for _, m in page], "more": False}
            if "cursor" in params:  # the position after the page, as a node answers it
                answer["cursor"] = (
                    cursor_encode(int.from_bytes(page[-1][0][:8], "big"), page[-1][0][8:])
                    if page
                    else params["cursor"]
                )
            return 200, answer

    def arrive(message: dict[str, Any]) -> None:
        """The honest member takes ``message`` now (filed under its arrival, in µs)."""
        position = cursor_decode(cursor_encode(now_ms() * 1000, hash_from_b64(message["hash"])))
        held.append((position, message))

    order: list[PeerInfo] = []

    class Pinned(SwarmClient):  # its account's swarm: ``order``, read in that order
        def swarm(self, account: bytes) -> list[PeerInfo]:
            return list(order)

    async def main() -> None:
        directory = ClientDirectory(network, signed_by(consensus, signers))
        async with Members(directory) as members:
            client = Pinned(members, read_members=1, rng=_InOrder())
            order[:] = [liar]
            assert [m["data"] for m in await client.retrieve(bob)] == ["bWFkZSB1cA=="]
            liar_key = f"{account.hex()}:{liar.ed25519.hex()}:0"
            assert (liar_key in client.export_cursors()) == (ahead == "four minutes on")
            await asyncio.sleep(0.01)
            arrive(stored(b"since", now_ms()))
            order[:] = [honest]
            got = await client.retrieve(bob)
            assert [base64.b64decode(m["data"]) for m in got] == [b"since"]
            # Saved and read back, it starts the same way (here without the honest member's
            # cursor, and without the hashes returned lately, which would hold the message back
            # as returned already).
            again = Pinned(members, read_members=1, rng=_InOrder())
            saved = client.export_cursors()
            del saved[f"{account.hex()}:{honest.ed25519.hex()}:0"], saved["recent"]
            again.import_cursors(json.loads(json.dumps(saved)))
            order[:] = [honest]
            assert [base64.b64decode(m["data"]) for m in await again.retrieve(bob)] == [b"since"]

    run(main())


def test_a_421_is_a_hint_followed_once_not_at_every_request() -> None:
    """Members that answer every request with ``421`` and a member list of their choosing: the
    client asks once for a newer consensus, not at each request, and asks no node the list names
    (the swarms stay computed from the consensus held)."""
    bob = Identity.generate()
    signers = [Identity.generate() for _ in range(3)]
    network = network_of(signers, period_s=1e6)
    nodes = _sybils(6)
    signed = signed_by(consensus_of(network, nodes, network.period_at(now_ms())), signers)
    strangers = _sybils(5)
    asked: list[tuple[str, bytes]] = []

    class Members(NetworkClient):
        async def request(
            self,
            destination: PeerInfo,
            method: str,
            params: dict[str, Any],
            *,
            onion: str | None = None,
        ) -> tuple[int, Any]:
            asked.append((method, destination.ed25519))
            if method == "get_consensus":
                return 200, signed.to_json()  # the same one: none newer
            return 421, _swarm_of(strangers)

    async def main() -> None:
        async with Members(ClientDirectory(network, signed)) as members:
            client = SwarmClient(members)
            for _ in range(5):
                assert await client.retrieve(bob) == []
            with pytest.raises(StoreError):
                await client.store(bob.session_id, b"x", ttl_ms=60_000)
        assert [m for m, _ in asked].count("get_consensus") == 1
        assert {node for _, node in asked} <= {a.ed25519 for a in nodes}
        assert len(asked) == 1 + 5 * 3 + 3

    run(main())


def _swarm_of(announcements: list[Announcement]) -> dict[str, Any]:
    """A ``421`` answer naming ``announcements`` as the account's swarm (``get_swarm``'s form)."""
    snodes = [
        {
            "ip": "127.0.0.1",
            "port": "9",
            "port_https": 9,
            "pubkey_ed25519": a.ed25519.hex(),
            "pubkey_x25519": a.x25519.hex(),
            "pubkey_legacy": a.ed25519.hex(),
        }
        for a in announcements
    ]
    return {"snodes": snodes, "swarm": "00" * 8, "t": now_ms(), "hf": [19, 4]}


def _forged(swarm: dict[str, Any]) -> dict[str, Any]:
    """Every member's signed result, its signature replaced by 64 zero bytes."""
    zeros = base64.b64encode(bytes(64)).decode()
    return {member: {**result, "signature": zeros} for member, result in swarm.items()}


def _strangers(swarm: dict[str, Any], digest: bytes) -> dict[str, Any]:
    """Signed results that verify, for the right hash, signed by keys of no member of the swarm."""
    forged: dict[str, Any] = {}
    for result in swarm.values():
        forger = Identity.generate()
        signature = base64.b64encode(forger.sign(receipt_bytes(digest))).decode()
        forged[forger.ed25519_public_key.hex()] = {**result, "signature": signature}
    return forged


@pytest.mark.parametrize(
    "lie", ["forged signatures", "signatures of strangers", "one signed result", "ansi"]
)
def test_a_store_the_swarm_does_not_acknowledge_is_not_sent(
    lie: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    account(capsys, alice_home)
    bob_id = account(capsys, bob_home)
    bob = ClientHome(bob_home).identity()
    alice = ClientHome(alice_home).identity()

    def tamper(request: Any, call: Call) -> Awaitable[tuple[int, Any]] | None:
        if not _for(request, "store", bob):
            return None

        async def answer() -> tuple[int, Any]:
            if lie == "ansi":
                return 400, HOSTILE_TEXT
            status, body = await call(request)
            assert status == 200, body
            swarm = body["swarm"]
            assert len(swarm) >= 3  # the honest answer: enough members signed
            if lie == "forged signatures":
                body["swarm"] = _forged(swarm)
            elif lie == "signatures of strangers":
                params = request["params"]
                data = base64.b64decode(params["data"])
                digest = message_hash(bytes.fromhex(bob.session_id), 0, data)
                body["swarm"] = _strangers(swarm, digest)
            else:
                first = next(iter(swarm))
                body["swarm"] = {first: swarm[first]}
            return status, body

        return answer()

    async def main() -> None:
        authorities, nodes = await _network(tmp_path)
        try:
            for node in nodes:
                _intercept(node, tamper)
            async with NetworkClient(directory_of(nodes[0])) as network:
                a = Messenger(alice, SwarmClient(network))
                with pytest.raises(StoreError) as refused:
                    await a.send_text(bob.session_id, "did it arrive?")
                error = refused.value
                assert not CONTROLS & set(str(error) + error.code)
                assert "\n" not in str(error)
                if lie == "ansi":
                    assert error.code == "400"
                    assert str(error).startswith("\ufffd]0;pwned")
                    assert len(str(error)) <= 200
                else:
                    assert error.code == "unacknowledged"
                    needed = "1 of the 3" if lie == "one signed result" else "0 of the 3"
                    assert str(error) == f"acknowledged by {needed} members needed"
                assert a.conversation(bob.session_id) == []  # not recorded as sent
            seeds = [arg for n in nodes for arg in ("--seed", f"127.0.0.1:{n.port}")]
            code, out, err = await veil(
                capsys,
                "send",
                bob_id,
                "did it arrive?",
                "--home",
                str(alice_home),
                "--network",
                str(authorities.path),
                *seeds,
            )
            assert code == 1
            assert out == ""
            said = one_clean_line(err, "veil send: the network did not take it: ")
            if lie != "ansi":
                assert said.startswith("acknowledged by ")
            assert ClientHome(alice_home).book().conversations == {}
        finally:
            await stop_network(nodes)

    run(main())


# --- guards ---------------------------------------------------------------------------------------


def _saved_guards(home: Path) -> dict[str, Any]:
    document = json.loads((home / "guards.json").read_text())
    assert isinstance(document, dict)
    return document


def test_guards_are_kept_across_runs_not_replaced_when_they_fail_and_rotate_after_their_lifetime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "bob"
    account(capsys, home)

    async def main() -> None:
        authorities, nodes = await _network(tmp_path)
        seeds = [arg for n in nodes for arg in ("--seed", f"127.0.0.1:{n.port}")]
        inbox = ["inbox", "--home", str(home), "--network", str(authorities.path), *seeds]
        try:
            code, out, err = await veil(capsys, *inbox)
            assert (code, out, err) == (0, "no new messages\n", "")
            first = _saved_guards(home)
            assert len(first["guards"]) == 3
            assert (home / "consensus.json").exists()
            # A restart: the same guards, chosen when they were.
            assert (await veil(capsys, *inbox))[0] == 0
            assert _saved_guards(home) == first
            # Requests through them fail (two of them down, then all three): kept all the same.
            by_id = {n.identity.ed25519_public_key.hex(): n for n in nodes}
            guards = [by_id[g["node_id"]] for g in first["guards"]]
            await guards[0].stop()
            await guards[1].stop()
            code, out, _ = await veil(capsys, *inbox)
            assert (code, out) == (0, "no new messages\n")  # through the guard still up
            assert _saved_guards(home) == first
            await guards[2].stop()
            await veil(capsys, *inbox)
            assert _saved_guards(home) == first
            reloaded = ClientHome(home).guards()
            async with NetworkClient(directory_of(nodes[-1]), guards=reloaded) as client:
                target = next(p for p in client.nodes if p not in client.guards)
                for _ in range(3):
                    with pytest.raises(NetworkError):
                        await client.request(target, "retrieve", {})
                assert client.guard_set.to_json() == first
            # Chosen 31 days ago: kept under the default lifetime (8 weeks), rotated under 30 days.
            aged = {
                **first,
                "guards": [
                    {**g, "chosen_at_ms": now_ms() - 31 * 86_400_000} for g in first["guards"]
                ],
            }
            (home / "guards.json").write_text(json.dumps(aged))
            await veil(capsys, *inbox)
            assert _saved_guards(home) == aged
            monkeypatch.setenv("VEIL_GUARD_LIFETIME", "30d")
            before = now_ms()
            await veil(capsys, *inbox)
            rotated = _saved_guards(home)["guards"]
            assert len(rotated) == 3
            assert all(g["chosen_at_ms"] >= before for g in rotated)
            monkeypatch.setenv("VEIL_GUARD_LIFETIME", "soon")
            code, _, err = await veil(capsys, *inbox)
            assert code == 1
            assert one_clean_line(err, "veil inbox: ") == (
                "VEIL_GUARD_LIFETIME is a TIME such as 30d or 8w"
            )
        finally:
            await stop_network(nodes)

    run(main())


def test_a_guard_gone_from_the_consensus_is_replaced_and_only_it(tmp_path: Path) -> None:
    async def main() -> None:
        authorities, nodes = await _network(tmp_path, 8)
        home = ClientHome(tmp_path / "home")
        home.root.mkdir(mode=0o700)
        try:
            async with NetworkClient(directory_of(nodes[0]), guards=home.guards()) as client:
                home.save_guards(client.guard_set)
                chosen = list(client.guard_set.guards)
                gone, *kept = chosen
                # The next consensus lists the first guard no more; the nodes hold it.
                listed = [n for n in nodes if n.identity.ed25519_public_key != gone.node_id]
                authorities.issue(listed, to=nodes)
                # The client asks through paths of the consensus it holds, which still lists the
                # node that left: a path through it fails, and the client goes another way.
                assert await client.refresh_consensus()
                home.save_guards(client.guard_set)
                now = client.guard_set.guards
                assert now[:2] == kept  # the others kept, chosen when they were
                assert now[2].node_id not in {g.node_id for g in chosen}
                assert now[2].node_id in client.directory.guard_ids
            assert ClientHome(home.root).guards().guards == now  # as saved
        finally:
            await stop_network(nodes)

    run(main())


class _Unlucky(random.Random):
    """Draws, whenever it may, the node in ``first``, then one of ``then``: the worst luck for a
    client one of whose guards has left the network."""

    def __init__(self) -> None:
        super().__init__(7)
        self.first: bytes = b""
        self.then: set[bytes] = set()

    def choice(self, seq: Any) -> Any:
        items = list(seq)
        for wanted in (lambda p: p.x25519 == self.first, lambda p: p.x25519 in self.then):
            hits = [p for p in items if isinstance(p, PeerInfo) and wanted(p)]
            if hits:
                return hits[0]
        return super().choice(items)


def test_a_guard_cut_off_from_the_network_cannot_pass_its_failures_off_on_the_other_guards(
    tmp_path: Path,
) -> None:
    """A guard that has left the consensus still answers, and says "path failed" for every path:
    the relays are blamed first, and they may be the client's other guards. Even when every draw
    goes the worst way, the client stops going in through that guard after its second failure
    with another relay, and keeps its other guards usable as guards."""

    async def main() -> None:
        authorities, nodes = await _network(tmp_path, 7)
        unlucky = _Unlucky()
        try:
            async with NetworkClient(
                directory_of(nodes[0]), guards=GuardSet(), rng=unlucky
            ) as client:
                gone, *kept = client.guards
                unlucky.first = gone.x25519
                unlucky.then = {g.x25519 for g in kept}
                listed = [n for n in nodes if n.identity.x25519_public_key != gone.x25519]
                authorities.issue(listed, to=nodes)
                destination = next(
                    p for p in client.nodes if p.x25519 not in {g.x25519 for g in client.guards}
                )
                status, _ = await client.request(destination, "info", {})
                assert status == 200
                # Through the guard that left, with each of the other guards as the relay; then
                # through one of the others.
                assert client.paths_failed == 2
                path = client.choose_path(destination)
                assert path[0].x25519 in unlucky.then
                assert path[1].x25519 not in unlucky.then | {gone.x25519}
        finally:
            await stop_network(nodes)

    run(main())


def test_guards_are_drawn_among_guard_nodes_and_rotate_after_their_lifetime() -> None:
    network = network_of([Identity.generate() for _ in range(3)])
    period = network.period_at(now_ms())
    nodes = _sybils(12)
    guard_ids = {a.ed25519 for a in nodes[:6]}
    consensus = consensus_of(network, nodes, period, guards=guard_ids)
    start = now_ms()
    guards = GuardSet()
    assert guards.update(consensus, start)
    first = list(guards.guards)
    assert len(first) == 3
    assert {g.node_id for g in first} <= guard_ids
    assert {g.chosen_at_ms for g in first} == {start}
    assert not guards.update(consensus, start + GUARD_LIFETIME_MS - 1)
    assert guards.guards == first
    # No longer a Guard (still listed): replaced, alone.
    demoted = consensus_of(network, nodes, period + 1, guards=guard_ids - {first[0].node_id})
    assert guards.update(demoted, start + 1)
    assert guards.guards[:2] == first[1:]
    assert guards.guards[2].node_id in guard_ids - {g.node_id for g in first}
    # Past their lifetime: every guard drawn again.
    later = start + 1 + GUARD_LIFETIME_MS
    assert guards.update(demoted, later)
    assert {g.chosen_at_ms for g in guards.guards} == {later}
    # Fewer Guard nodes than guards: those there are, and the shortfall said.
    few = consensus_of(network, nodes, period + 2, guards={nodes[0].ed25519})
    thin = GuardSet()
    thin.update(few, start)
    assert thin.ids == [nodes[0].ed25519]
    assert thin.shortfall == 2
    # What the home saves is what it reloads; entries that are not guards are skipped.
    reloaded = GuardSet.from_json(
        {**guards.to_json(), "guards": [*guards.to_json()["guards"], {"node_id": "zz"}, 7]}
    )
    assert reloaded.guards == guards.guards


def test_the_seeds_default_to_the_devnet_json_beside_the_network_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devnet = tmp_path / "somewhere"
    devnet.mkdir()
    (devnet / "devnet.json").write_text(json.dumps({"seeds": ["127.0.0.1:1", 5, "127.0.0.1:2"]}))
    assert find_seeds([], devnet / "network.json") == ["127.0.0.1:1", "127.0.0.1:2"]
    assert find_seeds(["10.0.0.1:3"], devnet / "network.json") == ["10.0.0.1:3"]
    monkeypatch.setenv("VEIL_SEEDS", "10.0.0.2:4, 10.0.0.3:5")
    assert find_seeds([], devnet / "network.json") == ["10.0.0.2:4", "10.0.0.3:5"]
    monkeypatch.delenv("VEIL_SEEDS")
    assert find_seeds([], None) == []  # no .devnet/ in the current directory
    (tmp_path / ".devnet").mkdir()
    (tmp_path / ".devnet" / "network.json").write_text("{}")
    (tmp_path / ".devnet" / "devnet.json").write_text(json.dumps({"seeds": ["127.0.0.1:7"]}))
    assert network_path(None) == Path(".devnet") / "network.json"
    assert find_seeds([], network_path(None)) == ["127.0.0.1:7"]
    monkeypatch.setenv("VEIL_NETWORK", str(devnet / "network.json"))
    assert network_path(None) == devnet / "network.json"
    assert network_path(tmp_path / "given.json") == tmp_path / "given.json"
