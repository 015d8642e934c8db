"""A device's prekeys and what a sender knows of its peers' (``docs/protocol.md``, "Forward
secrecy and post-quantum protection").

**The device's own** (:class:`PrekeyRing`, kept in the book). A device holds one current prekey,
a hybrid X25519 + ML-KEM-768 key pair made from 32 fresh random bytes, and rotates it every
12 hours (less a random jitter of up to an hour, so that the devices of many accounts do not rotate
in step) when it is online. The old one is *retired*: senders stop using it once they see the
bundle with its successor (they read a bundle again after :data:`BUNDLE_CACHE_MS`), so the device
destroys its secret at the first fetch that starts :data:`BUNDLE_CACHE_MS` + :data:`GRACE_MS`
after that bundle was stored — having then fetched every message that can have been sent to it —
or, for a device that does not fetch, :data:`MAX_RETAINED_MS` after it was retired (no message sent
to it can still be on a swarm: they live at most 14 days). That is the retention window: for a
device that fetches regularly, a message can be opened with the device's state for at most about
13 hours after its prekey was made (the rotation, the senders' cache, one fetch); for one that is
offline, until it comes back and rotates.

**Peers'** (:class:`PeerKeys`): the newest bundle read from the peer's swarm, kept for
:data:`BUNDLE_CACHE_MS`; and, once a peer has shown it speaks v2 (a valid bundle, or a v2
message), the time it did, so that a message is never again sent to it without forward secrecy
and a Session Protocol message from it sent later is refused (a downgrade).
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from veil import _core
from veil.protocol.prekeys import Prekey, key_id

__all__ = [
    "BUNDLE_CACHE_MS",
    "GRACE_MS",
    "MAX_RETAINED_MS",
    "ROTATE_MS",
    "DeviceKey",
    "PrekeyRing",
]

ROTATE_MS = 12 * 3600 * 1000
ROTATE_JITTER_MS = 3600 * 1000
BUNDLE_CACHE_MS = 3600 * 1000
"""How long a sender uses a bundle it read before it reads the peer's bundle again."""
GRACE_MS = 5 * 60 * 1000
"""Margin for clocks (nodes take stores within 60 s), replication and the retrieve look-back."""
MAX_RETAINED_MS = 15 * 24 * 3600 * 1000
"""A retired prekey's secret is destroyed this long after it was retired, fetched or not: senders
stop using it within the bundle cache, and a message lives at most 14 days on a swarm."""


@dataclass(slots=True)
class DeviceKey:
    """One of this device's prekeys."""

    secret: bytes
    public: bytes
    created_ms: int
    rotate_ms: int
    """When it is replaced by a new one (created + 12 h - jitter)."""
    superseded_ms: int | None = None
    """When a bundle with its successor was stored: senders move on from then."""
    retired_ms: int | None = None

    @property
    def id(self) -> bytes:
        return key_id(self.public)

    def wire(self) -> dict[str, Any]:
        return {
            "secret": self.secret.hex(),
            "public": base64.b64encode(self.public).decode("ascii"),
            "created_ms": self.created_ms,
            "rotate_ms": self.rotate_ms,
            "superseded_ms": self.superseded_ms,
            "retired_ms": self.retired_ms,
        }

    @classmethod
    def from_wire(cls, value: object) -> DeviceKey | None:
        if not isinstance(value, dict):
            return None
        try:
            key = cls(
                secret=bytes.fromhex(value["secret"]),
                public=base64.b64decode(value["public"], validate=True),
                created_ms=int(value["created_ms"]),
                rotate_ms=int(value["rotate_ms"]),
                superseded_ms=_optional_int(value.get("superseded_ms")),
                retired_ms=_optional_int(value.get("retired_ms")),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            return None
        return key


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


class PrekeyRing:
    """This device's prekeys, as the book keeps them (``book.prekeys``)."""

    def __init__(
        self,
        saved: list[Any],
        *,
        clock: Callable[[], int],
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self._rng = rng or random.SystemRandom()
        self.keys = [k for k in (DeviceKey.from_wire(v) for v in saved) if k is not None]

    def wire(self) -> list[dict[str, Any]]:
        return [k.wire() for k in self.keys]

    @property
    def current(self) -> DeviceKey | None:
        live = [k for k in self.keys if k.retired_ms is None]
        return max(live, key=lambda k: k.created_ms) if live else None

    def prekey(self, device: str) -> Prekey | None:
        """The current key as the bundle lists it."""
        current = self.current
        return None if current is None else Prekey(device, current.public, current.created_ms)

    def rotate_if_due(self) -> bool:
        """Make a new prekey if there is none or the current one is due; True if one was made
        (the config and the bundle then need it)."""
        now = self.clock()
        current = self.current
        if current is not None and now < current.rotate_ms:
            return False
        if current is not None:
            current.retired_ms = now
        public, secret = _core.hybrid_keypair()
        jitter = self._rng.randrange(ROTATE_JITTER_MS)
        self.keys.append(DeviceKey(secret, public, now, now + ROTATE_MS - jitter))
        return True

    def published(self, at_ms: int) -> None:
        """A bundle with the current key was stored at ``at_ms``: every retired key is
        superseded from then (if it was not already)."""
        for key in self.keys:
            if key.retired_ms is not None and key.superseded_ms is None:
                key.superseded_ms = at_ms

    def destroy_old(self, fetch_started_ms: int | None) -> int:
        """Forget the secrets no sender can still be using (see the module); how many."""
        now = self.clock()
        kept = []
        for key in self.keys:
            if key.retired_ms is not None and (
                now > key.retired_ms + MAX_RETAINED_MS
                or (
                    key.superseded_ms is not None
                    and fetch_started_ms is not None
                    and fetch_started_ms > key.superseded_ms + BUNDLE_CACHE_MS + GRACE_MS
                )
            ):
                continue
            kept.append(key)
        destroyed = len(self.keys) - len(kept)
        self.keys = kept
        return destroyed

    def secrets(self) -> list[tuple[bytes, bytes]]:
        """(key id, secret) of every key held, for opening v2 messages."""
        return [(k.id, k.secret) for k in self.keys]
