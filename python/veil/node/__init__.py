"""The Veil service node: storage RPC over HTTP on uvloop, an LMDB message store, metrics."""
