"""The client's guards: the few nodes it enters the network through, kept for weeks.

Every onion path starts at a guard, which sees the client's IP address. Were the first hop drawn
afresh for each path, a client would sooner or later enter through a node that also watches the
other end; with a small fixed set it is either unlucky once — and for as long as it keeps them —
or never. So, as Tor does:

- :meth:`GuardSet.update` fills the set up to ``size`` (3) with nodes drawn at random among the
  consensus's **Guard** nodes (those a majority of the authorities gave the Guard role); with fewer
  Guards in the consensus it holds those there are (:attr:`GuardSet.shortfall` says how many are
  missing), with none it holds none (and the client refuses to send: :class:`NoGuardsError`).
- A guard is replaced only when it is **gone** — no longer a Guard node of the consensus — or its
  **lifetime** passed (``lifetime_ms``, 8 weeks by default, from when it was chosen). Never because
  requests through it fail: the network client avoids a failing guard for a while and uses its
  other guards (``veil.client.network``), but it picks no new ones, or an attacker who can make
  paths fail could walk the client onto its own guards.
- The set is saved in the client's home (``guards.json``, :meth:`GuardSet.to_json`) and reused by
  every run.

```json
{"version": 1, "guards": [{"node_id": "<64 hex>", "chosen_at_ms": 1700000000000}, …]}
```
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from veil.errors import VeilError
from veil.protocol.consensus import Consensus

__all__ = ["GUARDS", "GUARD_LIFETIME_MS", "Guard", "GuardSet", "NoGuardsError"]

GUARDS = 3
GUARD_LIFETIME_MS = 8 * 7 * 24 * 3600 * 1000
VERSION = 1
_DAY_MS = 24 * 3600 * 1000


class NoGuardsError(VeilError):
    """The consensus gives the client no Guard node to enter the network through."""


@dataclass(frozen=True, slots=True)
class Guard:
    node_id: bytes
    chosen_at_ms: int


class GuardSet:
    """A client's guards (node ids, each with when it was chosen)."""

    def __init__(
        self,
        guards: tuple[Guard, ...] | list[Guard] = (),
        *,
        size: int = GUARDS,
        lifetime_ms: int = GUARD_LIFETIME_MS,
        rng: random.Random | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a client has at least one guard")
        self.size = size
        self.lifetime_ms = lifetime_ms
        self._rng = rng or random.SystemRandom()
        self.guards: list[Guard] = []
        for guard in guards:
            if len(self.guards) < size and guard.node_id not in self.ids:
                self.guards.append(guard)
        self.shortfall = 0
        """How many guards the last :meth:`update` could not find in the consensus."""

    @property
    def ids(self) -> list[bytes]:
        return [g.node_id for g in self.guards]

    def update(self, consensus: Consensus, now: int) -> bool:
        """Drop the guards that are gone from ``consensus`` (as Guard nodes) or past their
        lifetime, then draw new ones among its Guard nodes up to ``size``; True if the set
        changed."""
        listed = {e.node_id for e in consensus.nodes if e.guard}
        kept = [g for g in self.guards if g.node_id in listed and self._within_lifetime(g, now)]
        changed = len(kept) != len(self.guards)
        candidates = sorted(listed - {g.node_id for g in kept})
        while len(kept) < self.size and candidates:
            chosen = candidates.pop(self._rng.randrange(len(candidates)))
            kept.append(Guard(chosen, now))
            changed = True
        self.guards = kept
        self.shortfall = self.size - len(kept)
        return changed

    def _within_lifetime(self, guard: Guard, now: int) -> bool:
        """Chosen less than ``lifetime_ms`` ago (and not in the future: a day's clock margin)."""
        return -_DAY_MS < now - guard.chosen_at_ms < self.lifetime_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "guards": [
                {"node_id": g.node_id.hex(), "chosen_at_ms": g.chosen_at_ms} for g in self.guards
            ],
        }

    @classmethod
    def from_json(
        cls,
        document: object,
        *,
        size: int = GUARDS,
        lifetime_ms: int = GUARD_LIFETIME_MS,
        rng: random.Random | None = None,
    ) -> GuardSet:
        """The guards saved in ``document``; an entry that is not a guard is skipped (and so
        replaced by the next :meth:`update`)."""
        entries = document.get("guards") if isinstance(document, dict) else None
        guards = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            node_hex, chosen = entry.get("node_id"), entry.get("chosen_at_ms")
            if not isinstance(node_hex, str) or len(node_hex) != 64:
                continue
            if not isinstance(chosen, int) or isinstance(chosen, bool) or chosen < 0:
                continue
            try:
                guards.append(Guard(bytes.fromhex(node_hex), chosen))
            except ValueError:
                continue
        return cls(guards, size=size, lifetime_ms=lifetime_ms, rng=rng)
