"""The live view of a running devnet, refreshed every interval until the devnet is stopped.

On a terminal (stdout is a TTY) the view is redrawn in place with plain ANSI escapes (cursor home,
clear to end of line / screen; no dependency): a header with the network's figures and a table
with one row per node. Otherwise (a pipe, a log file) it prints one plain progress line per
interval, e.g.::

    12:00:01 devnet 12/12 up, views 12-12 of 12, 210 message copies, 3.0 req/s

What is shown, and where it comes from (each node's ``GET /metrics`` and ``get_nodes``):

- state: ``up`` (it answered), ``no answer`` (its process runs but did not answer within 1 s),
  ``exited N`` (its process ended with code N);
- view: how many nodes the node knows (the network size as it sees it; all N once converged);
- messages, bytes: ``veil_messages_stored`` and ``veil_bytes_stored``: the copies the node holds;
- req/s: the increase of ``veil_rpc_requests_total`` (every client RPC method) per second since
  the previous refresh, less the one ``get_nodes`` the view itself sent.

Swarms are not numbered: with rendezvous hashing every account has a swarm of its own, the R
(``swarm_size``) nodes of highest weight for it, so the header shows R and the total of the copies
held; once replicated each message is held by min(R, N) nodes, so the number of distinct messages
is about copies / min(R, N).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from veil.devnet.probe import NodeSample, in_parallel, sample
from veil.devnet.state import DevnetState

__all__ = ["LiveView"]

_HOME, _CLEAR_LINE, _CLEAR_DOWN = "\033[H", "\033[K", "\033[J"
_CLEAR_SCREEN, _HIDE_CURSOR, _SHOW_CURSOR = "\033[2J", "\033[?25l", "\033[?25h"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@dataclass(slots=True)
class _Row:
    state: str
    sample: NodeSample
    rate: float | None


class LiveView:
    """Samples the nodes and draws them, one frame per :meth:`refresh`."""

    def __init__(
        self,
        state: DevnetState,
        processes: Sequence[subprocess.Popen[bytes]],
        out: TextIO,
        *,
        tty: bool,
    ) -> None:
        self.state = state
        self.processes = processes
        self.out = out
        self.tty = tty
        self.started = time.monotonic()
        self._previous: list[NodeSample | None] = [None] * len(state.nodes)
        self._drawn = False

    def exited(self) -> bool:
        """Whether every node's process has ended."""
        return all(process.poll() is not None for process in self.processes)

    def refresh(self) -> None:
        now = time.monotonic()
        samples = in_parallel(lambda node: sample(node.http, now), self.state.nodes)
        rows = []
        for k, (current, process) in enumerate(zip(samples, self.processes, strict=True)):
            previous = self._previous[k]
            rate = None
            if current.up and previous is not None and previous.up and current.at > previous.at:
                own = 1  # the get_nodes of the previous sample, counted after its scrape
                rate = max(0.0, current.requests - previous.requests - own) / (
                    current.at - previous.at
                )
            code = process.poll()
            state = "up" if current.up else ("no answer" if code is None else f"exited {code}")
            rows.append(_Row(state, current, rate))
            self._previous[k] = current
        if self.tty:
            self._draw(rows)
        else:
            self._line(rows)

    def close(self) -> None:
        if self.tty and self._drawn:
            self.out.write(_SHOW_CURSOR)
            self.out.flush()

    def _totals(self, rows: Sequence[_Row]) -> tuple[int, int, int, float]:
        up = [row for row in rows if row.sample.up]
        copies = sum(row.sample.messages for row in up)
        data = sum(row.sample.data_bytes for row in up)
        rate = sum(row.rate or 0.0 for row in up)
        return len(up), copies, data, rate

    def _line(self, rows: Sequence[_Row]) -> None:
        count = len(rows)
        up, copies, _, rate = self._totals(rows)
        views = [len(row.sample.sees) for row in rows if row.sample.up]
        seen = f"{min(views)}-{max(views)}" if views else "-"
        self.out.write(
            f"{time.strftime('%H:%M:%S')} devnet {up}/{count} up, views {seen} of {count}, "
            f"{copies} message copies, {rate:.1f} req/s\n"
        )
        self.out.flush()

    def frame(self, rows: Sequence[_Row]) -> list[str]:
        """The lines of one frame of the terminal view."""
        state = self.state
        count = len(rows)
        up, copies, data, rate = self._totals(rows)
        replicas = max(1, min(state.swarm_size, count))
        lines = [
            f"veil devnet  {state.root}  up {_duration(time.monotonic() - self.started)}",
            f"nodes {up}/{count} up   swarm size R={state.swarm_size} "
            f"(min {state.min_swarm_size})   seeds {' '.join(state.seeds)}",
            f"messages {copies} copies (~{round(copies / replicas)} distinct)   "
            f"data {_size(data)}   requests {rate:.1f}/s",
            "",
            f"{'node':>4}  {'http':<21} {'ed25519':<16} {'state':<10} {'view':>5} "
            f"{'messages':>9} {'data':>10} {'req/s':>8}",
        ]
        for node, row in zip(state.nodes, rows, strict=True):
            view = str(len(row.sample.sees)) if row.sample.up else "-"
            rate_text = f"{row.rate:.1f}" if row.rate is not None else "-"
            messages = str(row.sample.messages) if row.sample.up else "-"
            data_text = _size(row.sample.data_bytes) if row.sample.up else "-"
            lines.append(
                f"{node.index:>4}  {node.http:<21} {node.ed25519[:16]:<16} {row.state:<10} "
                f"{view:>5} {messages:>9} {data_text:>10} {rate_text:>8}"
            )
        lines += ["", "Ctrl-C stops the devnet."]
        return lines

    def _draw(self, rows: Sequence[_Row]) -> None:
        columns, height = shutil.get_terminal_size((100, 40))
        lines = self.frame(rows)
        if len(lines) > height - 1:
            hidden = len(lines) - (height - 2)
            lines = [*lines[: height - 2], f"... {hidden} more lines (enlarge the terminal)"]
        start = "" if self._drawn else _HIDE_CURSOR + _CLEAR_SCREEN
        self._drawn = True
        text = "".join(line[:columns] + _CLEAR_LINE + "\n" for line in lines)
        self.out.write(start + _HOME + text + _CLEAR_DOWN)
        self.out.flush()
