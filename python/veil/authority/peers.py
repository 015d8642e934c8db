"""HTTP to the other authorities of the network: post votes and signatures, fetch what is missing.

Answers are read up to a bound (a vote or a consensus of the largest network) and handed back as
parsed JSON, unverified: the caller verifies them against the network file. A peer that does not
answer, or answers something that is not JSON, gives None (status 0 for a post); nothing here
raises for it. A post also hands back the status, so that the caller can tell a refusal (4xx: the
same post would be refused again) from a failure worth retrying.

A vote is posted with a signed header that says which authority sends it
(:mod:`veil.protocol.authority_post`); :class:`SenderCheck` is the receiving side's check of it,
made before the body is read.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson

from veil import _core
from veil.clock import now_ms
from veil.errors import InvalidInputError, InvalidKeyError
from veil.protocol import authority_post
from veil.protocol.network_file import AuthorityInfo, NetworkFile

__all__ = ["AuthorityPeers", "SenderCheck"]


class AuthorityPeers:
    def __init__(
        self,
        network: NetworkFile,
        own_key: bytes,
        *,
        sign: Callable[[bytes], bytes],
        timeout_s: float,
        max_answer_bytes: int,
    ) -> None:
        self.others = tuple(a for a in network.authorities if a.ed25519 != own_key)
        self.own_key = own_key
        self._sign = sign
        self._stamp = 0
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self.counts: collections.Counter[str] = collections.Counter()
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit_per_host=4),
            )
        return self._session

    @staticmethod
    def _url(authority: AuthorityInfo, path: str) -> str:
        host, port = authority.http
        return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"

    async def post(
        self, authority: AuthorityInfo, path: str, body: bytes, *, signed: bool = False
    ) -> tuple[int, Any]:
        """POST ``body`` (JSON); the answer's status (0: no answer) and its JSON (or None).
        ``signed``: with the header that proves this authority sent it (a vote's route)."""
        extra = {authority_post.HEADER: self._auth(authority, path, len(body))} if signed else {}
        return await self._request("POST", authority, path, body, extra)

    def _auth(self, authority: AuthorityInfo, path: str, content_length: int) -> str:
        self._stamp = max(now_ms(), self._stamp + 1)  # never the same twice: one header, one use
        message = authority_post.signed_bytes(
            self.own_key, authority.ed25519, path.encode(), content_length, self._stamp
        )
        return authority_post.value(self.own_key, self._stamp, self._sign(message))

    async def get(self, authority: AuthorityInfo, path: str) -> Any:
        """GET ``path``; the JSON answer if it was 200, else None."""
        status, document = await self._request("GET", authority, path, None)
        return document if status == 200 else None

    async def _request(
        self,
        method: str,
        authority: AuthorityInfo,
        path: str,
        body: bytes | None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = None
        if body is not None:
            headers = {"Content-Type": "application/json", **(extra or {})}
        try:
            async with self._http().request(
                method,
                self._url(authority, path),
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as answer:
                raw = bytearray()
                async for chunk in answer.content.iter_chunked(1 << 16):
                    raw += chunk
                    if len(raw) > self.max_answer_bytes:
                        self.counts["answer_too_large"] += 1
                        return 0, None
                if not 200 <= answer.status < 300:
                    self.counts[f"status_{answer.status}"] += 1
                return answer.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.counts["not_json"] += 1
            return 0, None
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.counts["unreachable"] += 1
            return 0, None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SenderCheck:
    """The receiving side of :mod:`veil.protocol.authority_post`: which authority of the network
    sent a request to ``path``, from its header and Content-Length, before its body is read."""

    def __init__(self, network: NetworkFile, own_key: bytes, path: bytes, max_skew_ms: int) -> None:
        self.path = path
        self.own_key = own_key
        self.max_skew_ms = max_skew_ms
        self._keys: dict[bytes, _core.Ed25519PublicKey] = {}
        for authority in network.authorities:
            if authority.ed25519 != own_key:
                # A key that is not a point: no header of that authority can verify.
                with contextlib.suppress(InvalidKeyError):
                    self._keys[authority.ed25519] = _core.Ed25519PublicKey(authority.ed25519)
        self._last: dict[bytes, int] = {}
        """The newest timestamp taken from each authority (bounded: the network file's)."""

    def __call__(self, headers: Mapping[bytes, bytes], content_length: int) -> str | None:
        """The reason to refuse the request, or ``None`` (its sender is one of the other
        authorities, and this header is taken: it will not be taken again)."""
        try:
            raw = headers.get(authority_post.HEADER_KEY, b"")
            sender, stamp, signature = authority_post.parse(raw)
        except InvalidInputError:
            return "no valid authority header"
        key = self._keys.get(sender)
        if key is None:
            return "not an authority of this network"
        if abs(stamp - now_ms()) > self.max_skew_ms or stamp <= self._last.get(sender, -1):
            return "stale or replayed authority header"
        message = authority_post.signed_bytes(
            sender, self.own_key, self.path, content_length, stamp
        )
        if not key.verify(message, signature):
            return "authority header does not verify"
        self._last[sender] = stamp
        return None
