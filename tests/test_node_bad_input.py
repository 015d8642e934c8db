"""Bad input against a live node: each is answered with a 4xx JSON error, and the node carries on.

One node (on its own thread and loop) serves the whole module. After every bad request the node
must still store and retrieve, and every message stored before must still be there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_helpers import (
    RPC_PATH,
    Account,
    HttpClient,
    HttpResponse,
    NodeThread,
    b64,
    make_config,
    now_ms,
    retrieve_all,
    run,
)

MiB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000


@dataclass
class Shared:
    node: NodeThread
    account: Account = field(default_factory=Account)
    stored: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.node.port


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    node = NodeThread(make_config(tmp_path_factory.mktemp("bad-input-node")))
    node.start()
    yield Shared(node)
    node.stop()


def assert_json_error(response: HttpResponse, status: int | None = None) -> dict[str, Any]:
    """A 4xx with a JSON ``{"error": {"code", "message"}}`` body and no stack trace."""
    assert b"Traceback" not in response.body
    assert 400 <= response.status < 500, (response.status, response.body)
    if status is not None:
        assert response.status == status, response.body
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)
    error: dict[str, Any] = body["error"]
    return error


async def check_healthy(shared: Shared) -> None:
    """The node still stores and retrieves, and nothing stored earlier was lost."""
    async with await HttpClient.connect(shared.port) as client:
        data = b"good %d " % len(shared.stored) + os.urandom(8)
        status, body = await client.rpc("store", shared.account.store(data))
        assert status == 200, body
        shared.stored.append(body["hash"])
        messages = await retrieve_all(client, shared.account)
        assert sorted(m["hash"] for m in messages) == sorted(shared.stored)


def post(shared: Shared, body: bytes) -> HttpResponse:
    async def main() -> HttpResponse:
        async with await HttpClient.connect(shared.port) as client:
            response = await client.request("POST", RPC_PATH, body)
        await check_healthy(shared)
        return response

    return run(main())


def call(shared: Shared, method: str, params: Any) -> HttpResponse:
    return post(shared, orjson.dumps({"method": method, "params": params}))


def valid_store(**override: Any) -> dict[str, Any]:
    params = Account().store(b"payload")
    params.update(override)
    return params


# --- the body -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"method": "store", "params": ',
        b"[1, 2, 3]",
        b'"a string"',
        b"null",
        b"42",
        b'{"method": 5, "params": {}}',
        b'{"params": {}}',
        b'{"method": "store", "params": []}',
        b'{"method": "store", "params": "x"}',
        b'{"method": "store", "params": {"timestamp": 123456789012345678901234567890}}',
    ],
    ids=lambda body: body[:24].decode("latin-1"),
)
def test_body_that_is_not_a_request_object(shared: Shared, body: bytes) -> None:
    assert_json_error(post(shared, body), 400)


def test_unknown_method(shared: Shared) -> None:
    error = assert_json_error(call(shared, "steal_everything", {}), 400)
    assert error["code"] == "unknown_method"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pubkey", 5),
        ("pubkey", None),
        ("pubkey", "05" + "zz" * 32),
        ("pubkey", "07" + "00" * 32),
        ("pubkey", "05" + "00" * 31),
        ("timestamp", "1700000000000"),
        ("timestamp", 1.5),
        ("timestamp", True),
        ("ttl", 86400000.0),
        ("ttl", "86400000"),
        ("namespace", "x"),
        ("namespace", 40000),
        ("namespace", [1]),
        ("data", 5),
        ("data", ["aGk="]),
        ("data", None),
    ],
)
def test_store_with_a_wrong_type(shared: Shared, name: str, value: Any) -> None:
    assert_json_error(call(shared, "store", valid_store(**{name: value})), 400)


@pytest.mark.parametrize("missing", ["pubkey", "timestamp", "ttl", "data"])
def test_store_missing_a_required_parameter(shared: Shared, missing: str) -> None:
    params = valid_store()
    del params[missing]
    error = assert_json_error(call(shared, "store", params), 400)
    assert missing in error["message"]


@pytest.mark.parametrize("data", ["!!!!", "aGk", "aG k=", "aGk=\n", "aGk==", "a"])
def test_store_with_bad_base64(shared: Shared, data: str) -> None:
    error = assert_json_error(call(shared, "store", valid_store(data=data)), 400)
    assert "base64" in error["message"]


@pytest.mark.parametrize(
    ("pubkey", "method"),
    [
        ("05" + " " * 64, "store"),  # bytes.fromhex skips whitespace: a 1-byte account
        ("03" + " " * 64, "store"),
        (" " * 66, "store"),  # an empty account
        ("05" + "00 " * 21 + " ", "store"),  # a 22-byte account
        ("03" + " " * 64, "retrieve"),
        (" " * 66, "retrieve"),
    ],
    ids=["05-spaces-store", "03-spaces-store", "all-spaces-store", "22-byte-store",
         "03-spaces-retrieve", "all-spaces-retrieve"],
)  # fmt: skip
def test_pubkey_with_whitespace_is_not_an_account(shared: Shared, pubkey: str, method: str) -> None:
    """A pubkey is 66 hex digits; whitespace makes ``bytes.fromhex`` return fewer than 33 bytes."""
    other = Account()
    ts = now_ms()
    params = (
        valid_store(pubkey=pubkey)
        if method == "store"
        else other.signed(f"retrieve{ts}", timestamp=ts) | {"pubkey": pubkey}
    )
    assert_json_error(call(shared, method, params), 400)


def test_oversized_message_is_413_and_the_largest_one_is_stored(shared: Shared) -> None:
    error = assert_json_error(call(shared, "store", valid_store(data=b64(b"x" * 76_801))), 413)
    assert error["code"] == "too_large"
    alice = Account()
    response = call(shared, "store", alice.store(b"y" * 76_800))
    assert response.status == 200, response.body


@pytest.mark.parametrize(
    ("ttl", "status"),
    [(9_999, 400), (0, 400), (-1, 400), (14 * DAY_MS + 1, 400), (10_000, 200), (14 * DAY_MS, 200)],
)
def test_ttl_bounds(shared: Shared, ttl: int, status: int) -> None:
    params = Account().store(b"ttl", ttl=ttl)
    response = call(shared, "store", params)
    if status == 200:
        assert response.status == 200, response.body
    else:
        assert_json_error(response, status)


@pytest.mark.parametrize("offset_ms", [61_000, -61_000, 10**12, -(10**12)])
def test_timestamp_too_far_from_the_clock(shared: Shared, offset_ms: int) -> None:
    alice = Account()
    error = assert_json_error(
        call(shared, "store", alice.store(b"t", timestamp=now_ms() + offset_ms)), 406
    )
    assert error["code"] == "clock_skew"
    assert_json_error(call(shared, "retrieve", alice.retrieve(timestamp=now_ms() + offset_ms)), 406)


# --- signatures -----------------------------------------------------------------------------------


def test_bad_signature(shared: Shared) -> None:
    alice = Account()
    params = alice.retrieve()
    params["signature"] = b64(os.urandom(64))
    assert assert_json_error(call(shared, "retrieve", params), 401)["code"] == "unauthorized"
    params["signature"] = b64(os.urandom(63))
    assert_json_error(call(shared, "retrieve", params), 401)
    params["signature"] = "not base64!"
    assert_json_error(call(shared, "retrieve", params), 400)
    params["signature"] = 12
    assert_json_error(call(shared, "retrieve", params), 401)
    store = alice.store(b"signed", namespace=9)
    store["signature"] = b64(os.urandom(64))
    assert_json_error(call(shared, "store", store), 401)


def test_stale_signature_timestamp(shared: Shared) -> None:
    alice = Account()
    stale = now_ms() - 61_000
    assert_json_error(call(shared, "retrieve", alice.retrieve(timestamp=stale)), 406)
    assert_json_error(call(shared, "delete_all", alice.delete_all(0) | {"timestamp": stale}), 406)
    # A namespaced store signed 61 s ago (sig_timestamp) is stale even with a fresh timestamp.
    params = alice.store(b"stale", namespace=4)
    params |= {"sig_timestamp": stale, "signature": alice.sign(f"store4{stale}")}
    assert_json_error(call(shared, "store", params), 406)


def test_signature_by_another_key(shared: Shared) -> None:
    alice, mallory = Account(), Account()
    ts = now_ms()
    # Mallory signs, claiming to be Alice, with Alice's Ed25519 key named.
    params = alice.retrieve(timestamp=ts) | {"signature": mallory.sign(f"retrieve{ts}")}
    assert_json_error(call(shared, "retrieve", params), 401)
    hashes = [shared.stored[0]] if shared.stored else ["A" * 43]
    params = shared.account.delete(hashes) | {"signature": mallory.sign("delete" + "".join(hashes))}
    assert_json_error(call(shared, "delete", params), 401)


@pytest.mark.parametrize(
    "pubkey_ed25519",
    ["other", "00" * 32, "zz" * 32, "ab" * 31, None, 7],
)
def test_pubkey_ed25519_that_is_not_the_accounts(shared: Shared, pubkey_ed25519: Any) -> None:
    alice, mallory = Account(), Account()
    ts = now_ms()
    if pubkey_ed25519 == "other":
        # Mallory's own Ed25519 key and a valid signature by it: the key is not Alice's.
        params = alice.retrieve(timestamp=ts) | {
            "pubkey_ed25519": mallory.ed_hex,
            "signature": mallory.sign(f"retrieve{ts}"),
        }
    else:
        params = alice.retrieve(timestamp=ts) | {"pubkey_ed25519": pubkey_ed25519}
    assert assert_json_error(call(shared, "retrieve", params), 401)["code"] == "unauthorized"


# --- HTTP-level bad input -------------------------------------------------------------------------


def raw_exchange(shared: Shared, data: bytes, *, timeout: float = 5.0) -> HttpResponse:
    """Send raw bytes, read one response, and expect the node to close the connection."""

    async def main() -> HttpResponse:
        async with await HttpClient.connect(shared.port) as client:
            await client.send_raw(data)
            response = await client.read_response(timeout)
            assert await client.at_eof()
        await check_healthy(shared)
        return response

    return run(main())


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02garbage\xff\r\n\r\n",
        b"HELLO WORLD\r\n\r\n",
        b"POST /storage_rpc/v1 HTTP/9.9\r\n\r\n",
        b"POST /storage_rpc/v1 HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /storage_rpc/v1 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /storage_rpc/v1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_http(shared: Shared, data: bytes) -> None:
    assert_json_error(raw_exchange(shared, data), 400)


def test_body_over_the_limit_refused_from_its_content_length(shared: Shared) -> None:
    head = b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: node\r\nContent-Length: 11000000\r\n\r\n"
    # Only the headers are sent: the answer must come without the body.
    error = assert_json_error(raw_exchange(shared, head), 413)
    assert error["code"] == "too_large"


def test_chunked_body_growing_past_the_limit(shared: Shared) -> None:
    async def main() -> HttpResponse:
        async with await HttpClient.connect(shared.port) as client:
            await client.send_raw(
                b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: node\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n" % MiB + b" " * MiB + b"\r\n"
            for _ in range(10):  # exactly the limit: still accepted
                await client.send_raw(chunk)
            await client.send_raw(b"1\r\n \r\n")  # one byte over
            response = await client.read_response()
            assert await client.at_eof()
        await check_healthy(shared)
        return response

    error = assert_json_error(run(main()), 413)
    assert error["code"] == "too_large"


def test_oversized_headers(shared: Shared) -> None:
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(170))
    assert len(headers) > 16 * 1024
    data = b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: node\r\n" + headers + b"\r\n"
    assert_json_error(raw_exchange(shared, data), 431)
    assert_json_error(raw_exchange(shared, b"GET /" + b"a" * 17_000 + b" HTTP/1.1\r\n\r\n"), 431)


def test_one_header_growing_past_the_limit_without_ending(shared: Shared) -> None:
    """A header line over 16 KiB is refused while it arrives, not buffered until its CRLF."""
    data = b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: node\r\nX-Endless: " + b"v" * 20 * 1024
    assert_json_error(raw_exchange(shared, data, timeout=3.0), 431)


def test_slowloris_does_not_block_other_clients(shared: Shared) -> None:
    async def main() -> None:
        slow = [await HttpClient.connect(shared.port) for _ in range(5)]
        await slow[0].send_raw(b"POST /storage_rpc/v1 HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        await slow[1].send_raw(b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: no")
        await slow[2].send_raw(b"PO")
        await slow[3].send_raw(
            b"POST /storage_rpc/v1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        # slow[4] sends nothing at all.
        await asyncio.wait_for(check_healthy(shared), 5.0)
        await asyncio.wait_for(check_healthy(shared), 5.0)
        for client in slow:
            await client.close()

    run(main())


# --- random parameters ----------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
PARAM_NAMES = [
    "pubkey",
    "pubkey_ed25519",
    "signature",
    "timestamp",
    "sig_timestamp",
    "ttl",
    "namespace",
    "data",
    "cursor",
    "last_hash",
    "max_count",
]
param_value = st.one_of(
    json_value,
    st.integers(min_value=now_ms() - 120_000, max_value=now_ms() + 120_000),
    st.text(alphabet="0123456789abcdef", min_size=60, max_size=70),
    st.sampled_from(["05", "03", ""]).map(lambda p: p + "ab" * 32),
    st.binary(max_size=200).map(b64),
    st.integers(min_value=-40_000, max_value=40_000),
)


@given(
    method=st.sampled_from(["store", "retrieve"]),
    base=st.booleans(),
    overrides=st.dictionaries(
        st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=8)), param_value, max_size=6
    ),
    drop=st.lists(st.sampled_from(PARAM_NAMES), max_size=3),
)
def test_random_params_never_answer_5xx(
    shared: Shared, method: str, base: bool, overrides: dict[str, Any], drop: list[str]
) -> None:
    alice = Account()
    params: dict[str, Any] = {}
    if base:
        params = alice.store(os.urandom(16)) if method == "store" else alice.retrieve()
    params.update(overrides)
    for name in drop:
        params.pop(name, None)

    async def main() -> None:
        async with await HttpClient.connect(shared.port) as client:
            response = await client.post_json({"method": method, "params": params})
            assert b"Traceback" not in response.body
            assert response.status < 500, (response.status, response.body, params)
            answer = response.json()
            if response.status != 200:
                assert set(answer) == {"error"}
        await check_healthy(shared)

    run(main())


def test_the_node_kept_everything(shared: Shared) -> None:
    run(check_healthy(shared))
    assert shared.stored
