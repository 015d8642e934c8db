"""Anti-entropy carries subaccount revocations (``veil.node.replication``, ``veil.node.peer_rpc``).

A member that missed a forwarded ``revoke_subaccount`` (it was down, or every retry of the
forwarded ``apply`` was lost) refuses the revoked token after one anti-entropy round; a revocation
and a later unrevocation converge to the later one on every member whatever order each learnt them
in; and a peer cannot make a node revoke or unrevoke anything with less than the owner's own
signed request, well-formed, not ahead of the clock, within the bounds, for an account both nodes
serve.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest

from node_helpers import (
    Account,
    HttpClient,
    StubAuthorities,
    now_ms,
    run,
    start_network,
    until,
)
from veil.identity import Identity
from veil.node.config import Limits, NetworkSettings
from veil.node.links import HopFailed
from veil.node.server import Node
from veil.protocol.node_rpc import (
    VERSION,
    Apply,
    Revocation,
    Revocations,
    Summary,
    decode_summary_answer,
    decode_taken,
    encode_differ,
    encode_request,
)
from veil.protocol.storage_rpc import (
    SUBACCOUNT_READ,
    Subaccount,
    retrieve_params,
    revocation_params,
    revoke_string,
    subaccount_token,
)
from veil.protocol.swarms import SwarmMap

SKEW_MS = Limits().clock_skew_ms


def _settings(**changes: Any) -> NetworkSettings:
    """Every account's swarm is every node; no background anti-entropy unless asked for."""
    base: dict[str, Any] = {
        "swarm_size": 3,
        "write_quorum": 1,
        "min_swarm_size": 1,
        "sync_interval_s": 3600.0,
        "replication_timeout_s": 2.0,
        "forward_attempts": 1,
    }
    return NetworkSettings(**(base | changes))


async def _network(tmp_path: Path, size: int, network: NetworkSettings) -> list[Node]:
    """``size`` nodes in one consensus, once the syncs each starts with every node new to it (a
    join) are over: a test then decides when anti-entropy runs."""
    authorities = StubAuthorities(tmp_path / "authorities")
    nodes = await start_network(authorities, tmp_path, size, network=network)
    await until(lambda: not any(n.replicator._background for n in nodes), 10)
    return nodes


async def _stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node._started and node._server is not None and node._server.is_serving():
            await node.stop()


def _reader(owner: Account) -> Subaccount:
    """A subaccount with read access that ``owner`` signed (a closed group's member, say)."""
    sub = Identity.generate()
    token = subaccount_token(0x05, SUBACCOUNT_READ, sub.ed25519_public_key)
    return Subaccount(owner.pubkey, token, owner.identity.sign(token), sub)


def _revocation(params: dict[str, Any]) -> Revocation:
    """The signed request of ``revocation_params``' params, as a member keeps it."""
    revoke = "revoke" in params
    texts = params["revoke" if revoke else "unrevoke"]
    return Revocation(
        revoke=revoke,
        timestamp_ms=params["timestamp"],
        tokens=tuple(base64.b64decode(t) for t in texts),
        signature=base64.b64decode(params["signature"]),
        ed25519=bytes.fromhex(params["pubkey_ed25519"]),
    )


async def _retrieve_as(node: Node, reader: Subaccount, owner: Account) -> int:
    """The status of a retrieve signed by ``reader``'s subaccount at ``node`` (``owner``'s key
    named, whose X25519 form the account is)."""
    params = retrieve_params(reader, namespace=2) | {"pubkey_ed25519": owner.ed_hex}
    async with await HttpClient.connect(node.port) as client:
        status, _ = await client.rpc("retrieve", params)
    return status


async def _apply_here(node: Node, method: str, params: dict[str, Any]) -> None:
    """``node`` applies a client's request as a forwarded one, and forwards it to nobody."""
    status, answer = await node.rpc.call({"method": method, "params": params}, forwarded=True)
    assert status == 200, answer


def _state(node: Node, account: bytes) -> tuple[Any, ...]:
    store = node.store
    return (
        store.revocation_digests([account]),
        store.revocation_decisions(account),
        sorted(r.id for r in store.revocations_of(account)),
    )


# --- a member that missed the revocation ----------------------------------------------------------


def test_a_member_whose_forwarded_revocation_was_lost_refuses_the_token_after_one_round(
    tmp_path: Path,
) -> None:
    carol = Account()
    reader = _reader(carol)

    async def main() -> None:
        nodes = await _network(tmp_path, 3, _settings())
        try:
            entry, unlucky, other = nodes
            for node in nodes:
                assert await _retrieve_as(node, reader, carol) == 200
            replicator = entry.replicator
            real_rpc = replicator._rpc

            async def lose_applies_to_unlucky(member: Any, request: Any) -> bytes:
                if member.ed25519 == unlucky.identity.ed25519_public_key and isinstance(
                    request, Apply
                ):
                    raise HopFailed()
                return await real_rpc(member, request)

            replicator._rpc = lose_applies_to_unlucky  # type: ignore[method-assign]
            async with await HttpClient.connect(entry.port) as client:
                status, body = await client.rpc(
                    "revoke_subaccount", revocation_params(carol.identity, [reader.token])
                )
            assert status == 200, body
            assert body["swarm"][unlucky.identity.ed25519_public_key.hex()]["failed"]
            assert await _retrieve_as(entry, reader, carol) == 401
            assert await _retrieve_as(other, reader, carol) == 401
            # Every retry was lost: the unlucky member still lets the removed reader in.
            assert await _retrieve_as(unlucky, reader, carol) == 200
            assert not unlucky.store.is_revoked(carol.account_bytes, reader.token)

            assert unlucky.directory.own is not None
            await replicator.sync_with(unlucky.directory.own)  # one round, entry → unlucky

            assert unlucky.store.is_revoked(carol.account_bytes, reader.token)
            assert await _retrieve_as(unlucky, reader, carol) == 401
            assert _state(unlucky, carol.account_bytes) == _state(entry, carol.account_bytes)
            assert replicator.counts["revocations_pushed"] == 1
        finally:
            await _stop(nodes)

    run(main())


def test_a_member_that_was_down_when_a_token_was_revoked_refuses_it_once_back(
    tmp_path: Path,
) -> None:
    carol = Account()
    reader = _reader(carol)

    async def main() -> None:
        authorities = StubAuthorities(tmp_path / "authorities")
        network = _settings(sync_interval_s=0.5)
        nodes = await start_network(authorities, tmp_path, 3, network=network)
        try:
            down = nodes[2]
            await down.stop()
            async with await HttpClient.connect(nodes[0].port) as client:
                status, body = await client.rpc(
                    "revoke_subaccount", revocation_params(carol.identity, [reader.token])
                )
            assert status == 200, body
            back = Node(down.config)
            nodes[2] = back
            await back.start()
            assert not back.store.is_revoked(carol.account_bytes, reader.token)
            authorities.issue(nodes)  # its new announcement (new ports)
            await until(lambda: back.store.is_revoked(carol.account_bytes, reader.token), 15)
            assert await _retrieve_as(back, reader, carol) == 401
        finally:
            await _stop(nodes)

    run(main())


# --- ordering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_revocation_and_a_later_unrevocation_converge_to_the_later_everywhere(
    tmp_path: Path, seed: int
) -> None:
    """Each member learns the two (as forwarded applies) in its own order, or only one, or
    neither — a late retry of the revocation after the unrevocation among them; anti-entropy
    then brings every member to the unrevocation, the later of the two by signed timestamp."""
    carol = Account()
    reader = _reader(carol)
    rng = random.Random(seed)
    histories: list[list[str]] = [["revoke"], ["unrevoke"], ["unrevoke", "revoke"], []]
    histories.append(rng.choice([["revoke", "unrevoke"], ["revoke"], ["unrevoke", "revoke"]]))
    rng.shuffle(histories)

    async def main() -> None:
        nodes = await _network(tmp_path, 5, _settings(swarm_size=5))
        try:
            now = now_ms()
            requests = {
                "revoke": revocation_params(
                    carol.identity, [reader.token], timestamp_ms=now - 2_000
                ),
                "unrevoke": revocation_params(
                    carol.identity, [reader.token], unrevoke=True, timestamp_ms=now - 1_000
                ),
            }
            for node, history in zip(nodes, histories, strict=True):
                for kind in history:
                    await _apply_here(node, f"{kind}_subaccount", requests[kind])
            account = carol.account_bytes
            revoked = [n.store.is_revoked(account, reader.token) for n in nodes]
            assert revoked == [bool(h) and h[-1] == "revoke" for h in histories]
            # Anti-entropy rounds, each node with one other in a random order, until all agree.
            pairs = [(a, b) for a in nodes for b in nodes if a is not b]
            for _ in range(3):
                rng.shuffle(pairs)
                for asker, peer in pairs[:8]:
                    assert peer.directory.own is not None
                    await asker.replicator.sync_with(peer.directory.own)
                if len({str(_state(n, account)) for n in nodes}) == 1:
                    break
            assert len({str(_state(n, account)) for n in nodes}) == 1
            for node in nodes:
                assert not node.store.is_revoked(account, reader.token)
                assert await _retrieve_as(node, reader, carol) == 200
                [(revoke, timestamp, _id)] = node.store.revocation_decisions(account).values()
                assert (revoke, timestamp) == (False, now - 1_000)
        finally:
            await _stop(nodes)

    run(main())


def test_a_later_revocation_wins_over_an_earlier_unrevocation_and_replays_change_nothing(
    tmp_path: Path,
) -> None:
    carol = Account()
    reader = _reader(carol)

    async def main() -> None:
        nodes = await _network(tmp_path, 2, _settings(swarm_size=2))
        try:
            node, member = nodes
            now = now_ms()
            unrevoke = revocation_params(
                carol.identity, [reader.token], unrevoke=True, timestamp_ms=now - 5_000
            )
            revoke = revocation_params(carol.identity, [reader.token], timestamp_ms=now - 4_000)
            await _apply_here(node, "revoke_subaccount", revoke)
            peer = member.identity.ed25519_public_key
            before = _state(node, carol.account_bytes)
            # The older unrevocation, pushed by a member (or replayed), loses to the revocation.
            body = encode_request(Revocations([(carol.account_bytes, [_revocation(unrevoke)])]))
            assert decode_taken(await node.peer_rpc.handle(peer, body)) == 0
            assert _state(node, carol.account_bytes) == before
            assert node.store.is_revoked(carol.account_bytes, reader.token)
            # The revocation itself, pushed again, is a no-op.
            body = encode_request(Revocations([(carol.account_bytes, [_revocation(revoke)])]))
            assert decode_taken(await node.peer_rpc.handle(peer, body)) == 0
            assert _state(node, carol.account_bytes) == before
            # A member that learnt the unrevocation only takes the revocation by anti-entropy.
            await _apply_here(member, "unrevoke_subaccount", unrevoke)
            assert member.directory.own is not None
            await node.replicator.sync_with(member.directory.own)
            assert member.store.is_revoked(carol.account_bytes, reader.token)
            assert _state(member, carol.account_bytes) == before
        finally:
            await _stop(nodes)

    run(main())


# --- hostile peers --------------------------------------------------------------------------------


def _account_of_swarm(node: Node, members: set[bytes]) -> Account:
    """An account whose swarm, in ``node``'s view, is exactly ``members``."""
    directory = node.directory
    swarms = SwarmMap(directory.node_ids(), len(members), directory.placements)
    for _ in range(2_000):
        account = Account()
        if set(swarms.swarm(account.account_bytes)) == members:
            return account
    raise AssertionError("no account with that swarm in 2,000 tries")


def _signed_by(signer: Identity, revoke: bool, timestamp: int, tokens: list[bytes]) -> Revocation:
    method = "revoke_subaccount" if revoke else "unrevoke_subaccount"
    return Revocation(
        revoke,
        timestamp,
        tuple(tokens),
        signer.sign(revoke_string(method, timestamp, tokens)),
        signer.ed25519_public_key,
    )


def _token() -> bytes:
    return subaccount_token(0x05, SUBACCOUNT_READ, Identity.generate().ed25519_public_key)


def test_a_peer_cannot_plant_a_revocation_the_owner_did_not_sign(tmp_path: Path) -> None:
    carol, mallory = Account(), Account()

    async def main() -> None:
        nodes = await _network(tmp_path, 2, _settings(swarm_size=2))
        try:
            node, member = nodes
            peer = member.identity.ed25519_public_key
            account = carol.account_bytes
            limits = node.config.limits
            token = _token()
            now = now_ms()
            valid = _signed_by(carol.identity, True, now, [token])
            sub = Identity.generate()
            forged = {
                "bad signature": dataclasses.replace(valid, signature=bytes(64)),
                "a stranger's signature": dataclasses.replace(
                    _signed_by(mallory.identity, True, now, [token]), ed25519=None
                ),
                "a stranger's key as pubkey_ed25519": _signed_by(
                    mallory.identity, True, now, [token]
                ),
                "carol's key, a stranger's signature": dataclasses.replace(
                    _signed_by(mallory.identity, True, now, [token]),
                    ed25519=carol.identity.ed25519_public_key,
                ),
                "carol's signature of other tokens": dataclasses.replace(valid, tokens=(_token(),)),
                "a revocation signed as an unrevocation": dataclasses.replace(
                    _signed_by(carol.identity, False, now, [token]), revoke=True
                ),
                "another timestamp than signed": dataclasses.replace(valid, timestamp_ms=now + 1),
                "a subaccount's signature": _signed_by(sub, True, now, [token]),
                "ahead of the clock": _signed_by(
                    carol.identity, True, now + SKEW_MS + 60_000, [token]
                ),
                "too small for milliseconds": _signed_by(
                    carol.identity, True, 999_999_999, [token]
                ),
                "more tokens than a client may revoke": _signed_by(
                    carol.identity,
                    True,
                    now,
                    [token, *(_token() for _ in range(limits.account_max_revoked))],
                ),
            }
            unrevoke = _signed_by(carol.identity, False, now, [token])
            before = _state(node, account)
            for name, revocation in forged.items():
                body = encode_request(Revocations([(account, [revocation])]))
                assert decode_taken(await node.peer_rpc.handle(peer, body)) == 0, name
                assert _state(node, account) == before, name
                assert not node.store.is_revoked(account, token), name
            assert node.peer_rpc.refusals["invalid_revocation"] == len(forged)
            # More revocations for one account than it can hold: all refused, the valid too.
            crowd = [
                valid,
                *([unrevoke] * (limits.account_max_revoked + limits.account_max_unrevoked)),
            ]
            body = encode_request(Revocations([(account, crowd)]))
            assert decode_taken(await node.peer_rpc.handle(peer, body)) == 0
            # More than one exchange may carry: the push is refused whole.
            many = [(Account().account_bytes, [unrevoke]) for _ in range(1_000)]
            body = encode_request(Revocations([(account, [valid]), *many]))
            assert decode_taken(await node.peer_rpc.handle(peer, body)) == 0
            assert node.peer_rpc.refusals["too_many_revocations"] == 1
            assert _state(node, account) == before
            # The owner's own, from the same member: taken.
            body = encode_request(Revocations([(account, [valid])]))
            assert decode_taken(await node.peer_rpc.handle(peer, body)) == 1
            assert node.store.is_revoked(account, token)
            assert node.store.revocations_of(account) == [valid]
        finally:
            await _stop(nodes)

    run(main())


def test_malformed_or_old_version_revocation_bodies_are_refused_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    carol = Account()

    async def main() -> None:
        nodes = await _network(tmp_path, 2, _settings(swarm_size=2))
        try:
            node, member = nodes
            peer = member.identity.ed25519_public_key
            account = carol.account_bytes
            token = _token()
            good = _signed_by(carol.identity, True, now_ms(), [token])
            entry = [1, good.timestamp_ms, [token], good.signature, good.ed25519]
            shapes: list[Any] = [
                [2, *entry[1:]],  # no such kind
                [True, *entry[1:]],  # a boolean is not a kind
                [1, -1, *entry[2:]],
                [1, good.timestamp_ms, [], *entry[3:]],  # no token
                [1, good.timestamp_ms, [token[:35]], *entry[3:]],
                [1, good.timestamp_ms, token, *entry[3:]],  # a token, not a list
                [*entry[:3], good.signature[:63], entry[4]],
                [*entry[:4], good.ed25519[:31] if good.ed25519 else b""],
                [*entry[:4], good.ed25519.hex() if good.ed25519 else ""],
                entry[:4],
                [*entry, None],
                {"kind": 1},
            ]
            bodies = [
                bytes([VERSION])
                + msgpack.packb({"m": "revocations", "accounts": [[account, [shape]]]})
                for shape in shapes
            ]
            bodies += [
                bytes([VERSION])
                + msgpack.packb({"m": "revocations", "accounts": [[account[:32], [entry]]]}),
                bytes([VERSION])
                + msgpack.packb({"m": "revocations", "accounts": [account, [entry]]}),
                bytes([VERSION]) + msgpack.packb({"m": "revocations"}),
                bytes([VERSION])
                + msgpack.packb({"m": "summary", "accounts": [[account, 0, bytes(32), b"short"]]}),
            ]
            for body in bodies:
                with pytest.raises(HopFailed):
                    await node.peer_rpc.handle(peer, body)
            assert node.peer_rpc.refusals["malformed"] == len(bodies)
            # A body of the version before (messages only) is refused whole, as such.
            old = bytes([VERSION - 1]) + encode_request(Summary([(account, 0, bytes(32))]))[1:]
            for _ in range(2):
                with pytest.raises(HopFailed):
                    await node.peer_rpc.handle(peer, old)
            assert node.peer_rpc.refusals["malformed"] == len(bodies) + 2
            told = [r for r in caplog.records if "node RPC of version" in r.getMessage()]
            assert len(told) == 1  # once per peer
            assert "version 2; this node speaks version 3" in told[0].getMessage()
            assert node.store.revocation_digests([account]) == {}
            assert not node.store.is_revoked(account, token)
        finally:
            await _stop(nodes)

    with caplog.at_level(logging.WARNING, logger="veil.node.peer_rpc"):
        run(main())


def test_revocations_of_an_account_the_two_do_not_share_are_neither_taken_nor_given(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        network = _settings(swarm_size=2, handover_window_s=0.0)
        nodes = await _network(tmp_path, 3, network)
        try:
            node = nodes[0]
            ids = [n.identity.ed25519_public_key for n in nodes]
            # An account of node and outsider's swarm: member is not in it.
            dave = _account_of_swarm(node, {ids[0], ids[2]})
            token = _token()
            revoke = revocation_params(dave.identity, [token])
            await _apply_here(node, "revoke_subaccount", revoke)
            # member pushes an unrevocation, and asks for the revocations: nothing either way.
            unrevoke = _signed_by(dave.identity, False, now_ms(), [token])
            before = _state(node, dave.account_bytes)
            peer = ids[1]
            body = encode_request(Revocations([(dave.account_bytes, [unrevoke])]))
            assert decode_taken(await node.peer_rpc.handle(peer, body)) == 0
            assert _state(node, dave.account_bytes) == before
            assert node.store.is_revoked(dave.account_bytes, token)
            summary = Summary([(dave.account_bytes, 0, bytes(32))], {dave.account_bytes: bytes(32)})
            answer = decode_summary_answer(
                await node.peer_rpc.handle(peer, encode_request(summary)), max_items=100
            )
            assert (answer.differ, answer.revoked) == ([], [])
            assert node.peer_rpc.refusals["peer_not_in_swarm"] >= 2
            # The outsider, in the swarm, is given them.
            answer = decode_summary_answer(
                await node.peer_rpc.handle(ids[2], encode_request(summary)), max_items=100
            )
            assert answer.revoked == [(dave.account_bytes, [_revocation(revoke)])]
        finally:
            await _stop(nodes)

    run(main())


def test_a_hostile_summary_answer_plants_nothing_and_breaks_nothing(tmp_path: Path) -> None:
    carol, mallory = Account(), Account()

    async def main() -> None:
        nodes = await _network(tmp_path, 2, _settings(swarm_size=2))
        try:
            node, member = nodes
            account = carol.account_bytes
            token = _token()
            await _apply_here(
                node,
                "unrevoke_subaccount",
                revocation_params(carol.identity, [token], unrevoke=True),
            )
            before = _state(node, account)
            now = now_ms()
            answers = [
                encode_differ(
                    [], False, [(account, [_signed_by(mallory.identity, True, now, [token])])]
                ),
                encode_differ(
                    [],
                    False,
                    [(account, [_signed_by(carol.identity, True, now + 2 * SKEW_MS, [token])])],
                ),
                encode_differ(
                    [],
                    False,
                    [(Account().account_bytes, [_signed_by(carol.identity, True, now, [token])])],
                ),
                bytes([VERSION]) + b"\x81\xa6differ\x90",
                bytes([VERSION - 1]) + b"\x80",
                b"",
            ]
            replicator = node.replicator
            real_rpc = replicator._rpc
            pushed: list[Any] = []

            for answer in answers:

                async def hostile(peer: Any, request: Any, answer: bytes = answer) -> bytes:
                    if isinstance(request, Summary):
                        return answer
                    pushed.append(request)
                    return await real_rpc(peer, request)

                replicator._rpc = hostile  # type: ignore[method-assign,assignment]
                assert member.directory.own is not None
                assert await replicator.sync_with(member.directory.own) == (0, 0)
                assert _state(node, account) == before
            assert replicator.counts["revocations_refused"] == 2
            assert replicator.counts["bad_answer"] >= 3
            # The peer said it has none for carol: this node offered it its own, and nothing else.
            assert {type(r) for r in pushed} <= {Revocations}
        finally:
            await _stop(nodes)

    run(main())
