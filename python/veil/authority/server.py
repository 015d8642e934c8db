"""A running directory authority: its HTTP API, its link port and its schedule, on uvloop.

:func:`run_authority` is what ``veil authority run`` calls; :class:`Authority` is the same thing for
tests and embedding (``await start()``, then ``await stop()``). The HTTP layer is the node's
(``veil.node.http``: its limits, its per-source connection caps). Routes (``docs/protocol.md``,
"Directory authorities")::

    POST /authority/v1/register            a node's signed announcement  → 202 {status, period}
    GET  /authority/v1/consensus           the latest published consensus (404: none, or expired)
    GET  /authority/v1/consensus/{period}  a recent published one (404: not held)
    POST /authority/v1/vote                another authority's signed vote → 202 {status}
    GET  /authority/v1/vote/{period}       this authority's own vote of that period
    POST /authority/v1/signature           another authority's consensus signature → 202 {status}
    GET  /metrics                          Prometheus text

Errors are ``{"error": {"code", "message"}}``, never a traceback. :meth:`Authority.start` either
opens both ports or leaves none open; :meth:`Authority.stop` (SIGTERM, SIGINT) closes the ports,
lets requests in flight finish (up to ``drain_timeout_s``), closes every connection and link, and
saves the state — each step even if one before it failed, so no socket outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import uvloop

from veil import _core
from veil.authority import files
from veil.authority.candidates import Candidate, CandidateBook
from veil.authority.config import AuthorityConfig, ConfigError, check_config, load_allowlist
from veil.authority.files import AuthorityFiles
from veil.authority.ledger import ConsensusLedger
from veil.authority.metrics import AuthorityMetrics
from veil.authority.peers import AuthorityPeers, SenderCheck
from veil.authority.reachability import LinkProbe
from veil.authority.registration import Registrar, error_body
from veil.authority.rounds import Rounds
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.node.http import BodyGate, HttpApp, Request, Response
from veil.node.identity import load_node_key
from veil.node.lifecycle import serve_until_signalled
from veil.node.links import HopFailed, Link, LinkGate, LinkHandlers
from veil.protocol import authority_post
from veil.protocol.consensus import SignedConsensus, SignedVote
from veil.protocol.network_file import NetworkFile

__all__ = ["Authority", "load_authority_key", "run_authority"]

log = logging.getLogger("veil.authority")

_PREFIX = b"/authority/v1/"
_SAVE_INTERVAL_S = 1.0
"""How often changed candidates are written to candidates.json (not a limit)."""


def load_authority_key(config: AuthorityConfig) -> Identity:
    """The authority's identity, from its key file (mode 0600, as a node's)."""
    if not config.key_path.exists():
        raise ConfigError(f"{config.key_path} does not exist; run `veil authority init` first")
    return load_node_key(config.key_path)


def _json(status: int, document: Any) -> Response:
    return Response(status, orjson.dumps(document))


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, error_body(code, message))


async def _serve_nothing(peer: bytes, body: bytes) -> bytes:
    raise HopFailed()


class Authority:
    """One directory authority of ``network``: ``await start()`` opens its HTTP and link ports
    and starts its schedule, ``await stop()`` ends it (both on the running loop). The ports are
    ``config``'s (port 0: any; :attr:`port` and :attr:`link_port` are the bound ones after start).
    ``drain_timeout_s`` overrides ``[http] drain_timeout_s``."""

    def __init__(
        self,
        config: AuthorityConfig,
        network: NetworkFile,
        *,
        drain_timeout_s: float | None = None,
    ) -> None:
        check_config(config)
        self.config = config
        self.network = network
        self.drain_timeout_s = (
            config.http.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        )
        self.identity = load_authority_key(config)
        own = self.identity.ed25519_public_key
        if network.authority(own) is None:
            raise ConfigError(
                f"this authority's key {own.hex()} is not in the network file of "
                f"{network.name!r}; add its entry (veil authority init prints it)"
            )
        admission = config.admission
        allowlist = (
            load_allowlist(config.allowlist_path) if admission.policy == "allowlist" else None
        )
        self.key = _core.NodeKey(self.identity.x25519_secret_key)
        self.files = AuthorityFiles(config.data_dir)
        self.book = CandidateBook(admission, allowlist)
        self.ledger = ConsensusLedger(network, self.identity)
        self._load()
        self.metrics = AuthorityMetrics(
            candidates=lambda: len(self.book),
            admitted=lambda: len(self.ledger.latest_admitted),
            latest_period=self._latest_period,
        )
        self.probe = LinkProbe(
            key=self.key,
            timeout_s=admission.check_timeout_s,
            concurrency=admission.check_concurrency,
            count=self._link_event,
        )
        self.peers = AuthorityPeers(
            network,
            own,
            sign=self.identity.sign,
            timeout_s=config.schedule.peer_timeout_s,
            max_answer_bytes=config.http.max_vote_bytes,
        )
        self._candidates_dirty = False
        self.rounds = Rounds(
            network=network,
            schedule=config.schedule,
            admission=admission,
            ledger=self.ledger,
            book=self.book,
            probe=self.probe,
            peers=self.peers,
            files=self.files,
            metrics=self.metrics,
            on_candidates_changed=self._candidates_changed,
        )
        self.registrar = Registrar(
            book=self.book,
            probe=self.probe,
            per_minute=admission.registrations_per_minute_per_address,
            max_sources=admission.rate_limit_max_addresses,
            clock_skew_ms=int(admission.max_clock_skew_s * 1000),
            status_of=self._status_of,
            on_refused=lambda reason: self.metrics.refusals.labels(reason=reason).inc(),
            on_recorded=self._registered,
        )
        self.app = HttpApp(
            self._route,
            config.http.limits(),
            lambda status: self.metrics.http_errors.labels(status=str(status)).inc(),
            body_limits={_PREFIX + b"vote": (config.http.max_vote_bytes, "max_vote_bytes")},
            on_limit=lambda limit: self.metrics.limits.labels(limit=limit).inc(),
            # A body for any other route is refused (404, 405) before it is read.
            routes={path: method for method, path in _ROUTES},
            # A vote's sender proves it is another authority before its body is read.
            body_gates={_PREFIX + b"vote": self._vote_gate(network, own)},
            gated_reserve_bytes=config.http.vote_reserve_bytes,
        )
        self._authorities = {a.x25519: a.ed25519 for a in network.authorities}
        self.gate = LinkGate(config.link.link_settings(), self._admit_link, self._link_event)
        self._routes: dict[tuple[bytes, bytes], Callable[[Request], Awaitable[Response]]] = {
            route: getattr(self, name) for route, name in _ROUTES.items()
        }
        self._served: tuple[object, bytes] | None = None
        self._server: asyncio.Server | None = None
        self._link_server: asyncio.Server | None = None
        self._accepted: weakref.WeakSet[Link] = weakref.WeakSet()
        """Links accepted on the link port, in handshake or open (closed on stop)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._state = "new"
        self.port = config.listen_port
        self.link_port = config.link_port

    # --- state on disk ---------------------------------------------------------------------------

    def _vote_gate(self, network: NetworkFile, own: bytes) -> BodyGate:
        check = SenderCheck(
            network, own, _PREFIX + b"vote", int(self.config.admission.max_clock_skew_s * 1000)
        )

        def refusal(headers: Mapping[bytes, bytes], content_length: int) -> Response | None:
            reason = check(headers, content_length)
            if reason is None:
                return None
            self.metrics.refusals.labels(reason="vote_sender").inc()
            return _error(403, "forbidden", reason)

        return BodyGate(frozenset({authority_post.HEADER_KEY}), refusal)

    def _load(self) -> None:
        state = self.files.read(files.STATE)
        stored = self.files.read(files.CANDIDATES)
        consensus = self.files.read(files.CONSENSUS)
        vote = self.files.read(files.VOTE)
        try:
            admitted = {
                bytes.fromhex(k): int(v) for k, v in (state or {}).get("admitted", {}).items()
            }
            srv = {int(k): bytes.fromhex(v) for k, v in (state or {}).get("srv", {}).items()}
            self.ledger.secrets = {
                int(k): bytes.fromhex(v) for k, v in (state or {}).get("secrets", {}).items()
            }
            candidates = [Candidate.from_json(c) for c in (stored or {}).get("candidates", [])]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.config.data_dir}: a state file is damaged: {exc}") from None
        self.book.load(candidates, admitted)
        latest: SignedConsensus | None = None
        try:  # signed documents of another network file (one since changed) are dropped
            if consensus is not None:
                latest = SignedConsensus.from_json(consensus, self.network)
            if vote is not None:
                self.ledger.restore_vote(SignedVote.from_json(vote, self.network))
        except InvalidInputError as exc:
            log.warning("dropped a saved consensus or vote", extra={"fields": {"why": str(exc)}})
        self.ledger.restore(latest, srv)

    def _save_all(self) -> None:
        self.files.write(files.STATE, self.rounds.state_document())
        self.files.write(files.CANDIDATES, self._candidates_document())
        latest = self.ledger.latest
        if latest is not None:
            self.files.write(files.CONSENSUS, latest.to_json())

    def _candidates_document(self) -> dict[str, Any]:
        return {"version": files.VERSION, "candidates": self.book.candidates_json()}

    def _candidates_changed(self) -> None:
        self._candidates_dirty = True

    def _registered(self) -> None:
        self.metrics.registrations.inc()
        self._candidates_dirty = True

    async def _save_candidates_forever(self) -> None:
        while True:
            await asyncio.sleep(_SAVE_INTERVAL_S)
            if self._candidates_dirty:
                self._candidates_dirty = False
                await self.files.save(files.CANDIDATES, self._candidates_document())

    # --- running ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP and link ports and start the schedule. If either port cannot be opened
        (:class:`OSError`, e.g. the address is in use), neither is left open."""
        if self._state != "new":
            raise RuntimeError("an Authority is started once")
        self._state = "starting"
        loop = asyncio.get_running_loop()
        config = self.config
        handlers = LinkHandlers(request=_serve_nothing, rpc=_serve_nothing)
        settings = self.gate.settings

        def accept_link() -> Link:
            link = Link.accepting(
                key=self.key,
                settings=settings,
                count=self._link_event,
                gate=self.gate,
                handlers=handlers,
            )
            self._accepted.add(link)
            return link

        try:
            self._server = await loop.create_server(
                self.app.protocol, config.listen_host, config.listen_port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._link_server = await loop.create_server(
                accept_link, config.link_host, config.link_port, reuse_address=True
            )
            self.link_port = self._link_server.sockets[0].getsockname()[1]
        except BaseException:
            self._state = "stopped"
            await self._close_servers()
            raise
        self._state = "running"
        self._tasks = [
            asyncio.create_task(self.rounds.run(), name="schedule"),
            asyncio.create_task(self._save_candidates_forever(), name="save-candidates"),
        ]
        log.info(
            "authority listening",
            extra={
                "fields": {
                    "authority": self.identity.ed25519_public_key.hex(),
                    "network": self.network.name,
                    "listen": f"{config.listen_host}:{self.port}",
                    "link": f"{config.link_host}:{self.link_port}",
                }
            },
        )

    async def stop(self) -> None:
        """Stop serving and save the state (idempotent). Every step runs even if one before it
        failed: no port, connection or link is left open."""
        if self._state in ("stopping", "stopped"):
            return
        started = self._state == "running"
        self._state = "stopping"
        steps: list[Callable[[], Awaitable[None]]] = [self._close_servers, self._drain]
        if started:
            steps += [self._end_tasks, self.rounds.close, self.peers.close, self._save]
        try:
            for step in steps:
                try:
                    await step()
                except Exception:
                    log.exception("a step of stopping failed")
        finally:
            self._close_connections()  # also when cancelled
            self._state = "stopped"
        log.info("authority stopped")

    async def _close_servers(self) -> None:
        for server in (self._server, self._link_server):
            if server is not None:
                server.close()

    async def _drain(self) -> None:
        self.app.close_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.app.idle.wait(), self.drain_timeout_s)
        self._close_connections()

    def _close_connections(self) -> None:
        for connection in list(self.app.connections):
            connection.close()
        for link in list(self._accepted):
            link.abort()

    async def _end_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _save(self) -> None:
        await asyncio.to_thread(self._save_all)

    def _admit_link(self, x25519: bytes) -> bytes | None:
        return self.book.by_x25519.get(x25519) or self._authorities.get(x25519)

    def _link_event(self, event: str) -> None:
        self.metrics.link_events.labels(event=event).inc()

    def _latest_period(self) -> int:
        latest = self.ledger.latest
        return latest.consensus.period if latest is not None else -1

    def _status_of(self, node_id: bytes) -> dict[str, Any]:
        admitted = self.ledger.latest_admitted.get(node_id)
        if admitted is not None:
            return {"status": "admitted", "period": admitted}
        return {"status": "pending", "period": self.rounds.next_vote_period(now_ms())}

    # --- HTTP ------------------------------------------------------------------------------------

    async def _route(self, request: Request) -> Response:
        handler = self._routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        for prefix, serve in (
            (_PREFIX + b"consensus/", self._consensus_of),
            (_PREFIX + b"vote/", self._vote_of),
        ):
            if request.path.startswith(prefix):
                if request.method != b"GET":
                    return _error(405, "method_not_allowed", "method not allowed")
                period = _period(request.path[len(prefix) :])
                if period is None:
                    return _error(404, "not_found", "no such period")
                return serve(period)
        if any(path == request.path for _, path in self._routes):
            return _error(405, "method_not_allowed", "method not allowed")
        return _error(404, "not_found", "no such endpoint")

    async def _register(self, request: Request) -> Response:
        status, document = await self.registrar.register(request.body, request.source)
        return _json(status, document)

    async def _consensus(self, request: Request) -> Response:
        latest = self.ledger.latest
        if latest is None:
            return _error(404, "not_found", "no consensus has been published yet")
        if now_ms() >= latest.consensus.valid_until_ms:
            return _error(404, "expired", "the latest consensus this authority holds has expired")
        return self._consensus_response(latest)

    def _consensus_of(self, period: int) -> Response:
        signed = self.ledger.published.get(period)
        if signed is None:
            return _error(404, "not_found", "this authority holds no consensus of that period")
        return self._consensus_response(signed)

    def _consensus_response(self, signed: SignedConsensus) -> Response:
        served = self._served
        if served is None or served[0] is not signed:
            served = self._served = (signed, orjson.dumps(signed.to_json()))
        return Response(200, served[1])

    def _vote_of(self, period: int) -> Response:
        vote = self.ledger.own_vote(period)
        if vote is None:
            return _error(404, "not_found", "this authority has no vote of that period")
        return _json(200, vote.to_json())

    async def _vote(self, request: Request) -> Response:
        try:
            document = await asyncio.to_thread(orjson.loads, request.body)
        except orjson.JSONDecodeError:
            return _error(400, "bad_request", "the body is not JSON")
        result, detail = await self.rounds.receive_vote(document)
        if result == "invalid":
            return _error(400, "invalid_vote", detail or "not a valid vote")
        refused = _REFUSED.get(result)
        if refused is not None:
            return _error(*refused)
        return _json(202, {"status": result})

    async def _signature(self, request: Request) -> Response:
        try:
            result = await self.rounds.receive_signature(orjson.loads(request.body))
        except (orjson.JSONDecodeError, InvalidInputError) as exc:
            message = str(exc) if isinstance(exc, InvalidInputError) else "the body is not JSON"
            return _error(400, "bad_request", message)
        if result == "invalid":
            return _error(
                403,
                "bad_signature",
                "the signature does not verify against this authority's consensus of that period",
            )
        refused = _REFUSED.get(result)
        if refused is not None:
            return _error(*refused)
        return _json(202, {"status": result})

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")


_ROUTES = {
    (b"POST", _PREFIX + b"register"): "_register",
    (b"GET", _PREFIX + b"consensus"): "_consensus",
    (b"POST", _PREFIX + b"vote"): "_vote",
    (b"POST", _PREFIX + b"signature"): "_signature",
    (b"GET", b"/metrics"): "_metrics",
}
"""The routes of fixed paths (those of a period are matched by prefix) → their handlers."""

_REFUSED = {
    "not_authority": (
        403,
        "not_an_authority",
        "the key is not one of the network file's authorities",
    ),
    "wrong_period": (400, "wrong_period", "a period this authority does not take now"),
    "conflict": (409, "conflict", "this authority holds another vote of that authority's"),
}
"""Results of a vote or a signature that refuse it → (status, code, message)."""


def _period(text: bytes) -> int | None:
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


async def _serve_until_signalled(config: AuthorityConfig, network: NetworkFile) -> None:
    await serve_until_signalled(Authority(config, network), log)


def run_authority(config: AuthorityConfig, network: NetworkFile) -> None:
    """Run an authority in the foreground on uvloop until SIGTERM or SIGINT."""
    uvloop.run(_serve_until_signalled(config, network))
