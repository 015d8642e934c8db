"""Known-answer tests of the primitives in ``veil._core`` against the published test vectors.

Every vector is copied from the specification named in the comment above it.
"""

from __future__ import annotations

import hashlib

import pytest

from veil import _core

X = bytes.fromhex

# --- X25519: RFC 7748 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "u", "expected"),
    [
        # RFC 7748 §5.2, first test vector.
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        # RFC 7748 §5.2, second test vector (the input u-coordinate has its high bit set).
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
    ids=["first", "second"],
)
def test_x25519_matches_the_rfc7748_section_5_2_vectors(scalar: str, u: str, expected: str) -> None:
    assert _core.x25519(X(scalar), X(u)) == X(expected)


def _x25519_iterated(iterations: int) -> bytes:
    # RFC 7748 §5.2: k = u = 9; each round k, u = X25519(k, u), k.
    k = u = (9).to_bytes(32, "little")
    for _ in range(iterations):
        k, u = _core.x25519(k, u), k
    return k


def test_x25519_one_iteration_of_the_rfc7748_loop() -> None:
    # RFC 7748 §5.2, "After one iteration".
    assert _x25519_iterated(1) == X(
        "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"
    )


def test_x25519_one_thousand_iterations_of_the_rfc7748_loop() -> None:
    # RFC 7748 §5.2, "After 1,000 iterations" (the 1,000,000-iteration one is skipped: too slow).
    assert _x25519_iterated(1_000) == X(
        "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"
    )


# RFC 7748 §6.1, Curve25519 Diffie-Hellman of Alice and Bob.
ALICE_SECRET = X("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = X("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_SECRET = X("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = X("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED_SECRET = X("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_public_keys_match_rfc7748_section_6_1() -> None:
    assert _core.x25519_public_key(ALICE_SECRET) == ALICE_PUBLIC
    assert _core.x25519_public_key(BOB_SECRET) == BOB_PUBLIC


def test_x25519_shared_secret_matches_rfc7748_section_6_1_from_both_sides() -> None:
    assert _core.x25519(ALICE_SECRET, BOB_PUBLIC) == SHARED_SECRET
    assert _core.x25519(BOB_SECRET, ALICE_PUBLIC) == SHARED_SECRET


# --- Ed25519: RFC 8032 §7.1 -------------------------------------------------------------------

# RFC 8032 §7.1, TEST 1024: the 1023-byte message.
_MESSAGE_1023 = X(
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)

# (seed, public key, message, signature), RFC 8032 §7.1.
ED25519_VECTORS = {
    # RFC 8032 §7.1, TEST 1 (empty message).
    "test_1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        b"",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    # RFC 8032 §7.1, TEST 2 (one byte).
    "test_2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        X("72"),
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    # RFC 8032 §7.1, TEST 3 (two bytes).
    "test_3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        X("af82"),
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    # RFC 8032 §7.1, TEST 1024 (1023 bytes).
    "test_1024": (
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        _MESSAGE_1023,
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350"
        "aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    # RFC 8032 §7.1, TEST SHA(abc): the message is SHA-512("abc").
    "test_sha_abc": (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        hashlib.sha512(b"abc").digest(),
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
}


def test_the_1023_byte_message_has_1023_bytes() -> None:
    assert len(_MESSAGE_1023) == 1023


@pytest.mark.parametrize("name", sorted(ED25519_VECTORS))
def test_ed25519_public_key_matches_rfc8032(name: str) -> None:
    seed, public, _message, _signature = ED25519_VECTORS[name]
    assert _core.ed25519_public_key(X(seed)) == X(public)


@pytest.mark.parametrize("name", sorted(ED25519_VECTORS))
def test_ed25519_signature_matches_rfc8032(name: str) -> None:
    seed, _public, message, signature = ED25519_VECTORS[name]
    assert _core.ed25519_sign(X(seed), message) == X(signature)


@pytest.mark.parametrize("name", sorted(ED25519_VECTORS))
def test_ed25519_verifies_the_rfc8032_signature_and_rejects_a_changed_message(name: str) -> None:
    _seed, public, message, signature = ED25519_VECTORS[name]
    assert _core.ed25519_verify(X(public), message, X(signature)) is True
    assert _core.ed25519_verify(X(public), message + b"\x00", X(signature)) is False


# --- BLAKE2b: RFC 7693 ------------------------------------------------------------------------


def test_blake2b_512_of_abc_matches_rfc7693_appendix_a() -> None:
    # RFC 7693 Appendix A, BLAKE2b-512("abc").
    expected = X(
        "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
        "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
    )
    assert _core.blake2b(b"abc", 64) == expected


# --- XChaCha20-Poly1305: draft-irtf-cfrg-xchacha-03 §A.3.1 ------------------------------------

# draft-irtf-cfrg-xchacha-03 §A.3.1 (the vector libsodium also tests).
XCHACHA_KEY = X("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
XCHACHA_NONCE = X("404142434445464748494a4b4c4d4e4f5051525354555657")
XCHACHA_AAD = X("50515253c0c1c2c3c4c5c6c7")
XCHACHA_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
    b"sunscreen would be it."
)
XCHACHA_CIPHERTEXT = X(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
XCHACHA_TAG = X("c0875924c1c7987947deafd8780acf49")


def test_xchacha20poly1305_encryption_matches_the_draft_vector() -> None:
    sealed = _core.xchacha20poly1305_encrypt(
        XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_PLAINTEXT, XCHACHA_AAD
    )
    assert sealed == XCHACHA_CIPHERTEXT + XCHACHA_TAG


def test_xchacha20poly1305_decryption_matches_the_draft_vector() -> None:
    opened = _core.xchacha20poly1305_decrypt(
        XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_CIPHERTEXT + XCHACHA_TAG, XCHACHA_AAD
    )
    assert opened == XCHACHA_PLAINTEXT
