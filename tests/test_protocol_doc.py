"""The worked example of docs/protocol.md is recomputed here, so the document cannot drift."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from nacl import bindings

from veil.crypto import peel_onion

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def _example_values() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### Worked example", 1)[1]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    values: dict[str, str] = {}
    for line in blocks[0].splitlines():
        label, _, rest = line.partition("  ")
        values[label.strip()] = rest.split("(")[0].strip()
    values["layer"] = "".join(blocks[1].split())
    return values


def test_worked_example_values_follow_from_its_inputs() -> None:
    v = _example_values()
    node_secret = bytes.fromhex(v["node secret"])
    ephemeral_secret = bytes.fromhex(v["ephemeral secret"])
    nonce = bytes.fromhex(v["nonce"])
    node_public = bindings.crypto_scalarmult_base(node_secret)
    ephemeral = bindings.crypto_scalarmult_base(ephemeral_secret)
    assert node_public.hex() == v["node public N"]
    assert ephemeral.hex() == v["ephemeral E"]
    shared = bindings.crypto_scalarmult(ephemeral_secret, node_public)
    assert shared.hex() == v["X25519(e, N)"]
    key = hashlib.blake2b(shared + ephemeral + node_public, digest_size=32).digest()
    assert key.hex() == v["layer key"]
    request = v["request"].encode()
    plaintext = b"\x01" + (0).to_bytes(2, "big") + request
    assert plaintext.hex() == v["plaintext"].replace(" ", "")
    header = b"\x01" + ephemeral
    sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)
    assert sealed.hex() == v["ciphertext ‖ tag"]
    assert (header + nonce + sealed).hex() == v["layer"]
    tag = hashlib.blake2b(b"veil/onion/v1/replay-tag", digest_size=16, key=key).digest()
    assert tag.hex() == v["replay tag"]


def test_worked_example_layer_peels_to_the_documented_request() -> None:
    v = _example_values()
    layer = peel_onion(bytes.fromhex(v["node secret"]), bytes.fromhex(v["layer"]))
    assert layer.next_hop is None
    assert layer.routing == b""
    assert layer.payload == v["request"].encode()
    assert layer.replay_tag.hex() == v["replay tag"]
    assert layer.reply_key is not None
    reply = layer.reply_key.encrypt(b"answer")
    nonce, sealed = reply[:24], reply[24:]
    key = bytes.fromhex(v["layer key"])
    assert bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, b"", nonce, key) == b"answer"
