"""What the load-generator scripts (``*_load.py``) share: the JSON-line protocol with the benchmark
process, and percentiles. They live in :mod:`veil.benchmarks.loadkit` (the ``veil bench network``
client uses them too); this module re-exports them for the scripts here."""

from __future__ import annotations

from veil.benchmarks.loadkit import percentile, read_line, serve, write_line

__all__ = ["percentile", "read_line", "serve", "write_line"]
