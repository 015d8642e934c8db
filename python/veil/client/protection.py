"""Forward secrecy and post-quantum protection of one-to-one messages: ``Messenger.protection``.

Every message to a peer that publishes prekeys is a Veil v2 envelope (``veil.crypto.encrypt_v2``):
sealed under a fresh key, which is wrapped for each of the peer's devices under a fresh hybrid
X25519 + ML-KEM-768 encapsulation to that device's current prekey. Whoever records the swarms and
later takes the peer's recovery phrase and devices reads nothing once the prekeys used are
destroyed (``veil.client.prekeys``: at most about 13 hours after they were made, for a device
that fetches). Transcripts for this account's other devices go the same way, to their prekeys
(from the account config).

A peer that publishes no prekeys (a client without v2) still gets the Session Protocol message.
Once a peer has shown v2 — a valid bundle, or a v2 message — it is *pinned*: nothing is sent to it
without v2 again (:class:`DowngradeError` if its bundle cannot be read: a node that withholds the
bundle cannot make this client send without forward secrecy). A Session Protocol message *from* a
pinned peer (its older device, or a moment when it could not read this account's bundle) is kept
— dropping it would lose a message its sender already exposed — but marked as unprotected, and
counted in ``downgrades``. :meth:`MessengerProtection.level` says which protection a conversation
has, for the UI.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from veil.client.network import NetworkError
from veil.client.prekeys import BUNDLE_CACHE_MS, GRACE_MS, PrekeyRing
from veil.client.swarm import StoreError
from veil.clock import now_ms
from veil.crypto import decrypt_incoming, decrypt_v2, encrypt_for_recipient, encrypt_v2, is_v2
from veil.errors import DecryptionError, InvalidInputError
from veil.protocol.prekeys import (
    BUNDLE_NAMESPACE,
    Bundle,
    Prekey,
    PrekeyError,
    open_bundle,
    sign_bundle,
)
from veil.session_id import parse_session_id

if TYPE_CHECKING:
    from veil.client.messaging import Messenger

__all__ = ["PROTECTION_LEVELS", "DowngradeError", "MessengerProtection"]

log = logging.getLogger("veil.client")

PROTECTION_LEVELS = {
    "v2": "forward secrecy + post-quantum (Veil v2, hybrid X25519 + ML-KEM-768 prekeys)",
    "v1": "Session Protocol (no forward secrecy: the peer publishes no prekeys)",
}
BUNDLE_TTL_MS = 30 * 24 * 3600 * 1000
"""How long a published bundle lives on the swarm (the nodes' longest for an account's own
namespaces); it is stored again at every rotation, and when half of it has passed."""


class DowngradeError(InvalidInputError):
    """A message to a peer pinned to v2 whose prekeys cannot be had now: it is not sent without
    forward secrecy."""


class MessengerProtection:
    """The v2 layer of one account on one device."""

    def __init__(
        self, messenger: Messenger, clock: Callable[[], int] | None, *, enabled: bool = True
    ) -> None:
        self.m = messenger
        self.enabled = enabled
        """False: act as a client without v2 (no prekeys, Session Protocol only), for interop."""
        self.ring = PrekeyRing(messenger.book.prekeys, clock=clock or now_ms)
        self.downgrades = 0
        """Session Protocol messages received from peers pinned to v2 (kept, marked)."""

    @property
    def device(self) -> str:
        return self.m.book.device_id

    def save(self) -> None:
        self.m.book.prekeys = self.ring.wire()

    # --- what the UI shows ----------------------------------------------------------------------

    def level(self, peer: str) -> str:
        """``v2`` if the conversation with ``peer`` is protected by prekeys, else ``v1``."""
        return "v2" if peer in self.m.book.pinned or peer == self.m.me else "v1"

    def _pin(self, peer: str) -> None:
        self.m.book.pinned.setdefault(peer, now_ms())

    # --- this device's prekeys ------------------------------------------------------------------

    def maintain(self) -> bool:
        """Rotate this device's prekey if due (the config then lists the new one); True if the
        bundle must be published again."""
        if not self.enabled:
            return False
        rotated = self.ring.rotate_if_due()
        current = self.ring.prekey(self.device)
        held = self.m.config.prekeys.get(self.device)
        if current is not None and (held is None or held[0] != current.public):
            self.m.config.set_prekey(self.device, current.public, current.created_ms)
            self.m.config_dirty = True
            rotated = True
        stale = now_ms() - self.m.book.bundle_stored_ms > BUNDLE_TTL_MS // 2
        return rotated or stale or self.m.book.bundle_stored_ms == 0

    def own_prekeys(self, *, others_only: bool) -> list[Prekey]:
        """This account's live devices' current prekeys, from the config."""
        live = self.m.config.live_devices()
        return [
            Prekey(device, public, created)
            for device, (public, created) in sorted(self.m.config.prekeys.items())
            if device in live and not (others_only and device == self.device)
        ]

    async def publish(self) -> bool:
        """Store the account's bundle (every live device's current prekey, signed); True if the
        swarm took it."""
        keys = self.own_prekeys(others_only=False)
        if not keys:
            return False
        bundle = sign_bundle(self.m.identity.seed, keys[-16:])
        try:
            await self.m.swarm.store(
                self.m.me,
                bundle,
                ttl_ms=BUNDLE_TTL_MS,
                namespace=BUNDLE_NAMESPACE,
                identity=self.m.identity,
            )
        except (NetworkError, StoreError) as exc:
            log.warning("prekey bundle not stored: %s", type(exc).__name__)
            return False
        self.m.book.bundle_stored_ms = now_ms()
        self.ring.published(self.ring.clock())
        return True

    def destroy_old(self, fetch_started_ms: int) -> int:
        return self.ring.destroy_old(fetch_started_ms)

    # --- peers' prekeys -------------------------------------------------------------------------

    async def peer_prekeys(self, peer: str) -> list[Prekey]:
        """The peer's devices' current prekeys, from its bundle (read again after the cache
        time); empty if it publishes none."""
        cached = self.m.book.bundles.get(peer)
        now = self.ring.clock()
        if cached is not None and now - int(cached.get("read_ms", 0)) < BUNDLE_CACHE_MS:
            return list(self._cached_bundle(peer, cached).keys)
        account = parse_session_id(peer)
        newest: tuple[int, bytes] | None = None
        with contextlib.suppress(NetworkError):
            for message in await self.m.swarm.read_public(peer, namespace=BUNDLE_NAMESPACE):
                with contextlib.suppress(binascii.Error, ValueError, PrekeyError):
                    data = base64.b64decode(message["data"], validate=True)
                    bundle = open_bundle(data, account)
                    if newest is None or bundle.published_ms > newest[0]:
                        newest = (bundle.published_ms, data)
        if newest is None:
            self.m.book.bundles.pop(peer, None)
            return []
        self.m.book.bundles[peer] = {
            "data": base64.b64encode(newest[1]).decode("ascii"),
            "read_ms": now,
        }
        self._pin(peer)
        return list(open_bundle(newest[1], account).keys)

    def _cached_bundle(self, peer: str, cached: dict[str, object]) -> Bundle:
        try:
            return open_bundle(base64.b64decode(str(cached["data"])), parse_session_id(peer))
        except (KeyError, binascii.Error, ValueError, PrekeyError):
            return Bundle(account=b"", published_ms=0, keys=())

    # --- sealing and opening --------------------------------------------------------------------

    async def seal(self, recipient: str, padded: bytes) -> bytes:
        """The stored form of a message to ``recipient`` (a peer, or this account for its other
        devices): v2 if it has prekeys, else the Session Protocol (refused for a pinned peer)."""
        if not self.enabled:
            return encrypt_for_recipient(self.m.identity, recipient, padded)
        if recipient == self.m.me:
            keys = self.own_prekeys(others_only=True)
            others = [d for d in self.m.config.live_devices() if d != self.device]
            if len(keys) != len(others):  # a device without a prekey reads only the old way
                keys = []
        else:
            keys = await self.peer_prekeys(recipient)
            if not keys and recipient in self.m.book.pinned:
                raise DowngradeError(
                    f"{recipient[:10]}… has used forward-secret messages, but its prekeys cannot "
                    "be read now; not sending without forward secrecy (try again later)"
                )
        if not keys:
            return encrypt_for_recipient(self.m.identity, recipient, padded)
        return encrypt_v2(self.m.identity, recipient, [(k.id, k.public) for k in keys], padded)

    def open(self, sealed: bytes) -> tuple[bytes, str, bool]:
        """``(padded content, sender, v2?)``; :class:`DecryptionError` for what does not open or
        is a refused downgrade (the caller counts it)."""
        if is_v2(sealed):
            try:
                plaintext, sender = decrypt_v2(self.m.identity, sealed, self.ring.secrets())
            except DecryptionError:
                pass  # a Session Protocol message that happens to start like one, perhaps
            else:
                if sender != self.m.me:
                    self._pin(sender)
                return plaintext, sender, True
        plaintext, sender = decrypt_incoming(self.m.identity, sealed)
        return plaintext, sender, False

    def downgraded(self, sender: str, sent_ms: int, v2: bool) -> bool:
        """Whether a message opened from ``sender`` came without forward secrecy although the
        sender was pinned to v2 when it was sent (less the clocks' margin): shown marked."""
        pinned = self.m.book.pinned.get(sender)
        if v2 or pinned is None or sender == self.m.me or sent_ms <= pinned - GRACE_MS:
            return False
        self.downgrades += 1
        return True
