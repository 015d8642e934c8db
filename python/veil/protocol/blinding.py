"""Blinded IDs for communities ("blind25"): how a user appears on a community server.

A community server (an open group) sees its members under blinded IDs derived from their identity
and the server's public key, so that two servers cannot link a user and a server cannot recover a
user's Session ID — it can only confirm one it guesses, as with Session's 25-blinding. The core is
``rust/veil-core/src/blind.rs``; ``docs/protocol.md``, "Blinded IDs (communities)", has a worked
example.

The construction, byte by byte (``‖`` concatenation; ``G`` the Ed25519 base point and
``L = 2^252 + 27742317777372353535851937790883648493`` its order; ``p = 2^255 - 19``; scalars 32
bytes little-endian; points in the standard Ed25519 encoding, y little-endian with x's sign in
bit 7 of byte 31):

```
seed                 the user's 32-byte Ed25519 seed
h  = SHA-512(seed)                                                            64 bytes
a  = clamp(h[0:32]) mod L   (clamp: byte 0 &= 248, byte 31 &= 127, byte 31 |= 64, as Ed25519)
A  = a·G                    the Ed25519 public key; bit 7 of A[31] is its sign bit (x odd)
u  = the Montgomery u of A  = (1 + y) / (1 - y) mod p (libsodium's ed25519_pk_to_curve25519)
sid = 0x05 ‖ u              the Session ID's 33 bytes ("05" ‖ hex(u) as text)
S  = the server's 32-byte public key (its X25519 key; only hashed, never used as a point)
k  = BLAKE2b-512(key = "veil-blind25-v1", sid ‖ S) read little-endian, mod L; k = 0 is refused
A⁺ = A with bit 7 of byte 31 cleared (the one of ±A whose x is even)
a⁺ = a if that bit of A was 0, else L - a   (so a⁺·G = A⁺)
b  = k·a⁺ mod L             the blinded secret scalar
B  = b·G = k·A⁺             the blinded public key
blinded ID = "25" ‖ lowercase hex(B)                                          66 characters
```

A blinded ID parses only as ``25`` followed by 64 lowercase hexadecimal digits that encode, in
canonical form, a point of the prime-order subgroup other than the identity
(:class:`InvalidBlindedIdError` otherwise).

**From a Session ID** (what anyone holding it can compute: a member addressing a known contact, a
server testing a guess): ``u`` fixes ``A`` up to its sign, ``u(A) = u(-A)``; ``A⁺`` is the Edwards
point with ``y = (u - 1) / (u + 1)`` and sign bit 0, and ``B = k·A⁺`` with ``k`` from ``sid`` and
``S`` as above. ``u`` must be the canonical encoding of a point of the prime-order subgroup.

**Signatures** are standard Ed25519 under ``B``, so any Ed25519 verifier checks them
(``s·G = R + c·B``)::

    r = SHA-512("veil-blind25-nonce" ‖ h[32:64] ‖ B ‖ message) mod L
    R = r·G    c = SHA-512(R ‖ B ‖ message) mod L    s = r + c·b mod L    signature = R ‖ s

**Direct messages** between two blinded users of one server, through it, end to end::

    shared = u(b_me · B_other)       (X25519-style Montgomery ladder by the unclamped b)
    key    = BLAKE2b-256(key = "veil-blind25-dm", shared ‖ B_sender ‖ B_recipient)

``B_other`` must parse as a blinded ID (so no small-order point can force ``shared``), and an
all-zero ``shared`` is refused.

Why it holds:

- **Consistency.** ``b·G = k·a⁺·G = k·A⁺``, and ``A⁺`` depends only on ``u``: the key pair a user
  derives from its seed and the key anyone derives from its Session ID are the same ``B``.
- **The sign-bit normalisation.** A Session ID carries only ``u``, which names both ``A`` and
  ``-A``. Blinding ``A`` itself would give a guesser two candidates and the user a key that depends
  on a bit the Session ID does not carry (Session's older 15-blinding has two blinded IDs per user
  for this reason). Blinding ``A⁺`` makes ``B`` a function of ``sid`` and ``S`` alone, and
  negating ``a`` when ``A``'s sign bit is set keeps ``b`` the discrete log of ``B``.
- **Unlinkability across servers.** ``k`` is the output of a keyed hash (a PRF) of ``sid ‖ S``: for
  the same user, ``k₁`` (server ``S₁``) and ``k₂`` (server ``S₂``) are independent uniform scalars
  to anyone who does not know ``sid``. ``B₂ = (k₂·k₁⁻¹)·B₁``, and that ratio cannot be computed from
  ``B₁``, ``S₁`` and ``S₂``: every pair of points is related by some scalar, so the pair
  ``(B₁, B₂)`` of one user looks like the pair of two users.
- **No way back to the Session ID.** Recovering ``A⁺ = k⁻¹·B`` needs ``k``, which needs ``sid``.
  Session's 15-blinding used ``k = H(S)``, which the server knows, so ``k⁻¹·B`` gave every member's
  key back; here the server holds ``S`` and ``B`` but not ``sid``.
- **What a server can do.** Test a guess: for a candidate Session ID, compute ``B`` from it and
  compare (:func:`session_id_matches`). A server holding a list of Session IDs (they are shared
  with contacts, often posted) can so find which of them are among its members, and two servers
  that share such a list can link those members. This is exactly what Session's 25-blinding allows:
  blinding protects users whose Session ID the server does not already have.
- **Signatures** are verified under ``B`` alone (no Session ID). The nonce is deterministic from
  the secret half of ``h`` (as Ed25519's), with ``B`` in its input so that it differs per server,
  and a domain prefix so that it never equals the nonce of an ordinary Ed25519 signature by the
  same seed (that input is ``h[32:64] ‖ message``).
- **The DM key.** ``u(b₁·B₂) = u(b₁·b₂·G) = u(b₂·B₁)``: both ends derive it, the server (holding
  ``B₁``, ``B₂``, neither ``b``) cannot (computational Diffie-Hellman). The key binds both blinded
  keys in sender-then-recipient order, so the two directions have different keys, and differs per
  pair and per server.

Not byte-compatible with Session: Session's ``k`` is the unkeyed BLAKE2b-512 of ``sid ‖ S``, so
the same Session ID and server give a different ``25`` ID there.
"""

from __future__ import annotations

from veil import _core
from veil.errors import InvalidInputError, InvalidKeyError, InvalidSessionIdError
from veil.identity import Identity
from veil.session_id import parse_session_id

__all__ = [
    "BLINDED_ID_PREFIX",
    "BlindedIdentity",
    "InvalidBlindedIdError",
    "blinded_id_of",
    "format_blinded_id",
    "parse_blinded_id",
    "parse_blinded_key",
    "session_id_matches",
    "verify",
]

BLINDED_ID_PREFIX = "25"
SERVER_KEY_LEN = 32
_HEX_DIGITS = frozenset("0123456789abcdef")


class InvalidBlindedIdError(InvalidInputError):
    """A blinded ID is not ``25`` followed by 64 lowercase hex digits of a usable blinded key."""


def _server_key(server_pk: bytes) -> bytes:
    if not isinstance(server_pk, bytes) or len(server_pk) != SERVER_KEY_LEN:
        raise InvalidKeyError("a server public key is 32 bytes")
    return server_pk


def format_blinded_id(public_key: bytes) -> str:
    """``"25"`` + hex of a 32-byte blinded public key (checked to be usable)."""
    return BLINDED_ID_PREFIX + parse_blinded_key(public_key).hex()


def parse_blinded_key(public_key: bytes) -> bytes:
    """``public_key`` if it is a usable blinded public key, else :class:`InvalidBlindedIdError`."""
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise InvalidBlindedIdError("a blinded public key is 32 bytes")
    try:
        _core.blind25_check_public(public_key)
    except InvalidKeyError:
        raise InvalidBlindedIdError("a blinded ID must name a usable key") from None
    return public_key


def parse_blinded_id(blinded_id: str) -> bytes:
    """The 32-byte blinded public key named by a blinded ID (lowercase only: one key, one ID)."""
    if not isinstance(blinded_id, str):
        raise InvalidBlindedIdError("a blinded ID is a string")
    if (
        len(blinded_id) != 66
        or not blinded_id.startswith(BLINDED_ID_PREFIX)
        or not _HEX_DIGITS.issuperset(blinded_id[2:])
    ):
        raise InvalidBlindedIdError("a blinded ID is '25' followed by 64 lowercase hex digits")
    return parse_blinded_key(bytes.fromhex(blinded_id[2:]))


def _blind(session_id: str, server_pk: bytes) -> tuple[bytes, bytes]:
    """The Session ID's 33 bytes, checked to name a usable key, and the server key, checked."""
    sid = b"\x05" + parse_session_id(session_id)
    return sid, _server_key(server_pk)


def blinded_id_of(session_id: str, server_pk: bytes) -> str:
    """The blinded ID of a Session ID on the server ``server_pk``.

    Raises :class:`InvalidSessionIdError` for a Session ID that is malformed or not a usable key,
    :class:`InvalidKeyError` for a server key that is not 32 bytes.
    """
    sid, server_pk = _blind(session_id, server_pk)
    try:
        public = _core.blind25_public(sid, server_pk)
    except InvalidKeyError:
        raise InvalidSessionIdError("a Session ID must name a usable X25519 key") from None
    return BLINDED_ID_PREFIX + public.hex()


def session_id_matches(blinded_id: str, session_id: str, server_pk: bytes) -> bool:
    """Whether ``blinded_id`` is the blinded ID of ``session_id`` on ``server_pk``: the one test a
    server can run on a guessed Session ID. Compared in constant time."""
    public = parse_blinded_id(blinded_id)
    sid, server_pk = _blind(session_id, server_pk)
    try:
        return _core.blind25_matches(public, sid, server_pk)
    except InvalidKeyError:
        raise InvalidSessionIdError("a Session ID must name a usable X25519 key") from None


def verify(blinded_id: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid (strict) Ed25519 signature of ``message`` under the key of
    ``blinded_id``. Raises :class:`InvalidBlindedIdError` for a malformed ID only."""
    return _core.ed25519_verify(parse_blinded_id(blinded_id), message, signature)


class BlindedIdentity:
    """One account as it appears on one community server (its X25519 key ``server_pk``).

    The blinded secret lives in the Rust core (``veil._core.Blind25Key``) and is derived once. The
    repr names the blinded ID only.
    """

    __slots__ = ("_key", "_server_pk")

    def __init__(self, identity: Identity, server_pk: bytes) -> None:
        if not isinstance(identity, Identity):
            raise InvalidKeyError("a BlindedIdentity is made from an Identity")
        self._server_pk = _server_key(server_pk)
        self._key = _core.Blind25Key(identity.seed, server_pk)

    @property
    def server_public_key(self) -> bytes:
        return self._server_pk

    @property
    def public_key(self) -> bytes:
        """``B``, the 32-byte blinded public key."""
        return self._key.public

    @property
    def blinded_id(self) -> str:
        """``"25"`` + hex(B)."""
        return BLINDED_ID_PREFIX + self._key.public.hex()

    @property
    def pubkey(self) -> str:
        """The blinded ID, as a signed community request names its signer
        (:class:`veil.protocol.community.Signer`)."""
        return self.blinded_id

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``message`` under ``B`` (see :func:`verify`)."""
        return self._key.sign(message)

    def dm_key(self, other_blinded_id: str, *, sending: bool) -> bytes:
        """The 32-byte key of direct messages with ``other_blinded_id`` on this server: from this
        user to the other when ``sending``, from the other to this user when not."""
        return self._key.dm_key(parse_blinded_id(other_blinded_id), sending)

    def __repr__(self) -> str:
        return f"BlindedIdentity(blinded_id={self.blinded_id!r})"
