"""The node's message store: one LMDB environment, one writer thread, group commit.

Layout (``docs/storage.md``, encodings in :mod:`veil.node.keys` and :mod:`veil.protocol.hashes`):
tables in one environment — ``messages`` (account | namespace | arrival | hash → expiry |
timestamp | data), ``expiry`` (expiry | message key), ``hashes`` (hash → message key), ``accounts``
(account → count | bytes), ``auth``, ``tombstones``, ``revocations`` (account | subaccount token →
the signed revocation or unrevocation that decides it), ``revocation_requests`` (account | id → that
signed request), ``revocation_digests`` (account → digest of its revocation state), plus ``meta``
(totals: all messages, and attachment chunks apart).

Writes: every mutation runs in :meth:`MessageStore.write`, called only from the single writer thread
of :class:`veil.node.writer.StoreWriter`, which takes all waiting operations (up to
``commit_max_batch``), applies them in one write transaction and commits it durably (``fsync``)
before any of them is answered. That is group commit: concurrent stores share one disk flush. Reads
run in short read transactions on the caller's thread.

A full map is grown (doubled, up to ``max_map_size_bytes``) between transactions, with readers held
off by :class:`_ReaderGate`, because LMDB may only resize while no transaction is open in the
process; past the maximum, stores answer ``STORAGE_FULL`` and the node keeps serving reads.
"""

from __future__ import annotations

import enum
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import lmdb

from veil.node import keys
from veil.node.config import ConfigError, Limits, StoreSettings
from veil.node.message_rules import ATTACHMENT_ACCOUNT_MAX_MESSAGES
from veil.protocol.attachments import ATTACHMENT_PREFIX
from veil.protocol.hashes import ACCOUNT_LEN, cursor_encode
from veil.protocol.node_rpc import Revocation, revocation_digest
from veil.protocol.replication import Message, StoreAuth
from veil.protocol.storage_rpc import is_public_outbox_namespace

__all__ = ["Message", "MessageStore", "StoreOutcome", "StoredMessage"]

# py-lmdb's stubs type every value as bytes | memoryview; the store opens every transaction with
# buffers=False, so values are bytes; transactions are typed loosely rather than cast everywhere.
Txn = Any

_U64 = struct.Struct(">Q")
_VALUE_HEAD = struct.Struct(">QQ")  # expiry_ms, timestamp_ms; the data follows
_HEAD = _VALUE_HEAD.size
_STATS = struct.Struct(">QQ")
_ACCOUNT = struct.Struct(">QQ32s")  # count, bytes, XOR of the account's message hashes
_NO_HASH = bytes(32)
_TOTALS_KEY = b"totals"
_ATTACHMENT_TOTALS_KEY = b"attachment_totals"
_FORMAT_KEY = b"format"
STORE_FORMAT = b"4"
"""The store's layout: 2 = messages keyed by arrival, the value with the sender's timestamp; 3 =
revocations kept as the owner's signed requests (``revocations``, ``revocation_requests``); 4 =
the totals of attachment chunks (accounts with prefix ``0a``) kept apart. A format-3 store is
brought to 4 when opened (its attachment totals counted once)."""
_ATTACHMENT = bytes([ATTACHMENT_PREFIX])
_DECISION = struct.Struct(">BQQ32s")
"""A token's decision: revoked (1) or not (0), the signed timestamp, when it was applied here (µs,
0 if learnt by anti-entropy), the id of the signed request."""


class StoreOutcome(enum.Enum):
    STORED = "stored"
    ALREADY = "already"
    QUOTA_EXCEEDED = "quota exceeded"
    STORAGE_FULL = "storage full"


class StoredMessage(NamedTuple):
    """A message as read back from the store. A named tuple: a retrieve page builds hundreds, and
    one is built in under half a frozen dataclass's time (docs/performance.md, "Retrieve")."""

    hash: bytes
    timestamp_ms: int
    expiry_ms: int
    data: bytes
    arrival_us: int

    @property
    def cursor(self) -> str:
        return cursor_encode(self.arrival_us, self.hash)


class StorageFullError(Exception):
    """The map cannot grow any further (internal; answered as STORAGE_FULL)."""


class _ReaderGate:
    """Lets many readers in at once, or the writer alone while it resizes the map."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class MessageStore:
    """The LMDB environment and the operations on it. Write methods take the open write txn."""

    def __init__(self, path: Path, settings: StoreSettings, limits: Limits) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.limits = limits
        self._gate = _ReaderGate()
        self.env: Any = lmdb.open(
            str(path),
            map_size=settings.map_size_bytes,
            max_dbs=16,
            sync=True,
            metasync=True,
            readahead=False,
            max_readers=512,
        )
        # LMDB reopens a map at least as large as its data; growth then resumes from there.
        self.env.set_mapsize(max(settings.map_size_bytes, self.env.info()["map_size"]))
        self._messages = self.env.open_db(b"messages")
        self._expiry = self.env.open_db(b"expiry")
        self._hashes = self.env.open_db(b"hashes")
        self._accounts = self.env.open_db(b"accounts")
        self._meta = self.env.open_db(b"meta")
        self._tombstones = self.env.open_db(b"tombstones")
        self._tombstone_expiry = self.env.open_db(b"tombstone_expiry")
        self._auth = self.env.open_db(b"auth")
        self._revocations = self.env.open_db(b"revocations")
        self._revocation_requests = self.env.open_db(b"revocation_requests")
        self._revocation_digests = self.env.open_db(b"revocation_digests")
        self.env.reader_check()
        try:
            self._check_format()
        except ConfigError:
            self.env.close()
            raise

    def _check_format(self) -> None:
        """Refuse a store written in another layout (an older Veil's) rather than misread it."""
        with self.env.begin(write=True) as txn:
            found = txn.get(_FORMAT_KEY, db=self._meta)
            if found is None and txn.get(_TOTALS_KEY, db=self._meta) is None:
                txn.put(_FORMAT_KEY, STORE_FORMAT, db=self._meta)
            elif found == b"3":
                self._count_attachments(txn)
                txn.put(_FORMAT_KEY, STORE_FORMAT, db=self._meta)
            elif found != STORE_FORMAT:
                raise ConfigError(
                    "the message store in the data directory was written by another version of "
                    "Veil (store format changed); start the node on an empty data directory"
                )

    def _count_attachments(self, txn: Txn) -> None:
        count = size = 0
        for _key, value in self._under(txn, _ATTACHMENT):
            count += 1
            size += len(value) - _HEAD
        txn.put(_ATTACHMENT_TOTALS_KEY, _STATS.pack(count, size), db=self._meta)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()

    # --- transactions -----------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Txn]:
        with self._gate.reading(), self.env.begin(buffers=False) as txn:
            yield txn

    def write(self, ops: Callable[[Txn], Any]) -> Any:
        """Run ``ops`` in one durable write transaction, growing the map if it fills.

        Raises :class:`StorageFullError` when the map is at its maximum size and still full.
        """
        while True:
            try:
                with self._gate.reading(), self.env.begin(write=True) as txn:
                    return ops(txn)
            except lmdb.MapFullError:
                self._grow()

    def _grow(self) -> None:
        current = self.env.info()["map_size"]
        if current >= self.settings.max_map_size_bytes:
            raise StorageFullError
        new_size = min(current * 2, self.settings.max_map_size_bytes)
        with self._gate.exclusive():
            self.env.set_mapsize(new_size)

    # --- write operations (run inside `write`) ------------------------------------------------

    def put(self, txn: Txn, message: Message) -> StoreOutcome:
        """Hold ``message`` under its arrival time (``arrival_us``, which the caller sets). A
        message held already keeps its place and takes the later of the two expiries. A store to
        a public outbox namespace replaces what that namespace held."""
        held = txn.get(message.hash, db=self._hashes)
        if held is not None:
            value = txn.get(held, db=self._messages)
            if value is not None:
                (old,) = _U64.unpack_from(value)
                if message.expiry_ms > old:
                    self._set_expiry(txn, held, value, old, message.expiry_ms)
            return StoreOutcome.ALREADY
        tombstone = txn.get(message.hash, db=self._tombstones)
        if tombstone is not None and tombstone[8:] in (b"", message.account):
            return StoreOutcome.ALREADY  # deleted by its owner: never brought back
        size = len(message.data)
        attachment = message.account[:1] == _ATTACHMENT
        count, used, digest = _account_stats(txn.get(message.account, db=self._accounts))
        most = ATTACHMENT_ACCOUNT_MAX_MESSAGES if attachment else self.limits.account_max_messages
        if count + 1 > most or used + size > self.limits.account_max_bytes:
            return StoreOutcome.QUOTA_EXCEEDED
        total_count, total_bytes = _stats(txn.get(_TOTALS_KEY, db=self._meta))
        if total_bytes + size > self.limits.storage_max_bytes:
            return StoreOutcome.STORAGE_FULL
        if attachment:
            chunks, chunk_bytes = _stats(txn.get(_ATTACHMENT_TOTALS_KEY, db=self._meta))
            if chunk_bytes + size > self.limits.attachments_max_bytes:
                return StoreOutcome.STORAGE_FULL
            txn.put(
                _ATTACHMENT_TOTALS_KEY, _STATS.pack(chunks + 1, chunk_bytes + size), db=self._meta
            )
        if is_public_outbox_namespace(message.namespace):
            prefix = keys.namespace_prefix(message.account, message.namespace)
            self._remove_prefix(txn, prefix, tombstone=True)
            count, used, digest = _account_stats(txn.get(message.account, db=self._accounts))
            total_count, total_bytes = _stats(txn.get(_TOTALS_KEY, db=self._meta))
        key = keys.message_key(message.account, message.namespace, message.arrival_us, message.hash)
        head = _VALUE_HEAD.pack(message.expiry_ms, message.timestamp_ms)
        txn.put(key, head + message.data, db=self._messages)
        txn.put(keys.expiry_key(message.expiry_ms, key), b"", db=self._expiry)
        txn.put(message.hash, key, db=self._hashes)
        if message.auth is not None:
            txn.put(message.hash, _encode_auth(message.auth), db=self._auth)
        txn.put(
            message.account,
            _ACCOUNT.pack(count + 1, used + size, _xor(digest, message.hash)),
            db=self._accounts,
        )
        txn.put(_TOTALS_KEY, _STATS.pack(total_count + 1, total_bytes + size), db=self._meta)
        return StoreOutcome.STORED

    def _remove(self, txn: Txn, key: bytes, value: bytes, *, tombstone: bool = False) -> None:
        """Remove a message; a ``tombstone`` keeps its hash until its expiry so that no copy
        from another node brings it back."""
        account, _ns, _ts, digest = keys.split_message_key(key)
        (expiry_ms,) = _U64.unpack_from(value)
        size = len(value) - _HEAD
        txn.delete(key, db=self._messages)
        txn.delete(keys.expiry_key(expiry_ms, key), db=self._expiry)
        txn.delete(digest, db=self._hashes)
        txn.delete(digest, db=self._auth)
        if tombstone:
            self._tombstone(txn, account, digest, expiry_ms)
        count, used, xor = _account_stats(txn.get(account, db=self._accounts))
        if count <= 1:
            txn.delete(account, db=self._accounts)
        else:
            txn.put(
                account,
                _ACCOUNT.pack(count - 1, max(0, used - size), _xor(xor, digest)),
                db=self._accounts,
            )
        total_count, total_bytes = _stats(txn.get(_TOTALS_KEY, db=self._meta))
        txn.put(
            _TOTALS_KEY,
            _STATS.pack(max(0, total_count - 1), max(0, total_bytes - size)),
            db=self._meta,
        )
        if account[:1] == _ATTACHMENT:
            chunks, chunk_bytes = _stats(txn.get(_ATTACHMENT_TOTALS_KEY, db=self._meta))
            txn.put(
                _ATTACHMENT_TOTALS_KEY,
                _STATS.pack(max(0, chunks - 1), max(0, chunk_bytes - size)),
                db=self._meta,
            )

    def _tombstone(self, txn: Txn, account: bytes, digest: bytes, expiry_ms: int) -> None:
        txn.put(digest, _U64.pack(expiry_ms) + account, db=self._tombstones)
        txn.put(_U64.pack(expiry_ms) + digest, b"", db=self._tombstone_expiry)

    def delete_hashes(
        self, txn: Txn, account: bytes, hashes: list[bytes], *, now_ms: int
    ) -> list[bytes]:
        """Delete the account's messages among ``hashes``; return the hashes deleted.

        A hash this node does not hold gets a tombstone too (for the account, until the longest
        lifetime a message stored now could have): the delete may have overtaken the message's
        replication to this node, and the copy that arrives later must not bring it back.
        """
        deleted = []
        for digest in hashes:
            found = self._owned(txn, account, digest)
            if found is not None:
                self._remove(txn, *found, tombstone=True)
                deleted.append(digest)
            elif txn.get(digest, db=self._hashes) is None:
                horizon = now_ms + self.limits.max_ttl_ms + self.limits.clock_skew_ms
                self._tombstone(txn, account, digest, horizon)
        return deleted

    def _owned(self, txn: Txn, account: bytes, digest: bytes) -> tuple[bytes, bytes] | None:
        """(message key, value) of the message ``digest`` if it belongs to ``account``."""
        key = txn.get(digest, db=self._hashes)
        if key is None or key[:ACCOUNT_LEN] != account:
            return None
        value = txn.get(key, db=self._messages)
        return None if value is None else (key, value)

    def delete_all(
        self, txn: Txn, account: bytes, namespace: int | None
    ) -> list[tuple[int, bytes]]:
        """Delete every message of the account (in one namespace, or all if ``None``); returns
        (namespace, hash) of each."""
        prefix = _scope(account, namespace)
        removed = self._remove_prefix(txn, prefix, tombstone=True)
        return [(split[1], split[3]) for split in map(keys.split_message_key, removed)]

    def _remove_prefix(self, txn: Txn, prefix: bytes, *, tombstone: bool) -> list[bytes]:
        """Remove every message whose key starts with ``prefix``; return their keys."""
        doomed = self._under(txn, prefix)
        for key, value in doomed:
            self._remove(txn, key, value, tombstone=tombstone)
        return [key for key, _ in doomed]

    def update_expiry(
        self,
        txn: Txn,
        account: bytes,
        hashes: list[bytes],
        expiries: list[int],
        mode: str,
    ) -> list[tuple[bytes, int]]:
        """Give the account's messages ``hashes`` a new expiry: one for all (``expiries`` of one)
        or one each. ``mode`` "extend" changes only those that expire earlier, "shorten" only
        those that expire later, "" any. Returns (hash, new expiry) of each message changed."""
        updated: list[tuple[bytes, int]] = []
        for index, digest in enumerate(hashes):
            new = expiries[0] if len(expiries) == 1 else expiries[index]
            found = self._owned(txn, account, digest)
            if found is None:
                continue
            key, value = found
            (old,) = _U64.unpack_from(value)
            if (mode == "extend" and not old < new) or (mode == "shorten" and not old > new):
                continue
            self._set_expiry(txn, key, value, old, new)
            updated.append((digest, new))
        return updated

    def _set_expiry(self, txn: Txn, key: bytes, value: bytes, old: int, new: int) -> None:
        if new != old:
            txn.delete(keys.expiry_key(old, key), db=self._expiry)
            txn.put(keys.expiry_key(new, key), b"", db=self._expiry)
            txn.put(key, _U64.pack(new) + value[8:], db=self._messages)

    def expire_all(
        self, txn: Txn, account: bytes, namespace: int | None, expiry_ms: int
    ) -> list[tuple[int, bytes]]:
        """Bring forward to ``expiry_ms`` every message of the account (in one namespace, or all
        if ``None``) that expires later; returns (namespace, hash) of each."""
        prefix = _scope(account, namespace)
        changed = []
        for key, value in self._under(txn, prefix):
            (old,) = _U64.unpack_from(value)
            if old > expiry_ms:
                self._set_expiry(txn, key, value, old, expiry_ms)
                _account, ns, _arrival, digest = keys.split_message_key(key)
                changed.append((ns, digest))
        return changed

    def delete_before(
        self, txn: Txn, account: bytes, namespace: int | None, before_ms: int
    ) -> list[tuple[int, bytes]]:
        """Delete the account's messages (in one namespace, or all if ``None``) whose timestamp
        is at or before ``before_ms``; returns (namespace, hash) of each."""
        prefix = _scope(account, namespace)
        doomed = []
        for key, value in self._under(txn, prefix):
            (timestamp_ms,) = _U64.unpack_from(value, 8)
            if timestamp_ms <= before_ms:
                doomed.append((key, value))
        out = []
        for key, value in doomed:
            self._remove(txn, key, value, tombstone=True)
            _account, ns, _arrival, digest = keys.split_message_key(key)
            out.append((ns, digest))
        return out

    def _under(self, txn: Txn, prefix: bytes, db: Any = None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of ``db`` (the messages table by default) under ``prefix``."""
        out = []
        cursor = txn.cursor(db=self._messages if db is None else db)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                out.append((bytes(key), bytes(value)))
        return out

    # --- revocations: one signed decision per (account, subaccount token) ----------------------

    def revoke(self, txn: Txn, account: bytes, request: Revocation, applied_us: int) -> int:
        """Apply a client's signed ``revoke_subaccount`` or ``unrevoke_subaccount`` (verified by
        the caller) as Session's storage servers do: it decides every token it names, whatever
        decided it before. ``applied_us`` (> 0, increasing) orders it among those applied here.
        Returns how many of its tokens were revoked before."""
        was_revoked, _changed = self._decide(txn, account, request, applied_us, merge=False)
        return was_revoked

    def merge_revocations(self, txn: Txn, account: bytes, requests: list[Revocation]) -> int:
        """Take signed revocations learnt from another member (verified by the caller): each
        decides a token only if it is later than the token's decision here — by signed
        timestamp, then a revocation before an unrevocation, then the larger id — so that every
        member converges on the same decision whatever order it learnt them in. Returns how many
        changed a token's decision."""
        return sum(self._decide(txn, account, r, 0, merge=True)[1] for r in requests)

    def _decide(
        self, txn: Txn, account: bytes, request: Revocation, applied_us: int, *, merge: bool
    ) -> tuple[int, int]:
        """(tokens revoked before, tokens whose decision changed)."""
        rid = request.id
        value = _DECISION.pack(int(request.revoke), request.timestamp_ms, applied_us, rid)
        later = (request.timestamp_ms, int(request.revoke), rid)
        was_revoked = changed = 0
        for token in dict.fromkeys(request.tokens):
            key = account + token
            held = txn.get(key, db=self._revocations)
            if held is not None:
                kind, timestamp_ms, _applied, held_id = _DECISION.unpack(held)
                was_revoked += kind
                if held_id == rid or (merge and (timestamp_ms, kind, bytes(held_id)) >= later):
                    continue
            txn.put(key, value, db=self._revocations)
            changed += 1
        if changed:
            txn.put(account + rid, request.canonical(), db=self._revocation_requests)
            self._trim_revocations(txn, account)
        return was_revoked, changed

    def _trim_revocations(self, txn: Txn, account: bytes) -> None:
        """Keep the account's ``account_max_revoked`` latest revoked tokens and
        ``account_max_unrevoked`` latest unrevoked ones (by signed timestamp, then by when they
        were applied here), the requests that still decide a token, and the account's digest."""
        kinds: tuple[list[Any], list[Any]] = ([], [])
        for key, value in self._under(txn, account, self._revocations):
            kind, timestamp_ms, applied_us, rid = _DECISION.unpack(value)
            kinds[kind].append((timestamp_ms, applied_us, bytes(rid), key))
        caps = (self.limits.account_max_unrevoked, self.limits.account_max_revoked)
        for held, cap in zip(kinds, caps, strict=True):
            held.sort()
            excess = max(0, len(held) - cap)
            for *_order, key in held[:excess]:
                txn.delete(key, db=self._revocations)
            del held[:excess]
        kept = {rid for held in kinds for _ts, _applied, rid, _key in held}
        for key, _ in self._under(txn, account, self._revocation_requests):
            if key[ACCOUNT_LEN:] not in kept:
                txn.delete(key, db=self._revocation_requests)
        entries = sorted(
            (key[ACCOUNT_LEN:], bool(kind), timestamp_ms, rid)
            for kind, held in enumerate(kinds)
            for timestamp_ms, _applied, rid, key in held
        )
        if entries:
            txn.put(account, revocation_digest(entries), db=self._revocation_digests)
        else:
            txn.delete(account, db=self._revocation_digests)

    def is_revoked(self, account: bytes, token: bytes) -> bool:
        with self.read() as txn:
            held = txn.get(account + token, db=self._revocations)
        return held is not None and held[0] == 1

    def revocation_digests(self, accounts: list[bytes]) -> dict[bytes, bytes]:
        """The revocation-state digest of each of ``accounts`` that has any."""
        with self.read() as txn:
            if txn.stat(self._revocation_digests)["entries"] < len(accounts):
                wanted = set(accounts)  # few accounts have any: read them all instead
                held = txn.cursor(db=self._revocation_digests).iternext()
                return {bytes(a): bytes(digest) for a, digest in held if a in wanted}
            found = ((a, txn.get(a, db=self._revocation_digests)) for a in accounts)
            return {account: bytes(digest) for account, digest in found if digest is not None}

    def revocation_accounts(self) -> list[bytes]:
        """The accounts with any revocation state."""
        with self.read() as txn:
            cursor = txn.cursor(db=self._revocation_digests)
            return [bytes(key) for key in cursor.iternext(values=False)]

    def revocations_of(self, account: bytes) -> list[Revocation]:
        """The signed requests that decide the account's tokens, as their owner signed them."""
        with self.read() as txn:
            held = self._under(txn, account, self._revocation_requests)
        found = (Revocation.from_canonical(value) for _key, value in held)
        return [r for r in found if r is not None]

    def revocation_decisions(self, account: bytes) -> dict[bytes, tuple[bool, int, bytes]]:
        """Each token's decision: (revoked, signed timestamp, request id)."""
        with self.read() as txn:
            held = self._under(txn, account, self._revocations)
        out = {}
        for key, value in held:
            kind, timestamp_ms, _applied, rid = _DECISION.unpack(value)
            out[key[ACCOUNT_LEN:]] = (bool(kind), int(timestamp_ms), bytes(rid))
        return out

    def sweep(self, txn: Txn, now_ms: int, limit: int) -> int:
        """Remove up to ``limit`` messages whose expiry is at or before ``now_ms``."""
        doomed: list[bytes] = []
        cursor = txn.cursor(db=self._expiry)
        if cursor.first():
            for ekey in cursor.iternext(values=False):
                (expiry_ms,) = _U64.unpack_from(ekey)
                if expiry_ms > now_ms or len(doomed) >= limit:
                    break
                doomed.append(ekey[8:])
        for key in doomed:
            value = txn.get(key, db=self._messages)
            if value is not None:
                self._remove(txn, key, value)
        tombstones: list[bytes] = []
        cursor = txn.cursor(db=self._tombstone_expiry)
        if cursor.first():
            for tkey in cursor.iternext(values=False):
                if _U64.unpack_from(tkey)[0] > now_ms or len(tombstones) >= limit:
                    break
                tombstones.append(tkey)
        for tkey in tombstones:
            txn.delete(tkey, db=self._tombstone_expiry)
            txn.delete(tkey[8:], db=self._tombstones)
        return len(doomed)

    def next_expiry_ms(self) -> int | None:
        """The earliest expiry of a message or tombstone held (``None`` if there is none): what
        tells the sweep, from one read, whether a write transaction has anything to remove."""
        earliest: list[int] = []
        with self.read() as txn:
            for db in (self._expiry, self._tombstone_expiry):
                cursor = txn.cursor(db=db)
                if cursor.first():
                    earliest.append(_U64.unpack_from(cursor.key())[0])
        return min(earliest, default=None)

    def drop_account(self, txn: Txn, account: bytes) -> int:
        """Remove every message of an account this node no longer serves (no tombstones)."""
        return len(self._remove_prefix(txn, account, tombstone=False))

    # --- reads --------------------------------------------------------------------------------

    def retrieve(
        self,
        account: bytes,
        *,
        namespace: int,
        after: bytes | None,
        now_ms: int,
        max_messages: int,
        max_bytes: int,
    ) -> tuple[list[StoredMessage], bool]:
        """Messages of one namespace after the cursor ``after`` (40 raw bytes), in cursor order.

        Expired messages are skipped even before the sweeper removes them. ``max_bytes`` counts
        each message as Session's storage servers do (:func:`answer_size`). Returns the messages
        and whether more wait. At least one message is returned if any waits, whatever its size.
        """
        prefix = keys.namespace_prefix(account, namespace)
        start = prefix + after if after is not None else prefix
        out: list[StoredMessage] = []
        used = 0
        with self.read() as txn:
            cursor = txn.cursor(db=self._messages)
            if not cursor.set_range(start):
                return out, False
            for key, value in cursor:
                if not key.startswith(prefix):
                    return out, False
                if key == start:
                    continue
                expiry_ms, timestamp_ms = _VALUE_HEAD.unpack_from(value)
                if expiry_ms <= now_ms:
                    continue
                size = (len(value) - _HEAD) * 4 // 3 + _ANSWER_OVERHEAD  # answer_size, inlined
                if out and (len(out) >= max_messages or used + size > max_bytes):
                    return out, True
                (arrival_us,) = _U64.unpack_from(key, keys.NAMESPACE_PREFIX_LEN)
                out.append(
                    StoredMessage(
                        hash=key[keys.NAMESPACE_PREFIX_LEN + 8 :],
                        timestamp_ms=timestamp_ms,
                        expiry_ms=expiry_ms,
                        data=value[_HEAD:],
                        arrival_us=arrival_us,
                    )
                )
                used += size
        return out, False

    def cursor_of_hash(self, account: bytes, namespace: int, digest: bytes) -> bytes | None:
        """The raw cursor of a message this node holds, for clients that send ``last_hash``."""
        with self.read() as txn:
            key = txn.get(digest, db=self._hashes)
        if key is None or not key.startswith(keys.namespace_prefix(account, namespace)):
            return None
        return bytes(key[keys.NAMESPACE_PREFIX_LEN :])

    def expiries(self, account: bytes, hashes: list[bytes]) -> dict[bytes, int]:
        """The expiry of each of the account's messages among ``hashes`` that the node holds."""
        result = {}
        with self.read() as txn:
            for digest in hashes:
                found = self._owned(txn, account, digest)
                if found is not None:
                    result[digest] = _U64.unpack_from(found[1])[0]
        return result

    # --- reads for replication and anti-entropy ------------------------------------------------

    def held_accounts(self) -> list[bytes]:
        with self.read() as txn:
            return [bytes(key) for key in txn.cursor(db=self._accounts).iternext(values=False)]

    def summaries(self, accounts: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        """(message count, XOR of message hashes) of each account held, for comparison."""
        result = {}
        with self.read() as txn:
            for account in accounts:
                raw = txn.get(account, db=self._accounts)
                if raw is not None:
                    count, _used, digest = _account_stats(raw)
                    result[account] = (count, digest)
        return result

    def hashes_of(self, account: bytes) -> list[bytes]:
        """The hashes of every message of an account, all namespaces."""
        out = []
        with self.read() as txn:
            cursor = txn.cursor(db=self._messages)
            if cursor.set_range(account):
                for key in cursor.iternext(values=False):
                    if not key.startswith(account):
                        break
                    out.append(bytes(key[keys.NAMESPACE_PREFIX_LEN + 8 :]))
        return out

    def messages_of(self, hashes: list[bytes]) -> list[Message]:
        """The messages held among ``hashes``, whole."""
        out = []
        with self.read() as txn:
            for digest in hashes:
                key = txn.get(digest, db=self._hashes)
                if key is None:
                    continue
                value = txn.get(key, db=self._messages)
                if value is None:
                    continue
                account, namespace, arrival_us, _ = keys.split_message_key(key)
                expiry_ms, timestamp_ms = _VALUE_HEAD.unpack_from(value)
                auth = _decode_auth(txn.get(digest, db=self._auth))
                out.append(
                    Message(
                        account,
                        namespace,
                        timestamp_ms,
                        expiry_ms,
                        value[_HEAD:],
                        digest,
                        auth,
                        arrival_us,
                    )
                )
        return out

    def totals(self) -> tuple[int, int]:
        """(messages, bytes of message data) held."""
        with self.read() as txn:
            return _stats(txn.get(_TOTALS_KEY, db=self._meta))

    def attachment_totals(self) -> tuple[int, int]:
        """(chunks, bytes of chunk data) held: messages of attachment accounts (prefix 0a)."""
        with self.read() as txn:
            return _stats(txn.get(_ATTACHMENT_TOTALS_KEY, db=self._meta))

    def map_bytes(self) -> tuple[int, int]:
        """(bytes of the map in use, map size)."""
        info = self.env.info()
        stat = self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"], info["map_size"]

    def clear_stale_readers(self) -> int:
        return int(self.env.reader_check())


_AUTH = struct.Struct(">Q32s64s")  # sig_timestamp_ms, signer, signature; then token ‖ token_sig
_TOKEN_LEN = 36 + 64


_ANSWER_OVERHEAD = 43 + 100


def _scope(account: bytes, namespace: int | None) -> bytes:
    """The key prefix of an account's messages in one namespace, or in all (``None``)."""
    return account if namespace is None else keys.namespace_prefix(account, namespace)


def answer_size(data_len: int) -> int:
    """What one message counts against a retrieve's size budget: its data in base64, its hash
    and 100 bytes of JSON around them, as Session's storage servers count it."""
    return data_len * 4 // 3 + _ANSWER_OVERHEAD


def _encode_auth(auth: StoreAuth) -> bytes:
    head = _AUTH.pack(auth.sig_timestamp_ms, auth.signer, auth.signature)
    return head + auth.token + auth.token_signature if auth.token else head


def _decode_auth(raw: bytes | None) -> StoreAuth | None:
    if raw is None or len(raw) not in (_AUTH.size, _AUTH.size + _TOKEN_LEN):
        return None
    sig_timestamp_ms, signer, signature = _AUTH.unpack_from(raw)
    token = bytes(raw[_AUTH.size : _AUTH.size + 36])
    return StoreAuth(
        int(sig_timestamp_ms), bytes(signer), bytes(signature), token, bytes(raw[_AUTH.size + 36 :])
    )


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


def _account_stats(raw: bytes | None) -> tuple[int, int, bytes]:
    if raw is None:
        return 0, 0, _NO_HASH
    count, used, digest = _ACCOUNT.unpack(raw)
    return int(count), int(used), bytes(digest)


def _stats(raw: bytes | None) -> tuple[int, int]:
    if raw is None:
        return 0, 0
    count, used = _STATS.unpack(raw)
    return int(count), int(used)
