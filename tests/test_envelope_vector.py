"""The v2 envelope recomputed from ``docs/protocol.md``'s formulas with PyNaCl and hashlib (only
the hybrid KEM comes from the core, whose own vectors are in test_kem.py), and the worked example
of the docs held to its bytes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import nacl.bindings as sodium
import nacl.signing

from veil import _core
from veil.crypto import decrypt_v2, encrypt_v2
from veil.identity import Identity
from veil.protocol.prekeys import key_id

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

SENDER_SEED = bytes(range(32))
RECIPIENT_SEED = bytes(range(32, 64))
PREKEY_SEED = bytes(range(64, 96))
CEK = bytes(range(96, 128))
NONCE = bytes(range(128, 152))
KEM_RANDOMNESS = bytes(range(152, 216))
MESSAGE = b"hello, forward secrecy"


def _by_hand(recipient_x25519: bytes, public: bytes) -> bytes:
    kid = key_id(public)
    kem_ct, ss = _core.hybrid_encapsulate(public, KEM_RANDOMNESS)
    kek = hashlib.blake2b(
        b"veil-v2-wrap" + kid + recipient_x25519 + kem_ct, key=ss, digest_size=32
    ).digest()
    wrapped = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        CEK, b"veil-v2-slot", bytes(24), kek
    )
    header = b"VEIL\x02" + bytes([1]) + kid + kem_ct + wrapped + NONCE
    signer = nacl.signing.SigningKey(SENDER_SEED)
    sender_ed = bytes(signer.verify_key)
    signature = signer.sign(b"veil-v2" + MESSAGE + sender_ed + recipient_x25519).signature
    body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        sender_ed + signature + MESSAGE, header, NONCE, CEK
    )
    return header + body


def _example_envelope(recipient: Identity, public: bytes) -> bytes:
    return _core.envelope_seal(
        SENDER_SEED,
        recipient.x25519_public_key,
        [(key_id(public), public)],
        MESSAGE,
        cek=CEK,
        nonce=NONCE,
        kem_randomness=[KEM_RANDOMNESS],
    )


def test_the_envelope_is_what_the_formulas_give() -> None:
    recipient = Identity.from_seed(RECIPIENT_SEED)
    public, secret = _core.hybrid_keypair(PREKEY_SEED)
    sealed = _example_envelope(recipient, public)
    assert sealed == _by_hand(recipient.x25519_public_key, public)
    sender = Identity.from_seed(SENDER_SEED)
    assert decrypt_v2(recipient, sealed, [(key_id(public), secret)]) == (
        MESSAGE,
        sender.session_id,
    )


def test_the_worked_example_of_the_docs() -> None:
    recipient = Identity.from_seed(RECIPIENT_SEED)
    public, _ = _core.hybrid_keypair(PREKEY_SEED)
    sealed = _example_envelope(recipient, public)
    section = DOC.read_text(encoding="utf-8").split("### Example: a v2 envelope", 1)[1]
    block = re.findall(r"```\n(.*?)```", section, flags=re.S)[0]
    values = {
        label.strip(): value.strip()
        for label, _, value in (line.partition("  ") for line in block.splitlines())
        if value.strip()
    }
    assert values["Y_x"] == recipient.x25519_public_key.hex()
    assert values["key_id"] == key_id(public).hex()
    assert values["length"] == str(len(sealed))
    assert values["BLAKE2b(envelope)"] == hashlib.blake2b(sealed, digest_size=32).hexdigest()
    assert values["body tag"] == sealed[-16:].hex()


def test_a_fresh_envelope_is_never_the_same_twice() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    public, _ = _core.hybrid_keypair()
    prekeys = [(key_id(public), public)]
    first = encrypt_v2(alice, bob.session_id, prekeys, MESSAGE)
    second = encrypt_v2(alice, bob.session_id, prekeys, MESSAGE)
    # Only the magic, the count and the key id are common.
    assert first[:14] == second[:14]
    common = sum(a == b for a, b in zip(first[14:], second[14:], strict=True))
    assert common < len(first[14:]) // 64  # about 1/256 of the bytes agree by chance
