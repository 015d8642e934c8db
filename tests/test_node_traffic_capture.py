"""A packet capture of a devnet carrying a conversation shows nothing but sizes and timing between
nodes.

Six nodes run as a devnet; once they have converged, tcpdump records every node's link and HTTP
port on loopback while Alice and Bob hold a conversation through the ``veil`` commands, and for a
few seconds after, so that the nodes' own traffic (anti-entropy) is recorded too. Node-to-node
traffic is every TCP connection to a node's link port; on it no account key, no message text, no
JSON and no HTTP may appear, and no 64 bytes may cross two different links (or a link and a
client's connection), which would let an observer follow a request from hop to hop. Controls on the
client side of the same capture (its onion requests, the consensus a seed serves in JSON) show that
each check can fire.

Skipped, with the reason, where tcpdump cannot be had or cannot capture.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from capture import (
    Capture,
    Stream,
    endpoint_filter,
    find_needles,
    looks_like_json,
    reassemble,
    shared_sequences,
    streams_to_ports,
    tcpdump_or_skip,
)
from veil.identity import Identity

NODES = 6
AFTER_S = 6.0
"""How long the capture goes on after the conversation, for the nodes' anti-entropy exchanges."""
MIN_LINK_BYTES = 100_000
"""The conversation's onion requests, their replication and anti-entropy send more than this."""
SHARED_RUN = 64
CONTEXT = 48
"""Bytes shown either side of a finding."""

# A JSON object key however it is spaced: `{"` then a short printable key, then `":`.
_JSON_OPENING = re.compile(rb'\{"[\x20\x21\x23-\x7e]{1,64}":')
_HTTP = re.compile(rb"HTTP/1\.[01]|(?:GET|POST|PUT|HEAD) /")


def _veil(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _ok(*args: str) -> str:
    done = _veil(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@dataclass(frozen=True)
class Devnet:
    seeds: list[str]
    network_file: str
    http_ports: dict[int, str]
    """Each node's HTTP port, with a name for reports ("node3 http")."""
    link_ports: dict[int, str]
    endpoints: list[tuple[str, int]]
    """Every node's HTTP and link address: what the capture records traffic to and from."""
    node_keys: list[bytes]
    """Every node's Ed25519 and X25519 public key."""

    def name(self, port: int) -> str:
        return self.http_ports.get(port) or self.link_ports.get(port) or "ephemeral"

    def on_link(self, stream: Stream) -> bool:
        return stream.src[1] in self.link_ports or stream.dst[1] in self.link_ports


@pytest.fixture(scope="module")
def tcpdump(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tcpdump's path, once it has shown it can capture here (else the test is skipped)."""
    return tcpdump_or_skip(tmp_path_factory.mktemp("probe"), any_capture_error_skips=True)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _endpoint(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory, tcpdump: str) -> Iterator[Devnet]:
    """A converged devnet of six nodes, always stopped afterwards."""
    root = tmp_path_factory.mktemp("devnet") / "devnet"
    try:
        up = _veil("devnet", "up", "--detach", "--nodes", str(NODES), "--dir", str(root))
        assert up.returncode == 0, up.stderr
        status = json.loads(_ok("devnet", "status", "--dir", str(root), "--json"))
        nodes = status["nodes"]
        assert [(n["running"], n["view"]) for n in nodes] == [(True, NODES)] * NODES, nodes
        yield Devnet(
            seeds=list(status["seeds"]),
            network_file=status["network_file"],
            http_ports={_port(n["http"]): f"node{n['index']} http" for n in nodes},
            link_ports={_port(n["link"]): f"node{n['index']} link" for n in nodes},
            endpoints=[_endpoint(n[kind]) for n in nodes for kind in ("http", "link")],
            node_keys=[bytes.fromhex(n[key]) for n in nodes for key in ("ed25519", "x25519")],
        )
    finally:
        _veil("devnet", "down", "--dir", str(root))


# --- what an observer must not find ---------------------------------------------------------------


def _forms(raw: bytes) -> list[bytes]:
    """The ways a key may cross: raw, hex (either case), base64."""
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw)]


def account_needles(identity: Identity) -> list[bytes]:
    session_id = bytes.fromhex(identity.session_id)
    assert session_id == b"\x05" + identity.x25519_public_key
    keys = (session_id, identity.x25519_public_key, identity.ed25519_public_key)
    return [form for key in keys for form in _forms(key)]


def describe(stream: Stream, at: int, size: int, devnet: Devnet) -> str:
    """Where ``stream.data[at : at + size]`` crossed, with a hexdump of its context."""
    start = max(0, at - CONTEXT)
    context = stream.data[start : at + min(size, SHARED_RUN) + CONTEXT]
    lines = []
    for offset in range(0, len(context), 16):
        row = context[offset : offset + 16]
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in row)
        lines.append(f"  {start + offset:08x}  {row.hex(' '):<47}  {text}")
    return (
        f"{stream.src[1]} ({devnet.name(stream.src[1])}) -> {stream.dst[1]} "
        f"({devnet.name(stream.dst[1])}), connection #{stream.connection}, "
        f"{len(stream.data)} bytes, {size} bytes at offset {at}:\n" + "\n".join(lines)
    )


def needle_report(
    streams: Sequence[Stream], needles: Sequence[bytes], names: dict[bytes, str], devnet: Devnet
) -> list[str]:
    return [
        f"{names[needle]}: " + describe(stream, stream.data.index(needle), len(needle), devnet)
        for stream, needle in find_needles(streams, needles)
    ]


def pattern_report(
    streams: Iterable[Stream], pattern: re.Pattern[bytes], devnet: Devnet
) -> list[str]:
    return [
        f"{pattern.pattern!r}: {describe(stream, found.start(), len(found[0]), devnet)}"
        for stream in streams
        if (found := pattern.search(stream.data)) is not None
    ]


def http_requests(stream: Stream) -> list[tuple[bytes, bytes]]:
    """(request line, body) of each request a client sent on one HTTP/1.1 connection (bodies by
    Content-Length, as the clients send them; none for a GET without one); anything else ends the
    list with (what, b"")."""
    requests: list[tuple[bytes, bytes]] = []
    data = stream.data
    while data:
        head, found, rest = data.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        size = int(length[1]) if length is not None else 0 if line.startswith(b"GET ") else -1
        if not found or size < 0 or len(rest) < size:
            return [*requests, (data[:80], b"")]
        requests.append((line, rest[:size]))
        data = rest[size:]
    return requests


# --- the test -------------------------------------------------------------------------------------


def converse(tmp_path: Path, devnet: Devnet) -> tuple[Identity, Identity, dict[bytes, str]]:
    """Alice writes Bob two messages, Bob reads and accepts them and answers, Alice reads the
    answer. Their identities and the words they wrote (each with a label)."""
    net = [arg for seed in devnet.seeds for arg in ("--seed", seed)]
    net += ["--network", devnet.network_file]
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _ok("init", "--home", str(alice), "--name", "Alice")
    _ok("init", "--home", str(bob), "--name", "Bob")
    a = Identity.from_seed((alice / "identity.key").read_bytes())
    b = Identity.from_seed((bob / "identity.key").read_bytes())
    words = {secrets.token_hex(12): label for label in ("first", "second", "reply") for _ in "ab"}
    first, second, reply = (
        " ".join(w for w, label in words.items() if label == wanted)
        for wanted in ("first", "second", "reply")
    )
    assert _ok("send", b.session_id, first, "--home", str(alice), *net) == "sent\n"
    assert _ok("send", b.session_id, second, "--home", str(alice), *net) == "sent\n"
    requests = _ok("requests", "--home", str(bob), *net)
    assert f"{a.session_id} (Alice): 2 message(s)" in requests
    assert requests.index(first) < requests.index(second)
    assert first in _ok("accept", a.session_id, "--home", str(bob), *net)
    _ok("send", a.session_id, reply, "--home", str(bob), *net)
    answer = _ok("inbox", "--home", str(alice), *net)
    assert reply in answer
    assert f"{b.session_id} (Bob)" in answer
    return a, b, {w.encode(): f"{label} message word {w}" for w, label in words.items()}


def test_between_nodes_a_conversation_shows_only_sizes_and_timing(
    devnet: Devnet, tmp_path: Path
) -> None:
    path = tmp_path / "devnet.pcap"
    with Capture(bpf=endpoint_filter(devnet.endpoints), path=path):
        alice, bob, words = converse(tmp_path, devnet)
        time.sleep(AFTER_S)
    connections = reassemble(path)
    links = streams_to_ports(connections, devnet.link_ports)
    http = streams_to_ports(connections, devnet.http_ports)
    everything = [*links, *http]
    assert len(everything) == 2 * len(connections)  # nothing else was captured

    # (a) There is node-to-node traffic, to every node, and all of it was captured.
    assert {s.dst[1] for s in links} >= set(devnet.link_ports), links
    assert sum(len(s.data) for s in links) >= MIN_LINK_BYTES, links
    assert [s for s in everything if s.gaps] == []

    # (b) No account key crosses, in any form, nor a node's key on a link.
    names = {n: f"Alice's key {n[:8]!r}" for n in account_needles(alice)}
    names |= {n: f"Bob's key {n[:8]!r}" for n in account_needles(bob)}
    assert needle_report(everything, list(names), names, devnet) == []
    node_names = {f: f"a node's key {f[:8]!r}" for k in devnet.node_keys for f in _forms(k)}
    assert needle_report(links, list(node_names), node_names, devnet) == []

    # (c) No message text crosses.
    assert needle_report(everything, list(words), words, devnet) == []

    # (d) No JSON and no HTTP on a link. Over HTTP only clients talk to nodes: their onion
    # requests, and the consensus from a seed (nodes get theirs from the authorities).
    assert [describe(s, 0, 0, devnet) for s in links if looks_like_json(s)] == []
    assert pattern_report(links, _JSON_OPENING, devnet) == []
    assert pattern_report(links, _HTTP, devnet) == []
    assert pattern_report(everything, re.compile(rb"/gossip"), devnet) == []
    requests = [r for s in http if s.dst[1] in devnet.http_ports for r in http_requests(s)]
    assert {line for line, _ in requests} == {
        b"GET /consensus HTTP/1.1",
        b"POST /onion2 HTTP/1.1",
    }

    # (e) No 64 bytes cross two links, or a link and a client's connection to a guard.
    shared = shared_sequences([*links, *http], SHARED_RUN)
    across_links = [
        f"{SHARED_RUN}+ shared bytes: "
        + describe(s.stream_a, s.offset_a, s.run_length(), devnet)
        + "\nand "
        + describe(s.stream_b, s.offset_b, s.run_length(), devnet)
        for s in shared
        if devnet.on_link(s.stream_a) or devnet.on_link(s.stream_b)
    ]
    assert across_links == []

    # Controls: each check fires on the client side of this capture, or on a copied link.
    assert len([line for line, _ in requests if line.startswith(b"POST /onion2 ")]) >= 6
    assert any(looks_like_json(s) for s in http)  # the seed's consensus, in JSON,
    assert find_needles(http, list(node_names))  # names the nodes' keys,
    assert shared  # and the clients' requests repeat the same HTTP headers.
    busiest = max(links, key=lambda s: len(s.data))
    copy = replace(busiest, connection=-1)
    assert [(s.stream_a, s.stream_b) for s in shared_sequences([busiest, copy])] == [
        (busiest, copy)
    ]
