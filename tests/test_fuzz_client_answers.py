"""Fuzzing what a client reads from nodes and from other accounts, all of it hostile.

- ``veil.protocol.onion_request.open_reply``: any plaintext under the reply key opens to an integer
  status or raises :class:`InvalidInputError` (never :class:`DecryptionError`, which is for bodies
  that do not decrypt, and every changed body is one).
- ``veil.client.swarm.SwarmClient`` over a scripted network (:class:`ScriptedNetwork`, a
  ``NetworkClient`` whose every request is answered from a Hypothesis-drawn list of (status, body)
  pairs, or fails with :class:`NetworkError`): ``refresh_nodes`` adopts only announcements that
  verify (and only three or more, to every one of which a path can be built), a 421 correction
  only members that verify, ``retrieve`` merges pages into distinct messages in cursor order and
  keeps only cursors it can read again; ``store`` and ``delete`` answer or raise StoreError.
- ``veil.client.messaging.Messenger.ingest``: retrieved messages of any shape and any ``data`` are
  shown only if they decrypt; anything another account encrypts to us (any plaintext, any content)
  shows under that account only, never as ours or a third party's, with every character a terminal
  would act on replaced, and leaves a book that still saves.

Where one of these fails today, the general property is skipped with the bug, and a property over
answers of the expected shape (with hostile values) runs in its place.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
from typing import Any

import msgpack
import orjson
import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import default_recursion_limit, tally
from veil import _core
from veil.client.account import Book
from veil.client.chat import Chat
from veil.client.messaging import Messenger, seal
from veil.client.network import NetworkClient, NetworkError
from veil.client.swarm import StoreError, SwarmClient
from veil.crypto import HopKey, encrypt_for_recipient, peel_onion
from veil.errors import DecryptionError, InvalidInputError
from veil.identity import Identity
from veil.protocol.announcement import Announcement, sign_announcement
from veil.protocol.content import Content, pad
from veil.protocol.hashes import cursor_decode, cursor_encode
from veil.protocol.onion_request import build_request, open_reply
from veil.protocol.peers import PeerInfo

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

# What a terminal acts on (veil.client.messaging.printable): C0 and C1 controls but tab and newline,
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
            st.sampled_from(["nodes", "error", "swarm", "messages", "hash", "cursor", "more"])
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


class ScriptedNetwork(NetworkClient):
    """Answers each request with the next answer of a script; a NetworkError when it runs out."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__(PEERS[:5], rng=random.Random(0))
        self.answers = list(answers)
        self.asked: list[str] = []

    async def request(
        self, destination: PeerInfo, method: str, params: dict[str, Any]
    ) -> tuple[int, Any]:
        self.asked.append(method)
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            raise NetworkError("the script ran out")
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
"""Lists of announcements, some valid, none twice (see the skipped test of duplicates)."""


def verified(entries: Any) -> list[PeerInfo]:
    """The distinct nodes of the entries that verify, in order (a node named again, by its
    identity or its key, counts once)."""
    out: list[PeerInfo] = []
    for entry in entries:
        try:
            peer = PeerInfo.of(Announcement.from_json(entry))
        except InvalidInputError:
            continue
        if all(peer.ed25519 != p.ed25519 and peer.x25519 != p.x25519 for p in out):
            out.append(peer)
    return out


def check_refresh(answer: tuple[int, Any]) -> None:
    status, body = answer
    network = ScriptedNetwork([answer])
    client = SwarmClient(network, rng=random.Random(1))
    try:
        count = run(client.refresh_nodes())
    except NetworkError:
        pytest.fail("the script had an answer")
    entries = body.get("nodes") if status == 200 and isinstance(body, dict) else None
    peers = verified(entries if isinstance(entries, list) else [])
    assert count == len(peers)
    tally("adopted a node list" if len(peers) >= 3 else "kept the node list")
    assert network.nodes == (peers if len(peers) >= 3 else PEERS[:5])
    for node in network.nodes:  # a path can still be built to every node
        guard, relay = network.choose_path(node)
        assert len({guard.x25519, relay.x25519, node.x25519}) == 3
    account = bytes.fromhex(ME.session_id)
    assert set(client.swarm(account)) <= set(network.nodes)


@given(
    status=mostly(st.just(200), st.sampled_from([421, 500]) | st.integers(-(2**63), 2**64 - 1)),
    body=mostly(st.fixed_dictionaries({"nodes": node_lists}), st.none() | hostile_texts),
)
def test_refresh_nodes_adopts_only_announcements_that_verify(status: int, body: Any) -> None:
    check_refresh((status, _json(body)))


@given(body=json_values | st.fixed_dictionaries({"nodes": json_values}))
def test_any_get_nodes_answer_adopts_only_announcements_that_verify(body: Any) -> None:
    check_refresh((200, _json(body)))


@given(
    entries=st.lists(st.sampled_from(ENTRIES[:3]), min_size=3, max_size=6),
)
def test_a_node_list_that_names_a_node_twice_leaves_paths_to_build(
    entries: list[dict[str, Any]],
) -> None:
    check_refresh((200, {"nodes": entries}))


def check_correction(body: Any) -> None:
    client = SwarmClient(ScriptedNetwork([]), rng=random.Random(1))
    account = bytes.fromhex(ME.session_id)
    before = client.swarm(account)
    corrected = client._correct(account, body)
    error = body.get("error") if isinstance(body, dict) else None
    named = error.get("swarm") if isinstance(error, dict) else None
    named = named if isinstance(named, list) else []
    assert corrected == bool(verified(named))
    tally(f"corrected: {corrected}")
    assert client.swarm(account) == (verified(named) if corrected else before)


@given(
    body=mostly(
        st.fixed_dictionaries(
            {"error": st.fixed_dictionaries({"swarm": node_lists}, optional={"code": json_values})}
        ),
        st.none() | st.lists(json_values),
    )
)
def test_a_421_correction_adopts_only_members_that_verify(body: Any) -> None:
    check_correction(_json(body))


@given(
    body=json_values
    | st.fixed_dictionaries({"error": json_values})
    | st.fixed_dictionaries({"error": st.fixed_dictionaries({"swarm": json_values})})
)
def test_any_421_body_adopts_only_members_that_verify(body: Any) -> None:
    check_correction(_json(body))


# --- retrieve -------------------------------------------------------------------------------------

cursors = st.builds(cursor_encode, st.integers(0, 2**63 - 1), st.binary(min_size=32, max_size=32))
hashes = st.sampled_from(["h1", "h2", "h3", "\x1b[2J", ""]) | st.text(max_size=8)
retrieved_messages = st.fixed_dictionaries(
    {"hash": hashes},
    optional={"timestamp": st.integers(-(2**63), 2**63 - 1), "data": json_values, "x": json_values},
)
pages = st.fixed_dictionaries(
    {"messages": st.lists(retrieved_messages | json_scalars, max_size=5)},
    optional={
        "more": json_scalars,
        # a cursor, or something that is not text (which is ignored); for any text, see the
        # skipped test below
        "cursor": cursors | st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1),
    },
)
corrections = st.fixed_dictionaries({"error": st.fixed_dictionaries({"swarm": node_lists})})
shaped_answers: st.SearchStrategy[Answer] = mostly(
    st.tuples(st.just(200), pages),
    st.none()
    | st.tuples(st.just(421), corrections)
    | st.tuples(st.sampled_from([400, 401, 500, 503]) | st.integers(0, 999), json_values),
)
any_answers: st.SearchStrategy[Answer] = st.none() | st.tuples(
    st.sampled_from([200, 200, 421]) | st.integers(-(2**63), 2**64 - 1),
    json_values
    | pages
    | corrections
    | st.fixed_dictionaries(
        {}, optional=dict.fromkeys(["messages", "more", "cursor"], json_values)
    ),
)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


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
    assert all(m in sent for m in got)
    tally(f"retrieved: {min(len(got), 3)}{'+' if len(got) >= 3 else ''}")
    keys = [(m.get("timestamp", 0), m["hash"]) for m in got]
    assert keys == sorted(keys)
    for key, cursor in client.export_cursors().items():
        if key != "recent":
            cursor_decode(cursor)  # only cursors it can use again
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
    page = {"messages": [{"hash": "a", "timestamp": 1}], "cursor": "x", "more": False}
    check_retrieve([(200, page)], from_start=False)


@given(
    answers=st.lists(
        st.none()
        | st.tuples(
            st.sampled_from([200, 400, 406, 421, 500, 507]),
            st.fixed_dictionaries(
                {}, optional={"hash": json_values, "deleted": st.lists(json_values)}
            )
            | st.fixed_dictionaries(
                {
                    "error": st.fixed_dictionaries(
                        {}, optional=dict.fromkeys(["code", "message"], json_values)
                    )
                }
            )
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


def check_write(answers: list[Answer], delete: bool) -> None:
    client = SwarmClient(ScriptedNetwork(answers), rng=random.Random(3))
    outcome: Any
    try:
        if delete:
            outcome = run(client.delete(ME, ["A" * 43]))
        else:
            outcome = run(client.store(STRANGER.session_id, b"hello", ttl_ms=60_000))
    except StoreError as error:
        outcome = error
    if isinstance(outcome, StoreError):
        assert isinstance(outcome.code, str)
    elif delete:
        assert all(isinstance(h, str) for h in outcome)
    else:
        assert isinstance(outcome, dict)


@given(answers=st.lists(any_answers, max_size=6), delete=st.booleans())
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
