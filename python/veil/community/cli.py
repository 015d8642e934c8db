"""``veil community init | run | add-room | add-moderator | rooms``: the server's actions.

:func:`add_server_commands` adds them to the ``veil community`` subparsers (the client's actions,
``join``, ``leave``…, are added to the same object elsewhere). The operator's actions work on the
data directory directly, also while the server runs (SQLite in WAL mode lets both write). Every
failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from veil.errors import InvalidInputError

if TYPE_CHECKING:
    from veil.community.config import CommunityConfig
    from veil.community.db import CommunityDb

__all__ = ["add_server_commands"]

_DEFAULT_LISTEN = "127.0.0.1:22030"

Handler = Callable[[argparse.Namespace], int]


class _Failed(Exception):
    """A failure reported as one line on stderr with exit code 1."""


def add_server_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the server's actions under ``veil community``."""

    def action(name: str, summary: str, handler: Handler) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=summary, description=summary)
        parser.add_argument("--data-dir", type=Path, required=True, help="the server's directory")
        parser.set_defaults(handler=_guard(name, handler))
        return parser

    init = action("init", "create a community server's key, community.toml and database", _init)
    init.add_argument(
        "--listen",
        default=_DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="address to serve on (default %(default)s)",
    )
    init.add_argument(
        "--url",
        help="the base URL published in join links, as exit nodes reach it "
        "(default http://<listen>)",
    )
    action("run", "serve in the foreground (SIGTERM/SIGINT stop it)", _run)
    room = action("add-room", "create a room and print its join link", _add_room)
    room.add_argument("token", metavar="TOKEN", help="the room's token: 1-64 of A-Z a-z 0-9 _ -")
    room.add_argument("name", metavar="NAME", help="the room's name")
    room.add_argument("--description", default="", metavar="TEXT", help="the room's description")
    room.add_argument("--read-only", action="store_true", help="only moderators may post and react")
    moderator = action(
        "add-moderator", "make a blinded ID a moderator of a room or of every room", _add_moderator
    )
    moderator.add_argument("user", metavar="USER", help="the blinded ID (25…)")
    moderator.add_argument(
        "--room", metavar="TOKEN", help="moderate this room only (default: every room)"
    )
    moderator.add_argument(
        "--admin", action="store_true", help="also an admin (may add and remove moderators)"
    )
    action("rooms", "list the rooms with their join links", _rooms)


def _guard(name: str, handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from veil.node.config import ConfigError  # noqa: PLC0415  (no work at import time)

        try:
            return handler(args)
        except (_Failed, ConfigError, InvalidInputError) as exc:
            print(f"veil community {name}: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"veil community {name}: {exc.strerror or exc}", file=sys.stderr)
            return 1

    return run


def _load(data_dir: Path) -> tuple[CommunityConfig, bytes]:
    from veil.community.config import load_config, load_server_key  # noqa: PLC0415

    config = load_config(data_dir)
    _, public = load_server_key(config.key_path)
    return config, public


def _open_db(config: CommunityConfig) -> CommunityDb:
    from veil.community.db import CommunityDb  # noqa: PLC0415

    return CommunityDb(config.db_path)


def _init(args: argparse.Namespace) -> int:
    from veil.community.config import (  # noqa: PLC0415
        CONFIG_FILE,
        CommunityConfig,
        create_server_key,
        render_config,
    )
    from veil.node.config import parse_listen  # noqa: PLC0415
    from veil.protocol.community import check_base_url  # noqa: PLC0415

    data_dir: Path = args.data_dir
    host, port = parse_listen(args.listen)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = check_base_url(args.url or f"http://{shown}")
    config = CommunityConfig(data_dir=data_dir, url=url, listen_host=host, listen_port=port)
    config_path = data_dir / CONFIG_FILE
    if config_path.exists() or config.key_path.exists() or config.db_path.exists():
        raise _Failed(f"{data_dir} already holds a community server; not overwriting")
    data_dir.mkdir(parents=True, exist_ok=True)
    public = create_server_key(config.key_path)
    config_path.write_text(render_config(config), encoding="utf-8")
    _open_db(config).close()
    print(f"server key  {public.hex()}")
    print(f"url         {url}")
    print(f"config      {config_path}")
    print(f"add a room  veil community add-room --data-dir {data_dir} TOKEN NAME")
    print(f"serve       veil community run --data-dir {data_dir}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from veil.community.config import load_config  # noqa: PLC0415
    from veil.community.server import run_server  # noqa: PLC0415  (uvloop loads only to run)
    from veil.node.logs import configure_logging  # noqa: PLC0415

    config = load_config(args.data_dir)
    configure_logging(config.log_level)
    run_server(config)
    return 0


def _add_room(args: argparse.Namespace) -> int:
    from veil.clock import now_ms  # noqa: PLC0415
    from veil.protocol.community import build_link, check_room_token  # noqa: PLC0415

    config, public = _load(args.data_dir)
    token = check_room_token(args.token)
    if not 0 < len(args.name) <= 64 or len(args.description) > 1024:
        raise _Failed("a room name is 1 to 64 characters, a description at most 1,024")
    db = _open_db(config)
    try:
        room = db.create_room(
            token, args.name, args.description, read_only=args.read_only, now_ms=now_ms()
        )
    finally:
        db.close()
    if room is None:
        raise _Failed(f"a room {token!r} exists already")
    link = build_link(config.url, public, token)
    print(f"room        {token} ({args.name}){' read-only' if args.read_only else ''}")
    print(f"join link   {link.veil_link()}")
    print(f"Session     {link.session_link()}")
    print(_qr(link.veil_link()))
    return 0


def _add_moderator(args: argparse.Namespace) -> int:
    from veil.clock import now_ms  # noqa: PLC0415
    from veil.protocol.community import check_blinded_id  # noqa: PLC0415

    config, _ = _load(args.data_dir)
    try:
        pubkey, _point = check_blinded_id(args.user)
    except InvalidInputError:
        raise _Failed("USER is not a blinded ID: 25 and 64 hex digits of an Ed25519 key") from None
    db = _open_db(config)
    try:
        room_id = None
        if args.room is not None:
            room = db.room(args.room)
            if room is None:
                raise _Failed(f"no room {args.room!r}")
            room_id = room.id
        user = db.user_id(pubkey, now_ms())
        db.set_moderator(room_id, user, moderator=True, admin=args.admin)
    finally:
        db.close()
    role = "admin" if args.admin else "moderator"
    where = f"room {args.room}" if args.room is not None else "every room"
    print(f"{pubkey} is now {role} of {where}")
    return 0


def _rooms(args: argparse.Namespace) -> int:
    from veil.protocol.community import build_link  # noqa: PLC0415

    config, public = _load(args.data_dir)
    db = _open_db(config)
    try:
        rooms = [(room, db.post_count(room.id)) for room in db.rooms()]
    finally:
        db.close()
    if not rooms:
        print("no rooms yet: veil community add-room --data-dir DIR TOKEN NAME")
        return 0
    for room, posts in rooms:
        flags = " read-only" if room.read_only else ""
        print(f"{room.token}  {room.name}  posts={posts} seqno={room.seqno}{flags}")
        print(f"    {build_link(config.url, public, room.token).veil_link()}")
    return 0


def _qr(text: str) -> str:
    import qrcode  # noqa: PLC0415  (only add-room shows a QR code)

    code = qrcode.QRCode(border=1)
    code.add_data(text)
    out = io.StringIO()
    code.print_ascii(out=out)
    return out.getvalue()
