"""Registration: a node asks to be admitted by posting its signed announcement.

In order, each step cheap before the next: the source address's rate (at most
``registrations_per_minute_per_address`` a minute, else 429); the announcement (JSON, keys and
signature, ``Announcement.from_json``; not dated ahead of the authority's clock by more than
``max_clock_skew_s``; else 400); a re-registration with an announcement no newer than the one held
changes nothing, and a newer one with the same link address of a node that passed its last check is
taken as it is; then the policy (403 ``not_allowed``), the link host (an IP address, 400), the
subnet cap and the capacity (403 ``subnet_full``, 503 ``full``: counting the candidates held and the
registrations being checked); and last the reachability check (403 ``unreachable``,
``veil.authority.reachability``). A node that passes is recorded as a candidate and answered 202
``{"status": "pending" | "admitted", "period": n}``. Every refusal is counted by reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from veil.authority.candidates import CandidateBook, Refusal
from veil.authority.reachability import LinkProbe
from veil.clock import now_ms
from veil.errors import InvalidInputError
from veil.protocol.announcement import Announcement

__all__ = ["RateLimit", "Registrar", "error_body"]


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class RateLimit:
    """At most ``per_minute`` events per source in each one-minute window (fixed windows, so the
    table is emptied every minute and holds at most ``max_sources`` sources; past it, new sources
    wait for the next minute)."""

    def __init__(self, per_minute: int, max_sources: int) -> None:
        self.per_minute = per_minute
        self.max_sources = max_sources
        self._window = -1
        self._counts: dict[str, int] = {}

    def allow(self, source: str, now_s: float) -> bool:
        window = int(now_s // 60)
        if window != self._window:
            self._window = window
            self._counts = {}
        count = self._counts.get(source)
        if count is None and len(self._counts) >= self.max_sources:
            return False
        if count is not None and count >= self.per_minute:
            return False
        self._counts[source] = (count or 0) + 1
        return True


Answer = tuple[int, dict[str, Any]]


class Registrar:
    def __init__(
        self,
        *,
        book: CandidateBook,
        probe: LinkProbe,
        per_minute: int,
        max_sources: int,
        clock_skew_ms: int,
        status_of: Callable[[bytes], dict[str, Any]],
        on_refused: Callable[[str], None],
        on_recorded: Callable[[], None],
    ) -> None:
        self.book = book
        self.probe = probe
        self.rate = RateLimit(per_minute, max_sources)
        self.clock_skew_ms = clock_skew_ms
        self.status_of = status_of
        self.on_refused = on_refused
        self.on_recorded = on_recorded

    def _refuse(self, refusal: Refusal) -> Answer:
        self.on_refused(refusal.reason)
        return refusal.status, error_body(refusal.code, refusal.message)

    async def register(self, body: bytes, source: str) -> Answer:
        """Handle one ``POST /authority/v1/register`` body from ``source`` (an address key)."""
        screened = self._screen(body, source)
        if not isinstance(screened, Announcement):
            return screened
        announcement, node_id = screened, screened.ed25519
        subnet = self.book.reserve(announcement)
        try:
            reachable = await self.probe.check(announcement.link_address, announcement.x25519)
        finally:
            self.book.release(subnet)
        if not reachable:
            return self._refuse(
                Refusal(
                    "unreachable",
                    403,
                    "unreachable",
                    "no link handshake with the announced key at the announced link address",
                )
            )
        known = self.book.candidates.get(node_id)
        if known is None or known.announcement.issued_ms < announcement.issued_ms:
            self.book.record(announcement, now_ms())
            self.on_recorded()
        return 202, self.status_of(node_id)

    def _screen(self, body: bytes, source: str) -> Answer | Announcement:
        """Every step before the check: an answer, or the announcement to check."""
        if not self.rate.allow(source, time.monotonic()):
            return self._refuse(
                Refusal("rate_limited", 429, "rate_limited", "too many registrations; slow down")
            )
        try:
            announcement = Announcement.from_json(orjson.loads(body))
        except (orjson.JSONDecodeError, InvalidInputError) as exc:
            message = str(exc) if isinstance(exc, InvalidInputError) else "the body is not JSON"
            return self._refuse(Refusal("invalid_announcement", 400, "bad_request", message))
        if announcement.issued_ms > now_ms() + self.clock_skew_ms:
            return self._refuse(
                Refusal(
                    "invalid_announcement", 400, "bad_request", "the announcement is dated ahead"
                )
            )
        known = self.book.candidates.get(announcement.ed25519)
        if known is not None and known.announcement.issued_ms >= announcement.issued_ms:
            return 202, self.status_of(announcement.ed25519)  # nothing newer: nothing to do
        if (
            known is not None
            and known.announcement.link == announcement.link
            and not known.failures
        ):
            self.book.update(announcement)  # re-signed, same address, reachable: no new check
            self.on_recorded()
            return 202, self.status_of(announcement.ed25519)
        refusal = self.book.refusal(announcement)
        return self._refuse(refusal) if refusal is not None else announcement
