"""Locust load test of a Veil cluster: users that message each other through onion requests.

Every simulated user creates an account (``Identity.generate()``), finds the network as a client
does — the network file (the authorities it trusts), and the consensus fetched from a seed
(``GET /consensus``), taken only if a majority of the file's authorities signed it — registers its
Session ID in this process's user list, and then, until the run ends:

- **sends** (weight 3) a text of 100-1,500 characters to another user of this process, as the
  messenger sends it (``veil.client.messaging.seal``: content v1, padded, Session Protocol; a
  namespace-0 store, TTL 10 min), through an onion request guard → relay → a member of the
  recipient's swarm;
- **polls** (weight 2) its own swarm: a signed retrieve from two different swarm members, each with
  its own cursor, the messages deduplicated by hash and opened by the messenger's own code
  (``Messenger.ingest``); a message that does not open, or names another sender, is a failure.

Swarms are computed from the consensus, with its placements, as the nodes compute them. A request
counts as a success only if the guard answers 200, the answer decrypts with the reply keys and the
destination's inner status is 200. Requests travel on onion v2 circuits, as the client's do: a user
opens one per destination (``circuit create``, a request of its own in the statistics) and uses it
until it fails. A "wrong swarm" (421) answer is only a reason to fetch the
consensus again: if by the consensus then held the node is no longer in the account's swarm, the
421 is listed as ``onion store (wrong swarm)`` and the request is sent once more, to a member of
the swarm computed from it; otherwise the 421 is a failure. What the node names as the swarm is
never used. At the end each Locust process logs how many messages its users stored and how many
their recipients' polls saw, with the delivery time (store timestamp to the poll that first saw
it).

The network file: ``VEIL_NETWORK``, else the local devnet's (``.devnet/network.json`` in the current
directory). The seeds: ``VEIL_SEEDS=host:port,...``, else ``--host``, else the ``seeds`` of the
``devnet.json`` beside the network file. See ``loadtest/README.md``.
"""

from __future__ import annotations

import logging
import random
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
from veil.protocol.network_file import NetworkFile

log = logging.getLogger("veil.loadtest")

TTL_MS = 10 * 60 * 1000
MESSAGE_CHARS = (100, 1500)
WORDS = ("onion", "swarm", "node", "veil", "hello", "message", "route", "key", "relay", "guard")
POLL_MEMBERS = 2
MAX_PAGES = 3
"""Most retrieve pages a poll reads from one swarm member (each page is one request)."""
CONSENSUS_REFRESH_MS = 60_000
"""How often a user fetches the consensus again, at most (and no sooner than it stops being fresh;
sooner if half of what is left of its validity has passed)."""

ONION_HEADERS = {"Content-Type": "application/octet-stream"}
MAX_CIRCUITS = 16
"""Most circuits one user keeps (one per destination; the oldest is dropped)."""

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
    network: NetworkFile
    directory: vl.Directory | None = None

    def on_start(self) -> None:
        self.rng = random.SystemRandom()
        self.identity = Identity.generate()
        # The messenger's own code, without its asyncio transport: seal() and ingest() only.
        self.mailbox = Messenger(self.identity, None, book=Book())
        self.account = bytes.fromhex(self.identity.session_id)
        # VEIL_SEEDS, else --host (which Locust writes over the class's default), else the devnet
        host = None if self.host == _DEFAULT_HOST else self.host
        try:
            self.network = vl.load_network()
            self.seeds = vl.resolve_seeds(host)
        except ValueError as exc:
            log.error("veil: %s", exc)
            raise StopUser() from None
        self.swarm_size = vl.swarm_size()
        self.seen: dict[str, int] = {}  # message hash -> expiry (ms), to deduplicate
        self.cursors: dict[bytes, str] = {}  # swarm member's Ed25519 id -> retrieve cursor
        self.guards: list[bytes] = []
        self.circuits: dict[bytes, vl.OpenCircuit] = {}  # destination's Ed25519 id -> circuit
        self.next_fetch_ms = 0
        self.refetch_after_ms = 0  # a "wrong swarm" answer refetches no sooner than this
        if not self._fetch_consensus():
            raise StopUser()
        _users.append(self.identity.session_id)
        _known.add(self.identity.session_id)

    def on_stop(self) -> None:
        if hasattr(self, "identity") and self.identity.session_id in _users:
            _users.remove(self.identity.session_id)

    # --- tasks ----------------------------------------------------------------------------------

    @task(3)
    def send_message(self) -> None:
        self._refresh_consensus()
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
        swarm = self._refresh_consensus().swarm(self.account)
        for member in self.rng.sample(swarm, min(POLL_MEMBERS, len(swarm))):
            for _ in range(MAX_PAGES):
                done = self._onion_rpc(
                    "onion retrieve",
                    self.account,
                    "retrieve",
                    lambda dest: storage_rpc.retrieve_params(
                        self.identity, cursor=self.cursors.get(dest.ed25519, "")
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

    def _fetch_consensus(self) -> bool:
        """Fetch the consensus from a seed (each tried in turn until one gives a consensus that
        verifies) and take it if it is newer than the one held; False if no seed gave one."""
        for seed in self.rng.sample(self.seeds, len(self.seeds)):
            with self.client.get(
                f"http://{seed}{vl.CONSENSUS_PATH}",
                name="consensus",
                allow_redirects=False,
                catch_response=True,
            ) as resp:
                if resp.status_code != 200:
                    resp.failure(f"consensus: HTTP {resp.status_code} {resp.error or ''}".strip())
                    continue
                try:
                    document = orjson.loads(resp.content or b"")
                    signed = vl.verify_consensus(document, self.network, vl.now_ms())
                except orjson.JSONDecodeError:
                    resp.failure("consensus: the answer is not JSON")
                    continue
                except ValueError as exc:
                    resp.failure(f"consensus: {exc}")
                    continue
                nodes = signed.consensus.nodes
                if len(nodes) < 3:
                    resp.failure(f"consensus: {len(nodes)} node(s); an onion path needs 3")
                    continue
                if not any(e.guard for e in nodes):
                    resp.failure("consensus: no Guard node to enter the network through")
                    continue
                resp.success()
            if self.directory is None:
                self.directory = vl.Directory(signed, self.swarm_size)
            else:
                self.directory.adopt(signed)
            self.guards = self.directory.pick_guards(self.rng, self.guards)
            consensus = self.directory.signed.consensus
            now = vl.now_ms()
            self.next_fetch_ms = max(
                consensus.fresh_until_ms,
                min(now + CONSENSUS_REFRESH_MS, (now + consensus.valid_until_ms) // 2),
            )
            return True
        return False

    def _refresh_consensus(self) -> vl.Directory:
        """The directory, with the consensus fetched again first if that is due."""
        if vl.now_ms() >= self.next_fetch_ms:
            self._fetch_consensus()  # on failure keep the one held; the failure is counted
        assert self.directory is not None
        return self.directory

    def _swarm_moved(self, account: bytes, destination: Announcement) -> bool:
        """After ``destination`` answered "wrong swarm" for ``account``: fetch the consensus again
        (at most once per half period) and say whether, by the consensus then held, the
        destination is no longer a member of the account's swarm. What the node named is not
        used."""
        assert self.directory is not None
        now = vl.now_ms()
        if now >= self.refetch_after_ms:
            self.refetch_after_ms = now + int(min(max(self.network.period_s * 500, 1_000), 300_000))
            self._fetch_consensus()
        return all(a.ed25519 != destination.ed25519 for a in self.directory.swarm(account))

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
        (reported to Locust as a failure). After a "wrong swarm" answer the consensus is fetched
        again; if the destination is no longer in the account's swarm by it, the request is sent
        once more, to a member of the swarm computed from it, else the 421 is a failure."""
        assert self.directory is not None
        for attempt in range(2):
            if destination is None or attempt:
                destination = self.rng.choice(self.directory.swarm(account))
            circuit = self._circuit(name, destination)
            if circuit is None:
                return None
            request = vl.build_request(circuit, destination, method, params_for(destination))
            with self.client.post(
                request.url,
                data=request.onion,  # type: ignore[arg-type]
                headers=ONION_HEADERS,
                name=name,
                catch_response=True,
            ) as resp:
                if resp.status_code != 200:
                    self.circuits.pop(destination.ed25519, None)
                    resp.failure(_path_failure(resp.status_code, resp.error))
                    return None
                try:
                    status, body = vl.open_reply(request.reply, resp.content or b"")
                except vl.BadReply as exc:
                    self.circuits.pop(destination.ed25519, None)
                    resp.failure(str(exc))
                    return None
                if status == 421 and attempt == 0 and self._swarm_moved(account, destination):
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

    def _circuit(self, name: str, destination: Announcement) -> vl.OpenCircuit | None:
        """The user's circuit to ``destination``, opened now if it has none (None: reported)."""
        circuit = self.circuits.get(destination.ed25519)
        if circuit is not None:
            return circuit
        assert self.directory is not None
        try:
            guard, relay = self.directory.path(destination, self.rng, self.guards)
        except ValueError as exc:
            self._report_failure(name, str(exc))
            return None
        url, body, pending = vl.build_create(guard, relay, destination)
        with self.client.post(
            url,
            data=body,  # type: ignore[arg-type]
            headers=ONION_HEADERS,
            name="circuit create",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(_path_failure(resp.status_code, resp.error))
                return None
            try:
                circuit = vl.finish_circuit(guard, relay, pending, resp.content or b"")
            except vl.BadReply as exc:
                resp.failure(str(exc))
                return None
            resp.success()
        if len(self.circuits) >= MAX_CIRCUITS:
            del self.circuits[next(iter(self.circuits))]
        self.circuits[destination.ed25519] = circuit
        return circuit

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
    if isinstance(environment.runner, MasterRunner):
        return  # the workers find the network; the master sends them its --host only
    problem = _no_network_message()
    if problem:
        log.error("veil: %s", problem)
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # a worker may still get the master's --host with its first spawn message
    if not environment.host and VeilUser.host is None:
        log.error("veil: %s", _no_seeds_message())


def _no_network_message() -> str:
    try:
        vl.load_network()
    except ValueError as exc:
        return str(exc)
    return ""


def _no_seeds_message() -> str:
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
