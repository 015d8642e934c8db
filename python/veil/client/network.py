"""The network client: every request a client makes to a node travels as a three-hop onion request.

:class:`NetworkClient` builds each path from the nodes of the consensus it holds
(:class:`~veil.client.directory.ClientDirectory`, which only ever holds one that a majority of the
network file's authorities signed) as guard → relay → destination: three distinct nodes, the
destination never on its own path, the guard always one of the client's few guards
(:class:`~veil.client.guards.GuardSet`). By default requests travel on onion v2 circuits
(:mod:`veil.protocol.cells`): one per destination, set up once with a hybrid X25519 + ML-KEM-768
handshake per hop (``POST /onion2``, a create cell), then carrying each request in a fixed-size
data cell with symmetric keys only; a circuit is kept at most ``circuit_lifetime_s`` (idle:
``circuit_idle_s``) and rebuilt on any failure. A request asked once of a node (the consensus)
goes in a one-shot v2 cell; ``onion="v1"`` keeps version 1 onions
(:func:`veil.protocol.onion_request.build_request`). Bodies go to the guard over keep-alive HTTP
(aiohttp: no redirect followed, nothing decompressed), answers are read up to
``max_answer_bytes`` (:mod:`veil.client.http`) and opened with the keys of the request, and when a
path fails — the guard answers "path
failed" or "overloaded", cannot be reached, or the answer does not open or is too large — it avoids
those nodes for a while and builds another path. A failing guard is avoided the same way, in favour
of the client's other guards; it is never replaced for failing. Nodes are avoided by role: a
"path failed" answer blames the relay as a relay (it may well be one of the client's other guards,
which stays usable as a guard), and the guard itself once it has failed with two different relays
since it last delivered — a guard cut off from the rest of the network cannot pass its failures off
on the relays for long.

When the consensus is no longer fresh (past its ``fresh_until_ms``) the next request first asks a
node for a newer one, through an onion path (``get_consensus``), else the seeds
(:meth:`NetworkClient.refresh_consensus`); what they give is checked like any consensus. A node's
``421`` is only a hint to do the same, followed at most once per half period (1 s to 5 min) while
nothing newer turns up. A consensus past its validity that nothing can replace stops the client
(:class:`NetworkError`). :meth:`NetworkClient.request` is the only way client code reaches a node.
"""

from __future__ import annotations

import asyncio
import random
import time
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from veil.client.directory import ClientDirectory, ConsensusRefused
from veil.client.guards import GuardSet, NoGuardsError
from veil.client.http import AnswerTooLarge, client_session, read_bounded
from veil.client.http import url as http_url
from veil.clock import now_ms
from veil.errors import InvalidInputError, VeilError
from veil.protocol import cells
from veil.protocol.onion_request import build_request, open_reply
from veil.protocol.peers import PeerInfo

__all__ = ["ONION_MODES", "NetworkClient", "NetworkError"]

ONION_MODES = ("circuit", "oneshot", "v1")
"""How a client's requests travel: on onion v2 circuits (the default), in v2 one-shot cells, or
as version 1 onions."""


class NetworkError(VeilError):
    """No path delivered the request (after the configured number of attempts), or the client
    holds no consensus it may use."""


class NetworkClient:
    """Sends requests to nodes through onion paths. Use as
    ``async with NetworkClient(directory, guards=guards):``.

    ``guards`` is the client's guard set (kept in its home across runs); it is brought up to date
    with the consensus here and whenever a newer consensus is taken. :class:`NoGuardsError` if the
    consensus has no Guard node at all."""

    def __init__(
        self,
        directory: ClientDirectory,
        *,
        guards: GuardSet | None = None,
        attempts: int = 4,
        timeout_s: float = 30.0,
        avoid_s: float = 30.0,
        local_address: str | None = None,
        rng: random.Random | None = None,
        onion: str = "circuit",
        circuit_lifetime_s: float = 600.0,
        circuit_idle_s: float = 120.0,
        max_circuits: int = 64,
    ) -> None:
        if len(directory.nodes) < 3:
            raise NetworkError(
                f"the consensus lists {len(directory.nodes)} node(s); an onion path needs 3"
            )
        if onion not in ONION_MODES:
            raise ValueError(f"onion must be one of {', '.join(ONION_MODES)}")
        self.directory = directory
        self.onion = onion
        self.circuit_lifetime_s = circuit_lifetime_s
        self.circuit_idle_s = circuit_idle_s
        self.max_circuits = max_circuits
        self._circuits: dict[bytes, _OpenCircuit] = {}
        """destination → the circuit to it (at most ``max_circuits``, the oldest dropped)."""
        self.circuits_opened = 0
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.avoid_s = avoid_s
        self.local_address = local_address
        self._rng = rng or random.SystemRandom()
        self.guard_set = guards if guards is not None else GuardSet(rng=self._rng)
        self.guard_set.update(directory.consensus, now_ms())
        if not self.guard_set.ids:
            raise NoGuardsError("the consensus lists no Guard node: no way into the network")
        self._avoid_guard: dict[bytes, float] = {}
        self._avoid_relay: dict[bytes, float] = {}
        self._guard_failed_with: dict[bytes, bytes] = {}
        """guard → the relay of its last "path failed", forgotten once a request through it
        works."""
        self._session: aiohttp.ClientSession | None = None
        self._refresh: asyncio.Future[bool] | None = None
        self._next_refresh_ms = 0
        self.paths_failed = 0
        self.consensus_refused = 0
        """Consensus documents from nodes that did not pass the check."""

    async def __aenter__(self) -> NetworkClient:
        connector = aiohttp.TCPConnector(
            limit=0,
            keepalive_timeout=30,
            local_addr=(self.local_address, 0) if self.local_address else None,
        )
        self._session = client_session(connector=connector)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def nodes(self) -> list[PeerInfo]:
        """The nodes of the consensus held."""
        return self.directory.nodes

    @property
    def guards(self) -> list[PeerInfo]:
        """The nodes this client enters the network through (its guards in the consensus)."""
        peers = (self.directory.peer(node_id) for node_id in self.guard_set.ids)
        return [p for p in peers if p is not None]

    def choose_path(self, destination: PeerInfo) -> tuple[PeerInfo, PeerInfo]:
        """(guard, relay) for a request to ``destination``: three distinct nodes, the first one of
        the client's guards (one that has not failed lately, if any has not)."""
        now = time.monotonic()
        held = self.guards
        if not held:
            raise NetworkError("the consensus held lists none of this client's guards")
        guards = [g for g in held if g.x25519 != destination.x25519]
        if not guards:
            raise NetworkError("no guard of this client leads to that node (it is the only one)")
        guard = self._rng.choice(
            [g for g in guards if self._avoid_guard.get(g.x25519, 0.0) <= now] or guards
        )
        relays = [n for n in self.nodes if n.x25519 not in (guard.x25519, destination.x25519)]
        if not relays:
            raise NetworkError("an onion path needs three distinct nodes")
        relay = self._rng.choice(
            [n for n in relays if self._avoid_relay.get(n.x25519, 0.0) <= now] or relays
        )
        return guard, relay

    async def request(
        self,
        destination: PeerInfo,
        method: str,
        params: dict[str, Any],
        *,
        onion: str | None = None,
    ) -> tuple[int, Any]:
        """Send ``{"method", "params"}`` to ``destination``'s storage RPC through an onion path.

        Returns the destination's (status, answer). Raises :class:`NetworkError` if no path got
        through in ``attempts`` tries. ``onion`` overrides the client's way for this request (one
        of :data:`ONION_MODES`)."""
        await self._keep_fresh()
        payload = orjson.dumps({"method": method, "params": params})
        return await self._send(destination, payload, target="", mode=onion)

    async def request_external(
        self, destination: PeerInfo, url: str, body: bytes
    ) -> tuple[int, bytes, str]:
        """POST ``body`` to an external HTTP service at ``url`` through ``destination``.

        The destination node must list the URL's prefix among its ``external_services``; it answers
        403 otherwise. Returns (status, response body, content type).
        """
        await self._keep_fresh()
        status, (content, content_type) = await self._send(destination, body, target=url)
        return status, content, content_type

    # --- the consensus ------------------------------------------------------------------------

    def _refresh_gap_ms(self) -> int:
        """How long after a refresh that found nothing newer the next one is tried: half a
        period, from one second to five minutes."""
        return int(min(max(self.directory.network.period_s * 500, 1_000), 300_000))

    async def _keep_fresh(self) -> None:
        now = now_ms()
        if self.directory.fresh(now) or now < self._next_refresh_ms:
            return
        if self._refresh is not None and not self._refresh.done():
            return  # one is under way (perhaps this very request is part of it)
        await self.refresh_consensus()
        if not self.directory.usable(now_ms()):
            expired = time.strftime(
                "%Y-%m-%d %H:%M:%S UTC",
                time.gmtime(self.directory.consensus.valid_until_ms / 1000),
            )
            raise NetworkError(
                f"the consensus expired at {expired} and no node or seed gave a newer one"
            )

    async def refresh_consensus(self, *, hint: bool = False) -> bool:
        """Ask a node (through an onion path) for a newer consensus, else the seeds; True if one
        was taken. Concurrent callers share one refresh. A ``hint`` (a node's ``421``: what any
        node can send) is not followed within half a period of a refresh that found nothing
        newer, so that a node cannot make the client ask for the consensus at every request."""
        if hint and now_ms() < self._next_refresh_ms:
            return False
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._refresh_once())
        return await asyncio.shield(self._refresh)

    async def _refresh_once(self) -> bool:
        held = self.directory.consensus.period
        answered = False
        adopted = False
        # Not one of the client's guards, when another node will do: a guard sees the client's
        # address, and should not also run a request of the client's as its destination.
        guards = {g.x25519 for g in self.guards}
        candidates = [n for n in self.nodes if n.x25519 not in guards]
        self._rng.shuffle(candidates)
        candidates += [n for n in self.nodes if n.x25519 in guards]
        for node in candidates[:2]:
            try:
                # One-shot: a circuit to a node asked once would not be used again.
                mode = "v1" if self.onion == "v1" else "oneshot"
                status, body = await self.request(node, "get_consensus", {}, onion=mode)
            except NetworkError:
                continue
            if status != 200:
                continue
            try:
                signed = self.directory.check(body, f"node {node.ed25519.hex()[:16]}")
            except ConsensusRefused:
                self.consensus_refused += 1
                continue
            answered = True
            if self.directory.adopt(signed):
                adopted = True
                break
            if signed.consensus.period >= held:
                break  # it holds the same one: there is none newer yet
        if not answered and self._session is not None:
            adopted = await self.directory.fetch_from_seeds(self._session)
        if adopted:
            self.guard_set.update(self.directory.consensus, now_ms())
        self._next_refresh_ms = now_ms() + (0 if adopted else self._refresh_gap_ms())
        return adopted

    # --- paths --------------------------------------------------------------------------------

    async def _send(
        self, destination: PeerInfo, payload: bytes, target: str, mode: str | None = None
    ) -> tuple[int, Any]:
        last = "no answer"
        for _ in range(self.attempts):
            outcome = await self._attempt(destination, payload, target, mode or self.onion)
            if not isinstance(outcome, str):
                return outcome
            last = outcome
        raise NetworkError(f"no path delivered the request in {self.attempts} attempts ({last})")

    async def _attempt(
        self, destination: PeerInfo, payload: bytes, target: str, mode: str
    ) -> tuple[int, Any] | str:
        """One try: the answer, or why it failed (the nodes to blame are avoided already)."""
        circuit = self._circuit_to(destination) if mode == "circuit" else None
        if circuit is not None:
            guard, relay = circuit.guard, circuit.relay
        else:
            guard, relay = self.choose_path(destination)
        path = [guard.x25519, relay.x25519, destination.x25519]
        if mode == "circuit" and circuit is None:
            create, pending = cells.build_create(path)
            answer = await self._exchange(guard, relay, "/onion2", create)
            if isinstance(answer, str):
                return answer
            try:
                opened = cells.Circuit.finish(pending, answer)
            except InvalidInputError:  # DecryptionError included
                self._path_failed(guard=guard, relay=relay)
                return "the circuit's handshake did not open"
            circuit = self._keep_circuit(destination, guard, relay, opened)
        if circuit is not None:
            body, reply = circuit.keys.seal(payload, target=target)
            answer = await self._exchange(guard, relay, "/onion2", body)
        elif mode == "oneshot":
            body, reply = cells.build_oneshot(path, payload, target=target)
            answer = await self._exchange(guard, relay, "/onion2", body)
        else:
            onion, reply_key = build_request(path, payload, target=target)
            answer = await self._exchange(guard, relay, "/onion_req", onion)
        if isinstance(answer, str):
            self._circuits.pop(destination.x25519, None)
            return answer
        try:
            if mode == "v1":
                answered = open_reply(reply_key, answer, external=bool(target))
            else:
                answered = cells.open_answer(reply, answer, external=bool(target))
        except InvalidInputError:  # DecryptionError included
            self._circuits.pop(destination.x25519, None)
            self._path_failed(guard=guard, relay=relay)
            return "the answer did not open"
        self._guard_failed_with.pop(guard.x25519, None)
        return answered

    async def _exchange(
        self, guard: PeerInfo, relay: PeerInfo, endpoint: str, body: bytes
    ) -> bytes | str:
        """POST ``body`` to ``guard``: the body of its 200 answer, or why not (after avoiding the
        nodes to blame)."""
        if self._session is None:
            raise RuntimeError("use NetworkClient as an async context manager")
        try:
            async with self._session.post(
                http_url(guard.http, endpoint),
                data=body,
                headers={"Content-Type": "application/octet-stream"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as answer:
                status = answer.status
                content = await read_bounded(answer, self.directory.max_answer_bytes, "the path")
        except AnswerTooLarge as exc:  # the guard, or a node behind it, sends too much
            self._path_failed(guard=guard, relay=relay)
            return str(exc)
        except (aiohttp.ClientError, TimeoutError, OSError):
            self._path_failed(guard=guard)
            return "the guard could not be reached"
        if status == 200:
            return content
        if status == 503:  # overloaded somewhere on the path: another path, nobody blamed
            self.paths_failed += 1
            return "the path was overloaded"
        if status == 410:  # the guard no longer holds the circuit (expired, or restarted)
            self.paths_failed += 1
            return "the circuit was gone"
        # The guard answered, so the failure was further along: the relay is blamed, and the
        # guard too once it has failed with two different relays.
        before = self._guard_failed_with.get(guard.x25519, relay.x25519)
        self._guard_failed_with[guard.x25519] = relay.x25519
        self._path_failed(guard=guard if before != relay.x25519 else None, relay=relay)
        return "the path failed"

    # --- circuits -----------------------------------------------------------------------------

    def _circuit_to(self, destination: PeerInfo) -> _OpenCircuit | None:
        """The open circuit to ``destination``, if one is young and fresh enough and its guard
        and relay are still in the consensus."""
        circuit = self._circuits.get(destination.x25519)
        if circuit is None:
            return None
        now = time.monotonic()
        keys = circuit.keys
        usable = (
            now - keys.opened_at < self.circuit_lifetime_s
            and now - keys.last_used < self.circuit_idle_s
        )
        period = self.directory.consensus.period
        if usable and circuit.period != period:  # a new consensus: do its nodes still serve?
            listed = {n.x25519 for n in self.nodes}
            usable = circuit.guard.x25519 in listed and circuit.relay.x25519 in listed
            circuit.period = period
        if not usable:
            del self._circuits[destination.x25519]
            return None
        return circuit

    def _keep_circuit(
        self, destination: PeerInfo, guard: PeerInfo, relay: PeerInfo, keys: cells.Circuit
    ) -> _OpenCircuit:
        while len(self._circuits) >= self.max_circuits:
            del self._circuits[next(iter(self._circuits))]
        circuit = _OpenCircuit(guard, relay, keys, self.directory.consensus.period)
        self._circuits[destination.x25519] = circuit
        self.circuits_opened += 1
        return circuit

    def _path_failed(self, *, guard: PeerInfo | None = None, relay: PeerInfo | None = None) -> None:
        """Avoid ``guard`` (in either role: it failed as the client's way in) and ``relay`` (as a
        relay only) for ``avoid_s``."""
        self.paths_failed += 1
        until = time.monotonic() + self.avoid_s
        if guard is not None:
            self._avoid_guard[guard.x25519] = until
            self._avoid_relay[guard.x25519] = until
        if relay is not None:
            self._avoid_relay[relay.x25519] = until


class _OpenCircuit:
    """A circuit this client holds, with the guard and relay it goes through."""

    __slots__ = ("guard", "keys", "period", "relay")

    def __init__(self, guard: PeerInfo, relay: PeerInfo, keys: cells.Circuit, period: int) -> None:
        self.guard = guard
        self.relay = relay
        self.keys = keys
        self.period = period
        """The consensus period in which its guard and relay were last seen listed."""
