"""The one clock helper: wall-clock time in milliseconds since the Unix epoch, as every Veil
timestamp on the wire and in the store is counted."""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000
