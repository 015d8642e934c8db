"""``veil authority init`` and ``veil authority run``: a directory authority of a Veil network.

::

    veil authority init --data-dir DIR --listen HOST:PORT --link-listen HOST:PORT [--name NAME]
    veil authority run --data-dir DIR --network FILE

``init`` writes ``authority.key`` (a new Ed25519 seed, mode 0600) and ``authority.toml`` (every
setting with its comment) and prints the authority's entry for the network file as one JSON object
on stdout: ``{"name", "ed25519", "http", "link"}``. ``run`` runs it until SIGTERM or SIGINT; it
refuses to start if its key is not one of the network file's authorities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from veil.authority.config import (
    CONFIG_FILE,
    AuthorityConfig,
    ConfigError,
    load_config,
    render_config,
)
from veil.node.config import parse_listen
from veil.node.logs import configure_logging

__all__ = ["add_authority_commands"]


def add_authority_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``authority init`` and ``authority run`` under the ``veil`` command."""
    authority = subparsers.add_parser("authority", help="run a directory authority of a network")
    commands = authority.add_subparsers(dest="authority_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create an authority's key and authority.toml")
    init.add_argument("--data-dir", type=Path, required=True, help="the authority's directory")
    init.add_argument("--listen", required=True, help="HOST:PORT of its HTTP API")
    init.add_argument("--link-listen", required=True, help="HOST:PORT of its node-link port")
    init.add_argument("--name", help="its name in the network file (default: the directory's)")
    init.set_defaults(handler=_init)

    run = commands.add_parser(
        "run", help="run the authority in the foreground (SIGTERM/SIGINT stop it)"
    )
    run.add_argument("--data-dir", type=Path, required=True, help="the authority's directory")
    run.add_argument("--network", type=Path, required=True, help="the network file")
    run.set_defaults(handler=_run)


def _init(args: argparse.Namespace) -> int:
    from veil.node.identity import create_node_key  # noqa: PLC0415  (no work at import time)

    data_dir: Path = args.data_dir
    name = args.name if args.name is not None else (data_dir.resolve().name or "authority")
    try:
        host, port = parse_listen(args.listen)
        link_host, link_port = parse_listen(args.link_listen)
        if not 0 < len(name) <= 64:
            raise ConfigError("--name must be 1 to 64 characters")
    except ConfigError as exc:
        print(f"veil authority init: {exc}", file=sys.stderr)
        return 2
    config = AuthorityConfig(
        data_dir=data_dir,
        name=name,
        listen_host=host,
        listen_port=port,
        link_host=link_host,
        link_port=link_port,
    )
    config_path = data_dir / CONFIG_FILE
    if config_path.exists() or config.key_path.exists():
        print(
            f"veil authority init: {data_dir} already holds an authority; not overwriting",
            file=sys.stderr,
        )
        return 1
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its key and secrets
        identity = create_node_key(config.key_path)
        config_path.write_text(render_config(config), encoding="utf-8")
    except OSError as exc:
        print(f"veil authority init: cannot write to {data_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    print(json.dumps(config.entry(identity.ed25519_public_key)))
    print(f"key {config.key_path}, settings {config_path}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from veil.authority.server import run_authority  # noqa: PLC0415  (uvloop loads only to run)
    from veil.errors import InvalidInputError  # noqa: PLC0415
    from veil.protocol.network_file import load_network_file  # noqa: PLC0415

    try:
        config = load_config(args.data_dir)
        network = load_network_file(args.network)
    except (ConfigError, InvalidInputError) as exc:
        print(f"veil authority run: {exc}", file=sys.stderr)
        return 1
    configure_logging(config.log_level)
    try:
        run_authority(config, network)
    except ConfigError as exc:
        print(f"veil authority run: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"veil authority run: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
