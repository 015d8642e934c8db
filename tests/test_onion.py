"""Behaviour of onion building and peeling.

The format is that of rust/veil-core/src/onion.rs's module documentation and docs/protocol.md.
"""

from __future__ import annotations

import pytest

from veil import _core
from veil.crypto import HopKey, PeeledLayer, build_onion, peel_onion, peel_onion_batch
from veil.errors import DecryptionError

# The plaintext of a forward layer carries kind(1) ‖ next_hop(32) ‖ routing_len(2); the last
# layer's carries kind(1) ‖ routing_len(2).
FORWARD_OVERHEAD = _core.ONION_LAYER_OVERHEAD + 1 + 2 + 32
LAST_OVERHEAD = _core.ONION_LAYER_OVERHEAD + 1 + 2


def _nodes(count: int) -> tuple[list[bytes], list[bytes]]:
    secrets = [_core.x25519_generate_secret() for _ in range(count)]
    return secrets, [_core.x25519_public_key(secret) for secret in secrets]


def test_the_layer_overhead_is_version_ephemeral_key_nonce_and_tag() -> None:
    assert _core.ONION_VERSION == 1
    assert _core.ONION_LAYER_OVERHEAD == 1 + 32 + 24 + 16


def test_a_three_hop_onion_yields_each_next_hop_then_the_payload() -> None:
    secrets, publics = _nodes(3)
    onion, _ = build_onion(publics, b"the request")
    assert onion[0] == _core.ONION_VERSION
    first = peel_onion(secrets[0], onion)
    assert first.next_hop == publics[1]
    second = peel_onion(secrets[1], first.payload)
    assert second.next_hop == publics[2]
    last = peel_onion(secrets[2], second.payload)
    assert last.next_hop is None
    assert last.payload == b"the request"
    assert last.routing == b""


def test_intermediate_layers_have_no_reply_key_and_the_last_has_one() -> None:
    secrets, publics = _nodes(3)
    layer = build_onion(publics, b"p")[0]
    for secret in secrets[:-1]:
        peeled = peel_onion(secret, layer)
        assert peeled.reply_key is None
        layer = peeled.payload
    assert isinstance(peel_onion(secrets[-1], layer).reply_key, HopKey)


def test_the_destinations_reply_key_and_the_clients_open_each_others_messages() -> None:
    secrets, publics = _nodes(3)
    onion, client_key = build_onion(publics, b"request")
    layer = onion
    for secret in secrets[:-1]:
        layer = peel_onion(secret, layer).payload
    destination_key = peel_onion(secrets[-1], layer).reply_key
    assert destination_key is not None
    reply = destination_key.encrypt(b"the reply")
    assert len(reply) == len(b"the reply") + _core.HOP_OVERHEAD
    assert client_key.decrypt(reply) == b"the reply"
    assert destination_key.decrypt(client_key.encrypt(b"and back")) == b"and back"


def test_a_reply_key_of_another_onion_does_not_open_the_reply() -> None:
    secrets, publics = _nodes(1)
    onion, _ = build_onion(publics, b"one")
    _, other_key = build_onion(publics, b"two")
    destination_key = peel_onion(secrets[0], onion).reply_key
    assert destination_key is not None
    with pytest.raises(DecryptionError):
        other_key.decrypt(destination_key.encrypt(b"reply"))


def test_routing_data_reaches_its_own_hop_only() -> None:
    secrets, publics = _nodes(3)
    routing = [b"for the first", b"", b"for the last"]
    layer = build_onion(publics, b"payload", routing=routing)[0]
    for secret, expected in zip(secrets, routing, strict=True):
        peeled = peel_onion(secret, layer)
        assert peeled.routing == expected
        layer = peeled.payload
    assert layer == b"payload"


def test_the_same_onion_peeled_twice_gives_the_same_replay_tag() -> None:
    secrets, publics = _nodes(1)
    onion, _ = build_onion(publics, b"payload")
    first = peel_onion(secrets[0], onion).replay_tag
    assert len(first) == 16
    assert peel_onion(secrets[0], onion).replay_tag == first
    batch = peel_onion_batch(secrets[0], [onion, onion])
    for result in batch:
        assert isinstance(result, PeeledLayer)
        assert result.replay_tag == first


def test_two_onions_of_the_same_payload_have_different_replay_tags_and_bytes() -> None:
    secrets, publics = _nodes(1)
    a, _ = build_onion(publics, b"payload")
    b, _ = build_onion(publics, b"payload")
    assert a != b
    assert peel_onion(secrets[0], a).replay_tag != peel_onion(secrets[0], b).replay_tag


def test_each_hop_of_one_onion_sees_a_different_replay_tag() -> None:
    secrets, publics = _nodes(3)
    layer = build_onion(publics, b"payload")[0]
    tags = []
    for secret in secrets:
        peeled = peel_onion(secret, layer)
        tags.append(peeled.replay_tag)
        layer = peeled.payload
    assert len(set(tags)) == 3


def test_peel_rejects_an_onion_for_another_node_with_the_opaque_error() -> None:
    secrets, publics = _nodes(3)
    onion, _ = build_onion(publics, b"payload")
    for wrong in (secrets[1], secrets[2], _core.x25519_generate_secret()):
        with pytest.raises(DecryptionError):
            peel_onion(wrong, onion)


def test_a_hop_cannot_peel_a_layer_twice_deep() -> None:
    secrets, publics = _nodes(2)
    onion, _ = build_onion(publics, b"payload")
    inner = peel_onion(secrets[0], onion).payload
    with pytest.raises(DecryptionError):
        peel_onion(secrets[0], inner)


@pytest.mark.parametrize("hops", range(1, _core.MAX_ROUTE_LEN + 1))
@pytest.mark.parametrize("routing_sizes", [None, (0, 7, 300)], ids=["none", "routing"])
def test_each_layer_shrinks_by_exactly_the_documented_overhead(
    hops: int, routing_sizes: tuple[int, ...] | None
) -> None:
    secrets, publics = _nodes(hops)
    payload = bytes(range(256)) * 3
    routing = (
        None
        if routing_sizes is None
        else [bytes(routing_sizes[i % len(routing_sizes)]) for i in range(hops)]
    )
    sizes = [len(r) for r in routing] if routing else [0] * hops
    onion, _ = build_onion(publics, payload, routing=routing)
    expected_total = len(payload) + sum(sizes) + (hops - 1) * FORWARD_OVERHEAD + LAST_OVERHEAD
    assert len(onion) == expected_total
    layer = onion
    for i, secret in enumerate(secrets):
        peeled = peel_onion(secret, layer)
        overhead = FORWARD_OVERHEAD if i + 1 < hops else LAST_OVERHEAD
        assert len(layer) - len(peeled.payload) == overhead + sizes[i]
        layer = peeled.payload
    assert layer == payload


def test_an_empty_payload_makes_the_smallest_layer() -> None:
    secrets, publics = _nodes(1)
    onion, _ = build_onion(publics, b"")
    assert len(onion) == LAST_OVERHEAD
    assert peel_onion(secrets[0], onion).payload == b""
    with pytest.raises(DecryptionError):
        peel_onion(secrets[0], onion[:-1])


def test_a_route_may_visit_the_same_node_twice() -> None:
    secrets, publics = _nodes(2)
    route = [publics[0], publics[1], publics[0]]
    layer = build_onion(route, b"loop")[0]
    for secret in (secrets[0], secrets[1], secrets[0]):
        layer = peel_onion(secret, layer).payload
    assert layer == b"loop"


def test_peel_onion_batch_keeps_the_order_of_its_inputs() -> None:
    secrets, publics = _nodes(1)
    onions = [build_onion(publics, str(i).encode())[0] for i in range(20)]
    results = peel_onion_batch(secrets[0], onions)
    payloads = [r.payload for r in results if isinstance(r, PeeledLayer)]
    assert payloads == [str(i).encode() for i in range(20)]
