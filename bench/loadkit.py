"""What the load-generator scripts (``*_load.py``) share: the JSON-line protocol with the benchmark
process, and percentiles."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

__all__ = ["percentile", "read_line", "write_line"]


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
