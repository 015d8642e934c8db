"""Bad input against a live node: each is refused with a typed 4xx, and the node carries on.

A refusal by the storage RPC is Session's: its status and a one-line ``text/plain`` text
(``docs/rpc.md``, "Errors"). The HTTP layer's own refusals (malformed HTTP, a body or a header
section over its limit) keep their JSON ``{"error": {"code", "message"}}`` body. No answer carries
a stack trace.

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
    TTL_MS,
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
from veil.identity import Identity

MiB = 1024 * 1024
DAY_MS = 24 * 3600 * 1000
BAD_PUBKEY = "invalid request: Pubkey must be 66 hex digits (33 bytes) long"
BAD_SIGNATURE = "invalid request: invalid signature: expected base64 encoded Ed25519 signature"
BAD_CLOCK = "Timestamp error: check your clock"
BAD_TTL = "Provided expiry/TTL is not valid."


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
    """An HTTP-layer refusal: a 4xx with a JSON ``{"error": {"code", "message"}}`` body and no
    stack trace."""
    assert b"Traceback" not in response.body
    assert 400 <= response.status < 500, (response.status, response.body)
    if status is not None:
        assert response.status == status, response.body
    assert response.headers.get("content-type") == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str)
    assert isinstance(body["error"]["message"], str)
    error: dict[str, Any] = body["error"]
    return error


def assert_refused(response: HttpResponse, status: int, text: str | None = None) -> str:
    """A storage RPC refusal: ``status`` with a one-line ``text/plain`` body (exactly ``text`` if
    given) and no stack trace; returns the text."""
    assert b"Traceback" not in response.body
    assert response.status == status, (response.status, response.body)
    assert response.headers.get("content-type", "").startswith("text/plain"), response.headers
    message = response.body.decode("utf-8")
    assert message, "an empty refusal"
    assert "\n" not in message, message
    assert "\r" not in message, message
    if text is not None:
        assert message == text
    return message


def assert_invalid(response: HttpResponse, text: str | None = None) -> str:
    """A parameter that does not parse: 400 ``invalid request: …``."""
    message = assert_refused(response, 400, text)
    assert message.startswith("invalid request: "), message
    return message


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

NO_METHOD = "invalid json: no `method` field"
NO_PARAMS = "invalid json: no `params` field"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"not json", "invalid json"),
        (b"", "invalid json"),
        (b"\xff\xfe\x00garbage", "invalid json"),
        (b'{"method": "store", "params": ', "invalid json"),
        (b"[1, 2, 3]", "invalid json"),
        (b'"a string"', "invalid json"),
        (b"null", "invalid json"),
        (b"42", "invalid json"),
        (b'{"method": 5, "params": {}}', NO_METHOD),
        (b'{"params": {}}', NO_METHOD),
        (b'{"method": [], "params": {}}', NO_METHOD),
        (b'{"method": {"a": 1}, "params": {}}', NO_METHOD),
        (b'{"method": "store", "params": []}', NO_PARAMS),
        (b'{"method": "store", "params": "x"}', NO_PARAMS),
        (b'{"method": "info"}', NO_PARAMS),  # params is required, even where none are read
        (
            b'{"method": "store", "params": {"timestamp": 123456789012345678901234567890}}',
            "invalid request: Invalid value given for 'timestamp': expected integer",
        ),
    ],
    ids=lambda value: value[:24].decode("latin-1") if isinstance(value, bytes) else "",
)
def test_body_that_is_not_a_request_object(shared: Shared, body: bytes, text: str) -> None:
    assert_refused(post(shared, body), 400, text)


def test_unknown_method(shared: Shared) -> None:
    assert_refused(call(shared, "steal_everything", {}), 400, "no method steal_everything")


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("pubkey", 5, BAD_PUBKEY),
        ("pubkey", None, "Required field 'pubkey' missing"),
        ("pubkey", "05" + "zz" * 32, BAD_PUBKEY),
        ("pubkey", "05" + "00" * 33, BAD_PUBKEY),  # 34 bytes
        ("pubkey", "05" + "00" * 31, BAD_PUBKEY),  # 32 bytes
        ("timestamp", "1.7e12", "Invalid value given for 'timestamp': \"1.7e12\""),
        ("timestamp", 1.5, "Invalid value given for 'timestamp': expected integer"),
        ("timestamp", True, "Invalid value given for 'timestamp': expected integer"),
        ("ttl", 86400000.0, "Invalid value given for 'ttl': expected positive integer"),
        ("ttl", "1 day", "Invalid value given for 'ttl': \"1 day\""),
        ("namespace", "x", "Invalid value given for 'namespace': expected 16-bit integer"),
        ("namespace", 40000, "Invalid value given for 'namespace': value out of range"),
        ("namespace", [1], "Invalid value given for 'namespace': expected 16-bit integer"),
        ("data", 5, "Invalid value given for 'data': expected string"),
        ("data", ["aGk="], "Invalid value given for 'data': expected string"),
        ("data", None, "Required field 'data' missing"),
    ],
)
def test_store_with_a_wrong_type(shared: Shared, name: str, value: Any, text: str) -> None:
    expected = text if text.startswith("invalid request: ") else f"invalid request: {text}"
    assert_invalid(call(shared, "store", valid_store(**{name: value})), expected)


def test_store_timestamp_and_ttl_as_decimal_text_are_read_as_numbers(shared: Shared) -> None:
    """As Session's storage servers read them: ``"1700000000000"`` is the number, not a wrong
    type (what is not decimal text is refused above)."""
    alice = Account()
    params = alice.store(b"as text")
    params |= {"timestamp": str(params["timestamp"]), "ttl": str(DAY_MS)}
    response = call(shared, "store", params)
    assert response.status == 200, response.body
    messages = run(_retrieve_all(shared, alice))
    assert [(m["timestamp"], m["expiration"]) for m in messages] == [
        (int(params["timestamp"]), int(params["timestamp"]) + DAY_MS)
    ]


async def _retrieve_all(shared: Shared, account: Account) -> list[Any]:
    async with await HttpClient.connect(shared.port) as client:
        return await retrieve_all(client, account)


def test_any_one_byte_prefix_names_an_account(shared: Shared) -> None:
    """A pubkey is a one-byte prefix and a 32-byte key: an unknown prefix (07) is an account whose
    key is an Ed25519 key, as Session's storage servers read it (it was refused before)."""
    owner = Identity.generate()
    account = "07" + owner.ed25519_public_key.hex()
    response = call(shared, "store", valid_store(pubkey=account))
    assert response.status == 200, response.body
    ts = now_ms()
    signature = b64(owner.sign(f"retrieve{ts}".encode()))
    response = call(
        shared, "retrieve", {"pubkey": account, "timestamp": ts, "signature": signature}
    )
    assert response.status == 200, response.body
    assert [m["data"] for m in response.json()["messages"]] == [b64(b"payload")]


@pytest.mark.parametrize(
    ("missing", "text"),
    [
        ("pubkey", "Required field 'pubkey' missing"),
        ("timestamp", "Required field 'timestamp' missing"),
        ("ttl", "Required field 'expiry' or 'ttl' missing"),
        ("data", "Required field 'data' missing"),
    ],
)
def test_store_missing_a_required_parameter(shared: Shared, missing: str, text: str) -> None:
    params = valid_store()
    del params[missing]
    message = assert_invalid(call(shared, "store", params), f"invalid request: {text}")
    assert missing in message


@pytest.mark.parametrize("data", ["!!!!", "aGk", "aG k=", "aGk=\n", "aGk==", "a"])
def test_store_with_bad_base64(shared: Shared, data: str) -> None:
    text = "invalid request: Invalid 'data' value: not base64 encoded"
    assert_invalid(call(shared, "store", valid_store(data=data)), text)


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
    assert_invalid(call(shared, method, params), BAD_PUBKEY)


def test_oversized_message_is_refused_and_the_largest_one_is_stored(shared: Shared) -> None:
    """Data over 76,800 bytes is a parameter that does not parse (400, as Session answers it; the
    413 of the HTTP layer is for a body over ``max_body_bytes``)."""
    text = "invalid request: Message body exceeds maximum allowed length of 76800 bytes"
    assert_invalid(call(shared, "store", valid_store(data=b64(b"x" * 76_801))), text)
    alice = Account()
    response = call(shared, "store", alice.store(b"y" * 76_800))
    assert response.status == 200, response.body


@pytest.mark.parametrize(
    ("namespace", "ttl", "status"),
    [
        (0, 9_999, 403),
        (0, 0, 403),
        (0, -1, 400),
        (0, 14 * DAY_MS + 1, 403),
        (0, 10_000, 200),
        (0, 14 * DAY_MS, 200),
        # Outside the public inboxes a message may live up to 30 days.
        (3, 9_999, 403),
        (3, 10_000, 200),
        (3, 30 * DAY_MS, 200),
        (3, 30 * DAY_MS + 1, 403),
    ],
)
def test_ttl_bounds(shared: Shared, namespace: int, ttl: int, status: int) -> None:
    params = Account().store(b"ttl", ttl=ttl, namespace=namespace)
    response = call(shared, "store", params)
    if status == 200:
        assert response.status == 200, response.body
    elif status == 403:
        assert_refused(response, 403, BAD_TTL)
    else:
        assert_invalid(
            response, "invalid request: Invalid value given for 'ttl': expected positive integer"
        )


@pytest.mark.parametrize("offset_ms", [11_000, 61_000, 10**12])
def test_store_timestamp_more_than_10_s_ahead_is_refused(shared: Shared, offset_ms: int) -> None:
    alice = Account()
    response = call(shared, "store", alice.store(b"t", timestamp=now_ms() + offset_ms))
    assert_refused(response, 406, BAD_CLOCK)


@pytest.mark.parametrize(
    ("offset_ms", "status"),
    [
        (-61_000, 200),  # an old timestamp is fine while the message has not expired
        (-TTL_MS + 5_000, 200),  # it expires in 5 s
        (-TTL_MS - 11_000, 406),  # its expiry is 11 s behind the node's clock
        (-(10**12), 406),
    ],
)
def test_store_timestamp_in_the_past_is_accepted_unless_its_expiry_is_10_s_behind(
    shared: Shared, offset_ms: int, status: int
) -> None:
    """Rewritten from the old clock window on store timestamps (±60 s): as in Session, a store's
    timestamp may be in the past; only its expiry must not be over 10 s behind now."""
    alice = Account()
    response = call(shared, "store", alice.store(b"t", timestamp=now_ms() + offset_ms))
    if status == 200:
        assert response.status == 200, response.body
    else:
        assert_refused(response, 406, BAD_CLOCK)


@pytest.mark.parametrize("offset_ms", [61_000, -61_000, 10**12, -(10**12)])
def test_signed_timestamp_too_far_from_the_clock(shared: Shared, offset_ms: int) -> None:
    alice = Account()
    response = call(shared, "retrieve", alice.retrieve(timestamp=now_ms() + offset_ms))
    assert_refused(response, 406, "retrieve timestamp too far from current time")


# --- signatures -----------------------------------------------------------------------------------

RETRIEVE_REFUSED = "retrieve signature verification failed"


def test_bad_signature(shared: Shared) -> None:
    alice = Account()
    params = alice.retrieve()
    params["signature"] = b64(os.urandom(64))
    assert_refused(call(shared, "retrieve", params), 401, RETRIEVE_REFUSED)
    # Not a 64-byte signature in base64: it does not parse.
    params["signature"] = b64(os.urandom(63))
    assert_invalid(call(shared, "retrieve", params), BAD_SIGNATURE)
    params["signature"] = "not base64!"
    assert_invalid(call(shared, "retrieve", params), BAD_SIGNATURE)
    params["signature"] = 12
    assert_invalid(call(shared, "retrieve", params), BAD_SIGNATURE)
    store = alice.store(b"signed", namespace=9)
    store["signature"] = b64(os.urandom(64))
    assert_refused(call(shared, "store", store), 401, "store signature verification failed")


def test_stale_signature_timestamp(shared: Shared) -> None:
    alice = Account()
    stale = now_ms() - 61_000
    assert_refused(
        call(shared, "retrieve", alice.retrieve(timestamp=stale)),
        406,
        "retrieve timestamp too far from current time",
    )
    assert_refused(
        call(shared, "delete_all", alice.delete_all(0) | {"timestamp": stale}),
        406,
        "delete_all timestamp too far from current time",
    )
    # A namespaced store signed 61 s ago (sig_timestamp) is stale even with a fresh timestamp.
    params = alice.store(b"stale", namespace=4)
    params |= {"sig_timestamp": stale, "signature": alice.sign(f"store4{stale}")}
    assert_refused(
        call(shared, "store", params), 406, "store signature timestamp too far from current time"
    )


def test_signature_by_another_key(shared: Shared) -> None:
    alice, mallory = Account(), Account()
    ts = now_ms()
    # Mallory signs, claiming to be Alice, with Alice's Ed25519 key named.
    params = alice.retrieve(timestamp=ts) | {"signature": mallory.sign(f"retrieve{ts}")}
    assert_refused(call(shared, "retrieve", params), 401, RETRIEVE_REFUSED)
    hashes = [shared.stored[0]] if shared.stored else ["A" * 43]
    params = shared.account.delete(hashes) | {"signature": mallory.sign("delete" + "".join(hashes))}
    assert_refused(call(shared, "delete", params), 401, "delete_msgs signature verification failed")


@pytest.mark.parametrize(
    ("pubkey_ed25519", "status", "text"),
    [
        ("other", 401, RETRIEVE_REFUSED),
        ("00" * 32, 401, RETRIEVE_REFUSED),
        ("zz" * 32, 400, "invalid request: invalid pubkey_ed25519: value is not hex"),
        (
            "ab" * 31,
            400,
            "invalid request: Invalid pubkey_ed25519: expected 64 hex char or 32 byte pubkey",
        ),
        # null is no pubkey_ed25519: the 32 account bytes would have to be the signing key.
        (None, 401, RETRIEVE_REFUSED),
        (7, 400, "invalid request: Invalid pubkey_ed25519: expected 64 hex char or 32 byte pubkey"),
    ],
)
def test_pubkey_ed25519_that_is_not_the_accounts(
    shared: Shared, pubkey_ed25519: Any, status: int, text: str
) -> None:
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
    assert_refused(call(shared, "retrieve", params), status, text)


def test_pubkey_ed25519_on_an_account_that_is_not_a_session_id(shared: Shared) -> None:
    """Only a 05 account (an X25519 key) names the Ed25519 key that signs for it."""
    owner = Identity.generate()
    ts = now_ms()
    params = {
        "pubkey": "03" + owner.ed25519_public_key.hex(),
        "timestamp": ts,
        "signature": b64(owner.sign(f"retrieve{ts}".encode())),
        "pubkey_ed25519": owner.ed25519_public_key.hex(),
    }
    text = "invalid request: pubkey_ed25519 is only permitted for 05[...] pubkeys"
    assert_invalid(call(shared, "retrieve", params), text)


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
    "expiry",
    "max_size",
    "subaccount",
    "subaccount_sig",
    "pubKey",
    "lastHash",
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
            if response.status == 200:
                assert isinstance(response.json(), dict)
            else:
                # A refusal the store and retrieve parameters can earn: typed, one line of text.
                assert response.status in {400, 401, 403, 406}, (response.status, response.body)
                assert_refused(response, response.status)
        await check_healthy(shared)

    run(main())


def test_the_node_kept_everything(shared: Shared) -> None:
    run(check_healthy(shared))
    assert shared.stored
