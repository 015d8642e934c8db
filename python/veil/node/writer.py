"""The store's single writer: a thread that group-commits every mutation, and its asyncio face.

Coroutines call :meth:`StoreWriter.submit` with a function of the write transaction. The writer
thread takes every job waiting (up to ``commit_max_batch``), runs them in order in one transaction,
commits it durably, and only then resolves their futures on the event loop. While one commit waits
for the disk, new jobs queue up and share the next one: under load, stores cost a fraction of an
``fsync`` each. Under load a commit that would carry few jobs first waits ``commit_gather_ms``
for more (``commit_gather_below``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from veil.node.store import MessageStore, StorageFullError, Txn
from veil.node.threads import WRITER, name_this_thread

__all__ = ["PHASES", "ApplyTurn", "Signer", "StorageFull", "StoreClosed", "StoreWriter"]

T = TypeVar("T")
log = logging.getLogger("veil.node.store")


class ApplyTurn:
    """The store writer's turn at the GIL while it applies a batch.

    py-lmdb gives up the GIL for every table call, and a thread that gives it up gets it back only
    once the thread holding it lets it go: a busy event loop lets it go when it next waits for
    the network, or after the interpreter's switch interval (5 ms). So a batch applied beside a
    busy loop waits behind the loop's Python after each of its calls: 35 stores took 3 to 5 ms
    instead of under 1 (docs/performance.md, "The store writer beside a busy event loop").

    While the writer applies a batch, it holds the turn (:meth:`take`). The event loop calls
    :meth:`wait` where it takes new work (a read from a client or a peer, the writer's results):
    while a batch is being applied, the loop waits there until it is. The writer gives the turn
    back once ``hold_s`` has passed (checked between jobs) and applies the rest as it did without
    it. A single job can outlast ``hold_s`` (a sweep of thousands of messages): the loop waits
    for one hold at most ``hold_s``, once, and then goes on without it. ``hold_s`` 0 turns it
    off."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.waits = 0
        """How often the event loop waited for a batch, and for how long in all."""
        self.waited_s = 0.0
        self._lock = threading.Lock()
        self._holds = 0  # turns taken so far (the writer's count)
        self._outlasted = 0  # the last hold the loop stopped waiting for

    def wait(self) -> None:
        """On the event loop: wait for the batch being applied, if any (at most ``hold_s``)."""
        lock = self._lock
        if lock.locked() and self._holds != self._outlasted:
            self.waits += 1
            began = time.perf_counter()
            if lock.acquire(timeout=self.hold_s):
                lock.release()
            else:
                self._outlasted = self._holds
            self.waited_s += time.perf_counter() - began

    def take(self) -> float:
        """On the writer: hold the turn; the time (``time.perf_counter``) to give it back by,
        0.0 if it is off."""
        if self.hold_s <= 0:
            return 0.0
        self._lock.acquire()
        self._holds += 1
        return time.perf_counter() + self.hold_s

    def give_back(self) -> None:
        self._lock.release()


class StoreClosed(Exception):
    """The store is shutting down; the write was not applied."""


class StorageFull(Exception):
    """The store's map is at its maximum size; the write was not applied."""


PHASES = ("apply", "commit", "sign")
"""Where the writer thread's time goes, per commit: ``apply`` from the write transaction's
start to the end of its jobs (the table calls, and waits for the GIL, which py-lmdb gives up on
each call); ``commit`` LMDB's durable commit (the dirty pages written and flushed, then the meta
page written synchronously); ``sign`` the receipts of what was committed."""

Signer = Callable[[list[bytes]], list[bytes]]
"""Signs each of a list of payloads (``Identity.sign_many``: the GIL released while it signs)."""


@dataclass(slots=True)
class _Job:
    op: Callable[[Txn], Any]
    future: asyncio.Future[Any]
    if_full: Any = field(default=None)
    sign: Signer | None = field(default=None)
    payloads: list[bytes] = field(default_factory=list)


_STOP = None


class StoreWriter:
    """Owns the writer thread. Start with :meth:`start`; stop with :meth:`close`."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="veil-store-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.jobs = 0
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.turn = ApplyTurn(store.settings.apply_turn_ms / 1000)
        self._closing = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The writer thread's id for the kernel, once started (``/proc/self/task/ID``)."""
        return self._thread.native_id

    async def submit(self, op: Callable[[Txn], T], *, if_full: Any = None) -> T:
        """Run ``op(txn)`` in the next group commit; return its result once durable.

        ``if_full`` is the result to answer when the map cannot grow; ``None`` raises
        :class:`StorageFull` instead.
        """
        future: asyncio.Future[T] = self._future()
        self._queue.put(_Job(op, future, if_full))
        return await future

    def _future(self) -> asyncio.Future[Any]:
        """The future a new job is answered on (:class:`StoreClosed` once closing)."""
        if self._loop is None:
            raise RuntimeError("StoreWriter.start() was not called")
        if self._closing:
            raise StoreClosed
        return self._loop.create_future()

    async def submit_signed(
        self, op: Callable[[Txn], T], sign: Signer, payloads: list[bytes], *, if_full: Any = None
    ) -> tuple[T, list[bytes]]:
        """:meth:`submit`, and once the commit is durable, ``sign(payloads)`` on the writer
        thread: a node's receipts (signatures that it holds what it stored) cost the event loop
        nothing, and are only ever made for what is on disk. The payloads of a commit's jobs
        that share a signer are signed in one call. The signatures are an empty list when the
        commit did not happen (the ``if_full`` answer)."""
        future: asyncio.Future[tuple[T, list[bytes]]] = self._future()
        full: tuple[Any, list[bytes]] | None = None if if_full is None else (if_full, [])
        self._queue.put(_Job(op, future, full, sign, payloads))
        return await future

    async def close(self) -> None:
        """Finish every queued job, stop the thread, and return once it has stopped."""
        self._closing = True
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread(WRITER)
        settings = self.store.settings
        stopping = False
        while not stopping:
            try:
                job = self._queue.get_nowait()
                loaded = True  # it waited for the last commit: the disk sets the pace
            except queue.Empty:
                job = self._queue.get()
                loaded = False
            if job is _STOP:
                break
            batch = [job]
            if settings.commit_max_delay_ms > 0:
                time.sleep(settings.commit_max_delay_ms / 1000)
            stopping = self._take_waiting(batch)
            gather = settings.commit_gather_ms > 0 and len(batch) < settings.commit_gather_below
            if loaded and gather and not stopping:
                # A small commit under load: its pages and flushes cost nearly what a large one's
                # do, so it first waits a little for more (one sleep, not a wake-up per job).
                time.sleep(settings.commit_gather_ms / 1000)
                stopping = self._take_waiting(batch)
            self._commit(batch)

    def _take_waiting(self, batch: list[_Job]) -> bool:
        """Add the jobs waiting to ``batch`` (up to ``commit_max_batch``); whether the writer was
        told to stop."""
        cap = self.store.settings.commit_max_batch
        while len(batch) < cap:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return False
            if more is _STOP:
                return True
            batch.append(more)
        return False

    def _commit(self, batch: list[_Job]) -> None:
        began = applied = time.perf_counter()

        def apply(txn: Txn) -> list[tuple[bool, Any]]:
            nonlocal applied
            turn = self.turn
            until = turn.take()
            try:
                done: list[tuple[bool, Any]] = []
                for job in batch:
                    done.append((True, job.op(txn)))
                    if until and time.perf_counter() > until:
                        until = 0.0
                        turn.give_back()
            finally:
                if until:
                    turn.give_back()
            applied = time.perf_counter()
            return done

        outcomes: list[tuple[bool, Any]]
        try:
            outcomes = self.store.write(apply)
            committed = time.perf_counter()
            self.commits += 1
            self.jobs += len(batch)
            outcomes = _signed(batch, outcomes)
            seconds = self.seconds
            seconds["apply"] += applied - began
            seconds["commit"] += committed - applied
            seconds["sign"] += time.perf_counter() - committed
        except StorageFullError:
            outcomes = [
                (True, job.if_full) if job.if_full is not None else (False, StorageFull())
                for job in batch
            ]
        except Exception:  # the thread must survive anything; no job in the batch was applied
            log.exception("store transaction failed; %d writes not applied", len(batch))
            outcomes = [(False, RuntimeError("store transaction failed"))] * len(batch)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_deliver, batch, outcomes, self.turn)


def _signed(batch: list[_Job], outcomes: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
    """The committed jobs' outcomes, each with its payloads' signatures if it asked for them.
    The payloads of the jobs that share a signer are signed in one call: the signer gives up the
    GIL and takes it back once a commit, not once a job (each taking back waits behind a busy
    event loop)."""
    by_signer: dict[Signer, list[int]] = {}
    for index, job in enumerate(batch):
        if job.sign is not None:
            by_signer.setdefault(job.sign, []).append(index)
    signed = list(outcomes)
    for sign, indexes in by_signer.items():
        payloads = [payload for index in indexes for payload in batch[index].payloads]
        try:
            signatures = sign(payloads)
            if len(signatures) != len(payloads):
                raise ValueError("a signature for each payload")
        except Exception:  # the commit stands; only the answers it was to sign fail
            log.exception("signing a committed write failed")
            for index in indexes:
                signed[index] = (False, RuntimeError("signing failed"))
            continue
        at = 0
        for index in indexes:
            count = len(batch[index].payloads)
            signed[index] = (True, (outcomes[index][1], signatures[at : at + count]))
            at += count
    return signed


def _deliver(batch: list[_Job], outcomes: list[tuple[bool, Any]], turn: ApplyTurn) -> None:
    turn.wait()  # the next batch may be under way: its results' Python can wait for it
    for job, (ok, value) in zip(batch, outcomes, strict=True):
        if job.future.done():
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
