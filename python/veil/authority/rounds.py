"""The authority's schedule: what it does at which point of each period (``docs/network.md``,
"Admission and the consensus").

Periods are the network file's (``period_s``, counted from the Unix epoch). During period ``m``:

- from its start: every candidate not checked yet in ``m`` is checked again (at most
  ``check_concurrency`` at once); candidates unreachable for ``forget_after_s`` are forgotten;
- at ``vote_at``: the vote for ``m + 1`` is built from the candidates, signed, saved (with the
  random value it commits to) and posted to every other authority; until ``sign_at``, the votes
  of ``m + 1`` still missing are fetched (``GET /authority/v1/vote/{m + 1}``) and posts that
  failed are retried;
- at ``sign_at``: the consensus of ``m + 1`` is computed from the votes held, signed, and the
  signature posted to the others (retried until they answer); once a majority of the network's
  authorities signed the same digest it is published;
- from halfway between ``sign_at`` and the end of the period, and whenever it has no consensus of
  the current period: it asks the others for theirs (``GET /authority/v1/consensus``) and adopts
  one a majority signed, so that an authority that was down, or that computed another consensus
  (it missed a vote), catches up and computes the next one from the same previous consensus.

The loop wakes every ``period_s / 40`` (at most once a second): it acts on the state it finds, so
a restart or a late wake-up resumes where the period is (an authority that starts after ``sign_at``
does not vote for the coming period: the others already computed it without it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from veil.authority import files
from veil.authority.candidates import Candidate, CandidateBook
from veil.authority.config import AdmissionSettings, ScheduleSettings
from veil.authority.files import AuthorityFiles
from veil.authority.ledger import ConsensusLedger
from veil.authority.metrics import AuthorityMetrics
from veil.authority.peers import AuthorityPeers
from veil.authority.reachability import LinkProbe
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.protocol.consensus import SignedConsensus, SignedVote
from veil.protocol.network_file import AuthorityInfo, NetworkFile

__all__ = ["Rounds"]

log = logging.getLogger("veil.authority")


class Rounds:
    """The per-period work of one authority, and the handling of what other authorities send."""

    def __init__(
        self,
        *,
        network: NetworkFile,
        schedule: ScheduleSettings,
        admission: AdmissionSettings,
        ledger: ConsensusLedger,
        book: CandidateBook,
        probe: LinkProbe,
        peers: AuthorityPeers,
        files: AuthorityFiles,
        metrics: AuthorityMetrics,
        on_candidates_changed: Callable[[], None],
    ) -> None:
        self.network = network
        self.schedule = schedule
        self.admission = admission
        self.ledger = ledger
        self.book = book
        self.probe = probe
        self.peers = peers
        self.files = files
        self.metrics = metrics
        self.on_candidates_changed = on_candidates_changed
        self.period_ms = network.period_s * 1000
        self.tick_s = max(0.02, min(network.period_s / 40, 1.0))
        self.fetch_interval_s = max(self.tick_s, min(network.period_s / 8, 60.0))
        self._checked_period = -1
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_fetch = -float("inf")
        self._vote_sent: dict[int, set[bytes]] = {}
        self._signature_sent: dict[int, set[bytes]] = {}
        self._rng = random.SystemRandom()

    # --- time ------------------------------------------------------------------------------------

    def position(self, now: int) -> tuple[int, float]:
        """The current period and how far into it ``now`` is (0 to 1)."""
        period = self.network.period_at(now)
        return period, (now - self.network.period_start_ms(period)) / self.period_ms

    def next_vote_period(self, now: int) -> int:
        """The first period whose consensus a node registered now can be in."""
        period, fraction = self.position(now)
        return period + 1 if fraction < self.schedule.vote_at else period + 2

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("a scheduled step failed")
            await asyncio.sleep(self.tick_s)

    async def step(self) -> None:
        now = now_ms()
        period, fraction = self.position(now)
        upcoming = period + 1
        ledger, schedule = self.ledger, self.schedule
        if self._checked_period < period:
            self._checked_period = period
            self._spawn("checks", lambda: self._check_round(period))
        if schedule.vote_at <= fraction < schedule.sign_at:
            if ledger.own_vote(upcoming) is None:
                await self._vote(upcoming, now)
            self._spawn("votes", lambda: self._exchange_votes(upcoming))
        if (
            fraction >= schedule.sign_at
            and upcoming not in ledger.computed
            and ledger.own_vote(upcoming) is not None
        ):
            consensus = ledger.compute(upcoming)
            log.debug(
                "computed the consensus",
                extra={"fields": {"period": upcoming, "nodes": len(consensus.nodes)}},
            )
            await self._publish_if_signed(upcoming)
        # Its own signature goes to every other authority, published here or not: the one that
        # computes last often publishes at once (the others' signatures were waiting for it),
        # and the others need its signature as much as it needed theirs.
        if upcoming in ledger.computed and not self._signature_delivered(upcoming):
            self._spawn("signatures", lambda: self._send_signature(upcoming))
        latest = ledger.latest.consensus.period if ledger.latest is not None else -1
        fetch_at = (schedule.sign_at + 1) / 2
        behind = latest < period or (fraction >= fetch_at and latest < upcoming)
        if behind and time.monotonic() - self._last_fetch >= self.fetch_interval_s:
            self._last_fetch = time.monotonic()
            self._spawn("fetch", self._fetch_consensus)
        ledger.prune(period, self.book.admitted.values())
        for table in (self._vote_sent, self._signature_sent):
            for old in [p for p in table if p < period]:
                del table[old]

    def _spawn(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``work`` unless the task of that name is still running."""
        running = self._tasks.get(name)
        if running is not None and not running.done():
            return
        self._tasks[name] = asyncio.create_task(self._logged(name, work), name=name)

    @staticmethod
    async def _logged(name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await work()
        except Exception:
            log.exception("scheduled work failed", extra={"fields": {"work": name}})

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- reachability ------------------------------------------------------------------------

    async def _check_round(self, period: int) -> None:
        start = self.network.period_start_ms(period)
        due = iter([c for c in self.book.candidates.values() if c.last_check_ms < start])

        async def worker() -> None:
            for candidate in due:
                await self.check(candidate)

        workers = min(self.admission.check_concurrency, len(self.book.candidates)) or 1
        await asyncio.gather(*(worker() for _ in range(workers)))
        forgotten = self.book.forget_unreachable(now_ms())
        if forgotten:
            log.info("forgot unreachable candidates", extra={"fields": {"count": len(forgotten)}})
        self.on_candidates_changed()

    async def check(self, candidate: Candidate) -> None:
        announcement = candidate.announcement
        ok = await self.probe.check(announcement.link_address, announcement.x25519)
        self.metrics.checks.labels(result="reachable" if ok else "unreachable").inc()
        if self.book.candidates.get(candidate.node_id) is candidate and (
            candidate.announcement.link == announcement.link
        ):
            self.book.checked(candidate, ok=ok, now_ms=now_ms())

    # --- votes -----------------------------------------------------------------------------------

    def state_document(self) -> dict[str, Any]:
        return {
            "version": files.VERSION,
            "admitted": {k.hex(): v for k, v in self.book.admitted.items()},
            "srv": {str(k): v.hex() for k, v in self.ledger.srv_history.items()},
            "secrets": {str(k): v.hex() for k, v in self.ledger.secrets.items()},
        }

    async def _vote(self, period: int, now: int) -> None:
        signed = self.ledger.make_vote(period, self.book.vote_entries(period, now))
        # The commitment's secret is on disk before anyone sees the commitment.
        await self.files.save(files.STATE, self.state_document())
        await self.files.save(files.VOTE, signed.to_json())
        log.info(
            "voted",
            extra={"fields": {"period": period, "nodes": len(signed.vote.nodes)}},
        )

    async def _exchange_votes(self, period: int) -> None:
        own = self.ledger.own_vote(period)
        if own is None:
            return
        body = orjson.dumps(own.to_json())
        sent = self._vote_sent.setdefault(period, set())

        async def with_one(authority: AuthorityInfo) -> None:
            if authority.ed25519 not in sent:
                status, _ = await self.peers.post(
                    authority, "/authority/v1/vote", body, signed=True
                )
                if _answered(status) and status != _FORBIDDEN:  # 403: its header, not the vote
                    sent.add(authority.ed25519)
            if not self.ledger.has_vote(period, authority.ed25519):
                document = await self.peers.get(authority, f"/authority/v1/vote/{period}")
                if document is not None:
                    await self.receive_vote(document)

        await asyncio.gather(*(with_one(a) for a in self.peers.others))

    async def receive_vote(self, document: object) -> tuple[str, str]:
        """Verify and keep another authority's vote: the result (also counted) — ``kept``,
        ``duplicate``, ``conflict``, ``wrong_period``, ``not_authority`` or ``invalid`` — and,
        for ``invalid``, what is wrong with it."""
        detail = ""
        key = _vote_authority(document)
        if key is not None and self.network.authority(key) is None:
            result = "not_authority"
        else:
            try:
                signed = await asyncio.to_thread(SignedVote.from_json, document, self.network)
            except InvalidInputError as exc:
                result, detail = "invalid", str(exc)
            else:
                result = self.ledger.take_vote(signed, self.network.period_at(now_ms()))
        self.metrics.votes.labels(result=result).inc()
        return result, detail

    # --- signatures and publication ----------------------------------------------------------

    def _signature_delivered(self, period: int) -> bool:
        sent = self._signature_sent.get(period, set())
        return all(a.ed25519 in sent for a in self.peers.others)

    async def _send_signature(self, period: int) -> None:
        signature = self.ledger.own_signature(period)
        if signature is None:
            return
        body = orjson.dumps(
            {
                "period": period,
                "authority": self.ledger.own_key.hex(),
                "signature": base64.b64encode(signature).decode("ascii"),
            }
        )
        sent = self._signature_sent.setdefault(period, set())
        others = [a for a in self.peers.others if a.ed25519 not in sent]
        answers = await asyncio.gather(
            *(self.peers.post(a, "/authority/v1/signature", body) for a in others)
        )
        for authority, (status, _) in zip(others, answers, strict=True):
            if _answered(status):
                sent.add(authority.ed25519)

    async def receive_signature(self, document: object) -> str:
        """Take ``{"period", "authority", "signature"}`` from another authority: the result (also
        counted) — ``kept``, ``pending``, ``duplicate``, ``wrong_period``, ``not_authority`` or
        ``invalid`` (it does not verify); :class:`InvalidInputError` if it is malformed."""
        if not isinstance(document, dict):
            raise InvalidInputError("a signature is {period, authority, signature}")
        period, key_hex, signature_b64 = (
            document.get("period"),
            document.get("authority"),
            document.get("signature"),
        )
        try:
            authority = bytes.fromhex(key_hex) if isinstance(key_hex, str) else b""
            signature = (
                base64.b64decode(signature_b64, validate=True)
                if isinstance(signature_b64, str)
                else b""
            )
        except (ValueError, binascii.Error):
            authority = signature = b""
        if (
            not isinstance(period, int)
            or isinstance(period, bool)
            or len(authority) != 32
            or len(signature) != 64
        ):
            raise InvalidInputError(
                "a signature is {period: int, authority: 64 hex, signature: 64 bytes of base64}"
            )
        result = self.ledger.take_signature(
            period, authority, signature, self.network.period_at(now_ms())
        )
        self.metrics.signatures.labels(result=result).inc()
        if result == "kept":
            await self._publish_if_signed(period)
        return result

    async def _publish_if_signed(self, period: int) -> None:
        signed = self.ledger.publish_if_signed(period)
        if signed is not None:
            await self._published(signed, "signed")

    async def _published(self, signed: SignedConsensus, how: str) -> None:
        consensus = signed.consensus
        self.metrics.published.labels(how=how).inc()
        self.book.record_consensus(consensus)
        await self.files.save(files.STATE, self.state_document())
        await self.files.save(files.CONSENSUS, signed.to_json())
        log.info(
            "consensus published",
            extra={
                "fields": {
                    "period": consensus.period,
                    "nodes": len(consensus.nodes),
                    "signatures": len(signed.signatures),
                    "how": how,
                }
            },
        )

    # --- catching up -----------------------------------------------------------------------------

    async def _fetch_consensus(self) -> None:
        """Adopt the newest consensus another authority serves, if newer than the one held."""
        others = list(self.peers.others)
        self._rng.shuffle(others)
        for authority in others:
            signed = await self._get_consensus(authority, "/authority/v1/consensus")
            if signed is None:
                continue
            latest = self.ledger.latest
            if latest is not None and signed.consensus.period <= latest.consensus.period:
                self.ledger.adopt(signed)  # the same one: keep its extra signatures
                continue
            if self.ledger.adopt(signed):
                await self._published(signed, "fetched")
                await self._fill_srv_history(signed, authority)
            return

    async def _get_consensus(self, authority: AuthorityInfo, path: str) -> SignedConsensus | None:
        document = await self.peers.get(authority, path)
        if document is None:
            return None
        try:
            return await asyncio.to_thread(SignedConsensus.from_json, document, self.network)
        except InvalidInputError:
            self.metrics.published.labels(how="refused").inc()
            return None

    async def _fill_srv_history(self, signed: SignedConsensus, authority: AuthorityInfo) -> None:
        """Fetch the shared random values of the periods the nodes of ``signed`` were admitted
        in that this authority missed (their placements depend on them)."""
        oldest = signed.consensus.period - self.network.valid_periods
        missing = {
            e.admitted
            for e in signed.consensus.nodes
            if e.admitted not in self.ledger.srv_history and e.admitted >= oldest
        }
        for period in sorted(missing):
            old = await self._get_consensus(authority, f"/authority/v1/consensus/{period}")
            if old is not None and old.consensus.period == period:
                self.ledger.srv_history[period] = old.consensus.srv


_FORBIDDEN = 403
"""The vote's header was refused (a clock apart, say): the next try signs a new one."""


def _answered(status: int) -> bool:
    """Whether a post got an answer that another try would not change: taken (2xx) or refused
    (4xx: not an authority's, a bad signature, a period the peer no longer takes)."""
    return 200 <= status < 500


def _vote_authority(document: object) -> bytes | None:
    """The key a vote says it is from, if it says so well-formedly (checked fully later)."""
    if not isinstance(document, dict):
        return None
    body = document.get("vote")
    key = body.get("authority") if isinstance(body, dict) else None
    if not isinstance(key, str) or len(key) != 64:
        return None
    try:
        return bytes.fromhex(key)
    except ValueError:
        return None
