"""docs/protocol.md, "Worked example: a one-shot cell": the core builds the documented bytes from
the documented inputs, and a reading of the specification written here, independently of the
core (hashlib, libsodium's AEAD through PyNaCl, XChaCha20 in plain Python), peels its first
layer to the documented header and next cell, which the core peels on to the request."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

from nacl import bindings

from veil import _core
from veil.protocol.cells import encode_content

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TITLE = "### Worked example: a one-shot cell"


def _values() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(TITLE, 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```\n(.*?)```", section, flags=re.S)[0]
    values: dict[str, str] = {}
    label = ""
    for line in block.splitlines():
        if line.startswith(" ") and label:  # a value continued on the next line
            values[label] += line.split("(")[0].strip()
            continue
        label, _, rest = line.partition("  ")
        label = label.strip()
        values[label] = rest.split("(")[0].strip()
    return values


# --- XChaCha20, written from RFC 8439 and draft-irtf-cfrg-xchacha ---------------------------------

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def _rounds(s: list[int]) -> None:
    def quarter(a: int, b: int, c: int, d: int) -> None:
        for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
            s[x] = (s[x] + s[y]) & 0xFFFFFFFF
            s[z] ^= s[x]
            s[z] = ((s[z] << r) & 0xFFFFFFFF) | (s[z] >> (32 - r))

    for _ in range(10):
        quarter(0, 4, 8, 12)
        quarter(1, 5, 9, 13)
        quarter(2, 6, 10, 14)
        quarter(3, 7, 11, 15)
        quarter(0, 5, 10, 15)
        quarter(1, 6, 11, 12)
        quarter(2, 7, 8, 13)
        quarter(3, 4, 9, 14)


def _xchacha20(key: bytes, nonce: bytes, length: int) -> bytes:
    """``length`` bytes of XChaCha20 keystream from its first block."""
    state = [*_SIGMA, *struct.unpack("<8I", key), *struct.unpack("<4I", nonce[:16])]
    _rounds(state)
    subkey = struct.pack("<8I", *state[0:4], *state[12:16])
    out = b""
    counter = 0
    while len(out) < length:
        init = [
            *_SIGMA,
            *struct.unpack("<8I", subkey),
            counter,
            0,
            *struct.unpack("<2I", nonce[16:]),
        ]
        block = init[:]
        _rounds(block)
        out += struct.pack(
            "<16I", *((a + b) & 0xFFFFFFFF for a, b in zip(block, init, strict=True))
        )
        counter += 1
    return out[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _route(v: dict[str, str]) -> list[bytes]:
    return [bindings.crypto_scalarmult_base(bytes.fromhex(v[f"node {i} secret"])) for i in range(3)]


def _build(v: dict[str, str]) -> bytes:
    cell, _ = _core.build_oneshot_cell_with(
        _route(v),
        encode_content(v["request"].encode()),
        [int(v[f"issued_s {i}"]) for i in range(3)],
        [bytes.fromhex(v[f"ephemeral {i} secret"]) for i in range(3)],
        [bytes.fromhex(v[f"nonce {i}"]) for i in range(3)],
    )
    return cell


def test_xchacha20_here_is_libsodiums() -> None:
    key, nonce = bytes(range(32)), bytes(range(24))
    sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(100), b"", nonce, key)
    assert sealed[:100] == _xchacha20(key, nonce, 164)[64:]  # the AEAD starts at block 1


def test_the_worked_example_is_what_the_core_builds() -> None:
    v = _values()
    assert [n.hex() for n in _route(v)] == [v[f"node {i} public N{i}"] for i in range(3)]
    cell = _build(v)
    assert len(cell) == int(v["cell length"])
    assert cell[:72].hex() == v["cell[0:72]"]
    assert hashlib.sha256(cell).hexdigest() == v["SHA-256(cell)"]


def test_the_first_layer_peels_as_the_specification_says() -> None:
    v = _values()
    node = bytes.fromhex(v["node 0 secret"])
    nodes = _route(v)
    ephemeral = bindings.crypto_scalarmult_base(bytes.fromhex(v["ephemeral 0 secret"]))
    assert ephemeral.hex() == v["X0"]
    nonce = bytes.fromhex(v["nonce 0"])
    shared = bindings.crypto_scalarmult(node, ephemeral)
    assert shared.hex() == v["X25519(n0, X0)"]
    secret = hashlib.blake2b(
        b"veil/onion/v2/layer" + shared + ephemeral + nodes[0], digest_size=32
    ).digest()
    assert secret.hex() == v["layer secret 0"]

    def key(label: bytes) -> bytes:
        return hashlib.blake2b(b"veil/onion/v2/" + label + secret, digest_size=32).digest()

    assert key(b"header").hex() == v["header key 0"]
    cell = _build(v)
    region = _core.CELL_ONESHOT_HEADER  # 3 · (56 + 16 + 41)
    layer_len = region // 3
    prefix, tag, sealed = cell[:56], cell[56:72], cell[72:region]
    payload = cell[region:]
    assert prefix == ephemeral + nonce
    plaintext = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        sealed + tag, b"\x02\x01" + prefix + payload, nonce, key(b"header")
    )
    header = plaintext[:41]
    assert header.hex() == v["header 0"]
    assert header[0] == 0x00  # forward
    assert header[1:33] == nodes[1]
    assert int.from_bytes(header[33:41], "big") == int(v["issued_s 0"])
    filler = _xchacha20(key(b"filler"), nonce, layer_len)
    inner = _xor(payload, _xchacha20(key(b"payload"), nonce, len(payload)))
    following = plaintext[41:] + filler + inner
    assert len(following) == len(cell)
    assert hashlib.sha256(following).hexdigest() == v["SHA-256(next cell)"]

    # The core agrees, and the rest of the path delivers the request.
    first = _core.NodeKey(node).peel_cell(_core.CELL_ONESHOT, cell)
    assert first.next == following
    second = _core.NodeKey(bytes.fromhex(v["node 1 secret"])).peel_cell(
        _core.CELL_ONESHOT, following
    )
    last = _core.NodeKey(bytes.fromhex(v["node 2 secret"])).peel_cell(
        _core.CELL_ONESHOT, second.next
    )
    assert last.next_hop is None
    assert last.content() == encode_content(v["request"].encode())
