"""A node's configuration: ``DATA_DIR/node.toml``, every limit explicit and documented.

``veil node init`` writes the file from :func:`render_config`, with a comment on every setting;
``veil node run`` reads it with :func:`load_config`. Unknown keys and values of the wrong type are
refused with :class:`ConfigError` naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.errors import VeilError

__all__ = [
    "ConfigError",
    "Limits",
    "LinkSettings",
    "NetworkSettings",
    "NodeConfig",
    "OnionSettings",
    "StoreSettings",
    "load_config",
    "render_config",
]

CONFIG_FILE = "node.toml"
KEY_FILE = "node.key"
STORE_DIR = "store"


def setting(default: Any, doc: str) -> Any:
    """A configuration field with its documentation (written as a comment into node.toml)."""
    return field(default=default, metadata={"doc": doc})


class ConfigError(VeilError):
    """The node's configuration file is missing, malformed, or has an invalid value."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit the node enforces. Defaults follow oxen-storage-server where it has one."""

    max_body_bytes: int = setting(
        10 * 1024 * 1024,
        "Largest HTTP request body; refused (413) from its Content-Length, before it is read.",
    )
    max_header_bytes: int = setting(
        16 * 1024,
        "Largest HTTP request header section (request line to blank line), in bytes as received.",
    )
    max_message_bytes: int = setting(76_800, "Largest message data after base64 decoding.")
    min_ttl_ms: int = setting(10_000, "Shortest message lifetime: 10 s.")
    max_ttl_ms: int = setting(
        14 * 24 * 3600 * 1000,
        "Longest lifetime of a message to a public inbox (a namespace divisible by 10): 14 days.",
    )
    max_ttl_private_ms: int = setting(
        30 * 24 * 3600 * 1000,
        "Longest lifetime of a message the account stores for itself (other namespaces), and the "
        "furthest ``expire`` may push an expiry from now: 30 days.",
    )
    attachment_max_ttl_ms: int = setting(
        21 * 24 * 3600 * 1000,
        "Longest lifetime of an attachment chunk (namespace 17), and the furthest ``expire`` may "
        "push one from now: 21 days, as long as Session's file server keeps a file.",
    )
    store_tolerance_ms: int = setting(
        10_000,
        "Most a store's timestamp may be ahead of the node's clock, and its expiry behind it.",
    )
    clock_skew_ms: int = setting(
        60_000,
        "Most a signed request's or a new message's timestamp may differ from the node's clock.",
    )
    retrieve_max_messages: int = setting(
        256,
        "Most messages one ``retrieve`` answers (more says whether others wait).",
    )
    retrieve_max_bytes: int = setting(
        7_800_000,
        "Most bytes one ``retrieve`` answers, counted as base64 data + hash + 100 per message "
        "(at least one message is always returned); without max_count or max_size a retrieve "
        "gets a fifth of it.",
    )
    batch_max_requests: int = setting(20, "Most subrequests in one ``batch`` or ``sequence``.")
    account_max_revoked: int = setting(
        50,
        "Most revoked subaccount tokens kept per account (the latest by signed timestamp), each "
        "with the owner's signed revocation so that anti-entropy can carry it to every member.",
    )
    account_max_unrevoked: int = setting(
        50,
        "Most unrevoked subaccount tokens remembered per account (the latest by signed timestamp), "
        "each with the owner's signed unrevocation, so that an older revocation another swarm "
        "member still holds cannot revoke them again through anti-entropy.",
    )
    delete_max_hashes: int = setting(
        1_000,
        "Most message hashes one ``delete``, ``expire`` or ``get_expiries`` names.",
    )
    account_max_messages: int = setting(
        10_000,
        "Per-account quota: messages held for one account across its namespaces.",
    )
    account_max_bytes: int = setting(
        100 * 1024 * 1024,
        "Per-account quota: bytes of message data held for one account.",
    )
    storage_max_bytes: int = setting(
        8 * 1024 * 1024 * 1024,
        "Global cap on message data bytes held by the node; past it stores get `storage full`.",
    )
    attachments_max_bytes: int = setting(
        4 * 1024 * 1024 * 1024,
        "Cap on attachment chunk bytes (namespace 17) held by the node, inside storage_max_bytes: "
        "past it chunk stores get `storage full` while messages are still taken.",
    )
    max_connections: int = setting(
        10_000,
        "Most simultaneous client connections; further ones are closed at once.",
    )
    request_timeout_s: float = setting(
        30.0,
        "Budget to read and answer one request; idle keep-alive connections close after it.",
    )
    max_connections_per_address: int = setting(
        256,
        "Most simultaneous client connections from one IPv4 address or IPv6 /64; further ones "
        "are closed at once (the address is counted in memory only, never logged).",
    )
    max_buffered_body_bytes: int = setting(
        256 * 1024 * 1024,
        "Most bytes of HTTP request bodies held at once over all connections: bodies still "
        "arriving, and those of requests waiting or being handled. A body that would take the "
        "node past it is refused (503), from its Content-Length when that alone is too big. "
        "Without it, max_connections connections could each hold max_body_bytes; 256 MiB is 25 "
        "bodies of the largest size, or thousands of ordinary requests.",
    )
    max_body_chunks: int = setting(
        4096,
        "Most chunks (chunk-size lines, the last one included) in one chunked request body; the "
        "request is refused (413) at the first one past it. Each chunk costs the parser a step.",
    )
    max_pipelined_requests: int = setting(
        16,
        "Most requests parsed ahead on one connection (pipelined into one read) and waiting for "
        "their answers; the bytes after them wait unparsed, with reading paused, until those are "
        "answered.",
    )


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The LMDB environment and its writer."""

    map_size_bytes: int = setting(
        256 * 1024 * 1024,
        "Initial LMDB map size; grown (doubled) when full, up to max_map_size_bytes.",
    )
    max_map_size_bytes: int = setting(
        64 * 1024 * 1024 * 1024,
        "Largest LMDB map size; past it stores get `storage full` and reads keep working.",
    )
    commit_max_batch: int = setting(512, "Most stores one group-commit transaction carries.")
    commit_max_delay_ms: float = setting(
        0.0,
        "Extra wait for more stores before a commit (0: commit as soon as the disk is free).",
    )
    commit_gather_ms: float = setting(
        2.0,
        "Under load (stores waited for the last commit), how long a commit that would carry fewer "
        "than commit_gather_below stores first waits for more (0: never).",
    )
    commit_gather_below: int = setting(
        16, "Under load, a commit with fewer stores than this waits commit_gather_ms for more."
    )
    apply_turn_ms: float = setting(
        5.0,
        "Longest the event loop waits, per commit, while the writer applies a batch (py-lmdb gives "
        "up the GIL on every call; 0: the loop never waits, and the writer waits for the GIL).",
    )
    gil_switch_ms: float = setting(
        0.5,
        "The node process's interpreter switch interval (sys.setswitchinterval): how long the "
        "event loop may keep the GIL from the store writer, which needs it back after each disk "
        "flush and signing call (0: leave Python's 5 ms; else 0.05 to 100).",
    )
    sweep_interval_s: float = setting(1.0, "How often expired messages are removed.")
    sweep_max_batch: int = setting(10_000, "Most expired messages one sweep transaction removes.")
    reader_check_interval_s: float = setting(
        60.0,
        "How often stale LMDB reader slots (left by dead processes) are cleared.",
    )


@dataclass(frozen=True, slots=True)
class OnionSettings:
    """Onion requests and the node links that carry them between nodes."""

    hop_timeout_s: float = setting(10.0, "How long a node waits for the next hop's answer.")
    request_budget_s: float = setting(
        30.0, "How long the first hop waits for a whole onion request's answer."
    )
    replay_window_s: float = setting(
        120.0,
        "A layer issued further than this from the node's clock is refused; replay tags are kept "
        "for twice this.",
    )
    replay_max_entries: int = setting(
        1_000_000, "Most replay tags remembered per half-window; past it new layers are refused."
    )
    replay_max_entries_per_source: int = setting(
        100_000,
        "Most replay tags one source (a client address, or a peer node) may hold per half-window; "
        "past it that source's new layers are refused, so that one sender cannot fill the cache.",
    )
    max_onion_bytes: int = setting(
        11 * 1024 * 1024, "Largest onion a node accepts from a client or a peer."
    )
    peel_batch_max: int = setting(64, "Most waiting layers peeled in one parallel batch.")
    max_hops: int = setting(
        8, "Most nodes a request may pass through; a layer arriving after more is refused."
    )
    circuit_idle_s: float = setting(
        300.0, "An onion v2 circuit unused for this long is dropped (its client builds another)."
    )
    circuit_lifetime_s: float = setting(
        3600.0, "An onion v2 circuit is dropped this long after it was opened, used or not."
    )
    max_circuits: int = setting(
        50_000, "Most onion v2 circuits this node holds; past it new ones are refused."
    )
    max_circuits_per_client: int = setting(
        1024,
        "Most circuits one client address (IPv4, or IPv6 /64) may open through this node (many "
        "clients may share an address behind a NAT).",
    )
    max_circuits_per_peer: int = setting(
        20_000, "Most circuits one peer node may open through this node (for all its clients)."
    )


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Node links: the authenticated, encrypted connections between nodes (docs/protocol.md)."""

    max_frame: int = setting(
        11 * 1024 * 1024 + 1024,
        "Largest frame on a node link (at least max_onion_bytes + 64); node RPC answers and "
        "replication batches are built at most half this size.",
    )
    max_streams: int = setting(
        4096, "Most requests in flight on one node link; past it the link answers OVERLOADED."
    )
    max_serving_bytes: int = setting(
        64 * 1024 * 1024,
        "Most bytes of a peer's requests being answered on one link at once (at least "
        "max_frame); past it the link answers OVERLOADED.",
    )
    connect_timeout_s: float = setting(3.0, "Time to open a TCP connection to a peer.")
    backoff_max_s: float = setting(10.0, "Longest wait between reconnection attempts.")
    handshake_timeout_s: float = setting(
        5.0, "A connection whose handshake is not done by then is closed."
    )
    handshake_max_skew_s: float = setting(
        60.0,
        "A handshake whose timestamp is further than this from the node's clock is refused (with "
        "the last timestamp kept per node, this refuses a replayed first message).",
    )
    max_handshakes: int = setting(
        256, "Most connections in handshake at once (not yet authenticated); more are closed."
    )
    max_handshakes_per_address: int = setting(
        16, "Most connections in handshake at once from one IPv4 address or IPv6 /64."
    )
    max_handshakes_per_subnet: int = setting(
        64,
        "Most connections in handshake at once from one IPv4 /24 or IPv6 /48 (so that filling "
        "max_handshakes takes several operators' networks, not one's many addresses).",
    )
    max_links_per_peer: int = setting(
        2, "Most accepted links one admitted node may hold; a newer one closes the oldest."
    )
    idle_timeout_s: float = setting(300.0, "A link with no traffic for this long is closed.")
    partial_frame_timeout_s: float = setting(
        30.0, "A link that holds part of a frame for this long without completing one is closed."
    )
    max_write_buffer_bytes: int = setting(
        32 * 1024 * 1024,
        "Most bytes waiting to be sent on one link; a peer that does not read is disconnected.",
    )
    rekey_interval_s: float = setting(600.0, "How often a link's sending key is rekeyed.")
    rekey_bytes: int = setting(1 << 30, "Bytes a link sends before its sending key is rekeyed.")
    max_age_s: float = setting(
        3600.0, "An outgoing link older than this is replaced by a new handshake (fresh keys)."
    )


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """Membership, swarms and replication."""

    swarm_size: int = setting(5, "Nodes that hold each account's messages (R).")
    min_swarm_size: int = setting(
        1,
        "Fewest nodes a swarm may have; with a smaller view stores are refused (503). "
        "1 lets a lone node serve; a network sets it to its write quorum.",
    )
    write_quorum: int = setting(
        3, "Swarm members that must hold a store durably before it is answered (W)."
    )
    announce_interval_s: float = setting(
        900.0,
        "How often a node re-signs its announcement (and registers it with the authorities).",
    )
    authority_timeout_s: float = setting(
        5.0, "How long a node waits for an authority's answer (registration, consensus)."
    )
    replication_timeout_s: float = setting(
        5.0,
        "How long a write waits for the other swarm members' answers; a store without the write "
        "quorum by then answers 503.",
    )
    swarm_answer_grace_s: float = setting(
        0.5,
        "Once the write quorum holds a store, how much longer its answer waits for the other "
        "members' receipts (those later are listed as timed out and finish in the background).",
    )
    forward_attempts: int = setting(
        5,
        "How often a node sends a forwarded delete or expiry change to a member that did not apply "
        "it (no answer, or a 5xx): 1 s, 2 s, 4 s… apart, past replication_timeout_s in the "
        "background. Anti-entropy does not carry deletes, so this is what makes them reach a "
        "member whose link failed (revocations it carries too).",
    )
    sync_interval_s: float = setting(
        5.0, "How often a node compares its accounts with another swarm member (anti-entropy)."
    )
    sync_max_messages: int = setting(
        2000, "Most messages one anti-entropy exchange transfers each way."
    )
    sync_max_accounts: int = setting(
        1000, "Most accounts compared in one anti-entropy summary request."
    )
    sync_batch_messages: int = setting(
        500, "Most messages read, pushed or fetched at once (then cut by size into frames)."
    )
    max_background_tasks: int = setting(
        20_000,
        "Most replications, forwarded writes and joins' syncs a node runs in the background at "
        "once (they outlive the request that made them: a member that does not answer holds "
        "them up to its timeouts). Past it a store or forwarded write is not sent to that "
        "member, and its part of the answer says failed.",
    )
    sync_max_revocations: int = setting(
        1_000,
        "Most signed revocations (revoke_subaccount / unrevoke_subaccount requests) one "
        "anti-entropy answer or push carries; a peer's answer or push with more is refused whole. "
        "At least [limits] account_max_revoked + account_max_unrevoked.",
    )
    handover_window_s: float = setting(
        600.0,
        "A node that left an account's swarm less than this long ago may still replicate and "
        "sync that account here (hand-over).",
    )
    rpc_max_items: int = setting(
        20_000, "Most entries in any list or map of a node-RPC body from a peer."
    )


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A node's settings. ``data_dir`` is where node.toml was read from."""

    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 22021
    log_level: str = "info"
    link_host: str = "127.0.0.1"
    link_port: int = 0
    peers_file: str = "peers.json"
    external_services: tuple[str, ...] = ()
    network_file: str = ""
    limits: Limits = field(default_factory=Limits)
    store: StoreSettings = field(default_factory=StoreSettings)
    onion: OnionSettings = field(default_factory=OnionSettings)
    links: LinkSettings = field(default_factory=LinkSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)

    @property
    def peers_path(self) -> Path:
        return self.data_dir / self.peers_file

    @property
    def network_path(self) -> Path | None:
        return self.data_dir / self.network_file if self.network_file else None

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def store_path(self) -> Path:
        return self.data_dir / STORE_DIR


def section_toml(instance: object, *, wrap: int | None = None) -> str:
    """A settings dataclass as TOML lines, each setting after its doc as a comment (wrapped at
    ``wrap`` columns if given): the node's, the authority's and the community server's."""
    lines = []
    for f in dataclasses.fields(instance):  # type: ignore[arg-type]
        doc = f.metadata.get("doc", "")
        if doc and wrap:
            lines += textwrap.wrap(doc, wrap, initial_indent="# ", subsequent_indent="# ")
        elif doc:
            lines.append(f"# {doc}")
        lines.append(f"{f.name} = {toml_value(getattr(instance, f.name))}")
    return "\n".join(lines)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(config: NodeConfig) -> str:
    """The text of node.toml for ``config``, every setting with its comment."""
    return (
        "# Veil service node configuration. Every limit the node enforces is here.\n"
        "# Sizes are in bytes, times in milliseconds (_ms) or seconds (_s).\n\n"
        "[node]\n"
        "# Address to listen on for the client RPC (HTTP/1.1).\n"
        f"listen = {toml_value(f'{config.listen_host}:{config.listen_port}')}\n"
        "# Log level: debug, info, warning, error. Logs never hold client addresses or contents.\n"
        f"log_level = {toml_value(config.log_level)}\n"
        "# Address for node links (other nodes forward onion requests here).\n"
        f"link_listen = {toml_value(f'{config.link_host}:{config.link_port}')}\n"
        "# The other nodes this node may forward to (JSON list, relative to this directory).\n"
        f"peers_file = {toml_value(config.peers_file)}\n"
        "# URL prefixes of external HTTP services an onion request may end at (none by default).\n"
        f"external_services = [{', '.join(toml_value(u) for u in config.external_services)}]\n"
        "# The network file (its directory authorities; relative to this directory). Empty: a\n"
        "# node on its own, serving every account itself.\n"
        f"network_file = {toml_value(config.network_file)}\n\n"
        "[limits]\n"
        f"{section_toml(config.limits)}\n\n"
        "[store]\n"
        f"{section_toml(config.store)}\n\n"
        "[onion]\n"
        f"{section_toml(config.onion)}\n\n"
        "[links]\n"
        f"{section_toml(config.links)}\n\n"
        "[network]\n"
        f"{section_toml(config.network)}\n"
    )


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) to a host and a port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"listen must be HOST:PORT, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"listen must be HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen port must be 0..65535, got {port}")
    return host, port


def build_section(cls: Any, table: object, name: str) -> Any:
    """A settings dataclass from its TOML table: known keys only, each of its default's type
    (an integer taken for a float), none negative."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name for f in dataclasses.fields(cls)}
    defaults = cls()
    values: dict[str, Any] = {}
    for key, raw in table.items():
        value = raw
        if key not in known:
            raise ConfigError(f"[{name}] has an unknown setting {key!r}")
        default = getattr(defaults, key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ConfigError(
                f"[{name}] {key} must be a {type(default).__name__}, got {type(value).__name__}"
            )
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"[{name}] {key} must not be negative")
        values[key] = value
    return cls(**values)


def _string_list(node: dict[str, Any], key: str, what: str) -> list[str]:
    values = node.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"[node] {key} must be a list of {what}")
    return values


def _node_section(node: dict[str, Any]) -> dict[str, Any]:
    extra = set(node) - {
        "listen",
        "log_level",
        "link_listen",
        "peers_file",
        "external_services",
        "network_file",
    }
    if extra:
        raise ConfigError(f"[node] has unknown setting(s) {sorted(extra)}")
    host, port = parse_listen(str(node.get("listen", "127.0.0.1:22021")))
    log_level = str(node.get("log_level", "info"))
    if log_level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(
            f"[node] log_level must be debug, info, warning or error, not {log_level!r}"
        )
    link_host, link_port = parse_listen(str(node.get("link_listen", "127.0.0.1:0")))
    peers_file = node.get("peers_file", "peers.json")
    if not isinstance(peers_file, str) or not peers_file:
        raise ConfigError("[node] peers_file must be a file name")
    services = _string_list(node, "external_services", "http(s):// URL prefixes")
    if not all(u.startswith(("http://", "https://")) for u in services):
        raise ConfigError("[node] external_services must be a list of http(s):// URL prefixes")
    network_file = node.get("network_file", "")
    if not isinstance(network_file, str):
        raise ConfigError("[node] network_file must be a file name")
    return {
        "listen_host": host,
        "listen_port": port,
        "log_level": log_level,
        "link_host": link_host,
        "link_port": link_port,
        "peers_file": peers_file,
        "external_services": tuple(services),
        "network_file": network_file,
    }


def _check_consistency(
    limits: Limits,
    store: StoreSettings,
    onion: OnionSettings,
    links: LinkSettings,
    network: NetworkSettings,
) -> None:
    if links.max_frame < onion.max_onion_bytes + 64:
        raise ConfigError("[links] max_frame must be at least [onion] max_onion_bytes + 64")
    if not links.max_handshakes_per_address <= links.max_handshakes_per_subnet:
        raise ConfigError(
            "[links] max_handshakes_per_subnet must be at least max_handshakes_per_address"
        )
    if links.max_serving_bytes < links.max_frame:
        raise ConfigError("[links] max_serving_bytes must be at least max_frame")
    if not 1 <= network.write_quorum <= network.swarm_size:
        raise ConfigError("[network] write_quorum must be between 1 and swarm_size")
    if not 1 <= network.min_swarm_size <= network.swarm_size:
        raise ConfigError("[network] min_swarm_size must be between 1 and swarm_size")
    if limits.min_ttl_ms > min(limits.max_ttl_ms, limits.attachment_max_ttl_ms):
        raise ConfigError(
            "[limits] min_ttl_ms must not exceed max_ttl_ms nor attachment_max_ttl_ms"
        )
    if limits.max_buffered_body_bytes < limits.max_body_bytes:
        raise ConfigError("[limits] max_buffered_body_bytes must be at least max_body_bytes")
    if limits.max_pipelined_requests < 1:
        raise ConfigError("[limits] max_pipelined_requests must be at least 1")
    if limits.max_body_chunks < 1:
        raise ConfigError("[limits] max_body_chunks must be at least 1")
    _check_store(store)
    if network.sync_max_revocations < limits.account_max_revoked + limits.account_max_unrevoked:
        raise ConfigError(
            "[network] sync_max_revocations must be at least [limits] account_max_revoked + "
            "account_max_unrevoked (one account's revocations fit in one exchange)"
        )


def _check_store(store: StoreSettings) -> None:
    if store.map_size_bytes > store.max_map_size_bytes:
        raise ConfigError("[store] map_size_bytes must not exceed max_map_size_bytes")
    if store.commit_max_batch < 1:
        raise ConfigError("[store] commit_max_batch must be at least 1")
    if store.gil_switch_ms and not 0.05 <= store.gil_switch_ms <= 100:
        raise ConfigError("[store] gil_switch_ms must be 0 or from 0.05 to 100")


def read_toml(path: Path, *, init: str, sections: set[str]) -> dict[str, Any]:
    """A service's TOML file as a document holding only ``sections``; :class:`ConfigError` if
    it is missing (``init`` is the command that writes it), unreadable or has another section."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; run `{init}` first") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(document) - sections
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    return document


def load_config(data_dir: Path) -> NodeConfig:
    """Read ``data_dir/node.toml``."""
    document = read_toml(
        data_dir / CONFIG_FILE,
        init="veil node init",
        sections={"node", "limits", "store", "onion", "links", "network"},
    )
    node = _node_section(document.get("node", {}))
    limits = build_section(Limits, document.get("limits", {}), "limits")
    store = build_section(StoreSettings, document.get("store", {}), "store")
    onion = build_section(OnionSettings, document.get("onion", {}), "onion")
    links = build_section(LinkSettings, document.get("links", {}), "links")
    network = build_section(NetworkSettings, document.get("network", {}), "network")
    _check_consistency(limits, store, onion, links, network)
    return NodeConfig(
        data_dir=data_dir,
        limits=limits,
        store=store,
        onion=onion,
        links=links,
        network=network,
        **node,
    )
