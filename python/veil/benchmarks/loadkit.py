"""What load-generating client processes share: the JSON-line protocol with the process that drives
them, and percentiles.

A load client (``python -m veil.benchmarks.network_load``, the ``bench/*_load.py`` scripts) reads
one JSON command per line on stdin and answers one JSON line on stdout (:func:`serve`); the driving
side is :class:`LoadProcess` (the pytest suites in ``bench/`` use ``benchkit.ChildProcess``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = [
    "LoadProcess",
    "LoadProcessError",
    "percentile",
    "read_line",
    "serve",
    "write_line",
]

MAX_ANSWER_BYTES = 16 * 1024 * 1024


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values`` by the nearest rank below; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_line(answer: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(answer).decode() + "\n")
    sys.stdout.flush()


async def read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def serve(
    handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    close: Callable[[], Awaitable[None]],
) -> None:
    """The load client's side: one JSON command per stdin line, one JSON answer per stdout line,
    until ``{"op": "quit"}`` or the end of input. A command that raises is answered
    ``{"failed": repr(exc)}`` (the driving side fails the run on it); ``close`` runs whatever
    happened."""
    try:
        while line := await read_line():
            command = orjson.loads(line)
            if command.get("op") == "quit":
                break
            try:
                answer = await handle(command)
            except Exception as exc:  # reported to the driving side, which fails the run
                answer = {"failed": repr(exc)}
            write_line(answer)
    finally:
        with contextlib.suppress(Exception):
            await close()


class LoadProcessError(RuntimeError):
    """A load client exited, answered ``{"failed": ...}``, or did not answer in time."""


class LoadProcess:
    """A load client in a child process (``python -m MODULE``), driven one JSON line at a time.

    The child runs in its own session, so a Ctrl-C in the terminal reaches only this process, which
    then stops the child in order (:meth:`stop`). Its stderr goes to ``log``.
    """

    def __init__(self, module: str, log: Path, *args: str) -> None:
        self.role = " ".join([module, *args])
        self.log = log
        self._log: IO[bytes] = log.open("wb")
        try:
            self.proc = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
                [sys.executable, "-m", module, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise
        self._buffer = bytearray()

    def ask(self, timeout: float, **command: Any) -> dict[str, Any]:
        """Sends ``command`` and returns the answer, waiting at most ``timeout`` seconds.

        Raises :class:`LoadProcessError` if the child exits, does not answer in time, or answers
        ``{"failed": ...}``.
        """
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            raise LoadProcessError(f"{self.role}: already stopped")
        try:
            stdin.write(orjson.dumps(command) + b"\n")
            stdin.flush()
        except OSError:
            raise LoadProcessError(f"{self.role} exited; see {self.log}") from None
        line = self._read_line(timeout, str(command.get("op")))
        try:
            answer = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise LoadProcessError(f"{self.role}: not a JSON answer: {line[:200]!r}") from None
        if not isinstance(answer, dict):
            raise LoadProcessError(f"{self.role}: not a JSON object: {line[:200]!r}")
        if "failed" in answer:
            op = command.get("op")
            raise LoadProcessError(f"{self.role}: {op!r} failed: {answer['failed']}")
        return answer

    def _read_line(self, timeout: float, op: str) -> bytes:
        stdout = self.proc.stdout
        if stdout is None:
            raise LoadProcessError(f"{self.role}: no stdout")
        fd = stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadProcessError(f"{self.role}: no answer to {op!r} within {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LoadProcessError(f"{self.role} exited; see {self.log}")
            self._buffer += chunk
            if len(self._buffer) > MAX_ANSWER_BYTES:
                raise LoadProcessError(f"{self.role}: answer over {MAX_ANSWER_BYTES} bytes")
        end = self._buffer.index(b"\n")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def stop(self, timeout: float = 15.0) -> None:
        """Asks the child to quit, kills it if it has not exited within ``timeout`` seconds, and
        closes the pipes and the log."""
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.write(b'{"op":"quit"}\n')
                    self.proc.stdin.flush()
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
                self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            pipes: Sequence[IO[bytes] | None] = (self.proc.stdin, self.proc.stdout)
            for pipe in pipes:
                if pipe is not None and not pipe.closed:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._log.close()

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
