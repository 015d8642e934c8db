//! Keys and signatures that arrive from the network — node announcements, Session IDs, peer keys:
//! Ed25519 verification, the Ed25519 → X25519 conversion and X25519 with any peer key.
//!
//! `mode (1) ‖ …`:
//! `0 ‖ ed25519 (32) ‖ x25519 (32) ‖ signature (64) ‖ message (rest)`: arbitrary values; the
//! checks agree with each other;
//! `1 ‖ count (1) ‖ [ed25519 ‖ x25519 ‖ message ‖ signature (bytes each)]…`: the batch check, any
//! lengths, agrees with the single one;
//! `2 ‖ seed (32) ‖ message (bytes) ‖ part (1) ‖ mutation`: a genuine signed identity with one part
//! (signature, message, Ed25519 or X25519 key) mutated: valid exactly when unchanged.

use veil_core::ed25519::{self, IdentityCheck};
use veil_core::{x25519, Error};

use crate::input::{Reader, Writer};
use crate::keys::RECIPIENT_SECRET;
use crate::mutation::Mutation;

pub fn identity(data: &[u8]) {
    let mut r = Reader::new(data);
    match r.byte() % 3 {
        0 => arbitrary(&mut r),
        1 => batch(&mut r),
        _ => genuine(&mut r),
    }
}

fn arbitrary(r: &mut Reader<'_>) {
    let ed: [u8; 32] = r.array();
    let x: [u8; 32] = r.array();
    let signature: [u8; 64] = r.array();
    let message = r.rest();
    let converted = ed25519::public_key_to_x25519(&ed);
    let valid = ed25519::verify(&ed, message, &signature);
    assert_eq!(
        ed25519::verify_identity(&ed, &x, message, &signature),
        converted == Ok(x) && valid
    );
    if let Ok(converted) = converted {
        // A point of the prime-order subgroup is never of low order.
        assert!(x25519::diffie_hellman(&RECIPIENT_SECRET, &converted).is_ok());
    }
    match x25519::diffie_hellman(&RECIPIENT_SECRET, &x) {
        Ok(shared) => assert_ne!(*shared, [0u8; 32]),
        Err(error) => assert!(matches!(error, Error::InvalidKey(_))),
    }
}

fn batch(r: &mut Reader<'_>) {
    let count = usize::from(r.byte() % 5);
    let items: Vec<IdentityCheck<'_>> = (0..count)
        .map(|_| IdentityCheck {
            ed25519: r.bytes(),
            x25519: r.bytes(),
            message: r.bytes(),
            signature: r.bytes(),
        })
        .collect();
    let expected: Vec<bool> = items
        .iter()
        .map(|item| {
            match (
                item.ed25519.try_into(),
                item.x25519.try_into(),
                item.signature.try_into(),
            ) {
                (Ok(ed), Ok(x), Ok(signature)) => {
                    ed25519::verify_identity(ed, x, item.message, signature)
                }
                _ => false,
            }
        })
        .collect();
    assert_eq!(ed25519::verify_identity_batch(&items), expected);
}

fn genuine(r: &mut Reader<'_>) {
    let seed: [u8; 32] = r.array();
    let message = r.bytes().to_vec();
    let part = r.byte() % 4;
    let mutation = Mutation::read(r);

    let ed = ed25519::public_key(&seed).to_vec();
    let x = ed25519::public_key_to_x25519(&ed25519::public_key(&seed))
        .expect("a generated key converts")
        .to_vec();
    let signature = ed25519::sign(&seed, &message).to_vec();
    let mut parts = [ed, x, message, signature];
    let genuine = parts.clone();
    mutation.apply(&mut parts[usize::from(part)]);
    let [ed, x, message, signature] = &parts;
    let item = IdentityCheck {
        ed25519: ed,
        x25519: x,
        message,
        signature,
    };
    assert_eq!(
        ed25519::verify_identity_batch(&[item]),
        [parts == genuine],
        "a signed identity was {} after {mutation:?} of part {part}",
        if parts == genuine {
            "refused"
        } else {
            "accepted"
        }
    );
}

#[must_use]
pub fn identity_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let seed = [0x77u8; 32];
    let ed = ed25519::public_key(&seed);
    let x = ed25519::public_key_to_x25519(&ed).expect("converts");
    let signature = ed25519::sign(&seed, b"announcement");
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let genuine = |part: u8, mutation: &Mutation| {
        let w = Writer::new()
            .byte(2)
            .raw(&seed)
            .bytes(b"announcement")
            .byte(part);
        mutation.write(w).finish()
    };
    vec![
        (
            "arbitrary-genuine",
            Writer::new()
                .byte(0)
                .raw(&ed)
                .raw(&x)
                .raw(&signature)
                .raw(b"announcement")
                .finish(),
        ),
        (
            "arbitrary-small-order",
            Writer::new()
                .byte(0)
                .raw(&identity_point)
                .raw(&identity_point)
                .raw(&[0; 64])
                .finish(),
        ),
        (
            "batch-mixed-lengths",
            Writer::new()
                .byte(1)
                .byte(2)
                .bytes(&ed)
                .bytes(&x)
                .bytes(b"announcement")
                .bytes(&signature)
                .bytes(&ed[..31])
                .bytes(&x)
                .bytes(b"")
                .bytes(&signature)
                .finish(),
        ),
        ("genuine-unchanged", genuine(0, &Mutation::None)),
        (
            "genuine-signature-flipped",
            genuine(3, &Mutation::FlipBit { at: 63, bit: 4 }),
        ),
        (
            "genuine-key-flipped",
            genuine(0, &Mutation::FlipBit { at: 0, bit: 0 }),
        ),
        (
            "genuine-message-extended",
            genuine(2, &Mutation::Append(vec![0])),
        ),
    ]
}
