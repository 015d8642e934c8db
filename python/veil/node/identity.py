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

__all__ = ["create_node_key", "load_node_key", "read_secret", "write_secret"]


def write_secret(path: Path, secret: bytes) -> None:
    """Write a 32-byte secret to ``path``, which must not exist: mode 0600, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())


def read_secret(path: Path, *, init: str, what: str) -> bytes:
    """The 32-byte secret in ``path``; :class:`ConfigError` if it is missing (``init`` is the
    command that makes it), readable by others, or not ``what`` (32 bytes)."""
    try:
        mode = path.stat().st_mode
        secret = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; run `{init}` first") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} must be readable by its owner only (chmod 600)")
    if len(secret) != 32:
        raise ConfigError(f"{path} must hold {what}")
    return secret


def create_node_key(path: Path) -> Identity:
    """Write a new random seed to ``path`` (which must not exist) with mode 0600."""
    seed = secrets.token_bytes(32)
    write_secret(path, seed)
    return Identity.from_seed(seed)


def load_node_key(path: Path) -> Identity:
    """Read the node's seed; refuse a key file that others can read."""
    return Identity.from_seed(read_secret(path, init="veil node init", what="a 32-byte seed"))
