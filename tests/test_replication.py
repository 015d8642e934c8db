"""Replication across a swarm: write quorum with signed swarm answers, background copies, repair
and joins."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_helpers import (
    Account,
    HttpClient,
    StubAuthorities,
    retrieve_all,
    run,
    start_network,
    until,
)
from veil.node.config import NetworkSettings
from veil.node.links import HopFailed
from veil.node.server import Node
from veil.protocol.announcement import Announcement
from veil.protocol.hashes import hash_b64, message_hash
from veil.protocol.node_rpc import Replicate, decode_receipts, decode_request, encode_receipts
from veil.protocol.storage_rpc import verify_swarm

FAST = NetworkSettings(sync_interval_s=0.3, replication_timeout_s=2.0)


async def _network(tmp_path: Path, size: int) -> tuple[StubAuthorities, list[Node]]:
    """``size`` nodes in one consensus, and the authorities that signed it."""
    authorities = StubAuthorities(tmp_path / "authorities")
    return authorities, await start_network(authorities, tmp_path, size, network=FAST)


BAD_RECEIPT = bytes(64 - 1) + b"\x01"
"""64 bytes that are no member's signature of anything."""


def _spoil_receipts(
    entry: Node,
    liar: Announcement,
    change: Callable[[Replicate, list[bytes | None]], list[bytes | None]],
) -> None:
    """Make ``liar``'s answers to ``entry``'s ``replicate`` frames carry ``change(request,
    receipts)`` instead of the receipts it gave."""
    honest_request = entry.replicator.pool.request

    async def request(address: tuple[str, int], x25519: bytes, body: bytes, *args: Any) -> bytes:
        answer = await honest_request(address, x25519, body, *args)
        decoded = decode_request(body, max_items=1000)
        if x25519 != liar.x25519 or not isinstance(decoded, Replicate):
            return answer
        receipts = decode_receipts(answer, expected=len(decoded.messages))
        return encode_receipts(change(decoded, receipts))

    entry.replicator.pool.request = request  # type: ignore[method-assign,assignment]


async def _stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node._server is not None and node._server.is_serving():
            await node.stop()


def _holders(nodes: list[Node], digest: bytes) -> list[Node]:
    return [n for n in nodes if n.store.messages_of([digest])]


def test_a_store_is_answered_with_quorum_signed_swarm_results_and_reaches_the_whole_swarm(
    tmp_path: Path,
) -> None:
    alice = Account()

    async def main() -> None:
        _, nodes = await _network(tmp_path, 7)
        try:
            swarm = {a.ed25519 for a in nodes[0].network.swarm(alice.account_bytes)}
            entry = next(n for n in nodes if n.identity.ed25519_public_key in swarm)
            request = alice.store(b"replicate me")
            async with await HttpClient.connect(entry.port) as client:
                status, body = await client.rpc("store", request)
            assert status == 200, body
            digest = base64.b64decode(body["hash"] + "=")
            assert digest == message_hash(alice.account_bytes, 0, b"replicate me")
            # The answer has a part for every member of the account's swarm, and nobody else...
            assert set(body["swarm"]) == {member.hex() for member in swarm}
            # ... and at least the write quorum's parts are results signed by their member.
            signers = set(verify_swarm("store", request, body, swarm))
            assert len(signers) >= 3
            for signer in signers:
                assert body["swarm"][signer.hex()]["hash"] == hash_b64(digest)
            # A result is not taken on its word: one signed by another member does not verify.
            forged = {
                **body,
                "swarm": {
                    m.hex(): body["swarm"][entry.identity.ed25519_public_key.hex()] for m in swarm
                },
            }
            assert verify_swarm("store", request, forged, swarm) == [
                entry.identity.ed25519_public_key
            ]
            await until(
                lambda: {n.identity.ed25519_public_key for n in _holders(nodes, digest)} == swarm,
                15,
            )
        finally:
            await _stop(nodes)

    run(main())


def test_a_member_that_was_down_catches_up_by_anti_entropy(tmp_path: Path) -> None:
    bob = Account()

    async def main() -> None:
        authorities, nodes = await _network(tmp_path, 6)
        try:
            swarm = [a.ed25519 for a in nodes[0].network.swarm(bob.account_bytes)]
            members = [n for n in nodes if n.identity.ed25519_public_key in swarm]
            lagging = members[-1]
            await lagging.stop()
            async with await HttpClient.connect(members[0].port) as client:
                for i in range(5):
                    status, body = await client.rpc("store", bob.store(b"while down %d" % i))
                    assert status == 200, body
            back = Node(lagging.config)
            nodes[nodes.index(lagging)] = back
            assert back.store.hashes_of(bob.account_bytes) == []
            await back.start()
            authorities.issue(nodes)  # with its new announcement (new ports)
            await until(lambda: len(back.store.hashes_of(bob.account_bytes)) == 5, 30)
        finally:
            for node in nodes:
                if node._started and node._server is not None and node._server.is_serving():
                    await node.stop()

    run(main())


def test_a_joining_node_receives_its_share(tmp_path: Path) -> None:
    async def main() -> None:
        authorities, nodes = await _network(tmp_path, 5)
        accounts = [Account() for _ in range(30)]
        try:
            for account in accounts:
                swarm = {a.ed25519 for a in nodes[0].network.swarm(account.account_bytes)}
                entry = next(n for n in nodes if n.identity.ed25519_public_key in swarm)
                async with await HttpClient.connect(entry.port) as client:
                    status, body = await client.rpc("store", account.store(b"before the join"))
                    assert status == 200, body
            newcomer = Node(authorities.config(tmp_path / "newcomer", network=FAST))
            await newcomer.start()
            nodes.append(newcomer)
            authorities.issue(nodes)
            assert all(len(n.directory.nodes) == 6 for n in nodes)
            share = [a for a in accounts if newcomer.network.serves(a.account_bytes)]
            assert share, "the newcomer serves none of 30 accounts: the test would be empty"
            await until(lambda: all(newcomer.store.hashes_of(a.account_bytes) for a in share), 60)
            # and the nodes it displaced hand their copies over and drop them
            await until(
                lambda: all(
                    not n.store.hashes_of(a.account_bytes)
                    for a in accounts
                    for n in nodes
                    if not n.network.serves(a.account_bytes)
                ),
                60,
            )
        finally:
            await _stop(nodes)

    run(main())


def test_a_delete_reaches_a_member_whose_link_failed_when_it_was_forwarded(
    tmp_path: Path,
) -> None:
    """Anti-entropy carries messages, not deletes: the forwarding member sends it again."""
    carol = Account()

    async def main() -> None:
        _, nodes = await _network(tmp_path, 5)
        try:
            swarm = {a.ed25519 for a in nodes[0].network.swarm(carol.account_bytes)}
            members = [n for n in nodes if n.identity.ed25519_public_key in swarm]
            entry, unlucky = members[0], members[1]
            async with await HttpClient.connect(entry.port) as client:
                status, body = await client.rpc("store", carol.store(b"forget me"))
            assert status == 200, body
            await until(lambda: all(m.store.hashes_of(carol.account_bytes) for m in members), 15)

            replicator = entry.replicator
            assert replicator is not None
            real_rpc = replicator._rpc
            failed: list[bool] = []

            async def rpc_failing_once(member: Any, request: Any) -> bytes:
                if member.ed25519 == unlucky.identity.ed25519_public_key and not failed:
                    failed.append(True)
                    raise HopFailed()
                return await real_rpc(member, request)

            replicator._rpc = rpc_failing_once  # type: ignore[method-assign]
            request = carol.delete([body["hash"]])
            async with await HttpClient.connect(entry.port) as client:
                status, body = await client.rpc("delete", request)
            assert status == 200, body
            # Every member has a part in the answer (the unlucky one's may be a failure, or its
            # result from the retry), and the member asked signed its own.
            assert set(body["swarm"]) == {member.hex() for member in swarm}
            assert entry.identity.ed25519_public_key in verify_swarm("delete", request, body, swarm)
            await until(lambda: not unlucky.store.hashes_of(carol.account_bytes), 10)
            assert failed == [True]
            assert replicator.counts["forward_retried"] >= 1
            assert all(not m.store.hashes_of(carol.account_bytes) for m in members)
        finally:
            await _stop(nodes)

    run(main())


def test_a_delete_or_delete_all_at_one_member_reaches_the_whole_swarm(tmp_path: Path) -> None:
    carol = Account()

    async def main() -> None:
        _, nodes = await _network(tmp_path, 5)
        try:
            swarm = {a.ed25519 for a in nodes[0].network.swarm(carol.account_bytes)}
            members = [n for n in nodes if n.identity.ed25519_public_key in swarm]
            assert len(members) >= 3
            hashes = []
            async with await HttpClient.connect(members[0].port) as client:
                for text in (b"delete me", b"delete me with the rest"):
                    status, body = await client.rpc("store", carol.store(text))
                    assert status == 200, body
                    hashes.append(body["hash"])
            digests = {base64.b64decode(h + "=") for h in hashes}
            await until(
                lambda: all(
                    set(m.store.hashes_of(carol.account_bytes)) == digests for m in members
                ),
                15,
            )

            async def retrieved() -> list[set[str]]:
                found = []
                for member in members:
                    async with await HttpClient.connect(member.port) as client:
                        found.append({m["hash"] for m in await retrieve_all(client, carol)})
                return found

            assert await retrieved() == [set(hashes)] * len(members)

            # a delete sent to one member only; every member answers that it deleted the message
            request = carol.delete([hashes[0]])
            async with await HttpClient.connect(members[1].port) as client:
                status, body = await client.rpc("delete", request)
            assert status == 200, body
            assert set(body["swarm"]) == {member.hex() for member in swarm}
            assert set(verify_swarm("delete", request, body, swarm)) == swarm
            assert [r["deleted"] for r in body["swarm"].values()] == [[hashes[0]]] * len(swarm)
            await until(
                lambda: all(len(m.store.hashes_of(carol.account_bytes)) == 1 for m in members), 10
            )
            assert await retrieved() == [{hashes[1]}] * len(members)

            # a delete_all sent to another member only
            request = carol.delete_all(0)
            async with await HttpClient.connect(members[2].port) as client:
                status, body = await client.rpc("delete_all", request)
            assert status == 200, body
            assert set(body["swarm"]) == {member.hex() for member in swarm}
            assert set(verify_swarm("delete_all", request, body, swarm)) == swarm
            assert [r["deleted"] for r in body["swarm"].values()] == [[hashes[1]]] * len(swarm)
            await until(
                lambda: all(not m.store.hashes_of(carol.account_bytes) for m in members), 10
            )
            assert await retrieved() == [set()] * len(members)
        finally:
            await _stop(nodes)

    run(main())


def test_stores_of_one_turn_travel_to_each_member_in_one_frame_and_a_bad_receipt_fails_alone(
    tmp_path: Path,
) -> None:
    """Stores that commit together at the entry replicate together (one ``replicate`` frame per
    member for the lot); a member's receipt that does not verify fails only its own message: it
    never counts for the quorum, and the client's check leaves it out."""
    alice = Account()
    stores = 12

    async def main() -> None:
        _, nodes = await _network(tmp_path, 5)  # one swarm of five: every node is a member
        try:
            entry = nodes[0]
            liar = next(
                m
                for m in entry.network.swarm(alice.account_bytes)
                if m.ed25519 != entry.identity.ed25519_public_key
            )
            spoiled: list[bytes] = []

            def spoil_second_receipt(
                request: Replicate, receipts: list[bytes | None]
            ) -> list[bytes | None]:
                if len(receipts) > 1 and receipts[1] is not None:
                    spoiled.append(request.messages[1].hash)
                    receipts[1] = BAD_RECEIPT
                return receipts

            _spoil_receipts(entry, liar, spoil_second_receipt)
            requests = [alice.store(b"message %d" % i) for i in range(stores)]
            clients = [await HttpClient.connect(entry.port) for _ in requests]
            try:
                answers = await asyncio.gather(
                    *(c.rpc("store", r) for c, r in zip(clients, requests, strict=True))
                )
            finally:
                for client in clients:
                    await client.close()
            frames = entry.replicator.counts["replicate_frames"]
            assert frames < stores * 4, frames  # some frames carried several stores
            assert spoiled, "no frame carried two stores to the member"
            liar_key = liar.ed25519.hex()
            for request, (status, body) in zip(requests, answers, strict=True):
                assert status == 200, body
                digest = base64.b64decode(body["hash"] + "=")
                signers = verify_swarm(
                    "store",
                    request,
                    body,
                    {m.ed25519 for m in entry.network.swarm(alice.account_bytes)},
                )
                liars_part = body["swarm"][liar_key]
                if digest in spoiled:
                    # Checked if it came while the quorum was still open, else passed on as given.
                    assert liars_part.get("failed") is True or liars_part["signature"] == (
                        base64.b64encode(BAD_RECEIPT).decode("ascii")
                    ), liars_part
                    assert liar.ed25519 not in signers
                else:
                    assert liar.ed25519 in signers
                assert len(signers) >= 3
        finally:
            await _stop(nodes)

    run(main())


def test_a_receipt_that_does_not_verify_never_makes_the_quorum_and_a_late_one_is_passed_on(
    tmp_path: Path,
) -> None:
    """The receipts that make the write quorum are verified, so a 200 store carries at least W
    valid signatures: with two members silent and one answering with bad signatures, the store
    is 503, not 200 on the liar's word. A receipt that comes once the quorum holds is passed on as
    the member gave it (as Session's storage servers pass on their peers' results), and the
    client's check is what leaves a bad one out."""
    alice = Account()

    async def main() -> None:
        _, nodes = await _network(tmp_path, 5)  # one swarm of five: every node is a member
        try:
            entry = nodes[0]
            others = [
                m
                for m in entry.network.swarm(alice.account_bytes)
                if m.ed25519 != entry.identity.ed25519_public_key
            ]
            liar, _honest, *silent = others
            honest_request = entry.replicator.pool.request
            liar_delay = 0.0

            async def members(
                address: tuple[str, int], x25519: bytes, body: bytes, *args: Any
            ) -> bytes:
                request = decode_request(body, max_items=1000)
                if not isinstance(request, Replicate):
                    return await honest_request(address, x25519, body, *args)
                if any(x25519 == m.x25519 for m in silent) and not liar_delay:
                    raise HopFailed()
                answer = await honest_request(address, x25519, body, *args)
                if x25519 != liar.x25519:
                    return answer
                await asyncio.sleep(liar_delay)
                receipts = decode_receipts(answer, expected=len(request.messages))
                return encode_receipts([BAD_RECEIPT if r is not None else None for r in receipts])

            entry.replicator.pool.request = members  # type: ignore[method-assign,assignment]
            swarm = {m.ed25519 for m in entry.network.swarm(alice.account_bytes)}
            async with await HttpClient.connect(entry.port) as client:
                # Entry, the honest member and the liar: three answers, two valid signatures.
                status, body = await client.rpc("store", alice.store(b"on the liar's word"))
                assert status == 503, body
                assert "held by 2 of the 3" in str(body), body
                assert entry.replicator.counts["bad_receipt"] == 1

                # Every member answers; the liar's bad receipt comes after the quorum holds.
                liar_delay = 0.2
                request = alice.store(b"the liar is late")
                status, body = await client.rpc("store", request)
            assert status == 200, body
            assert body["swarm"][liar.ed25519.hex()]["signature"] == (
                base64.b64encode(BAD_RECEIPT).decode("ascii")
            )
            assert entry.replicator.counts["bad_receipt"] == 1  # not checked: the quorum held
            signers = verify_swarm("store", request, body, swarm)
            assert liar.ed25519 not in signers
            assert len(signers) == 4
        finally:
            await _stop(nodes)

    run(main())


def test_background_pushes_count_only_receipts_that_verify(tmp_path: Path) -> None:
    """What a background push counts as taken (anti-entropy's pushes, and hand-over, which drops
    this node's copy of an account on that count) is only what a receipt that verifies says: a
    member that answers with bad signatures holds nothing on its word."""
    alice = Account()

    async def main() -> None:
        _, nodes = await _network(tmp_path, 5)  # one swarm of five: every node is a member
        try:
            entry = nodes[0]
            async with await HttpClient.connect(entry.port) as client:
                for i in range(3):
                    status, body = await client.rpc("store", alice.store(b"hand over %d" % i))
                    assert status == 200, body
            liar, honest, *_ = (
                m
                for m in entry.network.swarm(alice.account_bytes)
                if m.ed25519 != entry.identity.ed25519_public_key
            )

            def spoil_all(_request: Replicate, receipts: list[bytes | None]) -> list[bytes | None]:
                assert all(r is not None for r in receipts)  # it holds them: a receipt each
                return [BAD_RECEIPT] * len(receipts)

            _spoil_receipts(entry, liar, spoil_all)
            hashes = entry.store.hashes_of(alice.account_bytes)
            assert len(hashes) == 3
            assert await entry.replicator._push_all(honest, hashes) == 3
            assert await entry.replicator._push_all(liar, hashes) == 0
        finally:
            await _stop(nodes)

    run(main())


def test_past_max_background_tasks_a_store_is_not_sent_on_and_is_answered_503(
    tmp_path: Path,
) -> None:
    alice = Account()

    async def main() -> None:
        authorities = StubAuthorities(tmp_path / "authorities")
        settings = NetworkSettings(max_background_tasks=0, replication_timeout_s=2.0)
        nodes = await start_network(authorities, tmp_path, 5, network=settings)
        try:
            entry = nodes[0]
            before = entry.replicator.counts["background_full"]  # joins' syncs were refused too
            async with await HttpClient.connect(entry.port) as client:
                status, body = await client.rpc("store", alice.store(b"no room"))
            assert status == 503, body
            assert entry.replicator.counts["background_full"] - before == 4  # one a member
            assert entry.replicator.counts["replicate_frames"] == 0
            assert not entry.replicator._background
        finally:
            await _stop(nodes)

    run(main())
