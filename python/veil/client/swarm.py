"""Storing and fetching an account's messages through the network, as a Veil client does.

:class:`SwarmClient` computes an account's swarm itself, from the consensus its network client
holds (``veil.protocol.swarms.SwarmMap`` over the consensus's nodes and placements, as the nodes
compute it). A node's ``421 wrong_swarm`` is only a hint that the client's consensus may be behind:
the client refreshes its consensus once and, if that changed anything, retries at a member of the
swarm it computes; the members a node names are never taken. It stores at one swarm member
(another on failure) and reads from ``read_members`` members at once — with
``read_members = R - W + 1`` (3 for 5 and 3) at least one of them holds every acknowledged
message — then merges and de-duplicates by hash, so one slow or lagging node cannot hide a message.

Every answer is checked before it is used:

- a store counts only with signed results from at least ``write_quorum`` distinct members of the
  swarm computed here in the answer's ``swarm`` block, each for the message's hash (recomputed
  here) and verifying (``veil.protocol.storage_rpc.verify_swarm``), else :class:`StoreError`
  (``unacknowledged``); a delete reports only what members whose signed result verifies deleted;
- a retrieved message is kept only with an integer timestamp (no later than
  :data:`FUTURE_MARGIN_MS` ahead of the client's clock: nodes take none so far off), base64 data
  and the hash of that data (recomputed: ``veil.protocol.hashes.message_hash``); others are
  dropped and counted in :attr:`SwarmClient.dropped`, so no hash a node made up reaches a signed
  ``delete`` (a "hash" ``_all1700000000000`` would turn ``"delete" ‖ hashes`` into the string a
  ``delete_all`` signs). :meth:`SwarmClient.delete` itself drops (unsigned) any text that is not a
  message hash;
- one member's pages are read up to :data:`DRAIN_MAX_BYTES` per call (the cursor is kept: the
  next call goes on from there), each answer being bounded already (``veil.client.http``);
- the cursor the client keeps for a member is the one that member answered (messages are filed
  under their arrival, which the messages themselves do not carry), if it is no later than the
  client's clock allows; a member read for the first time starts at the least advanced cursor of
  the others, and no later than the previous retrieve: a lying member cannot push the client's
  reads of the others ahead of what it has read from them;
- a node's error text is cleaned (one line, no terminal controls) before it goes into an error.

Every request goes through :class:`~veil.client.network.NetworkClient`, that is, through onion
paths.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import random
from collections.abc import Callable
from typing import Any

from veil import clock
from veil.client.network import NetworkClient, NetworkError
from veil.client.terminal import error_line
from veil.errors import InvalidInputError, VeilError
from veil.identity import Identity
from veil.protocol import storage_rpc
from veil.protocol.consensus import SignedConsensus
from veil.protocol.hashes import (
    cursor_decode,
    cursor_encode,
    hash_b64,
    hash_from_b64,
    message_hash,
)
from veil.protocol.peers import PeerInfo
from veil.protocol.swarms import SwarmMap

__all__ = ["StoreError", "SwarmClient"]

FUTURE_MARGIN_MS = 5 * 60_000
"""How far ahead of the client's clock a retrieved message's timestamp may be (nodes take stores
within 60 s of their own clock, and the client's signed requests only within 60 s of it; the rest
is margin)."""
DRAIN_MAX_BYTES = 32 * 1024 * 1024
"""The most message data (base64) read from one member in one retrieve."""


class StoreError(VeilError):
    """The swarm refused a message (``code`` is the HTTP status, the message the node's text),
    could not be reached (``unreachable``), or did not acknowledge it with enough valid signed
    results (``unacknowledged``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_now_ms = clock.now_ms  # a module name of its own, so that a test can set the client's clock


class SwarmClient:
    def __init__(
        self,
        network: NetworkClient,
        *,
        swarm_size: int = 5,
        read_members: int = 3,
        write_quorum: int = 3,
        look_back_ms: int = 60_000,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= write_quorum <= swarm_size:
            raise ValueError("write_quorum is between 1 and swarm_size")
        self.network = network
        self.swarm_size = swarm_size
        self.read_members = read_members
        self.write_quorum = write_quorum
        self._rng = rng or random.SystemRandom()
        self._map: SwarmMap | None = None
        self._map_of: SignedConsensus | None = None
        self._cursors: dict[tuple[bytes, bytes, int], str] = {}
        # A message is filed under its arrival at the member it was stored at; it reaches the
        # others a moment later, and their clocks differ by up to the nodes' clock window (60 s),
        # so it may land behind a cursor already passed (docs/storage.md). Reads therefore start
        # ``look_back_ms`` before the cursor, and the hashes returned inside that window are kept
        # (with when they were read) so that a message is returned once.
        self.look_back_ms = look_back_ms
        self._recent: dict[tuple[bytes, int], dict[str, int]] = {}
        self._read_ms: dict[tuple[bytes, int], int] = {}
        """When the last retrieve of an account's namespace that a member answered started."""
        self.dropped: collections.Counter[str] = collections.Counter()
        """What answers carried that was dropped, by reason: retrieved messages ``malformed``,
        with a ``wrong_hash`` or from the ``future``; ``bad_hash``, texts given to :meth:`delete`
        that are not message hashes."""

    # --- the swarms ---------------------------------------------------------------------------

    def _swarm_map(self) -> SwarmMap:
        directory = self.network.directory
        if self._map is None or self._map_of is not directory.signed:
            self._map = SwarmMap(
                [p.ed25519 for p in directory.nodes], self.swarm_size, directory.placements
            )
            self._map_of = directory.signed
        return self._map

    def swarm(self, account: bytes) -> list[PeerInfo]:
        """The account's swarm in the consensus held, highest weight first."""
        directory = self.network.directory
        members = (directory.peer(node_id) for node_id in self._swarm_map().swarm(account))
        return [p for p in members if p is not None]

    def export_cursors(self) -> dict[str, Any]:
        """The retrieve cursors and the hashes inside their look-back window, for saved state."""
        saved: dict[str, Any] = {
            f"{a.hex()}:{m.hex()}:{ns}": c for (a, m, ns), c in self._cursors.items()
        }
        saved["recent"] = {
            f"{a.hex()}:{ns}": dict(seen) for (a, ns), seen in self._recent.items() if seen
        }
        saved["read"] = {f"{a.hex()}:{ns}": ms for (a, ns), ms in self._read_ms.items()}
        return saved

    def import_cursors(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        for key, cursor in saved.items():
            if key == "recent":
                self._import_recent(cursor)
                continue
            if key == "read":
                self._import_read(cursor)
                continue
            try:
                account, member, ns = str(key).split(":")
                cursor_decode(str(cursor))
                self._cursors[(bytes.fromhex(account), bytes.fromhex(member), int(ns))] = str(
                    cursor
                )
            except (ValueError, InvalidInputError):
                continue

    def _import_read(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        for key, ms in saved.items():
            try:
                account, ns = str(key).split(":")
                if _is_ms(ms):
                    self._read_ms[(bytes.fromhex(account), int(ns))] = ms
            except ValueError:
                continue

    def _import_recent(self, saved: object) -> None:
        if not isinstance(saved, dict):
            return
        for key, seen in saved.items():
            try:
                account, ns = str(key).split(":")
                entries = {str(h): int(t) for h, t in dict(seen).items()}
                self._recent[(bytes.fromhex(account), int(ns))] = entries
            except (ValueError, TypeError):
                continue

    # --- requests -----------------------------------------------------------------------------

    async def _swarm_request(
        self, account: bytes, method: str, params: dict[str, Any], member: PeerInfo
    ) -> tuple[PeerInfo, int, Any]:
        """``method`` at ``member``; on a 421, the consensus refreshed once and, if that gave a
        newer one, the request sent again to a member of the swarm it places the account in."""
        status, body = await self.network.request(member, method, params)
        if status != 421 or not await self.network.refresh_consensus(hint=True):
            return member, status, body
        swarm = self.swarm(account)
        others = [m for m in swarm if m != member]
        if not others:
            return member, status, body
        retry = self._rng.choice(others)
        status, body = await self.network.request(retry, method, params)
        return retry, status, body

    async def store(
        self,
        recipient_session_id: str,
        data: bytes,
        *,
        ttl_ms: int,
        namespace: int = 0,
        identity: Identity | storage_rpc.Signer | None = None,
    ) -> dict[str, Any]:
        """Deposit a message for an account. Namespace 0 takes anyone's messages; the others only
        the account's own, signed by ``identity`` (else :class:`InvalidInputError`)."""
        account = storage_rpc.account_bytes(recipient_session_id)
        timestamp = _now_ms()
        params = storage_rpc.store_params(
            recipient_session_id,
            data,
            ttl_ms,
            namespace=namespace,
            identity=identity,
            timestamp_ms=timestamp,
        )
        digest = message_hash(account, namespace, data)
        expiry = timestamp + ttl_ms

        def acknowledged(body: dict[str, Any]) -> dict[str, Any] | str:
            return self._acknowledged(account, digest, expiry, params, body)

        # A message refused for what it is: another member would say the same.
        return await self._write(
            account, "store", params, final=(400, 401, 406, 413, 507), check=acknowledged
        )

    def _acknowledged(
        self,
        account: bytes,
        digest: bytes,
        expiry: int,
        params: dict[str, Any],
        body: dict[str, Any],
    ) -> dict[str, Any] | str:
        """The store answer, as far as it is proven: the message's hash and expiry, and the members
        of the swarm computed here whose signed result for that hash verifies (``signed_by``, and
        their results in ``swarm``, for whoever wants to check them again); or why it does not
        count (fewer than ``write_quorum`` of them)."""
        text = hash_b64(digest)
        members = [p.ed25519 for p in self.swarm(account)]
        needed = min(self.write_quorum, len(members))
        swarm = body.get("swarm")
        signers = storage_rpc.verify_swarm(
            "store",
            params,
            body,
            members,
            enough=needed,  # the proof needs W; checking the rest costs a verification each
            accept=lambda result: result.get("hash") == text,
        )
        if len(signers) < needed:
            return f"acknowledged by {len(signers)} of the {needed} members needed"
        results = {m.hex(): swarm[m.hex()] for m in signers} if isinstance(swarm, dict) else {}
        return {
            "hash": text,
            "expiry": expiry,
            "already": any(r.get("already") is True for r in results.values()),
            "signed_by": list(results),
            "swarm": results,
        }

    def _retrieve_params(
        self, identity: Identity | storage_rpc.Signer, namespace: int, cursor: str | None
    ) -> dict[str, Any]:
        if cursor:
            # Step back by the look-back window (a cursor on an arrival, in µs, and the zero hash).
            arrival_us = int.from_bytes(cursor_decode(cursor)[:8], "big")
            cursor = cursor_encode(max(0, arrival_us - self.look_back_ms * 1000), bytes(32))
        return storage_rpc.retrieve_params(
            identity, namespace=namespace, cursor=cursor or "", timestamp_ms=_now_ms()
        )

    async def _drain(
        self,
        identity: Identity | storage_rpc.Signer,
        member: PeerInfo,
        namespace: int,
        *,
        from_start: bool,
        keep_raw: bool = False,
    ) -> tuple[list[dict[str, Any]], bool]:
        """The messages ``member`` gives (after the client's cursor for it, unless
        ``from_start``), and whether it answered at all."""
        account = bytes.fromhex(storage_rpc.signer_of(identity).pubkey)
        key = (account, member.ed25519, namespace)
        messages: list[dict[str, Any]] = []
        answered = False
        cursor = None if from_start else self._cursors.get(key) or self._best(account, namespace)
        budget = DRAIN_MAX_BYTES
        for _ in range(64):  # pages, bounded
            params = self._retrieve_params(identity, namespace, cursor)
            if cursor is not None and messages:
                params["cursor"] = cursor  # later pages continue exactly where the last ended
            try:
                _, status, body = await self._swarm_request(account, "retrieve", params, member)
            except NetworkError:
                break
            if status != 200 or not isinstance(body, dict):
                break
            answered = True
            raw = body.get("messages")
            arrivals = body.get("arrivals")
            page = self._checked(
                raw if isinstance(raw, list) else [],
                account,
                namespace,
                arrivals if isinstance(arrivals, list) else [],
                keep_raw=keep_raw,
            )
            messages.extend(page)
            answered_cursor = _cursor_of(body.get("cursor"))
            if page and answered_cursor is not None:
                cursor = answered_cursor
                if not from_start:
                    self._cursors[key] = cursor
            budget -= sum(len(m["data"]) for m in page)
            more = body.get("more") is True and answered_cursor is not None  # else no way on
            if not more or not page or budget <= 0:
                break
        return messages, answered

    async def retrieve(
        self,
        identity: Identity | storage_rpc.Signer,
        *,
        namespace: int = 0,
        from_start: bool = False,
    ) -> list[dict[str, Any]]:
        """New messages of the account from ``read_members`` swarm members, merged, de-duplicated
        by hash, in cursor order (timestamp, then hash). ``from_start``: every message held, with
        no cursor used or kept (for small namespaces read whole, such as the account's config)."""
        account = bytes.fromhex(storage_rpc.signer_of(identity).pubkey)
        started = _now_ms()
        members = self.swarm(account)
        self._rng.shuffle(members)
        drained = await asyncio.gather(
            *(
                self._drain(identity, m, namespace, from_start=from_start)
                for m in members[: self.read_members]
            )
        )
        merged: dict[str, dict[str, Any]] = {}
        for page, _ in drained:
            for message in page:
                first = merged.setdefault(message["hash"], message)
                # The latest arrival any member gives (a member cannot make it earlier alone).
                if "arrival_ms" in message:
                    first["arrival_ms"] = max(first.get("arrival_ms", 0), message["arrival_ms"])
        ordered = sorted(merged.values(), key=lambda m: (m["timestamp"], m["hash"]))
        if from_start:
            return ordered
        if any(answered for _, answered in drained):
            self._read_ms[(account, namespace)] = started
        recent = self._recent.setdefault((account, namespace), {})
        fresh = [m for m in ordered if m["hash"] not in recent]
        for message in fresh:
            recent[message["hash"]] = started
        self._prune_recent(account, namespace)
        return fresh

    async def retrieve_from(
        self, identity: Identity | storage_rpc.Signer, member: PeerInfo, *, namespace: int = 0
    ) -> list[dict[str, Any]] | None:
        """Every message of the account's ``namespace`` that one swarm member gives (checked as
        :meth:`retrieve` checks them, each with its decoded bytes as ``raw``; no cursor used or
        kept), or None if it did not answer: for a caller that tries the members itself (an
        attachment chunk, opened before it is trusted)."""
        messages, answered = await self._drain(
            identity, member, namespace, from_start=True, keep_raw=True
        )
        return messages if answered else None

    async def read_public(self, account_hex: str, *, namespace: int) -> list[dict[str, Any]]:
        """Every message held in a namespace anyone may read (an account's public outbox, where
        its prekey bundle is), unsigned, from ``read_members`` members, checked as
        :meth:`retrieve` checks them and merged by hash."""
        if not storage_rpc.is_noauth_retrieve_namespace(namespace):
            raise InvalidInputError(f"namespace {namespace} is not readable without signing")
        account = storage_rpc.account_bytes(account_hex)
        members = self.swarm(account)
        self._rng.shuffle(members)
        params = {"pubkey": account_hex, "namespace": namespace}

        async def read(member: PeerInfo) -> list[dict[str, Any]]:
            try:
                _, status, body = await self._swarm_request(account, "retrieve", params, member)
            except NetworkError:
                return []
            raw = body.get("messages") if status == 200 and isinstance(body, dict) else None
            return self._checked(raw if isinstance(raw, list) else [], account, namespace, [])

        pages = await asyncio.gather(*(read(m) for m in members[: self.read_members]))
        merged: dict[str, dict[str, Any]] = {}
        for page in pages:
            for message in page:
                merged.setdefault(message["hash"], message)
        return sorted(merged.values(), key=lambda m: (m["timestamp"], m["hash"]))

    def _best(self, account: bytes, namespace: int) -> str | None:
        """Where a member read for the first time starts (less the look-back window): the least
        advanced cursor of the members read before (cursors are the same on every member:
        timestamp, then hash), and no later than the start of the previous retrieve. Never the
        furthest: a member that made up a message ahead of the others would hide from the client
        what every member it had not read yet holds; and whatever the cursors, nothing stored
        since the previous retrieve can have been read from anyone."""
        cursors = [
            c for (a, _m, ns), c in self._cursors.items() if a == account and ns == namespace
        ]
        read = self._read_ms.get((account, namespace))
        if cursors and read is not None:
            cursors.append(cursor_encode(read * 1000, bytes(32)))
        return min(cursors, key=cursor_decode, default=None)

    def _prune_recent(self, account: bytes, namespace: int) -> None:
        """Forget hashes that no read can return again: read before every member's window (with
        the look-back window once more for the clocks of the client and the nodes)."""
        starts = [
            int.from_bytes(cursor_decode(c)[:8], "big") // 1000 - 2 * self.look_back_ms
            for (a, _m, ns), c in self._cursors.items()
            if a == account and ns == namespace
        ]
        if not starts:
            return
        read = self._read_ms.get((account, namespace))
        if read is not None:  # where a member read for the first time may start (_best)
            starts.append(read - 2 * self.look_back_ms)
        floor = min(starts)
        recent = self._recent[(account, namespace)]
        for digest in [h for h, t in recent.items() if t < floor]:
            del recent[digest]

    def _checked(
        self,
        raw: list[Any],
        account: bytes,
        namespace: int,
        arrivals: list[Any],
        *,
        keep_raw: bool = False,
    ) -> list[dict[str, Any]]:
        """The messages of a retrieved page that are what they claim: well formed, and their
        hash that of their data; each other one dropped and counted. A message keeps the
        member's ``arrival_ms`` for it if the page gave one per message (``arrivals``)."""
        page = []
        latest = _now_ms() + FUTURE_MARGIN_MS
        if len(arrivals) != len(raw):
            arrivals = [None] * len(raw)
        for message, arrival in zip(raw, arrivals, strict=True):
            checked = _message(message)
            if checked is None:
                self.dropped["malformed"] += 1
                continue
            data, digest = checked
            if message_hash(account, namespace, data) != digest:
                self.dropped["wrong_hash"] += 1
                continue
            if message["timestamp"] > latest:
                self.dropped["future"] += 1
                continue
            kept = {k: message[k] for k in ("hash", "timestamp", "data")}
            if keep_raw:
                kept["raw"] = data  # decoded once, here
            if _is_ms(message.get("expiration")):
                kept["expiration"] = message["expiration"]
            if _is_ms(arrival):
                kept["arrival_ms"] = arrival // 1000
            page.append(kept)
        return page

    async def _write(
        self,
        account: bytes,
        method: str,
        params: dict[str, Any],
        *,
        final: tuple[int, ...] = (),
        check: Callable[[dict[str, Any]], dict[str, Any] | str] | None = None,
    ) -> dict[str, Any]:
        """A write at one swarm member (which replicates or forwards it to the rest), tried at up
        to three members in random order; a status in ``final`` is not tried elsewhere. ``check``
        turns a 200 answer into the result, or says why it does not count (then the next member
        is tried)."""
        members = self.swarm(account)
        self._rng.shuffle(members)
        last = ("unreachable", "no swarm member answered")
        for member in members[:3]:
            try:
                _, status, body = await self._swarm_request(account, method, params, member)
            except NetworkError as exc:
                last = ("unreachable", str(exc))
                continue
            if status == 200 and isinstance(body, dict):
                outcome = check(body) if check is not None else body
                if isinstance(outcome, dict):
                    return outcome
                last = ("unacknowledged", outcome)
                continue
            last = (str(status), _text(body, f"status {status}"))
            if status in final:
                break
        raise StoreError(*last)

    async def swarm_write(
        self, account: bytes, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """A signed write answered for the whole swarm (``revoke_subaccount``, ``expire_all``…),
        done once ``write_quorum`` members of the swarm computed here signed their result."""
        members = [p.ed25519 for p in self.swarm(account)]
        needed = min(self.write_quorum, len(members))

        def signed(body: dict[str, Any]) -> dict[str, Any] | str:
            got = storage_rpc.verify_swarm(method, params, body, members, enough=needed)
            if len(got) < needed:
                return f"acknowledged by {len(got)} of the {needed} members needed"
            return body

        return await self._write(account, method, params, final=(400, 401, 406), check=signed)

    async def delete(self, identity: Identity | storage_rpc.Signer, hashes: list[str]) -> list[str]:
        """Delete the account's messages ``hashes`` from its swarm; the hashes deleted (as the
        member says: of those asked only). A text that is not a message hash is dropped here,
        never signed (counted in :attr:`dropped` as ``bad_hash``)."""
        well_formed = [h for h in hashes if _is_hash(h)]
        self.dropped["bad_hash"] += len(hashes) - len(well_formed)
        valid = list(dict.fromkeys(well_formed))
        if not valid:
            return []
        params = storage_rpc.delete_params(identity, valid)
        account = bytes.fromhex(storage_rpc.signer_of(identity).pubkey)
        body = await self._write(account, "delete", params)
        members = [p.ed25519 for p in self.swarm(account)]
        asked = set(valid)
        deleted: set[str] = set()
        for member in storage_rpc.verify_swarm("delete", params, body, members):
            listed = body["swarm"][member.hex()].get("deleted")
            if isinstance(listed, list):
                deleted.update(h for h in listed if isinstance(h, str) and h in asked)
        return sorted(deleted)


# --- what a node answers, checked before it is used ----------------------------------------------


def _cursor_of(value: object) -> str | None:
    """A cursor a member answered, if well formed and not past the client's clock (with
    margin): a cursor from the future would make the member skip what arrives until then."""
    if not isinstance(value, str):
        return None
    try:
        raw = cursor_decode(value)
    except InvalidInputError:
        return None
    if int.from_bytes(raw[:8], "big") > (_now_ms() + FUTURE_MARGIN_MS) * 1000:
        return None
    return value


def _text(value: object, default: str) -> str:
    """A short text from a node, for an error message: at most 200 characters, one line, every
    character a terminal would act on replaced."""
    return error_line(value[:200]) if isinstance(value, str) else default


def _is_ms(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _message(message: object) -> tuple[bytes, bytes] | None:
    """(data, hash) of a retrieved message with a canonical hash, an integer timestamp and
    base64 data; None for anything else."""
    if not isinstance(message, dict) or not _is_ms(message.get("timestamp")):
        return None
    data, digest = message.get("data"), message.get("hash")
    if not isinstance(data, str) or not isinstance(digest, str):
        return None
    try:
        return binascii.a2b_base64(data, strict_mode=True), hash_from_b64(digest)
    except (binascii.Error, ValueError):  # InvalidInputError is a ValueError
        return None


def _is_hash(value: object) -> bool:
    """Whether ``value`` is a message hash in its one canonical text form."""
    if not isinstance(value, str):
        return False
    try:
        hash_from_b64(value)
    except InvalidInputError:
        return False
    return True
