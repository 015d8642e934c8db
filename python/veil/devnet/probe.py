"""Asking a node of the devnet how it is: the client RPC and ``GET /metrics``, over loopback HTTP.

Plain :mod:`http.client` with a short timeout (no proxy settings apply, no event loop needed), one
connection per request. Every failure — refused, timed out, a non-200 answer, a body that is not
the expected JSON — is a :class:`ProbeError`, so a caller only asks "did it answer?".
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from veil.node.config import ConfigError, parse_listen

__all__ = [
    "ConsensusSample",
    "NodeSample",
    "ProbeError",
    "consensus_sample",
    "in_parallel",
    "metrics",
    "rpc",
    "sample",
]

RPC_PATH = "/storage_rpc/v1"
T = TypeVar("T")
R = TypeVar("R")


class ProbeError(Exception):
    """The node did not answer as expected."""


def _request(address: str, method: str, path: str, body: bytes | None, timeout: float) -> bytes:
    try:
        host, port = parse_listen(address)
    except ConfigError as exc:
        raise ProbeError(str(exc)) from None
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body, headers)
        answer = connection.getresponse()
        data = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ProbeError(f"{address}: {type(exc).__name__}") from None
    finally:
        connection.close()
    if answer.status != 200:
        raise ProbeError(f"{address}: HTTP {answer.status}")
    return data


def rpc(address: str, method: str, params: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """POST one storage RPC request to the node at ``address`` (HOST:PORT); its JSON answer."""
    body = orjson.dumps({"method": method, "params": params})
    data = _request(address, "POST", RPC_PATH, body, timeout)
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProbeError(f"{address}: {method} answered something other than JSON") from None
    if not isinstance(answer, dict):
        raise ProbeError(f"{address}: {method} answered something other than a JSON object")
    return answer


def node_keys(address: str, timeout: float = 1.0) -> set[str]:
    """The Ed25519 keys (hex) of the nodes the node at ``address`` knows, itself included."""
    nodes = rpc(address, "get_nodes", {}, timeout).get("nodes")
    if not isinstance(nodes, list):
        raise ProbeError(f"{address}: get_nodes answered no node list")
    return {str(node.get("ed25519")) for node in nodes if isinstance(node, dict)}


@dataclass(frozen=True, slots=True)
class ConsensusSample:
    """What a node's ``GET /consensus`` showed: the consensus it holds, as the devnet sees it
    (read, not verified: this is a status view; nodes and clients check the signatures)."""

    period: int
    signatures: int
    nodes: set[str]
    """The Ed25519 keys (hex) of the nodes it lists."""
    guards: int
    valid_until_ms: int


def consensus_sample(address: str, timeout: float = 1.0) -> ConsensusSample:
    """The consensus the node at ``address`` holds; :class:`ProbeError` if it holds none."""
    data = _request(address, "GET", "/consensus", None, timeout)
    try:
        document = orjson.loads(data)
        body, signatures = document["consensus"], document["signatures"]
        entries = [entry for entry in body["nodes"] if isinstance(entry, dict)]
        return ConsensusSample(
            period=int(body["period"]),
            signatures=len(signatures),
            nodes={str(entry.get("ed25519")) for entry in entries},
            guards=sum(entry.get("guard") is True for entry in entries),
            valid_until_ms=int(body["valid_until_ms"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ProbeError(f"{address}: /consensus answered no consensus") from None


def metrics(address: str, timeout: float = 1.0) -> dict[str, float]:
    """The node's Prometheus samples, summed over their labels: ``{name: value}``."""
    text = _request(address, "GET", "/metrics", None, timeout).decode("utf-8", errors="replace")
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value_text = line.rpartition(" ")
        name = name_part.partition("{")[0].strip()
        try:
            value = float(value_text)
        except ValueError:
            continue
        totals[name] = totals.get(name, 0.0) + value
    return totals


@dataclass(slots=True)
class NodeSample:
    """What one node reported at one moment (``up`` False: it did not answer)."""

    up: bool
    at: float
    messages: int = 0
    data_bytes: int = 0
    requests: float = 0.0
    """Client RPC requests answered since the node started (every method and status)."""
    sees: set[str] = field(default_factory=set)
    """The Ed25519 keys of the nodes in its view."""


def sample(address: str, at: float, timeout: float = 1.0) -> NodeSample:
    """Scrape the node's metrics, then ask its view (a ``get_nodes``, counted after the scrape)."""
    try:
        figures = metrics(address, timeout)
        sees = node_keys(address, timeout)
    except ProbeError:
        return NodeSample(up=False, at=at)
    return NodeSample(
        up=True,
        at=at,
        messages=int(figures.get("veil_messages_stored", 0)),
        data_bytes=int(figures.get("veil_bytes_stored", 0)),
        requests=figures.get("veil_rpc_requests_total", 0.0),
        sees=sees,
    )


def in_parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(item) for item in items]`` on up to 32 threads (each call bounded by I/O)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
        return list(pool.map(function, items))
