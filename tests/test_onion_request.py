"""Onion requests as a sans-IO builder (``veil.protocol.onion_request``): the routing data of each
layer, and answers opened or refused."""

from __future__ import annotations

import base64

import orjson
import pytest

from veil import _core
from veil.crypto import HopKey, peel_onion
from veil.errors import DecryptionError, InvalidInputError
from veil.protocol.onion_request import build_request, decode_routing, encode_routing, open_reply

ISSUED = 1_700_000_000_000
SECRETS = [_core.x25519_generate_secret() for _ in range(3)]
PATH = [_core.x25519_public_key(s) for s in SECRETS]


def test_the_documented_routing_example_holds() -> None:
    assert encode_routing(ISSUED).hex(" ") == "00 00 01 8b cf e5 68 00"
    assert decode_routing(encode_routing(ISSUED, "https://x/")) == (ISSUED, "https://x/")


def _deliver(onion: bytes) -> tuple[list[bytes], bytes, HopKey]:
    """Peel ``onion`` along PATH: (each layer's routing data, the payload, the reply key)."""
    routings = []
    for secret in SECRETS:
        layer = peel_onion(secret, onion)
        routings.append(layer.routing)
        onion = layer.payload
    assert layer.reply_key is not None
    return routings, layer.payload, layer.reply_key


def test_every_layer_carries_the_issue_time_and_the_destination_the_target() -> None:
    onion, _ = build_request(PATH, b"request", target="https://svc/", issued_ms=ISSUED)
    routings, payload, _ = _deliver(onion)
    assert routings == [encode_routing(ISSUED)] * 2 + [encode_routing(ISSUED, "https://svc/")]
    assert payload == b"request"


def test_a_storage_rpc_answer_opens_to_its_status_and_body() -> None:
    onion, reply_key = build_request(PATH, b"{}")
    _, _, destination_key = _deliver(onion)
    answer = destination_key.encrypt(orjson.dumps({"status": 421, "body": {"error": {}}}))
    assert open_reply(reply_key, answer, external=False) == (421, {"error": {}})


def test_an_external_answer_opens_to_its_status_body_and_content_type() -> None:
    onion, reply_key = build_request(PATH, b"post me", target="https://svc/")
    _, _, destination_key = _deliver(onion)
    reply = {"status": 200, "body_b64": base64.b64encode(b"hi").decode(), "content_type": "t/p"}
    answer = destination_key.encrypt(orjson.dumps(reply))
    assert open_reply(reply_key, answer, external=True) == (200, (b"hi", "t/p"))


def test_an_answer_under_another_key_does_not_decrypt() -> None:
    onion, _ = build_request(PATH, b"{}")
    _, other_key = build_request(PATH, b"{}")
    _, _, destination_key = _deliver(onion)
    with pytest.raises(DecryptionError):
        open_reply(other_key, destination_key.encrypt(b'{"status": 200}'), external=False)


@pytest.mark.parametrize(
    ("plaintext", "external"),
    [
        (b"not json", False),
        (b"[200]", False),
        (b'{"body": {}}', False),
        (b'{"status": "200"}', False),
        (b'{"status": true}', False),
        (b'{"status": 200, "body_b64": "!!"}', True),
        (b'{"status": 200, "content_type": 7}', True),
    ],
    ids=["not-json", "list", "no-status", "text-status", "bool-status", "bad-b64", "bad-type"],
)
def test_a_malformed_answer_is_invalid_input(plaintext: bytes, external: bool) -> None:
    onion, reply_key = build_request(PATH, b"{}")
    _, _, destination_key = _deliver(onion)
    with pytest.raises(InvalidInputError):
        open_reply(reply_key, destination_key.encrypt(plaintext), external=external)
