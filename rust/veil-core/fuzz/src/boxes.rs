//! Sealed boxes, Session Protocol messages and hop-encrypted blobs: what a client or node opens
//! after it came over the network.
//!
//! Each target reads `mode (1) ‖ …`:
//! `0 ‖ ciphertext (rest)`: arbitrary bytes to open;
//! `1 ‖ plaintext (bytes) ‖ mutation`: a genuine ciphertext, mutated: it opens to its plaintext
//! exactly when unchanged (under a key made for the execution: see [`crate::keys::fresh`]). The Session Protocol has a third mode,
//! `2 ‖ content (bytes) ‖ mutation`: a sealed box whose content is `content ‖ A_ed ‖ SIG` with a
//! genuine signature, the content mutated before sealing: it opens exactly when unchanged.
//! Hop blobs carry associated data: `0 ‖ aad (bytes) ‖ blob (rest)` and
//! `1 ‖ plaintext (bytes) ‖ aad (bytes) ‖ mutation ‖ aad mutation`.

use veil_core::hop::HopKey;
use veil_core::{ed25519, sealed_box, session, Error};

use crate::input::{Reader, Writer};
use crate::keys::{fresh, recipient_public, FreshKey, HOP_KEY, RECIPIENT_SECRET, SENDER_SEED};
use crate::mutation::Mutation;

/// `Ok` exactly when the input was unchanged (then it is the plaintext), else the one error.
fn check_opened(result: Result<Vec<u8>, Error>, changed: bool, plaintext: &[u8]) {
    match result {
        Ok(opened) => {
            assert!(!changed, "a changed ciphertext opened");
            assert_eq!(opened, plaintext);
        }
        Err(error) => {
            assert_eq!(error, Error::Decryption);
            assert!(changed, "a genuine ciphertext failed to open");
        }
    }
}

pub fn sealed_box_open(data: &[u8]) {
    let mut r = Reader::new(data);
    if r.byte() % 2 == 0 {
        if let Err(error) = sealed_box::open(&RECIPIENT_SECRET, r.rest()) {
            assert_eq!(error, Error::Decryption);
        }
        return;
    }
    let plaintext = r.bytes();
    let recipient = fresh();
    let genuine = sealed_box::seal(&recipient.public, plaintext).expect("seal");
    let mutated = Mutation::read(&mut r).applied(&genuine);
    check_opened(
        sealed_box::open(&recipient.secret, &mutated),
        mutated != genuine,
        plaintext,
    );
}

fn open_session(recipient: &FreshKey, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
    let opened = session::decrypt(&recipient.secret, &recipient.public, ciphertext)?;
    assert_eq!(opened.sender_ed25519, ed25519::public_key(&SENDER_SEED));
    assert_eq!(
        ed25519::public_key_to_x25519(&opened.sender_ed25519),
        Ok(opened.sender_x25519)
    );
    Ok(opened.plaintext)
}

pub fn session_decrypt(data: &[u8]) {
    let mut r = Reader::new(data);
    match r.byte() % 3 {
        0 => match session::decrypt(&RECIPIENT_SECRET, &recipient_public(), r.rest()) {
            Ok(opened) => assert_eq!(
                ed25519::public_key_to_x25519(&opened.sender_ed25519),
                Ok(opened.sender_x25519)
            ),
            Err(error) => assert_eq!(error, Error::Decryption),
        },
        1 => {
            let plaintext = r.bytes();
            let recipient = fresh();
            let genuine =
                session::encrypt(&SENDER_SEED, &recipient.public, plaintext).expect("encrypt");
            let mutated = Mutation::read(&mut r).applied(&genuine);
            let opened = open_session(&recipient, &mutated);
            check_opened(opened, mutated != genuine, plaintext);
        }
        _ => {
            let plaintext = r.bytes();
            let recipient = fresh();
            let sender = ed25519::public_key(&SENDER_SEED);
            let mut signed = plaintext.to_vec();
            signed.extend_from_slice(&sender);
            signed.extend_from_slice(&recipient.public);
            let signature = ed25519::sign(&SENDER_SEED, &signed);
            let mut content = plaintext.to_vec();
            content.extend_from_slice(&sender);
            content.extend_from_slice(&signature);
            let mutated = Mutation::read(&mut r).applied(&content);
            let sealed = sealed_box::seal(&recipient.public, &mutated).expect("seal");
            let opened = open_session(&recipient, &sealed);
            check_opened(opened, mutated != content, plaintext);
        }
    }
}

pub fn hop_decrypt(data: &[u8]) {
    let mut r = Reader::new(data);
    if r.byte() % 2 == 0 {
        let aad = r.bytes();
        if let Err(error) = HopKey::from_bytes(HOP_KEY).decrypt_with_aad(r.rest(), aad) {
            assert_eq!(error, Error::Decryption);
        }
        return;
    }
    let key = HopKey::from_bytes(fresh().secret);
    let plaintext = r.bytes();
    let aad = r.bytes();
    let genuine = key.encrypt_with_aad(plaintext, aad).expect("encrypt");
    let mutated = Mutation::read(&mut r).applied(&genuine);
    let mutated_aad = Mutation::read(&mut r).applied(aad);
    check_opened(
        key.decrypt_with_aad(&mutated, &mutated_aad),
        mutated != genuine || mutated_aad != aad,
        plaintext,
    );
}

fn genuine(mode: u8, plaintext: &[u8], mutation: &Mutation) -> Vec<u8> {
    mutation
        .write(Writer::new().byte(mode).bytes(plaintext))
        .finish()
}

#[must_use]
pub fn sealed_box_open_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let sealed = sealed_box::seal(&recipient_public(), b"to the recipient").expect("seal");
    vec![
        ("open-genuine", Writer::new().byte(0).raw(&sealed).finish()),
        (
            "open-short",
            Writer::new().byte(0).raw(&sealed[..47]).finish(),
        ),
        ("unchanged", genuine(1, b"hello", &Mutation::None)),
        (
            "flipped",
            genuine(1, b"hello", &Mutation::FlipBit { at: 3, bit: 0 }),
        ),
        (
            "low-order-ephemeral",
            genuine(
                1,
                b"hello",
                &Mutation::Overwrite {
                    at: 0,
                    bytes: vec![0; 32],
                },
            ),
        ),
    ]
}

#[must_use]
pub fn session_decrypt_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let message = session::encrypt(&SENDER_SEED, &recipient_public(), b"hi").expect("encrypt");
    vec![
        (
            "decrypt-genuine",
            Writer::new().byte(0).raw(&message).finish(),
        ),
        ("unchanged", genuine(1, b"hi bob", &Mutation::None)),
        (
            "truncated",
            genuine(1, b"hi bob", &Mutation::Truncate { len: 100 }),
        ),
        ("content-unchanged", genuine(2, b"hi bob", &Mutation::None)),
        (
            "content-signature-flipped",
            genuine(2, b"hi bob", &Mutation::FlipBit { at: 50, bit: 2 }),
        ),
        (
            "content-too-short",
            genuine(2, b"", &Mutation::Truncate { len: 95 }),
        ),
    ]
}

#[must_use]
pub fn hop_decrypt_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let key = HopKey::from_bytes(HOP_KEY);
    let blob = key.encrypt_with_aad(b"reply", b"aad").expect("encrypt");
    let with_aad = |mutation: &Mutation, aad_mutation: &Mutation| {
        let w = Writer::new().byte(1).bytes(b"request").bytes(b"header");
        aad_mutation.write(mutation.write(w)).finish()
    };
    vec![
        (
            "decrypt-genuine",
            Writer::new().byte(0).bytes(b"aad").raw(&blob).finish(),
        ),
        ("unchanged", with_aad(&Mutation::None, &Mutation::None)),
        (
            "nonce-flipped",
            with_aad(&Mutation::FlipBit { at: 0, bit: 4 }, &Mutation::None),
        ),
        (
            "aad-changed",
            with_aad(&Mutation::None, &Mutation::Append(vec![0])),
        ),
    ]
}
