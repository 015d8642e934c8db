"""The node's Prometheus metrics (prometheus-client), in a registry of its own per node."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics", "StoreFigures", "WriterFigures"]


class StoreFigures(NamedTuple):
    messages: int
    data_bytes: int
    chunks: int
    chunk_bytes: int
    map_used: int
    map_size: int


class WriterFigures(NamedTuple):
    commits: int
    jobs: int
    seconds: Mapping[str, float]  # by phase (veil.node.writer.PHASES)
    turn_waits: int
    turn_waited_s: float


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


class _WriterCollector(Collector):
    def __init__(self, read: Callable[[], WriterFigures]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        commits, jobs, seconds, turn_waits, turn_waited_s = self._read()
        yield CounterMetricFamily(
            "veil_store_commits",
            "Durable LMDB commits made by the store's writer (group commits).",
            value=commits,
        )
        yield CounterMetricFamily(
            "veil_store_commit_jobs",
            "Write jobs those commits carried (a store, a replicated frame's messages, a delete, "
            "a sweep...): jobs per commit is what group commit saves.",
            value=jobs,
        )
        phases = CounterMetricFamily(
            "veil_store_writer_seconds",
            "Time the store's writer thread spent, by phase of its commits: apply (the jobs' "
            "table calls, with the waits for the GIL), commit (LMDB's durable commit), sign (the "
            "receipts of what was committed). Their rate against 1 is how busy the writer is.",
            labels=["phase"],
        )
        for phase, value in seconds.items():
            phases.add_metric([phase], value)
        yield phases
        yield CounterMetricFamily(
            "veil_store_apply_turn_waits",
            "Times the event loop waited, before a read, for the store writer to finish applying "
            "a batch (py-lmdb gives up the GIL on every call; [store] apply_turn_ms).",
            value=turn_waits,
        )
        yield CounterMetricFamily(
            "veil_store_apply_turn_wait_seconds",
            "Time the event loop spent in those waits.",
            value=turn_waited_s,
        )


class _ThreadCollector(Collector):
    def __init__(self, read: Callable[[], Mapping[str, tuple[float, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "veil_thread_cpu_seconds",
            "CPU time of the node's event loop and of its store writer, user and system (the "
            "kernel's work for the thread: sends, wake-ups, flushes), in clock ticks as the "
            "kernel counts them. The one near 1 a second is what limits the node.",
            labels=["thread", "mode"],
        )
        for thread, (user, system) in sorted(self._read().items()):
            family.add_metric([thread, "user"], user)
            family.add_metric([thread, "system"], system)
        yield family


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

    def watch_writer(self, read: Callable[[], WriterFigures]) -> None:
        """Report the store writer's (commits, jobs committed, seconds by phase) from ``read``
        on each scrape."""
        self.registry.register(_WriterCollector(read))

    def watch_threads(self, read: Callable[[], Mapping[str, tuple[float, float]]]) -> None:
        """Report the (user, system) CPU seconds of the threads ``read`` names on each scrape."""
        self.registry.register(_ThreadCollector(read))

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


# --- the sizes of the node's in-memory tables ----------------------------------------------------
#
# Everything a node keeps in memory per client address, peer node, circuit or request is bounded
# (a cap, an expiry or a sweep: docs/soak.md lists which). These gauges show how full each table
# is, read when /metrics is scraped: the hot paths that fill the tables pay nothing for them.
# Some tables have no public size; each such read is one small function below, and only these
# functions reach into another module's private attributes.

from typing import TYPE_CHECKING  # noqa: E402  (with the section, appended to the module)

if TYPE_CHECKING:
    from veil.node.server import Node

TABLES_METRIC = "veil_node_table_entries"
"""The gauge family of table sizes, labelled ``table``."""
BUFFERS_METRIC = "veil_node_buffered_bytes"
"""The gauge family of bytes held for requests not yet answered, labelled ``buffer``."""


def _replay(node: Node) -> int:  # tags in every generation: 3 x replay_max_entries at most
    return len(node.router.replays)


def _replay_sources(node: Node) -> int:  # sources of the current generation only
    return len(node.router.replays._sources)


def _circuits(node: Node) -> int:
    return len(node.router.circuits)


def _circuit_sources(node: Node) -> int:
    return len(node.router.circuits._by_source)


def _peel_pending(node: Node) -> int:  # version 1 layers waiting for the peeler
    return len(node.router.peeler._pending)


def _links_in(node: Node) -> int:
    return len(node.gate.links())


def _link_handshakes(node: Node) -> int:  # addresses with a connection in handshake
    return len(node.gate._handshakes_by_address)


def _link_handshake_times(node: Node) -> int:  # the last handshake time of each admitted key
    return len(node.gate._last_handshake)


def _links_out(node: Node) -> int:
    return len(node.router.pool._links)


def _link_locks(node: Node) -> int:
    return len(node.router.pool._locks)


def _link_backoff(node: Node) -> int:
    return len(node.router.pool._backoff)


def _link_streams(node: Node) -> int:  # requests in flight on every link, both directions
    links = [*node.gate.links(), *node.router.pool._links.values()]
    return sum(link.in_flight for link in links)


def _http_connections(node: Node) -> int:
    return len(node.app.connections)


def _http_sources(node: Node) -> int:
    return len(node.app.by_source)


def _replication_tasks(node: Node) -> int:
    return len(node.replicator._background)


def _replication_keys(node: Node) -> int:  # members' decompressed keys
    return len(node.replicator._public_keys)


def _version_warnings(node: Node) -> int:
    return len(node.peer_rpc._versions_seen)


def _writer_queue(node: Node) -> int:
    return node.writer._queue.qsize()


def _swarm_views(node: Node) -> int:  # earlier swarm mappings kept for hand-over
    return len(node.network._replaced)


def _swarm_cache(node: Node) -> int:  # accounts' swarms cached, in every mapping kept
    maps = [node.network.swarms, *(swarms for _, swarms in node.network._replaced)]
    return sum(swarms._swarm.cache_info().currsize for swarms in maps)


NODE_TABLES: dict[str, Callable[[Node], int]] = {
    "replay": _replay,
    "replay_sources": _replay_sources,
    "circuits": _circuits,
    "circuit_sources": _circuit_sources,
    "peel_pending": _peel_pending,
    "links_in": _links_in,
    "links_out": _links_out,
    "link_locks": _link_locks,
    "link_backoff": _link_backoff,
    "link_handshakes": _link_handshakes,
    "link_handshake_times": _link_handshake_times,
    "link_streams": _link_streams,
    "http_connections": _http_connections,
    "http_sources": _http_sources,
    "replication_tasks": _replication_tasks,
    "replication_keys": _replication_keys,
    "version_warnings": _version_warnings,
    "writer_queue": _writer_queue,
    "swarm_views": _swarm_views,
    "swarm_cache": _swarm_cache,
}
"""Each table's label and how to read its size from a running node."""


def _http_bodies(node: Node) -> int:  # bodies arriving, queued or being handled, all connections
    return node.app.buffered_body_bytes


def _link_serving(node: Node) -> int:  # bodies of peers' requests being answered, all links
    return sum(link.serving_bytes for link in node.gate.links())


NODE_BUFFERS: dict[str, Callable[[Node], int]] = {
    "http_bodies": _http_bodies,
    "link_serving": _link_serving,
}
"""Each buffer's label and how to read its bytes: capped by ``[limits] max_buffered_body_bytes``
and, per link, ``[links] max_serving_bytes``."""


_GAUGES: tuple[tuple[str, str, str, dict[str, Callable[[Node], int]]], ...] = (
    (
        TABLES_METRIC,
        "Entries in the node's in-memory tables (replay tags, circuits, links, connections, "
        "requests in flight), by table; each is bounded (docs/soak.md).",
        "table",
        NODE_TABLES,
    ),
    (
        BUFFERS_METRIC,
        "Bytes of request bodies held for requests not yet answered, by buffer: HTTP bodies "
        "over all connections, and peers' requests being answered over all links.",
        "buffer",
        NODE_BUFFERS,
    ),
)
"""Each gauge family read at scrape time: its name, help, label and what each label value reads."""


class _TablesCollector(Collector):
    def __init__(self, node: Node) -> None:
        self._node = node

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, label, _ in _GAUGES:
            yield GaugeMetricFamily(name, documentation, labels=[label])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation, label, reads in _GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=[label])
            for value, read in reads.items():
                family.add_metric([value], read(self._node))
            yield family


def watch_tables(metrics: NodeMetrics, node: Node) -> None:
    """Export the sizes of ``node``'s in-memory tables (:data:`NODE_TABLES`) and request buffers
    (:data:`NODE_BUFFERS`) on each scrape."""
    metrics.registry.register(_TablesCollector(node))
