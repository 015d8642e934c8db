"""Loopback packet capture for tests that check what crosses between nodes.

:class:`Capture` runs tcpdump on ``lo`` for a BPF filter (usually a few TCP ports) while a test
runs; :func:`read_pcap` and :func:`reassemble` turn the file back into the two byte streams of each
TCP connection; the analysis helpers then ask what crossed: :func:`find_needles` (did this secret
cross?), :func:`shared_sequences` (did the same 64 bytes cross two different connections, which an
observer could use to link them?) and :func:`looks_like_json` (did plaintext RPC cross?).

The reader handles classic libpcap files (either byte order, microsecond or nanosecond stamps),
link types EN10MB (Linux ``lo`` writes Ethernet with zero MACs), LINUX_SLL, LINUX_SLL2, NULL and
raw IP; IPv4 and IPv6; TCP only. pcapng is refused with a clear error (tcpdump ``-w`` does not
write it).

```
with Capture(ports=[8080, 8081]) as capture:
    ...  # traffic
streams = streams_to_ports(capture.path, [8080])
assert find_needles(streams, [secret]) == []
```
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

__all__ = [
    "Capture",
    "CaptureError",
    "Connection",
    "Segment",
    "Shared",
    "Stream",
    "endpoint_filter",
    "ensure_tcpdump",
    "find_needles",
    "looks_like_json",
    "read_pcap",
    "reassemble",
    "shared_sequences",
    "streams_to_ports",
    "tcpdump_missing_reason",
    "tcpdump_or_skip",
]

Endpoint = tuple[str, int]


class CaptureError(Exception):
    """tcpdump could not start or the capture file cannot be read."""


# --- getting tcpdump -----------------------------------------------------------------------------

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
_APT_TIMEOUT_S = 600


def _which(program: str) -> str | None:
    return shutil.which(program, path=_SEARCH_PATH)


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=_APT_TIMEOUT_S,
        check=False,
    )


@functools.cache
def _find_or_install() -> tuple[str | None, str]:
    """(path, reason if none); tries ``apt-get install`` once per process."""
    path = _which("tcpdump")
    if path is not None:
        return path, ""
    if _which("apt-get") is None:
        return None, "tcpdump is not installed and there is no apt-get to install it"
    install = ("install", "-y", "--no-install-recommends", "tcpdump")
    try:
        result = _apt_get(*install)
        if result.returncode != 0 and re.search(
            r"Unable to locate package|has no installation candidate|Failed to fetch",
            result.stderr,
        ):
            # The package lists are missing or stale: fetch them once, then try again.
            _apt_get("update")
            result = _apt_get(*install)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"tcpdump is not installed and apt-get failed: {exc}"
    path = _which("tcpdump")
    if path is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"tcpdump is not installed and apt-get could not install it: {tail[0]}"
    return path, ""


def ensure_tcpdump() -> str | None:
    """The path of tcpdump, installing it with apt-get if need be; None if it cannot be had."""
    return _find_or_install()[0]


def tcpdump_missing_reason() -> str:
    """Why :func:`ensure_tcpdump` returned None (empty if it did not)."""
    return _find_or_install()[1]


# --- capturing -----------------------------------------------------------------------------------

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_SETTLE_S = 2.0
_BUFFER_KIB = 64 * 1024  # the kernel's ring; loopback bursts of 64 KiB segments fill the default
_DROPPED = re.compile(r"(\d+) packets? dropped by (?:kernel|interface)")


def port_filter(ports: Iterable[int]) -> str:
    """A BPF filter for TCP traffic to or from any of ``ports``."""
    chosen = sorted(set(ports))
    if not chosen:
        raise ValueError("at least one port is needed")
    return "tcp and (" + " or ".join(f"port {port}" for port in chosen) + ")"


def endpoint_filter(endpoints: Iterable[Endpoint]) -> str:
    """A BPF filter for TCP traffic to or from any of ``endpoints`` (address, port). Stricter than
    :func:`port_filter`: on loopback a connection between two other addresses may use one of the
    same port numbers (an ephemeral port is taken per address), and would be captured by port."""
    chosen = sorted(set(endpoints))
    if not chosen:
        raise ValueError("at least one endpoint is needed")
    sides = [
        f"(src host {host} and src port {port}) or (dst host {host} and dst port {port})"
        for host, port in chosen
    ]
    return "tcp and (" + " or ".join(sides) + ")"


class Capture:
    """tcpdump on ``interface`` for the life of a ``with`` block; the file is at :attr:`path`
    (a temporary file, for the caller to remove, unless ``path`` is given).

    Entering returns once tcpdump reports it is listening; leaving waits (boundedly) for the file
    to stop growing, stops tcpdump with SIGINT, and kills it if it does not exit in time. A capture
    that lost packets (tcpdump's "dropped by kernel") raises :class:`CaptureError` on leaving, so
    that no test concludes from an incomplete capture that nothing crossed.
    """

    def __init__(
        self,
        *,
        ports: Iterable[int] | None = None,
        bpf: str | None = None,
        path: Path | None = None,
        interface: str = "lo",
    ) -> None:
        if (ports is None) == (bpf is None):
            raise ValueError("give either ports or a BPF filter")
        self.filter = bpf if bpf is not None else port_filter(ports or ())
        self.interface = interface
        if path is None:
            handle, name = tempfile.mkstemp(prefix="veil-capture-", suffix=".pcap")
            os.close(handle)
            path = Path(name)
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def dropped(self) -> int:
        """Packets tcpdump reported lost (known once it has stopped)."""
        return sum(int(n) for n in _DROPPED.findall(self.stderr))

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.stop()
        if exc_type is None and self.dropped:
            raise CaptureError(f"tcpdump dropped {self.dropped} packets: {self.stderr.strip()}")

    def start(self) -> None:
        tcpdump = ensure_tcpdump()
        if tcpdump is None:
            raise CaptureError(tcpdump_missing_reason())
        command = [tcpdump, "-i", self.interface, "-U", "-n", "--immediate-mode", "-s", "0"]
        command += ["-B", str(_BUFFER_KIB)]
        if os.geteuid() == 0:
            command += ["-Z", "root"]  # else it drops to its own user and cannot write the file
        command += ["-w", str(self.path), self.filter]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._listening.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CaptureError(f"tcpdump did not start listening: {self.stderr.strip()}")

    def _read_stderr(self) -> None:
        process = self._process
        assert process is not None
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace")
            self._stderr.append(line)
            if "listening on" in line:
                self._listening.set()

    def stop(self) -> Path:
        """Stop tcpdump (idempotent) and return the capture file."""
        process = self._process
        if process is None:
            return self.path
        if process.poll() is None:
            self._settle()
            process.send_signal(signal.SIGINT)
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(_STOP_TIMEOUT_S)
        if process.stderr is not None:
            process.stderr.close()
        self._process = None
        return self.path

    def _settle(self) -> None:
        """Wait until the file has not grown for 0.1 s (at most ``_SETTLE_S``)."""
        deadline = time.monotonic() + _SETTLE_S
        size = -1
        while time.monotonic() < deadline:
            now = self.path.stat().st_size if self.path.exists() else 0
            if now == size:
                return
            size = now
            time.sleep(0.1)


def tcpdump_or_skip(probe_dir: Path, *, any_capture_error_skips: bool) -> str:
    """tcpdump's path, once a capture into ``probe_dir`` has shown it can capture here; else the
    calling test is skipped, with the reason. A capture that fails for want of permission always
    skips; one that fails otherwise skips only with ``any_capture_error_skips``, and is raised
    without it (where a failure would be this module's fault, which its own tests must show)."""
    path = ensure_tcpdump()
    if path is None:
        pytest.skip(tcpdump_missing_reason())
    try:
        with Capture(ports=[9], path=probe_dir / "probe.pcap"):
            pass
    except CaptureError as exc:
        if any_capture_error_skips or "permitted" in str(exc) or "ermission" in str(exc):
            pytest.skip(f"tcpdump cannot capture here: {exc}")
        raise
    return path


# --- reading pcap --------------------------------------------------------------------------------

LINKTYPE_NULL = 0
LINKTYPE_EN10MB = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = {12, 14, LINKTYPE_RAW}  # DLT_RAW is 12 or 14 on some systems
_ETHERTYPE_IPV4, _ETHERTYPE_IPV6, _ETHERTYPE_VLAN = 0x0800, 0x86DD, {0x8100, 0x88A8}
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options
_TCP = 6

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment."""

    src: Endpoint
    dst: Endpoint
    seq: int
    flags: int
    payload: bytes
    ack: int = 0
    """The acknowledgement number (meaningful when ``flags`` has ACK)."""


def read_pcap(path: Path | str) -> list[Segment]:
    """The TCP segments of a classic pcap file, in capture order (non-TCP packets skipped)."""
    raw = Path(path).read_bytes()
    if len(raw) < 24:
        raise CaptureError(f"{path}: not a pcap file (too short)")
    magic = raw[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    elif magic == b"\x0a\x0d\x0d\x0a":
        raise CaptureError(f"{path}: pcapng is not supported; write classic pcap")
    else:
        raise CaptureError(f"{path}: not a pcap file (magic {magic.hex()})")
    (linktype,) = struct.unpack_from(order + "I", raw, 20)
    linktype &= 0x0FFFFFFF  # the upper bits carry FCS information
    record = struct.Struct(order + "IIII")
    segments = []
    pos = 24
    while pos + record.size <= len(raw):
        _sec, _frac, captured, _original = record.unpack_from(raw, pos)
        pos += record.size
        frame = memoryview(raw)[pos : pos + captured]
        pos += captured
        segment = _decode_frame(frame, linktype, order)
        if segment is not None:
            segments.append(segment)
    return segments


def _decode_frame(frame: memoryview, linktype: int, order: str) -> Segment | None:
    if linktype == LINKTYPE_EN10MB:
        if len(frame) < 14:
            return None
        offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype in _ETHERTYPE_VLAN and len(frame) >= offset + 4:
            ethertype = int.from_bytes(frame[offset + 2 : offset + 4], "big")
            offset += 4
        return _decode_ip(frame[offset:], ethertype)
    if linktype == LINKTYPE_LINUX_SLL:
        return _decode_ip(frame[16:], int.from_bytes(frame[14:16], "big"))
    if linktype == LINKTYPE_LINUX_SLL2:
        return _decode_ip(frame[20:], int.from_bytes(frame[0:2], "big"))
    if linktype == LINKTYPE_NULL:
        # The address family in the capturing host's byte order: 2 is IPv4, IPv6 varies by OS.
        family = int.from_bytes(frame[:4], "little" if order == "<" else "big")
        return _decode_ip(frame[4:], _ETHERTYPE_IPV4 if family == 2 else _ETHERTYPE_IPV6)
    if linktype in _RAW_ALIASES:
        version = frame[0] >> 4 if len(frame) else 0
        return _decode_ip(frame, _ETHERTYPE_IPV4 if version == 4 else _ETHERTYPE_IPV6)
    raise CaptureError(f"unsupported link type {linktype}")


def _decode_ip(packet: memoryview, ethertype: int) -> Segment | None:
    if ethertype == _ETHERTYPE_IPV4 and len(packet) >= 20 and packet[0] >> 4 == 4:
        header = (packet[0] & 0x0F) * 4
        total = int.from_bytes(packet[2:4], "big")
        fragmented = int.from_bytes(packet[6:8], "big") & 0x3FFF  # MF flag or an offset
        if packet[9] != _TCP or fragmented or header < 20:
            return None
        src = str(ipaddress.IPv4Address(bytes(packet[12:16])))
        dst = str(ipaddress.IPv4Address(bytes(packet[16:20])))
        return _decode_tcp(packet[header : max(header, min(total, len(packet)))], src, dst)
    if ethertype == _ETHERTYPE_IPV6 and len(packet) >= 40 and packet[0] >> 4 == 6:
        length = int.from_bytes(packet[4:6], "big")
        next_header, offset = packet[6], 40
        while next_header in _IPV6_EXTENSIONS and len(packet) >= offset + 8:
            next_header, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        if next_header != _TCP:
            return None  # a fragment (44), or not TCP
        src = str(ipaddress.IPv6Address(bytes(packet[8:24])))
        dst = str(ipaddress.IPv6Address(bytes(packet[24:40])))
        return _decode_tcp(packet[offset : min(40 + length, len(packet))], src, dst)
    return None


def _decode_tcp(segment: memoryview, src: str, dst: str) -> Segment | None:
    if len(segment) < 20:
        return None
    sport, dport, seq, ack = struct.unpack_from(">HHII", segment)
    header = (segment[12] >> 4) * 4
    if header < 20:
        return None
    payload = bytes(segment[header:])
    return Segment((src, sport), (dst, dport), seq, segment[13], payload, ack)


# --- reassembly ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Stream:
    """The bytes one side of a TCP connection sent, in sequence order."""

    src: Endpoint
    dst: Endpoint
    data: bytes = b""
    connection: int = 0
    """Which connection of the capture (a number shared by both directions)."""
    gaps: int = 0
    """Holes left by segments the capture missed (0 for a complete stream): a hole inside the
    bytes (read as zeros), a missing head (after a SYN) or tail (before a FIN, or acknowledged
    by the peer) each count one."""

    @property
    def key(self) -> tuple[Endpoint, Endpoint]:
        return self.src, self.dst

    def __repr__(self) -> str:
        return f"Stream({self.src}->{self.dst} #{self.connection}, {len(self.data)} bytes)"


@dataclass(eq=False)
class Connection:
    client: Endpoint
    server: Endpoint
    to_server: Stream
    to_client: Stream
    number: int
    syn_seen: bool = False


@dataclass
class _Direction:
    isn: int | None = None
    pieces: list[tuple[int, int, bytes]] = field(default_factory=list)
    """(offset from the first sequence number, capture order, payload)."""
    first_seq: int | None = None
    fin_seq: int | None = None
    acked: list[int] = field(default_factory=list)
    """Acknowledgement numbers the peer sent for this direction."""

    def offset(self, seq: int) -> int:
        """``seq`` relative to the first sequence number, negative if before it."""
        assert self.first_seq is not None
        offset = (seq - self.first_seq) % 2**32
        return offset - 2**32 if offset >= 2**31 else offset

    def known_end(self) -> int | None:
        """Where the data ends, as far as a FIN or the peer's acknowledgements tell."""
        if self.first_seq is None:
            return None
        fin = None if self.fin_seq is None else self.offset(self.fin_seq)
        ends = [] if fin is None else [fin]
        ends += [self.offset(ack) for ack in self.acked]
        if not ends:
            return None
        return min(max(ends), fin) if fin is not None else max(ends)


def reassemble(segments: Sequence[Segment] | Path | str) -> list[Connection]:
    """Every TCP connection of a capture, each with the byte streams of both directions.

    Bytes are ordered by sequence number; retransmitted and overlapping bytes count once (the
    first captured copy wins); a SYN's sequence number is not data. A new SYN on a 4-tuple that
    already carried a connection starts a new one. Without a SYN (the capture began mid-way), the
    side that sent first is taken for the client.
    """
    if isinstance(segments, Path | str):
        segments = read_pcap(segments)
    open_by_tuple: dict[frozenset[Endpoint], tuple[Connection, dict[Endpoint, _Direction]]] = {}
    connections: list[tuple[Connection, dict[Endpoint, _Direction]]] = []
    for order, segment in enumerate(segments):
        pair = frozenset((segment.src, segment.dst))
        opening = segment.flags & SYN and not segment.flags & ACK
        current = open_by_tuple.get(pair)
        if current is None or (opening and _is_new_connection(current, segment)):
            connection = Connection(
                client=segment.src,
                server=segment.dst,
                to_server=Stream(segment.src, segment.dst, connection=len(connections)),
                to_client=Stream(segment.dst, segment.src, connection=len(connections)),
                number=len(connections),
                syn_seen=bool(opening),
            )
            current = (connection, {segment.src: _Direction(), segment.dst: _Direction()})
            open_by_tuple[pair] = current
            connections.append(current)
        direction = current[1][segment.src]
        if segment.flags & ACK:
            current[1][segment.dst].acked.append(segment.ack)
        seq = segment.seq
        if segment.flags & SYN:
            direction.isn = seq
            direction.first_seq = (seq + 1) % 2**32
            seq = (seq + 1) % 2**32
        if segment.flags & FIN:
            direction.fin_seq = (seq + len(segment.payload)) % 2**32
        if not segment.payload:
            continue
        if direction.first_seq is None:
            direction.first_seq = seq
        # Negative before the first segment seen (a late retransmission).
        direction.pieces.append((direction.offset(seq), order, segment.payload))
    result = []
    for connection, directions in connections:
        for stream in (connection.to_server, connection.to_client):
            direction = directions[stream.src]
            start = 0 if direction.isn is not None else None
            stream.data, stream.gaps = _join(direction.pieces, start)
            end = direction.known_end()
            base = start if start is not None else _first(direction.pieces)
            if end is not None and end - base > len(stream.data):
                stream.gaps += 1
        result.append(connection)
    return result


def _first(pieces: list[tuple[int, int, bytes]]) -> int:
    return min((offset for offset, _, _ in pieces), default=0)


def _is_new_connection(
    current: tuple[Connection, dict[Endpoint, _Direction]], segment: Segment
) -> bool:
    isn = current[1][segment.src].isn
    return isn is None or isn != segment.seq


def _join(pieces: list[tuple[int, int, bytes]], start: int | None) -> tuple[bytes, int]:
    """The bytes from ``start`` (the first piece's offset if None) on, and the holes in them."""
    if not pieces:
        return b"", 0
    pieces.sort()
    if start is None:
        start = pieces[0][0]
    out = bytearray()
    gaps = 0
    for offset, _, payload in pieces:
        at = offset - start
        if at > len(out):
            gaps += 1
            out += bytes(at - len(out))  # keep offsets true; the hole reads as zeros
        if at + len(payload) > len(out):
            out += payload[max(0, len(out) - at) :]
    return bytes(out), gaps


def streams_to_ports(
    capture: Capture | Path | str | Sequence[Connection], ports: Iterable[int]
) -> list[Stream]:
    """Both streams of every connection whose server side is one of ``ports``."""
    wanted = set(ports)
    if isinstance(capture, Capture):
        connections: Sequence[Connection] = reassemble(capture.path)
    elif isinstance(capture, Path | str):
        connections = reassemble(capture)
    else:
        connections = capture
    streams = []
    for connection in connections:
        server_port = connection.server[1]
        if not connection.syn_seen and connection.client[1] in wanted:
            server_port = connection.client[1]  # caught mid-way: the known port is the server
        if server_port in wanted:
            streams += [connection.to_server, connection.to_client]
    return streams


# --- analysis ------------------------------------------------------------------------------------


def find_needles(streams: Iterable[Stream], needles: Sequence[bytes]) -> list[tuple[Stream, bytes]]:
    """(stream, needle) for every needle found in a stream's bytes."""
    return [(stream, needle) for stream in streams for needle in needles if needle in stream.data]


class Shared(NamedTuple):
    """A run of at least ``length`` bytes sent on two different connections."""

    stream_a: Stream
    stream_b: Stream
    offset_a: int
    offset_b: int

    def run_length(self) -> int:
        """How many bytes match from the two offsets on."""
        a, b = self.stream_a.data, self.stream_b.data
        n = 0
        while self.offset_a + n < len(a) and self.offset_b + n < len(b):
            if a[self.offset_a + n] != b[self.offset_b + n]:
                break
            n += 1
        return n


def shared_sequences(streams: Sequence[Stream], length: int = 64) -> list[Shared]:
    """Every maximal byte run of at least ``length`` bytes found in two different connections.

    Each stream is cut into aligned blocks of ``length // 2`` bytes, indexed by their content. Any
    common run of ``length`` bytes holds a whole aligned block of either stream, so a block-sized
    window slid over every offset of the other streams finds it by one dict look-up per offset;
    each hit is then extended both ways and kept if the run is long enough. Within one pair of
    streams, a region already reported is not reported again at another alignment (so long
    low-entropy runs, such as zeros, cost one report rather than one per alignment).

    Returns the start of each run in both streams, the pair ordered as ``streams`` is.
    """
    if length < 2:
        raise ValueError("length must be at least 2")
    block = length // 2
    index: dict[bytes, dict[int, list[int]]] = {}
    for i, stream in enumerate(streams):
        data = stream.data
        for k in range(0, len(data) - block + 1, block):
            index.setdefault(data[k : k + block], {}).setdefault(i, []).append(k)
    found: dict[tuple[int, int, int, int], None] = {}
    for j_stream, stream in enumerate(streams):
        data = stream.data
        covered: dict[int, int] = {}  # other stream -> end of the last run found in this one
        for j in range(len(data) - block + 1):
            hits = index.get(data[j : j + block])
            if hits is None:
                continue
            for i_stream, offsets in hits.items():
                other = streams[i_stream]
                if other.connection == stream.connection or covered.get(i_stream, -1) > j:
                    continue
                run = _first_run(other.data, offsets, data, j, block, length)
                if run is None:
                    continue
                start_a, start_b, size = run
                covered[i_stream] = start_b + size - block + 1
                key = (
                    (i_stream, j_stream, start_a, start_b)
                    if i_stream < j_stream
                    else (j_stream, i_stream, start_b, start_a)
                )
                found[key] = None
    return [Shared(streams[a], streams[b], oa, ob) for a, b, oa, ob in sorted(found)]


def _first_run(
    a: bytes, offsets: list[int], b: bytes, j: int, block: int, length: int
) -> tuple[int, int, int] | None:
    """The first run through the block ``b[j : j + block]``, matched at one of ``offsets`` in
    ``a``, that reaches ``length`` bytes once extended both ways: (start in a, start in b, size)."""
    for k in offsets:
        back = _common_suffix(a, k, b, j)
        ahead = block + _common_prefix(a, k + block, b, j + block)
        if back + ahead >= length:
            return k - back, j - back, back + ahead
    return None


def _common_prefix(a: bytes, i: int, b: bytes, j: int) -> int:
    """How many bytes match from ``a[i]`` and ``b[j]`` on."""
    return _match_length(
        min(len(a) - i, len(b) - j),
        lambda n, piece: a[i + n : i + n + piece] == b[j + n : j + n + piece],
    )


def _common_suffix(a: bytes, i: int, b: bytes, j: int) -> int:
    """How many bytes match going back from ``a[i - 1]`` and ``b[j - 1]``."""
    return _match_length(
        min(i, j), lambda n, piece: a[i - n - piece : i - n] == b[j - n - piece : j - n]
    )


def _match_length(limit: int, matches: Callable[[int, int], bool]) -> int:
    """How far a match goes, up to ``limit`` bytes, where ``matches(n, piece)`` says whether the
    ``piece`` bytes after the first ``n`` match: compared a slice at a time, the slice doubling
    while it matches and halving when it does not."""
    n, step = 0, 64
    while True:
        piece = min(step, limit - n)
        if piece <= 0:
            return n
        if matches(n, piece):
            n += piece
            step *= 2
        elif piece == 1:
            return n
        else:
            step = max(1, piece // 2)


_JSON_KEY = re.compile(rb'[{,]\s*"[A-Za-z0-9_@$.-]{1,64}"\s*:')
_JSON_CONTENT_TYPE = re.compile(rb"content-type:\s*application/json", re.IGNORECASE)


def looks_like_json(stream: Stream | bytes) -> bool:
    """Whether the bytes hold a JSON object key (``{"name":``) or an HTTP JSON content type."""
    data = stream.data if isinstance(stream, Stream) else stream
    return bool(_JSON_KEY.search(data) or _JSON_CONTENT_TYPE.search(data))
