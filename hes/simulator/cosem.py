"""The COSEM object model of a simulated meter, on gurux's object classes.

Values are live: every read asks the :class:`MeterState` (closed-form energy,
the meter's clock with its drift, the relay). The gurux server and its objects
are built per association (cheap), so a fleet of 10,000 meters costs only their
small MeterState objects when idle.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gurux_dlms.enums import DataType, ErrorCode, ObjectType, Unit
from gurux_dlms.objects import GXDLMSClock, GXDLMSData, GXDLMSRegister

from hes.dlms import compat, cosem_data
from hes.dlms.compat import (
    CompatActivityCalendar,
    CompatDisconnectControl,
    CompatImageTransfer,
    CompatLimiter,
    CompatProfileGeneric,
    CompatSecuritySetup,
    CompatServer,
    EntrySelection,
    ProfileSelection,
    RangeSelection,
    encode_datetime,
)
from hes.security.gcm import encode_length
from hes.security.keywrap import GLOBAL_KEY_TRANSFER, SECURITY_SETUP, KeyTransferError
from hes.simulator.meter import (
    INTERVAL,
    INTERVALS_PER_DAY,
    PROFILE_DEPTH_DAYS,
    ControlState,
    EventCode,
    ImageTransferStatus,
    MeterState,
    SecurityPolicy,
    interval_end,
    interval_index,
)

CLOCK = "0.0.1.0.0.255"
LOGICAL_DEVICE_NAME = "0.0.42.0.0.255"
SERIAL_NUMBER = "0.0.96.1.0.255"
INVOCATION_COUNTER = "0.0.43.1.0.255"
ACTIVE_IMPORT = "1.0.1.8.0.255"
ACTIVE_EXPORT = "1.0.2.8.0.255"
ACTIVE_IMPORT_T1 = "1.0.1.8.1.255"
ACTIVE_IMPORT_T2 = "1.0.1.8.2.255"
LOAD_PROFILE = "1.0.99.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"
DISCONNECT_CONTROL = "0.0.96.3.10.255"
PROFILE_STATUS = "0.0.96.10.1.255"
EVENT_CODE = "0.0.96.11.0.255"
INSTANTANEOUS_POWER = "1.0.1.7.0.255"  # +A power, W: the limiter's monitored value
FIRMWARE_ID = "1.0.0.2.0.255"  # active firmware identifier
LIMITER = "0.0.17.0.0.255"
ACTIVITY_CALENDAR = "0.0.13.0.0.255"
IMAGE_TRANSFER = "0.0.44.0.0.255"

#: scaler exponents: +A/-A count Wh (they are captured in the profile); the rate
#: registers count 10 Wh, as some meters do, so readers must apply the scaler.
REGISTER_SCALER = {
    "1.0.1.8.0.255": 0,
    "1.0.2.8.0.255": 0,
    "1.0.1.8.1.255": 1,
    "1.0.1.8.2.255": 1,
    INSTANTANEOUS_POWER: 0,
}
SERVER_MAX_PDU = 1024
STATUS_POWER_DOWN = 0x80

LOAD_PROFILE_COLUMNS = [
    (ObjectType.CLOCK, CLOCK, 2),
    (ObjectType.DATA, PROFILE_STATUS, 2),
    (ObjectType.REGISTER, ACTIVE_IMPORT, 2),
    (ObjectType.REGISTER, ACTIVE_EXPORT, 2),
]
EVENT_LOG_COLUMNS = [(ObjectType.CLOCK, CLOCK, 2), (ObjectType.DATA, EVENT_CODE, 2)]

Now = Callable[[], datetime]


class _LiveClock(GXDLMSClock):  # type: ignore[misc]
    def __init__(self, meter: MeterState, now: Now) -> None:
        super().__init__(CLOCK)
        self._meter = meter
        self._now = now

    def getValue(self, settings: Any, e: Any) -> Any:  # noqa: N802
        if e.index == 2:
            e.byteArray = True
            return b"\x09\x0c" + encode_datetime(self._meter.now(self._now()))
        return super().getValue(settings, e)

    def setValue(self, settings: Any, e: Any) -> None:  # noqa: N802
        """Clock synchronisation: the new time sets the meter's drift (and logs events)."""
        if e.index != 2 or not isinstance(e.value, bytes | bytearray):
            e.error = ErrorCode.READ_WRITE_DENIED
            return
        true_now = self._now()
        new = compat.decode_datetime(bytes(e.value))
        old = self._meter.now(true_now)
        self._meter.faults.clock_drift_s = (new - true_now).total_seconds()
        with self._meter.lock:
            self._meter.events.append((old, EventCode.CLOCK_ADJUSTED_OLD))
            self._meter.events.append((new, EventCode.CLOCK_ADJUSTED_NEW))


class _LiveRegister(GXDLMSRegister):  # type: ignore[misc]
    def __init__(self, ln: str, value: Callable[[], int], unit: int = Unit.ACTIVE_ENERGY) -> None:
        super().__init__(ln)
        compat.set_scaler_unit(self, REGISTER_SCALER[ln], unit)
        self.setDataType(2, DataType.UINT32)
        self._value = value

    def getValue(self, settings: Any, e: Any) -> Any:  # noqa: N802
        if e.index == 2:
            return self._value()
        return super().getValue(settings, e)


class _LiveData(GXDLMSData):  # type: ignore[misc]
    def __init__(self, ln: str, value: Callable[[], Any], data_type: Any) -> None:
        super().__init__(ln)
        self.setDataType(2, data_type)
        self._value = value

    def getValue(self, settings: Any, e: Any) -> Any:  # noqa: N802
        if e.index == 2:
            return self._value()
        return super().getValue(settings, e)


def _u32(v: int) -> bytes:
    return b"\x06" + (v & 0xFFFFFFFF).to_bytes(4, "big")


def _array(rows: list[bytes]) -> bytes:
    return b"\x01" + encode_length(len(rows)) + b"".join(rows)


def _no_write(attribute: int, value: Any) -> bool:
    return False


class MeterObjects:
    """Builds the gurux server of one association of one meter."""

    def __init__(self, meter: MeterState, now: Now) -> None:
        self.meter = meter
        self.now = now
        self.drop_requested = False  # the meter dies in the middle of this answer

    # --- values ---
    def register_value(self, ln: str) -> int:
        k = self.meter.current_interval(self.now())
        if ln == ACTIVE_EXPORT:
            wh = self.meter.export_wh(k)
        else:
            rate = {ACTIVE_IMPORT: None, ACTIVE_IMPORT_T1: 1, ACTIVE_IMPORT_T2: 2}[ln]
            wh = self.meter.energy_wh(k, rate)
        return int(wh // 10 ** REGISTER_SCALER[ln])

    def _profile_window(self) -> tuple[int, int]:
        last = self.meter.current_interval(self.now())
        return last - PROFILE_DEPTH_DAYS * INTERVALS_PER_DAY + 1, last

    def _in_outage(self, k: int) -> bool:
        ts = interval_end(k)
        return any(start < ts <= end for start, end in self.meter.faults.outages)

    def profile_rows(self, selection: ProfileSelection) -> bytes:
        first, last = self._profile_window()
        if isinstance(selection, RangeSelection):
            lo = max(first, math.ceil((selection.start - interval_end(0)) / INTERVAL))
            hi = min(last, interval_index(selection.end))
        elif isinstance(selection, EntrySelection):
            lo = first + max(selection.from_entry, 1) - 1
            hi = last if selection.to_entry == 0 else min(last, first + selection.to_entry - 1)
        else:
            lo, hi = max(first, last - INTERVALS_PER_DAY + 1), last  # unbounded: one day
        faults = self.meter.faults
        if faults.drop_profile_after is not None and interval_end(hi) > faults.drop_profile_after:
            faults.drop_profile_after = None
            self.drop_requested = True
        else:
            self.meter.profile_requests.append((interval_end(lo), interval_end(hi)))
        rows = []
        outages = bool(faults.outages)
        for k in range(lo, hi + 1):
            if outages and self._in_outage(k):
                continue  # no capture while the meter had no power
            rows.append(
                b"\x02\x04\x09\x0c"
                + encode_datetime(interval_end(k))
                + b"\x11\x00"
                + _u32(self.meter.energy_wh(k))
                + _u32(self.meter.export_wh(k))
            )
        return _array(rows)

    def profile_entries(self) -> int:
        first, last = self._profile_window()
        return last - first + 1

    def event_rows(self, selection: ProfileSelection) -> bytes:
        self.supervise()
        events = self.meter.event_log()
        if isinstance(selection, RangeSelection):
            events = [e for e in events if selection.start <= e[0] <= selection.end]
        elif isinstance(selection, EntrySelection):
            stop = None if selection.to_entry == 0 else selection.to_entry
            events = events[selection.from_entry - 1 : stop]
        return _array(
            [
                b"\x02\x02\x09\x0c" + encode_datetime(ts) + b"\x11" + bytes([code])
                for ts, code in events
            ]
        )

    def relay_action(self, method: int) -> bool:
        at = self.meter.now(self.now())
        if method == 1:
            return self.meter.remote_disconnect(at)
        return self.meter.remote_reconnect(at)

    def supervise(self) -> None:
        self.meter.supervise(self.meter.now(self.now()))

    def relay_state(self) -> tuple[bool, int]:
        self.supervise()
        state = self.meter.control_state
        return state == ControlState.CONNECTED, int(state)

    # --- limiter (class 71) ---
    def limiter_read(self, attribute: int) -> bytes | None:
        self.supervise()
        lim = self.meter.limiter
        if attribute == 2:  # monitored_value: instantaneous +A, attribute 2
            return cosem_data.structure(
                cosem_data.long_unsigned(3),
                cosem_data.logical_name(INSTANTANEOUS_POWER),
                cosem_data.integer(2),
            )
        values = {
            3: lim.threshold_active,
            4: lim.threshold_normal,
            5: lim.threshold_emergency,
            6: lim.min_over_s,
            7: lim.min_under_s,
        }
        if attribute in values:
            return cosem_data.double_long_unsigned(values[attribute])
        if attribute == 10:
            return cosem_data.boolean(lim.emergency)
        return None

    def limiter_write(self, attribute: int, value: Any) -> bool:
        if attribute not in (4, 5, 6, 7) or not isinstance(value, int) or value < 0:
            return False
        self.supervise()  # what the meter did up to now, under the old threshold
        self.meter.set_limiter(attribute, int(value), self.meter.now(self.now()))
        self.supervise()
        return True

    # --- activity calendar (class 20) ---
    def calendar_read(self, attribute: int) -> bytes | None:
        self.supervise()
        if 2 <= attribute <= 5:
            return self.meter.calendar_active.encode()[attribute - 2]
        if 6 <= attribute <= 9:
            return self.meter.calendar_passive.encode()[attribute - 6]
        if attribute == 10:
            return cosem_data.date_time(self.meter.calendar_activate_at)
        return None

    def calendar_write(self, attribute: int, value: Any) -> bool:
        try:
            if 6 <= attribute <= 9:
                with self.meter.lock:
                    self.meter.calendar_passive = self.meter.calendar_passive.with_part(
                        attribute - 6, value
                    )
                return True
            if attribute == 10 and isinstance(value, bytes | bytearray):
                at = cosem_data.parse_date_time(bytes(value))
                with self.meter.lock:
                    self.meter.calendar_activate_at = at
                self.supervise()
                return True
        except ValueError:
            return False
        return False

    def calendar_action(self, method: int, parameters: Any) -> bool:
        if method != 1:
            return False
        self.meter.activate_calendar(self.meter.now(self.now()))
        return True

    # --- image transfer (class 18) ---
    def image_read(self, attribute: int) -> bytes | None:
        img = self.meter.image
        with self.meter.lock:
            if attribute == 2:
                return cosem_data.double_long_unsigned(img.block_size)
            if attribute == 3:
                n = img.block_count
                bits = "".join("1" if i in img.blocks else "0" for i in range(n))
                packed = int(bits or "0", 2) << (-n % 8) if n else 0
                return b"\x04" + encode_length(n) + packed.to_bytes(-(-n // 8), "big")
            if attribute == 4:
                return cosem_data.double_long_unsigned(img.first_not_transferred())
            if attribute == 5:
                return cosem_data.boolean(img.enabled)
            if attribute == 6:
                return cosem_data.enum(int(img.status))
            if attribute == 7:
                if img.status < ImageTransferStatus.VERIFICATION_SUCCESSFUL:
                    return cosem_data.array([])
                return cosem_data.array(
                    [
                        cosem_data.structure(
                            cosem_data.double_long_unsigned(img.size),
                            cosem_data.octet_string(img.identifier),
                            cosem_data.octet_string(b""),
                        )
                    ]
                )
        return None

    def image_write(self, attribute: int, value: Any) -> bool:
        if attribute == 5 and isinstance(value, bool):
            self.meter.image.enabled = value
            return True
        return False

    def image_action(self, method: int, parameters: Any) -> bool:
        at = self.meter.now(self.now())
        try:
            if method == 1:
                identifier, size = parameters
                return self.meter.image_initiate(bytes(identifier), int(size))
            if method == 2:
                number, data = parameters
                ok = self.meter.image_block(int(number), bytes(data))
                if ok and self.meter.faults.drop_after_image_block == int(number):
                    self.meter.faults.drop_after_image_block = None
                    self.drop_requested = True
                return ok
        except (TypeError, ValueError):
            return False
        if method == 3:
            return self.meter.image_verify(at)
        if method == 4:
            return self.meter.image_activate(at)
        return False

    # --- security setup (class 64), HLS meters only ---
    def security_read(self, attribute: int) -> bytes | None:
        if attribute == 2:  # security_policy (version 0): 3 = authenticated and encrypted
            return cosem_data.enum(3)
        if attribute == 3:  # security_suite 0: AES-GCM-128
            return cosem_data.enum(0)
        if attribute == 5:
            return cosem_data.octet_string(self.meter.system_title)
        return None

    def security_action(self, method: int, parameters: Any) -> bool:
        """global_key_transfer: all keys unwrapped with the current KEK, or none applied."""
        if method != GLOBAL_KEY_TRANSFER:
            return False
        faults = self.meter.faults
        if faults.drop_before_key_transfer:
            faults.drop_before_key_transfer = False
            self.drop_requested = True
            return False
        try:
            self.meter.transfer_keys(parameters)
        except KeyTransferError:
            return False
        if faults.drop_after_key_transfer or faults.silent_after_key_transfer:
            faults.no_answer = faults.silent_after_key_transfer
            faults.drop_after_key_transfer = faults.silent_after_key_transfer = False
            self.drop_requested = True
        return True

    # --- servers ---
    def _common(self) -> list[Any]:
        ldn = self.meter.logical_device_name.encode()
        return [
            _LiveData(LOGICAL_DEVICE_NAME, lambda: ldn, DataType.OCTET_STRING),
            _LiveData(SERIAL_NUMBER, lambda: self.meter.serial.encode(), DataType.OCTET_STRING),
            _LiveData(INVOCATION_COUNTER, lambda: self.meter.client_counter(1), DataType.UINT32),
            _LiveClock(self.meter, self.now),
        ]

    def public_server(self) -> CompatServer:
        """What the public client (SAP 16) sees: identity, clock, invocation counter."""
        server = CompatServer()
        compat.prepare_server(server, self._common(), SERVER_MAX_PDU)
        return server

    def management_server(self) -> CompatServer:
        objects = self._common()
        for ln in (ACTIVE_IMPORT, ACTIVE_EXPORT, ACTIVE_IMPORT_T1, ACTIVE_IMPORT_T2):
            objects.append(_LiveRegister(ln, functools.partial(self.register_value, ln)))
        lp = CompatProfileGeneric(
            LOAD_PROFILE, self.profile_rows, self.profile_entries, int(INTERVAL.total_seconds())
        )
        lp.captureObjects.extend(compat.encode_capture_objects(LOAD_PROFILE_COLUMNS))
        ev = CompatProfileGeneric(
            EVENT_LOG, self.event_rows, lambda: len(self.meter.event_log()), 0
        )
        ev.captureObjects.extend(compat.encode_capture_objects(EVENT_LOG_COLUMNS))
        objects += [lp, ev, CompatDisconnectControl(self.relay_action, self.relay_state)]
        objects += [
            _LiveRegister(
                INSTANTANEOUS_POWER,
                lambda: self.meter.power_w(self.meter.now(self.now())),
                Unit.ACTIVE_POWER,
            ),
            _LiveData(FIRMWARE_ID, lambda: self.meter.firmware.encode(), DataType.OCTET_STRING),
            CompatLimiter(LIMITER, self.limiter_read, self.limiter_write),
            CompatActivityCalendar(
                ACTIVITY_CALENDAR, self.calendar_read, self.calendar_write, self.calendar_action
            ),
            CompatImageTransfer(
                IMAGE_TRANSFER, self.image_read, self.image_write, self.image_action
            ),
        ]
        if self.meter.policy is SecurityPolicy.HLS_GMAC:  # reached only when ciphered
            objects.append(
                CompatSecuritySetup(
                    SECURITY_SETUP, self.security_read, _no_write, self.security_action
                )
            )
        server = CompatServer()
        compat.prepare_server(server, objects, SERVER_MAX_PDU)
        return server
