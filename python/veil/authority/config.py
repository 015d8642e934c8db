"""A directory authority's configuration: ``DATA_DIR/authority.toml``, every setting documented.

``veil authority init`` writes the file from :func:`render_config`, with a comment on every setting;
``veil authority run`` reads it with :func:`load_config`. As for node.toml, unknown sections and
keys, and values of the wrong type, are refused with :class:`ConfigError` naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.node.config import (
    ConfigError,
    Limits,
    LinkSettings,
    build_section,
    format_address,
    parse_listen,
    read_toml,
    section_toml,
    setting,
    toml_value,
)
from veil.protocol.consensus import MAX_NODES

__all__ = [
    "CONFIG_FILE",
    "KEY_FILE",
    "AdmissionSettings",
    "AuthorityConfig",
    "ConfigError",
    "HttpSettings",
    "LinkPortSettings",
    "ScheduleSettings",
    "check_config",
    "load_allowlist",
    "load_config",
    "render_config",
]

CONFIG_FILE = "authority.toml"
KEY_FILE = "authority.key"
_NODE_LIMITS = Limits()
_NODE_LINKS = LinkSettings()
_POLICIES = ("open", "allowlist")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """Who may become a node: the policy, the checks, and what registration may cost."""

    policy: str = setting(
        "open",
        'Who may register: "open" (anyone whose node passes the checks) or "allowlist" (only '
        "the node keys listed in allowlist_file).",
    )
    allowlist_file: str = setting(
        "allowlist.txt",
        "With policy = allowlist: node Ed25519 keys, 64 hex digits a line (# comments), "
        "relative to this directory.",
    )
    max_nodes_per_subnet: int = setting(
        2,
        "Most nodes (admitted and pending) whose announced link host is in one IPv4 /24 or IPv6 "
        "/48; more registrations from that subnet are refused. Loopback networks set it high.",
    )
    guard_uptime_s: float = setting(
        8 * 86_400.0,
        "A node is voted Guard once it has been reachable at every check for this long; a failed "
        "check restarts the clock.",
    )
    max_missed_checks: int = setting(
        3,
        "A node that fails this many reachability checks in a row is no longer voted for (it is "
        "checked again each period and voted for once it passes).",
    )
    forget_after_s: float = setting(
        7 * 86_400.0,
        "A candidate unreachable at every check for this long is forgotten (the period it was "
        "first admitted is kept: registering again does not change it).",
    )
    max_candidates: int = setting(
        100_000,
        f"Most candidates held (admitted and pending); at most {MAX_NODES:_} (the largest "
        "consensus).",
    )
    registrations_per_minute_per_address: int = setting(
        60,
        "Most registrations one IPv4 address or IPv6 /64 may send per minute (the address is "
        "counted in memory only, never logged).",
    )
    rate_limit_max_addresses: int = setting(
        100_000,
        "Most addresses the registration rate limit counts in one minute; registrations from "
        "further addresses are refused (429) until the next minute.",
    )
    max_clock_skew_s: float = setting(
        60.0,
        "An announcement dated further ahead of the authority's clock than this is refused (400).",
    )
    check_timeout_s: float = setting(
        5.0, "Time to connect to a node's link port and complete the handshake, each."
    )
    check_concurrency: int = setting(64, "Most reachability checks in progress at once.")


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """When in a period the authority votes and signs (fractions of the network's period_s)."""

    vote_at: float = setting(
        0.5, "Fraction of period n - 1 at which the vote for period n is published."
    )
    sign_at: float = setting(
        0.75,
        "Fraction of period n - 1 at which the consensus of period n is computed from the votes "
        "held, signed and its signature sent to the other authorities.",
    )
    peer_timeout_s: float = setting(
        10.0, "How long one request to another authority (a vote, a signature) may take."
    )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP API's limits (the node's defaults where they apply)."""

    max_body_bytes: int = setting(
        64 * 1024,
        "Largest request body but a vote's; refused (413) from its Content-Length.",
    )
    max_vote_bytes: int = setting(
        128 * 1024 * 1024,
        "Largest body of POST /authority/v1/vote (a vote of 100,000 nodes is about 60 MB). Its "
        "sender must prove it is another authority of the network (a signed header, checked "
        "before the body is read); the vote's own signature is checked once it is read whole.",
    )
    max_header_bytes: int = setting(
        _NODE_LIMITS.max_header_bytes,
        "Largest HTTP request header section (request line to blank line), in bytes as received.",
    )
    max_connections: int = setting(
        _NODE_LIMITS.max_connections,
        "Most simultaneous connections; further ones are closed at once.",
    )
    max_connections_per_address: int = setting(
        32,
        "Most simultaneous connections from one IPv4 address or IPv6 /64 (each may carry a body "
        "up to max_vote_bytes to the vote route).",
    )
    request_timeout_s: float = setting(
        _NODE_LIMITS.request_timeout_s,
        "Budget to read and answer one request; idle keep-alive connections close after it.",
    )
    max_buffered_body_bytes: int = setting(
        4 * 128 * 1024 * 1024,
        "Most bytes of request bodies held at once over all connections (arriving, waiting or "
        "being handled); a body that would pass it is refused (503): four votes of the largest "
        "size by default. vote_reserve_bytes of it are for votes alone.",
    )
    vote_reserve_bytes: int = setting(
        2 * 128 * 1024 * 1024,
        "Bytes of max_buffered_body_bytes that only votes (whose senders proved they are "
        "authorities) may use: however many strangers' partial bodies the other routes hold, "
        "this much is left for the authorities' votes. At least max_vote_bytes, and less than "
        "max_buffered_body_bytes by at least max_body_bytes.",
    )
    max_pipelined_requests: int = setting(
        _NODE_LIMITS.max_pipelined_requests,
        "Most requests parsed ahead on one connection and waiting for their answers.",
    )
    max_body_chunks: int = setting(
        _NODE_LIMITS.max_body_chunks,
        "Most chunks in one chunked request body; refused (413) at the first one past it.",
    )
    drain_timeout_s: float = setting(
        4.0,
        "On stop (SIGTERM, SIGINT): how long requests in flight may take to finish before their "
        "connections are closed.",
    )

    def limits(self) -> Limits:
        """These limits in the form the HTTP layer (``veil.node.http``) takes."""
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_header_bytes=self.max_header_bytes,
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            request_timeout_s=self.request_timeout_s,
            max_buffered_body_bytes=self.max_buffered_body_bytes,
            max_pipelined_requests=self.max_pipelined_requests,
            max_body_chunks=self.max_body_chunks,
        )


@dataclass(frozen=True, slots=True)
class LinkPortSettings:
    """The authority's node-link port: candidates and other authorities may complete a handshake
    there; it serves no request (the node's link limits, smaller where nothing is served)."""

    handshake_timeout_s: float = setting(
        _NODE_LINKS.handshake_timeout_s,
        "A connection whose handshake is not done by then is closed.",
    )
    handshake_max_skew_s: float = setting(
        _NODE_LINKS.handshake_max_skew_s,
        "A handshake whose timestamp is further than this from the authority's clock is refused.",
    )
    max_handshakes: int = setting(
        _NODE_LINKS.max_handshakes,
        "Most connections in handshake at once (not yet authenticated); more are closed.",
    )
    max_handshakes_per_address: int = setting(
        _NODE_LINKS.max_handshakes_per_address,
        "Most connections in handshake at once from one IPv4 address or IPv6 /64.",
    )
    max_handshakes_per_subnet: int = setting(
        _NODE_LINKS.max_handshakes_per_subnet,
        "Most connections in handshake at once from one IPv4 /24 or IPv6 /48.",
    )
    max_links_per_peer: int = setting(
        _NODE_LINKS.max_links_per_peer,
        "Most links one node or authority may hold open; a newer one closes the oldest.",
    )
    idle_timeout_s: float = setting(60.0, "A link with no traffic for this long is closed.")
    max_frame_bytes: int = setting(
        64 * 1024, "Largest frame read on a link (the port serves nothing: frames are refused)."
    )
    max_streams: int = setting(16, "Most requests in flight on one link (each is refused).")

    def link_settings(self) -> LinkSettings:
        """These limits in the form the node-link layer (``veil.node.links``) takes."""
        return LinkSettings(
            handshake_timeout_s=self.handshake_timeout_s,
            handshake_max_skew_s=self.handshake_max_skew_s,
            max_handshakes=self.max_handshakes,
            max_handshakes_per_address=self.max_handshakes_per_address,
            max_handshakes_per_subnet=self.max_handshakes_per_subnet,
            max_links_per_peer=self.max_links_per_peer,
            idle_timeout_s=self.idle_timeout_s,
            max_frame=self.max_frame_bytes,
            max_streams=self.max_streams,
        )


@dataclass(frozen=True, slots=True)
class AuthorityConfig:
    """An authority's settings. ``data_dir`` is where authority.toml was read from."""

    data_dir: Path
    name: str = "authority"
    listen_host: str = "127.0.0.1"
    listen_port: int = 41000
    link_host: str = "127.0.0.1"
    link_port: int = 41001
    log_level: str = "info"
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    link: LinkPortSettings = field(default_factory=LinkPortSettings)

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def allowlist_path(self) -> Path:
        return self.data_dir / self.admission.allowlist_file

    def entry(self, ed25519: bytes) -> dict[str, str]:
        """This authority's entry in a network file."""
        return {
            "name": self.name,
            "ed25519": ed25519.hex(),
            "http": format_address(self.listen_host, self.listen_port),
            "link": format_address(self.link_host, self.link_port),
        }


def render_config(config: AuthorityConfig) -> str:
    """The text of authority.toml for ``config``, every setting with its comment."""
    return (
        "# Veil directory authority configuration. Every limit the authority enforces is here.\n"
        "# Sizes are in bytes, times in seconds (_s).\n\n"
        "[authority]\n"
        "# This authority's name in the network file.\n"
        f"name = {toml_value(config.name)}\n"
        "# Address of the HTTP API (registration, votes, signatures, the consensus).\n"
        f"listen = {toml_value(format_address(config.listen_host, config.listen_port))}\n"
        "# Address of its node-link port: it completes a handshake there with its candidates and\n"
        "# the other authorities (and serves no requests).\n"
        f"link_listen = {toml_value(format_address(config.link_host, config.link_port))}\n"
        "# Log level: debug, info, warning, error. Logs never hold a registering address.\n"
        f"log_level = {toml_value(config.log_level)}\n\n"
        "[admission]\n"
        f"{section_toml(config.admission, wrap=98)}\n\n"
        "[schedule]\n"
        f"{section_toml(config.schedule, wrap=98)}\n\n"
        "[http]\n"
        f"{section_toml(config.http, wrap=98)}\n\n"
        "[link]\n"
        f"{section_toml(config.link, wrap=98)}\n"
    )


def _authority_section(table: object) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError("[authority] must be a table")
    extra = set(table) - {"name", "listen", "link_listen", "log_level"}
    if extra:
        raise ConfigError(f"[authority] has unknown setting(s) {sorted(extra)}")
    for key in ("name", "listen", "link_listen", "log_level"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"[authority] {key} must be a str, got {type(table[key]).__name__}")
    name = table.get("name", "authority")
    if not 0 < len(name) <= 64:
        raise ConfigError("[authority] name must be 1 to 64 characters")
    host, port = parse_listen(table.get("listen", "127.0.0.1:41000"))
    link_host, link_port = parse_listen(table.get("link_listen", "127.0.0.1:41001"))
    log_level = table.get("log_level", "info")
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"[authority] log_level must be one of {', '.join(_LOG_LEVELS)}")
    return {
        "name": name,
        "listen_host": host,
        "listen_port": port,
        "link_host": link_host,
        "link_port": link_port,
        "log_level": log_level,
    }


def check_config(config: AuthorityConfig) -> None:
    """Refuse settings that are each well-typed but make no sense (together)."""
    admission, schedule = config.admission, config.schedule
    if admission.policy not in _POLICIES:
        raise ConfigError(f"[admission] policy must be one of {', '.join(_POLICIES)}")
    if not 1 <= admission.max_candidates <= MAX_NODES:
        raise ConfigError(f"[admission] max_candidates must be 1 to {MAX_NODES:_}")
    for key in (
        "max_nodes_per_subnet",
        "max_missed_checks",
        "registrations_per_minute_per_address",
        "rate_limit_max_addresses",
        "check_concurrency",
    ):
        if getattr(admission, key) < 1:
            raise ConfigError(f"[admission] {key} must be at least 1")
    if admission.check_timeout_s <= 0:
        raise ConfigError("[admission] check_timeout_s must be positive")
    http, link = config.http, config.link
    for section, instance, keys in (
        ("http", http, ("max_body_bytes", "max_header_bytes", "max_connections")),
        ("http", http, ("max_connections_per_address", "request_timeout_s")),
        ("http", http, ("max_pipelined_requests", "max_body_chunks")),
        ("link", link, ("handshake_timeout_s", "max_handshakes", "max_handshakes_per_address")),
        ("link", link, ("max_links_per_peer", "idle_timeout_s", "max_streams")),
        ("link", link, ("max_handshakes_per_subnet",)),
    ):
        for key in keys:
            if getattr(instance, key) <= 0:
                raise ConfigError(f"[{section}] {key} must be positive")
    if link.max_handshakes_per_subnet < link.max_handshakes_per_address:
        raise ConfigError(
            "[link] max_handshakes_per_subnet must be at least max_handshakes_per_address"
        )
    if link.max_frame_bytes < 1024:
        raise ConfigError("[link] max_frame_bytes must be at least 1024")
    if not 0 < schedule.vote_at < schedule.sign_at < 1:
        raise ConfigError("[schedule] needs 0 < vote_at < sign_at < 1")
    if schedule.peer_timeout_s <= 0:
        raise ConfigError("[schedule] peer_timeout_s must be positive")
    _check_body_bytes(http)


def _check_body_bytes(http: HttpSettings) -> None:
    """The body bounds nest: one request in one vote in the votes' reserve, which leaves the
    other routes room for at least one body."""
    if not http.max_body_bytes <= http.max_vote_bytes <= http.vote_reserve_bytes:
        raise ConfigError("[http] needs max_body_bytes <= max_vote_bytes <= vote_reserve_bytes")
    if http.vote_reserve_bytes + http.max_body_bytes > http.max_buffered_body_bytes:
        raise ConfigError(
            "[http] needs vote_reserve_bytes + max_body_bytes <= max_buffered_body_bytes"
        )


def load_config(data_dir: Path) -> AuthorityConfig:
    """Read ``data_dir/authority.toml``."""
    path = data_dir / CONFIG_FILE
    document = read_toml(
        path,
        init="veil authority init",
        sections={"authority", "admission", "schedule", "http", "link"},
    )
    try:
        config = AuthorityConfig(
            data_dir=data_dir,
            admission=build_section(AdmissionSettings, document.get("admission", {}), "admission"),
            schedule=build_section(ScheduleSettings, document.get("schedule", {}), "schedule"),
            http=build_section(HttpSettings, document.get("http", {}), "http"),
            link=build_section(LinkPortSettings, document.get("link", {}), "link"),
            **_authority_section(document.get("authority", {})),
        )
        check_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def load_allowlist(path: Path) -> frozenset[bytes]:
    """The node keys of an allowlist file: 64 hex digits a line; blank lines and ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the allowlist {path}: {exc.strerror or exc}") from None
    keys = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            key = bytes.fromhex(entry)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(f"{path}:{number}: not a node key (64 hex digits)")
        keys.add(key)
    return frozenset(keys)
