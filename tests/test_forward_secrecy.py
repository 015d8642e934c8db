"""Forward secrecy and post-quantum protection of one-to-one messages (Veil v2), through six
in-process nodes: messages are envelopes every device of both accounts reads; every recorded
ciphertext stays shut to an attacker holding the recovery phrase and all device state once the
prekeys are destroyed (and opens before, which shows the attack works); a stolen device state
stops opening messages after the next rotation; 1,000 envelopes in random order with duplicates
are each taken once; a peer without v2 gets the Session Protocol, and once pinned is never sent
it again."""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

from client_helpers import directory_of
from node_helpers import StubAuthorities, run, start_network
from veil.client.account import Book
from veil.client.messaging import Messenger
from veil.client.network import NetworkClient
from veil.client.prekeys import BUNDLE_CACHE_MS, GRACE_MS, ROTATE_MS, PrekeyRing
from veil.client.protection import DowngradeError
from veil.client.swarm import SwarmClient
from veil.crypto import decrypt_incoming, decrypt_v2, encrypt_v2, is_v2
from veil.errors import DecryptionError
from veil.identity import Identity
from veil.node.config import NetworkSettings
from veil.node.server import Node
from veil.protocol.content import Content, encode_content
from veil.protocol.prekeys import (
    BUNDLE_NAMESPACE,
    Prekey,
    PrekeyError,
    key_id,
    open_bundle,
    sign_bundle,
)

FAST = NetworkSettings(sync_interval_s=0.5, replication_timeout_s=2.0)
HOUR = 3600 * 1000


class Clock:
    """A prekey clock the test moves (network timestamps stay real)."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        from veil.clock import now_ms  # noqa: PLC0415

        return now_ms() + self.offset


@asynccontextmanager
async def _network(
    tmp_path: Path,
) -> AsyncIterator[tuple[list[Node], Callable[..., Awaitable[Messenger]]]]:
    nodes = await start_network(
        StubAuthorities(tmp_path / "authorities"), tmp_path, 6, network=FAST
    )
    networks: list[NetworkClient] = []

    async def device(identity: Identity, **options: Any) -> Messenger:
        network = await NetworkClient(directory_of(nodes[0])).__aenter__()
        networks.append(network)
        options.setdefault("book", Book())
        return Messenger(identity, SwarmClient(network), **options)

    try:
        yield nodes, device
    finally:
        for network in networks:
            await network.close()
        for node in nodes:
            await node.stop()


def _recorded(nodes: list[Node], session_id: str, namespace: int = 0) -> list[bytes]:
    """Every message any node holds for the account: what a recording adversary has."""
    account = bytes.fromhex(session_id)
    found: dict[bytes, bytes] = {}
    for node in nodes:
        for held in node.store.messages_of(node.store.hashes_of(account)):
            if held.namespace == namespace:
                found[held.hash] = held.data
    return list(found.values())


def _texts(messenger: Messenger, peer: str) -> list[str]:
    return [e.body for e in messenger.conversation(peer)]


def _attack(envelopes: list[bytes], identity: Identity, books: list[dict[str, Any]]) -> int:
    """How many envelopes an attacker opens with the recovery phrase and these device states."""
    secrets = [
        (k.id, k.secret)
        for book in books
        for k in PrekeyRing(Book.from_json(book).prekeys, clock=lambda: 0).keys
    ]
    opened = 0
    for envelope in envelopes:
        try:
            decrypt_v2(identity, envelope, secrets)
        except DecryptionError:
            try:
                decrypt_incoming(identity, envelope)
            except DecryptionError:
                continue
        opened += 1
    return opened


def test_messages_are_envelopes_that_every_device_of_both_accounts_reads(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _network(tmp_path) as (nodes, device):
            a1, a2 = await device(alice, name="Alice"), await device(alice)
            b1, b2 = await device(bob, name="Bob"), await device(bob)
            for messenger in (a1, a2, b1, b2):
                await messenger.fetch()  # each device publishes its prekey
            await a1.fetch()  # the account config now lists a2's prekey
            await a1.send_text(bob.session_id, "hello Bob")
            stored = _recorded(nodes, bob.session_id)
            assert stored
            assert all(is_v2(data) for data in stored)
            # One slot per Bob device; the transcript has one slot, for a2.
            assert stored[0][5] == 2
            for messenger in (b1, b2):
                await messenger.fetch()
                assert _texts(messenger, alice.session_id) == ["hello Bob"]
            transcripts = [d for d in _recorded(nodes, alice.session_id) if is_v2(d)]
            assert [d[5] for d in transcripts] == [1]
            await a2.fetch()
            assert _texts(a2, bob.session_id) == ["hello Bob"]
            assert a1.protection.level(bob.session_id) == "v2"
            assert b1.protection.level(alice.session_id) == "v2"

    run(main())


def test_recorded_messages_stay_shut_once_the_retention_window_has_passed(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    clock = Clock()

    async def main() -> None:
        async with _network(tmp_path) as (nodes, device):
            a = await device(alice)
            b1 = await device(bob, prekey_clock=clock)
            b2 = await device(bob, prekey_clock=clock)  # offline while time passes
            for messenger in (b1, b2, b1, a):
                await messenger.fetch()
            for i in range(5):
                await a.send_text(bob.session_id, f"secret {i}")
            envelopes = [d for d in _recorded(nodes, bob.session_id) if is_v2(d)]
            assert len(envelopes) == 5
            await b1.fetch()
            assert len(_texts(b1, alice.session_id)) == 5
            before = [json.loads(json.dumps(b1.save().to_json()))]
            assert _attack(envelopes, bob, before) == 5  # with the prekeys, the attack works

            clock.offset += ROTATE_MS + HOUR  # b1 rotates and publishes
            await b1.fetch()
            clock.offset += BUNDLE_CACHE_MS + GRACE_MS + 60_000
            await b1.fetch()  # and destroys the old prekey
            assert len(b1.protection.ring.keys) == 1
            # The device that was offline still reads everything it had not read.
            await b2.fetch()
            assert len(_texts(b2, alice.session_id)) == 5
            clock.offset += ROTATE_MS
            await b2.fetch()
            clock.offset += BUNDLE_CACHE_MS + GRACE_MS + 60_000
            await b2.fetch()
            books = [b1.save().to_json(), b2.save().to_json()]
            assert _attack(envelopes, bob, books) == 0

    run(main())


def test_a_stolen_device_state_stops_opening_messages_after_the_next_rotation(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    bob_clock, alice_clock = Clock(), Clock()

    async def main() -> None:
        async with _network(tmp_path) as (nodes, device):
            a = await device(alice, prekey_clock=alice_clock)
            b = await device(bob, prekey_clock=bob_clock)
            await b.fetch()
            await a.fetch()
            stolen = json.loads(json.dumps(b.save().to_json()))
            await a.send_text(bob.session_id, "before")
            first = set(_recorded(nodes, bob.session_id))
            assert _attack(list(first), bob, [stolen]) == 1
            await b.fetch()

            bob_clock.offset += ROTATE_MS + HOUR
            await b.fetch()  # the next step: a new prekey from fresh randomness
            alice_clock.offset += BUNDLE_CACHE_MS + 1  # Alice reads Bob's bundle again
            await a.send_text(bob.session_id, "after")
            later = [d for d in _recorded(nodes, bob.session_id) if d not in first]
            assert len(later) == 1
            assert _attack(later, bob, [stolen]) == 0
            await b.fetch()
            assert _texts(b, alice.session_id) == ["before", "after"]

    run(main())


def test_a_thousand_envelopes_in_random_order_with_duplicates_are_each_taken_once() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    receiver = Messenger(bob, None, book=Book())
    receiver.protection.ring.rotate_if_due()
    current = receiver.protection.ring.current
    assert current is not None
    slots = [(current.id, current.public)]
    messages = []
    for i in range(1000):
        content = Content.text(f"m{i}", 1_700_000_000_000 + i)
        sealed = encrypt_v2(alice, bob.session_id, slots, encode_content(content))
        messages.append({"hash": f"h{i}", "data": base64.b64encode(sealed).decode()})
    rng = random.Random(7)
    delivered = messages + rng.sample(messages, 150)
    rng.shuffle(delivered)
    events = receiver.ingest(delivered)
    assert sorted(e.body for e in events) == sorted(f"m{i}" for i in range(1000))
    assert [e.body for e in receiver.conversation(alice.session_id)] == [
        f"m{i}" for i in range(1000)
    ]
    assert receiver.undecryptable == 0


def test_a_peer_without_v2_gets_the_session_protocol_and_once_pinned_never_again(
    tmp_path: Path,
) -> None:
    alice, carol = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _network(tmp_path) as (nodes, device):
            a = await device(alice)
            old_carol = await device(carol, v2=False)
            await a.fetch()
            await old_carol.fetch()
            await a.send_text(carol.session_id, "hi old client")
            assert not any(is_v2(d) for d in _recorded(nodes, carol.session_id))
            assert a.protection.level(carol.session_id) == "v1"
            await old_carol.fetch()
            assert _texts(old_carol, alice.session_id) == ["hi old client"]
            await old_carol.send_text(alice.session_id, "hi back")
            await a.fetch()
            assert _texts(a, carol.session_id)[-1] == "hi back"

            # Carol upgrades: her bundle appears, Alice moves to v2 and pins her.
            new_carol = await device(carol, book=old_carol.save())
            await new_carol.fetch()
            await a.send_text(carol.session_id, "now protected")
            assert a.protection.level(carol.session_id) == "v2"
            await new_carol.fetch()
            assert _texts(new_carol, alice.session_id)[-1] == "now protected"

            # Her bundle withheld everywhere: Alice does not fall back.
            account = bytes.fromhex(carol.session_id)
            for node in nodes:

                def withhold(txn: Any, node: Node = node) -> None:
                    node.store.delete_all(txn, account, BUNDLE_NAMESPACE)

                node.store.write(withhold)
            a.book.bundles.clear()
            with pytest.raises(DowngradeError):
                await a.send_text(carol.session_id, "must not go unprotected")

            # A Session Protocol message from her (an old device) is kept, but marked.
            await old_carol.send_text(alice.session_id, "from my old phone")
            await a.fetch()
            entry = a.conversation(carol.session_id)[-1]
            assert entry.body == "from my old phone"
            assert entry.unprotected
            assert a.protection.downgrades == 1

    run(main())


# --- hostile bundles and envelopes ---------------------------------------------------------------


def _prekey(device: str = "00" * 8) -> tuple[Prekey, bytes]:
    ring = PrekeyRing([], clock=lambda: 1_700_000_000_000)
    ring.rotate_if_due()
    current = ring.current
    assert current is not None
    return Prekey(device, current.public, current.created_ms), current.secret


def test_a_bundle_is_taken_only_whole_and_signed_by_its_account() -> None:
    bob, mallory = Identity.generate(), Identity.generate()
    prekey, _ = _prekey()
    account = bytes.fromhex(bob.session_id[2:])
    good = sign_bundle(bob.seed, [prekey])
    assert open_bundle(good, account).keys == (prekey,)
    outer = msgpack.unpackb(good)
    body = msgpack.unpackb(outer["b"])
    hostile: list[object] = [
        sign_bundle(mallory.seed, [prekey]),  # another account's valid bundle
        msgpack.packb({**outer, "s": bytes(64)}),
        msgpack.packb({**outer, "b": outer["b"][:-1] + bytes([outer["b"][-1] ^ 1])}),
        b"",
        os.urandom(200),
        b"\x00" * 40_000,
        "text",
        msgpack.packb({"b": msgpack.packb({**body, "v": 2}), "s": outer["s"]}),
    ]
    for data in hostile:
        with pytest.raises(PrekeyError):
            open_bundle(data, account)
    # Well signed but malformed inside: too many keys, a short key, a device twice.
    for keys in (
        [prekey] * 2,
        [Prekey(f"{i:016x}", prekey.public, 1) for i in range(17)],
        [Prekey("00" * 8, prekey.public[:-1], 1)],
    ):
        with pytest.raises(PrekeyError):
            open_bundle(_forged(bob, keys), account)


def _forged(identity: Identity, keys: list[Prekey]) -> bytes:
    from veil import _core  # noqa: PLC0415

    body = msgpack.packb(
        {
            "v": 1,
            "ed": identity.ed25519_public_key,
            "t": 1,
            "keys": [[k.device, k.public, k.created_ms] for k in keys],
        }
    )
    signed = b"veil-prekeys-v1" + bytes.fromhex(identity.session_id[2:]) + body
    packed: bytes = msgpack.packb({"b": body, "s": _core.ed25519_sign(identity.seed, signed)})
    return packed


def test_every_damaged_envelope_is_the_one_decryption_error() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    prekey, secret = _prekey()
    other, other_secret = _prekey("11" * 8)
    secrets = [(prekey.id, secret)]
    envelope = encrypt_v2(alice, bob.session_id, [(prekey.id, prekey.public)], b"padded text")
    assert decrypt_v2(bob, envelope, secrets) == (b"padded text", alice.session_id)
    assert key_id(prekey.public) == envelope[6:14]
    damaged = [
        envelope[:-1],
        envelope[:50],
        envelope[:5],
        envelope[:5] + b"\x00" + envelope[6:],
        envelope[:5] + b"\x11" + envelope[6:],
    ]
    for position in (3, 6, 20, 600, 1150, 1180, 1200, len(envelope) - 1):
        flipped = bytearray(envelope)
        flipped[position] ^= 0x01
        damaged.append(bytes(flipped))
    for data in damaged:
        with pytest.raises(DecryptionError):
            decrypt_v2(bob, data, secrets)
    with pytest.raises(DecryptionError):  # the right slot, the wrong device's secret
        decrypt_v2(bob, envelope, [(prekey.id, other_secret)])
    with pytest.raises(DecryptionError):  # opened for another account
        decrypt_v2(alice, envelope, secrets)
    del other


def test_a_transcript_reaches_an_own_device_without_v2_the_old_way(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    async def main() -> None:
        async with _network(tmp_path) as (nodes, device):
            a1, a2 = await device(alice), await device(alice)
            old_a3 = await device(alice, v2=False)
            b = await device(bob)
            for messenger in (a1, a2, old_a3, b, a1):
                await messenger.fetch()
            assert len(a1.protection.own_prekeys(others_only=True)) == 1  # a2's
            await a1.send_text(bob.session_id, "seen on my old device too")
            transcripts = _recorded(nodes, alice.session_id)
            assert transcripts
            assert not any(is_v2(d) for d in transcripts)
            assert all(is_v2(d) for d in _recorded(nodes, bob.session_id))
            for other in (a2, old_a3):
                await other.fetch()
                assert _texts(other, bob.session_id) == ["seen on my old device too"]

    run(main())
