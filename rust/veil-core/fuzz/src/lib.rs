//! Fuzz targets for every function of `veil-core` that reads bytes from the network. Each target
//! is a function of one byte string that panics when a property of the parser does not hold
//! (a panic inside `veil-core` is a finding too); `fuzz_targets/` wraps each for libFuzzer, and
//! [`TARGETS`] lists them with their seed inputs. See `README.md`.

pub mod boxes;
pub mod cells;
pub mod identity;
pub mod input;
pub mod keys;
pub mod link;
pub mod mutation;
pub mod onion;
pub mod store;

/// A fuzz target: its name (its binary in `fuzz_targets/`), the function it runs and its seeds.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<(&'static str, Vec<u8>)>,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "cells",
        run: cells::cell,
        seeds: cells::cell_seeds,
    },
    Target {
        name: "onion_peel",
        run: onion::peel_bytes,
        seeds: onion::peel_bytes_seeds,
    },
    Target {
        name: "onion_layer",
        run: onion::peel_layer,
        seeds: onion::peel_layer_seeds,
    },
    Target {
        name: "link_handshake",
        run: link::handshake,
        seeds: link::handshake_seeds,
    },
    Target {
        name: "link_records",
        run: link::records,
        seeds: link::records_seeds,
    },
    Target {
        name: "sealed_box_open",
        run: boxes::sealed_box_open,
        seeds: boxes::sealed_box_open_seeds,
    },
    Target {
        name: "session_decrypt",
        run: boxes::session_decrypt,
        seeds: boxes::session_decrypt_seeds,
    },
    Target {
        name: "hop_decrypt",
        run: boxes::hop_decrypt,
        seeds: boxes::hop_decrypt_seeds,
    },
    Target {
        name: "identity",
        run: identity::identity,
        seeds: identity::identity_seeds,
    },
    Target {
        name: "store_index",
        run: store::store_index,
        seeds: store::store_index_seeds,
    },
    Target {
        name: "store_request",
        run: store::store_request,
        seeds: store::store_request_seeds,
    },
];
