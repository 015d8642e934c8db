"""pytest-benchmark suite of closed groups' cryptography (``docs/performance.md``, "Closed groups").

In one run, side by side:

- ``group-rekey``: ``seal_keys`` for 10 and for 100 members (one X25519 and one AEAD per member,
  the padding, one signature) — what an admin pays for each removal; and ``open_keys`` by the
  member whose entry is tried last (one X25519, one signature check, up to 100 AEAD openings).
- ``group-vs-1to1``: sending and reading 1 KiB of padded content in a group
  (``seal_message``/``open_message``: one signature, one AEAD; one AEAD, one signature check)
  against a 1:1 message (``encrypt_for_recipient``/``decrypt_incoming``, the Session Protocol).

Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``): each then runs
once as a correctness check (every result is checked).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from veil.crypto import decrypt_incoming, encrypt_for_recipient
from veil.identity import Identity
from veil.protocol.content import pad
from veil.protocol.groups import GroupKey, open_keys, open_message, seal_keys, seal_message

Benchmark = Any
NOW = 1_700_000_000_000


@pytest.mark.parametrize("members", [10, 100])
def test_rekey_seal(benchmark: Benchmark, members: int) -> None:
    benchmark.group = "group-rekey"
    seed = os.urandom(32)
    keys = [Identity.generate().x25519_public_key for _ in range(members)]
    key = GroupKey(2, os.urandom(32))
    sealed = benchmark(seal_keys, seed, key, keys, NOW)
    benchmark.extra_info["bytes"] = len(sealed)
    assert len(sealed) < 76_800


@pytest.mark.parametrize("members", [10, 100])
def test_rekey_open(benchmark: Benchmark, members: int) -> None:
    benchmark.group = "group-rekey"
    seed = os.urandom(32)
    group = Identity(seed).ed25519_public_key
    reader = Identity.generate()
    others = [Identity.generate().x25519_public_key for _ in range(members - 1)]
    key = GroupKey(2, os.urandom(32))
    sealed = seal_keys(seed, key, [*others, reader.x25519_public_key], NOW)
    opened = benchmark(open_keys, group, reader.x25519_secret_key, sealed)
    assert opened.key == key


@pytest.mark.parametrize("kind", ["group", "1to1"])
def test_send_and_read(benchmark: Benchmark, kind: str) -> None:
    benchmark.group = "group-vs-1to1"
    alice, bob = Identity.generate(), Identity.generate()
    content = pad(os.urandom(1024))
    group = Identity.generate().ed25519_public_key
    key = GroupKey(1, os.urandom(32))

    def group_round() -> bytes:
        sealed = seal_message(group, key, alice.seed, content)
        return open_message(group, {1: key}, sealed).padded_content

    def one_to_one_round() -> bytes:
        sealed = encrypt_for_recipient(alice, bob.session_id, content)
        return decrypt_incoming(bob, sealed)[0]

    got = benchmark(group_round if kind == "group" else one_to_one_round)
    assert got == content
