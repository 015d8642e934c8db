"""HTTP to the other authorities of the network: post votes and signatures, fetch what is missing.

Answers are read up to a bound (a vote or a consensus of the largest network) and handed back as
parsed JSON, unverified: the caller verifies them against the network file. A peer that does not
answer, or answers something that is not JSON, gives None (status 0 for a post); nothing here
raises for it. A post also hands back the status, so that the caller can tell a refusal (4xx: the
same post would be refused again) from a failure worth retrying.
"""

from __future__ import annotations

import collections
from typing import Any

import aiohttp
import orjson

from veil.protocol.network_file import AuthorityInfo, NetworkFile

__all__ = ["AuthorityPeers"]


class AuthorityPeers:
    def __init__(
        self, network: NetworkFile, own_key: bytes, *, timeout_s: float, max_answer_bytes: int
    ) -> None:
        self.others = tuple(a for a in network.authorities if a.ed25519 != own_key)
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

    async def post(self, authority: AuthorityInfo, path: str, body: bytes) -> tuple[int, Any]:
        """POST ``body`` (JSON); the answer's status (0: no answer) and its JSON (or None)."""
        return await self._request("POST", authority, path, body)

    async def get(self, authority: AuthorityInfo, path: str) -> Any:
        """GET ``path``; the JSON answer if it was 200, else None."""
        status, document = await self._request("GET", authority, path, None)
        return document if status == 200 else None

    async def _request(
        self, method: str, authority: AuthorityInfo, path: str, body: bytes | None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else None
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
