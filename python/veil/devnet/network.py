"""Creating, starting, waiting for and stopping the authorities and nodes of a devnet.

Layout of the devnet directory ``DIR``::

    DIR/devnet.json      the state file (see :mod:`veil.devnet.state`)
    DIR/devnet.lock      held (flock) by a ``veil devnet up`` while it starts or supervises nodes
    DIR/network.json     the network file: the authorities' keys and addresses, the period
    DIR/authK/           authority K's directory: node.key, authority.toml, its state, authority.log
    DIR/nodeK/           node K's data directory: node.key, node.toml, store/ (LMDB), node.log

A devnet is a network as a real one is: three directory authorities (``veil authority run``) that
check and admit the nodes and sign a consensus every ``PERIOD_S``, and N nodes (``veil node run``)
that register with them and take their view, swarms and placements from that consensus only.
Authorities listen on 127.0.0.1; node K on 127.0.K+1.1, so that every node is in a /24 of its
own and the authorities' per-subnet cap (``max_nodes_per_subnet``) keeps its real default, as on
a network of separate hosts (all of 127.0.0.0/8 is loopback on Linux). What differs from a real
network's settings, only to suit one machine and a short-lived network:

- the period is ``PERIOD_S`` (2 s) and a consensus stays valid ``VALID_PERIODS`` periods (3 min),
  so a node is admitted within a few seconds and a devnet whose authorities stopped runs on;
- ``guard_uptime_s`` is 0 (``--guard-uptime`` sets it): every admitted node is a Guard at once,
  since the nodes all start together under one operator, and clients need guards at once;
- registrations per minute and connections per address are not capped in practice at the
  authorities (every node registers from 127.0.0.1), and ``min_swarm_size`` is ``min(3, N)``.

Each process listens on two loopback ports (client HTTP, link) picked free by binding
``127.0.0.1:0`` just before the processes start (all held open together so they differ; another
program could still take one before it binds, and then that process exits and ``up`` says so).
``node.toml``, ``authority.toml`` and ``network.json`` are rewritten by every ``up`` (the ports
change); keys, stores and the authorities' state are kept, so a stopped devnet restarts with its
keys, admissions and messages. Delete ``DIR`` to start from nothing.

Processes run as ``python -m veil node run`` / ``python -m veil authority run`` in sessions of their
own (``start_new_session``), so a Ctrl-C in the terminal reaches only ``veil devnet up``, which then
stops them; and a detached devnet survives the terminal it was started from. They are stopped with
SIGTERM (gracefully within 5 s), then SIGKILL after 10 s.
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

import orjson

import veil
from veil.authority.config import CONFIG_FILE as AUTHORITY_CONFIG_FILE
from veil.authority.config import AdmissionSettings, AuthorityConfig, HttpSettings
from veil.authority.config import render_config as render_authority_config
from veil.clock import now_ms
from veil.devnet.probe import ConsensusSample, ProbeError, consensus_sample, in_parallel
from veil.devnet.state import NETWORK_FILE, DevnetError, DevnetState, NodeRecord, ProcessRef
from veil.identity import Identity
from veil.node.config import CONFIG_FILE, NetworkSettings, NodeConfig, StoreSettings, render_config
from veil.node.identity import create_node_key, load_node_key
from veil.protocol.network_file import VERSION as NETWORK_FILE_VERSION
from veil.protocol.network_file import NetworkFile

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
AUTHORITY_LOG_FILE = "authority.log"
AUTHORITIES = 3
NETWORK_NAME = "devnet"
PERIOD_S = 2.0
VALID_PERIODS = 90
REGISTRATIONS_PER_MINUTE = 1_000_000
CONNECTIONS_PER_ADDRESS = 1024
"""Every node (and every client) reaches the authorities from 127.0.0.1."""
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


def node_host(index: int) -> str:
    """Node ``index``'s loopback address: a /24 of its own."""
    return f"127.0.{index + 1}.1"


def _key(path: Path) -> Identity:
    try:
        return load_node_key(path) if path.exists() else create_node_key(path)
    except ValueError as exc:  # ConfigError: an unreadable or unsafe key file
        raise DevnetError(str(exc)) from None


def _authority_records(
    root: Path, ports: list[int], guard_uptime_s: float
) -> tuple[list[NodeRecord], NetworkFile]:
    records, entries = [], []
    for k in range(AUTHORITIES):
        data_dir = root / f"auth{k}"
        config = AuthorityConfig(
            data_dir=data_dir,
            name=f"auth{k}",
            listen_host=HOST,
            listen_port=ports[2 * k],
            link_host=HOST,
            link_port=ports[2 * k + 1],
            admission=AdmissionSettings(
                guard_uptime_s=guard_uptime_s,
                registrations_per_minute_per_address=REGISTRATIONS_PER_MINUTE,
            ),
            http=HttpSettings(max_connections_per_address=CONNECTIONS_PER_ADDRESS),
        )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            identity = _key(config.key_path)
            (data_dir / AUTHORITY_CONFIG_FILE).write_text(
                render_authority_config(config), encoding="utf-8"
            )
        except OSError as exc:
            raise DevnetError(f"cannot write {data_dir}: {exc.strerror or exc}") from None
        entries.append(config.entry(identity.ed25519_public_key))
        records.append(
            NodeRecord(
                index=k,
                data_dir=data_dir,
                http=f"{HOST}:{ports[2 * k]}",
                link=f"{HOST}:{ports[2 * k + 1]}",
                ed25519=identity.ed25519_public_key.hex(),
                x25519=identity.x25519_public_key.hex(),
            )
        )
    network = NetworkFile.from_json(
        {
            "version": NETWORK_FILE_VERSION,
            "name": NETWORK_NAME,
            "period_s": PERIOD_S,
            "valid_periods": VALID_PERIODS,
            "authorities": entries,
        }
    )
    return records, network


def prepare_nodes(
    root: Path,
    count: int,
    guard_uptime_s: float = 0.0,
    external_services: tuple[str, ...] = (),
) -> DevnetState:
    """Write (or rewrite) the authorities, the network file and ``count`` node directories under
    ``root``, keeping existing keys and state. Every node allows ``external_services`` (URL
    prefixes an onion request's last hop may POST to: a community server, say)."""
    ports = free_ports(2 * (AUTHORITIES + count))
    authorities, network_file = _authority_records(root, ports[: 2 * AUTHORITIES], guard_uptime_s)
    network_path = root / NETWORK_FILE
    try:
        network_path.write_bytes(
            orjson.dumps(network_file.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
        )
    except OSError as exc:
        raise DevnetError(f"cannot write {network_path}: {exc.strerror or exc}") from None
    ports = ports[2 * AUTHORITIES :]
    https = [f"{node_host(k)}:{ports[2 * k]}" for k in range(count)]
    network = NetworkSettings(min_swarm_size=min(3, count))
    nodes = []
    for k in range(count):
        data_dir = root / f"node{k}"
        config = NodeConfig(
            data_dir=data_dir,
            listen_host=node_host(k),
            listen_port=ports[2 * k],
            link_host=node_host(k),
            link_port=ports[2 * k + 1],
            network_file=str(network_path),
            store=StoreSettings(map_size_bytes=MAP_SIZE_BYTES),
            network=network,
            external_services=external_services,
        )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            identity = _key(config.key_path)
            (data_dir / CONFIG_FILE).write_text(render_config(config), encoding="utf-8")
        except OSError as exc:
            raise DevnetError(f"cannot write {data_dir}: {exc.strerror or exc}") from None
        nodes.append(
            NodeRecord(
                index=k,
                data_dir=data_dir,
                http=https[k],
                link=f"{node_host(k)}:{ports[2 * k + 1]}",
                ed25519=identity.ed25519_public_key.hex(),
                x25519=identity.x25519_public_key.hex(),
            )
        )
    return DevnetState(
        root=root,
        nodes=nodes,
        seeds=https[:2],
        swarm_size=network.swarm_size,
        min_swarm_size=network.min_swarm_size,
        started_ms=now_ms(),
        authorities=authorities,
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
    return _start(node, ["node", "run", "--data-dir", str(node.data_dir)], f"node {node.index}")


def start_authority(authority: NodeRecord, network_file: Path) -> subprocess.Popen[bytes]:
    """Start ``veil authority run`` for ``authority``, as :func:`start_node` starts a node."""
    arguments = ["authority", "run", "--data-dir", str(authority.data_dir)]
    return _start(authority, [*arguments, "--network", str(network_file)], _name(authority))


def is_authority(record: NodeRecord) -> bool:
    return record.data_dir.name.startswith("auth")


def _name(record: NodeRecord) -> str:
    return f"{'authority' if is_authority(record) else 'node'} {record.index}"


def log_path(record: NodeRecord) -> Path:
    return record.data_dir / (AUTHORITY_LOG_FILE if is_authority(record) else LOG_FILE)


def _start(record: NodeRecord, arguments: list[str], name: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "veil", *arguments]
    try:
        with log_path(record).open("ab") as log:
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
        raise DevnetError(f"cannot start {name}: {exc.strerror or exc}") from None
    record.process = ProcessRef.of(process.pid)
    return process


def last_log_line(node: NodeRecord) -> str:
    """The message of the node's last log line, for an error report."""
    try:
        with log_path(node).open("rb") as log:
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
    records: Sequence[NodeRecord],
    processes: Sequence[subprocess.Popen[bytes]],
    timeout_s: float,
    interrupted: Callable[[], bool],
    poll_s: float = 0.2,
) -> ConsensusSample | None:
    """Wait until every node holds a consensus that lists every node of the devnet; the
    consensus then held by the first node, or None if interrupted first.

    ``records`` and ``processes`` are the devnet's authorities and nodes (in the same order). Raises
    :class:`DevnetError` when a process exits, or at ``timeout_s``.
    """
    nodes = [record for record in records if not is_authority(record)]
    expected = {node.ed25519 for node in nodes}

    def held(node: NodeRecord) -> ConsensusSample | None:
        try:
            return consensus_sample(node.http, timeout=1.0)
        except ProbeError:
            return None

    deadline = time.monotonic() + timeout_s
    views: list[ConsensusSample | None] = [None] * len(nodes)
    for _ in range(int(timeout_s / poll_s) + 10):
        if interrupted():
            return None
        for record, process in zip(records, processes, strict=True):
            code = process.poll()
            if code is not None:
                raise DevnetError(
                    f"{_name(record)} exited with code {code} while starting: "
                    f"{last_log_line(record)} (log: {log_path(record)})"
                )
        views = in_parallel(held, nodes)
        if all(seen is not None and expected <= seen.nodes for seen in views):
            first = views[0]
            assert first is not None
            return first
        if time.monotonic() >= deadline:
            break
        _sleep_unless(interrupted, poll_s)
    answering = sum(seen is not None for seen in views)
    position, lagging = next(
        (
            (i, node)
            for i, (node, seen) in enumerate(zip(nodes, views, strict=True))
            if seen is None or expected - seen.nodes
        ),
        (0, nodes[0]),
    )
    seen = views[position]
    detail = (
        "holds no consensus"
        if seen is None
        else f"holds one of period {seen.period} that lists {len(seen.nodes & expected)} of "
        f"{len(nodes)}"
    )
    raise DevnetError(
        f"the devnet did not converge within {timeout_s:g} s: {answering} of {len(nodes)} nodes "
        f"hold a consensus; node {lagging.index} {detail} (log: {log_path(lagging)})"
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
