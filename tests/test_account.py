"""The account config merges like a CRDT: in any order, any grouping, any number of times, every
device ends with the same config, and the latest change of each entry wins."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from veil.client.account import AccountConfig, Book, Device, Entry
from veil.identity import Identity

PEERS = [Identity.from_seed(bytes([i]) * 32).session_id for i in range(4)]
DEVICES = [f"00000000000000a{i}" for i in range(3)]

changes = st.lists(
    st.one_of(
        st.tuples(st.just("name"), st.none() | st.sampled_from(["Al", "Alice"]), st.integers(0, 9)),
        st.tuples(
            st.just("contact"),
            st.sampled_from(PEERS),
            st.sampled_from(["accepted", "blocked"]),
            st.integers(0, 9),
        ),
        st.tuples(
            st.just("device"),
            st.sampled_from(DEVICES),
            st.integers(0, 9),
            st.booleans(),
            st.integers(0, 9),
        ),
    ),
    max_size=8,
)


def _config(steps: list[tuple[object, ...]]) -> AccountConfig:
    config = AccountConfig()
    for step in steps:
        if step[0] == "name":
            config.set_name(step[1], step[2])  # type: ignore[arg-type]
        elif step[0] == "contact":
            config.set_contact(step[1], step[2], step[3])  # type: ignore[arg-type]
        else:
            device = Device("d", 1, step[2], step[4], step[3])  # type: ignore[arg-type]
            config.set_device(step[1], device)  # type: ignore[arg-type]
    return config


def _merged(*configs: AccountConfig) -> AccountConfig:
    result = AccountConfig()
    for config in configs:
        result.merge(copy.deepcopy(config))
    return result


@settings(max_examples=200)
@given(changes, changes, changes)
def test_merge_is_commutative_associative_and_idempotent(
    a: list[tuple[object, ...]], b: list[tuple[object, ...]], c: list[tuple[object, ...]]
) -> None:
    x, y, z = _config(a), _config(b), _config(c)
    assert _merged(x, y).wire() == _merged(y, x).wire()
    assert _merged(_merged(x, y), z).wire() == _merged(x, _merged(y, z)).wire()
    assert _merged(x, x).wire() == _merged(x).wire()
    assert _merged(x, y, x, y).wire() == _merged(x, y).wire()


@given(changes)
def test_the_wire_form_round_trips(steps: list[tuple[object, ...]]) -> None:
    config = _config(steps)
    assert AccountConfig.from_wire(config.wire()).wire() == config.wire()


def test_the_later_change_wins_and_malformed_entries_are_skipped() -> None:
    phone, laptop = AccountConfig(), AccountConfig()
    phone.set_contact(PEERS[0], "accepted", 100)
    laptop.set_contact(PEERS[0], "blocked", 200)
    assert phone.merge(laptop)
    assert phone.contact(PEERS[0]) == "blocked"
    assert not phone.merge(laptop)  # nothing new
    hostile = {
        "name": ["x" * 500, 5],
        "contacts": {"05nothex": ["accepted", 1], PEERS[1]: ["friend", 1], PEERS[2]: ["accepted"]},
        "devices": {"short": ["d", 1, 1, 1, False], DEVICES[0]: ["d", "1", 1, 1, False]},
    }
    parsed = AccountConfig.from_wire(hostile)
    assert parsed.name == "x" * 64
    assert parsed.contacts == {}
    assert parsed.devices == {}
    assert AccountConfig.from_wire([1, 2]).wire() == AccountConfig().wire()


def test_a_book_survives_its_json() -> None:
    book = Book()
    book.config.set_contact(PEERS[0], "accepted", 5)
    book.conversations[PEERS[0]] = [
        Entry("ab" * 16, True, "hi", 7, "Al", ("after_read", 60_000), 8, 60_008)
    ]
    book.pending = {"h": 3}
    book.config_dirty = True
    again = Book.from_json(book.to_json())
    assert again.to_json() == book.to_json()


def test_malformed_group_and_community_entries_of_a_config_are_skipped() -> None:
    group = "03" + "ab" * 32
    room = "lobby@" + "cd" * 32
    hostile = {
        "groups": {
            "05" + "ab" * 32: [True, 1, {}],  # not a group's account
            "03ZZ" + "ab" * 31: [True, 1, {}],
            group: [True, "1", {}],
            "03" + "ef" * 32: [True, 1, "an invitation"],
            "03" + "12" * 32: ["yes", 1, None],
        },
        "communities": {
            room: [True, 1, None],  # joined, but no link
            "left@" + "cd" * 32: [False, 1, "veil://community?…"],  # left, yet a link
            "x" * 201: [True, 1, "link"],
            "long@x": [True, 1, "l" * 1001],
            "odd@x": [True, 1.5, "link"],
            7: [True, 1, "link"],
        },
    }
    parsed = AccountConfig.from_wire(hostile)
    assert parsed.groups == {}
    assert parsed.communities == {}
    good = {
        "groups": {group: [False, 3, None]},
        "communities": {room: [True, 4, "veil://community?url=x"]},
    }
    parsed = AccountConfig.from_wire(good)
    assert parsed.groups == {group: (False, 3, None)}
    assert parsed.communities == {room: (True, 4, "veil://community?url=x")}
