"""Hostile input to what the storage RPC reads since it speaks Session's forms: subaccount tokens
and their signatures, revocation lists, expiry lists, batch / sequence / ifelse nesting, the
alternative parameter spellings. Each one gets its typed refusal (status and Session's text),
nothing runs that a refused request carried, and nothing of the input is echoed beyond a short,
bounded excerpt.

Five in-process nodes (every account's swarm is all of them), shared by the module.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from nacl.signing import SigningKey

from compat_helpers import (
    CompatNetwork,
    assert_refused,
    b64,
    ed_account,
    make_subaccount,
    now_ms,
    ok,
    retrieve_params,
    running_network,
    sign,
)

TTL = 3_600_000


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatNetwork]:
    yield from running_network(tmp_path_factory.mktemp("hostile-network"))


def _owner() -> tuple[SigningKey, str]:
    sk = SigningKey.generate()
    return sk, ed_account(3, sk)


def _store(account: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"pubkey": account, "timestamp": now_ms(), "ttl": TTL, "data": b64(data), **extra}


def _messages(net: CompatNetwork, sk: SigningKey, account: str) -> list[Any]:
    body = ok(net.rpc(0, "retrieve", retrieve_params(sk, account)))
    messages = body["messages"]
    assert isinstance(messages, list)
    return messages


def test_malformed_subaccount_tokens_and_signatures_are_refused_before_anything_runs(
    net: CompatNetwork,
) -> None:
    sk, account = _owner()
    sub_sk, token, token_sig = make_subaccount(3, sk, delete=True)
    ts = now_ms()
    base: dict[str, Any] = {
        "pubkey": account,
        "timestamp": ts,
        "signature": sign(sub_sk, f"retrieve{ts}"),
    }
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"subaccount": "!" * 48, "subaccount_sig": b64(token_sig)},
            "invalid subaccount: expected base64 or hex-encoded subaccount token",
        ),
        (
            {"subaccount": b64(token)[:-4], "subaccount_sig": b64(token_sig)},
            "invalid subaccount: expected base64 or hex-encoded subaccount token",
        ),
        (
            {"subaccount": token.hex() + "00", "subaccount_sig": b64(token_sig)},
            "invalid subaccount: expected base64 or hex-encoded subaccount token",
        ),
        (
            {"subaccount": b64(token)},
            "invalid subaccount: subaccount_sig is required when using subaccount",
        ),
        (
            {"subaccount": b64(token), "subaccount_sig": "abc"},
            "invalid subaccount signature: expected base64 encoded Ed25519 signature",
        ),
        (
            {"subaccount": b64(token), "subaccount_sig": 12},
            "invalid subaccount signature: expected base64 encoded Ed25519 signature",
        ),
    ]
    for extra, text in cases:
        assert_refused(net.rpc(0, "retrieve", base | extra), 400, f"invalid request: {text}")


def test_a_token_the_account_did_not_sign_or_that_lacks_a_flag_fails_like_a_bad_signature(
    net: CompatNetwork,
) -> None:
    sk, account = _owner()
    stranger = SigningKey.generate()
    sub_sk, token, token_sig = make_subaccount(3, sk, read=True, write=False)
    _, _, forged_sig = make_subaccount(3, stranger)
    data = os.urandom(32)
    ts = now_ms()
    store = _store(account, data, namespace=42, timestamp=ts)
    store["signature"] = sign(sub_sk, f"store42{ts}")
    # Read-only token: no write. Token signed by a stranger. Same text for both, nothing stored.
    for token_signature in (token_sig, forged_sig):
        refused = store | {"subaccount": b64(token), "subaccount_sig": b64(token_signature)}
        assert_refused(net.rpc(1, "store", refused), 401, "store signature verification failed")
    body = ok(net.rpc(2, "retrieve", retrieve_params(sk, account, namespace=42)))
    assert body["messages"] == []


def test_revocations_are_bounded_only_the_owner_may_revoke_and_a_revoked_token_stops_working(
    net: CompatNetwork,
) -> None:
    sk, account = _owner()
    sub_sk, token, token_sig = make_subaccount(3, sk, delete=True)
    ts = now_ms()
    too_many = [b64(os.urandom(36)) for _ in range(51)]
    params = {
        "pubkey": account,
        "timestamp": ts,
        "revoke": too_many,
        "signature": sign(sk, b"revoke_subaccount" + str(ts).encode()),
    }
    assert_refused(
        net.rpc(0, "revoke_subaccount", params),
        400,
        "invalid request: invalid revoke: cannot revoke more than 50 subaccounts at once",
    )
    params["revoke"] = ["not a token"]
    assert_refused(
        net.rpc(0, "revoke_subaccount", params),
        400,
        "invalid request: invalid revoke: expected base64 or hex-encoded subaccount token",
    )
    # A subaccount, even with every flag, cannot revoke: the request must be the owner's.
    by_sub = {
        "pubkey": account,
        "timestamp": ts,
        "revoke": [b64(token)],
        "signature": sign(sub_sk, b"revoke_subaccount" + str(ts).encode() + token),
        "subaccount": b64(token),
        "subaccount_sig": b64(token_sig),
    }
    assert_refused(
        net.rpc(0, "revoke_subaccount", by_sub),
        401,
        "revoke_subaccount signature verification failed",
    )
    read = retrieve_params(sub_sk, account) | {
        "subaccount": b64(token),
        "subaccount_sig": b64(token_sig),
    }
    assert ok(net.rpc(3, "retrieve", read))["messages"] == []
    owner = {
        "pubkey": account,
        "timestamp": ts,
        "revoke": [b64(token)],
        "signature": sign(sk, b"revoke_subaccount" + str(ts).encode() + token),
    }
    swarm = net.signed_swarm(
        ok(net.rpc(0, "revoke_subaccount", owner)),
        account.encode() + str(ts).encode() + token,
    )
    assert len(swarm) == 5
    # Revoked on every member: a read through any of them is refused.
    for member in range(5):
        assert_refused(
            net.rpc(member, "retrieve", read), 401, "retrieve signature verification failed"
        )


def test_expiry_lists_must_match_the_messages_and_modes_exclude_each_other(
    net: CompatNetwork,
) -> None:
    sk, account = _owner()
    h = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    exp = now_ms() + 60_000
    base: dict[str, Any] = {
        "pubkey": account,
        "messages": [h],
        "signature": sign(sk, f"expire{exp}{h}"),
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"expiry": []}, "'expiry' does not contain any expiration timestamps"),
        (
            {"expiry": [exp, exp]},
            "'expiry' must be a single expiry, or the same length as 'messages'",
        ),
        (
            {"expiry": exp, "shorten": True, "extend": True},
            "cannot specify both 'shorten' and 'extend'",
        ),
        ({"expiry": "soon"}, "Invalid value given for 'expiry': expected timestamp array"),
        ({"expiry": exp, "messages": []}, "messages does not contain any message hashes"),
        ({"expiry": exp, "messages": ["x" * 500]}, "invalid message hash: " + "x" * 64),
    ]
    for extra, text in cases:
        answer = net.rpc(0, "expire", base | extra)
        assert_refused(answer, 400, f"invalid request: {text}")
        assert len(answer.body) < 200  # a 500-character hash is not echoed whole


def test_a_batch_with_one_subrequest_that_does_not_parse_runs_none_of_them(
    net: CompatNetwork,
) -> None:
    sk, account = _owner()
    data = os.urandom(40)
    good = {"method": "store", "params": _store(account, data)}
    bad = {"method": "store", "params": _store(account, b"x") | {"ttl": "soon"}}
    for method in ("batch", "sequence"):
        answer = net.rpc(0, method, {"requests": [good, bad]})
        assert_refused(answer, 400, "invalid request: Invalid value given for 'ttl': \"soon\"")
    assert _messages(net, sk, account) == []


def test_nested_oversized_and_malformed_batches_get_their_texts(net: CompatNetwork) -> None:
    _, account = _owner()
    one = {"method": "info", "params": {}}
    cases = [
        ({"requests": []}, 'Invalid batch request: no valid "requests" field'),
        ({"requests": "all"}, 'Invalid batch request: no valid "requests" field'),
        ({"requests": [one] * 21}, "Invalid batch request: subrequest limit exceeded"),
        ({"requests": [7]}, "Invalid batch request: requests must be objects"),
        (
            {"requests": [{"method": "info"}]},
            "Invalid batch request: subrequests must have method/params keys",
        ),
        (
            {"requests": [{"method": "nope", "params": {}}]},
            'Invalid batch subrequest: invalid method "nope"',
        ),
        (
            {"requests": [{"method": "batch", "params": {"requests": [one]}}]},
            "Invalid batch subrequest: subrequests may not contain meta-requests",
        ),
        (
            {"requests": [{"method": "ifelse", "params": {}}]},
            "Invalid batch subrequest: subrequests may not contain meta-requests",
        ),
    ]
    for method in ("batch", "sequence"):
        for params, text in cases:
            assert_refused(net.rpc(0, method, params), 400, f"invalid request: {text}")
    body = ok(
        net.rpc(
            0, "batch", {"requests": [one, {"method": "get_swarm", "params": {"pubkey": account}}]}
        )
    )
    assert [r["code"] for r in body["results"]] == [200, 200]


def test_ifelse_takes_revision_and_version_conditions_and_refuses_block_heights(
    net: CompatNetwork,
) -> None:
    then = {"method": "info", "params": {}}
    for condition in ({"height_at_least": 1}, {"height_before": 10**9, "hf_at_least": [19]}):
        assert_refused(
            net.rpc(0, "ifelse", {"if": condition, "then": then}),
            400,
            "invalid request: Invalid ifelse request: this network has no block height "
            "(use hf or v conditions)",
        )
    assert_refused(
        net.rpc(0, "ifelse", {"if": {}, "then": then}),
        400,
        'invalid request: Invalid ifelse request: must specify at least one "if" condition',
    )
    assert_refused(
        net.rpc(0, "ifelse", {"if": {"hf_at_least": [19]}}),
        400,
        'invalid request: Invalid ifelse request: at least one of "then"/"else" required',
    )
    assert_refused(
        net.rpc(0, "ifelse", {"then": then}),
        400,
        'invalid request: Invalid ifelse request: no valid "if" field',
    )
    body = ok(
        net.rpc(0, "ifelse", {"if": {"hf_at_least": [19, 4], "v_before": [99]}, "then": then})
    )
    assert body["condition"] is True
    assert body["result"]["code"] == 200
    body = ok(net.rpc(0, "ifelse", {"if": {"hf_at_least": [19, 5]}, "then": then}))
    assert body["condition"] is False
    assert "result" not in body


def test_timestamps_namespaces_lifetimes_and_keys_are_read_as_session_reads_them(
    net: CompatNetwork,
) -> None:
    sk, account = _owner()
    seconds = now_ms() // 1000
    cases: list[tuple[str, dict[str, Any], str]] = [
        (
            "store",
            _store(account, b"a", timestamp="12x"),
            "Invalid value given for 'timestamp': \"12x\"",
        ),
        (
            "store",
            _store(account, b"a") | {"expiry": now_ms() + TTL},
            "Cannot specify both 'expiry' and 'ttl'",
        ),
        (
            "store",
            {k: v for k, v in _store(account, b"a").items() if k != "ttl"},
            "Required field 'expiry' or 'ttl' missing",
        ),
        (
            "store",
            _store(account, b"a", namespace=40000),
            "Invalid value given for 'namespace': value out of range",
        ),
        (
            "store",
            _store(account, b"a", namespace="all"),
            "Invalid value given for 'namespace': expected 16-bit integer",
        ),
        (
            "store",
            _store(account, b"a") | {"data": "%%%"},
            "Invalid 'data' value: not base64 encoded",
        ),
        (
            "store",
            _store(account, b"a") | {"data": "A" * 102_408},
            "Message body exceeds maximum allowed length of 76800 bytes",
        ),
        (
            "store",
            _store(account, b"a") | {"pubkey": "03" + "zz" * 32},
            "Pubkey must be 66 hex digits (33 bytes) long",
        ),
        (
            "delete_all",
            {"pubkey": account, "timestamp": 86_400, "signature": sign(sk, "x")},
            "Invalid timestamp for 'timestamp': timestamp must be in milliseconds",
        ),
        (
            "retrieve",
            retrieve_params(sk, account) | {"pubkey_ed25519": sk.verify_key.encode().hex()},
            "pubkey_ed25519 is only permitted for 05[...] pubkeys",
        ),
        (
            "retrieve",
            retrieve_params(sk, account) | {"signature": "c2ln"},
            "invalid signature: expected base64 encoded Ed25519 signature",
        ),
        (
            "retrieve",
            retrieve_params(sk, account) | {"cursor": "not-a-cursor"},
            "a cursor is 54 characters of unpadded base64url",
        ),
        (
            "retrieve",
            retrieve_params(sk, account) | {"last_hash": "short"},
            "Invalid last_hash: expected base64 (43 chars)",
        ),
    ]
    for method, params, text in cases:
        answer = net.rpc(0, method, params)
        assert_refused(answer, 400, f"invalid request: {text}")
    # A timestamp in seconds passes as milliseconds (early 1970) and is then far from the clock.
    params = {
        "pubkey": account,
        "timestamp": seconds,
        "signature": sign(sk, f"delete_all{seconds}"),
    }
    assert_refused(
        net.rpc(0, "delete_all", params), 406, "delete_all timestamp too far from current time"
    )
    assert _messages(net, sk, account) == []


def test_requests_that_are_not_method_calls_get_short_text_answers(net: CompatNetwork) -> None:
    port = net.members[0].port
    long_name = "m" * 10_000
    assert_refused(net.rpc(0, long_name, {}), 400, "no method " + "m" * 64)
    assert_refused(net.rpc(0, "info", None), 400, "invalid json: no `params` field")
    import http.client  # noqa: PLC0415  (raw bodies this test alone sends)

    for raw, text in (
        (b"{not json", "invalid json"),
        (b'["info"]', "invalid json"),
        (b'{"params": {}}', "invalid json: no `method` field"),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/storage_rpc/v1", raw, {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert (response.status, response.read().decode()) == (400, text)
            assert response.getheader("Content-Type", "").startswith("text/plain")
        finally:
            conn.close()
    info = ok(net.rpc(0, "info", {}))
    assert info["version"] == [2, 8, 0]
    assert info["hf"] == [19, 4]
    assert json.dumps(info).count(net.members[0].ed25519) == 1
