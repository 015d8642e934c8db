"""Attachment formats (``veil.protocol.attachments``): round trips, padding buckets, tampering,
hostile manifests and names, an independent PyNaCl check of the chunk format, and the worked
example of ``docs/protocol.md``, "Attachments (formats)"."""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
import unicodedata
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings

from veil.protocol.attachments import (
    ATTACHMENT_PREFIX,
    CHUNK_SIZE,
    MAX_ATTACHMENT_SIZE,
    NS_ATTACHMENTS,
    STORED_OVERHEAD,
    AttachmentError,
    Manifest,
    SealedChunk,
    chunk_layout,
    decode_manifest,
    encode_manifest,
    open_attachment,
    open_chunk,
    open_chunks,
    safe_file_name,
    seal_attachment,
    seal_chunks,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
BUCKET_COUNTS = (1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30, 38, 48, 60, 75, 94, 118, 148, 185)


def _stored(chunks: list[SealedChunk]) -> dict[int, bytes]:
    return {c.index: c.data for c in chunks}


def _sealed(size: int) -> tuple[Manifest, list[SealedChunk], bytes]:
    data = secrets.token_bytes(size)
    manifest, chunks = seal_attachment(data, "f.bin", "application/octet-stream")
    return manifest, chunks, data


# --- round trips and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 1023, 1024, 1025, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 7]
)
def test_round_trip(size: int) -> None:
    manifest, chunks, data = _sealed(size)
    assert open_attachment(manifest, _stored(chunks)) == data
    assert b"".join(open_chunks(manifest, (c.data for c in chunks))) == data
    assert decode_manifest(encode_manifest(manifest)) == manifest
    assert [c.index for c in chunks] == list(range(manifest.chunks))
    assert all(len(c.data) == manifest.chunk_size + STORED_OVERHEAD for c in chunks)
    assert all(len(c.data) <= 76_800 for c in chunks)


def test_round_trip_10_mib_streaming() -> None:
    data = secrets.token_bytes(MAX_ATTACHMENT_SIZE)
    manifest, chunks = seal_attachment(data, "big.bin", "application/octet-stream")
    assert manifest.chunks == 185
    assert manifest.stored_size == 185 * (CHUNK_SIZE + 17)
    assert open_attachment(manifest, _stored(chunks)) == data
    first = next(seal_chunks(manifest, memoryview(data)))
    assert first.data == chunks[0].data


def test_too_large_is_refused() -> None:
    with pytest.raises(AttachmentError):
        seal_attachment(bytes(1025), "a", "text/plain", max_size=1024)
    manifest, _ = seal_attachment(bytes(2000), "a", "text/plain")
    with pytest.raises(AttachmentError):
        decode_manifest(encode_manifest(manifest), max_size=1999)


def test_buckets() -> None:
    assert chunk_layout(0) == (1, 1024)
    assert chunk_layout(1000) == (1, 1024)
    assert chunk_layout(1025) == (1, 2048)
    assert chunk_layout(CHUNK_SIZE) == (1, CHUNK_SIZE)
    assert chunk_layout(CHUNK_SIZE + 1) == (2, CHUNK_SIZE)
    assert chunk_layout(100_000) == (2, CHUNK_SIZE)
    assert chunk_layout(10**6) == (19, CHUNK_SIZE)
    assert chunk_layout(10**7) == (185, CHUNK_SIZE)
    sizes = [0, 1, 999, 4097, 65_535, 65_537, 200_000, 10**6, 3 * 10**6, 10**7, 10 * 2**20]
    for size in sizes:
        chunks, chunk_size = chunk_layout(size)
        assert chunks * chunk_size >= size
        if chunks == 1:
            assert chunk_size in {1024 << k for k in range(7)}
        else:
            assert chunk_size == CHUNK_SIZE
            assert chunks in BUCKET_COUNTS
        manifest, sealed = seal_attachment(bytes(size), "x", "a/b")
        assert sum(len(c.data) for c in sealed) == manifest.stored_size


def test_chunks_are_ciphertext_and_attachments_unlinked() -> None:
    data = b"attack at dawn " * 10_000
    m1, c1 = seal_attachment(data, "a.txt", "text/plain")
    m2, c2 = seal_attachment(data, "a.txt", "text/plain")
    for chunk in c1:
        assert b"attack at dawn" not in chunk.data
        assert chunk.account[0] == ATTACHMENT_PREFIX
        assert chunk.namespace == NS_ATTACHMENTS
        assert chunk.account == m1.account(chunk.index)
    assert m1.id != m2.id
    assert m1.key != m2.key
    accounts = {c.account for c in c1 + c2}
    assert len(accounts) == len(c1) + len(c2)
    assert not {c.data for c in c1} & {c.data for c in c2}
    text = repr(m1) + repr(c1[0])
    assert m1.key.hex() not in text
    assert repr(m1.key)[2:20] not in text
    assert "seed" not in repr(c1[0])


# --- tampering -----------------------------------------------------------------------------------


def _opens(manifest: Manifest, chunks: dict[int, bytes]) -> None:
    with pytest.raises(AttachmentError, match=r"^attachment does not open$"):
        open_attachment(manifest, chunks)


def test_every_flipped_bit_position_fails() -> None:
    manifest, chunks, _ = _sealed(2 * CHUNK_SIZE + 5)
    stored = _stored(chunks)
    for index in stored:
        for position in (0, 1, 100, CHUNK_SIZE // 2, len(stored[index]) - 1):
            changed = bytearray(stored[index])
            changed[position] ^= 0x01
            _opens(manifest, {**stored, index: bytes(changed)})


def test_reorder_replace_truncate_extend_fail() -> None:
    manifest, chunks, _ = _sealed(3 * CHUNK_SIZE)  # 3 chunks: none of them padding only
    stored = _stored(chunks)
    _opens(manifest, {**stored, 0: stored[1], 1: stored[0]})
    _opens(manifest, {**stored, 2: stored[1]})
    other, other_chunks, _ = _sealed(3 * CHUNK_SIZE)
    _opens(manifest, {**stored, 1: other_chunks[1].data})
    _opens(manifest, {0: stored[0], 1: stored[1]})
    _opens(manifest, {**stored, 3: stored[2]})
    _opens(manifest, {**stored, -1: stored[2]})
    with pytest.raises(AttachmentError):
        list(open_chunks(manifest, [stored[0], stored[1]]))
    with pytest.raises(AttachmentError):
        list(open_chunks(manifest, [*stored.values(), stored[2]]))
    with pytest.raises(AttachmentError):
        open_chunk(manifest, 3, stored[2])
    with pytest.raises(AttachmentError):
        open_chunk(manifest, True, stored[1])
    with pytest.raises(AttachmentError):
        open_chunk(manifest, 0, stored[0][:-1])
    with pytest.raises(AttachmentError):
        open_chunk(manifest, 0, b"\x02" + stored[0][1:])
    assert open_chunk(other, 1, other_chunks[1].data)


def _variant(manifest: Manifest, **changes: Any) -> Manifest:
    fields = {name: getattr(manifest, name) for name in Manifest.__dataclass_fields__}
    fields.update(changes)
    return _unchecked(fields)


def _unchecked(fields: dict[str, Any]) -> Manifest:
    """A manifest built around the checks (as a buggy or hostile caller could), to show opening
    still refuses it."""
    manifest = object.__new__(Manifest)
    for name, value in fields.items():
        object.__setattr__(manifest, name, value)
    return manifest


def test_wrong_manifest_fails_to_open() -> None:
    manifest, chunks, data = _sealed(5 * CHUNK_SIZE + 100)  # 5 chunks of data and 2 of padding
    stored = _stored(chunks)
    _opens(_variant(manifest, digest=hashlib.blake2b(b"x", digest_size=32).digest()), stored)
    _opens(_variant(manifest, size=manifest.size - 1), stored)
    _opens(_variant(manifest, size=manifest.size + 1), stored)
    _opens(_variant(manifest, chunks=6), {i: stored[i] for i in range(6)})
    _opens(_variant(manifest, chunks=8), {**stored, 7: stored[6]})
    with pytest.raises(AttachmentError):
        Manifest(**{n: getattr(manifest, n) for n in Manifest.__dataclass_fields__} | {"size": 1})
    assert open_attachment(manifest, stored) == data


def test_nonzero_padding_fails() -> None:
    """A sender that puts data in the padding (sealed validly) is caught by the opener."""
    manifest, _, data = _sealed(100)
    padded = data + b"\x01" + bytes(manifest.chunk_size - 101)
    nonce = struct.pack(">Q16x", 0)
    aad = b"veil-attach-v1" + struct.pack(">32sQIIB", manifest.id, manifest.size, 0, 1, 1)
    sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, aad, nonce, manifest.key)
    _opens(manifest, {0: b"\x01" + sealed})


# --- hostile manifests ---------------------------------------------------------------------------


def _fields(manifest: Manifest) -> dict[str, Any]:
    fields: dict[str, Any] = msgpack.unpackb(encode_manifest(manifest), raw=False)
    return fields


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"v": None},
        {"key": b"k" * 31},
        {"key": "k" * 32},
        {"id": bytes(32)},
        {"size": -1},
        {"size": True},
        {"size": "5"},
        {"size": 2**40},
        {"size": 10 * 2**20 + 1},
        {"chunks": 0},
        {"chunks": 2},
        {"chunks": -1},
        {"chunks": 10**9},
        {"csize": 0},
        {"csize": 2048},
        {"csize": None},
        {"digest": b"d"},
        {"name": 7},
        {"name": None},
        {"mime": "text"},
        {"mime": "text/plain; charset=utf-8"},
        {"mime": "Text/Plain"},
        {"mime": "text/plain\n"},
        {"mime": "/plain"},
        {"mime": ["text/plain"]},
        {"kind": "video"},
        {"kind": ["file"]},
        {"kind": {"a": 1}},
        {"dur": 1000},
        {"wave": b"\x01"},
    ],
)
def test_hostile_manifest_fields(change: dict[str, Any]) -> None:
    manifest, _ = seal_attachment(b"hi", "a.txt", "text/plain")
    fields = _fields(manifest) | change
    with pytest.raises(AttachmentError):
        decode_manifest(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "change",
    [
        {"dur": 0},
        {"dur": -5},
        {"dur": 25 * 3600 * 1000},
        {"dur": 1.5},
        {"wave": b""},
        {"wave": bytes(257)},
        {"wave": [1, 2, 300]},
        {"wave": [1, 2, 3]},
        {"dur": None},
    ],
)
def test_hostile_voice_fields(change: dict[str, Any]) -> None:
    manifest, _ = seal_attachment(
        b"ogg", "v.ogg", "audio/ogg", "voice", duration_ms=1500, waveform=[0, 128, 255]
    )
    assert manifest.waveform == bytes([0, 128, 255])
    assert decode_manifest(encode_manifest(manifest)) == manifest
    fields = _fields(manifest) | change
    with pytest.raises(AttachmentError):
        decode_manifest(msgpack.packb(fields, use_bin_type=True))


def test_hostile_manifest_encodings() -> None:
    for data in [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({1: 2}), b"\x91" * 5000]:
        with pytest.raises(AttachmentError):
            decode_manifest(data)
    with pytest.raises(AttachmentError):
        decode_manifest("text")
    with pytest.raises(AttachmentError):
        seal_attachment(b"x", "a", "audio/ogg", "voice", duration_ms=10)
    with pytest.raises(AttachmentError):
        seal_attachment(b"x", "a", "audio/ogg", "voice", duration_ms=10, waveform=[256])
    with pytest.raises(AttachmentError):
        seal_attachment(b"x", "a", "image/png", "image", duration_ms=10)
    with pytest.raises(AttachmentError):
        seal_attachment(b"x", "a", "no mime")


def test_decoded_name_is_cleaned() -> None:
    manifest, _ = seal_attachment(b"hi", "a.txt", "text/plain")
    fields = _fields(manifest) | {"name": "../../.ssh/authorized_keys"}
    assert decode_manifest(msgpack.packb(fields, use_bin_type=True)).name == "authorized_keys"


# --- file names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\Windows\\system32\\cmd.exe", "cmd.exe"),
        ("..", "attachment"),
        ("", "attachment"),
        ("   ", "attachment"),
        ("a\x00b.txt", "ab.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("Com1.log", "_Com1.log"),
        ("LPT9", "_LPT9"),
        ("console.txt", "console.txt"),
        ('a<b>c:"d|e?f*.txt', "a_b_c__d_e_f_.txt"),
        (".bashrc", "bashrc"),
        ("trailing. . ", "trailing"),
        ("x" * 300 + ".jpeg", "x" * 250 + ".jpeg"),
        ("é" * 200, "é" * 127),
    ],
)
def test_safe_file_name_examples(name: str, expected: str) -> None:
    assert safe_file_name(name) == expected


def _check_safe(cleaned: str) -> None:
    assert cleaned
    assert safe_file_name(cleaned) == cleaned
    assert "/" not in cleaned
    assert "\\" not in cleaned
    assert "\x00" not in cleaned
    assert cleaned not in {".", ".."}
    assert len(cleaned.encode()) <= 255
    assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in cleaned)
    assert not re.search(r'[<>:"|?*]', cleaned)
    assert cleaned == cleaned.strip().strip(".")
    stem = cleaned.split(".", 1)[0].rstrip().upper()
    assert not re.fullmatch(r"CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|(COM|LPT)[0-9¹²³]", stem)


_PIECES = [
    *["a", "Z", ".", " ", "/", "\\", "\x00", "\n", "\u202e", "\u200b", "é", "😀", ":"],
    *["con", "NUL", "com1", "lpt²", "e\u0301", "\ud800", "\u2028", "\x7f", "x" * 60, "ß" * 40],
]


@given(st.lists(st.sampled_from(_PIECES), max_size=60).map("".join))
@settings(max_examples=400, deadline=None)
def test_safe_file_name_property(name: str) -> None:
    _check_safe(safe_file_name(name))


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_safe_file_name_any_text(name: str) -> None:
    _check_safe(safe_file_name(name))


# --- independent check, and the worked example ---------------------------------------------------


def _open_independently(key: bytes, size: int, stored: list[bytes]) -> bytes:
    """Open an attachment from the module docstring's formulas alone, with PyNaCl and hashlib."""
    ident = hashlib.blake2b(key, digest_size=32, key=b"veil-attach-id").digest()
    count = len(stored)
    padded = b""
    for i, chunk in enumerate(stored):
        assert chunk[0] == 0x01
        nonce = i.to_bytes(8, "big") + bytes(16)
        aad = (
            b"veil-attach-v1"
            + ident
            + size.to_bytes(8, "big")
            + i.to_bytes(4, "big")
            + count.to_bytes(4, "big")
            + bytes([i == count - 1])
        )
        padded += bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(chunk[1:], aad, nonce, key)
    assert padded[size:] == bytes(len(padded) - size)
    return padded[:size]


def test_independent_pynacl_opening() -> None:
    manifest, chunks, data = _sealed(3 * CHUNK_SIZE + 11)
    assert _open_independently(manifest.key, manifest.size, [c.data for c in chunks]) == data
    assert hashlib.blake2b(data, digest_size=32).digest() == manifest.digest
    for chunk in chunks:
        seed = hashlib.blake2b(
            b"veil-attach-seed" + chunk.index.to_bytes(4, "big"), digest_size=32, key=manifest.key
        ).digest()
        public, _ = bindings.crypto_sign_seed_keypair(seed)
        assert chunk.seed == seed
        assert chunk.account == b"\x0a" + public


def _doc_example() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Attachments (formats)", 1)[1]
    block = re.findall(r"```\n(.*?)```", section.split("### Example", 1)[1], flags=re.S)[0]
    values: dict[str, str] = {}
    label = ""
    for line in block.splitlines():
        if line.startswith(" "):
            values[label] += line.strip()
            continue
        label, _, rest = line.partition("  ")
        label = label.strip()
        values[label] = rest.strip()
    return values


def test_doc_example() -> None:
    v = _doc_example()
    key = bytes.fromhex(v["K"])
    data = v["plaintext"].strip('"').encode()
    manifest, chunks = seal_attachment(data, "hello.txt", "text/plain", key=key)
    assert manifest.id.hex() == v["id"]
    assert chunks[0].seed.hex() == v["seed_0"]
    assert chunks[0].account.hex() == v["account_0"]
    assert (b"veil-attach-v1" + struct.pack(">32sQIIB", manifest.id, 5, 0, 1, 1)).hex() == v[
        "aad_0"
    ]
    stored = chunks[0].data
    assert len(stored) == int(v["stored_0 size"].split()[0])
    assert stored[:17].hex() == v["stored_0 head"]
    assert stored[-16:].hex() == v["stored_0 tag"]
    assert hashlib.blake2b(stored, digest_size=32).hexdigest() == v["BLAKE2b(stored_0)"]
    assert manifest.digest.hex() == v["digest"]
    assert encode_manifest(manifest).hex() == v["manifest"]
    assert _open_independently(key, 5, [stored]) == data
