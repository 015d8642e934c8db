"""The CI benchmark gate: a short, bounded set of Veil's hot paths, each timed against a floor or
against its plain-Python twin in the same run, compared as RATIOS with a committed baseline
(``bench/baseline.json``). Absolute times are never compared: they say more about the machine
than about the code.

```sh
.venv/bin/python bench/gate.py                   # measure, compare, write bench-results/gate.json
.venv/bin/python bench/gate.py --only message_hash_python_over_rust
.venv/bin/python bench/gate.py --update          # rewrite the baseline from this run, deliberately
.venv/bin/python bench/gate.py --update --from bench-results/run1.json bench-results/run2.json ...
```

(``--from``: each ratio's median over earlier runs' reports, nothing measured.)

Method: the candidates of each group (every ratio's numerator and denominator) are prepared and
checked against each other before anything is timed; each candidate's loop count is calibrated to
about ``TARGET_SECONDS``; then every repetition times every candidate of every group once, in an
order that rotates within the group from one repetition to the next (``veil.benchmarks.onion``'s
``calibrate`` and ``interleave``, the code of ``veil bench onion``). A ratio's value is the median,
over the repetitions, of the ratio of candidates timed side by side in the same repetition.

Each ratio has a direction (``lower`` or ``higher`` is better). A ratio fails when it is worse than
its baseline value by more than its tolerance (``--tolerance``, default 25 %, unless the baseline
gives the ratio one of its own): for ``lower``, ``value > baseline * (1 + tolerance)``; for
``higher``, ``value < baseline * (1 - tolerance)``. Better is never a failure. A baseline ratio the
run does not measure fails; a measured ratio the baseline lacks is reported. A baseline entry with
``"gate": false`` is reported and never fails.

A ratio past its tolerance is measured again, alone, before the verdict (``--confirm``, default
once): it fails only if it is past its tolerance in every measurement, so a real regression fails
and one unlucky run on a noisy machine does not. One the second measurement clears is reported
``unconfirmed`` with both values; the report keeps every measurement (``"confirmations"``).

Exit status: 0 pass, 1 a regression (or a missing ratio, or a candidate whose result is wrong),
2 a usage error (bad option, missing or malformed baseline, unwritable output). The full report is
written as JSON to ``--out`` (``bench-results/gate.json``) whatever the verdict. bench/README.md,
"The CI gate", says what each ratio guards and how to update the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from veil.benchmarks import onion

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE: Final = ROOT / "bench" / "baseline.json"
DEFAULT_OUT: Final = ROOT / "bench-results" / "gate.json"
SCHEMA: Final = "veil-bench-gate/1"
BASELINE_SCHEMA: Final = "veil-bench-gate-baseline/1"
DEFAULT_TOLERANCE: Final = 0.25
REPEAT: Final = 31
MIN_REPEAT: Final = 11  # under the time budget, never fewer repetitions than this
TARGET_SECONDS: Final = 0.05  # per candidate per repetition
BUDGET_SECONDS: Final = 120.0  # repetitions stop early (after MIN_REPEAT) past this
HIGHER: Final = "higher"
LOWER: Final = "lower"
DIRECTIONS: Final = (HIGHER, LOWER)

EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2

# Sizes of the hot paths (those of the benchmark suites they come from).
PAYLOAD: Final = 1024
ONION_BATCH: Final = onion.DEFAULT_BATCH
HASH_CHUNK: Final = 1 << 14
STORES_PER_ROUND: Final = 256
RETRIEVE_PAGE: Final = 256
RECEIPTS_PER_COMMIT: Final = 38  # what a commit of the HTTP store path signs (docs/performance.md)


class UsageError(Exception):
    """A bad option, a missing or malformed baseline, an unwritable output: exit status 2."""


class BaselineError(UsageError):
    """The baseline file is missing, unreadable or malformed."""


class CheckError(Exception):
    """A candidate computed a wrong result: its timing would mean nothing (exit status 1)."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckError(what)


# --------------------------------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class RatioSpec:
    """One gated ratio: the product of its numerator candidates' times over its denominator's."""

    name: str
    group: str
    label: str
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]
    direction: str
    gate: bool = True
    why: str = ""


RATIOS: Final = (
    RatioSpec(
        "onion_peel_rust_over_floor",
        "onion-peel",
        "v1 onion peel, 1 KiB: NodeKey.peel / primitive floor",
        ("rust",),
        ("floor",),
        LOWER,
        why="every relay peels one layer per request; the floor is X25519 + BLAKE2b + "
        "XChaCha20-Poly1305 called from Python on pre-sliced inputs",
    ),
    RatioSpec(
        "onion_batch_speedup",
        "onion-batch",
        "v1 onion peel, 1 KiB: peel / peel_batch of 256, per onion",
        ("rust",),
        ("rust-batch",),
        HIGHER,
        gate=False,
        why="peel_batch releases the GIL and uses every core; the raw speed-up is what the "
        "machine's free cores allow, so it is reported, and onion_batch_scaling is gated",
    ),
    RatioSpec(
        "onion_batch_scaling",
        "onion-batch",
        "batch speed-up / speed-up of BLAKE2b on as many threads",
        ("rust", "hash-threads"),
        ("rust-batch", "hash-serial"),
        HIGHER,
        why="the batch speed-up divided by the parallelism the machine gives right now (256 "
        "chunks of 16 KiB hashed by hashlib, GIL released, on one thread and on as many as "
        "rayon uses); drops if peel_batch holds the GIL or runs on one thread",
    ),
    RatioSpec(
        "circuit_peel_over_aead",
        "circuit",
        "onion v2 data cell peel, 1 KiB: CircuitHop.peel / XChaCha20-Poly1305 decrypt",
        ("circuit-peel",),
        ("aead-floor",),
        LOWER,
        why="a circuit hop's work per data cell (symmetric only, replay window included) "
        "against one AEAD decryption of the same size",
    ),
    RatioSpec(
        "link_frames_python_over_rust",
        "link-frames",
        "node link, 64 frames of 1,225 B: Python codec / LinkCipher.seal_frames + open_frames",
        ("python",),
        ("rust",),
        HIGHER,
        why="every frame between nodes goes through the Rust codec; the Python one is the "
        "codec it replaced",
    ),
    RatioSpec(
        "message_hash_python_over_rust",
        "message-hash",
        "Session message hash, 1 KiB: hashlib / store_message_hash",
        ("python",),
        ("rust",),
        HIGHER,
        why="every store hashes its message; hashlib's BLAKE2b of the same input is the twin",
    ),
    RatioSpec(
        "read_store_python_over_rust",
        "read-store",
        "a plain store's body, 1 KiB: orjson + StorageRpc.parse / plain_store",
        ("python",),
        ("rust",),
        HIGHER,
        why="every plain store a node takes is read by the Rust call; the Python parser is the "
        "reader it stands in for, and the one that still reads every other body",
    ),
    RatioSpec(
        "retrieve_encode_python_over_rust",
        "retrieve-encode",
        "retrieve page of 256 x 1 KiB: dicts + orjson / retrieve_messages_json",
        ("python",),
        ("rust",),
        HIGHER,
        why="every retrieve encodes a page of messages as JSON",
    ),
    RatioSpec(
        "store_txn_over_group_commit",
        "store",
        "256 durable stores of 1 KiB: one transaction each / group commit from 64 clients",
        ("txn-per-store",),
        ("group-commit",),
        HIGHER,
        why="a node's stores share durable commits through StoreWriter",
    ),
    RatioSpec(
        "node_sign_over_floor",
        "node-sign",
        f"a commit's {RECEIPTS_PER_COMMIT} receipts: Ed25519KeyPair.sign_many / PyNaCl "
        "SigningKey.sign each",
        ("key-pair",),
        ("floor",),
        LOWER,
        why="a node signs every store result and receipt on its writer (AWS-LC); the floor is "
        "libsodium's signing of the same receipts, called from Python",
    ),
    RatioSpec(
        "envelope_seal_over_floor",
        "envelope",
        "v2 envelope seal, 1 KiB, one device: envelope_seal / hybrid encapsulate + Ed25519 sign",
        ("v2-seal",),
        ("floor-seal",),
        LOWER,
        why="every message sent; the floor is the primitives a v2 envelope cannot do without",
    ),
    RatioSpec(
        "envelope_open_over_floor",
        "envelope",
        "v2 envelope open, 1 KiB: envelope_open / hybrid decapsulate + Ed25519 verify",
        ("v2-open",),
        ("floor-open",),
        LOWER,
        why="every message received",
    ),
)
RATIO_NAMES: Final = tuple(spec.name for spec in RATIOS)


@dataclass(frozen=True)
class Candidate:
    """One timed operation of a group: its timer and the operations one call performs."""

    name: str
    timer: onion.Timer
    per_call: int = 1


Builder = Callable[[contextlib.ExitStack], list[Candidate]]


def _rayon_threads() -> int:
    """The threads ``peel_batch`` runs on: ``RAYON_NUM_THREADS``, else the usable CPUs."""
    configured = os.environ.get("RAYON_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def hash_serial(chunks: Sequence[memoryview]) -> list[bytes]:
    """BLAKE2b-512 of every chunk on this thread."""
    return [hashlib.blake2b(chunk).digest() for chunk in chunks]


def hash_threads(chunks: Sequence[memoryview], threads: int) -> list[bytes]:
    """BLAKE2b-512 of every chunk on ``threads`` threads taking chunks in turn (hashlib releases the
    GIL on inputs of more than 2 KiB)."""
    digests: list[bytes] = [b""] * len(chunks)
    lock = threading.Lock()
    indices = iter(range(len(chunks)))

    def work() -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            digests[index] = hashlib.blake2b(chunks[index]).digest()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return digests


def _onion_timers() -> dict[str, tuple[onion.Timer, int]]:
    """``veil bench onion``'s candidates on a 1 KiB onion, checked against each other."""
    prepared = onion.prepare(PAYLOAD)
    onion.check_results(prepared)
    return onion.candidate_timers(prepared, ONION_BATCH)


def build_onion_peel(_stack: contextlib.ExitStack) -> list[Candidate]:
    timers = _onion_timers()
    return [Candidate(name, *timers[name]) for name in ("floor", "rust")]


def build_onion_batch(_stack: contextlib.ExitStack) -> list[Candidate]:
    timers = _onion_timers()
    buffer = os.urandom(HASH_CHUNK * ONION_BATCH)
    chunks = [memoryview(buffer)[i * HASH_CHUNK : (i + 1) * HASH_CHUNK] for i in range(ONION_BATCH)]
    threads = _rayon_threads()
    _check(hash_threads(chunks, threads) == hash_serial(chunks), "hash-threads: wrong digests")
    # In this order, each ratio's two candidates of a pair are side by side in most rotations.
    return [
        *(Candidate(name, *timers[name]) for name in ("rust", "rust-batch")),
        Candidate("hash-threads", onion.loop_timer(hash_threads, chunks, threads), ONION_BATCH),
        Candidate("hash-serial", onion.loop_timer(hash_serial, chunks), ONION_BATCH),
    ]


def build_circuit(_stack: contextlib.ExitStack) -> list[Candidate]:
    import bench_cells  # noqa: PLC0415  (bench/bench_cells.py: a circuit opened in process)
    from veil import _core  # noqa: PLC0415
    from veil.errors import DecryptionError  # noqa: PLC0415
    from veil.protocol import cells  # noqa: PLC0415

    keys = [_core.NodeKey(_core.x25519_generate_secret()) for _ in range(3)]
    circuit, hops = bench_cells._circuit(keys)
    hop = hops[0]
    request = os.urandom(bench_cells.SIZE - 16)
    skip = 1 + cells.CLIENT_CIRCUIT_ID_LEN

    def sealed(n: int) -> list[bytes]:
        return [circuit.seal(request)[0][skip:] for _ in range(n)]

    def peel_all(layers: list[bytes]) -> None:
        for layer in layers:
            hop.peel(layer)

    def circuit_peel(loops: int) -> float:
        # Each data cell is peeled once: a replay is refused. Sealing them is untimed.
        return onion.time_calls(peel_all, (sealed(loops),), 1)

    first = sealed(1)[0]
    _check(len(hop.peel(first).next) == len(first), "circuit-peel: wrong next cell")
    try:
        hop.peel(first)
    except DecryptionError:
        pass
    else:
        raise CheckError("circuit-peel: a replayed cell was peeled twice")
    key, nonce = os.urandom(32), os.urandom(24)
    plaintext = os.urandom(bench_cells.SIZE)
    ciphertext = _core.xchacha20poly1305_encrypt(key, nonce, plaintext, b"")
    _check(
        _core.xchacha20poly1305_decrypt(key, nonce, ciphertext, b"") == plaintext,
        "aead-floor: wrong plaintext",
    )
    return [
        Candidate("circuit-peel", circuit_peel),
        Candidate(
            "aead-floor",
            onion.loop_timer(_core.xchacha20poly1305_decrypt, key, nonce, ciphertext, b""),
        ),
    ]


def build_link_frames(_stack: contextlib.ExitStack) -> list[Candidate]:
    import bench_link_frames as frames  # noqa: PLC0415  (bench/bench_link_frames.py)

    candidates = []
    for name, round_trip in (("python", frames.python_round), ("rust", frames.rust_round)):
        sender, receiver = frames._pair()
        batch = frames._frames()
        _check(round_trip(sender, receiver, batch) == batch, f"{name}: wrong frames")
        candidates.append(
            Candidate(name, onion.loop_timer(round_trip, sender, receiver, batch), frames.FRAMES)
        )
    return candidates


def build_message_hash(_stack: contextlib.ExitStack) -> list[Candidate]:
    import bench_store as store  # noqa: PLC0415  (bench/bench_store.py)

    data = os.urandom(PAYLOAD)
    rust = store.HASH_CANDIDATES["rust"]
    for namespace in (-32768, -1, 0, 5, 32767):
        _check(
            rust(store.ACCOUNT, namespace, data)
            == store.python_message_hash(store.ACCOUNT, namespace, data),
            "rust: a different message hash",
        )
    return [
        Candidate(name, onion.loop_timer(function, store.ACCOUNT, 5, data))
        for name, function in store.HASH_CANDIDATES.items()
    ]


def build_read_store(stack: contextlib.ExitStack) -> list[Candidate]:
    import bench_store as store  # noqa: PLC0415
    from veil import _core  # noqa: PLC0415

    base = Path(tempfile.mkdtemp(prefix="veil-bench-gate-"))
    stack.callback(shutil.rmtree, base, ignore_errors=True)
    target = store.open_store(base / "store")
    stack.callback(target.close)
    try:
        rpc, body = store.read_store_case(target, PAYLOAD)  # checks the two read it alike
    except AssertionError as error:
        raise CheckError("rust: a different reading of a plain store") from error
    limit = target.limits.max_message_bytes
    return [
        Candidate("python", onion.loop_timer(store.python_read_store, rpc, body)),
        Candidate("rust", onion.loop_timer(_core.plain_store, body, limit)),
    ]


def build_retrieve_encode(_stack: contextlib.ExitStack) -> list[Candidate]:
    import bench_store as store  # noqa: PLC0415

    messages = store.stored_messages(RETRIEVE_PAGE, PAYLOAD)
    expected = store.python_retrieve_json(messages)
    candidates = []
    for name, function in store.ENCODE_CANDIDATES.items():
        _check(function(messages) == expected, f"{name}: a different page")
        candidates.append(Candidate(name, onion.loop_timer(function, messages)))
    return candidates


def build_store(stack: contextlib.ExitStack) -> list[Candidate]:
    import uvloop  # noqa: PLC0415

    import bench_store as store  # noqa: PLC0415
    from veil.node.store import StoreOutcome  # noqa: PLC0415

    base = Path(tempfile.mkdtemp(prefix="veil-bench-gate-"))
    stack.callback(shutil.rmtree, base, ignore_errors=True)
    runner = stack.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
    rounds = iter(range(1 << 30))

    def timer(store_all: Callable[[Any, list[Any]], list[StoreOutcome]]) -> onion.Timer:
        def timed(loops: int) -> float:
            total = 0.0
            for _ in range(loops):
                # A fresh store and fresh messages per round, untimed; the store is gone after.
                # The garbage collector stays on, as in a node: these rounds allocate a lot.
                path = base / f"round{next(rounds)}"
                target, messages = store.open_store(path), store.make_messages(STORES_PER_ROUND)
                try:
                    started = time.perf_counter()
                    outcomes = store_all(target, messages)
                    total += time.perf_counter() - started
                    _check(outcomes == [StoreOutcome.STORED] * len(messages), "a store failed")
                finally:
                    target.close()
                    shutil.rmtree(path, ignore_errors=True)
            return total

        return timed

    def group_commit(target: Any, messages: list[Any]) -> list[StoreOutcome]:
        return runner.run(store.group_commit(target, messages))

    checked = store.open_store(base / "check")
    try:
        messages = store.make_messages(2 * store.CONCURRENCY)
        _check(group_commit(checked, messages) == [StoreOutcome.STORED] * len(messages), "store")
        store.check_stored(checked, messages)
    finally:
        checked.close()
    return [
        Candidate("txn-per-store", timer(store.txn_per_store), STORES_PER_ROUND),
        Candidate("group-commit", timer(group_commit), STORES_PER_ROUND),
    ]


def build_node_sign(_stack: contextlib.ExitStack) -> list[Candidate]:
    import nacl.signing  # noqa: PLC0415

    from veil import _core  # noqa: PLC0415
    from veil.protocol.replication import receipt_bytes  # noqa: PLC0415

    seed = os.urandom(32)
    receipts = [receipt_bytes(os.urandom(32)) for _ in range(RECEIPTS_PER_COMMIT)]
    key_pair, floor = _core.Ed25519KeyPair(seed), nacl.signing.SigningKey(seed)

    def libsodium() -> list[bytes]:
        return [floor.sign(receipt).signature for receipt in receipts]

    _check(key_pair.sign_many(receipts) == libsodium(), "key-pair: different signatures")
    return [
        Candidate("key-pair", onion.loop_timer(key_pair.sign_many, receipts), RECEIPTS_PER_COMMIT),
        Candidate("floor", onion.loop_timer(libsodium), RECEIPTS_PER_COMMIT),
    ]


def build_envelope(_stack: contextlib.ExitStack) -> list[Candidate]:
    import bench_envelope as envelope  # noqa: PLC0415  (bench/bench_envelope.py)

    ops = envelope._candidates()
    (v2_seal, v2_open), (floor_seal, floor_open) = ops["v2-1"], ops["floor"]
    opened = v2_open()
    _check(isinstance(opened, tuple) and opened[0] == envelope.MESSAGE, "v2-open: wrong message")
    _check(isinstance(v2_seal(), bytes), "v2-seal: no envelope")
    _check(floor_open() is not None and floor_seal() is not None, "floor: no result")
    return [
        Candidate("v2-seal", onion.loop_timer(v2_seal)),
        Candidate("floor-seal", onion.loop_timer(floor_seal)),
        Candidate("v2-open", onion.loop_timer(v2_open)),
        Candidate("floor-open", onion.loop_timer(floor_open)),
    ]


GROUPS: Final[dict[str, Builder]] = {
    "onion-peel": build_onion_peel,
    "onion-batch": build_onion_batch,
    "circuit": build_circuit,
    "link-frames": build_link_frames,
    "message-hash": build_message_hash,
    "read-store": build_read_store,
    "retrieve-encode": build_retrieve_encode,
    "store": build_store,
    "node-sign": build_node_sign,
    "envelope": build_envelope,
}


# --------------------------------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Measured:
    """A ratio as this run measured it (``value`` is what the gate compares)."""

    value: float
    direction: str
    of_medians: float = math.nan
    samples: tuple[float, ...] = ()


def _ratio_samples(spec: RatioSpec, per_op: Mapping[str, Sequence[float]]) -> list[float]:
    repetitions = len(per_op[spec.numerator[0]])
    return [
        math.prod(per_op[name][rep] for name in spec.numerator)
        / math.prod(per_op[name][rep] for name in spec.denominator)
        for rep in range(repetitions)
    ]


def measure(
    only: Sequence[str] = (),
    repeat: int = REPEAT,
    target_seconds: float = TARGET_SECONDS,
    budget_seconds: float = BUDGET_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prepares, checks and times the groups of the selected ratios (every ratio by default);
    returns the report: per group every candidate's samples, and every ratio measured."""
    say = progress or (lambda _message: None)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    specs = [spec for spec in RATIOS if not only or spec.name in only]
    group_names = list(dict.fromkeys(spec.group for spec in specs))
    with contextlib.ExitStack() as stack:
        built: dict[str, list[Candidate]] = {}
        for name in group_names:
            say(f"preparing and checking {name}")
            built[name] = GROUPS[name](stack)
        timers = [[c.timer for c in built[name]] for name in group_names]
        say("calibrating")
        loops = [[onion.calibrate(timer, target_seconds) for timer in row] for row in timers]
        deadline = started + budget_seconds
        elapsed = onion.interleave(
            timers,
            loops,
            repeat,
            say,
            more=lambda done: done < MIN_REPEAT or time.perf_counter() < deadline,
        )

    groups: dict[str, Any] = {}
    per_op: dict[str, dict[str, list[float]]] = {}
    for g, name in enumerate(group_names):
        per_op[name] = {}
        candidates: dict[str, Any] = {}
        for i, candidate in enumerate(built[name]):
            us = [s / (loops[g][i] * candidate.per_call) * 1e6 for s in elapsed[g][i]]
            per_op[name][candidate.name] = us
            candidates[candidate.name] = {
                "loops": loops[g][i],
                "per_call": candidate.per_call,
                "median_us": statistics.median(us),
                "min_us": min(us),
                "max_us": max(us),
                "samples_us": us,
            }
        groups[name] = {"candidates": candidates}

    ratios: dict[str, Any] = {}
    for spec in specs:
        times = per_op[spec.group]
        samples = _ratio_samples(spec, times)
        medians = {name: statistics.median(values) for name, values in times.items()}
        ratios[spec.name] = {
            "group": spec.group,
            "label": spec.label,
            "direction": spec.direction,
            "numerator": list(spec.numerator),
            "denominator": list(spec.denominator),
            "value": statistics.median(samples),
            "of_medians": math.prod(medians[n] for n in spec.numerator)
            / math.prod(medians[n] for n in spec.denominator),
            "min": min(samples),
            "max": max(samples),
            "samples": samples,
            "why": spec.why,
        }
    return {
        "schema": SCHEMA,
        "started_at": started_at,
        "duration_s": round(time.perf_counter() - started, 2),
        "machine": onion.machine_info(),
        "versions": onion.versions(),
        "config": {
            "repeat": repeat,
            "repetitions_done": len(elapsed[0][0]) if elapsed else 0,
            "target_seconds": target_seconds,
            "budget_seconds": budget_seconds,
            "only": list(only),
            "order": "rotating within each group, every group in every repetition",
            "value": "median over the repetitions of the ratio within each repetition",
        },
        "groups": groups,
        "ratios": ratios,
    }


def measured_ratios(report: Mapping[str, Any]) -> dict[str, Measured]:
    """The ratios of a report of :func:`measure` (or of one made up, in tests)."""
    out: dict[str, Measured] = {}
    for name, ratio in report.get("ratios", {}).items():
        out[name] = Measured(
            value=float(ratio["value"]),
            direction=str(ratio["direction"]),
            of_medians=float(ratio.get("of_medians", math.nan)),
            samples=tuple(ratio.get("samples", ())),
        )
    return out


# --------------------------------------------------------------------------------------------------
# The baseline


@dataclass(frozen=True)
class BaselineRatio:
    value: float
    direction: str
    tolerance: float | None = None
    gate: bool = True
    note: str = ""


@dataclass(frozen=True)
class Baseline:
    ratios: dict[str, BaselineRatio]
    recorded: dict[str, Any] = field(default_factory=dict)


_RATIO_KEYS: Final = {"value", "direction", "tolerance", "gate", "note"}
_TOP_KEYS: Final = {"schema", "recorded", "ratios"}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_tolerance(value: object, where: str) -> float:
    """``value`` as a tolerance, a fraction in (0, 1); :class:`UsageError` otherwise."""
    if isinstance(value, int | float) and _is_number(value) and 0 < value < 1:
        return float(value)
    raise UsageError(f"{where}: a tolerance is a fraction between 0 and 1, got {value!r}")


def parse_baseline(document: object, source: str = "baseline") -> Baseline:
    """The baseline in ``document`` (parsed JSON); :class:`BaselineError` saying what is wrong."""

    def fail(what: str) -> BaselineError:
        return BaselineError(f"{source}: {what}")

    if not isinstance(document, dict):
        raise fail("expected a JSON object")
    if document.get("schema") != BASELINE_SCHEMA:
        raise fail(f"schema must be {BASELINE_SCHEMA!r}, got {document.get('schema')!r}")
    if unknown := sorted(set(document) - _TOP_KEYS):
        raise fail(f"unknown keys {unknown} (allowed: {sorted(_TOP_KEYS)})")
    recorded = document.get("recorded", {})
    if not isinstance(recorded, dict):
        raise fail("recorded must be an object")
    entries = document.get("ratios")
    if not isinstance(entries, dict) or not entries:
        raise fail("ratios must be a non-empty object of ratio name to entry")
    ratios: dict[str, BaselineRatio] = {}
    for name, entry in entries.items():
        where = f"ratios.{name}"
        if not isinstance(entry, dict):
            raise fail(f"{where}: expected an object")
        if unknown := sorted(set(entry) - _RATIO_KEYS):
            raise fail(f"{where}: unknown keys {unknown} (allowed: {sorted(_RATIO_KEYS)})")
        value = entry.get("value")
        if not isinstance(value, int | float) or not _is_number(value) or value <= 0:
            raise fail(f"{where}.value: expected a positive number, got {value!r}")
        direction = entry.get("direction")
        if direction not in DIRECTIONS:
            raise fail(f"{where}.direction: expected 'higher' or 'lower', got {direction!r}")
        tolerance = entry.get("tolerance")
        if tolerance is not None:
            try:
                tolerance = check_tolerance(tolerance, f"{source}: {where}.tolerance")
            except UsageError as error:
                raise BaselineError(str(error)) from None
        gate = entry.get("gate", True)
        if not isinstance(gate, bool):
            raise fail(f"{where}.gate: expected true or false, got {gate!r}")
        note = entry.get("note", "")
        if not isinstance(note, str):
            raise fail(f"{where}.note: expected a string")
        ratios[name] = BaselineRatio(float(value), direction, tolerance, gate, note)
    return Baseline(ratios, recorded)


def load_baseline(path: Path) -> Baseline:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(
            f"{path}: no baseline (record one with --update, see bench/README.md)"
        ) from None
    except OSError as error:
        raise BaselineError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(f"{path}: not JSON: {error}") from None
    return parse_baseline(document, str(path))


def check_directions(baseline: Baseline, specs: Sequence[RatioSpec] = RATIOS) -> None:
    """That the baseline gives each ratio the direction the gate measures it in."""
    for spec in specs:
        entry = baseline.ratios.get(spec.name)
        if entry is not None and entry.direction != spec.direction:
            raise BaselineError(
                f"baseline: {spec.name} is {entry.direction}-is-better there, but the gate "
                f"measures it {spec.direction}-is-better: re-record it with --update"
            )


def baseline_document(
    measured: Mapping[str, Measured], previous: Baseline | None, recorded: dict[str, Any]
) -> dict[str, Any]:
    """A baseline of the measured ratios; an entry's tolerance, gate and note are kept from the
    previous baseline, and entries the run did not measure are kept as they were."""
    specs = {spec.name: spec for spec in RATIOS}
    old = previous.ratios if previous is not None else {}
    entries: dict[str, dict[str, Any]] = {}
    for name in [*RATIO_NAMES, *sorted(set(measured) - set(RATIO_NAMES))]:
        kept = old.get(name)
        if name in measured:
            entry: dict[str, Any] = {
                "value": round(measured[name].value, 4),
                "direction": measured[name].direction,
            }
        elif kept is not None:
            entry = {"value": kept.value, "direction": kept.direction}
        else:
            continue
        spec = specs.get(name)
        if kept is not None and kept.tolerance is not None:
            entry["tolerance"] = kept.tolerance
        gate = kept.gate if kept is not None else (spec.gate if spec is not None else True)
        if not gate:
            entry["gate"] = False
        # A new entry that is not gated says why.
        note = kept.note if kept is not None else ("" if gate or spec is None else spec.why)
        if note:
            entry["note"] = note
        entries[name] = entry
    return {"schema": BASELINE_SCHEMA, "recorded": recorded, "ratios": entries}


# --------------------------------------------------------------------------------------------------
# Comparing

PASS: Final = "pass"
IMPROVED: Final = "improved"
REGRESSION: Final = "REGRESSION"
MISSING: Final = "MISSING"
NEW: Final = "new"
NOT_GATED: Final = "not gated"
UNCONFIRMED: Final = "unconfirmed"
"""Past its tolerance once, within it when measured again: reported, not failed."""
DEFAULT_CONFIRM: Final = 1
FAILING: Final = (REGRESSION, MISSING)


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str
    direction: str
    value: float | None
    baseline: float | None
    tolerance: float | None
    worse_by: float | None  # the fraction by which the value is worse (negative: better)
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": self.name,
            "status": self.status,
            "direction": self.direction,
            "value": self.value,
            "baseline": self.baseline,
            "tolerance": self.tolerance,
            "worse_by": self.worse_by,
            "note": self.note,
        }


def worse_by(value: float, baseline: float, direction: str) -> float:
    """How much worse ``value`` is than ``baseline``, as a fraction of it: for ``lower``,
    ``value / baseline - 1``; for ``higher``, ``1 - value / baseline``. Negative when better."""
    if direction == LOWER:
        return value / baseline - 1
    if direction == HIGHER:
        return 1 - value / baseline
    raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")


def compare(
    measured: Mapping[str, Measured],
    baseline: Baseline,
    tolerance: float = DEFAULT_TOLERANCE,
    only: Sequence[str] = (),
) -> list[Verdict]:
    """Every baseline ratio (the selected ones, with ``only``) against this run, then the measured
    ratios the baseline lacks. A ratio's own tolerance in the baseline overrides ``tolerance``."""
    verdicts = []
    for name, entry in baseline.ratios.items():
        if only and name not in only:
            continue
        limit = entry.tolerance if entry.tolerance is not None else tolerance
        got = measured.get(name)
        if got is None:
            status = MISSING if entry.gate else NOT_GATED
            verdicts.append(
                Verdict(name, status, entry.direction, None, entry.value, limit, None, entry.note)
            )
            continue
        if got.direction != entry.direction:
            raise BaselineError(
                f"baseline: {name} is {entry.direction}-is-better there but measured "
                f"{got.direction}-is-better: re-record it with --update"
            )
        worse = worse_by(got.value, entry.value, entry.direction)
        if not entry.gate:
            status = NOT_GATED
        elif worse > limit:
            status = REGRESSION
        elif -worse > limit:
            status = IMPROVED
        else:
            status = PASS
        verdicts.append(
            Verdict(name, status, entry.direction, got.value, entry.value, limit, worse, entry.note)
        )
    for name, got in measured.items():
        if name not in baseline.ratios:
            verdicts.append(Verdict(name, NEW, got.direction, got.value, None, None, None))
    return verdicts


def format_table(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as aligned plain text."""
    header = ("ratio", "better", "baseline", "this run", "change", "tolerance", "verdict")
    rows = [header]
    for v in verdicts:
        change = "" if v.worse_by is None else f"{abs(v.worse_by):.1%}"
        if v.worse_by is not None:
            change += " worse" if v.worse_by > 0 else " better"
        rows.append(
            (
                v.name,
                v.direction,
                "-" if v.baseline is None else f"{v.baseline:.3f}",
                "-" if v.value is None else f"{v.value:.3f}",
                change,
                "-" if v.tolerance is None or v.status == NOT_GATED else f"{v.tolerance:.0%}",
                v.status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 4, 5}
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_candidates(report: Mapping[str, Any]) -> str:
    """Every group's candidates: median (min-max) microseconds per operation."""
    lines = []
    for group, content in report.get("groups", {}).items():
        cells = [
            f"{name} {c['median_us']:.2f} ({c['min_us']:.2f}-{c['max_us']:.2f})"
            for name, c in content["candidates"].items()
        ]
        lines.append(f"  {group:15} " + "  ".join(cells))
    return "\n".join(lines)


def read_report(path: Path) -> dict[str, Any]:
    """A report written by ``--out``; :class:`UsageError` if it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise UsageError(f"{path}: not a report of bench/gate.py (schema {SCHEMA!r})")
    try:
        measured_ratios(document)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{path}: a malformed ratio: {error!r}") from None
    return document


def median_of_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Measured]:
    """Each ratio's median value over the reports that measured it (its samples: their values)."""
    runs = [measured_ratios(report) for report in reports]
    out: dict[str, Measured] = {}
    for name in dict.fromkeys(name for run in runs for name in run):
        got = [run[name] for run in runs if name in run]
        directions = {m.direction for m in got}
        if len(directions) != 1:
            raise UsageError(f"{name}: the reports disagree on its direction ({directions})")
        values = tuple(m.value for m in got)
        out[name] = Measured(statistics.median(values), got[0].direction, samples=values)
    return out


# --------------------------------------------------------------------------------------------------
# The command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/gate.py",
        description="Veil's CI benchmark gate: same-run ratios of hot paths against a committed "
        "baseline. Exit status 0 pass, 1 regression, 2 usage error.",
    )
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, metavar="PATH")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="PATH")
    parser.add_argument(
        "--update",
        action="store_true",
        help="rewrite the baseline from this run (deliberately: see bench/README.md)",
    )
    parser.add_argument(
        "--from",
        dest="reports",
        nargs="+",
        type=Path,
        default=[],
        metavar="REPORT",
        help="with --update: measure nothing, take each ratio's median over these reports "
        "(JSON written by --out of earlier runs)",
    )
    parser.add_argument(
        "--tolerance",
        default=DEFAULT_TOLERANCE,
        type=float,
        metavar="FRACTION",
        help="how much worse a ratio may be than its baseline, unless the baseline gives it a "
        f"tolerance of its own (default {DEFAULT_TOLERANCE})",
    )
    parser.add_argument(
        "--confirm",
        default=DEFAULT_CONFIRM,
        type=int,
        metavar="N",
        help="measure a ratio past its tolerance again, alone, up to N times; it fails only if "
        f"every measurement is past it (default {DEFAULT_CONFIRM}; 0: the first decides)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"measure and compare only this ratio (repeatable): {', '.join(RATIO_NAMES)}",
    )
    return parser


def _writable(path: Path) -> None:
    """Refuses, before anything is timed, an output path that cannot be written (its directory is
    made if need be)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{path}: cannot write: {error.strerror or error}") from None
    if path.is_dir():
        raise UsageError(f"{path}: cannot write: is a directory")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UsageError(f"{path}: cannot write: permission denied")


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: 0 after --help, 2 after a usage error
        return int(exit_.code or 0)
    try:
        return _main(args)
    except UsageError as error:
        print(f"gate: {error}", file=sys.stderr)
        return EXIT_USAGE


def _main(args: argparse.Namespace) -> int:
    tolerance = check_tolerance(args.tolerance, "--tolerance")
    if args.confirm < 0:
        raise UsageError(f"--confirm: a count of 0 or more, got {args.confirm}")
    only: list[str] = list(dict.fromkeys(args.only))
    if unknown := [name for name in only if name not in RATIO_NAMES]:
        raise UsageError(f"--only: unknown ratio {unknown[0]!r} (ratios: {', '.join(RATIO_NAMES)})")
    if args.reports and not args.update:
        raise UsageError("--from goes with --update")
    baseline_path: Path = args.baseline
    previous: Baseline | None
    if args.update and not baseline_path.exists():
        previous = None
    else:
        previous = load_baseline(baseline_path)
        check_directions(previous)
    _writable(args.out)
    if args.update:
        _writable(baseline_path)

    if args.reports:
        return _update_from(args.reports, only, previous, baseline_path, tolerance)

    def progress(message: str) -> None:
        print(f"gate: {message}", file=sys.stderr, flush=True)

    try:  # the first measurement and those that confirm a regression
        report = measure(only, progress=progress)
        measured = measured_ratios(report)
        verdicts = compare(measured, previous, tolerance, only) if previous is not None else []
        if previous is not None and not args.update:
            verdicts = _confirm(verdicts, previous, tolerance, args.confirm, report, progress)
    except CheckError as error:
        print(f"gate: wrong result, benchmark void: {error}", file=sys.stderr)
        return EXIT_FAIL
    failed = [v for v in verdicts if v.failed]
    report["tolerance"] = tolerance
    report["baseline"] = str(baseline_path)
    report["verdicts"] = [v.to_json() for v in verdicts]
    report["passed"] = not failed
    _write_json(args.out, report)

    config = report["config"]
    print(
        f"Veil benchmark gate: {config['repetitions_done']} repetitions of ~"
        f"{config['target_seconds']:g} s per candidate, rotating order; "
        f"{report['machine']['cpu_count']} CPUs; {report['duration_s']:.0f} s"
    )
    print("candidates, us per operation, median (min-max):")
    print(format_candidates(report))
    print()
    if verdicts:
        print(format_table(verdicts))
    else:
        print("\n".join(f"{name}  {m.value:.3f}" for name, m in measured.items()))
    print(f"\nfull report: {args.out}")
    if args.update:
        recorded = {
            "from": "one run",
            "at": report["started_at"],
            "cpu": report["machine"].get("cpu_model"),
            "cpus": report["machine"].get("cpu_count"),
            "load_average_at_start": (report["machine"].get("load_average_at_start") or [None])[0],
            "repetitions": config["repetitions_done"],
        }
        _write_json(baseline_path, baseline_document(measured, previous, recorded))
        print(f"baseline rewritten: {baseline_path} (commit it saying why the ratios moved)")
        return EXIT_PASS
    for confirmation in report.get("confirmations", []):
        for again in confirmation["verdicts"]:
            print(
                f"measured again: {again['ratio']} {again['value']:.3f} "
                f"({'still past' if again['status'] == REGRESSION else 'within'} its tolerance)"
            )
    for verdict in failed:
        if verdict.status == MISSING:
            print(f"FAIL {verdict.name}: in the baseline, not measured by this run")
        else:
            assert verdict.value is not None
            assert verdict.worse_by is not None
            print(
                f"FAIL {verdict.name}: {verdict.value:.3f} is {verdict.worse_by:.1%} worse than "
                f"the baseline {verdict.baseline:.3f} ({verdict.direction} is better, tolerance "
                f"{verdict.tolerance:.0%})"
            )
    if failed:
        return EXIT_FAIL
    print("benchmark gate passed")
    return EXIT_PASS


def _confirm(
    verdicts: list[Verdict],
    baseline: Baseline,
    tolerance: float,
    times: int,
    report: dict[str, Any],
    progress: Callable[[str], None],
) -> list[Verdict]:
    """``verdicts`` after measuring each regression again, alone, up to ``times`` times: one
    that a measurement clears becomes ``unconfirmed`` (its first value kept). Every measurement
    is added to ``report["confirmations"]``."""
    confirmations: list[dict[str, Any]] = []
    for _ in range(times):
        suspects = [v.name for v in verdicts if v.status == REGRESSION]
        if not suspects:
            break
        progress(f"past tolerance: {', '.join(suspects)}; measuring again, alone, to confirm")
        again = measure(suspects, progress=progress)
        second = {v.name: v for v in compare(measured_ratios(again), baseline, tolerance, suspects)}
        confirmations.append(
            {
                "ratios": again["ratios"],
                "verdicts": [v.to_json() for v in second.values()],
                "duration_s": again["duration_s"],
            }
        )
        verdicts = [
            replace(v, status=UNCONFIRMED)
            if v.status == REGRESSION and not second[v.name].failed
            else v
            for v in verdicts
        ]
    if confirmations:
        report["confirmations"] = confirmations
    return verdicts


def _update_from(
    paths: Sequence[Path],
    only: Sequence[str],
    previous: Baseline | None,
    baseline_path: Path,
    tolerance: float,
) -> int:
    """``--update --from``: the baseline from the median of earlier runs, nothing measured."""
    reports = [read_report(path) for path in paths]
    measured = median_of_reports(reports)
    if only:
        measured = {name: m for name, m in measured.items() if name in only}
    print(f"each ratio's median over {len(reports)} reports:")
    width = max((len(name) for name in measured), default=0)
    for name, m in measured.items():
        runs = " ".join(f"{value:.3f}" for value in m.samples)
        print(f"  {name:{width}}  {runs}  -> {m.value:.3f}")
    if previous is not None:
        print("\nagainst the baseline it replaces:")
        print(format_table(compare(measured, previous, tolerance, only)))
    machine = reports[0].get("machine", {})
    recorded = {
        "from": f"median of {len(reports)} runs",
        "at": [report.get("started_at") for report in reports],
        "cpu": machine.get("cpu_model"),
        "cpus": machine.get("cpu_count"),
        "load_average_at_start": [
            (report.get("machine", {}).get("load_average_at_start") or [None])[0]
            for report in reports
        ],
    }
    _write_json(baseline_path, baseline_document(measured, previous, recorded))
    print(f"\nbaseline rewritten: {baseline_path} (commit it saying why the ratios moved)")
    return EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
