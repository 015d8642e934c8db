"""The node's Prometheus metrics (prometheus-client), in a registry of its own per node."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics", "StoreFigures"]


class StoreFigures(NamedTuple):
    messages: int
    data_bytes: int
    chunks: int
    chunk_bytes: int
    map_used: int
    map_size: int


class _StoreCollector(Collector):
    def __init__(self, read: Callable[[], StoreFigures]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        messages, data_bytes, chunks, chunk_bytes, used, size = self._read()
        yield GaugeMetricFamily("veil_messages_stored", "Messages held.", value=messages)
        yield GaugeMetricFamily(
            "veil_bytes_stored", "Bytes of message data held.", value=data_bytes
        )
        yield GaugeMetricFamily(
            "veil_attachment_chunks_stored",
            "Attachment chunks held (namespace 17; counted in veil_messages_stored too).",
            value=chunks,
        )
        yield GaugeMetricFamily(
            "veil_attachment_bytes_stored",
            "Bytes of attachment chunk data held (what attachments_max_bytes caps).",
            value=chunk_bytes,
        )
        yield GaugeMetricFamily("veil_lmdb_used_bytes", "Bytes of the LMDB map in use.", value=used)
        yield GaugeMetricFamily("veil_lmdb_map_bytes", "Size of the LMDB map.", value=size)


class _CountsCollector(Collector):
    """A counter family read, at each scrape, from a mapping a component keeps (event → count)."""

    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        self._name, self._documentation, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for key, value in sorted(self._read().items()):
            family.add_metric([key], value)
        yield family


class NodeMetrics:
    """Counters and histograms the node updates, and the text ``GET /metrics`` answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "veil_rpc_requests",
            "Client RPC requests, by method and HTTP status.",
            ["method", "status"],
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "veil_store_latency_seconds",
            "Time from a valid store request to its answer: the durable commit, and on a network "
            "the write quorum's.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self._children: dict[tuple[str, int], Any] = {}
        self.retrieved = Counter(
            "veil_messages_retrieved", "Messages returned by retrieve.", registry=self.registry
        )
        self.http_errors = Counter(
            "veil_http_errors",
            "Requests refused before the RPC layer, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.limits = Counter(
            "veil_limit_refusals",
            "Connections or requests refused by a configured limit, by the limit's name.",
            ["limit"],
            registry=self.registry,
        )

    def watch_store(self, read: Callable[[], StoreFigures]) -> None:
        """Report the store's figures from ``read`` on each scrape."""
        self.registry.register(_StoreCollector(read))

    def watch_counts(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, int]]
    ) -> None:
        """Export the counts a component keeps in a mapping as the counter family ``name``."""
        self.registry.register(_CountsCollector(name, documentation, label, read))

    def count(self, method: str, status: int) -> None:
        # Looking a labelled child up costs more than incrementing it; keep them.
        child = self._children.get((method, status))
        if child is None:
            child = self._children[(method, status)] = self.requests.labels(
                method=method, status=str(status)
            )
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
