"""Type stub of ``veil._core``, the Rust core (rust/veil-py over rust/veil-core).

Every function takes ``bytes`` and returns ``bytes``; keys live in Rust objects (``NodeKey``,
``HopKey``, ``LinkCipher``), parsed once. Errors are those of :mod:`veil.errors`:
``InvalidKeyError`` / ``InvalidInputError`` for wrong lengths and unusable keys,
``InputTooLargeError`` past a limit, and the one opaque ``DecryptionError`` for every decryption or
authentication failure.
"""

from collections.abc import Iterable, Sequence
from typing import Protocol, final

from veil.errors import InvalidInputError

__all__ = [
    "CELL_CREATE",
    "CELL_CREATE_HEADER",
    "CELL_CREATE_REPLY_LEN",
    "CELL_DATA",
    "CELL_DATA_HEADER",
    "CELL_MAX_BUCKET",
    "CELL_MAX_HOPS",
    "CELL_MIN_BUCKET",
    "CELL_ONESHOT",
    "CELL_ONESHOT_HEADER",
    "CELL_VERSION",
    "ENVELOPE_MAX_SLOTS",
    "ENVELOPE_SLOT_LEN",
    "HOP_OVERHEAD",
    "HYBRID_CIPHERTEXT_LEN",
    "HYBRID_LABEL",
    "HYBRID_PUBLIC_KEY_LEN",
    "HYBRID_SEED_LEN",
    "LINK_MAX_RECORD_DATA",
    "LINK_NOISE_PROTOCOL",
    "MAX_ONION_LEN",
    "MAX_ROUTE_LEN",
    "MAX_ROUTING_LEN",
    "MLKEM768_CIPHERTEXT_LEN",
    "MLKEM768_PUBLIC_KEY_LEN",
    "MLKEM768_SEED_LEN",
    "ONION_LAYER_OVERHEAD",
    "ONION_VERSION",
    "SEALED_BOX_OVERHEAD",
    "Blind25Key",
    "CellReply",
    "CircuitHop",
    "ClientCircuit",
    "Ed25519KeyPair",
    "Ed25519PublicKey",
    "HopKey",
    "LinkCipher",
    "LinkInitiator",
    "LinkResponder",
    "NodeKey",
    "PeeledCell",
    "PeeledLayer",
    "PendingCircuit",
    "blake2b",
    "blind25_check_public",
    "blind25_dm_key",
    "blind25_keypair",
    "blind25_matches",
    "blind25_public",
    "blind25_sign",
    "build_create_cell",
    "build_oneshot_cell",
    "build_oneshot_cell_with",
    "build_onion",
    "ed25519_public_key",
    "ed25519_public_key_to_x25519",
    "ed25519_seed_to_x25519",
    "ed25519_sign",
    "ed25519_verify",
    "envelope_is",
    "envelope_open",
    "envelope_seal",
    "hybrid_decapsulate",
    "hybrid_encapsulate",
    "hybrid_keypair",
    "mlkem768_decapsulate",
    "mlkem768_encapsulate",
    "mlkem768_keypair",
    "plain_store",
    "retrieve_messages_json",
    "sealed_box_open",
    "sealed_box_seal",
    "session_decrypt",
    "session_encrypt",
    "store_message_hash",
    "store_message_key",
    "verify_identity_batch",
    "x25519",
    "x25519_generate_secret",
    "x25519_public_key",
    "xchacha20poly1305_decrypt",
    "xchacha20poly1305_encrypt",
]

ONION_VERSION: int
CELL_VERSION: int
CELL_ONESHOT: int
CELL_CREATE: int
CELL_DATA: int
CELL_MAX_HOPS: int
CELL_MIN_BUCKET: int
CELL_MAX_BUCKET: int
CELL_ONESHOT_HEADER: int
CELL_CREATE_HEADER: int
CELL_DATA_HEADER: int
CELL_CREATE_REPLY_LEN: int
MAX_ONION_LEN: int
MAX_ROUTE_LEN: int
MAX_ROUTING_LEN: int
ONION_LAYER_OVERHEAD: int
HOP_OVERHEAD: int
SEALED_BOX_OVERHEAD: int
LINK_NOISE_PROTOCOL: str
LINK_MAX_RECORD_DATA: int
MLKEM768_SEED_LEN: int
MLKEM768_PUBLIC_KEY_LEN: int
MLKEM768_CIPHERTEXT_LEN: int
HYBRID_SEED_LEN: int
HYBRID_PUBLIC_KEY_LEN: int
HYBRID_CIPHERTEXT_LEN: int
HYBRID_LABEL: bytes
ENVELOPE_SLOT_LEN: int
ENVELOPE_MAX_SLOTS: int

def x25519_generate_secret() -> bytes: ...
def x25519_public_key(secret: bytes) -> bytes: ...
def x25519(secret: bytes, public: bytes) -> bytes: ...
def ed25519_public_key(seed: bytes) -> bytes: ...
def ed25519_sign(seed: bytes, message: bytes) -> bytes: ...
def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool: ...
def ed25519_public_key_to_x25519(public_key: bytes) -> bytes: ...
def ed25519_seed_to_x25519(seed: bytes) -> bytes: ...
def blake2b(data: bytes, digest_size: int = 32, key: bytes | None = None) -> bytes: ...
def xchacha20poly1305_encrypt(
    key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b""
) -> bytes: ...
def xchacha20poly1305_decrypt(
    key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes = b""
) -> bytes: ...
def sealed_box_seal(recipient_public: bytes, plaintext: bytes) -> bytes: ...
def sealed_box_open(recipient_secret: bytes, ciphertext: bytes) -> bytes: ...
def session_encrypt(
    sender_seed: bytes, recipient_x25519_public: bytes, plaintext: bytes
) -> bytes: ...
def session_decrypt(
    recipient_x25519_secret: bytes, recipient_x25519_public: bytes, ciphertext: bytes
) -> tuple[bytes, bytes, bytes]: ...

@final
class HopKey:
    @staticmethod
    def for_client(client_x25519_secret: bytes, server_x25519_public: bytes) -> HopKey: ...
    @staticmethod
    def for_server(server_x25519_secret: bytes, client_x25519_public: bytes) -> HopKey: ...
    def encrypt(self, plaintext: bytes) -> bytes: ...
    def decrypt(self, blob: bytes) -> bytes: ...

@final
class PeeledLayer:
    @property
    def next_hop(self) -> bytes | None: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def routing(self) -> bytes: ...
    @property
    def reply_key(self) -> HopKey | None: ...
    @property
    def replay_tag(self) -> bytes: ...

def build_onion(
    route: Sequence[bytes], payload: bytes, routing: Sequence[bytes] | None = None
) -> tuple[bytes, HopKey]: ...

@final
class CellReply:
    def open(self, reply: bytes) -> bytes: ...

def build_oneshot_cell(
    route: Sequence[bytes], content: bytes, issued_s: Sequence[int]
) -> tuple[bytes, CellReply]: ...
def build_oneshot_cell_with(
    route: Sequence[bytes],
    content: bytes,
    issued_s: Sequence[int],
    ephemeral_secrets: Sequence[bytes],
    nonces: Sequence[bytes],
) -> tuple[bytes, CellReply]: ...
def build_create_cell(
    route: Sequence[bytes], issued_s: Sequence[int]
) -> tuple[bytes, PendingCircuit]: ...

@final
class PendingCircuit:
    def finish(self, reply: bytes) -> ClientCircuit: ...

@final
class ClientCircuit:
    def seal(self, content: bytes) -> tuple[bytes, CellReply]: ...
    @property
    def hops(self) -> int: ...

@final
class PeeledCell:
    @property
    def next_hop(self) -> bytes | None: ...
    @property
    def issued_s(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def replay_tag(self) -> bytes: ...
    @property
    def next(self) -> bytes: ...
    def content(self) -> bytes: ...
    def seal_reply(self, answer: bytes) -> bytes: ...
    def wrap_reply(self, reply: bytes) -> bytes: ...
    def accept_circuit(self) -> tuple[CircuitHop, bytes]: ...
    def wrap_create_reply(self, slot: bytes, from_next: bytes | None = None) -> bytes: ...

@final
class CircuitHop:
    def peel(self, cell: bytes) -> PeeledCell: ...

@final
class NodeKey:
    def __new__(cls, x25519_secret: bytes) -> NodeKey: ...
    @property
    def public(self) -> bytes: ...
    def peel(self, onion_bytes: bytes) -> PeeledLayer: ...
    def peel_batch(self, onions: Sequence[bytes]) -> list[PeeledLayer | InvalidInputError]: ...
    def peel_cell(self, cell_type: int, cell: bytes) -> PeeledCell: ...
    def link_initiate(self, remote_public: bytes, timestamp_ms: int) -> LinkInitiator: ...
    def link_accept(self, message: bytes) -> LinkResponder: ...
    def link_respond(self, message: bytes) -> tuple[bytes, int, bytes, LinkCipher]: ...

@final
class LinkResponder:
    @property
    def remote(self) -> bytes: ...
    @property
    def timestamp_ms(self) -> int: ...
    def answer(self) -> tuple[bytes, LinkCipher]: ...

@final
class LinkInitiator:
    @property
    def message(self) -> bytes: ...
    def finish(self, answer: bytes) -> LinkCipher: ...

@final
class LinkCipher:
    @property
    def remote_static(self) -> bytes: ...
    @property
    def pending(self) -> int: ...
    def seal(self, data: bytes, rekey: bool = False) -> bytes: ...
    def open(self, received: bytes) -> bytes: ...
    def seal_frames(
        self, frames: Iterable[tuple[int, int, bytes]], rekey: bool = False
    ) -> bytes: ...
    def open_frames(self, received: bytes, max_frame: int) -> list[tuple[int, int, bytes]]: ...

@final
class Ed25519KeyPair:
    def __new__(cls, seed: bytes) -> Ed25519KeyPair: ...
    @property
    def public_key(self) -> bytes: ...
    def sign(self, message: bytes) -> bytes: ...
    def sign_many(self, messages: Sequence[bytes]) -> list[bytes]: ...

@final
class Ed25519PublicKey:
    def __new__(cls, public_key: bytes) -> Ed25519PublicKey: ...
    def verify(self, message: bytes, signature: bytes) -> bool: ...

@final
class Blind25Key:
    def __new__(cls, seed: bytes, server_pk: bytes) -> Blind25Key: ...
    @property
    def public(self) -> bytes: ...
    def sign(self, message: bytes) -> bytes: ...
    def dm_key(self, other: bytes, sending: bool) -> bytes: ...

def blind25_keypair(seed: bytes, server_pk: bytes) -> tuple[bytes, bytes]: ...
def blind25_public(session_id: bytes, server_pk: bytes) -> bytes: ...
def blind25_matches(blinded: bytes, session_id: bytes, server_pk: bytes) -> bool: ...
def blind25_check_public(public: bytes) -> None: ...
def blind25_sign(seed: bytes, server_pk: bytes, message: bytes) -> bytes: ...
def blind25_dm_key(seed: bytes, server_pk: bytes, other: bytes, sending: bool) -> bytes: ...
def mlkem768_keypair(seed: bytes | None = None) -> tuple[bytes, bytes]: ...
def mlkem768_encapsulate(ek: bytes, m: bytes | None = None) -> tuple[bytes, bytes]: ...
def mlkem768_decapsulate(secret: bytes, ct: bytes) -> bytes: ...
def hybrid_keypair(seed: bytes | None = None) -> tuple[bytes, bytes]: ...
def hybrid_encapsulate(public: bytes, randomness: bytes | None = None) -> tuple[bytes, bytes]: ...
def hybrid_decapsulate(secret: bytes, ct: bytes) -> bytes: ...
def envelope_seal(
    sender_seed: bytes,
    recipient_x25519: bytes,
    recipients: Sequence[tuple[bytes, bytes]],
    plaintext: bytes,
    cek: bytes | None = None,
    nonce: bytes | None = None,
    kem_randomness: Sequence[bytes] | None = None,
) -> bytes: ...
def envelope_open(
    data: bytes, recipient_x25519: bytes, prekeys: Sequence[tuple[bytes, bytes]]
) -> tuple[bytes, bytes, bytes]: ...
def envelope_is(data: bytes) -> bool: ...
def verify_identity_batch(
    items: Sequence[tuple[bytes, bytes, bytes, bytes]],
) -> list[bool]: ...

class _RetrievedMessage(Protocol):
    @property
    def hash(self) -> bytes: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def expiry_ms(self) -> int: ...
    @property
    def data(self) -> bytes: ...

def store_message_key(
    account: bytes, namespace: int, timestamp_ms: int, digest: bytes
) -> bytes: ...
def store_message_hash(account: bytes, namespace: int, data: bytes) -> bytes: ...
def plain_store(body: bytes, max_data: int) -> tuple[bytes, int, int, int, bytes, bytes] | None: ...
def retrieve_messages_json(messages: Iterable[_RetrievedMessage]) -> bytes: ...
