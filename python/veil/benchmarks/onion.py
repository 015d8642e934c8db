"""The onion-peel benchmark: how close peeling one v1 onion layer in the Rust core comes to the cost
of its cryptographic primitives, and what batching on every core buys.

Every candidate peels the same prepared onion: the first, forward, layer of a two-hop onion whose
body is the next hop's layer around a request of the given payload size (1 KiB and 10 KiB by
default), with a little routing data, as a relay node sees it.

Candidates:

``floor``
    The primitive floor: PyNaCl's X25519, ``hashlib``'s BLAKE2b-256 and PyNaCl's
    XChaCha20-Poly1305 decryption on inputs sliced in advance. No parsing, no checks, no objects.
``python``
    :func:`peel_python`: the layer peeled in plain Python over PyNaCl, as a Python developer would
    write it, returning a small dataclass (same fields as the Rust ``PeeledLayer``).
``rust``
    ``NodeKey.peel`` (:class:`veil.crypto.NodeKey`, the node's key parsed once, as a node holds it).
``rust-batch``
    ``NodeKey.peel_batch`` over ``batch`` copies of the onion (on every core with the
    GIL released); reported per onion.

Method: each candidate's loop count is calibrated to about ``target_seconds``; then each of
``repeat`` repetitions times every candidate once, in an order that rotates from one repetition to
the next, so that noise on the machine falls on all candidates alike. Results are per onion: median,
min and max over the repetitions, and operations per second at the median. Targets are checked on
the ratios of medians. Before anything is timed, every candidate's result is checked against the
others and against what the onion was built with: a benchmark of a wrong result is void.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeAlias

import nacl
import nacl.bindings
import nacl.exceptions

import veil
from veil import _core, crypto
from veil.errors import DecryptionError

__all__ = [
    "CANDIDATES",
    "Config",
    "Prepared",
    "PythonPeeledLayer",
    "Report",
    "Samples",
    "Timer",
    "calibrate",
    "candidate_timers",
    "check_results",
    "format_table",
    "interleave",
    "loop_timer",
    "peel_floor",
    "peel_python",
    "prepare",
    "run",
    "time_calls",
    "write_json",
    "write_png",
]

SCHEMA: Final = "veil-bench-onion/1"
CANDIDATES: Final = ("floor", "python", "rust", "rust-batch")
DEFAULT_SIZES: Final = (1024, 10240)
DEFAULT_BATCH: Final = 256
DEFAULT_REPEAT: Final = 15
DEFAULT_TARGET_SECONDS: Final = 0.2
QUICK_REPEAT: Final = 3
QUICK_TARGET_SECONDS: Final = 0.01

Timer: TypeAlias = Callable[[int], float]
"""Seconds that ``n`` calls of an operation take (what :func:`calibrate` and :func:`interleave`
time); any set-up it needs before the calls is untimed."""

TARGET_RUST_OVER_FLOOR: Final = 1.10
TARGET_BATCH_SPEEDUP: Final = 1.7

# The layer format (rust/veil-core/src/onion.rs, docs/protocol.md).
VERSION: Final = 0x01
KIND_FORWARD: Final = 0x00
KIND_DELIVER: Final = 0x01
HEADER_LEN: Final = 1 + 32  # version ‖ E, also the AAD
NONCE_END: Final = HEADER_LEN + 24
TAG_LEN: Final = 16
MIN_LAYER_LEN: Final = NONCE_END + TAG_LEN + 1 + 2
REPLAY_TAG_CONTEXT: Final = b"veil/onion/v1/replay-tag"

# What a relay finds in a forward layer: a few dozen bytes of routing data for it.
ROUTING: Final = b'{"ttl":30000,"proto":"veil/1","lane":7,"hint":"edge-03"}'


# --------------------------------------------------------------------------------------------------
# The candidates


def peel_floor(  # noqa: PLR0917  (positional on purpose: the floor pays no keyword binding)
    node_secret: bytes,
    node_public: bytes,
    ephemeral: bytes,
    nonce: bytes,
    ciphertext: bytes,
    aad: bytes,
) -> bytes:
    """The primitive floor: X25519, BLAKE2b-256 and XChaCha20-Poly1305 on pre-sliced inputs.

    Returns the layer's plaintext.
    """
    shared = nacl.bindings.crypto_scalarmult(node_secret, ephemeral)
    key = hashlib.blake2b(shared + ephemeral + node_public, digest_size=32).digest()
    plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ciphertext, aad, nonce, key
    )
    return plaintext


@dataclass(frozen=True, slots=True)
class PythonPeeledLayer:
    """One layer peeled by :func:`peel_python`; the fields of :class:`veil.crypto.PeeledLayer`."""

    next_hop: bytes | None
    routing: bytes
    payload: bytes
    replay_tag: bytes
    reply_key: bytes | None


def peel_python(node_secret: bytes, node_public: bytes, onion: bytes) -> PythonPeeledLayer:
    """Peels one v1 onion layer in plain Python over PyNaCl.

    Any failure — wrong version, truncation, a bad tag, a malformed plaintext — is
    :class:`~veil.errors.DecryptionError`, as in the Rust core.
    """
    if len(onion) < MIN_LAYER_LEN or onion[0] != VERSION:
        raise DecryptionError("decryption failed")
    view = memoryview(onion)
    header = bytes(view[:HEADER_LEN])
    ephemeral = header[1:]
    try:
        shared = nacl.bindings.crypto_scalarmult(node_secret, ephemeral)
        key = hashlib.blake2b(shared + ephemeral + node_public, digest_size=32).digest()
        plaintext: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(view[NONCE_END:]), header, bytes(view[HEADER_LEN:NONCE_END]), key
        )
    except (nacl.exceptions.CryptoError, RuntimeError) as error:
        raise DecryptionError("decryption failed") from error
    replay_tag = hashlib.blake2b(REPLAY_TAG_CONTEXT, digest_size=16, key=key).digest()

    kind = plaintext[0]
    if kind == KIND_FORWARD:
        next_hop: bytes | None = plaintext[1:33]
        at = 33
    elif kind == KIND_DELIVER:
        next_hop = None
        at = 1
    else:
        raise DecryptionError("decryption failed")
    routing_end = at + 2 + int.from_bytes(plaintext[at : at + 2], "big")
    if len(plaintext) < at + 2 or routing_end > len(plaintext):
        raise DecryptionError("decryption failed")
    return PythonPeeledLayer(
        next_hop=next_hop,
        routing=plaintext[at + 2 : routing_end],
        payload=plaintext[routing_end:],
        replay_tag=replay_tag,
        reply_key=key if next_hop is None else None,
    )


# --------------------------------------------------------------------------------------------------
# The prepared onion and the correctness check


@dataclass(frozen=True)
class Prepared:
    """One prepared onion, its keys, and what peeling it must give."""

    payload_size: int
    node_secret: bytes
    node_public: bytes
    next_secret: bytes
    next_public: bytes
    request: bytes
    routing: bytes
    onion: bytes

    @property
    def floor_args(self) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
        """The arguments of :func:`peel_floor`, sliced once."""
        onion = self.onion
        return (
            self.node_secret,
            self.node_public,
            onion[1:HEADER_LEN],
            onion[HEADER_LEN:NONCE_END],
            onion[NONCE_END:],
            onion[:HEADER_LEN],
        )

    def batch(self, n: int) -> list[bytes]:
        """``n`` distinct copies of the onion (distinct objects, as received from the network)."""
        return [bytes(bytearray(self.onion)) for _ in range(n)]


def prepare(payload_size: int) -> Prepared:
    """A two-hop onion around ``payload_size`` random bytes of request, with fresh node keys."""
    if payload_size < 0:
        raise ValueError("payload_size must not be negative")
    node_secret = _core.x25519_generate_secret()
    next_secret = _core.x25519_generate_secret()
    node_public = _core.x25519_public_key(node_secret)
    next_public = _core.x25519_public_key(next_secret)
    request = os.urandom(payload_size)
    onion, _reply_key = crypto.build_onion(
        [node_public, next_public], request, routing=[ROUTING, b""]
    )
    return Prepared(
        payload_size=payload_size,
        node_secret=node_secret,
        node_public=node_public,
        next_secret=next_secret,
        next_public=next_public,
        request=request,
        routing=ROUTING,
        onion=onion,
    )


class ResultMismatchError(AssertionError):
    """A candidate computed something other than the expected peeled layer."""


def check_results(prepared: Prepared, batch: int = 4) -> None:
    """Runs every candidate once and checks that they agree with each other and with the onion.

    Raises :class:`ResultMismatchError` naming the first candidate that is wrong.
    """

    def expect(condition: bool, what: str) -> None:
        if not condition:
            raise ResultMismatchError(f"payload {prepared.payload_size} B: {what}")

    rust = crypto.NodeKey(prepared.node_secret).peel(prepared.onion)
    expect(rust.next_hop == prepared.next_public, "rust: wrong next hop")
    expect(rust.routing == prepared.routing, "rust: wrong routing data")
    expect(rust.reply_key is None, "rust: a forward layer has no reply key")
    inner = crypto.peel_onion(prepared.next_secret, rust.payload)
    expect(
        inner.next_hop is None and inner.payload == prepared.request,
        "rust: the body is not the next hop's layer around the request",
    )

    py = peel_python(prepared.node_secret, prepared.node_public, prepared.onion)
    expect(
        (py.next_hop, py.routing, py.payload, py.replay_tag, py.reply_key)
        == (rust.next_hop, rust.routing, rust.payload, rust.replay_tag, None),
        "python: differs from rust",
    )
    py_inner = peel_python(prepared.next_secret, prepared.next_public, py.payload)
    expect(py_inner.payload == prepared.request, "python: wrong inner request")

    floor = peel_floor(*prepared.floor_args)
    expected_plaintext = (
        bytes([KIND_FORWARD])
        + prepared.next_public
        + len(prepared.routing).to_bytes(2, "big")
        + prepared.routing
        + rust.payload
    )
    expect(floor == expected_plaintext, "floor: wrong plaintext")

    results = crypto.NodeKey(prepared.node_secret).peel_batch(prepared.batch(batch))
    expect(len(results) == batch, "rust-batch: wrong number of results")
    for result in results:
        expect(not isinstance(result, Exception), "rust-batch: a peel failed")
        assert not isinstance(result, Exception)
        expect(
            (result.next_hop, result.routing, result.payload, result.replay_tag)
            == (rust.next_hop, rust.routing, rust.payload, rust.replay_tag),
            "rust-batch: differs from rust",
        )


# --------------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Config:
    """What to run."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    batch: int = DEFAULT_BATCH
    repeat: int = DEFAULT_REPEAT
    target_seconds: float = DEFAULT_TARGET_SECONDS

    def __post_init__(self) -> None:
        if not self.sizes or any(size < 0 for size in self.sizes):
            raise ValueError("sizes must be one or more non-negative sizes")
        if self.batch < 1 or self.repeat < 1 or self.target_seconds <= 0:
            raise ValueError("batch, repeat and target_seconds must be positive")

    @classmethod
    def quick(cls, sizes: Sequence[int] = DEFAULT_SIZES, batch: int = DEFAULT_BATCH) -> Config:
        """A short run, for tests: few repetitions of short loops."""
        return cls(
            sizes=tuple(sizes),
            batch=batch,
            repeat=QUICK_REPEAT,
            target_seconds=QUICK_TARGET_SECONDS,
        )


@dataclass(frozen=True)
class _Timed:
    name: str
    function: Callable[..., object]
    args: tuple[object, ...]
    onions_per_call: int


def _candidates(prepared: Prepared, batch: int) -> list[_Timed]:
    secret, public, onion = prepared.node_secret, prepared.node_public, prepared.onion
    node = crypto.NodeKey(secret)
    return [
        _Timed("floor", peel_floor, prepared.floor_args, 1),
        _Timed("python", peel_python, (secret, public, onion), 1),
        _Timed("rust", node.peel, (onion,), 1),
        _Timed("rust-batch", node.peel_batch, (prepared.batch(batch),), batch),
    ]


def time_calls(function: Callable[..., object], args: Sequence[object], loops: int) -> float:
    """Seconds for ``loops`` calls of ``function(*args)``, with the garbage collector off (as
    ``timeit`` does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in itertools.repeat(None, loops):
            function(*args)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def loop_timer(function: Callable[..., object], *args: object) -> Timer:
    """The :data:`Timer` of calls of ``function(*args)`` (:func:`time_calls`)."""
    return functools.partial(time_calls, function, args)


def candidate_timers(prepared: Prepared, batch: int) -> dict[str, tuple[Timer, int]]:
    """Every candidate of :data:`CANDIDATES` on ``prepared``: its timer and the onions one call
    peels (``batch`` for ``rust-batch``, else 1)."""
    return {
        t.name: (loop_timer(t.function, *t.args), t.onions_per_call)
        for t in _candidates(prepared, batch)
    }


def calibrate(timer: Timer, target_seconds: float) -> int:
    """The loop count for which ``timer`` takes about ``target_seconds``."""
    loops = 1
    floor = target_seconds / 10
    while True:
        elapsed = timer(loops)
        if elapsed >= floor:
            break
        loops *= 10 if elapsed < floor / 10 else 2
    return max(1, round(loops * target_seconds / elapsed))


def interleave(
    groups: Sequence[Sequence[Timer]],
    loops: Sequence[Sequence[int]],
    repeat: int,
    progress: Callable[[str], None] | None = None,
    more: Callable[[int], bool] | None = None,
) -> list[list[list[float]]]:
    """Times every timer of every group once per repetition, ``loops[g][i]`` calls each; returns
    the elapsed seconds, ``[group][timer][repetition]``.

    Within a group the order rotates from one repetition to the next, and every group takes its
    turn in every repetition, so that noise on the machine falls on all candidates alike and a
    burst of it on a few repetitions only. ``more``, if given, is asked before each repetition
    after the first, with the number done: false stops there (a time budget), with fewer than
    ``repeat`` samples.
    """
    say = progress or (lambda _message: None)
    samples: list[list[list[float]]] = [[[] for _ in row] for row in groups]
    for rep in range(repeat):
        if rep and more is not None and not more(rep):
            break
        say(f"repetition {rep + 1}/{repeat}")
        for g, row in enumerate(groups):
            k = len(row)
            for i in [(rep + j) % k for j in range(k)]:
                samples[g][i].append(row[i](loops[g][i]))
    return samples


class Samples:
    """Microseconds per operation, one sample per repetition (``samples_us``, a field of the
    dataclass that takes this in): their median, minimum and maximum."""

    samples_us: tuple[float, ...]

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def min_us(self) -> float:
        return min(self.samples_us)

    @property
    def max_us(self) -> float:
        return max(self.samples_us)


@dataclass(frozen=True)
class CandidateResult(Samples):
    """One candidate at one payload size: microseconds per onion, one sample per repetition."""

    name: str
    loops: int
    onions_per_call: int
    samples_us: tuple[float, ...]

    @property
    def ops_per_s(self) -> float:
        return 1e6 / self.median_us

    def to_json(self) -> dict[str, Any]:
        return {
            "median_us": self.median_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "ops_per_s": self.ops_per_s,
            "loops": self.loops,
            "onions_per_call": self.onions_per_call,
            "samples_us": list(self.samples_us),
        }


@dataclass(frozen=True)
class Ratio:
    """A ratio of two candidates' medians and its target."""

    name: str
    label: str
    value: float  # ratio of the medians: what the target is judged on
    of_mins: float  # the same ratio of the minima
    paired_median: float  # the median of the ratios within each repetition
    op: str  # "<=", ">=" or ">"
    target: float

    @property
    def met(self) -> bool:
        if self.op == "<=":
            return self.value <= self.target
        if self.op == ">=":
            return self.value >= self.target
        return self.value > self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "of_mins": self.of_mins,
            "paired_median": self.paired_median,
            "op": self.op,
            "target": self.target,
            "met": self.met,
        }


def _ratio(
    *, name: str, label: str, num: CandidateResult, den: CandidateResult, op: str, target: float
) -> Ratio:
    paired = statistics.median(a / b for a, b in zip(num.samples_us, den.samples_us, strict=True))
    return Ratio(
        name=name,
        label=label,
        value=num.median_us / den.median_us,
        of_mins=num.min_us / den.min_us,
        paired_median=paired,
        op=op,
        target=target,
    )


@dataclass(frozen=True)
class SizeResult:
    """Every candidate at one payload size."""

    payload_size: int
    onion_len: int
    candidates: dict[str, CandidateResult]

    @property
    def ratios(self) -> list[Ratio]:
        c = self.candidates
        return [
            _ratio(
                name="rust_over_floor",
                label="rust / floor",
                num=c["rust"],
                den=c["floor"],
                op="<=",
                target=TARGET_RUST_OVER_FLOOR,
            ),
            _ratio(
                name="batch_speedup",
                label="batch speed-up (rust / rust-batch)",
                num=c["rust"],
                den=c["rust-batch"],
                op=">=",
                target=TARGET_BATCH_SPEEDUP,
            ),
            _ratio(
                name="python_over_rust",
                label="python / rust",
                num=c["python"],
                den=c["rust"],
                op=">",
                target=1.0,
            ),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "payload_size": self.payload_size,
            "onion_len": self.onion_len,
            "candidates": {name: result.to_json() for name, result in self.candidates.items()},
            "ratios": {ratio.name: ratio.to_json() for ratio in self.ratios},
        }


@dataclass(frozen=True)
class Report:
    """A whole run: configuration, machine, versions, and results per payload size."""

    config: Config
    machine: dict[str, Any]
    versions: dict[str, str | None]
    started_at: str
    duration_s: float
    sizes: list[SizeResult] = field(default_factory=list)

    @property
    def all_targets_met(self) -> bool:
        return all(ratio.met for size in self.sizes for ratio in size.ratios)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "config": {
                "sizes": list(self.config.sizes),
                "batch": self.config.batch,
                "repeat": self.config.repeat,
                "target_seconds": self.config.target_seconds,
                "candidates": list(CANDIDATES),
                "order": "rotating within each repetition",
                "unit": "microseconds per onion",
            },
            "machine": self.machine,
            "versions": self.versions,
            "targets": {
                "rust_over_floor": {"op": "<=", "target": TARGET_RUST_OVER_FLOOR},
                "batch_speedup": {"op": ">=", "target": TARGET_BATCH_SPEEDUP},
                "python_over_rust": {"op": ">", "target": 1.0},
            },
            "results": [size.to_json() for size in self.sizes],
            "all_targets_met": self.all_targets_met,
        }


def machine_info() -> dict[str, Any]:
    """The machine the benchmark ran on."""
    cpu_model: str | None = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS"),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "load_average_at_start": load,
    }


def versions() -> dict[str, str | None]:
    """Versions of Veil, PyNaCl and libsodium (when PyNaCl tells it)."""
    sodium_version: str | None = None
    version_string = getattr(nacl.bindings, "sodium_version_string", None)
    if callable(version_string):
        value = version_string()
        sodium_version = value.decode() if isinstance(value, bytes) else str(value)
    return {
        "veil": veil.__version__,
        "pynacl": getattr(nacl, "__version__", None),
        "libsodium": sodium_version,
    }


def run(config: Config, progress: Callable[[str], None] | None = None) -> Report:
    """Prepares, checks and times every candidate at every payload size."""
    say = progress or (lambda _message: None)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    machine = machine_info()

    prepared = [prepare(size) for size in config.sizes]
    for case in prepared:
        check_results(case, batch=min(config.batch, 8))
    timed = [_candidates(case, config.batch) for case in prepared]
    timers = [[loop_timer(t.function, *t.args) for t in row] for row in timed]

    say("calibrating")
    loops = [[calibrate(timer, config.target_seconds) for timer in row] for row in timers]
    elapsed = interleave(timers, loops, config.repeat, say)
    samples = [
        [
            [seconds / (loops[s][i] * t.onions_per_call) * 1e6 for seconds in elapsed[s][i]]
            for i, t in enumerate(row)
        ]
        for s, row in enumerate(timed)
    ]

    sizes = [
        SizeResult(
            payload_size=case.payload_size,
            onion_len=len(case.onion),
            candidates={
                t.name: CandidateResult(
                    t.name, loops[s][i], t.onions_per_call, tuple(samples[s][i])
                )
                for i, t in enumerate(timed[s])
            },
        )
        for s, case in enumerate(prepared)
    ]
    return Report(
        config=config,
        machine=machine,
        versions=versions(),
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        sizes=sizes,
    )


# --------------------------------------------------------------------------------------------------
# Output


def size_label(size: int) -> str:
    """``1 KiB`` for 1024, ``1000 B`` for 1000."""
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def format_table(report: Report) -> str:
    """The report as aligned plain text."""
    config, machine, vers = report.config, report.machine, report.versions
    lines = [
        f"Veil onion peel: {config.repeat} repetitions of ~{config.target_seconds:g} s per "
        f"candidate, rotating order; batch of {config.batch}; times per onion",
        f"machine: {machine['cpu_count']} CPUs, {machine['cpu_model'] or 'unknown CPU'}, "
        f"{machine['platform']}, {machine['python']}",
        f"versions: veil {vers['veil']}, PyNaCl {vers['pynacl']}, "
        f"libsodium {vers['libsodium'] or 'n/a (not exposed by PyNaCl)'}",
        "",
    ]
    header: tuple[str, ...] = (
        "payload",
        "onion B",
        "candidate",
        "median us",
        "min us",
        "max us",
        "ops/s",
        "loops",
    )
    rows = [
        (
            size_label(size.payload_size),
            str(size.onion_len),
            name,
            f"{result.median_us:.2f}",
            f"{result.min_us:.2f}",
            f"{result.max_us:.2f}",
            f"{result.ops_per_s:,.0f}",
            str(result.loops),
        )
        for size in report.sizes
        for name, result in size.candidates.items()
    ]
    left = {0, 2}
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    lines.append(fmt(header))
    lines.append(fmt(["-" * w for w in widths]))
    for index, row in enumerate(rows):
        if index and index % len(CANDIDATES) == 0:
            lines.append("")
        lines.append(fmt(row))

    lines += ["", "ratios of medians [in brackets: median of the per-repetition ratios]:"]
    ratio_header = ["ratio", *(size_label(size.payload_size) for size in report.sizes), "target"]
    ratio_rows: list[list[str]] = []
    for index, first in enumerate(report.sizes[0].ratios if report.sizes else []):
        cells = [first.label]
        for size in report.sizes:
            ratio = size.ratios[index]
            verdict = "met" if ratio.met else "MISSED"
            cells.append(f"{ratio.value:.2f} [{ratio.paired_median:.2f}] {verdict}")
        target = f"{first.op} {first.target:.2f}"
        if first.name == "python_over_rust":
            target += " (rust faster)"
        cells.append(target)
        ratio_rows.append(cells)
    rwidths = [
        max(len(row[i]) for row in [ratio_header, *ratio_rows]) for i in range(len(ratio_header))
    ]
    for ratio_row in [ratio_header, *ratio_rows]:
        cells = [cell.ljust(rwidths[i]) for i, cell in enumerate(ratio_row)]
        lines.append("  ".join(cells).rstrip())
    lines += [
        "",
        "all targets met" if report.all_targets_met else "some targets MISSED",
        f"({report.duration_s:.1f} s)",
    ]
    return "\n".join(lines)


def write_json(report: Report, path: str | os.PathLike[str]) -> None:
    """Writes the report as JSON (raises :class:`OSError` if ``path`` cannot be written)."""
    text = json.dumps(report.to_json(), indent=2) + "\n"
    Path(path).write_text(text, encoding="utf-8")


_COLOURS: Final = {
    "floor": "#7f7f7f",
    "python": "#1f77b4",
    "rust": "#d62728",
    "rust-batch": "#2ca02c",
}


def write_png(report: Report, path: str | os.PathLike[str]) -> None:
    """Draws grouped bars of median µs per onion with min-max whiskers (matplotlib, Agg).

    Raises :class:`ImportError` without matplotlib and :class:`OSError` if ``path`` cannot be
    written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(9, 5.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    n = len(CANDIDATES)
    width = 0.8 / n
    top = 0.0
    for i, name in enumerate(CANDIDATES):
        xs = [s + (i - (n - 1) / 2) * width for s in range(len(report.sizes))]
        results = [size.candidates[name] for size in report.sizes]
        medians = [r.median_us for r in results]
        below = [r.median_us - r.min_us for r in results]
        above = [r.max_us - r.median_us for r in results]
        top = max(top, *(r.max_us for r in results))
        bars = axes.bar(
            xs,
            medians,
            width,
            yerr=[below, above],
            capsize=4,
            label=name,
            color=_COLOURS[name],
            error_kw={"elinewidth": 1, "ecolor": "black"},
        )
        axes.bar_label(
            bars, labels=[f"{m:.1f}" for m in medians], padding=2, fontsize=8, label_type="edge"
        )
    axes.set_ylim(0, top * 1.3)
    axes.set_xticks(
        range(len(report.sizes)),
        [
            f"{size_label(size.payload_size)} payload\n({size.onion_len} B onion)"
            for size in report.sizes
        ],
    )
    axes.set_ylabel("µs per onion (median; whiskers: min to max)")
    axes.set_xlabel("payload size")
    cpu = report.machine.get("cpu_model") or "unknown CPU"
    axes.set_title(
        "Veil: peeling one onion layer (lower is better)\n"
        f"{report.config.repeat} repetitions, batch of {report.config.batch}, "
        f"{report.machine.get('cpu_count')} CPUs, {cpu}",
        fontsize=11,
    )
    axes.legend(loc="upper center", ncols=len(CANDIDATES), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    with open(path, "wb") as out:
        figure.savefig(out, format="png")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m veil.benchmarks.onion``: the same as ``veil bench onion``."""
    from veil.cli import main as cli_main  # noqa: PLC0415

    return cli_main(["bench", "onion", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
