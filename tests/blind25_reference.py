"""A plain-Python blind25 (blinded IDs for communities), written from the docstring of
``veil.protocol.blinding`` alone over PyNaCl's low-level bindings and ``hashlib``, to check the Rust
core (``rust/veil-core/src/blind.rs``) against an implementation that shares none of its code. It
shares nothing with curve25519-dalek: libsodium does the group arithmetic, and the Montgomery →
Edwards map is computed here with Python integers. Not for production: no constant-time care.
"""

from __future__ import annotations

import hashlib

from nacl import bindings

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
FACTOR_KEY = b"veil-blind25-v1"
NONCE_DOMAIN = b"veil-blind25-nonce"
DM_KEY = b"veil-blind25-dm"


def reduce(wide: bytes) -> bytes:
    """A 64-byte little-endian integer mod L (libsodium's scalar_reduce)."""
    return bytes(bindings.crypto_core_ed25519_scalar_reduce(wide))


def clamp(half: bytes) -> bytes:
    clamped = bytearray(half)
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    return bytes(clamped)


def expand(seed: bytes) -> tuple[bytes, bytes, bytes]:
    """``(a, A, h[32:64])``: the Ed25519 scalar (reduced), public key and nonce prefix."""
    h = hashlib.sha512(seed).digest()
    a = reduce(clamp(h[:32]) + bytes(32))
    public = bytes(bindings.crypto_scalarmult_ed25519_base_noclamp(a))
    return a, public, h[32:]


def session_id_bytes(seed: bytes) -> bytes:
    """``0x05 ‖ u(A)``."""
    _, public, _ = expand(seed)
    return b"\x05" + bytes(bindings.crypto_sign_ed25519_pk_to_curve25519(public))


def blinding_factor(sid: bytes, server_pk: bytes) -> bytes:
    k = reduce(hashlib.blake2b(sid + server_pk, key=FACTOR_KEY, digest_size=64).digest())
    if k == bytes(32):
        raise ValueError("k = 0")
    return k


def keypair(seed: bytes, server_pk: bytes) -> tuple[bytes, bytes]:
    """``(b, B)``."""
    a, public, _ = expand(seed)
    sid = b"\x05" + bytes(bindings.crypto_sign_ed25519_pk_to_curve25519(public))
    k = blinding_factor(sid, server_pk)
    a_plus = bytes(bindings.crypto_core_ed25519_scalar_negate(a)) if public[31] & 0x80 else a
    b = bytes(bindings.crypto_core_ed25519_scalar_mul(k, a_plus))
    return b, bytes(bindings.crypto_scalarmult_ed25519_base_noclamp(b))


def edwards_from_u(u: bytes) -> bytes:
    """``A⁺``: the Edwards point with ``y = (u - 1) / (u + 1)`` and sign bit 0. Raises ValueError
    for a non-canonical ``u``, ``u = -1`` or a ``y`` that is not on the curve."""
    n = int.from_bytes(u, "little")
    if n >= P or (n + 1) % P == 0:
        raise ValueError("not a usable u")
    y = (n - 1) * pow(n + 1, P - 2, P) % P
    encoded = y.to_bytes(32, "little")
    if not bindings.crypto_core_ed25519_is_valid_point(encoded):
        raise ValueError("not a point of the prime-order subgroup")
    return encoded


def public_from_session_id(sid: bytes, server_pk: bytes) -> bytes:
    """``B`` from a Session ID's 33 bytes."""
    if len(sid) != 33 or sid[0] != 0x05:
        raise ValueError("not a Session ID")
    k = blinding_factor(sid, server_pk)
    return bytes(bindings.crypto_scalarmult_ed25519_noclamp(k, edwards_from_u(sid[1:])))


def sign(seed: bytes, server_pk: bytes, message: bytes) -> bytes:
    _, _, prefix = expand(seed)
    b, blinded = keypair(seed, server_pk)
    r = reduce(hashlib.sha512(NONCE_DOMAIN + prefix + blinded + message).digest())
    big_r = bytes(bindings.crypto_scalarmult_ed25519_base_noclamp(r))
    c = reduce(hashlib.sha512(big_r + blinded + message).digest())
    s = bindings.crypto_core_ed25519_scalar_add(r, bindings.crypto_core_ed25519_scalar_mul(c, b))
    return big_r + bytes(s)


def dm_key(seed: bytes, server_pk: bytes, other: bytes, *, sending: bool) -> bytes:
    b, mine = keypair(seed, server_pk)
    if not bindings.crypto_core_ed25519_is_valid_point(other):
        raise ValueError("not a usable blinded key")
    point = bytes(bindings.crypto_scalarmult_ed25519_noclamp(b, other))
    shared = bytes(bindings.crypto_sign_ed25519_pk_to_curve25519(point))
    sender, recipient = (mine, other) if sending else (other, mine)
    return hashlib.blake2b(shared + sender + recipient, key=DM_KEY, digest_size=32).digest()
