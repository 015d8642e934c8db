"""``veil devnet up``, ``veil devnet status`` and ``veil devnet down``.

Exit codes as for every ``veil`` command: 0 success, 1 a failure reported in one line on stderr
(no devnet in DIR, one already running, a node that did not start, no convergence in time), 2 a
usage error, 130 interrupted while starting.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from veil.devnet.state import DevnetError, DevnetState, ProcessRef, load_state

__all__ = ["add_devnet_commands"]

DEFAULT_DIR = ".devnet"
MAX_NODES = 100
LOCK_FILE = "devnet.lock"
_OWN_ENTRY = re.compile(r"(node|auth)\d+|network\.json")


def _node_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_NODES}: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.05 and 3600 seconds: {text!r}")
    return value


def _directory(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def add_devnet_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``devnet up``, ``devnet status`` and ``devnet down`` under the ``veil`` command."""
    devnet = subparsers.add_parser(
        "devnet",
        help="run a local network of nodes for development",
        description=(
            "A network of Veil nodes on loopback, each a process with its own LMDB store, admitted "
            "by three directory authorities that sign its consensus. Its files live in DIR "
            f"(default {DEFAULT_DIR}, under the current directory); DIR/network.json is the "
            "network file clients trust."
        ),
    )
    commands = devnet.add_subparsers(dest="devnet_command", required=True, metavar="COMMAND")
    dir_help = f"the devnet's directory (default {DEFAULT_DIR})"

    up = commands.add_parser(
        "up",
        help="start the nodes and show them until Ctrl-C (or --detach)",
        description=(
            "Start three authorities and N nodes, wait until every node holds a consensus that "
            "lists them all, then show a live view until Ctrl-C or SIGTERM, which stop them. "
            "Without a terminal, print a progress line per interval instead. --detach leaves "
            "them running in the background."
        ),
    )
    up.add_argument(
        "--nodes",
        type=_node_count,
        default=12,
        metavar="N",
        help=f"how many nodes, 1..{MAX_NODES} (default %(default)s; onions need 3 or more)",
    )
    up.add_argument("--dir", type=_directory, default=Path(DEFAULT_DIR), help=dir_help)
    up.add_argument(
        "--detach", action="store_true", help="start the nodes, wait until converged, and return"
    )
    up.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for a consensus that lists every node (default %(default)g)",
    )
    up.add_argument(
        "--guard-uptime",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=(
            "how long a node must have been up before the authorities vote it Guard (default "
            "%(default)g: every node at once; a real network waits days)"
        ),
    )
    up.add_argument(
        "--external-service",
        action="append",
        default=[],
        metavar="URL_PREFIX",
        help="an http(s):// URL prefix every node may POST onion requests to, such as a "
        "community server's (repeatable)",
    )
    up.add_argument(
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="refresh period of the live view (default %(default)g)",
    )
    up.set_defaults(handler=_guarded(_up))

    status = commands.add_parser(
        "status",
        help="list the devnet's authorities and nodes, and the consensus they hold",
        description=(
            "List the authorities and nodes of the devnet in DIR, ask each whether it runs, and "
            "show the consensus the nodes hold (period, signatures, nodes admitted)."
        ),
    )
    status.add_argument("--dir", type=_directory, default=Path(DEFAULT_DIR), help=dir_help)
    status.add_argument("--json", action="store_true", help="print one JSON object, for scripts")
    status.set_defaults(handler=_guarded(_status))

    down = commands.add_parser(
        "down",
        help="stop the devnet's nodes and authorities",
        description=(
            "Stop every node and authority of the devnet in DIR (SIGTERM, then SIGKILL after 10 s)."
        ),
    )
    down.add_argument("--dir", type=_directory, default=Path(DEFAULT_DIR), help=dir_help)
    down.set_defaults(handler=_guarded(_down))


def _guarded(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = handler(args)
        except DevnetError as exc:
            print(f"veil devnet {args.devnet_command}: {exc}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # stdout closed early (`veil devnet status | head -1`)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
            os.close(devnull)
            return 1
        return code

    return run


def _root(args: argparse.Namespace) -> Path:
    path: Path = args.dir
    return path.expanduser().resolve()


def _existing(root: Path) -> DevnetState:
    state = load_state(root) if root.is_dir() else None
    if state is None:
        raise DevnetError(f"no devnet in {root} (start one with: veil devnet up --dir {root})")
    return state


# --------------------------------------------------------------------------------------------------
# up


class _Signals:
    """SIGINT, SIGTERM and SIGHUP set a flag (checked by every loop) instead of raising."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold ``DIR/devnet.lock`` so that two ``up`` never run in one directory."""
    try:
        handle = (root / LOCK_FILE).open("a")
    except OSError as exc:
        raise DevnetError(f"cannot use {root}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DevnetError(
                f"a devnet is already running in {root} (stop it with: veil devnet down --dir "
                f"{root})"
            ) from None
        yield


def _check_free(root: Path) -> None:
    """Refuse a DIR that is not a directory, holds other files, or runs a devnet."""
    if root.exists() and not root.is_dir():
        raise DevnetError(f"{root} exists and is not a directory")
    if not root.is_dir():
        return
    state = load_state(root)
    if state is None:
        foreign = sorted(
            entry.name
            for entry in root.iterdir()
            if entry.name != LOCK_FILE and not _OWN_ENTRY.fullmatch(entry.name)
        )
        if foreign:
            raise DevnetError(f"{root} is not empty and holds no devnet; choose another --dir")
        return
    running = [r.process.pid for r in state.processes() if r.process and r.running()]
    if running or (state.supervisor is not None and state.supervisor.is_supervisor()):
        raise DevnetError(
            f"a devnet is already running in {root} ({len(running)} processes; stop it with: "
            f"veil devnet down --dir {root})"
        )


def _up(args: argparse.Namespace) -> int:
    from veil.devnet import network  # noqa: PLC0415  (no work at import time)
    from veil.devnet.state import save_state  # noqa: PLC0415

    root = _root(args)
    count: int = args.nodes
    _check_free(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DevnetError(f"cannot create {root}: {exc.strerror or exc}") from None
    if count < 3:
        print(
            f"veil devnet up: warning: {count} node(s) cannot route onion requests "
            "(a path has 3 hops); use --nodes 3 or more for that",
            file=sys.stderr,
        )
    with _locked(root), _Signals() as interrupted:
        _check_free(root)  # again, now that no other `up` can start nodes here
        if args.guard_uptime < 0:
            raise DevnetError("--guard-uptime cannot be negative")
        bad = [u for u in args.external_service if not u.startswith(("http://", "https://"))]
        if bad:
            raise DevnetError(f"--external-service takes an http(s):// URL prefix, not {bad[0]!r}")
        state = network.prepare_nodes(root, count, args.guard_uptime, tuple(args.external_service))
        if not args.detach:
            state.supervisor = ProcessRef.of(os.getpid())
        processes = []
        detached = False
        try:
            if not args.detach:
                print(
                    f"veil devnet: starting {len(state.authorities)} authorities and {count} "
                    f"nodes in {root}",
                    flush=True,
                )
            for authority in state.authorities:
                processes.append(network.start_authority(authority, state.network_path))
            for node in state.nodes:
                processes.append(network.start_node(node))
            save_state(state)
            began = time.monotonic()
            held = network.wait_until_converged(
                state.processes(), processes, args.timeout, interrupted
            )
            if held is None:
                print("veil devnet up: interrupted while starting", file=sys.stderr)
                return 130
            elapsed = time.monotonic() - began
            seeds = " ".join(state.seeds)
            summary = (
                f"consensus of period {held.period} signed by {held.signatures} of "
                f"{len(state.authorities)} authorities lists all {count} nodes "
                f"({held.guards} guards) after {elapsed:.1f} s; seeds {seeds}; network file "
                f"{state.network_path}"
            )
            if args.detach:
                print(
                    f"veil devnet: running in {root} (detached): {summary}; stop with: veil "
                    f"devnet down --dir {root}",
                    flush=True,
                )
                detached = True
                return 0
            print(f"veil devnet: {summary}; Ctrl-C stops them", flush=True)
            return _supervise(state, processes, args.interval, interrupted)
        finally:
            if not detached:
                _stop_children(state, processes)


def _supervise(
    state: DevnetState, processes: list[Any], interval: float, interrupted: _Signals
) -> int:
    """Show the live view until a signal (exit 0) or until every node has exited (exit 1)."""
    from veil.devnet.network import POLL_S  # noqa: PLC0415
    from veil.devnet.view import LiveView  # noqa: PLC0415

    nodes = processes[len(state.authorities) :]  # the authorities come first
    view = LiveView(state, nodes, sys.stdout, tty=sys.stdout.isatty())
    try:
        while not interrupted():
            began = time.monotonic()
            view.refresh()
            if view.exited():
                raise DevnetError(
                    f"every node has exited; see the logs in {state.root}/node*/node.log"
                )
            while not interrupted() and time.monotonic() - began < interval:
                time.sleep(min(POLL_S, max(0.0, interval - (time.monotonic() - began))))
    finally:
        view.close()
    return 0


def _stop_children(state: DevnetState, processes: list[Any]) -> None:
    from veil.devnet.network import Stoppable, stop_all  # noqa: PLC0415
    from veil.devnet.state import save_state  # noqa: PLC0415

    running, killed = stop_all([Stoppable.child(process) for process in processes])
    state.clear_processes()
    with contextlib.suppress(DevnetError):
        save_state(state)
    if running:
        note = f" ({killed} killed after 10 s)" if killed else ""
        print(
            f"veil devnet: stopped {running} processes (authorities and nodes){note}",
            file=sys.stderr,
            flush=True,
        )


# --------------------------------------------------------------------------------------------------
# status


def _status(args: argparse.Namespace) -> int:
    from veil.devnet.probe import (  # noqa: PLC0415
        ConsensusSample,
        ProbeError,
        consensus_sample,
        in_parallel,
        rpc,
    )

    root = _root(args)
    state = _existing(root)

    def probe(index: int) -> tuple[bool, ConsensusSample | None]:
        node = state.nodes[index]
        try:
            answer = rpc(node.http, "info", {}, timeout=1.0)
        except ProbeError:
            return False, None
        if answer.get("ed25519") != node.ed25519:  # another program on the port
            return False, None
        try:
            return True, consensus_sample(node.http, timeout=1.0)
        except ProbeError:
            return True, None

    answers = in_parallel(probe, list(range(len(state.nodes))))
    nodes = []
    for node, (running, held) in zip(state.nodes, answers, strict=True):
        pid = node.process.pid if node.process is not None and node.running() else None
        nodes.append(
            {
                "index": node.index,
                "http": node.http,
                "link": node.link,
                "ed25519": node.ed25519,
                "x25519": node.x25519,
                "pid": pid,
                "running": running,
                "view": len(held.nodes) if held is not None else None,
                "period": held.period if held is not None else None,
                "data_dir": str(node.data_dir),
            }
        )
    authorities = []
    for authority in state.authorities:
        pid = authority.process.pid if authority.running() and authority.process else None
        authorities.append(
            {
                "index": authority.index,
                "http": authority.http,
                "link": authority.link,
                "ed25519": authority.ed25519,
                "pid": pid,
                "running": pid is not None,
                "data_dir": str(authority.data_dir),
            }
        )
    held_by = [held for _, held in answers if held is not None]
    latest = max(held_by, key=lambda held: held.period, default=None)
    supervisor = state.supervisor
    report = {
        "dir": str(root),
        "running": sum(1 for node in nodes if node["running"]),
        "swarm_size": state.swarm_size,
        "min_swarm_size": state.min_swarm_size,
        "seeds": state.seeds,
        "network_file": str(state.network_path),
        "consensus": (
            {
                "period": latest.period,
                "signatures": latest.signatures,
                "authorities": len(state.authorities),
                "admitted": len(latest.nodes),
                "guards": latest.guards,
                "valid_until_ms": latest.valid_until_ms,
                "held_by": sum(held.period == latest.period for held in held_by),
            }
            if latest is not None
            else None
        ),
        "supervisor": supervisor.pid if supervisor and supervisor.is_supervisor() else None,
        "authorities": authorities,
        "nodes": nodes,
    }
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_status(report)
    return 0


def _print_status(report: dict[str, Any]) -> None:
    nodes: list[dict[str, Any]] = report["nodes"]
    authorities: list[dict[str, Any]] = report["authorities"]
    supervisor = report["supervisor"]
    mode = "detached" if supervisor is None else f"veil devnet up pid {supervisor}"
    up = sum(1 for authority in authorities if authority["running"])
    print(
        f"devnet {report['dir']}: {report['running']} of {len(nodes)} nodes and {up} of "
        f"{len(authorities)} authorities running"
        + (f" ({mode})" if report["running"] or up else "")
    )
    consensus = report["consensus"]
    if consensus is None:
        print("consensus: none held by a running node")
    else:
        until = time.strftime("%H:%M:%S", time.localtime(consensus["valid_until_ms"] / 1000))
        print(
            f"consensus: period {consensus['period']}, signed by {consensus['signatures']} of "
            f"{consensus['authorities']} authorities, {consensus['admitted']} nodes admitted "
            f"({consensus['guards']} guards), held by {consensus['held_by']} nodes, valid until "
            f"{until}"
        )
    print(f"seeds {' '.join(report['seeds'])}   swarm size R={report['swarm_size']}")
    print(f"network file {report['network_file']}")
    print(f"{'':>4}  {'http':<21} {'link':<21} {'ed25519':<16} {'pid':>7} {'state':<8} view")
    for authority in authorities:
        pid = str(authority["pid"]) if authority["pid"] is not None else "-"
        state = "running" if authority["running"] else "stopped"
        print(
            f"{'a' + str(authority['index']):>4}  {authority['http']:<21} {authority['link']:<21} "
            f"{authority['ed25519'][:16]:<16} {pid:>7} {state:<8} -"
        )
    for node in nodes:
        pid = str(node["pid"]) if node["pid"] is not None else "-"
        state = "running" if node["running"] else "stopped"
        view = str(node["view"]) if node["view"] is not None else "-"
        print(
            f"{node['index']:>4}  {node['http']:<21} {node['link']:<21} {node['ed25519'][:16]:<16} "
            f"{pid:>7} {state:<8} {view}"
        )


# --------------------------------------------------------------------------------------------------
# down


def _down(args: argparse.Namespace) -> int:
    from veil.devnet.network import Stoppable, stop_all  # noqa: PLC0415
    from veil.devnet.state import save_state  # noqa: PLC0415

    root = _root(args)
    state = _existing(root)
    targets = []
    supervisor = state.supervisor
    if supervisor is not None and supervisor.pid != os.getpid() and supervisor.is_supervisor():
        targets.append(Stoppable(supervisor.pid, supervisor.is_supervisor))
    nodes = authorities = 0
    for record in state.processes():
        process = record.process
        if process is not None and record.running():
            if record in state.authorities:
                authorities += 1
            else:
                nodes += 1
            targets.append(
                Stoppable(process.pid, functools.partial(process.is_node, record.data_dir))
            )
    if not targets:
        print(f"veil devnet: no node or authority of the devnet in {root} was running")
    else:
        _, killed = stop_all(targets)
        note = f" ({killed} killed after 10 s)" if killed else ""
        print(f"veil devnet: stopped {nodes} nodes and {authorities} authorities in {root}{note}")
    state.clear_processes()
    save_state(state)
    return 0
