"""`veil devnet up / status / down`: real authority and node processes on loopback, started and
always stopped."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from veil.authority.config import load_config as load_authority_config
from veil.cli import main
from veil.devnet import network
from veil.devnet.probe import metrics, node_keys, rpc
from veil.identity import Identity
from veil.node.config import load_config
from veil.protocol.consensus import SignedConsensus
from veil.protocol.network_file import load_network_file
from veil.protocol.storage_rpc import verify_swarm


def _veil(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in {"Z", "X"}


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [pid for pid in pids if _alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if _alive(pid)]
    return left


def _recorded_pids(root: Path) -> list[int]:
    try:
        state = json.loads((root / "devnet.json").read_text())
    except (OSError, ValueError):
        return []
    records = [*state.get("authorities", []), *state["nodes"]]
    return [record["pid"] for record in records if record["pid"] is not None]


def _kill_leftovers(root: Path, pids: list[int]) -> None:
    """Last resort: SIGKILL the given (and recorded) node processes of this devnet still running."""
    for pid in {*pids, *_recorded_pids(root)}:
        with contextlib.suppress(OSError):
            if str(root) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _cleanup(root: Path, pids: list[int]) -> Iterator[None]:
    try:
        yield
    finally:
        _kill_leftovers(root, pids)


def _get(address: str, path: str) -> bytes:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        assert answer.status == 200, answer.status
        return answer.read()
    finally:
        connection.close()


def _status(root: Path) -> dict[str, Any]:
    done = _veil("devnet", "status", "--dir", str(root), "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


# --- usage and missing devnets (in process, no node started) -------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["devnet"],
        ["devnet", "up", "--nodes", "0"],
        ["devnet", "up", "--nodes", "many"],
        ["devnet", "up", "--nodes", "101"],
        ["devnet", "up", "--timeout", "-1"],
        ["devnet", "status", "--verbose"],
        ["devnet", "down", "--dir", ""],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["status", "down"])
def test_no_devnet_is_a_one_line_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devnet", command, "--dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no devnet in" in err


def test_up_refuses_a_directory_holding_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["devnet", "up", "--detach", "--dir", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_directories_keep_their_keys_and_get_devnet_settings(tmp_path: Path) -> None:
    first = network.prepare_nodes(tmp_path, 4)
    again = network.prepare_nodes(tmp_path, 4, guard_uptime_s=30.0)
    assert [n.ed25519 for n in first.nodes] == [n.ed25519 for n in again.nodes]
    assert [a.ed25519 for a in first.authorities] == [a.ed25519 for a in again.authorities]
    addresses = [r.http for r in again.processes()] + [r.link for r in again.processes()]
    assert len(set(addresses)) == 14
    assert again.seeds == [again.nodes[0].http, again.nodes[1].http]
    # every node in a /24 of its own, so the per-subnet cap keeps its real default
    assert len({n.http.rsplit(".", 1)[0] for n in again.nodes}) == 4
    network_file = load_network_file(again.network_path)
    assert [a.ed25519.hex() for a in network_file.authorities] == [
        a.ed25519 for a in again.authorities
    ]
    assert [f"{a.http[0]}:{a.http[1]}" for a in network_file.authorities] == [
        a.http for a in again.authorities
    ]
    config = load_config(again.nodes[2].data_dir)
    assert config.network.min_swarm_size == 3
    assert config.network_path == again.network_path
    authority = load_authority_config(again.authorities[0].data_dir)
    assert authority.admission.guard_uptime_s == 30.0
    assert authority.admission.max_nodes_per_subnet == 2
    assert len({n.ed25519 for n in network.prepare_nodes(tmp_path / "two", 2).nodes}) == 2
    assert load_config(tmp_path / "two" / "node0").network.min_swarm_size == 2


# --- a detached devnet ---------------------------------------------------------------------------


def test_detached_devnet_up_status_store_down(tmp_path: Path) -> None:
    root = tmp_path / "net"
    pids: list[int] = []
    with _cleanup(root, pids):
        up = _veil("devnet", "up", "--detach", "--nodes", "4", "--dir", str(root))
        pids += _recorded_pids(root)
        assert up.returncode == 0, up.stderr
        assert up.stdout.count("\n") == 1
        assert "lists all 4 nodes" in up.stdout
        assert "seeds 127.0.1.1:" in up.stdout

        report = _status(root)
        assert report["dir"] == str(root)
        assert report["running"] == 4
        nodes = report["nodes"]
        assert [n["index"] for n in nodes] == [0, 1, 2, 3]
        assert all(n["running"] and n["view"] == 4 for n in nodes)
        assert [a["running"] for a in report["authorities"]] == [True] * 3
        pids_seen = [n["pid"] for n in nodes] + [a["pid"] for a in report["authorities"]]
        assert sorted(pids_seen) == sorted(pids)
        assert report["seeds"] == [nodes[0]["http"], nodes[1]["http"]]
        consensus = report["consensus"]
        assert consensus["admitted"] == 4
        assert consensus["guards"] == 4
        assert consensus["signatures"] >= 2
        assert consensus["authorities"] == 3
        # what the nodes hold passes a client's check against the network file
        network_file = load_network_file(Path(report["network_file"]))
        served = json.loads(_get(nodes[0]["http"], "/consensus"))
        signed = SignedConsensus.from_json(served, network_file)
        everyone = {n["ed25519"] for n in nodes}
        assert {e.announcement.ed25519.hex() for e in signed.consensus.nodes} == everyone
        for node in nodes:
            assert node["http"].startswith(f"127.0.{node['index'] + 1}.1:")
            assert node_keys(node["http"]) == everyone
            assert rpc(node["http"], "info", {})["x25519"] == node["x25519"]
        text = _veil("devnet", "status", "--dir", str(root))
        assert "signed by" in text.stdout
        assert "4 nodes admitted" in text.stdout

        # 4 nodes, swarm size 5: every node serves every account; namespace 0 needs no signature
        store = {
            "pubkey": Identity.generate().session_id,
            "timestamp": time.time_ns() // 1_000_000,
            "ttl": 60_000,
            "data": base64.b64encode(b"hello devnet").decode(),
        }
        answer = rpc(nodes[2]["http"], "store", store, timeout=10)
        assert answer["hash"]
        members = [bytes.fromhex(key) for key in sorted(everyone)]
        assert len(verify_swarm("store", store, answer, members)) >= 3  # signed by W members
        held = sum(metrics(n["http"])["veil_messages_stored"] for n in nodes)
        assert held >= 3

        again = _veil("devnet", "up", "--detach", "--nodes", "4", "--dir", str(root))
        assert again.returncode == 1
        assert "already running" in again.stderr
        assert again.stderr.count("\n") == 1

        down = _veil("devnet", "down", "--dir", str(root))
        assert down.returncode == 0, down.stderr
        assert "stopped 4 nodes and 3 authorities" in down.stdout
        assert _wait_gone(pids, 10) == []

        after = _status(root)
        assert after["running"] == 0
        assert not any(n["running"] or n["pid"] for n in after["nodes"])
        assert not any(a["running"] or a["pid"] for a in after["authorities"])
        assert _veil("devnet", "down", "--dir", str(root)).returncode == 0


# --- the foreground devnet -----------------------------------------------------------------------


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _expect(lines: queue.Queue[str], text: str, seconds: float, seen: list[str]) -> str:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} in {seconds} s; got {seen!r}")


def test_foreground_devnet_prints_progress_and_stops_on_sigint(tmp_path: Path) -> None:
    root = tmp_path / "fg"
    pids: list[int] = []
    command = ["devnet", "up", "--nodes", "3", "--dir", str(root), "--interval", "0.2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "veil", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with _cleanup(root, pids):
            assert process.stdout is not None
            lines: queue.Queue[str] = queue.Queue()
            reader = threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True)
            reader.start()
            seen: list[str] = []
            _expect(lines, "lists all 3 nodes", 40, seen)
            pids += _recorded_pids(root)
            assert len(pids) == 6
            assert all(_alive(pid) for pid in pids)
            _expect(lines, "devnet 3/3 up, views 3-3 of 3", 10, seen)
            _expect(lines, "devnet 3/3 up", 10, seen)

            up_again = _veil("devnet", "up", "--detach", "--dir", str(root))
            assert up_again.returncode == 1
            assert "already running" in up_again.stderr

            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=20) == 0
            assert process.stderr is not None
            err = process.stderr.read()
            assert "stopped 6 processes" in err
            assert _wait_gone(pids, 1) == []
            assert _recorded_pids(root) == []
            reader.join(5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
