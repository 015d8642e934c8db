"""Veil: an onion-routed, end-to-end encrypted messenger network.

The package imports nothing heavy at import time; the native core (``veil._core``) is loaded by the
modules that need it, and its absence is an ``ImportError``, never a silent fallback.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("veil")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
