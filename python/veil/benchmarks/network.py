"""The network benchmark, end to end: messages per second, p50 and p99 latency of a store — onion
request, store, replication to the write quorum — on a devnet of N node processes, and what a
message costs the nodes in CPU, also in peel units.

For each N: ``python -m veil devnet up --detach --nodes N`` in a temporary directory (3 directory
authorities and N nodes; the figures are the nodes'), then a client process
(``python -m veil.benchmarks.network_load``, its own interpreter: it shares nothing with the nodes
or with this process) finds the network as a client does — the devnet's network file, and the
consensus from one of the seeds in ``devnet.json``, taken only if a majority of the authorities
signed it and listing all N nodes — and stores messages of ``size`` random bytes, each for a
recipient drawn from ``recipients`` identities, from ``concurrency`` coroutines with
``SwarmClient.store``: a three-hop onion request (guard → relay → a member of the recipient's
swarm), which stores the message and answers with the swarm's signed results once the write quorum
holds it. Every answer must carry the message's hash and at least three signed results that verify
from distinct swarm members.

Method: ``warmup`` untimed stores (connections, first paths); the nodes' own CPU use without load
(consensus fetches, anti-entropy) for ``idle_seconds``; then ``rounds`` rounds of ``messages``
stores each (a round stops at ``ROUND_TIME_LIMIT_S``). Messages/s is the median over the rounds of
each round's rate; p50/p99 the median over the rounds of each round's percentile. Node CPU is the
user + system time of the node processes (``/proc/PID/stat``; not the authorities') over the
rounds, per stored message; "beyond idle" subtracts the idle rate over the same wall time.
Switches per message are the node threads' context switches over the rounds
(``/proc/PID/task/*/status``), per stored message: how often the nodes woke for a message. The
same CPU is split by thread (``/proc/PID/task/*/stat``): each node's event loop (its main thread)
and its store writer (the thread named ``veil-writer``), user and system time apart, and the other
threads together. Commits
per message are the nodes' durable store commits over the rounds (each node's
``veil_store_commits_total``, read from ``GET /metrics`` just outside each round's CPU window), per
stored message, and jobs per commit what those commits carried (``veil_store_commit_jobs_total``):
how much group commit shared, which falls as the same load spreads over more nodes. After
the rounds, ``sample`` recipients read their messages back with ``SwarmClient.retrieve``: every
acknowledged hash must be there, nothing else, and every message's data must hash to its hash.
Then ``veil devnet down`` — always, in a ``finally``, also on Ctrl-C — and a check that no node
process is left.

Peel units: before the first devnet starts, the time of one v1 onion peel on one core is measured
in the same process — the ``rust`` candidate of :mod:`veil.benchmarks.onion` (``NodeKey.peel`` of
the first layer of a two-hop onion around a 1 KiB request, checked first, timed and calibrated by
that module's code) — on this thread's CPU clock, as the nodes' work is counted (the wall-clock
time is kept too: on a busy machine it is longer, CPU time is not). Node CPU per message divided by
it is the message's cost in peel units: the unit is measured on the same machine in the same run,
so the figure is meant to compare across machines of different speeds where microseconds do not.

A wrong result — a store not acknowledged by the quorum, a signed result that does not verify, a
message not read back, a wrong peel — voids the run (:class:`WrongResultError`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, astuple, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

from veil.benchmarks import onion
from veil.benchmarks.loadkit import LoadProcess, LoadProcessError
from veil.devnet import probe
from veil.devnet.state import ProcessRef, load_state, process_start
from veil.node.threads import WRITER, thread_stat

__all__ = [
    "Config",
    "Delivery",
    "Devnet",
    "NetworkBenchError",
    "NodesResult",
    "PeelTime",
    "Report",
    "Round",
    "Session",
    "WrongResultError",
    "cpu_seconds",
    "figure",
    "format_table",
    "measure_peel",
    "run",
    "run_nodes",
    "write_json",
    "write_png",
]

SCHEMA: Final = "veil-bench-network/1"
CLIENT_MODULE: Final = "veil.benchmarks.network_load"

DEFAULT_NODES: Final = (6, 12, 24)
MIN_NODES: Final = 3  # a path has three hops
MAX_NODES: Final = 100  # as `veil devnet up`
SIZE: Final = 1024
RECIPIENTS: Final = 256
DEFAULT_MESSAGES: Final = 2000
DEFAULT_ROUNDS: Final = 3
DEFAULT_CONCURRENCY: Final = 32
DEFAULT_WARMUP: Final = 200
DEFAULT_IDLE_SECONDS: Final = 3.0
DEFAULT_SAMPLE: Final = 32
QUICK_MESSAGES: Final = 48
QUICK_ROUNDS: Final = 1
QUICK_WARMUP: Final = 8
QUICK_IDLE_SECONDS: Final = 1.0
QUICK_SAMPLE: Final = 8
MAX_MESSAGES: Final = 1_000_000
MAX_ROUNDS: Final = 100
MAX_CONCURRENCY: Final = 1024

ROUND_TIME_LIMIT_S: Final = 60.0  # a round stops there, whatever is left to send
SETTLE_S: Final = 1.0  # after the warm-up, before the idle measurement: its replication
UP_TIMEOUT_S: Final = 120.0
DOWN_TIMEOUT_S: Final = 60.0
METRICS_TIMEOUT_S: Final = 5.0  # a node's GET /metrics, read before and after each round
OPEN_TIMEOUT_S: Final = 60.0  # the client's consensus fetch and identities
PREP_TIMEOUT_S: Final = 60.0
CHECK_TIMEOUT_S: Final = 120.0
QUORUM: Final = 3  # signed results the client requires per store (the devnet's W)

PEEL_PAYLOAD: Final = 1024
DEFAULT_PEEL_REPEAT: Final = onion.DEFAULT_REPEAT
DEFAULT_PEEL_TARGET_SECONDS: Final = onion.DEFAULT_TARGET_SECONDS


class NetworkBenchError(Exception):
    """The run could not be completed: the devnet did not start, a process exited, a time limit."""


class WrongResultError(NetworkBenchError):
    """A wrong result — a store, a signed result, a delivery or a peel: the run is void."""


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    """What to run. Raises :class:`ValueError` on a value out of range."""

    nodes: tuple[int, ...] = DEFAULT_NODES
    messages: int = DEFAULT_MESSAGES
    rounds: int = DEFAULT_ROUNDS
    concurrency: int = DEFAULT_CONCURRENCY
    warmup: int = DEFAULT_WARMUP
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    sample: int = DEFAULT_SAMPLE
    recipients: int = RECIPIENTS
    size: int = SIZE
    peel_repeat: int = DEFAULT_PEEL_REPEAT
    peel_target_seconds: float = DEFAULT_PEEL_TARGET_SECONDS

    def __post_init__(self) -> None:
        if not self.nodes or any(not MIN_NODES <= n <= MAX_NODES for n in self.nodes):
            raise ValueError(f"nodes must be one or more counts from {MIN_NODES} to {MAX_NODES}")
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes must not repeat a count")
        if not 1 <= self.messages <= MAX_MESSAGES:
            raise ValueError(f"messages must be from 1 to {MAX_MESSAGES}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be from 1 to {MAX_ROUNDS}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be from 1 to {MAX_CONCURRENCY}")
        if not 0 <= self.warmup <= MAX_MESSAGES:
            raise ValueError(f"warmup must be from 0 to {MAX_MESSAGES}")
        if not 0 <= self.idle_seconds <= 60:
            raise ValueError("idle_seconds must be from 0 to 60")
        if not 1 <= self.sample <= self.recipients or self.recipients > 100_000:
            raise ValueError("sample must be from 1 to recipients, recipients at most 100000")
        if not 1 <= self.size <= 64 * 1024:
            raise ValueError("size must be from 1 to 65536 bytes")
        if not 1 <= self.peel_repeat <= 1000 or not 0 < self.peel_target_seconds <= 10:
            raise ValueError("peel_repeat must be from 1 to 1000, peel_target_seconds 0 to 10")

    @classmethod
    def quick(
        cls,
        nodes: Sequence[int] = DEFAULT_NODES,
        messages: int | None = None,
        rounds: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> Config:
        """A short, rough run (tests, smoke checks): a few dozen messages, one round, 1 s idle."""
        return cls(
            nodes=tuple(nodes),
            messages=QUICK_MESSAGES if messages is None else messages,
            rounds=QUICK_ROUNDS if rounds is None else rounds,
            concurrency=concurrency,
            warmup=QUICK_WARMUP,
            idle_seconds=QUICK_IDLE_SECONDS,
            sample=QUICK_SAMPLE,
            peel_repeat=onion.QUICK_REPEAT,
            peel_target_seconds=onion.QUICK_TARGET_SECONDS,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "messages": self.messages,
            "rounds": self.rounds,
            "concurrency": self.concurrency,
            "warmup": self.warmup,
            "idle_seconds": self.idle_seconds,
            "sample": self.sample,
            "recipients": self.recipients,
            "size": self.size,
            "quorum": QUORUM,
            "round_time_limit_s": ROUND_TIME_LIMIT_S,
            "peel": {
                "payload_size": PEEL_PAYLOAD,
                "candidate": "rust",
                "repeat": self.peel_repeat,
                "target_seconds": self.peel_target_seconds,
            },
        }


# --------------------------------------------------------------------------------------------------
# The unit: one onion peel on one core


@dataclass(frozen=True)
class PeelTime(onion.Samples):
    """The single-core v1 onion peel (``NodeKey.peel``, 1 KiB): µs of this thread's CPU time per
    onion, one sample per repetition; ``wall_samples_us`` are the same loops on the wall clock
    (more than the CPU time when other processes took the core)."""

    payload_size: int
    onion_len: int
    loops: int
    samples_us: tuple[float, ...]
    wall_samples_us: tuple[float, ...]

    @property
    def wall_median_us(self) -> float:
        return statistics.median(self.wall_samples_us)

    def to_json(self) -> dict[str, Any]:
        return {
            "payload_size": self.payload_size,
            "onion_len": self.onion_len,
            "candidate": "rust",
            "clock": "thread CPU time",
            "median_us": self.median_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
            "loops": self.loops,
            "samples_us": list(self.samples_us),
            "wall_median_us": self.wall_median_us,
            "wall_samples_us": list(self.wall_samples_us),
        }


class _CpuClock:
    """An :data:`onion.Timer` on this thread's CPU clock around another (wall-clock) timer, so
    that the peel is counted in CPU time as the nodes' work is; the wall times are kept too."""

    def __init__(self, timer: onion.Timer) -> None:
        self.timer = timer
        self.wall: list[float] = []

    def __call__(self, loops: int) -> float:
        started = time.thread_time()
        self.wall.append(self.timer(loops))
        return time.thread_time() - started


def measure_peel(
    repeat: int = DEFAULT_PEEL_REPEAT, target_seconds: float = DEFAULT_PEEL_TARGET_SECONDS
) -> PeelTime:
    """Times the ``rust`` candidate of :mod:`veil.benchmarks.onion` on a 1 KiB onion, with that
    module's preparation, check, timer and calibration, on this thread's CPU clock: ``repeat``
    samples of a loop of about ``target_seconds``. Raises :class:`WrongResultError` if any peel
    candidate is wrong."""
    if repeat < 1 or not target_seconds > 0:
        raise ValueError("repeat and target_seconds must be positive")
    prepared = onion.prepare(PEEL_PAYLOAD)
    try:
        onion.check_results(prepared, batch=4)
    except onion.ResultMismatchError as error:
        raise WrongResultError(f"onion peel: {error}") from None
    timer, _ = onion.candidate_timers(prepared, 1)["rust"]
    clock = _CpuClock(timer)
    loops = onion.calibrate(clock, target_seconds)
    clock.wall.clear()
    ((cpu,),) = onion.interleave([[clock]], [[loops]], repeat)
    return PeelTime(
        payload_size=PEEL_PAYLOAD,
        onion_len=len(prepared.onion),
        loops=loops,
        samples_us=tuple(seconds / loops * 1e6 for seconds in cpu),
        wall_samples_us=tuple(seconds / loops * 1e6 for seconds in clock.wall),
    )


# --------------------------------------------------------------------------------------------------
# Processes: the devnet and the client


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Holds Ctrl-C (SIGINT) off while a teardown runs, so that the devnet comes down; re-raised
    as :class:`KeyboardInterrupt` afterwards unless another exception is already on its way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and sys.exc_info()[1] is None:
        raise KeyboardInterrupt


def _tail(path: Path, chars: int = 400) -> str:
    """The end of a log, on one line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return " ".join(text[-chars:].split()) or "(empty log)"


def _devnet_command(log: Path, timeout: float, *args: str) -> int:
    """Runs ``python -m veil devnet ARGS`` (its own session: a Ctrl-C in the terminal does not
    reach it) and returns its exit code. If the wait ends early — a time limit, Ctrl-C — the
    command gets SIGINT, so that it stops what it started, and is killed if it is still there
    after ``DOWN_TIMEOUT_S``."""
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
            [sys.executable, "-m", "veil", "devnet", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        try:
            return process.wait(timeout)
        except BaseException:
            with _interrupts_deferred():
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(DOWN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            raise


class Devnet:
    """``veil devnet up --detach`` in ``work/devnet`` (:meth:`up`, or entering it as a context)
    and ``veil devnet down`` (:meth:`down`, or leaving the context, whatever happened); the
    commands' output goes to ``work/devnet-commands.log``."""

    def __init__(self, work: Path, nodes: int) -> None:
        self.dir = work / "devnet"
        self.log = work / "devnet-commands.log"
        self.nodes = nodes
        self.processes: list[ProcessRef] = []
        self.http: list[str] = []  # the nodes' client HTTP addresses, as self.processes
        self.up_s = 0.0

    def up(self) -> None:
        """Starts the devnet and records its node processes; raises :class:`NetworkBenchError`
        (after bringing down whatever started) if it does not come up."""
        started = time.monotonic()
        try:
            code = _devnet_command(
                self.log,
                UP_TIMEOUT_S,
                *("up", "--detach", "--nodes", str(self.nodes), "--dir", str(self.dir)),
                *("--timeout", str(UP_TIMEOUT_S - 10)),
            )
            if code != 0:
                raise NetworkBenchError(
                    f"veil devnet up --nodes {self.nodes} failed (exit {code}): {_tail(self.log)}"
                )
            self.up_s = time.monotonic() - started
            state = load_state(self.dir.resolve())
            if state is None:
                raise NetworkBenchError(f"veil devnet up left no devnet.json in {self.dir}")
            running = [n for n in state.nodes if n.process and n.running()]
            self.processes = [n.process for n in running if n.process]
            self.http = [n.http for n in running]
            if len(self.processes) != self.nodes:
                raise NetworkBenchError(
                    f"{len(self.processes)} of {self.nodes} node processes running after up"
                )
        except subprocess.TimeoutExpired:
            error = NetworkBenchError(
                f"veil devnet up --nodes {self.nodes} did not finish in {UP_TIMEOUT_S:g} s"
            )
            self._down_after(error)
            raise error from None
        except BaseException as error:
            self._down_after(error)
            raise

    def __enter__(self) -> Devnet:
        self.up()
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if error is None:
            self.down()
        else:
            self._down_after(error)

    @property
    def pids(self) -> list[int]:
        """The node processes' ids."""
        return [process.pid for process in self.processes]

    def _down_after(self, error: BaseException) -> None:
        try:
            self.down()
        except NetworkBenchError as teardown:
            error.add_note(f"and then: {teardown}")

    def down(self) -> None:
        """Stops the devnet (if one was recorded) and checks that no node process is left;
        raises :class:`NetworkBenchError` otherwise. Ctrl-C waits until it is done."""
        with _interrupts_deferred():
            if not (self.dir / "devnet.json").exists():
                return
            try:
                code = _devnet_command(self.log, DOWN_TIMEOUT_S, "down", "--dir", str(self.dir))
            except subprocess.TimeoutExpired:
                code = None
            left = [p.pid for p in self.processes if _same_process(p)]
            if left:
                raise NetworkBenchError(
                    f"node processes still running after veil devnet down: {left}"
                )
            if code != 0:
                raise NetworkBenchError(f"veil devnet down failed (exit {code}): {_tail(self.log)}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the node processes so far (``/proc/PID/stat``)."""
        return cpu_seconds(self.processes)

    def context_switches(self) -> int:
        """Context switches of the node processes' threads so far."""
        return context_switches(self.processes)

    def thread_cpu(self) -> ThreadCpu:
        """The node processes' CPU so far, by thread."""
        return thread_cpu(self.processes)

    def commits(self) -> tuple[int, int] | None:
        """The nodes' durable store commits so far, and the write jobs they carried (each node's
        ``GET /metrics``); None if a node did not answer, or answered counts that are not finite
        and non-negative."""
        commits = jobs = 0
        for address in self.http:
            try:
                samples = probe.metrics(address, timeout=METRICS_TIMEOUT_S)
            except probe.ProbeError:
                return None
            counts = (
                samples.get("veil_store_commits_total", 0.0),
                samples.get("veil_store_commit_jobs_total", 0.0),
            )
            if not all(math.isfinite(count) and count >= 0 for count in counts):
                return None
            commits += int(counts[0])
            jobs += int(counts[1])
        return commits, jobs


def cpu_seconds(processes: Iterable[ProcessRef]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/PID/stat``); raises
    :class:`NetworkBenchError` if one has exited."""
    return sum(_cpu_ticks(process) for process in processes) / os.sysconf("SC_CLK_TCK")


def context_switches(processes: Iterable[ProcessRef]) -> int:
    """Voluntary and involuntary context switches of every thread of these processes so far
    (``/proc/PID/task/*/status``): a thread's wake-ups after it waited, and its preemptions. A
    thread that ended is no longer counted, so take differences over windows the processes'
    long-lived threads span. Raises :class:`NetworkBenchError` if a process has exited."""
    total = 0
    for pid, tid in _threads(processes):
        with contextlib.suppress(FileNotFoundError):  # (a thread may end while this reads)
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text("ascii")
            total += sum(
                int(line.split()[1])
                for line in status.splitlines()
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt"))
            )
    return total


@dataclass(frozen=True)
class ThreadCpu:
    """CPU seconds of node threads, by what they run: each process's main thread, which runs its
    event loop; its store writer (:data:`veil.node.threads.WRITER`); and the other threads
    together (the peel worker, reader threads). User and system time apart where the split says
    something: system time is the kernel's work for the thread (sends, wake-ups, flushes)."""

    loop_user_s: float = 0.0
    loop_system_s: float = 0.0
    writer_user_s: float = 0.0
    writer_system_s: float = 0.0
    other_s: float = 0.0

    def __add__(self, other: ThreadCpu) -> ThreadCpu:
        return ThreadCpu(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: ThreadCpu) -> ThreadCpu:
        return ThreadCpu(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def scaled(self, factor: float) -> ThreadCpu:
        return ThreadCpu(*(a * factor for a in astuple(self)))

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def thread_cpu(processes: Iterable[ProcessRef]) -> ThreadCpu:
    """The CPU of every thread of these processes so far (``/proc/PID/task/*/stat``), by thread
    (:class:`ThreadCpu`). A thread that ended is no longer counted, as in
    :func:`context_switches`. Raises :class:`NetworkBenchError` if a process has exited."""
    seconds = [0.0] * 5
    for pid, tid in _threads(processes):
        stat = thread_stat(pid, tid)
        if stat is None:  # the thread ended while this read
            continue
        name, user, system = stat
        if tid == pid:
            seconds[0] += user
            seconds[1] += system
        elif name == WRITER:
            seconds[2] += user
            seconds[3] += system
        else:
            seconds[4] += user + system
    return ThreadCpu(*seconds)


def _threads(processes: Iterable[ProcessRef]) -> Iterator[tuple[int, int]]:
    """(pid, thread id) of every thread of these processes now (``/proc/PID/task``); raises
    :class:`NetworkBenchError` if a process has exited."""
    for process in processes:
        if not _same_process(process):
            raise NetworkBenchError(f"node process {process.pid} exited during the run")
        tids: list[str] = []
        with contextlib.suppress(FileNotFoundError):
            tids = os.listdir(f"/proc/{process.pid}/task")
        yield from ((process.pid, int(tid)) for tid in tids)


def _same_process(process: ProcessRef) -> bool:
    start = process_start(process.pid)
    return start is not None and (not process.start or start == process.start)


def _cpu_ticks(process: ProcessRef) -> int:
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        stat = ""
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in {"Z", "X"} or int(fields[19]) != process.start > 0:
        raise NetworkBenchError(f"node process {process.pid} exited during the run")
    return int(fields[11]) + int(fields[12])


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Round:
    """One timed round, as the client reported it, with the nodes' CPU over it."""

    messages: int  # prepared
    sent: int
    ok: int
    elapsed_s: float  # the client's, from the first store to the last answer
    wall_s: float  # this process's, around the round: the window of nodes_cpu_s
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    nodes_cpu_s: float
    nodes_switches: int  # the node threads' context switches over the same window
    client_cpu_s: float
    requests: dict[str, int]
    paths_failed: int
    nodes_commits: int | None = None  # the nodes' durable commits over the round (None: unread)
    nodes_commit_jobs: int | None = None  # the write jobs those commits carried
    nodes_threads: ThreadCpu | None = None  # nodes_cpu_s by thread (None: unread)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Whether every prepared message was sent before the round's time limit."""
        return self.sent == self.messages

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "sent": self.sent,
            "ok": self.ok,
            "complete": self.complete,
            "elapsed_s": self.elapsed_s,
            "wall_s": self.wall_s,
            "rate": self.rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "nodes_cpu_s": self.nodes_cpu_s,
            "nodes_switches": self.nodes_switches,
            "client_cpu_s": self.client_cpu_s,
            "requests": self.requests,
            "paths_failed": self.paths_failed,
            "nodes_commits": self.nodes_commits,
            "nodes_commit_jobs": self.nodes_commit_jobs,
            "nodes_threads": None if self.nodes_threads is None else self.nodes_threads.to_json(),
        }


@dataclass(frozen=True)
class Delivery:
    """Messages read back: acknowledged (expected), found among them, and anything wrong."""

    recipients: int
    expected: int
    found: int
    unexpected: int
    corrupt: int
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "recipients": self.recipients,
            "expected": self.expected,
            "found": self.found,
            "unexpected": self.unexpected,
            "corrupt": self.corrupt,
            "elapsed_s": self.elapsed_s,
        }


def _us(value: float | None) -> float | None:
    return None if value is None else value * 1e6


@dataclass(frozen=True)
class NodesResult:
    """Every figure of one devnet size. ``idle_cpu`` is the nodes' CPU without load as a share of
    one core (None without an idle measurement); ``peel_us`` the unit of the peel-unit figures
    (None without one)."""

    nodes: int
    rounds: list[Round]
    idle_cpu: float | None
    delivery: Delivery
    up_s: float
    peel_us: float | None = None

    @property
    def stores(self) -> int:
        return sum(r.ok for r in self.rounds)

    @property
    def rate(self) -> float:
        """Messages per second: the median over the rounds."""
        return statistics.median(r.rate for r in self.rounds)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.rounds)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.rounds)

    @property
    def max_ms(self) -> float:
        return max(r.max_ms for r in self.rounds)

    @property
    def nodes_cpu_s(self) -> float:
        """Node CPU seconds per stored message."""
        return sum(r.nodes_cpu_s for r in self.rounds) / max(self.stores, 1)

    @property
    def nodes_cpu_busy_s(self) -> float | None:
        """Node CPU seconds per stored message beyond the idle rate over the same wall time."""
        if self.idle_cpu is None:
            return None
        idle = self.idle_cpu * sum(r.wall_s for r in self.rounds)
        return (sum(r.nodes_cpu_s for r in self.rounds) - idle) / max(self.stores, 1)

    @property
    def client_cpu_s(self) -> float:
        return sum(r.client_cpu_s for r in self.rounds) / max(self.stores, 1)

    @property
    def switches_per_store(self) -> float:
        """The node threads' context switches per stored message: how often the nodes woke (or
        were preempted) for a message. Fewer messages a node sees at once means more of these:
        fewer frames a read, fewer stores a commit."""
        return sum(r.nodes_switches for r in self.rounds) / max(self.stores, 1)

    def _commit_totals(self) -> tuple[int, int] | None:
        """(durable commits, write jobs) over the rounds; None if a round's were not read."""
        commits = jobs = 0
        for r in self.rounds:
            if r.nodes_commits is None or r.nodes_commit_jobs is None:
                return None
            commits += r.nodes_commits
            jobs += r.nodes_commit_jobs
        return (commits, jobs) if self.rounds else None

    @property
    def commits_per_store(self) -> float | None:
        """The nodes' durable commits per stored message (a message is stored by each of the
        swarm's members): what each message's durability costs in flushes."""
        totals = self._commit_totals()
        return None if totals is None else totals[0] / max(self.stores, 1)

    @property
    def jobs_per_commit(self) -> float | None:
        """Write jobs per durable commit over the rounds: how much group commit shared."""
        totals = self._commit_totals()
        return None if totals is None or not totals[0] else totals[1] / totals[0]

    @property
    def threads_per_store(self) -> ThreadCpu | None:
        """Node CPU seconds per stored message by thread; None if a round's were not read."""
        if not self.rounds or any(r.nodes_threads is None for r in self.rounds):
            return None
        total = ThreadCpu()
        for r in self.rounds:
            if r.nodes_threads is not None:
                total += r.nodes_threads
        return total.scaled(1 / max(self.stores, 1))

    @property
    def peel_units(self) -> float | None:
        """Node CPU per stored message in single-core onion peels."""
        return None if self.peel_us is None else self.nodes_cpu_s * 1e6 / self.peel_us

    @property
    def peel_units_busy(self) -> float | None:
        busy = self.nodes_cpu_busy_s
        return None if self.peel_us is None or busy is None else busy * 1e6 / self.peel_us

    @property
    def requests_per_store(self) -> float:
        stores = sum(
            count
            for r in self.rounds
            for key, count in r.requests.items()
            if key.startswith("store")
        )
        return stores / max(self.stores, 1)

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.rounds)

    def summary(self) -> dict[str, Any]:
        """The headline figures (µs, ms, shares), as the table and the pytest summary show them."""
        return {
            "rate": self.rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "round_rates": [r.rate for r in self.rounds],
            "nodes_cpu_us": _us(self.nodes_cpu_s),
            "nodes_cpu_busy_us": _us(self.nodes_cpu_busy_s),
            "idle_cpu": self.idle_cpu,
            "peel_us": self.peel_us,
            "peel_units": self.peel_units,
            "peel_units_busy": self.peel_units_busy,
            "client_cpu_us": _us(self.client_cpu_s),
            "switches_per_msg": self.switches_per_store,
            "commits_per_msg": self.commits_per_store,
            "jobs_per_commit": self.jobs_per_commit,
            "threads_cpu_us": None
            if (threads := self.threads_per_store) is None
            else {key.removesuffix("_s"): value * 1e6 for key, value in threads.to_json().items()},
            "requests_per_store": self.requests_per_store,
            "paths_failed": sum(r.paths_failed for r in self.rounds),
            "stores": self.stores,
            "complete": self.complete,
            "found": self.delivery.found,
            "expected": self.delivery.expected,
            "up_s": self.up_s,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            **self.summary(),
            "rounds": [r.to_json() for r in self.rounds],
            "delivery": self.delivery.to_json(),
        }


# --------------------------------------------------------------------------------------------------
# A devnet under load


@dataclass(frozen=True)
class _Window:
    """One batch of stores: the client's answer, and the nodes' wall, CPU seconds, context
    switches, (commits, jobs) — None if unread — and CPU by thread over it."""

    result: dict[str, Any]
    wall_s: float
    cpu_s: float
    switches: int
    commits: tuple[int, int] | None
    threads: ThreadCpu


class Session:
    """A devnet of ``nodes`` nodes and the load client on it, from entry to exit (devnet down and
    client stopped whatever happened). Each step checks what it gets and raises
    :class:`WrongResultError` on a wrong result, :class:`NetworkBenchError` on a failure."""

    def __init__(
        self,
        nodes: int,
        config: Config,
        work: Path,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.nodes = nodes
        self.config = config
        self.work = work
        self.say = progress or (lambda _message: None)
        self.devnet = Devnet(work, nodes)
        self.client: LoadProcess | None = None
        self.rounds: list[Round] = []

    def __enter__(self) -> Session:
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            self.say(f"{self.nodes} nodes: devnet up")
            self.devnet.up()
            self.say(f"{self.nodes} nodes: client")
            self.client = LoadProcess(CLIENT_MODULE, self.work / "client.log")
            ready = self._ask(
                OPEN_TIMEOUT_S,
                op="devnet",
                dir=str(self.devnet.dir),
                recipients=self.config.recipients,
            )
            if ready != {"nodes": self.nodes, "view": self.nodes}:
                raise NetworkBenchError(
                    f"the client's consensus does not list the {self.nodes} nodes: {ready}"
                )
        except BaseException as error:
            self._close(error)
            raise
        return self

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        self._close(error)

    def _close(self, error: BaseException | None) -> None:
        with _interrupts_deferred():
            try:
                if self.client is not None:
                    self.say(f"{self.nodes} nodes: client stop")
                    self.client.stop(15.0 if error is None else 2.0)
                    self.client = None
            finally:
                self.say(f"{self.nodes} nodes: devnet down")
                if error is None:
                    self.devnet.down()
                else:
                    self.devnet._down_after(error)

    def _ask(self, timeout: float, **command: Any) -> dict[str, Any]:
        if self.client is None:
            raise NetworkBenchError("the load client is not running")
        try:
            return self.client.ask(timeout, **command)
        except LoadProcessError as error:
            raise NetworkBenchError(f"{self.nodes} nodes: {error}") from None

    def _store(self, count: int, what: str) -> _Window:
        """Stores the prepared messages; the client's answer and what the nodes spent on it.
        Raises :class:`WrongResultError` if any store was wrong."""
        before_commits = self.devnet.commits()  # read outside the CPU window
        before_switches = self.devnet.context_switches()
        before_threads = self.devnet.thread_cpu()
        before_cpu, before = self.devnet.cpu_seconds(), time.perf_counter()
        result = self._ask(
            ROUND_TIME_LIMIT_S + 90,
            op="go",
            concurrency=self.config.concurrency,
            time_limit=ROUND_TIME_LIMIT_S,
        )
        wall = time.perf_counter() - before
        cpu = self.devnet.cpu_seconds() - before_cpu
        threads = self.devnet.thread_cpu() - before_threads
        switches = self.devnet.context_switches() - before_switches
        after_commits = self.devnet.commits()
        commits = None
        if before_commits is not None and after_commits is not None:
            commits = (
                after_commits[0] - before_commits[0],
                after_commits[1] - before_commits[1],
            )
        if result["bad"] or result["ok"] != result["sent"] or result["sent"] > count:
            raise WrongResultError(
                f"{self.nodes} nodes, {what}: {result['bad']} of {result['sent']} stores wrong; "
                f"first: {result['error']}"
            )
        if result["ok"] == 0:
            raise NetworkBenchError(f"{self.nodes} nodes, {what}: no store was acknowledged")
        return _Window(result, wall, cpu, switches, commits, threads)

    def warm_up(self) -> None:
        """Untimed stores (connections, first paths), then ``SETTLE_S`` for their replication."""
        if not self.config.warmup:
            return
        self.say(f"{self.nodes} nodes: warm-up")
        self._ask(PREP_TIMEOUT_S, op="prep", n=self.config.warmup, size=self.config.size)
        result = self._store(self.config.warmup, "warm-up").result
        if result["sent"] != self.config.warmup:
            raise NetworkBenchError(
                f"{self.nodes} nodes: the warm-up stopped at the time limit after "
                f"{result['sent']} of {self.config.warmup} stores"
            )
        time.sleep(SETTLE_S)

    def measure_idle(self) -> float | None:
        """The nodes' CPU without load over ``idle_seconds``, as a share of one core."""
        seconds = self.config.idle_seconds
        if not seconds:
            return None
        self.say(f"{self.nodes} nodes: idle for {seconds:g} s")
        before_cpu, before = self.devnet.cpu_seconds(), time.perf_counter()
        time.sleep(seconds)
        return (self.devnet.cpu_seconds() - before_cpu) / (time.perf_counter() - before)

    def prepare_round(self) -> None:
        """Prepares the next round's messages (untimed)."""
        self._ask(PREP_TIMEOUT_S, op="prep", n=self.config.messages, size=self.config.size)

    def run_round(self) -> Round:
        """Stores the prepared messages: one timed round."""
        index = len(self.rounds) + 1
        self.say(f"{self.nodes} nodes: round {index}/{self.config.rounds}")
        window = self._store(self.config.messages, f"round {index}")
        result, commits = window.result, window.commits
        timed = Round(
            messages=self.config.messages,
            sent=int(result["sent"]),
            ok=int(result["ok"]),
            elapsed_s=float(result["elapsed"]),
            wall_s=window.wall_s,
            p50_ms=float(result["p50_ms"]),
            p99_ms=float(result["p99_ms"]),
            max_ms=float(result["max_ms"]),
            mean_ms=float(result["mean_ms"]),
            nodes_cpu_s=window.cpu_s,
            nodes_switches=window.switches,
            client_cpu_s=float(result["cpu_s"]),
            requests={str(k): int(v) for k, v in result["requests"].items()},
            paths_failed=int(result["paths_failed"]),
            nodes_commits=None if commits is None else commits[0],
            nodes_commit_jobs=None if commits is None else commits[1],
            nodes_threads=window.threads,
        )
        self.rounds.append(timed)
        return timed

    def check_delivery(self) -> Delivery:
        """Reads back the messages of ``sample`` recipients; every acknowledged one must be there,
        nothing else, each with the right hash."""
        self.say(f"{self.nodes} nodes: reading back")
        got = self._ask(CHECK_TIMEOUT_S, op="check", sample=self.config.sample)
        delivery = Delivery(
            recipients=int(got["recipients"]),
            expected=int(got["expected"]),
            found=int(got["found"]),
            unexpected=int(got["unexpected"]),
            corrupt=int(got["corrupt"]),
            elapsed_s=float(got["elapsed"]),
        )
        if (
            delivery.recipients < 1
            or delivery.expected < 1
            or delivery.found != delivery.expected
            or delivery.unexpected
            or delivery.corrupt
        ):
            raise WrongResultError(
                f"{self.nodes} nodes, delivery: {delivery.found} of {delivery.expected} "
                f"acknowledged messages read back for {delivery.recipients} recipients, "
                f"{delivery.unexpected} unexpected, {delivery.corrupt} corrupt; missing: "
                f"{', '.join(got.get('missing', [])[:4]) or 'none'}"
            )
        return delivery

    def result(
        self, idle_cpu: float | None, delivery: Delivery, peel_us: float | None = None
    ) -> NodesResult:
        if not self.rounds:
            raise NetworkBenchError("no round was run")
        return NodesResult(
            nodes=self.nodes,
            rounds=list(self.rounds),
            idle_cpu=idle_cpu,
            delivery=delivery,
            up_s=self.devnet.up_s,
            peel_us=peel_us,
        )


def run_nodes(
    nodes: int,
    config: Config,
    work: Path,
    peel_us: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> NodesResult:
    """One devnet size, from ``devnet up`` to ``devnet down``: warm-up, idle, rounds, read-back."""
    with Session(nodes, config, work, progress) as session:
        session.warm_up()
        idle = session.measure_idle()
        for _ in range(config.rounds):
            session.prepare_round()
            session.run_round()
        delivery = session.check_delivery()
        return session.result(idle, delivery, peel_us)


@dataclass(frozen=True)
class Report:
    """A whole run: configuration, machine, versions, the peel unit, results per devnet size."""

    config: Config
    machine: dict[str, Any]
    versions: dict[str, str | None]
    started_at: str
    duration_s: float
    peel: PeelTime
    results: list[NodesResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "config": self.config.to_json(),
            "machine": self.machine,
            "versions": self.versions,
            "units": {
                "rate": "stored messages per second (median over rounds)",
                "latency": "ms (median over rounds of each round's percentile)",
                "cpu": "µs per stored message; idle_cpu: share of one core",
                "peel_units": "node CPU per stored message / single-core peel time",
            },
            "peel": self.peel.to_json(),
            "results": [result.to_json() for result in self.results],
        }


def run(
    config: Config,
    progress: Callable[[str], None] | None = None,
    work: Path | None = None,
) -> Report:
    """Measures the peel unit, then runs every devnet size in turn (in ``work``, by default a
    temporary directory removed afterwards)."""
    say = progress or (lambda _message: None)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    machine = onion.machine_info()
    say("onion peel")
    peel = measure_peel(config.peel_repeat, config.peel_target_seconds)
    results: list[NodesResult] = []
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="veil-bench-network-"))
            )
        for nodes in config.nodes:
            results.append(run_nodes(nodes, config, work / f"nodes-{nodes}", peel.median_us, say))
    return Report(
        config=config,
        machine=machine,
        versions=onion.versions(),
        started_at=started_at,
        duration_s=time.perf_counter() - started,
        peel=peel,
        results=results,
    )


# --------------------------------------------------------------------------------------------------
# Output


def figure(value: float | None, spec: str) -> str:
    """A figure as the table shows it: ``format(value, spec)``, or "n/a" if it was not measured."""
    return "n/a" if value is None else format(value, spec)


def format_table(report: Report) -> str:
    """The report as aligned plain text."""
    config, machine, vers, peel = report.config, report.machine, report.versions, report.peel
    lines = [
        f"Veil network end to end: {onion.size_label(config.size)} stores through three-hop onion "
        f"requests, {QUORUM} signed results checked each",
        f"{config.concurrency} concurrent; {config.rounds} round(s) of {config.messages} messages "
        f"after {config.warmup} warm-up stores; medians over rounds",
        f"machine: {machine['cpu_count']} CPUs, {machine['cpu_model'] or 'unknown CPU'}, "
        f"{machine['platform']}, {machine['python']}",
        f"versions: veil {vers['veil']}, PyNaCl {vers['pynacl']}, "
        f"libsodium {vers['libsodium'] or 'n/a (not exposed by PyNaCl)'}",
        f"peel unit: NodeKey.peel of a {onion.size_label(peel.payload_size)} v1 onion on one core, "
        f"{peel.median_us:.2f} us of CPU (median of {len(peel.samples_us)}; min "
        f"{peel.min_us:.2f}, max {peel.max_us:.2f}; wall clock {peel.wall_median_us:.2f} us)",
        "",
    ]
    header = (
        "nodes",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "node CPU/msg us",
        "beyond idle us",
        "idle, 1 core",
        "peel units",
        "beyond idle",
        "client CPU/msg us",
        "switches/msg",
        "commits/msg",
        "jobs/commit",
        "delivered",
    )
    rows = []
    for result in report.results:
        rows.append(
            (
                str(result.nodes),
                f"{result.rate:,.0f}",
                f"{result.p50_ms:.1f}",
                f"{result.p99_ms:.1f}",
                f"{result.nodes_cpu_s * 1e6:,.0f}",
                figure(_us(result.nodes_cpu_busy_s), ",.0f"),
                figure(result.idle_cpu, ".1%"),
                figure(result.peel_units, ",.1f"),
                figure(result.peel_units_busy, ",.1f"),
                f"{result.client_cpu_s * 1e6:,.0f}",
                f"{result.switches_per_store:,.1f}",
                figure(result.commits_per_store, ",.2f"),
                figure(result.jobs_per_commit, ",.1f"),
                f"{result.delivery.found}/{result.delivery.expected}",
            )
        )
    lines += _aligned(header, rows)
    threads = [(r.nodes, r.threads_per_store, r.nodes_cpu_s) for r in report.results]
    if any(per_store is not None for _, per_store, _ in threads):
        lines += [
            "",
            "node CPU per message by thread, us (share of the node CPU):",
            *_aligned(
                (
                    "nodes",
                    "event loops: user",
                    "system",
                    "store writers: user",
                    "system",
                    "other threads",
                ),
                [_thread_row(nodes, per_store, cpu) for nodes, per_store, cpu in threads],
            ),
        ]
    incomplete = [r.nodes for r in report.results if not r.complete]
    if incomplete:
        lines.append(
            f"rounds stopped at the {ROUND_TIME_LIMIT_S:g} s limit at {incomplete} nodes: "
            "rates are of the messages sent"
        )
    lines += [
        "",
        "peel units: node CPU per message / the peel time above; beyond idle: less the nodes' "
        "CPU without load over the same time; switches/msg: the node threads' context switches "
        "(wake-ups and preemptions) per message; commits/msg: the nodes' durable store commits per "
        "message, and jobs/commit what each carried (group commit's sharing)",
        f"({report.duration_s:.1f} s)",
    ]
    return "\n".join(lines)


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """``header``, a rule and ``rows``, each column right-aligned to its widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(row) for row in rows)]


def _thread_row(nodes: int, per_store: ThreadCpu | None, cpu_s: float) -> tuple[str, ...]:
    if per_store is None:
        return (str(nodes), *["n/a"] * 5)
    cells = [str(nodes)]
    for seconds in astuple(per_store):
        share = f" ({seconds / cpu_s:.0%})" if cpu_s > 0 else ""
        cells.append(f"{seconds * 1e6:,.0f}{share}")
    return tuple(cells)


def write_json(report: Report, path: str | os.PathLike[str]) -> None:
    """Writes the report as JSON (raises :class:`OSError` if ``path`` cannot be written)."""
    text = json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")


def write_png(report: Report, path: str | os.PathLike[str]) -> None:
    """Draws messages/s, p50/p99 and the node CPU per message by thread, each by devnet size
    (matplotlib, Agg).

    Raises :class:`ImportError` without matplotlib and :class:`OSError` if ``path`` cannot be
    written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(15, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    rate_axes, latency_axes, thread_axes = figure.subplots(1, 3)
    labels = [f"{r.nodes} nodes" for r in report.results]
    xs = list(range(len(report.results)))

    rates = [r.rate for r in report.results]
    bars = rate_axes.bar(xs, rates, 0.6, color="#1f77b4")
    rate_axes.bar_label(bars, labels=[f"{v:,.0f}" for v in rates], padding=2, fontsize=8)
    rate_axes.set_xticks(xs, labels)
    rate_axes.set_ylabel("stored messages per second (median over rounds)")
    rate_axes.set_ylim(0, max(rates, default=1.0) * 1.2 or 1.0)
    rate_axes.set_title("throughput (higher is better)", fontsize=10)

    width = 0.38
    for offset, name, values, colour in (
        (-width / 2, "p50", [r.p50_ms for r in report.results], "#2ca02c"),
        (width / 2, "p99", [r.p99_ms for r in report.results], "#d62728"),
    ):
        bars = latency_axes.bar([x + offset for x in xs], values, width, label=name, color=colour)
        latency_axes.bar_label(bars, labels=[f"{v:.0f}" for v in values], padding=2, fontsize=8)
    top = max((r.p99_ms for r in report.results), default=1.0)
    latency_axes.set_ylim(0, top * 1.2 or 1.0)
    latency_axes.set_xticks(xs, labels)
    latency_axes.set_ylabel("store latency, ms (median over rounds)")
    latency_axes.set_title("latency (lower is better)", fontsize=10)
    latency_axes.legend(frameon=False)
    _draw_threads(thread_axes, report.results, xs, labels)
    for axes in (rate_axes, latency_axes, thread_axes):
        axes.set_xlim(-0.8, len(xs) - 0.2)
        axes.grid(axis="y", alpha=0.3)
        axes.set_axisbelow(True)

    config, machine = report.config, report.machine
    figure.suptitle(
        f"Veil network end to end: {onion.size_label(config.size)} stores, "
        f"{config.concurrency} concurrent, {config.rounds} x {config.messages} messages; "
        f"{machine.get('cpu_count')} CPUs, {machine.get('cpu_model') or 'unknown CPU'}",
        fontsize=11,
    )
    with open(path, "wb") as out:
        figure.savefig(out, format="png")


_THREAD_PARTS = (
    ("event loops, user", "#1f77b4"),
    ("event loops, system", "#aec7e8"),
    ("store writers, user", "#ff7f0e"),
    ("store writers, system", "#ffbb78"),
    ("other threads", "#7f7f7f"),
)


def _draw_threads(
    axes: Any, results: Sequence[NodesResult], xs: list[int], labels: list[str]
) -> None:
    """Stacked bars of node CPU per message by thread (µs); a size whose split was not read has
    no bar."""
    parts = [
        [0.0] * len(_THREAD_PARTS) if r.threads_per_store is None else astuple(r.threads_per_store)
        for r in results
    ]
    bottoms = [0.0] * len(results)
    for index, (name, colour) in enumerate(_THREAD_PARTS):
        heights = [part[index] * 1e6 for part in parts]
        axes.bar(xs, heights, 0.6, bottom=bottoms, label=name, color=colour)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    axes.bar_label(
        axes.containers[-1],
        labels=[f"{b:,.0f}" if b else "n/a" for b in bottoms],
        padding=2,
        fontsize=8,
    )
    axes.set_ylim(0, max(bottoms, default=1.0) * 1.6 or 1.0)  # room for the legend above
    axes.set_xticks(xs, labels)
    axes.set_ylabel("node CPU per message, us (all nodes)")
    axes.set_title("where a message's node CPU goes (lower is better)", fontsize=10)
    axes.legend(frameon=False, fontsize=8, loc="upper left", ncols=2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m veil.benchmarks.network``: the same as ``veil bench network``."""
    from veil.cli import main as cli_main  # noqa: PLC0415

    return cli_main(["bench", "network", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
