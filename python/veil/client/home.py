"""The client's local state: ``~/.veil`` or ``--home DIR``.

```
HOME/identity.key   the account's 32-byte Ed25519 seed            mode 0600
HOME/state.json     display name, retrieve cursors, seen ids     mode 0600
```

Files are written atomically (temporary file, then rename) with mode 0600; the directory is 0700.
(Passphrase protection of the key with Argon2id comes with the rest of the messenger.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from veil.errors import VeilError
from veil.identity import Identity

__all__ = ["ClientHome", "HomeError"]


class HomeError(VeilError):
    """The client's state directory is missing, unreadable, or already holds an account."""


def _write_private(path: Path, data: bytes) -> None:
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

    def exists(self) -> bool:
        return self.key_path.exists()

    def create(self, identity: Identity, name: str | None) -> None:
        if self.exists():
            raise HomeError(f"{self.root} already holds an account (veil whoami shows it)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        _write_private(self.key_path, identity.seed)
        self.save_state({"name": name, "cursors": {}, "seen": []})

    def identity(self) -> Identity:
        try:
            seed = self.key_path.read_bytes()
        except FileNotFoundError:
            raise HomeError(
                f"no account in {self.root}; run `veil init` or `veil restore`"
            ) from None
        except OSError as exc:
            raise HomeError(f"cannot read {self.key_path}: {exc.strerror}") from None
        if len(seed) != 32:
            raise HomeError(f"{self.key_path} is not a 32-byte seed")
        return Identity.from_seed(seed)

    def state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"name": None, "cursors": {}, "seen": []}
        except (OSError, json.JSONDecodeError) as exc:
            raise HomeError(f"cannot read {self.state_path}: {exc}") from None
        if not isinstance(state, dict):
            raise HomeError(f"{self.state_path} is not a JSON object")
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        _write_private(self.state_path, json.dumps(state, sort_keys=True).encode("utf-8"))
