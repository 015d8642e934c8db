"""The packet-capture helpers (``tests/capture.py``) find what they should, so that a test built on
them cannot pass because they saw nothing.

The reader and the analysis run first on captures written here byte by byte (every link type, both
byte orders, IPv4 and IPv6, segments shuffled, repeated and overlapping), then on real loopback
traffic captured by tcpdump (skipped, with the reason, where tcpdump cannot be had or run).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import capture
from capture import (
    ACK,
    FIN,
    LINKTYPE_EN10MB,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    SYN,
    Capture,
    CaptureError,
    Segment,
    Stream,
    endpoint_filter,
    ensure_tcpdump,
    find_needles,
    looks_like_json,
    read_pcap,
    reassemble,
    shared_sequences,
    streams_to_ports,
    tcpdump_missing_reason,
    tcpdump_or_skip,
)
from node_helpers import run

CLIENT4, SERVER4 = ("127.0.0.1", 40000), ("127.0.0.2", 8080)
CLIENT6, SERVER6 = ("::1", 40000), ("fe80::2", 8080)

# --- writing captures by hand --------------------------------------------------------------------


PSH = 0x08


@dataclass(frozen=True)
class Packet:
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    payload: bytes = b""
    flags: int = PSH
    ack: int = 0


def tcp_bytes(packet: Packet) -> bytes:
    options = b"\x01" * 12  # NOPs: the payload starts after a 32-byte header
    ports = struct.pack(">HH", packet.src[1], packet.dst[1])
    numbers = struct.pack(">II", packet.seq % 2**32, packet.ack % 2**32)
    rest = struct.pack(">BBHHH", 8 << 4, packet.flags, 65535, 0, 0)
    return ports + numbers + rest + options + packet.payload


def ip_bytes(packet: Packet, *, hop_by_hop: bool = False) -> bytes:
    tcp = tcp_bytes(packet)
    if ":" not in packet.src[0]:
        header = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0)
        return header + socket.inet_aton(packet.src[0]) + socket.inet_aton(packet.dst[0]) + tcp
    extension = b"\x06\x00" + bytes(6) if hop_by_hop else b""
    next_header = 0 if hop_by_hop else 6
    header = struct.pack(">IHBB", 6 << 28, len(extension) + len(tcp), next_header, 64)
    addresses = socket.inet_pton(socket.AF_INET6, packet.src[0])
    addresses += socket.inet_pton(socket.AF_INET6, packet.dst[0])
    return header + addresses + extension + tcp


def frame(linktype: int, ip: bytes, order: str) -> bytes:
    ipv6 = ip[0] >> 4 == 6
    ethertype = 0x86DD if ipv6 else 0x0800
    if linktype == LINKTYPE_EN10MB:
        eth = bytes(12) + ethertype.to_bytes(2, "big") + ip
        return eth + bytes(max(0, 60 - len(eth)))  # Ethernet pads short frames
    if linktype == LINKTYPE_LINUX_SLL:
        return struct.pack(">HHH8sH", 0, 772, 6, bytes(8), ethertype) + ip
    if linktype == LINKTYPE_LINUX_SLL2:
        return struct.pack(">HHIHBB8s", ethertype, 0, 1, 772, 0, 6, bytes(8)) + ip
    if linktype == LINKTYPE_NULL:
        return struct.pack(order + "I", 30 if ipv6 else 2) + ip
    return ip


def pcap_bytes(
    linktype: int, frames: list[bytes], *, order: str = "<", nanoseconds: bool = False
) -> bytes:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for i, data in enumerate(frames):
        out.append(struct.pack(order + "IIII", 1_700_000_000, i, len(data), len(data)) + data)
    return b"".join(out)


def write_capture(
    tmp_path: Path,
    packets: list[Packet],
    linktype: int = LINKTYPE_EN10MB,
    order: str = "<",
    **options: bool,
) -> Path:
    path = tmp_path / "written.pcap"
    frames = [
        frame(linktype, ip_bytes(p, hop_by_hop=options.get("hop", False)), order) for p in packets
    ]
    path.write_bytes(
        pcap_bytes(linktype, frames, order=order, nanoseconds=options.get("ns", False))
    )
    return path


def conversation(
    client: tuple[str, int], server: tuple[str, int]
) -> tuple[list[Packet], bytes, bytes]:
    """A handshake, then data both ways: out of order, retransmitted, overlapping; then FINs."""
    up, down = b"hello server, " * 20, b"hello client" * 7
    c, s = 4_294_967_000, 77  # the client's sequence numbers wrap past 2**32
    packets = [
        Packet(client, server, c, flags=SYN),
        Packet(server, client, s, flags=SYN | ACK, ack=c + 1),
        Packet(client, server, c + 1 + 100, up[100:]),  # arrives first
        Packet(client, server, c + 1, up[:60]),
        Packet(server, client, s + 1, down),
        Packet(client, server, c + 1 + 40, up[40:120]),  # overlaps both neighbours
        Packet(client, server, c + 1, up[:60]),  # a retransmission
        Packet(client, server, c + 1 + len(up), flags=FIN | ACK, ack=s + 1 + len(down)),
        Packet(server, client, s + 1 + len(down), flags=FIN | ACK, ack=c + 2 + len(up)),
        Packet(client, server, c + 2 + len(up), flags=ACK, ack=s + 2 + len(down)),
    ]
    return packets, up, down


# --- the reader and reassembly -------------------------------------------------------------------


@pytest.mark.parametrize(
    "linktype",
    [LINKTYPE_EN10MB, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NULL, LINKTYPE_RAW],
)
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("ends", [(CLIENT4, SERVER4), (CLIENT6, SERVER6)], ids=["ipv4", "ipv6"])
def test_every_link_type_byte_order_and_ip_version_reassembles_the_sent_bytes(
    tmp_path: Path, linktype: int, order: str, ends: tuple[tuple[str, int], tuple[str, int]]
) -> None:
    client, server = ends
    packets, up, down = conversation(client, server)
    path = write_capture(tmp_path, packets, linktype, order, hop=True, ns=order == ">")
    assert len(read_pcap(path)) == len(packets)
    [connection] = reassemble(path)
    assert (connection.client, connection.server, connection.syn_seen) == (client, server, True)
    assert connection.to_server.key == (client, server)
    assert (connection.to_server.data, connection.to_client.data) == (up, down)
    assert connection.to_server.gaps == connection.to_client.gaps == 0


@given(
    up=st.binary(max_size=3000),
    down=st.binary(max_size=3000),
    isns=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    handshake=st.booleans(),
    data=st.data(),
)
def test_segments_in_any_order_repeated_or_overlapping_reassemble_the_sent_bytes(
    up: bytes, down: bytes, isns: tuple[int, int], handshake: bool, data: st.DataObject
) -> None:
    client, server = CLIENT4, SERVER4
    packets = []
    for sender, receiver, sent, isn in (
        (client, server, up, isns[0]),
        (server, client, down, isns[1]),
    ):
        first = isn + 1 if handshake else isn
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(sent) - 1)), max_size=12))))
        bounds = [0, *cuts, len(sent)]
        pieces = [(a, b) for a, b in pairwise(bounds) if b > a]
        again = data.draw(
            st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 500)), max_size=4)
        )
        pieces += [(a, min(a + n, len(sent))) for a, n in again if a < len(sent)]
        packets += [Packet(sender, receiver, first + a, sent[a:b]) for a, b in pieces]
    shuffled = data.draw(st.permutations(packets))
    if handshake:
        shuffled = [
            Packet(client, server, isns[0], flags=SYN),
            Packet(server, client, isns[1], flags=SYN | ACK, ack=isns[0] + 1),
            *shuffled,
        ]
    connections = reassemble([segment_of(p) for p in shuffled])
    if not shuffled:
        assert connections == []
        return
    [connection] = connections
    by_sender = {s.src: s.data for s in (connection.to_server, connection.to_client)}
    assert by_sender == {client: up, server: down}
    assert connection.to_server.gaps == connection.to_client.gaps == 0


def segment_of(packet: Packet) -> Segment:
    seq, ack = packet.seq % 2**32, packet.ack % 2**32
    return Segment(packet.src, packet.dst, seq, packet.flags, packet.payload, ack)


@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        ([5], lambda up: up[:60] + bytes(40) + up[100:]),  # the only copy of up[60:100]
        ([3, 6], lambda up: bytes(40) + up[40:]),  # both copies of up[:60], after the SYN
        ([2], lambda up: up[:120]),  # the tail, which the FIN and the server's ACK vouch for
    ],
    ids=["hole", "head", "tail"],
)
def test_bytes_the_capture_missed_are_counted_as_a_gap(
    tmp_path: Path, missed: list[int], expected: Callable[[bytes], bytes]
) -> None:
    packets, up, down = conversation(CLIENT4, SERVER4)
    kept = [p for i, p in enumerate(packets) if i not in missed]
    [connection] = reassemble(write_capture(tmp_path, kept))
    assert (connection.to_server.gaps, connection.to_server.data) == (1, expected(up))
    assert (connection.to_client.gaps, connection.to_client.data) == (0, down)


def test_a_capture_that_lost_packets_is_refused_on_leaving(tmp_path: Path) -> None:
    capture = Capture(ports=[9], path=tmp_path / "never-started.pcap")
    capture._stderr.append("12 packets captured\n3 packets dropped by kernel\n")
    assert capture.dropped == 3
    with pytest.raises(CaptureError, match="dropped 3 packets"):
        capture.__exit__(None, None, None)


def test_a_new_handshake_on_the_same_ports_starts_a_new_connection(tmp_path: Path) -> None:
    first, up, down = conversation(CLIENT4, SERVER4)
    again = [
        Packet(CLIENT4, SERVER4, 5, flags=SYN),
        Packet(SERVER4, CLIENT4, 9, flags=SYN | ACK),
        Packet(CLIENT4, SERVER4, 6, b"second"),
    ]
    connections = reassemble(write_capture(tmp_path, first + again))
    assert [c.to_server.data for c in connections] == [up, b"second"]
    assert [c.to_server.connection for c in connections] == [0, 1]
    assert streams_to_ports(connections, [SERVER4[1]])[1].data == down


def test_packets_other_than_tcp_are_skipped_and_pcapng_is_refused(tmp_path: Path) -> None:
    packets, up, _ = conversation(CLIENT4, SERVER4)
    udp = bytearray(ip_bytes(packets[2]))
    udp[9] = 17
    frames = [frame(LINKTYPE_EN10MB, bytes(udp), "<")]
    frames += [frame(LINKTYPE_EN10MB, ip_bytes(p), "<") for p in packets]
    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap_bytes(LINKTYPE_EN10MB, frames))
    assert len(read_pcap(path)) == len(packets)
    assert reassemble(path)[0].to_server.data == up
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    with pytest.raises(CaptureError, match="pcapng"):
        read_pcap(path)


def test_streams_to_ports_keeps_the_connections_served_on_those_ports(tmp_path: Path) -> None:
    one, _, _ = conversation(CLIENT4, SERVER4)
    other_server = (SERVER4[0], 9090)
    two, _, _ = conversation(CLIENT6, ("fe80::2", 9090))
    connections = reassemble(write_capture(tmp_path, one + two))
    assert [s.key for s in streams_to_ports(connections, [8080])] == [
        (CLIENT4, SERVER4),
        (SERVER4, CLIENT4),
    ]
    assert len(streams_to_ports(connections, [8080, 9090])) == 4
    assert streams_to_ports(connections, [other_server[1] + 1]) == []


# --- finding what crossed ------------------------------------------------------------------------


def streams_of(*connections: tuple[bytes, bytes], first: int = 0) -> list[Stream]:
    """Both directions of each connection (numbered from ``first``), as the analysis sees them."""
    streams = []
    for number, (up, down) in enumerate(connections, start=first):
        client, server = ("10.0.0.1", 1000 + number), ("10.0.0.2", 80)
        streams += [Stream(client, server, up, number), Stream(server, client, down, number)]
    return streams


def planted(rng: random.Random, size: int, secret: bytes, at: int) -> bytes:
    data = bytearray(rng.randbytes(size))
    data[at : at + len(secret)] = secret
    return bytes(data)


@pytest.mark.parametrize(("at_a", "at_b"), [(0, 0), (5, 1000), (1000, 31), (4000 - 64, 77)])
def test_a_planted_64_byte_sequence_is_found_in_exactly_the_two_connections(
    at_a: int, at_b: int
) -> None:
    rng = random.Random(at_a * 7919 + at_b)
    secret = rng.randbytes(64)
    a = planted(rng, 4000, secret, at_a)
    b = planted(rng, 4000, secret, at_b)
    streams = streams_of(
        (rng.randbytes(3000), a), (b, rng.randbytes(500)), (rng.randbytes(4000), b"")
    )
    [found] = shared_sequences(streams)
    assert (found.stream_a, found.stream_b) == (streams[1], streams[2])
    assert found.stream_a.data[found.offset_a :][:64] == secret
    assert found.offset_b <= at_b <= found.offset_b + found.run_length() - 64


def test_63_shared_bytes_or_bytes_shared_within_one_connection_are_not_reported() -> None:
    rng = random.Random(63)
    secret = rng.randbytes(64)
    short = streams_of(
        (planted(rng, 900, secret[:63], 10), b""), (planted(rng, 900, secret[:63], 500), b"")
    )
    assert shared_sequences(short) == []
    same = streams_of((planted(rng, 900, secret, 10), planted(rng, 900, secret, 700)))
    assert shared_sequences(same) == []
    other = streams_of((planted(rng, 99, secret, 3), b""), first=1)
    assert len(shared_sequences(same + other)) == 2  # each direction of the first connection


def test_long_runs_of_zeros_are_reported_a_few_times_not_once_per_alignment() -> None:
    zeros = bytes(1 << 18)
    started = time.monotonic()
    found = shared_sequences(streams_of((zeros, b""), (b"x" + zeros, b"")))
    assert time.monotonic() - started < 10
    assert 1 <= len(found) <= 4
    assert max(shared.run_length() for shared in found) >= len(zeros) - 32


phrases = [bytes(random.Random(i).randbytes(40)) for i in range(4)]
pieces = (
    st.sampled_from(phrases) | st.binary(max_size=50) | st.sampled_from([bytes(70), b"ab" * 40])
)


@given(
    connections=st.lists(
        st.tuples(st.lists(pieces, max_size=6), st.lists(pieces, max_size=6)),
        min_size=2,
        max_size=4,
    )
)
def test_shared_sequences_names_exactly_the_pairs_of_connections_a_brute_force_search_finds(
    connections: list[tuple[list[bytes], list[bytes]]],
) -> None:
    streams = streams_of(*((b"".join(up), b"".join(down)) for up, down in connections))
    found = shared_sequences(streams, length=64)
    for shared in found:
        assert shared.stream_a.connection != shared.stream_b.connection
        window = shared.stream_a.data[shared.offset_a : shared.offset_a + 64]
        assert len(window) == 64
        assert shared.stream_b.data[shared.offset_b : shared.offset_b + 64] == window
    reported = {(streams.index(s.stream_a), streams.index(s.stream_b)) for s in found}
    assert reported == brute_force_pairs(streams, 64)


def brute_force_pairs(streams: list[Stream], length: int) -> set[tuple[int, int]]:
    windows = [{s.data[i : i + length] for i in range(len(s.data) - length + 1)} for s in streams]
    return {
        (i, j)
        for i in range(len(streams))
        for j in range(i + 1, len(streams))
        if streams[i].connection != streams[j].connection and windows[i] & windows[j]
    }


def test_a_few_megabytes_are_searched_in_seconds() -> None:
    rng = random.Random(4)
    secret = rng.randbytes(64)
    big = [(rng.randbytes(512 * 1024), rng.randbytes(512 * 1024)) for _ in range(4)]
    big[3] = (planted(rng, 512 * 1024, secret, 300_001), big[3][1])
    big[0] = (big[0][0], planted(rng, 512 * 1024, secret, 17))
    started = time.monotonic()
    [found] = shared_sequences(streams_of(*big))
    elapsed = time.monotonic() - started
    assert found.stream_a.data[found.offset_a :][:64] == secret
    assert elapsed < 30, f"4 MiB took {elapsed:.1f} s"


def test_find_needles_names_each_stream_and_needle_found() -> None:
    streams = streams_of((b"xx-secret-one-xx", b"secret-two"), (b"nothing", b"secret-one"))
    found = find_needles(streams, [b"secret-one", b"secret-two", b"absent"])
    assert [(streams.index(s), n) for s, n in found] == [
        (0, b"secret-one"),
        (1, b"secret-two"),
        (3, b"secret-one"),
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"hash":"x"}', True),
        (b"POST /x HTTP/1.1\r\nContent-Type: Application/JSON\r\n\r\n", True),
        (b'[{"method": "store", "params": {}}]', True),
        (b"{}", False),
        (b'"a string"', False),
        (random.Random(1).randbytes(1 << 20), False),
    ],
    ids=["json-body", "json-content-type", "json-array", "empty-object", "string", "random-MiB"],
)
def test_looks_like_json(data: bytes, expected: bool) -> None:
    assert looks_like_json(Stream(CLIENT4, SERVER4, data)) is expected
    assert looks_like_json(data) is expected


# --- getting tcpdump -----------------------------------------------------------------------------


@dataclass
class FakeApt:
    """apt-get as ``_find_or_install`` sees it: each call answers the next (code, stderr)."""

    answers: list[tuple[int, str]]
    installs_at: int | None
    calls: list[tuple[str, ...]]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        code, stderr = self.answers[len(self.calls) - 1]
        return subprocess.CompletedProcess(["apt-get", *args], code, "", stderr)

    def which(self, program: str) -> str | None:
        if program == "apt-get":
            return "/usr/bin/apt-get"
        installed = self.installs_at is not None and len(self.calls) >= self.installs_at
        return "/usr/sbin/tcpdump" if installed else None


LISTS_MISSING = (100, "E: Unable to locate package tcpdump\n")


@pytest.mark.parametrize(
    ("answers", "installs_at", "commands", "found"),
    [
        ([(0, "")], 1, ["install"], True),
        ([LISTS_MISSING, (0, ""), (0, "")], 3, ["install", "update", "install"], True),
        ([LISTS_MISSING, (0, ""), LISTS_MISSING], None, ["install", "update", "install"], False),
        ([(100, "E: Could not get lock /var/lib/dpkg/lock\n")], None, ["install"], False),
    ],
    ids=["installed", "lists-fetched-first", "no-such-package", "other-failure"],
)
def test_tcpdump_is_installed_once_fetching_package_lists_only_when_they_are_missing(
    monkeypatch: pytest.MonkeyPatch,
    answers: list[tuple[int, str]],
    installs_at: int | None,
    commands: list[str],
    found: bool,
) -> None:
    apt = FakeApt(answers, installs_at, [])
    monkeypatch.setattr(capture, "_apt_get", apt)
    monkeypatch.setattr(capture, "_which", apt.which)
    capture._find_or_install.cache_clear()
    try:
        assert (ensure_tcpdump() is not None) is found
        assert ensure_tcpdump() == ensure_tcpdump()  # asked again: apt-get is not run again
        assert [call[0] for call in apt.calls] == commands
        if found:
            assert tcpdump_missing_reason() == ""
        else:
            assert answers[-1][1].strip() in tcpdump_missing_reason()
    finally:
        capture._find_or_install.cache_clear()


# --- real loopback traffic through tcpdump -------------------------------------------------------


@pytest.fixture(scope="module")
def tcpdump(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tcpdump's path, once it has shown it can capture here (else the test is skipped)."""
    return tcpdump_or_skip(tmp_path_factory.mktemp("probe"), any_capture_error_skips=False)


def answer_for(up: bytes) -> bytes:
    """What the test servers answer to ``up``: JSON over HTTP to a POST, else random bytes."""
    if up.startswith(b"POST "):
        body = b'{"hash": "abc", "already": false}'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        return head % len(body) + body
    return random.Random(up).randbytes(30_000)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    up = await reader.read()
    writer.write(answer_for(up))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def send(port: int, up: bytes, cut: int | None) -> tuple[str, int]:
    """Send ``up`` (in two writes 50 ms apart if ``cut``), read the answer; the client's address."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host, client_port = writer.get_extra_info("sockname")[:2]
    for i, part in enumerate([up] if cut is None else [up[:cut], up[cut:]]):
        if i:
            await asyncio.sleep(0.05)
        writer.write(part)
        await writer.drain()
    writer.write_eof()
    assert await reader.read() == answer_for(up)
    writer.close()
    await writer.wait_closed()
    return host, client_port


def exchange(
    path: Path, sends: Sequence[tuple[int, bytes, int | None]]
) -> tuple[list[int], list[tuple[str, int]]]:
    """Two servers on ephemeral ports; ``sends`` are (server 0 or 1, bytes, cut), all at once,
    under capture to ``path``. The ports and each send's client address."""

    async def main() -> tuple[list[int], list[tuple[str, int]]]:
        servers = [await asyncio.start_server(answer, "127.0.0.1", 0) for _ in range(2)]
        ports = [int(server.sockets[0].getsockname()[1]) for server in servers]
        try:
            with Capture(ports=ports, path=path):
                clients = await asyncio.gather(
                    *(send(ports[server], up, cut) for server, up, cut in sends)
                )
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
        return ports, list(clients)

    return run(main())


def test_loopback_streams_are_what_was_sent_and_only_the_planted_sequence_is_shared(
    tcpdump: str, tmp_path: Path
) -> None:
    rng = random.Random(2024)
    secret = rng.randbytes(64)
    at = [123_457, 50_001]
    first, second = planted(rng, 200_000, secret, at[0]), planted(rng, 150_000, secret, at[1])
    ups = [bytearray(up) for up in (first, second, rng.randbytes(200_000), rng.randbytes(90_000))]
    for buffer, fence in zip(ups[:2], (0, 1), strict=True):  # the runs end exactly at 64 bytes
        i = at[fence]
        buffer[i - 1], buffer[i + 64] = fence, 2 + fence
    sends = [(0, bytes(ups[0]), None), (1, bytes(ups[1]), None)]
    sends += [(0, bytes(ups[2]), None), (1, bytes(ups[3]), None)]
    ports, clients = exchange(tmp_path / "loopback.pcap", sends)

    streams = streams_to_ports(tmp_path / "loopback.pcap", ports)
    assert len(streams) == 8
    by_client = {s.src: s for s in streams if s.src in clients}
    by_server_to = {s.dst: s for s in streams if s.dst in clients}
    for (_, up, _), client in zip(sends, clients, strict=True):
        assert by_client[client].data == up
        assert by_server_to[client].data == answer_for(up)
        assert by_client[client].gaps == by_server_to[client].gaps == 0
    assert len(read_pcap(tmp_path / "loopback.pcap")) > 3 * len(sends)  # many segments each

    [found] = shared_sequences(streams)
    ends = {found.stream_a.src, found.stream_b.src}
    assert ends == {clients[0], clients[1]}
    offsets = {found.stream_a.src: found.offset_a, found.stream_b.src: found.offset_b}
    assert offsets == {clients[0]: at[0], clients[1]: at[1]}
    assert found.run_length() == 64
    assert not any(looks_like_json(s) for s in streams)


def test_a_needle_split_across_two_segments_and_json_over_http_are_found(
    tcpdump: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    needle = b"needle:" + rng.randbytes(25)
    up = rng.randbytes(5000) + needle + rng.randbytes(3000)
    cut = 5000 + len(needle) // 2
    post = b"POST /storage_rpc/v1 HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"
    path = tmp_path / "needle.pcap"
    ports, clients = exchange(path, [(0, up, cut), (1, post, None)])

    segments = read_pcap(path)
    carrying = [s.payload for s in segments if s.src == clients[0] and s.payload]
    assert len(carrying) >= 2
    assert not any(needle in payload for payload in carrying), "the needle was not split"
    streams = streams_to_ports(path, ports)
    [(stream, found)] = find_needles(streams, [needle, b"never sent"])
    assert (stream.src, found) == (clients[0], needle)
    json_streams = [s for s in streams if looks_like_json(s)]
    assert [(s.src, s.dst) for s in json_streams] == [(("127.0.0.1", ports[1]), clients[1])]
    assert not looks_like_json(stream)


def test_an_endpoint_filter_leaves_out_other_addresses_that_use_the_same_port_number(
    tcpdump: str, tmp_path: Path
) -> None:
    """On loopback a port number is taken per address: a connection between two other addresses
    may use the watched port's number, and a port filter captures it; an endpoint filter not."""

    async def main() -> tuple[int, int]:
        watched = await asyncio.start_server(answer, "127.0.6.1", 0)
        other = await asyncio.start_server(answer, "127.0.6.2", 0)
        port = int(watched.sockets[0].getsockname()[1])
        other_port = int(other.sockets[0].getsockname()[1])
        try:
            with (
                Capture(ports=[port], path=tmp_path / "by-port.pcap"),
                Capture(bpf=endpoint_filter([("127.0.6.1", port)]), path=tmp_path / "exact.pcap"),
            ):
                for host, to in (("127.0.6.1", port), ("127.0.6.2", other_port)):
                    # The second connection leaves 127.0.0.3 from the watched port's number.
                    local = ("127.0.0.3", port) if to == other_port else None
                    reader, writer = await asyncio.open_connection(host, to, local_addr=local)
                    writer.write(b"ping")
                    writer.write_eof()
                    assert await reader.read() == answer_for(b"ping")
                    writer.close()
                    await writer.wait_closed()
        finally:
            for server in (watched, other):
                server.close()
                await server.wait_closed()
        return port, other_port

    port, other_port = run(main())
    by_port = reassemble(tmp_path / "by-port.pcap")
    exact = reassemble(tmp_path / "exact.pcap")
    assert sorted(c.server[1] for c in by_port) == sorted([port, other_port])  # the stray one too
    assert [(c.server, c.to_server.data) for c in exact] == [(("127.0.6.1", port), b"ping")]
