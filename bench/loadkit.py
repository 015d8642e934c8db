"""What the load-generator scripts (``*_load.py``) share: the JSON-line protocol with the benchmark
process, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

__all__ = ["percentile", "read_line", "serve", "write_line"]


def percentile(values: list[float], q: float) -> float:
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
    """The load script's side of ``benchkit.ChildProcess``: one JSON command per stdin line, one
    JSON answer per stdout line, until ``{"op": "quit"}`` or the end of input. A command that
    raises is answered ``{"failed": repr(exc)}`` (the benchmark fails the test on it); ``close``
    runs whatever happened."""
    try:
        while line := await read_line():
            command = orjson.loads(line)
            if command.get("op") == "quit":
                break
            try:
                answer = await handle(command)
            except Exception as exc:  # reported to the benchmark, which fails the test
                answer = {"failed": repr(exc)}
            write_line(answer)
    finally:
        with contextlib.suppress(Exception):
            await close()
