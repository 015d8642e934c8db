//! `veil._core`: thin PyO3 bindings over `veil-core`.
//!
//! Inputs are taken as `&[u8]` and results returned as `bytes`. Errors map onto the exception tree of
//! `veil.errors` (imported, not defined, here, so that Python owns the hierarchy). Small calls keep the
//! GIL; `NodeKey.peel_batch` and `verify_identity_batch` release it while rayon works on every core.
//! Keys live in Rust objects (`NodeKey`, `HopKey`, `LinkCipher`), parsed once.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use veil_core::error::fixed;
use veil_core::{
    aead, blind, cells, ed25519, envelope, hash, hop, kem, link, onion, sealed_box, session,
    store_index, store_request, x25519,
};
use zeroize::Zeroizing;

mod errors {
    pyo3::import_exception!(veil.errors, InvalidInputError);
    pyo3::import_exception!(veil.errors, InvalidKeyError);
    pyo3::import_exception!(veil.errors, DecryptionError);
    pyo3::import_exception!(veil.errors, InputTooLargeError);
}

/// Wraps a core error so that it converts into the matching `veil.errors` exception.
struct CoreError(veil_core::Error);

impl From<veil_core::Error> for CoreError {
    fn from(error: veil_core::Error) -> Self {
        Self(error)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(error): CoreError) -> Self {
        let message = error.to_string();
        match error {
            veil_core::Error::Decryption => errors::DecryptionError::new_err(message),
            veil_core::Error::InvalidKey(_) => errors::InvalidKeyError::new_err(message),
            veil_core::Error::InvalidLength { what, .. }
                if what.contains("key") || what == "seed" =>
            {
                errors::InvalidKeyError::new_err(message)
            }
            veil_core::Error::TooLarge { .. } => errors::InputTooLargeError::new_err(message),
            veil_core::Error::InvalidLength { .. } | veil_core::Error::InvalidArgument(_) => {
                errors::InvalidInputError::new_err(message)
            }
        }
    }
}

type CoreResult<T> = Result<T, CoreError>;

fn bytes<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, data)
}

// --- X25519 ---------------------------------------------------------------------------------------

/// A new random X25519 secret key (32 bytes).
#[pyfunction]
fn x25519_generate_secret(py: Python<'_>) -> Bound<'_, PyBytes> {
    bytes(py, x25519::generate_secret().as_ref())
}

/// The X25519 public key of a 32-byte secret key.
#[pyfunction]
fn x25519_public_key<'py>(py: Python<'py>, secret: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
    let secret = zeroizing(fixed::<32>("X25519 secret key", secret)?);
    Ok(bytes(py, &x25519::public_key(&secret)?))
}

/// X25519(secret, public). Raises `InvalidKeyError` when the result is all zeros.
#[pyfunction(name = "x25519")]
fn x25519_diffie_hellman<'py>(
    py: Python<'py>,
    secret: &[u8],
    public: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let secret = zeroizing(fixed::<32>("X25519 secret key", secret)?);
    let public = fixed::<32>("X25519 public key", public)?;
    Ok(bytes(
        py,
        x25519::diffie_hellman(&secret, &public)?.as_ref(),
    ))
}

// --- Ed25519 --------------------------------------------------------------------------------------

/// The Ed25519 public key of a 32-byte seed.
#[pyfunction]
fn ed25519_public_key<'py>(py: Python<'py>, seed: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
    let seed = zeroizing(fixed::<32>("seed", seed)?);
    Ok(bytes(py, &ed25519::public_key(&seed)))
}

/// A 64-byte Ed25519 signature of `message` by the key pair of `seed`.
#[pyfunction]
fn ed25519_sign<'py>(
    py: Python<'py>,
    seed: &[u8],
    message: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let seed = zeroizing(fixed::<32>("seed", seed)?);
    Ok(bytes(py, &ed25519::sign(&seed, message)))
}

/// Whether `signature` is a valid (strict) Ed25519 signature of `message` by `public_key`.
#[pyfunction]
fn ed25519_verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> CoreResult<bool> {
    let public_key = fixed::<32>("Ed25519 public key", public_key)?;
    let Ok(signature) = fixed::<64>("signature", signature) else {
        return Ok(false);
    };
    Ok(ed25519::verify(&public_key, message, &signature))
}

/// The X25519 public key of an Ed25519 public key.
#[pyfunction]
fn ed25519_public_key_to_x25519<'py>(
    py: Python<'py>,
    public_key: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let public_key = fixed::<32>("Ed25519 public key", public_key)?;
    Ok(bytes(py, &ed25519::public_key_to_x25519(&public_key)?))
}

/// The X25519 secret key of an Ed25519 seed.
#[pyfunction]
fn ed25519_seed_to_x25519<'py>(py: Python<'py>, seed: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
    let seed = zeroizing(fixed::<32>("seed", seed)?);
    Ok(bytes(py, ed25519::seed_to_x25519(&seed).as_ref()))
}

// --- BLAKE2b, AEAD, sealed boxes ------------------------------------------------------------------

/// BLAKE2b of `data` with a digest of 1 to 64 bytes and an optional key of at most 64 bytes.
#[pyfunction]
#[pyo3(signature = (data, digest_size = 32, key = None))]
fn blake2b<'py>(
    py: Python<'py>,
    data: &[u8],
    digest_size: usize,
    key: Option<&[u8]>,
) -> CoreResult<Bound<'py, PyBytes>> {
    Ok(bytes(py, &hash::blake2b(&[data], digest_size, key)?))
}

/// XChaCha20-Poly1305 encryption: ciphertext ‖ tag.
#[pyfunction]
#[pyo3(signature = (key, nonce, plaintext, aad = b"".as_slice()), text_signature = "(key, nonce, plaintext, aad=b'')")]
fn xchacha20poly1305_encrypt<'py>(
    py: Python<'py>,
    key: &[u8],
    nonce: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let key = zeroizing(fixed::<32>("XChaCha20-Poly1305 key", key)?);
    let nonce = fixed::<24>("nonce", nonce)?;
    Ok(bytes(py, &aead::encrypt(&key, &nonce, plaintext, aad)?))
}

/// XChaCha20-Poly1305 decryption of ciphertext ‖ tag. Raises `DecryptionError` on any failure.
#[pyfunction]
#[pyo3(signature = (key, nonce, ciphertext, aad = b"".as_slice()), text_signature = "(key, nonce, ciphertext, aad=b'')")]
fn xchacha20poly1305_decrypt<'py>(
    py: Python<'py>,
    key: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let key = zeroizing(fixed::<32>("XChaCha20-Poly1305 key", key)?);
    let nonce = fixed::<24>("nonce", nonce)?;
    Ok(bytes(py, &aead::decrypt(&key, &nonce, ciphertext, aad)?))
}

/// libsodium `crypto_box_seal`.
#[pyfunction]
fn sealed_box_seal<'py>(
    py: Python<'py>,
    recipient_public: &[u8],
    plaintext: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let recipient_public = fixed::<32>("X25519 public key", recipient_public)?;
    Ok(bytes(py, &sealed_box::seal(&recipient_public, plaintext)?))
}

/// libsodium `crypto_box_seal_open`. Raises `DecryptionError` on any failure.
#[pyfunction]
fn sealed_box_open<'py>(
    py: Python<'py>,
    recipient_secret: &[u8],
    ciphertext: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let recipient_secret = zeroizing(fixed::<32>("X25519 secret key", recipient_secret)?);
    Ok(bytes(py, &sealed_box::open(&recipient_secret, ciphertext)?))
}

// --- Session Protocol -----------------------------------------------------------------------------

/// Session Protocol encryption from an Ed25519 seed to an X25519 public key.
#[pyfunction]
fn session_encrypt<'py>(
    py: Python<'py>,
    sender_seed: &[u8],
    recipient_x25519_public: &[u8],
    plaintext: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let seed = zeroizing(fixed::<32>("seed", sender_seed)?);
    let recipient = fixed::<32>("X25519 public key", recipient_x25519_public)?;
    Ok(bytes(py, &session::encrypt(&seed, &recipient, plaintext)?))
}

/// Session Protocol decryption: (plaintext, sender's Ed25519 key, sender's X25519 key).
#[pyfunction]
fn session_decrypt<'py>(
    py: Python<'py>,
    recipient_x25519_secret: &[u8],
    recipient_x25519_public: &[u8],
    ciphertext: &[u8],
) -> CoreResult<Bound<'py, PyTuple>> {
    let secret = zeroizing(fixed::<32>("X25519 secret key", recipient_x25519_secret)?);
    let public = fixed::<32>("X25519 public key", recipient_x25519_public)?;
    let opened = session::decrypt(&secret, &public, ciphertext)?;
    let items = [
        bytes(py, &opened.plaintext),
        bytes(py, &opened.sender_ed25519),
        bytes(py, &opened.sender_x25519),
    ];
    PyTuple::new(py, items).map_err(|_| CoreError(veil_core::Error::Decryption))
}

// --- Blinded identities (communities) -------------------------------------------------------------

/// An Ed25519 key pair made once from its seed, for a key that signs often (a node's receipts):
/// `ed25519_sign` derives the public key on every call, and this one signs with AWS-LC
/// (`veil_core::ed25519::KeyPair`). The secret never returns to Python.
#[pyclass(module = "veil._core", frozen)]
struct Ed25519KeyPair(ed25519::KeyPair);

#[pymethods]
impl Ed25519KeyPair {
    #[new]
    fn new(seed: &[u8]) -> CoreResult<Self> {
        let seed = zeroizing(fixed::<32>("seed", seed)?);
        Ok(Self(ed25519::KeyPair::new(&seed)?))
    }

    /// The 32-byte Ed25519 public key.
    #[getter]
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.public_key())
    }

    /// A 64-byte Ed25519 signature of `message` (what `ed25519_sign` makes with the seed).
    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
        Ok(bytes(py, &self.0.sign(message)?))
    }

    /// The signature of each of `messages`, in order, made with the GIL released: a thread that
    /// signs what it committed (a node's store writer) lets the event loop run meanwhile.
    fn sign_many<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        // As in `NodeKey.peel_batch`: `held` keeps the immutable buffers alive without the GIL.
        let held = bytes_objects(messages)?;
        let views: Vec<&[u8]> = held.iter().map(PyBytesMethods::as_bytes).collect();
        let signatures: Vec<[u8; 64]> = py
            .detach(|| {
                views
                    .iter()
                    .map(|message| self.0.sign(message))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(CoreError::from)?;
        let results = PyList::empty(py);
        for signature in &signatures {
            results.append(bytes(py, signature))?;
        }
        Ok(results)
    }
}

/// An Ed25519 public key decompressed once, for a key whose signatures are checked often (a swarm
/// member's receipts): `ed25519_verify` decompresses the key on every call.
#[pyclass(module = "veil._core", frozen)]
struct Ed25519PublicKey(ed25519::PublicKey);

#[pymethods]
impl Ed25519PublicKey {
    #[new]
    fn new(public_key: &[u8]) -> CoreResult<Self> {
        let public_key = fixed::<32>("Ed25519 public key", public_key)?;
        Ok(Self(ed25519::PublicKey::new(&public_key)?))
    }

    /// What `ed25519_verify` answers for this key: `False` for any invalid signature.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = fixed::<64>("signature", signature) else {
            return false;
        };
        self.0.verify(message, &signature)
    }
}

/// A user's blinded key pair on one community server (`veil.protocol.blinding`), derived once from
/// the Ed25519 seed and the server's public key; the blinded secret never returns to Python.
#[pyclass(module = "veil._core", frozen)]
struct Blind25Key(blind::BlindedKey);

#[pymethods]
impl Blind25Key {
    #[new]
    fn new(seed: &[u8], server_pk: &[u8]) -> CoreResult<Self> {
        let seed = zeroizing(fixed::<32>("seed", seed)?);
        let server_pk = fixed::<32>("server public key", server_pk)?;
        Ok(Self(blind::BlindedKey::new(&seed, &server_pk)?))
    }

    /// The blinded public key B (32 bytes).
    #[getter]
    fn public<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.public())
    }

    /// A 64-byte Ed25519 signature of `message` under B.
    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.sign(message))
    }

    /// The 32-byte direct-message key shared with the blinded key `other`, this user sending or not.
    fn dm_key<'py>(
        &self,
        py: Python<'py>,
        other: &[u8],
        sending: bool,
    ) -> CoreResult<Bound<'py, PyBytes>> {
        let other = fixed::<32>("blinded public key", other)?;
        Ok(bytes(py, self.0.dm_key(&other, sending)?.as_ref()))
    }

    #[allow(clippy::unused_self)] // a method, because Python calls it on the instance
    fn __repr__(&self) -> &'static str {
        "Blind25Key(..)"
    }
}

/// The blinded key pair `(b, B)` of `seed` on `server_pk`: b the secret scalar (32 bytes,
/// little-endian), B the public key.
#[pyfunction]
fn blind25_keypair<'py>(
    py: Python<'py>,
    seed: &[u8],
    server_pk: &[u8],
) -> CoreResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let key = Blind25Key::new(seed, server_pk)?;
    Ok((
        bytes(py, key.0.secret_bytes().as_ref()),
        bytes(py, key.0.public()),
    ))
}

/// The blinded public key B of a Session ID (33 bytes, 0x05 ‖ u) on `server_pk`.
#[pyfunction]
fn blind25_public<'py>(
    py: Python<'py>,
    session_id: &[u8],
    server_pk: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let session_id = fixed::<33>("Session ID", session_id)?;
    let server_pk = fixed::<32>("server public key", server_pk)?;
    Ok(bytes(py, &blind::blinded_public(&session_id, &server_pk)?))
}

/// Whether the blinded public key `blinded` is that of the Session ID `session_id` on `server_pk`.
#[pyfunction]
fn blind25_matches(blinded: &[u8], session_id: &[u8], server_pk: &[u8]) -> CoreResult<bool> {
    let blinded = fixed::<32>("blinded public key", blinded)?;
    let session_id = fixed::<33>("Session ID", session_id)?;
    let server_pk = fixed::<32>("server public key", server_pk)?;
    Ok(blind::matches(&blinded, &session_id, &server_pk)?)
}

/// Raises `InvalidKeyError` unless `public` is a usable blinded public key: the canonical encoding
/// of a point of the prime-order subgroup, not the identity.
#[pyfunction]
fn blind25_check_public(public: &[u8]) -> CoreResult<()> {
    let public = fixed::<32>("blinded public key", public)?;
    blind::parse_public(&public)?;
    Ok(())
}

/// A 64-byte Ed25519 signature of `message` under the blinded key of `seed` on `server_pk`.
#[pyfunction]
fn blind25_sign<'py>(
    py: Python<'py>,
    seed: &[u8],
    server_pk: &[u8],
    message: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    Ok(Blind25Key::new(seed, server_pk)?.sign(py, message))
}

/// The direct-message key between the blinded key of `seed` on `server_pk` and the blinded key
/// `other`, this user sending or not (see `Blind25Key.dm_key`).
#[pyfunction]
fn blind25_dm_key<'py>(
    py: Python<'py>,
    seed: &[u8],
    server_pk: &[u8],
    other: &[u8],
    sending: bool,
) -> CoreResult<Bound<'py, PyBytes>> {
    Blind25Key::new(seed, server_pk)?.dm_key(py, other, sending)
}

// --- Hop keys and onions --------------------------------------------------------------------------

/// The symmetric key a client shares with one hop (libsession's "xchacha20" hop encryption).
#[pyclass(module = "veil._core", frozen)]
struct HopKey(hop::HopKey);

#[pymethods]
impl HopKey {
    /// The key a client with `client_x25519_secret` shares with the server `server_x25519_public`.
    #[staticmethod]
    fn for_client(client_x25519_secret: &[u8], server_x25519_public: &[u8]) -> CoreResult<Self> {
        let secret = zeroizing(fixed::<32>("X25519 secret key", client_x25519_secret)?);
        let public = fixed::<32>("X25519 public key", server_x25519_public)?;
        Ok(Self(hop::HopKey::for_client(&secret, &public)?))
    }

    /// The key a server with `server_x25519_secret` shares with the client `client_x25519_public`.
    #[staticmethod]
    fn for_server(server_x25519_secret: &[u8], client_x25519_public: &[u8]) -> CoreResult<Self> {
        let secret = zeroizing(fixed::<32>("X25519 secret key", server_x25519_secret)?);
        let public = fixed::<32>("X25519 public key", client_x25519_public)?;
        Ok(Self(hop::HopKey::for_server(&secret, &public)?))
    }

    /// nonce(24) ‖ ciphertext ‖ tag(16), with a fresh random nonce.
    fn encrypt<'py>(&self, py: Python<'py>, plaintext: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
        Ok(bytes(py, &self.0.encrypt(plaintext)?))
    }

    /// Opens nonce ‖ ciphertext ‖ tag. Raises `DecryptionError` on any failure.
    fn decrypt<'py>(&self, py: Python<'py>, blob: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
        Ok(bytes(py, &self.0.decrypt(blob)?))
    }

    #[allow(clippy::unused_self)] // a method, because Python calls it on the instance
    fn __repr__(&self) -> &'static str {
        "HopKey(..)"
    }
}

/// One peeled onion layer.
#[pyclass(module = "veil._core", frozen, get_all)]
struct PeeledLayer {
    /// The next hop's X25519 public key, or None at the destination.
    next_hop: Option<Py<PyBytes>>,
    /// The inner onion, or at the destination the request.
    payload: Py<PyBytes>,
    /// The routing data the sender left for this node (empty if none).
    routing: Py<PyBytes>,
    /// At the destination, the key for the reply; else None.
    reply_key: Option<Py<HopKey>>,
    /// 16 bytes unique to this layer, derived from its shared secret (for replay detection).
    replay_tag: Py<PyBytes>,
}

#[pymethods]
impl PeeledLayer {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "PeeledLayer(destination={}, payload=<{} bytes>)",
            if self.next_hop.is_none() {
                "True"
            } else {
                "False"
            },
            self.payload.bind(py).as_bytes().len()
        )
    }
}

impl PeeledLayer {
    fn from_core(py: Python<'_>, layer: onion::PeeledLayer) -> PyResult<Self> {
        Ok(Self {
            next_hop: layer.next_hop.map(|hop| bytes(py, &hop).unbind()),
            payload: bytes(py, layer.payload()).unbind(),
            routing: bytes(py, layer.routing()).unbind(),
            reply_key: match layer.reply_key {
                Some(key) => Some(Py::new(py, HopKey(key))?),
                None => None,
            },
            replay_tag: bytes(py, &layer.replay_tag).unbind(),
        })
    }
}

/// Builds an onion; returns it and the key the destination will use for its reply.
#[pyfunction]
#[pyo3(signature = (route, payload, routing = None))]
fn build_onion<'py>(
    py: Python<'py>,
    route: &Bound<'py, PyAny>,
    payload: &[u8],
    routing: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyBytes>, HopKey)> {
    let route = owned_byte_strings(route)?;
    let route = route
        .iter()
        .map(|hop| fixed::<32>("X25519 public key", hop))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CoreError)?;
    let routing = match routing {
        Some(routing) => owned_byte_strings(routing)?,
        None => Vec::new(),
    };
    let routing: Vec<&[u8]> = routing.iter().map(Vec::as_slice).collect();
    let (onion, reply_key) = onion::build(&route, payload, &routing).map_err(CoreError)?;
    Ok((bytes(py, &onion), HopKey(reply_key)))
}

// --- Onion v2 cells and circuits ------------------------------------------------------------------

fn route_keys(route: &Bound<'_, PyAny>) -> PyResult<Vec<[u8; 32]>> {
    let route = owned_byte_strings(route)?;
    Ok(route
        .iter()
        .map(|hop| fixed::<32>("X25519 public key", hop))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CoreError)?)
}

/// What a client keeps to open the reply to one v2 cell.
#[pyclass(module = "veil._core", frozen)]
struct CellReply(cells::ReplyOpener);

#[pymethods]
impl CellReply {
    /// The destination's answer; raises `DecryptionError` on any failure.
    fn open<'py>(&self, py: Python<'py>, reply: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
        Ok(bytes(py, &self.0.open(reply)?))
    }
}

/// A one-shot cell for `route` (first hop first) carrying `content`; each hop's `issued_s` goes
/// in its own layer. Returns the cell and what opens the reply.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts the list into a Vec
fn build_oneshot_cell<'py>(
    py: Python<'py>,
    route: &Bound<'py, PyAny>,
    content: &[u8],
    issued_s: Vec<u64>,
) -> PyResult<(Bound<'py, PyBytes>, CellReply)> {
    let route = route_keys(route)?;
    let (cell, opener) = cells::build_oneshot(&route, content, &issued_s).map_err(CoreError)?;
    Ok((bytes(py, &cell), CellReply(opener)))
}

/// As `build_oneshot_cell`, with each layer's ephemeral X25519 secret and nonce given: for test
/// vectors and the worked example of `docs/protocol.md`, never for sending.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts the lists into Vecs
fn build_oneshot_cell_with<'py>(
    py: Python<'py>,
    route: &Bound<'py, PyAny>,
    content: &[u8],
    issued_s: Vec<u64>,
    ephemeral_secrets: &Bound<'py, PyAny>,
    nonces: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, CellReply)> {
    let route = route_keys(route)?;
    let secrets = owned_byte_strings(ephemeral_secrets)?;
    let nonces = owned_byte_strings(nonces)?;
    let given = secrets
        .iter()
        .zip(&nonces)
        .map(|(secret, nonce)| {
            Ok(cells::LayerRandomness {
                ephemeral_secret: fixed::<32>("X25519 secret key", secret)?,
                nonce: fixed::<24>("nonce", nonce)?,
            })
        })
        .collect::<Result<Vec<_>, veil_core::Error>>()
        .map_err(CoreError)?;
    if given.len() != route.len() || nonces.len() != secrets.len() {
        return Err(CoreError(veil_core::Error::InvalidArgument(
            "one ephemeral secret and one nonce per hop",
        ))
        .into());
    }
    let (cell, opener) =
        cells::build_oneshot_with(&route, content, &issued_s, Some(&given)).map_err(CoreError)?;
    Ok((bytes(py, &cell), CellReply(opener)))
}

/// A create cell for a circuit along `route`. Returns the cell and what finishes the circuit.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts the list into a Vec
fn build_create_cell<'py>(
    py: Python<'py>,
    route: &Bound<'py, PyAny>,
    issued_s: Vec<u64>,
) -> PyResult<(Bound<'py, PyBytes>, PendingCircuit)> {
    let route = route_keys(route)?;
    let (cell, pending) = cells::build_create(&route, &issued_s).map_err(CoreError)?;
    Ok((
        bytes(py, &cell),
        PendingCircuit(std::sync::Mutex::new(Some(pending))),
    ))
}

/// A create cell in flight, until its reply finishes it (once).
#[pyclass(module = "veil._core", frozen)]
struct PendingCircuit(std::sync::Mutex<Option<cells::PendingCircuit>>);

#[pymethods]
impl PendingCircuit {
    /// The circuit, from the create cell's reply; raises `DecryptionError` on any failure.
    fn finish(&self, reply: &[u8]) -> CoreResult<ClientCircuit> {
        let pending = self
            .0
            .lock()
            .map_err(|_| veil_core::Error::InvalidArgument("circuit state poisoned"))?
            .take()
            .ok_or(veil_core::Error::InvalidArgument(
                "this circuit is already finished",
            ))?;
        Ok(ClientCircuit(pending.finish(reply)?))
    }
}

/// A client's end of a circuit: seals data cells for its destination.
#[pyclass(module = "veil._core")]
struct ClientCircuit(cells::ClientCircuit);

#[pymethods]
impl ClientCircuit {
    /// A data cell carrying `content`, and what opens its reply.
    fn seal<'py>(
        &mut self,
        py: Python<'py>,
        content: &[u8],
    ) -> CoreResult<(Bound<'py, PyBytes>, CellReply)> {
        let (cell, opener) = self.0.seal(content)?;
        Ok((bytes(py, &cell), CellReply(opener)))
    }

    #[getter]
    fn hops(&self) -> usize {
        self.0.hops()
    }
}

/// One peeled v2 layer at a node.
#[pyclass(module = "veil._core", frozen)]
struct PeeledCell {
    inner: cells::Peeled,
    cell_type: cells::CellType,
}

#[pymethods]
impl PeeledCell {
    /// The next hop's X25519 key, or None at the destination (one-shot and create cells).
    #[getter]
    fn next_hop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.next_hop().map(|hop| bytes(py, &hop))
    }

    /// The issue time (s) the client put in this layer (one-shot and create cells).
    #[getter]
    fn issued_s(&self) -> u64 {
        self.inner.issued_s()
    }

    /// This layer's sequence number on its circuit (data cells).
    #[getter]
    fn seq(&self) -> u64 {
        self.inner.seq()
    }

    /// 16 bytes unique to this layer (one-shot and create cells), to drop replays.
    #[getter]
    fn replay_tag<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.inner.replay_tag())
    }

    /// The cell for the next hop.
    #[getter]
    fn next<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.inner.next)
    }

    /// At the destination: the request the cell carries.
    fn content<'py>(&self, py: Python<'py>) -> CoreResult<Bound<'py, PyBytes>> {
        Ok(bytes(py, self.inner.content(self.cell_type)?))
    }

    /// At the destination: the sealed, padded reply carrying `answer`.
    fn seal_reply<'py>(&self, py: Python<'py>, answer: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
        Ok(bytes(py, &self.inner.seal_reply(answer)?))
    }

    /// On the way back: the next hop's reply under this hop's keystream.
    fn wrap_reply<'py>(&self, py: Python<'py>, reply: &[u8]) -> Bound<'py, PyBytes> {
        bytes(py, &self.inner.wrap_reply(reply.to_vec()))
    }

    /// A create cell: this hop's end of the circuit, and its sealed handshake answer.
    fn accept_circuit<'py>(
        &self,
        py: Python<'py>,
    ) -> CoreResult<(CircuitHop, Bound<'py, PyBytes>)> {
        let (hop, slot) = self.inner.accept_circuit()?;
        Ok((CircuitHop(hop), bytes(py, &slot)))
    }

    /// A create cell's reply from this hop: its `slot` ahead of the next hop's reply (None at the
    /// destination).
    #[pyo3(signature = (slot, from_next = None))]
    fn wrap_create_reply<'py>(
        &self,
        py: Python<'py>,
        slot: &[u8],
        from_next: Option<&[u8]>,
    ) -> CoreResult<Bound<'py, PyBytes>> {
        let slot = fixed::<{ cells::SLOT_LEN }>("create slot", slot)?;
        Ok(bytes(py, &self.inner.wrap_create_reply(&slot, from_next)?))
    }
}

/// A node's end of one circuit: peels its data cells, refusing replays.
#[pyclass(module = "veil._core")]
struct CircuitHop(cells::NodeCircuitHop);

#[pymethods]
impl CircuitHop {
    /// Peels a data cell; raises `DecryptionError` on any failure, a replay included.
    fn peel(&mut self, cell: &[u8]) -> CoreResult<PeeledCell> {
        Ok(PeeledCell {
            inner: self.0.peel(cell)?,
            cell_type: cells::CellType::Data,
        })
    }
}

/// The `bytes` objects of a sequence (strong references). A lone `bytes` object is refused: it is a
/// sequence of ints.
fn bytes_objects<'py>(items: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    if items.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "expected a sequence of bytes, not bytes",
        ));
    }
    let mut held = Vec::with_capacity(items.len().unwrap_or(0));
    for item in items.try_iter()? {
        let item = item?;
        let data = item
            .cast_into::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("expected a sequence of bytes"))?;
        held.push(data);
    }
    Ok(held)
}

/// Copies a sequence of `bytes` into owned buffers (one `memcpy` each), so that the GIL can be
/// released while they are used. A lone `bytes` object is refused: it is a sequence of ints.
fn owned_byte_strings(items: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    if items.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "expected a sequence of bytes, not bytes",
        ));
    }
    let mut owned = Vec::with_capacity(items.len().unwrap_or(0));
    for item in items.try_iter()? {
        let item = item?;
        let data = item
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("expected a sequence of bytes"))?;
        owned.push(data.as_bytes().to_vec());
    }
    Ok(owned)
}

/// A node's X25519 key, parsed once and held in Rust: it peels the onion layers addressed to the
/// node and keys the node's links. The secret never returns to Python.
#[pyclass(module = "veil._core", frozen)]
struct NodeKey {
    onion: onion::NodeKey,
    secret: Zeroizing<[u8; 32]>,
}

#[pymethods]
impl NodeKey {
    #[new]
    fn new(x25519_secret: &[u8]) -> CoreResult<Self> {
        let secret = zeroizing(fixed::<32>("X25519 secret key", x25519_secret)?);
        Ok(Self {
            onion: onion::NodeKey::new(&secret)?,
            secret,
        })
    }

    /// The node's X25519 public key.
    #[getter]
    fn public<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.onion.public())
    }

    /// Peels one onion layer addressed to this node.
    fn peel(&self, py: Python<'_>, onion_bytes: &[u8]) -> PyResult<PeeledLayer> {
        let layer = onion::peel(&self.onion, onion_bytes).map_err(CoreError)?;
        PeeledLayer::from_core(py, layer)
    }

    /// Peels a v2 one-shot (`cell_type` 1) or create (2) cell addressed to this node.
    fn peel_cell(&self, cell_type: u8, cell: &[u8]) -> CoreResult<PeeledCell> {
        let cell_type = cells::CellType::from_byte(cell_type)?;
        Ok(PeeledCell {
            inner: cells::peel_routed(self.onion.secret(), cell_type, cell)?,
            cell_type,
        })
    }

    /// Peels many onions on every core with the GIL released; one result per input, in order: a
    /// `PeeledLayer`, or the exception for that input.
    fn peel_batch<'py>(
        &self,
        py: Python<'py>,
        onions: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        // `bytes` objects are immutable and `held` keeps each one alive, so their buffers can be
        // read without the GIL and without a copy.
        let held = bytes_objects(onions)?;
        let views: Vec<&[u8]> = held.iter().map(PyBytesMethods::as_bytes).collect();
        let peeled = py.detach(|| onion::peel_batch(&self.onion, &views));
        let results = PyList::empty(py);
        for result in peeled {
            match result {
                Ok(layer) => results.append(Py::new(py, PeeledLayer::from_core(py, layer)?)?)?,
                Err(error) => results.append(PyErr::from(CoreError(error)).into_value(py))?,
            }
        }
        Ok(results)
    }

    /// Starts a node-link handshake to the node whose announced X25519 key is `remote_public`, at
    /// `timestamp_ms` (this node's clock; it must grow from one handshake to the next).
    fn link_initiate(&self, remote_public: &[u8], timestamp_ms: u64) -> CoreResult<LinkInitiator> {
        let remote = fixed::<32>("X25519 public key", remote_public)?;
        Ok(LinkInitiator(Some(link::Initiator::new(
            &self.secret,
            &remote,
            timestamp_ms,
        )?)))
    }

    /// Reads a node-link handshake's first message (length prefix included) and returns the
    /// accepting end, whose caller key and timestamp can be checked before it answers. Raises
    /// `DecryptionError` for anything but a valid first message.
    fn link_accept(&self, message: &[u8]) -> CoreResult<LinkResponder> {
        Ok(LinkResponder(Some(link::Responder::read(
            &self.secret,
            message,
        )?)))
    }

    /// Answers a node-link handshake's first message (length prefix included): returns the
    /// initiator's static X25519 key, its timestamp, the answer to send once that key is admitted
    /// and the timestamp found fresh, and the link's cipher. Raises `DecryptionError` for anything
    /// but a valid first message.
    fn link_respond<'py>(
        &self,
        py: Python<'py>,
        message: &[u8],
    ) -> CoreResult<(Bound<'py, PyBytes>, u64, Bound<'py, PyBytes>, LinkCipher)> {
        let response = link::respond(&self.secret, message)?;
        Ok((
            bytes(py, &response.remote),
            response.timestamp_ms,
            bytes(py, &response.answer),
            LinkCipher::new(response.cipher),
        ))
    }
}

/// The accepting end of a node-link handshake (`NodeKey.link_accept`), read but not yet answered.
#[pyclass(module = "veil._core")]
struct LinkResponder(Option<link::Responder>);

#[pymethods]
impl LinkResponder {
    /// The caller's static X25519 key, as its first message authenticated it.
    #[getter]
    fn remote<'py>(&self, py: Python<'py>) -> CoreResult<Bound<'py, PyBytes>> {
        let responder = self.0.as_ref().ok_or(veil_core::Error::Decryption)?;
        Ok(bytes(py, responder.remote()))
    }

    /// The caller's timestamp (ms since the epoch).
    #[getter]
    fn timestamp_ms(&self) -> CoreResult<u64> {
        let responder = self.0.as_ref().ok_or(veil_core::Error::Decryption)?;
        Ok(responder.timestamp_ms())
    }

    /// The answer to send (length prefix included) and the link's cipher; once only.
    fn answer<'py>(&mut self, py: Python<'py>) -> CoreResult<(Bound<'py, PyBytes>, LinkCipher)> {
        let responder = self.0.take().ok_or(veil_core::Error::Decryption)?;
        let (answer, cipher) = responder.answer()?;
        Ok((bytes(py, &answer), LinkCipher::new(cipher)))
    }
}

/// The initiating end of a node-link handshake (`NodeKey.link_initiate`).
#[pyclass(module = "veil._core")]
struct LinkInitiator(Option<link::Initiator>);

#[pymethods]
impl LinkInitiator {
    /// The first handshake message (length prefix included).
    #[getter]
    fn message<'py>(&self, py: Python<'py>) -> CoreResult<Bound<'py, PyBytes>> {
        let initiator = self.0.as_ref().ok_or(veil_core::Error::Decryption)?;
        Ok(bytes(py, initiator.message()))
    }

    /// Reads the responder's answer (length prefix included) and returns the link's cipher. Raises
    /// `DecryptionError` for anything but the answer of the node this handshake was meant for.
    fn finish(&mut self, answer: &[u8]) -> CoreResult<LinkCipher> {
        let initiator = self.0.take().ok_or(veil_core::Error::Decryption)?;
        Ok(LinkCipher::new(initiator.finish(answer)?))
    }
}

/// Inputs at least this large are sealed or opened with the GIL released.
const LINK_DETACH_BYTES: usize = 256 * 1024;

/// The record layer of an established node link, with the frames inside its records.
#[pyclass(module = "veil._core")]
struct LinkCipher(link::LinkCipher, link::FrameReader);

impl LinkCipher {
    fn new(cipher: link::LinkCipher) -> Self {
        Self(cipher, link::FrameReader::default())
    }
}

#[pymethods]
impl LinkCipher {
    /// The other end's static X25519 key, as the handshake authenticated it.
    #[getter]
    fn remote_static<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.remote_static())
    }

    /// Received bytes that do not yet make a whole record, or (after `open_frames`) a whole frame.
    #[getter]
    fn pending(&self) -> usize {
        self.0.pending() + self.1.buffered()
    }

    /// Encodes frames `(kind, stream, body)` and seals them as records, in one call.
    #[pyo3(signature = (frames, rekey = false))]
    fn seal_frames<'py>(
        &mut self,
        py: Python<'py>,
        frames: &Bound<'py, PyAny>,
        rekey: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut held = Vec::with_capacity(frames.len().unwrap_or(0));
        for item in frames.try_iter()? {
            let (kind, stream, body): (u8, u32, Bound<'py, PyBytes>) = item?.extract()?;
            held.push((kind, stream, body));
        }
        let views: Vec<(u8, u32, &[u8])> = held
            .iter()
            .map(|(kind, stream, body)| (*kind, *stream, body.as_bytes()))
            .collect();
        let sealed = self.0.seal_frames(&views, rekey).map_err(CoreError)?;
        Ok(bytes(py, &sealed))
    }

    /// Adds received bytes and returns the frames now complete, as `(kind, stream, body)`, in
    /// order. Raises `DecryptionError` on a bad record and `InvalidInputError` on a malformed
    /// frame (a length below 5 or above `max_frame`, an unknown kind); after either, the link is
    /// to be closed.
    fn open_frames<'py>(
        &mut self,
        py: Python<'py>,
        received: &[u8],
        max_frame: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let Self(cipher, reader) = self;
        if received.len() >= LINK_DETACH_BYTES {
            py.detach(|| cipher.open_into(received, reader.buffer_mut()))
                .map_err(CoreError)?;
        } else {
            cipher
                .open_into(received, reader.buffer_mut())
                .map_err(CoreError)?;
        }
        let mut frames = Vec::new();
        reader
            .drain(max_frame, |frame| {
                frames.push((frame.kind, frame.stream, bytes(py, frame.body)));
            })
            .map_err(CoreError)?;
        PyList::new(py, frames)
    }

    /// Encrypts `data` as records; with `rekey`, the sending key changes after the last one.
    #[pyo3(signature = (data, rekey = false))]
    fn seal<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
        rekey: bool,
    ) -> CoreResult<Bound<'py, PyBytes>> {
        let sealed = if data.len() >= LINK_DETACH_BYTES {
            let cipher = &mut self.0;
            py.detach(|| cipher.seal(data, rekey))?
        } else {
            self.0.seal(data, rekey)?
        };
        Ok(bytes(py, &sealed))
    }

    /// Adds received bytes; returns the data of the records now complete. Raises
    /// `DecryptionError` (and refuses everything after) on any bad record.
    fn open<'py>(&mut self, py: Python<'py>, received: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
        let opened = if received.len() >= LINK_DETACH_BYTES {
            let cipher = &mut self.0;
            py.detach(|| cipher.open(received))?
        } else {
            self.0.open(received)?
        };
        Ok(bytes(py, &opened))
    }
}

/// `(ed25519, x25519, message, signature)`, copied out of Python.
type IdentityItem = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// For each `(ed25519, x25519, message, signature)`: whether `x25519` is `ed25519`'s X25519 form
/// and `signature` is its valid signature of `message`. Copies the inputs, then checks them on
/// every core with the GIL released (a node verifies announcements off its event loop).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts owned values; they are moved off the GIL
fn verify_identity_batch(py: Python<'_>, items: Vec<IdentityItem>) -> Bound<'_, PyList> {
    let results = py.detach(|| {
        let views: Vec<ed25519::IdentityCheck<'_>> = items
            .iter()
            .map(
                |(ed25519, x25519, message, signature)| ed25519::IdentityCheck {
                    ed25519,
                    x25519,
                    message,
                    signature,
                },
            )
            .collect();
        ed25519::verify_identity_batch(&views)
    });
    PyList::new(py, results).unwrap_or_else(|_| PyList::empty(py))
}

/// A secret copied out of a Python object, wiped when dropped.
fn zeroizing(value: [u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(value)
}

// --- Key encapsulation: ML-KEM-768 and veil-hybrid-v1 ---------------------------------------------
// Each call is tens of microseconds of work: like the other single operations, they keep the GIL.

/// `(ek, seed)`: the ML-KEM-768 encapsulation key (1,184 bytes) of `seed`, the private key (the
/// 64-byte FIPS 203 seed `d ‖ z`); a fresh random seed when `seed` is `None`.
#[pyfunction]
#[pyo3(signature = (seed = None))]
fn mlkem768_keypair<'py>(
    py: Python<'py>,
    seed: Option<&[u8]>,
) -> CoreResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let seed = match seed {
        Some(seed) => Zeroizing::new(fixed::<{ kem::MLKEM768_SEED_LEN }>(
            "ML-KEM-768 secret key",
            seed,
        )?),
        None => kem::mlkem768_generate_seed(),
    };
    Ok((
        bytes(py, &kem::mlkem768_public_key(&seed)),
        bytes(py, seed.as_ref()),
    ))
}

/// `(ct, ss)`: ML-KEM-768 encapsulation to `ek` (1,088-byte ciphertext, 32-byte secret). `m`, the
/// 32-byte message, is random when `None`; give it only for test vectors. Raises `InvalidKeyError`
/// for a key of the wrong length or one that fails the FIPS 203 modulus check.
#[pyfunction]
#[pyo3(signature = (ek, m = None))]
fn mlkem768_encapsulate<'py>(
    py: Python<'py>,
    ek: &[u8],
    m: Option<&[u8]>,
) -> CoreResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let (ct, ss) = match m {
        Some(m) => {
            let m = Zeroizing::new(fixed::<{ kem::MLKEM768_M_LEN }>("ML-KEM-768 message m", m)?);
            kem::mlkem768_encapsulate_deterministic(ek, &m)?
        }
        None => kem::mlkem768_encapsulate(ek)?,
    };
    Ok((bytes(py, &ct), bytes(py, ss.as_ref())))
}

/// The 32-byte secret of an ML-KEM-768 ciphertext, with the private key `secret` (the 64-byte
/// seed). A ciphertext of the right length that is not valid for the key gives FIPS 203's
/// implicit-rejection secret, not an error.
#[pyfunction]
fn mlkem768_decapsulate<'py>(
    py: Python<'py>,
    secret: &[u8],
    ct: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let key = kem::MlKem768DecapsulationKey::from_seed_bytes(secret)?;
    Ok(bytes(py, key.decapsulate(ct)?.as_ref()))
}

/// `(public, secret)` of the hybrid KEM `veil-hybrid-v1`: public = X25519 key ‖ ML-KEM-768 key
/// (1,216 bytes), secret = the 32-byte seed both are derived from; a fresh random seed when `seed`
/// is `None`.
#[pyfunction]
#[pyo3(signature = (seed = None))]
fn hybrid_keypair<'py>(
    py: Python<'py>,
    seed: Option<&[u8]>,
) -> CoreResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let seed = match seed {
        Some(seed) => Zeroizing::new(fixed::<{ kem::HYBRID_SEED_LEN }>(
            "hybrid secret key",
            seed,
        )?),
        None => kem::hybrid_generate_seed(),
    };
    Ok((
        bytes(py, &kem::hybrid_public_key(&seed)?),
        bytes(py, seed.as_ref()),
    ))
}

/// `(ct, ss)`: hybrid encapsulation to `public` (ct = X25519 ephemeral key ‖ ML-KEM-768
/// ciphertext, 1,120 bytes; ss 32 bytes). `randomness` (64 bytes: ML-KEM's m ‖ the X25519
/// ephemeral secret) is random when `None`; give it only for test vectors. Raises
/// `InvalidKeyError` for a public key of the wrong length, a low-order X25519 key or an ML-KEM key
/// that fails the FIPS 203 modulus check.
#[pyfunction]
#[pyo3(signature = (public, randomness = None))]
fn hybrid_encapsulate<'py>(
    py: Python<'py>,
    public: &[u8],
    randomness: Option<&[u8]>,
) -> CoreResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let (ct, ss) = match randomness {
        Some(randomness) => {
            let randomness = Zeroizing::new(fixed::<{ kem::HYBRID_RANDOMNESS_LEN }>(
                "hybrid randomness",
                randomness,
            )?);
            kem::hybrid_encapsulate_deterministic(public, &randomness)?
        }
        None => kem::hybrid_encapsulate(public)?,
    };
    Ok((bytes(py, &ct), bytes(py, ss.as_ref())))
}

/// The 32-byte secret of a hybrid ciphertext, with `secret` (the 32-byte seed). Raises
/// `InvalidInputError` for a ciphertext of the wrong length and `InvalidKeyError` when its X25519
/// half is a low-order point; a wrong ML-KEM half gives a secret no encapsulator knows.
#[pyfunction]
fn hybrid_decapsulate<'py>(
    py: Python<'py>,
    secret: &[u8],
    ct: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let key = kem::HybridSecretKey::from_seed_bytes(secret)?;
    Ok(bytes(py, key.decapsulate(ct)?.as_ref()))
}

// --- Veil v2 one-to-one messages ----------------------------------------------------------------

fn key_ids(items: &[(Vec<u8>, Vec<u8>)]) -> CoreResult<Vec<([u8; 8], &[u8])>> {
    items
        .iter()
        .map(|(id, key)| {
            Ok((
                fixed::<{ envelope::KEY_ID_LEN }>("prekey id", id)?,
                key.as_slice(),
            ))
        })
        .collect()
}

/// A v2 envelope of `plaintext` from the sender (Ed25519 seed) to the recipient account
/// (`recipient_x25519`), one slot per `(key id, hybrid public key)` in `recipients`. `cek`,
/// `nonce` and `kem_randomness` (one 64-byte value per recipient) are for test vectors only.
#[pyfunction]
#[pyo3(signature = (sender_seed, recipient_x25519, recipients, plaintext, cek = None, nonce = None, kem_randomness = None))]
#[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)] // pyo3 extracts by value
fn envelope_seal<'py>(
    py: Python<'py>,
    sender_seed: &[u8],
    recipient_x25519: &[u8],
    recipients: Vec<(Vec<u8>, Vec<u8>)>,
    plaintext: &[u8],
    cek: Option<&[u8]>,
    nonce: Option<&[u8]>,
    kem_randomness: Option<Vec<Vec<u8>>>,
) -> CoreResult<Bound<'py, PyBytes>> {
    let seed = zeroizing(fixed::<32>("seed", sender_seed)?);
    let recipient = fixed::<32>("X25519 public key", recipient_x25519)?;
    let slots: Vec<envelope::Recipient<'_>> = key_ids(&recipients)?
        .into_iter()
        .map(|(key_id, public)| envelope::Recipient { key_id, public })
        .collect();
    let mut randomness = envelope::Randomness::fresh(slots.len());
    if let Some(cek) = cek {
        randomness.cek = zeroizing(fixed::<32>("content key", cek)?);
    }
    if let Some(nonce) = nonce {
        randomness.nonce = fixed::<24>("nonce", nonce)?;
    }
    if let Some(values) = kem_randomness {
        randomness.kem = values
            .iter()
            .map(|value| {
                Ok(Zeroizing::new(fixed::<{ kem::HYBRID_RANDOMNESS_LEN }>(
                    "hybrid randomness",
                    value,
                )?))
            })
            .collect::<CoreResult<_>>()?;
    }
    Ok(bytes(
        py,
        &envelope::seal_with(&seed, &recipient, &slots, plaintext, &randomness)?,
    ))
}

/// Opens a v2 envelope with the device's prekeys `(key id, hybrid secret)`: (plaintext, sender's
/// Ed25519 key, sender's X25519 key). Every failure is `DecryptionError`.
#[pyfunction]
fn envelope_open<'py>(
    py: Python<'py>,
    data: &[u8],
    recipient_x25519: &[u8],
    prekeys: Vec<(Vec<u8>, Vec<u8>)>,
) -> CoreResult<Bound<'py, PyTuple>> {
    let recipient = fixed::<32>("X25519 public key", recipient_x25519)?;
    let secrets: Vec<(Vec<u8>, Zeroizing<Vec<u8>>)> = prekeys
        .into_iter()
        .map(|(id, secret)| (id, Zeroizing::new(secret)))
        .collect();
    let ids = secrets
        .iter()
        .map(|(id, secret)| {
            Ok((
                fixed::<{ envelope::KEY_ID_LEN }>("prekey id", id)?,
                secret.as_slice(),
            ))
        })
        .collect::<CoreResult<Vec<_>>>()?;
    let opened = envelope::open(data, &recipient, &ids)?;
    let items = [
        bytes(py, &opened.plaintext),
        bytes(py, &opened.sender_ed25519),
        bytes(py, &opened.sender_x25519),
    ];
    PyTuple::new(py, items).map_err(|_| CoreError(veil_core::Error::Decryption))
}

/// Whether `data` starts as a v2 envelope does.
#[pyfunction]
fn envelope_is(data: &[u8]) -> bool {
    envelope::is_envelope(data)
}

// --- Storage encodings of the service node -------------------------------------------------------

/// The 75-byte key of a message in the node's messages table.
#[pyfunction]
fn store_message_key<'py>(
    py: Python<'py>,
    account: &[u8],
    namespace: i16,
    timestamp_ms: u64,
    digest: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    Ok(bytes(
        py,
        &store_index::message_key(account, namespace, timestamp_ms, digest)?,
    ))
}

/// BLAKE2b-256(account ‖ namespace (decimal text, empty for 0) ‖ data): Session's message hash.
#[pyfunction]
fn store_message_hash<'py>(
    py: Python<'py>,
    account: &[u8],
    namespace: i16,
    data: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    Ok(bytes(
        py,
        &store_index::message_hash(account, namespace, data)?,
    ))
}

/// A plain `store` request's values, read from its body in one call, or `None` for any other
/// body (read then by the Python parser, which answers every error): `(account, namespace,
/// timestamp_ms, ttl_ms, data, hash)`. Keeps the GIL: it is a few microseconds of work.
#[pyfunction]
fn plain_store<'py>(
    py: Python<'py>,
    body: &[u8],
    max_data: usize,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(store) = store_request::plain_store(body, max_data) else {
        return Ok(None);
    };
    Ok(Some(PyTuple::new(
        py,
        [
            bytes(py, &store.account).into_any(),
            store.namespace.into_pyobject(py)?.into_any(),
            store.timestamp_ms.into_pyobject(py)?.into_any(),
            store.ttl_ms.into_pyobject(py)?.into_any(),
            bytes(py, &store.data).into_any(),
            bytes(py, &store.hash).into_any(),
        ],
    )?))
}

/// The JSON array of a `retrieve` answer's messages, from objects with the attributes `hash`,
/// `timestamp_ms`, `expiry_ms` and `data` (the node's `StoredMessage`). Keeps the GIL: a page is
/// at most a few hundred microseconds of work.
#[pyfunction]
fn retrieve_messages_json<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut held = Vec::with_capacity(messages.len().unwrap_or(0));
    for item in messages.try_iter()? {
        let item = item?;
        let hash = item
            .getattr(pyo3::intern!(py, "hash"))?
            .cast_into::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("a message's hash must be bytes"))?;
        let timestamp_ms: u64 = item.getattr(pyo3::intern!(py, "timestamp_ms"))?.extract()?;
        let expiry_ms: u64 = item.getattr(pyo3::intern!(py, "expiry_ms"))?.extract()?;
        let data = item
            .getattr(pyo3::intern!(py, "data"))?
            .cast_into::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("a message's data must be bytes"))?;
        held.push((hash, timestamp_ms, expiry_ms, data));
    }
    let views: Vec<store_index::RetrievedMessage<'_>> = held
        .iter()
        .map(
            |(hash, timestamp_ms, expiry_ms, data)| store_index::RetrievedMessage {
                hash: hash.as_bytes(),
                timestamp_ms: *timestamp_ms,
                expiry_ms: *expiry_ms,
                data: data.as_bytes(),
            },
        )
        .collect();
    let len = store_index::retrieve_json_len(&views).map_err(CoreError)?;
    PyBytes::new_with(py, len, |out| {
        store_index::retrieve_json_into(&views, out).map_err(|error| CoreError(error).into())
    })
}

/// The module `veil._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(x25519_generate_secret, m)?)?;
    m.add_function(wrap_pyfunction!(x25519_public_key, m)?)?;
    m.add_function(wrap_pyfunction!(x25519_diffie_hellman, m)?)?;
    m.add_function(wrap_pyfunction!(ed25519_public_key, m)?)?;
    m.add_function(wrap_pyfunction!(ed25519_sign, m)?)?;
    m.add_function(wrap_pyfunction!(ed25519_verify, m)?)?;
    m.add_function(wrap_pyfunction!(ed25519_public_key_to_x25519, m)?)?;
    m.add_function(wrap_pyfunction!(ed25519_seed_to_x25519, m)?)?;
    m.add_function(wrap_pyfunction!(blake2b, m)?)?;
    m.add_function(wrap_pyfunction!(xchacha20poly1305_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(xchacha20poly1305_decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(sealed_box_seal, m)?)?;
    m.add_function(wrap_pyfunction!(sealed_box_open, m)?)?;
    m.add_function(wrap_pyfunction!(session_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(session_decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(build_onion, m)?)?;
    m.add_function(wrap_pyfunction!(build_oneshot_cell, m)?)?;
    m.add_function(wrap_pyfunction!(build_oneshot_cell_with, m)?)?;
    m.add_function(wrap_pyfunction!(build_create_cell, m)?)?;
    m.add_function(wrap_pyfunction!(store_message_key, m)?)?;
    m.add_function(wrap_pyfunction!(store_message_hash, m)?)?;
    m.add_function(wrap_pyfunction!(plain_store, m)?)?;
    m.add_function(wrap_pyfunction!(retrieve_messages_json, m)?)?;
    m.add_function(wrap_pyfunction!(verify_identity_batch, m)?)?;
    m.add_function(wrap_pyfunction!(blind25_keypair, m)?)?;
    m.add_function(wrap_pyfunction!(blind25_public, m)?)?;
    m.add_function(wrap_pyfunction!(blind25_matches, m)?)?;
    m.add_function(wrap_pyfunction!(blind25_check_public, m)?)?;
    m.add_function(wrap_pyfunction!(blind25_sign, m)?)?;
    m.add_function(wrap_pyfunction!(blind25_dm_key, m)?)?;
    m.add_function(wrap_pyfunction!(mlkem768_keypair, m)?)?;
    m.add_function(wrap_pyfunction!(mlkem768_encapsulate, m)?)?;
    m.add_function(wrap_pyfunction!(mlkem768_decapsulate, m)?)?;
    m.add_function(wrap_pyfunction!(hybrid_keypair, m)?)?;
    m.add_function(wrap_pyfunction!(hybrid_encapsulate, m)?)?;
    m.add_function(wrap_pyfunction!(hybrid_decapsulate, m)?)?;
    m.add_function(wrap_pyfunction!(envelope_seal, m)?)?;
    m.add_function(wrap_pyfunction!(envelope_open, m)?)?;
    m.add_function(wrap_pyfunction!(envelope_is, m)?)?;
    m.add_class::<HopKey>()?;
    m.add_class::<PeeledLayer>()?;
    m.add_class::<CellReply>()?;
    m.add_class::<PendingCircuit>()?;
    m.add_class::<ClientCircuit>()?;
    m.add_class::<PeeledCell>()?;
    m.add_class::<CircuitHop>()?;
    m.add_class::<NodeKey>()?;
    m.add_class::<LinkInitiator>()?;
    m.add_class::<LinkResponder>()?;
    m.add_class::<LinkCipher>()?;
    m.add_class::<Ed25519KeyPair>()?;
    m.add_class::<Ed25519PublicKey>()?;
    m.add_class::<Blind25Key>()?;
    m.add("ONION_VERSION", onion::VERSION)?;
    m.add("CELL_VERSION", cells::VERSION)?;
    m.add("CELL_ONESHOT", cells::CellType::OneShot as u8)?;
    m.add("CELL_CREATE", cells::CellType::Create as u8)?;
    m.add("CELL_DATA", cells::CellType::Data as u8)?;
    m.add("CELL_MAX_HOPS", cells::MAX_HOPS)?;
    m.add("CELL_MIN_BUCKET", cells::MIN_BUCKET)?;
    m.add("CELL_MAX_BUCKET", cells::MAX_BUCKET)?;
    m.add(
        "CELL_ONESHOT_HEADER",
        cells::CellType::OneShot.header_region(),
    )?;
    m.add(
        "CELL_CREATE_HEADER",
        cells::CellType::Create.header_region(),
    )?;
    m.add("CELL_DATA_HEADER", cells::CellType::Data.header_region())?;
    m.add("CELL_CREATE_REPLY_LEN", cells::CREATE_REPLY_LEN)?;
    m.add("MAX_ONION_LEN", onion::MAX_ONION_LEN)?;
    m.add("MAX_ROUTE_LEN", onion::MAX_ROUTE_LEN)?;
    m.add("MAX_ROUTING_LEN", onion::MAX_ROUTING_LEN)?;
    m.add("ONION_LAYER_OVERHEAD", onion::LAYER_OVERHEAD)?;
    m.add("HOP_OVERHEAD", hop::OVERHEAD)?;
    m.add("SEALED_BOX_OVERHEAD", sealed_box::OVERHEAD)?;
    m.add("LINK_NOISE_PROTOCOL", link::NOISE_PROTOCOL)?;
    m.add("LINK_MAX_RECORD_DATA", link::MAX_RECORD_DATA)?;
    m.add("MLKEM768_SEED_LEN", kem::MLKEM768_SEED_LEN)?;
    m.add("MLKEM768_PUBLIC_KEY_LEN", kem::MLKEM768_EK_LEN)?;
    m.add("MLKEM768_CIPHERTEXT_LEN", kem::MLKEM768_CT_LEN)?;
    m.add("HYBRID_SEED_LEN", kem::HYBRID_SEED_LEN)?;
    m.add("HYBRID_PUBLIC_KEY_LEN", kem::HYBRID_PUBLIC_LEN)?;
    m.add("HYBRID_CIPHERTEXT_LEN", kem::HYBRID_CT_LEN)?;
    m.add("HYBRID_LABEL", kem::HYBRID_LABEL)?;
    m.add("ENVELOPE_SLOT_LEN", envelope::SLOT_LEN)?;
    m.add("ENVELOPE_MAX_SLOTS", envelope::MAX_SLOTS)?;
    Ok(())
}
