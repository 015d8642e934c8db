"""Creating, starting, waiting for and stopping the nodes of a devnet.

Layout of the devnet directory ``DIR``::

    DIR/devnet.json      the state file (see :mod:`veil.devnet.state`)
    DIR/devnet.lock      held (flock) by a ``veil devnet up`` while it starts or supervises nodes
    DIR/nodeK/           node K's data directory: node.key, node.toml, store/ (LMDB), node.log

Each node listens on two loopback ports (client HTTP, node links) picked free by binding
``127.0.0.1:0`` just before the nodes start (all held open together so they differ; another
program could still take one before the node binds it, and then that node exits and ``up`` says
so). Nodes 0 and 1 are the seeds every other node learns the network from. The ``[network]``
settings differ from a node's defaults only to suit a small, local network: ``min_swarm_size`` is
``min(3, N)`` (stores need that many nodes in view, as on a real network) and ``gossip_interval_s``
is 0.5 so the view converges in a second or two. ``node.toml`` is rewritten by every ``up`` (the
ports change); ``node.key`` and ``store/`` are kept, so a stopped devnet restarts with its keys and
messages. Delete ``DIR`` to start from nothing.

Nodes run as ``python -m veil node run --data-dir DIR/nodeK`` in sessions of their own
(``start_new_session``), so a Ctrl-C in the terminal reaches only ``veil devnet up``, which then
stops them; and a detached devnet survives the terminal it was started from. They are stopped with
SIGTERM (a node stops gracefully within 5 s), then SIGKILL after 10 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import veil
from veil.clock import now_ms
from veil.devnet.probe import ProbeError, in_parallel, node_keys
from veil.devnet.state import DevnetError, DevnetState, NodeRecord, ProcessRef
from veil.node.config import CONFIG_FILE, NetworkSettings, NodeConfig, StoreSettings, render_config
from veil.node.identity import create_node_key, load_node_key

__all__ = [
    "HOST",
    "Stoppable",
    "prepare_nodes",
    "start_node",
    "stop_all",
    "wait_until_converged",
]

HOST = "127.0.0.1"
LOG_FILE = "node.log"
GOSSIP_INTERVAL_S = 0.5
MAP_SIZE_BYTES = 32 * 1024 * 1024
STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0
POLL_S = 0.05


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    except OSError as exc:
        raise DevnetError(f"cannot find free loopback ports: {exc.strerror or exc}") from None
    finally:
        for sock in sockets:
            sock.close()


def prepare_nodes(root: Path, count: int) -> DevnetState:
    """Write (or rewrite) ``count`` node directories under ``root``, keeping existing keys."""
    ports = free_ports(2 * count)
    https = [f"{HOST}:{ports[2 * k]}" for k in range(count)]
    seeds = https[:2]
    network = NetworkSettings(min_swarm_size=min(3, count), gossip_interval_s=GOSSIP_INTERVAL_S)
    nodes = []
    for k in range(count):
        data_dir = root / f"node{k}"
        config = NodeConfig(
            data_dir=data_dir,
            listen_host=HOST,
            listen_port=ports[2 * k],
            link_host=HOST,
            link_port=ports[2 * k + 1],
            seeds=tuple(seed for seed in seeds if seed != https[k]),
            store=StoreSettings(map_size_bytes=MAP_SIZE_BYTES),
            network=network,
        )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            identity = (
                load_node_key(config.key_path)
                if config.key_path.exists()
                else create_node_key(config.key_path)
            )
            (data_dir / CONFIG_FILE).write_text(render_config(config), encoding="utf-8")
        except OSError as exc:
            raise DevnetError(f"cannot write {data_dir}: {exc.strerror or exc}") from None
        except ValueError as exc:  # ConfigError: an unreadable or unsafe node.key
            raise DevnetError(str(exc)) from None
        nodes.append(
            NodeRecord(
                index=k,
                data_dir=data_dir,
                http=https[k],
                link=f"{HOST}:{ports[2 * k + 1]}",
                ed25519=identity.ed25519_public_key.hex(),
                x25519=identity.x25519_public_key.hex(),
            )
        )
    return DevnetState(
        root=root,
        nodes=nodes,
        seeds=seeds,
        swarm_size=network.swarm_size,
        min_swarm_size=network.min_swarm_size,
        started_ms=now_ms(),
    )


def _child_environment() -> dict[str, str]:
    """The environment for a node: ours, with this very ``veil`` package first on the path."""
    env = dict(os.environ)
    package_root = str(Path(veil.__file__).resolve().parent.parent)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + path if path else "")
    return env


def start_node(node: NodeRecord) -> subprocess.Popen[bytes]:
    """Start ``veil node run`` for ``node`` in a session of its own, stderr appended to its log."""
    command = [sys.executable, "-m", "veil", "node", "run", "--data-dir", str(node.data_dir)]
    try:
        with (node.data_dir / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(  # noqa: S603  (our own interpreter and arguments)
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                env=_child_environment(),
            )
    except OSError as exc:
        raise DevnetError(f"cannot start node {node.index}: {exc.strerror or exc}") from None
    node.process = ProcessRef.of(process.pid)
    return process


def last_log_line(node: NodeRecord) -> str:
    """The message of the node's last log line, for an error report."""
    try:
        with (node.data_dir / LOG_FILE).open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            lines = log.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            return " ".join(line.split())[:200]
        if isinstance(entry, dict):
            parts = [str(entry.get("msg", ""))] + [
                f"{key}={value}" for key, value in entry.items() if key in {"error", "exc"}
            ]
            return " ".join(" ".join(parts).split())[:200]
    return "empty log"


def wait_until_converged(
    nodes: Sequence[NodeRecord],
    processes: Sequence[subprocess.Popen[bytes]],
    timeout_s: float,
    interrupted: Callable[[], bool],
    poll_s: float = 0.2,
) -> bool:
    """Wait until every node answers and lists all the nodes; False if interrupted first.

    Raises :class:`DevnetError` when a node exits, or at ``timeout_s``.
    """
    expected = {node.ed25519 for node in nodes}

    def view(node: NodeRecord) -> set[str] | None:
        try:
            return node_keys(node.http, timeout=1.0)
        except ProbeError:
            return None

    deadline = time.monotonic() + timeout_s
    views: list[set[str] | None] = [None] * len(nodes)
    for _ in range(int(timeout_s / poll_s) + 10):
        if interrupted():
            return False
        for node, process in zip(nodes, processes, strict=True):
            code = process.poll()
            if code is not None:
                raise DevnetError(
                    f"node {node.index} exited with code {code} while starting: "
                    f"{last_log_line(node)} (log: {node.data_dir / LOG_FILE})"
                )
        views = in_parallel(view, nodes)
        if all(seen is not None and expected <= seen for seen in views):
            return True
        if time.monotonic() >= deadline:
            break
        _sleep_unless(interrupted, poll_s)
    answering = sum(seen is not None for seen in views)
    position, lagging = next(
        (
            (i, node)
            for i, (node, seen) in enumerate(zip(nodes, views, strict=True))
            if seen is None or expected - seen
        ),
        (0, nodes[0]),
    )
    seen = views[position]
    detail = "does not answer" if seen is None else f"sees {len(seen & expected)} of {len(nodes)}"
    raise DevnetError(
        f"the devnet did not converge within {timeout_s:g} s: {answering} of {len(nodes)} nodes "
        f"answer; node {lagging.index} {detail} (log: {lagging.data_dir / LOG_FILE})"
    )


def _sleep_unless(interrupted: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / POLL_S) + 2):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or interrupted():
            return
        time.sleep(min(POLL_S, remaining))


@dataclass(frozen=True, slots=True)
class Stoppable:
    """A process to stop: its pid and how to tell that it still runs (and is still ours)."""

    pid: int
    alive: Callable[[], bool]

    @classmethod
    def child(cls, process: subprocess.Popen[bytes]) -> Stoppable:
        return cls(process.pid, lambda: process.poll() is None)

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)


def _wait_gone(targets: Sequence[Stoppable], seconds: float) -> list[Stoppable]:
    deadline = time.monotonic() + seconds
    left = [target for target in targets if target.alive()]
    for _ in range(int(seconds / POLL_S) + 2):
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
        left = [target for target in left if target.alive()]
    return left


def stop_all(targets: Sequence[Stoppable], grace_s: float = STOP_GRACE_S) -> tuple[int, int]:
    """SIGTERM every live target, SIGKILL those still running after ``grace_s``.

    Returns (how many were running, how many had to be killed).
    """
    live = [target for target in targets if target.alive()]
    for target in live:
        target.signal(signal.SIGTERM)
    stubborn = _wait_gone(live, grace_s)
    for target in stubborn:
        target.signal(signal.SIGKILL)
    _wait_gone(stubborn, KILL_WAIT_S)
    return len(live), len(stubborn)
