"""A vote's sender proves it is an authority before its body is read (``veil.protocol.
authority_post``, ``SenderCheck``, the HTTP layer's ``BodyGate``): a stranger's vote is refused
with its body unread, a header is taken once, for one receiver, path and length, and the votes'
reserve of the body buffer stays theirs however many strangers' bodies the other routes hold."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_helpers import now_ms, until
from test_authority import LOOPBACK, make_authorities, running, sender_header
from veil.authority.config import HttpSettings
from veil.authority.peers import SenderCheck
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.protocol import authority_post
from veil.protocol.network_file import NetworkFile

PATH = b"/authority/v1/vote"
HEADER = authority_post.HEADER_KEY


def network_of(*identities: Identity) -> NetworkFile:
    return NetworkFile.from_json(
        {
            "version": 1,
            "name": "testnet",
            "period_s": 60,
            "valid_periods": 6,
            "authorities": [
                {
                    "name": f"a{i}",
                    "ed25519": identity.ed25519_public_key.hex(),
                    "http": f"127.0.0.1:{1000 + i}",
                    "link": f"127.0.0.1:{2000 + i}",
                }
                for i, identity in enumerate(identities)
            ],
        }
    )


def header(
    sender: Identity,
    receiver: bytes,
    length: int,
    stamp: int,
    *,
    path: bytes = PATH,
    signer: Identity | None = None,
) -> dict[bytes, bytes]:
    signed = authority_post.signed_bytes(sender.ed25519_public_key, receiver, path, length, stamp)
    signature = (signer or sender).sign(signed)
    return {HEADER: authority_post.value(sender.ed25519_public_key, stamp, signature).encode()}


def test_a_header_is_taken_once_for_its_receiver_path_and_length_only() -> None:
    me, other, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    receiver = me.ed25519_public_key
    check = SenderCheck(network_of(me, other), receiver, PATH, max_skew_ms=60_000)
    stamp = now_ms()
    refused = {
        "no header": {},
        "empty": {HEADER: b""},
        "a stranger's": header(stranger, receiver, 100, stamp),
        "its own key's (the receiver's)": header(me, receiver, 100, stamp),
        "for another receiver": header(other, other.ed25519_public_key, 100, stamp),
        "for another path": header(other, receiver, 100, stamp, path=b"/authority/v1/signature"),
        "for another length": header(other, receiver, 99, stamp),
        "signed by another key": header(other, receiver, 100, stamp, signer=stranger),
        "too old": header(other, receiver, 100, stamp - 61_000),
        "too far ahead": header(other, receiver, 100, stamp + 61_000),
    }
    for why, headers in refused.items():
        assert check(headers, 100) is not None, why
    good = header(other, receiver, 100, stamp)
    assert check(good, 100) is None
    assert check(good, 100) == "stale or replayed authority header"  # seen: never again
    assert check(header(other, receiver, 100, stamp - 1), 100) is not None  # older than taken
    assert check(header(other, receiver, 100, stamp + 1), 100) is None  # a newer one is fine


@given(st.binary(max_size=400))
def test_parse_refuses_every_malformed_value_with_a_typed_error(raw: bytes) -> None:
    try:
        sender, stamp, signature = authority_post.parse(raw)
    except InvalidInputError:
        return
    assert (len(sender), len(signature)) == (32, 64)
    assert stamp >= 0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"..",
        b"a" * 64 + b".1." + b"b" * 128 + b".x",
        b"a" * 64 + b".-1." + b"b" * 128,
        b"a" * 64 + b".1." + b"b" * 127,
        b"a" * 62 + b"  .1." + b"b" * 128,  # bytes.fromhex skips spaces: caught by length
        b"g" * 64 + b".1." + b"b" * 128,
        b"a" * 64 + b"." + b"9" * 21 + b"." + b"b" * 128,
        "é".encode() * 32 + b".1." + b"b" * 128,
    ],
)
def test_parse_refuses_hostile_values(raw: bytes) -> None:
    with pytest.raises(InvalidInputError):
        authority_post.parse(raw)


def test_parse_reads_what_value_writes() -> None:
    key, signature = bytes(range(32)), bytes(range(64))
    raw = authority_post.value(key, 1_700_000_000_000, signature).encode()
    assert authority_post.parse(raw) == (key, 1_700_000_000_000, signature)


async def _send_headers(
    port: int, path: str, length: int, extra: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 5)
    return int(line.split()[1])


def test_strangers_cannot_hold_the_votes_reserve_and_their_votes_are_refused_unread(
    tmp_path: Path,
) -> None:
    """Strangers hold partial bodies on the signature route until refused (503); their unsigned
    votes are refused 403 from their headers. An authority's vote is still read: its body is
    answered for what it is (400, not JSON), not 503. Without the gate and the reserve the
    strangers' bodies would take the whole buffer and the vote would get 503."""
    authorities = make_authorities(tmp_path, 2, LOOPBACK)
    http = HttpSettings(
        max_body_bytes=1_000,
        max_vote_bytes=4_000,
        vote_reserve_bytes=8_000,
        max_buffered_body_bytes=10_000,
        max_connections_per_address=100,
    )
    authorities.configs = [replace(config, http=http) for config in authorities.configs]

    async def scenario() -> None:
        async with running(authorities):
            first, second = authorities.up()
            held: list[asyncio.StreamWriter] = []
            for _ in range(2):  # strangers' partial bodies, 900 of 1,000 bytes each
                _, writer = await _send_headers(first.port, "/authority/v1/signature", 1_000)
                writer.write(b"x" * 900)
                await writer.drain()
                held.append(writer)
            await until(lambda: first.app.buffered_body_bytes == 1_800, 5)
            # The strangers' room is 2,000 bytes: a third body does not fit.
            reader, writer = await _send_headers(first.port, "/authority/v1/signature", 1_000)
            assert await _status(reader) == 503
            writer.close()
            assert first.app.buffered_body_bytes <= 2_000
            # A stranger's vote: refused from its headers, not one byte of the body read.
            for extra in ("", f"{authority_post.HEADER}: {'a' * 64}.1.{'b' * 128}\r\n"):
                reader, writer = await _send_headers(first.port, "/authority/v1/vote", 3_999, extra)
                assert await _status(reader) == 403
                writer.close()
            assert first.app.buffered_body_bytes <= 2_000
            # The second authority's vote (not JSON here): read whole, answered 400.
            body = b"y" * 3_500
            signed = sender_header(second.identity, first, body)
            extra = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
            reader, writer = await _send_headers(first.port, "/authority/v1/vote", len(body), extra)
            writer.write(body)
            assert await _status(reader) == 400
            writer.close()
            for writer in held:
                writer.close()
            await until(lambda: first.app.buffered_body_bytes == 0, 5)
            refusals = first.metrics.refusals.labels(reason="vote_sender")._value.get()
            assert refusals == 2

    asyncio.run(scenario())


def test_authorities_post_their_votes_with_headers_the_others_take(tmp_path: Path) -> None:
    """Two authorities exchange votes by posting them (no 403 in either's answers) and form a
    consensus; the fetch that follows a refused post is not what carried them."""
    authorities = make_authorities(tmp_path, 2, LOOPBACK)

    async def scenario() -> None:
        async with running(authorities):
            first, second = authorities.up()
            await until(
                lambda: (
                    all(
                        a.ledger.has_vote(p, b.identity.ed25519_public_key)
                        for a, b in ((first, second), (second, first))
                        for p in a.ledger.votes
                        if a.ledger.own_vote(p) is not None
                    )
                    and any(len(v) == 2 for v in first.ledger.votes.values())
                ),
                10,
            )
            for authority in (first, second):
                assert "status_403" not in authority.peers.counts
                refusals = authority.metrics.refusals.labels(reason="vote_sender")._value.get()
                assert refusals == 0

    asyncio.run(scenario())
