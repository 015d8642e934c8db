"""The nodes an authority knows of: its candidates, their checks, and the periods it admitted them.

A **candidate** is a node that registered with a valid announcement, passed the policy and the
per-subnet cap, and completed a link handshake at its announced address with its announced key. It
is checked again once a period; :meth:`CandidateBook.vote_entries` is what the authority votes for:
the candidates that have not failed ``max_missed_checks`` checks in a row, that the policy admits,
at most ``max_nodes_per_subnet`` per subnet (the longest known first), each with the period this
authority recorded it was first admitted in (the first consensus that listed it) and whether it has
been reachable at every check for ``guard_uptime_s`` (Guard).

A subnet is the IPv4 /24 or IPv6 /48 of the node's announced link host, which must be an IP address:
one operator cannot cheaply hold many of them. This module does no I/O (sans-IO); the registration
and the checks (``veil.authority.registration``) drive it.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from veil.authority.config import AdmissionSettings
from veil.errors import InvalidInputError
from veil.protocol.announcement import Announcement
from veil.protocol.consensus import Consensus, VoteEntry

__all__ = ["Candidate", "CandidateBook", "Refusal", "subnet_of"]


def subnet_of(host: str) -> str:
    """The subnet a link host is counted in (``"203.0.113.0/24"``, ``"2001:db8::/48"``); raise
    :class:`InvalidInputError` for a host that is not a usable IP address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInputError("a node's link host must be an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        raise InvalidInputError("a node's link host must be a unicast IP address")
    prefix = 24 if isinstance(address, ipaddress.IPv4Address) else 48
    return str(ipaddress.ip_network((address, prefix), strict=False))


@dataclass(slots=True)
class Candidate:
    announcement: Announcement
    subnet: str
    first_seen_ms: int
    uptime_start_ms: int | None
    """When its current run of successful checks began (None after a failed check)."""
    failures: int
    """Checks failed in a row."""
    last_check_ms: int
    last_ok_ms: int

    @property
    def node_id(self) -> bytes:
        return self.announcement.ed25519

    def to_json(self) -> dict[str, Any]:
        return {
            "announcement": self.announcement.to_json(),
            "first_seen_ms": self.first_seen_ms,
            "uptime_start_ms": self.uptime_start_ms,
            "failures": self.failures,
            "last_check_ms": self.last_check_ms,
            "last_ok_ms": self.last_ok_ms,
        }

    @classmethod
    def from_json(cls, entry: Any) -> Candidate:
        """A candidate as the authority saved it (its own file: parsed, not re-verified)."""
        announcement, _ = Announcement.parse(entry["announcement"])
        return cls(
            announcement=announcement,
            subnet=subnet_of(announcement.link_address[0]),
            first_seen_ms=int(entry["first_seen_ms"]),
            uptime_start_ms=None
            if entry["uptime_start_ms"] is None
            else int(entry["uptime_start_ms"]),
            failures=int(entry["failures"]),
            last_check_ms=int(entry["last_check_ms"]),
            last_ok_ms=int(entry["last_ok_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a registration is refused: a counter label, an HTTP status, a code and a message."""

    reason: str
    status: int
    code: str
    message: str


class CandidateBook:
    """Candidates by node id, counted per subnet, with slots reserved for registrations whose
    check is still running (so that a burst of registrations cannot pass the cap together)."""

    def __init__(self, settings: AdmissionSettings, allowlist: frozenset[bytes] | None) -> None:
        self.settings = settings
        self.allowlist = allowlist
        """The node keys the policy admits, or None for an open policy."""
        self.candidates: dict[bytes, Candidate] = {}
        self.admitted: dict[bytes, int] = {}
        """Node id → the period of the first consensus that listed it (kept when forgotten)."""
        self.by_x25519: dict[bytes, bytes] = {}
        self._by_subnet: dict[str, set[bytes]] = {}
        self._reserved: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self.candidates)

    # --- registration -------------------------------------------------------------------------

    def refusal(self, announcement: Announcement) -> Refusal | None:
        """Whether the policy, the subnet cap or the capacity refuses this announcement."""
        node_id = announcement.ed25519
        if self.allowlist is not None and node_id not in self.allowlist:
            return Refusal("policy", 403, "not_allowed", "this node is not on the allowlist")
        try:
            subnet = subnet_of(announcement.link_address[0])
        except InvalidInputError as exc:
            return Refusal("bad_address", 400, "bad_request", str(exc))
        known = self.candidates.get(node_id)
        if known is not None and known.subnet == subnet:
            return None  # already counted there
        held = len(self._by_subnet.get(subnet, ())) + self._reserved[subnet]
        if held >= self.settings.max_nodes_per_subnet:
            return Refusal(
                "subnet_full",
                403,
                "subnet_full",
                f"this subnet already has {self.settings.max_nodes_per_subnet} nodes "
                "(max_nodes_per_subnet)",
            )
        if known is None and len(self.candidates) + self._reserved.total() >= (
            self.settings.max_candidates
        ):
            return Refusal(
                "max_candidates", 503, "full", "the authority holds all the candidates it can"
            )
        return None

    def reserve(self, announcement: Announcement) -> str:
        """Hold a slot in the announcement's subnet while it is checked; :meth:`release` it."""
        subnet = subnet_of(announcement.link_address[0])
        self._reserved[subnet] += 1
        return subnet

    def release(self, subnet: str) -> None:
        self._reserved[subnet] -= 1
        if self._reserved[subnet] <= 0:
            del self._reserved[subnet]

    def record(self, announcement: Announcement, now_ms: int) -> Candidate:
        """Take an announcement that just passed its check (new, or newer than the one held)."""
        node_id = announcement.ed25519
        subnet = subnet_of(announcement.link_address[0])
        candidate = self.candidates.get(node_id)
        if candidate is None:
            candidate = Candidate(announcement, subnet, now_ms, now_ms, 0, now_ms, now_ms)
            self.candidates[node_id] = candidate
        else:
            self._unlink(candidate)
            candidate.announcement, candidate.subnet = announcement, subnet
            self.checked(candidate, ok=True, now_ms=now_ms)
        self._by_subnet.setdefault(subnet, set()).add(node_id)
        self.by_x25519[announcement.x25519] = node_id
        return candidate

    def update(self, announcement: Announcement) -> None:
        """Take a newer announcement with the same link address (no new check needed)."""
        candidate = self.candidates[announcement.ed25519]
        candidate.announcement = announcement

    # --- checks -------------------------------------------------------------------------------

    def checked(self, candidate: Candidate, *, ok: bool, now_ms: int) -> None:
        candidate.last_check_ms = now_ms
        if ok:
            candidate.failures = 0
            candidate.last_ok_ms = now_ms
            if candidate.uptime_start_ms is None:
                candidate.uptime_start_ms = now_ms
        else:
            candidate.failures += 1
            candidate.uptime_start_ms = None

    def forget_unreachable(self, now_ms: int) -> list[bytes]:
        """Drop the candidates unreachable for ``forget_after_s``; return their ids."""
        horizon = now_ms - self.settings.forget_after_s * 1000
        gone = [k for k, c in self.candidates.items() if c.failures and c.last_ok_ms < horizon]
        for node_id in gone:
            self._unlink(self.candidates.pop(node_id))
        return gone

    def _unlink(self, candidate: Candidate) -> None:
        members = self._by_subnet.get(candidate.subnet, set())
        members.discard(candidate.node_id)
        if not members:
            self._by_subnet.pop(candidate.subnet, None)
        self.by_x25519.pop(candidate.announcement.x25519, None)

    # --- votes --------------------------------------------------------------------------------

    def is_guard(self, candidate: Candidate, now_ms: int) -> bool:
        start = candidate.uptime_start_ms
        return start is not None and now_ms - start >= self.settings.guard_uptime_s * 1000

    def eligible(self) -> list[Candidate]:
        """The candidates this authority votes for (see the module), in node-id order."""
        chosen: list[Candidate] = []
        for subnet in self._by_subnet.values():
            members = [
                self.candidates[k]
                for k in subnet
                if self.candidates[k].failures < self.settings.max_missed_checks
                and (self.allowlist is None or k in self.allowlist)
            ]
            members.sort(key=lambda c: (c.first_seen_ms, c.node_id))
            chosen += members[: self.settings.max_nodes_per_subnet]
        return sorted(chosen, key=lambda c: c.node_id)

    def vote_entries(self, period: int, now_ms: int) -> tuple[VoteEntry, ...]:
        return tuple(
            VoteEntry(
                c.announcement, self.admitted.get(c.node_id, period), self.is_guard(c, now_ms)
            )
            for c in self.eligible()
        )

    def record_consensus(self, consensus: Consensus) -> bool:
        """Remember the admission period of each node of a published consensus; True if any
        changed (then it must be saved)."""
        changed = False
        for entry in consensus.nodes:
            if self.admitted.get(entry.node_id) != entry.admitted:
                self.admitted[entry.node_id] = entry.admitted
                changed = True
        return changed

    # --- persistence --------------------------------------------------------------------------

    def candidates_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.candidates.values()]

    def load(self, candidates: Iterable[Candidate], admitted: dict[bytes, int]) -> None:
        self.admitted = dict(admitted)
        for candidate in candidates:
            self.candidates[candidate.node_id] = candidate
            self._by_subnet.setdefault(candidate.subnet, set()).add(candidate.node_id)
            self.by_x25519[candidate.announcement.x25519] = candidate.node_id
