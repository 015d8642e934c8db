"""The network file: which directory authorities define a Veil network (``docs/network.md``).

Nodes and clients ship with it or are given it (``--network FILE``; ``veil devnet up`` writes one).
It is the one thing they trust: a consensus counts only when a majority of these authorities signed
it. JSON:

```json
{"version": 1, "name": "devnet", "period_s": 10, "valid_periods": 6,
 "authorities": [{"name": "auth0", "ed25519": "<64 hex>", "http": "127.0.0.1:41000",
                  "link": "127.0.0.1:41001"}]}
```

``period_s`` is the length of a consensus period (a consensus is published every period and is
fresh for one), ``valid_periods`` how many periods a consensus stays valid: with every authority
down, nodes and clients run on the last one for that long. An authority's X25519 key (for its node
links) is the conversion of its Ed25519 key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil import _core
from veil.errors import InvalidInputError, InvalidKeyError
from veil.protocol.announcement import parse_address

__all__ = ["AuthorityInfo", "NetworkFile", "load_network_file"]

VERSION = 1
MAX_AUTHORITIES = 32


@dataclass(frozen=True, slots=True)
class AuthorityInfo:
    name: str
    ed25519: bytes
    x25519: bytes
    http: tuple[str, int]
    link: tuple[str, int]

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "ed25519": self.ed25519.hex(),
            "http": f"{self.http[0]}:{self.http[1]}",
            "link": f"{self.link[0]}:{self.link[1]}",
        }


@dataclass(frozen=True, slots=True)
class NetworkFile:
    name: str
    authorities: tuple[AuthorityInfo, ...]
    period_s: float
    valid_periods: int

    @property
    def majority(self) -> int:
        """Signatures a consensus needs: more than half of the authorities."""
        return len(self.authorities) // 2 + 1

    def authority(self, ed25519: bytes) -> AuthorityInfo | None:
        return next((a for a in self.authorities if a.ed25519 == ed25519), None)

    def period_at(self, now_ms: int) -> int:
        """The consensus period that ``now_ms`` falls in (periods count from the Unix epoch)."""
        return int(now_ms // (self.period_s * 1000))

    def period_start_ms(self, period: int) -> int:
        return int(period * self.period_s * 1000)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "name": self.name,
            "period_s": self.period_s,
            "valid_periods": self.valid_periods,
            "authorities": [a.to_json() for a in self.authorities],
        }

    @classmethod
    def from_json(cls, document: object) -> NetworkFile:
        """Parse a network file's JSON; raise :class:`InvalidInputError` naming what is wrong."""
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise InvalidInputError(f"a network file is a JSON object with version {VERSION}")
        name, period, valid = (
            document.get("name"),
            document.get("period_s"),
            document.get("valid_periods"),
        )
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise InvalidInputError("the network file's name is 1 to 64 characters")
        if not isinstance(period, int | float) or isinstance(period, bool) or not period >= 1:
            raise InvalidInputError("period_s is a number of seconds, at least 1")
        if not isinstance(valid, int) or isinstance(valid, bool) or not 2 <= valid <= 10_000:
            raise InvalidInputError("valid_periods is an integer from 2 to 10,000")
        entries = document.get("authorities")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_AUTHORITIES:
            raise InvalidInputError(f"a network has 1 to {MAX_AUTHORITIES} authorities")
        authorities = tuple(_authority(entry) for entry in entries)
        if len({a.ed25519 for a in authorities}) != len(authorities):
            raise InvalidInputError("an authority is listed twice")
        return cls(name, authorities, float(period), valid)


def _authority(entry: object) -> AuthorityInfo:
    if not isinstance(entry, dict):
        raise InvalidInputError("an authority is an object with name, ed25519, http and link")
    name, key_hex = entry.get("name"), entry.get("ed25519")
    if not isinstance(name, str) or not isinstance(key_hex, str) or len(key_hex) != 64:
        raise InvalidInputError("an authority has a name and a 64-hex-digit ed25519 key")
    try:
        ed25519 = bytes.fromhex(key_hex)
        x25519 = _core.ed25519_public_key_to_x25519(ed25519)
    except (ValueError, InvalidKeyError):
        raise InvalidInputError(f"authority {name!r}: the ed25519 key is not usable") from None
    return AuthorityInfo(
        name, ed25519, x25519, parse_address(entry.get("http")), parse_address(entry.get("link"))
    )


def load_network_file(path: Path) -> NetworkFile:
    """Read and parse a network file; :class:`InvalidInputError` says what is wrong with it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: {exc}") from None
    try:
        return NetworkFile.from_json(document)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from None
