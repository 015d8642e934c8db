"""Attachments stored on the service nodes: the formats, byte by byte (``docs/protocol.md``,
"Attachments (formats)"). No network code: what to store where, and how to open what comes back.

An attachment (a file, an image, a voice message; at most :data:`MAX_ATTACHMENT_SIZE` by default)
is sealed with a fresh random 32-byte key ``K``, split into chunks that each fit one stored message
(a node takes at most 76,800 bytes of data), and each chunk is stored in the swarm of its own
account, derived from ``K``, so that one attachment's load spreads over many swarms. The message
that carries the attachment holds its :class:`Manifest` (``K`` among it); whoever holds the
manifest can fetch, open, extend and delete the chunks, and nobody else can even find them.

**Key and id.** ::

    K        = 32 random bytes, fresh for every attachment (never reused)
    id       = BLAKE2b-256(key = "veil-attach-id", K)

The id names the attachment for the clients that hold it (a local cache, a forwarded attachment
keeps its id) and is bound into every chunk. It is a one-way function of ``K`` and no chunk's
account or content is computed from it: it never goes to a node, and a node that learned it could
still not find, link or open any chunk. Nothing about a chunk lets a node link it to the message
that names it, or to the other chunks of the same attachment (except by timing of the upload, which
the transport must blur). What the id reveals, to those who hold manifests, is equality: two
messages with one id carry the same attachment (one was forwarded) — they hold ``K`` anyway.

**Padding.** The plaintext of ``size`` bytes is followed by zeros up to ``chunks * chunk_size``::

    size ≤ 65,536:   1 chunk of the smallest of 1, 2, 4, … 64 KiB that holds it
    size > 65,536:   chunk_size 65,536; chunks = the smallest of b₀ = 1, bₖ₊₁ = bₖ + ⌈bₖ / 4⌉
                     (1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30, 38, 48, 60, 75, 94, 118, 148, 185, …)
                     that is ≥ ⌈size / 65,536⌉

so what is stored tells only a bucket: one of 7 sizes up to 64 KiB, then whole chunks in steps of at
most 25 % (past 4 chunks). Overhead of the padding (stored bytes add 17 per chunk): 1 KB (1,000) →
1,024 (+2.4 %); 100 KB → 2 chunks, 131,072 (+31 %); 1 MB (10⁶) → 19 chunks, 1,245,184 (+24.5 %);
10 MB (10⁷) → 185 chunks, 12,124,160 (+21 %); 10 MiB → 185 chunks (+15.6 %). The worst case is
65,537 bytes (2 chunks, +100 %); past 5 chunks it is at most +40 %, past 12 at most +27 %.

**Chunks.** Chunk ``i`` (0 ≤ i < chunks) holds plaintext bytes ``i * chunk_size`` to
``(i + 1) * chunk_size`` of the padded attachment::

    stored_i = 0x01 ‖ XChaCha20-Poly1305(K, nonce_i, aad_i, plaintext of chunk i)
    nonce_i  = i (8, big-endian) ‖ 0¹⁶
    aad_i    = "veil-attach-v1" ‖ id (32) ‖ size (8) ‖ i (4) ‖ chunks (4) ‖ last (1)
    last     = 1 for i = chunks - 1, else 0          (integers big-endian)

A stored chunk is ``chunk_size + 17`` bytes (at most 65,553: 11 KB under a node's limit). ``K`` is
used for one attachment only, so the counter nonce is unique; XChaCha20 derives each chunk's key
from ``K`` and the nonce's first 16 bytes (HChaCha20), so each chunk has its own key, as in
libsodium's secretstream. Binding ``id``, ``size``, ``i``, ``chunks`` and ``last`` makes a chunk
that was moved to another index (reordered, duplicated), to another attachment, or offered as the
last of a shortened attachment (truncation) fail authentication. The opener then checks that the
padding is zeros and that the whole plaintext has the manifest's digest, so it never returns data
other than what the sender sealed.

**Placement.** Chunk ``i`` is stored in namespace :data:`NS_ATTACHMENTS` (17: none of Session's,
and not a public inbox or outbox, so every store there is signed) of the account ::

    seed_i    = BLAKE2b-256(key = K, "veil-attach-seed" ‖ i (4))
    account_i = 0x0a ‖ Ed25519 public key of seed_i

``0x0a`` (:data:`ATTACHMENT_PREFIX`) is a prefix no account uses (Session has 00, 03, 05, 07, 15,
25). As for every prefix but 05, the account's 32 bytes are an Ed25519 key that signs for itself,
so the storage RPC's store, expire and delete of chunk ``i`` are signed with ``seed_i``: the
uploader and whoever holds the manifest (the recipients) can store, extend and delete it, nobody
else can. The account is a keyed function of ``K`` (not of the id): without ``K`` the accounts of
one attachment look unrelated. Its swarm is the swarm of its 32 bytes, as for any account. The
nodes' rules for namespace 17 (quota, TTL) are not part of this format.

**Manifest** — what the message carrying the attachment holds (inside its content, sealed as the
message is)::

    manifest = msgpack map {
        "v": 1,
        "key": bytes (32),  "id": bytes (32)        K, and its id (checked against K)
        "size": int,                                plaintext bytes, 0 ≤ size ≤ max (10 MiB default)
        "chunks": int, "csize": int                 chunk count and chunk size: exactly as above
        "digest": bytes (32)                        BLAKE2b-256 of the whole plaintext (unkeyed)
        "name": str,                                file name, cleaned by safe_file_name
        "mime": str,                                type "/" subtype (RFC 6838 names, lower case)
        "kind": "file" | "image" | "audio" | "voice",
        "dur": int,                                 voice (required), audio (optional): 1 ms … 24 h
        "wave": bytes (1 … 256),                    voice (required), audio (optional): levels
    }

Unknown fields are ignored; a newer ``v``, a missing or mistyped field, an inconsistent count or
chunk size, a size over the reader's max, a bad MIME type or kind is refused. Every failure to
decode a manifest or to open a chunk or an attachment raises :class:`AttachmentError`; opening
failures all carry the same message. No key material appears in a repr or an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import struct
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from veil import _core
from veil.errors import DecryptionError, InvalidInputError

__all__ = [
    "ATTACHMENT_PREFIX",
    "CHUNK_SIZE",
    "KINDS",
    "MAX_ATTACHMENT_SIZE",
    "MAX_WAVEFORM",
    "NS_ATTACHMENTS",
    "STORED_OVERHEAD",
    "AttachmentError",
    "Manifest",
    "SealedChunk",
    "assemble",
    "attachment_id",
    "chunk_layout",
    "chunk_seed",
    "decode_manifest",
    "encode_manifest",
    "make_manifest",
    "manifest_from_text",
    "manifest_text",
    "open_attachment",
    "open_chunk",
    "open_chunks",
    "safe_file_name",
    "seal_attachment",
    "seal_chunk",
    "seal_chunks",
]

VERSION = 1
KEY_LEN = 32
CHUNK_SIZE = 65_536
"""Plaintext bytes of a chunk of an attachment over 64 KiB (smaller ones are one smaller chunk)."""
MIN_CHUNK_SIZE = 1024
STORED_OVERHEAD = 17
"""A stored chunk is its plaintext plus the version byte and the 16-byte tag."""
MAX_ATTACHMENT_SIZE = 10 * 1024 * 1024
"""Default largest attachment (plaintext bytes) a client seals or accepts."""
FORMAT_MAX_SIZE = 2**32
"""Largest size the format can describe, whatever a reader's max."""
ATTACHMENT_PREFIX = 0x0A
NS_ATTACHMENTS = 17
KINDS = ("file", "image", "audio", "voice")
MAX_WAVEFORM = 256
MAX_DURATION_MS = 24 * 3600 * 1000
MAX_NAME_BYTES = 255
DEFAULT_NAME = "attachment"

_CONTEXT = b"veil-attach-v1"
_ID_KEY = b"veil-attach-id"
_SEED_CONTEXT = b"veil-attach-seed"
_AAD = struct.Struct(">32sQIIB")
_NONCE = struct.Struct(">Q16x")
_INDEX = struct.Struct(">I")
_OPEN_FAILED = "attachment does not open"
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", re.ASCII)
_STRIP = re.compile(r"^[\s.]+|[\s.]+$")
_WINDOWS_FORBIDDEN = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{base}{n}" for base in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)


class AttachmentError(InvalidInputError):
    """A manifest that is malformed, or a chunk or attachment that does not open (one error for
    every cause of an opening failure, with one message)."""


# --- names and ids -------------------------------------------------------------------------------


def _clean_once(name: str) -> str:
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in _DROPPED_CATEGORIES)
    name = _STRIP.sub("", name.translate(_WINDOWS_FORBIDDEN))
    if name.split(".", 1)[0].rstrip().upper() in _WINDOWS_RESERVED:
        name = "_" + name
    encoded = name.encode()
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext_bytes = (dot + ext).encode()
        if not stem or len(ext_bytes) > 32:
            stem, ext_bytes = name, b""
        room = MAX_NAME_BYTES - len(ext_bytes)
        name = stem.encode()[:room].decode(errors="ignore") + ext_bytes.decode()
        name = _STRIP.sub("", name)
    return name


def safe_file_name(name: str) -> str:
    """A file name safe to create in any directory on any common system: the last component of
    ``name`` (``/`` and ``\\`` both separate), NFC, without control, format or unassigned
    characters, with ``<>:"|?*`` replaced by ``_``, without leading or trailing dots and spaces,
    ``_``-prefixed if it is a reserved Windows name (``CON``, ``nul.txt``, …), at most 255 bytes of
    UTF-8 (the extension kept if short), and ``attachment`` if nothing is left. Idempotent."""
    if not isinstance(name, str):
        raise AttachmentError("a file name is a string")
    for _ in range(8):
        cleaned = _clean_once(name)
        if cleaned == name:
            break
        name = cleaned
    return name or DEFAULT_NAME


def attachment_id(key: bytes) -> bytes:
    """``BLAKE2b-256(key = "veil-attach-id", K)``."""
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise AttachmentError("an attachment key is 32 bytes")
    return _core.blake2b(key, 32, _ID_KEY)


def chunk_seed(key: bytes, index: int) -> bytes:
    """The Ed25519 seed of chunk ``index``'s account: ``BLAKE2b-256(key = K, "veil-attach-seed" ‖
    index (4))``."""
    return _core.blake2b(_SEED_CONTEXT + _INDEX.pack(index), 32, key)


def _bucket_chunks(needed: int) -> int:
    count = 1
    while count < needed:
        count += -(-count // 4)
    return count


def chunk_layout(size: int) -> tuple[int, int]:
    """``(chunks, chunk_size)`` of an attachment of ``size`` plaintext bytes (its padding)."""
    if size <= CHUNK_SIZE:
        chunk_size = MIN_CHUNK_SIZE
        while chunk_size < size:
            chunk_size *= 2
        return 1, chunk_size
    return _bucket_chunks(-(-size // CHUNK_SIZE)), CHUNK_SIZE


# --- the manifest --------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a message says of an attachment: all it takes to fetch, check and open it. Built by
    :func:`seal_attachment`, :func:`make_manifest` or :func:`decode_manifest`; every instance is
    valid (checked on construction)."""

    key: bytes = field(repr=False)
    id: bytes
    size: int
    chunks: int
    chunk_size: int
    digest: bytes = field(repr=False)
    name: str
    mime: str
    kind: str
    duration_ms: int | None = None
    waveform: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_LEN:
            raise AttachmentError("an attachment key is 32 bytes")
        if self.id != attachment_id(self.key):
            raise AttachmentError("an attachment's id is not its key's")
        if not _is_int(self.size) or not 0 <= self.size <= FORMAT_MAX_SIZE:
            raise AttachmentError("an attachment's size is out of range")
        if (self.chunks, self.chunk_size) != chunk_layout(self.size):
            raise AttachmentError("an attachment's chunk count or chunk size is wrong")
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise AttachmentError("an attachment's digest is 32 bytes")
        if not isinstance(self.name, str) or safe_file_name(self.name) != self.name:
            raise AttachmentError("an attachment's file name is not a safe name")
        if not isinstance(self.mime, str) or _MIME.fullmatch(self.mime) is None:
            raise AttachmentError("an attachment's MIME type is malformed")
        self._check_kind()

    def _check_kind(self) -> None:
        if self.kind not in KINDS:
            raise AttachmentError("unknown attachment kind")
        duration, waveform = self.duration_ms, self.waveform
        if self.kind not in ("audio", "voice") and (duration is not None or waveform is not None):
            raise AttachmentError("only audio has a duration and a waveform")
        if self.kind == "voice" and (duration is None or waveform is None):
            raise AttachmentError("a voice message has a duration and a waveform")
        if duration is not None and (not _is_int(duration) or not 0 < duration <= MAX_DURATION_MS):
            raise AttachmentError("an attachment's duration is out of range")
        if waveform is not None and (
            not isinstance(waveform, bytes) or not 0 < len(waveform) <= MAX_WAVEFORM
        ):
            raise AttachmentError("an attachment's waveform is malformed")

    @property
    def stored_size(self) -> int:
        """Bytes stored on the nodes, all chunks together."""
        return self.chunks * (self.chunk_size + STORED_OVERHEAD)

    def account(self, index: int) -> bytes:
        """The 33-byte account chunk ``index`` is stored in (``0x0a`` ‖ Ed25519 key)."""
        self._index(index)
        return bytes([ATTACHMENT_PREFIX]) + _core.ed25519_public_key(chunk_seed(self.key, index))

    def _index(self, index: object) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.chunks:
            raise AttachmentError(_OPEN_FAILED)
        return index


def _waveform(levels: bytes | Iterable[int] | None) -> bytes | None:
    if levels is None or isinstance(levels, bytes):
        return levels
    values = list(levels)
    if not all(_is_int(v) and 0 <= v <= 255 for v in values):
        raise AttachmentError("waveform levels are 0 to 255")
    return bytes(values)


def make_manifest(
    key: bytes,
    data: bytes,
    name: str,
    mime: str,
    kind: str = "file",
    *,
    duration_ms: int | None = None,
    waveform: bytes | Iterable[int] | None = None,
    max_size: int = MAX_ATTACHMENT_SIZE,
) -> Manifest:
    """The manifest of ``data`` sealed with ``key`` (the name cleaned, the MIME type lower-cased;
    an empty one is ``application/octet-stream``)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AttachmentError("attachment data is bytes")
    size = len(data)
    if size > min(max_size, FORMAT_MAX_SIZE):
        raise AttachmentError(f"an attachment is at most {max_size} bytes")
    chunks, chunk_size = chunk_layout(size)
    return Manifest(
        key=key,
        id=attachment_id(key),
        size=size,
        chunks=chunks,
        chunk_size=chunk_size,
        digest=hashlib.blake2b(data, digest_size=32).digest(),
        name=safe_file_name(name),
        mime=(mime or "application/octet-stream").lower() if isinstance(mime, str) else mime,
        kind=kind,
        duration_ms=duration_ms,
        waveform=_waveform(waveform),
    )


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest as msgpack (see the module's docstring)."""
    fields: dict[str, object] = {
        "v": VERSION,
        "key": manifest.key,
        "id": manifest.id,
        "size": manifest.size,
        "chunks": manifest.chunks,
        "csize": manifest.chunk_size,
        "digest": manifest.digest,
        "name": manifest.name,
        "mime": manifest.mime,
        "kind": manifest.kind,
    }
    if manifest.duration_ms is not None:
        fields["dur"] = manifest.duration_ms
    if manifest.waveform is not None:
        fields["wave"] = manifest.waveform
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def decode_manifest(data: object, *, max_size: int = MAX_ATTACHMENT_SIZE) -> Manifest:
    """A manifest from its msgpack; :class:`AttachmentError` for anything malformed or larger
    than ``max_size``. The file name is cleaned (a sender's hostile name becomes a safe one)."""
    if not isinstance(data, bytes):
        raise AttachmentError("a manifest is bytes")
    try:
        fields: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise AttachmentError("a manifest is not valid msgpack") from exc
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise AttachmentError("unsupported manifest version")
    size, name = fields.get("size"), fields.get("name")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= max_size:
        raise AttachmentError("an attachment's size is out of range")
    if not isinstance(name, str):
        raise AttachmentError("an attachment's file name is a string")
    try:
        return Manifest(
            key=fields.get("key"),  # type: ignore[arg-type]
            id=fields.get("id"),  # type: ignore[arg-type]
            size=size,
            chunks=fields.get("chunks"),  # type: ignore[arg-type]
            chunk_size=fields.get("csize"),  # type: ignore[arg-type]
            digest=fields.get("digest"),  # type: ignore[arg-type]
            name=safe_file_name(name),
            mime=fields.get("mime"),  # type: ignore[arg-type]
            kind=fields.get("kind"),  # type: ignore[arg-type]
            duration_ms=fields.get("dur"),
            waveform=fields.get("wave"),
        )
    except TypeError as exc:  # an unhashable value where a kind is looked up
        raise AttachmentError("a manifest field is mistyped") from exc


def manifest_text(manifest: Manifest) -> str:
    """A manifest as text, for a saved book or a JSON answer: base64 of its msgpack."""
    return base64.b64encode(encode_manifest(manifest)).decode("ascii")


def manifest_from_text(text: object, *, max_size: int = FORMAT_MAX_SIZE) -> Manifest:
    """The manifest :func:`manifest_text` wrote; :class:`AttachmentError` otherwise."""
    if not isinstance(text, str):
        raise AttachmentError("a saved manifest is text")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AttachmentError("a saved manifest is not base64") from None
    return decode_manifest(raw, max_size=max_size)


# --- chunks --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """One chunk to store: its index, the account (33 bytes) and namespace to store it in, the
    Ed25519 seed that signs for that account, and the bytes to store."""

    index: int
    account: bytes
    seed: bytes = field(repr=False)
    data: bytes = field(repr=False)
    namespace: int = NS_ATTACHMENTS

    @property
    def account_hex(self) -> str:
        return self.account.hex()


def _nonce_aad(manifest: Manifest, index: int) -> tuple[bytes, bytes]:
    last = 1 if index == manifest.chunks - 1 else 0
    aad = _CONTEXT + _AAD.pack(manifest.id, manifest.size, index, manifest.chunks, last)
    return _NONCE.pack(index), aad


def _chunk_plaintext(manifest: Manifest, data: bytes | memoryview, index: int) -> bytes:
    start = index * manifest.chunk_size
    piece = bytes(data[start : start + manifest.chunk_size])
    return piece + bytes(manifest.chunk_size - len(piece))


def seal_chunk(manifest: Manifest, data: bytes | memoryview, index: int) -> SealedChunk:
    """Chunk ``index`` of ``data`` (the attachment ``manifest`` describes), sealed."""
    manifest._index(index)
    nonce, aad = _nonce_aad(manifest, index)
    stored = b"\x01" + _core.xchacha20poly1305_encrypt(
        manifest.key, nonce, _chunk_plaintext(manifest, data, index), aad
    )
    seed = chunk_seed(manifest.key, index)
    account = bytes([ATTACHMENT_PREFIX]) + _core.ed25519_public_key(seed)
    return SealedChunk(index=index, account=account, seed=seed, data=stored)


def seal_chunks(manifest: Manifest, data: bytes | memoryview) -> Iterator[SealedChunk]:
    """Every chunk of ``data``, in order, one at a time (to upload as they come)."""
    if len(data) != manifest.size:
        raise AttachmentError("the data is not the attachment the manifest describes")
    for index in range(manifest.chunks):
        yield seal_chunk(manifest, data, index)


def seal_attachment(
    data: bytes,
    name: str,
    mime: str,
    kind: str = "file",
    *,
    duration_ms: int | None = None,
    waveform: bytes | Iterable[int] | None = None,
    max_size: int = MAX_ATTACHMENT_SIZE,
    key: bytes | None = None,
) -> tuple[Manifest, list[SealedChunk]]:
    """Seal ``data`` under a fresh key (``key`` only for test vectors: a key must never seal two
    attachments): its manifest and every chunk to store."""
    manifest = make_manifest(
        secrets.token_bytes(KEY_LEN) if key is None else key,
        data,
        name,
        mime,
        kind,
        duration_ms=duration_ms,
        waveform=waveform,
        max_size=max_size,
    )
    return manifest, list(seal_chunks(manifest, data))


def open_chunk(manifest: Manifest, index: int, stored: object) -> bytes:
    """The attachment bytes chunk ``index`` holds (its padding checked and removed: empty for a
    chunk of padding only); :class:`AttachmentError` for every failure."""
    manifest._index(index)
    if not isinstance(stored, bytes) or len(stored) != manifest.chunk_size + STORED_OVERHEAD:
        raise AttachmentError(_OPEN_FAILED)
    if stored[0] != VERSION:
        raise AttachmentError(_OPEN_FAILED)
    nonce, aad = _nonce_aad(manifest, index)
    try:
        plain = _core.xchacha20poly1305_decrypt(manifest.key, nonce, stored[1:], aad)
    except DecryptionError:
        raise AttachmentError(_OPEN_FAILED) from None
    keep = max(0, min(manifest.chunk_size, manifest.size - index * manifest.chunk_size))
    if plain[keep:].count(0) != len(plain) - keep:
        raise AttachmentError(_OPEN_FAILED)
    return plain[:keep]


def open_chunks(manifest: Manifest, stored: Iterable[object]) -> Iterator[bytes]:
    """The attachment's bytes, chunk by chunk, from its stored chunks in order. Each piece is
    authentic, but the whole is checked (count, digest) only when the iterator ends: use the
    output only if it ends without :class:`AttachmentError`."""
    digest = hashlib.blake2b(digest_size=32)
    index = -1
    for index, chunk in enumerate(stored):
        if index >= manifest.chunks:
            raise AttachmentError(_OPEN_FAILED)
        piece = open_chunk(manifest, index, chunk)
        digest.update(piece)
        yield piece
    if index != manifest.chunks - 1 or digest.digest() != manifest.digest:
        raise AttachmentError(_OPEN_FAILED)


def assemble(manifest: Manifest, pieces: Mapping[int, bytes]) -> bytes:
    """The attachment from the pieces :func:`open_chunk` returned for each index (each chunk
    already authenticated): every index present, none extra, the size and the digest checked;
    :class:`AttachmentError` otherwise."""
    if not isinstance(pieces, Mapping) or set(pieces) != set(range(manifest.chunks)):
        raise AttachmentError(_OPEN_FAILED)
    data = b"".join(pieces[i] for i in range(manifest.chunks))
    if len(data) != manifest.size:
        raise AttachmentError(_OPEN_FAILED)
    if hashlib.blake2b(data, digest_size=32).digest() != manifest.digest:
        raise AttachmentError(_OPEN_FAILED)
    return data


def open_attachment(manifest: Manifest, chunks: Mapping[int, object]) -> bytes:
    """The attachment from its stored chunks by index: every chunk present and opened, none extra,
    the padding, size and digest checked; :class:`AttachmentError` otherwise."""
    if not isinstance(chunks, Mapping) or set(chunks) != set(range(manifest.chunks)):
        raise AttachmentError(_OPEN_FAILED)
    data = b"".join(open_chunks(manifest, (chunks[i] for i in range(manifest.chunks))))
    if len(data) != manifest.size:
        raise AttachmentError(_OPEN_FAILED)
    return data
