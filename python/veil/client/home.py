"""The client's local state: ``~/.veil`` or ``--home DIR``.

```
HOME/identity.key    the account's Ed25519 seed, plain or sealed   0600  veil.client.keystore
HOME/state.json      this device's book                            0600  veil.client.account
HOME/consensus.json  the last consensus taken, as it was signed    0600  veil.client.directory
HOME/guards.json     the client's guards, each with when chosen    0600  veil.client.guards
HOME/transfers/      unfinished attachment uploads and downloads   0700  veil.client.attachments
```

The saved consensus is a cache, not a source of trust: it is checked against the network file
again each time it is read (``veil.client.directory.check_consensus``), like one from a seed.

With a passphrase the seed is sealed under an Argon2id-derived key; the book (contacts, the
conversations kept on this device) is protected by the file mode only. Files are written
atomically (temporary file, then rename) with mode 0600; the directory is 0700.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

from veil.client.account import Book
from veil.client.guards import GUARD_LIFETIME_MS, GUARDS, GuardSet
from veil.client.keystore import decode_key_file, encode_key_file
from veil.clock import now_ms
from veil.errors import VeilError
from veil.identity import Identity
from veil.protocol.consensus import SignedConsensus

__all__ = ["ClientHome", "HomeError", "write_private"]


class HomeError(VeilError):
    """The client's state directory is missing, unreadable, or already holds an account."""


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ClientHome:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.key_path = root / "identity.key"
        self.state_path = root / "state.json"
        self.consensus_path = root / "consensus.json"
        self.guards_path = root / "guards.json"
        self.transfers_path = root / "transfers"

    def exists(self) -> bool:
        return self.key_path.exists()

    def create(self, identity: Identity, name: str | None, passphrase: str | None = None) -> Book:
        if self.exists():
            raise HomeError(f"{self.root} already holds an account (veil whoami shows it)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        write_private(self.key_path, encode_key_file(identity.seed, passphrase))
        book = Book()
        if name:
            book.config.set_name(name, now_ms())
        self.save_book(book)
        return book

    def _key_file(self) -> bytes:
        try:
            return self.key_path.read_bytes()
        except FileNotFoundError:
            raise HomeError(
                f"no account in {self.root}; run `veil init` or `veil restore`"
            ) from None
        except OSError as exc:
            raise HomeError(f"cannot read {self.key_path}: {exc.strerror}") from None

    def identity(self, passphrase: str | None = None) -> Identity:
        """The account's identity; raises PassphraseRequired / KeyFileError for a sealed key
        without the right passphrase."""
        return Identity.from_seed(decode_key_file(self._key_file(), passphrase))

    def set_passphrase(self, identity: Identity, passphrase: str | None) -> None:
        """Seal the key with a new passphrase (``None``: store it plain)."""
        write_private(self.key_path, encode_key_file(identity.seed, passphrase))

    def state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise HomeError(f"cannot read {self.state_path}: {exc}") from None
        if not isinstance(state, dict):
            raise HomeError(f"{self.state_path} is not a JSON object")
        return state

    def book(self) -> Book:
        try:
            return Book.from_json(self.state())
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise HomeError(f"{self.state_path} is damaged: {exc}") from None

    def save_book(self, book: Book) -> None:
        data = json.dumps(book.to_json(), sort_keys=True).encode("utf-8")
        write_private(self.state_path, data)

    def _json(self, path: Path) -> object:
        """A JSON file of the home, or None if it is missing or unreadable (a cache)."""
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None

    def saved_consensus(self) -> object:
        """The consensus document saved last (unchecked: see the module), or None."""
        return self._json(self.consensus_path)

    def save_consensus(self, signed: SignedConsensus) -> None:
        write_private(self.consensus_path, orjson.dumps(signed.to_json()))

    def guards(self, *, size: int = GUARDS, lifetime_ms: int = GUARD_LIFETIME_MS) -> GuardSet:
        """The client's guards as saved (none if never saved)."""
        return GuardSet.from_json(self._json(self.guards_path), size=size, lifetime_ms=lifetime_ms)

    def save_guards(self, guards: GuardSet) -> None:
        write_private(self.guards_path, json.dumps(guards.to_json()).encode("utf-8"))
