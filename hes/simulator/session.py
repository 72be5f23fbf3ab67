"""One TCP connection to a simulated meter: association, security, data services.

Protocol logic only: :meth:`ServerSession.handle` takes a request APDU and
returns the response APDU (or None: no answer). ACSE and every ciphering step
are ours; the plain xDLMS data services run on gurux's (patched) server.

Association lifecycle (explicit transition table)::

    IDLE --aarq ok (public / LLS)--> ASSOCIATED
    IDLE --aarq ok (HLS-GMAC)-----> AWAITING_HLS --f(StoC) ok--> ASSOCIATED
    AWAITING_HLS --f(StoC) wrong--> IDLE
    any --rlrq / aarq refused-----> IDLE
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum

from cim_schemas.errors import SecurityViolation
from hes.dlms import acse, compat
from hes.dlms.acse import (
    Aare,
    Aarq,
    AcseDiagnostic,
    AcseError,
    ApplicationContext,
    AssociationResult,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
)
from hes.dlms.wrapper import MANAGEMENT_CLIENT, PUBLIC_CLIENT
from hes.security import gcm
from hes.simulator.cosem import SERVER_MAX_PDU, MeterObjects
from hes.simulator.meter import MeterState, SecurityPolicy

log = logging.getLogger(__name__)

ASSOCIATION_LN = bytes.fromhex("0000280000ff")
EXCEPTION_RESPONSE = 0xD8
STATE_ERROR_SERVICE_NOT_ALLOWED = 1
SERVICE_ERROR_OPERATION_NOT_POSSIBLE = 1
SERVICE_ERROR_DECIPHERING = 5
SERVICE_ERROR_INVOCATION_COUNTER = 6


class AssociationState(Enum):
    IDLE = "idle"
    AWAITING_HLS = "awaiting_hls"
    ASSOCIATED = "associated"


class Transition(Enum):
    ACCEPT = "accept"
    ACCEPT_PENDING_HLS = "accept_pending_hls"
    HLS_PASSED = "hls_passed"
    HLS_FAILED = "hls_failed"
    RELEASE = "release"
    REFUSE = "refuse"


TRANSITIONS: dict[tuple[AssociationState, Transition], AssociationState] = {
    (AssociationState.IDLE, Transition.ACCEPT): AssociationState.ASSOCIATED,
    (AssociationState.IDLE, Transition.ACCEPT_PENDING_HLS): AssociationState.AWAITING_HLS,
    (AssociationState.IDLE, Transition.REFUSE): AssociationState.IDLE,
    (AssociationState.AWAITING_HLS, Transition.HLS_PASSED): AssociationState.ASSOCIATED,
    (AssociationState.AWAITING_HLS, Transition.HLS_FAILED): AssociationState.IDLE,
    (AssociationState.AWAITING_HLS, Transition.RELEASE): AssociationState.IDLE,
    (AssociationState.ASSOCIATED, Transition.RELEASE): AssociationState.IDLE,
    # a new AARQ on an open association restarts it (WRAPPER has no disconnect)
    (AssociationState.ASSOCIATED, Transition.ACCEPT): AssociationState.ASSOCIATED,
    (AssociationState.ASSOCIATED, Transition.ACCEPT_PENDING_HLS): AssociationState.AWAITING_HLS,
    (AssociationState.ASSOCIATED, Transition.REFUSE): AssociationState.IDLE,
    (AssociationState.AWAITING_HLS, Transition.ACCEPT): AssociationState.ASSOCIATED,
    (AssociationState.AWAITING_HLS, Transition.ACCEPT_PENDING_HLS): AssociationState.AWAITING_HLS,
    (AssociationState.AWAITING_HLS, Transition.REFUSE): AssociationState.IDLE,
    (AssociationState.IDLE, Transition.RELEASE): AssociationState.IDLE,
}


#: what glo-ciphering adds to an APDU: tag, length (up to 3 bytes), security control,
#: invocation counter (4), GCM tag (12)
GLO_CIPHERING_OVERHEAD = 1 + 3 + 1 + 4 + 12


def exception_response(service_error: int) -> bytes:
    return bytes([EXCEPTION_RESPONSE, STATE_ERROR_SERVICE_NOT_ALLOWED, service_error])


class ServerSession:
    """The meter's side of one connection."""

    def __init__(
        self,
        meter: MeterState,
        logical_device: int,
        now: Callable[[], datetime] | None = None,
        security_events: Callable[[str], None] | None = None,
    ) -> None:
        self.meter = meter
        self.logical_device = logical_device
        self.now = now or (lambda: datetime.now(UTC))
        self.objects = MeterObjects(meter, self.now)
        self.state = AssociationState.IDLE
        self.server: compat.CompatServer | None = None
        self.client = 0
        self.client_title: bytes | None = None
        #: the keys this association was opened with: a key transfer changes the meter's
        #: keys for the NEXT association; this one goes on with these
        self.keys = meter.keys
        self.ciphered = False
        self.stoc = b""
        self.ctos = b""
        self.conformance = 0
        self.block_number = 0  # block number of the last GET-Response-With-Datablock sent
        self._security_event = security_events or (lambda reason: None)

    def _go(self, transition: Transition) -> None:
        self.state = TRANSITIONS[(self.state, transition)]
        if self.state is AssociationState.IDLE:
            self.server = None
            self.block_number = 0

    # --- entry point ---
    def handle(self, client: int, apdu: bytes) -> bytes | None:
        if not apdu:
            return None
        tag = apdu[0]
        if tag == acse.AARQ_TAG:
            return self._aarq(client, apdu)
        if tag == acse.RLRQ_TAG:
            self._go(Transition.RELEASE)
            return acse.release_response()
        if client != self.client or self.state is AssociationState.IDLE:
            return exception_response(SERVICE_ERROR_OPERATION_NOT_POSSIBLE)
        if self.ciphered:
            return self._ciphered(apdu)
        if gcm.is_ciphered(apdu):
            return exception_response(SERVICE_ERROR_OPERATION_NOT_POSSIBLE)
        return self._data(apdu)

    # --- association ---
    def _refuse(
        self, context: ApplicationContext, diagnostic: AcseDiagnostic, reason: str
    ) -> bytes:
        self._go(Transition.REFUSE)
        self._security_event(reason)
        return Aare(context, AssociationResult.REJECTED_PERMANENT, diagnostic).encode()

    def _aarq(self, client: int, apdu: bytes) -> bytes:
        try:
            aarq = Aarq.decode(apdu)
        except AcseError:
            return self._refuse(
                ApplicationContext.LOGICAL_NAME, AcseDiagnostic.NO_REASON_GIVEN, "malformed AARQ"
            )
        self.client = client
        if client == PUBLIC_CLIENT:
            if aarq.mechanism != Mechanism.NONE or aarq.context != ApplicationContext.LOGICAL_NAME:
                return self._refuse(
                    aarq.context,
                    AcseDiagnostic.NO_REASON_GIVEN,
                    "public client must not authenticate",
                )
            return self._accept_plain(aarq, self.objects.public_server())
        if client != MANAGEMENT_CLIENT:
            return self._refuse(
                aarq.context, AcseDiagnostic.NO_REASON_GIVEN, f"unknown client {client}"
            )
        if self.meter.policy == SecurityPolicy.LOW:
            if aarq.mechanism != Mechanism.LOW or aarq.context != ApplicationContext.LOGICAL_NAME:
                return self._refuse(
                    aarq.context,
                    AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED,
                    "LLS required",
                )
            if aarq.authentication_value != self.meter.password:
                return self._refuse(
                    aarq.context, AcseDiagnostic.AUTHENTICATION_FAILURE, "wrong password"
                )
            return self._accept_plain(aarq, self.objects.management_server())
        return self._aarq_hls(aarq)

    def _accept_plain(self, aarq: Aarq, server: compat.CompatServer) -> bytes:
        try:
            initiate = InitiateRequest.decode(aarq.user_information)
        except AcseError:
            return self._refuse(aarq.context, AcseDiagnostic.NO_REASON_GIVEN, "bad initiate")
        self.ciphered = False
        response = self._initiate(initiate, server)
        self._go(Transition.ACCEPT)
        return Aare(
            ApplicationContext.LOGICAL_NAME,
            AssociationResult.ACCEPTED,
            AcseDiagnostic.NULL,
            user_information=response.encode(),
        ).encode()

    def _initiate(self, initiate: InitiateRequest, server: compat.CompatServer) -> InitiateResponse:
        self.conformance = initiate.conformance & acse.Conformance.SERVER_DEFAULT
        max_pdu = min(initiate.max_receive_pdu, SERVER_MAX_PDU)
        if self.ciphered:  # the client's limit is on the ciphered APDU: leave room for it
            max_pdu -= GLO_CIPHERING_OVERHEAD
        compat.mark_server_associated(server, self.conformance, max_pdu)
        self.server = server
        return InitiateResponse(self.conformance, SERVER_MAX_PDU)

    def _aarq_hls(self, aarq: Aarq) -> bytes:
        context = ApplicationContext.LOGICAL_NAME_WITH_CIPHERING
        if (
            aarq.mechanism != Mechanism.HIGH_GMAC
            or aarq.context != context
            or aarq.calling_ap_title is None
            or len(aarq.calling_ap_title) != 8
            or not aarq.authentication_value
        ):
            return self._refuse(
                context,
                AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED,
                "HLS-GMAC with ciphering required",
            )
        keys = self.meter.keys
        try:
            clear = gcm.glo_decipher(
                aarq.user_information, keys=keys, system_title=aarq.calling_ap_title
            )
            initiate = InitiateRequest.decode(clear.apdu)
        except (SecurityViolation, AcseError):
            return self._refuse(
                context,
                AcseDiagnostic.AUTHENTICATION_FAILURE,
                "AARQ deciphering failed (wrong keys or tampered)",
            )
        if not self.meter.accept_client_counter(MANAGEMENT_CLIENT, clear.invocation_counter):
            return self._refuse(
                context,
                AcseDiagnostic.AUTHENTICATION_FAILURE,
                "stale client invocation counter in AARQ",
            )
        self.client_title = aarq.calling_ap_title
        self.keys = keys
        self.ciphered = True
        self.ctos = aarq.authentication_value
        self.stoc = os.urandom(16)
        response = self._initiate(initiate, self.objects.management_server())
        self._go(Transition.ACCEPT_PENDING_HLS)
        return Aare(
            context,
            AssociationResult.ACCEPTED,
            AcseDiagnostic.AUTHENTICATION_REQUIRED,
            mechanism=Mechanism.HIGH_GMAC,
            responding_ap_title=self.meter.system_title,
            authentication_value=self.stoc,
            user_information=self._cipher(response.encode()),
        ).encode()

    # --- ciphering ---
    def _cipher(
        self, apdu: bytes, protection: gcm.Protection = gcm.Protection.AUTHENTICATED_ENCRYPTED
    ) -> bytes:
        out = gcm.glo_cipher(
            apdu,
            keys=self.keys,
            system_title=self.meter.system_title,
            invocation_counter=self.meter.next_counter(),
            protection=protection,
        )
        if self.meter.faults.flip_bit and self.state is AssociationState.ASSOCIATED:
            flipped = bytearray(out)
            flipped[-13] ^= 0x01  # last byte of the body
            return bytes(flipped)
        return out

    def _ciphered(self, apdu: bytes) -> bytes | None:
        assert self.client_title is not None
        try:
            clear = gcm.glo_decipher(apdu, keys=self.keys, system_title=self.client_title)
        except SecurityViolation as exc:
            self._security_event(f"request rejected: {exc}")
            return exception_response(SERVICE_ERROR_DECIPHERING)
        if not self.meter.accept_client_counter(MANAGEMENT_CLIENT, clear.invocation_counter):
            self._security_event("replayed or stale client invocation counter")
            return exception_response(SERVICE_ERROR_INVOCATION_COUNTER)
        protection = gcm.Protection(clear.security_control & 0x30)
        if self.state is AssociationState.AWAITING_HLS:
            return self._hls_pass3(clear.apdu, protection)
        plain = self._data(clear.apdu)
        if plain is None or plain[0] == EXCEPTION_RESPONSE:
            return plain  # exception responses have no glo-ciphered form
        out = self._cipher(plain, protection)
        if self.meter.faults.silent_after_action and plain[:1] == b"\xc7":
            self.meter.faults.silent_after_action = False
            self.meter.faults.no_answer = True  # this answer goes out, then silence
        if self.meter.faults.tamper_action_answer and plain[:1] == b"\xc7":
            self.meter.faults.tamper_action_answer = False  # one shot: the action was done
            tampered = bytearray(out)
            tampered[-13] ^= 0x01  # last byte of the body: the tag fails
            return bytes(tampered)
        return out

    def _hls_pass3(self, apdu: bytes, protection: gcm.Protection) -> bytes:
        # ACTION-Request-Normal: c3 01 invoke | class 000f | LN | method 01 | 01 | 09 len f(StoC)
        ok = (
            len(apdu) >= 17
            and apdu[:2] == b"\xc3\x01"
            and apdu[3:5] == b"\x00\x0f"
            and apdu[5:11] == ASSOCIATION_LN
            and apdu[11] == 1
            and apdu[12:14] == b"\x01\x09"
        )
        invoke = apdu[2] if len(apdu) > 2 else 0x81
        if ok:
            assert self.client_title is not None
            try:
                gcm.verify_gmac_response(
                    apdu[15:], self.stoc, keys=self.keys, system_title=self.client_title
                )
            except SecurityViolation:
                ok = False
        if not ok:
            self._security_event("HLS-GMAC pass 3 failed")
            self._go(Transition.HLS_FAILED)
            # action-result read-write-denied (3), no return parameters
            return self._cipher(bytes([0xC7, 0x01, invoke, 0x03, 0x00]), protection)
        ftos = gcm.gmac_response(
            self.ctos,
            keys=self.keys,
            system_title=self.meter.system_title,
            invocation_counter=self.meter.next_counter(),
        )
        self._go(Transition.HLS_PASSED)
        return self._cipher(
            bytes([0xC7, 0x01, invoke, 0x00, 0x01, 0x00, 0x09, len(ftos)]) + ftos, protection
        )

    # --- data services ---
    def _data(self, apdu: bytes) -> bytes | None:
        assert self.server is not None
        if apdu[0] == 0xC3 and apdu[3:5] == b"\x00\x0f":
            return exception_response(SERVICE_ERROR_OPERATION_NOT_POSSIBLE)  # no HLS replay
        hostile = self.meter.faults.answer_get_with
        if hostile is not None and apdu[0] == 0xC0 and self.client == MANAGEMENT_CLIENT:
            return bytes([0xC4, 0x01, apdu[2] if len(apdu) > 2 else 0x81, 0x00]) + hostile
        try:
            out = compat.server_handle_apdu(self.server, self.client, self.logical_device, apdu)
        except compat.GuruxFailure as exc:
            log.warning("meter %s: %s", self.meter.serial, exc)
            return exception_response(SERVICE_ERROR_OPERATION_NOT_POSSIBLE)
        # c4 02 invoke last-block(1) block-number(4) ...
        is_block = len(out) > 8 and out[:2] == b"\xc4\x02"
        self.block_number = int.from_bytes(out[4:8], "big") if is_block else 0
        return out
