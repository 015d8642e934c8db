"""What the benchmark suites share: a typed view of pytest-benchmark's fixture and small helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["Benchmark", "median_s", "now_ms", "pick"]

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
