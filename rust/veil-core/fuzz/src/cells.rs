//! Onion v2 cells (`veil_core::cells`): what a node receives from any client or peer, and what a
//! client receives back.
//!
//! ```text
//! input = selector (1) ‖ fields
//!   0 any bytes (rest) peeled as a one-shot cell, 1 as a create cell      with the first hop's key
//!   2 any bytes (rest) as a data cell on a circuit made for the execution
//!   3 hops-1 (1) ‖ content (bytes) ‖ mutation      a genuine one-shot cell to fresh hops, mutated:
//!     unchanged, it reaches its destination with its content at every hop's size and the reply
//!     opens; changed, the first hop refuses it
//!   4 any bytes (rest) as the reply to a genuine one-shot cell, and as the reply to a create
//! ```

use veil_core::cells::{self, CellType, NodeCircuitHop};
use veil_core::x25519::StaticSecret;
use veil_core::Error;

use crate::input::{Reader, Writer};
use crate::keys::{fresh, nodes, route};
use crate::mutation::Mutation;

fn fails(result: Result<impl Sized, Error>) {
    assert!(matches!(result.err(), Some(Error::Decryption)));
}

/// A circuit through the fixed hops: the client's end and the first hop's.
fn circuit() -> (cells::ClientCircuit, NodeCircuitHop) {
    let route = route();
    let (cell, pending) = cells::build_create(&route[..1], &[0]).expect("create");
    let layer =
        cells::peel_routed(nodes()[0].secret(), CellType::Create, &cell).expect("peel create");
    let (hop, slot) = layer.accept_circuit().expect("accept");
    let reply = layer.wrap_create_reply(&slot, None).expect("reply");
    (pending.finish(&reply).expect("finish"), hop)
}

pub fn cell(data: &[u8]) {
    let mut r = Reader::new(data);
    match r.byte() % 5 {
        0 | 1 => {
            let kind = if data.first() == Some(&0) {
                CellType::OneShot
            } else {
                CellType::Create
            };
            let cell = r.rest();
            match cells::peel_routed(nodes()[0].secret(), kind, cell) {
                Ok(layer) => assert_eq!(layer.next.len(), cell.len()),
                Err(error) => assert_eq!(error, Error::Decryption),
            }
        }
        2 => {
            let (_, mut hop) = circuit();
            let cell = r.rest();
            if let Ok(layer) = hop.peel(cell) {
                assert_eq!(layer.next.len(), cell.len());
            }
        }
        3 => genuine(&mut r),
        _ => {
            let rest = r.rest();
            let (_, opener) =
                cells::build_oneshot(&route()[..1], b"request", &[0]).expect("one-shot");
            fails(opener.open(rest));
            let (_, pending) = cells::build_create(&route()[..1], &[0]).expect("create");
            fails(pending.finish(rest));
        }
    }
}

fn genuine(r: &mut Reader<'_>) {
    let hops = 1 + usize::from(r.byte() % 3);
    let content = r.bytes();
    let mutation = Mutation::read(r);
    let keys: Vec<StaticSecret> = (0..hops)
        .map(|_| StaticSecret::from_bytes(&fresh().secret).expect("key"))
        .collect();
    let route: Vec<[u8; 32]> = keys.iter().map(|k| *k.public()).collect();
    let issued = vec![7; hops];
    let (cell, opener) = cells::build_oneshot(&route, content, &issued).expect("build");
    let mutated = mutation.applied(&cell);
    if mutated != cell {
        fails(cells::peel_routed(&keys[0], CellType::OneShot, &mutated));
        return;
    }
    let mut at = cell;
    let mut layers = Vec::new();
    for key in &keys {
        let layer = cells::peel_routed(key, CellType::OneShot, &at).expect("peel");
        assert_eq!(layer.next.len(), at.len());
        assert_eq!(layer.issued_s(), 7);
        at.clone_from(&layer.next);
        layers.push(layer);
    }
    let last = layers.last().expect("a hop");
    assert_eq!(last.next_hop(), None);
    assert_eq!(last.content(CellType::OneShot).expect("content"), content);
    let mut reply = last.seal_reply(content).expect("seal");
    for layer in layers[..hops - 1].iter().rev() {
        reply = layer.wrap_reply(reply);
    }
    assert_eq!(opener.open(&reply).expect("open"), content);
}

#[must_use]
pub fn cell_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let route = route();
    let oneshot = cells::build_oneshot(&route, b"{\"method\":\"info\"}", &[0, 0, 0])
        .expect("one-shot")
        .0;
    let create = cells::build_create(&route, &[0, 0, 0]).expect("create").0;
    let (mut client, _) = circuit();
    let data = client.seal(b"request").expect("seal").0;
    let with = |selector: u8, bytes: &[u8]| Writer::new().byte(selector).raw(bytes).finish();
    let genuine = |hops: u8, content: &[u8], mutation: Mutation| {
        mutation
            .write(Writer::new().byte(3).byte(hops - 1).bytes(content))
            .finish()
    };
    vec![
        ("one-shot", with(0, &oneshot)),
        ("create", with(1, &create)),
        ("data", with(2, &data)),
        ("genuine-3-hops", genuine(3, b"request", Mutation::None)),
        (
            "genuine-flipped",
            genuine(2, b"request", Mutation::FlipBit { at: 500, bit: 3 }),
        ),
        ("reply", with(4, &[0u8; 1024])),
        ("empty", Vec::new()),
    ]
}
