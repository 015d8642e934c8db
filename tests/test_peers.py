"""Peer entries: the protocol's JSON form, and the node's ``peers.json`` built on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.errors import InvalidInputError
from veil.node.config import ConfigError
from veil.node.peers import load_peers
from veil.protocol.peers import PeerInfo, peer_from_json, peer_to_json

KEY = st.binary(min_size=32, max_size=32)
HOST = st.sampled_from(["127.0.0.1", "node.example", "::1", "10.0.0.7"])
PORT = st.integers(1, 65535)

GOOD = {"ed25519": "11" * 32, "x25519": "22" * 32, "http": "127.0.0.1:1", "link": "[::1]:2"}


@given(KEY, KEY, HOST, PORT, HOST, PORT)
def test_a_peer_survives_its_json_form(
    ed: bytes, x: bytes, http_host: str, http_port: int, link_host: str, link_port: int
) -> None:
    peer = PeerInfo(ed, x, (http_host, http_port), (link_host, link_port))
    assert peer_from_json(peer_to_json(peer)) == peer


def test_an_ipv6_address_in_brackets_is_read_without_them() -> None:
    assert peer_from_json(GOOD).link == ("::1", 2)


@pytest.mark.parametrize(
    "entry",
    [
        [],
        {k: v for k, v in GOOD.items() if k != "link"},
        GOOD | {"ed25519": "zz" * 32},
        GOOD | {"x25519": "22" * 31},
        GOOD | {"http": "127.0.0.1"},
        GOOD | {"http": "127.0.0.1:65536"},
        GOOD | {"link": 7},
    ],
    ids=["not-object", "no-link", "bad-hex", "short-key", "no-port", "big-port", "not-text"],
)
def test_a_malformed_peer_entry_is_invalid_input(entry: object) -> None:
    with pytest.raises(InvalidInputError):
        peer_from_json(entry)


def test_load_peers_reads_the_list_and_an_absent_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    assert load_peers(path) == []
    path.write_text(json.dumps([GOOD]), encoding="utf-8")
    assert load_peers(path) == [peer_from_json(GOOD)]


def test_load_peers_names_a_malformed_entry_as_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_text(json.dumps([GOOD, GOOD | {"x25519": "22"}]), encoding="utf-8")
    with pytest.raises(ConfigError, match="a peer's keys are 32 bytes each"):
        load_peers(path)
    path.write_text(json.dumps({"not": "a list"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a JSON list of peers"):
        load_peers(path)
