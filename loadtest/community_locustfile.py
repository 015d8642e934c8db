"""Locust load test of ONE community server: many members polling their rooms, a few writing.

This measures the community server itself: requests are sealed and signed exactly as a client
seals them (``veil.protocol.community``) and POSTed straight to the server's ``<url>/v1``, as the
exit node of an onion request would POST them. No onion request and no node is involved.

Members, not Locust users: each Locust user simulates ``--community-members-per-user`` members
(default 100) in turn, each with its own blinded identity (a plain Ed25519 key under the ``25``
prefix: the server verifies nothing else), its own rooms and its own ``since`` cursor per room.
A user keeps its members' next actions in a heap and sleeps (gevent) until the next one is due, so
10,000 members are 100 Locust users, 100 connections and one process, not 10,000 greenlets:

- **poll**: every ``--community-poll-s`` seconds (default 10; the first at a random offset within
  the interval, so that the load is even from the start) a member polls all the rooms it reads in
  one batch ``poll`` with its cursors, as a client does; while a room answers ``more`` it polls
  again at once (at most 4 in a row). Every change is checked (seqno order, newer than since, the
  fields of a post or tombstone, the fields of a post's proof; ``--community-verify-share`` of the
  proofs verified with ``verify_post``, as a reader does) and the cursors advance to the answered
  ``seqno``.
- **write**: the first ``--community-writers`` share of the members (default 1%) also write, on
  average every ``--community-write-s`` seconds (Poisson): a reaction to a post they saw
  (``--community-react-share``, default 25%) or a post of 20-300 characters to a room they read
  that is not read-only. They keep to the server's advertised ``post_rate`` (from ``info``) as a
  client does; a post held back for it is counted, not sent.

A poll is due at a time; how late it started is the **lag**, logged at the end with the number
of polls more than one whole interval late: the sign that the load generator (or the server) did
not keep up with the offered load (members / poll interval). A late member polls as soon as it can
and does not make up missed polls.

Every answer is opened and checked: HTTP 200, the answer decrypts, its status is 200 and its body
has the method's shape; anything else is a Locust failure named by its kind. Statistics rows:
``info`` and ``rooms`` (each user's start, unsigned), ``poll``, ``post``, ``react``. At the end each
Locust process logs one line ``community summary: {json}`` (members, polls, posts, reactions, lag,
how long posts took to be seen by another member's poll); the exit code is 1 if any request
failed or none was made.

The server: ``--community-link`` / ``VEIL_COMMUNITY_LINK`` (a join link, either form), or
``VEIL_COMMUNITY_URL`` and ``VEIL_COMMUNITY_KEY``. Every run stops by itself: at ``-t`` or, at the
latest, after ``--community-max-run-s`` (default 600). See ``loadtest/README.md``, "A community
server".
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import community_locust as cl
import orjson
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from veil.clock import now_ms

log = logging.getLogger("veil.loadtest.community")

HEADERS = {"Content-Type": "application/octet-stream"}
CLOCK_TOLERANCE_MS = 2_000
"""Below this difference from the server's clock, requests are signed with the local clock."""

_totals = cl.Totals()
_state: dict[str, Any] = {"settings": None, "problem": ""}


def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("community server", "see loadtest/README.md")
    arguments = {
        "link": "join link of the server (veil://community?... or http(s)://host/room?public_key=)",
        "url": "the server's base URL (instead of a link; with --community-key)",
        "key": "the server key, 64 hex digits (with --community-url)",
        "rooms": "rooms to use, token,token,... (default: every room the server lists)",
        "members_per_user": "members each Locust user simulates (default 100)",
        "writers": "share of members who also write (default 0.01)",
        "rooms_per_member": "rooms each member reads (default 3)",
        "poll_s": "each member polls every this many seconds (default 10)",
        "write_s": "each writer writes on average every this many seconds (default 30)",
        "react_share": "share of writes that are reactions (default 0.25)",
        "join_share": "share of members whose first poll is a join, since=null (default 0)",
        "max_run_s": "stop every run after this many seconds, even without -t (default 600)",
        "warmup_s": "reset the statistics this many seconds after the start (default 0)",
        "verify_share": "share of posts polled whose proof is verified (default 0: shape only)",
    }
    for name, text in arguments.items():
        group.add_argument(
            "--community-" + name.replace("_", "-"),
            dest="community_" + name,
            env_var=cl.ENV[name],
            default="",
            help=text,
        )


def _settings(environment: Environment) -> cl.Settings:
    if _state["settings"] is None:
        options = environment.parsed_options
        if options is None:  # Locust used as a library: the environment variables only
            values: dict[str, object] = dict(cl.env_values())
        else:
            values = {name: getattr(options, "community_" + name, "") for name in cl.ENV}
        _state["settings"] = cl.settings_from(values)
    settings: cl.Settings = _state["settings"]
    return settings


class CommunityMembers(FastHttpUser):
    """One Locust user: ``members_per_user`` community members, each acting when due."""

    host = "http://127.0.0.1"  # the server's URL is the link's; set at init
    connection_timeout = 5.0
    network_timeout = 30.0  # the server's request_timeout_s
    concurrency = 1  # one greenlet per user: one connection is all it uses

    settings: cl.Settings
    members: list[cl.Member]

    def wait_time(self) -> float:
        return max(0.0, min(self.schedule.next_due() - time.monotonic(), 60.0))

    def on_start(self) -> None:
        # members' choices and timings, not secrets (the keys come from Identity.generate)
        self.rng = random.Random(random.SystemRandom().getrandbits(64))  # noqa: S311
        self.schedule = cl.Schedule()
        try:
            self.settings = _settings(self.environment)
        except ValueError as exc:
            if not _state["problem"]:  # else _init said it already
                log.error("community: %s", exc)
            raise StopUser() from None
        # the members' numbers (their names, member-N), taken before the first request yields
        first = _state["numbered"] = _state.get("numbered", 0) + self.settings.members_per_user
        first -= self.settings.members_per_user
        self.endpoint = self.settings.link.endpoint
        self.server_key = self.settings.link.server_key
        self.clock_offset_ms = 0
        info = self._call("info", None, "info", {}, _check_info)
        rooms = self._call("rooms", None, "rooms", {}, cl.check_rooms)
        if info is None or rooms is None:
            raise StopUser()
        limits = info["limits"]
        self.post_rate = int(limits["post_rate"])
        self.post_window_s = float(limits["post_rate_window_s"])
        skew = int(info["time"]) - now_ms()
        self.clock_offset_ms = skew if abs(skew) > CLOCK_TOLERANCE_MS else 0
        listed = {r["token"]: (r["seqno"], r["read_only"]) for r in rooms}
        wanted = self.settings.rooms or tuple(listed)
        missing = [r for r in wanted if r not in listed]
        if missing or not wanted:
            self._report_failure("rooms", f"rooms: the server has no room {missing or ''}")
            raise StopUser()
        self.members = cl.make_members(
            self.settings, {r: listed[r] for r in wanted}, self.rng, first
        )
        now = time.monotonic()
        for index, member in enumerate(self.members):
            self.schedule.add(now + self.rng.uniform(0, self.settings.poll_s), "poll", index)
            if member.writer and member.writable:
                self.schedule.add(
                    now + self.rng.expovariate(1 / self.settings.write_s), "write", index
                )
        _totals.users += 1
        _totals.members += len(self.members)
        _totals.writers += sum(m.writer for m in self.members)
        _totals.offered_polls_per_s += self.settings.offered_polls_per_s

    # --- the one task: whichever member is due acts -----------------------------------------------

    @task
    def act(self) -> None:
        now = time.monotonic()
        if self.schedule.next_due() > now:
            return  # wait_time sleeps until it is due
        due, kind, index = self.schedule.pop()
        member = self.members[index]
        if kind == "poll":
            late = now - due
            if _totals.measuring():
                _totals.lag.add(late)
                _totals.late_polls += late > self.settings.poll_s
            self._poll(member)
            # the next poll one interval after this one was due (at once if that has passed too):
            # a late member keeps its rhythm but never polls twice to make up
            self.schedule.add(max(due + self.settings.poll_s, time.monotonic()), "poll", index)
        else:
            self._write(member)
            gap = self.rng.expovariate(1 / self.settings.write_s)
            self.schedule.add(time.monotonic() + gap, "write", index)

    def _poll(self, member: cl.Member) -> None:
        for _ in range(cl.MAX_PAGES):
            asked = dict(member.cursors)

            def check(body: object, asked: dict[str, int | None] = asked) -> str:
                return cl.check_poll(body, asked, self._verify)

            body = self._call("poll", member, "poll", {"rooms": asked}, check)
            if body is None:
                return
            _totals.polls += 1
            more = False
            for token, entry in body["rooms"].items():
                member.cursors[token] = entry["seqno"]
                more = more or entry["more"]
                for change in entry["changes"]:
                    _totals.changes += 1
                    if change.get("deleted"):
                        continue
                    member.saw(token, change["id"])
                    if change["author"] != member.signer.pubkey:
                        _totals.seen_by_other(change["id"])
            if not more:
                return

    def _verify(self, room: str, change: dict[str, Any]) -> str:
        """A share of the posts with a proof: the proof verified as a reader verifies it."""
        if "proof" not in change or self.rng.random() >= self.settings.verify_share:
            return ""
        if not cl.verify_post(self.server_key, room, change):
            return "poll: a post's proof does not verify"
        _totals.proofs_verified += 1
        return ""

    def _write(self, member: cl.Member) -> None:
        room = self.rng.choice(member.writable)
        recent = member.recent.get(room)
        if recent and self.rng.random() < self.settings.react_share:
            params = {
                "room": room,
                "id": self.rng.choice(recent),
                "emoji": self.rng.choice(cl.EMOJI),
            }
            body = self._call("react", member, "react", params, cl.check_react)
            if body is not None:
                _totals.reactions += 1
                _totals.reactions_unchanged += not body["changed"]
            return
        if not member.may_post(room, time.monotonic(), self.post_rate, self.post_window_s):
            _totals.held_back += 1
            return
        params = {"room": room, "text": cl.post_text(self.rng), "name": member.name}
        posted = time.monotonic()
        body = self._call("post", member, "post", params, cl.check_post)
        if body is not None:
            _totals.posts += 1
            _totals.posted[body["id"]] = posted

    # --- one request --------------------------------------------------------------------------

    def _call(
        self,
        name: str,
        member: cl.Member | None,
        method: str,
        params: dict[str, Any],
        check: Callable[[Any], str],
    ) -> Any:
        """The body of a 200 answer whose shape ``check`` accepts, else None (a failure)."""
        signer = None if member is None else member.signer
        request, key = cl.seal(self.server_key, method, params, signer, self.clock_offset_ms)
        with self.client.post(
            self.endpoint,
            data=request,  # type: ignore[arg-type]
            headers=HEADERS,
            name=name,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_http_failure(resp.status_code, resp.error))
                return None
            try:
                answer = cl.open_sealed(key, resp.content or b"")
            except cl.BadAnswer as exc:
                resp.failure(str(exc))
                return None
            if answer["status"] != 200:
                resp.failure(f"{method}: status {answer['status']} {str(answer.get('error'))[:60]}")
                return None
            problem = check(answer.get("body"))
            if problem:
                resp.failure(problem)
                return None
            resp.success()
            return answer["body"]

    def _report_failure(self, name: str, message: str) -> None:
        self.environment.events.request.fire(
            request_type="POST",
            name=name,
            response_time=0,
            response_length=0,
            exception=Exception(message),
            context={},
        )


def _check_info(body: object) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("limits"), dict):
        return "info: the body has no limits"
    limits = body["limits"]
    if type(body.get("time")) is not int or not all(
        isinstance(limits.get(k), int | float) for k in ("post_rate", "post_rate_window_s")
    ):
        return "info: the body lacks time, post_rate or post_rate_window_s"
    return ""


def _http_failure(status: int, error: object) -> str:
    if status == 0:
        return f"connection: {type(error).__name__}"
    if status == 400:
        return "HTTP 400: the server could not open the request"
    return f"HTTP {status}"


# --- events -----------------------------------------------------------------------------------


def _init(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the workers simulate the members; the master needs no server
    try:
        settings = _settings(environment)
    except ValueError as exc:
        _state["problem"] = str(exc)
        log.error("community: %s", exc)
        return
    CommunityMembers.host = settings.link.url


def _start(environment: Environment, **_kwargs: Any) -> None:
    """At the start of the test (on every node): the warm-up, and the bound on the run."""
    runner = environment.runner
    if runner is None:
        return
    try:
        settings = _settings(environment)
        warmup_s, limit = settings.warmup_s, settings.max_run_s
    except ValueError:  # no server: said at init; the run is still bounded
        warmup_s, limit = 0.0, cl.MAX_RUN_S
    if not isinstance(runner, MasterRunner):
        _totals.started = time.monotonic()
        _totals.measure_from = _totals.started + warmup_s
    if isinstance(runner, WorkerRunner):
        return  # the master resets the statistics and stops the run

    def reset() -> None:
        # a failure in the warm-up must still fail the run: remember it before the reset
        _state["warmup_failures"] = environment.stats.total.num_failures
        environment.stats.reset_all()
        log.info("community: warm-up over (%g s); statistics reset", warmup_s)

    def stop() -> None:
        log.warning("community: --community-max-run-s (%g s) reached; stopping", limit)
        runner.quit()

    # threading is monkey-patched by Locust: these timers are greenlets
    for delay, action in ((warmup_s, reset), (limit, stop)):
        if delay > 0 and (action is stop or delay < limit):
            timer = threading.Timer(delay, action)
            timer.daemon = True
            timer.start()


def _answered(name: str, response_time: float, exception: object = None, **_kwargs: Any) -> None:
    if exception is None:
        _totals.answered(name, response_time)
    else:
        _totals.failed(name, str(exception)[:120])


def _summary(environment: Environment, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        summary = _totals.summary()
        summary["duration_s"] = round(time.monotonic() - _totals.started, 1)
        log.info("community summary: %s", orjson.dumps(summary).decode())
    if _state.get("warmup_failures"):
        log.error("community: %d request(s) failed in the warm-up", _state["warmup_failures"])
        environment.process_exit_code = 1
    if environment.stats.total.num_requests == 0 and not isinstance(
        environment.runner, WorkerRunner
    ):
        log.error(
            "community: no request was made; %s",
            _state["problem"] or "is the server reachable?",
        )
        environment.process_exit_code = 1


# EventHook.add_listener is untyped, hence not used as a decorator
events.init_command_line_parser.add_listener(_add_arguments)  # type: ignore[no-untyped-call]
events.init.add_listener(_init)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_start)  # type: ignore[no-untyped-call]
events.request.add_listener(_answered)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_summary)  # type: ignore[no-untyped-call]
