"""Structured node logs: one JSON object per line on stderr.

Every record has ``ts`` (ISO 8601, UTC), ``level``, ``logger`` and ``msg``; fields passed with
``extra={"fields": {...}}`` are added as keys. The node logs events (start, stop, sweeps, faults),
never a client's address and never message contents: no code path hands either to a logger.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode("utf-8")


def configure_logging(level: str) -> None:
    """Send the ``veil`` loggers' records to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("veil")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
