"""Veil's cryptography, as typed wrappers over the Rust core (``veil._core``).

- The Session Protocol for one-to-one messages: :func:`encrypt_for_recipient`,
  :func:`decrypt_incoming`.
- Veil v2 one-to-one messages (forward secret and post-quantum, to the recipient's devices'
  prekeys): :func:`encrypt_v2`, :func:`decrypt_v2`, :func:`is_v2`.
- Hop encryption (libsession-util's "xchacha20"): :class:`HopKey`.
- Onion layers (``docs/protocol.md``): :func:`build_onion`, :class:`NodeKey` (a node's key, held in
  Rust: it peels layers one at a time or in batches, and keys node links), :class:`PeeledLayer`;
  :func:`peel_onion` and :func:`peel_onion_batch` for one-off use.

Every decryption or authentication failure raises the same :class:`veil.errors.DecryptionError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from veil import _core
from veil.errors import InvalidInputError
from veil.identity import Identity
from veil.session_id import format_session_id, parse_session_id

__all__ = [
    "HopKey",
    "NodeKey",
    "PeeledLayer",
    "build_onion",
    "decrypt_incoming",
    "decrypt_v2",
    "encrypt_for_recipient",
    "encrypt_v2",
    "is_v2",
    "peel_onion",
    "peel_onion_batch",
]

HopKey = _core.HopKey
NodeKey = _core.NodeKey
PeeledLayer = _core.PeeledLayer


def encrypt_for_recipient(sender: Identity, recipient_session_id: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` from ``sender`` to a Session ID (Session Protocol).

    ``SIG = Ed25519_sign(M ‖ A_ed ‖ Y_x)``, then a sealed box of ``M ‖ A_ed ‖ SIG`` to ``Y_x``.
    Raises :class:`~veil.errors.InvalidSessionIdError` for a malformed Session ID.
    """
    recipient = parse_session_id(recipient_session_id)
    return _core.session_encrypt(sender.seed, recipient, plaintext)


def decrypt_incoming(recipient: Identity, ciphertext: bytes) -> tuple[bytes, str]:
    """Open a Session Protocol message: ``(plaintext, sender's Session ID)``.

    The signature is checked; any failure raises :class:`~veil.errors.DecryptionError`.
    """
    plaintext, _sender_ed25519, sender_x25519 = _core.session_decrypt(
        recipient.x25519_secret_key, recipient.x25519_public_key, ciphertext
    )
    return plaintext, format_session_id(sender_x25519)


def encrypt_v2(
    sender: Identity,
    recipient_session_id: str,
    prekeys: Sequence[tuple[bytes, bytes]],
    plaintext: bytes,
) -> bytes:
    """A v2 envelope of ``plaintext`` from ``sender`` to the recipient account's devices, one
    slot per ``(key id, hybrid public key)`` of ``prekeys`` (``docs/protocol.md``)."""
    recipient = parse_session_id(recipient_session_id)
    return _core.envelope_seal(sender.seed, recipient, list(prekeys), plaintext)


def is_v2(data: bytes) -> bool:
    """Whether ``data`` starts as a v2 envelope does (opening decides the rest)."""
    return _core.envelope_is(data)


def decrypt_v2(
    recipient: Identity, envelope: bytes, prekeys: Sequence[tuple[bytes, bytes]]
) -> tuple[bytes, str]:
    """Open a v2 envelope with this device's prekeys ``(key id, secret)``: ``(plaintext, the
    sender's Session ID)``; any failure raises :class:`~veil.errors.DecryptionError`."""
    plaintext, _sender_ed25519, sender_x25519 = _core.envelope_open(
        envelope, recipient.x25519_public_key, list(prekeys)
    )
    return plaintext, format_session_id(sender_x25519)


def build_onion(
    route: Sequence[bytes], payload: bytes, *, routing: Sequence[bytes] | None = None
) -> tuple[bytes, HopKey]:
    """Wrap ``payload`` in one layer per hop of ``route`` (X25519 public keys, first hop first).

    ``routing``, if given, holds one entry of routing data per hop (at most 65,535 bytes each).
    Returns the onion and the :class:`HopKey` with which the destination will encrypt its reply.
    """
    return _core.build_onion(route, payload, routing)


def peel_onion(node_x25519_secret: bytes, onion: bytes) -> PeeledLayer:
    """Peel one layer with the node's X25519 secret key (parsing the key each time: a node keeps a
    :class:`NodeKey` and calls its ``peel``)."""
    return _core.NodeKey(node_x25519_secret).peel(onion)


def peel_onion_batch(
    node_x25519_secret: bytes, onions: Sequence[bytes]
) -> list[PeeledLayer | InvalidInputError]:
    """Peel many onions on all cores with the GIL released (``NodeKey.peel_batch``).

    Returns one result per input, in order: a :class:`PeeledLayer`, or the exception for that
    input (:class:`~veil.errors.DecryptionError`, or :class:`~veil.errors.InputTooLargeError` for a
    layer over ``MAX_ONION_LEN``).
    """
    return _core.NodeKey(node_x25519_secret).peel_batch(onions)
