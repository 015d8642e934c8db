"""What Veil's onion requests carry inside the layers (``docs/protocol.md``, "Onion requests"), and
the sans-IO builder that clients, benchmarks and the load test share.

Routing data of every layer (the ``routing`` field of an onion layer, version 1):

```
routing = issued_ms (8, big-endian) ‖ target (rest, UTF-8; empty but at the destination's layer)
```

``issued_ms`` is when the client built the onion; a node refuses a layer issued more than the
replay window away from its clock, which bounds how long it must remember replay tags. ``target``
at the destination is empty for the node's own storage RPC (the request is ``{"method",
"params"}`` JSON) or the URL of an external HTTP service the destination's operator allows (the
request is the body to POST there). Example: issued at 1700000000000 ms for the storage RPC, every
layer's routing data is ``00 00 01 8b cf e5 68 00``.

The destination's answer, encrypted with the reply key, is JSON:
``{"status": int, "body": <the RPC answer>}`` for the storage RPC, and
``{"status": int, "body_b64": str, "content_type": str}`` for an external service.

Sans-IO: :func:`build_request` makes the onion for a path and the reply key, :func:`open_reply`
reads the destination's answer with that key. The caller owns the transport: it posts the onion to
the first hop's ``/onion_req`` and hands the body of its 200 answer to :func:`open_reply`.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from typing import Any

import orjson

from veil.clock import now_ms
from veil.crypto import HopKey, build_onion
from veil.errors import InvalidInputError

__all__ = ["build_request", "decode_routing", "encode_routing", "open_reply", "parse_answer"]

_ISSUED = struct.Struct(">Q")


def encode_routing(issued_ms: int, target: str = "") -> bytes:
    """The routing data of one layer: ``issued_ms ‖ target``."""
    return _ISSUED.pack(issued_ms) + target.encode("utf-8")


def decode_routing(routing: bytes) -> tuple[int, str]:
    """(issued_ms, target); raise :class:`InvalidInputError` if malformed."""
    if len(routing) < _ISSUED.size:
        raise InvalidInputError("routing data is shorter than its timestamp")
    (issued_ms,) = _ISSUED.unpack_from(routing)
    try:
        target = routing[_ISSUED.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("routing target is not UTF-8") from None
    return issued_ms, target


def build_request(
    path_x25519_keys: Sequence[bytes],
    payload: bytes,
    *,
    target: str = "",
    issued_ms: int | None = None,
) -> tuple[bytes, HopKey]:
    """The onion carrying ``payload`` along ``path_x25519_keys`` (first hop first, destination
    last) and the reply key that opens the destination's answer.

    Every layer's routing data holds ``issued_ms`` (now by default); the destination's holds
    ``target`` too: ``""`` for its storage RPC, else the URL of an external service.
    """
    if not path_x25519_keys:
        raise InvalidInputError("an onion path has at least one hop")
    issued = now_ms() if issued_ms is None else issued_ms
    routing = [encode_routing(issued)] * (len(path_x25519_keys) - 1)
    routing.append(encode_routing(issued, target))
    return build_onion(path_x25519_keys, payload, routing=routing)


def open_reply(reply_key: HopKey, body: bytes, *, external: bool) -> tuple[int, Any]:
    """The destination's answer: (status, the RPC answer) for the storage RPC, or for an external
    service (status, (response body, content type)).

    Raises :class:`~veil.errors.DecryptionError` if ``body`` does not decrypt with the reply key,
    and :class:`InvalidInputError` if the plaintext is not the answer described above.
    """
    return parse_answer(reply_key.decrypt(body), external=external)


def parse_answer(plaintext: bytes, *, external: bool) -> tuple[int, Any]:
    """The destination's answer from its plaintext (the same JSON for onion v1 and v2): see
    :func:`open_reply`."""
    try:
        reply = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise InvalidInputError("the answer is not JSON") from None
    if not isinstance(reply, dict):
        raise InvalidInputError("the answer is not a JSON object")
    status = reply.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise InvalidInputError("the answer has no integer status")
    if not external:
        return status, reply.get("body")
    body_b64, content_type = reply.get("body_b64", ""), reply.get("content_type", "")
    if not isinstance(body_b64, str) or not isinstance(content_type, str):
        raise InvalidInputError("an external answer's body_b64 and content_type are strings")
    try:
        content = base64.b64decode(body_b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("an external answer's body_b64 is not base64") from None
    return status, (content, content_type)
