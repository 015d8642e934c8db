"""The authority's Prometheus metrics (prometheus-client), in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["AuthorityMetrics"]


class AuthorityMetrics:
    def __init__(
        self,
        *,
        candidates: Callable[[], int],
        admitted: Callable[[], int],
        latest_period: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        Gauge(
            "veil_authority_candidates",
            "Candidates held: nodes registered and checked, admitted or pending.",
            registry=registry,
        ).set_function(candidates)
        Gauge(
            "veil_authority_admitted",
            "Nodes in the latest published consensus.",
            registry=registry,
        ).set_function(admitted)
        Gauge(
            "veil_authority_consensus_period",
            "Period of the latest published consensus (-1: none yet).",
            registry=registry,
        ).set_function(latest_period)
        self.refusals = Counter(
            "veil_authority_refusals",
            "Registrations, and votes whose sender is not proven, refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.registrations = Counter(
            "veil_authority_registrations",
            "Registrations that recorded or updated a candidate.",
            registry=registry,
        )
        self.checks = Counter(
            "veil_authority_checks",
            "Reachability checks of candidates (periodic re-checks and registrations), by result.",
            ["result"],
            registry=registry,
        )
        self.votes = Counter(
            "veil_authority_votes_received",
            "Votes received from other authorities (posted or fetched), by result.",
            ["result"],
            registry=registry,
        )
        self.signatures = Counter(
            "veil_authority_signatures_received",
            "Consensus signatures received from other authorities, by result.",
            ["result"],
            registry=registry,
        )
        self.published = Counter(
            "veil_authority_consensus_published",
            "Consensus periods published (a majority signed), by how: signed here or fetched "
            "from another authority.",
            ["how"],
            registry=registry,
        )
        self.http_errors = Counter(
            "veil_authority_http_errors",
            "Requests refused by the HTTP layer, by status.",
            ["status"],
            registry=registry,
        )
        self.limits = Counter(
            "veil_authority_limit_refusals",
            "Connections or requests refused by a configured limit, by the limit's name.",
            ["limit"],
            registry=registry,
        )
        self.link_events = Counter(
            "veil_authority_link_events",
            "Node-link events of the checks and the link port, by event.",
            ["event"],
            registry=registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
