"""An authority's record of one network's votes, consensuses and shared random values (sans-IO).

For each period ``n`` it holds the votes of ``n`` (its own and the other authorities'), the random
value it committed to in its vote of ``n`` (revealed in its vote of ``n + 1``), the consensus it
computed for ``n`` with :func:`veil.protocol.consensus.assemble`, the valid signatures of that
consensus it has collected (its own first), and the consensuses published — a majority of the
network's authorities signed the same digest — for the last ``valid_periods`` periods. A signature
that arrives before this authority computed its own consensus of that period waits, unverified,
and is checked against it once computed.

Every vote and consensus given to it must already be verified (``SignedVote.from_json``,
``SignedConsensus.from_json``): the server parses them, off the event loop.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from veil import _core
from veil.identity import Identity
from veil.protocol.consensus import (
    Consensus,
    SignedConsensus,
    SignedVote,
    Vote,
    VoteEntry,
    assemble,
    commit_of,
)
from veil.protocol.network_file import NetworkFile

__all__ = ["ConsensusLedger"]


class ConsensusLedger:
    def __init__(self, network: NetworkFile, identity: Identity) -> None:
        self.network = network
        self.identity = identity
        self.own_key = identity.ed25519_public_key
        self.votes: dict[int, dict[bytes, SignedVote]] = {}
        self.secrets: dict[int, bytes] = {}
        """Vote period → the random value committed to in that vote (revealed in the next)."""
        self.computed: dict[int, Consensus] = {}
        self.signatures: dict[int, dict[bytes, bytes]] = {}
        """Period → valid signatures of the consensus this authority computed for it."""
        self.unverified: dict[int, dict[bytes, bytes]] = {}
        self.published: dict[int, SignedConsensus] = {}
        self.srv_history: dict[int, bytes] = {}
        self._latest: SignedConsensus | None = None
        self.latest_admitted: dict[bytes, int] = {}
        """The nodes of the latest published consensus → their admission periods."""

    # --- what is held --------------------------------------------------------------------------

    @property
    def latest(self) -> SignedConsensus | None:
        """The newest published consensus (signed by a majority)."""
        return self._latest

    def own_vote(self, period: int) -> SignedVote | None:
        return self.votes.get(period, {}).get(self.own_key)

    def has_vote(self, period: int, authority: bytes) -> bool:
        return authority in self.votes.get(period, {})

    # --- votes -----------------------------------------------------------------------------------

    def make_vote(self, period: int, nodes: tuple[VoteEntry, ...]) -> SignedVote:
        """This authority's vote for ``period``: it reveals the value committed to in its vote of
        ``period - 1`` (a fresh one if it has none) and commits to a new one."""
        reveal = self.secrets.get(period - 1) or secrets.token_bytes(32)
        secret = secrets.token_bytes(32)
        vote = Vote(
            network=self.network.name,
            period=period,
            authority=self.own_key,
            nodes=nodes,
            commit=commit_of(secret),
            reveal=reveal,
        )
        signed = SignedVote.sign(vote, self.identity.sign)
        self.secrets[period] = secret
        self.votes.setdefault(period, {})[self.own_key] = signed
        return signed

    def restore_vote(self, signed: SignedVote) -> None:
        """Hold again a vote this authority signed before a restart (so it never signs two)."""
        if signed.vote.authority == self.own_key:
            self.votes.setdefault(signed.vote.period, {})[self.own_key] = signed

    def take_vote(self, signed: SignedVote, current_period: int) -> str:
        """Keep another authority's vote; answer ``kept``, ``duplicate``, ``conflict`` (it signed
        another vote for that period: the first is kept) or ``wrong_period``. A vote of this
        authority's own that it does not hold (lost in a crash) is kept as its own: it never
        signs a second one for that period."""
        period, authority = signed.vote.period, signed.vote.authority
        if not current_period <= period <= current_period + 2:
            return "wrong_period"
        held = self.votes.setdefault(period, {}).get(authority)
        if held is None:
            self.votes[period][authority] = signed
            return "kept"
        return "duplicate" if held.vote.digest() == signed.vote.digest() else "conflict"

    # --- the consensus --------------------------------------------------------------------------

    def compute(self, period: int) -> Consensus:
        """The consensus of ``period`` from the votes held, signed by this authority."""
        previous = self.published.get(period - 1)
        consensus = assemble(
            (signed.vote for signed in self.votes.get(period, {}).values()),
            self.network,
            period,
            previous.consensus if previous is not None else None,
            self.srv_history,
        )
        digest = consensus.digest()
        self.computed[period] = consensus
        self.signatures[period] = {self.own_key: self.identity.sign(digest)}
        for authority, signature in self.unverified.pop(period, {}).items():
            if _core.ed25519_verify(authority, digest, signature):
                self.signatures[period][authority] = signature
        return consensus

    def own_signature(self, period: int) -> bytes | None:
        return self.signatures.get(period, {}).get(self.own_key)

    def take_signature(
        self, period: int, authority: bytes, signature: bytes, current_period: int
    ) -> str:
        """Another authority's signature of its consensus of ``period``: ``kept`` if it signs
        the one this authority computed, ``duplicate`` if already held, ``pending`` if this one
        has not computed it yet, ``invalid`` if it does not verify (or claims to be this
        authority's and is not its own), ``not_authority`` if the key is not one of the network's
        authorities, ``wrong_period`` if it is too old or too new."""
        refused = self._screen_signature(period, authority, signature, current_period)
        if refused is not None:
            return refused
        consensus = self.computed.get(period)
        if consensus is None:
            self.unverified.setdefault(period, {})[authority] = signature
            return "pending"
        if not _core.ed25519_verify(authority, consensus.digest(), signature):
            return "invalid"
        if authority in self.signatures[period]:
            return "duplicate"  # another valid signature of the same: one is kept
        self.signatures[period][authority] = signature
        published = self.published.get(period)
        if published is not None and published.consensus.digest() == consensus.digest():
            merged = {**published.signatures, **self.signatures[period]}
            self._publish(SignedConsensus(consensus, merged))
        return "kept"

    def _screen_signature(
        self, period: int, authority: bytes, signature: bytes, current_period: int
    ) -> str | None:
        """The result of a signature refused (or known) before any verification, else None."""
        if self.network.authority(authority) is None:
            return "not_authority"
        if not current_period <= period <= current_period + 2:
            return "wrong_period"
        if self.signatures.get(period, {}).get(authority) == signature:
            return "duplicate"
        if authority == self.own_key:  # never sent by another: not this authority's signature
            return "invalid"
        return None

    def publish_if_signed(self, period: int) -> SignedConsensus | None:
        """Publish the consensus computed for ``period`` once a majority signed it."""
        consensus = self.computed.get(period)
        signatures = self.signatures.get(period, {})
        if consensus is None or len(signatures) < self.network.majority:
            return None
        held = self.published.get(period)
        if held is not None:  # adopted from another authority meanwhile: add these signatures
            if held.consensus.digest() == consensus.digest():
                self._publish(SignedConsensus(consensus, {**held.signatures, **signatures}))
            return None
        signed = SignedConsensus(consensus, dict(signatures))
        self._publish(signed)
        return signed

    def adopt(self, signed: SignedConsensus) -> bool:
        """Take a consensus another authority served (verified: a majority signed it) if it is of
        a period this one has not published; True if taken."""
        held = self.published.get(signed.consensus.period)
        if held is not None:
            if held.consensus.digest() == signed.consensus.digest() and len(
                signed.signatures
            ) > len(held.signatures):
                self._publish(
                    SignedConsensus(held.consensus, {**held.signatures, **signed.signatures})
                )
            return False
        self._publish(signed)
        return True

    def _publish(self, signed: SignedConsensus) -> None:
        period = signed.consensus.period
        self.published[period] = signed
        self.srv_history[period] = signed.consensus.srv
        if self._latest is None or period >= self._latest.consensus.period:
            self._latest = signed
            self.latest_admitted = {e.node_id: e.admitted for e in signed.consensus.nodes}

    def restore(self, latest: SignedConsensus | None, srv_history: dict[int, bytes]) -> None:
        self.srv_history = dict(srv_history)
        if latest is not None:
            self._publish(latest)

    # --- forgetting ------------------------------------------------------------------------------

    def prune(self, current_period: int, admission_periods: Iterable[int]) -> None:
        """Drop what no longer matters in ``current_period``: votes, secrets and signatures of
        past periods, published consensuses past their validity, and shared random values no
        node's placement depends on."""
        horizon = current_period - 1
        for table in (self.votes, self.computed, self.signatures, self.unverified, self.secrets):
            _drop_before(table, horizon)
        oldest = current_period - self.network.valid_periods
        latest = self._latest.consensus.period if self._latest is not None else None
        for period in [p for p in self.published if p < oldest and p != latest]:
            del self.published[period]
        keep = set(admission_periods)
        for period in [p for p in self.srv_history if p < oldest - 1 and p not in keep]:
            del self.srv_history[period]


def _drop_before(table: dict[int, Any], horizon: int) -> None:
    for period in [p for p in table if p < horizon]:
        del table[period]
