"""``veil bench network``: option validation (no devnet), and one real ``--quick --nodes 4`` run
on a devnet — table, JSON and PNG checked, and no node process left afterwards."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from veil.benchmarks import network
from veil.cli import main
from veil.devnet.state import ProcessRef
from veil.node.threads import WRITER, name_this_thread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# --------------------------------------------------------------------------------------------------
# Options (fast: refused before any devnet starts)


@pytest.mark.parametrize(
    "bad",
    [
        ["--nodes", "2"],  # a path has three hops
        ["--nodes", "101"],
        ["--nodes", "six"],
        ["--nodes", ","],
        ["--nodes", "6,x"],
        ["--messages", "0"],
        ["--messages", "many"],
        ["--rounds", "0"],
        ["--rounds", "101"],
        ["--concurrency", "0"],
        ["--concurrency", "2000"],
        ["--json", ""],
        ["--frobnicate"],
    ],
)
def test_bad_option_is_a_usage_error(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "network", *bad]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: veil")
    assert "error:" in captured.err
    assert "Traceback" not in captured.err


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "network", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--nodes", "--messages", "--rounds", "--concurrency", "--json", "--png"):
        assert option in out
    assert "--quick" in out


@pytest.mark.parametrize("option", ["--json", "--png"])
@pytest.mark.parametrize("where", ["missing-directory", "is-a-directory"])
def test_unwritable_output_is_refused_before_the_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    where: str,
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(network, "run", no_run)
    target = tmp_path / "no" / "such" / "out" if where == "missing-directory" else tmp_path
    assert main(["bench", "network", "--quick", "--nodes", "4", option, str(target)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"veil: cannot write {option} ")
    assert "Traceback" not in captured.err
    assert not list(tmp_path.iterdir())


def test_config_refuses_values_out_of_range() -> None:
    with pytest.raises(ValueError, match="nodes"):
        network.Config(nodes=(2,))
    with pytest.raises(ValueError, match="repeat"):
        network.Config(nodes=(6, 6))
    with pytest.raises(ValueError, match="messages"):
        network.Config(messages=0)
    with pytest.raises(ValueError, match="sample"):
        network.Config(sample=300)
    quick = network.Config.quick(nodes=(4,))
    assert (quick.messages, quick.rounds) == (network.QUICK_MESSAGES, network.QUICK_ROUNDS)


def test_import_of_the_cli_loads_no_benchmark() -> None:
    code = (
        "import sys, veil.cli; veil.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('veil.benchmarks')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def _processes_in(directory: Path) -> list[int]:
    """The pids of live processes with ``directory`` in their arguments (node data directories)."""
    needle = str(directory).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# --------------------------------------------------------------------------------------------------
# One real run


@pytest.mark.timeout(90)
def test_quick_run_on_four_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"  # where the run's temporary directory (the devnet) goes
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    json_path, png_path = tmp_path / "network.json", tmp_path / "network.png"
    argv = ["bench", "network", "--quick", "--nodes", "4", "--json", str(json_path)]
    if HAS_MATPLOTLIB:
        argv += ["--png", str(png_path)]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert _processes_in(work) == []  # the devnet came down: no node or authority left
    assert list(work.iterdir()) == []  # and its directory was removed

    out = captured.out
    assert "peel unit: NodeKey.peel of a 1 KiB v1 onion on one core" in out
    columns = (
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "node CPU/msg us",
        "peel units",
        "switches/msg",
        "commits/msg",
        "jobs/commit",
    )
    for column in (*columns, "delivered"):
        assert column in out
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["4"])

    report: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["schema"] == network.SCHEMA
    assert {"config", "machine", "versions", "peel", "results", "started_at", "duration_s"} <= set(
        report
    )
    config = report["config"]
    assert config["nodes"] == [4]
    assert (config["messages"], config["rounds"]) == (network.QUICK_MESSAGES, 1)
    assert config["size"] == 1024
    assert config["concurrency"] == network.DEFAULT_CONCURRENCY
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert {"veil", "pynacl", "libsodium"} <= set(report["versions"])

    peel = report["peel"]
    assert peel["payload_size"] == 1024
    assert peel["onion_len"] > 1024
    assert len(peel["samples_us"]) == config["peel"]["repeat"]
    assert 0 < peel["min_us"] <= peel["median_us"] <= peel["max_us"] < 10_000

    (result,) = report["results"]
    assert result["nodes"] == 4
    (timed,) = result["rounds"]
    assert timed["ok"] == timed["sent"] == timed["messages"] == network.QUICK_MESSAGES
    assert timed["complete"] is True
    assert result["stores"] == network.QUICK_MESSAGES
    assert timed["elapsed_s"] > 0
    assert result["rate"] == pytest.approx(timed["ok"] / timed["elapsed_s"])
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    # every store took one onion request, each answered 200 (no path failed, no retry); the
    # client's consensus refreshes are counted too
    stores = {k: v for k, v in timed["requests"].items() if k.startswith("store")}
    assert stores == {"store 200": network.QUICK_MESSAGES}
    assert result["requests_per_store"] == 1.0
    assert result["paths_failed"] == 0
    # CPU: the nodes did work for every message, more than the client's peel of a layer
    assert result["nodes_cpu_us"] > result["peel_us"] == peel["median_us"]
    assert result["nodes_cpu_us"] == pytest.approx(
        timed["nodes_cpu_s"] / network.QUICK_MESSAGES * 1e6
    )
    assert result["peel_units"] == pytest.approx(result["nodes_cpu_us"] / peel["median_us"])
    assert 0 <= result["idle_cpu"] <= (os.cpu_count() or 1)  # a share of one core
    assert result["nodes_cpu_busy_us"] <= result["nodes_cpu_us"]
    assert result["peel_units_busy"] == pytest.approx(
        result["nodes_cpu_busy_us"] / peel["median_us"]
    )
    assert result["client_cpu_us"] > 0
    # every message woke the nodes: at least its three onion hops and its swarm members' stores
    assert timed["nodes_switches"] > 3 * network.QUICK_MESSAGES
    assert result["switches_per_msg"] == pytest.approx(
        timed["nodes_switches"] / network.QUICK_MESSAGES
    )
    # every message made durable commits; each commit carried at least one job, and every
    # message was at least one job (its store at the member the client asked) within the round
    assert timed["nodes_commit_jobs"] >= timed["nodes_commits"] > 0
    assert timed["nodes_commit_jobs"] >= network.QUICK_MESSAGES
    assert result["commits_per_msg"] == pytest.approx(
        timed["nodes_commits"] / network.QUICK_MESSAGES
    )
    assert result["jobs_per_commit"] == pytest.approx(
        timed["nodes_commit_jobs"] / timed["nodes_commits"]
    )
    # the same CPU by thread (read in clock ticks, too coarse for a quick run's few ms a thread to
    # be told apart here: test_thread_cpu_tells_the_store_writer_from_the_event_loop does), and
    # the result is the round's per message
    threads = timed["nodes_threads"]
    assert set(threads) == {
        "loop_user_s",
        "loop_system_s",
        "writer_user_s",
        "writer_system_s",
        "other_s",
    }
    assert min(threads.values()) >= 0
    assert result["threads_cpu_us"] == pytest.approx(
        {
            key.removesuffix("_s"): value / network.QUICK_MESSAGES * 1e6
            for key, value in threads.items()
        }
    )
    delivery = result["delivery"]
    assert delivery["recipients"] == network.QUICK_SAMPLE
    assert delivery["found"] == delivery["expected"] > 0
    assert (delivery["unexpected"], delivery["corrupt"]) == (0, 0)

    # the table shows the same figures
    assert row[1] == f"{result['rate']:,.0f}"
    assert row[2:4] == [f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}"]
    assert f"{result['peel_units']:,.1f}" in row
    assert row[-3:-1] == [f"{result['commits_per_msg']:,.2f}", f"{result['jobs_per_commit']:,.1f}"]
    assert row[-1] == f"{delivery['found']}/{delivery['expected']}"
    assert "node CPU per message by thread, us (share of the node CPU):" in out
    by_thread = [line.split() for line in out.splitlines() if line.split()[:1] == ["4"]][1]
    loop_user = result["threads_cpu_us"]["loop_user"]
    assert by_thread[1:3] == [
        f"{loop_user:,.0f}",
        f"({loop_user / result['nodes_cpu_us']:.0%})",
    ]

    if HAS_MATPLOTLIB:
        assert png_path.read_bytes()[:8] == PNG_SIGNATURE
    else:
        pytest.skip("matplotlib is not installed: the PNG was not drawn (JSON and table checked)")


# --------------------------------------------------------------------------------------------------
# Wrong results void the run (the checks, without a devnet)


class FakeClient:
    """Answers the session's commands with what a test gives, as the load client would."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def ask(self, timeout: float, **command: Any) -> dict[str, Any]:
        self.asked.append(command["op"])
        return self.answers[command["op"]]

    def stop(self, timeout: float = 15.0) -> None:
        pass


def _round_answer(**changes: Any) -> dict[str, Any]:
    answer = {
        "ok": 48,
        "bad": 0,
        "sent": 48,
        "elapsed": 0.5,
        "error": None,
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "max_ms": 25.0,
        "mean_ms": 11.0,
        "requests": {"store 200": 48},
        "paths_failed": 0,
        "cpu_s": 0.05,
    }
    return answer | changes


def _session(tmp_path: Path, answers: dict[str, dict[str, Any]]) -> network.Session:
    session = network.Session(4, network.Config.quick(nodes=(4,)), tmp_path)
    session.client = FakeClient(answers)  # type: ignore[assignment]
    session.devnet.cpu_seconds = lambda: 1.0  # type: ignore[method-assign]
    return session


@pytest.mark.parametrize(
    "changes",
    [
        {"ok": 47, "bad": 1, "error": "signed results: 5, valid from swarm members: 2 (need 3)"},
        {"ok": 46, "sent": 48},  # an answer neither counted good nor bad
        {"ok": 49, "sent": 49},  # more than prepared
    ],
)
def test_a_wrong_store_voids_the_round(tmp_path: Path, changes: dict[str, Any]) -> None:
    session = _session(tmp_path, {"go": _round_answer(**changes)})
    with pytest.raises(network.WrongResultError, match="4 nodes, round 1"):
        session.run_round()
    assert session.rounds == []
    good = _session(tmp_path, {"go": _round_answer()})
    assert good.run_round().ok == 48


@pytest.mark.parametrize(
    "changes",
    [
        {"found": 7, "missing": ["aGFzaA"]},
        {"unexpected": 1},
        {"corrupt": 1},
        {"expected": 0, "found": 0},
        {"recipients": 0},
    ],
)
def test_a_message_not_read_back_voids_the_run(tmp_path: Path, changes: dict[str, Any]) -> None:
    check = {
        "recipients": 8,
        "expected": 8,
        "found": 8,
        "unexpected": 0,
        "corrupt": 0,
        "missing": [],
        "elapsed": 0.1,
    }
    with pytest.raises(network.WrongResultError, match="4 nodes, delivery"):
        _session(tmp_path, {"check": check | changes}).check_delivery()
    assert _session(tmp_path, {"check": check}).check_delivery().found == 8


def test_cli_reports_a_void_run_in_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong(*args: object, **kwargs: object) -> None:
        error = network.WrongResultError("4 nodes, delivery: 7 of 8 acknowledged messages")
        error.add_note("and then: veil devnet down failed")
        raise error

    monkeypatch.setattr(network, "run", wrong)
    json_path = tmp_path / "network.json"
    assert main(["bench", "network", "--quick", "--nodes", "4", "--json", str(json_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "veil: wrong result, benchmark void: 4 nodes, delivery: 7 of 8 acknowledged messages; "
        "and then: veil devnet down failed\n"
    )
    assert not json_path.exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"veil_store_commits_total 7\nveil_store_commit_jobs_total 19\n", (7, 19)),
        # junk around the counts is skipped, labelled samples are summed
        (
            b'# HELP x\n\x00\xff garbage\nveil_store_commits_total{a="1"} 3\n'
            b'veil_store_commits_total{a="2"} 4\nveil_store_commit_jobs_total not-a-number\n',
            (7, 0),
        ),
        (b"veil_store_commits_total NaN\n", None),
        (b"veil_store_commit_jobs_total +Inf\n", None),
        (b"veil_store_commits_total -5\n", None),
        (b"", (0, 0)),
    ],
    ids=["counts", "junk", "nan", "inf", "negative", "empty"],
)
def test_commit_counts_from_a_hostile_metrics_answer_are_read_or_left_unread(
    tmp_path: Path, body: bytes, expected: tuple[int, int] | None
) -> None:
    """The benchmark reads each node's ``GET /metrics`` for its commit counts. Whatever a process
    on a node's port answers, the benchmark gets counts or ``None`` (the table's "n/a"), never an
    exception: the counts are only a column, not a reason to void a run."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        devnet = network.Devnet(tmp_path, 1)
        devnet.http = [f"127.0.0.1:{server.server_address[1]}"]
        assert devnet.commits() == expected
    finally:
        server.shutdown()
        server.server_close()


def test_commit_counts_of_a_node_that_does_not_answer_are_left_unread(tmp_path: Path) -> None:
    devnet = network.Devnet(tmp_path, 1)
    with socket_closed_port() as port:
        devnet.http = [f"127.0.0.1:{port}"]
        assert devnet.commits() is None


def test_thread_cpu_tells_the_store_writer_from_the_event_loop() -> None:
    """CPU burnt by a thread named as the store writer is the writer's, not the main thread's
    (what the benchmark calls a node's event loop); read from this process's own threads."""
    me = ProcessRef.of(os.getpid())
    burn_s = 0.3
    burnt, leave = threading.Event(), threading.Event()

    def writer() -> None:
        name_this_thread(WRITER)
        began = time.thread_time()
        while time.thread_time() - began < burn_s:
            pass
        burnt.set()
        leave.wait(10)  # alive until read: a thread that ended is not counted

    before = network.thread_cpu([me])
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert burnt.wait(10)
        spent = network.thread_cpu([me]) - before
    finally:
        leave.set()
        thread.join()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert spent.writer_user_s + spent.writer_system_s >= burn_s - 2 * tick
    assert spent.loop_user_s + spent.loop_system_s < burn_s / 2


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listened, for the test's duration)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _result(nodes: int, threads: network.ThreadCpu | None) -> network.NodesResult:
    timed = network.Round(
        messages=48,
        sent=48,
        ok=48,
        elapsed_s=0.5,
        wall_s=0.6,
        p50_ms=10.0,
        p99_ms=20.0,
        max_ms=25.0,
        mean_ms=11.0,
        nodes_cpu_s=0.096,
        nodes_switches=900,
        client_cpu_s=0.05,
        requests={"store 200": 48},
        paths_failed=0,
        nodes_threads=threads,
    )
    delivery = network.Delivery(
        recipients=8, expected=12, found=12, unexpected=0, corrupt=0, elapsed_s=0.1
    )
    return network.NodesResult(nodes, [timed], 0.01, delivery, up_s=3.0, peel_us=22.0)


def _report(results: list[network.NodesResult]) -> network.Report:
    peel = network.PeelTime(
        payload_size=1024, onion_len=1200, loops=100, samples_us=(22.0,), wall_samples_us=(22.0,)
    )
    machine = {"cpu_count": 2, "cpu_model": "test CPU", "platform": "test", "python": "3.11"}
    versions: dict[str, str | None] = {"veil": "0", "pynacl": "0", "libsodium": None}
    config = network.Config.quick(nodes=tuple(r.nodes for r in results))
    return network.Report(config, machine, versions, "now", 1.0, peel, results)


BY_THREAD = "node CPU per message by thread, us (share of the node CPU):"


def test_the_split_by_thread_is_shown_or_left_unread(tmp_path: Path) -> None:
    """The by-thread table and chart show each part per message and its share; a size whose
    split was not read shows "n/a" (table) and no bar (chart); the run is not voided."""
    read = network.ThreadCpu(0.048, 0.0096, 0.0192, 0.0144, 0.0048)
    report = _report([_result(4, read), _result(6, None)])
    lines = network.format_table(report).splitlines()
    rows = [line.split() for line in lines[lines.index(BY_THREAD) + 3 :][:2]]
    assert rows == [
        ["4", "1,000", "(50%)", "200", "(10%)", "400", "(20%)", "300", "(15%)", "100", "(5%)"],
        ["6", "n/a", "n/a", "n/a", "n/a", "n/a"],
    ]
    assert report.results[0].summary()["threads_cpu_us"] == pytest.approx(
        {
            "loop_user": 1000,
            "loop_system": 200,
            "writer_user": 400,
            "writer_system": 300,
            "other": 100,
        }
    )
    assert report.results[1].summary()["threads_cpu_us"] is None
    # with no size's split read, no by-thread table at all
    assert BY_THREAD not in network.format_table(_report([_result(4, None)]))
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib is not installed: the chart was not drawn (the table checked)")
    network.write_png(report, tmp_path / "network.png")
    assert (tmp_path / "network.png").read_bytes()[:8] == PNG_SIGNATURE
