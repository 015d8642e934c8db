"""Blinded IDs for communities (blind25): the Rust core against the plain-Python reference of the
tests (``tests/blind25_reference.py``: PyNaCl's libsodium bindings and ``hashlib``), in the same
run.

Groups, one operation each (every candidate's result checked against the others' first):

- ``blind25-keypair``: ``(b, B)`` from a seed and a server key. ``rust``:
  ``_core.blind25_keypair``; ``rust-key``: ``_core.Blind25Key(...)`` (what ``BlindedIdentity``
  makes once); ``python``: the reference.
- ``blind25-sign``: a signature of 100 bytes. ``rust``: ``_core.blind25_sign`` (derives the key
  pair each call, as the reference does); ``rust-key``: ``Blind25Key.sign`` (key derived once);
  ``python``: the reference.
- ``blind25-verify``: that signature checked under ``B``. ``rust``: ``_core.ed25519_verify``
  (ed25519-dalek, strict); ``python``: PyNaCl's ``crypto_sign_open`` (libsodium).
- ``blind25-public``: ``B`` from a Session ID (what a server computes per guess). ``rust``:
  ``_core.blind25_public``; ``python``: the reference (Montgomery → Edwards with Python integers,
  then libsodium).
- ``blind25-dm-key``: the direct-message key with another blinded key. ``rust``:
  ``_core.blind25_dm_key`` (derives the key pair); ``rust-key``: ``Blind25Key.dm_key``;
  ``python``: the reference.

At the end, the medians of each group and the ratio ``python / rust`` (and ``python / rust-key``)
are printed. Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``):
each then runs once, as a correctness check.

```sh
.venv/bin/python -m pytest bench/bench_blinding.py --benchmark-enable -p no:cacheprovider
```
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from benchkit import Benchmark, median_s
from veil import _core

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import blind25_reference as ref

MESSAGE = os.urandom(100)
CANDIDATES = {
    "blind25-keypair": ("rust", "rust-key", "python"),
    "blind25-sign": ("rust", "rust-key", "python"),
    "blind25-verify": ("rust", "python"),
    "blind25-public": ("rust", "python"),
    "blind25-dm-key": ("rust", "rust-key", "python"),
}
FIGURES: dict[str, dict[str, float]] = {}


@dataclass(frozen=True)
class Case:
    seed: bytes
    server: bytes
    session_id: bytes
    key: _core.Blind25Key
    keypair: tuple[bytes, bytes]
    signature: bytes
    other: bytes
    dm_key: bytes

    def op(self, group: str, name: str) -> tuple[Callable[[], Any], Any]:
        """The operation of ``name`` in ``group``, and what it must return."""
        seed, server, key, other = self.seed, self.server, self.key, self.other
        ops: dict[tuple[str, str], tuple[Callable[[], Any], Any]] = {
            ("blind25-keypair", "rust"): (
                lambda: _core.blind25_keypair(seed, server),
                self.keypair,
            ),
            ("blind25-keypair", "rust-key"): (
                lambda: _core.Blind25Key(seed, server).public,
                self.keypair[1],
            ),
            ("blind25-keypair", "python"): (lambda: ref.keypair(seed, server), self.keypair),
            ("blind25-sign", "rust"): (
                lambda: _core.blind25_sign(seed, server, MESSAGE),
                self.signature,
            ),
            ("blind25-sign", "rust-key"): (lambda: key.sign(MESSAGE), self.signature),
            ("blind25-sign", "python"): (
                lambda: ref.sign(seed, server, MESSAGE),
                self.signature,
            ),
            ("blind25-verify", "rust"): (
                lambda: _core.ed25519_verify(self.keypair[1], MESSAGE, self.signature),
                True,
            ),
            ("blind25-verify", "python"): (
                lambda: nacl.bindings.crypto_sign_open(self.signature + MESSAGE, self.keypair[1]),
                MESSAGE,
            ),
            ("blind25-public", "rust"): (
                lambda: _core.blind25_public(self.session_id, server),
                self.keypair[1],
            ),
            ("blind25-public", "python"): (
                lambda: ref.public_from_session_id(self.session_id, server),
                self.keypair[1],
            ),
            ("blind25-dm-key", "rust"): (
                lambda: _core.blind25_dm_key(seed, server, other, True),
                self.dm_key,
            ),
            ("blind25-dm-key", "rust-key"): (lambda: key.dm_key(other, True), self.dm_key),
            ("blind25-dm-key", "python"): (
                lambda: ref.dm_key(seed, server, other, sending=True),
                self.dm_key,
            ),
        }
        return ops[(group, name)]


@pytest.fixture(scope="module")
def case() -> Case:
    seed, server = os.urandom(32), os.urandom(32)
    other_seed = os.urandom(32)
    other = _core.blind25_keypair(other_seed, server)[1]
    dm_key = ref.dm_key(seed, server, other, sending=True)
    assert dm_key == _core.blind25_dm_key(
        other_seed, server, _core.Blind25Key(seed, server).public, False
    )
    return Case(
        seed=seed,
        server=server,
        session_id=ref.session_id_bytes(seed),
        key=_core.Blind25Key(seed, server),
        keypair=ref.keypair(seed, server),
        signature=ref.sign(seed, server, MESSAGE),
        other=other,
        dm_key=dm_key,
    )


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the medians and the ratios once the module has run with ``--benchmark-enable``."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not FIGURES:
        return
    lines = ["", "blind25, median us per operation (python / rust = how much faster the core is):"]
    for group, medians in FIGURES.items():
        row = "  ".join(f"{name} {median:.1f}" for name, median in medians.items())
        ratios = [
            f"python/{name} {medians['python'] / medians[name]:.1f}x"
            for name in ("rust", "rust-key")
            if name in medians and "python" in medians
        ]
        lines.append(f"  {group:16} {row}   {', '.join(ratios)}")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.mark.parametrize(
    ("group", "name"),
    [(group, name) for group, names in CANDIDATES.items() for name in names],
)
def test_blind25(benchmark: Benchmark, case: Case, group: str, name: str) -> None:
    benchmark.group = group
    op, expected = case.op(group, name)
    assert op() == expected
    assert benchmark(op) == expected
    median = median_s(benchmark)
    if median is not None:
        FIGURES.setdefault(group, {})[name] = median * 1e6
