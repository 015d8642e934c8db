"""What Veil's onion requests carry inside the layers (``docs/protocol.md``, "Onion requests").

Routing data of every layer (the ``routing`` field of an onion layer, version 1):

```
routing = issued_ms (8, big-endian) ‖ target (rest, UTF-8; empty but at the destination's layer)
```

``issued_ms`` is when the client built the onion; a node refuses a layer issued more than the
replay window away from its clock, which bounds how long it must remember replay tags. ``target``
at the destination is empty for the node's own storage RPC (the request is ``{"method",
"params"}`` JSON) or the URL of an external HTTP service the destination's operator allows (the
request is the body to POST there).

The destination's answer, encrypted with the reply key, is JSON:
``{"status": int, "body": <the RPC answer>}`` for the storage RPC, and
``{"status": int, "body_b64": str, "content_type": str}`` for an external service.
"""

from __future__ import annotations

import struct

from veil.errors import InvalidInputError

__all__ = ["decode_routing", "encode_routing"]

_ISSUED = struct.Struct(">Q")


def encode_routing(issued_ms: int, target: str = "") -> bytes:
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
