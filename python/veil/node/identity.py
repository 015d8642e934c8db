"""The node's own key: a 32-byte Ed25519 seed in ``DATA_DIR/node.key`` (mode 0600).

The X25519 key (for onion layers addressed to the node) is derived from it by the standard
conversion, as for accounts.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from veil.identity import Identity
from veil.node.config import ConfigError

__all__ = ["create_node_key", "load_node_key"]


def create_node_key(path: Path) -> Identity:
    """Write a new random seed to ``path`` (which must not exist) with mode 0600."""
    seed = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(seed)
        handle.flush()
        os.fsync(handle.fileno())
    return Identity.from_seed(seed)


def load_node_key(path: Path) -> Identity:
    """Read the node's seed; refuse a key file that others can read."""
    try:
        mode = path.stat().st_mode
        seed = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; run `veil node init` first") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} must be readable by its owner only (chmod 600)")
    if len(seed) != 32:
        raise ConfigError(f"{path} must hold a 32-byte seed")
    return Identity.from_seed(seed)
