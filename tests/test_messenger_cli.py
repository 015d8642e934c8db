"""The ``veil`` messenger commands against a devnet of real node processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _veil(
    *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("devnet") / "devnet"
    up = _veil("devnet", "up", "--detach", "--nodes", "4", "--dir", str(root))
    assert up.returncode == 0, up.stderr
    try:
        yield json.loads((root / "devnet.json").read_text())["seeds"]
    finally:
        _veil("devnet", "down", "--dir", str(root))


def _session_id(home: Path) -> str:
    done = _veil("whoami", "--home", str(home))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def test_init_shows_an_id_a_qr_code_and_the_phrase_and_keeps_the_key_private(
    tmp_path: Path,
) -> None:
    done = _veil("init", "--home", str(tmp_path / "a"), "--name", "Alice")
    assert done.returncode == 0, done.stderr
    assert "Your Session ID: 05" in done.stdout
    assert "▄" in done.stdout  # the QR code
    assert "keep them safe" in done.stdout
    key = tmp_path / "a" / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    phrase = done.stdout.split("Recovery phrase:")[1].split("\n\n")[1].strip()
    assert len(phrase.split()) == 13
    again = _veil("init", "--home", str(tmp_path / "a"))
    assert again.returncode == 1
    assert "already holds an account" in again.stderr
    restored = _veil("restore", "--home", str(tmp_path / "b"), stdin=phrase + "\n")
    assert restored.returncode == 0, restored.stderr
    assert _session_id(tmp_path / "b") == _session_id(tmp_path / "a")
    wrong_checksum = "abbey " * 12 + "zoo\n"  # thirteen abbeys would be the all-zero seed
    wrong = _veil("restore", "--home", str(tmp_path / "c"), stdin=wrong_checksum)
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1


def test_alice_sends_and_bob_reads_each_message_once(tmp_path: Path, seeds: list[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert _veil("init", "--home", str(alice), "--name", "Alice").returncode == 0
    assert _veil("init", "--home", str(bob)).returncode == 0
    network = [arg for seed in seeds for arg in ("--seed", seed)]
    sent = _veil("send", _session_id(bob), "hello Bob", "--home", str(alice), *network)
    assert sent.returncode == 0, sent.stderr
    piped = _veil("send", _session_id(bob), "--home", str(alice), *network, stdin="from stdin\n")
    assert piped.returncode == 0, piped.stderr
    inbox = _veil("inbox", "--home", str(bob), *network)
    assert inbox.returncode == 0, inbox.stderr
    assert f"{_session_id(alice)} (Alice)" in inbox.stdout
    assert inbox.stdout.index("hello Bob") < inbox.stdout.index("from stdin")
    again = _veil("inbox", "--home", str(bob), *network)
    assert again.returncode == 0, again.stderr
    assert "no new messages" in again.stdout


def test_bad_input_gives_a_clear_message_and_a_non_zero_exit(tmp_path: Path) -> None:
    home = tmp_path / "me"
    assert _veil("init", "--home", str(home)).returncode == 0
    malformed = _veil("send", "05nothex", "hi", "--home", str(home), "--seed", "127.0.0.1:9")
    assert malformed.returncode == 1
    assert "not a Session ID" in malformed.stderr
    unreachable = _veil(
        "send", "05" + "ab" * 32, "hi", "--home", str(home), "--seed", "127.0.0.1:9"
    )
    assert unreachable.returncode == 1
    assert "cannot reach the network" in unreachable.stderr
    assert "Traceback" not in malformed.stderr + unreachable.stderr
    assert _veil("frobnicate").returncode == 2
    no_account = _veil("whoami", "--home", str(tmp_path / "nobody"))
    assert no_account.returncode == 1
    assert "veil init" in no_account.stderr
