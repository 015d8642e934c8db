"""Directory authorities: registration and its checks, votes, the signed consensus, the schedule
with authorities down, and what survives a restart. Authorities run in-process on loopback with
1-second periods; nodes are link acceptors that answer the handshake for their keys. The last test
runs ``veil authority init`` and ``veil authority run`` as processes.

Authority ports are reserved for the whole test (a bound, not listening, SO_REUSEADDR socket: no
other socket can take the port, the authority's listener can), so that an authority restarted on
its port finds it free. Every server and connection a test opens is closed even when it fails:
one left open when the event loop closes would hang uvloop (see :func:`run`)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest

from link_acceptor import LinkPort
from node_helpers import free_port, now_ms, run, until
from veil.authority.config import (
    AdmissionSettings,
    AuthorityConfig,
    ConfigError,
    ScheduleSettings,
    load_config,
    render_config,
)
from veil.authority.server import Authority
from veil.cli import main
from veil.identity import Identity
from veil.node.identity import create_node_key
from veil.protocol import authority_post
from veil.protocol.announcement import Announcement, sign_announcement
from veil.protocol.consensus import Consensus, NodeEntry, SignedConsensus, SignedVote, Vote
from veil.protocol.network_file import NetworkFile

PERIOD_S = 1
T = TypeVar("T")


_RESERVED: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _release_ports() -> Iterator[None]:
    yield
    while _RESERVED:
        _RESERVED.pop().close()


def reserve_port() -> int:
    """A loopback port held for this test: bound with SO_REUSEADDR and not listening, so that no
    other socket (this process's or another's, bind(0) or connect) can take it while a listener
    with SO_REUSEADDR (the authority's) can bind it, again after each restart."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _RESERVED.append(sock)
    return int(sock.getsockname()[1])


# --- nodes: a link port that completes the handshake, nothing more ----------------------------


def announce(identity: Identity, link_port: int, host: str = "127.0.0.1") -> Announcement:
    return sign_announcement(
        identity,
        http=f"{host}:9",
        link=f"{host}:{link_port}",
        version="test",
        issued_ms=now_ms(),
    )


# --- authorities ---------------------------------------------------------------------------------


@dataclass
class Authorities:
    network: NetworkFile
    configs: list[AuthorityConfig]
    running: list[Authority | None]

    @property
    def x25519_keys(self) -> list[bytes]:
        return [a.x25519 for a in self.network.authorities]

    async def start(self, index: int) -> Authority:
        authority = Authority(self.configs[index], self.network, drain_timeout_s=0.5)
        await authority.start()
        self.running[index] = authority
        return authority

    async def stop(self, index: int) -> None:
        authority = self.running[index]
        assert authority is not None
        self.running[index] = None
        await authority.stop()

    def up(self) -> list[Authority]:
        return [a for a in self.running if a is not None]


def make_authorities(
    tmp_path: Path, count: int, admission: AdmissionSettings, valid_periods: int = 6
) -> Authorities:
    configs, entries = [], []
    for index in range(count):
        data_dir = tmp_path / f"authority{index}"
        data_dir.mkdir()
        config = AuthorityConfig(
            data_dir=data_dir,
            name=f"authority{index}",
            listen_port=reserve_port(),
            link_port=reserve_port(),
            admission=admission,
            schedule=ScheduleSettings(peer_timeout_s=0.5),
        )
        identity = create_node_key(config.key_path)
        configs.append(config)
        entries.append(config.entry(identity.ed25519_public_key))
    network = NetworkFile.from_json(
        {
            "version": 1,
            "name": "testnet",
            "period_s": PERIOD_S,
            "valid_periods": valid_periods,
            "authorities": entries,
        }
    )
    return Authorities(network, configs, [None] * count)


@asynccontextmanager
async def running(authorities: Authorities) -> AsyncIterator[Authorities]:
    try:  # those started are stopped even if a later one fails to start
        for index in range(len(authorities.configs)):
            await authorities.start(index)
        yield authorities
    finally:
        for index, authority in enumerate(authorities.running):
            if authority is not None:
                await authorities.stop(index)


LOOPBACK = AdmissionSettings(
    max_nodes_per_subnet=1000, registrations_per_minute_per_address=100_000, check_timeout_s=0.5
)


async def register(
    session: aiohttp.ClientSession, authority: Authority, announcement: Announcement
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{authority.port}/authority/v1/register"
    async with session.post(url, data=orjson.dumps(announcement.to_json())) as answer:
        return answer.status, await answer.json(content_type=None)


async def register_everywhere(
    session: aiohttp.ClientSession, authorities: Authorities, announcement: Announcement
) -> list[int]:
    answers = await asyncio.gather(*(register(session, a, announcement) for a in authorities.up()))
    return [status for status, _ in answers]


async def get_text(session: aiohttp.ClientSession, authority: Authority, path: str) -> str:
    async with session.get(f"http://127.0.0.1:{authority.port}{path}") as answer:
        return await answer.text()


async def fetch_consensus(
    session: aiohttp.ClientSession, authority: Authority
) -> SignedConsensus | None:
    url = f"http://127.0.0.1:{authority.port}/authority/v1/consensus"
    async with session.get(url) as answer:
        if answer.status == 404:
            return None
        assert answer.status == 200
        return SignedConsensus.from_json(await answer.json(), authority.network)


_STAMPS = iter(range(1, 1 << 62))


def sender_header(identity: Identity, to: Authority, body: bytes) -> dict[str, str]:
    """The header with which ``identity`` (an authority's) proves it sends ``body`` to ``to``'s
    vote route (a new timestamp each time, as an authority makes them)."""
    stamp = now_ms() + next(_STAMPS)
    sender, receiver = identity.ed25519_public_key, to.identity.ed25519_public_key
    message = authority_post.signed_bytes(sender, receiver, b"/authority/v1/vote", len(body), stamp)
    return {authority_post.HEADER: authority_post.value(sender, stamp, identity.sign(message))}


def period_of(authority: Authority) -> int:
    held = authority.ledger.latest
    return held.consensus.period if held is not None else -1


def entry_of(authority: Authority, identity: Identity) -> NodeEntry | None:
    held = authority.ledger.latest
    return held.consensus.entry(identity.ed25519_public_key) if held is not None else None


def lists(authority: Authority, *identities: Identity) -> bool:
    return all(entry_of(authority, i) is not None for i in identities)


def signers(authority: Authority) -> int:
    held = authority.ledger.latest
    return len(held.signatures) if held is not None else 0


async def wait_for(predicate: Callable[[], bool], periods: float) -> None:
    await until(predicate, periods * PERIOD_S)


async def next_consensus(authority: Authority, periods: float = 1.5) -> Consensus:
    """The first consensus of a later period than the one ``authority`` holds now."""
    now = period_of(authority)
    await wait_for(lambda: period_of(authority) > now, periods)
    held = authority.ledger.latest
    assert held is not None
    return held.consensus


# --- registration, checks and the consensus ------------------------------------------------------


def test_a_registered_node_enters_a_consensus_all_three_sign_and_keeps_its_placement(
    tmp_path: Path,
) -> None:
    authorities = make_authorities(tmp_path, 3, replace(LOOPBACK, guard_uptime_s=1.5))

    async def scenario() -> None:
        good, other, impostor, absent = (Identity.generate() for _ in range(4))
        async with (
            LinkPort([good, other], authorities.x25519_keys) as nodes,
            running(authorities),
            aiohttp.ClientSession() as session,
        ):
            first = authorities.up()[0]
            for node in (good, other):
                statuses = await register_everywhere(
                    session, authorities, announce(node, nodes.port)
                )
                assert statuses == [202, 202, 202]
            # Nothing listening: refused. A link port whose node holds other keys: refused.
            for node, port in ((absent, free_port()), (impostor, nodes.port)):
                statuses = await register_everywhere(session, authorities, announce(node, port))
                assert statuses == [403, 403, 403]
            await wait_for(lambda: all(lists(a, good, other) for a in authorities.up()), 4)
            await wait_for(lambda: signers(first) == 3, 1)
            signed = await fetch_consensus(session, first)
            assert signed is not None
            assert len(signed.signatures) == 3
            consensus = signed.consensus
            assert [e.node_id for e in consensus.nodes] == sorted(
                [good.ed25519_public_key, other.ed25519_public_key]
            )
            assert consensus.valid_until_ms == authorities.network.period_start_ms(
                consensus.period + 6
            )
            entry = consensus.entry(good.ed25519_public_key)
            assert entry is not None
            # The next periods: a new shared random value each time, the same placement.
            seen = [consensus, await next_consensus(first), await next_consensus(first)]
            assert len({c.srv for c in seen}) == 3
            for later in seen[1:]:
                again = later.entry(good.ed25519_public_key)
                assert again is not None
                assert (again.admitted, again.placement) == (entry.admitted, entry.placement)
            # Reachable at every check for guard_uptime_s: voted Guard.
            await wait_for(lambda: getattr(entry_of(first, good), "guard", False), 3)
            for authority in authorities.up():
                assert impostor.ed25519_public_key not in authority.book.candidates
                assert absent.ed25519_public_key not in authority.book.candidates

    run(scenario())


def test_a_node_that_comes_back_after_an_absence_keeps_its_admission_period(
    tmp_path: Path,
) -> None:
    authorities = make_authorities(tmp_path, 1, replace(LOOPBACK, max_missed_checks=1))

    async def scenario() -> None:
        node = Identity.generate()
        async with running(authorities), aiohttp.ClientSession() as session:
            [authority] = authorities.up()
            async with LinkPort([node], authorities.x25519_keys) as port:
                statuses = await register_everywhere(
                    session, authorities, announce(node, port.port)
                )
                assert statuses == [202]
                await wait_for(lambda: lists(authority, node), 3)
                entry = entry_of(authority, node)
                assert entry is not None
            await wait_for(lambda: not lists(authority, node), 4)
            # Back, at another port, a few periods later.
            await asyncio.sleep(PERIOD_S)
            async with LinkPort([node], authorities.x25519_keys) as port:
                status, answer = await register(session, authority, announce(node, port.port))
                assert (status, answer["status"]) == (202, "pending")
                await wait_for(lambda: lists(authority, node), 3)
                again = entry_of(authority, node)
                assert again is not None
                assert (again.admitted, again.placement) == (entry.admitted, entry.placement)
                assert again.announcement.link != entry.announcement.link
                status, answer = await register(session, authority, announce(node, port.port))
                assert (status, answer) == (202, {"status": "admitted", "period": entry.admitted})

    run(scenario())


def test_the_consensus_goes_on_with_one_authority_down_stops_with_two_and_survives_restarts(
    tmp_path: Path,
) -> None:
    authorities = make_authorities(tmp_path, 3, LOOPBACK, valid_periods=3)

    async def scenario() -> None:
        node = Identity.generate()
        async with (
            LinkPort([node], authorities.x25519_keys) as port,
            running(authorities),
            aiohttp.ClientSession() as session,
        ):
            first, second, _ = authorities.up()
            assert (
                await register_everywhere(session, authorities, announce(node, port.port))
                == [202] * 3
            )
            await wait_for(lambda: all(lists(a, node) for a in authorities.up()), 4)
            entry = entry_of(first, node)
            assert entry is not None
            # One of three down: the other two still publish, each consensus signed by both.
            await authorities.stop(2)
            down_at = period_of(first)
            await wait_for(lambda: min(period_of(first), period_of(second)) >= down_at + 2, 3)
            signed = await fetch_consensus(session, second)
            assert signed is not None
            assert set(signed.signatures) == {
                first.identity.ed25519_public_key,
                second.identity.ed25519_public_key,
            }
            assert entry_of(second, node) == entry
            # Two of three down: no new consensus; the last one is still served until it
            # expires (valid_periods after its own period), then no longer.
            await authorities.stop(1)
            last = period_of(first)
            await asyncio.sleep(1.5 * PERIOD_S)
            assert period_of(first) == last
            assert await fetch_consensus(session, first) is not None
            held = first.ledger.latest
            assert held is not None
            expiry = held.consensus.valid_until_ms
            assert expiry == authorities.network.period_start_ms(last + 3)
            await wait_for(lambda: now_ms() >= expiry, 4)
            url = f"http://127.0.0.1:{first.port}/authority/v1/consensus"
            async with session.get(url) as answer:
                assert answer.status == 404
                assert (await answer.json())["error"]["code"] == "expired"
            assert period_of(first) == last
            # Both back, from their data directories: publishing resumes, the node keeps the
            # period it was admitted in and its placement.
            await authorities.start(1)
            await authorities.start(2)
            await wait_for(
                lambda: all(period_of(a) > last + 1 and signers(a) == 3 for a in authorities.up()),
                5,
            )
            for authority in authorities.up():
                again = entry_of(authority, node)
                assert again is not None
                assert (again.admitted, again.placement) == (entry.admitted, entry.placement)
        for config in authorities.configs:
            saved = {p.name for p in config.data_dir.iterdir()}
            assert {"state.json", "candidates.json", "consensus.json", "vote.json"} <= saved

    run(scenario())


def test_at_most_max_nodes_per_subnet_of_a_thousand_registrations_from_one_subnet_are_admitted(
    tmp_path: Path,
) -> None:
    cap = 3
    authorities = make_authorities(tmp_path, 3, replace(LOOPBACK, max_nodes_per_subnet=cap))

    async def scenario() -> None:
        crowd = [Identity.generate() for _ in range(1000)]
        apart = [Identity.generate() for _ in range(2)]
        async with (
            LinkPort(crowd, authorities.x25519_keys) as crowd_port,
            LinkPort(apart, authorities.x25519_keys, host="127.0.1.1") as apart_port,
            running(authorities),
            aiohttp.ClientSession() as session,
        ):
            crowd_announcements = [announce(i, crowd_port.port) for i in crowd]
            apart_announcements = [announce(i, apart_port.port, host="127.0.1.1") for i in apart]

            async def register_all(authority: Authority) -> list[int]:
                return [
                    (await register(session, authority, a))[0]
                    for a in [*crowd_announcements, *apart_announcements]
                ]

            answers = await asyncio.gather(*(register_all(a) for a in authorities.up()))
            for statuses in answers:
                assert statuses[:cap] == [202] * cap
                assert statuses[cap:1000] == [403] * (1000 - cap)
                assert statuses[1000:] == [202, 202]
            first = authorities.up()[0]
            await wait_for(lambda: len(first.ledger.latest_admitted) == cap + 2, 4)
            admitted = set(first.ledger.latest_admitted)
            assert admitted == {i.ed25519_public_key for i in [*crowd[:cap], *apart]}
            metrics = await get_text(session, first, "/metrics")
            assert (
                f'veil_authority_refusals_total{{reason="subnet_full"}} {1000 - cap}.0' in metrics
            )

    run(scenario())


def test_registrations_past_the_rate_of_one_address_and_keys_off_the_allowlist_are_refused(
    tmp_path: Path,
) -> None:
    listed, unlisted = Identity.generate(), Identity.generate()
    authorities = make_authorities(
        tmp_path,
        1,
        replace(LOOPBACK, policy="allowlist", registrations_per_minute_per_address=6),
    )
    allowlist = authorities.configs[0].allowlist_path
    allowlist.write_text(f"# the one node\n{listed.ed25519_public_key.hex()}\n")

    async def scenario() -> None:
        async with (
            LinkPort([listed, unlisted], authorities.x25519_keys) as port,
            running(authorities),
            aiohttp.ClientSession() as session,
        ):
            [authority] = authorities.up()
            status, answer = await register(session, authority, announce(unlisted, port.port))
            assert (status, answer["error"]["code"]) == (403, "not_allowed")
            status, answer = await register(session, authority, announce(listed, port.port))
            assert (status, answer["status"]) == (202, "pending")
            statuses = []
            for _ in range(6):
                async with session.post(
                    f"http://127.0.0.1:{authority.port}/authority/v1/register", data=b"{}"
                ) as reply:
                    statuses.append(reply.status)
            assert statuses == [400] * 4 + [429] * 2
            metrics = await get_text(session, authority, "/metrics")
            assert 'veil_authority_refusals_total{reason="rate_limited"} 2.0' in metrics
            assert 'veil_authority_refusals_total{reason="policy"} 1.0' in metrics
            assert "veil_authority_candidates 1.0" in metrics

    run(scenario())


def test_votes_and_signatures_from_non_authorities_or_that_do_not_verify_get_typed_errors(
    tmp_path: Path,
) -> None:
    authorities = make_authorities(tmp_path, 2, LOOPBACK)
    stranger = Identity.generate()

    async def post(
        session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        async with session.post(url, data=body, headers=headers) as answer:
            return answer.status, (await answer.json())["error"]["code"]

    async def scenario() -> None:
        async with running(authorities), aiohttp.ClientSession() as session:
            first, second = authorities.up()
            base = f"http://127.0.0.1:{first.port}/authority/v1"
            period = authorities.network.period_at(now_ms()) + 1
            forged = Vote(
                network="testnet",
                period=period,
                authority=stranger.ed25519_public_key,
                nodes=(),
                commit=bytes(32),
                reveal=bytes(32),
            )
            posing = replace(forged, authority=second.identity.ed25519_public_key)
            # Without the header that proves its sender an authority: refused, its body unread.
            unsigned = orjson.dumps(SignedVote.sign(forged, stranger.sign).to_json())
            assert await post(session, f"{base}/vote", unsigned) == (403, "forbidden")
            # With it (the second authority's), the vote itself is still checked.
            for body, expected in (
                (b"not json", (400, "bad_request")),
                (
                    orjson.dumps(SignedVote.sign(forged, stranger.sign).to_json()),
                    (403, "not_an_authority"),
                ),
                (  # the key of an authority, the signature of another key
                    orjson.dumps(SignedVote.sign(posing, stranger.sign).to_json()),
                    (400, "invalid_vote"),
                ),
            ):
                headers = sender_header(second.identity, first, body)
                assert await post(session, f"{base}/vote", body, headers) == expected
            signature = {"period": period, "authority": stranger.ed25519_public_key.hex()}
            for body in (b"[]", orjson.dumps({**signature, "signature": "short"})):
                assert await post(session, f"{base}/signature", body) == (400, "bad_request")
            well_formed = {**signature, "signature": base64.b64encode(bytes(64)).decode()}
            assert await post(session, f"{base}/signature", orjson.dumps(well_formed)) == (
                403,
                "not_an_authority",
            )
            # Bodies are bounded: past max_body_bytes, 413 before the body is read; a body for
            # a route that takes none, 404 or 405 likewise.
            big = b"x" * (first.config.http.max_body_bytes + 1)
            assert await post(session, f"{base}/signature", big) == (413, "too_large")
            assert await post(session, f"{base}/nothing", b"{}") == (404, "not_found")
            assert await post(session, f"{base}/consensus", b"{}") == (405, "method_not_allowed")
            # A signature by an authority that does not verify: refused.
            await wait_for(lambda: period_of(first) >= period, 3)
            wrong = {
                "period": period_of(first),
                "authority": second.identity.ed25519_public_key.hex(),
                "signature": base64.b64encode(bytes(64)).decode(),
            }
            assert await post(session, f"{base}/signature", orjson.dumps(wrong)) == (
                403,
                "bad_signature",
            )
            # Its own vote is served; another period's, or an unknown path, is 404.
            held = first.ledger.latest
            assert held is not None
            async with session.get(f"{base}/vote/{held.consensus.period}") as answer:
                assert answer.status == 200
                vote = SignedVote.from_json(await answer.json(), authorities.network)
                assert vote.vote.authority == first.identity.ed25519_public_key
            for path, status in (("/vote/1", 404), ("/vote/x", 404), ("/nothing", 404)):
                async with session.get(f"{base}{path}") as answer:
                    assert answer.status == status
                    assert (await answer.json())["error"]["code"] == "not_found"
            async with session.get(f"{base}/register") as answer:
                assert answer.status == 405
            async with session.get(f"{base}/consensus/{held.consensus.period}") as answer:
                assert answer.status == 200
            metrics = await get_text(session, first, "/metrics")
            for line in (
                'veil_authority_votes_received_total{result="not_authority"} 1.0',
                'veil_authority_votes_received_total{result="invalid"} 1.0',
                'veil_authority_signatures_received_total{result="not_authority"} 1.0',
                'veil_authority_signatures_received_total{result="invalid"} 1.0',
            ):
                assert line in metrics

    run(scenario())


# --- configuration and the command ---------------------------------------------------------------


def test_authority_toml_round_trips_and_refuses_unknown_keys_and_wrong_types(
    tmp_path: Path,
) -> None:
    config = AuthorityConfig(
        data_dir=tmp_path,
        name="a0",
        listen_port=5000,
        link_port=5001,
        admission=AdmissionSettings(max_nodes_per_subnet=50, guard_uptime_s=60.0),
        schedule=ScheduleSettings(vote_at=0.4, sign_at=0.6),
    )
    path = tmp_path / "authority.toml"
    text = render_config(config)
    path.write_text(text)
    assert load_config(tmp_path) == config
    http = config.http.limits()  # what the HTTP layer is given: the authority's own caps
    assert (http.max_buffered_body_bytes, http.max_pipelined_requests) == (512 << 20, 16)
    comments = [line for line in text.splitlines() if line.startswith("#")]
    settings = [line for line in text.splitlines() if " = " in line and not line.startswith("#")]
    assert len(comments) >= len(settings)
    for bad, named in (
        ("[admission]\nmax_node_per_subnet = 3\n", "max_node_per_subnet"),
        ("[admission]\nmax_nodes_per_subnet = '3'\n", "max_nodes_per_subnet"),
        ("[schedule]\nvote_at = 0.8\n", "vote_at"),
        ("[authority]\nlisten = 5\n", "listen"),
        ("[authority]\nport = 5\n", "port"),
        ("[admission]\npolicy = 'closed'\n", "policy"),
        ("[http]\nmax_buffered_body_bytes = 1_000_000\n", "vote_reserve_bytes . max_body"),
        ("[http]\nvote_reserve_bytes = 1_000_000\n", "max_vote_bytes <= vote_reserve"),
        ("[http]\nmax_pipelined_requests = 0\n", "max_pipelined_requests"),
        ("[link]\nmax_handshakes_per_subnet = 15\n", "per_subnet must be at least"),
        ("[links]\n", "links"),
    ):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=named):
            load_config(tmp_path)


def test_authority_init_prints_its_network_file_entry_and_run_refuses_a_network_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "a0"
    argv = ["authority", "init", "--data-dir", str(data_dir)]
    argv += ["--listen", "127.0.0.1:41000", "--link-listen", "127.0.0.1:41001", "--name", "a0"]
    assert main(argv) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["name"] == "a0"
    assert (entry["http"], entry["link"]) == ("127.0.0.1:41000", "127.0.0.1:41001")
    key = data_dir / "authority.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Identity.from_seed(key.read_bytes()).ed25519_public_key.hex() == entry["ed25519"]
    assert load_config(data_dir).name == "a0"
    assert main(argv) == 1  # never overwrites
    other = {**entry, "name": "other", "ed25519": Identity.generate().ed25519_public_key.hex()}
    network = tmp_path / "network.json"
    network.write_text(
        json.dumps(
            {"version": 1, "name": "n", "period_s": 10, "valid_periods": 6, "authorities": [other]}
        )
    )
    capsys.readouterr()
    assert main(["authority", "run", "--data-dir", str(data_dir), "--network", str(network)]) == 1
    assert "not in the network file" in capsys.readouterr().err


def _get_json(url: str) -> Any:
    """A GET's JSON answer if it was 200, else None (sync: no event loop in the process test)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_authority_init_and_run_as_processes_publish_a_consensus_all_sign_and_exit_0_on_sigterm(
    tmp_path: Path,
) -> None:
    veil = [sys.executable, "-m", "veil", "authority"]
    entries, data_dirs = [], []
    for index in range(3):
        data_dir = tmp_path / f"a{index}"
        listen, link = f"127.0.0.1:{reserve_port()}", f"127.0.0.1:{reserve_port()}"
        addresses = ["--listen", listen, "--link-listen", link]
        made = subprocess.run(
            [*veil, "init", "--data-dir", str(data_dir), *addresses, "--name", f"a{index}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        entries.append(json.loads(made.stdout))
        data_dirs.append(data_dir)
    network_path = tmp_path / "network.json"
    document = {"version": 1, "name": "procnet", "period_s": 1, "valid_periods": 6}
    network_path.write_text(json.dumps({**document, "authorities": entries}))
    network = NetworkFile.from_json(json.loads(network_path.read_text()))
    logs = [(d / "run.log").open("wb") for d in data_dirs]
    processes = [
        subprocess.Popen(
            [*veil, "run", "--data-dir", str(d), "--network", str(network_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for d, log in zip(data_dirs, logs, strict=True)
    ]
    try:
        deadline = time.monotonic() + 30
        signed_by_all: set[int] = set()
        while len(signed_by_all) < 3:
            assert time.monotonic() < deadline, "no consensus signed by all three in time"
            assert all(p.poll() is None for p in processes), "an authority exited"
            for index, entry in enumerate(entries):
                found = _get_json(f"http://{entry['http']}/authority/v1/consensus")
                if found is not None:
                    signed = SignedConsensus.from_json(found, network)
                    if len(signed.signatures) == 3:
                        signed_by_all.add(index)
            time.sleep(0.1)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        assert [p.wait(timeout=15) for p in processes] == [0, 0, 0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    for data_dir in data_dirs:
        saved = {p.name for p in data_dir.iterdir()}
        assert {"state.json", "candidates.json", "consensus.json", "vote.json"} <= saved
        text = (data_dir / "run.log").read_text()
        assert "Traceback" not in text
        assert "authority stopped" in text
