"""The reading client: gurux's GXDLMSClient behind our own small interface.

gurux builds the plain xDLMS requests and parses the plain responses (GET,
GET-next-block, selective access). Everything security-related is ours:
ACSE (:mod:`hes.dlms.acse`), HLS-GMAC and every AES-GCM operation
(:mod:`hes.security.gcm`); gurux's client never holds a key.

Secured association (the default), as field meters expect it:

1. public client (SAP 16), no authentication: read the invocation counter
   0.0.43.1.0.255 (the last counter the meter accepted from the management client);
2. management client (SAP 1): AARQ with HLS-GMAC, a CtoS challenge and a
   glo-ciphered InitiateRequest using counter + 1;
3. AARE: the meter's system title must be the expected one; its glo-ciphered
   InitiateResponse is verified; pass 3/4: f(StoC) sent, f(CtoS) verified;
4. every request glo-ciphered (authenticated and encrypted), every response
   verified (tag) and its counter checked to go forward (shared tracker: a
   replayed or rewound meter counter is refused even across associations).

With a :class:`MeterCounterStore` (``ClientIdentity.counter_store``: the store, shared
by every process and kept across restarts) the meter's first counter of an association
must also be above the highest counter recorded at the end of earlier associations,
once HLS pass 4 proved the meter live; the highest counter seen is recorded when the
association is released. A meter whose counter went back (restored, reset, cloned:
it reuses GCM nonces) is refused as a replay security event after a restart too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from cim_schemas.errors import NotAuthorised, PermanentError, RecoverableError, SecurityViolation
from hes.client.transport import TcpTransport, Transport
from hes.dlms import acse, axdr, compat
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

log = logging.getLogger(__name__)

INVOCATION_COUNTER = "0.0.43.1.0.255"
CLOCK = "0.0.1.0.0.255"
LOAD_PROFILE = "1.0.99.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"
DISCONNECT_CONTROL = "0.0.96.3.10.255"
ASSOCIATION_LN = bytes.fromhex("0000280000ff")
CLIENT_MAX_PDU = 0xFFFF
PROPOSED_CONFORMANCE = (
    acse.Conformance.BLOCK_TRANSFER_WITH_GET
    | acse.Conformance.BLOCK_TRANSFER_WITH_ACTION
    | acse.Conformance.GET
    | acse.Conformance.SET
    | acse.Conformance.SELECTIVE_ACCESS
    | acse.Conformance.ACTION
    | acse.Conformance.MULTIPLE_REFERENCES
)


class AssociationRefused(NotAuthorised):
    """The meter refused the association (wrong password, wrong keys, stale counter)."""

    def __init__(self, message: str, diagnostic: AcseDiagnostic | None = None) -> None:
        super().__init__(message)
        self.diagnostic = diagnostic


def _descriptor(class_id: int, obis: str) -> bytes:
    return class_id.to_bytes(2, "big") + bytes(int(x) for x in obis.split("."))


class MeterProtocolError(PermanentError):
    """The meter answered something we cannot use (malformed, data-access error)."""


class ActionRefused(MeterProtocolError):
    """The meter answered an ACTION with an action-result other than success: it did
    not carry the method out."""

    def __init__(self, message: str, result: int) -> None:
        super().__init__(message)
        self.result = result


class Security(StrEnum):
    PUBLIC = "public"  # SAP 16, no authentication (identity, clock, counter only)
    LOW = "low"  # LLS password, plain APDUs
    HLS = "hls"  # HLS-GMAC, authenticated and encrypted APDUs


class KeyRole(StrEnum):
    """Which of a meter's keys an HLS association was opened with."""

    ACTIVE = "active"
    PENDING = "pending"  # keys sent in a key change whose outcome is not known yet


@dataclass(frozen=True, repr=False)
class MeterCredentials:
    security: Security = Security.HLS
    password: bytes = b""
    system_title: bytes = b""  # the meter's (expected in the AARE)
    keys: gcm.SecurityKeys | None = None
    #: keys of an unsettled key change: tried when the meter refuses ``keys``
    pending_keys: gcm.SecurityKeys | None = None

    def __repr__(self) -> str:
        return f"MeterCredentials({self.security}, system_title={self.system_title.hex()})"


@dataclass(frozen=True)
class RegisterValue:
    obis: str
    raw: int
    scaler: int
    unit: int

    @property
    def value(self) -> Decimal:
        return Decimal(self.raw) * Decimal(10) ** self.scaler


@dataclass(frozen=True)
class ProfileRow:
    ts: datetime
    status: int
    values: tuple[Decimal, ...]  # scaled, in the columns' units


@dataclass(frozen=True)
class Profile:
    columns: tuple[str, ...]  # OBIS of the value columns (after clock and status)
    rows: tuple[ProfileRow, ...]


@dataclass(frozen=True)
class MeterEvent:
    ts: datetime
    code: int


class MeterSession(Protocol):
    """What the reading engine needs from a meter connection."""

    def associate(self) -> None: ...
    def read_clock(self) -> datetime: ...
    def read_registers(self, obis: Sequence[str]) -> list[RegisterValue]: ...
    def read_profile(self, start: datetime, end: datetime) -> Profile: ...
    def read_event_log(self) -> list[MeterEvent]: ...
    def read_control_state(self) -> int: ...
    def set_clock(self, ts: datetime) -> None: ...
    def disconnect(self) -> None: ...
    def reconnect(self) -> None: ...
    def get_attribute(self, class_id: int, obis: str, attribute: int) -> axdr.Value: ...
    def set_attribute(self, class_id: int, obis: str, attribute: int, value: bytes) -> None: ...
    def invoke(self, class_id: int, obis: str, method: int, parameters: bytes) -> None: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


class DelegatingSession:
    """A MeterSession that hands every call to ``inner``: the base of wrappers that
    change one or two calls (locks, a retried association) and pass on the rest."""

    def __init__(self, inner: MeterSession) -> None:
        self._inner = inner

    def associate(self) -> None:
        self._inner.associate()

    def read_clock(self) -> datetime:
        return self._inner.read_clock()

    def read_registers(self, obis: Sequence[str]) -> list[RegisterValue]:
        return self._inner.read_registers(obis)

    def read_profile(self, start: datetime, end: datetime) -> Profile:
        return self._inner.read_profile(start, end)

    def read_event_log(self) -> list[MeterEvent]:
        return self._inner.read_event_log()

    def read_control_state(self) -> int:
        return self._inner.read_control_state()

    def set_clock(self, ts: datetime) -> None:
        self._inner.set_clock(ts)

    def disconnect(self) -> None:
        self._inner.disconnect()

    def reconnect(self) -> None:
        self._inner.reconnect()

    def get_attribute(self, class_id: int, obis: str, attribute: int) -> axdr.Value:
        return self._inner.get_attribute(class_id, obis, attribute)

    def set_attribute(self, class_id: int, obis: str, attribute: int, value: bytes) -> None:
        self._inner.set_attribute(class_id, obis, attribute, value)

    def invoke(self, class_id: int, obis: str, method: int, parameters: bytes) -> None:
        self._inner.invoke(class_id, obis, method, parameters)

    def release(self) -> None:
        self._inner.release()

    def close(self) -> None:
        self._inner.close()


@dataclass
class MeterConfiguration:
    """What does not change between reads of one meter: scalers/units, capture objects.

    Cached per meter so a daily read does not ask for them again (a firmware
    change that alters them shows up as a layout error, and the cache entry is
    dropped)."""

    scalers: dict[str, tuple[int, int]] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)


class MeterCounterStore(Protocol):
    """The meters' counters seen in responses, kept beyond the process (the store)."""

    def last(self, system_title: bytes) -> int | None:
        """The highest counter recorded for the meter (None: never recorded)."""
        ...

    def record(self, system_title: bytes, counter: int) -> None:
        """Raise the recorded counter to ``counter`` (never lowers it)."""
        ...


@dataclass
class ClientIdentity:
    """The head-end's side: its system title, the tracker of meter counters (with
    ``counter_store``: checked against and recorded in the store too), and the
    configuration cache of the meters it reads."""

    system_title: bytes = b"AMIHUB01"
    meter_counters: gcm.InvocationCounterTracker = field(
        default_factory=gcm.InvocationCounterTracker
    )
    configurations: dict[str, MeterConfiguration] = field(default_factory=dict)
    counter_store: MeterCounterStore | None = None

    def configuration(self, key: str | None) -> MeterConfiguration:
        if key is None:
            return MeterConfiguration()
        return self.configurations.setdefault(key, MeterConfiguration())

    def forget(self, key: str | None) -> None:
        if key is not None:
            self.configurations.pop(key, None)


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MeterProtocolError(f"expected an integer, got {value!r}")
    return value


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise MeterProtocolError(f"expected an octet string, got {value!r}")
    return value


class DlmsMeterSession:
    """One connection to one meter (one logical device)."""

    def __init__(
        self,
        transport: Transport,
        credentials: MeterCredentials,
        identity: ClientIdentity | None = None,
        cache_key: str | None = None,
        *,
        max_receive_pdu: int = CLIENT_MAX_PDU,
    ) -> None:
        self.transport = transport
        self.credentials = credentials
        #: proposed in the InitiateRequest: no APDU of the association may be longer
        self.max_receive_pdu = max_receive_pdu
        self.identity = identity or ClientIdentity()
        self.client_address = (
            PUBLIC_CLIENT if credentials.security is Security.PUBLIC else MANAGEMENT_CLIENT
        )
        self._gurux = compat.new_client(self.client_address, 1)
        self._counter: gcm.InvocationCounter | None = None
        #: the meter's counters of this association: the first, and the highest
        self._meter_first: int | None = None
        self._meter_last: int | None = None
        #: the keys the (last) association was opened with
        self.key_role = KeyRole.ACTIVE
        self._ciphered = False
        self._associated = False
        self.cache_key = cache_key
        config = self.identity.configuration(cache_key)
        self._scalers = config.scalers
        self._columns = config.columns

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        logical_device: int,
        credentials: MeterCredentials,
        identity: ClientIdentity | None = None,
        timeout: float = 5.0,
        cache_key: str | None = None,
    ) -> DlmsMeterSession:
        return cls(
            TcpTransport(host, port, logical_device, timeout=timeout),
            credentials,
            identity,
            cache_key,
        )

    # --- exchange ---
    def _exchange_raw(self, client: int, apdu: bytes) -> bytes:
        self.transport.send(client, apdu)
        out = self.transport.receive(client)
        if self._associated and len(out) > self.max_receive_pdu:
            raise MeterProtocolError(
                f"meter sent an APDU of {len(out)} bytes, over the max receive PDU size of "
                f"{self.max_receive_pdu} bytes we proposed"
            )
        return out

    def _check_exception(self, apdu: bytes) -> None:
        if apdu[:1] == b"\xd8":
            detail = apdu[2] if len(apdu) > 2 else 0
            if detail in (5, 6):
                raise SecurityViolation(
                    "meter refused our frame: "
                    + ("deciphering failed" if detail == 5 else "invocation counter not accepted")
                )
            raise MeterProtocolError(f"meter exception response {apdu.hex()}")

    def _exchange(self, apdu: bytes) -> bytes:
        """Send one plain request (ciphered on the way if the association is), return the
        plain, verified response."""
        if not self._ciphered:
            out = self._exchange_raw(self.client_address, apdu)
            self._check_exception(out)
            if gcm.is_ciphered(out):
                raise SecurityViolation("ciphered answer in a plain association")
            return out
        keys = self._keys()
        assert self._counter is not None
        request = gcm.glo_cipher(
            apdu,
            keys=keys,
            system_title=self.identity.system_title,
            invocation_counter=self._counter.next(),
        )
        out = self._exchange_raw(self.client_address, request)
        self._check_exception(out)
        return self._decipher(out).apdu

    def _decipher(self, apdu: bytes) -> gcm.Deciphered:
        clear = gcm.glo_decipher(
            apdu, keys=self._keys(), system_title=self.credentials.system_title
        )
        self.identity.meter_counters.accept(self.credentials.system_title, clear.invocation_counter)
        if self._meter_first is None:
            self._meter_first = clear.invocation_counter
        self._meter_last = clear.invocation_counter
        return clear

    def _check_stored_counter(self) -> None:
        """The association's first meter counter against the store (after HLS pass 4:
        the meter is live). A store that does not answer now leaves the in-memory
        check alone (logged)."""
        store, first = self.identity.counter_store, self._meter_first
        if store is None or first is None:
            return
        system_title = self.credentials.system_title
        try:
            last = store.last(system_title)
        except RecoverableError as exc:
            log.warning(
                "meter counter of %s not checked against the store (%s: %s)",
                system_title.hex(),
                type(exc).__name__,
                exc,
            )
            return
        if last is not None and first <= last:
            raise SecurityViolation(
                f"meter invocation counter rewound: {first} of {system_title.hex()} does "
                f"not go forward (last {last}, in the store)"
            )

    def _record_counter(self) -> None:
        store, last = self.identity.counter_store, self._meter_last
        if store is None or last is None:
            return
        try:
            store.record(self.credentials.system_title, last)
        except RecoverableError as exc:
            log.warning(
                "meter counter of %s not recorded in the store (%s: %s)",
                self.credentials.system_title.hex(),
                type(exc).__name__,
                exc,
            )

    def _keys(self) -> gcm.SecurityKeys:
        keys = (
            self.credentials.pending_keys
            if self.key_role is KeyRole.PENDING
            else self.credentials.keys
        )
        if keys is None:
            raise SecurityViolation("no keys for a secured association")
        return keys

    def _request(self, frames: Any) -> axdr.Value:
        """Run one gurux-built GET request; reassemble the blocks and decode the data
        ourselves (gurux's client re-parses everything after every block)."""
        (apdu,) = compat.client_frames_to_apdus(frames)
        return self._get(apdu)

    def _get(self, apdu: bytes) -> axdr.Value:
        data = bytearray()
        try:
            while True:
                response = axdr.parse_get_response(self._exchange(apdu))
                if response.error is not None:
                    raise MeterProtocolError(f"data access error {response.error}")
                data += response.data
                if response.block is None or response.last:
                    break
                apdu = axdr.next_block_request(response.invoke, response.block)
            return axdr.decode_all(bytes(data))
        except axdr.AxdrError as exc:
            raise MeterProtocolError(f"bad GET response: {exc}") from exc

    # --- association ---
    def _read_counter_publicly(self) -> int:
        public = DlmsMeterSession(
            self.transport,
            MeterCredentials(Security.PUBLIC),
            self.identity,
            max_receive_pdu=self.max_receive_pdu,
        )
        public.associate()
        try:
            return _as_int(public.read_data(INVOCATION_COUNTER))
        finally:
            public.release()

    def associate(self) -> None:
        """Open the association. HLS with ``pending_keys``: when the meter refuses the
        active keys (authentication failure) the pending ones are tried;
        :attr:`key_role` says which keys the meter took."""
        self.key_role = KeyRole.ACTIVE
        try:
            self._associate()
        except AssociationRefused as exc:
            if (
                self.credentials.security is not Security.HLS
                or self.credentials.pending_keys is None
                or exc.diagnostic is not AcseDiagnostic.AUTHENTICATION_FAILURE
            ):
                raise
            self.key_role = KeyRole.PENDING
            self._associate()

    def _associate(self) -> None:
        security = self.credentials.security
        initiate = InitiateRequest(PROPOSED_CONFORMANCE, self.max_receive_pdu).encode()
        if security is Security.PUBLIC:
            aarq = Aarq(ApplicationContext.LOGICAL_NAME, user_information=initiate)
        elif security is Security.LOW:
            aarq = Aarq(
                ApplicationContext.LOGICAL_NAME,
                Mechanism.LOW,
                authentication_value=self.credentials.password,
                user_information=initiate,
            )
        else:
            self._counter = gcm.InvocationCounter(self._read_counter_publicly())
            self._meter_first = self._meter_last = None
            self._ctos = os.urandom(16)
            aarq = Aarq(
                ApplicationContext.LOGICAL_NAME_WITH_CIPHERING,
                Mechanism.HIGH_GMAC,
                calling_ap_title=self.identity.system_title,
                authentication_value=self._ctos,
                user_information=gcm.glo_cipher(
                    initiate,
                    keys=self._keys(),
                    system_title=self.identity.system_title,
                    invocation_counter=self._counter.next(),
                ),
            )
        raw = self._exchange_raw(self.client_address, aarq.encode())
        try:
            aare = Aare.decode(raw)
        except AcseError as exc:
            raise MeterProtocolError(f"bad AARE: {exc}") from exc
        if aare.result != AssociationResult.ACCEPTED:
            raise AssociationRefused(
                f"association refused: {aare.diagnostic.name}", aare.diagnostic
            )
        if security is Security.HLS:
            response = self._accept_hls(aare)
        else:
            try:
                response = InitiateResponse.decode(aare.user_information)
            except AcseError as exc:
                raise MeterProtocolError(f"bad InitiateResponse: {exc}") from exc
        compat.mark_client_associated(self._gurux, response.conformance, response.max_receive_pdu)
        self._associated = True

    def _accept_hls(self, aare: Aare) -> InitiateResponse:
        if aare.responding_ap_title != self.credentials.system_title:
            raise SecurityViolation("AARE from an unexpected system title")
        if (
            aare.diagnostic != AcseDiagnostic.AUTHENTICATION_REQUIRED
            or aare.mechanism != Mechanism.HIGH_GMAC
            or not aare.authentication_value
        ):
            raise SecurityViolation("meter did not ask for HLS-GMAC")
        clear = self._decipher(aare.user_information)
        try:
            response = InitiateResponse.decode(clear.apdu)
        except AcseError as exc:
            raise MeterProtocolError(f"bad InitiateResponse: {exc}") from exc
        self._ciphered = True
        assert self._counter is not None
        stoc = aare.authentication_value
        f_stoc = gcm.gmac_response(
            stoc,
            keys=self._keys(),
            system_title=self.identity.system_title,
            invocation_counter=self._counter.next(),
        )
        action = (
            b"\xc3\x01\xc1\x00\x0f"
            + ASSOCIATION_LN
            + b"\x01\x01\x09"
            + bytes([len(f_stoc)])
            + f_stoc
        )
        out = self._exchange(action)
        # c7 01 invoke result(00) 01 00 09 len f(CtoS)
        if len(out) < 8 or out[:2] != b"\xc7\x01" or out[3] != 0 or out[4:7] != b"\x01\x00\x09":
            raise AssociationRefused(
                "HLS-GMAC pass 3 refused by the meter", AcseDiagnostic.AUTHENTICATION_FAILURE
            )
        f_ctos = out[8 : 8 + out[7]]
        gcm.verify_gmac_response(
            f_ctos, self._ctos, keys=self._keys(), system_title=self.credentials.system_title
        )
        self._check_stored_counter()
        return response

    def release(self) -> None:
        if not self._associated:
            return
        self._associated = False
        self._ciphered = False
        self._record_counter()
        out = self._exchange_raw(self.client_address, acse.release_request())
        if not acse.is_release_response(out):
            raise MeterProtocolError("bad release response")

    def close(self) -> None:
        self.transport.close()

    # --- reads ---
    def read_data(self, obis: str) -> axdr.Value:
        return self._request(self._gurux.read(GXDLMSData(obis), 2))

    def read_clock(self) -> datetime:
        return compat.decode_datetime(
            _as_bytes(self._request(self._gurux.read(GXDLMSClock(CLOCK), 2)))
        )

    def _scaler_unit(self, obis: str) -> tuple[int, int]:
        if obis not in self._scalers:
            value = self._request(self._gurux.read(GXDLMSRegister(obis), 3))
            if not isinstance(value, list) or len(value) != 2:
                raise MeterProtocolError(f"bad scaler_unit of {obis}: {value!r}")
            self._scalers[obis] = (_as_int(value[0]), _as_int(value[1]))
        return self._scalers[obis]

    def read_registers(self, obis: Sequence[str]) -> list[RegisterValue]:
        out = []
        for code in obis:
            scaler, unit = self._scaler_unit(code)
            raw = self._request(self._gurux.read(GXDLMSRegister(code), 2))
            out.append(RegisterValue(code, _as_int(raw), scaler, unit))
        return out

    def _capture_columns(self, obis: str) -> tuple[str, ...]:
        if obis not in self._columns:  # capture objects: read once per association
            value = self._request(self._gurux.read(GXDLMSProfileGeneric(obis), 3))
            columns = []
            for item in value if isinstance(value, list) else []:
                if not isinstance(item, list) or len(item) < 2:
                    raise MeterProtocolError("bad capture object definition")
                columns.append(".".join(str(b) for b in _as_bytes(item[1])))
            self._columns[obis] = tuple(columns)
        return self._columns[obis]

    def read_profile(self, start: datetime, end: datetime) -> Profile:
        """Rows of the 15-minute load profile with start <= ts <= end (selective access)."""
        columns = self._capture_columns(LOAD_PROFILE)
        if columns[:2] != (CLOCK, "0.0.96.10.1.255"):
            self.identity.forget(self.cache_key)
            raise MeterProtocolError(f"unexpected load profile layout {columns}")
        value_columns = columns[2:]
        scalers = [Decimal(10) ** self._scaler_unit(c)[0] for c in value_columns]
        raw = self._request(
            self._gurux.readRowsByRange(
                GXDLMSProfileGeneric(LOAD_PROFILE), start.astimezone(UTC), end.astimezone(UTC)
            )
        )
        rows = []
        for row in raw if isinstance(raw, list) else []:
            if not isinstance(row, list) or len(row) != len(columns):
                self.identity.forget(self.cache_key)  # the meter's layout changed
                raise MeterProtocolError("profile row does not match its capture objects")
            rows.append(
                ProfileRow(
                    compat.decode_datetime(_as_bytes(row[0])),
                    _as_int(row[1]),
                    tuple(Decimal(_as_int(v)) * s for v, s in zip(row[2:], scalers, strict=True)),
                )
            )
        return Profile(value_columns, tuple(rows))

    def read_event_log(self) -> list[MeterEvent]:
        raw = self._request(self._gurux.read(GXDLMSProfileGeneric(EVENT_LOG), 2))
        out = []
        for row in raw if isinstance(raw, list) else []:
            if not isinstance(row, list) or len(row) < 2:
                raise MeterProtocolError("bad event log row")
            out.append(MeterEvent(compat.decode_datetime(_as_bytes(row[0])), _as_int(row[1])))
        return out

    # --- control ---
    def read_control_state(self) -> int:
        return _as_int(
            self._request(self._gurux.read(GXDLMSDisconnectControl(DISCONNECT_CONTROL), 3))
        )

    def _relay(self, method: int) -> None:
        obj = GXDLMSDisconnectControl(DISCONNECT_CONTROL)
        out = self._exchange(
            compat.client_frames_to_apdus(
                self._gurux.method(obj, method, 0, compat.data_type("INT8"))
            )[0]
        )
        # c7 01 invoke action-result
        if len(out) < 4 or out[:2] != b"\xc7\x01":
            raise MeterProtocolError(f"bad action response {out.hex()}")
        if out[3] != 0:
            raise MeterProtocolError(f"meter refused the action (result {out[3]})")

    def set_clock(self, ts: datetime) -> None:
        """Clock synchronisation (master time set): SET clock.time (attribute 2)."""
        apdu = (
            b"\xc1\x01\xc1\x00\x08"
            + bytes.fromhex("0000010000ff")
            + b"\x02\x00\x09\x0c"
            + compat.encode_datetime(ts)
        )
        out = self._exchange(apdu)
        if len(out) < 4 or out[:2] != b"\xc5\x01":
            raise MeterProtocolError(f"bad set response {out.hex()}")
        if out[3] != 0:
            raise MeterProtocolError(f"meter refused the clock (result {out[3]})")

    def disconnect(self) -> None:
        self._relay(1)

    # --- any attribute / method (limiter, activity calendar, image transfer) ---
    def get_attribute(self, class_id: int, obis: str, attribute: int) -> axdr.Value:
        """GET-request-normal of one attribute, decoded."""
        return self._get(b"\xc0\x01\xc1" + _descriptor(class_id, obis) + bytes([attribute, 0]))

    def set_attribute(self, class_id: int, obis: str, attribute: int, value: bytes) -> None:
        """SET-request-normal; ``value`` is A-XDR (:mod:`hes.dlms.cosem_data`)."""
        out = self._exchange(
            b"\xc1\x01\xc1" + _descriptor(class_id, obis) + bytes([attribute, 0]) + value
        )
        if len(out) < 4 or out[:2] != b"\xc5\x01":
            raise MeterProtocolError(f"bad set response {out.hex()}")
        if out[3] != 0:
            raise MeterProtocolError(
                f"meter refused SET {obis} attribute {attribute} (result {out[3]})"
            )

    def invoke(self, class_id: int, obis: str, method: int, parameters: bytes) -> None:
        """ACTION-request-normal with A-XDR parameters; the meter must answer success."""
        out = self._exchange(
            b"\xc3\x01\xc1" + _descriptor(class_id, obis) + bytes([method, 1]) + parameters
        )
        if len(out) < 4 or out[:2] != b"\xc7\x01":
            raise MeterProtocolError(f"bad action response {out.hex()}")
        if out[3] != 0:
            raise ActionRefused(
                f"meter refused method {method} of {obis} (result {out[3]})", out[3]
            )

    def reconnect(self) -> None:
        self._relay(2)
