"""The ``veil`` messenger commands: ``init``, ``restore``, ``whoami``, ``send``, ``inbox``.

State lives in ``~/.veil`` or ``--home DIR`` (:mod:`veil.client.home`). The network is found from
``--seed HOST:PORT`` (repeatable), else ``VEIL_SEEDS`` (comma-separated), else the local devnet
(``.devnet/devnet.json`` in the current directory); the node list is fetched from the first seed
that answers and every announcement is verified. All messages then travel through onion paths.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

from veil.client.home import ClientHome
from veil.errors import InvalidInputError, InvalidSessionIdError, MnemonicError, VeilError
from veil.identity import Identity
from veil.node.peers import PeerInfo
from veil.protocol.announcement import Announcement
from veil.session_id import parse_session_id

__all__ = ["add_client_commands"]

WARNING = (
    "Write these words down and keep them safe: they are your account. Anyone who has them\n"
    "can read your messages and speak as you; without them a lost device is a lost account."
)


class CommandFailed(VeilError):
    """A failure reported as one line on stderr with exit code 1."""


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def home_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--home", type=Path, default=Path.home() / ".veil", help="state directory (~/.veil)"
        )

    def network_options(parser: argparse.ArgumentParser) -> None:
        home_option(parser)
        parser.add_argument(
            "--seed", action="append", default=[], metavar="HOST:PORT", help="a node to start from"
        )

    init = commands.add_parser("init", help="create an account: Session ID and recovery phrase")
    home_option(init)
    init.add_argument("--name", help="your display name")
    init.set_defaults(handler=_guard(_init))

    restore = commands.add_parser("restore", help="restore an account from its recovery phrase")
    home_option(restore)
    restore.add_argument("--name", help="your display name")
    restore.set_defaults(handler=_guard(_restore))

    whoami = commands.add_parser("whoami", help="show your Session ID")
    home_option(whoami)
    whoami.set_defaults(handler=_guard(_whoami))

    send = commands.add_parser("send", help="send a message (text from the argument or stdin)")
    network_options(send)
    send.add_argument("session_id", metavar="SESSION_ID")
    send.add_argument("text", nargs="?", metavar="TEXT")
    send.set_defaults(handler=_guard(_send))

    safety = commands.add_parser(
        "safety-number", help="the number (and QR code) to compare with a contact in person"
    )
    home_option(safety)
    safety.add_argument("session_id", metavar="SESSION_ID")
    safety.set_defaults(handler=_guard(_safety_number))

    inbox = commands.add_parser("inbox", help="fetch and show new messages")
    network_options(inbox)
    inbox.set_defaults(handler=_guard(_inbox))


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CommandFailed, VeilError) as exc:
            print(f"veil {args.command}: {exc}", file=sys.stderr)
            return 1

    return run


def _home(args: argparse.Namespace) -> ClientHome:
    return ClientHome(args.home)


def _qr(text: str) -> str:
    import qrcode  # noqa: PLC0415  (only commands that show a QR code load it)

    code = qrcode.QRCode(border=1)
    code.add_data(text)
    out = io.StringIO()
    code.print_ascii(out=out)
    return out.getvalue()


def _init(args: argparse.Namespace) -> int:
    home = _home(args)
    identity = Identity.generate()
    home.create(identity, args.name)
    print(f"Your Session ID: {identity.session_id}\n")
    print(_qr(identity.session_id))
    print(f"Recovery phrase:\n\n    {identity.mnemonic}\n")
    print(WARNING)
    return 0


def _restore(args: argparse.Namespace) -> int:
    home = _home(args)
    phrase = getpass.getpass("Recovery phrase: ") if sys.stdin.isatty() else sys.stdin.readline()
    try:
        identity = Identity.from_mnemonic(phrase)
    except MnemonicError as exc:
        raise CommandFailed(str(exc)) from None
    home.create(identity, args.name)
    print(f"Restored: {identity.session_id}")
    return 0


def _whoami(args: argparse.Namespace) -> int:
    home = _home(args)
    identity = home.identity()
    name = home.state().get("name")
    print(identity.session_id + (f"  ({name})" if name else ""))
    return 0


def _safety_number(args: argparse.Namespace) -> int:
    from veil.client.safety import safety_number  # noqa: PLC0415

    mine = _home(args).identity().session_id
    try:
        number = safety_number(mine, args.session_id)
    except InvalidSessionIdError as exc:
        raise CommandFailed(f"{args.session_id!r} is not a Session ID: {exc}") from None
    groups = number.split()
    print("\n".join(" ".join(groups[i : i + 4]) for i in range(0, 12, 4)))
    print()
    print(_qr(number.replace(" ", "")))
    return 0


def _seeds(args: argparse.Namespace) -> list[str]:
    if args.seed:
        return list(args.seed)
    if os.environ.get("VEIL_SEEDS"):
        return [s.strip() for s in os.environ["VEIL_SEEDS"].split(",") if s.strip()]
    devnet = Path(".devnet") / "devnet.json"
    try:
        return list(json.loads(devnet.read_text())["seeds"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CommandFailed(
            "no network given: use --seed HOST:PORT, VEIL_SEEDS, or run `veil devnet up`"
        ) from None


async def _discover(seeds: list[str]) -> list[PeerInfo]:
    body = orjson.dumps({"method": "get_nodes", "params": {}})
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for seed in seeds:
            try:
                async with session.post(f"http://{seed}/storage_rpc/v1", data=body) as answer:
                    listing = orjson.loads(await answer.read())
            except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError):
                continue
            peers = []
            for entry in listing.get("nodes", []) if isinstance(listing, dict) else []:
                try:
                    a = Announcement.from_json(entry)
                except InvalidInputError:
                    continue
                peers.append(PeerInfo.of(a))
            if len(peers) >= 3:
                return peers
    raise CommandFailed(f"cannot reach the network (tried {len(seeds)} seed(s))")


def _send(args: argparse.Namespace) -> int:
    try:
        parse_session_id(args.session_id)
    except InvalidSessionIdError as exc:
        raise CommandFailed(f"{args.session_id!r} is not a Session ID: {exc}") from None
    text = args.text if args.text is not None else sys.stdin.read()
    if not text.strip():
        raise CommandFailed("nothing to send")
    home = _home(args)
    identity = home.identity()
    name = home.state().get("name")
    return asyncio.run(_send_async(_seeds(args), identity, name, args.session_id, text))


async def _send_async(
    seeds: list[str], identity: Identity, name: str | None, recipient: str, text: str
) -> int:
    from veil.client.messaging import Messenger  # noqa: PLC0415
    from veil.client.network import NetworkClient, NetworkError  # noqa: PLC0415
    from veil.client.swarm import StoreError, SwarmClient  # noqa: PLC0415

    peers = await _discover(seeds)
    async with NetworkClient(peers) as network:
        messenger = Messenger(identity, SwarmClient(network), name=name)
        try:
            await messenger.send_text(recipient, text)
        except (NetworkError, StoreError) as exc:
            raise CommandFailed(f"not sent: {exc}") from None
    print("sent")
    return 0


def _inbox(args: argparse.Namespace) -> int:
    home = _home(args)
    identity = home.identity()
    return asyncio.run(_inbox_async(_seeds(args), identity, home))


async def _inbox_async(seeds: list[str], identity: Identity, home: ClientHome) -> int:
    from veil.client.messaging import Messenger  # noqa: PLC0415
    from veil.client.network import NetworkClient  # noqa: PLC0415
    from veil.client.swarm import SwarmClient  # noqa: PLC0415

    state = home.state()
    peers = await _discover(seeds)
    async with NetworkClient(peers) as network:
        swarm = SwarmClient(network)
        swarm.import_cursors(state.get("cursors"))
        messenger = Messenger(identity, swarm)
        messenger.import_seen(state.get("seen"))
        received = await messenger.fetch()
        state["cursors"] = swarm.export_cursors()
        state["seen"] = messenger.export_seen()
    home.save_state(state)
    for message in received:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(message.sent_ms / 1000))
        sender = message.sender + (f" ({message.name})" if message.name else "")
        print(f"{when}  {sender}\n    {message.body}")
    if not received:
        print("no new messages")
    return 0
