"""The one AES-GCM layer of amihub: DLMS/COSEM security suite 0.

Everything ciphered on the meter side (the simulator) and on the head-end side
(the reading client, later the push listener) goes through this module. gurux's
own ciphering is never used: it does not compare the authentication tag, reuses
nonces and is slow (see the shared DEPENDENCIES.md).

Security suite 0 (Green Book 9.2.7.2):

* AES-GCM-128, IV = system title (8 bytes) || invocation counter (4 bytes, BE);
* the security header is the security control byte (SC) and the invocation
  counter (IC); SC bit 4 (0x10) = authenticated, bit 5 (0x20) = encrypted,
  bits 0-3 = security suite id (0);
* authenticated and encrypted (SC 0x30): AAD = SC || AK, the APDU is encrypted;
* authenticated only (SC 0x10): AAD = SC || AK || APDU, the APDU travels clear;
* the tag is the GCM tag truncated to 12 bytes.

Parsing ALWAYS verifies the tag: an APDU that is encrypted only (SC 0x20) or not
protected at all is refused with :class:`cim_schemas.errors.SecurityViolation`, as is a
wrong tag, an unknown suite, or an invocation counter that does not go forward
(:class:`InvocationCounterTracker`).

HLS mechanism 5 (GMAC): f(challenge) = SC(0x10) || IC || GMAC, the GMAC being
the tag over AAD = SC || AK || challenge with the responder's own system title
and invocation counter.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cim_schemas.errors import SecurityViolation

TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8
KEY_LENGTH = 16
MAX_INVOCATION_COUNTER = 0xFFFFFFFF

SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_BROADCAST = 0x40
SC_COMPRESSED = 0x80
SC_SUITE_MASK = 0x0F


class Protection(IntEnum):
    """The two protections amihub sends (and the only two it accepts)."""

    AUTHENTICATED = SC_AUTHENTICATED
    AUTHENTICATED_ENCRYPTED = SC_AUTHENTICATED | SC_ENCRYPTED


class ApduTag(IntEnum):
    """xDLMS APDU tags that have a glo-ciphered counterpart (and that counterpart)."""

    INITIATE_REQUEST = 0x01
    INITIATE_RESPONSE = 0x08
    CONFIRMED_SERVICE_ERROR = 0x0E
    DATA_NOTIFICATION = 0x0F
    GET_REQUEST = 0xC0
    SET_REQUEST = 0xC1
    EVENT_NOTIFICATION = 0xC2
    ACTION_REQUEST = 0xC3
    GET_RESPONSE = 0xC4
    SET_RESPONSE = 0xC5
    ACTION_RESPONSE = 0xC7
    EXCEPTION_RESPONSE = 0xD8
    GLO_INITIATE_REQUEST = 0x21
    GLO_INITIATE_RESPONSE = 0x28
    GLO_CONFIRMED_SERVICE_ERROR = 0x2E
    GLO_GET_REQUEST = 0xC8
    GLO_SET_REQUEST = 0xC9
    GLO_EVENT_NOTIFICATION = 0xCA
    GLO_ACTION_REQUEST = 0xCB
    GLO_GET_RESPONSE = 0xCC
    GLO_SET_RESPONSE = 0xCD
    GLO_ACTION_RESPONSE = 0xCF
    GENERAL_GLO_CIPHERING = 0xDB


GLO_TAG: dict[int, int] = {
    ApduTag.INITIATE_REQUEST: ApduTag.GLO_INITIATE_REQUEST,
    ApduTag.INITIATE_RESPONSE: ApduTag.GLO_INITIATE_RESPONSE,
    ApduTag.CONFIRMED_SERVICE_ERROR: ApduTag.GLO_CONFIRMED_SERVICE_ERROR,
    ApduTag.GET_REQUEST: ApduTag.GLO_GET_REQUEST,
    ApduTag.SET_REQUEST: ApduTag.GLO_SET_REQUEST,
    ApduTag.EVENT_NOTIFICATION: ApduTag.GLO_EVENT_NOTIFICATION,
    ApduTag.ACTION_REQUEST: ApduTag.GLO_ACTION_REQUEST,
    ApduTag.GET_RESPONSE: ApduTag.GLO_GET_RESPONSE,
    ApduTag.SET_RESPONSE: ApduTag.GLO_SET_RESPONSE,
    ApduTag.ACTION_RESPONSE: ApduTag.GLO_ACTION_RESPONSE,
}
PLAIN_TAG: dict[int, int] = {v: k for k, v in GLO_TAG.items()}


@dataclass(frozen=True, repr=False)
class SecurityKeys:
    """Global unicast encryption key (EK) and authentication key (AK) of one meter."""

    encryption_key: bytes
    authentication_key: bytes

    def __post_init__(self) -> None:
        if len(self.encryption_key) != KEY_LENGTH or len(self.authentication_key) != KEY_LENGTH:
            raise ValueError("security suite 0 keys are 16 bytes")

    def __repr__(self) -> str:  # keys are never logged
        return "SecurityKeys(<hidden>)"


@dataclass(frozen=True)
class Deciphered:
    """A verified, deciphered APDU and what its security header said."""

    apdu: bytes
    system_title: bytes
    invocation_counter: int
    security_control: int


def _check_system_title(system_title: bytes) -> None:
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise ValueError("a system title is 8 bytes")


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    _check_system_title(system_title)
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise ValueError("invocation counter out of range")
    return system_title + invocation_counter.to_bytes(4, "big")


def encode_length(n: int) -> bytes:
    """A-XDR / BER length."""
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return b"\x82" + n.to_bytes(2, "big")
    return b"\x84" + n.to_bytes(4, "big")


def decode_length(data: bytes, pos: int) -> tuple[int, int]:
    """(length, position after it); raises SecurityViolation on truncation."""
    if pos >= len(data):
        raise SecurityViolation("truncated ciphered APDU (length)")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 4 or pos + 1 + size > len(data):
        raise SecurityViolation("bad length in ciphered APDU")
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def protect(
    plaintext: bytes,
    *,
    keys: SecurityKeys,
    system_title: bytes,
    invocation_counter: int,
    protection: Protection = Protection.AUTHENTICATED_ENCRYPTED,
) -> bytes:
    """SC || IC || (ciphertext or plaintext) || tag(12)."""
    iv = _iv(system_title, invocation_counter)
    sc = int(protection)
    header = bytes([sc]) + invocation_counter.to_bytes(4, "big")
    gcm = AESGCM(keys.encryption_key)
    if protection is Protection.AUTHENTICATED_ENCRYPTED:
        out = gcm.encrypt(iv, plaintext, bytes([sc]) + keys.authentication_key)
        return header + out[: len(plaintext)] + out[len(plaintext) : len(plaintext) + TAG_LENGTH]
    tag = gcm.encrypt(iv, b"", bytes([sc]) + keys.authentication_key + plaintext)
    return header + plaintext + tag[:TAG_LENGTH]


def unprotect(protected: bytes, *, keys: SecurityKeys, system_title: bytes) -> Deciphered:
    """Verify and decipher SC || IC || payload || tag. Never returns unverified data."""
    if len(protected) < 5 + TAG_LENGTH:
        raise SecurityViolation("ciphered APDU too short")
    sc = protected[0]
    if sc & SC_SUITE_MASK != 0:
        raise SecurityViolation(f"security suite {sc & SC_SUITE_MASK} not supported")
    if sc & (SC_COMPRESSED | SC_BROADCAST):
        raise SecurityViolation("compressed or broadcast-key APDUs are not accepted")
    if not sc & SC_AUTHENTICATED:
        raise SecurityViolation("APDU is not authenticated: refused")
    ic = int.from_bytes(protected[1:5], "big")
    body, tag = protected[5:-TAG_LENGTH], protected[-TAG_LENGTH:]
    iv = _iv(system_title, ic)
    if sc & SC_ENCRYPTED:
        aad = bytes([sc]) + keys.authentication_key
        dec = Cipher(
            algorithms.AES(keys.encryption_key), modes.GCM(iv, tag, min_tag_length=TAG_LENGTH)
        ).decryptor()
        dec.authenticate_additional_data(aad)
        try:
            plain = dec.update(body) + dec.finalize()
        except InvalidTag:
            raise SecurityViolation("authentication tag mismatch") from None
        return Deciphered(plain, system_title, ic, sc)
    expected = AESGCM(keys.encryption_key).encrypt(
        iv, b"", bytes([sc]) + keys.authentication_key + body
    )[:TAG_LENGTH]
    if not hmac.compare_digest(expected, tag):
        raise SecurityViolation("authentication tag mismatch")
    return Deciphered(body, system_title, ic, sc)


def glo_cipher(
    apdu: bytes,
    *,
    keys: SecurityKeys,
    system_title: bytes,
    invocation_counter: int,
    protection: Protection = Protection.AUTHENTICATED_ENCRYPTED,
) -> bytes:
    """Plain xDLMS APDU -> glo-ciphered APDU (service-specific glo tag)."""
    if not apdu or apdu[0] not in GLO_TAG:
        raise ValueError(f"no glo-ciphered form for APDU tag {apdu[:1].hex()}")
    body = protect(
        apdu,
        keys=keys,
        system_title=system_title,
        invocation_counter=invocation_counter,
        protection=protection,
    )
    return bytes([GLO_TAG[apdu[0]]]) + encode_length(len(body)) + body


def glo_decipher(apdu: bytes, *, keys: SecurityKeys, system_title: bytes) -> Deciphered:
    """Glo-ciphered APDU -> verified plain APDU. ``system_title`` is the sender's."""
    if not apdu or apdu[0] not in PLAIN_TAG:
        raise SecurityViolation("not a glo-ciphered APDU")
    length, pos = decode_length(apdu, 1)
    if pos + length != len(apdu):
        raise SecurityViolation("glo-ciphered APDU length mismatch")
    out = unprotect(apdu[pos:], keys=keys, system_title=system_title)
    if not out.apdu or out.apdu[0] != PLAIN_TAG[apdu[0]]:
        raise SecurityViolation("ciphered content does not match its glo tag")
    return out


def general_glo_cipher(
    apdu: bytes,
    *,
    keys: SecurityKeys,
    system_title: bytes,
    invocation_counter: int,
    protection: Protection = Protection.AUTHENTICATED_ENCRYPTED,
) -> bytes:
    """Any APDU -> general-glo-ciphering (0xDB, carries the sender's system title)."""
    body = protect(
        apdu,
        keys=keys,
        system_title=system_title,
        invocation_counter=invocation_counter,
        protection=protection,
    )
    return (
        bytes([ApduTag.GENERAL_GLO_CIPHERING, SYSTEM_TITLE_LENGTH])
        + system_title
        + encode_length(len(body))
        + body
    )


def general_glo_system_title(apdu: bytes) -> bytes:
    """The sender's system title of a general-glo-ciphering APDU (to choose its keys)."""
    if len(apdu) < 2 + SYSTEM_TITLE_LENGTH or apdu[0] != ApduTag.GENERAL_GLO_CIPHERING:
        raise SecurityViolation("not a general-glo-ciphering APDU")
    if apdu[1] != SYSTEM_TITLE_LENGTH:
        raise SecurityViolation("bad system title length")
    return apdu[2 : 2 + SYSTEM_TITLE_LENGTH]


def general_glo_decipher(
    apdu: bytes, keys_for: Callable[[bytes], SecurityKeys | None]
) -> Deciphered:
    """Verify and decipher general-glo-ciphering; ``keys_for(system_title)`` picks the keys."""
    system_title = general_glo_system_title(apdu)
    keys = keys_for(system_title)
    if keys is None:
        raise SecurityViolation(f"unknown system title {system_title.hex()}")
    length, pos = decode_length(apdu, 2 + SYSTEM_TITLE_LENGTH)
    if pos + length != len(apdu):
        raise SecurityViolation("general-glo-ciphering length mismatch")
    return unprotect(apdu[pos:], keys=keys, system_title=system_title)


def is_ciphered(apdu: bytes) -> bool:
    return bool(apdu) and (apdu[0] in PLAIN_TAG or apdu[0] == ApduTag.GENERAL_GLO_CIPHERING)


# --- HLS mechanism 5 (GMAC) ---------------------------------------------------------


def gmac_response(
    challenge: bytes, *, keys: SecurityKeys, system_title: bytes, invocation_counter: int
) -> bytes:
    """f(challenge) = SC(0x10) || IC || GMAC(SC || AK || challenge), 17 bytes."""
    iv = _iv(system_title, invocation_counter)
    sc = SC_AUTHENTICATED
    tag = AESGCM(keys.encryption_key).encrypt(
        iv, b"", bytes([sc]) + keys.authentication_key + challenge
    )[:TAG_LENGTH]
    return bytes([sc]) + invocation_counter.to_bytes(4, "big") + tag


def verify_gmac_response(
    response: bytes, challenge: bytes, *, keys: SecurityKeys, system_title: bytes
) -> int:
    """Check the peer's f(challenge); returns its invocation counter (check it goes forward)."""
    if len(response) != 5 + TAG_LENGTH or response[0] != SC_AUTHENTICATED:
        raise SecurityViolation("malformed HLS-GMAC response")
    ic = int.from_bytes(response[1:5], "big")
    expected = gmac_response(challenge, keys=keys, system_title=system_title, invocation_counter=ic)
    if not hmac.compare_digest(expected, response):
        raise SecurityViolation("HLS-GMAC authentication failed")
    return ic


# --- invocation counters -------------------------------------------------------------


class InvocationCounterTracker:
    """Receiver side: the last counter seen per sender system title.

    :meth:`accept` raises SecurityViolation unless the counter goes strictly
    forward (a replayed or rewound frame). Call it only after the tag verified,
    so a forged frame cannot move the counter. Thread-safe.
    """

    def __init__(self, initial: dict[bytes, int] | None = None) -> None:
        self._last: dict[bytes, int] = dict(initial or {})
        self._lock = threading.Lock()

    def last(self, system_title: bytes) -> int | None:
        with self._lock:
            return self._last.get(system_title)

    def seed(self, counters: dict[bytes, int]) -> None:
        """Take counters accepted elsewhere (the store, another process) in: each system
        title keeps the higher of its own and the given one."""
        with self._lock:
            for system_title, counter in counters.items():
                last = self._last.get(system_title)
                if last is None or counter > last:
                    self._last[system_title] = counter

    def accept(self, system_title: bytes, invocation_counter: int) -> None:
        with self._lock:
            last = self._last.get(system_title)
            if last is not None and invocation_counter <= last:
                raise SecurityViolation(
                    f"invocation counter {invocation_counter} of {system_title.hex()} "
                    f"does not go forward (last {last})"
                )
            self._last[system_title] = invocation_counter


class InvocationCounter:
    """Sender side: hands out each counter value once, never repeating one.

    ``persist`` (optional) is called with every value before it is used, so a
    restart continues after the last value handed out.
    """

    def __init__(self, value: int = 0, persist: Callable[[int], None] | None = None) -> None:
        self._value = value  # the last value used
        self._persist = persist
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        """The last value used (what a meter publishes in 0.0.43.1.x.255)."""
        with self._lock:
            return self._value

    def next(self) -> int:
        with self._lock:
            if self._value >= MAX_INVOCATION_COUNTER:
                raise SecurityViolation("invocation counter exhausted: keys must be renewed")
            self._value += 1
            if self._persist is not None:
                self._persist(self._value)
            return self._value
