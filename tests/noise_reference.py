"""A plain-Python Noise_IK_25519_ChaChaPoly_BLAKE2b, written from the Noise specification (rev. 34)
over PyNaCl and hashlib, to check Veil's node-link handshake (snow over AWS-LC, in the Rust core)
against an implementation that shares none of its code, and to recompute the worked example of
``docs/protocol.md``. Not for production: no constant-time care, ephemeral keys given by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from nacl import bindings

PROTOCOL = b"Noise_IK_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"veil-link-v2"
HASHLEN = 64


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _hkdf(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.new(chaining_key, ikm, hashlib.blake2b).digest()
    out1 = hmac.new(temp, b"\x01", hashlib.blake2b).digest()
    out2 = hmac.new(temp, out1 + b"\x02", hashlib.blake2b).digest()
    return out1, out2


def encrypt(key: bytes, nonce: int, ad: bytes, plaintext: bytes) -> bytes:
    """Noise's ChaChaPoly: RFC 8439 with the nonce 32 zero bits ‖ 64-bit counter (little-endian)."""
    n = bytes(4) + nonce.to_bytes(8, "little")
    return bytes(bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, n, key))


def decrypt(key: bytes, nonce: int, ad: bytes, ciphertext: bytes) -> bytes:
    n = bytes(4) + nonce.to_bytes(8, "little")
    return bytes(bindings.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, n, key))


def rekey(key: bytes) -> bytes:
    """Noise's Rekey(k): the first 32 bytes of ENCRYPT(k, 2^64 - 1, "", 32 zero bytes)."""
    return encrypt(key, (1 << 64) - 1, b"", bytes(32))[:32]


def public(secret: bytes) -> bytes:
    return bytes(bindings.crypto_scalarmult_base(secret))


def dh(secret: bytes, peer: bytes) -> bytes:
    return bytes(bindings.crypto_scalarmult(secret, peer))


@dataclass
class SymmetricState:
    h: bytes = field(default_factory=lambda: PROTOCOL.ljust(HASHLEN, b"\x00"))
    ck: bytes = b""
    k: bytes | None = None
    n: int = 0

    def __post_init__(self) -> None:
        self.ck = self.h

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp = _hkdf(self.ck, ikm)
        self.k, self.n = temp[:32], 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None
        ciphertext = encrypt(self.k, self.n, self.h, plaintext)
        self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.k is not None
        plaintext = decrypt(self.k, self.n, self.h, ciphertext)
        self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        first, second = _hkdf(self.ck, b"")
        return first[:32], second[:32]


def _start(responder_static_public: bytes) -> SymmetricState:
    state = SymmetricState()
    state.mix_hash(PROLOGUE)
    state.mix_hash(responder_static_public)  # IK's pre-message: <- s
    return state


@dataclass
class Transport:
    """One end's transport keys after the handshake, with Veil's record layer on top."""

    send_key: bytes
    receive_key: bytes
    send_n: int = 0
    receive_n: int = 0

    def seal(self, data: bytes, flags: int = 0) -> bytes:
        record = encrypt(self.send_key, self.send_n, b"", bytes([flags]) + data)
        self.send_n += 1
        if flags & 1:
            self.send_key = rekey(self.send_key)
        return len(record).to_bytes(2, "big") + record

    def open(self, records: bytes) -> bytes:
        out = b""
        while records:
            length = int.from_bytes(records[:2], "big")
            plain = decrypt(self.receive_key, self.receive_n, b"", records[2 : 2 + length])
            self.receive_n += 1
            if plain[0] & 1:
                self.receive_key = rekey(self.receive_key)
            out += plain[1:]
            records = records[2 + length :]
        return out


def initiator_first(
    static_secret: bytes, ephemeral_secret: bytes, responder_public: bytes, timestamp_ms: int
) -> tuple[bytes, SymmetricState]:
    """The caller's first message (with its 2-byte length) and its state: e, es, s, ss, and the
    timestamp payload Veil puts in it."""
    state = _start(responder_public)
    ephemeral = public(ephemeral_secret)
    state.mix_hash(ephemeral)
    state.mix_key(dh(ephemeral_secret, responder_public))
    encrypted_static = state.encrypt_and_hash(public(static_secret))
    state.mix_key(dh(static_secret, responder_public))
    payload = state.encrypt_and_hash(timestamp_ms.to_bytes(8, "big"))
    message = ephemeral + encrypted_static + payload
    return len(message).to_bytes(2, "big") + message, state


def initiator_finish(
    state: SymmetricState, static_secret: bytes, ephemeral_secret: bytes, answer: bytes
) -> Transport:
    """Read the accepter's answer (e, ee, se) and split."""
    body = answer[2:]
    remote_ephemeral = body[:32]
    state.mix_hash(remote_ephemeral)
    state.mix_key(dh(ephemeral_secret, remote_ephemeral))
    state.mix_key(dh(static_secret, remote_ephemeral))
    assert state.decrypt_and_hash(body[32:]) == b""
    send, receive = state.split()
    return Transport(send, receive)


def responder_answer(
    static_secret: bytes, ephemeral_secret: bytes, message: bytes
) -> tuple[bytes, int, bytes, Transport]:
    """Read a first message; return (the caller's static key, its timestamp, the answer, the
    transport)."""
    state = _start(public(static_secret))
    body = message[2:]
    remote_ephemeral = body[:32]
    state.mix_hash(remote_ephemeral)
    state.mix_key(dh(static_secret, remote_ephemeral))
    remote_static = state.decrypt_and_hash(body[32:80])
    state.mix_key(dh(static_secret, remote_static))
    timestamp_ms = int.from_bytes(state.decrypt_and_hash(body[80:]), "big")
    ephemeral = public(ephemeral_secret)
    state.mix_hash(ephemeral)
    state.mix_key(dh(ephemeral_secret, remote_ephemeral))
    state.mix_key(dh(ephemeral_secret, remote_static))
    payload = state.encrypt_and_hash(b"")
    answer = ephemeral + payload
    first, second = state.split()
    answer = len(answer).to_bytes(2, "big") + answer
    return remote_static, timestamp_ms, answer, Transport(second, first)
