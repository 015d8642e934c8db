//! Veil onion layers, version 1. `docs/protocol.md` specifies the format byte by byte with a worked
//! example; this is the one implementation of it.
//!
//! ```text
//! layer     = version(1) = 0x01 ‖ E(32) ‖ nonce(24) ‖ ciphertext ‖ tag(16)
//! key       = HopKey(e, node) = BLAKE2b-256(X25519(e, N) ‖ E ‖ N)
//! aad       = version ‖ E                                  (33 bytes: binds the header)
//! plaintext = kind(1) ‖ [next_hop(32) if kind = FORWARD] ‖ routing_len(2, big-endian) ‖ routing ‖ body
//! kind      = 0x00 FORWARD (body is the next layer) | 0x01 DELIVER (body is the request)
//! ```
//!
//! Every layer has its own ephemeral key `e`. The destination answers with the key of its layer.
//! Any failure to peel a layer — wrong version, truncation, a bad tag, a malformed plaintext — is the
//! one opaque [`Error::Decryption`].

use rand_core::{OsRng, RngCore};
use rayon::prelude::*;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::hash;
use crate::hop::HopKey;
use crate::x25519::StaticSecret;

pub const VERSION: u8 = 1;
pub const KIND_FORWARD: u8 = 0x00;
pub const KIND_DELIVER: u8 = 0x01;
/// version ‖ E
pub const HEADER_LEN: usize = 1 + 32;
/// Bytes a layer adds around its plaintext.
pub const LAYER_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// The largest onion this module will build or peel. Nodes enforce their own, smaller, limit.
pub const MAX_ONION_LEN: usize = 16 * 1024 * 1024;
/// The longest route `build` accepts.
pub const MAX_ROUTE_LEN: usize = 8;
/// The most routing data one layer can carry.
pub const MAX_ROUTING_LEN: usize = u16::MAX as usize;
/// Bytes of a replay tag.
pub const REPLAY_TAG_LEN: usize = 16;
const REPLAY_TAG_CONTEXT: &[u8] = b"veil/onion/v1/replay-tag";

/// A node's X25519 key pair, parsed once.
pub struct NodeKey(StaticSecret);

impl NodeKey {
    pub fn new(secret: &[u8; 32]) -> Result<Self> {
        Ok(Self(StaticSecret::from_bytes(secret)?))
    }

    #[must_use]
    pub fn public(&self) -> &[u8; 32] {
        self.0.public()
    }

    /// The parsed key, for the version 2 cells of [`crate::cells`].
    #[must_use]
    pub fn secret(&self) -> &StaticSecret {
        &self.0
    }
}

/// One peeled layer.
#[derive(Debug)]
pub struct PeeledLayer {
    /// The next hop's X25519 public key; `None` at the destination.
    pub next_hop: Option<[u8; 32]>,
    /// At the destination, the key for the encrypted reply.
    pub reply_key: Option<HopKey>,
    /// A value unique to this layer and derived from its shared secret; a node remembers it to drop
    /// replays of the same layer.
    pub replay_tag: [u8; REPLAY_TAG_LEN],
    plaintext: Vec<u8>,
    routing: std::ops::Range<usize>,
    body_start: usize,
}

impl PeeledLayer {
    /// The routing data the sender put in this layer for this node (empty if none).
    #[must_use]
    pub fn routing(&self) -> &[u8] {
        &self.plaintext[self.routing.clone()]
    }

    /// The next layer, or at the destination the request.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.plaintext[self.body_start..]
    }
}

/// Builds an onion for `route` (first hop first) around `payload`.
///
/// `routing` is empty, or has one entry per hop: the routing data for that hop. Returns the onion and
/// the key with which the destination will encrypt its reply.
pub fn build(route: &[[u8; 32]], payload: &[u8], routing: &[&[u8]]) -> Result<(Vec<u8>, HopKey)> {
    if route.is_empty() {
        return Err(Error::InvalidArgument("route must name at least one hop"));
    }
    if route.len() > MAX_ROUTE_LEN {
        return Err(Error::InvalidArgument("route is longer than 8 hops"));
    }
    if !routing.is_empty() && routing.len() != route.len() {
        return Err(Error::InvalidArgument(
            "routing must be empty or have one entry per hop",
        ));
    }
    if routing.iter().any(|r| r.len() > MAX_ROUTING_LEN) {
        return Err(Error::TooLarge {
            what: "routing data",
            limit: MAX_ROUTING_LEN,
        });
    }
    let routing_len: usize = routing.iter().map(|r| r.len()).sum();
    let total = payload.len() + routing_len + route.len() * (LAYER_OVERHEAD + 1 + 2 + 32);
    if total > MAX_ONION_LEN {
        return Err(Error::TooLarge {
            what: "onion",
            limit: MAX_ONION_LEN,
        });
    }

    let last = route.len() - 1;
    let routing_for = |i: usize| routing.get(i).copied().unwrap_or(b"");
    let (mut onion, reply_key) = seal_layer(&route[last], None, routing_for(last), payload)?;
    for i in (0..last).rev() {
        let (layer, _) = seal_layer(&route[i], Some(&route[i + 1]), routing_for(i), &onion)?;
        onion = layer;
    }
    Ok((onion, reply_key))
}

fn seal_layer(
    hop: &[u8; 32],
    next_hop: Option<&[u8; 32]>,
    routing: &[u8],
    body: &[u8],
) -> Result<(Vec<u8>, HopKey)> {
    let ephemeral = StaticSecret::generate()?;
    let key = HopKey::client_side(&ephemeral, hop)?;

    let routing_len = u16::try_from(routing.len()).map_err(|_| Error::TooLarge {
        what: "routing data",
        limit: MAX_ROUTING_LEN,
    })?;
    let mut plaintext = Vec::with_capacity(1 + 32 + 2 + routing.len() + body.len());
    match next_hop {
        Some(next) => {
            plaintext.push(KIND_FORWARD);
            plaintext.extend_from_slice(next);
        }
        None => plaintext.push(KIND_DELIVER),
    }
    plaintext.extend_from_slice(&routing_len.to_be_bytes());
    plaintext.extend_from_slice(routing);
    plaintext.extend_from_slice(body);

    let mut header = [0u8; HEADER_LEN];
    header[0] = VERSION;
    header[1..].copy_from_slice(ephemeral.public());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = aead::encrypt(key.as_bytes(), &nonce, &plaintext, &header)?;

    let mut layer = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ciphertext.len());
    layer.extend_from_slice(&header);
    layer.extend_from_slice(&nonce);
    layer.extend_from_slice(&ciphertext);
    Ok((layer, key))
}

/// Peels one layer with the node's key.
pub fn peel(node: &NodeKey, onion: &[u8]) -> Result<PeeledLayer> {
    if onion.len() > MAX_ONION_LEN {
        return Err(Error::TooLarge {
            what: "onion",
            limit: MAX_ONION_LEN,
        });
    }
    if onion.len() < LAYER_OVERHEAD + 1 + 2 || onion[0] != VERSION {
        return Err(Error::Decryption);
    }
    let (header, rest) = onion.split_at(HEADER_LEN);
    let ephemeral: &[u8; 32] = header[1..].try_into().map_err(|_| Error::Decryption)?;
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Decryption)?;

    let key = HopKey::server_side(&node.0, ephemeral).map_err(|_| Error::Decryption)?;
    let plaintext = aead::decrypt(key.as_bytes(), nonce, ciphertext, header)?;
    let replay_tag = replay_tag(&key);

    let (next_hop, at) = match plaintext.first() {
        Some(&KIND_FORWARD) => {
            let next: [u8; 32] = plaintext
                .get(1..33)
                .and_then(|s| s.try_into().ok())
                .ok_or(Error::Decryption)?;
            (Some(next), 33)
        }
        Some(&KIND_DELIVER) => (None, 1),
        _ => return Err(Error::Decryption),
    };
    let len_bytes: [u8; 2] = plaintext
        .get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Decryption)?;
    let routing_start = at + 2;
    let routing_end = routing_start + usize::from(u16::from_be_bytes(len_bytes));
    if routing_end > plaintext.len() {
        return Err(Error::Decryption);
    }
    let reply_key = if next_hop.is_none() { Some(key) } else { None };
    Ok(PeeledLayer {
        next_hop,
        reply_key,
        replay_tag,
        plaintext,
        routing: routing_start..routing_end,
        body_start: routing_end,
    })
}

/// Peels each onion with the node's key, in parallel on rayon's pool; results keep the input order.
pub fn peel_batch<T: AsRef<[u8]> + Sync>(node: &NodeKey, onions: &[T]) -> Vec<Result<PeeledLayer>> {
    onions
        .par_iter()
        .map(|onion| peel(node, onion.as_ref()))
        .collect()
}

fn replay_tag(key: &HopKey) -> [u8; REPLAY_TAG_LEN] {
    let mut tag = [0u8; REPLAY_TAG_LEN];
    if let Ok(digest) = hash::blake2b(&[REPLAY_TAG_CONTEXT], REPLAY_TAG_LEN, Some(key.as_bytes())) {
        tag.copy_from_slice(&digest);
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeKey> {
        (0..n)
            .map(|_| NodeKey::new(&crate::x25519::generate_secret()).unwrap())
            .collect()
    }

    #[test]
    fn three_hop_onion_peels_to_the_payload_and_the_reply_key() {
        let hops = nodes(3);
        let route: Vec<[u8; 32]> = hops.iter().map(|h| *h.public()).collect();
        let (onion, reply_key) = build(&route, b"request", &[]).unwrap();

        let first = peel(&hops[0], &onion).unwrap();
        assert_eq!(first.next_hop, Some(route[1]));
        assert!(first.reply_key.is_none());
        let second = peel(&hops[1], first.payload()).unwrap();
        assert_eq!(second.next_hop, Some(route[2]));
        let last = peel(&hops[2], second.payload()).unwrap();
        assert_eq!(last.next_hop, None);
        assert_eq!(last.payload(), b"request");
        assert!(last.routing().is_empty());
        let node_reply_key = last.reply_key.as_ref().unwrap();
        assert_eq!(node_reply_key.as_bytes(), reply_key.as_bytes());
    }

    #[test]
    fn routing_data_reaches_its_hop_only() {
        let hops = nodes(2);
        let route: Vec<[u8; 32]> = hops.iter().map(|h| *h.public()).collect();
        let (onion, _) = build(&route, b"p", &[b"first", b"second"]).unwrap();
        let first = peel(&hops[0], &onion).unwrap();
        assert_eq!(first.routing(), b"first");
        let second = peel(&hops[1], first.payload()).unwrap();
        assert_eq!(second.routing(), b"second");
        assert_eq!(second.payload(), b"p");
    }

    #[test]
    fn wrong_node_truncation_and_bad_version_fail_alike() {
        let hops = nodes(2);
        let (mut onion, _) = build(&[*hops[0].public()], b"p", &[]).unwrap();
        assert!(matches!(peel(&hops[1], &onion), Err(Error::Decryption)));
        assert!(matches!(
            peel(&hops[0], &onion[..40]),
            Err(Error::Decryption)
        ));
        assert!(matches!(peel(&hops[0], &[]), Err(Error::Decryption)));
        onion[0] = 2;
        assert!(matches!(peel(&hops[0], &onion), Err(Error::Decryption)));
    }

    #[test]
    fn replayed_layers_share_a_tag_and_fresh_layers_do_not() {
        let hop = NodeKey::new(&crate::x25519::generate_secret()).unwrap();
        let (a, _) = build(&[*hop.public()], b"p", &[]).unwrap();
        let (b, _) = build(&[*hop.public()], b"p", &[]).unwrap();
        let tag_a = peel(&hop, &a).unwrap().replay_tag;
        assert_eq!(tag_a, peel(&hop, &a).unwrap().replay_tag);
        assert_ne!(tag_a, peel(&hop, &b).unwrap().replay_tag);
    }

    #[test]
    fn batch_keeps_order_and_reports_each_failure() {
        let hop = NodeKey::new(&crate::x25519::generate_secret()).unwrap();
        let (good, _) = build(&[*hop.public()], b"one", &[]).unwrap();
        let (other, _) = build(&[*hop.public()], b"two", &[]).unwrap();
        let results = peel_batch(&hop, &[good.clone(), vec![1, 2, 3], other]);
        assert_eq!(results[0].as_ref().unwrap().payload(), b"one");
        assert!(matches!(results[1], Err(Error::Decryption)));
        assert_eq!(results[2].as_ref().unwrap().payload(), b"two");
    }

    #[test]
    fn route_length_is_bounded() {
        let route = [[9u8; 32]; MAX_ROUTE_LEN + 1];
        assert!(build(&route, b"", &[]).is_err());
        assert!(build(&[], b"", &[]).is_err());
    }
}
