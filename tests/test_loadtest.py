"""The Locust load test (``loadtest/locustfile.py``) runs clean against a real devnet.

One devnet for the module: ``veil devnet up --detach --nodes 6`` (3 authorities, 6 nodes) in a
temporary ``.devnet`` directory, brought down in the fixture's ``finally``. With 6 nodes and swarms
of 5, an account's swarm is a proper subset of the nodes, so it depends on the consensus's
placements: swarms computed from the node ids alone would send stores to nodes that answer 421.

- The load test's directory, built from a seed's ``/consensus`` checked against the devnet's
  network file, computes every account's swarm as the nodes do (``get_swarm``, in the same order);
  a consensus that lacks a majority of the authorities' signatures is refused.
- A short headless Locust run as a subprocess (so gevent's monkey-patching stays out of this
  process), from the directory that holds ``.devnet`` and with no ``VEIL_*`` settings, so it finds
  the network file and the seeds as the README's devnet instructions do: it must exit 0 having
  made more than 20 requests, none of them failed and no "wrong swarm" answer, and the users' polls
  must have found messages the others sent them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from veil.identity import Identity
from veil.protocol.network_file import load_network_file
from veil.protocol.swarms import SwarmMap

# Locust must not be imported here: importing it monkey-patches the process with gevent (threads
# become greenlets), which would break every asyncio test that runs after this one. It runs as a
# subprocess; only its presence is checked.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)

LOADTEST = Path(__file__).resolve().parent.parent / "loadtest"
LOCUSTFILE = LOADTEST / "locustfile.py"
NODES = 6
UP_TIMEOUT_S = 60
VEIL_SETTINGS = ("VEIL_NETWORK", "VEIL_SEEDS", "VEIL_SWARM_SIZE", "VEIL_WAIT_S")

sys.path.insert(0, str(LOADTEST))
import veil_locust as vl  # noqa: E402  (beside the locustfile, which imports it the same way)


def _veil(timeout: float, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veil", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _get(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as answer:
        return json.loads(answer.read())


def _rpc(address: str, method: str, params: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"http://{address}{vl.RPC_PATH}",
        data=json.dumps({"method": method, "params": params}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The directory that holds the devnet's ``.devnet`` (where Locust runs from)."""
    base = tmp_path_factory.mktemp("loadtest")
    root = base / ".devnet"
    try:
        up = _veil(
            UP_TIMEOUT_S + 30,
            *("devnet", "up", "--detach", "--nodes", str(NODES)),
            *("--dir", str(root), "--timeout", str(UP_TIMEOUT_S)),
        )
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        yield base
    finally:
        if (root / "devnet.json").exists():
            down = _veil(60, "devnet", "down", "--dir", str(root))
            assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"


def test_the_load_tests_swarms_are_the_nodes_swarms(devnet: Path) -> None:
    root = devnet / ".devnet"
    env = {"VEIL_NETWORK": str(root / "network.json")}
    network = vl.load_network(env)
    assert network == load_network_file(root / "network.json")
    seeds = vl.resolve_seeds(None, env)  # the seeds of the devnet.json beside the network file
    assert seeds == json.loads((root / "devnet.json").read_text())["seeds"]
    assert vl.swarm_size(env) == 5
    document = _get(seeds[0], vl.CONSENSUS_PATH)
    directory = vl.Directory(vl.verify_consensus(document, network, vl.now_ms()), 5)
    assert len(directory.nodes) == NODES
    assert len(directory.pick_guards(random.Random(1))) == vl.GUARDS

    by_ids_alone = SwarmMap(list(directory.nodes), 5)
    differs = 0
    for _ in range(8):
        account = Identity.generate().session_id
        swarm = [a.ed25519.hex() for a in directory.swarm(bytes.fromhex(account))]
        assert len(swarm) == 5
        for node in (seeds[0], seeds[1]):
            named = _rpc(node, "get_swarm", {"pubkey": account})["snodes"]
            assert [a["pubkey_ed25519"] for a in named] == swarm
        differs += [i.hex() for i in by_ids_alone.swarm(bytes.fromhex(account))] != swarm
    assert differs  # the placements made a difference: the check above checked something

    signatures = document["signatures"]
    one = dict(list(signatures.items())[:1])
    with pytest.raises(ValueError, match="signed by 1 of the network's 3 authorities"):
        vl.verify_consensus({**document, "signatures": one}, network, vl.now_ms())


def test_a_short_headless_run_against_a_devnet_has_no_failures(devnet: Path) -> None:
    stats_prefix = devnet / "stats"
    env = {k: v for k, v in os.environ.items() if k not in VEIL_SETTINGS}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
            *("-u", "4", "-r", "4", "-t", "10s", "--stop-timeout", "5", "--only-summary"),
            *("--json-file", str(stats_prefix)),
        ],
        cwd=devnet,
        env=env,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, report
    entries = json.loads((devnet / "stats.json").read_text())
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    names = {e["name"] for e in entries}
    assert requests > 20, report
    assert failures == 0, report
    assert {"consensus", "circuit create", "onion store", "onion retrieve"} <= names, report
    assert not any("wrong swarm" in name for name in names), report  # placements were used
    summary = re.search(
        r"veil: (\d+) messages stored, (\d+) seen by their recipients, (\d+) opened",
        done.stderr,
    )
    assert summary, report
    assert int(summary[1]) > 0, report
    assert int(summary[2]) > 0, report  # the recipients' polls found messages sent to them
    assert int(summary[3]) == int(summary[2]), report  # and the messenger opened each one
