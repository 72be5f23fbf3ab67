"""Push listener: meters send DataNotification APDUs (plain or general-glo-ciphered).

Protocol logic (:class:`PushDecoder`) is pure; :class:`PushListener` is the asyncio
TCP side (WRAPPER frames). A ciphered push is accepted only if its sender's system
title is known, its tag verifies and its invocation counter goes forward (a replayed
or rewound push is rejected and reported as a security event). A plain push names
its meter by logical device name; an unknown one is handed on as *discovered*.

Keys: the meter's active keys, then its pending keys (a key change not settled yet:
the meter may already use them); when both fail the tag and the decoder has a
``refresh`` (the directory re-reading a changed key store file), it is called once
and the push tried again with the keys it then gives.

The notification bodies amihub's meters push (and this decoder reads), as IDIS
push setups capture identification, time and then registers or an event:

* data: structure {logical device name, clock, +A (Wh), -A (Wh)};
* alarm / event: structure {logical device name, clock, event code (long-unsigned)},
  the event as the meter also logs it (so a later read of the log is the same event).

Stored by :class:`MdmPushSink`: registers as readings, events as EndDeviceEvents
(hes.meter_events: CIM codes, stable mRIDs), refused pushes as security
EndDeviceEvents; new events are published through the outbox in the same
transaction when a publisher is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.client.session import KeyRole, MeterEvent
from hes.dlms import axdr, compat, wrapper
from hes.engine import ResultPublisher
from hes.meter_events import (
    SecurityKind,
    end_device_events,
    security_event,
    unknown_sender_mrid,
)
from hes.security import gcm
from hes.security.gcm import InvocationCounterTracker, SecurityKeys
from hub.errors import ConfigurationError, SecurityViolation
from mdm.model import DeviceRef, DeviceState, EndDevice, EndDeviceEvent
from mdm.ports import StagedReading, UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

DATA_NOTIFICATION = 0x0F


@dataclass(frozen=True)
class KnownMeter:
    mrid: str
    keys: SecurityKeys | None = None
    #: keys of a key change not settled yet (tried when ``keys`` fail the tag)
    pending_keys: SecurityKeys | None = None

    def __repr__(self) -> str:  # never the keys
        return f"KnownMeter({self.mrid})"


class MeterDirectory(Protocol):
    """How the listener finds a pushing meter."""

    def by_system_title(self, system_title: bytes) -> KnownMeter | None: ...

    def by_logical_device_name(self, name: str) -> KnownMeter | None: ...


@dataclass(frozen=True)
class PushedData:
    """One accepted push: registers (a data push) or events (an alarm push)."""

    mrid: str | None  # None: a meter nobody knows (discovered)
    logical_device_name: str
    ts: datetime
    import_wh: Decimal | None  # None: an alarm / event push
    export_wh: Decimal | None
    ciphered: bool
    system_title: bytes | None = None
    events: tuple[MeterEvent, ...] = ()
    #: which of the meter's keys verified the push (PENDING: a key change not settled)
    key_role: KeyRole = KeyRole.ACTIVE


@dataclass(frozen=True)
class SecurityEvent:
    reason: str
    system_title: bytes | None
    at: datetime
    kind: SecurityKind = SecurityKind.VIOLATION
    mrid: str | None = None  # the meter concerned, when known
    apdu: bytes | None = None  # the refused frame, kept in the security event


class PushRejected(SecurityViolation):
    """The push was refused; the message says why (recorded as a security event)."""

    def __init__(
        self, message: str, kind: SecurityKind = SecurityKind.VIOLATION, mrid: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.mrid = mrid


def notification(
    ldn: bytes, ts: datetime, import_wh: int, export_wh: int, invoke: int = 1
) -> bytes:
    """A DataNotification APDU as the simulated meters send it (no date-time field)."""
    body = (
        b"\x02\x04\x09"
        + bytes([len(ldn)])
        + ldn
        + b"\x09\x0c"
        + compat.encode_datetime(ts)
        + b"\x06"
        + import_wh.to_bytes(4, "big")
        + b"\x06"
        + export_wh.to_bytes(4, "big")
    )
    return bytes([DATA_NOTIFICATION]) + invoke.to_bytes(4, "big") + b"\x00" + body


def event_notification(ldn: bytes, ts: datetime, code: int, invoke: int = 1) -> bytes:
    """An alarm / event DataNotification: {logical device name, clock, event code}."""
    body = (
        b"\x02\x03\x09"
        + bytes([len(ldn)])
        + ldn
        + b"\x09\x0c"
        + compat.encode_datetime(ts)
        + b"\x12"
        + code.to_bytes(2, "big")
    )
    return bytes([DATA_NOTIFICATION]) + invoke.to_bytes(4, "big") + b"\x00" + body


class PushDecoder:
    """Verifies and decodes pushes. Thread-safe (the tracker is).

    ``refresh``: called when a push fails the tag with every key the directory gives;
    True when the directory took new keys in (then the push is tried once more)."""

    def __init__(
        self,
        directory: MeterDirectory,
        tracker: InvocationCounterTracker | None = None,
        *,
        refresh: Callable[[], bool] | None = None,
    ) -> None:
        self.directory = directory
        self.tracker = tracker or InvocationCounterTracker()
        self.refresh = refresh

    def _decipher(self, apdu: bytes, known: KnownMeter) -> tuple[gcm.Deciphered, KeyRole]:
        """Verify with the active keys, then the pending ones (tag failures only)."""
        tried = [(known.keys, KeyRole.ACTIVE), (known.pending_keys, KeyRole.PENDING)]
        failure: SecurityViolation | None = None
        for keys, role in tried:
            if keys is None:
                continue
            try:
                return gcm.general_glo_decipher(apdu, _always(keys)), role
            except SecurityViolation as exc:
                if not _tag_failure(exc):
                    raise
                failure = failure or exc
        assert failure is not None  # known.keys is set
        raise failure

    def _deciphered(
        self, apdu: bytes, system_title: bytes
    ) -> tuple[KnownMeter, gcm.Deciphered, KeyRole]:
        known = self.directory.by_system_title(system_title)
        if known is None or known.keys is None:
            raise PushRejected(
                f"push from unknown system title {system_title.hex()}",
                SecurityKind.UNKNOWN_SENDER,
            )
        try:
            return (known, *self._decipher(apdu, known))
        except SecurityViolation as exc:
            if _tag_failure(exc) and self.refresh is not None and self.refresh():
                again = self.directory.by_system_title(system_title)
                if again is not None and again.keys is not None:
                    known = again
                    try:
                        return (known, *self._decipher(apdu, known))
                    except SecurityViolation as retry:
                        exc = retry
            kind = (
                SecurityKind.AUTHENTICATION_FAILED if _tag_failure(exc) else SecurityKind.VIOLATION
            )
            raise PushRejected(f"push refused: {exc}", kind, known.mrid) from None

    def decode(self, apdu: bytes) -> PushedData:
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            system_title = gcm.general_glo_system_title(apdu)
            sender, clear, role = self._deciphered(apdu, system_title)
            if role is KeyRole.PENDING:
                log.info(
                    "push from %s verified with its pending keys (key change not settled)",
                    sender.mrid,
                )
            try:
                self.tracker.accept(system_title, clear.invocation_counter)
            except SecurityViolation as exc:
                raise PushRejected(
                    f"replayed or rewound push: {exc}", SecurityKind.REPLAY, sender.mrid
                ) from None
            try:  # the system title authenticates, not the name
                data = self._parse(clear.apdu)
            except PushRejected as exc:
                raise PushRejected(str(exc), exc.kind, sender.mrid) from None
            return replace(
                data, mrid=sender.mrid, ciphered=True, system_title=system_title, key_role=role
            )
        data = self._parse(apdu)
        known = self.directory.by_logical_device_name(data.logical_device_name)
        if known is not None and known.keys is not None:
            raise PushRejected(
                f"plain push for secured meter {known.mrid}",
                SecurityKind.PLAIN_FOR_SECURED,
                known.mrid,
            )
        return replace(data, mrid=known.mrid if known else None)

    @staticmethod
    def _parse(apdu: bytes) -> PushedData:
        if len(apdu) < 6 or apdu[0] != DATA_NOTIFICATION:
            raise PushRejected("not a DataNotification")
        pos = 5
        if apdu[pos] == 0x0C:  # optional date-time
            pos += 13
        elif apdu[pos] == 0x00:
            pos += 1
        else:
            raise PushRejected("bad DataNotification date-time")
        try:
            body = axdr.decode_all(apdu[pos:])
        except axdr.AxdrError as exc:
            raise PushRejected(f"bad notification body: {exc}") from None
        if not isinstance(body, list) or len(body) not in (3, 4):
            raise PushRejected("unexpected notification body")
        name, clock, *values = body
        numbers = [v for v in values if isinstance(v, int)]
        if (
            not isinstance(name, bytes)
            or not isinstance(clock, bytes)
            or len(numbers) != len(values)
        ):
            raise PushRejected("unexpected notification body")
        ldn = name.decode("ascii", "replace")
        ts = compat.decode_datetime(clock)
        if len(numbers) == 1:  # alarm / event push
            return PushedData(
                None, ldn, ts, None, None, False, events=(MeterEvent(ts, numbers[0]),)
            )
        return PushedData(None, ldn, ts, Decimal(numbers[0]), Decimal(numbers[1]), False)


class MdmPushSink:
    """Stores accepted pushes: +A / -A as register readings, pushed events as
    EndDeviceEvents (once: stable mRIDs); a meter nobody knows is registered as
    DISCOVERED (mRID ``DISCOVERED-<logical device name>``). :meth:`security` stores a
    refused push as a security EndDeviceEvent of its meter, or of the pseudo-asset
    ``UNKNOWN-SYSTEM-TITLE-<hex>`` when no meter has its system title. With a
    ``publisher`` (hub.headend.HeadEndOutbox) new events are published as ``created
    EndDeviceEvents`` in the same transaction."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        utility_code: str,
        publisher: ResultPublisher | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.utility_code = utility_code
        self.publisher = publisher
        self._lock = threading.Lock()

    def _utility(self, uow: UnitOfWork) -> int:
        utility = uow.utilities.get(self.utility_code)
        if utility is None or utility.id is None:
            raise ConfigurationError(f"unknown utility {self.utility_code}")
        return utility.id

    def _record(self, uow: UnitOfWork, utility_id: int, events: list[EndDeviceEvent]) -> None:
        if self.publisher is None:
            uow.events.add_new(utility_id, events)
        else:
            self.publisher.record_events(uow, utility_id, events)

    def security(self, event: SecurityEvent) -> None:
        """A refused push, stored (and published) as a security EndDeviceEvent."""
        device = event.mrid or unknown_sender_mrid(event.system_title)
        with self._lock, self.uow_factory() as uow:
            utility_id = self._utility(uow)
            self._record(
                uow,
                utility_id,
                [
                    security_event(
                        device,
                        event.kind,
                        event.at,
                        reason=event.reason,
                        source="push",
                        system_title=event.system_title,
                        apdu=event.apdu,
                    )
                ],
            )
            uow.commit()

    def __call__(self, data: PushedData) -> None:
        with self._lock, self.uow_factory() as uow:
            utility_id = self._utility(uow)
            mrid = data.mrid
            if mrid is None:
                mrid = f"DISCOVERED-{data.logical_device_name}"
                if uow.devices.find(utility_id, DeviceRef(mrid=mrid)) is None:
                    uow.devices.add(
                        utility_id,
                        EndDevice(
                            mrid,
                            self.utility_code,
                            serial_number=data.logical_device_name,
                            state=DeviceState.DISCOVERED,
                        ),
                    )
            registers = [
                StagedReading(1, str(obis_to_reading_type(obis)), data.ts, wh / 1000, "")
                for obis, wh in (
                    ("1.0.1.8.0.255", data.import_wh),
                    ("1.0.2.8.0.255", data.export_wh),
                )
                if wh is not None
            ]
            if registers:
                staging = uow.readings.staging()
                staging.add_meter(1, DeviceRef(mrid=mrid))
                staging.add_readings(registers)
                staging.apply(utility_id)
            if data.events:
                self._record(uow, utility_id, end_device_events(mrid, data.events, source="push"))
            uow.commit()


def _always(keys: SecurityKeys) -> Callable[[bytes], SecurityKeys]:
    return lambda _system_title: keys


def _tag_failure(exc: SecurityViolation) -> bool:
    return "tag" in str(exc)


PushHandler = Callable[[PushedData], None]
SecurityHandler = Callable[[SecurityEvent], None]


class PushListener:
    """asyncio TCP listener for WRAPPER-framed pushes; runs in its own thread."""

    def __init__(
        self,
        decoder: PushDecoder,
        on_push: PushHandler,
        on_security_event: SecurityHandler,
        host: str = "127.0.0.1",
        port: int = 4059,
    ) -> None:
        self.decoder = decoder
        self.on_push = on_push
        self.on_security_event = on_security_event
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dlms-push", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(wrapper.HEADER_SIZE)
                _source, _destination, length = wrapper.parse_header(header)
                apdu = await reader.readexactly(length)
                self.handle(apdu)
        except (asyncio.IncompleteReadError, ConnectionError, wrapper.FrameError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def handle(self, apdu: bytes) -> None:
        system_title = None
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            with contextlib.suppress(SecurityViolation):
                system_title = gcm.general_glo_system_title(apdu)
        try:
            data = self.decoder.decode(apdu)
        except PushRejected as exc:
            log.warning("push rejected: %s", exc)
            self.on_security_event(
                SecurityEvent(str(exc), system_title, datetime.now(UTC), exc.kind, exc.mrid, apdu)
            )
            return
        except SecurityViolation as exc:
            log.warning("push rejected: %s", exc)
            self.on_security_event(
                SecurityEvent(str(exc), system_title, datetime.now(UTC), apdu=apdu)
            )
            return
        except (ValueError, IndexError) as exc:  # a malformed field the decoder did not expect
            reason = f"malformed push: {type(exc).__name__}: {exc}"
            log.warning("push rejected: %s", reason)
            self.on_security_event(
                SecurityEvent(reason, system_title, datetime.now(UTC), apdu=apdu)
            )
            return
        self.on_push(data)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, self.host, self.port, reuse_address=True)
        )
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for w in list(self._writers):
            w.close()
        self._loop.run_until_complete(self._server.wait_closed())
        tasks = [t for t in asyncio.all_tasks(self._loop)]
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> PushListener:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
