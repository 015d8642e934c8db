"""Veil's benchmarks, shared by the ``veil bench`` command and the pytest-benchmark suite
(``bench/``).

- :mod:`veil.benchmarks.onion`: peeling one onion layer, from the primitive floor (PyNaCl) through a
  plain-Python peel to the Rust core, alone and batched on every core.

Nothing here is imported by ``import veil``; each benchmark module is loaded when it is run.
"""
