"""The swarm mapping: deterministic, sized, and moving close to the minimum on a join or a leave."""

from __future__ import annotations

import hashlib
import random

import pytest

from veil.protocol.swarms import SwarmMap


def _ids(n: int, salt: str = "node") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(n)]


def _accounts(n: int) -> list[bytes]:
    rng = random.Random(7)
    return [b"\x05" + rng.randbytes(32) for _ in range(n)]


def _placements(swarms: SwarmMap, accounts: list[bytes]) -> set[tuple[bytes, bytes]]:
    return {(a, node) for a in accounts for node in swarms.swarm(a)}


def test_nodes_with_the_same_view_agree_whatever_its_order() -> None:
    nodes = _ids(12)
    shuffled = nodes[:]
    random.Random(1).shuffle(shuffled)
    a, b = SwarmMap(nodes, 5), SwarmMap(shuffled, 5)
    for account in _accounts(200):
        assert a.swarm(account) == b.swarm(account)
        assert len(set(a.swarm(account))) == 5


def test_a_view_smaller_than_the_swarm_size_puts_every_node_in_the_swarm() -> None:
    nodes = _ids(3)
    assert set(SwarmMap(nodes, 5).swarm(b"\x05" + bytes(32))) == set(nodes)


@pytest.mark.parametrize(("n", "r"), [(6, 3), (12, 5), (24, 5)])
def test_a_join_or_a_leave_moves_at_most_one_and_a_half_times_the_ideal_share(
    n: int, r: int
) -> None:
    accounts = _accounts(4000)  # one message per account: messages moved = placements gained
    nodes = _ids(n)
    before = _placements(SwarmMap(nodes, r), accounts)
    joined = _placements(SwarmMap([*nodes, *_ids(1, "newcomer")], r), accounts)
    left = _placements(SwarmMap(nodes[1:], r), accounts)
    for after in (joined, left):
        moved = len(after - before)  # copies a node must receive
        fraction = moved / len(accounts)
        assert fraction <= 1.5 * r / n, (n, r, fraction)
        assert fraction > 0.5 * r / (n + 1)  # it does move its share: not vacuous
