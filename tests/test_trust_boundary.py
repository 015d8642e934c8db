"""What a node's link port gives to those not entitled to it, and what a member may make it do.

The attacks that worked against version-1 links: ``fetch`` another account's messages, ``replicate``
a message into another account's namespace 2 with a lifetime of 2**62 ms and get a signed receipt
for it, ``apply`` a client request as if a swarm member had forwarded it. A stranger (raw frames, a
broken handshake, a key that is not a member) gets the connection closed and not one byte; a member
that is not in an account's swarm gets nothing for that account; a member that is gets only what a
client could have had: messages checked as a client's store is, receipts for what was stored, and
the client's own signed writes (delete, delete_all, delete_before, expire, expire_all,
revoke_subaccount, unrevoke_subaccount), each answered with the member's own signed result.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_helpers import (
    TTL_MS,
    Account,
    HttpClient,
    StubAuthorities,
    answer_until_closed,
    link_pool,
    now_ms,
    peer_info,
    run,
    start_network,
)
from veil import _core
from veil.identity import Identity
from veil.node.config import LinkSettings, NetworkSettings
from veil.node.links import HopFailed, LinkPool
from veil.node.server import Node
from veil.protocol.hashes import hash_b64, message_hash
from veil.protocol.link import HANDSHAKE_RESPONSE_LEN, FrameDecoder, FrameKind, encode_frame
from veil.protocol.node_rpc import (
    VERSION,
    Apply,
    Fetch,
    Replicate,
    Request,
    Revocation,
    Revocations,
    Summary,
    decode_differ,
    decode_messages,
    decode_receipts,
    decode_status,
    decode_summary_answer,
    decode_taken,
    encode_request,
)
from veil.protocol.replication import Message, StoreAuth, receipt_bytes
from veil.protocol.storage_rpc import (
    SUBACCOUNT_WRITE,
    delete_all_string,
    delete_before_params,
    delete_string,
    expire_all_params,
    member_signed,
    revocation_params,
    revoke_string,
    store_string,
    subaccount_token,
)
from veil.protocol.swarms import SwarmMap

LINKS = LinkSettings(handshake_timeout_s=0.5, connect_timeout_s=1.0, backoff_max_s=0.5)
RPC_TIMEOUT_S = 3.0


@contextlib.asynccontextmanager
async def _network(tmp_path: Path, size: int, swarm_size: int) -> AsyncIterator[list[Node]]:
    """``size`` in-process nodes in one consensus."""
    network = NetworkSettings(swarm_size=swarm_size, write_quorum=1, min_swarm_size=1)
    authorities = StubAuthorities(tmp_path / "authorities")
    nodes = await start_network(authorities, tmp_path, size, network=network, links=LINKS)
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def _ask(pool: LinkPool, node: Node, request: Request) -> bytes:
    """One node RPC to ``node`` over the pool's (authenticated) link."""
    return await pool.request(
        node.peer_info.link,
        node.identity.x25519_public_key,
        encode_request(request),
        RPC_TIMEOUT_S,
        FrameKind.RPC,
    )


async def _send_raw(node: Node, payload: bytes) -> tuple[bytes, bool]:
    """Open a plain TCP connection to the link port, send ``payload``, and see what comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.link_port)
    try:
        writer.write(payload)
        await writer.drain()
        return await answer_until_closed(reader)
    finally:
        writer.close()


async def _store_over_http(node: Node, account: Account, data: bytes, namespace: int = 0) -> bytes:
    """Store ``data`` for ``account`` at ``node`` as a client does; the message hash."""
    async with await HttpClient.connect(node.port) as client:
        status, body = await client.rpc("store", account.store(data, namespace=namespace))
    assert status == 200, body
    digest = message_hash(account.account_bytes, namespace, data)
    assert body["hash"] == hash_b64(digest)
    return digest


def _auth(signer: Identity, namespace: int, sig_timestamp_ms: int) -> StoreAuth:
    signature = signer.sign(store_string(namespace, sig_timestamp_ms))
    return StoreAuth(sig_timestamp_ms, signer.ed25519_public_key, signature)


def _subaccount_auth(
    owner: Identity, token_signer: Identity, namespace: int, sig_timestamp_ms: int
) -> StoreAuth:
    """A store signed by a fresh subaccount with write access, whose token ``token_signer``
    signed (the owner, for a valid one) and which names ``owner``'s key as the account's."""
    sub = Identity.generate()
    token = subaccount_token(0x05, SUBACCOUNT_WRITE, sub.ed25519_public_key)
    signature = sub.sign(store_string(namespace, sig_timestamp_ms))
    return StoreAuth(
        sig_timestamp_ms, owner.ed25519_public_key, signature, token, token_signer.sign(token)
    )


def _message(
    account: Account,
    data: bytes,
    *,
    namespace: int = 0,
    timestamp_ms: int | None = None,
    expiry_ms: int | None = None,
    auth: StoreAuth | None = None,
    arrival_us: int | None = None,
) -> Message:
    """A message as a member replicates it; it arrived at its timestamp unless ``arrival_us``
    says otherwise."""
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    expiry = timestamp + TTL_MS if expiry_ms is None else expiry_ms
    arrival = timestamp * 1000 if arrival_us is None else arrival_us
    digest = message_hash(account.account_bytes, namespace, data)
    return Message(account.account_bytes, namespace, timestamp, expiry, data, digest, auth, arrival)


def _v1_message(message: Message) -> dict[str, Any]:
    """A message as version-1 links carried it (JSON)."""
    return {
        "account": message.account.hex(),
        "namespace": message.namespace,
        "timestamp": message.timestamp_ms,
        "expiry": message.expiry_ms,
        "data": base64.b64encode(message.data).decode("ascii"),
    }


def _held(node: Node, *digests: bytes) -> set[bytes]:
    return {m.hash for m in node.store.messages_of(list(digests))}


def _account_served_only_by(node: Node) -> Account:
    """An account whose swarm of one, among the nodes of ``node``'s consensus (placed as it
    says), is ``node``: ``node`` ranks first, so no subset of the nodes (no earlier view within
    the hand-over window) puts another in it."""
    directory = node.directory
    swarms = SwarmMap(directory.node_ids(), 1, directory.placements)
    for _ in range(1_000):
        account = Account()
        if swarms.swarm(account.account_bytes)[0] == node.identity.ed25519_public_key:
            return account
    raise AssertionError("no account maps to the node in 1,000 tries")


# --- strangers ------------------------------------------------------------------------------------


def test_raw_version_1_frames_on_the_link_port_get_the_connection_closed_and_not_one_byte(
    tmp_path: Path,
) -> None:
    alice = Account()

    async def main() -> None:
        async with _network(tmp_path, 1, swarm_size=1) as [node]:
            plain = await _store_over_http(node, alice, b"alice's message")
            private = await _store_over_http(node, alice, b"alice's namespace 2", namespace=2)
            forged = _message(alice, b"planted by a stranger", namespace=2, expiry_ms=2**62)
            before = node.store.totals()
            v1_bodies = [
                {"method": "fetch", "hashes": [plain.hex(), private.hex()]},
                {"method": "fetch", "hashes": [hash_b64(plain), hash_b64(private)]},
                {"method": "replicate", "messages": [_v1_message(forged)]},
                {"method": "summary", "accounts": [[alice.account_bytes.hex(), 0, ""]]},
                {
                    "method": "apply",
                    "request": {"method": "delete_all", "params": alice.delete_all("all")},
                },
            ]
            v2_bodies = [
                encode_request(Fetch([plain, private])),
                encode_request(Replicate([forged])),
                encode_request(Summary([(alice.account_bytes, 0, bytes(32))])),
                encode_request(Apply("delete_all", alice.delete_all("all"))),
            ]
            payloads = [encode_frame(FrameKind.RPC, 1, orjson.dumps(b)) for b in v1_bodies]
            payloads += [encode_frame(FrameKind.RPC, 7, body) for body in v2_bodies]
            payloads += [
                encode_frame(FrameKind.PING, 3),
                encode_frame(FrameKind.REQUEST, 5, b"\x01" + bytes(200)),
                b"".join(payloads),  # all of them in one write
            ]
            for payload in payloads:
                answer, closed = await _send_raw(node, payload)
                assert closed, payload[:40]
                assert answer == b"", payload[:40]
            assert node.store.totals() == before
            assert _held(node, plain, private, forged.hash) == {plain, private}
            assert node.link_events["closed_bad_handshake"] == len(payloads)
            assert node.link_events["opened_accepting"] == 0
            assert sum(node.peer_rpc.counts.values()) == 0

    run(main())


def test_a_broken_or_misaddressed_handshake_is_closed_without_an_answer(tmp_path: Path) -> None:
    async def main() -> None:
        async with _network(tmp_path, 2, swarm_size=2) as [node, member]:
            valid = member.key.link_initiate(node.identity.x25519_public_key, now_ms()).message
            elsewhere = member.key.link_initiate(
                Identity.generate().x25519_public_key, now_ms()
            ).message
            attempts = {
                "garbage": b"\x16\x03\x01\x02\x00" + os.urandom(300),
                "right length, wrong bytes": b"\x00\x68" + os.urandom(104),
                "right length, zero bytes": b"\x00\x68" + bytes(104),
                "addressed to another key": elsewhere,
                "a valid handshake with bytes before the answer": valid + b"early",
            }
            for name, payload in attempts.items():
                answer, closed = await _send_raw(node, payload)
                assert closed, name
                assert answer == b"", name
            assert node.link_events["closed_bad_handshake"] == len(attempts)
            # Half a valid handshake, then silence: closed at the handshake timeout, unanswered.
            answer, closed = await _send_raw(node, valid[:50])
            assert closed
            assert answer == b""
            assert node.link_events["closed_handshake_timeout"] == 1
            # the member's own sync when the consensus listed the two, over its link
            assert set(node.peer_rpc.counts) <= {"summary", "fetch"}

    run(main())


def test_a_valid_handshake_with_a_key_that_is_not_a_member_is_closed_unanswered(
    tmp_path: Path,
) -> None:
    stranger = _core.NodeKey(_core.x25519_generate_secret())

    async def main() -> None:
        async with _network(tmp_path, 1, swarm_size=1) as [node]:
            handshake = stranger.link_initiate(node.identity.x25519_public_key, now_ms()).message
            answer, closed = await _send_raw(node, handshake)
            assert closed
            assert answer == b""
            assert node.link_events["refused_not_admitted"] == 1
            async with link_pool(stranger, LINKS) as pool:
                with pytest.raises(HopFailed):
                    await _ask(pool, node, Fetch([bytes(32)]))
            assert node.link_events["refused_not_admitted"] == 2
            assert node.link_events["opened_accepting"] == 0
            assert sum(node.peer_rpc.counts.values()) == 0

    run(main())


def test_a_replayed_handshake_message_opens_no_link_and_leaves_the_members_link_open(
    tmp_path: Path,
) -> None:
    member = Identity.generate()

    async def main() -> None:
        async with _network(tmp_path, 1, swarm_size=1) as [node]:
            node.set_peers([peer_info(member)])
            key = _core.NodeKey(member.x25519_secret_key)
            initiator = key.link_initiate(node.identity.x25519_public_key, now_ms())
            captured = initiator.message
            connections = [await asyncio.open_connection("127.0.0.1", node.link_port)]
            try:
                reader, writer = connections[0]
                writer.write(captured)
                cipher = initiator.finish(await reader.readexactly(HANDSHAKE_RESPONSE_LEN))
                # Someone who saw the member's first message on the wire sends it again, twice,
                # and keeps those connections open.
                for _ in range(2):
                    connections.append(await asyncio.open_connection("127.0.0.1", node.link_port))
                    connections[-1][1].write(captured)
                replays = [
                    await answer_until_closed(replay_reader, timeout=1.0)
                    for replay_reader, _ in connections[1:]
                ]
                writer.write(cipher.seal(encode_frame(FrameKind.PING, 1)))
                await writer.drain()
                record = await asyncio.wait_for(reader.read(65_536), 2.0)
                assert [f.kind for f in FrameDecoder().feed(cipher.open(record))] == [
                    FrameKind.PONG
                ], "the member's link was closed"
                assert node.link_events["closed_beyond_links_per_peer"] == 0
                assert replays == [(b"", True)] * 2
            finally:
                for _, held in connections:
                    held.close()

    run(main())


# --- members outside the account's swarm ----------------------------------------------------------


@pytest.mark.parametrize("member", ["a node in the view", "a configured peer"])
def test_a_member_outside_an_accounts_swarm_gets_nothing_for_that_account(
    tmp_path: Path, member: str
) -> None:
    configured = Identity.generate()

    async def main() -> None:
        async with _network(tmp_path, 3, swarm_size=1) as nodes:
            node, other = nodes[0], nodes[1]
            if member == "a node in the view":
                asker, asker_id = other.key, other.identity.ed25519_public_key
            else:
                node.set_peers([peer_info(configured)])  # admitted, but in no swarm
                asker = _core.NodeKey(configured.x25519_secret_key)
                asker_id = configured.ed25519_public_key
            alice = _account_served_only_by(node)
            mallory = Account()
            stored = await _store_over_http(node, alice, b"alice's")
            planted = _message(alice, b"planted")
            before = node.store.totals()
            async with link_pool(asker, LINKS) as pool:
                messages, _ = decode_messages(await _ask(pool, node, Fetch([stored])), max_items=10)
                assert messages == []
                receipts = decode_receipts(await _ask(pool, node, Replicate([planted])), expected=1)
                assert receipts == [None]
                differ, _ = decode_differ(
                    await _ask(pool, node, Summary([(alice.account_bytes, 0, bytes(32))])),
                    max_items=10,
                )
                assert differ == []
                for method, params in [
                    ("delete_all", alice.delete_all("all")),
                    ("delete", alice.delete([hash_b64(stored)])),
                ]:
                    status, body = decode_status(await _ask(pool, node, Apply(method, params)))
                    assert (status, body) == (421, b"not a member of this account's swarm")
                # Nor for an account this node does not serve at all.
                receipts = decode_receipts(
                    await _ask(pool, node, Replicate([_message(mallory, b"m")])), expected=1
                )
                assert receipts == [None]
                # The link was admitted: the refusals are the node RPC's, account by account.
                assert asker_id in {link.peer for link in node.gate.links()}
            assert node.store.totals() == before
            assert _held(node, stored, planted.hash) == {stored}
            assert node.peer_rpc.refusals["peer_not_in_swarm"] >= 5

    run(main())


# --- a member inside the account's swarm ----------------------------------------------------------


def test_a_swarm_member_gets_receipts_only_for_messages_a_client_could_have_stored(
    tmp_path: Path,
) -> None:
    carol, mallory = Account(), Account()

    async def main() -> None:
        async with _network(tmp_path, 2, swarm_size=2) as [node, member]:
            assert node.network.swarms.holds(
                member.identity.ed25519_public_key, carol.account_bytes
            )
            now = now_ms()
            limit = node.config.limits.max_message_bytes
            day = 24 * 3600 * 1000
            refused = [
                _message(carol, b"unsigned namespace 2", namespace=2),
                _message(
                    carol,
                    b"lives forever",
                    namespace=2,
                    expiry_ms=2**62,
                    auth=_auth(carol.identity, 2, now),
                ),
                _message(
                    carol, b"from the future", timestamp_ms=now + 3_600_000, arrival_us=now * 1000
                ),
                _message(carol, b"arrives in the future", arrival_us=(now + 3_600_000) * 1000),
                _message(carol, b"expired", timestamp_ms=now - 2 * day, expiry_ms=now - day),
                _message(carol, bytes(limit + 1)),
                _message(
                    carol,
                    b"signed by mallory",
                    namespace=2,
                    auth=_auth(mallory.identity, 2, now),
                ),
                _message(
                    carol,
                    b"carol's key, mallory's signature",
                    namespace=2,
                    auth=dataclasses.replace(
                        _auth(mallory.identity, 2, now), signer=carol.identity.ed25519_public_key
                    ),
                ),
                _message(
                    carol,
                    b"signed by carol ten minutes from its arrival",
                    namespace=2,
                    auth=_auth(carol.identity, 2, now),
                    arrival_us=(now - 600_000) * 1000,
                ),
                _message(
                    carol,
                    b"a subaccount token mallory signed for carol",
                    namespace=2,
                    auth=_subaccount_auth(carol.identity, mallory.identity, 2, now),
                ),
            ]
            taken = [
                _message(carol, bytes(limit)),
                _message(
                    carol, b"signed by carol", namespace=2, auth=_auth(carol.identity, 2, now)
                ),
                _message(
                    carol,
                    b"by a subaccount carol signed",
                    namespace=2,
                    auth=_subaccount_auth(carol.identity, carol.identity, 2, now),
                ),
                # A public inbox (namespace divisible by 10) takes anyone's messages unsigned.
                _message(carol, b"unsigned namespace 10", namespace=10),
                # A timestamp may be old: only the expiry says whether a message is live.
                _message(
                    carol, b"stored two days ago", timestamp_ms=now - 2 * day, expiry_ms=now + day
                ),
            ]
            before_count, before_bytes = node.store.totals()
            async with link_pool(member.key, LINKS) as pool:
                answer = await _ask(pool, node, Replicate([*refused, *taken]))
            receipts = decode_receipts(answer, expected=len(refused) + len(taken))
            assert receipts[: len(refused)] == [None] * len(refused)
            for message, receipt in zip(taken, receipts[len(refused) :], strict=True):
                assert receipt is not None
                # What Session's storage servers sign for a store: the hash as base64 text.
                signed = receipt_bytes(message.hash)
                assert signed == hash_b64(message.hash).encode("ascii")
                assert _core.ed25519_verify(node.identity.ed25519_public_key, signed, receipt)
            all_hashes = [m.hash for m in [*refused, *taken]]
            assert _held(node, *all_hashes) == {m.hash for m in taken}
            assert node.store.totals() == (
                before_count + len(taken),
                before_bytes + sum(len(m.data) for m in taken),
            )
            assert node.peer_rpc.refusals["invalid_message"] == len(refused)

    run(main())


def test_apply_runs_only_a_clients_own_signed_swarm_writes(tmp_path: Path) -> None:
    carol, mallory = Account(), Account()

    async def main() -> None:
        async with _network(tmp_path, 2, swarm_size=2) as [node, member]:
            kept = await _store_over_http(node, carol, b"kept")
            deleted = await _store_over_http(node, carol, b"deleted by carol herself")
            kept_text = hash_b64(kept)
            [expiry_before] = node.store.expiries(carol.account_bytes, [kept]).values()
            before = node.store.totals()
            now = now_ms()
            forged_delete = carol.delete([kept_text]) | {
                "signature": mallory.sign(delete_string([kept_text]).decode())
            }
            delete_all = carol.delete_all("all")
            forged_delete_all = delete_all | {
                "signature": mallory.sign(
                    delete_all_string("all", delete_all["timestamp"]).decode()
                )
            }
            forged_delete_before = delete_before_params(carol.identity, now, "all") | {
                "signature": mallory.sign("forged")
            }
            forged_expire = carol.expire([kept_text], now + 20_000) | {
                "signature": mallory.sign("forged")
            }
            forged_expire_all = expire_all_params(carol.identity, now + 20_000, "all") | {
                "signature": mallory.sign("forged")
            }
            token = subaccount_token(0x05, 1, Identity.generate().ed25519_public_key)
            forged_revocations = {
                method: carol.signed(
                    "",
                    **{field: [base64.b64encode(token).decode("ascii")], "timestamp": now},
                )
                | {
                    "signature": base64.b64encode(
                        mallory.identity.sign(revoke_string(method, now, [token]))
                    ).decode("ascii")
                }
                for method, field in [
                    ("revoke_subaccount", "revoke"),
                    ("unrevoke_subaccount", "unrevoke"),
                ]
            }
            async with link_pool(member.key, LINKS) as pool:

                async def apply(method: str, params: dict[str, Any]) -> tuple[int, bytes]:
                    return decode_status(await _ask(pool, node, Apply(method, params)))

                for method, params in [
                    ("store", carol.store(b"stored through apply")),
                    ("batch", {"requests": [{"method": "store", "params": carol.store(b"b")}]}),
                    ("retrieve", carol.retrieve()),
                    ("get_expiries", carol.get_expiries([kept_text])),
                    ("info", {}),
                ]:
                    assert await apply(method, params) == (400, b"no such forwarded method"), method
                assert node.peer_rpc.refusals["apply_method"] == 5
                assert node.store.totals() == before
                for method, params, text in [
                    ("delete", forged_delete, "delete_msgs signature verification failed"),
                    ("delete_all", forged_delete_all, "delete_all signature verification failed"),
                    (
                        "delete_before",
                        forged_delete_before,
                        "delete_before signature verification failed",
                    ),
                    ("expire", forged_expire, "expire: signature verification failed"),
                    ("expire_all", forged_expire_all, "expire_all signature verification failed"),
                    *(
                        (method, params, f"{method} signature verification failed")
                        for method, params in forged_revocations.items()
                    ),
                ]:
                    assert await apply(method, params) == (401, text.encode()), method
                assert node.store.totals() == before
                assert node.store.expiries(carol.account_bytes, [kept]) == {kept: expiry_before}
                assert not node.store.is_revoked(carol.account_bytes, token)
                # The client's own signature is what makes a forwarded request run; the member
                # answers its own result, signed as Session's storage servers sign it.
                request = carol.delete([hash_b64(deleted)])
                status, body = await apply("delete", request)
                assert status == 200, body
                result = orjson.loads(body)
                assert result["deleted"] == [hash_b64(deleted)]
                signed = member_signed("delete", carol.pubkey, request, result)
                signature = base64.b64decode(result["signature"])
                assert _core.ed25519_verify(node.identity.ed25519_public_key, signed, signature)
            assert _held(node, kept, deleted) == {kept}

    run(main())


def _signed_revocation(signer: Identity, token: bytes, *, revoke: bool) -> Revocation:
    """A revoke_subaccount (or unrevoke) of ``token`` signed by ``signer``, naming its key."""
    now = now_ms()
    method = "revoke_subaccount" if revoke else "unrevoke_subaccount"
    signature = signer.sign(revoke_string(method, now, [token]))
    return Revocation(revoke, now, (token,), signature, signer.ed25519_public_key)


def test_revocations_go_only_to_swarm_members_and_only_the_owners_are_taken(
    tmp_path: Path,
) -> None:
    mallory = Account()
    token = subaccount_token(0x05, 1, Identity.generate().ed25519_public_key)

    async def main() -> None:
        async with _network(tmp_path, 3, swarm_size=1) as nodes:
            node, other = nodes[0], nodes[1]
            carol = _account_served_only_by(node)
            account = carol.account_bytes
            async with await HttpClient.connect(node.port) as client:
                status, body = await client.rpc(
                    "revoke_subaccount", revocation_params(carol.identity, [token])
                )
            assert status == 200, body
            summary = Summary([(account, 0, bytes(32))], {account: bytes(32)})
            unrevoke = _signed_revocation(carol.identity, token, revoke=False)
            async with link_pool(other.key, LINKS) as pool:
                # Not in carol's swarm: no revocation of hers given, none taken.
                answer = decode_summary_answer(await _ask(pool, node, summary), max_items=10)
                assert (answer.differ, answer.revoked) == ([], [])
                taken = await _ask(pool, node, Revocations([(account, [unrevoke])]))
                assert decode_taken(taken) == 0
                # A body of the previous version is refused whole, on any link.
                old = bytes([VERSION - 1]) + encode_request(summary)[1:]
                with pytest.raises(HopFailed):
                    await pool.request(
                        node.peer_info.link,
                        node.identity.x25519_public_key,
                        old,
                        RPC_TIMEOUT_S,
                        FrameKind.RPC,
                    )
            assert node.store.is_revoked(account, token)
            assert node.peer_rpc.refusals["malformed"] == 1

    run(main())

    async def member_case() -> None:
        async with _network(tmp_path / "pair", 2, swarm_size=2) as [node, member]:
            carol = Account()
            account = carol.account_bytes
            async with link_pool(member.key, LINKS) as pool:
                forged = [
                    _signed_revocation(mallory.identity, token, revoke=True),
                    dataclasses.replace(
                        _signed_revocation(mallory.identity, token, revoke=True),
                        ed25519=carol.identity.ed25519_public_key,
                    ),
                ]
                taken = await _ask(pool, node, Revocations([(account, forged)]))
                assert decode_taken(taken) == 0
                assert not node.store.is_revoked(account, token)
                assert node.peer_rpc.refusals["invalid_revocation"] == 2
                signed = _signed_revocation(carol.identity, token, revoke=True)
                taken = await _ask(pool, node, Revocations([(account, [signed])]))
                assert decode_taken(taken) == 1
                assert node.store.is_revoked(account, token)
                # And a summary of carol's with no revocations gets the owner's signed one back.
                answer = decode_summary_answer(
                    await _ask(pool, node, Summary([(account, 0, bytes(32))])), max_items=10
                )
                assert answer.revoked == [(account, [signed])]

    run(member_case())
