"""Whether a request was forwarded by another swarm member (so it is not forwarded again)."""

from __future__ import annotations

import contextvars

__all__ = ["FORWARDED"]

FORWARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("veil_forwarded", default=False)
