"""A community server's configuration: ``DATA_DIR/community.toml``, every limit explicit.

``veil community init`` writes the file from :func:`render_config`, a comment on every setting;
``veil community run`` reads it with :func:`load_config`. As for node.toml, unknown sections and
keys, values of the wrong type and negative numbers are refused with :class:`ConfigError` naming
them. The server's X25519 secret key is ``DATA_DIR/community.key`` (32 bytes, mode 0600).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil import _core
from veil.errors import InvalidInputError
from veil.node.config import (
    ConfigError,
    Limits,
    build_section,
    format_address,
    parse_listen,
    read_toml,
    section_toml,
    setting,
    toml_value,
)
from veil.node.identity import read_secret, write_secret
from veil.protocol.community import check_base_url

__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "KEY_FILE",
    "CommunityConfig",
    "CommunityLimits",
    "ConfigError",
    "HttpSettings",
    "check_config",
    "create_server_key",
    "load_config",
    "load_server_key",
    "render_config",
]

CONFIG_FILE = "community.toml"
KEY_FILE = "community.key"
DB_FILE = "community.sqlite3"
_LOG_LEVELS = ("debug", "info", "warning", "error")
_NODE_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class CommunityLimits:
    """Every limit the server enforces on requests, posts, polls and inboxes."""

    clock_window_s: int = setting(
        60,
        "A signed request's ts may be at most this far from the server's clock; (pubkey, nonce) "
        "pairs are remembered for as long as their ts is accepted, so a replay is refused.",
    )
    replay_max_entries: int = setting(
        500_000,
        "Most (pubkey, nonce) pairs remembered at once; past it signed requests are refused (503) "
        "until older pairs leave the clock window.",
    )
    replay_max_entries_per_user: int = setting(
        5_000,
        "Most pairs one blinded ID may hold in the replay cache (about 40 requests a second); past "
        "it that user's requests are refused (429), so that no one user fills the cache.",
    )
    max_post_bytes: int = setting(8192, "Longest post text, in bytes of UTF-8.")
    max_name_chars: int = setting(64, "Longest display name sent with a post, in characters.")
    max_emoji_chars: int = setting(12, "Longest reaction (an emoji sequence), in characters.")
    max_emoji_per_post: int = setting(
        32, "Most different reactions one post may carry; a new one past it is refused (400)."
    )
    max_pins_per_room: int = setting(16, "Most posts pinned in one room at once.")
    post_rate: int = setting(
        5, "Most posts one user may make in one room per post_rate_window_s (then 429)."
    )
    post_rate_window_s: float = setting(16.0, "The window of post_rate.")
    poll_max_rooms: int = setting(64, "Most rooms one poll names.")
    poll_max_changes: int = setting(
        256, "Most changes one poll answers per room; `more` says that others wait."
    )
    poll_max_bytes: int = setting(
        4 * 1024 * 1024,
        "Most bytes of changes (as JSON) one poll answers over all its rooms, and of messages "
        "(as base64) one inbox_poll answers; at least one per room is always answered, and `more` "
        "says that others wait. Keep answers well under the exit nodes' max_onion_bytes.",
    )
    active_window_s: int = setting(
        7 * 24 * 3600, "A room's active users are those who polled it within this window."
    )
    inbox_max_bytes: int = setting(
        32 * 1024, "Largest inbox message (its ciphertext, after base64 decoding)."
    )
    inbox_ttl_s: int = setting(15 * 24 * 3600, "How long an inbox message is kept: 15 days.")
    inbox_max_per_recipient: int = setting(
        1_000, "Most messages waiting for one recipient; past it sends to them get 507."
    )
    inbox_rate: int = setting(30, "Most inbox messages one user may send per inbox_rate_window_s.")
    inbox_rate_window_s: float = setting(60.0, "The window of inbox_rate.")
    inbox_poll_max: int = setting(256, "Most messages one inbox_poll answers.")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP layer (the node's, ``veil.node.http``): requests come from exit nodes only."""

    max_body_bytes: int = setting(
        256 * 1024,
        "Largest request body (a sealed request); refused (413) from its Content-Length.",
    )
    max_header_bytes: int = setting(
        _NODE_LIMITS.max_header_bytes,
        "Largest HTTP request header section (request line to blank line), in bytes as received.",
    )
    max_connections: int = setting(
        _NODE_LIMITS.max_connections, "Most simultaneous connections; more are closed at once."
    )
    max_connections_per_address: int = setting(
        256,
        "Most simultaneous connections from one IPv4 address or IPv6 /64 (an exit node may carry "
        "many users' requests; the address is counted in memory only, never logged).",
    )
    request_timeout_s: float = setting(
        _NODE_LIMITS.request_timeout_s,
        "Budget to read and answer one request; idle keep-alive connections close after it.",
    )
    max_buffered_body_bytes: int = setting(
        64 * 1024 * 1024,
        "Most bytes of request bodies held at once over all connections (arriving, waiting or "
        "being handled); a body that would pass it is refused (503). At least max_body_bytes.",
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
        4.0, "On stop (SIGTERM, SIGINT): how long requests in flight may take to finish."
    )

    def limits(self) -> Limits:
        """These limits in the form the HTTP layer takes."""
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
class CommunityConfig:
    """A community server's settings. ``data_dir`` is where community.toml was read from."""

    data_dir: Path
    url: str = "http://127.0.0.1:22030"
    listen_host: str = "127.0.0.1"
    listen_port: int = 22030
    log_level: str = "info"
    limits: CommunityLimits = field(default_factory=CommunityLimits)
    http: HttpSettings = field(default_factory=HttpSettings)

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE


def render_config(config: CommunityConfig) -> str:
    """The text of community.toml for ``config``, every setting with its comment."""
    return (
        "# Veil community server configuration. Every limit the server enforces is here.\n"
        "# Sizes are in bytes, times in seconds (_s).\n\n"
        "[server]\n"
        "# The base URL published in join links: exit nodes POST sealed requests to <url>/v1\n"
        "# (their operators allow-list it in external_services).\n"
        f"url = {toml_value(config.url)}\n"
        "# Address to listen on (HTTP/1.1).\n"
        f"listen = {toml_value(format_address(config.listen_host, config.listen_port))}\n"
        "# Log level: debug, info, warning, error. Logs never hold addresses or post contents.\n"
        f"log_level = {toml_value(config.log_level)}\n\n"
        "[limits]\n"
        f"{section_toml(config.limits, wrap=98)}\n\n"
        "[http]\n"
        f"{section_toml(config.http, wrap=98)}\n"
    )


def _server_section(table: object) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError("[server] must be a table")
    extra = set(table) - {"url", "listen", "log_level"}
    if extra:
        raise ConfigError(f"[server] has unknown setting(s) {sorted(extra)}")
    for key in ("url", "listen", "log_level"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"[server] {key} must be a str, got {type(table[key]).__name__}")
    host, port = parse_listen(table.get("listen", "127.0.0.1:22030"))
    try:
        url = check_base_url(table.get("url", f"http://{format_address(host, port)}"))
    except InvalidInputError as exc:
        raise ConfigError(f"[server] url: {exc}") from None
    log_level = table.get("log_level", "info")
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"[server] log_level must be one of {', '.join(_LOG_LEVELS)}")
    return {"url": url, "listen_host": host, "listen_port": port, "log_level": log_level}


def check_config(config: CommunityConfig) -> None:
    """Refuse settings that are each well-typed but make no sense (together)."""
    limits, http = config.limits, config.http
    for key in (
        "clock_window_s",
        "replay_max_entries",
        "replay_max_entries_per_user",
        "max_post_bytes",
        "max_name_chars",
        "max_emoji_chars",
        "post_rate",
        "post_rate_window_s",
        "poll_max_rooms",
        "poll_max_changes",
        "poll_max_bytes",
        "inbox_max_bytes",
        "inbox_ttl_s",
        "inbox_max_per_recipient",
        "inbox_rate",
        "inbox_rate_window_s",
        "inbox_poll_max",
    ):
        if getattr(limits, key) <= 0:
            raise ConfigError(f"[limits] {key} must be positive")
    for key in (
        "max_body_bytes",
        "max_header_bytes",
        "max_connections",
        "max_pipelined_requests",
        "max_body_chunks",
    ):
        if getattr(http, key) <= 0:
            raise ConfigError(f"[http] {key} must be positive")
    if http.max_connections_per_address <= 0 or http.request_timeout_s <= 0:
        raise ConfigError("[http] max_connections_per_address and request_timeout_s: positive")
    # A sealed request is its JSON + 73 bytes; a post's text may take up to 6 bytes of JSON per
    # byte (\\u00XX escapes) and an inbox message 4/3 (base64).
    needed = max(6 * limits.max_post_bytes, limits.inbox_max_bytes * 4 // 3) + 4096
    if http.max_body_bytes < needed:
        raise ConfigError(
            f"[http] max_body_bytes must be at least {needed} for these [limits] "
            "(6 x max_post_bytes or 4/3 x inbox_max_bytes, + 4096)"
        )
    if http.max_buffered_body_bytes < http.max_body_bytes:
        raise ConfigError("[http] max_buffered_body_bytes must be at least max_body_bytes")


def load_config(data_dir: Path) -> CommunityConfig:
    """Read ``data_dir/community.toml``."""
    path = data_dir / CONFIG_FILE
    document = read_toml(path, init="veil community init", sections={"server", "limits", "http"})
    config = CommunityConfig(
        data_dir=data_dir,
        limits=build_section(CommunityLimits, document.get("limits", {}), "limits"),
        http=build_section(HttpSettings, document.get("http", {}), "http"),
        **_server_section(document.get("server", {})),
    )
    check_config(config)
    return config


# --- the server key -------------------------------------------------------------------------------


def create_server_key(path: Path) -> bytes:
    """Write a new X25519 secret key to ``path`` (which must not exist), mode 0600; return the
    public key."""
    secret = _core.x25519_generate_secret()
    write_secret(path, secret)
    return _core.x25519_public_key(secret)


def load_server_key(path: Path) -> tuple[bytes, bytes]:
    """(secret, public) from ``path``; refuse a key file that others can read."""
    secret = read_secret(path, init="veil community init", what="a 32-byte X25519 secret key")
    return secret, _core.x25519_public_key(secret)
