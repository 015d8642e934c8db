"""Fuzzing what a client reads from nodes and from other accounts, all of it hostile.

- ``veil.protocol.onion_request.open_reply``: any plaintext under the reply key opens to an integer
  status or raises :class:`InvalidInputError` (never :class:`DecryptionError`, which is for bodies
  that do not decrypt, and every changed body is one).
- ``veil.client.swarm.SwarmClient`` over a scripted network (:class:`ScriptedNetwork`, a
  ``NetworkClient`` whose every request is answered from a Hypothesis-drawn list of (status, body)
  pairs, or fails with :class:`NetworkError`): a consensus refresh takes only a newer consensus a
  majority of the network file's authorities signed (the client's paths and swarms stay built from
  the consensus it holds); a ``421`` never makes the client ask a node that no such consensus
  lists, whatever member list it names; ``retrieve`` merges pages into distinct messages in cursor
  order, each one's hash recomputed from its data, and keeps only cursors it can read again;
  ``store`` counts only with ``write_quorum`` members of the swarm it computes whose signed result
  in the answer's ``swarm`` block is for the message's hash and verifies (a forged signature, one
  by another key, one copied under another member's key, one for another hash, a failed entry and
  a stranger's are not counted); ``delete`` reports only hashes it asked for that a member's signed
  result lists; and ``store`` and ``delete`` answer or raise a StoreError whose text is one clean
  line.
- ``veil.client.messaging.Messenger.ingest``: retrieved messages of any shape and any ``data`` are
  shown only if they decrypt; anything another account encrypts to us (any plaintext, any content)
  shows under that account only, never as ours or a third party's, with every character a terminal
  would act on replaced, and leaves a book that still saves.

The properties over node answers run twice: over answers of the expected shape (with hostile
values), and over any JSON at all.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import random
import secrets
from typing import Any
from unittest import mock

import msgpack
import orjson
import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

import veil.client.swarm as swarm_module
from client_helpers import consensus_of, network_of, signed_by
from fuzzing import default_recursion_limit, tally
from veil import _core
from veil.client.account import Book
from veil.client.chat import Chat
from veil.client.directory import ClientDirectory
from veil.client.messaging import Messenger, seal
from veil.client.network import NetworkClient, NetworkError
from veil.client.swarm import StoreError, SwarmClient
from veil.clock import now_ms
from veil.crypto import HopKey, encrypt_for_recipient, peel_onion
from veil.errors import DecryptionError, InvalidInputError
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.announcement import sign_announcement
from veil.protocol.content import Content, pad
from veil.protocol.hashes import cursor_decode, cursor_encode, hash_b64, message_hash
from veil.protocol.onion_request import build_request, open_reply
from veil.protocol.peers import PeerInfo
from veil.protocol.replication import receipt_bytes

IDENTITIES = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(8)]
ANNOUNCEMENTS = [
    sign_announcement(
        identity,
        http=f"10.0.0.{i}:22021",
        link=f"10.0.0.{i}:22022",
        version="1",
        issued_ms=1_700_000_000_000,
    )
    for i, identity in enumerate(IDENTITIES)
]
ENTRIES = [a.to_json() for a in ANNOUNCEMENTS]
PEERS = [PeerInfo.of(a) for a in ANNOUNCEMENTS]
ME, STRANGER, FRIEND = (Identity.from_seed(bytes([0xA0 + i]) * 32) for i in range(3))

# What a terminal acts on (veil.client.terminal.printable): C0 and C1 controls but tab and newline,
# DEL, and the bidirectional overrides and isolates.
UNSAFE = frozenset(
    chr(c)
    for c in [
        *range(0x20),
        0x7F,
        *range(0x80, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
    if c not in (0x09, 0x0A)
)


@st.composite
def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """A value from ``good`` five times in six, else from ``bad``."""
    return draw(bad if draw(st.integers(0, 5)) == 0 else good)


# --- JSON as a hostile node sends it (what orjson hands the client) -------------------------------

hostile_texts = st.text(max_size=20) | st.sampled_from(
    ["\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\u202egnp.exe", "\x9b31m", "a\rb", "\x00", ""]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["nodes", "snodes", "swarm", "messages", "hash", "cursor", "more", "deleted"]
            )
            | st.text(max_size=6),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)


def _json(value: Any) -> Any:
    """``value`` as it arrives: through JSON text."""
    return orjson.loads(orjson.dumps(value))


# --- open_reply -----------------------------------------------------------------------------------

SECRET = bytes(range(32))


def _reply_keys() -> tuple[HopKey, HopKey]:
    """(the client's reply key, the destination's): one hop, so the destination is the first."""
    onion, client_key = build_request([_core.x25519_public_key(SECRET)], b"{}")
    destination_key = peel_onion(SECRET, onion).reply_key
    assert destination_key is not None
    return client_key, destination_key


reply_shaped = st.fixed_dictionaries(
    {},
    optional={
        "status": st.integers(-(2**63), 2**64 - 1) | json_values,
        "body": json_values,
        "body_b64": st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())
        | json_values,
        "content_type": hostile_texts | json_values,
    },
)
plaintexts = (
    st.binary(max_size=200)
    | json_values.map(orjson.dumps)
    | reply_shaped.map(orjson.dumps)
    | st.integers(1, 1100).map(lambda depth: b"[" * depth + b"]" * depth)
)


@given(plaintext=plaintexts, external=st.booleans())
def test_any_plaintext_under_the_reply_key_opens_to_a_status_or_is_invalid_input(
    plaintext: bytes, external: bool
) -> None:
    client_key, destination_key = _reply_keys()
    try:
        with default_recursion_limit():
            status, answer = open_reply(
                client_key, destination_key.encrypt(plaintext), external=external
            )
    except DecryptionError:
        pytest.fail("a body that decrypts was refused as one that does not")
    except InvalidInputError:
        return
    assert isinstance(status, int)
    assert not isinstance(status, bool)
    reply = orjson.loads(plaintext)
    assert status == reply["status"]
    if external:
        content, content_type = answer
        assert base64.b64encode(content).decode() == reply.get("body_b64", "")
        assert content_type == reply.get("content_type", "")
    else:
        assert answer == reply.get("body")


@given(
    body=st.binary(max_size=200),
    change=st.tuples(st.integers(0, 10_000), st.sampled_from(["flip", "cut", "extend"])),
    external=st.booleans(),
)
def test_a_body_that_does_not_decrypt_is_a_decryption_error(
    body: bytes, change: tuple[int, str], external: bool
) -> None:
    client_key, destination_key = _reply_keys()
    with pytest.raises(DecryptionError):
        open_reply(client_key, body, external=external)
    sealed = bytearray(destination_key.encrypt(b'{"status": 200, "body": {}}'))
    where, how = change
    if how == "flip":
        sealed[where // 8 % len(sealed)] ^= 1 << (where % 8)
    elif how == "cut":
        del sealed[where % len(sealed) :]
    else:
        sealed.append(where % 256)
    with pytest.raises(DecryptionError):
        open_reply(client_key, bytes(sealed), external=external)


# --- the swarm client over a scripted network -----------------------------------------------------

Answer = tuple[int, Any] | None
"""(status, body) as ``NetworkClient.request`` returns it, or None for a NetworkError."""


AUTHORITIES = [Identity.from_seed(bytes([0x50 + i]) * 32) for i in range(3)]
NETWORK = network_of(AUTHORITIES)
PERIOD = NETWORK.period_at(now_ms())
HELD = signed_by(consensus_of(NETWORK, ANNOUNCEMENTS[:5], PERIOD - 1), AUTHORITIES[:2])
"""The consensus the scripted client starts with: nodes 0 to 4, signed by two of three."""
NEWER = signed_by(consensus_of(NETWORK, ANNOUNCEMENTS[:6], PERIOD), AUTHORITIES)
"""The one consensus newer than HELD that a majority signed: nodes 0 to 5. Nodes 6 and 7 are in no
consensus a majority signed (their announcements verify all the same)."""
CONSENSUS_DOCUMENTS = {
    "held": HELD.to_json(),
    "newer": NEWER.to_json(),
    "older": signed_by(consensus_of(NETWORK, ANNOUNCEMENTS[:5], PERIOD - 2), AUTHORITIES).to_json(),
    "sybil, signed by one": signed_by(
        consensus_of(NETWORK, ANNOUNCEMENTS[5:], PERIOD), AUTHORITIES[:1]
    ).to_json(),
    "signed by strangers": signed_by(
        consensus_of(NETWORK, ANNOUNCEMENTS[5:], PERIOD), [ME, STRANGER, FRIEND]
    ).to_json(),
    "of another network": signed_by(
        dataclasses.replace(consensus_of(NETWORK, ANNOUNCEMENTS, PERIOD), network="other"),
        AUTHORITIES,
    ).to_json(),
    "expired": signed_by(
        consensus_of(NETWORK, ANNOUNCEMENTS, PERIOD - 20_000), AUTHORITIES
    ).to_json(),
}


def directory() -> ClientDirectory:
    return ClientDirectory(NETWORK, HELD)


class ScriptedNetwork(NetworkClient):
    """Answers each request with the next answer of a script; a NetworkError when it runs out."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__(directory(), rng=random.Random(0))
        self.answers = list(answers)
        self.asked: list[str] = []
        self.destinations: list[PeerInfo] = []
        self.answered: list[tuple[int, Any]] = []
        """The answers given so far."""

    async def request(
        self,
        destination: PeerInfo,
        method: str,
        params: dict[str, Any],
        *,
        onion: str | None = None,
    ) -> tuple[int, Any]:
        self.asked.append(method)
        self.destinations.append(destination)
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            raise NetworkError("the script ran out")
        self.answered.append(answer)
        return answer


def run(coroutine: Any) -> Any:
    """Run a coroutine on a fresh uvloop loop, at the default recursion limit."""
    with default_recursion_limit():
        return uvloop.run(asyncio.wait_for(coroutine, 10))


def _flip_hex(text: str, i: int) -> str:
    raw = bytearray(bytes.fromhex(text))
    raw[i % len(raw)] ^= 1 << (i % 8)
    return raw.hex()


@st.composite
def tampered(draw: st.DrawFn) -> dict[str, Any]:
    """A valid announcement with one field changed (it no longer verifies)."""
    entry = dict(draw(st.sampled_from(ENTRIES)))
    name = draw(st.sampled_from(["ed25519", "x25519", "http", "link", "version", "issued_ms"]))
    if name in {"ed25519", "x25519"}:
        entry[name] = _flip_hex(entry[name], draw(st.integers(0, 255)))
    elif name == "issued_ms":
        entry[name] += draw(st.integers(1, 2**40))
    else:
        entry[name] = draw(st.sampled_from(["10.9.9.9:1", "x:2", entry[name] + "0"]))
    return entry


announcement_entries = mostly(st.sampled_from(ENTRIES), tampered() | json_values)
node_lists = st.lists(announcement_entries, max_size=8, unique_by=orjson.dumps)
"""Lists of announcements, some valid (nodes 6 and 7 among them, in no consensus), none twice."""


def _snode(entry: Any) -> Any:
    """An announcement as a ``421`` (``get_swarm``) lists a swarm member; anything else as is."""
    if not isinstance(entry, dict) or not all(
        isinstance(entry.get(k), str) for k in ("http", "ed25519", "x25519")
    ):
        return entry
    host, _, port = entry["http"].rpartition(":")
    return {
        "ip": host,
        "port": port,
        "port_https": int(port) if port.isdigit() else port,
        "pubkey_ed25519": entry["ed25519"],
        "pubkey_x25519": entry["x25519"],
        "pubkey_legacy": entry["ed25519"],
    }


swarm_corrections = st.fixed_dictionaries(
    {"snodes": node_lists.map(lambda entries: [_snode(e) for e in entries])},
    optional={"swarm": json_values, "t": json_values, "hf": json_values},
)
"""A ``421`` body: the account's swarm as the node says it is (members of its choosing)."""


@st.composite
def tampered_consensus(draw: st.DrawFn) -> dict[str, Any]:
    """NEWER's document with one thing changed: a field of its body or of one node, a signature
    dropped or replaced, or the body of another consensus under its signatures."""
    document = copy.deepcopy(CONSENSUS_DOCUMENTS["newer"])
    body, signatures = document["consensus"], document["signatures"]
    how = draw(st.sampled_from(["body", "node", "drop", "replace", "swap"]))
    if how == "body":
        field = draw(st.sampled_from(["period", "srv", "valid_until_ms", "fresh_until_ms", "v"]))
        body[field] = draw(json_scalars | st.integers(0, 2**63 - 1))
    elif how == "node":
        node = body["nodes"][draw(st.integers(0, len(body["nodes"]) - 1))]
        field = draw(st.sampled_from(["http", "placement", "guard", "x25519", "admitted"]))
        node[field] = draw(json_scalars)
    elif how == "drop":
        for key in draw(st.lists(st.sampled_from(sorted(signatures)), unique=True)):
            del signatures[key]
    elif how == "replace":
        key = draw(st.sampled_from(sorted(signatures)))
        signatures[key] = draw(json_scalars)
    else:
        document["consensus"] = CONSENSUS_DOCUMENTS[draw(st.sampled_from(["older", "expired"]))][
            "consensus"
        ]
    return document


consensus_documents = (
    st.sampled_from(sorted(CONSENSUS_DOCUMENTS)).map(CONSENSUS_DOCUMENTS.__getitem__)
    | tampered_consensus()
)
consensus_answers: st.SearchStrategy[Answer] = mostly(
    st.tuples(st.just(200), consensus_documents),
    st.none()
    | st.tuples(st.sampled_from([200, 421, 503]) | st.integers(-(2**63), 2**64 - 1), json_values),
)


def check_paths(network: NetworkClient, client: SwarmClient) -> None:
    for node in network.nodes:  # a path can still be built to every node
        guard, relay = network.choose_path(node)
        assert len({guard.x25519, relay.x25519, node.x25519}) == 3
        assert guard in network.guards
    account = bytes.fromhex(ME.session_id)
    assert set(client.swarm(account)) <= set(network.nodes)


def check_refresh(script: list[Answer]) -> None:
    network = ScriptedNetwork([None if a is None else (a[0], _json(a[1])) for a in script])
    client = SwarmClient(network, rng=random.Random(1))
    adopted = run(network.refresh_consensus())
    tally(f"adopted: {adopted}")
    held = network.directory.consensus
    # The only consensus newer than HELD that a majority of the authorities signed is NEWER.
    assert held == (NEWER.consensus if adopted else HELD.consensus)
    if script and script[0] == (200, CONSENSUS_DOCUMENTS["newer"]):
        assert adopted
    assert network.asked == ["get_consensus"] * len(network.asked)
    assert len(network.asked) <= 2
    check_paths(network, client)


@given(script=st.lists(consensus_answers, max_size=3))
def test_a_refresh_takes_only_a_newer_consensus_a_majority_of_the_authorities_signed(
    script: list[Answer],
) -> None:
    check_refresh(script)


@given(script=st.lists(st.none() | st.tuples(st.integers(0, 600), json_values), max_size=3))
def test_any_get_consensus_answer_leaves_the_consensus_held(script: list[Answer]) -> None:
    check_refresh(script)


def check_421(body: Any, refreshes: list[Answer]) -> None:
    """A retrieve answered 421 with ``body``, then the refreshes' answers: no node the 421 names
    is ever asked, only the consensus's."""
    script: list[Answer] = [(421, _json(body))]
    script += [None if a is None else (a[0], _json(a[1])) for a in refreshes]
    network = ScriptedNetwork(script)
    client = SwarmClient(network, rng=random.Random(1), read_members=1)
    run(client.retrieve(ME, from_start=True))
    allowed = {p.ed25519 for p in PEERS[:6]}  # HELD's nodes, and NEWER's
    assert all(d.ed25519 in allowed for d in network.destinations)
    assert network.asked.count("get_consensus") <= 2  # one refresh for the one 421
    tally(f"refreshed to a newer one: {network.directory.consensus == NEWER.consensus}")
    check_paths(network, client)


@given(
    body=mostly(swarm_corrections, st.none() | st.lists(json_values) | hostile_texts),
    refreshes=st.lists(consensus_answers, max_size=3),
)
def test_a_421_never_makes_the_client_ask_a_node_the_consensus_does_not_list(
    body: Any, refreshes: list[Answer]
) -> None:
    check_421(body, refreshes)


@given(
    body=json_values
    | st.fixed_dictionaries({"snodes": json_values})
    | st.fixed_dictionaries({"snodes": st.lists(json_values)}, optional={"swarm": json_values}),
    refreshes=st.lists(consensus_answers, max_size=3),
)
def test_any_421_body_leaves_the_swarms_to_the_consensus(
    body: Any, refreshes: list[Answer]
) -> None:
    check_421(body, refreshes)


# --- retrieve -------------------------------------------------------------------------------------

ACCOUNT = bytes.fromhex(ME.session_id)


def _stored(data: bytes, timestamp: int) -> dict[str, Any]:
    """A message of ME's namespace 0 as an honest member returns it."""
    digest = hash_b64(message_hash(ACCOUNT, 0, data))
    return {"hash": digest, "timestamp": timestamp, "data": _b64(data)}


cursors = st.builds(
    cursor_encode,
    # an arrival in µs: from the past, around now, or (not taken) past the client's clock
    st.integers(0, now_ms() * 1000) | st.integers(0, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
)
hashes = st.sampled_from(["h1", "h2", "h3", "\x1b[2J", "", "_all", "_all" + "A" * 39]) | st.text(
    max_size=8
)
timestamps = st.integers(0, 2**63 - 1)
real_messages = st.builds(_stored, st.binary(max_size=30), timestamps)
junk_under_a_real_hash = st.builds(
    lambda real, data: {**real, "data": _b64(data)}, real_messages, st.binary(max_size=30)
)
real_with_a_bad_field = st.builds(
    lambda real, field, value: {**real, field: value},
    real_messages,
    st.sampled_from(["timestamp", "data", "hash"]),
    json_scalars,
)
retrieved_messages = (
    st.fixed_dictionaries(
        {"hash": hashes},
        optional={
            "timestamp": st.integers(-(2**63), 2**63 - 1),
            "data": json_values,
            "x": json_values,
        },
    )
    | real_messages
    | junk_under_a_real_hash
    | real_with_a_bad_field
)
pages = st.fixed_dictionaries(
    {"messages": st.lists(retrieved_messages | json_scalars, max_size=5)},
    optional={
        "more": json_scalars,
        # a cursor, or something that is not text (which is ignored); for any text, see
        # test_a_cursor_the_client_cannot_read_is_not_kept
        "cursor": cursors | st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1),
    },
)
error_texts = hostile_texts | st.text(max_size=300)
"""What a node answers for an error: text (``text/plain``), hostile or not."""
shaped_answers: st.SearchStrategy[Answer] = mostly(
    st.tuples(st.just(200), pages),
    st.none()
    | st.tuples(st.just(421), swarm_corrections)
    | st.tuples(st.sampled_from([400, 401, 500, 503]) | st.integers(0, 999), error_texts)
    | st.tuples(st.integers(0, 999), json_values),
)
any_answers: st.SearchStrategy[Answer] = st.none() | st.tuples(
    st.sampled_from([200, 200, 421]) | st.integers(-(2**63), 2**64 - 1),
    json_values
    | error_texts
    | pages
    | swarm_corrections
    | st.fixed_dictionaries(
        {}, optional=dict.fromkeys(["messages", "more", "cursor"], json_values)
    ),
)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_real(message: dict[str, Any]) -> bool:
    """Whether a retrieved message's data hashes to its hash (for ME's namespace 0)."""
    digest = message_hash(ACCOUNT, 0, base64.b64decode(message["data"], validate=True))
    return bool(hash_b64(digest) == message["hash"])


def check_retrieve(script: list[Answer], from_start: bool) -> None:
    script = [None if a is None else (a[0], _json(a[1])) for a in script]
    network = ScriptedNetwork(script)
    client = SwarmClient(network, rng=random.Random(2))
    got = run(client.retrieve(ME, from_start=from_start))
    sent = [
        m
        for answer in script
        if answer is not None and answer[0] == 200 and isinstance(answer[1], dict)
        for m in _list(answer[1].get("messages"))
        if isinstance(m, dict)
    ]
    assert all(isinstance(m, dict) and isinstance(m["hash"], str) for m in got)
    assert len({m["hash"] for m in got}) == len(got)
    fields = ("hash", "timestamp", "data")
    assert all(
        {k: m[k] for k in fields} in [{k: s.get(k) for k in fields} for s in sent] for m in got
    )
    assert all(type(m["timestamp"]) is int and _is_real(m) for m in got)  # the hash recomputed
    tally(f"retrieved: {min(len(got), 3)}{'+' if len(got) >= 3 else ''}")
    keys = [(m.get("timestamp", 0), m["hash"]) for m in got]
    assert keys == sorted(keys)
    latest_us = (now_ms() + swarm_module.FUTURE_MARGIN_MS) * 1000
    for key, cursor in client.export_cursors().items():
        if key not in ("recent", "read"):
            raw = cursor_decode(cursor)  # only cursors it can use again
            # and none past the client's clock: a member would skip what arrives until then
            assert int.from_bytes(raw[:8], "big") <= latest_us
    network.answers.clear()  # every member unreachable now: the cursors kept are read again
    assert run(client.retrieve(ME, from_start=from_start)) == []


@given(script=st.lists(shaped_answers, max_size=8), from_start=st.booleans())
def test_retrieve_merges_pages_of_the_expected_shape_into_distinct_ordered_messages(
    script: list[Answer], from_start: bool
) -> None:
    check_retrieve(script, from_start)


@given(script=st.lists(any_answers, max_size=8), from_start=st.booleans())
def test_retrieve_merges_any_pages_into_distinct_ordered_messages(
    script: list[Answer], from_start: bool
) -> None:
    check_retrieve(script, from_start)


def test_a_cursor_the_client_cannot_read_is_not_kept() -> None:
    page = {"messages": [_stored(b"a", 1)], "cursor": "x", "more": False}
    check_retrieve([(200, page)], from_start=False)


STORED_AT = 1_700_000_000_000
"""The client's clock during a scripted store (so that signed results can be made for it)."""
STORE_TTL = 60_000
STORE_DIGEST = message_hash(b"\x05" + bytes.fromhex(STRANGER.session_id[2:]), 0, b"hello")
STORE_SWARM = {
    p.ed25519 for p in SwarmClient(ScriptedNetwork([])).swarm(bytes.fromhex(STRANGER.session_id))
}
OTHER_DIGEST = message_hash(b"\x05" + bytes.fromhex(STRANGER.session_id[2:]), 0, b"other")
DELETED = "A" * 43
"""The one hash the scripted delete asks for."""
LIES = ["forged", "other key", "copied", "wrong hash", "failed", "junk", "key not a member's"]
"""How a member's entry in a swarm answer can be false (besides coming from a node outside the
swarm: the signer is drawn among every node)."""


def _b64sig(signature: bytes) -> str:
    return base64.b64encode(signature).decode()


@st.composite
def store_results(draw: st.DrawFn) -> tuple[str, Any]:
    """(member key, its signed result) for the scripted store, from one of the eight nodes (in its
    swarm or not), valid or lying in one of the ways of :data:`LIES`."""
    signer = draw(st.sampled_from(IDENTITIES))
    key = signer.ed25519_public_key.hex()
    how = draw(mostly(st.just("valid"), st.sampled_from(LIES)))
    digest = OTHER_DIGEST if how == "wrong hash" else STORE_DIGEST
    result: dict[str, Any] = {
        "hash": hash_b64(digest),
        "expiry": STORED_AT + STORE_TTL + draw(mostly(st.just(0), st.integers(-5, 5))),
        "signature": _b64sig(signer.sign(receipt_bytes(digest))),
    }
    if draw(st.integers(0, 5)) == 0:
        result["already"] = draw(mostly(st.just(True), json_values))
    if how == "forged":
        result["signature"] = _b64sig(bytes(64))
    elif how == "other key":
        result["signature"] = _b64sig(STRANGER.sign(receipt_bytes(digest)))
    elif how == "copied":  # a member's signed result under another member's key
        key = draw(
            st.sampled_from(IDENTITIES).filter(lambda i: i != signer)
        ).ed25519_public_key.hex()
    elif how == "failed":
        result = {**result, "failed": True, "timeout": True}
    elif how == "junk":
        return key, draw(json_values)
    elif how == "key not a member's":
        key = draw(hostile_texts | st.just(key.upper()))
    return key, result


@st.composite
def delete_results(draw: st.DrawFn) -> tuple[str, Any]:
    """(member key, its signed result) for the scripted delete of :data:`DELETED`, listing that
    hash and others (which it was not asked for), valid or lying."""
    signer = draw(st.sampled_from(IDENTITIES))
    key = signer.ed25519_public_key.hex()
    others = st.sampled_from(["B" * 43, f"_all{STORED_AT}", "\x1b[2J"])
    deleted = draw(
        mostly(
            st.lists(others, max_size=3).map(lambda extra: sorted([DELETED, *extra])),
            st.lists(st.just(DELETED) | others | json_scalars, max_size=4),
        )
    )
    how = draw(mostly(st.just("valid"), st.sampled_from(["forged", "other key", "copied", "junk"])))
    if all(isinstance(h, str) for h in deleted):
        signed = storage_rpc.member_signed(
            "delete", ME.session_id, {"messages": [DELETED]}, {"deleted": deleted}
        )
        signature = _b64sig((STRANGER if how == "other key" else signer).sign(signed))
    else:
        signature = _b64sig(bytes(64))
    if how == "forged":
        signature = _b64sig(bytes(64))
    elif how == "copied":
        key = draw(
            st.sampled_from(IDENTITIES).filter(lambda i: i != signer)
        ).ed25519_public_key.hex()
    elif how == "junk":
        return key, draw(json_values)
    return key, {"deleted": deleted, "signature": signature}


def swarm_blocks(results: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[Any]:
    return st.lists(results, min_size=1, max_size=7).map(dict)


store_answers = st.fixed_dictionaries(
    {
        "hash": mostly(st.just(hash_b64(STORE_DIGEST)), json_values),
        "swarm": mostly(swarm_blocks(store_results()), json_values),
    },
    optional={"t": json_values, "hf": json_values, "already": json_values},
)
delete_answers = st.fixed_dictionaries(
    {"swarm": mostly(swarm_blocks(delete_results()), json_values)},
    optional={"t": json_values, "hf": json_values, "deleted": st.lists(json_values)},
)


@given(
    answers=st.lists(
        st.none()
        | st.tuples(st.just(200), store_answers | delete_answers)
        | st.tuples(
            st.sampled_from([200, 400, 401, 403, 406, 421, 500, 503, 507]),
            st.fixed_dictionaries(
                {}, optional={"hash": json_values, "deleted": st.lists(json_values)}
            )
            | store_answers
            | delete_answers
            | swarm_corrections
            | error_texts
            | json_scalars,
        ),
        max_size=6,
    ),
    delete=st.booleans(),
)
def test_store_and_delete_answer_with_the_body_or_a_store_error(
    answers: list[Answer], delete: bool
) -> None:
    check_write([None if a is None else (a[0], _json(a[1])) for a in answers], delete)


def _entries(answers: list[tuple[int, Any]], member: bytes) -> list[dict[str, Any]]:
    """``member``'s entries in the swarm blocks of the 200 answers given."""
    return [
        body["swarm"][member.hex()]
        for status, body in answers
        if status == 200
        and isinstance(body, dict)
        and isinstance(body.get("swarm"), dict)
        and isinstance(body["swarm"].get(member.hex()), dict)
    ]


def _signed_by(entry: dict[str, Any], member: bytes, text: bytes) -> bool:
    """Whether ``entry`` is a result (not failed) whose signature by ``member`` is of ``text``."""
    try:
        signature = base64.b64decode(str(entry.get("signature")), validate=True)
    except ValueError:
        return False
    return (
        not entry.get("failed")
        and len(signature) == 64
        and _core.ed25519_verify(member, text, signature)
    )


def check_write(answers: list[Answer], delete: bool) -> None:
    network = ScriptedNetwork(answers)
    client = SwarmClient(network, rng=random.Random(3))
    outcome: Any
    try:
        if delete:
            outcome = run(client.delete(ME, [DELETED]))
        else:
            with mock.patch.object(swarm_module, "_now_ms", return_value=STORED_AT):
                outcome = run(client.store(STRANGER.session_id, b"hello", ttl_ms=STORE_TTL))
    except StoreError as error:
        outcome = error
    if isinstance(outcome, StoreError):
        assert isinstance(outcome.code, str)
        assert not UNSAFE & set(str(outcome))
        assert "\n" not in str(outcome)
        tally(f"store error: {outcome.code}" if outcome.code == "unacknowledged" else "error")
    elif delete:
        # Only the hash asked for, and only as a member of the swarm signed it.
        assert set(outcome) <= {DELETED}
        tally(f"deleted: {len(outcome)}")
        if outcome:
            assert any(
                DELETED in entry["deleted"]
                and _signed_by(
                    entry,
                    member,
                    (ME.session_id + DELETED + "".join(entry["deleted"])).encode(),
                )
                for member in STORE_SWARM_OF_ME
                for entry in _entries(network.answered, member)
                if isinstance(entry.get("deleted"), list)
                and all(isinstance(h, str) for h in entry["deleted"])
            )
    else:  # acknowledged: by W members of the swarm computed here, each signing the hash
        tally("acknowledged")
        text = hash_b64(STORE_DIGEST)
        assert outcome["hash"] == text
        assert outcome["expiry"] == STORED_AT + STORE_TTL
        assert isinstance(outcome["already"], bool)
        signers = [bytes.fromhex(m) for m in outcome["signed_by"]]
        assert len(set(signers)) == len(signers) >= 3
        assert set(signers) <= STORE_SWARM
        # one answer in which every one of them signed this message's hash
        assert any(
            all(
                isinstance(body.get("swarm"), dict)
                and isinstance(body["swarm"].get(m.hex()), dict)
                and body["swarm"][m.hex()].get("hash") == text
                and _signed_by(body["swarm"][m.hex()], m, text.encode())
                for m in signers
            )
            for status, body in network.answered
            if status == 200 and isinstance(body, dict)
        )


STORE_SWARM_OF_ME = {
    p.ed25519 for p in SwarmClient(ScriptedNetwork([])).swarm(bytes.fromhex(ME.session_id))
}
"""The swarm of ME (whose messages the scripted delete deletes)."""


@given(
    answers=st.lists(
        any_answers | st.tuples(st.just(200), store_answers | delete_answers), max_size=6
    ),
    delete=st.booleans(),
)
def test_store_and_delete_answer_any_answer_with_the_body_or_a_store_error(
    answers: list[Answer], delete: bool
) -> None:
    check_write([None if a is None else (a[0], _json(a[1])) for a in answers], delete)


# --- Messenger.ingest -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def messenger() -> Messenger:
    return Messenger(ME, None, book=Book(device_id="d", device_name="fuzz"))


def check_shown(reader: Messenger, events: list[Any], senders: set[str]) -> None:
    """What reaches the user is clean, and speaks only for whoever signed it."""
    for shown in events:
        tally(f"shown: {shown.kind}")
        assert shown.sender in senders
        assert shown.sender != ME.session_id
        assert shown.peer == shown.sender
        assert not shown.outgoing
        assert shown.kind in {"text", "accept", "unsend"}
        assert not UNSAFE & set(shown.body)
        if shown.name is not None:
            assert not UNSAFE & set(shown.name)
            assert "\n" not in shown.name
            assert len(shown.name) <= 64
        for chat_peer in (shown.peer, FRIEND.session_id):  # its conversation, or another one
            line = Chat(reader, chat_peer, out=print)._line(shown)
            assert line is None or not UNSAFE & set(line)
    for peer, entries in reader.book.conversations.items():
        assert peer in senders
        for entry in entries:
            assert not UNSAFE & set(entry.body)
            assert entry.name is None or not UNSAFE & set(entry.name)
    saved = json.dumps(reader.save().to_json(), sort_keys=True)
    assert Book.from_json(json.loads(saved)).conversations == reader.book.conversations


sent_times = st.integers(-(2**63), 2**64 - 1)
content_fields = st.fixed_dictionaries(
    {
        "v": mostly(st.just(1), st.sampled_from([2, 0, True, 1.0]) | json_scalars),
        "id": mostly(st.binary(min_size=16, max_size=16), st.binary(max_size=20) | json_scalars),
        "kind": st.sampled_from(["text", "text", "accept", "unsend", "sent", "config", "other"]),
        "sent_ms": mostly(sent_times, json_scalars),
        "body": mostly(hostile_texts | st.text(max_size=200), json_scalars),
    },
    optional={
        "name": mostly(hostile_texts | st.text(max_size=100), json_scalars),
        "to": st.sampled_from([ME.session_id, FRIEND.session_id]) | hostile_texts,
        "ref": mostly(st.binary(min_size=16, max_size=16), json_scalars),
        "dis": mostly(
            st.tuples(st.sampled_from(["after_send", "after_read"]), st.integers(1, 2**64 - 1)),
            st.tuples(st.text(max_size=10), sent_times) | json_scalars,
        ).map(lambda dis: list(dis) if isinstance(dis, tuple) else dis),
        "config": mostly(
            st.dictionaries(st.text(max_size=6), json_values, max_size=3), json_scalars
        ),
    },
)
contents = mostly(
    content_fields.map(lambda fields: pad(msgpack.packb(fields, use_bin_type=True))),
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(pad),
        content_fields.map(lambda fields: msgpack.packb(fields, use_bin_type=True)),  # unpadded
    ),
)


@given(plaintexts=st.lists(contents, min_size=1, max_size=4))
def test_anything_another_account_encrypts_to_us_shows_under_that_account_and_clean(
    plaintexts: list[bytes],
) -> None:
    reader = messenger()
    retrieved = [
        {"hash": f"h{i}", "data": _b64(encrypt_for_recipient(STRANGER, ME.session_id, p))}
        for i, p in enumerate(plaintexts)
    ]
    events = reader.ingest(retrieved)
    check_shown(reader, events, {STRANGER.session_id})


@given(body=hostile_texts | st.text(), name=st.none() | hostile_texts | st.text())
def test_a_text_message_shows_with_every_control_character_replaced(
    body: str, name: str | None
) -> None:
    reader = messenger()
    content = Content.text(body, 1_700_000_000_000, name=name)
    [event] = reader.ingest([{"hash": "h", "data": _b64(seal(STRANGER, ME.session_id, content))}])
    assert event.id == content.id
    assert len(event.body) == len(body)
    assert all(
        shown == sent or (sent in UNSAFE and shown == "\ufffd")
        for shown, sent in zip(event.body, body, strict=True)
    )
    check_shown(reader, [event], {STRANGER.session_id})


def _flipped(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8 % len(changed)] ^= 1 << (bit % 8)
    return bytes(changed)


valid_sealed = st.builds(
    lambda text: seal(STRANGER, ME.session_id, Content.text(text, 1)), st.text(max_size=20)
)
undecryptable_data = st.one_of(
    json_values,
    st.binary(max_size=300).map(_b64),
    st.tuples(valid_sealed, st.integers(0, 10**6)).map(lambda sb: _b64(_flipped(*sb))),
    valid_sealed.map(lambda sealed: _b64(sealed[:-1])),
    valid_sealed.map(lambda sealed: _b64(sealed) + "="),  # not strict base64
    st.binary(max_size=300).map(  # sealed to someone else
        lambda p: _b64(encrypt_for_recipient(STRANGER, FRIEND.session_id, p))
    ),
)
retrieved_dicts = st.builds(
    lambda extra, hash_, data: {**extra, "hash": hash_, "data": data},
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    hashes,
    undecryptable_data,
) | st.builds(
    lambda extra, hash_: {**extra, "hash": hash_},
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    hashes,
)


@given(retrieved=st.lists(retrieved_dicts, max_size=5))
def test_retrieved_messages_that_do_not_decrypt_are_counted_never_shown(
    retrieved: list[dict[str, Any]],
) -> None:
    reader = messenger()
    with default_recursion_limit():
        events = reader.ingest([_json(m) for m in retrieved])
    assert events == []
    assert reader.undecryptable == len(retrieved)
    assert reader.book.conversations == {}


@given(ref_is_friends=st.booleans(), kind=st.sampled_from(["unsend", "sent"]))
def test_another_account_cannot_take_back_or_write_in_someone_elses_conversation(
    ref_is_friends: bool, kind: str
) -> None:
    reader = messenger()
    friends = Content.text("from a friend", 1)
    ours = Content.text("our own note", 2)
    reader.ingest(
        [
            {"hash": "f", "data": _b64(seal(FRIEND, ME.session_id, friends))},
            {"hash": "o", "data": _b64(seal(ME, ME.session_id, ours))},
        ]
    )
    before = {peer: list(entries) for peer, entries in reader.book.conversations.items()}
    assert len(before) == 2
    ref = friends.id if ref_is_friends else ours.id
    hostile = Content("forged", 3, secrets.token_bytes(16), kind, to=FRIEND.session_id, ref=ref)
    events = reader.ingest([{"hash": "x", "data": _b64(seal(STRANGER, ME.session_id, hostile))}])
    # (an unsend that takes nothing back may leave an empty conversation, purged on the next read)
    assert {
        peer: entries for peer, entries in reader.book.conversations.items() if entries
    } == before
    assert all(event.peer == STRANGER.session_id for event in events)


def test_retrieved_data_nested_deeply_is_counted_undecryptable() -> None:
    reader = messenger()
    data = orjson.loads(b"[" * 1000 + b"]" * 1000)
    with default_recursion_limit():
        assert reader.ingest([{"hash": "h", "data": data}]) == []
    assert reader.undecryptable == 1
