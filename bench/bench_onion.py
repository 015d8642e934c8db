"""pytest-benchmark suite of onion peeling (the second front end of ``veil.benchmarks.onion``).

Groups:

- ``peel-1KiB``, ``peel-10KiB``: the four candidates of ``veil bench onion`` side by side (floor,
  python, rust, rust-batch). The batch is timed per call of ``BATCH`` onions; its ``extra_info``
  gives the per-onion figures.
- ``x25519``: ``veil._core.x25519`` against PyNaCl's ``crypto_scalarmult``.
- ``xchacha20poly1305-10KiB``: ``veil._core.xchacha20poly1305_decrypt`` against PyNaCl's.

Benchmarks are disabled by default (``--benchmark-disable`` in ``pyproject.toml``): each then runs
once, as a correctness check. Every benchmark asserts its result. ``--benchmark-enable`` times them.

The ``test_cli_*`` tests check the ``veil bench onion`` command end to end on a ``--quick`` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import pytest

from benchkit import Benchmark
from veil import _core, crypto
from veil.benchmarks import onion
from veil.cli import main

SIZES = {"1KiB": 1024, "10KiB": 10240}
BATCH = onion.DEFAULT_BATCH
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Case:
    """A prepared onion and what peeling it must give (checked across all candidates)."""

    prepared: onion.Prepared
    batch: list[bytes]
    plaintext: bytes  # the layer's plaintext: kind ‖ next_hop ‖ routing_len ‖ routing ‖ body
    inner: bytes  # the body: the next hop's layer
    replay_tag: bytes


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    result = {}
    for label, size in SIZES.items():
        prepared = onion.prepare(size)
        onion.check_results(prepared)  # every candidate agrees, and the body is the right layer
        reference = crypto.peel_onion(prepared.node_secret, prepared.onion)
        plaintext = (
            bytes([onion.KIND_FORWARD])
            + prepared.next_public
            + len(prepared.routing).to_bytes(2, "big")
            + prepared.routing
            + reference.payload
        )
        result[label] = Case(
            prepared=prepared,
            batch=prepared.batch(BATCH),
            plaintext=plaintext,
            inner=reference.payload,
            replay_tag=reference.replay_tag,
        )
    return result


def _assert_peeled(case: Case, layer: crypto.PeeledLayer | onion.PythonPeeledLayer) -> None:
    assert layer.next_hop == case.prepared.next_public
    assert layer.routing == case.prepared.routing
    assert layer.payload == case.inner
    assert layer.replay_tag == case.replay_tag
    assert layer.reply_key is None


# --------------------------------------------------------------------------------------------------
# peel-1KiB, peel-10KiB


@pytest.mark.parametrize("label", list(SIZES))
def test_peel_floor(benchmark: Benchmark, cases: dict[str, Case], label: str) -> None:
    benchmark.group = f"peel-{label}"
    case = cases[label]
    plaintext = benchmark(onion.peel_floor, *case.prepared.floor_args)
    assert plaintext == case.plaintext


@pytest.mark.parametrize("label", list(SIZES))
def test_peel_python(benchmark: Benchmark, cases: dict[str, Case], label: str) -> None:
    benchmark.group = f"peel-{label}"
    case = cases[label]
    p = case.prepared
    layer = benchmark(onion.peel_python, p.node_secret, p.node_public, p.onion)
    _assert_peeled(case, layer)


@pytest.mark.parametrize("label", list(SIZES))
def test_peel_rust(benchmark: Benchmark, cases: dict[str, Case], label: str) -> None:
    benchmark.group = f"peel-{label}"
    case = cases[label]
    layer = benchmark(crypto.peel_onion, case.prepared.node_secret, case.prepared.onion)
    _assert_peeled(case, layer)


@pytest.mark.parametrize("label", list(SIZES))
def test_peel_rust_batch(benchmark: Benchmark, cases: dict[str, Case], label: str) -> None:
    benchmark.group = f"peel-{label}"
    benchmark.extra_info["onions_per_call"] = BATCH
    case = cases[label]
    layers = benchmark(crypto.peel_onion_batch, case.prepared.node_secret, case.batch)
    assert len(layers) == BATCH
    for layer in layers:
        assert not isinstance(layer, Exception)
        _assert_peeled(case, layer)
    if benchmark.stats is not None:  # None when benchmarks are disabled
        stats = benchmark.stats.stats
        benchmark.extra_info.update(
            per_onion_min_us=stats.min / BATCH * 1e6,
            per_onion_median_us=stats.median / BATCH * 1e6,
            per_onion_mean_us=stats.mean / BATCH * 1e6,
            onions_per_s=stats.ops * BATCH,
        )


# --------------------------------------------------------------------------------------------------
# x25519, xchacha20poly1305-10KiB


@pytest.fixture(scope="module")
def x25519_inputs() -> tuple[bytes, bytes, bytes]:
    secret = _core.x25519_generate_secret()
    public = _core.x25519_public_key(_core.x25519_generate_secret())
    shared = nacl.bindings.crypto_scalarmult(secret, public)
    assert shared == _core.x25519(secret, public)
    return secret, public, shared


@pytest.mark.benchmark(group="x25519")
def test_x25519_veil(benchmark: Benchmark, x25519_inputs: tuple[bytes, bytes, bytes]) -> None:
    secret, public, shared = x25519_inputs
    assert benchmark(_core.x25519, secret, public) == shared


@pytest.mark.benchmark(group="x25519")
def test_x25519_pynacl(benchmark: Benchmark, x25519_inputs: tuple[bytes, bytes, bytes]) -> None:
    secret, public, shared = x25519_inputs
    assert benchmark(nacl.bindings.crypto_scalarmult, secret, public) == shared


@dataclass(frozen=True)
class AeadCase:
    key: bytes
    nonce: bytes
    aad: bytes
    plaintext: bytes
    ciphertext: bytes


@pytest.fixture(scope="module")
def aead_case() -> AeadCase:
    key, nonce, aad = os.urandom(32), os.urandom(24), b"\x01" + os.urandom(32)
    plaintext = os.urandom(10240)
    ciphertext = _core.xchacha20poly1305_encrypt(key, nonce, plaintext, aad)
    assert ciphertext == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad, nonce, key
    )
    return AeadCase(key, nonce, aad, plaintext, ciphertext)


@pytest.mark.benchmark(group="xchacha20poly1305-10KiB")
def test_xchacha20poly1305_decrypt_veil(benchmark: Benchmark, aead_case: AeadCase) -> None:
    c = aead_case
    result = benchmark(_core.xchacha20poly1305_decrypt, c.key, c.nonce, c.ciphertext, c.aad)
    assert result == c.plaintext


@pytest.mark.benchmark(group="xchacha20poly1305-10KiB")
def test_xchacha20poly1305_decrypt_pynacl(benchmark: Benchmark, aead_case: AeadCase) -> None:
    c = aead_case
    result = benchmark(
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt,
        c.ciphertext,
        c.aad,
        c.nonce,
        c.key,
    )
    assert result == c.plaintext


# --------------------------------------------------------------------------------------------------
# The command


def test_cli_bench_onion_quick_writes_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_path, png_path = tmp_path / "onion.json", tmp_path / "onion.png"
    argv = ["bench", "onion", "--quick", "--json", str(json_path), "--png", str(png_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in onion.CANDIDATES:
        assert name in out
    assert "rust / floor" in out

    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["schema"] == onion.SCHEMA
    assert set(report) >= {
        "config",
        "machine",
        "versions",
        "targets",
        "results",
        "all_targets_met",
        "started_at",
        "duration_s",
    }
    assert report["config"]["sizes"] == [1024, 10240]
    assert report["config"]["batch"] == onion.DEFAULT_BATCH
    repeat = report["config"]["repeat"]
    assert repeat == onion.QUICK_REPEAT
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert {"platform", "cpu_model"} <= set(report["machine"])
    assert {"veil", "pynacl", "libsodium"} <= set(report["versions"])
    assert [r["payload_size"] for r in report["results"]] == [1024, 10240]
    for result in report["results"]:
        assert result["onion_len"] > result["payload_size"]
        assert list(result["candidates"]) == list(onion.CANDIDATES)
        for name, candidate in result["candidates"].items():
            assert len(candidate["samples_us"]) == repeat
            assert all(sample > 0 for sample in candidate["samples_us"])
            assert candidate["min_us"] <= candidate["median_us"] <= candidate["max_us"]
            assert candidate["ops_per_s"] == pytest.approx(1e6 / candidate["median_us"])
            assert candidate["loops"] >= 1
            assert candidate["onions_per_call"] == (BATCH if name == "rust-batch" else 1)
        assert set(result["ratios"]) == {"rust_over_floor", "batch_speedup", "python_over_rust"}
        for ratio in result["ratios"].values():
            assert ratio["value"] > 0
            assert isinstance(ratio["met"], bool)
            assert ratio["op"] in {"<=", ">=", ">"}
    assert isinstance(report["all_targets_met"], bool)

    assert png_path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("where", ["missing-directory", "is-a-directory"])
def test_cli_unwritable_json_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = (
        tmp_path / "no" / "such" / "dir" / "onion.json"
        if where == "missing-directory"
        else tmp_path
    )
    assert main(["bench", "onion", "--quick", "--json", str(target)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before running anything
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("veil: ")
    assert "--json" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "bad",
    [
        ["--repeat", "0"],
        ["--batch", "many"],
        ["--sizes", "big"],
        ["--sizes", ","],
        ["--frobnicate"],
    ],
)
def test_cli_bad_option_is_a_usage_error(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "onion", *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: veil")
    assert "error:" in err


def test_cli_import_does_no_work() -> None:
    code = (
        "import sys, veil.cli; "
        "print(sorted(m for m in ('veil._core', 'veil.benchmarks', 'nacl', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
