"""hes.security.gcm: known vectors, bit flips, counters, HLS-GMAC."""

from __future__ import annotations

import pytest

from cim_schemas.errors import SecurityViolation
from hes.security import gcm

# Green Book (DLMS UA 1000-2) security suite 0 example: glo-get-request of the clock.
GB_KEYS = gcm.SecurityKeys(
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
)
GB_ST = bytes.fromhex("4D4D4D0000BC614E")
GB_PLAIN = bytes.fromhex("C0010000080000010000FF0200")
GB_CIPHERED = bytes.fromhex("C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")

# A second public vector (ASCII keys "ENCRYPTIONKEYKEY" / "AUTHENTICATIONKE").
V2_KEYS = gcm.SecurityKeys(b"ENCRYPTIONKEYKEY", b"AUTHENTICATIONKE")
V2_ST = bytes.fromhex("5249435249435249")


def test_green_book_vector_encrypt() -> None:
    out = gcm.glo_cipher(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=0x01234567)
    assert out == GB_CIPHERED


def test_green_book_vector_decrypt() -> None:
    d = gcm.glo_decipher(GB_CIPHERED, keys=GB_KEYS, system_title=GB_ST)
    assert d.apdu == GB_PLAIN
    assert d.invocation_counter == 0x01234567
    assert d.security_control == 0x30


def test_second_vector_encrypted() -> None:
    out = gcm.protect(
        bytes.fromhex("c001810001000060010aff0200"),
        keys=V2_KEYS,
        system_title=V2_ST,
        invocation_counter=0x80000001,
    )
    assert out[5:] == bytes.fromhex("0de63f2331a09aa85e8830f5f3610d47e1e24b14e8a022aefc")


def test_second_vector_authenticated_only() -> None:
    body = bytes.fromhex("0de63f2331a09aa85e8830f5f3")
    out = gcm.protect(
        body,
        keys=V2_KEYS,
        system_title=V2_ST,
        invocation_counter=1,
        protection=gcm.Protection.AUTHENTICATED,
    )
    assert out == b"\x10\x00\x00\x00\x01" + body + bytes.fromhex("62d423292e0fe5320370881d")
    assert gcm.unprotect(out, keys=V2_KEYS, system_title=V2_ST).apdu == body


@pytest.mark.parametrize("protection", list(gcm.Protection))
def test_every_single_bit_flip_is_rejected(protection: gcm.Protection) -> None:
    frame = gcm.glo_cipher(
        GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=7, protection=protection
    )
    for byte in range(2, len(frame)):  # after tag and length: SC, IC, body, tag
        for bit in range(8):
            bad = bytearray(frame)
            bad[byte] ^= 1 << bit
            with pytest.raises(SecurityViolation):
                gcm.glo_decipher(bytes(bad), keys=GB_KEYS, system_title=GB_ST)


def test_wrong_key_or_system_title_rejected() -> None:
    other = gcm.SecurityKeys(bytes(16), GB_KEYS.authentication_key)
    with pytest.raises(SecurityViolation):
        gcm.glo_decipher(GB_CIPHERED, keys=other, system_title=GB_ST)
    with pytest.raises(SecurityViolation):
        gcm.glo_decipher(GB_CIPHERED, keys=GB_KEYS, system_title=bytes(8))


def test_unauthenticated_and_odd_security_controls_refused() -> None:
    body = gcm.protect(GB_PLAIN, keys=GB_KEYS, system_title=GB_ST, invocation_counter=1)
    for sc in (0x00, 0x20, 0x31, 0x70, 0xB0):
        with pytest.raises(SecurityViolation):
            gcm.unprotect(bytes([sc]) + body[1:], keys=GB_KEYS, system_title=GB_ST)


def test_truncated_and_mismatched_frames_refused() -> None:
    for bad in (GB_CIPHERED[:-1], GB_CIPHERED[:10], GB_CIPHERED + b"\x00", b"", b"\xc8"):
        with pytest.raises(SecurityViolation):
            gcm.glo_decipher(bad, keys=GB_KEYS, system_title=GB_ST)
    # a glo-get-response tag wrapped around a get-request content
    swapped = bytes([0xCC]) + GB_CIPHERED[1:]
    with pytest.raises(SecurityViolation):
        gcm.glo_decipher(swapped, keys=GB_KEYS, system_title=GB_ST)


def test_general_glo_ciphering_round_trip_and_key_choice() -> None:
    notification = bytes.fromhex("0f0000000100") + b"\x09\x03abc"
    frame = gcm.general_glo_cipher(
        notification, keys=GB_KEYS, system_title=GB_ST, invocation_counter=99
    )
    assert gcm.general_glo_system_title(frame) == GB_ST
    d = gcm.general_glo_decipher(frame, {GB_ST: GB_KEYS}.get)
    assert (d.apdu, d.invocation_counter, d.system_title) == (notification, 99, GB_ST)
    with pytest.raises(SecurityViolation, match="unknown system title"):
        gcm.general_glo_decipher(frame, {}.get)
    bad = bytearray(frame)
    bad[-1] ^= 0x01
    with pytest.raises(SecurityViolation):
        gcm.general_glo_decipher(bytes(bad), {GB_ST: GB_KEYS}.get)


def test_long_apdu_length_encoding() -> None:
    apdu = b"\xc4" + bytes(1000)
    frame = gcm.glo_cipher(apdu, keys=GB_KEYS, system_title=GB_ST, invocation_counter=3)
    assert frame[1] == 0x82
    assert gcm.glo_decipher(frame, keys=GB_KEYS, system_title=GB_ST).apdu == apdu


def test_counter_tracker_rejects_replay_and_rewind() -> None:
    t = gcm.InvocationCounterTracker()
    t.accept(GB_ST, 5)
    t.accept(GB_ST, 9)
    for ic in (9, 8, 0):
        with pytest.raises(SecurityViolation, match="does not go forward"):
            t.accept(GB_ST, ic)
    t.accept(bytes(8), 1)  # per system title
    assert t.last(GB_ST) == 9


def test_sender_counter_never_repeats_and_persists() -> None:
    seen: list[int] = []
    c = gcm.InvocationCounter(41, persist=seen.append)
    assert [c.next(), c.next()] == [42, 43]
    assert seen == [42, 43]
    assert c.value == 43
    with pytest.raises(SecurityViolation, match="exhausted"):
        gcm.InvocationCounter(gcm.MAX_INVOCATION_COUNTER).next()


def test_hls_gmac() -> None:
    challenge = bytes.fromhex("503677524A323146")
    f = gcm.gmac_response(challenge, keys=GB_KEYS, system_title=GB_ST, invocation_counter=1)
    assert len(f) == 17
    assert f[:5] == b"\x10\x00\x00\x00\x01"
    assert gcm.verify_gmac_response(f, challenge, keys=GB_KEYS, system_title=GB_ST) == 1
    for i in range(len(f)):
        bad = bytearray(f)
        bad[i] ^= 0x80
        with pytest.raises(SecurityViolation):
            gcm.verify_gmac_response(bytes(bad), challenge, keys=GB_KEYS, system_title=GB_ST)
    with pytest.raises(SecurityViolation):
        gcm.verify_gmac_response(f, challenge[::-1], keys=GB_KEYS, system_title=GB_ST)


def test_keys_are_not_printed() -> None:
    assert "0001" not in repr(GB_KEYS)
    with pytest.raises(ValueError, match="16 bytes"):
        gcm.SecurityKeys(b"short", bytes(16))
