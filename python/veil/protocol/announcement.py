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
import re
import struct
from dataclasses import dataclass
from typing import Any

from veil import _core
from veil.errors import InvalidInputError
from veil.identity import Identity

__all__ = ["Announcement", "parse_address", "sign_announcement"]

_CONTEXT = b"veil-announce-v1"
_PORT = re.compile(r"[0-9]{1,5}")


def parse_address(text: object) -> tuple[str, int]:
    """``host:port`` → (host, port); raise :class:`InvalidInputError`."""
    if not isinstance(text, str) or len(text) > 255:
        raise InvalidInputError("an address is host:port")
    host, sep, port_text = text.rpartition(":")
    # ASCII digits only: str.isdigit() also takes superscripts and other scripts' digits.
    if not sep or not host or not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise InvalidInputError("an address is host:port")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def _signed_bytes(
    ed25519: bytes, x25519: bytes, *, issued_ms: int, http: str, link: str, version: str
) -> bytes:
    if not 0 <= issued_ms < 1 << 64:
        raise InvalidInputError("issued_ms is a 64-bit unsigned integer")
    parts = [_CONTEXT, ed25519, x25519, struct.pack(">Q", issued_ms)]
    for text in (http, link, version):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which JSON text can carry
            raise InvalidInputError("announcement fields are UTF-8 text") from None
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
    def parse(cls, entry: object) -> tuple[Announcement, bytes]:
        """Parse an announcement without checking its signature: (the announcement, the bytes
        its signature must cover). Raises :class:`InvalidInputError` for anything malformed.
        For checking many at once off the event loop (``veil._core.verify_identity_batch``)."""
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
        signed = _signed_bytes(
            ed25519, x25519, issued_ms=issued_ms, http=http, link=link, version=version
        )
        return cls(ed25519, x25519, http, link, version, issued_ms, signature), signed

    @classmethod
    def from_json(cls, entry: object) -> Announcement:
        """Parse and verify an announcement; raise :class:`InvalidInputError` if either fails:
        the X25519 key must be the Ed25519 key's conversion, and the signature valid."""
        announcement, signed = cls.parse(entry)
        [valid] = _core.verify_identity_batch(
            [(announcement.ed25519, announcement.x25519, signed, announcement.signature)]
        )
        if not valid:
            raise InvalidInputError("the announcement's keys or signature do not verify")
        return announcement


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
