"""The node link's handshake and records against an independent Noise implementation, and the worked
examples of docs/protocol.md ("Node links, version 2", "Node RPCs, version 2") recomputed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

import noise_reference as noise
from veil import _core
from veil.errors import DecryptionError
from veil.protocol.hashes import message_hash
from veil.protocol.link import FrameKind, encode_frame
from veil.protocol.node_rpc import Replicate, decode_request, encode_receipts, encode_request
from veil.protocol.replication import Message

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def _block(heading: str) -> dict[str, str]:
    """The labelled values of the first code block after ``heading``."""
    section = DOC.read_text(encoding="utf-8").split(heading, 1)[1]
    block = re.findall(r"```\n(.*?)```", section, flags=re.S)[0]
    values = {}
    for line in block.splitlines():
        label, _, rest = line.partition("  ")
        values[label.strip()] = rest.split("(")[0].strip()
    return values


def test_the_reference_caller_and_the_node_complete_a_handshake_and_exchange_records() -> None:
    caller, callee, ephemeral = (_core.x25519_generate_secret() for _ in range(3))
    node = _core.NodeKey(callee)
    first, state = noise.initiator_first(caller, ephemeral, node.public, 1_700_000_000_000)
    remote, timestamp, answer, cipher = node.link_respond(first)
    assert remote == noise.public(caller)
    assert timestamp == 1_700_000_000_000
    reference = noise.initiator_finish(state, caller, ephemeral, answer)
    assert cipher.open(reference.seal(b"hello", flags=1) + reference.seal(b" world")) == (
        b"hello world"
    )
    assert reference.open(cipher.seal(b"back", True) + cipher.seal(b" again")) == b"back again"


def test_the_node_calling_completes_a_handshake_with_the_reference_accepter() -> None:
    caller, callee, ephemeral = (_core.x25519_generate_secret() for _ in range(3))
    initiator = _core.NodeKey(caller).link_initiate(noise.public(callee), 1_700_000_000_001)
    remote, timestamp, answer, reference = noise.responder_answer(
        callee, ephemeral, initiator.message
    )
    assert remote == _core.NodeKey(caller).public
    assert timestamp == 1_700_000_000_001
    cipher = initiator.finish(answer)
    assert reference.open(cipher.seal(b"x", True) + cipher.seal(b"y")) == b"xy"
    assert cipher.open(reference.seal(b"z", flags=1) + reference.seal(b"w")) == b"zw"


def test_a_record_sealed_under_another_key_is_refused() -> None:
    caller, callee, ephemeral = (_core.x25519_generate_secret() for _ in range(3))
    node = _core.NodeKey(callee)
    first, state = noise.initiator_first(caller, ephemeral, node.public, 1)
    _, _, answer, cipher = node.link_respond(first)
    reference = noise.initiator_finish(state, caller, ephemeral, answer)
    reference.send_key = bytes(32)
    with pytest.raises(DecryptionError):
        cipher.open(reference.seal(b"forged"))


def test_the_documented_handshake_and_first_record_follow_from_their_keys() -> None:
    v = _block("### Worked example: a handshake and a first record")
    caller, caller_e = (
        bytes.fromhex(v["caller static secret"]),
        bytes.fromhex(v["caller ephemeral secret"]),
    )
    accepter = bytes.fromhex(v["accepter static secret"])
    accepter_e = bytes.fromhex(v["accepter ephemeral secret"])
    assert noise.public(caller).hex() == v["caller static public"]
    assert noise.public(accepter).hex() == v["accepter static public"]
    timestamp = int(v["caller timestamp"])
    first, state = noise.initiator_first(caller, caller_e, noise.public(accepter), timestamp)
    assert first.hex() == v["first message"]
    remote, read, answer, _ = noise.responder_answer(accepter, accepter_e, first)
    assert (remote, read) == (noise.public(caller), timestamp)
    assert answer.hex() == v["answer"]
    transport = noise.initiator_finish(state, caller, caller_e, answer)
    assert transport.send_key.hex() == v["key caller → accepter"]
    assert transport.receive_key.hex() == v["key accepter → caller"]
    frame = encode_frame(FrameKind.PING, 7)
    assert frame.hex() == v["frame"]
    assert transport.seal(frame).hex() == v["first record"]
    record = bytes.fromhex(v["first record"])
    key = bytes.fromhex(v["key caller → accepter"])
    assert noise.decrypt(key, 0, b"", record[2:]) == b"\x00" + frame
    # The node, as the accepter, reads the documented first message and learns the caller's key
    # (its answer differs: it draws its own ephemeral key).
    remote, read, _, _ = _core.NodeKey(accepter).link_respond(bytes.fromhex(v["first message"]))
    assert (remote.hex(), read) == (v["caller static public"], timestamp)


def test_the_documented_replicate_body_is_what_the_codec_writes_and_reads() -> None:
    v = _block("### Worked example: a `replicate` of one message")
    account = b"\x05" + b"\x11" * 32
    digest = message_hash(account, 0, b"hi")
    assert digest.hex() == v["hash"]
    # Session's hash: BLAKE2b-256(account ‖ namespace in decimal, nothing for 0 ‖ data).
    assert hashlib.blake2b(account + b"hi", digest_size=32).hexdigest() == v["hash"]
    arrival_us = 1_700_000_000_000_000
    message = Message(
        account, 0, 1_700_000_000_000, 1_700_003_600_000, b"hi", digest, None, arrival_us
    )
    body = encode_request(Replicate([message]))
    assert body.hex() == v["body"]
    # Version 3; a message of seven fields, the last the arrival (µs) as a msgpack uint64.
    assert body[0] == 3
    assert bytes([0x97]) + b"\xc4\x21" + account in body
    assert body.endswith(b"\xc0\xcf" + arrival_us.to_bytes(8, "big"))
    assert decode_request(body, max_items=8) == Replicate([message])
    assert encode_receipts([None]).hex() == v["answer"]
