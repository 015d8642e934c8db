"""The messenger's community commands: ``veil community join|leave|edit|react|pin|delete|ban|
unban|mod|dm`` (beside the server's own ``veil community init|run|add-room|…``), ``veil
communities`` and ``veil post``. Reading is ``veil inbox``, ``veil history ROOM`` and ``veil
chat ROOM`` (``docs/community.md``, "The client")."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from veil.client.cli import CommandFailed, _online, client_command
from veil.errors import InvalidInputError
from veil.protocol.community import CommunityError, parse_link

if TYPE_CHECKING:
    from veil.client.messaging import Messenger

__all__ = ["add_community_commands", "add_room_commands", "print_room_news", "room_of"]


def add_room_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``veil communities`` and ``veil post`` (top-level commands)."""
    client_command(
        commands, "communities", "list the community rooms you joined", _communities, network=True
    )
    post = client_command(commands, "post", "post in a community room", _post, network=True)
    post.add_argument("room", metavar="ROOM", help="the room's token (or token@server key start)")
    post.add_argument("text", metavar="TEXT")
    post.add_argument("--reply-to", metavar="ID", help="the post this one answers")


def add_community_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The client's actions under ``veil community``."""

    def action(name: str, summary: str, *arguments: str) -> argparse.ArgumentParser:
        parser = client_command(actions, name, summary, _community, network=True)
        for argument in arguments:
            parser.add_argument(argument.lower(), metavar=argument)
        return parser

    action("join", "join a community room from its link (veil://… or https://…)", "LINK")
    action("leave", "leave a community room", "ROOM")
    react = action("react", "react to a post with an emoji", "ROOM", "ID", "EMOJI")
    react.add_argument("--remove", action="store_true", help="take the reaction back")
    action("edit", "change the text of your post", "ROOM", "ID", "TEXT")
    pin = action("pin", "pin a post to the room (moderators)", "ROOM", "ID")
    pin.add_argument("--remove", action="store_true", help="unpin it")
    action("delete", "delete a post: your own, or anyone's as a moderator", "ROOM", "ID")
    for verb, summary in (("ban", "ban a user (moderators)"), ("unban", "lift a ban")):
        parser = action(verb, summary, "ROOM", "USER")
        parser.add_argument("--global", dest="everywhere", action="store_true", help="server-wide")
    dm = action(
        "dm", "a direct message to a user of the room's server, end to end", "ROOM", "USER", "TEXT"
    )
    dm.add_argument(
        "--share-id",
        action="store_true",
        help="also give your Session ID: the conversation becomes a normal 1:1 one",
    )
    mod = action("mod", "make a user a moderator of the room (admins)", "ROOM", "USER")
    mod.add_argument("--admin", action="store_true", help="an admin, who can add moderators")
    mod.add_argument("--global", dest="everywhere", action="store_true", help="of every room")
    mod.add_argument("--remove", action="store_true", help="take the role away")


def room_of(messenger: Messenger, text: str) -> str:
    """The room key a command's ROOM names (:class:`CommandFailed` if none)."""
    try:
        return messenger.communities.find(text)
    except InvalidInputError as exc:
        raise CommandFailed(str(exc)) from None


def _communities(args: argparse.Namespace) -> int:
    async def action(messenger: Messenger) -> int:
        await messenger.fetch()
        rooms = messenger.communities.rooms()
        for key, link in rooms.items():
            you = messenger.communities.blinded_id(key)
            print(f"{link.room}  {link.url}  you: {you}")
            print(f"    {link.veil_link()}")
        if not rooms:
            print("no community rooms: `veil community join LINK` joins one")
        return 0

    return _online(args, action)


def _post(args: argparse.Namespace) -> int:
    reply_to = None
    if args.reply_to is not None:
        if not args.reply_to.isdigit():
            raise CommandFailed("--reply-to takes a post id (a number)")
        reply_to = int(args.reply_to)

    async def action(messenger: Messenger) -> int:
        key = room_of(messenger, args.room)
        try:
            post_id = await messenger.communities.post(key, args.text, reply_to=reply_to)
        except CommunityError as exc:
            raise CommandFailed(f"the community refused it: {exc}") from None
        print(f"posted #{post_id}")
        return 0

    return _online(args, action)


def _community(args: argparse.Namespace) -> int:
    verb = args.community_action
    if verb == "join":
        try:
            parse_link(args.link.strip())
        except InvalidInputError as exc:
            raise CommandFailed(f"not a community link: {exc}") from None

    async def action(messenger: Messenger) -> int:
        try:
            return await _act(messenger, args)
        except CommunityError as exc:
            raise CommandFailed(f"the community refused it: {exc}") from None

    return _online(args, action)


async def _act(messenger: Messenger, args: argparse.Namespace) -> int:
    verb = args.community_action
    rooms = messenger.communities
    if verb == "join":
        key, info = await rooms.join(args.link)
        print(f"joined {info.get('name') or key}: {info.get('description') or ''}".rstrip(": "))
        print(f"you are {rooms.blinded_id(key)} there")
        await messenger.fetch()
        return 0
    key = room_of(messenger, args.room)
    if verb == "leave":
        await rooms.leave(key)
        print(f"left {key.partition('@')[0]}")
    elif verb == "react":
        await rooms.react(key, args.id, args.emoji, remove=args.remove)
        print("reaction taken back" if args.remove else "reacted")
    elif verb == "dm":
        conversation = await rooms.send_dm(
            key, args.user, args.text, share_session_id=args.share_id
        )
        print(f"sent; `veil history {conversation[:13]}` shows the conversation")
    elif verb == "edit":
        await rooms.edit(key, args.id, args.text)
        print(f"edited #{args.id}")
    elif verb == "pin":
        await rooms.pin(key, args.id, remove=args.remove)
        print(f"{'unpinned' if args.remove else 'pinned'} #{args.id}")
    elif verb == "delete":
        await rooms.delete(key, args.id)
        print(f"deleted #{args.id}")
    else:
        method = {"ban": "ban", "unban": "unban", "mod": "add_moderator"}[verb]
        if verb == "mod" and args.remove:
            method = "remove_moderator"
        admin = verb == "mod" and args.admin
        changed = await rooms.moderate(
            key, method, args.user, everywhere=args.everywhere, admin=admin
        )
        print(f"{method.replace('_', ' ')}: {args.user}" + ("" if changed else " (no change)"))
    return 0


def print_room_news(messenger: Messenger) -> bool:
    """Each room's unread posts under the room's name; whether any."""
    shown = False
    for key, link in messenger.communities.rooms().items():
        entries = messenger.mark_read(key)
        if not entries:
            continue
        shown = True
        print(f"── {link.room} ({link.url})")
        for entry in entries:
            print(f"  #{entry.id}  {author(entry.name, entry.sender)}: {entry.body}")
    for key in sorted(k for k in messenger.book.conversations if k.startswith("dm:")):
        entries = messenger.mark_read(key)
        if not entries:
            continue
        shown = True
        print(f"── direct, {author(entries[-1].name, entries[-1].sender)} ({key[:13]}…)")
        for entry in entries:
            print(f"  {entry.body}")
    return shown


def author(name: str | None, blinded_id: str | None) -> str:
    """How a community shows a user: the display name it chose and the start of its blinded ID
    (never a Session ID)."""
    short = (blinded_id or "")[:10] + "…"
    return f"{name} ({short})" if name else short
