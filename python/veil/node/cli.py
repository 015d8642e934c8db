"""``veil node init`` and ``veil node run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from veil.node.config import (
    CONFIG_FILE,
    ConfigError,
    NodeConfig,
    load_config,
    parse_listen,
    render_config,
)
from veil.node.logs import configure_logging

__all__ = ["add_node_commands"]


def add_node_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``node init`` and ``node run`` under the ``veil`` command."""
    node = subparsers.add_parser("node", help="run a Veil service node")
    commands = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create a node's key and node.toml")
    init.add_argument("--data-dir", type=Path, required=True, help="the node's directory")
    init.add_argument(
        "--listen",
        default="127.0.0.1:22021",
        help="HOST:PORT for the client RPC (default %(default)s)",
    )
    init.add_argument(
        "--link-listen",
        help="HOST:PORT for node links (default: the --listen host, port + 1)",
    )
    init.add_argument(
        "--network",
        type=Path,
        metavar="FILE",
        help="the network file (its directory authorities); without it the node is on its own",
    )
    init.set_defaults(handler=_init)

    run = commands.add_parser("run", help="run the node in the foreground (SIGTERM/SIGINT stop it)")
    run.add_argument("--data-dir", type=Path, required=True, help="the node's directory")
    run.set_defaults(handler=_run)


def _init(args: argparse.Namespace) -> int:
    from veil.node.identity import create_node_key  # noqa: PLC0415  (no work at import time)

    data_dir: Path = args.data_dir
    try:
        host, port = parse_listen(args.listen)
        if args.link_listen:
            link_host, link_port = parse_listen(args.link_listen)
        else:
            link_host, link_port = host, (port + 1 if port else 0)
    except ConfigError as exc:
        print(f"veil node init: {exc}", file=sys.stderr)
        return 2
    config_path = data_dir / CONFIG_FILE
    config = NodeConfig(
        data_dir=data_dir,
        listen_host=host,
        listen_port=port,
        link_host=link_host,
        link_port=link_port,
        network_file=str(args.network.resolve()) if args.network else "",
    )
    if config_path.exists() or config.key_path.exists():
        print(f"veil node init: {data_dir} already holds a node; not overwriting", file=sys.stderr)
        return 1
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        identity = create_node_key(config.key_path)
        config_path.write_text(render_config(config), encoding="utf-8")
    except OSError as exc:
        print(f"veil node init: cannot write to {data_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"node key   {config.key_path} (Ed25519 {identity.ed25519_public_key.hex()})")
    print(f"config     {config_path}")
    print(f"start with veil node run --data-dir {data_dir}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from veil.node.server import run_node  # noqa: PLC0415  (uvloop loads only to run)

    try:
        config = load_config(args.data_dir)
    except ConfigError as exc:
        print(f"veil node run: {exc}", file=sys.stderr)
        return 1
    configure_logging(config.log_level)
    try:
        run_node(config)
    except ConfigError as exc:
        print(f"veil node run: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"veil node run: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
