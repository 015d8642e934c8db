//! Veil onion cells, version 2: fixed-size cells, an authenticated layer per hop, circuits with
//! a hybrid (X25519 + ML-KEM-768) handshake per hop. `docs/protocol.md` ("Onion v2") specifies
//! the format with a worked example; this is the one implementation of it.
//!
//! ```text
//! cell    = header region (3·L bytes, fixed per cell type) ‖ payload region (B bytes)
//! layer i = prefix_i ‖ tag_i(16) ‖ E_i                      (the header region as hop i sees it)
//! prefix  = X_i(32) ‖ nonce_i(24)    one-shot and create cells (X_i: the client's ephemeral key)
//!         = nonce_i(24)              data cells (the hop's keys come from its circuit)
//! P_i     = XChaCha20-Poly1305⁻¹(k_header, nonce_i, E_i ‖ tag_i,
//!                                aad = version ‖ type ‖ prefix_i ‖ payload_i)
//!         = header_i (h bytes) ‖ the next layer's first 3·L − L bytes
//! next    = (P_i[h..] ‖ filler_i(L)) ‖ XChaCha20(k_payload, nonce_i) ⊕ payload_i
//! ```
//!
//! `L = |prefix| + 16 + h`. A hop drops its `L` bytes of header and appends `L` bytes of filler
//! drawn from its own key and nonce (Sphinx's trick), so every hop sees a header region of the
//! same size whatever its place on the path, and the payload region keeps its size: a cell's size
//! tells a hop only its type and payload bucket. The client, which knows every hop's keys, builds
//! each layer so that the filler its predecessor will append is exactly what that layer's tag
//! covers. Every layer authenticates the whole cell as it reaches that hop (the header by the AEAD,
//! the payload as its associated data): a bit flipped anywhere by one hop fails at the next one,
//! never reaching the destination (no tagging). The hop count is inside the encryption (the
//! `kind` byte says forward or deliver); at most [`MAX_HOPS`] layers fit a header region, so no
//! cell can loop through more hops than that.
//!
//! Replies: the destination seals its answer with its reply key (`nonce ‖ AEAD(len ‖ answer ‖
//! zeros)`, padded to a bucket); every hop on the way back XORs its own keystream over it (its
//! `back` key and the request's nonce), so no two links carry the same bytes and no reply grows on
//! its way. A create cell's reply is fixed-size: each hop prepends its handshake answer (`Y ‖
//! ML-KEM ciphertext`, sealed with its layer key) and drops as many bytes from the end.
//!
//! Any failure to open a cell or a reply is the one opaque [`Error::Decryption`].

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::XChaCha20;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::hash::blake2b_256;
use crate::kem::{self, MlKem768DecapsulationKey, MLKEM768_CT_LEN, MLKEM768_EK_LEN};
use crate::x25519::StaticSecret;

pub const VERSION: u8 = 2;
/// The most layers a header region holds: guard, relay, destination.
pub const MAX_HOPS: usize = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// The smallest payload region of a one-shot or data cell, and of a reply.
pub const MIN_BUCKET: usize = 1024;
/// The largest payload region (and reply) this module builds or opens.
pub const MAX_BUCKET: usize = 16 * 1024 * 1024;

/// `kind` byte of a one-shot or create layer.
pub const KIND_FORWARD: u8 = 0x00;
pub const KIND_DELIVER: u8 = 0x01;

/// Cell types: each has its own prefix and header sizes, so its own header region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellType {
    /// A request without a circuit: X25519 per hop, the request in the payload region.
    OneShot = 1,
    /// Sets up a circuit: as one-shot, with each hop's ML-KEM-768 encapsulation key in its header.
    Create = 2,
    /// A request on a circuit: the hops' keys are the circuit's.
    Data = 3,
}

impl CellType {
    pub fn from_byte(value: u8) -> Result<Self> {
        match value {
            1 => Ok(Self::OneShot),
            2 => Ok(Self::Create),
            3 => Ok(Self::Data),
            _ => Err(Error::InvalidArgument("unknown cell type")),
        }
    }

    const fn prefix_len(self) -> usize {
        match self {
            Self::OneShot | Self::Create => KEY_LEN + NONCE_LEN,
            Self::Data => NONCE_LEN,
        }
    }

    /// Bytes of a layer's header: kind ‖ next hop ‖ issued (s) [‖ ML-KEM key] for one-shot and
    /// create layers, the hop's sequence number for data layers.
    #[must_use]
    pub const fn header_len(self) -> usize {
        match self {
            Self::OneShot => ROUTE_HEADER_LEN,
            Self::Create => ROUTE_HEADER_LEN + MLKEM768_EK_LEN,
            Self::Data => 8,
        }
    }

    const fn layer_len(self) -> usize {
        self.prefix_len() + TAG_LEN + self.header_len()
    }

    /// Bytes of this type's header region.
    #[must_use]
    pub const fn header_region(self) -> usize {
        MAX_HOPS * self.layer_len()
    }
}

/// `kind(1) ‖ next hop(32) ‖ issued_s(8)`
const ROUTE_HEADER_LEN: usize = 1 + 32 + 8;
/// A create cell's answer from one hop: AEAD(Y(32) ‖ ML-KEM ciphertext) with its tag.
pub const SLOT_LEN: usize = KEY_LEN + MLKEM768_CT_LEN + TAG_LEN;
/// The reply to a create cell: one slot per hop.
pub const CREATE_REPLY_LEN: usize = MAX_HOPS * SLOT_LEN;

/// The payload bucket for `len` bytes of content (a 4-byte length is added): the smallest power of
/// two from [`MIN_BUCKET`] that holds it.
pub fn bucket(len: usize) -> Result<usize> {
    let needed = len.checked_add(4).ok_or(Error::TooLarge {
        what: "payload",
        limit: MAX_BUCKET - 4,
    })?;
    let size = needed.max(MIN_BUCKET).next_power_of_two();
    if size > MAX_BUCKET {
        return Err(Error::TooLarge {
            what: "payload",
            limit: MAX_BUCKET - 4,
        });
    }
    Ok(size)
}

fn pad(content: &[u8], size: usize) -> Vec<u8> {
    let mut region = Vec::with_capacity(size);
    #[allow(clippy::cast_possible_truncation)] // content.len() < MAX_BUCKET < 2^32
    region.extend_from_slice(&(content.len() as u32).to_be_bytes());
    region.extend_from_slice(content);
    region.resize(size, 0);
    region
}

fn unpad(region: &[u8]) -> Result<&[u8]> {
    let len: [u8; 4] = region
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::Decryption)?;
    let len = u32::from_be_bytes(len) as usize;
    region.get(4..4 + len).ok_or(Error::Decryption)
}

// --- keys -----------------------------------------------------------------------------------------

/// The keys of one hop for one cell (or, for data cells, one circuit), derived from its secret.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HopKeys {
    header: [u8; KEY_LEN],
    payload: [u8; KEY_LEN],
    filler: [u8; KEY_LEN],
    back: [u8; KEY_LEN],
    reply: [u8; KEY_LEN],
    slot: [u8; KEY_LEN],
    replay: [u8; KEY_LEN],
}

impl std::fmt::Debug for HopKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKeys(..)")
    }
}

impl HopKeys {
    fn from_secret(secret: &[u8; KEY_LEN]) -> Self {
        let derive = |label: &[u8]| blake2b_256(&[b"veil/onion/v2/", label, secret]);
        Self {
            header: derive(b"header"),
            payload: derive(b"payload"),
            filler: derive(b"filler"),
            back: derive(b"back"),
            reply: derive(b"reply"),
            slot: derive(b"slot"),
            replay: derive(b"replay"),
        }
    }

    /// The secret of a one-shot or create layer: X25519 between the client's ephemeral key `X`
    /// and the node's key `N`, bound to both.
    fn for_layer(shared: &[u8; KEY_LEN], ephemeral: &[u8; 32], node: &[u8; 32]) -> Self {
        let mut secret = blake2b_256(&[b"veil/onion/v2/layer", shared, ephemeral, node]);
        let keys = Self::from_secret(&secret);
        secret.zeroize();
        keys
    }
}

fn keystream(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], offset: u64, data: &mut [u8]) {
    let mut cipher = XChaCha20::new(key.into(), nonce.into());
    cipher.seek(offset);
    cipher.apply_keystream(data);
}

/// The keystream XChaCha20-Poly1305 XORs over plaintext byte `at` onwards (its block 0 is the
/// Poly1305 key).
fn aead_keystream(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    keystream(key, nonce, 64 + at as u64, &mut out);
    out
}

fn aad(cell_type: CellType, prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(2 + prefix.len() + payload.len());
    aad.push(VERSION);
    aad.push(cell_type as u8);
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(payload);
    aad
}

// --- building (the client) ------------------------------------------------------------------------

struct LayerPlan {
    keys: HopKeys,
    prefix: Vec<u8>,
    header: Vec<u8>,
}

impl LayerPlan {
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.prefix[self.prefix.len() - NONCE_LEN..]);
        nonce
    }
}

/// The cell for `plans` (first hop first) around a payload region, per the module's construction.
fn build_cell(cell_type: CellType, plans: &[LayerPlan], region: Vec<u8>) -> Result<Vec<u8>> {
    let hops = plans.len();
    if hops == 0 || hops > MAX_HOPS {
        return Err(Error::InvalidArgument("a cell has 1 to 3 hops"));
    }
    let (prefix_len, header_len, layer_len) = (
        cell_type.prefix_len(),
        cell_type.header_len(),
        cell_type.layer_len(),
    );
    let size = cell_type.header_region();
    let sealed_len = size - prefix_len - TAG_LEN;
    // The bytes each layer must end with: its predecessors' fillers, as they reach it.
    let mut tail: Vec<u8> = Vec::new();
    for plan in &plans[..hops - 1] {
        let c = tail.len();
        let ks = aead_keystream(
            &plan.keys.header,
            &plan.nonce(),
            header_len + size - layer_len - c,
            c,
        );
        for (byte, k) in tail.iter_mut().zip(ks) {
            *byte ^= k;
        }
        let mut filler = vec![0u8; layer_len];
        keystream(&plan.keys.filler, &plan.nonce(), 0, &mut filler);
        tail.extend_from_slice(&filler);
    }
    // The payload region as each hop receives it.
    let mut payloads = vec![region];
    for plan in plans.iter().rev() {
        let mut outer = payloads.last().cloned().unwrap_or_default();
        keystream(&plan.keys.payload, &plan.nonce(), 0, &mut outer);
        payloads.push(outer);
    }
    payloads.reverse(); // payloads[i]: what hop i receives; payloads[hops]: the plaintext region

    let last = &plans[hops - 1];
    let c = tail.len();
    let mut plaintext = Vec::with_capacity(sealed_len);
    plaintext.extend_from_slice(&last.header);
    plaintext.resize(sealed_len - c, 0);
    let ks = aead_keystream(&last.keys.header, &last.nonce(), sealed_len - c, c);
    plaintext.extend(tail.iter().zip(ks).map(|(t, k)| t ^ k));
    let mut layer = seal_layer(cell_type, last, plaintext, &payloads[hops - 1])?;
    for i in (0..hops - 1).rev() {
        let plan = &plans[i];
        let mut plaintext = Vec::with_capacity(sealed_len);
        plaintext.extend_from_slice(&plan.header);
        plaintext.extend_from_slice(&layer[..size - layer_len]);
        layer = seal_layer(cell_type, plan, plaintext, &payloads[i])?;
    }
    layer.extend_from_slice(&payloads[0]);
    Ok(layer)
}

fn seal_layer(
    cell_type: CellType,
    plan: &LayerPlan,
    mut plaintext: Vec<u8>,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let tag = XChaCha20Poly1305::new((&plan.keys.header).into())
        .encrypt_in_place_detached(
            XNonce::from_slice(&plan.nonce()),
            &aad(cell_type, &plan.prefix, payload),
            &mut plaintext,
        )
        .map_err(|_| Error::InvalidArgument("layer too large"))?;
    let mut layer = Vec::with_capacity(cell_type.header_region() + payload.len());
    layer.extend_from_slice(&plan.prefix);
    layer.extend_from_slice(&tag);
    layer.extend_from_slice(&plaintext);
    Ok(layer)
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

fn route_header(next: Option<&[u8; 32]>, issued_s: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(ROUTE_HEADER_LEN);
    if let Some(next) = next {
        header.push(KIND_FORWARD);
        header.extend_from_slice(next);
    } else {
        header.push(KIND_DELIVER);
        header.extend_from_slice(&[0u8; 32]);
    }
    header.extend_from_slice(&issued_s.to_be_bytes());
    header
}

/// What a client keeps to open the reply to one cell: each hop's `back` key and nonce, and the
/// destination's reply key.
pub struct ReplyOpener {
    hops: Vec<([u8; KEY_LEN], [u8; NONCE_LEN])>,
    reply: Zeroizing<[u8; KEY_LEN]>,
}

impl Drop for ReplyOpener {
    fn drop(&mut self) {
        for (key, _) in &mut self.hops {
            key.zeroize();
        }
    }
}

impl ReplyOpener {
    fn new(plans: &[LayerPlan]) -> Self {
        let hops = plans.iter().map(|p| (p.keys.back, p.nonce())).collect();
        let reply = Zeroizing::new(plans[plans.len() - 1].keys.reply);
        Self { hops, reply }
    }

    /// The destination's answer. Every hop's keystream is taken off (the destination's too: it
    /// adds one as every hop does), then the destination's seal is opened.
    pub fn open(&self, reply: &[u8]) -> Result<Vec<u8>> {
        if reply.len() < NONCE_LEN + TAG_LEN + 4 || reply.len() > MAX_BUCKET {
            return Err(Error::Decryption);
        }
        let mut reply = reply.to_vec();
        for (key, nonce) in &self.hops {
            keystream(key, nonce, 0, &mut reply);
        }
        open_sealed_reply(&self.reply, &reply)
    }
}

fn open_sealed_reply(key: &[u8; KEY_LEN], sealed: &[u8]) -> Result<Vec<u8>> {
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut body = body.to_vec();
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &[VERSION, b'r'],
            &mut body,
            Tag::from_slice(tag),
        )
        .map_err(|_| Error::Decryption)?;
    Ok(unpad(&body)?.to_vec())
}

/// The client's randomness for one layer of a one-shot or create cell.
pub struct LayerRandomness {
    pub ephemeral_secret: [u8; 32],
    pub nonce: [u8; NONCE_LEN],
}

fn layer_plans(
    route: &[[u8; 32]],
    issued_s: &[u64],
    extra: impl Fn(usize) -> Vec<u8>,
    given: Option<&[LayerRandomness]>,
) -> Result<(Vec<LayerPlan>, Vec<Ephemeral>)> {
    if route.is_empty() || route.len() > MAX_HOPS {
        return Err(Error::InvalidArgument("a path has 1 to 3 hops"));
    }
    if issued_s.len() != route.len() || given.is_some_and(|g| g.len() != route.len()) {
        return Err(Error::InvalidArgument(
            "one issue time (and randomness) per hop",
        ));
    }
    let mut plans = Vec::with_capacity(route.len());
    let mut ephemerals = Vec::with_capacity(route.len());
    for (i, node) in route.iter().enumerate() {
        let (ephemeral, nonce) = match given {
            Some(given) => (
                StaticSecret::from_bytes(&given[i].ephemeral_secret)?,
                given[i].nonce,
            ),
            None => (StaticSecret::generate()?, random_nonce()),
        };
        let shared = ephemeral.diffie_hellman(node)?;
        let keys = HopKeys::for_layer(&shared, ephemeral.public(), node);
        let mut prefix = Vec::with_capacity(KEY_LEN + NONCE_LEN);
        prefix.extend_from_slice(ephemeral.public());
        prefix.extend_from_slice(&nonce);
        let mut header = route_header(route.get(i + 1), issued_s[i]);
        header.extend_from_slice(&extra(i));
        ephemerals.push(Ephemeral {
            secret: ephemeral,
            static_shared: shared,
        });
        plans.push(LayerPlan {
            keys,
            prefix,
            header,
        });
    }
    Ok((plans, ephemerals))
}

/// A one-shot cell carrying `content` along `route` (first hop first, destination last; each
/// hop's `issued_s` in its own layer), and what opens the reply.
pub fn build_oneshot(
    route: &[[u8; 32]],
    content: &[u8],
    issued_s: &[u64],
) -> Result<(Vec<u8>, ReplyOpener)> {
    build_oneshot_with(route, content, issued_s, None)
}

/// As [`build_oneshot`], with the client's randomness given (`None`: drawn from the OS): for
/// test vectors and the worked example of `docs/protocol.md`, never for sending.
pub fn build_oneshot_with(
    route: &[[u8; 32]],
    content: &[u8],
    issued_s: &[u64],
    given: Option<&[LayerRandomness]>,
) -> Result<(Vec<u8>, ReplyOpener)> {
    let region = pad(content, bucket(content.len())?);
    let (plans, _) = layer_plans(route, issued_s, |_| Vec::new(), given)?;
    let cell = build_cell(CellType::OneShot, &plans, region)?;
    Ok((cell, ReplyOpener::new(&plans)))
}

/// A client's ephemeral key for one layer, and what it agreed with the node's key.
struct Ephemeral {
    secret: StaticSecret,
    static_shared: Zeroizing<[u8; 32]>,
}

/// A create cell in flight: what the client needs to finish each hop's handshake.
pub struct PendingCircuit {
    plans: Vec<LayerPlan>,
    ephemerals: Vec<Ephemeral>,
    mlkem_keys: Vec<MlKem768DecapsulationKey>,
    route: Vec<[u8; 32]>,
}

/// A create cell for a circuit along `route`, and what finishes it once the reply comes.
pub fn build_create(route: &[[u8; 32]], issued_s: &[u64]) -> Result<(Vec<u8>, PendingCircuit)> {
    // Expanded once: the same key gives the encapsulation key now and decapsulates later.
    let keys: Vec<MlKem768DecapsulationKey> = route
        .iter()
        .map(|_| MlKem768DecapsulationKey::from_seed(&kem::mlkem768_generate_seed()))
        .collect();
    let eks: Vec<[u8; MLKEM768_EK_LEN]> = keys
        .iter()
        .map(MlKem768DecapsulationKey::encapsulation_key)
        .collect();
    let (plans, ephemerals) = layer_plans(route, issued_s, |i| eks[i].to_vec(), None)?;
    let cell = build_cell(CellType::Create, &plans, Vec::new())?;
    Ok((
        cell,
        PendingCircuit {
            plans,
            ephemerals,
            mlkem_keys: keys,
            route: route.to_vec(),
        },
    ))
}

fn circuit_secret(
    static_shared: &[u8; 32],
    ephemeral_shared: &[u8; 32],
    kem_shared: &[u8; 32],
    client: &[u8; 32],
    node: &[u8; 32],
    node_ephemeral: &[u8; 32],
    kem_ct: &[u8],
) -> HopKeys {
    let mut secret = blake2b_256(&[
        b"veil/onion/v2/circuit",
        static_shared,
        ephemeral_shared,
        kem_shared,
        client,
        node,
        node_ephemeral,
        kem_ct,
    ]);
    let keys = HopKeys::from_secret(&secret);
    secret.zeroize();
    keys
}

fn slot_nonce() -> &'static XNonce {
    // Each slot key seals exactly one slot.
    XNonce::from_slice(&[0u8; NONCE_LEN])
}

impl PendingCircuit {
    /// The circuit, from the create cell's reply: each hop's handshake answer opened and
    /// combined; any failure is [`Error::Decryption`].
    pub fn finish(self, reply: &[u8]) -> Result<ClientCircuit> {
        if reply.len() != CREATE_REPLY_LEN {
            return Err(Error::Decryption);
        }
        let mut rest = reply.to_vec();
        let mut hops = Vec::with_capacity(self.plans.len());
        for (i, plan) in self.plans.iter().enumerate() {
            keystream(&plan.keys.back, &plan.nonce(), 0, &mut rest);
            let mut slot = rest[..SLOT_LEN - TAG_LEN].to_vec();
            let tag = Tag::clone_from_slice(&rest[SLOT_LEN - TAG_LEN..SLOT_LEN]);
            XChaCha20Poly1305::new((&plan.keys.slot).into())
                .decrypt_in_place_detached(slot_nonce(), &[VERSION, b's'], &mut slot, &tag)
                .map_err(|_| Error::Decryption)?;
            let node_ephemeral: [u8; 32] = slot[..32].try_into().map_err(|_| Error::Decryption)?;
            let ct = &slot[32..];
            let kem_shared = self.mlkem_keys[i]
                .decapsulate(ct)
                .map_err(|_| Error::Decryption)?;
            let ephemeral = &self.ephemerals[i];
            let ephemeral_shared = ephemeral
                .secret
                .diffie_hellman(&node_ephemeral)
                .map_err(|_| Error::Decryption)?;
            hops.push(circuit_secret(
                &ephemeral.static_shared,
                &ephemeral_shared,
                &kem_shared,
                ephemeral.secret.public(),
                &self.route[i],
                &node_ephemeral,
                ct,
            ));
            rest.drain(..SLOT_LEN);
        }
        let mut seqs = vec![0u64; hops.len()];
        for seq in &mut seqs {
            *seq = OsRng.next_u64() >> 2; // a random start per hop: no two layers share a number
        }
        Ok(ClientCircuit { hops, seqs })
    }
}

/// A client's end of a circuit: each hop's keys and next sequence number.
pub struct ClientCircuit {
    hops: Vec<HopKeys>,
    seqs: Vec<u64>,
}

impl ClientCircuit {
    /// A data cell carrying `content` to the circuit's destination, and what opens its reply.
    pub fn seal(&mut self, content: &[u8]) -> Result<(Vec<u8>, ReplyOpener)> {
        let region = pad(content, bucket(content.len())?);
        let plans: Vec<LayerPlan> = self
            .hops
            .iter()
            .zip(self.seqs.iter_mut())
            .map(|(keys, seq)| {
                *seq += 1;
                LayerPlan {
                    keys: keys.clone(),
                    prefix: random_nonce().to_vec(),
                    header: seq.to_be_bytes().to_vec(),
                }
            })
            .collect();
        let cell = build_cell(CellType::Data, &plans, region)?;
        Ok((cell, ReplyOpener::new(&plans)))
    }

    #[must_use]
    pub fn hops(&self) -> usize {
        self.hops.len()
    }
}

// --- peeling (the node) ---------------------------------------------------------------------------

/// One layer, peeled.
pub struct Peeled {
    /// The layer's header (`kind ‖ next ‖ issued_s [‖ ek]`, or `seq`).
    pub header: Vec<u8>,
    /// The cell for the next hop (built at every hop; the destination ignores it).
    pub next: Vec<u8>,
    keys: HopKeys,
    nonce: [u8; NONCE_LEN],
    routed: Option<Routed>,
}

/// What a one-shot or create layer's hop agreed with the client.
struct Routed {
    client: [u8; 32],
    node: [u8; 32],
    static_shared: Zeroizing<[u8; 32]>,
}

impl Peeled {
    /// The next hop's key, or None at the destination (one-shot and create layers).
    #[must_use]
    pub fn next_hop(&self) -> Option<[u8; 32]> {
        match self.header.first() {
            Some(&KIND_FORWARD) => self.header[1..33].try_into().ok(),
            _ => None,
        }
    }

    #[must_use]
    pub fn issued_s(&self) -> u64 {
        self.header
            .get(33..41)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// A data layer's sequence number.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.header
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// A value unique to this layer (one-shot and create), to drop replays.
    #[must_use]
    pub fn replay_tag(&self) -> [u8; 16] {
        let digest = blake2b_256(&[&self.keys.replay, &self.nonce]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&digest[..16]);
        tag
    }

    /// At the destination: the content of the payload region.
    pub fn content(&self, cell_type: CellType) -> Result<&[u8]> {
        unpad(&self.next[cell_type.header_region()..])
    }

    /// At the destination: `answer`, sealed with the reply key and padded to its bucket, with this
    /// hop's keystream over it.
    pub fn seal_reply(&self, answer: &[u8]) -> Result<Vec<u8>> {
        let size = bucket(answer.len() + NONCE_LEN + TAG_LEN)?;
        let mut body = pad(answer, size - NONCE_LEN - TAG_LEN);
        let nonce = random_nonce();
        let tag = XChaCha20Poly1305::new((&self.keys.reply).into())
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &[VERSION, b'r'], &mut body)
            .map_err(|_| Error::InvalidArgument("reply too large"))?;
        let mut reply = Vec::with_capacity(size);
        reply.extend_from_slice(&nonce);
        reply.extend_from_slice(&body);
        reply.extend_from_slice(&tag);
        keystream(&self.keys.back, &self.nonce, 0, &mut reply);
        Ok(reply)
    }

    /// On the way back: this hop's keystream over the reply from the next hop.
    #[must_use]
    pub fn wrap_reply(&self, mut reply: Vec<u8>) -> Vec<u8> {
        keystream(&self.keys.back, &self.nonce, 0, &mut reply);
        reply
    }

    /// A create layer: this hop's end of the circuit and its sealed handshake answer.
    pub fn accept_circuit(&self) -> Result<(NodeCircuitHop, [u8; SLOT_LEN])> {
        let ek = self
            .header
            .get(ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + MLKEM768_EK_LEN)
            .ok_or(Error::Decryption)?;
        let routed = self.routed.as_ref().ok_or(Error::Decryption)?;
        let client = routed.client;
        let (ct, kem_shared) = kem::mlkem768_encapsulate(ek).map_err(|_| Error::Decryption)?;
        let ephemeral = StaticSecret::generate()?;
        let ephemeral_shared = ephemeral
            .diffie_hellman(&client)
            .map_err(|_| Error::Decryption)?;
        let keys = circuit_secret(
            &routed.static_shared,
            &ephemeral_shared,
            &kem_shared,
            &client,
            &routed.node,
            ephemeral.public(),
            &ct,
        );
        let mut slot = Vec::with_capacity(SLOT_LEN);
        slot.extend_from_slice(ephemeral.public());
        slot.extend_from_slice(&ct);
        let tag = XChaCha20Poly1305::new((&self.keys.slot).into())
            .encrypt_in_place_detached(slot_nonce(), &[VERSION, b's'], &mut slot)
            .map_err(|_| Error::Decryption)?;
        slot.extend_from_slice(&tag);
        let slot: [u8; SLOT_LEN] = slot.try_into().map_err(|_| Error::Decryption)?;
        Ok((NodeCircuitHop::new(keys), slot))
    }

    /// The reply to a create cell: this hop's slot first, the reply from the next hop (or random
    /// bytes at the destination) after it, as many bytes dropped from its end, this hop's
    /// keystream over the whole.
    pub fn wrap_create_reply(
        &self,
        slot: &[u8; SLOT_LEN],
        from_next: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let mut reply = Vec::with_capacity(CREATE_REPLY_LEN);
        reply.extend_from_slice(slot);
        match from_next {
            Some(next) if next.len() == CREATE_REPLY_LEN => {
                reply.extend_from_slice(&next[..CREATE_REPLY_LEN - SLOT_LEN]);
            }
            Some(_) => return Err(Error::Decryption),
            None => {
                let mut filler = vec![0u8; CREATE_REPLY_LEN - SLOT_LEN];
                OsRng.fill_bytes(&mut filler);
                reply.extend_from_slice(&filler);
            }
        }
        keystream(&self.keys.back, &self.nonce, 0, &mut reply);
        Ok(reply)
    }
}

/// Peels a one-shot or create layer with the node's X25519 key.
pub fn peel_routed(node: &StaticSecret, cell_type: CellType, cell: &[u8]) -> Result<Peeled> {
    if cell_type == CellType::Data || cell.len() < cell_type.header_region() {
        return Err(Error::Decryption);
    }
    let client: [u8; 32] = cell[..32].try_into().map_err(|_| Error::Decryption)?;
    let shared = node
        .diffie_hellman(&client)
        .map_err(|_| Error::Decryption)?;
    let keys = HopKeys::for_layer(&shared, &client, node.public());
    let mut peeled = peel(cell_type, keys, cell)?;
    match peeled.header.first() {
        Some(&KIND_FORWARD | &KIND_DELIVER) => {}
        _ => return Err(Error::Decryption),
    }
    peeled.routed = Some(Routed {
        client,
        node: *node.public(),
        static_shared: shared,
    });
    Ok(peeled)
}

fn peel(cell_type: CellType, keys: HopKeys, cell: &[u8]) -> Result<Peeled> {
    let size = cell_type.header_region();
    if cell.len() < size || cell.len() - size > MAX_BUCKET {
        return Err(Error::Decryption);
    }
    let (p, h, l) = (
        cell_type.prefix_len(),
        cell_type.header_len(),
        cell_type.layer_len(),
    );
    let (layer, payload) = cell.split_at(size);
    let prefix = &layer[..p];
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&prefix[p - NONCE_LEN..]);
    let tag = Tag::from_slice(&layer[p..p + TAG_LEN]);
    let mut plaintext = layer[p + TAG_LEN..].to_vec();
    XChaCha20Poly1305::new((&keys.header).into())
        .decrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &aad(cell_type, prefix, payload),
            &mut plaintext,
            tag,
        )
        .map_err(|_| Error::Decryption)?;
    let header = plaintext[..h].to_vec();
    let mut next = Vec::with_capacity(cell.len());
    next.extend_from_slice(&plaintext[h..]);
    let at = next.len();
    next.resize(at + l, 0);
    keystream(&keys.filler, &nonce, 0, &mut next[at..]);
    let at = next.len();
    next.extend_from_slice(payload);
    keystream(&keys.payload, &nonce, 0, &mut next[at..]);
    Ok(Peeled {
        header,
        next,
        keys,
        nonce,
        routed: None,
    })
}

/// A node's end of one circuit: the hop's keys and the sequence numbers it has seen.
pub struct NodeCircuitHop {
    keys: HopKeys,
    highest: u64,
    window: u128,
    started: bool,
}

/// How far behind the highest sequence number a data cell may arrive (cells on one circuit may
/// overtake each other).
pub const REPLAY_WINDOW: u64 = 128;

impl NodeCircuitHop {
    fn new(keys: HopKeys) -> Self {
        Self {
            keys,
            highest: 0,
            window: 0,
            started: false,
        }
    }

    /// Peels a data cell on this circuit; a replayed or too old sequence number is refused as
    /// any other failure is.
    pub fn peel(&mut self, cell: &[u8]) -> Result<Peeled> {
        let peeled = peel(CellType::Data, self.keys.clone(), cell)?;
        self.accept(peeled.seq())?;
        Ok(peeled)
    }

    fn accept(&mut self, seq: u64) -> Result<()> {
        if !self.started {
            self.started = true;
            self.highest = seq;
            self.window = 1;
            return Ok(());
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.window = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.highest = seq;
            return Ok(());
        }
        let behind = self.highest - seq;
        if behind >= REPLAY_WINDOW || self.window & (1u128 << behind) != 0 {
            return Err(Error::Decryption);
        }
        self.window |= 1u128 << behind;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> (Vec<StaticSecret>, Vec<[u8; 32]>) {
        let keys: Vec<StaticSecret> = (0..n).map(|_| StaticSecret::generate().unwrap()).collect();
        let route = keys.iter().map(|k| *k.public()).collect();
        (keys, route)
    }

    /// Peels `cell` along `keys`; every hop's peeled layer, in order.
    fn walk(keys: &[StaticSecret], cell_type: CellType, cell: &[u8]) -> Vec<Peeled> {
        let mut layers = Vec::new();
        let mut cell = cell.to_vec();
        for key in keys {
            let layer = peel_routed(key, cell_type, &cell).unwrap();
            assert_eq!(layer.next.len(), cell.len(), "every hop sees the same size");
            cell.clone_from(&layer.next);
            layers.push(layer);
        }
        layers
    }

    #[test]
    fn a_one_shot_cell_reaches_its_destination_and_the_reply_comes_back() {
        for hops in 1..=MAX_HOPS {
            let (keys, route) = nodes(hops);
            let issued = vec![1_700_000_000; hops];
            let (cell, opener) = build_oneshot(&route, b"request", &issued).unwrap();
            assert_eq!(cell.len(), CellType::OneShot.header_region() + MIN_BUCKET);
            let layers = walk(&keys, CellType::OneShot, &cell);
            for (i, layer) in layers.iter().enumerate() {
                assert_eq!(layer.next_hop(), route.get(i + 1).copied());
                assert_eq!(layer.issued_s(), 1_700_000_000);
            }
            let last = layers.last().unwrap();
            assert_eq!(last.content(CellType::OneShot).unwrap(), b"request");
            let mut reply = last.seal_reply(b"answer").unwrap();
            for layer in layers[..hops - 1].iter().rev() {
                reply = layer.wrap_reply(reply);
            }
            assert_eq!(opener.open(&reply).unwrap(), b"answer");
        }
    }

    #[test]
    fn a_bit_flipped_anywhere_fails_at_the_next_hop() {
        let (keys, route) = nodes(3);
        let (cell, _) = build_oneshot(&route, b"request", &[1, 2, 3]).unwrap();
        let first = peel_routed(&keys[0], CellType::OneShot, &cell).unwrap();
        for at in [
            0,
            40,
            100,
            CellType::OneShot.header_region() - 1,
            first.next.len() - 1,
        ] {
            let mut tagged = first.next.clone();
            tagged[at] ^= 1;
            assert!(matches!(
                peel_routed(&keys[1], CellType::OneShot, &tagged),
                Err(Error::Decryption)
            ));
        }
        let mut tagged = cell.clone();
        tagged[CellType::OneShot.header_region() + 5] ^= 0x80;
        assert!(peel_routed(&keys[0], CellType::OneShot, &tagged).is_err());
        assert!(peel_routed(&keys[1], CellType::OneShot, &cell).is_err());
        assert!(peel_routed(&keys[0], CellType::Create, &cell).is_err());
    }

    #[test]
    fn no_more_than_three_hops_and_the_destination_cannot_forward() {
        let (keys, route) = nodes(4);
        assert!(build_oneshot(&route, b"x", &[0; 4]).is_err());
        let (cell, _) = build_oneshot(&route[..3], b"x", &[0; 3]).unwrap();
        let layers = walk(&keys[..3], CellType::OneShot, &cell);
        assert_eq!(layers[2].next_hop(), None);
        // What a destination would forward is no layer for anyone.
        assert!(peel_routed(&keys[3], CellType::OneShot, &layers[2].next).is_err());
    }

    #[test]
    fn payloads_fall_in_buckets() {
        assert_eq!(bucket(0).unwrap(), 1024);
        assert_eq!(bucket(1020).unwrap(), 1024);
        assert_eq!(bucket(1021).unwrap(), 2048);
        assert!(bucket(MAX_BUCKET).is_err());
        let (_, route) = nodes(3);
        let (small, _) = build_oneshot(&route, &[7; 10], &[0; 3]).unwrap();
        let (large, _) = build_oneshot(&route, &[7; 1000], &[0; 3]).unwrap();
        assert_eq!(small.len(), large.len());
    }

    #[test]
    fn a_circuit_carries_data_cells_and_refuses_replays() {
        let (keys, route) = nodes(3);
        let (cell, pending) = build_create(&route, &[5, 6, 7]).unwrap();
        assert_eq!(cell.len(), CellType::Create.header_region());
        let layers = walk(&keys, CellType::Create, &cell);
        let accepted: Vec<_> = layers.iter().map(|l| l.accept_circuit().unwrap()).collect();
        let mut reply = layers[2].wrap_create_reply(&accepted[2].1, None).unwrap();
        for i in (0..2).rev() {
            reply = layers[i]
                .wrap_create_reply(&accepted[i].1, Some(&reply))
                .unwrap();
        }
        assert_eq!(reply.len(), CREATE_REPLY_LEN);
        let mut circuit = pending.finish(&reply).unwrap();
        let mut hops: Vec<NodeCircuitHop> = accepted.into_iter().map(|(hop, _)| hop).collect();

        for round in 0..3u8 {
            let (cell, opener) = circuit.seal(&[round; 300]).unwrap();
            let mut at = cell.clone();
            let mut peeled = Vec::new();
            for hop in &mut hops {
                let layer = hop.peel(&at).unwrap();
                assert_eq!(layer.next.len(), cell.len());
                at.clone_from(&layer.next);
                peeled.push(layer);
            }
            assert_eq!(peeled[2].content(CellType::Data).unwrap(), &[round; 300]);
            let mut answer = peeled[2].seal_reply(b"ok").unwrap();
            answer = peeled[1].wrap_reply(answer);
            answer = peeled[0].wrap_reply(answer);
            assert_eq!(opener.open(&answer).unwrap(), b"ok");
            // The same cell again: refused at the first hop.
            assert!(hops[0].peel(&cell).is_err());
        }
        // Layers of one request share no sequence number.
        let (cell, _) = circuit.seal(b"x").unwrap();
        let first = hops[0].peel(&cell).unwrap();
        let second = hops[1].peel(&first.next).unwrap();
        assert_ne!(first.seq(), second.seq());
    }

    #[test]
    fn a_tampered_create_reply_does_not_make_a_circuit() {
        let (keys, route) = nodes(2);
        let (cell, pending) = build_create(&route, &[0, 0]).unwrap();
        let layers = walk(&keys, CellType::Create, &cell);
        let (_, slot1) = layers[1].accept_circuit().unwrap();
        let (_, slot0) = layers[0].accept_circuit().unwrap();
        let inner = layers[1].wrap_create_reply(&slot1, None).unwrap();
        let mut reply = layers[0].wrap_create_reply(&slot0, Some(&inner)).unwrap();
        reply[SLOT_LEN + 3] ^= 1;
        assert!(matches!(pending.finish(&reply), Err(Error::Decryption)));
    }

    #[test]
    fn the_replay_window_accepts_reordering_once() {
        let mut hop = NodeCircuitHop::new(HopKeys::from_secret(&[1; 32]));
        for seq in [10, 12, 11, 40] {
            assert!(hop.accept(seq).is_ok());
        }
        assert!(hop.accept(11).is_err());
        assert!(hop.accept(39).is_ok());
        assert!(hop.accept(40).is_err());
        assert!(hop.accept(500).is_ok());
        assert!(hop.accept(500 - REPLAY_WINDOW).is_err());
    }
}
