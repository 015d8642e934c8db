"""How the client reads what a node or a seed sends over HTTP: never a redirect, never unbounded.

Every request the client makes passes ``allow_redirects=False`` (a 3xx is an answer like any other,
refused where a 200 is expected), and every answer is read through :func:`read_bounded`: a
``Content-Length`` above the limit is refused before anything is read, and a body that goes on
past the limit is refused as soon as it does, so a node cannot make the client hold more than
``limit`` bytes of one answer (:data:`MAX_ANSWER_BYTES`, 16 MiB, by default — an onion reply, or a
consensus of some 20,000 nodes). The client's sessions (:func:`client_session`) ask for no
compression and decompress nothing: a compressed answer is taken as the bytes it is, so a small
answer cannot inflate to a large one in the client's memory.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from veil.errors import VeilError

__all__ = [
    "MAX_ANSWER_BYTES",
    "AnswerTooLarge",
    "client_session",
    "read_bounded",
    "size_text",
    "url",
]

MAX_ANSWER_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024


class AnswerTooLarge(VeilError):
    """An answer went past the size the client reads."""


def client_session(**options: Any) -> aiohttp.ClientSession:
    """An aiohttp session as the client uses one: no ``Accept-Encoding`` sent, nothing
    decompressed (``options`` as for :class:`aiohttp.ClientSession`)."""
    return aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers=("Accept-Encoding",), **options
    )


def url(address: tuple[str, int], path: str) -> str:
    """``http://host:port/path`` for a parsed address (an IPv6 host in brackets)."""
    host, port = address
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def size_text(limit: int) -> str:
    """``16 MiB``, ``512 KiB`` or ``100 bytes``: a limit as an error message says it."""
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


async def read_bounded(response: aiohttp.ClientResponse, limit: int, source: str) -> bytes:
    """The body of ``response``, at most ``limit`` bytes; :class:`AnswerTooLarge` (naming
    ``source``) for a longer one, whatever its headers say."""
    too_large = AnswerTooLarge(f"the answer from {source} is larger than {size_text(limit)}")
    declared = response.content_length
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
