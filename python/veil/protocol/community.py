"""The community server's wire format (``docs/community.md``), sans-IO: join links, the sealed
request and answer, the signed request string, and the checks that server, client and load test
share.

A community server has an X25519 key pair (its *server key* ``S``, published in join links) and a
base URL. A client never connects to it: an onion request's last hop POSTs the sealed request to
``<base url>/v1`` and hands back the sealed answer, so the exit node sees only ciphertext::

    request body = 0x01 ‖ E (32) ‖ nonce (24) ‖ XChaCha20-Poly1305(k, nonce, request JSON,
                                                                    aad = 0x01 ‖ E)
    k            = BLAKE2b-256(X25519(e, S) ‖ E ‖ S)       (hop encryption's key, docs/protocol.md)
    answer body  = nonce (24) ‖ XChaCha20-Poly1305(k, nonce, answer JSON, aad = "")

The request JSON is ``{"method", "params", "pubkey", "ts", "nonce", "sig"}``: ``pubkey`` is the
user's blinded ID (``"25"`` ‖ 64 hex digits: an Ed25519 public key), ``ts`` milliseconds since the
epoch, ``nonce`` 16 random bytes in base64, ``sig`` the Ed25519 signature (base64) under ``pubkey``
of :func:`request_string`::

    "veil-community-v1" ‖ S ‖ method ‖ "\\n" ‖ decimal ts ‖ "\\n" ‖ nonce ‖ canonical params JSON

where the canonical params JSON is ``orjson.dumps(params, option=OPT_SORT_KEYS)`` (keys sorted at
every depth, no whitespace). The answer JSON is ``{"status": int, "body": …}`` or ``{"status": int,
"error": "one line"}``.

Every failure to open a sealed request or answer is the same :class:`~veil.errors.DecryptionError`.
Structural failures of a request raise :class:`CommunityError` carrying the status the server
answers with.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import urllib.parse
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from veil import _core
from veil.clock import now_ms
from veil.errors import DecryptionError, InvalidInputError, InvalidKeyError, VeilError

__all__ = [
    "BLINDED_PREFIX",
    "DOMAIN",
    "ENVELOPE_VERSION",
    "REQUEST_NONCE_LEN",
    "UNSIGNED_METHODS",
    "CommunityError",
    "CommunityLink",
    "Request",
    "Signer",
    "build_link",
    "canonical_params",
    "check_base_url",
    "check_blinded_id",
    "check_room_token",
    "decode_request",
    "open_answer",
    "open_envelope",
    "open_request",
    "parse_link",
    "parse_request",
    "request_string",
    "seal_answer",
    "seal_request",
    "sign_request",
    "verify_post",
    "verify_request",
]

ENVELOPE_VERSION = 0x01
DOMAIN = b"veil-community-v1"
BLINDED_PREFIX = "25"
REQUEST_NONCE_LEN = 16
AEAD_NONCE_LEN = 24
TAG_LEN = 16
_HEADER_LEN = 1 + 32 + AEAD_NONCE_LEN
UNSIGNED_METHODS = frozenset({"info", "rooms"})
"""Methods a request may make without ``pubkey``/``ts``/``nonce``/``sig`` (a signed one is checked
all the same)."""

_ROOM_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_METHOD = re.compile(r"[a-z_]{1,32}")
_HEX = frozenset("0123456789abcdef")
_OPAQUE = "decryption failed"  # the same message as veil._core's DecryptionError


class CommunityError(VeilError):
    """A request the server refuses: ``status`` (an HTTP-like code) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- join links -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommunityLink:
    """A room of a community server: its base URL (no trailing slash), server key and token."""

    url: str
    server_key: bytes
    room: str

    @property
    def endpoint(self) -> str:
        """Where the exit node POSTs sealed requests: ``<base url>/v1``."""
        return self.url + "/v1"

    def veil_link(self) -> str:
        """``veil://community?url=…&pk=…&room=…``."""
        query = urllib.parse.urlencode(
            {"url": self.url, "pk": self.server_key.hex(), "room": self.room}
        )
        return f"veil://community?{query}"

    def session_link(self) -> str:
        """Session's form: ``<base url>/<room>?public_key=<hex>``."""
        return f"{self.url}/{self.room}?public_key={self.server_key.hex()}"


def build_link(url: str, server_key: bytes, room: str) -> CommunityLink:
    """A checked :class:`CommunityLink` (raises :class:`InvalidInputError`)."""
    if not isinstance(server_key, bytes) or len(server_key) != 32:
        raise InvalidKeyError("a server key is 32 bytes")
    return CommunityLink(check_base_url(url), server_key, check_room_token(room))


def parse_link(text: str) -> CommunityLink:
    """Either form of join link: ``veil://community?url=…&pk=…&room=…`` or
    ``http(s)://host[:port][/prefix]/<room>?public_key=<hex>``."""
    if not isinstance(text, str):
        raise InvalidInputError("a join link is a string")
    parts = urllib.parse.urlsplit(text.strip())
    try:
        query = urllib.parse.parse_qs(parts.query, strict_parsing=True, max_num_fields=8)
    except ValueError:
        raise InvalidInputError("a join link's query is malformed") from None
    if any(len(values) != 1 for values in query.values()):
        raise InvalidInputError("a join link names each field once")
    fields = {key: values[0] for key, values in query.items()}
    if parts.scheme == "veil":
        if parts.netloc != "community" or parts.path not in ("", "/"):
            raise InvalidInputError("a veil:// join link starts veil://community?")
        if set(fields) != {"url", "pk", "room"}:
            raise InvalidInputError("a veil:// join link has url, pk and room")
        return build_link(fields["url"], _server_key(fields["pk"]), fields["room"])
    if parts.scheme in ("http", "https"):
        if set(fields) != {"public_key"}:
            raise InvalidInputError("a Session-style join link has ?public_key= only")
        base, _, room = parts.path.rstrip("/").rpartition("/")
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, base, "", ""))
        return build_link(url, _server_key(fields["public_key"]), room)
    raise InvalidInputError("a join link starts veil://community? or http(s)://")


def check_base_url(url: str) -> str:
    """A server's base URL: http(s), a host, no query, fragment or credentials; returned without
    a trailing ``/``."""
    if not isinstance(url, str) or len(url) > 512:
        raise InvalidInputError("a base URL is a string of at most 512 characters")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("a base URL is http(s)://host[:port][/path]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInputError("a base URL has no query, fragment or credentials")
    try:
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        raise InvalidInputError("a base URL's port is out of range") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _server_key(text: str) -> bytes:
    lowered = text.lower()
    if len(lowered) != 64 or not _HEX.issuperset(lowered):
        raise InvalidKeyError("a server key is 64 hexadecimal digits")
    return bytes.fromhex(lowered)


def check_room_token(token: object) -> str:
    """A room token: 1 to 64 of ``A-Z a-z 0-9 _ -``."""
    if not isinstance(token, str) or not _ROOM_TOKEN.fullmatch(token):
        raise InvalidInputError("a room token is 1 to 64 of A-Z a-z 0-9 _ -")
    return token


def check_blinded_id(text: object, *, check_point: bool = True) -> tuple[str, bytes]:
    """(the blinded ID in lowercase, its 32-byte Ed25519 point). It is ``"25"`` followed by 64
    hexadecimal digits of an Ed25519 point of prime order; raises :class:`InvalidKeyError`.

    ``check_point=False`` checks the form only: for the key of a request, whose signature check
    (``verify_strict``) refuses what is not a point or has small order, and costs less than this
    check (a scalar multiplication) does."""
    if not isinstance(text, str) or len(text) != 66:
        raise InvalidKeyError("a blinded ID is '25' followed by 64 hexadecimal digits")
    lowered = text.lower()
    if not lowered.startswith(BLINDED_PREFIX) or not _HEX.issuperset(lowered[2:]):
        raise InvalidKeyError("a blinded ID is '25' followed by 64 hexadecimal digits")
    point = bytes.fromhex(lowered[2:])
    if check_point:
        _core.ed25519_public_key_to_x25519(point)  # InvalidKeyError: not a point, or small order
    return lowered, point


# --- sealing --------------------------------------------------------------------------------------


def _key(shared: bytes, ephemeral: bytes, server_key: bytes) -> bytes:
    return _core.blake2b(shared + ephemeral + server_key, 32)


def seal_request(
    server_key: bytes,
    request: Mapping[str, Any],
    *,
    ephemeral_secret: bytes | None = None,
    nonce: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(the request body for ``<base url>/v1``, the key that opens its answer). The ephemeral
    secret and the nonce are fresh random values unless given (test vectors only)."""
    if not isinstance(server_key, bytes) or len(server_key) != 32:
        raise InvalidKeyError("a server key is 32 bytes")
    secret = _core.x25519_generate_secret() if ephemeral_secret is None else ephemeral_secret
    ephemeral = _core.x25519_public_key(secret)
    key = _key(_core.x25519(secret, server_key), ephemeral, server_key)
    used = secrets.token_bytes(AEAD_NONCE_LEN) if nonce is None else nonce
    if len(used) != AEAD_NONCE_LEN:
        raise InvalidInputError("an AEAD nonce is 24 bytes")
    header = bytes([ENVELOPE_VERSION]) + ephemeral
    sealed = _core.xchacha20poly1305_encrypt(key, used, orjson.dumps(request), header)
    return header + used + sealed, key


def open_envelope(
    server_secret: bytes, body: bytes, server_key: bytes | None = None
) -> tuple[bytes, bytes]:
    """(the request's plaintext, the answer key); every failure is the same
    :class:`DecryptionError`. ``server_key`` (the public key) saves a scalar multiplication."""
    if len(body) < _HEADER_LEN + TAG_LEN or body[0] != ENVELOPE_VERSION:
        raise DecryptionError(_OPAQUE)
    public = server_key if server_key is not None else _core.x25519_public_key(server_secret)
    ephemeral = body[1:33]
    try:
        shared = _core.x25519(server_secret, ephemeral)
    except InvalidInputError:  # a low-order point
        raise DecryptionError(_OPAQUE) from None
    key = _key(shared, ephemeral, public)
    plaintext = _core.xchacha20poly1305_decrypt(
        key, body[33:_HEADER_LEN], body[_HEADER_LEN:], body[:33]
    )
    return plaintext, key


def open_request(server_secret: bytes, body: bytes) -> tuple[dict[str, Any], bytes]:
    """(the request JSON object, the answer key): :func:`open_envelope` then a JSON object.
    Raises :class:`DecryptionError`, or :class:`CommunityError` (400) for what is not JSON."""
    plaintext, key = open_envelope(server_secret, body)
    return _json_object(plaintext), key


def seal_answer(key: bytes, answer: Mapping[str, Any], *, nonce: bytes | None = None) -> bytes:
    """``nonce ‖ XChaCha20-Poly1305(k, nonce, answer JSON)`` (a random nonce unless given)."""
    used = secrets.token_bytes(AEAD_NONCE_LEN) if nonce is None else nonce
    if len(used) != AEAD_NONCE_LEN:
        raise InvalidInputError("an AEAD nonce is 24 bytes")
    return used + _core.xchacha20poly1305_encrypt(key, used, orjson.dumps(answer))


def open_answer(key: bytes, body: bytes) -> dict[str, Any]:
    """The answer JSON ``{"status", "body" | "error"}``; :class:`DecryptionError` if it does not
    open, :class:`InvalidInputError` if it is not such an object."""
    if len(body) < AEAD_NONCE_LEN + TAG_LEN:
        raise DecryptionError(_OPAQUE)
    plaintext = _core.xchacha20poly1305_decrypt(key, body[:AEAD_NONCE_LEN], body[AEAD_NONCE_LEN:])
    try:
        answer = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise InvalidInputError("the answer is not JSON") from None
    if not isinstance(answer, dict) or type(answer.get("status")) is not int:
        raise InvalidInputError("the answer is not {status, body | error}")
    return answer


# --- signing --------------------------------------------------------------------------------------


class Signer(Protocol):
    """Who signs requests: a blinded key (``veil.protocol.blinding``) or a stand-in in tests."""

    @property
    def pubkey(self) -> str:
        """The blinded ID, ``"25"`` ‖ 64 hex digits."""
        ...

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature under ``pubkey``'s point."""
        ...


def canonical_params(params: Mapping[str, Any]) -> bytes:
    """``orjson.dumps(params, option=OPT_SORT_KEYS)``: keys sorted at every depth, compact."""
    try:
        return orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise InvalidInputError("params are not JSON with string keys") from None


def request_string(
    server_key: bytes, method: str, params: Mapping[str, Any], ts_ms: int, nonce: bytes
) -> bytes:
    """What a request signs: ``DOMAIN ‖ S ‖ method ‖ "\\n" ‖ ts ‖ "\\n" ‖ nonce ‖ params``."""
    return (
        DOMAIN
        + server_key
        + method.encode()
        + b"\n"
        + str(ts_ms).encode()
        + b"\n"
        + nonce
        + canonical_params(params)
    )


def sign_request(
    signer: Signer,
    server_key: bytes,
    method: str,
    params: Mapping[str, Any],
    *,
    ts_ms: int | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """The complete request JSON object for ``method``; ``ts_ms`` defaults to now, ``nonce`` to 16
    random bytes."""
    if not _METHOD.fullmatch(method):
        raise InvalidInputError("a method is 1 to 32 of a-z and _")
    ts = now_ms() if ts_ms is None else ts_ms
    used = secrets.token_bytes(REQUEST_NONCE_LEN) if nonce is None else nonce
    if len(used) != REQUEST_NONCE_LEN:
        raise InvalidInputError("a request nonce is 16 bytes")
    signature = signer.sign(request_string(server_key, method, params, ts, used))
    return {
        "method": method,
        "params": dict(params),
        "pubkey": signer.pubkey,
        "ts": ts,
        "nonce": base64.b64encode(used).decode("ascii"),
        "sig": base64.b64encode(signature).decode("ascii"),
    }


# --- reading a request ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request. ``pubkey`` is None for an unsigned one (then ``point``, ``nonce`` and
    ``signature`` are empty and ``ts_ms`` 0)."""

    method: str
    params: dict[str, Any]
    pubkey: str | None
    point: bytes
    ts_ms: int
    nonce: bytes
    signature: bytes


def _json_object(plaintext: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise CommunityError(400, "the request is not JSON") from None
    if not isinstance(document, dict):
        raise CommunityError(400, "the request is not a JSON object")
    return document


def _b64(value: object, length: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise CommunityError(400, f"{what} is not a base64 string")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CommunityError(400, f"{what} is not valid base64") from None
    if len(decoded) != length:
        raise CommunityError(400, f"{what} is not {length} bytes")
    return decoded


_FIELDS = frozenset({"method", "params", "pubkey", "ts", "nonce", "sig"})


def parse_request(document: Mapping[str, Any], methods: Container[str] | None = None) -> Request:
    """Check the request object's shape (not its signature: :func:`verify_request`); a method
    not in ``methods`` (if given) is refused with 404."""
    if not set(document) <= _FIELDS:
        raise CommunityError(400, f"unknown request field(s): {sorted(set(document) - _FIELDS)}")
    method, params = document.get("method"), document.get("params", {})
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise CommunityError(400, "method is not a method name")
    if methods is not None and method not in methods:
        raise CommunityError(404, f"unknown method {method!r}")
    if not isinstance(params, dict):
        raise CommunityError(400, "params is not a JSON object")
    if "pubkey" not in document and method in UNSIGNED_METHODS:
        if set(document) - {"method", "params"}:
            raise CommunityError(400, "an unsigned request has only method and params")
        return Request(method, params, None, b"", 0, b"", b"")
    if "pubkey" not in document:
        raise CommunityError(401, f"{method} needs a signed request")
    try:
        pubkey, point = check_blinded_id(document["pubkey"], check_point=False)
    except InvalidKeyError:
        raise CommunityError(401, "pubkey is not a blinded ID") from None
    ts = document.get("ts")
    if type(ts) is not int or ts < 0:
        raise CommunityError(400, "ts is not a timestamp in milliseconds")
    nonce = _b64(document.get("nonce"), REQUEST_NONCE_LEN, "nonce")
    signature = _b64(document.get("sig"), 64, "sig")
    return Request(method, params, pubkey, point, ts, nonce, signature)


def decode_request(plaintext: bytes, methods: Container[str] | None = None) -> Request:
    """An opened request's plaintext to a :class:`Request` (:func:`parse_request` of its JSON)."""
    return parse_request(_json_object(plaintext), methods)


def verify_request(request: Request, server_key: bytes) -> None:
    """Check a signed request's signature; raises :class:`CommunityError` (401)."""
    if request.pubkey is None:
        return
    try:
        message = request_string(
            server_key, request.method, request.params, request.ts_ms, request.nonce
        )
        valid = _core.ed25519_verify(request.point, message, request.signature)
    except InvalidInputError:  # InvalidKeyError included
        valid = False
    if not valid:
        raise CommunityError(401, "the signature does not verify")


# --- reading a post -------------------------------------------------------------------------------

_POST_PARAMS = frozenset({"room", "text", "name", "reply_to"})
_EDIT_PARAMS = frozenset({"room", "id", "text"})


def _proof_bytes(value: object, length: int) -> bytes | None:
    if not isinstance(value, str) or len(value) > 4 * length:
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == length else None


def verify_post(server_key: bytes, room: str, change: object) -> bool:
    """Whether ``change`` — a poll's change of a live post in room ``room`` of the server whose
    key is ``server_key`` — carries a ``proof`` that its author signed its text there.

    ``proof`` is ``{"method": "post" | "edit", "params", "ts", "nonce", "sig"}``: the signed
    request that gave the post its current text, its params without the ``text`` (the change's
    own text is what was signed, so it travels once). True when ``proof.params`` names ``room``,
    holds no ``text`` and no param the method does not take; for a
    ``post``, its ``name`` (default ``""``) and ``reply_to`` (default none) are the change's; for
    an ``edit``, its ``id`` is the change's ``id``; and ``sig`` verifies (strict Ed25519) under the
    change's ``author`` over :func:`request_string` ``(server_key, method, params, ts, nonce)``.
    Anything else — no proof (a post stored before proofs existed), a malformed one, values of the
    wrong type — is False; it never raises on what a server sends.

    What True proves: the holder of ``author``'s key wrote this text (and, for a post, this name
    and reply link) for this room of this server, at ``proof.ts`` by the author's clock. What it
    does not: that the server shows every post, or in the order they were made (it may withhold
    or reorder them); the post id, ``posted``, ``edited``, ``reactions`` and ``pinned``, which the
    server sets (a ``post`` proof does not name the id the server gave it, so a server could show
    one signed post twice); for an edited post, the name and reply link of the original post (the
    edit's proof replaces the post's and names only room, id and text)."""
    if not (isinstance(server_key, bytes) and len(server_key) == 32 and isinstance(change, dict)):
        return False
    proof = change.get("proof")
    if not isinstance(proof, dict):
        return False
    method, params, ts = proof.get("method"), proof.get("params"), proof.get("ts")
    if not (isinstance(method, str) and isinstance(params, dict) and type(ts) is int and ts >= 0):
        return False
    nonce = _proof_bytes(proof.get("nonce"), REQUEST_NONCE_LEN)
    signature = _proof_bytes(proof.get("sig"), 64)
    params = {**params, "text": change.get("text")} if "text" not in params else {}
    if nonce is None or signature is None or not _names(method, params, room, change):
        return False
    try:
        _, point = check_blinded_id(change.get("author"), check_point=False)
        message = request_string(server_key, method, params, ts, nonce)
        return bool(_core.ed25519_verify(point, message, signature))
    except InvalidInputError:  # not a blinded ID, params that are not JSON, not a point
        return False


def _same(signed: object, shown: object, kind: type) -> bool:
    """Equal values, both exactly of ``kind`` (so that ``True`` is not ``1``)."""
    return type(signed) is kind and type(shown) is kind and signed == shown


def _names(method: str, params: dict[Any, Any], room: str, change: dict[Any, Any]) -> bool:
    """Whether a proof's method and params are those of ``change`` in ``room``."""
    if not (
        _same(params.get("room"), room, str) and _same(params.get("text"), change.get("text"), str)
    ):
        return False
    if method == "post":
        reply_to, shown = params.get("reply_to"), change.get("reply_to")
        return (
            set(params) <= _POST_PARAMS
            and _same(params.get("name", ""), change.get("name"), str)
            and (_same(reply_to, shown, int) or (reply_to is None and shown is None))
        )
    if method == "edit":
        return set(params) == _EDIT_PARAMS and _same(params.get("id"), change.get("id"), int)
    return False
