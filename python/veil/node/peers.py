"""The nodes a node knows: keys and addresses, from ``DATA_DIR/peers.json``.

```json
[{"ed25519": "<64 hex>", "x25519": "<64 hex>",
  "http": "127.0.0.1:22021", "link": "127.0.0.1:22022"}]
```

A node forwards an onion layer only to a node listed here, found by the X25519 key in the layer; a
client builds its paths from the same kind of list. (Signed announcements and gossip replace the
file with the network's membership.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from veil.node.config import ConfigError, parse_listen
from veil.protocol.announcement import Announcement

__all__ = ["PeerInfo", "load_peers", "peer_from_json", "peer_to_json"]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    ed25519: bytes
    x25519: bytes
    http: tuple[str, int]
    link: tuple[str, int]

    @classmethod
    def of(cls, announcement: Announcement) -> PeerInfo:
        """The node a (verified) announcement describes."""
        return cls(
            announcement.ed25519,
            announcement.x25519,
            announcement.http_address,
            announcement.link_address,
        )


def peer_from_json(entry: object) -> PeerInfo:
    if not isinstance(entry, dict):
        raise ConfigError("a peer is an object with ed25519, x25519, http and link")
    try:
        ed25519 = bytes.fromhex(entry["ed25519"])
        x25519 = bytes.fromhex(entry["x25519"])
        http = parse_listen(entry["http"])
        link = parse_listen(entry["link"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"a peer entry is malformed: {exc}") from None
    if len(ed25519) != 32 or len(x25519) != 32:
        raise ConfigError("a peer's keys are 32 bytes each")
    return PeerInfo(ed25519, x25519, http, link)


def peer_to_json(peer: PeerInfo) -> dict[str, str]:
    return {
        "ed25519": peer.ed25519.hex(),
        "x25519": peer.x25519.hex(),
        "http": f"{peer.http[0]}:{peer.http[1]}",
        "link": f"{peer.link[0]}:{peer.link[1]}",
    }


def load_peers(path: Path) -> list[PeerInfo]:
    """The peers listed in ``path``; an absent file is an empty list."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a JSON list of peers")
    return [peer_from_json(entry) for entry in entries]
