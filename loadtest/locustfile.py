"""Locust load test of a Veil cluster: users that message each other through onion requests.

Every simulated user creates an account (``Identity.generate()``), learns the network from a seed
(``get_nodes``, every announcement verified), registers its Session ID in this process's user list,
and then, until the run ends:

- **sends** (weight 3) a text of 100-1,500 characters to another user of this process, as the
  messenger sends it (``veil.client.messaging.seal``: content v1, padded, Session Protocol; a
  namespace-0 store, TTL 10 min), through an onion request guard → relay → a member of the
  recipient's swarm;
- **polls** (weight 2) its own swarm: a signed retrieve from two different swarm members, each with
  its own cursor, the messages deduplicated by hash and opened by the messenger's own code
  (``Messenger.ingest``); a message that does not open, or names another sender, is a failure.

A request counts as a success only if the guard answers 200, the answer decrypts with the reply
key and the destination's inner status is 200. A "wrong swarm" (421) answer teaches the user the
account's swarm; it is listed as ``onion store (wrong swarm)`` and the request is sent once more.
At the end each Locust process logs how many messages its users stored and how many their
recipients' polls saw, with the delivery time (store timestamp to the poll that first saw it).

The cluster: ``VEIL_SEEDS=host:port,...``, else ``--host``, else the local devnet
(``.devnet/devnet.json`` in the current directory). See ``loadtest/README.md``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import veil_locust as vl
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from veil.client.account import Book
from veil.client.messaging import Messenger, seal
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.announcement import Announcement
from veil.protocol.content import Content

log = logging.getLogger("veil.loadtest")

TTL_MS = 10 * 60 * 1000
MESSAGE_CHARS = (100, 1500)
WORDS = ("onion", "swarm", "node", "veil", "hello", "message", "route", "key", "relay", "guard")
POLL_MEMBERS = 2
MAX_PAGES = 3
"""Most retrieve pages a poll reads from one swarm member (each page is one request)."""
NODES_REFRESH_S = 60.0
GUARDS = 3

ONION_HEADERS = {"Content-Type": "application/octet-stream"}
JSON_HEADERS = {"Content-Type": "application/json"}

_users: list[str] = []
"""Session IDs of this process's running users: who can be sent a message."""
_known: set[str] = set()
"""Every Session ID a user of this process ever had (senders of messages still in flight)."""
_totals = {"stored": 0, "delivered": 0, "opened": 0}
_delivery_ms: list[int] = []
"""Store timestamp to first sight in a recipient's poll, per delivered message (capped)."""
MAX_LATENCIES = 1_000_000

ParamsFor = Callable[[Announcement], dict[str, Any]]


def _default_seeds() -> list[str]:
    try:
        return vl.resolve_seeds(None)
    except ValueError:
        return []


_DEFAULT_SEEDS = _default_seeds()
_DEFAULT_HOST = f"http://{_DEFAULT_SEEDS[0]}" if _DEFAULT_SEEDS else None


class VeilUser(FastHttpUser):
    """One messenger account talking to the cluster through three-hop onion requests."""

    host = _DEFAULT_HOST
    wait_time = between(*vl.wait_range())
    connection_timeout = 5.0
    network_timeout = 35.0  # a node gives a whole onion request 30 s

    identity: Identity
    account: bytes
    directory: vl.Directory

    def on_start(self) -> None:
        self.rng = random.SystemRandom()
        self.identity = Identity.generate()
        # The messenger's own code, without its asyncio transport: seal() and ingest() only.
        self.mailbox = Messenger(self.identity, None, book=Book())
        self.account = bytes.fromhex(self.identity.session_id)
        # VEIL_SEEDS, else --host (which Locust writes over the class's default), else the devnet
        host = None if self.host == _DEFAULT_HOST else self.host
        self.seeds = vl.resolve_seeds(host)
        self.swarm_size = vl.swarm_size(host)
        self.seen: dict[str, int] = {}  # message hash -> expiry (ms), to deduplicate
        self.cursors: dict[bytes, str] = {}  # swarm member's Ed25519 id -> retrieve cursor
        self.guards: list[bytes] = []
        self.nodes_fetched = 0.0
        if not self._fetch_nodes():
            raise StopUser()
        _users.append(self.identity.session_id)
        _known.add(self.identity.session_id)

    def on_stop(self) -> None:
        if hasattr(self, "identity") and self.identity.session_id in _users:
            _users.remove(self.identity.session_id)

    # --- tasks ----------------------------------------------------------------------------------

    @task(3)
    def send_message(self) -> None:
        self._refresh_nodes()
        others = [u for u in _users if u != self.identity.session_id]
        recipient = self.rng.choice(others) if others else self.identity.session_id
        length = self.rng.randint(*MESSAGE_CHARS)
        text = " ".join(self.rng.choice(WORDS) for _ in range(length // 5))[:length]
        data = seal(self.identity, recipient, Content.text(text, vl.now_ms()))
        done = self._onion_rpc(
            "onion store",
            bytes.fromhex(recipient),
            "store",
            lambda _dest: storage_rpc.store_params(recipient, data, TTL_MS),
            expect="hash",
        )
        if done is not None:
            _totals["stored"] += 1

    @task(2)
    def poll(self) -> None:
        self._refresh_nodes()
        swarm = self.directory.swarm(self.account)
        for member in self.rng.sample(swarm, min(POLL_MEMBERS, len(swarm))):
            for _ in range(MAX_PAGES):
                done = self._onion_rpc(
                    "onion retrieve",
                    self.account,
                    "retrieve",
                    lambda dest: storage_rpc.retrieve_params(
                        self.identity, cursor=self.cursors.get(dest.ed25519)
                    ),
                    destination=member,
                    expect="messages",
                )
                if done is None:
                    break
                dest, body = done
                if body.get("cursor"):
                    self.cursors[dest.ed25519] = body["cursor"]
                self._received(body["messages"])
                if not body.get("more"):
                    break

    # --- the network ----------------------------------------------------------------------------

    def _fetch_nodes(self) -> bool:
        """Learn the network from a seed (each tried in turn); False if no seed gave 3 nodes."""
        request = orjson.dumps({"method": "get_nodes", "params": {}})
        for seed in self.rng.sample(self.seeds, len(self.seeds)):
            with self.client.post(
                f"http://{seed}{vl.RPC_PATH}",
                data=request,  # type: ignore[arg-type]  # bytes work; the hint is narrow
                headers=JSON_HEADERS,
                name="get_nodes",
                catch_response=True,
            ) as resp:
                if resp.status_code != 200:
                    resp.failure(f"get_nodes: HTTP {resp.status_code} {resp.error or ''}".strip())
                    continue
                try:
                    entries = orjson.loads(resp.content or b"")["nodes"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    resp.failure("get_nodes: not a node list")
                    continue
                nodes, bad = vl.verify_announcements(entries)
                if bad:
                    resp.failure(f"get_nodes: {bad} announcement(s) do not verify")
                    continue
                if len(nodes) < 3:
                    resp.failure(f"get_nodes: {len(nodes)} node(s); an onion path needs 3")
                    continue
                resp.success()
            if hasattr(self, "directory"):
                self.directory.replace(nodes)
            else:
                self.directory = vl.Directory(nodes, self.swarm_size)
            ids = list(self.directory.nodes)
            self.guards = self.rng.sample(ids, min(GUARDS, len(ids)))
            self.nodes_fetched = time.monotonic()
            return True
        return False

    def _refresh_nodes(self) -> None:
        if time.monotonic() - self.nodes_fetched > NODES_REFRESH_S:
            self._fetch_nodes()  # on failure keep the old list; the failure is counted

    def _onion_rpc(
        self,
        name: str,
        account: bytes,
        method: str,
        params_for: ParamsFor,
        *,
        destination: Announcement | None = None,
        expect: str,
    ) -> tuple[Announcement, dict[str, Any]] | None:
        """One storage RPC call through an onion, to ``destination`` or a member of ``account``'s
        swarm: (the destination, its answer) if it answered 200 with ``expect`` in it, else None
        (reported to Locust as a failure). A "wrong swarm" answer is retried once."""
        for attempt in range(2):
            if destination is None or attempt:
                destination = self.rng.choice(self.directory.swarm(account))
            try:
                guard, relay = self.directory.path(destination, self.rng, self.guards)
            except ValueError as exc:
                self._report_failure(name, str(exc))
                return None
            request = vl.build_request(guard, relay, destination, method, params_for(destination))
            with self.client.post(
                request.url,
                data=request.onion,  # type: ignore[arg-type]
                headers=ONION_HEADERS,
                name=name,
                catch_response=True,
            ) as resp:
                if resp.status_code != 200:
                    resp.failure(_path_failure(resp.status_code, resp.error))
                    return None
                try:
                    status, body = vl.open_reply(request.reply_key, resp.content or b"")
                except vl.BadReply as exc:
                    resp.failure(str(exc))
                    return None
                if status == 421 and attempt == 0 and self._learn_swarm(account, body):
                    resp.request_meta["name"] = f"{name} (wrong swarm)"
                    resp.success()
                    continue
                problem = _problem(method, status, body, expect)
                if problem:
                    resp.failure(problem)
                    return None
                resp.success()
                return destination, body
        return None

    def _learn_swarm(self, account: bytes, body: object) -> bool:
        error = body.get("error") if isinstance(body, dict) else None
        return isinstance(error, dict) and self.directory.learn_swarm(account, error.get("swarm"))

    def _received(self, messages: list[dict[str, Any]]) -> None:
        now = vl.now_ms()
        fresh = []
        for message in messages:
            digest = message["hash"]
            if digest in self.seen:
                continue
            fresh.append(message)
            self.seen[digest] = int(message["expiration"])
            _totals["delivered"] += 1
            if len(_delivery_ms) < MAX_LATENCIES:
                _delivery_ms.append(max(0, now - int(message["timestamp"])))
        before = self.mailbox.undecryptable
        opened = self.mailbox.ingest(fresh)
        _totals["opened"] += len(opened)
        if self.mailbox.undecryptable > before:
            self._report_failure("open message", "a message did not open")
        if any(e.sender not in _known for e in opened):
            self._report_failure("open message", "a message names a sender no user has")
        self.mailbox.book.conversations.clear()  # the load test keeps no history
        if len(self.seen) > 10_000:  # forget what has expired; nothing can bring it back
            self.seen = {h: e for h, e in self.seen.items() if e > now}

    def _report_failure(self, name: str, message: str) -> None:
        self.environment.events.request.fire(
            request_type="POST",
            name=name,
            response_time=0,
            response_length=0,
            exception=Exception(message),
            context={},
        )


def _problem(method: str, status: int, body: object, expect: str) -> str:
    """Why a decrypted answer is a failure, or "" if it is a success."""
    if status != 200:
        return f"{method}: status {status} {vl.error_code(body)}".strip()
    if not isinstance(body, dict) or expect not in body:
        return f"{method}: the answer has no {expect!r}"
    return ""


def _path_failure(status: int, error: object) -> str:
    if status == 502:
        return "path failed (HTTP 502)"
    if status == 503:
        return "overloaded somewhere on the path (HTTP 503)"
    if status == 0:
        return f"guard unreachable: {type(error).__name__}"
    return f"guard answered HTTP {status}"


def _check_cluster(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, MasterRunner | WorkerRunner):
        return  # a worker may still get the master's --host with its first spawn message
    if not environment.host and VeilUser.host is None:
        log.error("%s", _no_cluster_message())


def _no_cluster_message() -> str:
    try:
        vl.resolve_seeds(None)
    except ValueError as exc:
        return str(exc)
    return ""


def _summary(environment: Environment, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        log.info("veil: %s", delivery_summary())
    if environment.stats.total.num_requests == 0 and not isinstance(
        environment.runner, WorkerRunner
    ):
        log.error("veil: no request was made; is the cluster reachable?")
        environment.process_exit_code = 1


def delivery_summary() -> str:
    """Messages stored and delivered by this process's users, with delivery-time percentiles."""
    text = (
        f"{_totals['stored']} messages stored, {_totals['delivered']} seen by their recipients, "
        f"{_totals['opened']} opened"
    )
    if _delivery_ms:
        ranked = sorted(_delivery_ms)
        at = {q: ranked[min(len(ranked) - 1, int(q * len(ranked)))] for q in (0.5, 0.95)}
        text += f"; delivery ms p50 {at[0.5]}, p95 {at[0.95]}, max {ranked[-1]}"
    return text


# EventHook.add_listener is untyped, hence not used as a decorator
events.init.add_listener(_check_cluster)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_summary)  # type: ignore[no-untyped-call]
