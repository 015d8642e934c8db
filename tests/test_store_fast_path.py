"""The plain ``store`` read in one Rust call (``_core.plain_store``, ``rust/veil-core/src/
store_request.rs``) against the Python parser it stands in for (``StorageRpc.parse``).

The fast path may leave any body to the Python parser (``None``), but a body it reads must be one
the Python parser takes, with the same values: otherwise a request would be answered differently
depending on which reader it met. Bodies are built to differ from a plain store in every field, in
types, in JSON spelling (escapes, duplicate keys, spaces) and in the keys around the fields.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_helpers import TTL_MS, RpcOverStore, now_ms
from veil import _core
from veil.identity import Identity
from veil.node import rpc as rpc_module
from veil.node.config import Limits
from veil.node.errors import RpcError
from veil.node.rpc import Call, StorageRpc
from veil.protocol.hashes import message_hash
from veil.protocol.storage_rpc import store_params

LIMITS = Limits(max_message_bytes=96)
ACCOUNT = "05" + "ab" * 32


class Served(RpcOverStore):
    """A storage RPC over a real store and writer, on its own uvloop loop."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, LIMITS)

    def handle(self, body: bytes) -> tuple[int, bytes]:
        status, answer, _ = self.loop.run_until_complete(
            asyncio.wait_for(self.rpc.handle_body(body), 10)
        )
        return status, answer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    serving = Served(tmp_path_factory.mktemp("fast-path") / "store")
    try:
        yield serving
    finally:
        serving.close()


def python_parse(rpc: StorageRpc, body: bytes) -> Call | None:
    """What the Python path makes of ``body`` as far as a store's values go (``handle_body`` and
    ``call``'s checks, then ``parse``), or None where it refuses it."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict) or request.get("method") != "store":
        return None
    params = request.get("params")
    if not isinstance(params, dict):
        return None
    try:
        return rpc.parse("store", params)
    except RpcError:
        return None


def check_agrees(rpc: StorageRpc, body: bytes) -> bool:
    """The fast path's reading of ``body`` is the Python parser's; whether it read it."""
    fast = _core.plain_store(body, LIMITS.max_message_bytes)
    if fast is None:
        return False
    call = python_parse(rpc, body)
    assert call is not None, body
    account, namespace, timestamp, ttl, data, digest = fast
    assert call.account == account
    values = call.values
    assert not values["signed"]
    assert (values["namespace"], values["timestamp"], values["data"]) == (
        namespace,
        timestamp,
        data,
    )
    assert values["expiry"] == timestamp + ttl
    assert values["sig_timestamp"] == timestamp
    assert values["hash"] == digest == message_hash(account, namespace, data)
    assert rpc_module._plain_store_call(fast).values == values
    return True


def plain(**fields: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "pubkey": ACCOUNT,
        "timestamp": 1_700_000_000_000,
        "ttl": TTL_MS,
        "data": base64.b64encode(b"hello").decode(),
    }
    params.update(fields)
    return {key: value for key, value in params.items() if value is not _ABSENT}


_ABSENT = object()

INTS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, -1, 1, 2**15, -(2**15) - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
)
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.just([]),
    st.just({}),
    st.just(_ABSENT),
)
NUMBER = st.one_of(INTS, ODD_VALUES, INTS.map(str))
PUBKEYS = st.one_of(
    st.just(ACCOUNT),
    st.just(ACCOUNT.upper()),
    st.just(ACCOUNT[:-1]),
    st.just(ACCOUNT + "0"),
    st.just(ACCOUNT[:-1] + "g"),
    st.just("05" + "ab" * 31 + "éa"),
    ODD_VALUES,
)
DATA = st.one_of(
    st.binary(max_size=120).map(lambda raw: base64.b64encode(raw).decode()),
    st.binary(min_size=1, max_size=40).map(lambda raw: base64.b64encode(raw).decode().rstrip("=")),
    st.sampled_from(["", "=", "aGVsbG8", "aGVsbG9=", "aGVs bG8=", "aGVsbG8=\n", "aGVsbG8=="]),
    st.text(alphabet="ABCab+/=\n -_", max_size=12),
    ODD_VALUES,
)
EXTRA = st.sampled_from(
    ["signature", "sig_timestamp", "expiry", "pubKey", "pubkey_ed25519", "subaccount", "other"]
)


VALID = {
    "pubkey": st.sampled_from([ACCOUNT, ACCOUNT.upper()]),
    "timestamp": st.integers(min_value=0, max_value=2**64 - 1),
    "ttl": st.integers(min_value=0, max_value=2**64 - 1),
    "data": st.binary(max_size=LIMITS.max_message_bytes).map(
        lambda raw: base64.b64encode(raw).decode()
    ),
    "namespace": st.one_of(st.just(_ABSENT), st.none(), st.integers(-(2**15), 2**15 - 1)),
}
SPOILED = {
    "pubkey": PUBKEYS,
    "timestamp": NUMBER,
    "ttl": NUMBER,
    "data": DATA,
    "namespace": st.one_of(INTS, ODD_VALUES),
}


@st.composite
def store_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A store request whose fields are valid but for a few (none, often), with maybe a key more
    in its params; and whether it was left as a plain store."""
    spoiled = draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2))
    params = plain(**{name: draw((SPOILED if name in spoiled else VALID)[name]) for name in VALID})
    extra = draw(st.lists(st.tuples(EXTRA, st.one_of(INTS, st.text(max_size=8))), max_size=1))
    params.update(extra)
    method = draw(st.sampled_from(["store", "store", "store", "retrieve", "Store", 5]))
    return {"method": method, "params": params}, not spoiled and not extra and method == "store"


@given(request=store_bodies(), top=st.sampled_from([None, None, ("id", 1), ("params", {})]))
def test_a_body_the_fast_path_reads_is_read_alike_by_the_python_parser(
    served: Served, request: tuple[dict[str, Any], bool], top: tuple[str, Any] | None
) -> None:
    fields, left_plain = request
    text = json.dumps(fields)
    read = check_agrees(served.rpc, text.encode())
    if left_plain:  # every plain store is read by the fast path, or it would not pay
        assert read, text
    if top is not None:  # a key after the params (a second "params" is a duplicate key)
        text = text[:-1] + f", {json.dumps(top[0])}: {json.dumps(top[1])}}}"
        assert not check_agrees(served.rpc, text.encode())


@pytest.mark.parametrize(
    "spelling",
    [
        lambda text: text.replace('"store"', '"st\\u006fre"'),  # an escape in the method
        lambda text: text.replace('"aGVsbG8="', '"aGVs\\u0062G8="'),  # ... in the data
        lambda text: text.replace('"pubkey":', '"pubkey": "' + ACCOUNT + '", "pubkey":'),
        lambda text: text.replace('"ttl":', '"ttl": 1, "ttl":'),  # the Python reader takes the last
        lambda text: " \n" + text.replace(":", " : ").replace(",", " ,\t") + "\r\n",
        lambda text: text + "x",
        lambda text: "\ufeff" + text,
        lambda text: text.replace("}}", "}, }"),
    ],
)
def test_json_spellings_are_read_alike_or_left_to_the_python_parser(
    served: Served, spelling: Any
) -> None:
    text = json.dumps({"method": "store", "params": plain()}, separators=(",", ":"))
    body = spelling(text).encode()
    check_agrees(served.rpc, body)


def test_the_stores_a_client_sends_to_a_public_inbox_take_the_fast_path(served: Served) -> None:
    for namespace in (0, -10, 10, 32760):
        params = store_params(ACCOUNT, os.urandom(40), TTL_MS, namespace=namespace)
        body = orjson.dumps({"method": "store", "params": params})
        assert check_agrees(served.rpc, body), namespace
    # A store the account signs is read by the Python parser, which checks its signature.
    identity = Identity.generate()
    signed = store_params(identity.session_id, b"x", TTL_MS, namespace=2, identity=identity)
    body = orjson.dumps({"method": "store", "params": signed})
    assert _core.plain_store(body, LIMITS.max_message_bytes) is None
    assert python_parse(served.rpc, body) is not None
    # Data past max_message_bytes is the Python parser's to refuse, with its own words.
    for size, read in ((96, True), (97, False)):
        data = base64.b64encode(bytes(size)).decode()
        body = orjson.dumps({"method": "store", "params": plain(data=data)})
        assert check_agrees(served.rpc, body) is read
        assert (python_parse(served.rpc, body) is not None) is read


def test_the_answers_are_the_same_whichever_path_reads_the_store(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stores answered through the fast path and through the Python parser alone (the
    fast path switched off): the same statuses and, for a refusal, the same words."""
    now = now_ms()

    def bodies() -> list[bytes]:
        data = base64.b64encode(os.urandom(16)).decode()  # fresh data: a new message each time
        return [
            orjson.dumps({"method": "store", "params": fields})
            for fields in (
                plain(timestamp=now, data=data),
                plain(timestamp=now, data=data),  # the same again: "already"
                plain(timestamp=now, ttl=5),  # too short a TTL: 403
                plain(timestamp=now + 3_600_000),  # from the future: 406
                plain(timestamp=now, namespace=3),  # not a public inbox: 401
                plain(pubkey="0a" + "cd" * 32, timestamp=now),  # an attachment account: 400
            )
        ]

    fast = [served.handle(body) for body in bodies()]
    monkeypatch.setattr(_core, "plain_store", lambda body, max_data: None)
    slow = [served.handle(body) for body in bodies()]
    assert [status for status, _ in fast] == [status for status, _ in slow]
    assert [status for status, _ in fast] == [200, 200, 403, 406, 401, 400]
    first, again = (orjson.loads(answer) for _, answer in fast[:2])
    assert "already" not in first["swarm"][served.rpc.own_hex]
    assert again["swarm"][served.rpc.own_hex]["already"] is True
    assert [answer for _, answer in fast[2:]] == [answer for _, answer in slow[2:]]
