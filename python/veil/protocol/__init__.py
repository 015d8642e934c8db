"""Veil's own wire formats, one module each (``docs/protocol.md``)."""
