"""Admission on a devnet of real processes (3 authorities, 10 nodes): an operator with many keys
gets no more than the per-subnet cap admitted, and keys ground for one account's swarm do not take
it.

Both operators run in the test process. Each serves the link handshake for all its keys (a
:class:`link_acceptor.LinkPort` per subnet), so its registrations pass the authorities'
reachability check and are refused only by what the authorities decide: the cap of
``max_nodes_per_subnet`` (2, the default, kept by the devnet) nodes per /24, and placement by a
shared random value revealed after registration.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from link_acceptor import LinkPort
from node_helpers import run
from veil.clock import now_ms
from veil.identity import Identity
from veil.protocol.announcement import Announcement, sign_announcement
from veil.protocol.consensus import SignedConsensus
from veil.protocol.network_file import NetworkFile, load_network_file
from veil.protocol.swarms import SwarmMap

NODES = 10
FLOOD = 1_000
"""Keys one operator registers from one /24."""
GENERATED = 10_000
"""Keys the second operator generates to pick the best for one account."""
SUBNETS = 3
"""How many /24s the second operator registers its chosen keys from (2 keys each: the cap)."""
CAP = 2
R = 5


def _devnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", "devnet", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _announce(identity: Identity, host: str, link_port: int) -> Announcement:
    return sign_announcement(
        identity, http=f"{host}:9", link=f"{host}:{link_port}", version="op", issued_ms=now_ms()
    )


async def _register_everywhere(
    session: aiohttp.ClientSession, network: NetworkFile, announcement: Announcement
) -> list[int]:
    async def one(address: tuple[str, int]) -> int:
        url = f"http://{address[0]}:{address[1]}/authority/v1/register"
        async with session.post(url, json=announcement.to_json()) as answer:
            await answer.read()
            return answer.status

    return list(await asyncio.gather(*(one(a.http) for a in network.authorities)))


async def _consensus(
    session: aiohttp.ClientSession, seed: str, network: NetworkFile
) -> SignedConsensus:
    async with session.get(f"http://{seed}/consensus") as answer:
        assert answer.status == 200, answer.status
        return SignedConsensus.from_json(await answer.json(), network)


async def _until_listed(
    session: aiohttp.ClientSession, seed: str, network: NetworkFile, keys: set[bytes], at_least: int
) -> SignedConsensus:
    """The first consensus that lists ``at_least`` of ``keys``, once it has stayed the same for two
    more periods (so that nothing more of ``keys`` is still on its way in)."""
    deadline = time.monotonic() + 60
    stable = 0
    last: set[bytes] | None = None
    while True:
        signed = await _consensus(session, seed, network)
        listed = {e.node_id for e in signed.consensus.nodes} & keys
        stable = stable + 1 if listed == last and len(listed) >= at_least else 0
        if stable >= 2:
            return signed
        last = listed
        assert time.monotonic() < deadline, f"{len(listed)} of {at_least} keys listed after 60 s"
        await asyncio.sleep(network.period_s)


def test_an_operator_gets_the_subnet_cap_and_no_chosen_swarm(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    up = _devnet("up", "--detach", "--nodes", str(NODES), "--dir", str(root))
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((root / "devnet.json").read_text())
        network = load_network_file(root / "network.json")
        authorities = [a.x25519 for a in network.authorities]
        seed = state["seeds"][0]

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                opened: list[LinkPort] = []
                try:
                    # 1. A thousand keys from one /24.
                    flood = [Identity.generate() for _ in range(FLOOD)]
                    flood_port = await LinkPort(flood, authorities, "127.0.250.1").start()
                    opened.append(flood_port)
                    gate = asyncio.Semaphore(8)

                    async def register(identity: Identity) -> list[int]:
                        async with gate:
                            announcement = _announce(identity, "127.0.250.1", flood_port.port)
                            return await _register_everywhere(session, network, announcement)

                    statuses = await asyncio.gather(*(register(i) for i in flood))
                    assert all(set(s) <= {202, 403} for s in statuses), statuses[:3]
                    # Each authority admits at most CAP of the /24 — CAP, and the same keys, on a
                    # quiet machine. On a loaded one a link check that times out frees its slot
                    # (another key may take it, at that authority only), and a key refused while
                    # another's check was pending is not tried again: never more than CAP each.
                    per_authority = [
                        sum(s[j] == 202 for s in statuses) for j in range(len(network.authorities))
                    ]
                    assert all(1 <= n <= CAP for n in per_authority), per_authority

                    # 2. Keys ground for one account, from three /24s, two each.
                    account = b"\x05" + Identity.generate().x25519_public_key
                    honest = [bytes.fromhex(n["ed25519"]) for n in state["nodes"]]
                    candidates = [Identity.generate() for _ in range(GENERATED)]
                    ranked = SwarmMap([c.ed25519_public_key for c in candidates], SUBNETS * CAP)
                    best = set(ranked.swarm(account))  # the best keys if a key were its place
                    chosen = [c for c in candidates if c.ed25519_public_key in best]
                    ports = []
                    for k in range(SUBNETS):
                        host = f"127.0.{240 + k}.1"
                        pair = chosen[CAP * k : CAP * (k + 1)]
                        port = await LinkPort(pair, authorities, host).start()
                        opened.append(port)
                        ports.append(port)
                        for identity in pair:
                            answers = await _register_everywhere(
                                session, network, _announce(identity, host, port.port)
                            )
                            assert answers == [202] * len(network.authorities), answers

                    flooded = {i.ed25519_public_key for i in flood}
                    ground = {c.ed25519_public_key for c in chosen}
                    signed = await _until_listed(
                        session, seed, network, flooded | ground, CAP + len(ground)
                    )
                    listed = {e.node_id for e in signed.consensus.nodes}
                    # A key is listed when a majority of authorities voted for it: CAP of them
                    # when the authorities admitted the same keys (the usual case), fewer if not.
                    assert 1 <= len(listed & flooded) <= CAP
                    assert ground <= listed
                    assert set(honest) <= listed

                    # Where the ground keys would sit if a key were its place, and where they sit.
                    everyone = sorted(listed)
                    by_id = SwarmMap(everyone, R).swarm(account)
                    placements = {e.node_id: e.placement for e in signed.consensus.nodes}
                    placed = SwarmMap(everyone, R, placements).swarm(account)
                    seats_by_key = len(set(by_id) & ground)
                    seats = len(set(placed) & ground)
                    expected = R * len(ground) / len(everyone)
                    print(
                        f"{len(ground)} ground keys among {len(everyone)} nodes: {seats_by_key} of "
                        f"{R} seats if placed by key, {seats} placed by the shared random value "
                        f"(random placement: {expected:.2f})"
                    )
                    assert seats_by_key == R  # the grinding works against key-as-placement...
                    assert seats < R  # ...and buys no capture once placed (P(5 of 5) < 0.1%)
                finally:
                    for port in opened:
                        await port.stop()

        run(scenario())
    finally:
        down = _devnet("down", "--dir", str(root))
        assert down.returncode == 0, down.stderr
