"""Veil's client storage RPC against the behaviour of Session's storage server.

Each test checks what one test of oxen-storage-server's network-test suite
(``session-storage-server network-tests/``) checks against a live swarm, here against five
in-process Veil nodes (every account's swarm is all five) reached over ``POST /storage_rpc/v1``
with ``{"method": M, "params": P}``, P being the JSON the peer test sends as ``storage.M``. A 200
answer is JSON; a refusal is oxen's status with oxen's plain-text reason as the body.

Not mirrored: test_monitor.py (OxenMQ push subscriptions) and test_batch.py::test_batch_bt
(bt-encoded requests), which have no HTTP form; the block-height conditions of test_ifelse.py (Veil
has no blockchain).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.signing import SigningKey

from compat_helpers import (
    DAY_MS,
    MAX_EXPIRY_MS,
    SECOND_MS,
    Answer,
    CompatNetwork,
    Stored,
    account_id,
    assert_refused,
    b64,
    ed_account,
    make_subaccount,
    message_json,
    msg_hash,
    now_ms,
    ok,
    retrieve_params,
    running_network,
    sign,
    signed_by,
    store_n,
)

A, B = 0, 1
"""Two different members of every swarm (the peer tests' ``conns[0]`` and ``conns[1]``)."""
NO_SUCH_HASH = "bepQtTaYrzcuCXO3fZkmk/h3xkMQ3vCh94i5HzLmj3I"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatNetwork]:
    yield from running_network(tmp_path_factory.mktemp("compat-network"))


def _store(
    net: CompatNetwork,
    member: int,
    account: str,
    data: bytes,
    *,
    timestamp: int,
    ttl: int = DAY_MS,
    namespace: int = 0,
    signer: SigningKey | None = None,
    extra: dict[str, Any] | None = None,
) -> Answer:
    """A store as the peer tests send it: signed over ``"store" ‖ namespace ‖ timestamp`` when
    ``signer`` is given; ``extra`` parameters added last."""
    params: dict[str, Any] = {"pubkey": account, "timestamp": timestamp, "ttl": ttl}
    if namespace:
        params["namespace"] = namespace
    params["data"] = b64(data)
    if signer is not None:
        params["signature"] = sign(signer, f"store{namespace or ''}{timestamp}")
    return net.rpc(member, "store", params | (extra or {}))


def _without_t_hf(body: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(body.get("t"), int), body
    assert isinstance(body.get("hf"), list), body
    return {k: v for k, v in body.items() if k not in ("t", "hf")}


# --- get_swarm ----------------------------------------------------------------------------------


def test_get_swarm(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/ss.py::get_swarm and util.py::sn_address, the
    look-up every peer test starts with: the swarm's members with their addresses and keys, in
    oxen's form. Not checked: port_omq, port_quic and address, which Veil deliberately leaves out
    (no OxenMQ, no legacy keys: docs/rpc.md, "Differs from Session"); sn_address's port_omq is
    port_https here."""
    sk = SigningKey.generate()
    accounts = [
        ed_account(5, sk),
        account_id(5, sk.to_curve25519_private_key().public_key.encode()),
        ed_account(3, sk),
    ]
    by_key = {m.ed25519: m for m in net.members}
    for account in accounts:
        before = now_ms()
        body = ok(net.rpc(A, "get_swarm", {"pubkey": account}))
        swarm_id = body.get("swarm")
        assert isinstance(swarm_id, str), body
        assert swarm_id, body
        assert all(c in "0123456789abcdef" for c in swarm_id), body
        assert before - 30_000 <= body.get("t", 0) <= now_ms() + 30_000, body
        assert isinstance(body.get("hf"), list), body
        snodes = body.get("snodes")
        assert isinstance(snodes, list), body
        assert all(isinstance(s, dict) for s in snodes), snodes
        assert sorted(str(s.get("pubkey_ed25519")) for s in snodes) == sorted(by_key), snodes
        for snode in snodes:
            member = by_key[snode["pubkey_ed25519"]]
            assert snode.get("ip") == "127.0.0.1", snode
            assert snode.get("port_https") == member.port, snode
            assert snode.get("port") == str(member.port), snode
            assert snode.get("pubkey_x25519") == member.x25519, snode
            legacy = snode.get("pubkey_legacy")
            assert isinstance(legacy, str), snode
            assert len(legacy) == 64, snode
            assert all(c in "0123456789abcdef" for c in legacy), snode


# --- test_store_retrieve.py ---------------------------------------------------------------------


def test_store(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_store_retrieve.py::test_store."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    body = ok(_store(net, A, account, b"abc 123", timestamp=ts))
    digest = msg_hash(account, 0, b"abc 123")
    swarm = net.signed_swarm(body, digest.encode())
    assert all(v.get("hash") == digest for v in swarm.values()), swarm
    assert body.get("hash") == digest, body
    assert ts - 30_000 <= body.get("t", 0) <= ts + 30_000, body


def test_store_retrieve_unauthenticated(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_store_retrieve.py::test_store_retrieve_unauthenticated."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    body = ok(_store(net, A, account, b"abc 123", timestamp=now_ms()))
    digest = msg_hash(account, 0, b"abc 123")
    assert all(v.get("hash") == digest for v in net.swarm_results(body).values()), body
    answer = net.rpc(B, "retrieve", {"pubkey": account})
    assert_refused(answer, 401, "retrieve: request signature required")


def test_store_retrieve_authenticated(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_store_retrieve.py::test_store_retrieve_authenticated: a 05 account of an
    X25519 key, signed for with its Ed25519 key named by pubkey_ed25519, and a 03 account of the
    Ed25519 key itself."""
    sk = SigningKey.generate()
    xpk = sk.to_curve25519_private_key().public_key.encode()
    session = account_id(5, xpk)
    group = ed_account(3, sk)
    ts = now_ms()
    ttl = DAY_MS
    first = ok(_store(net, A, session, b"abc 123", timestamp=ts, ttl=ttl))
    second = ok(_store(net, B, group, b"def 456", timestamp=ts, ttl=ttl))
    hash1 = msg_hash(session, 0, b"abc 123")
    hash2 = msg_hash(group, 0, b"def 456")
    assert all(v.get("hash") == hash1 for v in net.swarm_results(first).values()), first
    assert all(v.get("hash") == hash2 for v in net.swarm_results(second).values()), second

    sig = sign(sk, f"retrieve{ts}")
    badsig = sig[:4] + ("z" if sig[4] != "z" else "a") + sig[5:]
    ed_hex = sk.verify_key.encode().hex()

    good1 = ok(
        net.rpc(
            A,
            "retrieve",
            {"pubkey": session, "timestamp": ts, "signature": sig, "pubkey_ed25519": ed_hex},
        )
    )
    assert good1.get("messages") == [
        {"data": b64(b"abc 123"), "expiration": ts + ttl, "hash": hash1, "timestamp": ts}
    ], good1
    good2 = ok(net.rpc(B, "retrieve", {"pubkey": group, "timestamp": ts, "signature": sig}))
    assert good2.get("messages") == [
        {"data": b64(b"def 456"), "expiration": ts + ttl, "hash": hash2, "timestamp": ts}
    ], good2

    bad1 = net.rpc(
        A,
        "retrieve",
        {"pubkey": session, "timestamp": ts, "signature": badsig, "pubkey_ed25519": ed_hex},
    )
    assert_refused(bad1, 401, "retrieve signature verification failed")
    bad2 = net.rpc(B, "retrieve", {"pubkey": group, "timestamp": ts, "signature": badsig})
    assert_refused(bad2, 401, "retrieve signature verification failed")
    bad3 = net.rpc(B, "retrieve", {"pubkey": group, "timestamp": ts})
    assert_refused(bad3, 400, "invalid request: Required field 'signature' missing")


def _assert_are(messages: Any, stored: list[Stored]) -> None:
    """``messages`` (a retrieve's) are exactly ``stored``, with their data, timestamp and
    expiry."""
    assert isinstance(messages, list), messages
    by_hash = {m.hash: m for m in stored}
    assert sorted(m.get("hash") for m in messages) == sorted(by_hash), messages
    for m in messages:
        assert m == message_json(by_hash[m["hash"]]), m


def test_store_retrieve_multiple(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_store_retrieve.py::test_store_retrieve_multiple: retrieve everything, then
    after a last_hash, then after an unknown last_hash (everything again)."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    base = b"This is my message \x00<--that's a null, this is invalid utf8: \x80\xff"
    first = store_n(net, A, account, base, 5)
    ts = now_ms()
    body = ok(net.rpc(B, "retrieve", retrieve_params(sk, account, timestamp=ts)))
    _assert_are(body.get("messages"), first)

    second = store_n(net, B, account, b"another msg", 6)
    params = retrieve_params(sk, account, timestamp=ts, last_hash=first[4].hash)
    body = ok(net.rpc(A, "retrieve", params))
    _assert_are(body.get("messages"), second)

    params = retrieve_params(
        sk, account, timestamp=ts, last_hash="0123456789012345678901234567890123456789123"
    )
    body = ok(net.rpc(B, "retrieve", params))
    _assert_are(body.get("messages"), first + second)


def test_store_sig_timestamp(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_store_retrieve.py::test_store_sig_timestamp: a signed store's signature
    timestamp is sig_timestamp when given, else timestamp, and must be current; the message's own
    timestamp may be 100 s old."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ns = 123
    ts = now_ms()
    body = ok(_store(net, A, account, b"msg1", timestamp=ts, namespace=ns, signer=sk))
    assert body.get("hash") == msg_hash(account, ns, b"msg1"), body

    old = ts - 100_000
    answer = _store(net, A, account, b"msg2", timestamp=old, namespace=ns, signer=sk)
    assert_refused(answer, 406, "store signature timestamp too far from current time")

    sig_ts = now_ms()
    params = {
        "pubkey": account,
        "namespace": ns,
        "timestamp": old,
        "sig_timestamp": sig_ts,
        "ttl": DAY_MS,
        "data": b64(b"msg3"),
        "signature": sign(sk, f"store{ns}{sig_ts}"),
    }
    body = ok(net.rpc(A, "store", params))
    swarm = net.swarm_results(body)
    assert not any(v.get("failed", False) for v in swarm.values()), swarm
    assert body.get("hash") == msg_hash(account, ns, b"msg3"), body
    assert [v.get("hash") for v in swarm.values()] == [body["hash"]] * len(swarm), swarm


# --- test_deletes.py ----------------------------------------------------------------------------


def _retrieved(net: CompatNetwork, member: int, sk: SigningKey, account: str, **kw: Any) -> Any:
    """The messages a signed retrieve answers."""
    messages = ok(net.rpc(member, "retrieve", retrieve_params(sk, account, **kw))).get("messages")
    assert isinstance(messages, list), messages
    return messages


def test_delete_all(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_deletes.py::test_delete_all."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 5)
    ts = now_ms()
    params = {"pubkey": account, "timestamp": ts, "signature": sign(sk, f"delete_all{ts}")}
    body = ok(net.rpc(B, "delete_all", params))
    hashes = sorted(m.hash for m in msgs)
    signed = "".join([account, str(ts), *hashes]).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("deleted") == hashes, result
    assert _retrieved(net, A, sk, account, timestamp=ts) == []


def test_delete_all_all(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_deletes.py::test_delete_all_all:
    namespace "all" deletes every namespace and answers the hashes by namespace."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 5)
    ts = now_ms()
    stored = ok(
        _store(net, A, account, b"abc 123", timestamp=ts, ttl=30_000, namespace=-42, signer=sk)
    )
    h42 = stored.get("hash")
    assert h42 == msg_hash(account, -42, b"abc 123"), stored

    params = {
        "pubkey": account,
        "timestamp": ts,
        "signature": sign(sk, f"delete_allall{ts}"),
        "namespace": "all",
    }
    body = ok(net.rpc(B, "delete_all", params))
    by_namespace = {"-42": [h42], "0": sorted(m.hash for m in msgs)}
    every = sorted([h42, *(m.hash for m in msgs)])
    signed = "".join([account, str(ts), *every]).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("deleted") == by_namespace, result
    assert _retrieved(net, A, sk, account, timestamp=ts) == []


def test_stale_delete_all(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_deletes.py::test_stale_delete_all: a
    delete_all timestamp 2 minutes old or 2 minutes ahead is refused. (The peer test's second
    request re-signs for the later time but sends the old timestamp; here both the timestamp and
    the signature are 2 minutes ahead, as its comment intends.)"""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    store_n(net, A, account, b"omg123", 5)
    for offset in (-120_000, 120_000):
        ts = now_ms() + offset
        params = {"pubkey": account, "timestamp": ts, "signature": sign(sk, f"delete_all{ts}")}
        answer = net.rpc(A, "delete_all", params)
        assert_refused(answer, 406, "delete_all timestamp too far from current time")
    assert len(_retrieved(net, A, sk, account)) == 5


def test_delete(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_deletes.py::test_delete: an 02 account;
    the answer lists what was deleted, sorted, whatever the order asked."""
    sk = SigningKey.generate()
    account = ed_account(2, sk)
    msgs = store_n(net, A, account, b"omg123", 5)
    deleted = sorted(msgs[i].hash for i in (1, 4))
    asked = sorted([*deleted, "garbageYrzcuCXO3fZkmk/h3xkMQ3vCh94i5HzLmj3I"], reverse=True)
    params = {
        "pubkey": account,
        "messages": asked,
        "signature": sign(sk, "delete" + "".join(asked)),
    }
    body = ok(net.rpc(B, "delete", params))
    signed = "".join([account, *asked, *deleted]).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("deleted") == deleted, result
    left = _retrieved(net, A, sk, account)
    assert sorted(m.get("hash") for m in left) == sorted(msgs[i].hash for i in (0, 2, 3))


def test_delete_required(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_deletes.py::test_delete_required: with
    required=true, a delete that deletes nothing anywhere is a 404; without it, a 200."""
    sk = SigningKey.generate()
    account = ed_account(2, sk)
    msgs = store_n(net, A, account, b"omg123", 2)
    asked = [*sorted(m.hash for m in msgs), "garbageYrzcuCXO3fZkmk/h3xkMQ3vCh94i5HzLmj3I"]
    params: dict[str, Any] = {
        "pubkey": account,
        "messages": asked,
        "required": True,
        "signature": sign(sk, "delete" + "".join(asked)),
    }
    ok(net.rpc(B, "delete", params))
    again = net.rpc(B, "delete", params)
    assert again.status == 404, again
    del params["required"]
    ok(net.rpc(B, "delete", params))


def _delete_before(
    net: CompatNetwork, member: int, sk: SigningKey, account: str, before: int, expected: list[str]
) -> None:
    """A delete_before that every member answers with ``expected`` (sorted), signed over
    account ‖ before ‖ deleted hashes."""
    params = {
        "pubkey": account,
        "before": before,
        "signature": sign(sk, f"delete_before{before}"),
    }
    body = ok(net.rpc(member, "delete_before", params))
    signed = "".join([account, str(before), *expected]).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("deleted") == expected, result


def test_delete_before(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_deletes.py::test_delete_before: messages
    with a timestamp at or before ``before`` go, in four steps (one deleting nothing)."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 10)
    assert all(msgs[i].timestamp > msgs[i + 1].timestamp for i in range(9))

    before = msgs[8].timestamp
    _delete_before(net, B, sk, account, before, sorted(m.hash for m in msgs[8:]))
    assert len(_retrieved(net, A, sk, account, timestamp=before)) == 8

    before = msgs[7].timestamp - 1
    _delete_before(net, A, sk, account, before, [])
    assert len(_retrieved(net, A, sk, account, timestamp=before)) == 8

    before = msgs[1].timestamp
    _delete_before(net, A, sk, account, before, sorted(m.hash for m in msgs[1:8]))
    assert len(_retrieved(net, A, sk, account, timestamp=before)) == 1

    before = msgs[0].timestamp + 1
    _delete_before(net, B, sk, account, before, [msgs[0].hash])
    assert _retrieved(net, B, sk, account, timestamp=before) == []


# --- test_expire.py -----------------------------------------------------------------------------


def test_expire_all(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_expire.py::test_expire_all: only later
    expiries are brought down to the one given."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 5)
    expiry = msgs[2].expiry
    params = {"pubkey": account, "expiry": expiry, "signature": sign(sk, f"expire_all{expiry}")}
    body = ok(net.rpc(B, "expire_all", params))
    updated = sorted(msgs[i].hash for i in (0, 1))
    signed = "".join([account, str(expiry), *updated]).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("updated") == updated, result

    messages = _retrieved(net, A, sk, account, timestamp=expiry)
    assert [m.get("expiration") for m in messages] == [
        expiry,
        expiry,
        expiry,
        msgs[3].expiry,
        msgs[4].expiry,
    ], messages


def test_stale_expire_all(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_expire.py::test_stale_expire_all."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    store_n(net, A, account, b"omg123", 5)
    expiry = now_ms() - 120_000
    params = {"pubkey": account, "expiry": expiry, "signature": sign(sk, f"expire_all{expiry}")}
    answer = net.rpc(A, "expire_all", params)
    assert_refused(answer, 406, "expire_all timestamp should be >= current time")


def test_expire(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_expire.py::test_expire: expire sets the
    expiry of the messages found (earlier or later), signed over account ‖ expiry ‖ hashes asked ‖
    hashes updated; then the same with a single hash. (The peer's check of the retrieved expiries
    is weakened by operator precedence for the messages not set to the new expiry; here every
    message's expiry is checked.)"""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 10)
    expiry = msgs[6].expiry
    targets = (0, 1, 5, 6, 7, 9)
    asked = sorted([*(msgs[i].hash for i in targets), NO_SUCH_HASH], reverse=True)
    updated = sorted(msgs[i].hash for i in targets)
    params = {
        "pubkey": account,
        "messages": asked,
        "expiry": expiry,
        "signature": sign(sk, f"expire{expiry}" + "".join(asked)),
    }
    body = ok(net.rpc(B, "expire", params))
    signed = "".join([account, str(expiry), *asked, *updated]).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("updated") == updated, result

    messages = _retrieved(net, A, sk, account, timestamp=expiry)
    assert [m.get("hash") for m in messages] == [m.hash for m in msgs], messages
    assert [m.get("expiration") for m in messages] == [
        expiry if i in targets else msgs[i].expiry for i in range(10)
    ], messages

    one = [msgs[4].hash]
    params = {
        "pubkey": account,
        "messages": one,
        "expiry": expiry,
        "signature": sign(sk, f"expire{expiry}{one[0]}"),
    }
    body = ok(net.rpc(B, "expire", params))
    signed = f"{account}{expiry}{one[0]}{one[0]}".encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("updated") == one, result


def _expire_request(
    sk: SigningKey, account: str, hashes: list[str], expiry: int, mode: str = ""
) -> dict[str, Any]:
    """An expire subrequest signed over ``"expire" ‖ mode ‖ expiry ‖ hashes``."""
    params: dict[str, Any] = {"pubkey": account, "messages": hashes, "expiry": expiry}
    if mode:
        params[mode] = True
    params["signature"] = sign(sk, f"expire{mode}{expiry}" + "".join(hashes))
    return {"method": "expire", "params": params}


def _get_expiries_request(
    sk: SigningKey, account: str, hashes: list[str], ts: int
) -> dict[str, Any]:
    return {
        "method": "get_expiries",
        "params": {
            "pubkey": account,
            "messages": hashes,
            "timestamp": ts,
            "signature": sign(sk, f"get_expiries{ts}" + "".join(hashes)),
        },
    }


def _retrieve_request(sk: SigningKey, account: str, ts: int) -> dict[str, Any]:
    return {"method": "retrieve", "params": retrieve_params(sk, account, timestamp=ts)}


def _sequence_bodies(net: CompatNetwork, member: int, requests: list[Any]) -> list[Any]:
    """The bodies of a sequence whose subrequests all answered 200."""
    body = ok(net.rpc(member, "sequence", {"requests": requests}))
    results = body.get("results")
    assert isinstance(results, list), body
    assert [r.get("code") for r in results] == [200] * len(requests), results
    return [r.get("body") for r in results]


def test_expire_extend(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_expire.py::test_expire_extend: expiries
    pushed out (in a sequence), one beyond the longest lifetime and clamped to now + 30 days."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 10)
    now = now_ms()
    assert all(m.expiry < now + 60_000 for m in msgs)
    exp_5min = now + 5 * 60 * SECOND_MS
    exp_long = now + 31 * DAY_MS
    first, last = [m.hash for m in msgs[:8]], [m.hash for m in msgs[8:]]
    bodies = _sequence_bodies(
        net,
        A,
        [
            _expire_request(sk, account, first, exp_5min),
            _expire_request(sk, account, last, exp_long),
            _retrieve_request(sk, account, now),
        ],
    )
    for result in net.swarm_results(bodies[0]).values():
        assert result.get("expiry") == exp_5min, result
        assert result.get("updated") == sorted(first), result
    for result in net.swarm_results(bodies[1]).values():
        assert isinstance(result.get("expiry"), int), result
        assert result["expiry"] < exp_long, result
        assert abs(result["expiry"] - (now_ms() + MAX_EXPIRY_MS)) <= 5_000, result
        assert result.get("updated") == sorted(last), result

    messages = bodies[2].get("messages")
    assert sorted(m.get("hash") for m in messages) == sorted(m.hash for m in msgs), messages
    by_hash = {m["hash"]: m for m in messages}
    for m in msgs:
        assert by_hash[m.hash].get("timestamp") == m.timestamp, by_hash[m.hash]
    for m in msgs[:8]:
        assert by_hash[m.hash].get("expiration") == exp_5min, by_hash[m.hash]
    for m in msgs[8:]:
        expiration = by_hash[m.hash].get("expiration", 0)
        assert abs(expiration - (now_ms() + MAX_EXPIRY_MS)) <= 5_000, by_hash[m.hash]


def _check_expire(
    net: CompatNetwork,
    body: Any,
    account: str,
    expiry: int,
    asked: list[str],
    updated: list[str],
    unchanged: dict[str, int],
) -> None:
    """An expire with shorten or extend: every member answers ``expiry``, ``updated`` (sorted) and
    ``unchanged`` (the found messages not changed, with their expiries), signed over account ‖
    expiry ‖ hashes asked ‖ updated ‖ (hash ‖ expiry of each unchanged, by hash)."""
    signed = "".join(
        [account, str(expiry), *asked, *updated, *(f"{h}{unchanged[h]}" for h in sorted(unchanged))]
    ).encode()
    for result in net.signed_swarm(body, signed).values():
        assert result.get("expiry") == expiry, result
        assert result.get("updated") == updated, result
        assert result.get("unchanged") == unchanged, result


def test_expire_shorten_extend(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_expire.py::test_expire_shorten_extend:
    shorten-only and extend-only expires, with get_expiries between them, in one sequence.
    (The peer's last get_expiries expects message 0 at 30 s, though the extend before it moved it
    to 45 s, as the peer's own retrieve in the same sequence shows; here it is expected at 45 s.)"""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    now = now_ms()
    msgs = store_n(net, A, account, b"omg123", 10, now=now, ttl_ms=60 * SECOND_MS)
    assert [m.expiry for m in msgs] == [now + x * SECOND_MS for x in range(60, 50, -1)]
    hashes = [m.hash for m in msgs]
    missing = [
        "///////////////////////////////////////////",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq",
        "rstuvwxyz0123456789+/ABCDEFGHIJKLMNOPQRSTUV",
    ]
    exp_20s, exp_30s, exp_45s = now + 20_000, now + 30_000, now + 45_000
    exp_10m = now + 10 * 60 * SECOND_MS

    def original(i: int) -> int:
        return now + (60 - i) * SECOND_MS

    def expiries() -> dict[str, Any]:
        return _get_expiries_request(sk, account, hashes + missing, now)

    e = _sequence_bodies(
        net,
        A,
        [
            _expire_request(sk, account, hashes[0:4] + missing, exp_30s, "shorten"),
            expiries(),
            _expire_request(sk, account, hashes[4:8] + missing, exp_20s, "shorten"),
            expiries(),
            _expire_request(sk, account, hashes[6:], exp_10m, "shorten"),
            expiries(),
            _expire_request(sk, account, hashes[2:6] + missing, exp_20s, "shorten"),
            expiries(),
            _expire_request(sk, account, hashes + missing, exp_45s, "extend"),
            _retrieve_request(sk, account, now),
            _get_expiries_request(sk, account, hashes[:1], now),
        ],
    )

    _check_expire(net, e[0], account, exp_30s, hashes[0:4] + missing, sorted(hashes[0:4]), {})
    assert e[1] == {
        "expiries": {
            **dict.fromkeys(hashes[0:4], exp_30s),
            **{hashes[i]: original(i) for i in range(4, 10)},
        }
    }
    _check_expire(net, e[2], account, exp_20s, hashes[4:8] + missing, sorted(hashes[4:8]), {})
    after_two = {
        **dict.fromkeys(hashes[0:4], exp_30s),
        **dict.fromkeys(hashes[4:8], exp_20s),
        **{hashes[i]: original(i) for i in range(8, 10)},
    }
    assert e[3] == {"expiries": after_two}
    _check_expire(
        net,
        e[4],
        account,
        exp_10m,
        hashes[6:],
        [],
        {hashes[6]: exp_20s, hashes[7]: exp_20s, hashes[8]: original(8), hashes[9]: original(9)},
    )
    assert e[5] == {"expiries": after_two}
    _check_expire(
        net,
        e[6],
        account,
        exp_20s,
        hashes[2:6] + missing,
        sorted(hashes[2:4]),
        {hashes[4]: exp_20s, hashes[5]: exp_20s},
    )
    assert e[7] == {
        "expiries": {
            **dict.fromkeys(hashes[0:2], exp_30s),
            **dict.fromkeys(hashes[2:8], exp_20s),
            **{hashes[i]: original(i) for i in range(8, 10)},
        }
    }
    _check_expire(
        net,
        e[8],
        account,
        exp_45s,
        hashes + missing,
        sorted(hashes[0:8]),
        {hashes[8]: original(8), hashes[9]: original(9)},
    )

    retrieved = e[9]
    assert retrieved.get("hf", []) >= [19, 3], retrieved
    assert now - 60_000 <= retrieved.get("t", 0) <= now + 60_000, retrieved
    final = [exp_45s] * 8 + [original(8), original(9)]
    assert _without_t_hf(retrieved) == {
        "messages": [message_json(m, final[i]) for i, m in enumerate(msgs)],
        "more": False,
    }
    assert e[10] == {"expiries": {hashes[0]: exp_45s}}


def test_expire_multi(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_expire.py::test_expire_multi: one expiry
    per message; every member answers the updated hashes (sorted) with their expiries, signed over
    account ‖ updated expiries ‖ hashes asked ‖ updated hashes."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    msgs = store_n(net, A, account, b"omg123", 10)
    targets = [0, 1, 3, 6, 7, 9]
    delta = {i: 1 + int.from_bytes(os.urandom(2), "big") % 5_000 for i in targets}
    pairs = [(msgs[i].hash, msgs[i].expiry + delta[i]) for i in targets]
    if pairs[0][0] < pairs[1][0]:  # not asked in sorted order
        pairs[0], pairs[1] = pairs[1], pairs[0]
    asked = [h for h, _ in pairs] + [NO_SUCH_HASH]
    expiries = [e for _, e in pairs] + [now_ms() + 12_345]
    applied = sorted(pairs)
    assert asked[:2] != [h for h, _ in applied[:2]]

    params = {
        "pubkey": account,
        "messages": asked,
        "expiry": expiries,
        "signature": sign(sk, "expire" + "".join(map(str, expiries)) + "".join(asked)),
    }
    body = ok(net.rpc(B, "expire", params))
    signed = "".join(
        [account, *(str(e) for _, e in applied), *asked, *(h for h, _ in applied)]
    ).encode()
    for result in net.signed_swarm(body, signed).values():
        assert {k: v for k, v in result.items() if k != "signature"} == {
            "updated": [h for h, _ in applied],
            "expiry": [e for _, e in applied],
        }, result

    messages = _retrieved(net, A, sk, account)
    assert messages == [message_json(m, m.expiry + delta.get(i, 0)) for i, m in enumerate(msgs)]


# --- test_subaccount_auth.py --------------------------------------------------------------------


def _sub(token: bytes, token_sig: bytes) -> dict[str, str]:
    return {"subaccount": b64(token), "subaccount_sig": b64(token_sig)}


def test_retrieve_subaccount(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_subaccount_auth.py::test_retrieve_subaccount."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    ts = now_ms()
    body = ok(_store(net, A, account, b"abc 123", timestamp=ts, namespace=42, signer=sk))
    digest = msg_hash(account, 42, b"abc 123")
    assert all(v.get("hash") == digest for v in net.swarm_results(body).values()), body

    subkey, token, token_sig = make_subaccount(3, sk)
    assert token.hex() == "03030000" + subkey.verify_key.encode().hex()
    params = {
        "pubkey": account,
        "namespace": 42,
        "timestamp": ts,
        "signature": sign(subkey, f"retrieve42{ts}"),
        **_sub(token, token_sig),
    }
    answer = ok(net.rpc(A, "retrieve", params))
    assert answer.get("hf", []) >= [19, 0], answer
    assert [m.get("hash") for m in answer.get("messages", [])] == [digest], answer


def test_store_subaccount(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_subaccount_auth.py::test_store_subaccount."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    ts = now_ms()
    subkey, token, token_sig = make_subaccount(3, sk)
    params = {
        "pubkey": account,
        "namespace": 42,
        "timestamp": ts,
        "ttl": DAY_MS,
        "data": b64(b"abc 123"),
        "signature": sign(subkey, f"store42{ts}"),
        **_sub(token, token_sig),
    }
    body = ok(net.rpc(A, "store", params))
    assert body.get("hf", []) >= [19, 0], body
    digest = msg_hash(account, 42, b"abc 123")
    assert all(v.get("hash") == digest for v in net.swarm_results(body).values()), body

    answer = ok(net.rpc(A, "retrieve", retrieve_params(sk, account, timestamp=ts, namespace=42)))
    assert answer.get("hf", []) >= [19, 0], answer
    assert [m.get("hash") for m in answer.get("messages", [])] == [digest], answer


def test_expire_subaccount(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_subaccount_auth.py::test_expire_subaccount:
    a subaccount without delete may only push expiries out."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    msgs = store_n(net, A, account, b"omg123", 3)
    now = now_ms()
    assert all(m.expiry < now + 60_000 for m in msgs)
    subkey, token, token_sig = make_subaccount(3, sk)

    def expire(hashes: list[str], expiry: int) -> dict[str, Any]:
        return {
            "pubkey": account,
            **_sub(token, token_sig),
            "messages": hashes,
            "expiry": expiry,
            "signature": sign(subkey, f"expire{expiry}" + "".join(hashes)),
        }

    one_day = now + DAY_MS
    body = ok(net.rpc(A, "expire", expire([msgs[0].hash], one_day)))
    for result in net.swarm_results(body).values():
        assert result.get("expiry") == one_day, result
        assert result.get("updated") == [msgs[0].hash], result

    half_day = now + DAY_MS // 2
    body = ok(net.rpc(A, "expire", expire([m.hash for m in msgs], half_day)))
    for result in net.swarm_results(body).values():
        assert result.get("expiry") == half_day, result
        assert sorted(result.get("updated", [])) == sorted(m.hash for m in msgs[1:]), result


def test_revoke_subaccount(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_subaccount_auth.py::test_revoke_subaccount:
    revoke and unrevoke (each signed by every member over account ‖ timestamp ‖ tokens), the
    unrevocable namespace -11, and the 50 most recent revocations being the ones kept."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    ts = now_ms()
    body = ok(_store(net, A, account, b"abc 123", timestamp=ts, namespace=42, signer=sk))
    digest = msg_hash(account, 42, b"abc 123")
    assert all(v.get("hash") == digest for v in net.swarm_results(body).values()), body
    body = ok(_store(net, A, account, b"def 123", timestamp=ts, namespace=-11, signer=sk))
    kept_digest = msg_hash(account, -11, b"def 123")
    assert all(v.get("hash") == kept_digest for v in net.swarm_results(body).values()), body

    subkey, token, token_sig = make_subaccount(3, sk)
    sub_retrieve = {
        "pubkey": account,
        "namespace": 42,
        "timestamp": ts,
        "signature": sign(subkey, f"retrieve42{ts}"),
        **_sub(token, token_sig),
    }

    def retrieves() -> None:
        answer = ok(net.rpc(A, "retrieve", sub_retrieve))
        assert answer.get("hf", []) >= [19, 0], answer
        assert [m.get("hash") for m in answer.get("messages", [])] == [digest], answer

    def refused() -> None:
        answer = net.rpc(A, "retrieve", sub_retrieve)
        assert_refused(answer, 401, "retrieve signature verification failed")

    def change(method: str, field: str, tokens: list[bytes], at: int, listed: bool) -> Any:
        joined = b"".join(tokens)
        params = {
            "pubkey": account,
            field: [b64(t) for t in tokens] if listed else b64(tokens[0]),
            "timestamp": at,
            "signature": sign(sk, f"{method}{at}".encode() + joined),
        }
        body = ok(net.rpc(A, method, params))
        net.signed_swarm(body, f"{account}{at}".encode() + joined)
        return body

    retrieves()
    change("revoke_subaccount", "revoke", [token], ts, listed=False)
    refused()
    kept = ok(
        net.rpc(
            A,
            "retrieve",
            {
                "pubkey": account,
                "namespace": -11,
                "timestamp": ts,
                "signature": sign(subkey, f"retrieve-11{ts}"),
                **_sub(token, token_sig),
            },
        )
    )
    assert [m.get("hash") for m in kept.get("messages", [])] == [kept_digest], kept

    change("unrevoke_subaccount", "unrevoke", [token], ts + 1, listed=False)
    retrieves()

    change("revoke_subaccount", "revoke", [token], ts, listed=False)
    others = [make_subaccount(3, sk)[1] for _ in range(49)]
    change("revoke_subaccount", "revoke", others, ts, listed=True)
    refused()  # 50 revoked, this one among them

    others.append(make_subaccount(3, sk)[1])
    change("revoke_subaccount", "revoke", others[-1:], ts, listed=False)
    retrieves()  # the oldest of 51 revocations was dropped: this one

    fake = [make_subaccount(3, sk)[1] for _ in range(10)]
    body = change("unrevoke_subaccount", "unrevoke", [*others, token, *fake], ts, listed=True)
    for result in net.swarm_results(body).values():
        assert result.get("count") == 50, result


def test_subaccount_permissions(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_subaccount_auth.py::test_subaccount_permissions: read, write and delete
    need their flags, and another prefix than the token's needs the any-prefix flag."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    ts = now_ms()
    keys = [
        make_subaccount(3, sk, write=False),
        make_subaccount(3, sk, read=False, write=False),
        make_subaccount(3, sk, delete=True),
        make_subaccount(3, sk, any_prefix=True),
    ]
    for (subkey, token, _), flags in zip(keys, ["01", "00", "07", "0b"], strict=True):
        assert token.hex() == "03" + flags + "0000" + subkey.verify_key.encode().hex()

    def retrieve(i: int, pubkey: str) -> Any:
        subkey, token, token_sig = keys[i]
        params = {
            "pubkey": pubkey,
            "namespace": 42,
            "timestamp": ts,
            "signature": sign(subkey, f"retrieve42{ts}"),
            **_sub(token, token_sig),
        }
        return net.rpc(A, "retrieve", params)

    for i in range(4):
        answer = retrieve(i, account)
        if i == 1:
            assert_refused(answer, 401, "retrieve signature verification failed")
        else:
            assert _without_t_hf(ok(answer)) == {"messages": [], "more": False}

    digest = msg_hash(account, 42, b"abc 123")
    for i, (subkey, token, token_sig) in enumerate(keys):
        answer = _store(
            net,
            A,
            account,
            b"abc 123",
            timestamp=ts,
            namespace=42,
            extra={"signature": sign(subkey, f"store42{ts}"), **_sub(token, token_sig)},
        )
        if i <= 1:
            assert_refused(answer, 401, "store signature verification failed")
        else:
            swarm = net.swarm_results(ok(answer))
            assert all(v.get("hash") == digest for v in swarm.values()), swarm

    for i, (subkey, token, token_sig) in enumerate(keys):
        params = {
            "pubkey": account,
            "messages": [digest],
            "signature": sign(subkey, f"delete{digest}"),
            **_sub(token, token_sig),
        }
        answer = net.rpc(A, "delete", params)
        if i == 2:
            swarm = net.swarm_results(ok(answer))
            assert all(v.get("deleted") == [digest] for v in swarm.values()), swarm
        else:
            assert_refused(answer, 401, "delete_msgs signature verification failed")

    other_prefix = ed_account(0x99, sk)
    for i in range(4):
        answer = retrieve(i, other_prefix)
        if i == 3:
            assert _without_t_hf(ok(answer)) == {"messages": [], "more": False}
        else:
            assert_refused(answer, 401, "retrieve signature verification failed")


# --- test_msg_ns.py -----------------------------------------------------------------------------


def test_store_ns(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_msg_ns.py::test_store_ns: namespace 40
    (divisible by 10) takes unsigned deposits, -42 needs the owner's signature; each is retrieved
    on its own, and only with a signature."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    public = ok(_store(net, A, account, b"abc 123", timestamp=ts, namespace=40))
    private = ok(_store(net, A, account, b"abc 123", timestamp=ts, namespace=-42, signer=sk))
    for body, namespace in ((public, 40), (private, -42)):
        digest = msg_hash(account, namespace, b"abc 123")
        swarm = net.signed_swarm(body, digest.encode())
        assert all(v.get("hash") == digest for v in swarm.values()), swarm
        assert ts - 30_000 <= body.get("t", 0) <= ts + 30_000, body

    for namespace in (40, -42):
        answer = ok(
            net.rpc(A, "retrieve", retrieve_params(sk, account, timestamp=ts, namespace=namespace))
        )
        hashes = [m.get("hash") for m in answer.get("messages", [])]
        assert hashes == [msg_hash(account, namespace, b"abc 123")], answer

    denied = net.rpc(A, "retrieve", {"pubkey": account, "timestamp": ts, "namespace": 40})
    assert_refused(denied, 400, "invalid request: Required field 'signature' missing")


def test_legacy_closed_ns(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_msg_ns.py::test_legacy_closed_ns:
    namespace -10 is stored to and retrieved from without any signature."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    body = ok(_store(net, A, account, b"blah blah", timestamp=ts, namespace=-10))
    digest = msg_hash(account, -10, b"blah blah")
    swarm = net.signed_swarm(body, digest.encode())
    assert all(v.get("hash") == digest for v in swarm.values()), swarm
    assert ts - 30_000 <= body.get("t", 0) <= ts + 30_000, body

    answer = ok(net.rpc(A, "retrieve", {"pubkey": account, "namespace": -10}))
    assert answer.get("messages") == [
        {"data": b64(b"blah blah"), "expiration": ts + DAY_MS, "hash": digest, "timestamp": ts}
    ], answer


def test_store_invalid_ns(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_msg_ns.py::test_store_invalid_ns."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    unsigned = _store(net, A, account, b"abc 123", timestamp=ts, namespace=42)
    assert_refused(unsigned, 401, "store: signature required to store to namespace 42")
    too_big = _store(net, A, account, b"abc 123", timestamp=ts, namespace=32768)
    assert_refused(
        too_big, 400, "invalid request: Invalid value given for 'namespace': value out of range"
    )
    stranger = SigningKey.generate()
    forged = _store(net, A, account, b"abc 123", timestamp=ts, namespace=-32123, signer=stranger)
    assert_refused(forged, 401, "store signature verification failed")


def test_public_outbox(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_msg_ns.py::test_public_outbox: namespace
    -1 holds one message, stored with the owner's signature and retrieved by anyone; a new message
    replaces it, the same one again only renews its expiry."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    ttl = 60_000
    exp = ts + ttl
    unsigned = _store(net, A, account, b"abc 123", timestamp=ts, ttl=ttl, namespace=-1)
    assert_refused(unsigned, 401, "store: signature required to store to namespace -1")

    def outbox() -> dict[str, Any]:
        return _without_t_hf(ok(net.rpc(A, "retrieve", {"pubkey": account, "namespace": -1})))

    h1 = ok(_store(net, A, account, b"abc 456", timestamp=ts, ttl=ttl, namespace=-1, signer=sk))
    assert h1.get("hash") == msg_hash(account, -1, b"abc 456"), h1
    assert outbox() == {
        "messages": [
            {"data": b64(b"abc 456"), "expiration": exp, "hash": h1.get("hash"), "timestamp": ts}
        ],
        "more": False,
    }

    h2 = ok(_store(net, A, account, b"abc 789", timestamp=ts + 1, ttl=ttl, namespace=-1, signer=sk))
    assert h2.get("hash") == msg_hash(account, -1, b"abc 789"), h2
    assert outbox() == {
        "messages": [
            {
                "data": b64(b"abc 789"),
                "expiration": exp + 1,
                "hash": h2.get("hash"),
                "timestamp": ts + 1,
            }
        ],
        "more": False,
    }

    again = ok(
        _store(net, A, account, b"abc 789", timestamp=ts + 2, ttl=ttl, namespace=-1, signer=sk)
    )
    assert again.get("hash") == h2.get("hash"), again
    assert outbox() == {
        "messages": [
            {
                "data": b64(b"abc 789"),
                "expiration": exp + 2,
                "hash": h2.get("hash"),
                "timestamp": ts + 1,
            }
        ],
        "more": False,
    }


# --- test_session_auth.py -----------------------------------------------------------------------


def test_session_auth(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_session_auth.py::test_session_auth: a 05
    account of an X25519 key is signed for by its Ed25519 key only when pubkey_ed25519 names that
    key, and a key that does not convert to the account's is refused."""
    sk = SigningKey.generate()
    account = account_id(5, sk.to_curve25519_private_key().public_key.encode())
    ed_hex = sk.verify_key.encode().hex()
    msgs = store_n(net, A, account, b"omg123", 5)
    ts = now_ms()
    sig = sign(sk, f"delete_all{ts}")
    params: dict[str, Any] = {"pubkey": account, "timestamp": ts, "signature": sig}

    def count() -> int:
        messages = _retrieved(net, A, sk, account, timestamp=ts, pubkey_ed25519=ed_hex)
        return len(messages)

    answer = net.rpc(A, "delete_all", params)
    assert_refused(answer, 401, "delete_all signature verification failed")
    assert count() == 5

    fake = SigningKey.generate()
    params |= {
        "pubkey_ed25519": fake.verify_key.encode().hex(),
        "signature": sign(fake, f"delete_all{ts}"),
    }
    answer = net.rpc(A, "delete_all", params)
    assert_refused(answer, 401, "delete_all signature verification failed")
    assert count() == 5

    params |= {"pubkey_ed25519": ed_hex, "signature": sig}
    body = ok(net.rpc(A, "delete_all", params))
    hashes = sorted(m.hash for m in msgs)
    for result in net.signed_swarm(body, "".join([account, str(ts), *hashes]).encode()).values():
        assert result.get("deleted") == hashes, result
    assert count() == 0


def test_non_session_no_ed25519(net: CompatNetwork) -> None:
    """Mirrors session-storage-server
    network-tests/test_session_auth.py::test_non_session_no_ed25519: pubkey_ed25519 is refused for
    any account but a 05 one."""
    sk = SigningKey.generate()
    account = account_id(4, sk.to_curve25519_private_key().public_key.encode())
    store_n(net, A, account, b"omg123", 4)
    ts = now_ms()
    params = {
        "pubkey": account,
        "pubkey_ed25519": sk.verify_key.encode().hex(),
        "timestamp": ts,
        "signature": sign(sk, f"delete_all{ts}"),
    }
    answer = net.rpc(A, "delete_all", params)
    assert_refused(
        answer, 400, "invalid request: pubkey_ed25519 is only permitted for 05[...] pubkeys"
    )


# --- test_batch.py ------------------------------------------------------------------------------


def _store_request(
    account: str, data: bytes, ts: int, signer: SigningKey | None = None, namespace: int = 0
) -> dict[str, Any]:
    params: dict[str, Any] = {"pubkey": account, "timestamp": ts, "ttl": DAY_MS, "data": b64(data)}
    if namespace:
        params["namespace"] = namespace
    if signer is not None:
        params["signature"] = sign(signer, f"store{namespace or ''}{ts}")
    return {"method": "store", "params": params}


def test_batch_json(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_batch.py::test_batch_json."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    ts = now_ms()
    requests = [_store_request(account, data, ts, sk, 42) for data in (b"abc 123", b"xyz 123")]
    body = ok(net.rpc(A, "batch", {"requests": requests}))
    results = body.get("results")
    assert isinstance(results, list), body
    assert [r.get("code") for r in results] == [200, 200], results
    assert [r["body"].get("hash") for r in results] == [
        msg_hash(account, 42, b"abc 123"),
        msg_hash(account, 42, b"xyz 123"),
    ], results


def test_sequence(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_batch.py::test_sequence."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    delete_all = {
        "method": "delete_all",
        "params": {"pubkey": account, "timestamp": ts, "signature": sign(sk, f"delete_all{ts}")},
    }
    bodies = _sequence_bodies(
        net,
        A,
        [
            _store_request(account, b"abc 123", ts),
            _retrieve_request(sk, account, ts),
            _store_request(account, b"xyz 123", ts),
            delete_all,
            _retrieve_request(sk, account, ts),
        ],
    )
    h0 = msg_hash(account, 0, b"abc 123")
    h1 = msg_hash(account, 0, b"xyz 123")
    assert bodies[0].get("hash") == h0, bodies[0]
    assert bodies[1].get("messages") == [
        {"data": "YWJjIDEyMw==", "expiration": ts + DAY_MS, "hash": h0, "timestamp": ts}
    ], bodies[1]
    assert bodies[2].get("hash") == h1, bodies[2]
    for result in net.swarm_results(bodies[3]).values():
        assert sorted(result.get("deleted", [])) == sorted([h0, h1]), result
    assert bodies[4].get("messages") == [], bodies[4]


def test_failing_sequence(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_batch.py::test_failing_sequence: a
    sequence stops at its first failing subrequest, a batch carries on."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    requests = [
        _store_request(account, b"abc 123", ts, namespace=33),  # unsigned: refused
        _retrieve_request(sk, account, ts),
    ]
    refusal = {"code": 401, "body": "store: signature required to store to namespace 33"}

    sequence = ok(net.rpc(A, "sequence", {"requests": requests}))
    assert sequence.get("results") == [refusal], sequence

    batch = ok(net.rpc(A, "batch", {"requests": requests}))
    results = batch.get("results")
    assert isinstance(results, list), batch
    assert len(results) == 2, results
    assert results[0] == refusal, results
    assert results[1].get("code") == 200, results
    assert results[1].get("body", {}).get("messages") == [], results


# --- test_ifelse.py -----------------------------------------------------------------------------


def test_ifelse(net: CompatNetwork) -> None:
    """Mirrors session-storage-server network-tests/test_ifelse.py::test_ifelse, without its
    block-height conditions (``height_before``, ``height_at_least``: Veil has no blockchain): a
    condition on the hard fork (at least 19, below 2000000) or the version picks the ``then`` or
    ``else`` request, runs it and answers its result; a branch without a request answers none; and
    conditions nest down to a batch. The nested version condition is the version the node itself
    reports (the peer's [2, 2] is oxen's)."""
    sk = SigningKey.generate()
    account = ed_account(5, sk)
    ts = now_ms()
    yes, no = base64.b64decode("Yes="), base64.b64decode("Nope")

    def store(data: bytes, at: int) -> dict[str, Any]:
        return _store_request(account, data, at)

    def ifelse(condition: dict[str, Any], then: Any = None, otherwise: Any = None) -> Any:
        params: dict[str, Any] = {"if": condition}
        if then is not None:
            params["then"] = then
        if otherwise is not None:
            params["else"] = otherwise
        return params

    def run(params: dict[str, Any]) -> dict[str, Any]:
        body = ok(net.rpc(A, "ifelse", params))
        assert isinstance(body.get("condition"), bool), body
        return body

    def stored(body: dict[str, Any], data: bytes) -> None:
        result = body.get("result")
        assert isinstance(result, dict), body
        assert result.get("code") == 200, body
        assert result.get("body", {}).get("hash") == msg_hash(account, 0, data), body

    r0 = run(ifelse({"hf_at_least": [2000000]}, store(yes, ts), store(no, ts)))
    assert r0["condition"] is False
    stored(r0, no)
    version = r0.get("v")
    assert isinstance(version, list), r0
    assert r0.get("hf", []) >= [19], r0

    r3 = run(ifelse({"hf_at_least": [19]}, store(yes, ts + 3), store(no, ts + 3)))
    assert r3["condition"] is True
    stored(r3, yes)

    r4 = run(ifelse({"hf_at_least": [19, 1]}, store(yes, ts + 4)))
    assert r4["condition"] is True
    stored(r4, yes)

    r5 = run(ifelse({"hf_before": [19]}, store(yes, ts + 5)))
    assert r5["condition"] is False
    assert "result" not in r5, r5

    r6 = run(ifelse({"hf_at_least": [19]}, otherwise=store(yes, ts + 6)))
    assert r6["condition"] is True
    assert "result" not in r6, r6

    r7 = run(ifelse({"hf_before": [19]}, otherwise=store(no, ts + 7)))
    assert r7["condition"] is False
    stored(r7, no)

    batch = {"method": "batch", "params": {"requests": [store(yes, ts + i) for i in (8, 9, 10)]}}
    innermost = {"method": "ifelse", "params": ifelse({"hf_before": [99999, 99]}, batch)}
    by_version = {"method": "ifelse", "params": ifelse({"v_at_least": version}, innermost)}
    second = {"method": "ifelse", "params": ifelse({"hf_at_least": [19]}, by_version)}
    x: Any = run(ifelse({"hf_at_least": [19]}, second))
    for _ in range(4):  # hf >= 19, hf >= 19, v >= its own, hf < 99999.99
        assert x.get("condition") is True, x
        assert x.get("result", {}).get("code") == 200, x
        x = x["result"]["body"]
    results = x.get("results")
    assert isinstance(results, list), x
    assert [r.get("code") for r in results] == [200, 200, 200], results
    assert [r["body"].get("hash") for r in results] == [msg_hash(account, 0, yes)] * 3, results


# --- test_big_retrieve.py -----------------------------------------------------------------------

BIG_SIZE = 70_000
BIG_COUNT = 120


@dataclass(frozen=True, slots=True)
class BigStore:
    sk: SigningKey
    account: str
    hashes: list[str]
    """Each message's hash (computed here), in the order stored."""
    refused: list[Answer]
    """The stores not answered 200 with their hash (checked by each test, not by the fixture, so
    that a node refusing them fails the tests rather than erroring in setup)."""


@pytest.fixture(scope="module")
def big_store(net: CompatNetwork) -> BigStore:
    """Mirrors the big_store fixture of session-storage-server network-tests/test_big_retrieve.py:
    120 random 70,000-byte messages, in the order stored, to one 03 account."""
    sk = SigningKey.generate()
    account = ed_account(3, sk)
    hashes, refused = [], []
    for _ in range(BIG_COUNT):
        data = os.urandom(BIG_SIZE)
        params = {"pubkey": account, "timestamp": now_ms(), "ttl": 600_000, "data": b64(data)}
        answer = net.rpc(A, "store", params)
        digest = msg_hash(account, 0, data)
        hashes.append(digest)
        try:
            stored = answer.status == 200 and json.loads(answer.body).get("hash") == digest
        except (ValueError, AttributeError):
            stored = False
        if not stored:
            refused.append(answer)
    return BigStore(sk, account, hashes, refused)


def _big_retrieve(net: CompatNetwork, big: BigStore, **extra: Any) -> tuple[list[str], bool]:
    """(the hashes answered, more) for a retrieve of the big store."""
    assert big.refused == [], big.refused[:3]
    body = ok(net.rpc(A, "retrieve", retrieve_params(big.sk, big.account, **extra)))
    messages, more = body.get("messages"), body.get("more")
    assert isinstance(messages, list), body
    assert isinstance(more, bool), body
    return [m.get("hash") for m in messages], more


def test_retrieve_count(net: CompatNetwork, big_store: BigStore) -> None:
    """Mirrors session-storage-server network-tests/test_big_retrieve.py::test_retrieve_count:
    max_count caps the messages answered, and with no max_size the largest answer (7,800,000
    bytes counted as oxen counts them) caps them too; "more" says whether any are left."""
    h = big_store.hashes
    assert _big_retrieve(net, big_store, max_count=5) == (h[0:5], True)
    assert _big_retrieve(net, big_store, max_count=8, last_hash=h[-3]) == (h[-2:], False)
    assert _big_retrieve(net, big_store, max_count=20, last_hash=h[110]) == (h[111:], False)
    assert _big_retrieve(net, big_store, max_count=100, last_hash=h[10]) == (h[11:94], True)
    assert _big_retrieve(net, big_store, max_count=10, last_hash=h[-11]) == (h[-10:], False)


def test_retrieve_size(net: CompatNetwork, big_store: BigStore) -> None:
    """Mirrors session-storage-server network-tests/test_big_retrieve.py::test_retrieve_size:
    max_size in bytes, or negative for a fraction of the largest answer (-1 all of it, -3 a
    third), and a fifth of it by default; each message counts its base64 data, its hash and 100
    bytes."""
    h = big_store.hashes
    assert _big_retrieve(net, big_store, max_size=500_000, last_hash=h[2]) == (h[3:8], True)
    assert _big_retrieve(net, big_store, max_size=600_000, last_hash=h[-8]) == (h[-7:-1], True)
    assert _big_retrieve(net, big_store, max_size=-1, last_hash=h[2]) == (h[3:86], True)
    assert _big_retrieve(net, big_store, max_size=-1, last_hash=h[110]) == (h[111:], False)
    assert _big_retrieve(net, big_store, max_size=-3, last_hash=h[49]) == (h[50:77], True)
    assert _big_retrieve(net, big_store, last_hash=h[89]) == (h[90:106], True)
    assert _big_retrieve(net, big_store, last_hash=h[103]) == (h[-16:], False)


def test_retrieve_size_and_count(net: CompatNetwork, big_store: BigStore) -> None:
    """Mirrors session-storage-server
    network-tests/test_big_retrieve.py::test_retrieve_size_and_count: whichever of max_count and
    max_size is reached first ends the answer."""
    h = big_store.hashes
    assert _big_retrieve(net, big_store, max_count=5, max_size=1_000_000, last_hash=h[19]) == (
        h[20:25],
        True,
    )
    assert _big_retrieve(net, big_store, max_count=10, max_size=700_000, last_hash=h[29]) == (
        h[30:37],
        True,
    )


def test_signed_by_rejects_what_it_should() -> None:
    """The helper every swarm check relies on fails for a wrong member, message or signature (so
    the signature assertions above can fail)."""
    sk, other = SigningKey.generate(), SigningKey.generate()
    member = sk.verify_key.encode().hex()
    sig = sign(sk, b"x")
    assert signed_by(member, b"x", sig)
    assert not signed_by(member, b"y", sig)
    assert not signed_by(other.verify_key.encode().hex(), b"x", sig)
    assert not signed_by(member, b"x", None)
    assert not signed_by(member, b"x", "not base64!")
