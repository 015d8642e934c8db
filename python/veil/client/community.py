"""A community server, from the client's side: signed, sealed requests carried by onion requests
(``docs/community.md``; the wire format in :mod:`veil.protocol.community`).

The client never connects to the server. It seals each request to the server's key and sends it
through a three-hop onion path whose last hop POSTs it to ``<base url>/v1``
(:meth:`veil.client.network.NetworkClient.request_external`): the guard sees the client but not
the server, the exit node sees the server and the sealed bytes but not the client, and the server
sees the request but not where it came from. The exit node must allow the server's URL
(``external_services`` in its ``node.toml``); a node that does not answers 403 and the client
tries another, at most :data:`EXIT_TRIES` in all.

Requests are signed by the user's **blinded** key for that server
(:class:`veil.protocol.blinding.BlindedIdentity`): the server, and anyone who reads the room, knows
the user by a blinded ID that another server cannot link and that does not give the Session ID
back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from veil.client.network import NetworkClient, NetworkError
from veil.errors import DecryptionError, InvalidInputError
from veil.identity import Identity
from veil.protocol.blinding import BlindedIdentity
from veil.protocol.community import (
    CommunityError,
    CommunityLink,
    open_answer,
    seal_request,
    sign_request,
)

__all__ = ["EXIT_TRIES", "CommunityClient", "OnionTransport", "Transport"]

EXIT_TRIES = 3
"""Exit nodes tried for one request (a node that does not allow the server answers 403)."""


class Transport(Protocol):
    """Carries a sealed request body to ``url`` and brings back the server's answer body."""

    async def post(self, url: str, body: bytes) -> bytes: ...


class OnionTransport:
    """Through an onion path whose exit node POSTs to the server."""

    def __init__(self, network: NetworkClient, *, rng: random.Random | None = None) -> None:
        self.network = network
        self._rng = rng or random.SystemRandom()

    async def post(self, url: str, body: bytes) -> bytes:
        nodes = list(self.network.nodes)
        self._rng.shuffle(nodes)
        last = "no exit node answered"
        for exit_node in nodes[:EXIT_TRIES]:
            try:
                status, content, _ = await self.network.request_external(exit_node, url, body)
            except NetworkError as exc:
                last = str(exc)
                continue
            if status == 200:
                return content
            if status == 400:  # the server could not open it: trying elsewhere will not help
                raise CommunityError(400, "the community server could not open the request")
            last = f"exit node answered {status}" + (
                " (it does not allow this server)" if status == 403 else ""
            )
        raise NetworkError(f"the community server was not reached: {last}")


class CommunityClient:
    """One identity's requests to one community server."""

    def __init__(
        self, identity: Identity, url: str, server_key: bytes, transport: Transport
    ) -> None:
        self.blinded = BlindedIdentity(identity, server_key)
        self.url = url
        self.server_key = server_key
        self.transport = transport

    @classmethod
    def for_link(
        cls, identity: Identity, link: CommunityLink, transport: Transport
    ) -> CommunityClient:
        return cls(identity, link.url, link.server_key, transport)

    @property
    def blinded_id(self) -> str:
        """How this server (and everyone in its rooms) knows this user."""
        return self.blinded.blinded_id

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """The body of the server's answer to a signed ``method``; :class:`CommunityError` with
        the server's status and one-line reason if it refuses, :class:`NetworkError` if it was not
        reached."""
        request = sign_request(self.blinded, self.server_key, method, dict(params or {}))
        body, key = seal_request(self.server_key, request)
        raw = await self.transport.post(self.url + "/v1", body)
        try:
            answer = open_answer(key, raw)
        except (DecryptionError, InvalidInputError):
            raise CommunityError(502, "the community server's answer did not open") from None
        status = answer["status"]
        if status != 200:
            error = answer.get("error")
            raise CommunityError(status, error if isinstance(error, str) else f"status {status}")
        return answer.get("body")

    # --- rooms and posts ------------------------------------------------------------------------

    async def rooms(self) -> list[dict[str, Any]]:
        return _list(await self.call("rooms"))

    async def room(self, token: str) -> dict[str, Any]:
        return _dict(await self.call("room", {"room": token}))

    async def poll(self, since: Mapping[str, int | None]) -> dict[str, Any]:
        """``{token: entry}`` for each room (``docs/community.md``, "Polling")."""
        body = _dict(await self.call("poll", {"rooms": dict(since)}))
        return _dict(body.get("rooms"))

    async def post(
        self, room: str, text: str, *, name: str | None = None, reply_to: int | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"room": room, "text": text}
        if name:
            params["name"] = name
        if reply_to is not None:
            params["reply_to"] = reply_to
        return _dict(await self.call("post", params))

    async def edit(self, room: str, post_id: int, text: str) -> None:
        await self.call("edit", {"room": room, "id": post_id, "text": text})

    async def pin(self, room: str, post_id: int, *, remove: bool = False) -> None:
        await self.call("unpin" if remove else "pin", {"room": room, "id": post_id})

    async def delete(self, room: str, post_id: int) -> None:
        await self.call("delete", {"room": room, "id": post_id})

    async def react(self, room: str, post_id: int, emoji: str, *, remove: bool = False) -> None:
        await self.call(
            "unreact" if remove else "react", {"room": room, "id": post_id, "emoji": emoji}
        )

    # --- moderation -----------------------------------------------------------------------------

    async def moderate(
        self, method: str, user: str, *, room: str | None = None, admin: bool = False
    ) -> bool:
        """``ban``, ``unban``, ``add_moderator`` or ``remove_moderator`` of ``user`` (a blinded
        ID) in ``room``, or server-wide with ``room`` None; whether anything changed."""
        if method not in ("ban", "unban", "add_moderator", "remove_moderator"):
            raise InvalidInputError(f"no moderation method {method!r}")
        params: dict[str, Any] = {"user": user}
        params.update({"room": room} if room is not None else {"global": True})
        if method == "add_moderator" and admin:
            params["admin"] = True
        return bool(_dict(await self.call(method, params)).get("changed"))

    # --- the inbox ------------------------------------------------------------------------------

    async def inbox_send(self, to: str, data: str) -> None:
        await self.call("inbox_send", {"to": to, "data": data})

    async def inbox_poll(self, since: int) -> dict[str, Any]:
        return _dict(await self.call("inbox_poll", {"since": since}))


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CommunityError(502, "the community server answered something unexpected")
    return value


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise CommunityError(502, "the community server answered something unexpected")
    return value
