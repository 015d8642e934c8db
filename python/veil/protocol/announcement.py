"""Signed node announcements: how nodes (and clients) learn who is in the network.

A node announces its Ed25519 identity, its X25519 key (which must be the standard conversion of the
Ed25519 key, so one seed owns both), its client (HTTP) and node-link addresses, its software version
and the time. The signature covers all of it:

```
signed = "veil-announce-v1" ‖ ed25519 (32) ‖ x25519 (32) ‖ issued_ms (8, big-endian)
         ‖ len(http) (1) ‖ http ‖ len(link) (1) ‖ link ‖ len(version) (1) ‖ version
```

with ``http``, ``link`` and ``version`` as UTF-8 text (``"127.0.0.1:22021"``). On the wire an
announcement is JSON: ``{"ed25519": hex, "x25519": hex, "http": "host:port", "link": "host:port",
"version": str, "issued_ms": int, "signature": base64}``. A newer announcement of the same identity
replaces an older one; a node not heard from for a while is dropped.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from veil import _core
from veil.errors import InvalidInputError, InvalidKeyError
from veil.identity import Identity

__all__ = ["Announcement", "parse_address", "sign_announcement"]

_CONTEXT = b"veil-announce-v1"


def parse_address(text: object) -> tuple[str, int]:
    """``host:port`` → (host, port); raise :class:`InvalidInputError`."""
    if not isinstance(text, str) or len(text) > 255:
        raise InvalidInputError("an address is host:port")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInputError("an address is host:port")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def _signed_bytes(
    ed25519: bytes, x25519: bytes, *, issued_ms: int, http: str, link: str, version: str
) -> bytes:
    parts = [_CONTEXT, ed25519, x25519, struct.pack(">Q", issued_ms)]
    for text in (http, link, version):
        raw = text.encode("utf-8")
        if len(raw) > 255:
            raise InvalidInputError("announcement fields are at most 255 bytes")
        parts += [bytes([len(raw)]), raw]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Announcement:
    ed25519: bytes
    x25519: bytes
    http: str
    link: str
    version: str
    issued_ms: int
    signature: bytes

    @property
    def http_address(self) -> tuple[str, int]:
        return parse_address(self.http)

    @property
    def link_address(self) -> tuple[str, int]:
        return parse_address(self.link)

    def to_json(self) -> dict[str, Any]:
        return {
            "ed25519": self.ed25519.hex(),
            "x25519": self.x25519.hex(),
            "http": self.http,
            "link": self.link,
            "version": self.version,
            "issued_ms": self.issued_ms,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, entry: object) -> Announcement:
        """Parse and verify an announcement; raise :class:`InvalidInputError` if either fails."""
        if not isinstance(entry, dict):
            raise InvalidInputError("an announcement is a JSON object")
        try:
            ed25519 = bytes.fromhex(entry["ed25519"])
            x25519 = bytes.fromhex(entry["x25519"])
            http, link, version = entry["http"], entry["link"], entry["version"]
            issued_ms = entry["issued_ms"]
            signature = base64.b64decode(entry["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise InvalidInputError("an announcement is missing a field or has a bad one") from None
        if not all(isinstance(v, str) for v in (http, link, version)):
            raise InvalidInputError("announcement addresses and version are strings")
        if not isinstance(issued_ms, int) or isinstance(issued_ms, bool) or issued_ms < 0:
            raise InvalidInputError("issued_ms is a non-negative integer")
        if len(ed25519) != 32 or len(x25519) != 32 or len(signature) != 64:
            raise InvalidInputError("announcement keys are 32 bytes and signatures 64")
        parse_address(http)
        parse_address(link)
        try:
            derived = _core.ed25519_public_key_to_x25519(ed25519)
        except InvalidKeyError:
            raise InvalidInputError("the announced Ed25519 key is not usable") from None
        if not hmac.compare_digest(derived, x25519):
            raise InvalidInputError("the announced X25519 key does not belong to the identity")
        signed = _signed_bytes(
            ed25519, x25519, issued_ms=issued_ms, http=http, link=link, version=version
        )
        if not _core.ed25519_verify(ed25519, signed, signature):
            raise InvalidInputError("the announcement's signature does not verify")
        return cls(ed25519, x25519, http, link, version, issued_ms, signature)


def sign_announcement(
    identity: Identity, *, http: str, link: str, version: str, issued_ms: int
) -> Announcement:
    """A node's announcement of itself, signed with its identity."""
    parse_address(http)
    parse_address(link)
    signed = _signed_bytes(
        identity.ed25519_public_key,
        identity.x25519_public_key,
        issued_ms=issued_ms,
        http=http,
        link=link,
        version=version,
    )
    return Announcement(
        ed25519=identity.ed25519_public_key,
        x25519=identity.x25519_public_key,
        http=http,
        link=link,
        version=version,
        issued_ms=issued_ms,
        signature=identity.sign(signed),
    )
