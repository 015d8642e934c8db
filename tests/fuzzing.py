"""What the fuzz tests share: counting what a property reaches, and running code under test at
Python's default recursion limit."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from hypothesis import currently_in_test_context, event


def tally(label: str) -> None:
    """Count ``label`` in Hypothesis's statistics (``--hypothesis-show-statistics``), which show
    how often each property reaches what it is about."""
    if currently_in_test_context():
        event(label)


@contextlib.contextmanager
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit, as a client or a node runs with: Hypothesis raises the
    limit while it runs a test, which would hide a RecursionError that deep nesting causes in
    production."""
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)
