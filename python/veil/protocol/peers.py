"""A node as others address it: its keys and its two addresses (``PeerInfo``), and its JSON form.

```json
{"ed25519": "<64 hex>", "x25519": "<64 hex>", "http": "127.0.0.1:22021", "link": "127.0.0.1:22022"}
```

``http`` is where clients post storage RPC and onion requests, ``link`` where nodes open node links;
both are ``host:port`` (``[v6]:port`` for IPv6). A node forwards an onion layer only to a node it
knows, found by the X25519 key in the layer; a client builds its paths from the same kind of list.
Both learn the list from verified announcements (:meth:`PeerInfo.of`).
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.errors import InvalidInputError
from veil.protocol.announcement import Announcement, parse_address

__all__ = ["PeerInfo", "peer_from_json", "peer_to_json"]


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
    """Parse one peer entry; raise :class:`InvalidInputError` if it is malformed."""
    if not isinstance(entry, dict):
        raise InvalidInputError("a peer is an object with ed25519, x25519, http and link")
    try:
        ed25519 = bytes.fromhex(entry["ed25519"])
        x25519 = bytes.fromhex(entry["x25519"])
        http = parse_address(entry["http"])
        link = parse_address(entry["link"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"a peer entry is malformed: {exc}") from None
    if len(ed25519) != 32 or len(x25519) != 32:
        raise InvalidInputError("a peer's keys are 32 bytes each")
    return PeerInfo(ed25519, x25519, http, link)


def peer_to_json(peer: PeerInfo) -> dict[str, str]:
    """The JSON form of a peer, as :func:`peer_from_json` reads it."""
    return {
        "ed25519": peer.ed25519.hex(),
        "x25519": peer.x25519.hex(),
        "http": f"{peer.http[0]}:{peer.http[1]}",
        "link": f"{peer.link[0]}:{peer.link[1]}",
    }
