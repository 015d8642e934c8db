"""What the benchmark suites share: a typed view of pytest-benchmark's fixture and small helpers."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import orjson

__all__ = ["Benchmark", "ChildProcess", "median_s", "now_ms", "pick"]

_T = TypeVar("_T")


class Benchmark(Protocol):
    """The part of pytest-benchmark's ``benchmark`` fixture used here (it is not annotated)."""

    group: str | None
    extra_info: dict[str, Any]
    stats: Any
    disabled: bool

    def __call__(self, function: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T: ...

    def pedantic(
        self,
        target: Callable[..., _T],
        *,
        setup: Callable[[], Any] | None = None,
        rounds: int = 1,
        iterations: int = 1,
        warmup_rounds: int = 0,
    ) -> _T: ...


def pick(benchmark: Benchmark, choice: tuple[int, int]) -> int:
    """The real figure with ``--benchmark-enable``, the quick one in the default test run."""
    return choice[1] if benchmark.disabled else choice[0]


def median_s(benchmark: Benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    if benchmark.disabled or stats is None:
        return None
    return float(stats.stats.median)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ChildProcess:
    """A benchmark helper script in a child process, driven one JSON line at a time: each command
    is a JSON object on its stdin, each answer one on its stdout (``{"failed": ...}`` on error).
    Stopped with ``{"op": "quit"}``, killed if it does not exit in time."""

    def __init__(self, script: Path, *args: str, log: Path | None = None) -> None:
        self.role = " ".join([script.name, *args])
        self._log: IO[bytes] | None = log.open("wb") if log is not None else None
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        where = f"; see {self._log.name}" if self._log is not None else ""
        assert line, f"{self.role} exited{where}"
        answer: dict[str, Any] = orjson.loads(line)
        assert "failed" not in answer, answer
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(command).decode() + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self, timeout: float = 15.0) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write('{"op":"quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            pipes: list[IO[str] | None] = [self.proc.stdin, self.proc.stdout]
            for pipe in pipes:
                if pipe is not None and not pipe.closed:
                    pipe.close()
            if self._log is not None:
                self._log.close()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def time_loop(op: Callable[[], object], loops: int) -> float:
    """Seconds per call of ``op``, over ``loops`` calls, with the garbage collector off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(loops):
            op()
        return (time.perf_counter() - started) / loops
    finally:
        if enabled:
            gc.enable()


def calibrate(op: Callable[[], object], target_s: float) -> int:
    """Calls of ``op`` that take about ``target_s``."""
    loops = 1
    while True:
        spent = time_loop(op, loops) * loops
        if spent >= target_s / 4 or loops >= 1 << 20:
            return max(1, round(loops * target_s / max(spent, 1e-9)))
        loops *= 4
