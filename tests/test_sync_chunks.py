"""An account larger than one link frame syncs to a joining member in frames of bounded size.

200 messages of 76,000 bytes are 15.2 MB, more than the largest frame a link accepts (11 MB): a
node that sent them in one ``replicate`` or answered them in one ``fetch`` would have its link
closed for an oversized frame and the joining member would never catch up. Chunked by size, no
frame is larger than half the largest, no link closes, and the member ends up holding every one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node_helpers import Account, HttpClient, StubAuthorities, run, until
from veil.node.config import NetworkSettings, NodeConfig, StoreSettings
from veil.node.links import Link
from veil.node.server import Node
from veil.protocol.link import FrameKind

MESSAGES = 200
MESSAGE_BYTES = 76_000

NETWORK = NetworkSettings(swarm_size=2, write_quorum=1, min_swarm_size=1, sync_interval_s=0.5)


def _config(authorities: StubAuthorities, path: Path) -> NodeConfig:
    store = StoreSettings(map_size_bytes=64 * 1024 * 1024)
    return authorities.config(path, network=NETWORK, store=store)


def test_an_account_larger_than_a_frame_syncs_to_a_joining_member_in_bounded_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every frame either node queues on a link, by kind: both nodes run in this process.
    largest: dict[FrameKind, int] = {}
    send = Link._send

    def recording_send(self: Link, kind: FrameKind, stream: int, body: bytes) -> None:
        largest[kind] = max(largest.get(kind, 0), 9 + len(body))  # header: length, kind, stream
        send(self, kind, stream, body)

    monkeypatch.setattr(Link, "_send", recording_send)
    alice = Account()
    authorities = StubAuthorities(tmp_path / "authorities")

    async def main() -> None:
        first = Node(_config(authorities, tmp_path / "a"))
        await first.start()
        nodes = [first]
        try:
            authorities.issue(nodes)
            async with await HttpClient.connect(first.port) as client:
                for i in range(MESSAGES):
                    data = i.to_bytes(4, "big") + bytes(MESSAGE_BYTES - 4)
                    status, body = await client.rpc("store", alice.store(data))
                    assert status == 200, body
            assert first.store.totals() == (MESSAGES, MESSAGES * MESSAGE_BYTES)
            second = Node(_config(authorities, tmp_path / "b"))
            await second.start()
            nodes.append(second)
            authorities.issue(nodes)
            await until(lambda: second.store.totals()[0] == MESSAGES, 25)
            assert second.store.totals() == (MESSAGES, MESSAGES * MESSAGE_BYTES)
            assert set(second.store.hashes_of(alice.account_bytes)) == set(
                first.store.hashes_of(alice.account_bytes)
            )
            for node in nodes:
                closed = {e: n for e, n in node.link_events.items() if e.startswith("closed_")}
                assert closed == {}
            max_frame = first.config.links.max_frame
            assert max_frame < MESSAGES * MESSAGE_BYTES  # one frame could not have carried it
            assert max(largest.values()) <= max_frame // 2
            # What carried the messages was seen: replicate or fetch frames of megabytes.
            assert max(largest.get(FrameKind.RPC, 0), largest.get(FrameKind.RESPONSE, 0)) > (
                max_frame // 4
            )
        finally:
            for node in nodes:
                await node.stop()

    run(main())
