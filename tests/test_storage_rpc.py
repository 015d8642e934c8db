"""The storage RPC's signed strings and request builders (``veil.protocol.storage_rpc``): what a
client signs is what a node verifies, and a builder signs nothing malformed."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.auth import parse_account, verify_request
from veil.node.errors import RpcError
from veil.protocol import storage_rpc
from veil.protocol.hashes import hash_b64

ALICE = Identity.from_seed(bytes(range(32)))
HASHES = [hash_b64(bytes([i]) * 32) for i in range(3)]
TS = 1_700_000_000_000


def test_the_documented_examples_hold() -> None:
    assert storage_rpc.retrieve_string(0, TS) == b"retrieve1700000000000"
    assert storage_rpc.retrieve_string(-5, TS) == b"retrieve-51700000000000"


def test_each_signed_string_is_as_oxen_storage_server_has_it() -> None:
    joined = "".join(HASHES)
    assert storage_rpc.store_string(3, TS) == f"store3{TS}".encode()
    assert storage_rpc.delete_string(HASHES) == f"delete{joined}".encode()
    assert storage_rpc.delete_all_string(0, TS) == f"delete_all{TS}".encode()
    assert storage_rpc.delete_all_string(7, TS) == f"delete_all7{TS}".encode()
    assert storage_rpc.delete_all_string("all", TS) == f"delete_allall{TS}".encode()
    assert storage_rpc.expire_string("", 9, HASHES) == f"expire9{joined}".encode()
    assert storage_rpc.expire_string("shorten", 9, HASHES) == f"expireshorten9{joined}".encode()
    assert storage_rpc.get_expiries_string(TS, HASHES) == f"get_expiries{TS}{joined}".encode()
    assert storage_rpc.store_string(0, TS) == f"store{TS}".encode()
    assert storage_rpc.delete_before_string(-3, TS) == f"delete_before-3{TS}".encode()
    assert storage_rpc.delete_before_string("all", TS) == f"delete_beforeall{TS}".encode()
    assert storage_rpc.expire_all_string(0, TS) == f"expire_all{TS}".encode()
    assert storage_rpc.expire_all_string(4, TS) == f"expire_all4{TS}".encode()
    assert storage_rpc.expire_string("extend", [8, 9], HASHES[:2]) == (
        f"expireextend89{HASHES[0]}{HASHES[1]}".encode()
    )
    token = bytes(36)
    assert storage_rpc.revoke_string("revoke_subaccount", TS, [token, token]) == (
        f"revoke_subaccount{TS}".encode() + token + token
    )


def _verifies(params: dict[str, Any], signed: bytes) -> bool:
    """Whether the node takes ``params`` as the account's own signature of ``signed``."""
    try:
        verify_request(
            "test", parse_account(params["pubkey"]), params, signed, access=0, revoked=None
        )
    except RpcError as error:
        refused = error
    else:
        return True
    assert refused.status == 401, refused.message  # well-formed: it just does not verify
    return False


def test_every_builder_signs_what_the_node_verifies() -> None:
    cases: list[tuple[dict[str, Any], bytes]] = [
        (
            storage_rpc.store_params(
                ALICE.session_id, b"x", 60_000, namespace=2, identity=ALICE, timestamp_ms=TS
            ),
            storage_rpc.store_string(2, TS),
        ),
        (
            storage_rpc.retrieve_params(ALICE, namespace=-3, timestamp_ms=TS),
            storage_rpc.retrieve_string(-3, TS),
        ),
        (storage_rpc.delete_params(ALICE, HASHES), storage_rpc.delete_string(HASHES)),
        (
            storage_rpc.delete_all_params(ALICE, "all", timestamp_ms=TS),
            storage_rpc.delete_all_string("all", TS),
        ),
        (
            storage_rpc.expire_params(ALICE, HASHES, 99, mode="extend"),
            storage_rpc.expire_string("extend", 99, HASHES),
        ),
        (
            storage_rpc.get_expiries_params(ALICE, HASHES, timestamp_ms=TS),
            storage_rpc.get_expiries_string(TS, HASHES),
        ),
        (
            storage_rpc.delete_before_params(ALICE, TS, 5),
            storage_rpc.delete_before_string(5, TS),
        ),
        (
            storage_rpc.expire_all_params(ALICE, TS, "all"),
            storage_rpc.expire_all_string("all", TS),
        ),
    ]
    for params, signed in cases:
        assert _verifies(params, signed), params
        assert not _verifies(params, signed + b"!"), params


def test_store_params_in_public_inboxes_are_unsigned_and_the_rest_need_the_account() -> None:
    """Namespaces divisible by 10 (0 among them) take anyone's messages unsigned."""
    params = storage_rpc.store_params(ALICE.session_id, b"hi", 60_000, timestamp_ms=TS)
    assert params == {
        "pubkey": ALICE.session_id,
        "timestamp": TS,
        "ttl": 60_000,
        "data": base64.b64encode(b"hi").decode(),
    }
    params = storage_rpc.store_params(
        ALICE.session_id, b"hi", 60_000, namespace=-30, timestamp_ms=TS
    )
    assert params == {
        "pubkey": ALICE.session_id,
        "timestamp": TS,
        "ttl": 60_000,
        "data": base64.b64encode(b"hi").decode(),
        "namespace": -30,
    }
    with pytest.raises(InvalidInputError):
        storage_rpc.store_params(ALICE.session_id, b"hi", 60_000, namespace=2)
    with pytest.raises(InvalidInputError):
        storage_rpc.store_params(
            Identity.generate().session_id, b"hi", 60_000, namespace=2, identity=ALICE
        )
    with pytest.raises(InvalidInputError):
        storage_rpc.store_params("05" + "zz" * 32, b"hi", 60_000)


@pytest.mark.parametrize(
    "bad", [[], ["A" * 42], [HASHES[0], "A" * 42 + "B"], [HASHES[0] + HASHES[1]]]
)
def test_a_builder_signs_no_malformed_hash(bad: list[str]) -> None:
    with pytest.raises(InvalidInputError):
        storage_rpc.delete_params(ALICE, bad)
    with pytest.raises(InvalidInputError):
        storage_rpc.expire_params(ALICE, bad, 1)
    with pytest.raises(InvalidInputError):
        storage_rpc.get_expiries_params(ALICE, bad)


@pytest.mark.parametrize("namespace", [32768, -32769, True, "1"])
def test_a_builder_signs_no_namespace_outside_16_bits(namespace: Any) -> None:
    with pytest.raises(InvalidInputError):
        storage_rpc.retrieve_params(ALICE, namespace=namespace)
    with pytest.raises(InvalidInputError):
        storage_rpc.delete_all_params(ALICE, namespace)


def test_an_expire_mode_is_set_shorten_or_extend() -> None:
    assert "shorten" not in storage_rpc.expire_params(ALICE, HASHES, 5)
    assert storage_rpc.expire_params(ALICE, HASHES, 5, mode="shorten")["shorten"] is True
    with pytest.raises(InvalidInputError):
        storage_rpc.expire_params(ALICE, HASHES, 5, mode="both")
