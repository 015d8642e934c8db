"""Message content, version 1: what a Veil message says, before Session Protocol encryption.

```
content = msgpack map {
    "v": 1,                       format version
    "id": bytes (16),             random; the same message received twice is shown once
    "kind": "text",               (more kinds — requests, receipts, sync — come with the messenger)
    "sent_ms": int,               the sender's clock
    "body": str,                  the text
    "name": str,                  optional: the sender's display name
}
padded  = content ‖ 0x80 ‖ 0x00 … 0x00     (ISO/IEC 7816-4), to the next size bucket
buckets = 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536 bytes (then multiples of 64 KiB)
```

Padding to a few sizes means a message's length tells an observer (a node holding it) little
about what it says. Unknown fields are ignored, so later versions can add some; a newer ``v`` is
refused with :class:`ContentError`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import msgpack

from veil.errors import InvalidInputError

__all__ = ["BUCKETS", "Content", "ContentError", "decode_content", "encode_content", "pad", "unpad"]

VERSION = 1
BUCKETS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
MAX_CONTENT = 60 * 1024  # leaves room for the Session Protocol's 144 bytes in a 76,800-byte store


class ContentError(InvalidInputError):
    """Bytes that are not valid message content (after decryption)."""


@dataclass(frozen=True, slots=True)
class Content:
    body: str
    sent_ms: int
    id: bytes
    kind: str = "text"
    name: str | None = None

    @classmethod
    def text(cls, body: str, sent_ms: int, name: str | None = None) -> Content:
        return cls(body=body, sent_ms=sent_ms, id=secrets.token_bytes(16), name=name)


def pad(data: bytes) -> bytes:
    """``data ‖ 0x80 ‖ zeros`` up to the smallest bucket that holds it."""
    need = len(data) + 1
    size = next((b for b in BUCKETS if b >= need), -(-need // 65536) * 65536)
    return data + b"\x80" + bytes(size - need)


def unpad(padded: bytes) -> bytes:
    end = len(padded.rstrip(b"\x00"))
    if end == 0 or padded[end - 1] != 0x80:
        raise ContentError("message content is not padded")
    return padded[: end - 1]


def encode_content(content: Content) -> bytes:
    fields: dict[str, object] = {
        "v": VERSION,
        "id": content.id,
        "kind": content.kind,
        "sent_ms": content.sent_ms,
        "body": content.body,
    }
    if content.name is not None:
        fields["name"] = content.name
    packed = msgpack.packb(fields, use_bin_type=True)
    if len(packed) > MAX_CONTENT:
        raise ContentError(f"message content is larger than {MAX_CONTENT} bytes")
    return pad(packed)


def decode_content(padded: bytes) -> Content:
    try:
        fields = msgpack.unpackb(unpad(padded), raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ContentError("message content is not valid msgpack") from exc
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise ContentError("unsupported message content version")
    body, sent_ms, ident = fields.get("body"), fields.get("sent_ms"), fields.get("id")
    kind, name = fields.get("kind", "text"), fields.get("name")
    if (
        not isinstance(body, str)
        or not isinstance(sent_ms, int)
        or not isinstance(ident, bytes)
        or len(ident) != 16
        or not isinstance(kind, str)
        or (name is not None and not isinstance(name, str))
    ):
        raise ContentError("message content has a missing or mistyped field")
    return Content(body=body, sent_ms=sent_ms, id=ident, kind=kind, name=name)
