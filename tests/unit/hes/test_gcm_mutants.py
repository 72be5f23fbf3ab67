"""AES-GCM framing, HLS-GMAC and the counters: the cases `make mutate` found untested
(docs/testing.md)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cim_schemas.errors import SecurityViolation
from hes.security import gcm
from tests.unit.hes.test_gcm import GB_KEYS, GB_PLAIN, GB_ST

GDB = gcm.ApduTag.GENERAL_GLO_CIPHERING


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0x7F, "7f"),
        (0x80, "8180"),
        (0xFF, "81ff"),
        (0x100, "820100"),
        (0xFFFF, "82ffff"),
        (0x10000, "8400010000"),
    ],
)
def test_ber_length_at_each_boundary(n: int, encoded: str) -> None:
    assert gcm.encode_length(n).hex() == encoded
    assert gcm.decode_length(bytes.fromhex(encoded), 0) == (n, len(encoded) // 2)


def test_glo_cipher_refuses_what_has_no_glo_form() -> None:
    for apdu, tag in ((b"", ""), (bytes([0xDB, 0x01]), "db")):
        with pytest.raises(ValueError, match=f"^no glo-ciphered form for APDU tag {tag}$"):
            gcm.glo_cipher(apdu, keys=GB_KEYS, system_title=GB_ST, invocation_counter=1)


@pytest.mark.parametrize("cipher", [gcm.glo_cipher, gcm.general_glo_cipher])
def test_authenticated_only_protection_sends_the_apdu_in_clear(cipher: object) -> None:
    out = cipher(  # type: ignore[operator]
        GB_PLAIN,
        keys=GB_KEYS,
        system_title=GB_ST,
        invocation_counter=7,
        protection=gcm.Protection.AUTHENTICATED,
    )
    assert GB_PLAIN in out
    assert bytes([gcm.SC_AUTHENTICATED]) + (7).to_bytes(4, "big") + GB_PLAIN in out


def test_general_glo_framing_is_checked() -> None:
    title = bytes([GDB, 8]) + GB_ST
    assert gcm.general_glo_system_title(title) == GB_ST  # exactly tag, length, title
    for bad, why in (
        (title[:-1], "not a general-glo-ciphering APDU"),
        (bytes([0xC8]) + title[1:] + b"\x00" * 8, "not a general-glo-ciphering APDU"),
        (bytes([GDB, 7]) + GB_ST, "bad system title length"),
    ):
        with pytest.raises(SecurityViolation, match=f"^{why}$"):
            gcm.general_glo_system_title(bad)
    apdu = gcm.general_glo_cipher(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=3)
    with pytest.raises(SecurityViolation, match=r"^general-glo-ciphering length mismatch$"):
        gcm.general_glo_decipher(apdu + b"\x00", lambda _title: GB_KEYS)


def test_is_ciphered() -> None:
    glo = gcm.glo_cipher(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=1)
    general = gcm.general_glo_cipher(
        GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=1
    )
    assert gcm.is_ciphered(glo)
    assert gcm.is_ciphered(general)
    assert not gcm.is_ciphered(GB_PLAIN)
    assert not gcm.is_ciphered(b"")
    assert not gcm.is_ciphered(bytes([0x0F, 0xC8]))  # the glo tag in second place


def test_hls_gmac_is_the_gcm_tag_over_sc_ak_challenge() -> None:
    challenge = b"0123456789abcdef"
    ic = 0x01020304  # its first byte matters
    iv = GB_ST + ic.to_bytes(4, "big")
    tag = AESGCM(GB_KEYS.encryption_key).encrypt(
        iv, b"", b"\x10" + GB_KEYS.authentication_key + challenge
    )[:12]
    expected = b"\x10" + ic.to_bytes(4, "big") + tag
    response = gcm.gmac_response(challenge, keys=GB_KEYS, system_title=GB_ST, invocation_counter=ic)
    assert response == expected
    assert gcm.verify_gmac_response(response, challenge, keys=GB_KEYS, system_title=GB_ST) == ic


def test_hls_gmac_refusals() -> None:
    challenge = b"0123456789abcdef"
    good = gcm.gmac_response(challenge, keys=GB_KEYS, system_title=GB_ST, invocation_counter=5)
    for bad, why in (
        (good[:-1], "malformed HLS-GMAC response"),
        (b"\x30" + good[1:], "malformed HLS-GMAC response"),
        (good[:-1] + bytes([good[-1] ^ 1]), "HLS-GMAC authentication failed"),
    ):
        with pytest.raises(SecurityViolation, match=f"^{why}$"):
            gcm.verify_gmac_response(bad, challenge, keys=GB_KEYS, system_title=GB_ST)


def test_seeded_counters_only_go_forward() -> None:
    a, b = b"A" * 8, b"B" * 8
    tracker = gcm.InvocationCounterTracker({a: 5})
    tracker.seed({a: 3, b: 9})
    assert (tracker.last(a), tracker.last(b)) == (5, 9)
    tracker.seed({a: 6})
    assert tracker.last(a) == 6
    with pytest.raises(SecurityViolation):
        tracker.accept(b, 9)
    tracker.accept(b, 10)


def test_sender_counter_starts_after_zero_and_ends() -> None:
    counter = gcm.InvocationCounter()
    assert counter.value == 0
    assert counter.next() == 1
    last = gcm.InvocationCounter(gcm.MAX_INVOCATION_COUNTER)
    with pytest.raises(
        SecurityViolation, match=r"^invocation counter exhausted: keys must be renewed$"
    ):
        last.next()


def test_keys_are_checked_and_never_shown() -> None:
    assert repr(GB_KEYS) == "SecurityKeys(<hidden>)"
    with pytest.raises(ValueError, match=r"^security suite 0 keys are 16 bytes$"):
        gcm.SecurityKeys(b"short", GB_KEYS.authentication_key)


def test_the_iv_takes_an_8_byte_title_and_a_4_byte_counter() -> None:
    for ic in (0, gcm.MAX_INVOCATION_COUNTER):
        out = gcm.protect(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=ic)
        assert gcm.unprotect(out, keys=GB_KEYS, system_title=GB_ST).invocation_counter == ic
    for ic in (-1, gcm.MAX_INVOCATION_COUNTER + 1):
        with pytest.raises(ValueError, match=r"^invocation counter out of range$"):
            gcm.protect(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=ic)
    with pytest.raises(ValueError, match=r"^a system title is 8 bytes$"):
        gcm.protect(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST[:7], invocation_counter=1)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("", r"truncated ciphered APDU \(length\)"),
        ("80", "bad length in ciphered APDU"),  # indefinite form
        ("850000000001", "bad length in ciphered APDU"),  # 5 length bytes
        ("8201", "bad length in ciphered APDU"),  # truncated
    ],
)
def test_ber_length_refusals(data: str, why: str) -> None:
    with pytest.raises(SecurityViolation, match=f"^{why}$"):
        gcm.decode_length(bytes.fromhex(data), 0)


def test_glo_decipher_refusals() -> None:
    glo = gcm.glo_cipher(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=9)
    for bad, why in (
        (GB_PLAIN, "not a glo-ciphered APDU"),
        (glo + b"\x00", "glo-ciphered APDU length mismatch"),
        # glo-set-request around a get-request: the outer tag is not authenticated
        (
            bytes([gcm.ApduTag.GLO_SET_REQUEST]) + glo[1:],
            "ciphered content does not match its glo tag",
        ),
    ):
        with pytest.raises(SecurityViolation, match=f"^{why}$"):
            gcm.glo_decipher(bad, keys=GB_KEYS, system_title=GB_ST)


def _auth_only(ic: int = 3, body: bytes = GB_PLAIN) -> bytes:
    return gcm.protect(
        body,
        keys=GB_KEYS,
        system_title=GB_ST,
        invocation_counter=ic,
        protection=gcm.Protection.AUTHENTICATED,
    )


def test_unprotect_refuses_every_header_it_does_not_accept() -> None:
    sealed = _auth_only()
    for sc, why in (
        (0x31, "security suite 1 not supported"),
        (0x30 | gcm.SC_BROADCAST, "compressed or broadcast-key APDUs are not accepted"),
        (0x30 | gcm.SC_COMPRESSED, "compressed or broadcast-key APDUs are not accepted"),
        (gcm.SC_ENCRYPTED, "APDU is not authenticated: refused"),
        (0x00, "APDU is not authenticated: refused"),
    ):
        with pytest.raises(SecurityViolation, match=f"^{why}$"):
            gcm.unprotect(bytes([sc]) + sealed[1:], keys=GB_KEYS, system_title=GB_ST)
    with pytest.raises(SecurityViolation, match=r"^ciphered APDU too short$"):
        gcm.unprotect(sealed[:16], keys=GB_KEYS, system_title=GB_ST)


def test_unprotect_an_empty_body_and_what_it_says() -> None:
    empty = _auth_only(ic=0x01000002, body=b"")
    assert len(empty) == 5 + gcm.TAG_LENGTH
    out = gcm.unprotect(empty, keys=GB_KEYS, system_title=GB_ST)
    assert out == gcm.Deciphered(b"", GB_ST, 0x01000002, gcm.SC_AUTHENTICATED)


@pytest.mark.parametrize("protection", list(gcm.Protection))
def test_a_flipped_tag_bit_is_a_tag_mismatch(protection: gcm.Protection) -> None:
    sealed = gcm.protect(
        GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=4, protection=protection
    )
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 0x01])
    with pytest.raises(SecurityViolation, match=r"^authentication tag mismatch$"):
        gcm.unprotect(flipped, keys=GB_KEYS, system_title=GB_ST)
