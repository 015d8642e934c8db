"""Helpers for the client tests: a client's directory from what in-process nodes hold, and
consensuses signed by test authorities without nodes or files."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from node_helpers import StubAuthorities
from veil.client.directory import ClientDirectory
from veil.identity import Identity
from veil.node.server import Node
from veil.protocol.announcement import Announcement
from veil.protocol.consensus import Consensus, SignedConsensus, Vote, VoteEntry, assemble
from veil.protocol.network_file import AuthorityInfo, NetworkFile


def directory_of(node: Node) -> ClientDirectory:
    """A client's directory holding the consensus ``node`` holds, taken as a client takes one:
    from its JSON, checked against the network file."""
    network, held = node.directory.network, node.directory.consensus
    assert network is not None, "the node is of no network"
    assert held is not None, "the node holds no consensus"
    return ClientDirectory(network, SignedConsensus.from_json(held.to_json(), network))


def directory_listing(authorities: StubAuthorities, nodes: Sequence[Node]) -> ClientDirectory:
    """A client's directory holding a consensus of ``authorities`` that lists ``nodes`` (every one
    a Guard) without giving it to them: for nodes run on a static peer list, which serve every
    account."""
    announcements = [n.directory.own for n in nodes if n.directory.own is not None]
    signed = authorities.issue([], others=announcements)
    return ClientDirectory(authorities.network, signed)


# --- consensuses made without files or nodes (for fuzzing, scripted networks) ---------------------


def network_of(
    authorities: Sequence[Identity], *, name: str = "test", period_s: float = 3600.0
) -> NetworkFile:
    """A network file naming ``authorities`` (at an address nothing listens on)."""
    return NetworkFile(
        name=name,
        authorities=tuple(
            AuthorityInfo(
                f"auth{i}",
                a.ed25519_public_key,
                a.x25519_public_key,
                ("127.0.0.1", 9),
                ("127.0.0.1", 9),
            )
            for i, a in enumerate(authorities)
        ),
        period_s=period_s,
        valid_periods=10_000,
    )


def consensus_of(
    network: NetworkFile,
    announcements: Sequence[Announcement],
    period: int,
    *,
    guards: bool | Collection[bytes] = True,
) -> Consensus:
    """The consensus of ``period`` that every authority of ``network`` voting for
    ``announcements`` (admitted now) assembles: all of them Guards if ``guards`` is True, none if
    False, else those whose node ids it holds."""
    entries = tuple(
        VoteEntry(a, period, guards if isinstance(guards, bool) else a.ed25519 in guards)
        for a in announcements
    )
    votes = [
        Vote(network.name, period, a.ed25519, entries, bytes(32), bytes(32))
        for a in network.authorities
    ]
    return assemble(votes, network, period, None, {})


def signed_by(consensus: Consensus, signers: Sequence[Identity]) -> SignedConsensus:
    digest = consensus.digest()
    return SignedConsensus(consensus, {a.ed25519_public_key: a.sign(digest) for a in signers})
