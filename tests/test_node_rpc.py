"""The storage RPC over HTTP, against an in-process node on uvloop.

A node on its own is the whole swarm of every account: a write's answer is ``{"swarm": {the
node's Ed25519 key: its signed result}, "t", "hf"}`` (:func:`own_result` checks the signature as a
client does, with ``verify_swarm``); a refusal is its status and Session's one-line text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from node_helpers import (
    Account,
    HttpClient,
    HttpResponse,
    make_config,
    now_ms,
    retrieve_all,
    rpc_once,
    run,
    running_node,
)
from veil.node.config import Limits, StoreSettings
from veil.node.server import Node
from veil.node.store import MessageStore
from veil.protocol.storage_rpc import verify_swarm

HASH_RE = re.compile(r"^[A-Za-z0-9+/]{43}$")
QUOTA_EXCEEDED = "the account's storage quota is exceeded"
STORAGE_FULL = "the node's storage is full"


def own_result(node: Node, method: str, params: dict[str, Any], answer: Any) -> dict[str, Any]:
    """The node's own result in a swarm answer, its signature checked as a client checks it; a
    node on its own is the whole swarm."""
    key = node.identity.ed25519_public_key
    assert set(answer) == {"swarm", "t", "hf"} | ({"hash"} if method == "store" else set()), answer
    assert set(answer["swarm"]) == {key.hex()}, answer
    assert verify_swarm(method, params, answer, [key]) == [key], answer
    result: dict[str, Any] = answer["swarm"][key.hex()]
    return result


def assert_refused(response: HttpResponse, status: int, text: str) -> None:
    """A storage RPC refusal: ``status`` with exactly ``text`` as a text/plain body."""
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    assert (response.status, response.body.decode()) == (status, text)


def test_store_retrieve_round_trip_and_same_hash_on_two_nodes(tmp_path: Path) -> None:
    alice = Account()
    data = bytes(range(256)) * 3

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path / "a")) as one,
            running_node(make_config(tmp_path / "b")) as two,
        ):
            hashes = []
            for node in (one, two):
                async with await HttpClient.connect(node.port) as client:
                    params = alice.store(data)
                    status, body = await client.rpc("store", params)
                    assert status == 200, body
                    assert HASH_RE.match(body["hash"])
                    stored = own_result(node, "store", params, body)
                    assert stored["hash"] == body["hash"]
                    assert "already" not in stored
                    assert stored["expiry"] == params["timestamp"] + params["ttl"]
                    again_params = alice.store(data)
                    status, again = await client.rpc("store", again_params)
                    assert status == 200
                    repeated = own_result(node, "store", again_params, again)
                    assert repeated["already"] is True
                    assert again["hash"] == body["hash"]
                    # A duplicate store keeps the later of the two expiries.
                    assert repeated["expiry"] == max(
                        stored["expiry"], again_params["timestamp"] + again_params["ttl"]
                    )
                    status, got = await client.rpc("retrieve", alice.retrieve(cursor=""))
                    assert status == 200, got
                    assert got["more"] is False
                    [message] = got["messages"]
                    assert base64.b64decode(message["data"]) == data
                    assert message["hash"] == body["hash"]
                    assert message["timestamp"] == params["timestamp"]
                    assert message["expiration"] == repeated["expiry"]
                    assert isinstance(got["cursor"], str)
                    # The cursor is answered only to a retrieve that asked with one.
                    status, plain = await client.rpc("retrieve", alice.retrieve())
                    assert status == 200, plain
                    assert "cursor" not in plain
                    assert plain["messages"] == got["messages"]
                    hashes.append(body["hash"])
            assert hashes[0] == hashes[1]
            # Another account sees nothing.
            status, other = await rpc_once(one.port, "retrieve", Account().retrieve())
            assert (status, other["messages"]) == (200, [])

    run(main())


def test_retrieve_pagination_with_more_cursor_and_last_hash(tmp_path: Path) -> None:
    alice = Account()
    config = make_config(tmp_path, limits=Limits(retrieve_max_messages=3))

    async def main() -> None:
        async with running_node(config) as node, await HttpClient.connect(node.port) as client:
            # Timestamps run backwards: pages follow the order the node received the messages in,
            # not their timestamps.
            base = now_ms() - 1000
            stored = []
            for i in range(10):
                status, body = await client.rpc(
                    "store", alice.store(b"page %d" % i, timestamp=base - i)
                )
                assert status == 200, body
                stored.append(body["hash"])
            pages = []
            cursor = ""  # from the start
            while True:
                status, body = await client.rpc("retrieve", alice.retrieve(cursor=cursor))
                assert status == 200, body
                pages.append([m["hash"] for m in body["messages"]])
                cursor = body["cursor"]
                if not body["more"]:
                    break
            assert [len(p) for p in pages] == [3, 3, 3, 1]
            assert [h for page in pages for h in page] == stored
            # At the end the cursor stays put and nothing more comes.
            status, body = await client.rpc("retrieve", alice.retrieve(cursor=cursor))
            assert (status, body["messages"], body["more"]) == (200, [], False)
            assert body["cursor"] == cursor
            # oxen-style last_hash continues after that message.
            status, body = await client.rpc("retrieve", alice.retrieve(last_hash=stored[4]))
            assert [m["hash"] for m in body["messages"]] == stored[5:8]
            assert body["more"] is True
            # max_count narrows a page.
            status, body = await client.rpc("retrieve", alice.retrieve(max_count=2))
            assert [m["hash"] for m in body["messages"]] == stored[:2]

    run(main())


def test_namespace_signatures_for_store_and_retrieve(tmp_path: Path) -> None:
    alice, mallory = Account(), Account()

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            # Namespace 0 and every namespace divisible by 10 (public inboxes): anyone may
            # deposit without a signature.
            status, _ = await client.rpc("store", alice.store(b"public", sign=False))
            assert status == 200
            status, body = await client.rpc(
                "store", alice.store(b"inbox 10", namespace=10, sign=False)
            )
            assert status == 200, body
            # Other namespaces need the owner's signature.
            status, body = await client.rpc(
                "store", alice.store(b"private", namespace=3, sign=False)
            )
            assert (status, body) == (401, "store: signature required to store to namespace 3")
            forged = alice.store(b"private", namespace=3, sign=False)
            ts = forged["timestamp"]
            forged |= {
                "pubkey_ed25519": mallory.ed_hex,
                "signature": mallory.sign(f"store3{ts}"),
            }
            status, body = await client.rpc("store", forged)
            assert (status, body) == (401, "store signature verification failed")
            status, body = await client.rpc("store", alice.store(b"private", namespace=3))
            assert status == 200, body
            status, body = await client.rpc("store", alice.store(b"negative", namespace=-5))
            assert status == 200, body
            # Retrieve always needs a valid signature.
            status, body = await client.rpc("retrieve", {"pubkey": alice.pubkey})
            assert (status, body) == (401, "retrieve: request signature required")
            unsigned = {"pubkey": alice.pubkey, "timestamp": now_ms()}
            status, body = await client.rpc("retrieve", unsigned)
            assert (status, body) == (400, "invalid request: Required field 'signature' missing")
            wrong_ns = alice.retrieve()
            wrong_ns["namespace"] = 3  # signed for namespace 0
            status, body = await client.rpc("retrieve", wrong_ns)
            assert (status, body) == (401, "retrieve signature verification failed")
            status, body = await client.rpc("retrieve", alice.retrieve(namespace=3))
            assert [base64.b64decode(m["data"]) for m in body["messages"]] == [b"private"]
            status, body = await client.rpc("retrieve", alice.retrieve(namespace=-5))
            assert [base64.b64decode(m["data"]) for m in body["messages"]] == [b"negative"]
            status, body = await client.rpc("retrieve", alice.retrieve(namespace=10))
            assert [base64.b64decode(m["data"]) for m in body["messages"]] == [b"inbox 10"]
            status, body = await client.rpc("retrieve", alice.retrieve())
            assert [base64.b64decode(m["data"]) for m in body["messages"]] == [b"public"]

    run(main())


def test_pickup_deletion_delete_all_expire_and_get_expiries(tmp_path: Path) -> None:
    alice, bob = Account(), Account()

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):

            async def write(method: str, params: dict[str, Any]) -> dict[str, Any]:
                """A write answered 200; the node's own signed result."""
                status, body = await client.rpc(method, params)
                assert status == 200, body
                return own_result(node, method, params, body)

            for i in range(5):
                assert (await client.rpc("store", alice.store(b"pick %d" % i)))[0] == 200
            status, bob_msg = await client.rpc("store", bob.store(b"bob's"))
            # Pickup: retrieve, then one signed delete of what was received.
            status, got = await client.rpc("retrieve", alice.retrieve())
            hashes = [m["hash"] for m in got["messages"]]
            assert len(hashes) == 5
            result = await write("delete", alice.delete([*hashes, bob_msg["hash"]]))
            assert result["deleted"] == sorted(hashes)  # never another account's message
            assert (await client.rpc("retrieve", alice.retrieve()))[1]["messages"] == []
            assert len((await client.rpc("retrieve", bob.retrieve()))[1]["messages"]) == 1
            # A delete signed over other hashes is refused.
            bad = alice.delete([bob_msg["hash"]])
            bad["messages"] = [hashes[0]]
            assert await client.rpc("delete", bad) == (
                401,
                "delete_msgs signature verification failed",
            )

            # delete_all: one namespace, then all.
            for ns in (0, 1, 2):
                params = alice.store(b"ns %d" % ns, namespace=ns)
                assert (await client.rpc("store", params))[0] == 200
            result = await write("delete_all", alice.delete_all(1))
            assert len(result["deleted"]) == 1
            status, body = await client.rpc("retrieve", alice.retrieve(namespace=2))
            assert len(body["messages"]) == 1
            result = await write("delete_all", alice.delete_all("all"))
            # For "all", the hashes deleted by namespace.
            assert {ns: len(listed) for ns, listed in result["deleted"].items()} == {"0": 1, "2": 1}
            for ns in (0, 1, 2):
                status, body = await client.rpc("retrieve", alice.retrieve(namespace=ns))
                assert body["messages"] == []
            assert len(await retrieve_all(client, bob)) == 1

            # expire and get_expiries.
            params = alice.store(b"expiring")
            status, stored = await client.rpc("store", params)
            h = stored["hash"]
            expiry = own_result(node, "store", params, stored)["expiry"]
            status, body = await client.rpc("get_expiries", alice.get_expiries([h]))
            assert (status, body) == (200, {"expiries": {h: expiry}})
            # shorten to a later expiry: unchanged.
            result = await write("expire", alice.expire([h], expiry + 60_000, "shorten"))
            assert (result["updated"], result["unchanged"]) == ([], {h: expiry})
            result = await write("expire", alice.expire([h], expiry - 60_000, "shorten"))
            assert (result["expiry"], result["updated"], result["unchanged"]) == (
                expiry - 60_000,
                [h],
                {},
            )
            # extend to an earlier expiry: unchanged.
            result = await write("expire", alice.expire([h], expiry - 120_000, "extend"))
            assert (result["updated"], result["unchanged"]) == ([], {h: expiry - 60_000})
            result = await write("expire", alice.expire([h], expiry + 10_000))
            assert (result["expiry"], result["updated"]) == (expiry + 10_000, [h])
            assert "unchanged" not in result
            status, body = await client.rpc("get_expiries", alice.get_expiries([h]))
            assert body == {"expiries": {h: expiry + 10_000}}
            status, body = await client.rpc("retrieve", alice.retrieve())
            assert body["messages"][0]["expiration"] == expiry + 10_000
            # Bob can neither see nor change Alice's expiry.
            status, body = await client.rpc("get_expiries", bob.get_expiries([h]))
            assert (status, body) == (200, {"expiries": {}})
            result = await write("expire", bob.expire([h], expiry))
            assert result["updated"] == []
            status, body = await client.rpc("get_expiries", alice.get_expiries([h]))
            assert body == {"expiries": {h: expiry + 10_000}}

    run(main())


def test_info(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_node(make_config(tmp_path)) as node:
            status, body = await rpc_once(node.port, "info", {})
            assert status == 200
            assert isinstance(body["version"], list)
            assert len(body["version"]) == 3
            assert abs(body["timestamp"] - now_ms()) < 10_000

    run(main())


def test_batch_fails_whole_on_a_malformed_subrequest_else_answers_each_in_order(
    tmp_path: Path,
) -> None:
    """Every subrequest is parsed before any runs: one that does not parse fails the batch with
    its 400 and nothing runs (these cases were answered one by one inside the batch before). A
    subrequest that parses but is refused is answered in its place, with its status and text."""
    alice = Account()

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            t = now_ms()
            malformed: list[tuple[Any, str]] = [
                (
                    {"method": "store", "params": {"pubkey": "nope"}},
                    "Required field 'timestamp' missing",
                ),
                (
                    {"method": "no_such_method", "params": {}},
                    'Invalid batch subrequest: invalid method "no_such_method"',
                ),
                ("not an object", "Invalid batch request: requests must be objects"),
                (
                    {"method": "batch", "params": {"requests": [{"method": "info"}]}},
                    "Invalid batch subrequest: subrequests may not contain meta-requests",
                ),
                (
                    {"method": "info"},
                    "Invalid batch request: subrequests must have method/params keys",
                ),
            ]
            for bad, text in malformed:
                requests: list[Any] = [
                    {"method": "store", "params": alice.store(b"never", timestamp=t - 2)},
                    bad,
                    {"method": "info", "params": {}},
                ]
                status, body = await client.rpc("batch", {"requests": requests})
                assert (status, body) == (400, f"invalid request: {text}")

            forged = alice.store(b"forged", namespace=3)
            forged["signature"] = alice.sign("not what a store signs")
            requests = [
                {"method": "store", "params": alice.store(b"batch 1", timestamp=t - 1)},
                {"method": "store", "params": forged},
                {"method": "store", "params": alice.store(b"batch 2", timestamp=t)},
                {"method": "info", "params": {}},
                {"method": "retrieve", "params": alice.retrieve()},
            ]
            status, body = await client.rpc("batch", {"requests": requests})
            assert status == 200, body
            codes = [r["code"] for r in body["results"]]
            assert codes == [200, 401, 200, 200, 200]
            results = [r["body"] for r in body["results"]]
            assert results[1] == "store signature verification failed"
            assert "version" in results[3]
            # Nothing of the refused batches was stored.
            retrieved = [base64.b64decode(m["data"]) for m in results[4]["messages"]]
            assert retrieved == [b"batch 1", b"batch 2"]
            info = {"method": "info", "params": {}}
            status, body = await client.rpc("batch", {"requests": [info] * 20})
            assert status == 200
            assert len(body["results"]) == 20
            status, body = await client.rpc("batch", {"requests": [info] * 21})
            assert (status, body) == (
                400,
                "invalid request: Invalid batch request: subrequest limit exceeded",
            )
            status, body = await client.rpc("batch", {"requests": []})
            assert (status, body) == (
                400,
                'invalid request: Invalid batch request: no valid "requests" field',
            )

    run(main())


def test_keep_alive_fifty_requests_on_one_connection(tmp_path: Path) -> None:
    alice = Account()

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            for i in range(50):
                if i % 2:
                    status, body = await client.rpc("retrieve", alice.retrieve())
                    assert len(body["messages"]) == (i + 1) // 2
                else:
                    status, body = await client.rpc("store", alice.store(b"k%d" % i))
                assert status == 200, body
            assert len(node.app.connections) == 1

    run(main())


def test_pipelined_requests_in_one_write_are_answered_in_order(tmp_path: Path) -> None:
    alice = Account()

    def post(method: str, params: Any) -> bytes:
        body = json.dumps({"method": method, "params": params}).encode()
        return (
            b"POST /storage_rpc/v1 HTTP/1.1\r\nHost: n\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )

    async def main() -> None:
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            await client.send_raw(
                post("store", alice.store(b"first")) + post("info", {}) + post("nope", {})
            )
            first, second, third = [await client.read_response() for _ in range(3)]
            assert first.status == 200
            assert "hash" in first.json()
            assert second.status == 200
            assert "version" in second.json()
            assert_refused(third, 400, "no method nope")

    run(main())


def test_metrics(tmp_path: Path) -> None:
    alice = Account()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            for i in range(3):
                assert (await client.rpc("store", alice.store(b"metric %d" % i)))[0] == 200
            await client.rpc("retrieve", alice.retrieve())
            await client.rpc("store", {"pubkey": "bad"})
            response = await client.request("GET", "/metrics")
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain")
            text = response.body.decode()
            assert 'veil_rpc_requests_total{method="store",status="200"} 3.0' in text
            assert 'veil_rpc_requests_total{method="store",status="400"} 1.0' in text
            assert 'veil_rpc_requests_total{method="retrieve",status="200"} 1.0' in text
            assert "veil_store_latency_seconds_count 3.0" in text
            assert "veil_store_latency_seconds_bucket" in text
            assert "veil_messages_stored 3.0" in text
            assert "veil_bytes_stored 24.0" in text
            match = re.search(r"^veil_lmdb_map_bytes (\S+)$", text, re.MULTILINE)
            assert match is not None
            assert float(match.group(1)) > 0
            # Three stores one after the other: three commits of one job each (the sweeper, with
            # nothing expired, commits nothing).
            assert f"veil_store_commits_total {float(node.writer.commits)}" in text
            assert f"veil_store_commit_jobs_total {float(node.writer.jobs)}" in text
            assert node.writer.commits == node.writer.jobs == 3
            # The writer's time by phase: each store applied, committed durably and its receipt
            # signed, all of it within the time the stores took.
            phases = dict(
                re.findall(r'^veil_store_writer_seconds_total\{phase="(\w+)"\} (\S+)$', text, re.M)
            )
            assert sorted(phases) == ["apply", "commit", "sign"]
            assert all(float(value) > 0 for value in phases.values())
            assert sum(map(float, phases.values())) < loop.time() - began
            # The event loop's and the writer's CPU so far, user and system apart (clock ticks: a
            # short test may read 0), within what the whole process has used.
            cpu = {
                (thread, mode): float(value)
                for mode, thread, value in re.findall(
                    r'^veil_thread_cpu_seconds_total\{mode="(\w+)",thread="(\w+)"\} (\S+)$',
                    text,
                    re.M,
                )
            }
            assert sorted(cpu) == [
                (thread, mode)
                for thread in ("event_loop", "store_writer")
                for mode in ("system", "user")
            ]
            tick = 1 / os.sysconf("SC_CLK_TCK")
            assert 0 <= sum(cpu.values()) <= time.process_time() + 4 * tick
            # Stores one at a time: the loop never found a batch being applied.
            assert "veil_store_apply_turn_waits_total 0.0" in text
            assert "veil_store_apply_turn_wait_seconds_total 0.0" in text

    run(main())


def test_unknown_path_404_and_wrong_method_405(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            running_node(make_config(tmp_path)) as node,
            await HttpClient.connect(node.port) as client,
        ):
            response = await client.request("GET", "/nope")
            assert response.status == 404
            assert response.json()["error"]["code"] == "not_found"
            response = await client.request("GET", "/storage_rpc/v1")
            assert response.status == 405
            response = await client.request("POST", "/metrics")
            assert response.status == 405
            status, _ = await client.rpc("info", {})  # the connection is still good
            assert status == 200

    run(main())


def test_quota_exceeded_and_storage_full_answers_while_retrieve_works(tmp_path: Path) -> None:
    alice, bob = Account(), Account()
    quota = make_config(tmp_path / "quota", limits=Limits(account_max_messages=2))
    full = make_config(tmp_path / "full", limits=Limits(storage_max_bytes=100))

    async def main() -> None:
        async with running_node(quota) as node, await HttpClient.connect(node.port) as client:
            for i in range(2):
                assert (await client.rpc("store", alice.store(b"q%d" % i)))[0] == 200
            status, body = await client.rpc("store", alice.store(b"q2"))
            assert (status, body) == (507, QUOTA_EXCEEDED)
            assert (await client.rpc("store", bob.store(b"bob")))[0] == 200
            assert len(await retrieve_all(client, alice)) == 2
        async with running_node(full) as node, await HttpClient.connect(node.port) as client:
            assert (await client.rpc("store", alice.store(b"x" * 80)))[0] == 200
            status, body = await client.rpc("store", bob.store(b"y" * 21))
            assert (status, body) == (507, STORAGE_FULL)
            assert len(await retrieve_all(client, alice)) == 1
            assert await retrieve_all(client, bob) == []

    run(main())


def test_full_lmdb_map_answers_storage_full_while_retrieve_works(tmp_path: Path) -> None:
    alice = Account()
    size = 128 * 1024
    config = make_config(
        tmp_path, store=StoreSettings(map_size_bytes=size, max_map_size_bytes=size)
    )

    async def main() -> None:
        async with running_node(config) as node, await HttpClient.connect(node.port) as client:
            stored = 0
            for i in range(200):
                status, body = await client.rpc("store", alice.store(b"%d" % i + b"m" * 4000))
                if status != 200:
                    assert (status, body) == (507, STORAGE_FULL)
                    break
                stored += 1
            else:
                raise AssertionError("the map never filled")
            assert stored > 0
            assert len(await retrieve_all(client, alice)) == stored
            status, _ = await client.rpc("info", {})
            assert status == 200

    run(main())


def test_stop_answers_requests_in_flight(tmp_path: Path) -> None:
    alice = Account()
    # The writer waits 300 ms before each commit, so the stores are still in flight at stop().
    config = make_config(tmp_path, store=StoreSettings(commit_max_delay_ms=300.0))

    async def main() -> list[tuple[int, Any]]:
        async with running_node(config) as node:
            clients = [await HttpClient.connect(node.port) for _ in range(10)]
            idle = await HttpClient.connect(node.port)
            tasks = [
                asyncio.create_task(c.rpc("store", alice.store(b"flight %d" % i)))
                for i, c in enumerate(clients)
            ]
            for _ in range(200):
                if node.app.in_flight == 10:
                    break
                await asyncio.sleep(0.005)
            assert node.app.in_flight == 10
            await node.stop()
            results = await asyncio.gather(*tasks)
            assert await idle.at_eof()
            for client in [*clients, idle]:
                await client.close()
            node.stop = _noop  # type: ignore[method-assign]  # already stopped
        return results

    results = run(main())
    assert [status for status, _ in results] == [200] * 10
    store = MessageStore(config.store_path, config.store, config.limits)
    messages, _ = store.retrieve(
        alice.account_bytes,
        namespace=0,
        after=None,
        now_ms=now_ms(),
        max_messages=100,
        max_bytes=1 << 30,
    )
    assert sorted(m.hash for m in messages) == sorted(
        base64.b64decode(body["hash"] + "=") for _, body in results
    )
    store.close()


async def _noop() -> None:
    return None
