"""Communities from the command line, all real processes: a devnet whose nodes allow two
community servers as external services, the two servers (``veil community init|add-room|run``),
and users who join through links, post, reply, react and read; a moderator deletes and bans; one
user joins both communities and the two servers know it by different blinded IDs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from veil.devnet.network import free_ports
from veil.protocol.blinding import session_id_matches
from veil.protocol.community import parse_link


def _veil(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _ok(*args: str) -> str:
    done = _veil(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.links: list[str] = []
        self.servers: list[Path] = []
        self.network: list[str] = []

    def net(self) -> list[str]:
        return self.network


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("community")
    world = Setup(root)
    ports = free_ports(2)
    processes: list[subprocess.Popen[bytes]] = []
    devnet = root / "devnet"
    try:
        for i, port in enumerate(ports):
            data = root / f"server{i}"
            _ok("community", "init", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}")
            added = _ok("community", "add-room", "--data-dir", str(data), "lobby", f"Lobby {i}")
            link = next(line.split()[-1] for line in added.splitlines() if "join link" in line)
            world.links.append(link)
            world.servers.append(data)
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "veil", "community", "run", "--data-dir", str(data)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        # The servers must hold their ports before the devnet picks its own free ports, or a
        # devnet process may be handed a port a starting server is about to bind.
        for port, process in zip(ports, processes, strict=True):
            _wait_listening(port, process)
        allow = [a for port in ports for a in ("--external-service", f"http://127.0.0.1:{port}/")]
        up = _veil("devnet", "up", "--detach", "--nodes", "4", "--dir", str(devnet), *allow)
        assert up.returncode == 0, up.stderr
        seeds = json.loads((devnet / "devnet.json").read_text())["seeds"]
        world.network = [a for s in seeds for a in ("--seed", s)] + [
            "--network",
            str(devnet / "network.json"),
        ]
        yield world
    finally:
        _veil("devnet", "down", "--dir", str(devnet))
        for process in processes:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"community server on port {port} exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"community server on port {port} did not listen in time")


def _user(setup: Setup, name: str) -> tuple[Path, str]:
    home = setup.root / name.lower()
    _ok("init", "--home", str(home), "--name", name)
    session_id = _ok("whoami", "--home", str(home)).split()[0]
    return home, session_id


def _blinded(setup: Setup, home: Path, url_part: str) -> str:
    listed = _ok("communities", "--home", str(home), *setup.net())
    line = next(line for line in listed.splitlines() if url_part in line and "you: " in line)
    return line.split("you: ")[1].strip()


def test_users_post_reply_react_a_moderator_deletes_and_bans(setup: Setup) -> None:
    net = setup.net()
    (alice, _), (bob, bob_id), (carol, _) = (_user(setup, n) for n in ("Alice", "Bob", "Carol"))
    for home in (alice, bob, carol):
        joined = _ok("community", "join", setup.links[0], "--home", str(home), *net)
        assert "joined Lobby 0" in joined
    assert _ok("post", "lobby", "hello everyone", "--home", str(alice), *net).startswith("posted #")
    history = _ok("history", "lobby", "--home", str(bob), *net)
    first = history.split("[", 1)[1].split("]", 1)[0]
    assert "Alice (25" in history  # the display name and the blinded ID, never a Session ID
    assert bob_id not in history
    _ok("post", "lobby", "hi alice", "--reply-to", first, "--home", str(bob), *net)
    _ok("community", "react", "lobby", first, "👍", "--home", str(carol), *net)
    inbox = _ok("inbox", "--home", str(carol), *net)
    assert "── lobby" in inbox
    assert "Bob (25" in inbox
    history = _ok("history", "lobby", "--home", str(alice), *net)
    assert "hello everyone  👍 1" in history
    assert f"↪ #{first} hi alice" in history

    # The operator makes Alice a moderator; she deletes Bob's post and bans Carol.
    alice_blinded = _blinded(setup, alice, "127.0.0.1")
    _ok(
        "community",
        "add-moderator",
        "--data-dir",
        str(setup.servers[0]),
        alice_blinded,
        "--room",
        "lobby",
    )
    bob_post = next(
        line.split("[", 1)[1].split("]", 1)[0]
        for line in history.splitlines()
        if "hi alice" in line
    )
    _ok("community", "delete", "lobby", bob_post, "--home", str(alice), *net)
    carol_blinded = _blinded(setup, carol, "127.0.0.1")
    _ok("community", "ban", "lobby", carol_blinded, "--home", str(alice), *net)
    refused = _veil("post", "lobby", "can I still post?", "--home", str(carol), *net)
    assert refused.returncode == 1
    assert "banned" in refused.stderr
    assert refused.stderr.count("\n") == 1
    history = _ok("history", "lobby", "--home", str(bob), *net)
    assert "hi alice" not in history
    assert "can I still post" not in history
    # Bob is no moderator.
    refused = _veil("community", "ban", "lobby", alice_blinded, "--home", str(bob), *net)
    assert refused.returncode == 1
    # A direct message through the server's inbox, end to end between the blinded IDs.
    _ok("community", "dm", "lobby", alice_blinded, "just between us", "--home", str(bob), *net)
    inbox = _ok("inbox", "--home", str(alice), *net)
    assert "── direct, Bob (25" in inbox
    assert "just between us" in inbox


def test_one_user_in_two_communities_has_two_unlinkable_ids(setup: Setup) -> None:
    net = setup.net()
    dave, dave_id = _user(setup, "Dave")
    for link in setup.links:
        _ok("community", "join", link, "--home", str(dave), *net)
    listed = _ok("communities", "--home", str(dave), *net)
    ids = {  # the server's URL → Dave's blinded ID there
        line.split()[1]: line.split("you: ")[1].strip()
        for line in listed.splitlines()
        if "you: " in line
    }
    assert len(set(ids.values())) == 2
    for parsed in map(parse_link, setup.links):
        assert session_id_matches(ids[parsed.url], dave_id, parsed.server_key)
    # What each server keeps on disk names Dave only by its blinded ID there.
    _ok(
        "post",
        "lobby@" + parse_link(setup.links[1]).server_key.hex()[:8],
        "hi",
        "--home",
        str(dave),
        *net,
    )
    for server in setup.servers:
        stored = b"".join(p.read_bytes() for p in server.iterdir() if p.is_file())
        assert dave_id[2:].encode() not in stored
    assert os.path.exists(setup.servers[1] / "community.toml")
