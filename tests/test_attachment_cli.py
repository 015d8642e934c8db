"""Attachments and voice messages from the command line, all real processes: a devnet of four
nodes; Alice sends Bob a 10 MB file and a voice message, and a file to a group; Bob lists, saves
and plays them — with one node killed before he fetches. No window of the file is on any node's
disk in the clear."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from veil.client.voice import format_duration

SIZE = 10_000_000


def _veil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _ok(*args: str, env: dict[str, str] | None = None) -> str:
    done = _veil(*args, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("attach") / "devnet"
    up = _veil("devnet", "up", "--detach", "--nodes", "4", "--dir", str(root))
    assert up.returncode == 0, up.stderr
    try:
        yield root
    finally:
        _veil("devnet", "down", "--dir", str(root))


def _net(root: Path) -> list[str]:
    seeds = json.loads((root / "devnet.json").read_text())["seeds"]
    return [a for s in seeds for a in ("--seed", s)] + ["--network", str(root / "network.json")]


def _account(root: Path, name: str) -> tuple[Path, str]:
    home = root.parent / name.lower()
    _ok("init", "--home", str(home), "--name", name)
    return home, _ok("whoami", "--home", str(home)).split()[0]


def _speech(folder: Path) -> Path:
    """A recording: real speech from espeak-ng if it is installed, else a tone shaped like
    syllables (written with PyAV), so that the command path is tried either way."""
    wav = folder / "memo.wav"
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        done = subprocess.run(
            [espeak, "-w", str(wav), "Meet me at the ridge at seven."],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0 and wav.exists():
            return wav
    import av  # noqa: PLC0415

    rate = 16_000
    t = np.arange(rate * 2) / rate
    samples = (0.5 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(
        np.float32
    )
    with av.open(str(wav), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return wav


def _ids(listing: str) -> dict[str, str]:
    """Attachment name (or "voice") → its id prefix, from `veil attachments`."""
    found = {}
    for kind, short, rest in re.findall(r"\[(\w+) ([0-9a-f]{8})\] ([^,\n]+)", listing):
        found["voice" if kind == "voice" else rest.strip()] = short
    return found


def test_a_10_mb_file_a_voice_message_and_a_group_file_round_trip(devnet: Path) -> None:
    net = _net(devnet)
    alice, _ = _account(devnet, "Alice")
    bob, bob_id = _account(devnet, "Bob")
    folder = devnet.parent / "files"
    folder.mkdir()
    lines = (
        f"row {i:08d}: nothing of this may sit on a node in the clear\n" for i in range(SIZE // 50)
    )
    data = b"".join(line.encode() for line in lines)[:SIZE]
    big = folder / "field notes.txt"
    big.write_bytes(data)
    memo = _speech(folder)

    _ok("send", bob_id, "--file", str(big), "the notes", "--home", str(alice), *net)
    _ok("send", bob_id, "--voice", str(memo), "--home", str(alice), *net)
    _ok("accept", _ok("whoami", "--home", str(alice)).split()[0], "--home", str(bob), *net)

    # One node goes down before Bob fetches: every chunk is still at other members.
    state = json.loads((devnet / "devnet.json").read_text())
    os.kill(state["nodes"][-1]["pid"], signal.SIGKILL)

    listing = _ok("attachments", "--home", str(bob), *net)
    ids = _ids(listing)
    assert "field notes.txt" in ids, listing
    assert "10.0 MB" in listing
    voice_line = next(line for line in listing.splitlines() if "voice message" in line)
    assert re.search(r"voice message \d+:\d\d [▁▂▃▄▅▆▇█]+", voice_line), voice_line

    saved = devnet.parent / "saved"
    out = _ok("save", ids["field notes.txt"], "--to", str(saved), "--home", str(bob), *net)
    assert "saved" in out
    assert (
        hashlib.sha256((saved / "field notes.txt").read_bytes()).digest()
        == hashlib.sha256(data).digest()
    )

    # No player on PATH: `veil play` saves the voice message instead.
    empty = devnet.parent / "no-players"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    played = _ok("play", ids["voice"], "--to", str(saved), "--home", str(bob), *net, env=env)
    assert "no audio player found" in played
    (ogg,) = saved.glob("voice-message*.ogg")
    assert ogg.read_bytes()[:4] == b"OggS"
    from veil.client.voice import audio_summary  # noqa: PLC0415

    duration_ms, _ = audio_summary(ogg.read_bytes())
    assert format_duration(duration_ms) in voice_line

    # Nothing of the file is on any node's disk in the clear (the killed node's included).
    windows = {data[i : i + 40] for i in range(0, SIZE - 40, 99_991)}
    for path in devnet.rglob("*.mdb"):
        disk = path.read_bytes()
        assert not any(window in disk for window in windows), path

    # A file to a group, saved by a member.
    made = _ok("group", "create", "ridge", bob_id, "--home", str(alice), *net)
    group = re.search(r"\b03[0-9a-f]{64}\b", made)
    assert group is not None, made
    _ok("group", "accept", group[0][:12], "--home", str(bob), *net)
    plan = folder / "plan.csv"
    plan.write_text("day,route\n1,ridge\n")
    _ok("send", group[0][:12], "--file", str(plan), "--home", str(alice), *net)
    in_group = _ids(_ok("attachments", group[0][:12], "--home", str(bob), *net))
    _ok("save", in_group["plan.csv"], "--to", str(saved), "--home", str(bob), *net)
    assert (saved / "plan.csv").read_text() == "day,route\n1,ridge\n"

    # Bob's accept went to Alice's published prekeys: the conversation is forward secret now.
    alice_id = _ok("whoami", "--home", str(alice)).split()[0]
    history = _ok("history", alice_id, "--home", str(bob), *net)
    assert history.startswith("protection: forward secrecy + post-quantum"), history

    # A hostile or unknown reference is a one-line error.
    for reference in ("zz", "0000000000"):
        refused = _veil("save", reference, "--home", str(bob), *net)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1, refused.stderr
