"""Helpers of the community load test (``loadtest/community_locustfile.py``), free of Locust.

- :class:`Settings`: the scenario's configuration, from Locust's custom arguments or the
  ``VEIL_COMMUNITY_*`` environment variables (:func:`settings_from`).
- :class:`StandIn`: a member's blinded identity. The server only verifies Ed25519 under the key of
  ``"25" ‖ hex``, so a plain :class:`~veil.identity.Identity` stands in for a blinded key, as in
  ``tests/test_community_server.py``.
- :class:`Member`: one simulated member: its identity, the rooms it reads with a ``since`` cursor
  each, whether it writes, the posts it saw lately (what it may react to) and its own recent posts
  (so that it keeps to the server's advertised ``post_rate``, as a client does).
- :class:`Schedule`: when each member of one Locust user polls and writes next (a heap).
- :func:`seal` / :func:`open_sealed`: a request sealed and signed as a client does
  (``veil.protocol.community``), and its answer opened.
- ``check_*``: the shape of every answer, as failures named by kind ("" when it is right).
- :class:`Totals`: what one Locust process's members did, for the summary line it logs at the end.
"""

from __future__ import annotations

import heapq
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from veil.clock import now_ms
from veil.errors import DecryptionError, InvalidInputError
from veil.identity import Identity
from veil.protocol.community import (
    CommunityLink,
    build_link,
    open_answer,
    parse_link,
    seal_request,
    sign_request,
    verify_post,
)

__all__ = [
    "EMOJI",
    "ENV",
    "MAX_PAGES",
    "MAX_RUN_S",
    "BadAnswer",
    "Member",
    "Reservoir",
    "Schedule",
    "Settings",
    "StandIn",
    "Totals",
    "Verify",
    "check_poll",
    "check_post",
    "check_react",
    "check_rooms",
    "env_values",
    "make_members",
    "open_sealed",
    "percentile",
    "post_text",
    "seal",
    "settings_from",
    "verify_post",
]

MAX_PAGES = 4
"""Most polls in a row one member makes while the server says ``more`` (then it waits)."""
MAX_RUN_S = 600.0
"""Default bound of a run, in seconds (``--community-max-run-s``)."""
RECENT_POSTS = 16
"""Post ids a member remembers per room, to react to."""
EMOJI = ("👍", "❤️", "😂", "🎉", "🙏", "👀", "🔥", "✅")
WORDS = (
    "hello", "veil", "community", "room", "onion", "post", "anyone", "here", "today", "works",
    "thanks", "nice", "release", "node", "question", "answer", "lobby", "idea", "yes", "maybe",
)  # fmt: skip
TEXT_CHARS = (20, 300)

ENV = {
    "link": "VEIL_COMMUNITY_LINK",
    "url": "VEIL_COMMUNITY_URL",
    "key": "VEIL_COMMUNITY_KEY",
    "rooms": "VEIL_COMMUNITY_ROOMS",
    "members_per_user": "VEIL_COMMUNITY_MEMBERS_PER_USER",
    "writers": "VEIL_COMMUNITY_WRITERS",
    "rooms_per_member": "VEIL_COMMUNITY_ROOMS_PER_MEMBER",
    "poll_s": "VEIL_COMMUNITY_POLL_S",
    "write_s": "VEIL_COMMUNITY_WRITE_S",
    "react_share": "VEIL_COMMUNITY_REACT_SHARE",
    "join_share": "VEIL_COMMUNITY_JOIN_SHARE",
    "max_run_s": "VEIL_COMMUNITY_MAX_RUN_S",
    "warmup_s": "VEIL_COMMUNITY_WARMUP_S",
    "verify_share": "VEIL_COMMUNITY_VERIFY_SHARE",
}
"""Setting → the environment variable that gives it (Locust's custom arguments read the same)."""


# --- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    link: CommunityLink
    """The server (its base URL and key); its room is ignored (see ``rooms``)."""
    rooms: tuple[str, ...] = ()
    """The rooms the members use; empty: every room the server lists."""
    members_per_user: int = 100
    writers: float = 0.01
    """Share of the members who write (they read too)."""
    rooms_per_member: int = 3
    poll_s: float = 10.0
    """Each member polls its rooms every this many seconds."""
    write_s: float = 30.0
    """Each writer writes (posts or reacts) on average every this many seconds (Poisson)."""
    react_share: float = 0.25
    """Share of writes that are reactions (to a post the writer saw), the rest posts."""
    join_share: float = 0.0
    """Share of members whose first poll is a join (``since`` null: the room's latest posts);
    the others start from the room's current seqno, as members who polled before the run."""
    max_run_s: float = MAX_RUN_S
    """Every run stops after this long, even without ``-t`` (:data:`MAX_RUN_S`)."""
    verify_share: float = 0.0
    """Share of the posts a poll returns whose proof (the author's signed request) is verified
    (``verify_post``: an Ed25519 verification each, client CPU); every proof's shape is checked."""
    warmup_s: float = 0.0
    """Locust's statistics, and the lag and latency of the summary, start again this long after
    the start (counts of polls, posts and failures do not)."""

    @property
    def offered_polls_per_s(self) -> float:
        """Polls a second that one Locust user's members offer."""
        return self.members_per_user / self.poll_s


def _number(value: object, name: str, low: float, high: float) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not low <= number <= high or math.isnan(number):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {number:g}")
    return number


def settings_from(values: Mapping[str, object]) -> Settings:
    """Settings from ``values`` (a setting's name → its text; missing or empty: the default).
    The server: ``link`` (a join link, either form), or ``url`` and ``key`` (64 hex digits).
    Raises ValueError saying what to set."""

    def get(name: str) -> str:
        value = values.get(name)
        return "" if value is None else str(value).strip()

    if get("link"):
        link = parse_link(get("link"))
    elif get("url") and get("key"):
        try:
            key = bytes.fromhex(get("key"))
        except ValueError:
            raise ValueError("the server key is not hexadecimal") from None
        link = build_link(get("url"), key, "x")
    else:
        raise ValueError(
            "no community server: set VEIL_COMMUNITY_LINK (a join link; or --community-link), "
            "or VEIL_COMMUNITY_URL and VEIL_COMMUNITY_KEY"
        )
    defaults = Settings(link)
    number: dict[str, float] = {}
    bounds = {
        "members_per_user": (1, 10_000),
        "writers": (0, 1),
        "rooms_per_member": (1, 64),
        "poll_s": (0.05, 3600),
        "write_s": (0.05, 3600),
        "react_share": (0, 1),
        "join_share": (0, 1),
        "max_run_s": (1, 86_400),
        "warmup_s": (0, 3600),
        "verify_share": (0, 1),
    }
    for name, (low, high) in bounds.items():
        text = get(name)
        number[name] = (
            _number(text, ENV[name], low, high) if text else float(getattr(defaults, name))
        )
    rooms = tuple(r.strip() for r in get("rooms").split(",") if r.strip())
    for room in rooms:
        build_link(link.url, link.server_key, room)  # checks the token
    return Settings(
        link,
        rooms,
        members_per_user=int(number["members_per_user"]),
        writers=number["writers"],
        rooms_per_member=int(number["rooms_per_member"]),
        poll_s=number["poll_s"],
        write_s=number["write_s"],
        react_share=number["react_share"],
        join_share=number["join_share"],
        max_run_s=number["max_run_s"],
        warmup_s=number["warmup_s"],
        verify_share=number["verify_share"],
    )


def env_values(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings given by environment variables."""
    env = os.environ if env is None else env
    return {name: env[var] for name, var in ENV.items() if env.get(var)}


# --- members --------------------------------------------------------------------------------------


class StandIn:
    """A blinded identity for load: a plain Ed25519 key under the ``25`` prefix (the server
    verifies Ed25519 under that key and nothing else)."""

    __slots__ = ("identity", "pubkey", "sign")

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.pubkey = "25" + self.identity.ed25519_public_key.hex()
        self.sign = self.identity.sign


@dataclass(slots=True)
class Member:
    number: int
    signer: StandIn
    cursors: dict[str, int | None]
    """Room token → the seqno seen (``since`` of the next poll); None: not polled yet (a join)."""
    writer: bool
    writable: tuple[str, ...]
    """The rooms it reads that are not read-only (a writer writes there)."""
    recent: dict[str, deque[int]] = field(default_factory=dict)
    """Room → post ids seen lately (what it may react to)."""
    posted: dict[str, deque[float]] = field(default_factory=dict)
    """Room → monotonic times of its own recent posts (to keep to the server's post_rate)."""

    @property
    def name(self) -> str:
        return f"member-{self.number}"

    def saw(self, room: str, post_id: int) -> None:
        seen = self.recent.get(room)
        if seen is None:
            seen = self.recent[room] = deque(maxlen=RECENT_POSTS)
        if post_id not in seen:
            seen.append(post_id)

    def may_post(self, room: str, now: float, rate: int, window_s: float) -> bool:
        """Whether a post now keeps to ``rate`` posts per ``window_s`` in ``room``; if so it is
        recorded."""
        times = self.posted.setdefault(room, deque())
        while times and times[0] <= now - window_s:
            times.popleft()
        if len(times) >= rate:
            return False
        times.append(now)
        return True


def _pick_rooms(rng: random.Random, rooms: Sequence[str], count: int) -> list[str]:
    """``count`` distinct rooms, the earlier ones in ``rooms`` more popular (weight 1 / rank)."""
    keyed = sorted(rooms, key=lambda r: -(rng.random() ** (rooms.index(r) + 1)))
    return keyed[: min(count, len(rooms))]


def make_members(
    settings: Settings,
    rooms: Mapping[str, tuple[int, bool]],
    rng: random.Random,
    first_number: int = 0,
) -> list[Member]:
    """One Locust user's members. ``rooms``: token → (its current seqno, read-only). Writers are
    the first ``round(writers * members_per_user)`` (at least one when ``writers`` > 0)."""
    tokens = list(rooms)
    count = settings.members_per_user
    writers = round(settings.writers * count)
    if settings.writers > 0:
        writers = max(1, writers)
    members = []
    for index in range(count):
        reads = _pick_rooms(rng, tokens, settings.rooms_per_member)
        joins = rng.random() < settings.join_share
        members.append(
            Member(
                number=first_number + index,
                signer=StandIn(),
                cursors={r: None if joins else rooms[r][0] for r in reads},
                writer=index < writers,
                writable=tuple(r for r in reads if not rooms[r][1]),
            )
        )
    return members


class Schedule:
    """When each member acts next: (due monotonic time, kind, member index) in a heap."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, int]] = []
        self._order = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due: float, kind: str, member: int) -> None:
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, kind, member))

    def next_due(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def pop(self) -> tuple[float, str, int]:
        due, _, kind, member = heapq.heappop(self._heap)
        return due, kind, member


# --- requests -------------------------------------------------------------------------------------


class BadAnswer(Exception):
    """The sealed answer did not open, or is not ``{"status", "body" | "error"}``."""


def seal(
    server_key: bytes,
    method: str,
    params: Mapping[str, Any],
    signer: StandIn | None,
    clock_offset_ms: int = 0,
) -> tuple[bytes, bytes]:
    """(the request body, the key of its answer): signed by ``signer`` (unsigned if None)."""
    if signer is None:
        request: dict[str, Any] = {"method": method, "params": dict(params)}
    else:
        ts = now_ms() + clock_offset_ms
        request = sign_request(signer, server_key, method, params, ts_ms=ts)
    return seal_request(server_key, request)


def open_sealed(key: bytes, body: bytes) -> dict[str, Any]:
    try:
        return open_answer(key, body)
    except DecryptionError:
        raise BadAnswer("the answer does not decrypt") from None
    except InvalidInputError:
        raise BadAnswer("the answer is not {status, body | error}") from None


def post_text(rng: random.Random) -> str:
    length = rng.randint(*TEXT_CHARS)
    words: list[str] = []
    size = -1
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length].rstrip() or "hello"


# --- checks: "" when the answer is right, else what is wrong (the failure's kind) -----------------


def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int


def _blinded(value: object) -> bool:
    return isinstance(value, str) and len(value) == 66 and value.startswith("25")


def check_rooms(body: object) -> str:
    if not isinstance(body, list):
        return "rooms: the body is not a list"
    for room in body:
        if not (
            isinstance(room, dict)
            and isinstance(room.get("token"), str)
            and _is_int(room.get("seqno"))
            and isinstance(room.get("read_only"), bool)
        ):
            return "rooms: a room lacks token, seqno or read_only"
    return ""


Verify = Callable[[str, dict[str, Any]], str]
"""(room, a live post's change) → "" if its proof is right, else what is wrong."""


def _proof_shape(proof: object) -> bool:
    return (
        isinstance(proof, dict)
        and set(proof) == {"method", "params", "ts", "nonce", "sig"}
        and proof["method"] in ("post", "edit")
        and isinstance(proof["params"], dict)
        and _is_int(proof["ts"])
        and isinstance(proof["nonce"], str)
        and isinstance(proof["sig"], str)
    )


def _check_change(  # noqa: PLR0911  (one return per thing that can be wrong)
    change: object, since: int | None, room_seqno: int, previous: int
) -> str:
    if not isinstance(change, dict) or not _is_int(change.get("id")):
        return "poll: a change has no id"
    seqno = change.get("seqno")
    if not _is_int(seqno) or seqno <= previous or seqno > room_seqno:
        return "poll: a change's seqno is out of order or beyond the room's"
    if since is not None and seqno <= since:
        return "poll: a change is not newer than since"
    if change.get("deleted") is True:
        return "" if set(change) == {"id", "seqno", "deleted"} else "poll: a tombstone has extras"
    if not (
        _blinded(change.get("author"))
        and isinstance(change.get("name"), str)
        and isinstance(change.get("text"), str)
        and change["text"]
        and _is_int(change.get("posted"))
        and isinstance(change.get("pinned"), bool)
        and isinstance(change.get("reactions"), dict)
    ):
        return "poll: a post lacks author, name, text, posted, pinned or reactions"
    if "proof" in change and not _proof_shape(change["proof"]):
        return "poll: a post's proof is not {method, params, ts, nonce, sig}"
    for reaction in change["reactions"].values():
        if not (
            isinstance(reaction, dict)
            and _is_int(reaction.get("count"))
            and reaction["count"] > 0
            and isinstance(reaction.get("you"), bool)
        ):
            return "poll: a reaction is not {count, you}"
    return ""


def check_poll(  # noqa: PLR0911  (one return per thing that can be wrong)
    body: object, asked: Mapping[str, int | None], verify: Verify | None = None
) -> str:
    """The answer to ``poll`` of ``asked`` (token → since); ``verify`` checks posts' proofs."""
    if not isinstance(body, dict) or not isinstance(body.get("rooms"), dict):
        return "poll: the body has no rooms"
    answered = body["rooms"]
    if set(answered) != set(asked):
        return "poll: the rooms answered are not the rooms asked"
    for token, since in asked.items():
        entry = answered[token]
        if not isinstance(entry, dict):
            return "poll: a room's entry is not an object"
        if entry.get("status") != 200:
            return f"poll room: status {entry.get('status')} {str(entry.get('error'))[:60]}"
        seqno, changes, more = entry.get("seqno"), entry.get("changes"), entry.get("more")
        if not (_is_int(seqno) and isinstance(changes, list) and isinstance(more, bool)):
            return "poll: a room's entry lacks seqno, changes or more"
        if since is not None and seqno < since:
            return "poll: the room's seqno went back"
        if since is None and "info" not in entry:
            return "poll: a first poll has no room info"
        previous = 0
        for change in changes:
            problem = _check_change(change, since, seqno, previous)
            if not problem and verify is not None and not change.get("deleted"):
                problem = verify(token, change)
            if problem:
                return problem
            previous = change["seqno"]
    return ""


def check_post(body: object) -> str:
    if not (isinstance(body, dict) and _is_int(body.get("id")) and _is_int(body.get("seqno"))):
        return "post: the body is not {id, seqno}"
    return ""


def check_react(body: object) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("changed"), bool):
        return "react: the body is not {changed, seqno}"
    seqno = body.get("seqno")
    if (body["changed"] and not _is_int(seqno)) or (not body["changed"] and seqno is not None):
        return "react: changed and seqno disagree"
    return ""


# --- what one process did -------------------------------------------------------------------------


class Reservoir:
    """A uniform sample of at most ``size`` values (Algorithm R), for percentiles over a run of
    any length in bounded memory."""

    def __init__(self, size: int = 100_000, seed: int | None = None) -> None:
        self.size = size
        self.count = 0
        self.values: list[float] = []
        self._rng = random.Random(seed)  # noqa: S311  (sampling, not secrets)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.count)
        if slot < self.size:
            self.values[slot] = value


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(slots=True)
class Totals:
    members: int = 0
    writers: int = 0
    users: int = 0
    polls: int = 0
    posts: int = 0
    reactions: int = 0
    reactions_unchanged: int = 0
    held_back: int = 0
    """Posts a writer did not make because they would have broken the server's post_rate."""
    changes: int = 0
    proofs_verified: int = 0
    lag: Reservoir = field(default_factory=Reservoir)
    """Seconds each poll started after its member's schedule said (the load generator's lag),
    after the warm-up."""
    late_polls: int = 0
    """Polls that started more than a whole poll interval late, after the warm-up."""
    delivery: Reservoir = field(default_factory=Reservoir)
    """Seconds from a post (this process's) to the first poll of another member that saw it."""
    posted: dict[int, float] = field(default_factory=dict)
    """This process's posts not yet seen by another member: id → monotonic time posted."""
    delivered: int = 0
    started: float = field(default_factory=time.monotonic)
    measure_from: float = 0.0
    """Monotonic time from which lag and latency are sampled (the end of the warm-up)."""
    offered_polls_per_s: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    """"request type: what was wrong" → how many (the failures by kind)."""
    latency_ms: dict[str, Reservoir] = field(default_factory=dict)
    """Request type → response times of its successes, in ms unrounded (Locust's statistics
    round them to whole milliseconds)."""

    def failed(self, name: str, problem: str) -> None:
        kind = f"{name}: {problem}"
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def measuring(self) -> bool:
        return time.monotonic() >= self.measure_from

    def answered(self, name: str, response_ms: float) -> None:
        if not self.measuring():
            return
        sample = self.latency_ms.get(name)
        if sample is None:
            sample = self.latency_ms[name] = Reservoir()
        sample.add(response_ms)

    def seen_by_other(self, post_id: int) -> None:
        posted = self.posted.pop(post_id, None)
        if posted is not None:
            self.delivered += 1
            self.delivery.add(time.monotonic() - posted)

    def summary(self) -> dict[str, Any]:
        lag, delivery = self.lag.values, self.delivery.values
        return {
            "users": self.users,
            "members": self.members,
            "writers": self.writers,
            "offered_polls_per_s": round(self.offered_polls_per_s, 2),
            "polls": self.polls,
            "posts": self.posts,
            "reactions": self.reactions,
            "reactions_unchanged": self.reactions_unchanged,
            "posts_held_back": self.held_back,
            "changes_seen": self.changes,
            "proofs_verified": self.proofs_verified,
            "posts_seen_by_others": self.delivered,
            "delivery_s_p50": round(percentile(delivery, 0.5), 3),
            "delivery_s_p95": round(percentile(delivery, 0.95), 3),
            "lag_s_p50": round(percentile(lag, 0.5), 4),
            "lag_s_p99": round(percentile(lag, 0.99), 4),
            "lag_s_max": round(max(lag, default=0.0), 4),
            "late_polls": self.late_polls,
            "measured_s": round(max(0.0, time.monotonic() - self.measure_from), 1),
            "failures": dict(sorted(self.failures.items())),
            "latency_ms": {
                name: {
                    "p50": round(percentile(sample.values, 0.5), 3),
                    "p99": round(percentile(sample.values, 0.99), 3),
                }
                for name, sample in sorted(self.latency_ms.items())
            },
        }
