"""Fuzzing signed node announcements (``veil.protocol.announcement``) and ``parse_address``.

Authorities take announcements from the nodes that register with them, and clients from nodes
(``get_nodes``, a 421's swarm), so ``Announcement.from_json`` reads hostile JSON: it either returns
a verified announcement or raises :class:`InvalidInputError`, which is all its callers catch. Any
change to a signed field of a valid announcement is refused; a valid one survives ``to_json`` →
JSON text → ``from_json``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.protocol.announcement import Announcement, parse_address, sign_announcement

IDENTITY = Identity.from_seed(bytes(range(32)))
OTHER = Identity.from_seed(bytes(range(1, 33)))
FIELDS = ("ed25519", "x25519", "http", "link", "version", "issued_ms", "signature")


def parse_or_refuse(entry: object) -> Announcement | None:
    """``from_json``'s answer, failing the test on any exception but InvalidInputError."""
    try:
        return Announcement.from_json(entry)
    except InvalidInputError:
        return None


# --- announcements to sign ------------------------------------------------------------------------

hosts = st.sampled_from(
    ["127.0.0.1", "[::1]", "node.example", "10.0.0.7", "[fe80::1%eth0]"]
) | st.text(min_size=1, max_size=40).filter(lambda h: len(h.encode()) <= 200)
addresses = st.builds("{}:{}".format, hosts, st.integers(1, 65535))
versions = st.text(max_size=60)


@st.composite
def signed(draw: st.DrawFn) -> Announcement:
    return sign_announcement(
        draw(st.sampled_from([IDENTITY, OTHER])),
        http=draw(addresses),
        link=draw(addresses),
        version=draw(versions),
        issued_ms=draw(st.integers(0, 2**64 - 1)),
    )


@given(announcement=signed())
def test_a_signed_announcement_round_trips_through_json_text(announcement: Announcement) -> None:
    text = orjson.dumps(announcement.to_json())
    assert Announcement.from_json(orjson.loads(text)) == announcement
    assert Announcement.from_json(json.loads(text)) == announcement


@given(host=hosts, port=st.integers(1, 65535))
def test_an_address_written_as_host_colon_port_parses_back(host: str, port: int) -> None:
    address = f"{host}:{port}"
    assume(len(address) <= 255)
    assert parse_address(address) == (host.removeprefix("[").removesuffix("]"), port)


# --- hostile JSON, as orjson hands it over --------------------------------------------------------

network_ints = st.integers(-(2**63), 2**64 - 1)  # what orjson and msgpack give as int
network_scalars = (
    st.none()
    | st.booleans()
    | network_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | addresses
    | st.sampled_from([IDENTITY.ed25519_public_key.hex(), IDENTITY.x25519_public_key.hex()])
    | st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode())
    | st.binary(max_size=33).map(bytes.hex)
)
network_json = st.recursive(
    network_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=8)
    ),
    max_leaves=20,
)
entries = st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, network_json))


@given(value=network_json)
def test_any_json_value_is_an_announcement_or_invalid_input(value: Any) -> None:
    parse_or_refuse(orjson.loads(orjson.dumps(value)))


@given(entry=entries)
def test_any_object_with_announcement_fields_is_an_announcement_or_invalid_input(
    entry: dict[str, Any],
) -> None:
    assert parse_or_refuse(entry) is None  # no valid signature can arise by chance


@given(text=st.text(max_size=300) | addresses | st.builds("{}:{}".format, hosts, st.text()))
def test_any_text_is_an_address_or_invalid_input(text: str) -> None:
    try:
        host, port = parse_address(text)
    except InvalidInputError:
        return
    raw_host, _, port_text = text.rpartition(":")
    assert 0 < port < 65536
    assert port == int(port_text)
    assert host == raw_host.removeprefix("[").removesuffix("]")


@given(value=st.none() | st.booleans() | st.integers() | st.floats() | st.lists(st.integers()))
def test_an_address_that_is_not_text_is_invalid_input(value: object) -> None:
    with pytest.raises(InvalidInputError):
        parse_address(value)


# --- mutations of a valid announcement -----------------------------------------------------------


def _flip(raw: bytes, bit: int) -> bytes:
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def changed_values(entry: dict[str, Any], name: str) -> st.SearchStrategy[Any]:
    """Values of field ``name`` that mean something else than ``entry[name]``."""
    value = entry[name]
    # (Not the value itself: an empty version's "change" to "" would be none.)
    other_types = st.sampled_from(
        [other for other in (None, True, 1.5, [value], {"v": value}, "") if other != value]
    )
    if name in {"ed25519", "x25519"}:
        raw = bytes.fromhex(value)
        flipped = st.integers(0, 255).map(lambda bit: _flip(raw, bit).hex())
        swapped = st.just(
            (OTHER if raw != OTHER.ed25519_public_key else IDENTITY).ed25519_public_key
        )
        return flipped | swapped.map(bytes.hex) | st.just(value[:-2]) | other_types
    if name == "signature":
        raw = base64.b64decode(value)
        flipped = st.integers(0, 511).map(lambda bit: base64.b64encode(_flip(raw, bit)).decode())
        return flipped | st.just(base64.b64encode(raw[:-1]).decode()) | other_types
    if name == "issued_ms":
        nearby = st.integers(-(2**40), 2**40).filter(bool).map(lambda d: value + d)
        return nearby | st.sampled_from([float(value), str(value), -1]) | other_types
    texts = st.text(max_size=40) | addresses if name in {"http", "link"} else versions
    return texts.filter(lambda text: text != value) | other_types


@given(announcement=signed(), data=st.data())
def test_any_change_to_a_signed_field_is_refused(
    announcement: Announcement, data: st.DataObject
) -> None:
    entry = announcement.to_json()
    name = data.draw(st.sampled_from(FIELDS))
    value = data.draw(changed_values(entry, name))
    mutated = {**entry, name: value}
    if value is None and data.draw(st.booleans()):
        del mutated[name]
    with pytest.raises(InvalidInputError):
        Announcement.from_json(mutated)


@given(announcement=signed(), extra=st.dictionaries(st.text(max_size=8), network_json, max_size=3))
def test_unknown_fields_beside_a_valid_announcement_change_nothing(
    announcement: Announcement, extra: dict[str, Any]
) -> None:
    entry = {**extra, **announcement.to_json()}
    assert Announcement.from_json(entry) == announcement


def test_the_announcement_of_another_identity_with_this_ones_key_is_refused() -> None:
    mine = sign_announcement(IDENTITY, http="a:1", link="a:2", version="1", issued_ms=5)
    theirs = sign_announcement(OTHER, http="a:1", link="a:2", version="1", issued_ms=5)
    forged = {**theirs.to_json(), "ed25519": mine.to_json()["ed25519"]}
    with pytest.raises(InvalidInputError):
        Announcement.from_json(forged)


# --- found by the properties above: regression cases ---------------------------------------------


@pytest.mark.parametrize("port", ["²", "①", "₃", "1²"])
def test_a_port_of_digits_int_cannot_read_is_invalid_input(port: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_address(f"host:{port}")
    entry = {
        **sign_announcement(IDENTITY, http="a:1", link="a:2", version="", issued_ms=1).to_json()
    }
    with pytest.raises(InvalidInputError):
        Announcement.from_json({**entry, "http": f"host:{port}"})


def test_an_issued_time_past_64_bits_is_invalid_input() -> None:
    entry = sign_announcement(IDENTITY, http="a:1", link="a:2", version="", issued_ms=1).to_json()
    with pytest.raises(InvalidInputError):
        Announcement.from_json({**entry, "issued_ms": 2**64})


@pytest.mark.parametrize("name", ["http", "link", "version"])
def test_text_that_is_not_utf8_is_invalid_input(name: str) -> None:
    entry = sign_announcement(IDENTITY, http="a:1", link="a:2", version="", issued_ms=1).to_json()
    with pytest.raises(InvalidInputError):
        Announcement.from_json({**entry, name: json.loads('"\\ud800:1"')})
