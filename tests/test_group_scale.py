"""A closed group of ``MEMBERS`` (100, the most a group may have) on a devnet of real node processes
(``docs/performance.md``, "Closed groups: 100 members on a devnet").

One devnet for the module (``python -m veil devnet up --detach --nodes NODES``: 3 authorities and
``NODES`` node processes), always brought down. The clients run here, in one process: ``MEMBERS``
identities, each a device of its own — a :class:`~veil.client.groups.Groups` on a
:class:`SwarmClient` on a :class:`NetworkClient` (its own consensus, fetched from a seed and checked
against the devnet's network file, its own guards and connections). Members work at most
``IN_FLIGHT`` at a time.

1. The admin creates the group with the other ``MEMBERS - 1``; every member joins from its invite
   and syncs: it holds generation 1 and the config names all ``MEMBERS``.
2. The admin sends one message; every member fetches until it has it (fan-out: from the send to the
   last member's read).
3. The admin removes one member: a keys message of generation 2 sealed to the others, and the
   removed member's token revoked on the group's swarm. The admin sends again; every remaining
   member opens generation 2 and reads that message. The removed member opens no key of
   generation 2 (neither through its own sync nor given every keys message), cannot open the
   message, and every member of the swarm refuses its retrieve (401); its send is refused.

Figures are printed (``pytest -s``), never asserted: the stored keys message's size, the admin's
client CPU for the removal, the fan-out, per-fetch latency, client and node CPU and onion requests.
Client CPU is this process's (``time.process_time``: every device's share, onions and answers
included); node CPU the node processes' user + system time (``/proc``, 10 ms ticks).
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node_helpers import run
from veil.client.bootstrap import find_network_file, open_directory
from veil.client.groups import Group, GroupActionError, Groups
from veil.client.network import NetworkClient
from veil.client.swarm import StoreError, SwarmClient
from veil.devnet.state import load_state
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.groups import MAX_MEMBERS, NS_KEYS, NS_MESSAGES, GroupError, open_keys
from veil.protocol.groups import open_message as open_group_message
from veil.protocol.peers import PeerInfo

MEMBERS = 100
"""Identities in the group, the admin included (``MAX_MEMBERS``)."""
NODES = 6
IN_FLIGHT = 16
"""Members working at once."""
FETCH_TRIES = 10
"""Fetches a member makes (0.2 s apart) before a message it should read counts as missing."""
IDLE_FETCHES = 10
"""Fetches with nothing new, one after the other, for the unloaded cost of a fetch."""
UP_TIMEOUT_S = 60.0
REVOKED_WAIT_S = 10.0


def _devnet(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", "devnet", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Devnet:
    network_file: Path
    seeds: list[str]
    node_pids: list[int]
    up_s: float


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/PID/stat``)."""
    ticks = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        fields = stat[stat.rfind(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("groupscale") / "devnet"
    started = time.monotonic()
    try:
        up = _devnet(
            "up",
            "--detach",
            "--nodes",
            str(NODES),
            "--dir",
            str(root),
            "--timeout",
            str(UP_TIMEOUT_S - 15),
            timeout=UP_TIMEOUT_S,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        state = load_state(root.resolve())
        assert state is not None
        pids = [n.process.pid for n in state.nodes if n.process is not None and n.running()]
        assert len(pids) == NODES, pids
        yield Devnet(root / "network.json", list(state.seeds), pids, time.monotonic() - started)
    finally:
        if (root / "devnet.json").exists():
            down = _devnet("down", "--dir", str(root), timeout=60)
            assert down.returncode == 0, down.stdout + down.stderr


class CountingNetworkClient(NetworkClient):
    """Counts onion requests by method (consensus refreshes, ``get_consensus``, included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.methods: Counter[str] = Counter()

    async def request(
        self,
        destination: PeerInfo,
        method: str,
        params: dict[str, Any],
        *,
        onion: str | None = None,
    ) -> tuple[int, Any]:
        self.methods[method] += 1
        return await super().request(destination, method, params, onion=onion)


@dataclass
class Member:
    """One identity on a device of its own."""

    identity: Identity
    network: CountingNetworkClient
    groups: Groups
    group: Group | None = None


@dataclass
class Phase:
    """Wall, client and node CPU seconds of a phase, each fetch's latency, and onion requests
    made."""

    wall_s: float
    cpu_s: float
    nodes_cpu_s: float
    fetch_s: list[float]
    requests: Counter[str]

    def per_fetch(self, what: str = "fetches") -> str:
        n = len(self.fetch_s)
        fetch_requests = sum(v for k, v in self.requests.items() if k != "get_consensus")
        ordered = sorted(self.fetch_s)
        return (
            f"{n} {what}: latency p50 {statistics.median(ordered) * 1e3:.1f} ms,"
            f" p95 {ordered[min(n - 1, int(0.95 * n))] * 1e3:.1f} ms,"
            f" max {ordered[-1] * 1e3:.1f} ms; CPU per fetch: client {self.cpu_s / n * 1e3:.2f} ms,"
            f" nodes {self.nodes_cpu_s / n * 1e3:.1f} ms; onion requests {fetch_requests / n:.2f}"
            f" (+{self.requests['get_consensus']} consensus refreshes)"
        )


def _total(members: list[Member]) -> Counter[str]:
    total: Counter[str] = Counter()
    for member in members:
        total.update(member.network.methods)
    return total


async def _phase(
    everyone: list[Member], pids: list[int], work: Callable[[list[float]], Awaitable[None]]
) -> Phase:
    before = _total(everyone)
    nodes_cpu = _cpu_s(pids)
    cpu = time.process_time()
    started = time.perf_counter()
    fetch_s: list[float] = []
    await work(fetch_s)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    requests = _total(everyone)
    requests.subtract(before)
    return Phase(wall, cpu, _cpu_s(pids) - nodes_cpu, fetch_s, +requests)


async def _read(member: Member, digest: str, fetch_s: list[float]) -> tuple[str, int] | None:
    """Fetch until the message stored under ``digest`` comes (at most ``FETCH_TRIES`` fetches):
    its (text, generation), or None; each fetch's latency goes to ``fetch_s``."""
    assert member.group is not None
    for attempt in range(FETCH_TRIES):
        if attempt:
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        got = await member.groups.fetch(member.group)
        fetch_s.append(time.perf_counter() - started)
        for message in got:
            if message.hash == digest:
                return message.text, message.generation
    return None


async def _bounded(members: list[Member], each: Callable[[Member], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(member: Member) -> Any:
        async with gate:
            return await each(member)

    return list(await asyncio.gather(*(one(m) for m in members)))


async def _retrieve_status(swarm: SwarmClient, member: PeerInfo, group: Group) -> int:
    """The status a swarm member answers to a retrieve of the group's messages signed with the
    device's subaccount."""
    params = storage_rpc.retrieve_params(group.subaccount, namespace=NS_MESSAGES)
    status, _ = await swarm.network.request(member, "retrieve", params)
    return status


@pytest.mark.timeout(170)  # the devnet (up to 60 s) and the run (at most 100 s)
def test_a_group_of_100_members_reads_and_a_removed_member_is_cut_off(devnet: Devnet) -> None:
    assert MEMBERS <= MAX_MEMBERS
    identities = [Identity.generate() for _ in range(MEMBERS)]
    lines = [
        f"closed group of {MEMBERS} on a devnet of {NODES} node processes (up in"
        f" {devnet.up_s:.1f} s); {MEMBERS} devices in one client process (a network client,"
        f" swarm client and Groups each), {IN_FLIGHT} in flight"
    ]

    async def main() -> None:
        network_file = find_network_file(devnet.network_file)
        everyone: list[Member] = []
        try:
            for identity in identities:
                directory = await open_directory(network_file, devnet.seeds, None)
                assert len(directory.nodes) == NODES
                network = CountingNetworkClient(directory)
                await network.__aenter__()
                everyone.append(Member(identity, network, Groups(identity, SwarmClient(network))))
            await scenario(everyone)
        finally:
            for member in everyone:
                await member.network.close()

    async def scenario(everyone: list[Member]) -> None:
        admin, members = everyone[0], everyone[1:]
        admin_id = admin.identity
        pids = devnet.node_pids

        # 1. Create, join, sync.
        cpu = time.process_time()
        started = time.perf_counter()
        group, invites = await admin.groups.create(
            "hundred", [m.identity.session_id for m in members]
        )
        create_s, create_cpu = time.perf_counter() - started, time.process_time() - cpu
        admin.group = group
        assert set(invites) == {m.identity.session_id for m in members}
        assert group.generation == 1
        all_ids = {i.session_id for i in identities}

        async def join(fetch_s: list[float]) -> None:
            async def one(member: Member) -> None:
                member.group = member.groups.join(invites[member.identity.session_id])
                started = time.perf_counter()
                await member.groups.sync(member.group)
                fetch_s.append(time.perf_counter() - started)

            await _bounded(members, one)

        joined = await _phase(everyone, pids, join)
        for member in members:
            assert member.group is not None
            assert member.group.generation == 1, member.identity.session_id
            assert set(member.group.config.current_members()) == all_ids
            assert member.group.config.name[0] == "hundred"
        lines.append(
            f"  create (keys for {MEMBERS} + config stored): {create_s * 1e3:.1f} ms,"
            f" client CPU {create_cpu * 1e3:.1f} ms"
        )
        lines.append(
            f"  join + sync, all {len(members)}: {joined.wall_s:.2f} s; {joined.per_fetch('syncs')}"
        )

        # 2. One message from the admin, read by every member: the fan-out.
        async def fan_out(text: str, readers: list[Member]) -> tuple[Phase, list[Any]]:
            digest = await admin.groups.send(group, text)
            results: list[Any] = []

            async def work(fetch_s: list[float]) -> None:
                results.extend(await _bounded(readers, lambda m: _read(m, digest, fetch_s)))

            return await _phase(everyone, pids, work), results

        started = time.perf_counter()
        first, results = await fan_out("hello, hundred", members)
        fan_out_s = time.perf_counter() - started
        missing = [
            m.identity.session_id for m, r in zip(members, results, strict=True) if r is None
        ]
        assert not missing, f"{len(missing)} members never read the message: {missing[:3]}"
        assert set(results) == {("hello, hundred", 1)}
        lines.append(
            f"  fan-out, send to all {len(members)} read: {fan_out_s:.2f} s; {first.per_fetch()}"
        )

        # 3. The admin removes one member.
        removed, kept = members[-1], members[:-1]
        assert removed.group is not None
        before = Counter(admin.network.methods)
        cpu = time.process_time()
        started = time.perf_counter()
        await admin.groups.remove(group, removed.identity.session_id)
        remove_s, remove_cpu = time.perf_counter() - started, time.process_time() - cpu
        remove_requests = Counter(admin.network.methods)
        remove_requests.subtract(before)
        assert group.generation == 2
        assert removed.identity.session_id not in group.config.current_members()
        stored_keys = await admin.groups.swarm.retrieve(
            group.subaccount, namespace=NS_KEYS, from_start=True
        )
        by_generation = {}
        for stored in stored_keys:
            data = base64.b64decode(stored["data"])
            opened = open_keys(group.public_key, admin_id.x25519_secret_key, data)
            by_generation[opened.generation] = data
        assert sorted(by_generation) == [1, 2]
        rekey_bytes = len(by_generation[2])
        lines.append(
            f"  remove (rekey for {MEMBERS - 1} + config + revocation): {remove_s * 1e3:.1f} ms,"
            f" admin client CPU {remove_cpu * 1e3:.1f} ms, onion requests"
            f" {dict(+remove_requests)}; keys message stored: {rekey_bytes:,} bytes"
            f" (generation 1: {len(by_generation[1]):,})"
        )

        started = time.perf_counter()
        second, results = await fan_out("after the removal", kept)
        fan_out_2_s = time.perf_counter() - started
        missing = [m.identity.session_id for m, r in zip(kept, results, strict=True) if r is None]
        assert not missing, f"{len(missing)} members never read the message: {missing[:3]}"
        assert set(results) == {("after the removal", 2)}
        for member in kept:
            assert member.group is not None
            assert member.group.generation == 2
            assert removed.identity.session_id not in member.group.config.current_members()
        assert [(m.text, m.generation) for m in await admin.groups.fetch(group)] == [
            ("hello, hundred", 1),
            ("after the removal", 2),
        ]
        lines.append(
            f"  fan-out after the removal, all {len(kept)} remaining read: {fan_out_2_s:.2f} s;"
            f" {second.per_fetch()}"
        )

        # The removed member: every member of the swarm refuses it (the revocation reaches the
        # members the admin did not write to a moment later), so it reads nothing new and opens
        # no key of generation 2 ...
        swarm = removed.groups.swarm
        swarm_members = swarm.swarm(bytes.fromhex(group.account))
        statuses: list[int] = []
        deadline = time.monotonic() + REVOKED_WAIT_S
        for _ in range(50):
            statuses = [await _retrieve_status(swarm, p, removed.group) for p in swarm_members]
            if set(statuses) == {401} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert statuses == [401] * len(swarm_members)
        await removed.groups.sync(removed.group)
        assert sorted(removed.group.keys) == [1]
        assert await removed.groups.fetch(removed.group) == []
        with pytest.raises(
            GroupActionError, match="store signature verification failed"
        ) as refused:
            await removed.groups.send(removed.group, "still here?")
        assert isinstance(refused.value.__cause__, StoreError)
        assert refused.value.__cause__.code == "401"
        # ... even given every keys message (as a member could pass them on) ...
        for data in by_generation.values():
            opened = open_keys(group.public_key, removed.identity.x25519_secret_key, data)
            assert (opened.key is not None) == (opened.generation == 1)
        # ... and it cannot open the message sent after the removal, given its ciphertext.
        captured = await admin.groups.swarm.retrieve(
            group.subaccount, namespace=NS_MESSAGES, from_start=True
        )
        assert len(captured) == 2
        after = base64.b64decode(max(captured, key=lambda m: m["timestamp"])["data"])
        assert open_group_message(group.public_key, group.keys, after).generation == 2
        with pytest.raises(GroupError):
            open_group_message(group.public_key, removed.group.keys, after)
        # ... while a remaining member is still served.
        assert kept[0].group is not None
        assert await _retrieve_status(kept[0].groups.swarm, swarm_members[0], kept[0].group) == 200

        # Unloaded: a fetch with nothing new, one member after the other.
        async def idle(fetch_s: list[float]) -> None:
            for member in kept[:IDLE_FETCHES]:
                assert member.group is not None
                started = time.perf_counter()
                assert await member.groups.fetch(member.group) == []
                fetch_s.append(time.perf_counter() - started)

        alone = await _phase(everyone, pids, idle)
        lines.append(f"  one at a time, nothing new: {alone.per_fetch()}")

    run(main())
    print("\n" + "\n".join(lines))
