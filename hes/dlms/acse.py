"""ACSE APDUs (AARQ, AARE, RLRQ, RLRE) and the xDLMS Initiate request/response.

Our own BER codec, used on both sides: the simulator answers every association
with it, and the reading client builds secured associations with it, because
gurux's association path is tied to its own (unsafe) ciphering. Plain data in,
plain data out; ciphering of the user-information goes through
:mod:`hes.security.gcm`. Pure functions, no IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from cim_schemas.errors import PermanentError, SecurityViolation
from hes.security.gcm import decode_length, encode_length

AARQ_TAG = 0x60
AARE_TAG = 0x61
RLRQ_TAG = 0x62
RLRE_TAG = 0x63

_CONTEXT_PREFIX = bytes.fromhex("608574050801")  # 2.16.756.5.8.1.x
_MECHANISM_PREFIX = bytes.fromhex("608574050802")  # 2.16.756.5.8.2.x

DLMS_VERSION = 6
VAA_NAME_LN = 0x0007


class ApplicationContext(IntEnum):
    LOGICAL_NAME = 1
    SHORT_NAME = 2
    LOGICAL_NAME_WITH_CIPHERING = 3
    SHORT_NAME_WITH_CIPHERING = 4


class Mechanism(IntEnum):
    NONE = 0
    LOW = 1
    HIGH_GMAC = 5


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class AcseDiagnostic(IntEnum):
    """acse-service-user diagnostics."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class Conformance:
    """Conformance block bits (24 bits, big-endian) we care about."""

    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    ATTRIBUTE0_SET = 1 << 15
    PRIORITY_MGMT = 1 << 14
    ATTRIBUTE0_GET = 1 << 13
    BLOCK_TRANSFER_WITH_GET = 1 << 12
    BLOCK_TRANSFER_WITH_SET = 1 << 11
    BLOCK_TRANSFER_WITH_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0

    #: what the simulated meters offer
    SERVER_DEFAULT = (
        BLOCK_TRANSFER_WITH_GET
        | BLOCK_TRANSFER_WITH_ACTION
        | DATA_NOTIFICATION
        | GET
        | SET
        | SELECTIVE_ACCESS
        | ACTION
        | MULTIPLE_REFERENCES
    )


class AcseError(PermanentError):
    """A malformed ACSE or Initiate APDU."""


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        tag = data[pos]
        try:
            length, pos = decode_length(data, pos + 1)
        except SecurityViolation as exc:
            raise AcseError(str(exc)) from None
        if pos + length > len(data):
            raise AcseError("truncated ACSE field")
        out[tag] = data[pos : pos + length]
        pos += length
    return out


def _outer(data: bytes, tag: int) -> bytes:
    if not data or data[0] != tag:
        raise AcseError(f"expected APDU tag {tag:#04x}")
    try:
        length, pos = decode_length(data, 1)
    except SecurityViolation as exc:
        raise AcseError(str(exc)) from None
    if pos + length != len(data):
        raise AcseError("ACSE APDU length mismatch")
    return data[pos:]


def _context_field(context: ApplicationContext) -> bytes:
    return _tlv(0xA1, _tlv(0x06, _CONTEXT_PREFIX + bytes([context])))


def _parse_context(value: bytes) -> ApplicationContext:
    inner = _parse_tlvs(value).get(0x06, b"")
    if len(inner) != 7 or inner[:6] != _CONTEXT_PREFIX:
        raise AcseError("unknown application context name")
    try:
        return ApplicationContext(inner[6])
    except ValueError:
        raise AcseError("unknown application context") from None


def _parse_title(value: bytes) -> bytes:
    inner = _parse_tlvs(value).get(0x04)
    if inner is None:
        raise AcseError("AP title is not an octet string")
    return inner


def _parse_auth_value(value: bytes) -> bytes:
    inner = _parse_tlvs(value)
    if 0x80 not in inner:
        raise AcseError("authentication value is not a charstring")
    return inner[0x80]


def _parse_user_information(value: bytes) -> bytes:
    inner = _parse_tlvs(value).get(0x04)
    if inner is None:
        raise AcseError("user-information is not an octet string")
    return inner


# --- xDLMS Initiate ---------------------------------------------------------------


@dataclass(frozen=True)
class InitiateRequest:
    conformance: int
    max_receive_pdu: int = 0xFFFF
    dlms_version: int = DLMS_VERSION

    def encode(self) -> bytes:
        return (
            bytes([0x01, 0x00, 0x00, 0x00, self.dlms_version, 0x5F, 0x1F, 0x04, 0x00])
            + self.conformance.to_bytes(3, "big")
            + self.max_receive_pdu.to_bytes(2, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> InitiateRequest:
        # 01, dedicated-key?, response-allowed?, proposed-quality?, version, conformance, pdu
        if len(data) < 2 or data[0] != 0x01:
            raise AcseError("not an InitiateRequest")
        pos = 1
        if data[pos]:  # dedicated key present: skip it (we never use dedicated keys)
            if pos + 1 >= len(data):
                raise AcseError("truncated InitiateRequest")
            pos += 2 + data[pos + 1]
        else:
            pos += 1
        for _ in range(2):  # response-allowed (default true), proposed-quality-of-service
            if pos >= len(data):
                raise AcseError("truncated InitiateRequest")
            pos += 2 if data[pos] else 1
        if len(data) != pos + 10 or data[pos + 1 : pos + 4] != b"\x5f\x1f\x04":
            raise AcseError("malformed InitiateRequest")
        return cls(
            conformance=int.from_bytes(data[pos + 5 : pos + 8], "big"),
            max_receive_pdu=int.from_bytes(data[pos + 8 : pos + 10], "big"),
            dlms_version=data[pos],
        )


@dataclass(frozen=True)
class InitiateResponse:
    conformance: int
    max_receive_pdu: int
    dlms_version: int = DLMS_VERSION

    def encode(self) -> bytes:
        return (
            bytes([0x08, 0x00, self.dlms_version, 0x5F, 0x1F, 0x04, 0x00])
            + self.conformance.to_bytes(3, "big")
            + self.max_receive_pdu.to_bytes(2, "big")
            + VAA_NAME_LN.to_bytes(2, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> InitiateResponse:
        if len(data) < 2 or data[0] != 0x08:
            raise AcseError("not an InitiateResponse")
        pos = 2 if data[1] == 0 else 3  # negotiated-quality-of-service
        if len(data) != pos + 12 or data[pos + 1 : pos + 4] != b"\x5f\x1f\x04":
            raise AcseError("malformed InitiateResponse")
        return cls(
            conformance=int.from_bytes(data[pos + 5 : pos + 8], "big"),
            max_receive_pdu=int.from_bytes(data[pos + 8 : pos + 10], "big"),
            dlms_version=data[pos],
        )


# --- AARQ / AARE -------------------------------------------------------------------


@dataclass(frozen=True)
class Aarq:
    context: ApplicationContext
    mechanism: Mechanism = Mechanism.NONE
    calling_ap_title: bytes | None = None  # client system title (ciphered contexts)
    authentication_value: bytes | None = field(default=None, repr=False)  # password or CtoS
    user_information: bytes = b""  # InitiateRequest, plain or glo-ciphered

    def encode(self) -> bytes:
        body = _context_field(self.context)
        if self.calling_ap_title is not None:
            body += _tlv(0xA6, _tlv(0x04, self.calling_ap_title))
        if self.mechanism != Mechanism.NONE:
            body += bytes.fromhex("8a020780")
            body += _tlv(0x8B, _MECHANISM_PREFIX + bytes([self.mechanism]))
            body += _tlv(0xAC, _tlv(0x80, self.authentication_value or b""))
        body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(AARQ_TAG, body)

    @classmethod
    def decode(cls, data: bytes) -> Aarq:
        fields = _parse_tlvs(_outer(data, AARQ_TAG))
        if 0xA1 not in fields or 0xBE not in fields:
            raise AcseError("AARQ without application context or user-information")
        mechanism = Mechanism.NONE
        if 0x8B in fields:
            mech = fields[0x8B]
            if len(mech) != 7 or mech[:6] != _MECHANISM_PREFIX:
                raise AcseError("unknown mechanism name")
            try:
                mechanism = Mechanism(mech[6])
            except ValueError:
                raise AcseError(f"unsupported authentication mechanism {mech[6]}") from None
        return cls(
            context=_parse_context(fields[0xA1]),
            mechanism=mechanism,
            calling_ap_title=_parse_title(fields[0xA6]) if 0xA6 in fields else None,
            authentication_value=_parse_auth_value(fields[0xAC]) if 0xAC in fields else None,
            user_information=_parse_user_information(fields[0xBE]),
        )


@dataclass(frozen=True)
class Aare:
    context: ApplicationContext
    result: AssociationResult
    diagnostic: AcseDiagnostic
    mechanism: Mechanism = Mechanism.NONE
    responding_ap_title: bytes | None = None  # server system title
    authentication_value: bytes | None = field(default=None, repr=False)  # StoC
    user_information: bytes = b""  # InitiateResponse (plain or glo) or ConfirmedServiceError

    def encode(self) -> bytes:
        body = _context_field(self.context)
        body += _tlv(0xA2, _tlv(0x02, bytes([self.result])))
        body += _tlv(0xA3, _tlv(0xA1, _tlv(0x02, bytes([self.diagnostic]))))
        if self.responding_ap_title is not None:
            body += _tlv(0xA4, _tlv(0x04, self.responding_ap_title))
        if self.mechanism != Mechanism.NONE:
            body += bytes.fromhex("88020780")
            body += _tlv(0x89, _MECHANISM_PREFIX + bytes([self.mechanism]))
            if self.authentication_value is not None:
                body += _tlv(0xAA, _tlv(0x80, self.authentication_value))
        if self.user_information:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(AARE_TAG, body)

    @classmethod
    def decode(cls, data: bytes) -> Aare:
        fields = _parse_tlvs(_outer(data, AARE_TAG))
        try:
            result = AssociationResult(_parse_tlvs(fields[0xA2])[0x02][0])
            diag_choice = _parse_tlvs(fields[0xA3])
            diag_value = next(iter(diag_choice.values()))
            diagnostic = AcseDiagnostic(_parse_tlvs(diag_value)[0x02][0])
        except (KeyError, IndexError, StopIteration, ValueError):
            raise AcseError("AARE without a valid result or diagnostic") from None
        mechanism = Mechanism.NONE
        if 0x89 in fields and len(fields[0x89]) == 7:
            try:
                mechanism = Mechanism(fields[0x89][6])
            except ValueError:
                raise AcseError("unsupported mechanism in AARE") from None
        return cls(
            context=_parse_context(fields.get(0xA1, b"")),
            result=result,
            diagnostic=diagnostic,
            mechanism=mechanism,
            responding_ap_title=_parse_title(fields[0xA4]) if 0xA4 in fields else None,
            authentication_value=_parse_auth_value(fields[0xAA]) if 0xAA in fields else None,
            user_information=_parse_user_information(fields[0xBE]) if 0xBE in fields else b"",
        )


def release_request() -> bytes:
    """RLRQ with reason normal."""
    return _tlv(RLRQ_TAG, bytes.fromhex("800100"))


def release_response() -> bytes:
    """RLRE with reason normal (correct lengths, unlike gurux's server)."""
    return _tlv(RLRE_TAG, bytes.fromhex("800100"))


def is_release_response(data: bytes) -> bool:
    try:
        _outer(data, RLRE_TAG)
    except AcseError:
        return False
    return True
