"""Faults on devnets of real processes.

- SIGKILL a swarm member in the middle of a store load: every store answered 200 (held by the
  write quorum) must stay retrievable, exactly once per member, and the surviving members of the
  swarm must converge on the same set.
- A node joins a 10-node network (admitted by the authorities) and holds its share within 60 s.
- Two of three authorities stop: no new consensus, and the nodes go on serving on the last one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from node_helpers import Account, HttpClient, free_port, run
from veil.protocol.consensus import SignedConsensus
from veil.protocol.network_file import load_network_file
from veil.protocol.storage_rpc import verify_swarm
from veil.protocol.swarms import SwarmMap

NODES = 10
LOAD_SECONDS = 4.0
CLIENTS = 8


def _devnet(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", "devnet", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def _store_load(
    account: Account, members: list[tuple[str, int]], kill: Callable[[], None]
) -> dict[str, bytes]:
    """Store unique messages through the swarm members until the time is up; kill the victim
    part-way. Returns the acknowledged hashes with their data."""
    acked: dict[str, bytes] = {}
    deadline = time.monotonic() + LOAD_SECONDS
    killed = asyncio.Event()

    async def killer() -> None:
        await asyncio.sleep(LOAD_SECONDS / 3)
        kill()
        killed.set()

    async def client(index: int) -> None:
        sent = 0
        while time.monotonic() < deadline and sent < 400:
            target = members[(index + sent) % len(members)]
            data = b"client %d message %d" % (index, sent)
            sent += 1
            try:
                async with await HttpClient.connect(target[1], target[0]) as http:
                    status, body = await http.rpc("store", account.store(data, ttl=600_000))
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                continue  # the killed node, or a connection cut by the kill: not acknowledged
            if status == 200:
                acked[body["hash"]] = data

    await asyncio.gather(killer(), *(client(i) for i in range(CLIENTS)))
    assert killed.is_set()
    return acked


async def _held(address: tuple[str, int], account: Account) -> list[str]:
    hashes: list[str] = []
    async with await HttpClient.connect(address[1], address[0]) as http:
        cursor = ""  # from the start; the answer carries the cursor after its last message
        for _ in range(200):
            status, body = await http.rpc("retrieve", account.retrieve(cursor=cursor))
            assert status == 200, body
            hashes += [m["hash"] for m in body["messages"]]
            cursor = body["cursor"]
            if not body["more"]:
                return hashes
    raise AssertionError("retrieve did not finish")


async def _swarm_map(root: Path, address: tuple[str, int], size: int) -> SwarmMap:
    """The swarms of the consensus the node at ``address`` holds, checked as a client checks it."""
    async with await HttpClient.connect(address[1], address[0]) as http:
        answer = await http.request("GET", "/consensus")
    assert answer.status == 200, answer.status
    document = answer.json()
    consensus = SignedConsensus.from_json(document, load_network_file(root / "network.json"))
    placements = {e.node_id: e.placement for e in consensus.consensus.nodes}
    return SwarmMap(list(placements), size, placements)


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def test_sigkill_of_a_swarm_member_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    up = _devnet("up", "--detach", "--nodes", str(NODES), "--dir", str(root))
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((root / "devnet.json").read_text())
        nodes = state["nodes"]
        by_id = {bytes.fromhex(n["ed25519"]): n for n in nodes}
        alice = Account()
        swarms = run(_swarm_map(root, _address(nodes[0]["http"]), state["swarm_size"]))
        swarm = swarms.swarm(alice.account_bytes)
        members = [by_id[i] for i in swarm]
        addresses = [
            (m["http"].rsplit(":", 1)[0], int(m["http"].rsplit(":", 1)[1])) for m in members
        ]
        victim = members[0]

        def kill() -> None:
            os.kill(victim["pid"], signal.SIGKILL)

        acked = run(_store_load(alice, addresses, kill))
        assert len(acked) > 50, f"only {len(acked)} stores acknowledged: the test would be weak"
        print(f"acknowledged stores: {len(acked)}")
        survivors = addresses[1:]

        async def converge() -> dict[tuple[str, int], list[str]]:
            """Until every survivor holds every acknowledged store and all hold the same. A
            store the kill cut short may have reached some members unacknowledged: it spreads
            by anti-entropy, some seconds after the acknowledged ones are everywhere."""
            deadline = time.monotonic() + 60
            while True:
                held = {a: await _held(a, alice) for a in survivors}
                sets = [set(h) for h in held.values()]
                alike = all(s == sets[0] for s in sets)
                if (alike and set(acked) <= sets[0]) or time.monotonic() > deadline:
                    return held
                await asyncio.sleep(1.0)

        held = run(converge())
        for address, hashes in held.items():
            assert len(hashes) == len(set(hashes)), f"{address} returned a message twice"
            missing = set(acked) - set(hashes)
            assert not missing, f"{address} lacks {len(missing)} acknowledged messages"
        assert len({frozenset(h) for h in held.values()}) == 1, "survivors did not converge"
    finally:
        down = _devnet("down", "--dir", str(root))
        assert down.returncode == 0, down.stderr


def test_a_node_joining_ten_holds_its_share_within_sixty_seconds(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    up = _devnet("up", "--detach", "--nodes", str(NODES), "--dir", str(root))
    assert up.returncode == 0, up.stderr
    newcomer: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "newcomer.log").open("wb")
    try:
        state = json.loads((root / "devnet.json").read_text())
        by_id = {bytes.fromhex(n["ed25519"]): n for n in state["nodes"]}
        accounts = [Account() for _ in range(40)]
        old_map = run(_swarm_map(root, _address(state["nodes"][0]["http"]), state["swarm_size"]))

        async def deposit() -> None:
            for account in accounts:
                member = by_id[old_map.swarm(account.account_bytes)[0]]
                host, port = _address(member["http"])
                async with await HttpClient.connect(port, host) as http:
                    status, body = await http.rpc("store", account.store(b"for the newcomer"))
                    assert status == 200, body

        run(deposit())
        port, link = free_port(), free_port()
        host = "127.0.200.1"  # a /24 of its own, as every devnet node has
        data_dir = tmp_path / "newcomer"
        init = subprocess.run(
            [sys.executable, "-m", "veil", "node", "init", "--data-dir", str(data_dir),
             "--listen", f"{host}:{port}", "--link-listen", f"{host}:{link}",
             "--network", str(root / "network.json")],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert init.returncode == 0, init.stderr
        newcomer = subprocess.Popen(
            [sys.executable, "-m", "veil", "node", "run", "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        joined_at = time.monotonic()

        async def share_held() -> float:
            while True:
                try:
                    async with await HttpClient.connect(port, host) as http:
                        _, info = await http.rpc("info", {})
                        _, listing = await http.rpc("get_nodes", {})
                except OSError:  # not listening yet
                    assert time.monotonic() - joined_at < 60, "the newcomer never started"
                    await asyncio.sleep(0.2)
                    continue
                ids = [bytes.fromhex(n["ed25519"]) for n in listing["nodes"]]
                mine = bytes.fromhex(info["ed25519"])
                if len(ids) == NODES + 1 and mine in ids:
                    new_map = await _swarm_map(root, (host, port), state["swarm_size"])
                    share = [a for a in accounts if mine in new_map.swarm(a.account_bytes)]
                    assert share, "the newcomer serves none of 40 accounts: an empty check"
                    held = [await _held((host, port), a) for a in share]
                    if all(len(h) == 1 for h in held):
                        return time.monotonic() - joined_at
                assert time.monotonic() - joined_at < 60, "the newcomer lacks its share after 60 s"
                await asyncio.sleep(0.5)

        elapsed = run(share_held())
        print(f"newcomer held its share after {elapsed:.1f} s")
    finally:
        if newcomer is not None:
            newcomer.kill()
            newcomer.wait()
        log.close()
        down = _devnet("down", "--dir", str(root))
        assert down.returncode == 0, down.stderr


def test_with_two_of_three_authorities_down_the_nodes_run_on_their_last_consensus(
    tmp_path: Path,
) -> None:
    root = tmp_path / "devnet"
    up = _devnet("up", "--detach", "--nodes", "4", "--dir", str(root))
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((root / "devnet.json").read_text())
        network = load_network_file(root / "network.json")
        addresses = [_address(n["http"]) for n in state["nodes"]]

        async def held() -> list[SignedConsensus]:
            found = []
            for address in addresses:
                async with await HttpClient.connect(address[1], address[0]) as http:
                    answer = await http.request("GET", "/consensus")
                assert answer.status == 200, answer.status
                found.append(SignedConsensus.from_json(answer.json(), network))
            return found

        for authority in state["authorities"][1:]:
            os.kill(authority["pid"], signal.SIGTERM)
        time.sleep(2 * network.period_s)
        last = run(held())
        periods = {signed.consensus.period for signed in last}
        time.sleep(3 * network.period_s)  # periods go by: no majority, no new consensus
        again = run(held())
        assert {signed.consensus.period for signed in again} == periods
        assert len(periods) == 1
        expires = last[0].consensus.valid_until_ms
        assert expires - time.time() * 1000 > 60_000, "the last consensus expires within a minute"

        async def store() -> int:
            alice = Account()
            host, port = addresses[0]
            params = alice.store(b"on the last consensus")
            async with await HttpClient.connect(port, host) as http:
                status, body = await http.rpc("store", params)
            assert status == 200, body
            # the members whose signed result (each under its own key) verifies
            signers = [bytes.fromhex(member) for member in body["swarm"]]
            return len(verify_swarm("store", params, body, signers))

        assert run(store()) >= 3
    finally:
        down = _devnet("down", "--dir", str(root))
        assert down.returncode == 0, down.stderr
