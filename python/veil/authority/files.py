"""What a directory authority keeps in its data directory, so that a restart forgets nothing that
matters: JSON files, each written atomically (a temporary file, fsync, rename, fsync of the
directory), so that a crash leaves the old or the new version, never half of one.

```
authority.key     the Ed25519 seed (mode 0600; veil.node.identity)
authority.toml    the settings (veil.authority.config)
state.json        {"version": 1, "admitted": {node hex: period}, "srv": {period: hex},
                   "secrets": {period: hex}}
candidates.json   {"version": 1, "candidates": [candidate, …]}   (veil.authority.candidates)
consensus.json    the latest published consensus, SignedConsensus.to_json()
vote.json         this authority's latest vote, SignedVote.to_json()
```

``admitted`` is the period each node was first admitted in (never forgotten: a node cannot
re-register to be admitted anew and re-roll its placement), ``srv`` the shared random values of
recent periods and of every period a node was admitted in, ``secrets`` the random values this
authority committed to in its votes and has not revealed yet.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from veil.node.config import ConfigError

__all__ = ["AuthorityFiles", "write_atomically"]

VERSION = 1
STATE = "state.json"
CANDIDATES = "candidates.json"
CONSENSUS = "consensus.json"
VOTE = "vote.json"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either version whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class AuthorityFiles:
    """The authority's JSON files; saves of one file happen one at a time, in order, off the
    event loop (the document is serialized on it, so it is a consistent snapshot)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._locks: dict[str, asyncio.Lock] = {}

    def read(self, name: str) -> Any:
        """The document in ``name``, or None if there is none; :class:`ConfigError` if it is not
        JSON (a file this authority did not write)."""
        path = self.data_dir / name
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None

    def write(self, name: str, document: Any) -> None:
        """Save ``document`` now (blocking: for start and stop)."""
        write_atomically(self.data_dir / name, orjson.dumps(document))

    async def save(self, name: str, document: Any) -> None:
        """Save ``document`` without blocking the event loop."""
        data = orjson.dumps(document)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(write_atomically, self.data_dir / name, data)
