"""The node's message store (LMDB) and its group-commit writer, used directly, without HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from node_helpers import (
    SMALL_MAP,
    HttpClient,
    make_config,
    make_message,
    now_ms,
    run,
    running_node,
    until,
)
from veil import _core
from veil.identity import Identity
from veil.node import keys
from veil.node.config import (
    ConfigError,
    Limits,
    NodeConfig,
    StoreSettings,
    load_config,
    render_config,
)
from veil.node.store import (
    Message,
    MessageStore,
    StorageFullError,
    StoredMessage,
    StoreOutcome,
    Txn,
)
from veil.node.threads import WRITER
from veil.node.writer import ApplyTurn, StorageFull, StoreWriter
from veil.protocol.hashes import cursor_decode, message_hash

ALICE = b"\x05" + bytes(range(32))
BOB = b"\x05" + bytes(range(1, 33))
KIB = 1024
BIG = 1 << 40  # "now" for reads that should see every message regardless of expiry tricks


def open_store(
    path: Path, *, limits: Limits | None = None, settings: StoreSettings | None = None
) -> MessageStore:
    return MessageStore(
        path,
        settings if settings is not None else StoreSettings(map_size_bytes=SMALL_MAP),
        limits if limits is not None else Limits(),
    )


def put(store: MessageStore, message: Message) -> StoreOutcome:
    outcome: StoreOutcome = store.write(lambda txn: store.put(txn, message))
    return outcome


def put_op(store: MessageStore, message: Message) -> Callable[[Txn], StoreOutcome]:
    return lambda txn: store.put(txn, message)


def read_all(
    store: MessageStore, account: bytes, namespace: int = 0, now: int | None = None
) -> list[StoredMessage]:
    messages, more = store.retrieve(
        account,
        namespace=namespace,
        after=None,
        now_ms=now_ms() if now is None else now,
        max_messages=1_000_000,
        max_bytes=1 << 40,
    )
    assert not more
    return messages


def order_key(message: Message | StoredMessage) -> tuple[int, bytes]:
    return message.arrival_us, message.hash


def test_put_then_retrieve_in_arrival_then_hash_order_whatever_the_timestamps(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path)
    base = now_ms()
    rng = random.Random(1)
    # Several messages share an arrival, so the hash decides their order; the timestamps run
    # against the arrivals, so a store ordering by timestamp would give the reverse.
    messages = [
        make_message(
            ALICE,
            f"m{i}".encode(),
            timestamp_ms=base - i,
            arrival_us=base * 1000 + rng.randrange(5),
        )
        for i in range(40)
    ]
    for message in rng.sample(messages, len(messages)):
        assert put(store, message) is StoreOutcome.STORED
    got = read_all(store, ALICE)
    expected = sorted(messages, key=order_key)
    assert [(m.arrival_us, m.timestamp_ms, m.hash, m.data, m.expiry_ms) for m in got] == [
        (m.arrival_us, m.timestamp_ms, m.hash, m.data, m.expiry_ms) for m in expected
    ]
    assert [m.hash for m in got] != [m.hash for m in sorted(messages, key=lambda m: m.timestamp_ms)]
    assert read_all(store, BOB) == []
    assert read_all(store, ALICE, namespace=1) == []
    store.close()


def test_storing_the_same_message_twice_is_already_and_stored_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    message = make_message(ALICE, b"hello")
    assert put(store, message) is StoreOutcome.STORED
    assert put(store, message) is StoreOutcome.ALREADY
    # The hash names the message by account, namespace and data; a later copy is the same one.
    # It keeps the first copy's place (arrival) and takes the later of the two expiries.
    later = make_message(
        ALICE, b"hello", timestamp_ms=message.timestamp_ms + 5, arrival_us=message.arrival_us + 9
    )
    assert put(store, later) is StoreOutcome.ALREADY
    [held] = read_all(store, ALICE)
    assert (held.hash, held.arrival_us, held.timestamp_ms) == (
        message.hash,
        message.arrival_us,
        message.timestamp_ms,
    )
    assert held.expiry_ms == later.expiry_ms > message.expiry_ms
    # An earlier expiry in a copy never shortens what the node holds.
    assert put(store, message) is StoreOutcome.ALREADY
    assert store.expiries(ALICE, [message.hash]) == {message.hash: later.expiry_ms}
    assert store.totals() == (1, 5)
    store.close()


def test_a_store_to_a_public_outbox_replaces_what_it_held(tmp_path: Path) -> None:
    """Namespaces -1, -21, -41, ... hold one message at a time; other namespaces accumulate."""
    store = open_store(tmp_path)
    for ns in (-1, -21):
        first = make_message(ALICE, b"first %d" % ns, namespace=ns)
        second = make_message(ALICE, b"second %d" % ns, namespace=ns)
        assert put(store, first) is StoreOutcome.STORED
        assert put(store, second) is StoreOutcome.STORED
        assert [m.hash for m in read_all(store, ALICE, ns)] == [second.hash]
    kept = [make_message(ALICE, b"kept %d" % i, namespace=-2) for i in range(2)]
    for message in kept:
        assert put(store, message) is StoreOutcome.STORED
    assert len(read_all(store, ALICE, -2)) == 2
    assert store.totals() == (4, len(b"second -1") + len(b"second -21") + 2 * len(b"kept 0"))
    store.close()


def test_account_message_quota(tmp_path: Path) -> None:
    store = open_store(tmp_path, limits=Limits(account_max_messages=3))
    for i in range(3):
        assert put(store, make_message(ALICE, b"a%d" % i)) is StoreOutcome.STORED
    assert put(store, make_message(ALICE, b"a3")) is StoreOutcome.QUOTA_EXCEEDED
    assert put(store, make_message(ALICE, b"x", namespace=7)) is StoreOutcome.QUOTA_EXCEEDED
    for i in range(3):
        assert put(store, make_message(BOB, b"b%d" % i)) is StoreOutcome.STORED
    assert len(read_all(store, ALICE)) == 3
    assert len(read_all(store, BOB)) == 3
    assert store.totals() == (6, 12)
    store.close()


def test_account_bytes_quota(tmp_path: Path) -> None:
    store = open_store(tmp_path, limits=Limits(account_max_bytes=1000))
    t = now_ms()
    # Arrivals in the order of the puts, so the retrieve below lists them in that order.
    first = make_message(ALICE, b"a" * 600, arrival_us=t * 1000)
    assert put(store, first) is StoreOutcome.STORED
    too_big = make_message(ALICE, b"b" * 401, arrival_us=t * 1000 + 1)
    assert put(store, too_big) is StoreOutcome.QUOTA_EXCEEDED
    assert (
        put(store, make_message(ALICE, b"c" * 400, arrival_us=t * 1000 + 2)) is StoreOutcome.STORED
    )
    assert put(store, make_message(BOB, b"d" * 1000)) is StoreOutcome.STORED
    assert [len(m.data) for m in read_all(store, ALICE)] == [600, 400]
    assert store.totals() == (3, 2000)
    store.close()


def test_global_storage_cap_answers_storage_full_and_reads_work(tmp_path: Path) -> None:
    store = open_store(tmp_path, limits=Limits(storage_max_bytes=1500))
    kept = make_message(ALICE, b"a" * 1000)
    assert put(store, kept) is StoreOutcome.STORED
    assert put(store, make_message(BOB, b"b" * 1000)) is StoreOutcome.STORAGE_FULL
    assert put(store, make_message(BOB, b"b" * 500)) is StoreOutcome.STORED
    assert put(store, make_message(BOB, b"c")) is StoreOutcome.STORAGE_FULL
    assert [m.hash for m in read_all(store, ALICE)] == [kept.hash]
    assert store.totals() == (2, 1500)
    store.close()


def test_map_grows_from_tiny_and_keeps_every_message(tmp_path: Path) -> None:
    settings = StoreSettings(map_size_bytes=64 * KIB, max_map_size_bytes=16 * 1024 * KIB)
    store = open_store(tmp_path / "s", settings=settings)
    messages = [make_message(ALICE, i.to_bytes(4, "big") * 256) for i in range(400)]  # 1 KiB each
    stop = threading.Event()
    reads: list[int] = []

    def reader() -> None:  # reads go on while the writer grows the map
        while not stop.is_set():
            reads.append(len(read_all(store, ALICE)))

    async def main() -> list[StoreOutcome]:
        writer = StoreWriter(store)
        writer.start()
        outcomes = []
        for start in range(0, len(messages), 50):
            chunk = messages[start : start + 50]
            outcomes += await asyncio.gather(*(writer.submit(put_op(store, m)) for m in chunk))
        await writer.close()
        return outcomes

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        outcomes = run(main())
    finally:
        stop.set()
        thread.join()
    assert outcomes == [StoreOutcome.STORED] * len(messages)
    assert reads == sorted(reads)  # a reader never saw messages disappear
    _used, size = store.map_bytes()
    assert size > 64 * KIB
    got = read_all(store, ALICE)
    assert sorted(m.hash for m in got) == sorted(m.hash for m in messages)
    store.close()
    # Reopened with the small initial setting, the map still holds every message, and grows on.
    reopened = open_store(tmp_path / "s", settings=settings)
    used, size = reopened.map_bytes()
    assert size >= used > 64 * KIB
    assert len(read_all(reopened, ALICE)) == len(messages)
    more = [make_message(ALICE, b"after reopen %d" % i + b"x" * KIB) for i in range(200)]
    for message in more:
        assert put(reopened, message) is StoreOutcome.STORED
    assert len(read_all(reopened, ALICE)) == len(messages) + len(more)
    reopened.close()


def test_signed_writes_are_signed_on_the_writer_thread_once_durable(tmp_path: Path) -> None:
    """``submit_signed``: the payloads' signatures come with the outcome, made after the commit
    on the writer's thread; a full map answers no signature; a failing signer fails only its
    own job, and its write stays committed."""
    settings = StoreSettings(map_size_bytes=128 * KIB, max_map_size_bytes=128 * KIB)
    store = open_store(tmp_path, settings=settings)
    key = Identity.generate()
    signed_on: list[str] = []
    kernel_names: list[str] = []  # as `top -H` and `veil bench network` see the thread
    committed_before_signing: list[bool] = []

    def sign_many(payloads: list[bytes]) -> list[bytes]:
        signed_on.append(threading.current_thread().name)
        kernel_names.append(Path("/proc/thread-self/comm").read_text("ascii").strip())
        committed_before_signing.append(bool(store.messages_of([first.hash])))
        return key.sign_many(payloads)

    def broken(payloads: list[bytes]) -> list[bytes]:
        raise RuntimeError("no signer")

    first = make_message(ALICE, b"first")
    second = make_message(ALICE, b"second")

    async def main() -> None:
        writer = StoreWriter(store)
        writer.start()
        outcome, signatures = await writer.submit_signed(
            put_op(store, first), sign_many, [b"one", b"two"]
        )
        assert outcome is StoreOutcome.STORED
        assert [
            _core.ed25519_verify(key.ed25519_public_key, p, s)
            for p, s in zip([b"one", b"two"], signatures, strict=True)
        ] == [True, True]
        with pytest.raises(RuntimeError):
            await writer.submit_signed(put_op(store, second), broken, [b"x"])
        assert store.messages_of([second.hash])  # the commit stands
        for i in range(1000):  # fill the map: the full answer carries no signature
            message = make_message(BOB, bytes([i % 256]) * 2 * KIB + i.to_bytes(4, "big"))
            answer = await writer.submit_signed(
                put_op(store, message), sign_many, [b"r"], if_full=StoreOutcome.STORAGE_FULL
            )
            if answer[0] is not StoreOutcome.STORED:
                break
        assert answer == (StoreOutcome.STORAGE_FULL, [])
        await writer.close()

    run(main())
    assert set(signed_on) == {"veil-store-writer"}
    assert set(kernel_names) == {WRITER}
    assert all(committed_before_signing)
    store.close()


def test_a_commits_receipts_are_signed_in_one_call_each_job_getting_its_own(
    tmp_path: Path,
) -> None:
    """The jobs of one commit that share a signer are signed in one call, after the commit, and
    each gets the signatures of its own payloads, in order."""
    settings = StoreSettings(map_size_bytes=SMALL_MAP, commit_max_delay_ms=200.0)
    store = open_store(tmp_path, settings=settings)
    key = Identity.generate()
    calls: list[list[bytes]] = []

    def sign_many(payloads: list[bytes]) -> list[bytes]:
        calls.append(list(payloads))
        return key.sign_many(payloads)

    payloads = [[b"a"], [b"b1", b"b2", b"b3"], [], [b"d1", b"d2"]]
    messages = [make_message(ALICE, b"job %d" % i) for i in range(len(payloads))]

    async def main() -> list[tuple[StoreOutcome, list[bytes]]]:
        writer = StoreWriter(store)
        writer.start()
        try:
            return await asyncio.gather(
                *(
                    writer.submit_signed(put_op(store, m), sign_many, p)
                    for m, p in zip(messages, payloads, strict=True)
                )
            )
        finally:
            await writer.close()

    answers = run(main())
    assert calls == [[b"a", b"b1", b"b2", b"b3", b"d1", b"d2"]]  # one commit, one call
    for (outcome, signatures), mine in zip(answers, payloads, strict=True):
        assert outcome is StoreOutcome.STORED
        assert len(signatures) == len(mine)
        assert all(
            _core.ed25519_verify(key.ed25519_public_key, p, sig)
            for p, sig in zip(mine, signatures, strict=True)
        )
    store.close()


def test_map_at_its_maximum_answers_storage_full_and_reads_work(tmp_path: Path) -> None:
    settings = StoreSettings(map_size_bytes=128 * KIB, max_map_size_bytes=128 * KIB)
    store = open_store(tmp_path, settings=settings)

    async def main() -> tuple[list[Message], StoreOutcome, bool]:
        writer = StoreWriter(store)
        writer.start()
        stored = []
        outcome = StoreOutcome.STORED
        for i in range(1000):
            message = make_message(ALICE, bytes([i % 256]) * 2 * KIB + i.to_bytes(4, "big"))
            outcome = await writer.submit(put_op(store, message), if_full=StoreOutcome.STORAGE_FULL)
            if outcome is not StoreOutcome.STORED:
                break
            stored.append(message)
        raised = False
        try:
            await writer.submit(lambda txn: store.put(txn, make_message(BOB, b"z" * 4 * KIB)))
        except StorageFull:
            raised = True
        # The writer survives: a small read-only job still commits.
        assert await writer.submit(lambda txn: 42) == 42
        await writer.close()
        return stored, outcome, raised

    stored, outcome, raised = run(main())
    assert outcome is StoreOutcome.STORAGE_FULL
    assert raised
    assert 0 < len(stored) < 1000
    assert sorted(m.hash for m in read_all(store, ALICE)) == sorted(m.hash for m in stored)
    assert store.totals()[0] == len(stored)
    with pytest.raises(StorageFullError):
        put(store, make_message(BOB, b"y" * 8 * KIB))
    store.close()


def test_sweep_removes_expired_messages_and_updates_totals(tmp_path: Path) -> None:
    store = open_store(tmp_path, limits=Limits(account_max_messages=4))
    t = now_ms()
    expired = [
        make_message(ALICE, b"old%d" % i, timestamp_ms=t, expiry_ms=t + 10 + i) for i in range(3)
    ]
    live = make_message(ALICE, b"live", timestamp_ms=t, expiry_ms=t + 100_000)
    for message in [*expired, live]:
        assert put(store, message) is StoreOutcome.STORED
    assert store.totals() == (4, 4 * 3 + 4)
    later = t + 1000
    # Retrieve hides expired messages even before any sweep.
    assert [m.hash for m in read_all(store, ALICE, now=later)] == [live.hash]
    assert len(read_all(store, ALICE, now=t)) == 4
    assert store.expiries(ALICE, [m.hash for m in expired]) != {}
    # A limited sweep removes the earliest expiries first, then the rest.
    assert store.write(lambda txn: store.sweep(txn, later, 2)) == 2
    assert store.totals() == (2, 4 + 4)
    assert store.write(lambda txn: store.sweep(txn, later, 100)) == 1
    assert store.write(lambda txn: store.sweep(txn, later, 100)) == 0
    assert store.totals() == (1, 4)
    assert [m.hash for m in read_all(store, ALICE, now=t)] == [live.hash]
    assert store.expiries(ALICE, [m.hash for m in expired]) == {}
    # The account's quota was released: three more messages fit again.
    for i in range(2):
        assert put(store, make_message(ALICE, b"new%d" % i)) is StoreOutcome.STORED
    # A swept message can be stored again (its hash index entry is gone too).
    assert put(store, expired[0]) is StoreOutcome.STORED
    assert put(store, make_message(ALICE, b"one too many")) is StoreOutcome.QUOTA_EXCEEDED
    store.close()


def test_next_expiry_is_the_earliest_of_messages_and_tombstones(tmp_path: Path) -> None:
    """What the sweeper reads to skip a write transaction when nothing is due."""
    store = open_store(tmp_path)
    assert store.next_expiry_ms() is None
    t = now_ms()
    early = make_message(ALICE, b"early", timestamp_ms=t, expiry_ms=t + 5_000)
    late = make_message(BOB, b"late", timestamp_ms=t, expiry_ms=t + 9_000)
    put(store, late)
    assert store.next_expiry_ms() == t + 9_000
    put(store, early)
    assert store.next_expiry_ms() == t + 5_000
    # A deleted message's tombstone lasts until the message's expiry: still due then.
    deleted = store.write(lambda txn: store.delete_hashes(txn, ALICE, [early.hash], now_ms=t))
    assert deleted == [early.hash]
    assert store.next_expiry_ms() == t + 5_000
    assert store.write(lambda txn: store.sweep(txn, t + 6_000, 100)) == 0  # a tombstone only
    assert store.next_expiry_ms() == t + 9_000
    assert store.write(lambda txn: store.sweep(txn, t + 10_000, 100)) == 1
    assert store.next_expiry_ms() is None
    store.close()


def test_a_running_nodes_sweeper_commits_only_when_something_expired(tmp_path: Path) -> None:
    """Each sweep interval, a node with nothing due reads one key and stops there: no write
    transaction, so no wake-up of the store's writer; an expired message is still removed."""
    config = make_config(
        tmp_path / "node", store=StoreSettings(map_size_bytes=SMALL_MAP, sweep_interval_s=0.02)
    )

    async def main() -> None:
        async with running_node(config) as node:
            await asyncio.sleep(0.3)  # some fifteen sweeps of an empty store
            assert node.writer.commits == 0
            t = now_ms()
            doomed = make_message(ALICE, b"short-lived", timestamp_ms=t, expiry_ms=t + 300)
            kept = make_message(BOB, b"kept", timestamp_ms=t, expiry_ms=t + 600_000)
            for message in (doomed, kept):
                await node.writer.submit(partial(node.store.put, message=message))
            stored = node.writer.commits
            await asyncio.sleep(0.15)  # sweeps before the expiry: nothing due yet
            assert node.writer.commits == stored
            await until(lambda: node.store.totals() == (1, len(kept.data)), 5)
            swept = node.writer.commits
            assert swept > stored
            await asyncio.sleep(0.2)  # the live message is not due for ten minutes
            assert node.writer.commits == swept

    run(main())


def test_delete_hashes_deletes_only_the_owners_messages(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    mine = [make_message(ALICE, b"a%d" % i) for i in range(3)]
    theirs = make_message(BOB, b"b")
    for message in [*mine, theirs]:
        put(store, message)
    unknown = message_hash(ALICE, 0, b"never stored")
    hashes = [mine[0].hash, theirs.hash, unknown, mine[2].hash]
    deleted = store.write(lambda txn: store.delete_hashes(txn, ALICE, hashes, now_ms=now_ms()))
    assert sorted(deleted) == sorted([mine[0].hash, mine[2].hash])
    assert [m.hash for m in read_all(store, ALICE)] == [mine[1].hash]
    assert [m.hash for m in read_all(store, BOB)] == [theirs.hash]
    assert store.totals() == (2, 3)
    # Deleting again is a no-op; a deleted message leaves a tombstone until its expiry, so a copy
    # from a lagging swarm member cannot bring it back.
    assert (
        store.write(lambda txn: store.delete_hashes(txn, ALICE, [mine[0].hash], now_ms=now_ms()))
        == []
    )
    assert put(store, mine[0]) is StoreOutcome.ALREADY
    assert [m.hash for m in read_all(store, ALICE)] == [mine[1].hash]
    store.close()


def test_a_delete_that_overtakes_its_message_keeps_the_late_copy_out(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    late = make_message(ALICE, b"replicated after the delete")
    assert (
        store.write(lambda txn: store.delete_hashes(txn, ALICE, [late.hash], now_ms=now_ms())) == []
    )
    assert put(store, late) is StoreOutcome.ALREADY
    assert read_all(store, ALICE) == []
    # The tombstone is the deleting account's: it keeps nothing out of another account.
    bobs = make_message(BOB, b"bob's")
    store.write(lambda txn: store.delete_hashes(txn, ALICE, [bobs.hash], now_ms=now_ms()))
    assert put(store, bobs) is StoreOutcome.STORED
    store.close()


def test_delete_all_per_namespace_and_all(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    by_ns = {
        ns: [make_message(ALICE, b"%d-%d" % (ns, i), namespace=ns) for i in range(3)]
        for ns in (-32768, 0, 5, 32767)
    }
    other = make_message(BOB, b"bob", namespace=5)
    for messages in by_ns.values():
        for message in messages:
            put(store, message)
    put(store, other)
    deleted = store.write(lambda txn: store.delete_all(txn, ALICE, 5))
    assert sorted(deleted) == sorted((5, m.hash) for m in by_ns[5])
    assert read_all(store, ALICE, 5) == []
    assert len(read_all(store, ALICE, 0)) == 3
    assert len(read_all(store, ALICE, -32768)) == 3
    assert [m.hash for m in read_all(store, BOB, 5)] == [other.hash]
    deleted = store.write(lambda txn: store.delete_all(txn, ALICE, None))
    assert sorted(deleted) == sorted((ns, m.hash) for ns in (-32768, 0, 32767) for m in by_ns[ns])
    for ns in by_ns:
        assert read_all(store, ALICE, ns) == []
    assert [m.hash for m in read_all(store, BOB, 5)] == [other.hash]
    assert store.totals() == (1, 3)
    store.close()


def test_update_expiry_shorten_extend_and_set(tmp_path: Path) -> None:
    limits = Limits()
    store = open_store(tmp_path, limits=limits)
    t = now_ms()
    message = make_message(ALICE, b"m", timestamp_ms=t, expiry_ms=t + 50_000)
    foreign = make_message(BOB, b"b", timestamp_ms=t, expiry_ms=t + 50_000)
    put(store, message)
    put(store, foreign)
    h = message.hash

    def update(expiries: list[int], mode: str) -> list[tuple[bytes, int]]:
        # Alice names her message and Bob's: only hers may change.
        result: list[tuple[bytes, int]] = store.write(
            lambda txn: store.update_expiry(txn, ALICE, [h, foreign.hash], expiries, mode)
        )
        return result

    def held() -> int:
        return store.expiries(ALICE, [h])[h]

    assert update([t + 80_000], "shorten") == []  # shorten never lengthens
    assert held() == t + 50_000
    assert update([t + 30_000], "shorten") == [(h, t + 30_000)]
    assert update([t + 20_000], "extend") == []  # extend never shortens
    assert held() == t + 30_000
    assert update([t + 60_000], "extend") == [(h, t + 60_000)]
    assert update([t + 40_000], "") == [(h, t + 40_000)]  # "" sets either way
    # One expiry per hash: the first is Alice's message's, the second (Bob's) changes nothing.
    assert update([t + 45_000, t + 99_000], "") == [(h, t + 45_000)]
    # The store applies any expiry it is given: the cap (now + 30 days) is the RPC's, which
    # tests/test_storage_compat.py checks through ``expire``.
    far = t + limits.max_ttl_private_ms * 2
    assert update([far], "extend") == [(h, far)]
    assert held() == far
    assert update([t + 40_000], "") == [(h, t + 40_000)]
    assert store.expiries(ALICE, [h, foreign.hash]) == {h: t + 40_000}
    assert store.expiries(BOB, [foreign.hash]) == {foreign.hash: t + 50_000}
    # The expiry index follows: a sweep at the new expiry removes it, not before.
    assert store.write(lambda txn: store.sweep(txn, t + 39_999, 100)) == 0
    assert store.write(lambda txn: store.sweep(txn, t + 40_000, 100)) == 1
    assert read_all(store, ALICE, now=t) == []
    assert [m.hash for m in read_all(store, BOB, now=t)] == [foreign.hash]
    store.close()


def page_through(
    store: MessageStore, account: bytes, page: int, after: bytes | None = None
) -> list[StoredMessage]:
    out: list[StoredMessage] = []
    for _ in range(10_000):
        messages, more = store.retrieve(
            account, namespace=0, after=after, now_ms=now_ms(), max_messages=page, max_bytes=1 << 30
        )
        out += messages
        if messages:
            after = cursor_decode(messages[-1].cursor)
        if not more:
            return out
        assert len(messages) == page
    raise AssertionError("paging never ended")


def test_cursor_pages_of_two_yield_every_message_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    base = now_ms()
    # Three messages to an arrival (the hash orders those); timestamps unrelated to the arrivals.
    messages = [
        make_message(ALICE, b"p%d" % i, timestamp_ms=base - i, arrival_us=base * 1000 + i // 3)
        for i in range(11)
    ]
    for message in messages:
        put(store, message)
    got = page_through(store, ALICE, 2)
    assert [m.hash for m in got] == [m.hash for m in sorted(messages, key=order_key)]
    # max_bytes: at least one message per page, whatever its size.
    first, more = store.retrieve(
        ALICE, namespace=0, after=None, now_ms=now_ms(), max_messages=100, max_bytes=1
    )
    assert len(first) == 1
    assert more
    store.close()


def test_cursor_is_the_same_on_two_stores_and_a_client_can_switch(tmp_path: Path) -> None:
    base = now_ms()
    messages = [
        make_message(ALICE, b"s%d" % i, timestamp_ms=base - i, arrival_us=base * 1000 + i % 4)
        for i in range(13)
    ]
    one = open_store(tmp_path / "one")
    two = open_store(tmp_path / "two")
    for message in messages:
        put(one, message)
    for message in random.Random(7).sample(messages, len(messages)):
        put(two, message)
    all_one = read_all(one, ALICE)
    all_two = read_all(two, ALICE)
    assert [m.cursor for m in all_one] == [m.cursor for m in all_two]
    # Read 6 from the first store, switch to the second with its cursor: the rest, exactly once.
    head, more = one.retrieve(
        ALICE, namespace=0, after=None, now_ms=now_ms(), max_messages=6, max_bytes=1 << 30
    )
    assert more
    tail = page_through(two, ALICE, 2, after=cursor_decode(head[-1].cursor))
    seen = [m.hash for m in head + tail]
    assert seen == [m.hash for m in sorted(messages, key=order_key)]
    assert len(set(seen)) == len(messages)
    one.close()
    two.close()


def test_group_commit_batches_concurrent_stores_and_survives_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    messages = [make_message(ALICE if i % 2 else BOB, b"g%d" % i) for i in range(200)]

    async def main() -> tuple[list[StoreOutcome], int, int]:
        writer = StoreWriter(store)
        writer.start()
        outcomes = await asyncio.gather(*(writer.submit(put_op(store, m)) for m in messages))
        await writer.close()
        return list(outcomes), writer.commits, writer.jobs

    outcomes, commits, jobs = run(main())
    assert outcomes == [StoreOutcome.STORED] * 200
    assert jobs == 200
    assert 1 <= commits < jobs
    store.close()
    reopened = open_store(tmp_path)
    got = read_all(reopened, ALICE) + read_all(reopened, BOB)
    assert sorted(m.hash for m in got) == sorted(m.hash for m in messages)
    assert reopened.totals() == (200, sum(len(m.data) for m in messages))
    reopened.close()


def test_under_load_a_small_commit_gathers_more_and_an_idle_or_full_one_does_not(
    tmp_path: Path,
) -> None:
    """Jobs that arrive while a commit is under way make the writer loaded: its next commit, if it
    would carry fewer than ``commit_gather_below`` jobs, first waits ``commit_gather_ms`` and takes
    what came meanwhile. A job at an idle writer, and a batch that is large enough, go at once."""
    settings = StoreSettings(
        map_size_bytes=SMALL_MAP, commit_gather_ms=1000.0, commit_gather_below=3
    )
    store = open_store(tmp_path, settings=settings)
    messages = iter([make_message(ALICE, b"gather %d" % i) for i in range(12)])
    gap_s = 0.1  # well inside a gather: a job this late joins the commit only if it waited

    async def main() -> list[tuple[int, int]]:
        writer = StoreWriter(store)
        writer.start()
        seen: list[tuple[int, int]] = []  # (commits, jobs) after each step

        def note() -> None:
            seen.append((writer.commits, writer.jobs))

        async def after_a_held_commit(waiting: int) -> None:
            """A commit held under way while ``waiting`` jobs queue behind it, then one more job
            ``gap_s`` after it ends."""
            started, release = threading.Event(), threading.Event()
            first = next(messages)

            def held(txn: Txn) -> StoreOutcome:
                started.set()
                release.wait(10)
                return store.put(txn, first)

            head = asyncio.ensure_future(writer.submit(held))
            while not started.is_set():
                await asyncio.sleep(0.001)
            queued = [
                asyncio.ensure_future(writer.submit(put_op(store, next(messages))))
                for _ in range(waiting)
            ]
            await asyncio.sleep(0.01)  # (submit puts the job on the queue at once)
            release.set()
            await head
            await asyncio.sleep(gap_s)
            late = writer.submit(put_op(store, next(messages)))
            await asyncio.gather(*queued, late)
            note()

        try:
            await writer.submit(put_op(store, next(messages)))  # idle: at once
            await asyncio.sleep(gap_s)
            await writer.submit(put_op(store, next(messages)))
            note()
            await after_a_held_commit(1)  # one waiting: a small commit under load
            await after_a_held_commit(3)  # three waiting: large enough
        finally:
            await writer.close()
        return seen

    seen = run(main())
    # Idle: two commits. One waiting: the held commit, then it and the late job in one (+2).
    # Three waiting: the held commit, the three, then the late job alone (+3).
    assert seen == [(2, 2), (4, 5), (7, 10)]
    store.close()


def test_reopen_after_close_keeps_messages_expiries_and_quotas(tmp_path: Path) -> None:
    limits = Limits(account_max_messages=5)
    store = open_store(tmp_path, limits=limits)
    messages = [make_message(ALICE, b"r%d" % i, namespace=i % 2) for i in range(5)]
    for message in messages:
        put(store, message)
    store.write(lambda txn: store.delete_hashes(txn, ALICE, [messages[0].hash], now_ms=now_ms()))
    store.close()
    reopened = open_store(tmp_path, limits=limits)
    got = read_all(reopened, ALICE, 0) + read_all(reopened, ALICE, 1)
    assert sorted(m.hash for m in got) == sorted(m.hash for m in messages[1:])
    assert {m.hash: m.expiry_ms for m in got} == {m.hash: m.expiry_ms for m in messages[1:]}
    assert reopened.totals() == (4, sum(len(m.data) for m in messages[1:]))
    assert put(reopened, make_message(ALICE, b"fifth")) is StoreOutcome.STORED
    assert put(reopened, make_message(ALICE, b"sixth")) is StoreOutcome.QUOTA_EXCEEDED
    assert put(reopened, messages[1]) is StoreOutcome.ALREADY
    reopened.close()


def test_a_store_in_another_layout_is_refused_at_open_not_misread(tmp_path: Path) -> None:
    """A store an older Veil wrote (messages, no format mark or another one) is refused with a
    clear error; a store opened empty is marked and opens again with its messages."""
    store = open_store(tmp_path / "new")
    assert put(store, make_message(ALICE, b"kept")) is StoreOutcome.STORED
    store.close()
    store = open_store(tmp_path / "new")
    assert (
        len(
            store.retrieve(
                ALICE, namespace=0, after=None, now_ms=now_ms(), max_messages=9, max_bytes=BIG
            )[0]
        )
        == 1
    )
    # What an older store looks like: messages counted in its totals, no format mark.
    with store.env.begin(write=True) as txn:
        txn.delete(b"format", db=store._meta)
    store.close()
    with pytest.raises(ConfigError, match="start the node on an empty data directory"):
        open_store(tmp_path / "new")
    empty = open_store(tmp_path / "empty")  # an empty older store is simply taken over
    empty.close()
    open_store(tmp_path / "empty").close()


def recount(
    store: MessageStore,
) -> tuple[tuple[int, int], tuple[int, int], dict[bytes, tuple[int, bytes]]]:
    """The totals, the attachment totals and each account's (count, XOR of hashes),
    counted again from the messages table itself."""
    accounts: dict[bytes, list[int]] = {}
    with store.read() as txn:
        for key, value in txn.cursor(db=store._messages):
            account, _ns, _arrival, digest = keys.split_message_key(bytes(key))
            figures = accounts.setdefault(account, [0, 0, 0])
            figures[0] += 1
            figures[1] += len(value) - 16
            figures[2] ^= int.from_bytes(digest, "big")
    every = (sum(f[0] for f in accounts.values()), sum(f[1] for f in accounts.values()))
    chunks = [f for a, f in accounts.items() if a[:1] == b"\x0a"]
    attachments = (sum(f[0] for f in chunks), sum(f[1] for f in chunks))
    return every, attachments, {a: (f[0], f[2].to_bytes(32, "big")) for a, f in accounts.items()}


def apply_all(
    ops: list[Callable[[MessageStore, Txn], object]], store: MessageStore, txn: Txn
) -> list[object]:
    return [op(store, txn) for op in ops]


def test_a_batch_of_writes_leaves_the_figures_one_transaction_each_would(tmp_path: Path) -> None:
    """Group commit runs many operations in one write transaction, each seeing what the ones
    before it wrote. A random mix of stores (duplicates, over quota, attachment chunks,
    public-outbox replacements), deletes, expiry changes and sweeps, applied in random batches,
    gives every operation the outcome it gets one transaction at a time, and leaves the same
    figures (totals, attachment totals, each account's count and XOR of hashes), which are those
    recounted from the messages table."""
    rng = random.Random(7)
    limits = Limits(
        account_max_messages=12,
        account_max_bytes=400,
        storage_max_bytes=700,
        attachments_max_bytes=250,
    )
    owners = [ALICE, BOB, b"\x0a" + bytes(range(2, 34))]
    t = now_ms()
    made: list[Message] = []
    ops: list[Callable[[MessageStore, Txn], object]] = []
    for i in range(400):
        roll = rng.random()
        account = rng.choice(owners)
        if roll < 0.7 or not made:
            if made and rng.random() < 0.2:
                message = rng.choice(made)  # held already, or deleted: a duplicate
                later = message.expiry_ms + rng.choice((0, 50))
                message = dataclasses.replace(message, expiry_ms=later)
            else:
                namespace = -1 if rng.random() < 0.15 else 0
                data = rng.randbytes(rng.randrange(1, 60))
                expiry = t + rng.randrange(20, 100_000)
                message = make_message(
                    account,
                    data,
                    namespace=namespace,
                    timestamp_ms=t,
                    expiry_ms=expiry,
                    arrival_us=t * 1000 + i,
                )
                made.append(message)
            ops.append(partial(lambda m, s, txn: s.put(txn, m), message))
        elif roll < 0.8:
            victims = [m.hash for m in rng.sample(made, min(3, len(made)))]
            owner = rng.choice(owners)
            ops.append(
                partial(lambda a, h, s, txn: s.delete_hashes(txn, a, h, now_ms=t), owner, victims)
            )
        elif roll < 0.83:
            ops.append(partial(lambda a, s, txn: s.delete_all(txn, a, None), account))
        elif roll < 0.95:
            victims = [m.hash for m in rng.sample(made, min(2, len(made)))]
            new = t + rng.randrange(20, 100_000)
            ops.append(
                partial(
                    lambda a, h, e, s, txn: s.update_expiry(txn, a, h, [e], ""),
                    account,
                    victims,
                    new,
                )
            )
        else:
            ops.append(partial(lambda s, txn: s.sweep(txn, t + 3_000, 5)))

    one_each = open_store(tmp_path / "one", limits=limits)
    batched = open_store(tmp_path / "batched", limits=limits)
    alone = [one_each.write(partial(op, one_each)) for op in ops]
    together: list[object] = []
    start = 0
    while start < len(ops):
        end = start + rng.randrange(1, 40)
        together.extend(batched.write(partial(apply_all, ops[start:end], batched)))
        start = end
    assert together == alone
    assert StoreOutcome.QUOTA_EXCEEDED in alone
    assert StoreOutcome.STORAGE_FULL in alone
    assert StoreOutcome.ALREADY in alone
    for store in (one_each, batched):
        every, attachments, accounts = recount(store)
        assert store.totals() == every
        assert store.attachment_totals() == attachments
        assert store.summaries(owners) == accounts
        assert sorted(store.held_accounts()) == sorted(accounts)
        store.close()


def test_the_event_loop_waits_its_turn_while_the_writer_applies_a_batch() -> None:
    """``ApplyTurn``: while the writer holds its turn (applying a batch) the loop's ``wait``
    blocks until the writer gives it back; a hold that outlasts ``hold_s`` (one long job) is
    waited for once, at most ``hold_s``, and not again; ``hold_s`` 0 turns it off."""
    turn = ApplyTurn(hold_s=30.0)
    assert turn.take() > 0
    waiter = threading.Thread(target=turn.wait)
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # the batch is being applied: the loop waits
    turn.give_back()
    waiter.join(10)
    assert not waiter.is_alive()
    assert turn.waits == 1
    turn.wait()  # nothing being applied: no wait
    assert turn.waits == 1

    short = ApplyTurn(hold_s=0.05)
    short.take()  # a job that outlasts its turn
    short.wait()  # waited for, hold_s at most
    short.wait()  # the same hold: the loop goes on without waiting
    short.wait()
    assert short.waits == 1
    short.give_back()
    short.take()  # the next batch is waited for again
    short.wait()
    assert short.waits == 2
    short.give_back()

    off = ApplyTurn(hold_s=0.0)
    assert off.take() == 0.0
    off.wait()
    assert off.waits == 0


def test_a_node_sets_its_process_switch_interval_from_gil_switch_ms(tmp_path: Path) -> None:
    """``[store] gil_switch_ms`` is the interval the node's process switches the GIL at (how long
    the event loop may keep it from the store writer); 0 leaves the interpreter's own; a value
    out of range is refused when node.toml is read."""
    before = sys.getswitchinterval()

    async def start_and_read(store: StoreSettings, name: str) -> float:
        async with running_node(make_config(tmp_path / name, store=store)):
            return sys.getswitchinterval()

    try:
        sys.setswitchinterval(0.005)
        shorter = StoreSettings(map_size_bytes=SMALL_MAP, gil_switch_ms=0.25)
        assert run(start_and_read(shorter, "set")) == pytest.approx(0.00025)
        left = StoreSettings(map_size_bytes=SMALL_MAP, gil_switch_ms=0.0)
        assert run(start_and_read(left, "left")) == pytest.approx(0.00025)  # not touched
    finally:
        sys.setswitchinterval(before)
    assert StoreSettings().gil_switch_ms == 0.5
    text = render_config(NodeConfig(data_dir=tmp_path))
    assert "\ngil_switch_ms = 0.5\n" in text
    for wrong in ("0.01", "250.0", "-1.0"):
        (tmp_path / "node.toml").write_text(
            text.replace("\ngil_switch_ms = 0.5\n", f"\ngil_switch_ms = {wrong}\n")
        )
        with pytest.raises(ConfigError, match="gil_switch_ms"):
            load_config(tmp_path)


def test_a_nodes_reads_wait_for_the_batch_being_applied_and_a_long_job_holds_them_once(
    tmp_path: Path,
) -> None:
    """A node's event loop waits for its writer's turn before it reads a request: a job that
    holds the writer past ``apply_turn_ms`` holds the loop that long once, and the request is
    answered while the job still runs."""
    config = make_config(
        tmp_path, store=StoreSettings(map_size_bytes=SMALL_MAP, apply_turn_ms=100.0)
    )
    release = threading.Event()
    applying = threading.Event()

    def long_job(txn: Txn) -> str:
        applying.set()
        release.wait(30)
        return "done"

    async def main() -> None:
        async with running_node(config) as node, await HttpClient.connect(node.port) as client:
            job = asyncio.ensure_future(node.writer.submit(long_job))
            try:
                await until(applying.is_set, 10)
                response = await client.request("GET", "/metrics")
                assert response.status == 200
                assert not job.done()  # answered while the batch was still being applied
                assert node.writer.turn.waits == 1
                assert 0.05 <= node.writer.turn.waited_s < 30
            finally:
                release.set()
            assert await job == "done"

    run(main())
