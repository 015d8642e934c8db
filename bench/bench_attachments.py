"""pytest-benchmark suite of the attachment formats (``veil.protocol.attachments``).

For 1 MiB and 10 MiB of random data, side by side (group ``attach-<size>``):

- ``seal``: :func:`seal_attachment` (the manifest's digest, every chunk padded and sealed, each
  chunk's Ed25519 account derived);
- ``open``: :func:`open_attachment` of the sealed chunks (every chunk opened, padding, size and
  digest checked);
- ``floor``: one XChaCha20-Poly1305 pass over the same bytes through ``veil._core``, in 64 KiB
  pieces (the primitive the formats are built on; no padding, hashing or key derivation).

``test_interleaved`` times the three in rotated repetitions and prints medians (MB/s) and the
ratios to the floor at the end. Benchmarks are disabled by default (``--benchmark-disable``): each
then runs once as a correctness check.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable

import pytest

from benchkit import Benchmark, pick
from veil import _core
from veil.protocol.attachments import CHUNK_SIZE, open_attachment, seal_attachment

SIZES = {"1MiB": 1 << 20, "10MiB": 10 << 20}
_KEY = bytes(32)
_NONCE = bytes(24)


def _floor(data: bytes) -> int:
    total = 0
    for start in range(0, len(data), CHUNK_SIZE):
        total += len(
            _core.xchacha20poly1305_encrypt(_KEY, _NONCE, data[start : start + CHUNK_SIZE])
        )
    return total


def _seal(data: bytes) -> int:
    _, chunks = seal_attachment(data, "bench.bin", "application/octet-stream")
    return len(chunks)


def _candidates(data: bytes) -> dict[str, Callable[[], object]]:
    manifest, chunks = seal_attachment(data, "bench.bin", "application/octet-stream")
    stored = {c.index: c.data for c in chunks}
    return {
        "seal": lambda: _seal(data),
        "open": lambda: open_attachment(manifest, stored),
        "floor": lambda: _floor(data),
    }


@pytest.mark.parametrize("label", list(SIZES))
@pytest.mark.parametrize("name", ["seal", "open", "floor"])
def test_attachment(benchmark: Benchmark, label: str, name: str) -> None:
    benchmark.group = f"attach-{label}"
    data = secrets.token_bytes(SIZES[label])
    run = _candidates(data)[name]
    result = benchmark.pedantic(run, rounds=pick(benchmark, (10, 1)), warmup_rounds=1)
    if name == "open":
        assert result == data
    if not benchmark.disabled:
        benchmark.extra_info["MB/s"] = round(SIZES[label] / benchmark.stats.stats.median / 1e6, 1)


def test_interleaved(benchmark: Benchmark) -> None:
    """Medians of rotated repetitions, MB/s and ratios to the floor, printed."""
    benchmark.group = "attach-interleaved"
    repeats = pick(benchmark, (9, 1))

    def run() -> list[str]:
        lines = []
        for label, size in SIZES.items():
            candidates = _candidates(secrets.token_bytes(size))
            names = list(candidates)
            times: dict[str, list[float]] = {name: [] for name in names}
            for repeat in range(repeats):
                for name in names[repeat % 3 :] + names[: repeat % 3]:
                    start = time.perf_counter()
                    candidates[name]()
                    times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(values) for name, values in times.items()}
            for name, median in medians.items():
                lines.append(
                    f"{label:>6} {name:<5} {median * 1e3:8.2f} ms  {size / median / 1e6:8.1f} MB/s"
                    f"  x{median / medians['floor']:.2f} floor"
                )
        return lines

    lines = benchmark.pedantic(run, rounds=1)
    benchmark.extra_info["medians"] = lines
    print("\n" + "\n".join(lines))
