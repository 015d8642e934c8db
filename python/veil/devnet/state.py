"""The state file ``DIR/devnet.json`` and the checks on the processes it records.

The file is what ``veil devnet status`` and ``veil devnet down`` read, and what a script reads to
find the seeds::

    {"format": 2, "dir": "/abs/DIR", "started_ms": 1700000000000,
     "swarm_size": 5, "min_swarm_size": 3, "seeds": ["127.0.1.1:40001", "127.0.2.1:40003"],
     "network_file": "network.json",
     "supervisor": {"pid": 123, "start": 456} | null,
     "authorities": [{"index": 0, "data_dir": "auth0", "http": "127.0.0.1:40101", ...}, ...],
     "nodes": [{"index": 0, "data_dir": "node0", "http": "127.0.1.1:40001",
                "link": "127.0.1.1:40002", "ed25519": "<64 hex>", "x25519": "<64 hex>",
                "pid": 124 | null, "start": 789 | null}, ...]}

(an authority's entry has the fields of a node's). ``network_file`` is the network's definition
(its authorities' keys and addresses, its period), relative to the devnet directory: what the nodes
run with and what a client trusts (``veil --network DIR/network.json``, or found in ``.devnet``).

``supervisor`` is the foreground ``veil devnet up`` (null when detached or stopped). A ``pid`` is
recorded with the process's start time (field 22 of ``/proc/PID/stat``): a process is taken for a
node (or an authority) of this devnet only if its pid, its start time *and* its command line
(``run`` with that data directory) all match, so a pid the kernel has since given to another
process is never signalled. The file is replaced atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from veil.errors import VeilError

__all__ = [
    "NETWORK_FILE",
    "STATE_FILE",
    "DevnetError",
    "DevnetState",
    "NodeRecord",
    "ProcessRef",
    "load_state",
    "save_state",
]

STATE_FILE = "devnet.json"
FORMAT = 2
NETWORK_FILE = "network.json"


class DevnetError(VeilError):
    """A failure of a ``veil devnet`` command, reported as one line with exit code 1."""


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A process as recorded: its pid and its start time (clock ticks since boot; 0 if unknown)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, process_start(pid) or 0)

    def cmdline(self) -> list[str] | None:
        """The process's arguments if it is still this process (not a zombie, not a reused pid)."""
        start = process_start(self.pid)
        if start is None or (self.start and start != self.start):
            return None
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return None
        if not raw:  # a zombie: exited, not yet reaped
            return None
        return raw.rstrip(b"\0").decode(errors="replace").split("\0")

    def is_node(self, data_dir: Path) -> bool:
        """Whether this is still ``veil node run`` (or ``veil authority run``) of ``data_dir``."""
        args = self.cmdline()
        return args is not None and "run" in args and str(data_dir) in args

    def is_supervisor(self) -> bool:
        """Whether this is still a ``veil devnet up``."""
        args = self.cmdline()
        return args is not None and "devnet" in args and "up" in args


def process_start(pid: int) -> int | None:
    """The start time of a live process (None if there is none, or it is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in {"Z", "X"}:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


@dataclass(slots=True)
class NodeRecord:
    index: int
    data_dir: Path
    """Absolute; recorded relative to the devnet directory."""
    http: str
    link: str
    ed25519: str
    x25519: str
    process: ProcessRef | None = None

    def running(self) -> bool:
        """Whether the recorded process is still this node."""
        return self.process is not None and self.process.is_node(self.data_dir)

    def to_json(self, root: Path) -> dict[str, Any]:
        return {
            "index": self.index,
            "data_dir": self.data_dir.relative_to(root).as_posix(),
            "http": self.http,
            "link": self.link,
            "ed25519": self.ed25519,
            "x25519": self.x25519,
            "pid": self.process.pid if self.process else None,
            "start": self.process.start if self.process else None,
        }


@dataclass(slots=True)
class DevnetState:
    root: Path
    nodes: list[NodeRecord]
    seeds: list[str]
    swarm_size: int
    min_swarm_size: int
    started_ms: int
    authorities: list[NodeRecord] = field(default_factory=list)
    supervisor: ProcessRef | None = None

    def path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def network_path(self) -> Path:
        return self.root / NETWORK_FILE

    def processes(self) -> list[NodeRecord]:
        """Every process of the devnet: its authorities, then its nodes."""
        return [*self.authorities, *self.nodes]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "dir": str(self.root),
            "started_ms": self.started_ms,
            "swarm_size": self.swarm_size,
            "min_swarm_size": self.min_swarm_size,
            "seeds": self.seeds,
            "network_file": NETWORK_FILE,
            "supervisor": (
                {"pid": self.supervisor.pid, "start": self.supervisor.start}
                if self.supervisor
                else None
            ),
            "authorities": [a.to_json(self.root) for a in self.authorities],
            "nodes": [node.to_json(self.root) for node in self.nodes],
        }

    def clear_processes(self) -> None:
        self.supervisor = None
        for record in self.processes():
            record.process = None


def save_state(state: DevnetState) -> None:
    path = state.path()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise DevnetError(f"cannot write {path}: {exc.strerror or exc}") from None


def _process(value: Any) -> ProcessRef | None:
    if value is None:
        return None
    if isinstance(value, dict):
        pid, start = value.get("pid"), value.get("start")
    else:
        raise TypeError("a process is {pid, start}")
    if not isinstance(pid, int) or not isinstance(start, int | None):
        raise TypeError("pid and start are integers")
    return ProcessRef(pid, start or 0)


def _node(entry: Any, root: Path) -> NodeRecord:
    if not isinstance(entry, dict):
        raise TypeError("a node is an object")
    data_dir = root / str(entry["data_dir"])
    if not data_dir.resolve().is_relative_to(root):
        raise ValueError("a node's data_dir is outside the devnet directory")
    return NodeRecord(
        index=int(entry["index"]),
        data_dir=data_dir,
        http=str(entry["http"]),
        link=str(entry["link"]),
        ed25519=str(entry["ed25519"]),
        x25519=str(entry["x25519"]),
        process=_process(entry) if entry.get("pid") is not None else None,
    )


def load_state(root: Path) -> DevnetState | None:
    """The devnet recorded in ``root`` (an absolute path), or None if there is none."""
    path = root / STATE_FILE
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DevnetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError:
        raise DevnetError(f"{path} is not valid JSON; remove it to start over") from None
    try:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("unknown format")
        return DevnetState(
            root=root,
            nodes=[_node(entry, root) for entry in document["nodes"]],
            authorities=[_node(entry, root) for entry in document["authorities"]],
            seeds=[str(seed) for seed in document["seeds"]],
            swarm_size=int(document["swarm_size"]),
            min_swarm_size=int(document["min_swarm_size"]),
            started_ms=int(document["started_ms"]),
            supervisor=_process(document.get("supervisor")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DevnetError(
            f"{path} is not a devnet state file of this version ({exc}); remove {root} to start "
            "over"
        ) from None
