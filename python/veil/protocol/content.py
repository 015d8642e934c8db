"""Message content, version 1: what a Veil message says, before Session Protocol encryption.

```
content = msgpack map {
    "v": 1,                       format version
    "id": bytes (16),             random; the same message received twice is shown once
    "kind": str,                  see below ("text" when absent)
    "sent_ms": int,               the sender's clock
    "body": str,                  the text ("" for kinds without one)
    "name": str,                  optional: the sender's display name
    "to": str,                    "sent", "unsend" between own devices: the other Session ID
    "ref": bytes (16),            "unsend": the id of the message taken back
    "dis": [mode, ttl_ms],        optional: disappearing ("after_send" | "after_read")
    "config": map,                "config": the account's settings (veil.client.account)
    "group": map,                 "group_invite", "group_removed": see veil.client.groups
    "sid": str,                   optional, in a community direct message: the sender's Session ID
    "att": [bytes, …],            optional, "text" and "sent": attachments, each the msgpack of its
                                  manifest (veil.protocol.attachments), at most 32
}
padded  = content ‖ 0x80 ‖ 0x00 … 0x00     (ISO/IEC 7816-4), to the next size bucket
buckets = 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536 bytes (then multiples of 64 KiB)
```

Kinds: ``text`` (a message), ``accept`` (the sender accepted the recipient's message request),
``unsend`` (take back message ``ref``), and, only between the devices of one account (the sender is
the recipient), ``sent`` (a transcript of a message this account sent to ``to``) and ``config``.
Closed groups add ``group_invite`` (an admin invites the recipient, or makes it an admin),
``group_removed`` (an admin tells a member it was removed), both 1:1, and ``leave`` (a member
leaves; inside a group message). A group message's content is this same format.

A ``text`` may carry attachments (files, images, audio, voice messages) with or without text: the
manifest of each (its key among it) travels inside the sealed content, so only the recipients can
find, fetch and open its chunks. A malformed manifest makes the whole content malformed.

Padding to a few sizes means a message's length tells an observer (a node holding it) little
about what it says. Unknown fields are ignored, so later versions can add some; a newer ``v`` is
refused with :class:`ContentError`, and so is a kind this version does not know.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import msgpack

from veil.errors import InvalidInputError
from veil.protocol.attachments import (
    FORMAT_MAX_SIZE,
    AttachmentError,
    Manifest,
    decode_manifest,
    encode_manifest,
)

__all__ = [
    "BUCKETS",
    "DISAPPEAR_MODES",
    "GROUP_KINDS",
    "KINDS",
    "MAX_ATTACHMENTS",
    "Content",
    "ContentError",
    "decode_content",
    "encode_content",
    "pad",
    "unpad",
]

VERSION = 1
BUCKETS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
MAX_CONTENT = 60 * 1024  # leaves room for the Session Protocol's 144 bytes in a 76,800-byte store
KINDS = frozenset(
    {"text", "accept", "unsend", "sent", "config", "group_invite", "group_removed", "leave"}
)
GROUP_KINDS = frozenset({"group_invite", "group_removed"})
"""Kinds whose ``group`` field says which group and what the admin gives."""
DISAPPEAR_MODES = frozenset({"after_send", "after_read"})
MAX_ATTACHMENTS = 32
"""Most attachments one message carries (as Session allows)."""


class ContentError(InvalidInputError):
    """Bytes that are not valid message content (after decryption)."""


@dataclass(frozen=True, slots=True)
class Content:
    body: str
    sent_ms: int
    id: bytes
    kind: str = "text"
    name: str | None = None
    to: str | None = None
    ref: bytes | None = None
    disappear: tuple[str, int] | None = None
    config: dict[str, Any] | None = None
    group: dict[str, Any] | None = None
    sid: str | None = None
    attachments: tuple[Manifest, ...] = ()

    @classmethod
    def text(
        cls,
        body: str,
        sent_ms: int,
        name: str | None = None,
        disappear: tuple[str, int] | None = None,
        attachments: tuple[Manifest, ...] = (),
    ) -> Content:
        if len(attachments) > MAX_ATTACHMENTS:
            raise ContentError(f"a message carries at most {MAX_ATTACHMENTS} attachments")
        return cls(
            body=body,
            sent_ms=sent_ms,
            id=secrets.token_bytes(16),
            name=name,
            disappear=disappear,
            attachments=attachments,
        )

    @classmethod
    def control(cls, kind: str, sent_ms: int, **fields: Any) -> Content:
        """A message without text: ``accept``, ``unsend``, ``config``."""
        return cls(body="", sent_ms=sent_ms, id=secrets.token_bytes(16), kind=kind, **fields)


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
    optional = {
        "name": content.name,
        "to": content.to,
        "ref": content.ref,
        "dis": list(content.disappear) if content.disappear else None,
        "config": content.config,
        "group": content.group,
        "sid": content.sid,
        "att": [encode_manifest(m) for m in content.attachments] or None,
    }
    fields.update((k, v) for k, v in optional.items() if v is not None)
    packed = msgpack.packb(fields, use_bin_type=True)
    if len(packed) > MAX_CONTENT:
        raise ContentError(f"message content is larger than {MAX_CONTENT} bytes")
    return pad(packed)


def _optional(fields: dict[str, Any], key: str, kind: type) -> Any:
    value = fields.get(key)
    if value is not None and not isinstance(value, kind):
        raise ContentError(f"message content field {key!r} is mistyped")
    return value


def _disappear(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and value[0] in DISAPPEAR_MODES
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and value[1] > 0
    ):
        return (value[0], value[1])
    raise ContentError("message content field 'dis' is malformed")


def decode_content(padded: bytes) -> Content:
    try:
        fields = msgpack.unpackb(unpad(padded), raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ContentError("message content is not valid msgpack") from exc
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise ContentError("unsupported message content version")
    body, sent_ms, ident = fields.get("body"), fields.get("sent_ms"), fields.get("id")
    kind = fields.get("kind", "text")
    if (
        not isinstance(body, str)
        or not isinstance(sent_ms, int)
        or not isinstance(ident, bytes)
        or len(ident) != 16
        or not isinstance(kind, str)
    ):
        raise ContentError("message content has a missing or mistyped field")
    if kind not in KINDS:
        raise ContentError("unknown message content kind")
    ref = _optional(fields, "ref", bytes)
    if ref is not None and len(ref) != 16:
        raise ContentError("message content field 'ref' is malformed")
    if kind == "unsend" and ref is None:
        raise ContentError("an unsend names no message")
    to = _optional(fields, "to", str)
    if kind == "sent" and to is None:
        raise ContentError("a sent transcript names no recipient")
    config = _optional(fields, "config", dict)
    if kind == "config" and config is None:
        raise ContentError("a config message holds no settings")
    group = _optional(fields, "group", dict)
    if kind in GROUP_KINDS and group is None:
        raise ContentError("a group invitation or notice names no group")
    return Content(
        body=body,
        sent_ms=sent_ms,
        id=ident,
        kind=kind,
        name=_optional(fields, "name", str),
        to=to,
        ref=ref,
        disappear=_disappear(fields.get("dis")),
        config=config,
        group=group,
        sid=_optional(fields, "sid", str),
        attachments=_attachments(fields.get("att"), kind),
    )


def _attachments(value: object, kind: str) -> tuple[Manifest, ...]:
    if value is None:
        return ()
    if (
        kind not in ("text", "sent")
        or not isinstance(value, list)
        or not 0 < len(value) <= MAX_ATTACHMENTS
    ):
        raise ContentError("message content field 'att' is malformed")
    try:
        # Any size the format describes: whether to fetch one is the reader's choice.
        return tuple(decode_manifest(raw, max_size=FORMAT_MAX_SIZE) for raw in value)
    except AttachmentError as exc:
        raise ContentError(f"an attachment of the message is malformed: {exc}") from None
