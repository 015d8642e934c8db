"""Key encapsulation: ML-KEM-768 and the hybrid ``veil-hybrid-v1`` (X25519 + ML-KEM-768) against the
core's X25519, through ``veil._core`` (rust/veil-core/src/kem.rs; ML-KEM from ``libcrux-ml-kem``,
X25519 from AWS-LC).

Groups (pytest-benchmark, one call each), with the classical baseline in each:

- ``kem-keygen``: ``x25519`` (``x25519_generate_secret`` + ``x25519_public_key``), ``mlkem768``
  (``mlkem768_keypair()``: a random 64-byte seed and the key expanded from it), ``hybrid``
  (``hybrid_keypair()``: a 32-byte seed, SHAKE256, both key generations).
- ``kem-encaps``: ``x25519`` (an ephemeral key pair and one X25519 with the receiver's public key:
  what the initiator of a plain X25519 exchange does), ``mlkem768`` (``mlkem768_encapsulate``: the
  modulus check, then encapsulation with a fresh ``m``), ``hybrid`` (``hybrid_encapsulate``: both,
  and SHA3-256).
- ``kem-decaps``: ``x25519`` (one X25519 with a stored secret), ``mlkem768``
  (``mlkem768_decapsulate``: the private key is the seed, so this includes re-deriving the expanded
  key), ``hybrid`` (``hybrid_decapsulate``: the seed's expansion, both key generations, X25519,
  decapsulation and SHA3-256).

Every candidate is checked before it is timed (each encapsulation decapsulates to its secret).
Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``): each then runs
once, as a correctness check, and ``test_interleaved`` runs one short repetition. With
``--benchmark-enable``, ``test_interleaved`` times every candidate in ``REPEAT`` repetitions whose
order rotates (noise on the machine falls on all alike) and the medians and ratios are printed at
the end of the module::

    .venv/bin/pytest -p no:cacheprovider -q bench/bench_kem.py --benchmark-enable -s
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import pytest

from benchkit import Benchmark, calibrate, time_loop
from veil import _core

GROUPS = ("kem-keygen", "kem-encaps", "kem-decaps")
NAMES = ("x25519", "mlkem768", "hybrid")
REPEAT = (15, 1)  # interleaved repetitions (enabled, disabled)
TARGET_S = (0.1, 0.002)  # seconds per candidate per repetition
RATIOS = (("mlkem768", "x25519"), ("hybrid", "x25519"), ("hybrid", "mlkem768"))

FIGURES: dict[str, Any] = {}


@dataclass(frozen=True)
class Keys:
    """One key of each kind, and a ciphertext of each, made once outside the timing."""

    x25519_secret: bytes
    x25519_public: bytes
    x25519_peer: bytes
    mlkem_ek: bytes
    mlkem_seed: bytes
    mlkem_ct: bytes
    mlkem_ss: bytes
    hybrid_public: bytes
    hybrid_seed: bytes
    hybrid_ct: bytes
    hybrid_ss: bytes

    def op(self, group: str, name: str) -> Callable[[], object]:
        """The candidate's operation; each returns what ``check`` verifies."""
        ops: dict[tuple[str, str], Callable[[], object]] = {
            ("kem-keygen", "x25519"): self.x25519_keygen,
            ("kem-keygen", "mlkem768"): _core.mlkem768_keypair,
            ("kem-keygen", "hybrid"): _core.hybrid_keypair,
            ("kem-encaps", "x25519"): self.x25519_exchange,
            ("kem-encaps", "mlkem768"): lambda: _core.mlkem768_encapsulate(self.mlkem_ek),
            ("kem-encaps", "hybrid"): lambda: _core.hybrid_encapsulate(self.hybrid_public),
            ("kem-decaps", "x25519"): lambda: _core.x25519(self.x25519_secret, self.x25519_peer),
            ("kem-decaps", "mlkem768"): lambda: _core.mlkem768_decapsulate(
                self.mlkem_seed, self.mlkem_ct
            ),
            ("kem-decaps", "hybrid"): lambda: _core.hybrid_decapsulate(
                self.hybrid_seed, self.hybrid_ct
            ),
        }
        return ops[group, name]

    @staticmethod
    def x25519_keygen() -> tuple[bytes, bytes]:
        secret = _core.x25519_generate_secret()
        return secret, _core.x25519_public_key(secret)

    def x25519_exchange(self) -> tuple[bytes, bytes, bytes]:
        ephemeral, ephemeral_public = self.x25519_keygen()
        return ephemeral, ephemeral_public, _core.x25519(ephemeral, self.x25519_public)

    def check(self, group: str, name: str, result: object) -> None:
        """That a candidate's result is right (each kind decapsulates or agrees)."""
        assert isinstance(result, tuple | bytes)
        if group == "kem-keygen":
            assert isinstance(result, tuple)
            first, second = result
            if name == "x25519":
                assert nacl.bindings.crypto_scalarmult_base(first) == second
            elif name == "mlkem768":
                ct, ss = _core.mlkem768_encapsulate(first)
                assert _core.mlkem768_decapsulate(second, ct) == ss
            else:
                ct, ss = _core.hybrid_encapsulate(first)
                assert _core.hybrid_decapsulate(second, ct) == ss
        elif group == "kem-encaps":
            assert isinstance(result, tuple)
            if name == "x25519":
                ephemeral, ephemeral_public, shared = result
                assert nacl.bindings.crypto_scalarmult_base(ephemeral) == ephemeral_public
                assert nacl.bindings.crypto_scalarmult(self.x25519_secret, ephemeral_public) == (
                    shared
                )
            elif name == "mlkem768":
                ct, ss = result
                assert _core.mlkem768_decapsulate(self.mlkem_seed, ct) == ss
            else:
                ct, ss = result
                assert _core.hybrid_decapsulate(self.hybrid_seed, ct) == ss
        else:
            expected = {
                "x25519": nacl.bindings.crypto_scalarmult(self.x25519_secret, self.x25519_peer),
                "mlkem768": self.mlkem_ss,
                "hybrid": self.hybrid_ss,
            }[name]
            assert result == expected


@pytest.fixture(scope="module")
def keys() -> Keys:
    x25519_secret = _core.x25519_generate_secret()
    x25519_public = _core.x25519_public_key(x25519_secret)
    x25519_peer = _core.x25519_public_key(_core.x25519_generate_secret())
    mlkem_ek, mlkem_seed = _core.mlkem768_keypair()
    mlkem_ct, mlkem_ss = _core.mlkem768_encapsulate(mlkem_ek)
    hybrid_public, hybrid_seed = _core.hybrid_keypair()
    hybrid_ct, hybrid_ss = _core.hybrid_encapsulate(hybrid_public)
    return Keys(
        x25519_secret,
        x25519_public,
        x25519_peer,
        mlkem_ek,
        mlkem_seed,
        mlkem_ct,
        mlkem_ss,
        hybrid_public,
        hybrid_seed,
        hybrid_ct,
        hybrid_ss,
    )


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the interleaved medians and their ratios once the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    results: dict[str, dict[str, list[float]]] | None = FIGURES.get("interleaved")
    if reporter is None or not results or FIGURES.get("disabled", True):
        return
    lines = ["", f"KEMs, interleaved ({FIGURES['repeat']} repetitions), us per operation:"]
    for group, by_name in results.items():
        medians = {name: statistics.median(samples) for name, samples in by_name.items()}
        row = "  ".join(
            f"{name} {medians[name]:.2f} [{min(by_name[name]):.2f}-{max(by_name[name]):.2f}]"
            for name in by_name
        )
        lines.append(f"  {group:11} {row}")
        ratios = ", ".join(f"{a}/{b} {medians[a] / medians[b]:.2f}" for a, b in RATIOS)
        lines.append(f"  {'':11} {ratios}")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


# --- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("group", GROUPS)
def test_every_candidate_gives_a_right_result(keys: Keys, group: str, name: str) -> None:
    op = keys.op(group, name)
    keys.check(group, name, op())
    keys.check(group, name, op())  # and again: nothing is used up


def test_the_sizes_on_the_wire(keys: Keys) -> None:
    assert (len(keys.mlkem_ek), len(keys.mlkem_ct)) == (1184, 1088)
    assert (len(keys.hybrid_public), len(keys.hybrid_ct)) == (32 + 1184, 32 + 1088)
    assert (len(keys.mlkem_seed), len(keys.hybrid_seed)) == (64, 32)


# --- pytest-benchmark rows ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("group", GROUPS)
def test_kem(benchmark: Benchmark, keys: Keys, group: str, name: str) -> None:
    benchmark.group = group
    keys.check(group, name, benchmark(keys.op(group, name)))


# --- the figures: interleaved ---------------------------------------------------------------------


def test_interleaved(benchmark: Benchmark, keys: Keys) -> None:
    """Every candidate of every group, interleaved, as one pytest-benchmark round (its
    ``extra_info`` has the medians); medians and ratios are printed at the end of the module."""
    benchmark.group = "kem-interleaved"
    enabled = not benchmark.disabled
    repeat, target = REPEAT[0 if enabled else 1], TARGET_S[0 if enabled else 1]
    timed = [(group, name, keys.op(group, name)) for group in GROUPS for name in NAMES]

    def run() -> list[list[float]]:
        loops = [calibrate(op, target) for _, _, op in timed]
        samples: list[list[float]] = [[] for _ in timed]
        for repetition in range(repeat):
            start = repetition % len(timed)
            for index in [*range(start, len(timed)), *range(start)]:
                samples[index].append(time_loop(timed[index][2], loops[index]) * 1e6)
        return samples

    samples = benchmark.pedantic(run, rounds=1)
    assert all(len(values) == repeat for values in samples)
    results: dict[str, dict[str, list[float]]] = {}
    for (group, name, _), values in zip(timed, samples, strict=True):
        results.setdefault(group, {})[name] = values
        benchmark.extra_info[f"{group}/{name}/median_us"] = round(statistics.median(values), 3)
    FIGURES["interleaved"] = results
    FIGURES["repeat"] = repeat
    FIGURES["disabled"] = not enabled
