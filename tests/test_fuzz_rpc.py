"""Fuzzing the storage RPC (``veil.node.rpc.StorageRpc.handle_body``) with hostile bodies.

One RPC over a real LMDB store and its writer serves the whole module, on one uvloop loop. Every
answer is checked the same way (:meth:`Served.answer`): ``handle_body`` returns, the status is one
the RPC can give, a result is a JSON object, every refusal (also inside a batch) is Session's
one-line ``text/plain`` text with no stack trace (``docs/rpc.md``, "Errors"), and the number of
messages held changes by exactly what the answer reports (a new store adds one, or in a public
outbox replaces what the namespace held; a delete removes those it names; nothing else changes
anything), so nothing is stored unless the request was valid.

Valid requests are forged here from the signed strings of ``docs/rpc.md``, so that any field can be
given any value and still carry a correct signature.
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
from hypothesis import assume, given
from hypothesis import strategies as st

from node_helpers import TTL_MS, Account, RpcOverStore, b64, now_ms
from veil.identity import Identity
from veil.node.config import Limits
from veil.node.errors import RpcError
from veil.protocol.storage_rpc import is_public_outbox_namespace

# The account quota is out of reach: the module stores a few thousand messages in the slow profile.
LIMITS = Limits(
    max_message_bytes=512,
    batch_max_requests=5,
    delete_max_hashes=8,
    account_max_messages=1_000_000,
)
# 421 (wrong swarm) needs a network view; without one the RPC serves every account. 503 is
# get_consensus without one. 404 is a delete with "required" that deleted nothing.
ANSWERED = frozenset({200, 400, 401, 403, 404, 406, 413, 503, 507})
JSON_REFUSALS = frozenset({404, 421})
"""Refusals whose body is JSON (the swarm answer; the account's swarm), not a text."""
MOST_ERROR_CHARS = 256
"""An error text is short: it quotes at most a bounded piece of the request."""
SIGNED_METHODS = ("store", "retrieve", "delete", "delete_all", "expire", "get_expiries")
META_METHODS = ("batch", "sequence", "ifelse")
METHODS = (
    *SIGNED_METHODS,
    *("delete_before", "expire_all", "revoke_subaccount", "unrevoke_subaccount"),
    *META_METHODS,
    *("info", "get_swarm", "get_nodes", "get_consensus"),
)
PARAM_NAMES = (
    *("pubkey", "pubkey_ed25519", "signature", "timestamp", "sig_timestamp", "ttl", "data"),
    *("namespace", "messages", "expiry", "shorten", "extend", "cursor", "last_hash"),
    *("max_count", "max_size", "required", "before", "revoke", "unrevoke"),
    *("subaccount", "subaccount_sig", "requests", "method", "params", "if", "then", "else"),
)
EXTREME_INTS = (
    *(0, -1, 1, 2**15, -(2**15) - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64),
    *(-(2**63), -(2**63) - 1, 10**30, -(10**30)),
)


class Served(RpcOverStore):
    """The RPC under test, its store, and the loop it runs on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, LIMITS)
        self.account = Account()

    def answer(self, body: bytes) -> tuple[int, Any]:
        """``handle_body``'s answer, checked as the module docstring says: the JSON of a result,
        the text of a refusal."""
        before, _ = self.store.totals()
        outboxes = self.outbox_counts()
        status, raw, content_type = self.loop.run_until_complete(
            asyncio.wait_for(self.rpc.handle_body(body), 10)
        )
        after, _ = self.store.totals()
        assert b"Traceback" not in raw
        answer: Any
        if content_type.startswith(b"text/plain"):
            assert status != 200, raw
            answer = raw.decode("utf-8")
        else:
            assert content_type == b"application/json", content_type
            assert status == 200 or status in JSON_REFUSALS, (status, raw)
            answer = orjson.loads(raw)
        request = _loads_or_none(body)
        check_answer(request, status, answer)
        assert after - before == held_change(request, status, answer, outboxes), (status, answer)
        return status, answer

    def outbox_counts(self) -> dict[tuple[str, int], int]:
        """How many messages the account holds in each public outbox namespace (a store there
        replaces them). Only the account signs, so only its outboxes can take a store."""
        held = self.store.messages_of(self.store.hashes_of(self.account.account_bytes))
        counts: dict[tuple[str, int], int] = {}
        for message in held:
            if is_public_outbox_namespace(message.namespace):
                key = (self.account.pubkey, message.namespace)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def call(self, method: str, params: Any) -> tuple[int, Any]:
        return self.answer(encode({"method": method, "params": params}))

    def stored_hashes(self, count: int) -> list[str]:
        """Store ``count`` fresh messages for the account; their hashes."""
        hashes = []
        for _ in range(count):
            status, body = self.call("store", store_params(self.account, os.urandom(12)))
            assert status == 200, body
            hashes.append(body["hash"])
        return hashes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("fuzz-rpc") / "store")
    yield served
    served.close()


def encode(value: Any) -> bytes:
    """JSON text for any value of the strategies below (the stdlib encodes ints of any size)."""
    return json.dumps(value).encode()


def _loads_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def check_error(status: int, body: Any) -> None:
    """A typed refusal: a short, one-line text without a stack trace (or, for 404 and 421, the
    JSON the method answers with)."""
    assert status in ANSWERED, (status, body)
    assert status != 200, body
    if status in JSON_REFUSALS:
        assert isinstance(body, dict), body
        assert isinstance(body.get("swarm"), (dict, str)), body
        return
    assert isinstance(body, str), body
    assert body, "an empty refusal"
    assert "\n" not in body, body
    assert "\r" not in body, body
    assert "Traceback" not in body, body
    assert 'File "' not in body, body
    assert len(body) <= MOST_ERROR_CHARS, body


def check_answer(request: Any, status: int, answer: Any) -> None:
    assert status in ANSWERED, (status, answer)
    if status != 200:
        check_error(status, answer)
        return
    assert isinstance(answer, dict), answer
    method = request.get("method") if isinstance(request, dict) else None
    if method in {"batch", "sequence"}:
        for result in answer["results"]:
            check_result(result)
    elif method == "ifelse" and "result" in answer:
        check_result(answer["result"])


def check_result(result: Any) -> None:
    """One subrequest's ``{"code", "body"}`` in a batch, sequence or ifelse answer."""
    assert result["code"] in ANSWERED, result
    if result["code"] == 200:
        assert isinstance(result["body"], dict), result
    else:
        check_error(result["code"], result["body"])


def held_change(
    request: Any, status: int, answer: Any, outboxes: dict[tuple[str, int], int]
) -> int:
    """How many messages the store gained (or lost) by what the answer reports; ``outboxes``
    holds what each public outbox namespace held before (updated as stores replace it)."""
    if status != 200 or not isinstance(request, dict):
        return 0
    method = request.get("method")
    if method == "store":
        [result] = answer["swarm"].values()  # a node on its own is the whole swarm
        if result.get("already"):
            return 0
        params = request["params"]
        namespace = params.get("namespace") or 0
        if is_public_outbox_namespace(namespace):
            key = (params.get("pubkey") or params.get("pubKey"), namespace)
            replaced = outboxes.get(key, 0)
            outboxes[key] = 1
            return 1 - replaced
        return 1
    if method in {"delete", "delete_all", "delete_before"}:
        [result] = answer["swarm"].values()
        deleted = result["deleted"]
        if isinstance(deleted, dict):  # namespace "all": the hashes by namespace
            return -sum(len(listed) for listed in deleted.values())
        return -len(deleted)
    if method in {"batch", "sequence"}:
        # A sequence stops after the first subrequest that fails: its results are a prefix.
        subrequests = request["params"]["requests"]
        results = answer["results"]
        assert len(results) <= len(subrequests)
        if method == "batch":
            assert len(results) == len(subrequests)
        return sum(
            held_change(sub, r["code"], r["body"], outboxes)
            for sub, r in zip(subrequests, results, strict=False)
        )
    if method == "ifelse" and "result" in answer:
        branch = request["params"]["then" if answer["condition"] else "else"]
        return held_change(branch, answer["result"]["code"], answer["result"]["body"], outboxes)
    return 0


# --- valid requests, forged from the signed strings of docs/rpc.md -------------------------------


def ns_text(namespace: object) -> str:
    return "" if namespace == 0 else str(namespace)


def store_params(
    account: Account, data: bytes, *, namespace: int = 0, timestamp: int | None = None
) -> dict[str, Any]:
    ts = now_ms() if timestamp is None else timestamp
    params: dict[str, Any] = {"pubkey": account.pubkey, "timestamp": ts, "ttl": TTL_MS}
    params["data"] = b64(data)
    if namespace == 0:
        return params
    return account.signed(f"store{namespace}{ts}", namespace=namespace, **params)


def retrieve_params(account: Account, namespace: Any, timestamp: Any, **extra: Any) -> Any:
    text = f"retrieve{ns_text(namespace)}{timestamp}"
    return account.signed(text, namespace=namespace, timestamp=timestamp, **extra)


def delete_params(account: Account, hashes: list[Any]) -> Any:
    return account.signed("delete" + "".join(map(str, hashes)), messages=hashes)


def delete_all_params(account: Account, namespace: Any, timestamp: Any) -> Any:
    text = f"delete_all{ns_text(namespace)}{timestamp}"
    return account.signed(text, namespace=namespace, timestamp=timestamp)


def expire_params(account: Account, hashes: list[Any], expiry: Any, mode: str = "") -> Any:
    text = f"expire{mode}{expiry}" + "".join(map(str, hashes))
    params = account.signed(text, messages=hashes, expiry=expiry)
    if mode:
        params[mode] = True
    return params


def get_expiries_params(account: Account, hashes: list[Any], timestamp: Any) -> Any:
    text = f"get_expiries{timestamp}" + "".join(map(str, hashes))
    return account.signed(text, messages=hashes, timestamp=timestamp)


def valid_request(served: Served, method: str) -> dict[str, Any]:
    """A request of ``method`` that the RPC answers 200 (namespaces are non-zero, so signed)."""
    account, now = served.account, now_ms()
    if method == "store":
        params = store_params(account, os.urandom(16), namespace=7)
    elif method == "retrieve":
        params = retrieve_params(account, 7, now, max_count=3)
    elif method == "delete":
        params = delete_params(account, served.stored_hashes(2))
    elif method == "delete_all":
        served.stored_hashes(1)
        params = delete_all_params(account, "all", now)
    elif method == "expire":
        params = expire_params(account, served.stored_hashes(2), now + 60_000, "shorten")
    elif method == "get_expiries":
        params = get_expiries_params(account, served.stored_hashes(1), now)
    else:
        subrequests = [valid_request(served, m) for m in ("store", "retrieve", "get_expiries")]
        return {"method": "batch", "params": {"requests": subrequests}}
    return {"method": method, "params": params}


@pytest.mark.parametrize("method", [*SIGNED_METHODS, "batch"])
def test_every_valid_request_to_mutate_is_answered_200(served: Served, method: str) -> None:
    request = valid_request(served, method)
    status, answer = served.answer(encode(request))
    assert status == 200, answer
    if method == "batch":
        assert [r["code"] for r in answer["results"]] == [200, 200, 200]


# --- hostile JSON -------------------------------------------------------------------------------

ints = st.integers() | st.sampled_from(EXTREME_INTS)
json_scalars = (
    st.none()
    | st.booleans()
    | ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from([*METHODS, "all", "", "05" + "00" * 32, "03" + "ff" * 32, "A" * 43])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(METHODS) | json_values,
        "params": st.dictionaries(st.sampled_from(PARAM_NAMES), json_values, max_size=8)
        | json_values,
    }
)


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """A request whose params hold a value nested hundreds or thousands of levels deep."""
    depth = draw(st.integers(1, 3000))
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    name = draw(st.sampled_from(["requests", "messages", "namespace", "cursor"]))
    method = draw(st.sampled_from(METHODS))
    inner = opening * depth + b"1" + closing * depth
    return b'{"method":"%s","params":{"%s":%s}}' % (method.encode(), name.encode(), inner)


@given(body=st.binary(max_size=400))
def test_any_bytes_get_a_json_answer(served: Served, body: bytes) -> None:
    served.answer(body)


@given(value=json_values)
def test_any_json_value_gets_a_json_answer(served: Served, value: Any) -> None:
    served.answer(encode(value))


@given(request=requests)
def test_any_request_shaped_json_gets_a_json_answer(served: Served, request: Any) -> None:
    served.answer(encode(request))


@given(body=deeply_nested())
def test_deeply_nested_json_gets_a_json_answer(served: Served, body: bytes) -> None:
    served.answer(body)


def batch_refusal(served: Served, subrequests: list[Any]) -> str | None:
    """Why a batch of ``subrequests`` does not parse (``docs/rpc.md``: 1 to ``batch_max_requests``
    ``{"method", "params"}``, none of them a meta-request, each parsing as its method), or None:
    the exact text where the RPC's own parser of that method decides it, else its start."""
    if len(subrequests) > LIMITS.batch_max_requests:
        return "invalid request: Invalid batch request: subrequest limit exceeded"
    for sub in subrequests:
        if not isinstance(sub, dict):
            return "invalid request: Invalid batch request: "
        method, params = sub.get("method"), sub.get("params")
        if not isinstance(method, str) or not isinstance(params, dict):
            return "invalid request: Invalid batch request: "
        if method not in served.rpc.methods or method in META_METHODS:
            return "invalid request: Invalid batch subrequest: "
        try:
            served.rpc.parse(method, params)
        except RpcError as error:
            refused = error
            break
    else:
        return None
    assert refused.status == 400, refused.message
    return refused.message


@given(subrequests=st.lists(requests | json_scalars, min_size=1, max_size=6))
def test_a_batch_of_anything_answers_each_subrequest_or_refuses_the_batch_unrun(
    served: Served, subrequests: Any
) -> None:
    """Every subrequest is parsed before any runs: one that does not parse refuses the whole
    batch with a 400 (and, by the accounting of ``answer``, nothing was stored); else each
    subrequest has its answer, in order. (Before, each subrequest was answered on its own and
    a batch over the limit was a 413.)"""
    refusal = batch_refusal(served, subrequests)
    status, answer = served.call("batch", {"requests": subrequests})
    if refusal is None:
        assert status == 200, answer
        assert len(answer["results"]) == len(subrequests)
    else:
        assert status == 400, answer
        assert answer.startswith(refusal), (answer, refusal)


# --- mutations of valid requests ----------------------------------------------------------------


def mutations(request: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid request with one thing changed: a parameter's value or type, a parameter removed,
    the method, the shape of the request, or (for a batch) one of its subrequests."""
    params = request["params"]
    keys = st.sampled_from(sorted(set(params) | set(PARAM_NAMES)))
    changed: list[st.SearchStrategy[Any]] = [
        st.tuples(keys, json_values).map(lambda kv: _with(request, kv[0], kv[1])),
        st.sampled_from(sorted(params)).map(lambda key: _without(request, key)),
        st.sampled_from(METHODS).map(lambda method: {**request, "method": method}),
        st.sampled_from(
            [[request], params, {"params": params}, {**request, "params": [params]}, {}]
        ),
    ]
    if request["method"] == "batch":
        subrequests = params["requests"]
        changed.append(
            st.integers(0, len(subrequests) - 1).flatmap(
                lambda i: mutations(subrequests[i]).map(
                    lambda sub: {
                        "method": "batch",
                        "params": {"requests": [*subrequests[:i], sub, *subrequests[i + 1 :]]},
                    }
                )
            )
        )
    return st.one_of(changed)


def _with(request: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**request, "params": {**request["params"], key: value}}


def _without(request: dict[str, Any], key: str) -> dict[str, Any]:
    return {**request, "params": {k: v for k, v in request["params"].items() if k != key}}


@given(method=st.sampled_from([*SIGNED_METHODS, "batch"]), data=st.data())
def test_a_valid_request_with_one_field_changed_gets_a_json_answer(
    served: Served, method: str, data: st.DataObject
) -> None:
    served.answer(encode(data.draw(mutations(valid_request(served, method)))))


# Fields whose value the signature covers (the namespace is non-zero in every valid request).
SIGNED_FIELDS = {
    "store": ("namespace", "timestamp", "signature", "pubkey", "pubkey_ed25519"),
    "retrieve": ("namespace", "timestamp", "signature", "pubkey", "pubkey_ed25519"),
    "delete": ("messages", "signature", "pubkey", "pubkey_ed25519"),
    "delete_all": ("namespace", "timestamp", "signature", "pubkey", "pubkey_ed25519"),
    "expire": ("messages", "expiry", "signature", "pubkey", "pubkey_ed25519"),
    "get_expiries": ("messages", "timestamp", "signature", "pubkey", "pubkey_ed25519"),
}
OTHER = Account(Identity.from_seed(bytes(range(32))))


def other_values(value: Any) -> st.SearchStrategy[Any]:
    """Values that are not ``value``: another value of its kind, or a value of another type."""
    other_types = st.sampled_from([None, True, 0.5, [value], {"v": value}])
    if isinstance(value, int):
        nearby = st.integers(-(2**40), 2**40).filter(bool).map(lambda d: value + d)
        return nearby | st.sampled_from([float(value), str(value)]) | other_types
    if isinstance(value, list):
        extra = base64.b64encode(bytes(range(32))).rstrip(b"=").decode()  # a hash never stored
        lists = [value[1:], [*value, extra], [extra, *value[1:]], value + value[:1]]
        if len(value) > 1:
            lists.append(value[::-1])
        return st.sampled_from([*lists, "".join(value)]) | other_types
    if isinstance(value, str) and len(value) == 88:  # a signature: flip one of its 512 bits
        raw = base64.b64decode(value)
        return st.integers(0, 511).map(lambda bit: b64(_flip(raw, bit))) | other_types
    return st.sampled_from([OTHER.pubkey if len(value) == 66 else OTHER.ed_hex]) | other_types


def same_signed_request(method: str, field: str, old: Any, new: Any) -> bool:
    """Whether changing ``field`` from ``old`` to ``new`` leaves a request a node must accept,
    as Session's storage servers read it."""
    if method == "store" and field == "namespace":
        # No namespace is namespace 0; every namespace divisible by 10 is a public inbox, where
        # anyone may leave a message unsigned.
        if new is None:
            return True
        is_namespace = isinstance(new, int) and not isinstance(new, bool)
        return is_namespace and -(2**15) <= new < 2**15 and new % 10 == 0
    if method == "store" and field == "timestamp":
        return bool(new == str(old))  # a store's timestamp may be given as decimal text
    if method == "expire" and field == "expiry":
        return bool(new == [old])  # one expiry, or a list of one per message
    if method == "get_expiries" and field == "messages":
        # One string is a list of one (as in Session). The hashes joined sign the same string,
        # and get_expiries, unlike delete and expire, does not check the form of a hash: what
        # names no message just has no expiry in the answer.
        return bool(new == "".join(old))
    return False


def _flip(raw: bytes, bit: int) -> bytes:
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@given(method=st.sampled_from(SIGNED_METHODS), data=st.data())
def test_a_valid_request_with_a_signed_field_changed_is_refused(
    served: Served, method: str, data: st.DataObject
) -> None:
    request = valid_request(served, method)
    field = data.draw(st.sampled_from(SIGNED_FIELDS[method]))
    value = data.draw(other_values(request["params"][field]))
    assume(not same_signed_request(method, field, request["params"][field], value))
    mutated = _without(request, field) if value is None else _with(request, field, value)
    status, answer = served.answer(encode(mutated))
    assert status in {400, 401, 406, 413}, answer


# --- hostile values behind a correct signature ----------------------------------------------------

near_now = st.integers(-120_000, 120_000) | ints
hash_texts = st.sampled_from(["A" * 43, "", "A" * 44, "A" * 42 + "B"]) | st.text(max_size=50)
namespaces = st.integers(-40_000, 40_000) | ints | st.sampled_from(["all", "0", "", None])


@st.composite
def signed_hostile(draw: st.DrawFn, served: Served) -> dict[str, Any]:
    """A correctly signed request with hostile values in every field it has."""
    account, now = served.account, now_ms()
    method = draw(st.sampled_from(SIGNED_METHODS))
    hashes = draw(
        st.lists(st.sampled_from(served.stored_hashes(2)) | hash_texts, min_size=0, max_size=12)
    )
    timestamp = now + draw(near_now)
    namespace = draw(namespaces)
    if method == "store":
        limit = LIMITS.max_message_bytes
        data = draw(st.binary(max_size=64) | st.binary(min_size=limit - 2, max_size=limit + 8))
        ns = draw(st.integers(-(2**15), 2**15 - 1) | ints)
        params = store_params(account, data, namespace=ns, timestamp=timestamp)
        params["ttl"] = draw(st.sampled_from([TTL_MS, LIMITS.min_ttl_ms - 1]) | ints)
        if draw(st.booleans()):
            params["data"] = draw(st.text(max_size=40))
    elif method == "retrieve":
        extra = draw(
            st.dictionaries(
                st.sampled_from(["cursor", "last_hash", "max_count"]),
                hash_texts | json_values | st.just("A" * 54),
                max_size=3,
            )
        )
        params = retrieve_params(account, namespace, timestamp, **extra)
    elif method == "delete":
        params = delete_params(account, hashes)
    elif method == "delete_all":
        params = delete_all_params(account, namespace, timestamp)
    elif method == "expire":
        mode = draw(st.sampled_from(["", "shorten", "extend"]))
        params = expire_params(account, hashes, now + draw(near_now), mode)
        if draw(st.booleans()):
            params[draw(st.sampled_from(["shorten", "extend"]))] = draw(json_scalars)
    else:
        params = get_expiries_params(account, hashes, timestamp)
    return {"method": method, "params": params}


@given(data=st.data())
def test_hostile_values_behind_a_correct_signature_get_a_json_answer(
    served: Served, data: st.DataObject
) -> None:
    served.answer(encode(data.draw(signed_hostile(served))))


@pytest.mark.parametrize("method", [[], {"a": 1}, ["store"]], ids=["list", "object", "list of one"])
def test_a_method_that_is_not_a_string_is_refused_as_no_method(served: Served, method: Any) -> None:
    """Found by the properties above: a ``method`` that is a list or an object (unhashable) is
    not a method name."""
    status, answer = served.call(method, {})
    assert (status, answer) == (400, "invalid json: no `method` field")


def _quoting_requests() -> list[tuple[str, dict[str, Any]]]:
    """Requests refused with a text that quotes one of their values, that value holding a line
    break: (the start of the refusal, the request)."""
    account, later = Account(), now_ms() + 60_000
    return [
        ("no method ", {"method": "a\nb", "params": {}}),
        (
            "invalid request: invalid message hash: ",
            {"method": "delete", "params": delete_params(account, ["x\ny"])},
        ),
        (
            "invalid request: invalid message hash: ",
            {"method": "expire", "params": expire_params(account, ["x\ry"], later)},
        ),
        (
            "invalid request: Invalid value given for 'ttl': ",
            {"method": "store", "params": store_params(account, b"x") | {"ttl": "1\n2"}},
        ),
        (
            "invalid request: Invalid value given for 'timestamp': ",
            {"method": "store", "params": store_params(account, b"x") | {"timestamp": "1\r\n2"}},
        ),
        (
            "invalid request: Invalid batch subrequest: invalid method ",
            {"method": "batch", "params": {"requests": [{"method": "x\ny", "params": {}}]}},
        ),
    ]


@pytest.mark.parametrize(
    ("start", "request_"),
    _quoting_requests(),
    ids=["method", "delete hash", "expire hash", "ttl text", "timestamp text", "batch method"],
)
def test_a_refusal_that_quotes_the_request_is_still_one_line(
    served: Served, start: str, request_: dict[str, Any]
) -> None:
    """Found by the properties above: a refusal quoting a value of the request that holds a line
    break is still one line of text (the quoted value escaped, as Session's storage servers quote
    a stringified ttl or timestamp: JSON-escaped)."""
    status, raw, content_type = served.loop.run_until_complete(
        served.rpc.handle_body(encode(request_))
    )
    text = raw.decode("utf-8")
    assert (status, content_type) == (400, b"text/plain; charset=utf-8")
    assert text.startswith(start), text
    check_error(status, text)


def test_the_checks_fail_when_a_message_is_held_that_no_answer_reported(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accounting in :meth:`Served.answer` is not vacuous: a store behind its back fails it."""
    original = served.rpc.handle_body

    async def handle_and_store_behind(body: bytes) -> tuple[int, bytes, bytes]:
        answer = await original(body)
        sneaked = {"method": "store", "params": store_params(served.account, os.urandom(8))}
        assert (await original(encode(sneaked)))[0] == 200
        return answer

    monkeypatch.setattr(served.rpc, "handle_body", handle_and_store_behind)
    with pytest.raises(AssertionError, match=r"held_change\(None, 400"):
        served.answer(b"not json")
