"""Veil's benchmarks, shared by the ``veil bench`` command and the pytest-benchmark suite
(``bench/``).

- :mod:`veil.benchmarks.onion`: peeling one onion layer, from the primitive floor (PyNaCl) through a
  plain-Python peel to the Rust core, alone and batched on every core.
- :mod:`veil.benchmarks.network`: the network end to end (``veil bench network``): a devnet of N
  node processes, onion-routed stores with W-of-R replication from a client process
  (:mod:`veil.benchmarks.network_load`, over :mod:`veil.benchmarks.loadkit`'s JSON lines),
  messages/s, p50/p99 and node CPU per message, also in single-core peel units.

Nothing here is imported by ``import veil``; each benchmark module is loaded when it is run.
"""
