"""`veil node init` / `veil node run` as a real process: files, modes, and a graceful stop."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from node_helpers import free_port
from veil.node.config import load_config


def _veil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _info(port: int) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/storage_rpc/v1",
        data=json.dumps({"method": "info", "params": {}}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=2) as answer:
        body: dict[str, object] = json.loads(answer.read())
        return body


def test_init_writes_a_private_key_and_a_config_with_every_limit(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    done = _veil("node", "init", "--data-dir", str(data_dir), "--listen", "127.0.0.1:4567")
    assert done.returncode == 0, done.stderr
    key = data_dir / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    config = load_config(data_dir)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 4567)
    text = (data_dir / "node.toml").read_text()
    for name in ("max_body_bytes", "account_max_messages", "storage_max_bytes", "max_ttl_ms"):
        assert f"\n{name} = " in text
    again = _veil("node", "init", "--data-dir", str(data_dir))
    assert again.returncode == 1
    assert "not overwriting" in again.stderr


def test_run_without_init_is_a_one_line_error(tmp_path: Path) -> None:
    done = _veil("node", "run", "--data-dir", str(tmp_path / "missing"))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "veil node init" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_node_gracefully_within_five_seconds(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "node"
    port, link_port = free_port(), free_port()
    assert _veil(
        "node",
        "init",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--link-listen",
        f"127.0.0.1:{link_port}",
    )
    log = (tmp_path / "node.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "veil", "node", "run", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert "timestamp" in _info(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "node.log").read_text().splitlines()]
    assert [entry["msg"] for entry in lines][-2:] == ["stopping", "node stopped"]
    assert all("127.0.0.1:" not in json.dumps(e) or e["msg"] == "node listening" for e in lines)
