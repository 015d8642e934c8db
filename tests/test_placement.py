"""Swarm placement cannot be ground: an operator who generates many keys to take a chosen account's
swarm gets, once admitted, no more seats than random placement gives it.

The operator below knows the account and the honest nodes, generates keys and keeps the ones that
would rank highest for the account — the attack that takes every seat when placement is the key
itself. It registers them before the period's shared random value is revealed; placement is then
``BLAKE2b(context ‖ key ‖ srv)`` with a value it could not know, so its choice buys nothing.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics

from veil.protocol.consensus import placement_of
from veil.protocol.swarms import SwarmMap

R = 5
HONEST = 100
ADMITTED = 5  # what the per-subnet cap lets one operator in (max_nodes_per_subnet)
GENERATED = 10_000
TRIALS = 200


def _weight(account: bytes, placement: bytes) -> bytes:
    """The node's rank for the account: over the account's key without its prefix, as
    ``SwarmMap`` ranks (Session places ``05…`` and ``03…`` of one key alike)."""
    return hashlib.blake2b(account[1:] + placement, digest_size=8).digest()


def _best_keys(account: bytes, keys: list[bytes], count: int) -> list[bytes]:
    """The keys that would rank highest for ``account`` if placement were the key itself."""
    return sorted(keys, key=lambda key: _weight(account, key), reverse=True)[:count]


def test_keys_chosen_for_an_account_take_its_whole_swarm_when_placement_is_the_key() -> None:
    rng = random.Random(1)
    account = b"\x05" + rng.randbytes(32)
    honest = [rng.randbytes(32) for _ in range(HONEST)]
    chosen = _best_keys(account, [rng.randbytes(32) for _ in range(GENERATED)], ADMITTED)
    swarm = SwarmMap(honest + chosen, R).swarm(account)
    assert sum(node in chosen for node in swarm) == R  # the attack works without the srv


def test_the_same_keys_get_no_more_seats_than_chance_once_placed_by_the_shared_random_value() -> (
    None
):
    rng = random.Random(2)
    account = b"\x05" + rng.randbytes(32)
    seats = []
    for _ in range(TRIALS):
        honest = [rng.randbytes(32) for _ in range(HONEST)]
        chosen = _best_keys(account, [rng.randbytes(32) for _ in range(GENERATED)], ADMITTED)
        srv = os.urandom(32)  # revealed after the keys registered
        nodes = honest + chosen
        placements = {node: placement_of(node, srv) for node in nodes}
        swarm = SwarmMap(nodes, R, placements).swarm(account)
        seats.append(sum(node in chosen for node in swarm))
    expected = R * ADMITTED / (HONEST + ADMITTED)  # random placement: 0.238 seats per swarm
    mean = statistics.mean(seats)
    print(f"operator seats per swarm: mean {mean:.3f} over {TRIALS} trials, chance {expected:.3f}")
    assert mean < 2 * expected
    assert max(seats) < R  # never the whole swarm
    assert sum(s >= 3 for s in seats) <= TRIALS // 100  # a write quorum (3 of 5) is rare
