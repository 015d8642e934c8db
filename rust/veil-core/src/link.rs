//! Node links, version 2: a Noise handshake that binds both ends to their announced keys, then a
//! record layer that encrypts everything the link carries. `docs/protocol.md` ("Node links,
//! version 2") specifies it byte by byte; this is the one implementation of it.
//!
//! ```text
//! protocol   = Noise_IK_25519_ChaChaPoly_BLAKE2b, prologue "veil-link-v2"
//! static key = the node's X25519 key (the standard conversion of its announced Ed25519 key)
//! message    = length (2, big-endian) ‖ Noise message            (every byte on the wire)
//! initiator → responder   msg1 = e, es, s, ss + payload          (104 bytes)
//!                          payload = the initiator's clock, ms since the epoch (8, big-endian)
//! responder → initiator   msg2 = e, ee, se + empty payload       (48 bytes)
//! then, both ways         record = Noise transport message of (flags (1) ‖ data)
//! flags      = 0x01 REKEY: the sender's key for the records after this one is Noise's Rekey(k);
//!              every other bit is zero
//! ```
//!
//! The initiator knows the responder's static key from its announcement (IK), so the first message
//! already authenticates the responder's key (only its owner can complete the handshake) and
//! carries the initiator's own static key encrypted; the responder learns which node connected
//! before it answers and before any record exists. The first message's payload, a timestamp, lets
//! the responder refuse a replayed first message (it keeps the last timestamp of each node, as
//! `WireGuard` does with its TAI64N). Transport keys come from the two ephemeral
//! keys (forward secrecy) and are never shared between links; long-lived links rekey.
//!
//! Every failure — a malformed handshake, a bad tag, a malformed record, a record after a failure —
//! is the one opaque [`Error::Decryption`]; after one, the cipher refuses everything (the link is to
//! be closed).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState, TransportState};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::x25519::{StaticSecret, KEY_LEN};

/// The Noise protocol name: pattern IK, X25519, ChaCha20-Poly1305, BLAKE2b.
pub const NOISE_PROTOCOL: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2b";
/// Bound into the handshake: a peer speaking another version fails the handshake.
pub const PROLOGUE: &[u8] = b"veil-link-v2";
/// Bytes of the length prefix in front of every Noise message.
pub const LENGTH_PREFIX: usize = 2;
/// The largest Noise message (the limit of the Noise specification).
pub const MAX_MESSAGE: usize = 65_535;
/// Bytes of an AEAD tag.
pub const TAG_LEN: usize = 16;
/// The initiator's handshake payload: its clock in milliseconds since the epoch (big-endian).
pub const TIMESTAMP_LEN: usize = 8;
/// The initiator's handshake message, without its length prefix.
pub const INIT_LEN: usize = 32 + (32 + TAG_LEN) + (TIMESTAMP_LEN + TAG_LEN);
/// The responder's handshake message, without its length prefix.
pub const RESPONSE_LEN: usize = 32 + TAG_LEN;
/// The most data one record carries: a Noise message less its tag and the flags byte.
pub const MAX_RECORD_DATA: usize = MAX_MESSAGE - TAG_LEN - 1;
/// Record flag: the sender rekeys after this record.
pub const FLAG_REKEY: u8 = 0x01;

fn params() -> Result<NoiseParams> {
    NOISE_PROTOCOL
        .parse()
        .map_err(|_| Error::InvalidArgument("Noise protocol name"))
}

fn builder(local_secret: &[u8; KEY_LEN]) -> Result<Builder<'_>> {
    Builder::with_resolver(params()?, Box::new(Resolver))
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(local_secret))
        .map_err(|_| Error::InvalidKey("X25519 secret key"))
}

/// The initiating end of a handshake, between its first message and the responder's answer.
pub struct Initiator {
    state: HandshakeState,
    message: Vec<u8>,
}

impl Initiator {
    /// Starts a handshake from the node whose static secret is `local_secret` to the node whose
    /// announced X25519 key is `remote_public`, at `timestamp_ms` (which must grow from one
    /// handshake to the next between the same two nodes).
    pub fn new(
        local_secret: &[u8; KEY_LEN],
        remote_public: &[u8; KEY_LEN],
        timestamp_ms: u64,
    ) -> Result<Self> {
        let mut state = builder(local_secret)?
            .remote_public_key(remote_public)
            .and_then(Builder::build_initiator)
            .map_err(|_| Error::InvalidKey("X25519 public key"))?;
        let mut message = vec![0u8; LENGTH_PREFIX + INIT_LEN];
        let written = state
            .write_message(&timestamp_ms.to_be_bytes(), &mut message[LENGTH_PREFIX..])
            .map_err(|_| Error::InvalidKey("X25519 public key (low order)"))?;
        if written != INIT_LEN {
            return Err(Error::InvalidArgument("handshake message length"));
        }
        message[..LENGTH_PREFIX].copy_from_slice(&length_prefix(INIT_LEN));
        Ok(Self { state, message })
    }

    /// The first handshake message, length prefix included: what the initiator sends first.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Reads the responder's answer (length prefix included, exactly that many bytes) and returns
    /// the link's cipher.
    pub fn finish(mut self, answer: &[u8]) -> Result<LinkCipher> {
        let body = framed(answer, RESPONSE_LEN)?;
        let mut payload = [0u8; RESPONSE_LEN];
        let read = self
            .state
            .read_message(body, &mut payload)
            .map_err(|_| Error::Decryption)?;
        if read != 0 {
            return Err(Error::Decryption);
        }
        LinkCipher::new(self.state)
    }
}

/// What [`respond`] learns and answers.
pub struct Response {
    /// The initiator's static X25519 key, as the handshake authenticated it.
    pub remote: [u8; KEY_LEN],
    /// The initiator's timestamp (ms since the epoch), to refuse replayed first messages.
    pub timestamp_ms: u64,
    /// The answer to send, length prefix included.
    pub answer: Vec<u8>,
    /// The link's record layer.
    pub cipher: LinkCipher,
}

/// Answers an initiator's first message (length prefix included, exactly that many bytes) with the
/// node's static secret, in one step: [`Responder::read`] then [`Responder::answer`]. A node reads
/// first and answers only a caller it admits (with a fresh timestamp, newer than any seen from
/// it); this is for callers that admit everyone.
pub fn respond(local_secret: &[u8; KEY_LEN], message: &[u8]) -> Result<Response> {
    let responder = Responder::read(local_secret, message)?;
    let (remote, timestamp_ms) = (responder.remote, responder.timestamp_ms);
    let (answer, cipher) = responder.answer()?;
    Ok(Response {
        remote,
        timestamp_ms,
        answer,
        cipher,
    })
}

/// The accepting end of a handshake between reading the first message and answering it. Reading
/// costs two of the five X25519 operations (`es`, `ss`); the answer (a fresh ephemeral key, `ee`,
/// `se`) is made only for a caller the node admits, so a refused one costs it less than half.
pub struct Responder {
    state: HandshakeState,
    remote: [u8; KEY_LEN],
    timestamp_ms: u64,
}

impl Responder {
    /// Reads an initiator's first message (length prefix included, exactly that many bytes).
    pub fn read(local_secret: &[u8; KEY_LEN], message: &[u8]) -> Result<Self> {
        let body = framed(message, INIT_LEN)?;
        let mut state = builder(local_secret)?
            .build_responder()
            .map_err(|_| Error::Decryption)?;
        let mut payload = [0u8; INIT_LEN];
        let read = state
            .read_message(body, &mut payload)
            .map_err(|_| Error::Decryption)?;
        let timestamp: [u8; TIMESTAMP_LEN] = payload
            .get(..read)
            .and_then(|p| p.try_into().ok())
            .ok_or(Error::Decryption)?;
        let remote: [u8; KEY_LEN] = state
            .get_remote_static()
            .and_then(|key| key.try_into().ok())
            .ok_or(Error::Decryption)?;
        Ok(Self {
            state,
            remote,
            timestamp_ms: u64::from_be_bytes(timestamp),
        })
    }

    /// The initiator's static X25519 key, as its first message authenticated it.
    #[must_use]
    pub fn remote(&self) -> &[u8; KEY_LEN] {
        &self.remote
    }

    /// The initiator's timestamp (ms since the epoch).
    #[must_use]
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The answer to send (length prefix included) and the link's record layer.
    pub fn answer(mut self) -> Result<(Vec<u8>, LinkCipher)> {
        let mut answer = vec![0u8; LENGTH_PREFIX + RESPONSE_LEN];
        let written = self
            .state
            .write_message(&[], &mut answer[LENGTH_PREFIX..])
            .map_err(|_| Error::Decryption)?;
        if written != RESPONSE_LEN {
            return Err(Error::Decryption);
        }
        answer[..LENGTH_PREFIX].copy_from_slice(&length_prefix(RESPONSE_LEN));
        Ok((answer, LinkCipher::new(self.state)?))
    }
}

/// The body of a handshake message that must be exactly `len` bytes after its prefix.
fn framed(message: &[u8], len: usize) -> Result<&[u8]> {
    if message.len() != LENGTH_PREFIX + len || read_length(message) != len {
        return Err(Error::Decryption);
    }
    Ok(&message[LENGTH_PREFIX..])
}

fn read_length(bytes: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn length_prefix(len: usize) -> [u8; LENGTH_PREFIX] {
    // Callers pass lengths of at most MAX_MESSAGE (65,535), which fit in two bytes.
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// The record layer of an established link: seals what this end sends, opens what it receives.
pub struct LinkCipher {
    transport: TransportState,
    remote: [u8; KEY_LEN],
    /// Received bytes not yet forming a whole record (at most one record's worth is kept).
    pending: Vec<u8>,
    failed: bool,
    scratch: Vec<u8>,
}

impl LinkCipher {
    fn new(state: HandshakeState) -> Result<Self> {
        let transport = state.into_transport_mode().map_err(|_| Error::Decryption)?;
        let remote: [u8; KEY_LEN] = transport
            .get_remote_static()
            .and_then(|key| key.try_into().ok())
            .ok_or(Error::Decryption)?;
        Ok(Self {
            transport,
            remote,
            pending: Vec::new(),
            failed: false,
            scratch: vec![0u8; MAX_MESSAGE],
        })
    }

    /// The other end's static X25519 key, as authenticated by the handshake.
    #[must_use]
    pub fn remote_static(&self) -> &[u8; KEY_LEN] {
        &self.remote
    }

    /// Bytes received that do not yet make a whole record.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Encrypts `data` as one or more records (`MAX_RECORD_DATA` bytes at most each). With
    /// `rekey`, the last record carries the REKEY flag and the sending key is rekeyed after it; an
    /// empty `data` with `rekey` is one empty record.
    pub fn seal(&mut self, data: &[u8], rekey: bool) -> Result<Vec<u8>> {
        if self.failed {
            return Err(Error::Decryption);
        }
        let chunks = data.len().div_ceil(MAX_RECORD_DATA).max(1);
        let mut out = Vec::with_capacity(data.len() + chunks * (LENGTH_PREFIX + 1 + TAG_LEN));
        let mut plain = Vec::with_capacity(data.len().min(MAX_RECORD_DATA) + 1);
        for (index, chunk) in data
            .chunks(MAX_RECORD_DATA)
            .chain(std::iter::once(&[][..]).filter(|_| data.is_empty()))
            .enumerate()
        {
            let last = index + 1 == chunks;
            plain.clear();
            plain.push(if rekey && last { FLAG_REKEY } else { 0 });
            plain.extend_from_slice(chunk);
            let start = out.len();
            out.resize(start + LENGTH_PREFIX + plain.len() + TAG_LEN, 0);
            let written = self
                .transport
                .write_message(&plain, &mut out[start + LENGTH_PREFIX..])
                .map_err(|_| self.fail())?;
            out[start..start + LENGTH_PREFIX].copy_from_slice(&length_prefix(written));
            out.truncate(start + LENGTH_PREFIX + written);
        }
        if rekey {
            self.transport.rekey_outgoing();
        }
        Ok(out)
    }

    /// Adds received bytes and returns the data of every record now complete, in order (empty if
    /// none is). A partial record is kept for the next call.
    pub fn open(&mut self, received: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.pending.len() + received.len());
        self.open_into(received, &mut out)?;
        Ok(out)
    }

    /// [`open`](Self::open), appending the records' data to `out`.
    pub fn open_into(&mut self, received: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(Error::Decryption);
        }
        if self.pending.is_empty() {
            let used = self.open_records(received, out)?;
            self.pending.extend_from_slice(&received[used..]);
        } else {
            let mut input = std::mem::take(&mut self.pending);
            input.extend_from_slice(received);
            let used = self.open_records(&input, out)?;
            input.drain(..used);
            self.pending = input;
        }
        Ok(())
    }

    /// Encodes `frames` (kind, stream, body) and seals them as records (see [`seal`](Self::seal)).
    pub fn seal_frames(&mut self, frames: &[(u8, u32, &[u8])], rekey: bool) -> Result<Vec<u8>> {
        let size = frames
            .iter()
            .map(|(_, _, body)| FRAME_HEADER_LEN + body.len())
            .sum();
        let mut plain = Vec::with_capacity(size);
        for &(kind, stream, body) in frames {
            encode_frame_into(&mut plain, kind, stream, body)?;
        }
        self.seal(&plain, rekey)
    }

    /// Opens the whole records at the start of `input` into `out`; returns the bytes consumed.
    fn open_records(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let mut offset = 0;
        while input.len() - offset >= LENGTH_PREFIX {
            let len = read_length(&input[offset..]);
            if len < TAG_LEN + 1 {
                return Err(self.fail());
            }
            let end = offset + LENGTH_PREFIX + len;
            if end > input.len() {
                break;
            }
            let read = self
                .transport
                .read_message(&input[offset + LENGTH_PREFIX..end], &mut self.scratch)
                .map_err(|_| self.fail())?;
            let flags = self.scratch[0];
            if read == 0 || flags & !FLAG_REKEY != 0 {
                return Err(self.fail());
            }
            out.extend_from_slice(&self.scratch[1..read]);
            if flags & FLAG_REKEY != 0 {
                self.transport.rekey_incoming();
            }
            offset = end;
        }
        Ok(offset)
    }

    /// Marks the cipher failed (it refuses everything from now on) and returns the one error.
    fn fail(&mut self) -> Error {
        self.failed = true;
        self.pending = Vec::new();
        Error::Decryption
    }
}

// --- frames inside the records ---------------------------------------------------------------------

/// Bytes of a frame's header: length (4) ‖ kind (1) ‖ stream (4).
pub const FRAME_HEADER_LEN: usize = 9;
/// The smallest frame length (kind and stream, no body).
pub const FRAME_MIN_LENGTH: usize = 5;
/// The frame kinds: REQUEST, RESPONSE, FAILURE, PING, PONG, RPC.
pub const FRAME_KINDS: std::ops::RangeInclusive<u8> = 1..=6;

const MALFORMED_FRAME: Error = Error::InvalidArgument("a node-link frame is malformed");

/// Appends one frame: length (4, big-endian: the bytes after it) ‖ kind ‖ stream (4) ‖ body.
pub fn encode_frame_into(out: &mut Vec<u8>, kind: u8, stream: u32, body: &[u8]) -> Result<()> {
    let length = u32::try_from(FRAME_MIN_LENGTH + body.len()).map_err(|_| MALFORMED_FRAME)?;
    if !FRAME_KINDS.contains(&kind) {
        return Err(MALFORMED_FRAME);
    }
    out.extend_from_slice(&length.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// One frame read from a link.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub stream: u32,
    pub body: &'a [u8],
}

/// Splits the records' data into frames, keeping a partial frame for later. A length below 5 or
/// above `max_frame`, or an unknown kind, is an error as soon as its bytes are here, so an
/// oversized frame is refused before it is buffered: the buffer never holds more than one frame.
#[derive(Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    /// Bytes held of a frame not yet complete.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Appends `data` and calls `each` with every frame now complete, in order.
    pub fn feed(
        &mut self,
        data: &[u8],
        max_frame: usize,
        each: impl FnMut(Frame<'_>),
    ) -> Result<()> {
        self.buffer.extend_from_slice(data);
        let used = read_frames(&self.buffer, max_frame, each);
        match used {
            Ok(used) => {
                self.buffer.drain(..used);
                Ok(())
            }
            Err(error) => {
                self.buffer = Vec::new();
                Err(error)
            }
        }
    }

    /// The buffer records are opened into, to save a copy (see [`LinkCipher::open_into`]).
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// Calls `each` with every complete frame in the buffer and drops them from it.
    pub fn drain(&mut self, max_frame: usize, each: impl FnMut(Frame<'_>)) -> Result<()> {
        self.feed(&[], max_frame, each)
    }
}

fn read_frames(buffer: &[u8], max_frame: usize, mut each: impl FnMut(Frame<'_>)) -> Result<usize> {
    let mut offset = 0;
    while buffer.len() - offset >= 4 {
        let header = &buffer[offset..];
        let length = usize::try_from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]))
        .map_err(|_| MALFORMED_FRAME)?;
        if !(FRAME_MIN_LENGTH..=max_frame).contains(&length) {
            return Err(MALFORMED_FRAME);
        }
        if header.len() >= 5 && !FRAME_KINDS.contains(&header[4]) {
            return Err(MALFORMED_FRAME);
        }
        let end = offset + 4 + length;
        if end > buffer.len() {
            break;
        }
        each(Frame {
            kind: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]),
            body: &buffer[offset + FRAME_HEADER_LEN..end],
        });
        offset = end;
    }
    Ok(offset)
}

// --- Noise's crypto choices: X25519 from AWS-LC, the rest from snow's defaults ----------------------

/// Resolves Noise's DH to the core's X25519 and its cipher to AWS-LC's ChaCha20-Poly1305 (both
/// measured faster than snow's defaults here — `docs/performance.md`, "Node links" —, and the DH
/// refuses low-order points, as libsodium does); BLAKE2b and randomness come from snow's default
/// resolver (`RustCrypto`'s BLAKE2b, the OS RNG through `getrandom`).
struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519Dh::default())),
            DHChoice::Curve448 => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::new(ChaChaPoly::default())),
            CipherChoice::AESGCM => None,
        }
    }
}

/// Noise's `ChaChaPoly` (RFC 8439 ChaCha20-Poly1305; the 96-bit nonce is 32 zero bits and the
/// 64-bit counter, little-endian) over AWS-LC.
#[derive(Default)]
struct ChaChaPoly {
    key: Option<LessSafeKey>,
}

impl ChaChaPoly {
    fn nonce(counter: u64) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        Nonce::assume_unique_for_key(nonce)
    }
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; 32]) {
        self.key = UnboundKey::new(&CHACHA20_POLY1305, key)
            .ok()
            .map(LessSafeKey::new);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        // snow sizes `out` for the plaintext and its tag, and never encrypts without a key; if
        // either failed, nothing is written and the 0 returned makes the record invalid.
        let len = plaintext.len();
        let (Some(key), Some(target)) = (self.key.as_ref(), out.get_mut(..len + TAG_LEN)) else {
            return 0;
        };
        let (body, tag_out) = target.split_at_mut(len);
        body.copy_from_slice(plaintext);
        match key.seal_in_place_separate_tag(Self::nonce(nonce), Aad::from(authtext), body) {
            Ok(tag) => {
                tag_out.copy_from_slice(tag.as_ref());
                len + TAG_LEN
            }
            Err(_) => 0,
        }
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> std::result::Result<usize, snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Decrypt)?;
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let (body, tag) = ciphertext.split_at(len);
        let target = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        key.open_separate_gather(Self::nonce(nonce), Aad::from(authtext), body, tag, target)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(len)
    }
}

#[derive(Default)]
struct X25519Dh {
    secret: Zeroizing<[u8; KEY_LEN]>,
    key: Option<StaticSecret>,
    public: [u8; KEY_LEN],
}

impl X25519Dh {
    fn load(&mut self, secret: [u8; KEY_LEN]) {
        *self.secret = secret;
        self.key = StaticSecret::from_bytes(&secret).ok();
        self.public = self
            .key
            .as_ref()
            .map_or([0u8; KEY_LEN], |key| *key.public());
    }
}

impl Dh for X25519Dh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        if privkey.len() == KEY_LEN {
            secret.copy_from_slice(privkey);
            self.load(*secret);
        } else {
            self.key = None;
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> std::result::Result<(), snow::Error> {
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        rng.try_fill_bytes(secret.as_mut())?;
        self.load(*secret);
        if self.key.is_none() {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_ref()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> std::result::Result<(), snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        let peer: [u8; KEY_LEN] = pubkey
            .get(..KEY_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = key.diffie_hellman(&peer).map_err(|_| snow::Error::Dh)?;
        out.get_mut(..KEY_LEN)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(shared.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x25519::generate_secret;

    struct Pair {
        initiator: LinkCipher,
        responder: LinkCipher,
    }

    fn keys() -> ([u8; 32], [u8; 32], [u8; 32], [u8; 32]) {
        let a = *generate_secret();
        let b = *generate_secret();
        let a_pub = crate::x25519::public_key(&a).unwrap();
        let b_pub = crate::x25519::public_key(&b).unwrap();
        (a, a_pub, b, b_pub)
    }

    fn pair() -> Pair {
        let (a, a_pub, b, b_pub) = keys();
        let initiator = Initiator::new(&a, &b_pub, 1_700_000_000_000).unwrap();
        assert_eq!(initiator.message().len(), LENGTH_PREFIX + INIT_LEN);
        let Response {
            remote,
            answer,
            cipher: responder,
            ..
        } = respond(&b, initiator.message()).unwrap();
        assert_eq!(remote, a_pub);
        assert_eq!(answer.len(), LENGTH_PREFIX + RESPONSE_LEN);
        let initiator = initiator.finish(&answer).unwrap();
        assert_eq!(initiator.remote_static(), &b_pub);
        assert_eq!(responder.remote_static(), &a_pub);
        Pair {
            initiator,
            responder,
        }
    }

    #[test]
    fn both_ends_learn_each_others_static_key_and_exchange_records() {
        let mut link = pair();
        let sealed = link.initiator.seal(b"hello", false).unwrap();
        assert_eq!(sealed.len(), LENGTH_PREFIX + 1 + 5 + TAG_LEN);
        assert_eq!(link.responder.open(&sealed).unwrap(), b"hello");
        let back = link.responder.seal(b"world", false).unwrap();
        assert_eq!(link.initiator.open(&back).unwrap(), b"world");
    }

    #[test]
    fn a_handshake_to_the_wrong_key_fails_at_the_responder() {
        let (a, _, _, _) = keys();
        let (_, _, other, _) = keys();
        let (_, _, _, b_pub) = keys();
        let initiator = Initiator::new(&a, &b_pub, 1_700_000_000_000).unwrap();
        assert_eq!(
            respond(&other, initiator.message()).err(),
            Some(Error::Decryption)
        );
    }

    #[test]
    fn a_forged_answer_fails_at_the_initiator() {
        let (a, _, b, b_pub) = keys();
        let (mallory, _, _, _) = keys();
        let first = Initiator::new(&a, &b_pub, 1_700_000_000_000).unwrap();
        // An answer from a handshake with another initiator cannot finish this one.
        let other = Initiator::new(&mallory, &b_pub, 1_700_000_000_000).unwrap();
        let Response { answer, .. } = respond(&b, other.message()).unwrap();
        assert_eq!(first.finish(&answer).err(), Some(Error::Decryption));
    }

    #[test]
    fn a_low_order_responder_key_is_refused() {
        let (a, _, _, _) = keys();
        assert!(Initiator::new(&a, &[0u8; 32], 1).is_err());
    }

    #[test]
    fn records_split_anywhere_reassemble() {
        let mut link = pair();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = link.initiator.seal(&data, false).unwrap();
        let mut got = Vec::new();
        for piece in sealed.chunks(7_777) {
            got.extend(link.responder.open(piece).unwrap());
        }
        assert_eq!(got, data);
        assert_eq!(link.responder.pending(), 0);
    }

    #[test]
    fn rekeying_changes_the_key_for_the_following_records_on_both_ends() {
        let mut link = pair();
        let mut wire = link.initiator.seal(b"one", true).unwrap();
        wire.extend(link.initiator.seal(b"two", false).unwrap());
        wire.extend(link.initiator.seal(b"", true).unwrap());
        wire.extend(link.initiator.seal(b"three", false).unwrap());
        assert_eq!(link.responder.open(&wire).unwrap(), b"onetwothree");
    }

    #[test]
    fn a_flipped_bit_a_replayed_record_or_a_reordered_record_fails_and_poisons() {
        // A flipped bit fails, and the cipher refuses even the intact record afterwards.
        let mut link = pair();
        let first = link.initiator.seal(b"first", false).unwrap();
        let mut flipped = first.clone();
        flipped[5] ^= 1;
        assert_eq!(link.responder.open(&flipped), Err(Error::Decryption));
        assert_eq!(link.responder.open(&first), Err(Error::Decryption));

        // A record replayed after it was opened fails (its nonce has passed).
        let mut link = pair();
        let first = link.initiator.seal(b"first", false).unwrap();
        assert_eq!(link.responder.open(&first).unwrap(), b"first");
        assert_eq!(link.responder.open(&first), Err(Error::Decryption));

        // A record opened before the one sent ahead of it fails.
        let mut link = pair();
        let _first = link.initiator.seal(b"first", false).unwrap();
        let second = link.initiator.seal(b"second", false).unwrap();
        assert_eq!(link.responder.open(&second), Err(Error::Decryption));
    }

    #[test]
    fn records_too_short_to_hold_a_tag_and_flags_fail() {
        for record in [vec![0, 3, 1, 2, 3], [vec![0, 16], vec![0u8; 16]].concat()] {
            let mut link = pair();
            assert_eq!(link.responder.open(&record), Err(Error::Decryption));
        }
    }

    #[test]
    fn every_link_has_its_own_keys() {
        let (a, _, b, b_pub) = keys();
        let first = Initiator::new(&a, &b_pub, 1_700_000_000_000).unwrap();
        let second = Initiator::new(&a, &b_pub, 1_700_000_000_000).unwrap();
        assert_ne!(first.message(), second.message());
        let Response {
            answer: answer1,
            cipher: mut r1,
            ..
        } = respond(&b, first.message()).unwrap();
        let Response {
            answer: answer2,
            cipher: mut r2,
            ..
        } = respond(&b, second.message()).unwrap();
        let mut i1 = first.finish(&answer1).unwrap();
        let mut i2 = second.finish(&answer2).unwrap();
        let s1 = i1.seal(b"same plaintext", false).unwrap();
        let s2 = i2.seal(b"same plaintext", false).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(r2.open(&s1), Err(Error::Decryption));
        assert_eq!(r1.open(&s1).unwrap(), b"same plaintext");
    }

    #[test]
    fn interoperates_with_snows_reference_primitives_both_ways() {
        // snow's default resolver (curve25519-dalek, RustCrypto's ChaCha20-Poly1305) on the other
        // end: the AWS-LC DH and cipher here compute the same Noise protocol.
        let (a, a_pub, b, b_pub) = keys();
        let mut reference = Builder::new(params().unwrap())
            .prologue(PROLOGUE)
            .unwrap()
            .local_private_key(&a)
            .unwrap()
            .remote_public_key(&b_pub)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut first = vec![0u8; LENGTH_PREFIX + INIT_LEN];
        let stamp = 1_700_000_000_123u64.to_be_bytes();
        let n = reference.write_message(&stamp, &mut first[2..]).unwrap();
        assert_eq!(n, INIT_LEN);
        first[..2].copy_from_slice(&length_prefix(n));
        let Response {
            remote,
            timestamp_ms,
            answer,
            cipher: mut ours,
        } = respond(&b, &first).unwrap();
        assert_eq!(remote, a_pub);
        assert_eq!(timestamp_ms, 1_700_000_000_123);
        let mut payload = [0u8; 64];
        assert_eq!(
            reference.read_message(&answer[2..], &mut payload).unwrap(),
            0
        );
        let mut reference = reference.into_transport_mode().unwrap();

        // Our record, their transport message, and back; then both rekey.
        let sealed = ours.seal(b"to the reference", true).unwrap();
        let mut plain = vec![0u8; MAX_MESSAGE];
        let n = reference.read_message(&sealed[2..], &mut plain).unwrap();
        assert_eq!(&plain[..n], b"\x01to the reference");
        reference.rekey_incoming();
        let mut record = vec![0u8; MAX_MESSAGE];
        let n = reference
            .write_message(b"\x01from the reference", &mut record)
            .unwrap();
        reference.rekey_outgoing();
        let mut wire = length_prefix(n).to_vec();
        wire.extend_from_slice(&record[..n]);
        let n = reference
            .write_message(b"\x00after rekey", &mut record)
            .unwrap();
        wire.extend_from_slice(&length_prefix(n));
        wire.extend_from_slice(&record[..n]);
        assert_eq!(ours.open(&wire).unwrap(), b"from the referenceafter rekey");
        let sealed = ours.seal(b"again", false).unwrap();
        let n = reference.read_message(&sealed[2..], &mut plain).unwrap();
        assert_eq!(&plain[..n], b"\x00again");
    }

    #[test]
    fn frames_sealed_together_come_out_one_by_one_whatever_the_split() {
        let mut link = pair();
        let big = vec![7u8; 200_000];
        let frames: [(u8, u32, &[u8]); 3] = [(1, 7, b"abc"), (4, 9, b""), (6, 1 << 31, &big)];
        let sealed = link.initiator.seal_frames(&frames, false).unwrap();
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        for piece in sealed.chunks(999) {
            link.responder
                .open_into(piece, reader.buffer_mut())
                .unwrap();
            reader
                .drain(1 << 20, |f| got.push((f.kind, f.stream, f.body.to_vec())))
                .unwrap();
        }
        let expected: Vec<_> = frames.iter().map(|&(k, s, b)| (k, s, b.to_vec())).collect();
        assert_eq!(got, expected);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn the_documented_frame_example_reads_back() {
        let mut out = Vec::new();
        encode_frame_into(&mut out, 1, 7, b"abc").unwrap();
        assert_eq!(out, [0, 0, 0, 8, 1, 0, 0, 0, 7, 0x61, 0x62, 0x63]);
    }

    #[test]
    fn frames_too_short_too_long_or_of_unknown_kind_are_refused_before_they_are_buffered() {
        for bad in [
            vec![0, 0, 0, 4, 1, 0, 0, 0, 0],
            vec![0, 0, 0x10, 0x01],
            vec![0, 0, 0, 5, 7],
            vec![0, 0, 0, 5, 0],
        ] {
            let mut reader = FrameReader::default();
            assert!(reader.feed(&bad, 4096, |_| {}).is_err(), "{bad:?}");
            assert_eq!(reader.buffered(), 0);
        }
        let mut out = Vec::new();
        assert!(encode_frame_into(&mut out, 0, 1, b"").is_err());
    }

    #[test]
    fn malformed_handshake_messages_fail_without_panicking() {
        let (_, _, b, _) = keys();
        for message in [
            vec![],
            vec![0],
            vec![0, 104],
            vec![0u8; 106],
            vec![0xff; 106],
            [vec![0, 104], vec![0u8; 104]].concat(),
            vec![0, 103, 1],
        ] {
            assert_eq!(respond(&b, &message).err(), Some(Error::Decryption));
        }
    }
}
