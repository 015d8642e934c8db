"""The community server's requests: open, parse, authenticate, dispatch, answer (sans-IO).

:meth:`CommunityRpc.handle` takes the body an exit node POSTed to ``/v1`` and returns the sealed
answer, or None when the body does not open (the HTTP layer then answers 400 with an empty body).
Everything after opening is answered inside the sealed answer as ``{"status", "body"}`` or
``{"status", "error"}``: the exit node learns nothing but the answer's size. Errors are typed
(:class:`~veil.protocol.community.CommunityError`); an unexpected exception is logged (without the
request) and answered 500 ``"internal error"``, never with a stack trace.

Authentication of a signed request, in order: ``ts`` within ±``clock_window_s`` of the server's
clock and not before the server started (425), the signature (401), then the replay cache (425 for
a (pubkey, nonce) seen within the window; 429 past a user's share of the cache; 503 when it is
full). The cache forgets a pair once its ``ts`` leaves the window, when the same request would be
refused as stale anyway; refusing what was signed before the start closes the gap a restart (an
empty cache) would open.

Methods and their params are in ``docs/community.md``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import heapq
import logging
import unicodedata
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import orjson

from veil import _core
from veil.clock import now_ms
from veil.community.config import CommunityLimits
from veil.community.db import CommunityDb, Perms, Post, Proof, Room
from veil.errors import DecryptionError, InvalidKeyError
from veil.protocol.community import (
    CommunityError,
    Request,
    canonical_params,
    check_blinded_id,
    check_room_token,
    decode_request,
    open_envelope,
    seal_answer,
    verify_request,
)

__all__ = ["PROTOCOL_VERSION", "CommunityRpc", "RateLimiter", "ReplayCache", "proof_of"]

log = logging.getLogger("veil.community.rpc")

PROTOCOL_VERSION = 1
_MAX_ID = (1 << 63) - 1
_RATE_MAX_KEYS = 100_000


class ReplayCache:
    """The (pubkey, nonce) pairs of accepted signed requests whose ``ts`` is still within the
    window; bounded in total and per user."""

    def __init__(self, window_ms: int, max_entries: int, max_per_user: int) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self.max_per_user = max_per_user
        self._seen: set[tuple[str, bytes]] = set()
        self._expiry: list[tuple[int, str, bytes]] = []
        self._per_user: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def prune(self, now: int) -> None:
        heap = self._expiry
        while heap and heap[0][0] < now:
            _, pubkey, nonce = heapq.heappop(heap)
            self._seen.discard((pubkey, nonce))
            left = self._per_user[pubkey] - 1
            if left:
                self._per_user[pubkey] = left
            else:
                del self._per_user[pubkey]

    def add(self, pubkey: str, nonce: bytes, ts_ms: int, now: int) -> None:
        """Remember the pair until ``ts_ms + window``; raises :class:`CommunityError` for a
        replay (425), a user over its share (429) or a full cache (503)."""
        self.prune(now)
        pair = (pubkey, nonce)
        if pair in self._seen:
            raise CommunityError(425, "this nonce was already used; sign the request again")
        if self._per_user.get(pubkey, 0) >= self.max_per_user:
            raise CommunityError(429, "too many requests from this user; slow down")
        if len(self._seen) >= self.max_entries:
            raise CommunityError(503, "the server is busy (replay cache full); try again later")
        self._seen.add(pair)
        self._per_user[pubkey] = self._per_user.get(pubkey, 0) + 1
        heapq.heappush(self._expiry, (ts_ms + self.window_ms, pubkey, nonce))


class RateLimiter:
    """At most ``count`` events per ``window_ms`` per key (a sliding window, in memory)."""

    def __init__(self, count: int, window_ms: int, max_keys: int = _RATE_MAX_KEYS) -> None:
        self.count = count
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._events: dict[Hashable, collections.deque[int]] = {}

    def allow(self, key: Hashable, now: int) -> bool:
        """Record an event for ``key`` if it is within the rate; whether it was."""
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._forget(now)
            events = self._events[key] = collections.deque()
        while events and events[0] <= now - self.window_ms:
            events.popleft()
        if len(events) >= self.count:
            return False
        events.append(now)
        return True

    def _forget(self, now: int) -> None:
        stale = [k for k, v in self._events.items() if not v or v[-1] <= now - self.window_ms]
        for key in stale:
            del self._events[key]
        while len(self._events) >= self.max_keys:  # all recent: the oldest key starts afresh
            del self._events[next(iter(self._events))]


@dataclass(frozen=True, slots=True)
class Call:
    request: Request
    now: int

    @property
    def params(self) -> dict[str, Any]:
        return self.request.params


# --- params ---------------------------------------------------------------------------------------


def _fields(params: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    missing = [key for key in required if key not in params]
    if missing:
        raise CommunityError(400, f"missing param(s): {', '.join(missing)}")
    unknown = set(params) - set(required) - set(optional)
    if unknown:
        raise CommunityError(400, f"unknown param(s): {', '.join(sorted(unknown))}")


def _int(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_ID:
        raise CommunityError(400, f"{name} is not a non-negative integer")
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise CommunityError(400, f"{name} is not true or false")
    return value


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def proof_of(request: Request) -> Proof:
    """What a post keeps of the signed request that gave it its text (``verify_post`` in
    ``veil.protocol.community`` checks it): its params as signed, but for the text, which the
    post holds already."""
    rest = {key: value for key, value in request.params.items() if key != "text"}
    return Proof(
        request.method, canonical_params(rest), request.ts_ms, request.nonce, request.signature
    )


def _user_param(value: object, name: str) -> str:
    try:
        return check_blinded_id(value)[0]
    except InvalidKeyError:
        raise CommunityError(400, f"{name} is not a blinded ID") from None


class CommunityRpc:
    """The server's request handling over its database (one thread)."""

    def __init__(
        self,
        db: CommunityDb,
        limits: CommunityLimits,
        server_secret: bytes,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.limits = limits
        self._secret = server_secret
        self.server_key = _core.x25519_public_key(server_secret)
        self._clock = clock
        self.started_ms = clock()
        self.replay = ReplayCache(
            limits.clock_window_s * 1000,
            limits.replay_max_entries,
            limits.replay_max_entries_per_user,
        )
        self.post_rate = RateLimiter(limits.post_rate, int(limits.post_rate_window_s * 1000))
        self.inbox_rate = RateLimiter(limits.inbox_rate, int(limits.inbox_rate_window_s * 1000))
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        """Answers by (method, status) since the last report (the server logs and resets it)."""
        self._methods: dict[str, Callable[[Call], Any]] = {
            "info": self._info,
            "rooms": self._rooms,
            "room": self._room,
            "poll": self._poll,
            "post": self._post,
            "edit": self._edit,
            "delete": self._delete,
            "react": self._react,
            "unreact": self._unreact,
            "pin": self._pin,
            "unpin": self._unpin,
            "ban": self._ban,
            "unban": self._unban,
            "add_moderator": self._add_moderator,
            "remove_moderator": self._remove_moderator,
            "inbox_send": self._inbox_send,
            "inbox_poll": self._inbox_poll,
        }

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(self._methods)

    # --- the envelope -----------------------------------------------------------------------------

    def handle(self, body: bytes) -> bytes | None:
        """The sealed answer to a sealed request, or None if it does not open."""
        try:
            plaintext, key = open_envelope(self._secret, body, self.server_key)
        except DecryptionError:
            self.counts["(sealed)", 400] += 1
            return None
        return seal_answer(key, self.answer(plaintext))

    def answer(self, plaintext: bytes) -> dict[str, Any]:
        """The answer JSON object to an opened request."""
        method = "(invalid)"
        try:
            request = decode_request(plaintext, self._methods)
            method = request.method
            now = self._clock()
            self._authenticate(request, now)
            body = self._methods[method](Call(request, now))
        except CommunityError as error:
            self.counts[method, error.status] += 1
            return {"status": error.status, "error": error.message}
        except Exception:
            log.exception("a request failed", extra={"fields": {"method": method}})
            self.counts[method, 500] += 1
            return {"status": 500, "error": "internal error"}
        self.counts[method, 200] += 1
        return {"status": 200, "body": body}

    def _authenticate(self, request: Request, now: int) -> None:
        if request.pubkey is None:
            return
        window_ms = self.limits.clock_window_s * 1000
        skew = request.ts_ms - now
        if abs(skew) > window_ms:
            direction = "ahead of" if skew > 0 else "behind"
            raise CommunityError(
                425,
                f"ts is {abs(skew) // 1000} s {direction} the server's clock "
                f"(at most {self.limits.clock_window_s} s)",
            )
        if request.ts_ms < self.started_ms:
            raise CommunityError(425, "signed before the server started; sign it again")
        verify_request(request, self.server_key)
        self.replay.add(request.pubkey, request.nonce, request.ts_ms, now)

    # --- helpers ----------------------------------------------------------------------------------

    def _user(self, call: Call) -> int:
        pubkey = call.request.pubkey
        if pubkey is None:
            raise CommunityError(401, f"{call.request.method} needs a signed request")
        return self.db.user_id(pubkey, call.now)

    def _room_of(self, token: object) -> Room:
        try:
            check_room_token(token)
        except ValueError:
            raise CommunityError(400, "room is not a room token") from None
        room = self.db.room(str(token))
        if room is None:
            raise CommunityError(404, "no such room")
        return room

    def _writable(self, call: Call) -> tuple[Room, int, Perms]:
        """The room named by ``params.room`` where the caller may write."""
        room = self._room_of(call.params.get("room"))
        user = self._user(call)
        perms = self.db.perms(room.id, user)
        if perms.banned:
            raise CommunityError(403, "you are banned from this room")
        if room.read_only and not perms.moderator:
            raise CommunityError(403, "the room is read-only")
        return room, user, perms

    def _live_post(self, room: Room, post_id: object) -> Post:
        post = self.db.post(room.id, _int(post_id, "id"))
        if post is None or post.deleted:
            raise CommunityError(404, "no such post")
        return post

    def _text(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise CommunityError(400, "text is not a non-empty string")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_post_bytes:
            raise CommunityError(
                413, f"text is {size} bytes; a post is at most {self.limits.max_post_bytes}"
            )
        return value

    def _emoji(self, value: object) -> str:
        limit = self.limits.max_emoji_chars
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            raise CommunityError(400, f"emoji is not a string of 1 to {limit} characters")
        if _has_control(value) or value.strip() != value:
            raise CommunityError(400, "emoji holds control characters or spaces")
        return value

    def _room_info(self, room: Room, now: int) -> dict[str, Any]:
        moderators, admins = self.db.room_staff(room.id)
        return {
            "token": room.token,
            "name": room.name,
            "description": room.description,
            "read_only": room.read_only,
            "created": room.created_ms,
            "active_users": self._active(room, now),
            "seqno": room.seqno,
            "info_seqno": room.info_seqno,
            "moderators": moderators,
            "admins": admins,
            "pinned": self.db.pinned(room.id),
        }

    def _active(self, room: Room, now: int) -> int:
        return self.db.active_users(room.id, now - self.limits.active_window_s * 1000)

    # --- rooms ------------------------------------------------------------------------------------

    def _info(self, call: Call) -> Any:
        _fields(call.params, (), ())
        limits = self.limits
        return {
            "version": PROTOCOL_VERSION,
            "time": call.now,
            "unsigned_methods": ["info", "rooms"],
            "limits": {
                "clock_window_s": limits.clock_window_s,
                "max_post_bytes": limits.max_post_bytes,
                "max_name_chars": limits.max_name_chars,
                "max_emoji_chars": limits.max_emoji_chars,
                "max_emoji_per_post": limits.max_emoji_per_post,
                "post_rate": limits.post_rate,
                "post_rate_window_s": limits.post_rate_window_s,
                "poll_max_rooms": limits.poll_max_rooms,
                "poll_max_changes": limits.poll_max_changes,
                "inbox_max_bytes": limits.inbox_max_bytes,
                "inbox_ttl_s": limits.inbox_ttl_s,
            },
        }

    def _rooms(self, call: Call) -> Any:
        _fields(call.params, (), ())
        return [
            {
                "token": room.token,
                "name": room.name,
                "description": room.description,
                "read_only": room.read_only,
                "active_users": self._active(room, call.now),
                "seqno": room.seqno,
            }
            for room in self.db.rooms()
        ]

    def _room(self, call: Call) -> Any:
        _fields(call.params, ("room",), ())
        room = self._room_of(call.params["room"])
        perms = self.db.perms(room.id, self._user(call))
        if perms.banned:
            raise CommunityError(403, "you are banned from this room")
        info = self._room_info(room, call.now)
        info["you"] = {"moderator": perms.moderator, "admin": perms.admin}
        return info

    def _poll(self, call: Call) -> Any:
        _fields(call.params, ("rooms",), ())
        wanted = call.params["rooms"]
        if not isinstance(wanted, dict) or not 0 < len(wanted) <= self.limits.poll_max_rooms:
            raise CommunityError(
                400, f"rooms is not an object of 1 to {self.limits.poll_max_rooms} rooms"
            )
        for token, since in wanted.items():
            self._room_of_token_shape(token)
            if since is not None:
                _int(since, f"rooms.{token}")
        user = self._user(call)
        budget = [self.limits.poll_max_bytes]
        return {
            "rooms": {
                token: self._poll_room(token, since, user, call.now, budget)
                for token, since in wanted.items()
            }
        }

    @staticmethod
    def _room_of_token_shape(token: str) -> None:
        try:
            check_room_token(token)
        except ValueError:
            raise CommunityError(400, "rooms has a key that is not a room token") from None

    def _poll_room(
        self, token: str, since: int | None, user: int, now: int, budget: list[int]
    ) -> dict[str, Any]:
        room = self.db.room(token)
        if room is None:
            return {"status": 404, "error": "no such room"}
        if self.db.perms(room.id, user).banned:
            return {"status": 403, "error": "you are banned from this room"}
        self.db.touch(room.id, user, now)
        changes, more = self.db.changes(room.id, since, self.limits.poll_max_changes, user)
        for index, change in enumerate(changes):
            budget[0] -= len(orjson.dumps(change))
            if budget[0] < 0 and index > 0:
                del changes[index:]
                more = True
                break
        seqno = max(room.seqno, changes[-1]["seqno"] if changes else 0)
        if more:
            seqno = changes[-1]["seqno"]
        entry: dict[str, Any] = {"status": 200, "seqno": seqno, "changes": changes, "more": more}
        if since is None or room.info_seqno > since:
            entry["info"] = self._room_info(room, now)
        return entry

    # --- posts ------------------------------------------------------------------------------------

    def _post(self, call: Call) -> Any:
        params = call.params
        _fields(params, ("room", "text"), ("name", "reply_to"))
        room, user, _ = self._writable(call)
        text = self._text(params["text"])
        name = params.get("name", "")
        limit = self.limits.max_name_chars
        if not isinstance(name, str) or len(name) > limit or _has_control(name):
            raise CommunityError(
                400, f"name is not a string of at most {limit} printable characters"
            )
        reply_to = params.get("reply_to")
        if reply_to is not None and self.db.post(room.id, _int(reply_to, "reply_to")) is None:
            raise CommunityError(404, "reply_to names no post of this room")
        if not self.post_rate.allow((room.id, user), call.now):
            raise CommunityError(
                429,
                f"at most {self.limits.post_rate} posts per {self.limits.post_rate_window_s:g} s "
                "in a room; slow down",
            )
        post_id, seqno = self.db.add_post(
            room.id,
            user,
            name,
            text,
            reply_to=reply_to,
            now_ms=call.now,
            proof=proof_of(call.request),
        )
        return {"id": post_id, "seqno": seqno}

    def _edit(self, call: Call) -> Any:
        _fields(call.params, ("room", "id", "text"), ())
        room, user, _ = self._writable(call)
        post = self._live_post(room, call.params["id"])
        if post.user != user:
            raise CommunityError(403, "only its author may edit a post")
        text = self._text(call.params["text"])
        seqno = self.db.edit_post(room.id, post.id, text, call.now, proof_of(call.request))
        return {"seqno": seqno}

    def _delete(self, call: Call) -> Any:
        _fields(call.params, ("room", "id"), ())
        room = self._room_of(call.params["room"])
        user = self._user(call)
        post = self._live_post(room, call.params["id"])
        if post.user != user and not self.db.perms(room.id, user).moderator:
            raise CommunityError(403, "only its author or a moderator may delete a post")
        return {"seqno": self.db.delete_post(room.id, post.id, call.now)}

    def _react(self, call: Call) -> Any:
        _fields(call.params, ("room", "id", "emoji"), ())
        room, user, _ = self._writable(call)
        post = self._live_post(room, call.params["id"])
        emoji = self._emoji(call.params["emoji"])
        seqno = self.db.react(
            room.id,
            post.id,
            user,
            emoji,
            max_emoji=self.limits.max_emoji_per_post,
            now_ms=call.now,
        )
        if seqno == -1:
            raise CommunityError(
                400, f"the post has {self.limits.max_emoji_per_post} reactions already"
            )
        return {"changed": seqno is not None, "seqno": seqno}

    def _unreact(self, call: Call) -> Any:
        _fields(call.params, ("room", "id", "emoji"), ())
        room = self._room_of(call.params["room"])
        user = self._user(call)
        post = self._live_post(room, call.params["id"])
        seqno = self.db.unreact(room.id, post.id, user, self._emoji(call.params["emoji"]))
        return {"changed": seqno is not None, "seqno": seqno}

    def _set_pin(self, call: Call, *, pinned: bool) -> Any:
        _fields(call.params, ("room", "id"), ())
        room = self._room_of(call.params["room"])
        if not self.db.perms(room.id, self._user(call)).moderator:
            raise CommunityError(403, "only a moderator may pin or unpin")
        post = self._live_post(room, call.params["id"])
        if (
            pinned
            and not post.pinned
            and self.db.pin_count(room.id) >= self.limits.max_pins_per_room
        ):
            raise CommunityError(400, f"a room has at most {self.limits.max_pins_per_room} pins")
        seqno = self.db.set_pinned(room.id, post.id, pinned=pinned, now_ms=call.now)
        return {"changed": seqno is not None, "seqno": seqno}

    def _pin(self, call: Call) -> Any:
        return self._set_pin(call, pinned=True)

    def _unpin(self, call: Call) -> Any:
        return self._set_pin(call, pinned=False)

    # --- moderation -------------------------------------------------------------------------------

    def _scope(self, call: Call, optional: tuple[str, ...]) -> Room | None:
        """The room of ``params.room``, or None for ``params.global`` = true (exactly one)."""
        params = call.params
        _fields(params, ("user",), ("room", "global", *optional))
        if ("room" in params) == ("global" in params):
            raise CommunityError(400, "name either room or global: true")
        if "global" in params:
            if params["global"] is not True:
                raise CommunityError(400, "global is true when given")
            return None
        return self._room_of(params["room"])

    def _set_ban(self, call: Call, *, banned: bool) -> Any:
        room = self._scope(call, ())
        room_id = None if room is None else room.id
        me = self.db.perms(room_id, self._user(call))
        if not (me.moderator if room is not None else me.global_moderator):
            raise CommunityError(403, "only a moderator of this room (or server) may ban")
        target = self.db.user_id(_user_param(call.params["user"], "user"), call.now)
        theirs = self.db.perms(room_id, target)
        if banned and (theirs.moderator if room is not None else theirs.global_moderator):
            raise CommunityError(403, "a moderator cannot be banned; remove_moderator first")
        return {"changed": self.db.set_banned(room_id, target, banned=banned)}

    def _ban(self, call: Call) -> Any:
        return self._set_ban(call, banned=True)

    def _unban(self, call: Call) -> Any:
        return self._set_ban(call, banned=False)

    def _add_moderator(self, call: Call) -> Any:
        room = self._scope(call, ("admin",))
        admin = _bool(call.params.get("admin", False), "admin")
        return self._set_moderator(call, room, moderator=True, admin=admin)

    def _remove_moderator(self, call: Call) -> Any:
        room = self._scope(call, ())
        return self._set_moderator(call, room, moderator=False, admin=False)

    def _set_moderator(self, call: Call, room: Room | None, *, moderator: bool, admin: bool) -> Any:
        room_id = None if room is None else room.id
        me = self.db.perms(room_id, self._user(call))
        if not (me.admin if room is not None else me.global_admin):
            raise CommunityError(
                403, "only an admin of this room (or server) may change moderators"
            )
        target = self.db.user_id(_user_param(call.params["user"], "user"), call.now)
        changed = self.db.set_moderator(room_id, target, moderator=moderator, admin=admin)
        return {"changed": changed}

    # --- inbox ------------------------------------------------------------------------------------

    def _inbox_send(self, call: Call) -> Any:
        params, limits = call.params, self.limits
        _fields(params, ("to", "data"), ())
        recipient_key = _user_param(params["to"], "to")
        data = params["data"]
        if not isinstance(data, str) or len(data) > (limits.inbox_max_bytes * 4 + 8) // 3:
            raise CommunityError(
                413, f"data is not base64 of at most {limits.inbox_max_bytes} bytes"
            )
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CommunityError(400, "data is not valid base64") from None
        if not 0 < len(decoded) <= limits.inbox_max_bytes:
            raise CommunityError(413, f"data is not 1 to {limits.inbox_max_bytes} bytes")
        sender = self._user(call)
        if self.db.perms(None, sender).banned:
            raise CommunityError(403, "you are banned from this server")
        recipient = self.db.user_id(recipient_key, call.now)
        if self.db.inbox_count(recipient, call.now) >= limits.inbox_max_per_recipient:
            raise CommunityError(507, "the recipient's inbox is full")
        if not self.inbox_rate.allow(sender, call.now):
            raise CommunityError(
                429,
                f"at most {limits.inbox_rate} inbox messages per "
                f"{limits.inbox_rate_window_s:g} s; slow down",
            )
        message_id = self.db.inbox_add(
            recipient,
            sender,
            decoded,
            now_ms=call.now,
            expires_ms=call.now + limits.inbox_ttl_s * 1000,
        )
        return {"id": message_id}

    def _inbox_poll(self, call: Call) -> Any:
        _fields(call.params, (), ("since",))
        since = _int(call.params.get("since", 0), "since")
        rows, more = self.db.inbox(self._user(call), since, self.limits.inbox_poll_max, call.now)
        budget = self.limits.poll_max_bytes
        messages: list[dict[str, Any]] = []
        for message_id, sender, posted, expires, data in rows:
            encoded = base64.b64encode(data).decode("ascii")
            budget -= len(encoded) + 200
            if budget < 0 and messages:
                more = True
                break
            messages.append(
                {
                    "id": message_id,
                    "from": sender,
                    "posted": posted,
                    "expires": expires,
                    "data": encoded,
                }
            )
        return {"messages": messages, "more": more}
