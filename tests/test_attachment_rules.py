"""The node's rules for attachment chunks (``docs/rpc.md``, "Attachment chunks"): namespace 17 of
attachment accounts (prefix ``0a``) and nothing else, one chunk per account, their own lifetime
and their own cap inside the node's storage; the same rules for a chunk that arrives from another
swarm member; a store written before the rules (format 3) counted when opened."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any

from node_helpers import HttpClient, make_config, now_ms, run, running_node
from veil import _core
from veil.identity import Identity
from veil.node.config import Limits, StoreSettings
from veil.node.message_rules import acceptable
from veil.node.store import MessageStore, StoreOutcome
from veil.protocol.attachments import NS_ATTACHMENTS, seal_attachment
from veil.protocol.hashes import message_hash
from veil.protocol.replication import Message, StoreAuth
from veil.protocol.storage_rpc import (
    KeySigner,
    delete_params,
    expire_params,
    retrieve_params,
    store_params,
    store_string,
)

DAY_MS = 24 * 3600 * 1000
QUOTA_EXCEEDED = "the account's storage quota is exceeded"
STORAGE_FULL = "the node's storage is full"


def _chunks(count: int) -> list[tuple[KeySigner, bytes]]:
    """Sealed chunks of one attachment of ``count`` full chunks, each with its account's signer."""
    _manifest, chunks = seal_attachment(bytes(65_536 * count), "f.bin", "application/x-test")
    return [(KeySigner(chunk.seed, prefix=0x0A), chunk.data) for chunk in chunks[:count]]


def _store(
    signer: KeySigner, data: bytes, *, ttl_ms: int = DAY_MS, ns: int = NS_ATTACHMENTS
) -> Any:
    return store_params(signer.pubkey, data, ttl_ms, namespace=ns, identity=signer)


def test_a_chunk_is_stored_once_in_its_own_account_and_read_back_with_its_key(
    tmp_path: Path,
) -> None:
    (signer, chunk), (_other, other_chunk) = _chunks(2)

    async def main() -> None:
        async with running_node(make_config(tmp_path / "n")) as node:
            async with await HttpClient.connect(node.port) as client:
                status, answer = await client.rpc("store", _store(signer, chunk))
                assert status == 200, answer
                again = await client.rpc("store", _store(signer, chunk))
                assert again[0] == 200
                assert again[1]["swarm"][node.identity.ed25519_public_key.hex()].get("already")
                # The account holds one chunk: another one (any other data) is over its quota.
                status, text = await client.rpc("store", _store(signer, other_chunk))
                assert (status, text) == (507, QUOTA_EXCEEDED)
                params = retrieve_params(signer, namespace=NS_ATTACHMENTS)
                status, body = await client.rpc("retrieve", params)
                assert status == 200, body
                assert [base64.b64decode(m["data"]) for m in body["messages"]] == [chunk]
            assert node.store.attachment_totals() == (1, len(chunk))
            async with await HttpClient.connect(node.port) as client:
                metrics = (await client.request("GET", "/metrics")).body.decode()
            assert "veil_attachment_chunks_stored 1.0" in metrics
            assert f"veil_attachment_bytes_stored {float(len(chunk))}" in metrics

    run(main())


def test_namespace_17_and_attachment_accounts_go_only_together(tmp_path: Path) -> None:
    (signer, chunk), *_ = _chunks(1)
    alice = Identity.generate()
    group = KeySigner(bytes(range(32)))  # a 03 account

    async def main() -> None:
        async with running_node(make_config(tmp_path / "n")) as node:
            async with await HttpClient.connect(node.port) as client:
                refused = [
                    # a Session ID's or a group's namespace 17
                    store_params(alice.session_id, chunk, DAY_MS, namespace=17, identity=alice),
                    store_params(group.pubkey, chunk, DAY_MS, namespace=17, identity=group),
                    # an attachment account anywhere else, its public inbox among them
                    _store(signer, chunk, ns=0),
                    _store(signer, chunk, ns=5),
                ]
                answers = [await client.rpc("store", p) for p in refused]
            assert [status for status, _ in answers] == [400] * 4, answers
            assert "only for accounts with prefix 0a" in answers[0][1]
            assert "holds only namespace 17" in answers[3][1]
            assert node.store.totals() == (0, 0)

    run(main())


def test_a_chunk_lives_at_most_attachment_max_ttl_and_expire_extends_no_further(
    tmp_path: Path,
) -> None:
    (signer, chunk), *_ = _chunks(1)
    limits = Limits(attachment_max_ttl_ms=3 * DAY_MS)

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path / "n", limits=limits)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            status, _ = await client.rpc("store", _store(signer, chunk, ttl_ms=4 * DAY_MS))
            assert status == 403  # over the attachment lifetime (under max_ttl_private_ms)
            status, answer = await client.rpc("store", _store(signer, chunk, ttl_ms=DAY_MS))
            assert status == 200, answer
            digest = answer["hash"]
            wanted = now_ms() + 20 * DAY_MS
            params = expire_params(signer, [digest], wanted, mode="extend")
            status, answer = await client.rpc("expire", params)
            assert status == 200, answer
            applied = answer["swarm"][node.identity.ed25519_public_key.hex()]["expiry"]
            assert applied <= now_ms() + 3 * DAY_MS < wanted

    run(main())


def test_chunks_past_the_attachment_cap_are_refused_while_messages_are_still_taken(
    tmp_path: Path,
) -> None:
    chunks = _chunks(4)
    size = len(chunks[0][1])
    limits = Limits(attachments_max_bytes=3 * size)
    alice = Identity.generate()

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path / "n", limits=limits)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            answers = [await client.rpc("store", _store(s, c)) for s, c in chunks]
            assert [a[0] for a in answers] == [200, 200, 200, 507]
            assert answers[3][1] == STORAGE_FULL
            message = store_params(alice.session_id, b"hello", DAY_MS)
            assert (await client.rpc("store", message))[0] == 200
            assert node.store.attachment_totals() == (3, 3 * size)
            assert node.store.totals() == (4, 3 * size + 5)
            # Deleting a chunk (signed with its key) makes room for another.
            first = chunks[0][0]
            digest = answers[0][1]["hash"]
            status, _ = await client.rpc("delete", delete_params(first, [digest]))
            assert status == 200
            assert node.store.attachment_totals() == (2, 2 * size)
            assert (await client.rpc("store", _store(*chunks[3])))[0] == 200

    run(main())


def _replicated(signer: KeySigner, data: bytes, namespace: int, now: int) -> Message:
    signature = signer.sign(store_string(namespace, now))
    key = _core.ed25519_public_key(signer.seed)
    account = bytes.fromhex(signer.pubkey)
    auth = StoreAuth(sig_timestamp_ms=now, signer=key, signature=signature)
    digest = message_hash(account, namespace, data)
    return Message(account, namespace, now, now + DAY_MS, data, digest, auth, now * 1000)


def test_a_member_takes_a_chunk_by_the_same_rules(tmp_path: Path) -> None:
    (signer, chunk), *_ = _chunks(1)
    now = now_ms()
    limits = Limits(attachment_max_ttl_ms=2 * DAY_MS)
    assert acceptable(_replicated(signer, chunk, NS_ATTACHMENTS, now), limits, now)
    assert not acceptable(_replicated(signer, chunk, 5, now), limits, now)
    group = KeySigner(bytes(32), prefix=0x03)
    assert acceptable(_replicated(group, chunk, 5, now), limits, now)
    assert not acceptable(_replicated(group, chunk, NS_ATTACHMENTS, now), limits, now)
    kept = _replicated(signer, chunk, NS_ATTACHMENTS, now)
    longer = dataclasses.replace(kept, expiry_ms=now + 3 * DAY_MS)
    assert not acceptable(longer, limits, now)


def test_a_format_3_store_gets_its_attachment_totals_counted_when_opened(tmp_path: Path) -> None:
    (signer, chunk), (signer2, chunk2) = _chunks(2)
    now = now_ms()
    path = tmp_path / "store"
    store = MessageStore(path, StoreSettings(map_size_bytes=1 << 26), Limits())
    for s, c in ((signer, chunk), (signer2, chunk2)):
        message = _replicated(s, c, NS_ATTACHMENTS, now)

        def put(txn: Any, message: Message = message) -> StoreOutcome:
            return store.put(txn, message)

        assert store.write(put) is StoreOutcome.STORED

    def as_format_3(txn: Any) -> None:
        txn.put(b"format", b"3", db=store._meta)
        txn.delete(b"attachment_totals", db=store._meta)

    store.write(as_format_3)
    assert store.attachment_totals() == (0, 0)
    store.close()
    reopened = MessageStore(path, StoreSettings(map_size_bytes=1 << 26), Limits())
    try:
        assert reopened.attachment_totals() == (2, len(chunk) + len(chunk2))
    finally:
        reopened.close()
