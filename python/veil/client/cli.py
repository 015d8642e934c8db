"""The ``veil`` messenger commands; each wraps :class:`veil.client.messaging.Messenger`.

State lives in ``~/.veil`` or ``--home DIR`` (:mod:`veil.client.home`). The network is the one
the network file defines (``--network FILE``, else ``VEIL_NETWORK``, else the local devnet's
``.devnet/network.json``): the client trusts its authorities' keys and nothing else. The consensus
comes from the home (saved by an earlier run) or from a seed (``--seed HOST:PORT``, else
``VEIL_SEEDS``, else the ``devnet.json`` beside the network file), checked against the network
file either way (:mod:`veil.client.bootstrap`). The client enters the network through its guards,
kept in the home across runs and replaced only after ``VEIL_GUARD_LIFETIME`` (a TIME such as
``8w``, the default) or when the consensus no longer lists them as Guards
(:mod:`veil.client.guards`); all messages travel through onion paths.

A key sealed with a passphrase is opened with ``VEIL_PASSPHRASE`` if set, else a prompt on the
terminal; ``veil passphrase`` takes the new one from ``VEIL_NEW_PASSPHRASE`` or a prompt. Every
failure is one line on stderr and exit code 1; argparse's usage errors exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from veil.client.guards import GUARD_LIFETIME_MS
from veil.client.home import ClientHome
from veil.client.keystore import KeyFileError, PassphraseRequired
from veil.client.terminal import error_line
from veil.errors import InvalidInputError, InvalidSessionIdError, MnemonicError, VeilError
from veil.identity import Identity
from veil.session_id import parse_session_id

if TYPE_CHECKING:
    from veil.client.account import Entry
    from veil.client.directory import ClientDirectory
    from veil.client.messaging import Messenger, Received
    from veil.protocol.attachments import Manifest

__all__ = ["add_client_commands"]

WARNING = (
    "Write these words down and keep them safe: they are your account. Anyone who has them\n"
    "can read your messages and speak as you; without them a lost device is a lost account."
)
DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class CommandFailed(VeilError):
    """A failure reported as one line on stderr with exit code 1."""


def client_command(
    into: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    handler: Callable[[argparse.Namespace], int],
    *,
    network: bool,
) -> argparse.ArgumentParser:
    """A messenger command: ``--home``, and for one that reaches the network ``--network`` and
    ``--seed``; failures reported as one line (exit code 1)."""
    parser = into.add_parser(name, help=summary, description=summary)
    parser.add_argument(
        "--home", type=Path, default=Path.home() / ".veil", help="state directory (~/.veil)"
    )
    if network:
        parser.add_argument(
            "--network",
            type=Path,
            metavar="FILE",
            help="the network file: its authorities' keys are what the client trusts "
            "(else VEIL_NETWORK, else the local devnet's)",
        )
        parser.add_argument(
            "--seed",
            action="append",
            default=[],
            metavar="HOST:PORT",
            help="a node to fetch the consensus from (repeatable; else VEIL_SEEDS, else the "
            "seeds of the devnet.json beside the network file)",
        )
    parser.set_defaults(handler=_guard(handler))
    return parser


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(
        name: str,
        summary: str,
        handler: Callable[[argparse.Namespace], int],
        *,
        network: bool,
        into: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        return client_command(into, name, summary, handler, network=network)

    init = command(
        "init", "create an account: Session ID and recovery phrase", _init, network=False
    )
    init.add_argument("--name", help="your display name")
    init.add_argument("--qr-png", type=Path, metavar="FILE", help="also write the QR code as PNG")
    init.add_argument(
        "--passphrase", action="store_true", help="seal the key with a passphrase (Argon2id)"
    )

    restore = command(
        "restore", "restore an account from its recovery phrase (stdin)", _restore, network=False
    )
    restore.add_argument("--name", help="your display name")
    restore.add_argument("--passphrase", action="store_true", help="seal the key with a passphrase")

    link = command(
        "link", "add this device to an account (recovery phrase from stdin)", _link, network=True
    )
    link.add_argument("--device-name", help="how the account's devices list this one")
    link.add_argument("--passphrase", action="store_true", help="seal the key with a passphrase")

    whoami = command("whoami", "show your Session ID", _whoami, network=False)
    whoami.add_argument("--qr-png", type=Path, metavar="FILE", help="write the QR code as PNG")

    passphrase = command(
        "passphrase", "set, change or remove the key's passphrase", _passphrase, network=False
    )
    passphrase.add_argument("--remove", action="store_true", help="store the key unsealed")

    send = command(
        "send",
        "send a message (the text from the argument or stdin) and attachments",
        _send,
        network=True,
    )
    peer_or_group(send)
    send.add_argument("text", nargs="?", metavar="TEXT")
    send.add_argument(
        "--disappear",
        metavar="MODE:TIME",
        help="after-send:TIME or after-read:TIME, TIME like 30s, 5m, 1h, 1d",
    )
    send.add_argument(
        "--file",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="attach a file, image or audio (repeatable; 10 MiB each at most)",
    )
    send.add_argument(
        "--voice",
        type=Path,
        metavar="FILE",
        help="send a recording (any audio format) as a voice message, converted to Ogg Opus",
    )
    send.set_defaults(text_after_options=True)

    unsend = command("unsend", "take back a message you sent", _unsend, network=True)
    peer_or_group(unsend)
    unsend.add_argument(
        "--id",
        metavar="ID",
        help="the message (as `veil history` shows it); the last one sent if left out",
    )

    inbox = command("inbox", "fetch and show new messages", _inbox, network=True)
    del inbox

    chat = command(
        "chat", "talk with someone; new messages appear as they come", _chat, network=True
    )
    peer_or_group(chat)
    chat.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help="fetch interval")

    history = command("history", "show a conversation", _history, network=True)
    peer_or_group(history)

    command("requests", "messages from people who are not contacts yet", _requests, network=True)
    accept = command("accept", "accept a message request (or unblock)", _accept, network=True)
    peer(accept)
    block = command("block", "block a Session ID: its messages are dropped", _block, network=True)
    peer(block)
    command("contacts", "list contacts", _contacts, network=True)
    name = command("name", "set the display name sent with your messages", _name, network=True)
    name.add_argument("name", metavar="NAME")
    devices = command("devices", "list the account's devices", _devices, network=True)
    devices.add_argument("--remove", metavar="DEVICE_ID", help="take a lost device off the list")

    _add_group_commands(commands, command)
    from veil.client.attachment_cli import add_attachment_commands  # noqa: PLC0415

    add_attachment_commands(command)
    from veil.client.community_cli import add_room_commands  # noqa: PLC0415  (it imports this)

    add_room_commands(commands)

    safety = command(
        "safety-number",
        "the number (and QR code) to compare with a contact in person",
        _safety_number,
        network=False,
    )
    peer(safety)


def peer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID")


def peer_or_group(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "session_id",
        metavar="SESSION_ID|GROUP",
        help="a Session ID, or a group's id (03…, or the start of it)",
    )


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CommandFailed, VeilError) as exc:
            print(f"veil {args.command}: {error_line(str(exc))}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


# --- local commands ---------------------------------------------------------------------------


def _qr(text: str) -> str:
    import qrcode  # noqa: PLC0415  (only commands that show a QR code load it)

    code = qrcode.QRCode(border=1)
    code.add_data(text)
    out = io.StringIO()
    code.print_ascii(out=out)
    return out.getvalue()


def _qr_png(text: str, path: Path) -> None:
    import qrcode  # noqa: PLC0415
    from qrcode.image.pure import PyPNGImage  # noqa: PLC0415

    image = qrcode.make(text, image_factory=PyPNGImage, box_size=8, border=4)
    try:
        with path.open("wb") as handle:
            image.save(handle)
    except OSError as exc:
        raise CommandFailed(f"cannot write {path}: {exc.strerror}") from None


def _new_passphrase(args: argparse.Namespace) -> str | None:
    if not getattr(args, "passphrase", False) and args.command != "passphrase":
        return None
    variable = "VEIL_NEW_PASSPHRASE" if args.command == "passphrase" else "VEIL_PASSPHRASE"
    if os.environ.get(variable):
        return os.environ[variable]
    if not sys.stdin.isatty():
        raise CommandFailed(f"a new passphrase needs a terminal or {variable}")
    first = getpass.getpass("New passphrase: ")
    if first != getpass.getpass("Again: "):
        raise CommandFailed("the passphrases differ")
    if not first:
        raise CommandFailed("an empty passphrase protects nothing")
    return first


def _identity(home: ClientHome) -> Identity:
    try:
        return home.identity()
    except PassphraseRequired:
        pass
    if os.environ.get("VEIL_PASSPHRASE"):
        passphrase = os.environ["VEIL_PASSPHRASE"]
    elif sys.stdin.isatty():
        passphrase = getpass.getpass("Passphrase: ")
    else:
        raise CommandFailed("the key is sealed: give the passphrase in VEIL_PASSPHRASE") from None
    try:
        return home.identity(passphrase)
    except (KeyFileError, InvalidInputError) as exc:
        raise CommandFailed(str(exc)) from None


def _read_phrase() -> Identity:
    phrase = getpass.getpass("Recovery phrase: ") if sys.stdin.isatty() else sys.stdin.readline()
    try:
        return Identity.from_mnemonic(phrase)
    except MnemonicError as exc:
        raise CommandFailed(str(exc)) from None


def _init(args: argparse.Namespace) -> int:
    home = ClientHome(args.home)
    if home.exists():
        raise CommandFailed(f"{home.root} already holds an account (veil whoami shows it)")
    passphrase = _new_passphrase(args)
    identity = Identity.generate()
    home.create(identity, args.name, passphrase)
    print(f"Your Session ID: {identity.session_id}\n")
    print(_qr(identity.session_id))
    if args.qr_png:
        _qr_png(identity.session_id, args.qr_png)
        print(f"QR code written to {args.qr_png}\n")
    print(f"Recovery phrase:\n\n    {identity.mnemonic}\n")
    print(WARNING)
    return 0


def _restore(args: argparse.Namespace) -> int:
    home = ClientHome(args.home)
    if home.exists():
        raise CommandFailed(f"{home.root} already holds an account (veil whoami shows it)")
    identity = _read_phrase()
    home.create(identity, args.name, _new_passphrase(args))
    print(f"Restored: {identity.session_id}")
    return 0


def _whoami(args: argparse.Namespace) -> int:
    home = ClientHome(args.home)
    identity = _identity(home)
    name = home.book().config.name
    print(identity.session_id + (f"  ({name})" if name else ""))
    if args.qr_png:
        _qr_png(identity.session_id, args.qr_png)
    return 0


def _passphrase(args: argparse.Namespace) -> int:
    home = ClientHome(args.home)
    identity = _identity(home)
    home.set_passphrase(identity, None if args.remove else _new_passphrase(args))
    print("the key is now stored " + ("unsealed" if args.remove else "sealed with the passphrase"))
    return 0


def _parse_peer(session_id: str) -> str:
    try:
        parse_session_id(session_id)
    except InvalidSessionIdError as exc:
        raise CommandFailed(f"{session_id!r} is not a Session ID: {exc}") from None
    return session_id


def _safety_number(args: argparse.Namespace) -> int:
    from veil.client.safety import safety_number  # noqa: PLC0415

    mine = _identity(ClientHome(args.home)).session_id
    number = safety_number(mine, _parse_peer(args.session_id))
    groups = number.split()
    print("\n".join(" ".join(groups[i : i + 4]) for i in range(0, 12, 4)))
    print()
    print(_qr(number.replace(" ", "")))
    return 0


# --- the network ------------------------------------------------------------------------------


def _guard_lifetime_ms() -> int:
    """``VEIL_GUARD_LIFETIME`` (TIME like 30d or 8w), else 8 weeks."""
    text = os.environ.get("VEIL_GUARD_LIFETIME")
    if not text:
        return GUARD_LIFETIME_MS
    match = DURATION.match(text)
    if match is None or int(match[1]) == 0:
        raise CommandFailed("VEIL_GUARD_LIFETIME is a TIME such as 30d or 8w")
    return int(match[1]) * UNITS[match[2]]


async def _directory(args: argparse.Namespace, home: ClientHome | None) -> ClientDirectory:
    """The consensus to use, checked against the network file (saved in ``home``, if given)."""
    from veil.client.bootstrap import (  # noqa: PLC0415
        find_network_file,
        find_seeds,
        network_path,
        open_directory,
    )

    path = network_path(args.network)
    network = find_network_file(path)
    return await open_directory(network, find_seeds(args.seed, path), home)


def _online(
    args: argparse.Namespace,
    action: Callable[[Messenger], Awaitable[int]],
    *,
    home: ClientHome | None = None,
    identity: Identity | None = None,
) -> int:
    """Open the account, reach the network, run ``action`` and save the book whatever happens."""
    home = home or ClientHome(args.home)
    identity = identity or _identity(home)
    book = home.book()
    guards = home.guards(lifetime_ms=_guard_lifetime_ms())

    async def main() -> int:
        from veil.client.attachments import TransferError  # noqa: PLC0415
        from veil.client.messaging import Messenger  # noqa: PLC0415
        from veil.client.network import NetworkClient, NetworkError  # noqa: PLC0415
        from veil.client.swarm import StoreError, SwarmClient  # noqa: PLC0415

        directory = await _directory(args, home)
        network = NetworkClient(directory, guards=guards)
        home.save_guards(guards)
        if guards.shortfall:
            print(
                f"veil {args.command}: the consensus has {len(guards.ids)} Guard node(s), "
                f"fewer than the {guards.size} guards a client keeps; using those",
                file=sys.stderr,
            )
        async with network:
            messenger = Messenger(
                identity,
                SwarmClient(network),
                book=book,
                persist=home.save_book,
                transfer_dir=home.transfers_path,
            )
            try:
                return await action(messenger)
            except (NetworkError, StoreError) as exc:
                raise CommandFailed(f"the network did not take it: {exc}") from None
            except TransferError as exc:
                raise CommandFailed(str(exc)) from None
            finally:
                home.save_book(messenger.save())
                home.save_guards(guards)

    return asyncio.run(main())


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def _who(messenger: Messenger, session_id: str) -> str:
    name = messenger.peer_name(session_id)
    return session_id + (f" ({name})" if name else "")


GROUP_NOTICES = {
    "group_removed": "you were removed from the group",
    "group_deleted": "the group was deleted by an admin",
    "group_admin": "you are now an admin of the group",
}


def _show(messenger: Messenger, event: Received) -> str:
    if event.kind == "group_invite":
        return (
            f"{_when(event.sent_ms)}  {_who(messenger, event.sender)} invited you to the group "
            f"{event.body!r}: `veil group accept {event.group}` joins it"
        )
    if event.kind in GROUP_NOTICES:
        return f"{_when(event.sent_ms)}  {_who(messenger, event.peer)}: {GROUP_NOTICES[event.kind]}"
    if event.kind == "accept":
        return (
            f"{_when(event.sent_ms)}  {_who(messenger, event.peer)} accepted your message request"
        )
    if event.kind == "unsend":
        who = "you" if event.outgoing else _who(messenger, event.peer)
        return f"{_when(event.sent_ms)}  {who} took a message back"
    body = _with_attachments(event.body, event.attachments)
    return f"{_when(event.sent_ms)}  you → {_who(messenger, event.peer)}\n    {body}"


def _show_entry(messenger: Messenger, peer: str, entry: Entry) -> str:
    body = _with_attachments(entry.body, entry.manifests())
    return f"{_when(entry.sent_ms)}  {_who(messenger, peer)}\n    {body}"


def _with_attachments(body: str, manifests: Sequence[Manifest]) -> str:
    """The text, then a line for each attachment it carries."""
    if not manifests:
        return body
    from veil.client.attachment_cli import describe  # noqa: PLC0415

    lines = [body] if body else []
    return "\n    ".join(lines + [describe(m) for m in manifests])


def _disappear(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    mode, _, duration = text.partition(":")
    match = DURATION.match(duration)
    if mode not in ("after-send", "after-read") or match is None:
        raise CommandFailed(
            "--disappear takes after-send:TIME or after-read:TIME (TIME: 30s, 5m …)"
        )
    return mode.replace("-", "_"), int(match[1]) * UNITS[match[2]]


def _send(args: argparse.Namespace) -> int:
    if args.session_id.startswith("05"):
        _parse_peer(args.session_id)
    disappear = _disappear(args.disappear)
    attaching = bool(args.file) or args.voice is not None
    if args.text is not None:
        text = args.text
    else:
        text = "" if attaching and sys.stdin.isatty() else sys.stdin.read()
    if not text.strip() and not attaching:
        raise CommandFailed("nothing to send")

    async def action(messenger: Messenger) -> int:
        await messenger.refresh_config()  # blocked or accepted on another device?
        peer = _target(messenger, args.session_id)
        if attaching:
            from veil.client.attachment_cli import send_attachments  # noqa: PLC0415

            await send_attachments(
                messenger,
                peer,
                text.rstrip("\n"),
                files=args.file,
                voice=args.voice,
                disappear=disappear,
            )
        else:
            await messenger.send_text(peer, text.rstrip("\n"), disappear=disappear)
        print("sent")
        return 0

    return _online(args, action)


def _unsend(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        peer = _target(messenger, args.session_id)
        mine = [e for e in messenger.conversation(peer) if e.outgoing]
        if args.id:
            mine = [e for e in mine if e.id.startswith(args.id.lower())]
        if not mine:
            raise CommandFailed("no such message sent in that conversation on this device")
        await messenger.take_back(peer, mine[-1].id)
        print("taken back")
        return 0

    return _online(args, action)


def _inbox(args: argparse.Namespace) -> int:
    """New here means unread: messages other commands fetched but did not show are shown too."""

    async def action(messenger: Messenger) -> int:
        events = await messenger.fetch()
        lines = [
            (e.sent_ms, _show(messenger, e))
            for e in events
            if (e.group is None and (e.outgoing or e.kind in ("accept", "unsend")))
            or e.kind in ("group_invite", *GROUP_NOTICES)
        ]
        for peer, state in messenger.contacts().items():
            if state != "accepted":
                continue
            for entry in messenger.mark_read(peer):
                lines.append((entry.sent_ms, _show_entry(messenger, peer, entry)))
        for _, line in sorted(lines, key=lambda item: item[0]):
            print(line)
        from veil.client.community_cli import print_room_news  # noqa: PLC0415

        shown = _print_group_news(messenger, events)
        shown = print_room_news(messenger) or shown
        requests = messenger.requests()
        if requests:
            print(f"{len(requests)} message request(s): `veil requests` shows them")
        elif not lines and not shown:
            print("no new messages")
        return 0

    return _online(args, action)


def _print_group_news(messenger: Messenger, events: list[Received]) -> bool:
    """Each group's unread messages (and who left) under the group's name; whether any."""
    said = {
        "leave": "left the group",
        "member_added": "was added to the group",
        "member_removed": "was removed from the group",
    }
    left: dict[str, list[Received]] = {}
    for event in events:
        if event.kind in said and event.group is not None:
            left.setdefault(event.group, []).append(event)
    shown = False
    for account, group in messenger.groups.joined().items():
        entries = messenger.mark_read(account)
        if not entries and account not in left:
            continue
        shown = True
        print(f"── {group.name or '(no name)'} ({account[:10]}…)")
        lines = [
            (
                e.sent_ms,
                f"{_when(e.sent_ms)}  {e.name or (e.sender or '')[:10]}: "
                + _with_attachments(e.body, e.manifests()).replace("\n    ", "\n      "),
            )
            for e in entries
        ]
        lines += [
            (
                e.sent_ms,
                f"{_when(e.sent_ms)}  {_member(messenger, account, e.sender)} {said[e.kind]}",
            )
            for e in left.get(account, [])
        ]
        for _, line in sorted(lines):
            print(f"  {line}")
    return shown


def _print_entries(messenger: Messenger, peer: str, entries: list[Entry]) -> None:
    from veil.client.community_cli import author  # noqa: PLC0415

    for entry in entries:
        if entry.outgoing:
            who = "you"
        elif (entry.sender or "").startswith("25"):  # a community room: never a Session ID
            who = author(entry.name, entry.sender)
        else:
            who = entry.name or (entry.sender or peer)[:10]
        timer = "  ⏱" if entry.disappear else ""
        timer += "  ⚠ sent without forward secrecy" if entry.unprotected else ""
        reply = f"↪ #{entry.reply_to} " if entry.reply_to else ""
        reactions = (
            "  " + " ".join(f"{e} {n}" for e, n in entry.reactions.items())
            if entry.reactions
            else ""
        )
        body = _with_attachments(entry.body, entry.manifests())
        print(f"{_when(entry.sent_ms)}  [{entry.id[:8]}] {who}: {reply}{body}{timer}{reactions}")
    messenger.mark_read(peer)


def _protected(messenger: Messenger, peer: str) -> bool:
    return messenger.protection.level(peer) == "v2"


def _history(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        peer = _target(messenger, args.session_id)
        entries = messenger.conversation(peer)
        if peer.startswith("05"):
            from veil.client.protection import PROTECTION_LEVELS  # noqa: PLC0415

            print(f"protection: {PROTECTION_LEVELS[messenger.protection.level(peer)]}")
        _print_entries(messenger, peer, entries)
        if not entries:
            print("no messages")
        return 0

    return _online(args, action)


def _requests(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        requests = messenger.requests()
        for peer, entries in requests.items():
            print(f"{_who(messenger, peer)}: {len(entries)} message(s)")
            for entry in entries:
                print(f"    {entry.body}")
        if not requests:
            print("no message requests")
        else:
            print("`veil accept SESSION_ID` to talk, `veil block SESSION_ID` to drop them")
        return 0

    return _online(args, action)


def _accept(args: argparse.Namespace) -> int:
    peer = _parse_peer(args.session_id)

    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        entries = await messenger.accept(peer)
        print(f"accepted {_who(messenger, peer)}")
        _print_entries(messenger, peer, entries)
        return 0

    return _online(args, action)


def _block(args: argparse.Namespace) -> int:
    peer = _parse_peer(args.session_id)

    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        await messenger.block(peer)
        print(f"blocked {peer}")
        return 0

    return _online(args, action)


def _contacts(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        contacts = messenger.contacts()
        for peer, state in contacts.items():
            level = "  [forward secret, post-quantum]" if _protected(messenger, peer) else ""
            print(_who(messenger, peer) + ("  (blocked)" if state == "blocked" else level))
        if not contacts:
            print("no contacts yet")
        return 0

    return _online(args, action)


def _name(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or len(name) > 64:
        raise CommandFailed("a display name is 1 to 64 characters")

    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        await messenger.set_name(name)
        print(f"your messages now carry the name {name!r}")
        return 0

    return _online(args, action)


def _devices(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        if args.remove:
            await messenger.remove_device(args.remove)
        for device_id, device in sorted(
            messenger.config.live_devices().items(), key=lambda d: d[1].linked_ms
        ):
            here = "  (this device)" if device_id == messenger.book.device_id else ""
            print(f"{device_id}  {device.name}  linked {_when(device.linked_ms)}{here}")
        return 0

    return _online(args, action)


def _link(args: argparse.Namespace) -> int:
    home = ClientHome(args.home)
    if home.exists():
        raise CommandFailed(f"{home.root} already holds an account (veil whoami shows it)")
    identity = _read_phrase()
    directory = asyncio.run(_directory(args, None))  # a consensus before anything is written
    home.create(identity, None, _new_passphrase(args))
    home.save_consensus(directory.signed)
    if args.device_name:
        book = home.book()
        book.device_name = args.device_name[:64]
        home.save_book(book)

    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        count = len(messenger.config.live_devices())
        print(f"linked to {identity.session_id}: {count} device(s) now")
        return 0

    return _online(args, action, home=home, identity=identity)


# --- closed groups ----------------------------------------------------------------------------


def _add_group_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    command("groups", "list your groups and the invitations waiting", _groups, network=True)
    summary = "closed groups: create, invite, accept, remove, promote, rename, leave, delete, info"
    parent = commands.add_parser("group", help=summary, description=summary)
    actions = parent.add_subparsers(dest="group_action", required=True, metavar="ACTION")

    def action(name: str, summary: str, *arguments: str) -> argparse.ArgumentParser:
        parser = command(name, summary, _group, network=True, into=actions)
        for argument in arguments:
            nargs = "*" if argument == "MEMBER…" else None
            parser.add_argument(argument.lower().rstrip("…"), metavar=argument, nargs=nargs)
        return parser

    action("create", "create a group and invite its first members", "NAME", "MEMBER…")
    invite = action("invite", "invite a member (admins)", "GROUP", "MEMBER")
    invite.add_argument(
        "--history",
        action="store_true",
        help="let the new member read what the group's swarm still holds (default: from now on)",
    )
    action("accept", "accept an invitation to a group", "GROUP")
    action(
        "remove", "remove a member (admins): the group is rekeyed without them", "GROUP", "MEMBER"
    )
    action("promote", "make a member an admin (admins)", "GROUP", "MEMBER")
    action("rename", "rename the group (admins)", "GROUP", "NAME")
    action("leave", "leave the group", "GROUP")
    action("delete", "delete the group for everyone (admins)", "GROUP")
    action("info", "the group's name, members, admins and your role", "GROUP")


def _groups(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        joined = messenger.groups.joined()
        for account, group in joined.items():
            role = "admin" if group.is_admin else "member"
            count = len(group.config.current_members())
            print(f"{account}  {group.name or '(no name)'}  {count} member(s), you: {role}")
        invitations = messenger.groups.invitations()
        for account, held in sorted(invitations.items()):
            name = held.get("invite", {}).get("name") or "(no name)"
            print(f"{account}  {name}  invited by {_who(messenger, str(held.get('from')))}")
        if invitations:
            print("`veil group accept GROUP` joins a group you were invited to")
        if not joined and not invitations:
            print("no groups")
        return 0

    return _online(args, action)


def _group(args: argparse.Namespace) -> int:
    verb = args.group_action
    if verb == "create":
        members = [_parse_peer(m) for m in args.member]
        name = _group_name(args.name)
    elif verb in ("invite", "remove", "promote"):
        member = _parse_peer(args.member)
    elif verb == "rename":
        name = _group_name(args.name)

    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        if verb == "create":
            group = await messenger.groups.create(name, members)
            print(f"created {group.account}  {name}")
            if members:
                print(f"invited {len(members)} member(s)")
            return 0
        account = _group_of(messenger, args.group)
        if verb == "info":
            _print_group(messenger, account)
        elif verb == "accept":
            group = await messenger.groups.accept(account)
            print(f"joined {account}  {group.name or ''}".rstrip())
        elif verb == "invite":
            await messenger.groups.invite(account, member, history=args.history)
            print(f"invited {member}")
        elif verb == "remove":
            await messenger.groups.remove(account, member)
            print(f"removed {member}; the group has a new key")
        elif verb == "promote":
            await messenger.groups.promote(account, member)
            print(f"{member} is now an admin")
        elif verb == "rename":
            await messenger.groups.rename(account, name)
            print(f"renamed to {name!r}")
        elif verb == "leave":
            await messenger.groups.leave(account)
            print(f"left {account}")
        else:
            await messenger.groups.delete(account)
            print(f"deleted {account} for everyone")
        return 0

    return _online(args, action)


def _group_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 100:
        raise CommandFailed("a group name is 1 to 100 characters")
    return name


def _group_of(messenger: Messenger, text: str) -> str:
    try:
        return messenger.groups.find(text)
    except InvalidInputError as exc:
        raise CommandFailed(str(exc)) from None


def _target(messenger: Messenger, text: str) -> str:
    """A Session ID, the group a text names (``03…`` or the start of it), or a community room
    (its token, or token@ and the start of its server key)."""
    if text.strip().startswith("03"):
        return _group_of(messenger, text)
    if text.strip().startswith("05"):
        return _parse_peer(text)
    from veil.client.community_cli import room_of  # noqa: PLC0415

    return room_of(messenger, text)


def _member(messenger: Messenger, account: str, session_id: str) -> str:
    """A member's Session ID and the latest name it wrote under in the group (or 1:1)."""
    names = [e.name for e in messenger.conversation(account) if e.sender == session_id and e.name]
    name = names[-1] if names else messenger.peer_name(session_id)
    return session_id + (f" ({name})" if name else "")


def _print_group(messenger: Messenger, account: str) -> None:
    group = messenger.groups.get(account)
    print(f"{account}  {group.name or '(no name)'}")
    if group.state != "joined":
        print(f"you have {group.state} this group")
    description = group.config.description[0]
    if description:
        print(f"    {description}")
    members = group.config.current_members()
    for sid, role in sorted(members.items(), key=lambda m: (m[1] != "admin", m[0])):
        you = "  (you)" if sid == messenger.me else ""
        print(f"  {role:<6}  {_member(messenger, account, sid)}{you}")
    role = members.get(messenger.me, "not a member")
    keys = "holds the group's key" if group.is_admin else "no admin key on this device"
    print(f"your role: {role}; {keys}; key generation {group.generation}")


# --- chat -------------------------------------------------------------------------------------


def _chat(args: argparse.Namespace) -> int:
    poll = max(0.2, args.poll)

    async def action(messenger: Messenger) -> int:
        from veil.client.chat import Chat  # noqa: PLC0415

        peer = _target(messenger, args.session_id)
        return await Chat(messenger, peer, poll_s=poll).run()

    return _online(args, action)
