"""The ``veil`` messenger commands against a devnet of real node processes."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import png
import pytest
import qrcode

from veil.identity import Identity


def _veil(
    *args: str, stdin: str | None = None, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        input=stdin,
        env=env,
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
    NETWORK_FILE[:] = [str(root / "network.json")]
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


NETWORK_FILE: list[str] = []
"""The devnet's network file, once the ``seeds`` fixture has started it."""


def _network(seeds: list[str]) -> list[str]:
    return [arg for seed in seeds for arg in ("--seed", seed)] + ["--network", *NETWORK_FILE]


def _lone_network_file(path: Path) -> Path:
    """A network file whose only authority is a key no node knows, reachable nowhere."""
    authority = Identity.generate().ed25519_public_key.hex()
    document = {
        "version": 1,
        "name": "nowhere",
        "period_s": 60,
        "valid_periods": 24,
        "authorities": [
            {"name": "a", "ed25519": authority, "http": "127.0.0.1:9", "link": "127.0.0.1:9"}
        ],
    }
    path.write_text(json.dumps(document))
    return path


def _ok(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = _veil(*args, stdin=stdin, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _alice_and_bob(tmp_path: Path, seeds: list[str]) -> tuple[Path, Path, str, str, list[str]]:
    """Two new accounts named Alice and Bob: their homes, Session IDs, and the network options."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    _ok("init", "--home", str(alice), "--name", "Alice")
    _ok("init", "--home", str(bob), "--name", "Bob")
    return alice, bob, _session_id(alice), _session_id(bob), _network(seeds)


def test_a_first_message_is_a_request_then_flows_after_accept(
    tmp_path: Path, seeds: list[str]
) -> None:
    alice, bob, a_id, b_id, net = _alice_and_bob(tmp_path, seeds)
    assert _ok("send", b_id, "hello Bob", "--home", str(alice), *net) == "sent\n"
    _ok("send", b_id, "--home", str(alice), *net, stdin="from stdin\n")
    inbox = _ok("inbox", "--home", str(bob), *net)
    assert "1 message request(s)" in inbox
    assert "hello Bob" not in inbox  # held until accepted
    requests = _ok("requests", "--home", str(bob), *net)
    assert f"{a_id} (Alice): 2 message(s)" in requests
    assert requests.index("hello Bob") < requests.index("from stdin")
    accepted = _ok("accept", a_id, "--home", str(bob), *net)
    assert "hello Bob" in accepted
    assert "no message requests" in _ok("requests", "--home", str(bob), *net)
    assert "accepted your message request" in _ok("inbox", "--home", str(alice), *net)
    # Bob is away while Alice writes three more; back, he reads them once, in order.
    for text in ("one", "two", "three"):
        _ok("send", b_id, text, "--home", str(alice), *net)
    inbox = _ok("inbox", "--home", str(bob), *net)
    assert inbox.index("one") < inbox.index("two") < inbox.index("three")
    assert f"{a_id} (Alice)" in inbox
    assert "no new messages" in _ok("inbox", "--home", str(bob), *net)
    _ok("send", a_id, "hi Alice", "--home", str(bob), *net)
    assert "hi Alice" in _ok("inbox", "--home", str(alice), *net)
    assert f"{b_id} (Bob)" in _ok("contacts", "--home", str(alice), *net)
    # Both sides show the same safety number.
    assert _ok("safety-number", b_id, "--home", str(alice)) == _ok(
        "safety-number", a_id, "--home", str(bob)
    )


def test_a_second_device_sees_what_the_first_sent(tmp_path: Path, seeds: list[str]) -> None:
    phone, laptop, bob = tmp_path / "phone", tmp_path / "laptop", tmp_path / "bob"
    created = _ok("init", "--home", str(phone), "--name", "Alice")
    phrase = created.split("Recovery phrase:")[1].split("\n\n")[1].strip()
    _ok("init", "--home", str(bob))
    net = _network(seeds)
    _ok("inbox", "--home", str(phone), *net)  # the phone has been online: the account is known
    linked = _ok(
        "link", "--home", str(laptop), "--device-name", "laptop", *net, stdin=phrase + "\n"
    )
    assert "2 device(s)" in linked
    assert _session_id(laptop) == _session_id(phone)
    assert "(Alice)" in _ok("whoami", "--home", str(laptop))  # the name came with the config
    b_id = _session_id(bob)
    _ok("send", b_id, "sent from the phone", "--home", str(phone), *net)
    history = _ok("history", b_id, "--home", str(laptop), *net)
    assert "you: sent from the phone" in history
    assert b_id in _ok("contacts", "--home", str(laptop), *net)
    devices = _ok("devices", "--home", str(laptop), *net)
    assert len(devices.splitlines()) == 2
    assert "laptop" in devices
    assert "(this device)" in devices
    _ok("name", "Alice L.", "--home", str(laptop), *net)
    _ok("inbox", "--home", str(phone), *net)
    assert "(Alice L.)" in _ok("whoami", "--home", str(phone))
    # Bob hears from both devices as one account.
    _ok("send", b_id, "and from the laptop", "--home", str(laptop), *net)
    requests = _ok("requests", "--home", str(bob), *net)
    assert "2 message(s)" in requests
    assert "(Alice L.)" in requests


def test_a_closed_group_from_the_command_line(tmp_path: Path, seeds: list[str]) -> None:
    """Alice creates a group with Bob and Carol; they accept and talk; Dave, not invited, has no
    group to read; Alice removes Carol, who keeps the old history and reads nothing after it."""
    alice, bob, a_id, b_id, net = _alice_and_bob(tmp_path, seeds)
    carol, dave = tmp_path / "carol", tmp_path / "dave"
    _ok("init", "--home", str(carol), "--name", "Carol")
    _ok("init", "--home", str(dave), "--name", "Dave")
    c_id = _session_id(carol)
    created = _ok("group", "create", "hikers", b_id, c_id, "--home", str(alice), *net)
    gid = created.split()[1]
    assert gid.startswith("03")
    assert len(gid) == 66
    assert "invited 2 member(s)" in created

    inbox = _ok("inbox", "--home", str(bob), *net)
    assert "invited you to the group 'hikers'" in inbox
    assert f"veil group accept {gid}" in inbox
    assert gid in _ok("groups", "--home", str(bob), *net)  # listed as an invitation
    joined = _ok("group", "accept", gid[:12], "--home", str(bob), *net)  # a prefix will do
    assert f"joined {gid}  hikers" in joined
    _ok("inbox", "--home", str(carol), *net)
    _ok("group", "accept", gid, "--home", str(carol), *net)

    _ok("send", gid, "hello hikers", "--home", str(alice), *net)
    _ok("send", gid[:10], "hi from bob", "--home", str(bob), *net)
    inbox = _ok("inbox", "--home", str(carol), *net)
    assert "── hikers" in inbox
    assert inbox.index("Alice: hello hikers") < inbox.index("Bob: hi from bob")
    _ok("send", gid, "carol here", "--home", str(carol), *net)
    chatted = _ok("chat", gid, "--home", str(bob), *net, stdin="typed in chat\n/quit\n")
    assert "Alice: hello hikers" in chatted  # the group's recent messages first
    history = _ok("history", gid, "--home", str(alice), *net)
    assert [line.split("] ", 1)[1] for line in history.splitlines()] == [
        "you: hello hikers",
        "Bob: hi from bob",
        "Carol: carol here",
        "Bob: typed in chat",
    ]
    info = _ok("group", "info", gid, "--home", str(bob), *net)
    assert f"admin   {a_id} (Alice)" in info
    assert f"member  {b_id} (Bob)  (you)" in info
    assert "your role: member" in info
    assert "3 member(s), you: admin" in _ok("groups", "--home", str(alice), *net)

    # Dave was not invited: no group to read or write.
    refused = _veil("history", gid, "--home", str(dave), *net)
    assert refused.returncode == 1
    assert "names no group" in refused.stderr
    refused = _veil("group", "remove", gid, a_id, "--home", str(bob), *net)
    assert refused.returncode == 1
    assert "only an admin" in refused.stderr

    removed = _ok("group", "remove", gid, c_id, "--home", str(alice), *net)
    assert "new key" in removed
    _ok("send", gid, "after carol", "--home", str(alice), *net)
    assert "you were removed from the group" in _ok("inbox", "--home", str(carol), *net)
    carol_history = _ok("history", gid, "--home", str(carol), *net)
    assert "hello hikers" in carol_history
    assert "after carol" not in carol_history
    bob_inbox = _ok("inbox", "--home", str(bob), *net)
    assert "after carol" in bob_inbox
    assert f"{c_id} (Carol) was removed from the group" in bob_inbox
    assert "2 member(s)" in _ok("groups", "--home", str(alice), *net)


def test_chat_shows_incoming_messages_as_they_come(tmp_path: Path, seeds: list[str]) -> None:
    alice, bob, a_id, b_id, net = _alice_and_bob(tmp_path, seeds)
    _ok("send", b_id, "are you there?", "--home", str(alice), *net)
    _ok("accept", a_id, "--home", str(bob), *net)
    chat = subprocess.Popen(
        [sys.executable, "-m", "veil", "chat", a_id, "--poll", "0.3", "--home", str(bob), *net],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout, stdin = chat.stdout, chat.stdin
    assert stdout is not None
    assert stdin is not None

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not shown; chat printed {seen}")

    try:
        wait_for("Alice: are you there?")  # the conversation so far
        stdin.write("yes, here\n")
        stdin.flush()
        deadline = time.monotonic() + 60
        while "yes, here" not in (inbox := _ok("inbox", "--home", str(alice), *net)):
            assert time.monotonic() < deadline, inbox
        _ok("send", b_id, "live reply", "--home", str(alice), *net)
        wait_for("Alice: live reply")
        stdin.write("/quit\n")
        stdin.flush()
        assert chat.wait(timeout=30) == 0
        assert chat.stderr is not None
        assert "Traceback" not in chat.stderr.read()
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
        for pipe in (chat.stdin, chat.stdout, chat.stderr):
            if pipe is not None:
                pipe.close()


def test_a_sealed_key_needs_its_passphrase(tmp_path: Path) -> None:
    home = tmp_path / "sealed"
    secret = {**os.environ, "VEIL_PASSPHRASE": "correct horse"}
    created = _ok("init", "--home", str(home), "--passphrase", env=secret)
    phrase = created.split("Recovery phrase:")[1].split("\n\n")[1].strip()
    session_id = created.split("Your Session ID: ")[1].split()[0]
    assert Identity.from_mnemonic(phrase).seed not in (home / "identity.key").read_bytes()
    locked = _veil(
        "whoami",
        "--home",
        str(home),
        env={k: v for k, v in secret.items() if k != "VEIL_PASSPHRASE"},
    )
    assert locked.returncode == 1
    assert "VEIL_PASSPHRASE" in locked.stderr
    wrong = _veil("whoami", "--home", str(home), env={**secret, "VEIL_PASSPHRASE": "wrong"})
    assert wrong.returncode == 1
    assert "passphrase is wrong" in wrong.stderr
    assert "wrong" not in wrong.stderr.replace("passphrase is wrong", "")
    assert _ok("whoami", "--home", str(home), env=secret).split()[0] == session_id
    changed = {**secret, "VEIL_NEW_PASSPHRASE": "battery staple"}
    _ok("passphrase", "--home", str(home), env=changed)
    assert _veil("whoami", "--home", str(home), env=secret).returncode == 1
    secret["VEIL_PASSPHRASE"] = "battery staple"
    _ok("passphrase", "--remove", "--home", str(home), env=secret)
    assert (home / "identity.key").read_bytes() == Identity.from_mnemonic(phrase).seed
    assert _ok("whoami", "--home", str(home)).split()[0] == session_id


def test_the_qr_code_png_holds_the_session_id(tmp_path: Path) -> None:
    png_path = tmp_path / "id.png"
    out = _ok("init", "--home", str(tmp_path / "q"), "--qr-png", str(png_path))
    session_id = out.split("Your Session ID: ")[1].split()[0]
    width, height, rows, _info = png.Reader(bytes=png_path.read_bytes()).read()
    pixels = [list(row) for row in rows]
    code = qrcode.QRCode(box_size=8, border=4)
    code.add_data(session_id)
    code.make(fit=True)
    matrix = code.get_matrix()  # includes the border
    assert width == height == len(matrix) * 8
    for y, line in enumerate(matrix):
        for x, dark in enumerate(line):
            assert (pixels[y * 8 + 4][x * 8 + 4] == 0) == dark


def test_bad_input_gives_a_clear_message_and_a_non_zero_exit(tmp_path: Path) -> None:
    home = tmp_path / "me"
    assert _veil("init", "--home", str(home)).returncode == 0
    nowhere = ["--seed", "127.0.0.1:9", "--network", str(_lone_network_file(tmp_path / "n.json"))]
    malformed = _veil("send", "05nothex", "hi", "--home", str(home), *nowhere)
    assert malformed.returncode == 1
    assert "not a Session ID" in malformed.stderr
    unreachable = _veil("send", "05" + "ab" * 32, "hi", "--home", str(home), *nowhere)
    assert unreachable.returncode == 1
    assert "cannot reach 127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in malformed.stderr + unreachable.stderr
    assert _veil("frobnicate").returncode == 2
    nothing = _veil("unsend", "05" + "ab" * 32, "--home", str(home), *nowhere)
    assert nothing.returncode == 1
    assert "Traceback" not in nothing.stderr
    bad_timer = _veil(
        "send",
        "05" + "ab" * 32,
        "x",
        "--disappear",
        "after-lunch:5m",
        "--home",
        str(home),
        *nowhere,
    )
    assert bad_timer.returncode == 1
    assert "--disappear" in bad_timer.stderr
    no_account = _veil("whoami", "--home", str(tmp_path / "nobody"))
    assert no_account.returncode == 1
    assert "veil init" in no_account.stderr


def test_chat_on_a_terminal_prints_incoming_messages_above_the_prompt(
    tmp_path: Path, seeds: list[str]
) -> None:
    alice, bob, a_id, b_id, net = _alice_and_bob(tmp_path, seeds)
    _ok("send", b_id, "ping", "--home", str(alice), *net)
    _ok("accept", a_id, "--home", str(bob), *net)
    controller, terminal = pty.openpty()
    chat = subprocess.Popen(
        [sys.executable, "-m", "veil", "chat", a_id, "--poll", "0.3", "--home", str(bob), *net],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"},
    )
    os.close(terminal)
    screen = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 4096):
                screen.extend(chunk)
                if b"\x1b[6n" in chunk:  # answer the cursor position request as a terminal does
                    os.write(controller, b"\x1b[1;1R")

    threading.Thread(target=read, daemon=True).start()

    def shown(text: str) -> None:
        deadline = time.monotonic() + 60
        while text.encode() not in screen:
            assert time.monotonic() < deadline, f"{text!r} not on screen: {bytes(screen)!r}"
            time.sleep(0.1)

    try:
        shown("to Alice>")
        os.write(controller, b"typed at a terminal\r")
        deadline = time.monotonic() + 60
        while "typed at a terminal" not in (inbox := _ok("inbox", "--home", str(alice), *net)):
            assert time.monotonic() < deadline, inbox
        os.write(controller, b"half a li")  # Bob is typing when Alice's message arrives
        _ok("send", b_id, "while you type", "--home", str(alice), *net)
        shown("Alice: while you type")
        tail = bytes(screen).rsplit(b"Alice: while you type", 1)[1]
        assert b"to Alice>" in tail  # the prompt is drawn again below the message …
        assert b"half a li" in tail  # … with what was being typed
        os.write(controller, b"\x15/quit\r")  # Ctrl-U clears the line first
        assert chat.wait(timeout=30) == 0
        assert b"Traceback" not in screen
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
        os.close(controller)
