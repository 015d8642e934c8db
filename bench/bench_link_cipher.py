"""Node links: the core's Noise link cipher against TLS 1.3 as Python's ``ssl`` would do it, and the
primitive floor (``docs/performance.md``, "Node links"). All in one process, no sockets: what is
compared is the CPU each end spends, not a network.

Candidates, each checked before anything is timed (every frame comes out as it went in; each
handshake gives a working pair bound to the expected keys; TLS refuses a certificate it has not
pinned, either way):

- ``noise``: ``veil._core`` node links, Noise_IK_25519_ChaChaPoly_BLAKE2b over AWS-LC's X25519 and
  ChaCha20-Poly1305. A frame: ``LinkCipher.seal`` at one end, ``open`` at the other. A handshake:
  ``NodeKey.link_initiate`` + ``link_respond`` + ``LinkInitiator.finish`` (both ends).
- ``tls``: two ``ssl.SSLObject`` over ``ssl.MemoryBIO`` pairs (what asyncio's SSL transport is built
  on), TLS 1.3 only, each end with a self-signed Ed25519 certificate and trusting only the other's
  (pinned: ``CERT_REQUIRED`` with that one certificate as the trust store, mutual authentication,
  and the peer's certificate compared with the expected one after the handshake, as a node would
  map it to a node id); no session tickets. The contexts are made once, outside the timing (the
  cheapest a node could do). A frame: ``write`` at the client, the bytes moved from its outgoing
  BIO to the server's incoming BIO, ``read`` at the server until the frame is whole. A handshake:
  both ``SSLObject`` made and ``do_handshake`` driven to the end on both. Python's ``ssl`` cannot
  choose TLS 1.3 cipher suites, so the suite is the one OpenSSL negotiates (reported; on a CPU
  with AES instructions, ``TLS_AES_256_GCM_SHA384``). The certificates come from the ``openssl``
  command (the ``cryptography`` package is not installed in the project's environment); without
  it the TLS candidate is skipped, with the reason.
- ``floor``: ``veil._core.xchacha20poly1305_encrypt`` + ``decrypt`` of the frame (RustCrypto's
  XChaCha20-Poly1305). The core's AWS-LC ChaCha20-Poly1305 is not exposed to Python, so this is the
  nearest floor: one AEAD call each way, no record framing.
- ``floor-ietf``: PyNaCl's ``crypto_aead_chacha20poly1305_ietf_encrypt`` + ``decrypt``: libsodium's
  ChaCha20-Poly1305 with a 96-bit nonce, the very AEAD of Noise's ``ChaChaPoly``.

Frames of 1,224 bytes (the first layer of a two-hop onion around 1 KiB: what a node forwards) and
of 64 KiB (a bulk transfer, two Noise records, four TLS records).

Groups (pytest-benchmark, per operation): ``link-1224B``, ``link-64KiB`` (the four candidates side
by side) and ``link-handshake`` (``noise``, ``tls``; and Noise's two halves: ``noise-initiate``, the
caller's first message, and ``noise-respond``, all the accepter does — which it does, answer
included, before it can tell whether the caller is admitted). The decision's figures come from
``test_interleaved``: every candidate's loop calibrated to about ``TARGET_S``, then ``REPEAT``
repetitions each timing every candidate once, in an order that rotates from one repetition to the
next (noise on the machine falls on all alike); medians, min and max, ratios of medians, printed
at the end. Without ``--benchmark-enable`` every benchmark runs once and the interleaved test runs
one short repetition: a smoke check of a few seconds.
"""

from __future__ import annotations

import os
import shutil
import ssl
import statistics
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from benchkit import Benchmark, calibrate, median_s, now_ms, time_loop
from veil import _core
from veil.protocol.link import HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN

SIZES = {"1224B": 1224, "64KiB": 64 * 1024}
FRAME_CANDIDATES = ("noise", "tls", "floor", "floor-ietf")
HANDSHAKE_CANDIDATES = ("noise", "tls", "noise-initiate", "noise-respond")
REPEAT = (15, 1)  # interleaved repetitions (enabled, disabled)
TARGET_S = (0.1, 0.002)  # seconds per candidate per repetition
NOISE_RECORD_OVERHEAD = 2 + 1 + 16  # length, flags, tag
TLS_RECORD_OVERHEAD = 5 + 1 + 16  # header, inner content type, tag

FIGURES: dict[str, Any] = {}


# --- TLS 1.3 through ssl.SSLObject ----------------------------------------------------------------


@dataclass(frozen=True)
class TlsIdentity:
    """A self-signed Ed25519 certificate and its key, in files (``load_cert_chain`` reads files)."""

    cert: Path
    key: Path
    pem: str
    der: bytes


def make_tls_identity(directory: Path, name: str) -> TlsIdentity:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    command = ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "2"]
    command += ["-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    pem = cert.read_text(encoding="ascii")
    return TlsIdentity(cert, key, pem, ssl.PEM_cert_to_DER_cert(pem))


def tls_context(own: TlsIdentity, peer: TlsIdentity, *, server: bool) -> ssl.SSLContext:
    """TLS 1.3 only, our certificate, and the peer's as the only one we accept."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(own.cert, own.key)
    context.check_hostname = False  # pinned by certificate, not by name
    context.verify_mode = ssl.CERT_REQUIRED  # the server too: both ends authenticate
    context.load_verify_locations(cadata=peer.pem)
    if server:
        context.num_tickets = 0  # links are not resumed
    return context


@dataclass
class TlsPair:
    client: ssl.SSLObject
    server: ssl.SSLObject
    client_in: ssl.MemoryBIO
    client_out: ssl.MemoryBIO
    server_in: ssl.MemoryBIO
    server_out: ssl.MemoryBIO
    handshake_bytes: int = 0


@dataclass(frozen=True)
class Tls:
    client_context: ssl.SSLContext
    server_context: ssl.SSLContext
    client_der: bytes
    server_der: bytes

    def handshake(self) -> TlsPair:
        """A full handshake, both ends; raises ``ssl.SSLError`` if either refuses the other."""
        client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = self.client_context.wrap_bio(client_in, client_out, server_side=False)
        server = self.server_context.wrap_bio(server_in, server_out, server_side=True)
        pair = TlsPair(client, server, client_in, client_out, server_in, server_out)
        client_done = server_done = False
        for _ in range(4):  # TLS 1.3: three flights
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            flight = pair.client_out.read()
            pair.handshake_bytes += len(flight)
            pair.server_in.write(flight)
            if not server_done:
                try:
                    server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
            flight = pair.server_out.read()
            pair.handshake_bytes += len(flight)
            pair.client_in.write(flight)
            if client_done and server_done:
                break
        else:
            raise ssl.SSLError("the handshake did not finish")
        if (
            server.getpeercert(binary_form=True) != self.client_der
            or client.getpeercert(binary_form=True) != self.server_der
        ):
            raise ssl.SSLError("not the pinned certificate")
        return pair


def tls_transfer(pair: TlsPair, frame: bytes) -> bytes:
    """Write ``frame`` at the client; return what the server reads of it."""
    pair.client.write(frame)
    pair.server_in.write(pair.client_out.read())
    size = len(frame)
    data = pair.server.read(size)
    if len(data) == size:
        return data
    parts, got = [data], len(data)
    while got < size:  # one read per TLS record (16 KiB at most)
        part = pair.server.read(size - got)
        parts.append(part)
        got += len(part)
    return b"".join(parts)


# --- candidates -----------------------------------------------------------------------------------


@dataclass
class Candidates:
    """Everything prepared once: keys, established pairs, frames; and TLS, unless unavailable."""

    frames: dict[str, bytes]
    caller: _core.NodeKey
    accepter: _core.NodeKey
    sender: _core.LinkCipher
    receiver: _core.LinkCipher
    tls: Tls | None
    tls_pair: TlsPair | None
    tls_missing: str
    aead_key: bytes = field(default_factory=lambda: os.urandom(32))
    xnonce: bytes = field(default_factory=lambda: os.urandom(24))
    nonce: bytes = field(default_factory=lambda: os.urandom(12))

    def noise_handshake(self) -> tuple[_core.LinkCipher, _core.LinkCipher]:
        initiator = self.caller.link_initiate(self.accepter.public, now_ms())
        _, _, answer, accepting = self.accepter.link_respond(initiator.message)
        return initiator.finish(answer), accepting

    def frame_op(self, name: str, frame: bytes) -> Callable[[], bytes]:
        """One frame from one end to the other with candidate ``name``; returns what arrives."""
        if name == "noise":
            seal, open_ = self.sender.seal, self.receiver.open
            return lambda: open_(seal(frame))
        if name == "tls":
            if self.tls_pair is None:
                pytest.skip(self.tls_missing)
            pair = self.tls_pair
            return lambda: tls_transfer(pair, frame)
        if name == "floor":
            key, xnonce = self.aead_key, self.xnonce
            encrypt, decrypt = _core.xchacha20poly1305_encrypt, _core.xchacha20poly1305_decrypt
            return lambda: decrypt(key, xnonce, encrypt(key, xnonce, frame))
        if name == "floor-ietf":
            key, nonce = self.aead_key, self.nonce
            seal_ietf = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt
            open_ietf = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt
            return lambda: open_ietf(seal_ietf(frame, None, nonce, key), None, nonce, key)
        raise ValueError(name)

    def handshake_op(self, name: str) -> Callable[[], object]:
        if name == "noise":
            return self.noise_handshake
        if name == "noise-initiate":  # the caller's first half: its first message
            return lambda: self.caller.link_initiate(self.accepter.public, now_ms())
        if name == "noise-respond":  # the accepter's whole part, done before admission is known
            message = self.caller.link_initiate(self.accepter.public, now_ms()).message
            return lambda: self.accepter.link_respond(message)
        if name != "tls":
            raise ValueError(name)
        if self.tls is None:
            pytest.skip(self.tls_missing)
        return self.tls.handshake


def tls_unavailable() -> str:
    """Why the TLS candidate cannot run here, or ``""``."""
    if shutil.which("openssl") is None:
        return "no openssl command to make the Ed25519 certificates with"
    if not ssl.HAS_TLSv1_3:
        return f"{ssl.OPENSSL_VERSION} has no TLS 1.3"
    return ""


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory) -> Candidates:
    caller = _core.NodeKey(_core.x25519_generate_secret())
    accepter = _core.NodeKey(_core.x25519_generate_secret())
    initiator = caller.link_initiate(accepter.public, now_ms())
    _, _, answer, receiver = accepter.link_respond(initiator.message)
    sender = initiator.finish(answer)
    frames = {label: os.urandom(size) for label, size in SIZES.items()}
    tls: Tls | None = None
    tls_pair: TlsPair | None = None
    missing = tls_unavailable()
    if not missing:
        directory = tmp_path_factory.mktemp("tls")
        node_a = make_tls_identity(directory, "veil-node-a")
        node_b = make_tls_identity(directory, "veil-node-b")
        tls = Tls(
            tls_context(node_a, node_b, server=False),
            tls_context(node_b, node_a, server=True),
            node_a.der,
            node_b.der,
        )
        tls_pair = tls.handshake()
        FIGURES["tls_suite"] = tls_pair.client.cipher()
        FIGURES["tls_handshake_bytes"] = tls_pair.handshake_bytes
        FIGURES["tls_openssl"] = ssl.OPENSSL_VERSION
    return Candidates(frames, caller, accepter, sender, receiver, tls, tls_pair, missing)


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the interleaved figures and their ratios once the module has run."""
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    results: dict[str, dict[str, list[float]]] | None = FIGURES.get("interleaved")
    if reporter is None or not results or FIGURES.get("disabled", True):
        return
    lines = ["", f"node links, interleaved ({FIGURES['repeat']} repetitions), us per operation:"]
    for group, by_name in results.items():
        medians = {name: statistics.median(samples) for name, samples in by_name.items()}
        row = "  ".join(
            f"{name} {medians[name]:.2f} [{min(by_name[name]):.2f}-{max(by_name[name]):.2f}]"
            for name in by_name
        )
        lines.append(f"  {group:15} {row}")
        ratios = [
            f"{a}/{b} {medians[a] / medians[b]:.2f}"
            for a, b in (
                ("tls", "noise"),
                ("noise", "floor"),
                ("noise", "floor-ietf"),
                ("noise-respond", "noise"),
            )
            if a in medians and b in medians
        ]
        if ratios:
            lines.append(f"  {'':15} {', '.join(ratios)}")
        if group != "link-handshake":
            size = SIZES[group.removeprefix("link-")]
            lines.append(
                f"  {'':15} "
                + ", ".join(f"{name} {size / medians[name]:.0f} MB/s" for name in medians)
            )
    if "tls_suite" in FIGURES:
        lines.append(
            f"  TLS: {FIGURES['tls_openssl']}, {FIGURES['tls_suite'][0]};"
            f" handshake {FIGURES['tls_handshake_bytes']} bytes on the wire"
            f" (Noise: {HANDSHAKE_INIT_LEN + HANDSHAKE_RESPONSE_LEN})"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


# --- checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FRAME_CANDIDATES)
@pytest.mark.parametrize("size", SIZES)
def test_every_candidate_delivers_the_frame_unchanged(
    candidates: Candidates, size: str, name: str
) -> None:
    frame = candidates.frames[size]
    op = candidates.frame_op(name, frame)
    assert op() == frame
    assert op() == frame  # and again: the ends stay in step


def test_noise_records_cost_their_stated_overhead(candidates: Candidates) -> None:
    small, big = candidates.frames["1224B"], candidates.frames["64KiB"]
    calling, accepting = candidates.noise_handshake()
    sealed = calling.seal(small)
    assert len(sealed) == len(small) + NOISE_RECORD_OVERHEAD
    assert accepting.open(sealed) == small
    sealed = calling.seal(big)
    assert len(sealed) == len(big) + 2 * NOISE_RECORD_OVERHEAD  # two records
    assert accepting.open(sealed[:1000]) == b""
    assert accepting.pending == 1000
    assert accepting.open(sealed[1000:]) == big


def test_noise_handshake_binds_both_keys(candidates: Candidates) -> None:
    calling, accepting = candidates.noise_handshake()
    assert calling.remote_static == candidates.accepter.public
    assert accepting.remote_static == candidates.caller.public
    assert accepting.open(calling.seal(b"frame")) == b"frame"
    assert calling.open(accepting.seal(b"answer")) == b"answer"


def test_tls_pins_both_certificates(
    candidates: Candidates, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if candidates.tls is None:
        pytest.skip(candidates.tls_missing)
    pair = candidates.tls.handshake()
    assert pair.client.version() == pair.server.version() == "TLSv1.3"
    assert tls_transfer(pair, b"frame") == b"frame"
    directory = tmp_path_factory.mktemp("tls-stranger")
    node_a, node_b, stranger = (
        make_tls_identity(directory, name) for name in ("node-a", "node-b", "stranger")
    )
    cases = [  # (client, server): the stranger on either end, pinned by neither
        (tls_context(stranger, node_b, server=False), tls_context(node_b, node_a, server=True)),
        (tls_context(node_a, node_b, server=False), tls_context(stranger, node_a, server=True)),
    ]
    for client_context, server_context in cases:
        tls = Tls(client_context, server_context, node_a.der, node_b.der)
        with pytest.raises(ssl.SSLError, match="certificate"):
            tls.handshake()


# --- pytest-benchmark rows ------------------------------------------------------------------------


@pytest.mark.parametrize("name", FRAME_CANDIDATES)
@pytest.mark.parametrize("size", SIZES)
def test_frame(benchmark: Benchmark, candidates: Candidates, size: str, name: str) -> None:
    benchmark.group = f"link-{size}"
    frame = candidates.frames[size]
    assert benchmark(candidates.frame_op(name, frame)) == frame
    median = median_s(benchmark)
    if median is not None:
        benchmark.extra_info["MB_per_s"] = round(len(frame) / median / 1e6, 1)


@pytest.mark.parametrize("name", HANDSHAKE_CANDIDATES)
def test_handshake(benchmark: Benchmark, candidates: Candidates, name: str) -> None:
    benchmark.group = "link-handshake"
    result = benchmark(candidates.handshake_op(name))
    if name == "tls":
        assert isinstance(result, TlsPair)
        assert tls_transfer(result, b"frame") == b"frame"
    elif name == "noise":
        assert isinstance(result, tuple)
        calling, accepting = result
        assert accepting.open(calling.seal(b"frame")) == b"frame"
    elif name == "noise-initiate":
        assert isinstance(result, _core.LinkInitiator)
        assert len(result.message) == HANDSHAKE_INIT_LEN
    else:
        assert isinstance(result, tuple)
        assert result[0] == candidates.caller.public
        assert len(result[2]) == HANDSHAKE_RESPONSE_LEN


# --- the decision's figures: interleaved ----------------------------------------------------------


def test_interleaved(benchmark: Benchmark, candidates: Candidates) -> None:
    """Every available candidate of every group, interleaved, as one pytest-benchmark round (its
    ``extra_info`` has the medians); medians and ratios are printed at the end of the module (the
    figures of ``docs/performance.md``, "Node links")."""
    benchmark.group = "link-interleaved"
    enabled = not benchmark.disabled
    repeat, target = REPEAT[0 if enabled else 1], TARGET_S[0 if enabled else 1]
    timed: list[tuple[str, str, Callable[[], object]]] = []
    for size, frame in candidates.frames.items():
        for name in FRAME_CANDIDATES:
            if name == "tls" and candidates.tls_pair is None:
                continue
            timed.append((f"link-{size}", name, candidates.frame_op(name, frame)))
    for name in HANDSHAKE_CANDIDATES:
        if name == "tls" and candidates.tls is None:
            continue
        timed.append(("link-handshake", name, candidates.handshake_op(name)))

    def run() -> list[list[float]]:
        loops = [calibrate(op, target) for _, _, op in timed]
        samples: list[list[float]] = [[] for _ in timed]
        for repetition in range(repeat):
            start = repetition % len(timed)
            for index in [*range(start, len(timed)), *range(start)]:
                samples[index].append(time_loop(timed[index][2], loops[index]) * 1e6)
        return samples

    samples = benchmark.pedantic(run, rounds=1)
    assert all(len(values) == repeat for values in samples)
    for frame in candidates.frames.values():  # the ends are still in step after it all
        for name in FRAME_CANDIDATES:
            if name != "tls" or candidates.tls_pair is not None:
                assert candidates.frame_op(name, frame)() == frame
    results: dict[str, dict[str, list[float]]] = {}
    for (group, name, _), values in zip(timed, samples, strict=True):
        results.setdefault(group, {})[name] = values
        benchmark.extra_info[f"{group}/{name}/median_us"] = round(statistics.median(values), 3)
    FIGURES["interleaved"] = results
    FIGURES["repeat"] = repeat
    FIGURES["disabled"] = not enabled
