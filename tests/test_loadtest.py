"""The Locust load test (``loadtest/locustfile.py``) runs clean against a real 4-node cluster.

Four ``veil node run`` processes on loopback (node 0 the seed of the others, gossiping every 0.2 s),
then a short headless Locust run as a subprocess (so gevent's monkey-patching stays out of this
process): it must exit 0 having made more than 20 requests, none of them failed, and the users'
polls must have found messages the others sent them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node_helpers import free_port
from veil.node.config import NetworkSettings, NodeConfig, StoreSettings, render_config
from veil.node.identity import create_node_key

# Locust must not be imported here: importing it monkey-patches the process with gevent (threads
# become greenlets), which would break every asyncio test that runs after this one. It runs as a
# subprocess; only its presence is checked.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtest" / "locustfile.py"
NODES = 4


def _rpc(port: int, method: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/storage_rpc/v1",
        data=json.dumps({"method": method, "params": {}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=2) as answer:
        return json.loads(answer.read())


def _init_node(data_dir: Path, port: int, seeds: tuple[str, ...]) -> None:
    data_dir.mkdir(parents=True)
    config = NodeConfig(
        data_dir=data_dir,
        listen_port=port,
        link_port=free_port(),
        seeds=seeds,
        store=StoreSettings(map_size_bytes=16 * 1024 * 1024),
        network=NetworkSettings(gossip_interval_s=0.2),
    )
    create_node_key(config.key_path)
    (data_dir / "node.toml").write_text(render_config(config), encoding="utf-8")


def _wait_for_full_views(ports: list[int], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 20
    for port, proc in zip(ports, procs, strict=True):
        while True:
            try:
                if len(_rpc(port, "get_nodes")["nodes"]) == NODES:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"the node on port {port} exited"
            assert time.monotonic() < deadline, f"the node on port {port} never saw {NODES} nodes"
            time.sleep(0.05)


def test_a_short_headless_run_against_four_nodes_has_no_failures(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(NODES)]
    seed = f"127.0.0.1:{ports[0]}"
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i, port in enumerate(ports):
            data_dir = tmp_path / f"node{i}"
            _init_node(data_dir, port, () if i == 0 else (seed,))
            log = (tmp_path / f"node{i}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "veil", "node", "run", "--data-dir", str(data_dir)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
        _wait_for_full_views(ports, procs)

        stats_prefix = tmp_path / "stats"
        env = {**os.environ, "VEIL_SEEDS": ",".join(f"127.0.0.1:{p}" for p in ports)}
        env.pop("VEIL_WAIT_S", None)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "-u",
                "4",
                "-r",
                "4",
                "-t",
                "10s",
                "--stop-timeout",
                "5",
                "--only-summary",
                "--json-file",
                str(stats_prefix),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-6000:]}"
        assert done.returncode == 0, report
        entries = json.loads((tmp_path / "stats.json").read_text())
        requests = sum(e["num_requests"] for e in entries)
        failures = sum(e["num_failures"] for e in entries)
        names = {e["name"] for e in entries}
        assert requests > 20, report
        assert failures == 0, report
        assert {"get_nodes", "onion store", "onion retrieve"} <= names, report
        summary = re.search(
            r"veil: (\d+) messages stored, (\d+) seen by their recipients, (\d+) opened",
            done.stderr,
        )
        assert summary, report
        assert int(summary[1]) > 0, report
        assert int(summary[2]) > 0, report  # the recipients' polls found messages sent to them
        assert int(summary[3]) == int(summary[2]), report  # and the messenger opened each one
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
        for log in logs:
            log.close()
