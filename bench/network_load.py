"""The network benchmark's client moved into the package: :mod:`veil.benchmarks.network_load`
(``python -m veil.benchmarks.network_load``). This module only re-exports what the other load
scripts here (``messenger_load.py``, ``attachment_load.py``) import from it; it is no client."""

from __future__ import annotations

from veil.benchmarks.network_load import CountingNetworkClient, devnet_directory

__all__ = ["CountingNetworkClient", "devnet_directory"]
