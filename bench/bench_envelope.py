"""One-to-one message encryption: Veil v2 envelopes (forward secret, hybrid post-quantum) against
the Session Protocol's sealed box, in the same run (``docs/performance.md``, "Forward secrecy: what
a message costs").

For a 1 KiB padded message, per message, through ``veil._core``:

- ``session``: ``session_encrypt`` / ``session_decrypt`` (today's message: one ephemeral X25519
  key pair and DH, XSalsa20-Poly1305, one Ed25519 signature and verification);
- ``v2-1``, ``v2-3``: ``envelope_seal`` to one and to three recipient devices, and
  ``envelope_open`` by one device (one hybrid encapsulation per device: an X25519 key pair and DH
  plus ML-KEM-768; the key wrap; one XChaCha20-Poly1305 body; the signature);
- ``floor``: the primitives a v2 message cannot do without — one ``hybrid_encapsulate`` (seal) or
  ``hybrid_decapsulate`` (open) and one Ed25519 sign (seal) or verify (open).

Every candidate is checked before it is timed. Benchmarks are disabled by default: one short
repetition then runs as a correctness check. ``--benchmark-enable`` times ``REPEAT`` rotated
repetitions and prints medians (µs), messages/s per core and the ratios to ``session``::

    .venv/bin/pytest -p no:cacheprovider -q bench/bench_envelope.py --benchmark-enable -s
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from benchkit import Benchmark, calibrate, time_loop
from veil import _core
from veil.identity import Identity
from veil.protocol.prekeys import key_id

REPEAT = (15, 1)
TARGET_S = (0.1, 0.002)
MESSAGE = bytes(1023) + b"\x80"
FIGURES: dict[str, Any] = {}


def _candidates() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    sender, recipient = Identity.generate(), Identity.generate()
    devices = [_core.hybrid_keypair() for _ in range(3)]
    slots = [(key_id(public), public) for public, _ in devices]
    secrets = [(key_id(devices[0][0]), devices[0][1])]
    y_x = recipient.x25519_public_key
    sealed_session = _core.session_encrypt(sender.seed, y_x, MESSAGE)
    sealed_v2 = {n: _core.envelope_seal(sender.seed, y_x, slots[:n], MESSAGE) for n in (1, 3)}
    kem_ct, _ = _core.hybrid_encapsulate(devices[0][0])
    signature = _core.ed25519_sign(sender.seed, MESSAGE)

    def floor_seal() -> object:
        _core.hybrid_encapsulate(devices[0][0])
        return _core.ed25519_sign(sender.seed, MESSAGE)

    def floor_open() -> object:
        _core.hybrid_decapsulate(devices[0][1], kem_ct)
        return _core.ed25519_verify(sender.ed25519_public_key, MESSAGE, signature)

    return {
        "session": (
            lambda: _core.session_encrypt(sender.seed, y_x, MESSAGE),
            lambda: _core.session_decrypt(recipient.x25519_secret_key, y_x, sealed_session),
        ),
        "v2-1": (
            lambda: _core.envelope_seal(sender.seed, y_x, slots[:1], MESSAGE),
            lambda: _core.envelope_open(sealed_v2[1], y_x, secrets),
        ),
        "v2-3": (
            lambda: _core.envelope_seal(sender.seed, y_x, slots, MESSAGE),
            lambda: _core.envelope_open(sealed_v2[3], y_x, secrets),
        ),
        "floor": (floor_seal, floor_open),
    }


@pytest.fixture(scope="module")
def candidates() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    return _candidates()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    results: dict[str, list[float]] | None = FIGURES.get("interleaved")
    if reporter is None or not results or FIGURES.get("disabled", True):
        return
    medians = {name: statistics.median(values) for name, values in results.items()}
    lines = ["", f"one-to-one messages, 1 KiB, {FIGURES['repeat']} repetitions (median us):"]
    for name, median in medians.items():
        operation = name.rsplit("/", 1)[0]
        base = medians[f"session/{name.rsplit('/', 1)[1]}"]
        lines.append(
            f"  {name:14} {median:8.2f} us  {1e6 / median:9.0f}/s  x{median / base:.2f} of "
            f"session  [{min(results[name]):.2f}-{max(results[name]):.2f}]  ({operation})"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def test_every_candidate_opens_what_it_seals() -> None:
    sender, recipient = Identity.generate(), Identity.generate()
    public, secret = _core.hybrid_keypair()
    sealed = _core.envelope_seal(
        sender.seed, recipient.x25519_public_key, [(key_id(public), public)], MESSAGE
    )
    opened = _core.envelope_open(sealed, recipient.x25519_public_key, [(key_id(public), secret)])
    assert opened[0] == MESSAGE
    assert len(sealed) - len(MESSAGE) == 6 + 1176 + 24 + 96 + 16


def test_interleaved(
    benchmark: Benchmark,
    candidates: dict[str, tuple[Callable[[], object], Callable[[], object]]],
) -> None:
    benchmark.group = "envelope-interleaved"
    enabled = not benchmark.disabled
    repeat, target = REPEAT[0 if enabled else 1], TARGET_S[0 if enabled else 1]
    timed = [
        (f"{name}/{side}", op)
        for name, ops in candidates.items()
        for side, op in zip(("seal", "open"), ops, strict=True)
    ]
    for _, op in timed:
        assert op() is not None

    def run() -> list[list[float]]:
        loops = [calibrate(op, target) for _, op in timed]
        samples: list[list[float]] = [[] for _ in timed]
        for repetition in range(repeat):
            start = repetition % len(timed)
            for index in [*range(start, len(timed)), *range(start)]:
                samples[index].append(time_loop(timed[index][1], loops[index]) * 1e6)
        return samples

    samples = benchmark.pedantic(run, rounds=1)
    results = {name: values for (name, _), values in zip(timed, samples, strict=True)}
    for name, values in results.items():
        benchmark.extra_info[f"{name}/median_us"] = round(statistics.median(values), 3)
    FIGURES.update(interleaved=results, repeat=repeat, disabled=not enabled)
