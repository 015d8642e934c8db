"""One community server under load from Locust (``loadtest/community_locustfile.py``): the runs of
``docs/performance.md``, "A community server under load".

For every (members, poll interval, run) asked for:

1. a fresh server in a temporary directory: ``python -m veil community init --data-dir D --listen
   127.0.0.1:PORT`` (a free loopback port), rooms ``lobby``, ``dev``, ``random`` and ``news``
   (read-only), each seeded with ``--seed-posts`` posts of 20-300 characters by 50 seed users
   (written with the server's own ``CommunityDb`` before it starts), then ``python -m veil
   community run`` as a process of its own;
2. Locust, headless, as a process of its own: ``members / --members-per-user`` users, all
   started at once, for ``--duration`` seconds (``-t``; ``--stop-timeout 5``), the members' settings
   in ``VEIL_COMMUNITY_*``, its statistics reset after ``--warmup`` seconds (default: one poll
   interval + 5 s); ``--processes N`` if asked; ``--pin``: the server alone on CPU 0, Locust on
   the others;
3. while Locust runs, once a second: the CPU time (user + system, ``/proc``) of the server process,
   of the Locust process(es), and of the whole machine. The CPU shares are taken from the end of
   the warm-up (Locust's start, ~2 s, included) to the last sample but one;
4. afterwards: Locust's statistics (``--json-file``, written at the end: count, failures, rate,
   p50/p99 per request type, unrounded from the summary line when there is one Locust process),
   each Locust process's ``community summary`` line (failures by kind, lag, posts, changes seen),
   the server's own count of answers by method and status (its log), and, once the server has
   stopped (SIGTERM; closing checkpoints the WAL), the database: the file's size, and the bytes
   of each table with its indexes (SQLite's ``dbstat``), per post and per member.

Every process is on 127.0.0.1, every wait has a timeout, every loop a bound; the temporary
directories are removed. Usage (the default runs, those of the docs, take about 9 minutes)::

    .venv/bin/python bench/community_load.py                       # 1,000 and 10,000 members, x2
    .venv/bin/python bench/community_load.py --members 10000 --poll-s 10,5,2.5 --runs 1 --pin \\
        --duration 60 --warmup 15                                  # where it saturates
    .venv/bin/python bench/community_load.py --quick               # ~25 s smoke run

``tests/test_community_loadtest.py`` uses :func:`start_server`, :func:`run_locust` and
:func:`final_poll` for its short run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from veil.clock import now_ms
from veil.community.db import CommunityDb
from veil.identity import Identity
from veil.protocol.community import build_link, open_answer, seal_request, sign_request

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "community_locustfile.py"
HOST = "127.0.0.1"
ROOMS = (("lobby", False), ("dev", False), ("random", False), ("news", True))
SEED_USERS = 50
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
START_S = 2.0
"""Locust's own start (imports, users spawned) before the test's clock starts, about."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
FINAL_POLL_PAGES = 1_000
WORDS = ("hello", "veil", "room", "post", "anyone", "here", "today", "thanks", "node", "idea")


# --- the server -----------------------------------------------------------------------------------


class _StandIn:
    """A blinded identity for load: a plain Ed25519 key under the ``25`` prefix."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.pubkey = "25" + self.identity.ed25519_public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return self.identity.sign(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _veil(*args: str, timeout: float = 30.0) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "veil", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"veil {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def _text(rng: random.Random) -> str:
    length = rng.randint(20, 300)
    words = [rng.choice(WORDS) for _ in range(length // 4 + 1)]
    return " ".join(words)[:length].rstrip()


@dataclass
class Server:
    """A ``veil community run`` process on a loopback port."""

    data_dir: Path
    url: str
    server_key: bytes
    process: subprocess.Popen[bytes]
    log_path: Path
    rooms: tuple[str, ...]
    seeded: dict[str, Any]
    """:func:`db_report` of the database as seeded, before the server started."""

    @property
    def link(self) -> str:
        return build_link(self.url, self.server_key, self.rooms[0]).veil_link()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "community.sqlite3"

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)

    def answers(self) -> dict[str, int]:
        """The server's own count of answers by "method status", from its log."""
        counts: dict[str, int] = {}
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                entry = orjson.loads(line)
                for key, count in (entry.get("answers") or {}).items():
                    counts[key] = counts.get(key, 0) + int(count)
        return counts


@contextlib.contextmanager
def start_server(base: Path, seed_posts: int = 500, seed: int = 1) -> Iterator[Server]:
    """A fresh server under ``base`` with the rooms of :data:`ROOMS`, each holding ``seed_posts``
    posts; stopped on exit."""
    data_dir = base / "community"
    port = _free_port()
    out = _veil("community", "init", "--data-dir", str(data_dir), "--listen", f"{HOST}:{port}")
    key = next(line.split()[-1] for line in out.splitlines() if line.startswith("server key"))
    rng = random.Random(seed)
    db = CommunityDb(data_dir / "community.sqlite3")
    try:
        start = now_ms() - seed_posts * 1000
        users = [db.user_id(_StandIn().pubkey, start) for _ in range(SEED_USERS)]
        for token, read_only in ROOMS:
            room = db.create_room(token, token.title(), "", read_only=read_only, now_ms=start)
            assert room is not None
            for index in range(seed_posts):
                author = rng.randrange(SEED_USERS)
                db.add_post(
                    room.id,
                    users[author],
                    f"seed-{author}",
                    _text(rng),
                    reply_to=None,
                    now_ms=start + index * 1000,
                )
    finally:
        db.close()  # the last connection: the WAL is checkpointed into the file
    seeded = db_report(data_dir / "community.sqlite3")
    log_path = base / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "veil", "community", "run", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(
        data_dir,
        f"http://{HOST}:{port}",
        bytes.fromhex(key),
        process,
        log_path,
        tuple(t for t, _ in ROOMS),
        seeded,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not listen within {START_TIMEOUT_S} s")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def call(server: Server, signer: Any, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """One sealed request POSTed to the server's ``/v1`` (signed unless ``signer`` is None)."""
    if signer is None:
        request: dict[str, Any] = {"method": method, "params": dict(params)}
    else:
        request = sign_request(signer, server.server_key, method, params)
    body, key = seal_request(server.server_key, request)
    post = urllib.request.Request(server.url + "/v1", data=body, method="POST")
    with urllib.request.urlopen(post, timeout=10) as answer:
        return open_answer(key, answer.read())


def room_seqnos(server: Server) -> dict[str, int]:
    answer = call(server, None, "rooms", {})
    assert answer["status"] == 200, answer
    return {room["token"]: room["seqno"] for room in answer["body"]}


def final_poll(server: Server, since: Mapping[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Every change after ``since`` (token → seqno), by a fresh member polling until no room
    answers ``more`` (at most FINAL_POLL_PAGES polls)."""
    signer = _StandIn()
    cursors = dict(since)
    changes: dict[str, list[dict[str, Any]]] = {token: [] for token in cursors}
    for _ in range(FINAL_POLL_PAGES):
        answer = call(server, signer, "poll", {"rooms": cursors})
        assert answer["status"] == 200, answer
        more = False
        for token, entry in answer["body"]["rooms"].items():
            assert entry["status"] == 200, entry
            changes[token].extend(entry["changes"])
            cursors[token] = entry["seqno"]
            more = more or entry["more"]
        if not more:
            return changes
    raise RuntimeError(f"the rooms still had more after {FINAL_POLL_PAGES} polls")


# --- CPU from /proc -------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all CPUs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


@dataclass
class Sample:
    at: float
    server: float
    locust: float
    busy: float
    total: float


def _shares(samples: list[Sample], warmup_s: float) -> dict[str, float]:
    """CPU shares (1.0 = one whole CPU) between the first sample after Locust's start and the
    warm-up, and the last but one."""
    if len(samples) < 3:
        return {}
    begin = samples[0].at + START_S + warmup_s
    start = next((s for s in samples if s.at >= begin), samples[0])
    end = samples[-2] if samples[-2].at > start.at else samples[-1]
    span = end.at - start.at
    if span <= 0:
        return {}
    return {
        "window_s": round(span, 1),
        "server_cpu": round((end.server - start.server) / span, 3),
        "locust_cpu": round((end.locust - start.locust) / span, 3),
        "machine_cpu": round((end.busy - start.busy) / span, 3),
        "other_cpu": round(
            (end.busy - start.busy - end.server + start.server - end.locust + start.locust) / span,
            3,
        ),
        "machine_cpus": round((end.total - start.total) / span, 2),
    }


# --- Locust ---------------------------------------------------------------------------------------


@dataclass
class LocustRun:
    returncode: int
    stats: dict[str, dict[str, Any]]
    """Request type (``poll``, ``post``...) → its entry of Locust's ``--json-file``."""
    summaries: list[dict[str, Any]]
    """Each Locust process's ``community summary`` line."""
    stderr: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(int(entry["num_requests"]) for entry in self.stats.values())

    @property
    def failed(self) -> int:
        return sum(int(entry["num_failures"]) for entry in self.stats.values())

    @property
    def failures(self) -> dict[str, int]:
        """Failures by kind, over the Locust processes."""
        kinds: dict[str, int] = {}
        for summary in self.summaries:
            for kind, count in summary.get("failures", {}).items():
                kinds[kind] = kinds.get(kind, 0) + int(count)
        return kinds

    def total(self, key: str) -> float:
        return float(sum(s.get(key, 0) for s in self.summaries))


def run_locust(
    server: Server,
    workdir: Path,
    *,
    members: int,
    duration_s: float,
    members_per_user: int = 100,
    processes: int = 1,
    settings: Mapping[str, str] | None = None,
    sample: bool = True,
    pin: bool = False,
) -> LocustRun:
    """A headless Locust run of ``members`` members against ``server``. ``pin``: the server on
    CPU 0 only, Locust (and its children) on the other CPUs."""
    users = max(1, members // members_per_user)
    stats_path = workdir / "locust-stats.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_COMMUNITY_")}
    env.update(
        {
            "VEIL_COMMUNITY_LINK": server.link,
            "VEIL_COMMUNITY_MEMBERS_PER_USER": str(members_per_user),
            "VEIL_COMMUNITY_MAX_RUN_S": str(int(duration_s) + 60),
            **(settings or {}),
        }
    )
    command = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
        *("-u", str(users), "-r", str(users), "-t", f"{int(duration_s)}s"),
        *("--stop-timeout", "5", "--only-summary", "--json-file", str(stats_path.with_suffix(""))),
    ]
    if processes > 1:
        command += ["--processes", str(processes)]
    err_path = workdir / "locust.err"
    samples: list[Sample] = []
    with err_path.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
        if pin:
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(server.process.pid, cpus[:1])
            os.sched_setaffinity(process.pid, cpus[1:] or cpus)  # before it forks workers
        deadline = time.monotonic() + duration_s + 60
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait(10)
                    raise RuntimeError("Locust did not stop in time")
                if sample:
                    pids = [process.pid, *_children(process.pid)]
                    busy, total = _machine()
                    samples.append(
                        Sample(
                            time.monotonic(),
                            _cpu_s(server.process.pid),
                            sum(_cpu_s(p) for p in pids),
                            busy,
                            total,
                        )
                    )
                time.sleep(1.0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    stats: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):  # written at the end of the run, with every request
        stats = {entry["name"]: entry for entry in orjson.loads(stats_path.read_bytes())}
    marker = "community summary: "
    summaries = [
        orjson.loads(line.split(marker, 1)[1]) for line in stderr.splitlines() if marker in line
    ]
    return LocustRun(int(process.returncode), stats, summaries, stderr, samples)


def bucket_percentile(response_times: Mapping[str, int], q: float) -> float:
    """A percentile from Locust's response-time histogram (ms, rounded as Locust rounds)."""
    counts = sorted((float(ms), int(n)) for ms, n in response_times.items())
    total = sum(n for _, n in counts)
    seen = 0
    for ms, n in counts:
        seen += n
        if seen >= q * total:
            return ms
    return counts[-1][0] if counts else 0.0


# --- the database -----------------------------------------------------------------------------


def db_report(path: Path) -> dict[str, Any]:
    """The file's size (and its WAL's, if any), rows, and the bytes of each table with its
    indexes (dbstat), per post."""
    files = {p.name: p.stat().st_size for p in path.parent.glob(path.name + "*")}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count = {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("posts", "users", "room_users", "reactions")
        }
        owners = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
        by_table: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owners.get(name, name)
            by_table[table] = by_table.get(table, 0) + int(size)
    finally:
        conn.close()
    posts = max(1, count["posts"])
    size = sum(files.values())
    return {
        "bytes": size,
        "files": files,
        "rows": count,
        "table_bytes": by_table,
        "bytes_per_post": round(size / posts),
        "posts_bytes_per_post": round(by_table.get("posts", 0) / posts),
    }


# --- the runs -----------------------------------------------------------------------------------


def one_run(args: argparse.Namespace, members: int, poll_s: float) -> dict[str, Any]:
    warmup = poll_s + 5 if args.warmup is None else args.warmup
    base = Path(tempfile.mkdtemp(prefix="veil-community-load-"))
    try:
        load_before = os.getloadavg()
        with start_server(base, args.seed_posts) as server:
            before = server.seeded
            settings = {
                "VEIL_COMMUNITY_WARMUP_S": str(warmup),
                "VEIL_COMMUNITY_POLL_S": str(poll_s),
                "VEIL_COMMUNITY_WRITERS": str(args.writers),
                "VEIL_COMMUNITY_WRITE_S": str(args.write_s),
            }
            run = run_locust(
                server,
                base,
                members=members,
                duration_s=args.duration,
                members_per_user=args.members_per_user,
                processes=args.processes,
                settings=settings,
                pin=args.pin,
            )
            load_after = os.getloadavg()
            code = server.stop()
            answers = server.answers()
            after = db_report(server.db_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    per_type = {}
    entries = run.stats.values()
    span = max(
        1e-3,
        max((e["last_request_timestamp"] or 0 for e in entries), default=0)
        - min((e["start_time"] for e in entries), default=0),
    )  # the run, from its first request to its last: the rates' common denominator
    for name, entry in run.stats.items():
        count = int(entry["num_requests"])
        per_type[name] = {
            "count": count,
            "failures": int(entry["num_failures"]),
            "per_s": round(count / span, 1),
            "p50_ms": bucket_percentile(entry["response_times"], 0.5),
            "p99_ms": bucket_percentile(entry["response_times"], 0.99),
            "avg_ms": round(entry["total_response_time"] / max(1, count), 2),
        }
    if len(run.summaries) == 1:  # unrounded percentiles from the one Locust process
        for name, figures in run.summaries[0].get("latency_ms", {}).items():
            if name in per_type:
                per_type[name]["p50_ms"] = figures["p50"]
                per_type[name]["p99_ms"] = figures["p99"]
    made = run.total("posts")
    grown = after["bytes"] - before["bytes"]

    def member_bytes(report: dict[str, Any]) -> int:
        return sum(report["table_bytes"].get(t, 0) for t in ("users", "room_users"))

    per_member = (member_bytes(after) - member_bytes(before)) / max(1, members)
    return {
        "members": members,
        "poll_s": poll_s,
        "users": max(1, members // args.members_per_user),
        "processes": args.processes,
        "pinned": args.pin,
        "duration_s": args.duration,
        "offered_polls_per_s": round(members / poll_s, 1),
        "locust_exit": run.returncode,
        "server_exit": code,
        "requests": run.requests,
        "failures": run.failed,
        "failure_kinds": run.failures,
        "per_type": per_type,
        "warmup_s": warmup,
        "summary": {
            key: run.total(key)
            for key in (
                "polls",
                "posts",
                "reactions",
                "posts_held_back",
                "late_polls",
                "changes_seen",
                "posts_seen_by_others",
            )
        },
        "changes_per_poll": round(run.total("changes_seen") / max(1.0, run.total("polls")), 1),
        "lag_s_p50": max((s["lag_s_p50"] for s in run.summaries), default=0.0),
        "lag_s_p99": max((s["lag_s_p99"] for s in run.summaries), default=0.0),
        "cpu": _shares(run.samples, warmup),
        "load_average": [round(v, 2) for v in (*load_before, *load_after)],
        "server_answers_not_200": {k: v for k, v in answers.items() if not k.endswith(" 200")},
        "db_before": before,
        "db_after": after,
        "db_growth_bytes": grown,
        "db_growth_per_post": round(grown / made) if made else None,
        "db_bytes_per_member": round(per_member),
        "locust_warnings": sorted(
            {line.split(": ", 1)[-1] for line in run.stderr.splitlines() if "WARNING" in line}
        )[:5],
    }


def _ms(figures: Mapping[str, Any]) -> str:
    if not figures:
        return "-"
    return f"{figures['p50_ms']:.2f} / {figures['p99_ms']:.2f}"


def _row(result: dict[str, Any]) -> str:
    t = result["per_type"]
    poll, post, react = t.get("poll", {}), t.get("post", {}), t.get("react", {})
    cpu = result["cpu"]
    return (
        f"| {result['members']:,} | {result['poll_s']:g} | {result['offered_polls_per_s']:,.0f} "
        f"| {poll.get('per_s', 0):,.0f} | {post.get('per_s', 0):.1f} "
        f"| {react.get('per_s', 0):.1f} | {result['changes_per_poll']:g} "
        f"| {_ms(poll)} | {_ms(post)} | {_ms(react)} "
        f"| {result['failures']} | {result['lag_s_p99']:.3f} "
        f"| {cpu.get('server_cpu', 0):.2f} | {cpu.get('locust_cpu', 0):.2f} "
        f"| {cpu.get('other_cpu', 0):.2f} | {result['db_after']['bytes']:,} "
        f"| {result['db_after']['posts_bytes_per_post']} | {result['db_bytes_per_member']} "
        f"| {result['load_average'][0]:.2f} |"
    )


HEADER = (
    "| members | poll s | offered polls/s | polls/s | posts/s | reacts/s | changes/poll "
    "| poll p50 / p99 ms "
    "| post p50 / p99 ms | react p50 / p99 ms | failures | lag p99 s | server CPU | Locust CPU "
    "| other CPU | db bytes | posts B/post | B/member | load avg |\n"
    "|" + "---:|" * 19
)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--members", default="1000,10000", help="members per run, a,b,...")
    parser.add_argument("--poll-s", default="10", help="poll intervals, a,b,... (seconds)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each (members, poll-s)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of each run")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds before the statistics and the CPU are measured (default: poll-s + 5)",
    )
    parser.add_argument("--writers", type=float, default=0.01, help="share of members who write")
    parser.add_argument("--write-s", type=float, default=30.0, help="a writer's mean gap, s")
    parser.add_argument("--members-per-user", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="Locust processes")
    parser.add_argument(
        "--pin", action="store_true", help="server on CPU 0 alone, Locust on the others"
    )
    parser.add_argument("--seed-posts", type=int, default=500, help="posts seeded per room")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--quick", action="store_true", help="500 members, 1 run of 15 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.members, args.runs, args.duration, args.seed_posts = "500", 1, 20.0, 50
        args.warmup = 5.0 if args.warmup is None else args.warmup
    if not 1 <= args.runs <= 10 or not 5 <= args.duration <= 900:
        parser.error("--runs is 1 to 10 and --duration 5 to 900 s")
    longest_poll = max(_floats(args.poll_s))
    if (args.warmup if args.warmup is not None else longest_poll + 5) >= args.duration - 5:
        parser.error("the warm-up must end at least 5 s before the run does")
    members = [int(m) for m in _floats(args.members)]
    polls = _floats(args.poll_s)
    results = []
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"{len(members) * len(polls) * args.runs} runs of {args.duration:g} s",
        flush=True,
    )
    for count in members:
        for poll_s in polls:
            for index in range(args.runs):
                result = one_run(args, count, poll_s)
                result["run"] = index + 1
                results.append(result)
                print(orjson.dumps(result).decode(), flush=True)
    print()
    print(HEADER)
    for result in results:
        print(_row(result))
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0 if all(r["failures"] == 0 and r["locust_exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
