"""The nodes a node is told of at start-up, from ``DATA_DIR/peers.json``: a JSON list of peers in
the form of :mod:`veil.protocol.peers`.

```json
[{"ed25519": "<64 hex>", "x25519": "<64 hex>",
  "http": "127.0.0.1:22021", "link": "127.0.0.1:22022"}]
```

(On a network, the consensus lists the nodes; this file adds nodes outside it, for tests
and private routes.)
"""

from __future__ import annotations

import json
from pathlib import Path

from veil.errors import InvalidInputError
from veil.node.config import ConfigError
from veil.protocol.peers import PeerInfo, peer_from_json

__all__ = ["load_peers"]


def load_peers(path: Path) -> list[PeerInfo]:
    """The peers listed in ``path``; an absent file is an empty list. Raise :class:`ConfigError`
    if the file cannot be read or an entry is malformed."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a JSON list of peers")
    try:
        return [peer_from_json(entry) for entry in entries]
    except InvalidInputError as exc:
        raise ConfigError(str(exc)) from None
