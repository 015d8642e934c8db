"""Blinded IDs for communities (blind25): the Rust core against a plain-PyNaCl reference written
from the docstring of ``veil.protocol.blinding`` (``blind25_reference.py``), the properties that
docstring claims, hostile inputs, fixed vectors, and the worked example of ``docs/protocol.md``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

import blind25_reference as ref
from veil import _core
from veil.errors import InvalidInputError, InvalidKeyError, InvalidSessionIdError
from veil.identity import Identity
from veil.protocol.blinding import (
    BlindedIdentity,
    InvalidBlindedIdError,
    blinded_id_of,
    format_blinded_id,
    parse_blinded_id,
    parse_blinded_key,
    session_id_matches,
    verify,
)
from veil.session_id import format_session_id

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
D = -121665 * pow(121666, ref.P - 2, ref.P) % ref.P

# --- Fixed vectors: any change to the format changes one of these --------------------------------

SERVER_1 = bytes.fromhex("79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a")
SERVER_2 = bytes.fromhex("675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f")
VECTOR_MESSAGE = b"veil blind25 vector"
# (seed, sign bit of A, Session ID, [(server, blinded ID, b, signature of VECTOR_MESSAGE)])
VECTORS = [
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        1,
        "054701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01",
        [
            (
                SERVER_1,
                "252f12424b22a47b291434ffd43733b3a1ad7a3a81d4f1b484fc16879133b86758",
                "8f46923cabac3cf554587914b160027d2bd51c083bd2de726a34956c31e24902",
                "cbaf618384e212bf1925444e533fba6af4a3b7e6fe69c8da7878d11b4e56c22d"
                "84a495bde0cbc43e31bb3b2e4893d0a53c8677fc03fa1167acc5aa7d9258620d",
            ),
            (
                SERVER_2,
                "256dc2ca22a1f50c88bc34940c5efd2c06f0e2a24483074e9681ca8653c6586c9c",
                "c8868f49ce89f94d6ad53debf4d5e0e1f5cd17e7f53a2af6a52a97dd5019c009",
                "2dac718f53d45280d3adbe012084b255bbb3be7a97379bf4c0fa3885f654d4e0"
                "8e4788a0bf7690c9b0636efba1cd577cf480184fc252ea5f837820664db28902",
            ),
        ],
    ),
    (
        "0101010101010101010101010101010101010101010101010101010101010101",
        0,
        "051b1b58dd50ea14b60da17b790cd02754d970c9bab864ebb3c0f3016fe51d3f57",
        [
            (
                SERVER_1,
                "25b5d4b81e6317d5cdc9698d0ec3d89ddb5bae8f9bb982ec187c86761077aab927",
                "3b17e413c6eb22c7f46656fb5cb2f330feb2466468d50efa6bf26918319ba40a",
                "0c991cf18ec0ac41dfcc7e747b41eb0e04aa37c7f53e695f2730b59b003893bb"
                "5224f0d212a520c2abd99bcb4a738afc07c82e2aead5f66bb5cf8621c3a46408",
            ),
            (
                SERVER_2,
                "255b2f8ebc0fd7384f02bcc9cfa362397c9be7aa42206600b9b5a8073ae28814c0",
                "079a9e8197bc575688ee6fc9d320c76b0dfc7242ff6cfc9e526b3c165c1df00c",
                "44aac5215ec58643b6742044f1d615181b2ced963e8a69f15bd7fd156788e8aa"
                "2d827de3f2c9847133be1416e58d70e65089f9d2ab48586c1fdf75a9a8eceb01",
            ),
        ],
    ),
]
# The DM keys of the two vector users on SERVER_1: first → second, second → first.
VECTOR_DM_KEYS = (
    "6a3dfd84d70ab5097f949d33c6350703b09fb47c8e0e11943c5b2d4c358e9db0",
    "13bc1374509cd483f48aa1da63e73b2cf4a893aff7a67478cd593cdb2ed6e68b",
)

# The eight points of small order, canonically encoded (libsodium's list), each also with the sign
# bit set (for x = 0 that is a non-canonical encoding of the same point).
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # the identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    )
]
SMALL_ORDER += [point[:31] + bytes([point[31] | 0x80]) for point in SMALL_ORDER]
# y >= p: non-canonical encodings of points (y = p is 0, p + 1 is 1, ...)
NON_CANONICAL = [(ref.P + i).to_bytes(32, "little") for i in range(19) if ref.P + i < 2**255] + [
    (2**255 - 1).to_bytes(32, "little")
]


def not_a_point() -> bytes:
    """A y whose x would be the square root of a non-square: not the encoding of any point."""
    for y in range(2, 1000):
        x2 = (y * y - 1) * pow(D * y * y + 1, ref.P - 2, ref.P) % ref.P
        if pow(x2, (ref.P - 1) // 2, ref.P) == ref.P - 1:
            return y.to_bytes(32, "little")
    raise AssertionError("no non-point found")


def seed_with_sign(sign: int) -> bytes:
    while True:
        seed = os.urandom(32)
        if _core.ed25519_public_key(seed)[31] >> 7 == sign:
            return seed


def invert(scalar: bytes) -> bytes:
    return bytes(sodium.crypto_core_ed25519_scalar_invert(scalar))


def mul(scalar: bytes, point: bytes) -> bytes:
    return bytes(sodium.crypto_scalarmult_ed25519_noclamp(scalar, point))


def positive(point: bytes) -> bytes:
    return point[:31] + bytes([point[31] & 0x7F])


# --- The Rust core against the reference ----------------------------------------------------------


def test_cross_check_on_many_random_keys() -> None:
    for i in range(200):
        seed, server = os.urandom(32), os.urandom(32)
        message = os.urandom(i)
        b, blinded = ref.keypair(seed, server)
        assert _core.blind25_keypair(seed, server) == (b, blinded)
        a, a_public, _ = ref.expand(seed)
        assert a_public == bytes(sodium.crypto_sign_seed_keypair(seed)[0])
        sid = ref.session_id_bytes(seed)
        assert sid == b"\x05" + Identity(seed).x25519_public_key
        a_plus = bytes(sodium.crypto_core_ed25519_scalar_negate(a)) if a_public[31] >> 7 else a
        a_plus_public = bytes(sodium.crypto_scalarmult_ed25519_base_noclamp(a_plus))
        assert a_plus_public == positive(a_public)
        assert mul(ref.blinding_factor(sid, server), a_plus_public) == blinded
        assert _core.blind25_public(sid, server) == ref.public_from_session_id(sid, server)
        assert _core.blind25_public(sid, server) == blinded
        signature = _core.blind25_sign(seed, server, message)
        assert signature == ref.sign(seed, server, message)
        nacl.signing.VerifyKey(blinded).verify(message, signature)
        key = _core.Blind25Key(seed, server)
        assert key.public == blinded
        assert key.sign(message) == signature
        other = ref.keypair(os.urandom(32), server)[1]
        for sending in (True, False):
            expected = ref.dm_key(seed, server, other, sending=sending)
            assert _core.blind25_dm_key(seed, server, other, sending) == expected
            assert key.dm_key(other, sending) == expected


@given(
    seed=st.binary(min_size=32, max_size=32),
    server=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=300),
)
def test_cross_check_property(seed: bytes, server: bytes, message: bytes) -> None:
    assert _core.blind25_keypair(seed, server) == ref.keypair(seed, server)
    assert _core.blind25_sign(seed, server, message) == ref.sign(seed, server, message)


@pytest.mark.parametrize("sign", [0, 1])
def test_both_signs_of_a_blind_the_positive_point(sign: int) -> None:
    seed = seed_with_sign(sign)
    server = os.urandom(32)
    a_public = _core.ed25519_public_key(seed)
    assert a_public[31] >> 7 == sign
    sid = ref.session_id_bytes(seed)
    k = ref.blinding_factor(sid, server)
    b, blinded = _core.blind25_keypair(seed, server)
    assert blinded == mul(k, positive(a_public))
    assert bytes(sodium.crypto_scalarmult_ed25519_base_noclamp(b)) == blinded
    # blinding A itself would give -B for a negative A: the Session ID (u only) could not tell
    naive = mul(k, a_public)
    assert (naive == blinded) == (sign == 0)
    assert _core.blind25_public(sid, server) == blinded
    signature = _core.blind25_sign(seed, server, b"both signs")
    nacl.signing.VerifyKey(blinded).verify(b"both signs", signature)
    assert _core.ed25519_verify(blinded, b"both signs", signature)


def test_vectors() -> None:
    for seed_hex, sign, session_id, by_server in VECTORS:
        seed = bytes.fromhex(seed_hex)
        identity = Identity(seed)
        assert identity.ed25519_public_key[31] >> 7 == sign
        assert identity.session_id == session_id
        for server, blinded_id, b_hex, signature_hex in by_server:
            blinded = BlindedIdentity(identity, server)
            assert blinded.blinded_id == blinded_id
            assert blinded_id_of(session_id, server) == blinded_id
            assert _core.blind25_keypair(seed, server) == (
                bytes.fromhex(b_hex),
                bytes.fromhex(blinded_id[2:]),
            )
            assert ref.keypair(seed, server)[0].hex() == b_hex
            signature = bytes.fromhex(signature_hex)
            assert blinded.sign(VECTOR_MESSAGE) == signature
            assert ref.sign(seed, server, VECTOR_MESSAGE) == signature
            assert verify(blinded_id, VECTOR_MESSAGE, signature)
    first, second = (
        BlindedIdentity(Identity(bytes.fromhex(vector[0])), SERVER_1) for vector in VECTORS
    )
    assert first.dm_key(second.blinded_id, sending=True).hex() == VECTOR_DM_KEYS[0]
    assert second.dm_key(first.blinded_id, sending=False).hex() == VECTOR_DM_KEYS[0]
    assert second.dm_key(first.blinded_id, sending=True).hex() == VECTOR_DM_KEYS[1]
    assert first.dm_key(second.blinded_id, sending=False).hex() == VECTOR_DM_KEYS[1]


# --- Signatures -----------------------------------------------------------------------------------


def test_signatures_verify_under_b_only() -> None:
    seed, server, other_server = os.urandom(32), os.urandom(32), os.urandom(32)
    blinded = BlindedIdentity(Identity(seed), server)
    signature = blinded.sign(b"message")
    assert signature == blinded.sign(b"message")  # deterministic
    nacl.signing.VerifyKey(blinded.public_key).verify(b"message", signature)
    assert verify(blinded.blinded_id, b"message", signature)
    assert not verify(blinded.blinded_id, b"messagE", signature)
    assert not verify(blinded.blinded_id, b"message", signature[:63] + bytes([signature[63] ^ 1]))
    assert not verify(blinded.blinded_id, b"message", signature[:63])
    elsewhere = BlindedIdentity(Identity(seed), other_server)
    assert not verify(elsewhere.blinded_id, b"message", signature)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(_core.ed25519_public_key(seed)).verify(b"message", signature)
    # the nonce differs per server and from the ordinary Ed25519 signature's
    assert elsewhere.sign(b"message")[:32] != signature[:32]
    assert _core.ed25519_sign(seed, b"message")[:32] != signature[:32]


# --- Unlinkability and non-reversibility ---------------------------------------------------------


def test_two_servers_give_unrelated_keys_without_the_session_id() -> None:
    seed, other_seed = os.urandom(32), os.urandom(32)
    s1, s2 = os.urandom(32), os.urandom(32)
    b1, b2 = (_core.blind25_keypair(seed, server)[1] for server in (s1, s2))
    assert b2 not in (b1, b1[:31] + bytes([b1[31] ^ 0x80]))  # neither B1 nor -B1
    sid = ref.session_id_bytes(seed)
    # B2 = (k2 / k1)·B1, and that ratio needs sid:
    ratio = divide(ref.blinding_factor(sid, s2), ref.blinding_factor(sid, s1))
    assert mul(ratio, b1) == b2
    # ratios formed from the server keys without this user's sid do not link the keys
    fixed_sid, other_sid = b"\x05" + bytes(32), ref.session_id_bytes(other_seed)
    wrong_ratios = [
        divide(ref.reduce(blake2b_64(s2)), ref.reduce(blake2b_64(s1))),  # 15-style H(S)
        divide(
            ref.reduce(blake2b_64(s2, key=ref.FACTOR_KEY)),
            ref.reduce(blake2b_64(s1, key=ref.FACTOR_KEY)),
        ),
        divide(ref.blinding_factor(fixed_sid, s2), ref.blinding_factor(fixed_sid, s1)),
        divide(ref.blinding_factor(other_sid, s2), ref.blinding_factor(other_sid, s1)),
    ]
    for wrong in wrong_ratios:
        assert mul(wrong, b1) != b2
    # and this user's ratio does not relate another user's two keys
    o1, o2 = (_core.blind25_keypair(other_seed, server)[1] for server in (s1, s2))
    assert mul(ratio, o1) != o2


def blake2b_64(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=64).digest()


def divide(numerator: bytes, denominator: bytes) -> bytes:
    return bytes(sodium.crypto_core_ed25519_scalar_mul(numerator, invert(denominator)))


def test_the_server_key_alone_does_not_give_the_session_id_back() -> None:
    for sign in (0, 1):
        seed, server = seed_with_sign(sign), os.urandom(32)
        a_public = _core.ed25519_public_key(seed)
        blinded = _core.blind25_keypair(seed, server)[1]
        # Session's 15-blinding, k = H(S): anyone with S inverts it. Here it gives nothing.
        for k15 in (
            ref.reduce(blake2b_64(server)),
            ref.reduce(blake2b_64(server, key=ref.FACTOR_KEY)),
            ref.blinding_factor(b"\x05" + bytes(32), server),
        ):
            recovered = mul(invert(k15), blinded)
            assert recovered not in (a_public, positive(a_public))
        # k is a keyed hash of sid ‖ S: without sid it cannot be formed; with it, k⁻¹·B = A⁺
        k = ref.blinding_factor(ref.session_id_bytes(seed), server)
        assert mul(invert(k), blinded) == positive(a_public)


def test_a_server_can_test_a_guessed_session_id() -> None:
    server = os.urandom(32)
    member = Identity(os.urandom(32))
    others = [Identity(os.urandom(32)) for _ in range(20)]
    blinded = BlindedIdentity(member, server).blinded_id
    assert blinded_id_of(member.session_id, server) == blinded
    assert session_id_matches(blinded, member.session_id, server)
    assert session_id_matches(blinded, member.session_id.upper(), server)  # Session IDs: any case
    for other in others:
        assert not session_id_matches(blinded, other.session_id, server)
        assert blinded_id_of(other.session_id, server) != blinded
    assert not session_id_matches(blinded, member.session_id, os.urandom(32))
    assert _core.blind25_matches(
        bytes.fromhex(blinded[2:]), b"\x05" + member.x25519_public_key, server
    )


# --- DM keys --------------------------------------------------------------------------------------


def test_dm_keys_agree_both_ways_and_differ_per_pair_and_server() -> None:
    s1, s2 = os.urandom(32), os.urandom(32)
    alice, bob, carol = (Identity(os.urandom(32)) for _ in range(3))
    a1, b1, c1 = (BlindedIdentity(i, s1) for i in (alice, bob, carol))
    a2, b2 = BlindedIdentity(alice, s2), BlindedIdentity(bob, s2)
    to_bob = a1.dm_key(b1.blinded_id, sending=True)
    assert to_bob == b1.dm_key(a1.blinded_id, sending=False)
    to_alice = b1.dm_key(a1.blinded_id, sending=True)
    assert to_alice == a1.dm_key(b1.blinded_id, sending=False)
    keys = {
        to_bob,
        to_alice,
        a1.dm_key(c1.blinded_id, sending=True),
        c1.dm_key(b1.blinded_id, sending=True),
        a2.dm_key(b2.blinded_id, sending=True),
    }
    assert len(keys) == 5
    assert a2.dm_key(b2.blinded_id, sending=True) == b2.dm_key(a2.blinded_id, sending=False)
    assert len(to_bob) == 32


# --- Hostile inputs -------------------------------------------------------------------------------


def _hostile_keys(valid: bytes) -> list[bytes]:
    torsioned = [bytes(sodium.crypto_core_ed25519_add(valid, t)) for t in SMALL_ORDER[2:5]]
    return [*SMALL_ORDER, *NON_CANONICAL, not_a_point(), *torsioned]


def test_hostile_blinded_keys_raise_the_typed_error() -> None:
    seed, server = os.urandom(32), os.urandom(32)
    valid = _core.blind25_keypair(seed, server)[1]
    key = _core.Blind25Key(seed, server)
    blinded = BlindedIdentity(Identity(seed), server)
    for bad in _hostile_keys(valid):
        assert not sodium.crypto_core_ed25519_is_valid_point(bad)
        with pytest.raises(InvalidKeyError):
            _core.blind25_check_public(bad)
        with pytest.raises(InvalidKeyError):
            key.dm_key(bad, True)
        with pytest.raises(InvalidKeyError):
            _core.blind25_dm_key(seed, server, bad, False)
        with pytest.raises(InvalidBlindedIdError):
            parse_blinded_id("25" + bad.hex())
        with pytest.raises(InvalidBlindedIdError):
            parse_blinded_key(bad)
        with pytest.raises(InvalidBlindedIdError):
            blinded.dm_key("25" + bad.hex(), sending=True)
        with pytest.raises(InvalidBlindedIdError):
            verify("25" + bad.hex(), b"m", bytes(64))
    assert parse_blinded_id("25" + valid.hex()) == valid
    assert format_blinded_id(valid) == "25" + valid.hex()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "25",
        "15" + "ab" * 32,
        "05" + "ab" * 32,
        "25" + "ab" * 31,
        "25" + "ab" * 33,
        "25" + "AB" * 32,
        "25" + "zz" * 32,
        " 25" + "ab" * 32,
        "25" + "ab" * 31 + "a ",
    ],
)
def test_malformed_blinded_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidBlindedIdError):
        parse_blinded_id(text)


def test_wrong_types_and_lengths() -> None:
    seed, server = os.urandom(32), os.urandom(32)
    sid = ref.session_id_bytes(seed)
    with pytest.raises(InvalidBlindedIdError):
        parse_blinded_id(b"25" + bytes(32))  # type: ignore[arg-type]
    assert issubclass(InvalidBlindedIdError, InvalidInputError)
    for length in (0, 31, 33, 64):
        with pytest.raises(InvalidKeyError):
            _core.blind25_keypair(os.urandom(length), server)
        with pytest.raises(InvalidKeyError):
            _core.blind25_keypair(seed, os.urandom(length))
        with pytest.raises(InvalidKeyError):
            _core.Blind25Key(seed, os.urandom(length))
        with pytest.raises(InvalidKeyError):
            _core.blind25_sign(os.urandom(length), server, b"m")
        with pytest.raises(InvalidKeyError):
            _core.blind25_dm_key(seed, server, os.urandom(length), True)
        with pytest.raises(InvalidKeyError):
            _core.blind25_check_public(os.urandom(length))
        with pytest.raises(InvalidKeyError):
            BlindedIdentity(Identity(seed), os.urandom(length))
        with pytest.raises(InvalidKeyError):
            blinded_id_of(format_session_id(sid[1:]), os.urandom(length))
    for length in (0, 32, 34):
        with pytest.raises(InvalidInputError):
            _core.blind25_public(os.urandom(length), server)
    with pytest.raises(InvalidKeyError):
        _core.blind25_public(b"\x15" + sid[1:], server)
    with pytest.raises(InvalidKeyError):
        BlindedIdentity(seed, server)  # type: ignore[arg-type]


def _session_ids_that_name_no_usable_key() -> list[bytes]:
    us = [
        bytes(32),  # u = 0: order 2
        b"\x01" + bytes(31),  # u = 1: order 4
        (ref.P - 1).to_bytes(32, "little"),  # u = -1: no Edwards point
        ref.P.to_bytes(32, "little"),  # u = p, non-canonical 0
        (2**255 - 1).to_bytes(32, "little"),
    ]
    # a point of the twist: u³ + 486662·u² + u is not a square
    twist = next(
        n
        for n in range(2, 1000)
        if pow((n**3 + 486662 * n * n + n) % ref.P, (ref.P - 1) // 2, ref.P) == ref.P - 1
    )
    us.append(twist.to_bytes(32, "little"))
    # a point of the curve outside the prime-order subgroup: A + T, T of order 8
    a_public = _core.ed25519_public_key(os.urandom(32))
    torsioned = bytes(sodium.crypto_core_ed25519_add(a_public, SMALL_ORDER[2]))
    y = int.from_bytes(torsioned, "little") & (2**255 - 1)
    us.append(((1 + y) * pow(1 - y, ref.P - 2, ref.P) % ref.P).to_bytes(32, "little"))
    valid_u = ref.session_id_bytes(os.urandom(32))[1:]
    us.append(valid_u[:31] + bytes([valid_u[31] | 0x80]))  # top bit set: non-canonical
    n = int.from_bytes(valid_u, "little")
    if n + ref.P < 2**256:
        us.append((n + ref.P).to_bytes(32, "little"))  # u + p: non-canonical
    return [b"\x05" + u for u in us]


def test_session_ids_of_unusable_keys_raise_the_typed_error() -> None:
    server = os.urandom(32)
    for sid in _session_ids_that_name_no_usable_key():
        with pytest.raises(InvalidKeyError):
            _core.blind25_public(sid, server)
        with pytest.raises(InvalidKeyError):
            _core.blind25_matches(bytes(32), sid, server)
        with pytest.raises(InvalidSessionIdError):
            blinded_id_of(format_session_id(sid[1:]), server)
    with pytest.raises(InvalidSessionIdError):
        blinded_id_of("05" + "zz" * 32, server)
    with pytest.raises(InvalidSessionIdError):
        session_id_matches(
            "25" + _core.blind25_keypair(os.urandom(32), server)[1].hex(), "", server
        )


@given(data=st.binary(min_size=32, max_size=32))
def test_any_32_bytes_are_a_usable_key_exactly_when_libsodium_says_so(data: bytes) -> None:
    valid = sodium.crypto_core_ed25519_is_valid_point(data)
    try:
        _core.blind25_check_public(data)
    except InvalidKeyError:
        assert not valid
    else:
        assert valid


@given(u=st.binary(min_size=32, max_size=32), server=st.binary(min_size=32, max_size=32))
def test_any_u_blinds_exactly_when_the_reference_can(u: bytes, server: bytes) -> None:
    sid = b"\x05" + u
    try:
        expected: bytes | None = ref.public_from_session_id(sid, server)
    except ValueError:
        expected = None
    try:
        got: bytes | None = _core.blind25_public(sid, server)
    except InvalidKeyError:
        got = None
    assert got == expected


@given(seed=st.binary(min_size=32, max_size=32))
def test_any_seed_blinds_as_its_session_id(seed: bytes) -> None:
    sid = ref.session_id_bytes(seed)
    assert _core.blind25_public(sid, SERVER_1) == _core.blind25_keypair(seed, SERVER_1)[1]


def test_repr_names_no_secret() -> None:
    seed = os.urandom(32)
    blinded = BlindedIdentity(Identity(seed), SERVER_1)
    text = repr(blinded)
    assert blinded.blinded_id in text
    assert seed.hex() not in text
    assert _core.blind25_keypair(seed, SERVER_1)[0].hex() not in text
    assert repr(_core.Blind25Key(seed, SERVER_1)) == "Blind25Key(..)"
    assert blinded.server_public_key == SERVER_1


# --- docs/protocol.md -----------------------------------------------------------------------------


def _doc_values() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Blinded IDs (communities)", 1)[1]
    example = section.split("### Worked example", 1)[1]
    block = re.findall(r"```\n(.*?)```", example, flags=re.S)[0]
    values: dict[str, str] = {}
    for line in block.splitlines():
        label, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        values[label] = value.split("(")[0].strip()
    return values


def test_worked_example_of_the_protocol_doc() -> None:
    v = _doc_values()
    server = bytes.fromhex(v["server key S"])
    assert server == SERVER_1
    message = v["message"].strip('"').encode()
    users = {}
    for name in ("alice", "bob"):
        seed = bytes.fromhex(v[f"{name} seed"])
        a_public = _core.ed25519_public_key(seed)
        assert a_public.hex() == v[f"{name} A"]
        sid = ref.session_id_bytes(seed)
        assert sid.hex() == v[f"{name} Session ID"]
        assert ref.blinding_factor(sid, server).hex() == v[f"{name} k"]
        b, blinded = ref.keypair(seed, server)
        assert b.hex() == v[f"{name} b"]
        assert "25" + blinded.hex() == v[f"{name} blinded ID"]
        assert BlindedIdentity(Identity(seed), server).blinded_id == v[f"{name} blinded ID"]
        users[name] = seed
    signature = ref.sign(users["alice"], server, message)
    assert signature.hex() == v["alice signature"]
    assert _core.blind25_sign(users["alice"], server, message) == signature
    bob_blinded = bytes.fromhex(v["bob blinded ID"][2:])
    alice_blinded = bytes.fromhex(v["alice blinded ID"][2:])
    assert ref.dm_key(users["alice"], server, bob_blinded, sending=True).hex() == v["DM alice→bob"]
    assert ref.dm_key(users["bob"], server, alice_blinded, sending=True).hex() == v["DM bob→alice"]
