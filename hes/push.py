"""Push listener: meters send DataNotification APDUs (plain or general-glo-ciphered).

Protocol logic (:class:`PushDecoder`) is pure; :class:`PushListener` is the asyncio
TCP side (WRAPPER frames). A ciphered push is accepted only if its sender's system
title is known, its tag verifies and its invocation counter goes forward (a replayed
or rewound push is rejected and reported as a security event). A plain push names
its meter by logical device name: it is refused unless the decoder accepts
unauthenticated pushes (``[hes.push] accept_unauthenticated``) and the directory knows
that meter without keys; a plain push of a meter nobody knows is always refused.

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
EndDeviceEvents, a batch of pushes in one transaction; with a publisher, the new
events and the readings newly stored or changed are published through the outbox in
that transaction. ``amihub serve`` runs the listener with ``[hes.push]``
(adapters/dlms/push_service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from cim_schemas.codes.reading_type import obis_to_reading_type
from cim_schemas.errors import AmihubError, ConfigurationError, SecurityViolation
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
from mdm.model import DeviceRef, DeviceState, EndDevice, EndDeviceEvent
from mdm.ports import StagedReading, UnitOfWork, UnitOfWorkFactory
from mdm.security_counters import CounterChannel, CounterClaim

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

    mrid: str | None  # None only before the decoder named the meter
    logical_device_name: str
    ts: datetime
    import_wh: Decimal | None  # None: an alarm / event push
    export_wh: Decimal | None
    ciphered: bool
    system_title: bytes | None = None
    events: tuple[MeterEvent, ...] = ()
    #: which of the meter's keys verified the push (PENDING: a key change not settled)
    key_role: KeyRole = KeyRole.ACTIVE
    #: a ciphered push's invocation counter (checked again against the store when stored)
    invocation_counter: int | None = None
    #: the frame as received (kept in the security event if the store refuses it)
    apdu: bytes | None = field(default=None, repr=False)


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
        accept_unauthenticated: bool = False,
    ) -> None:
        self.directory = directory
        self.tracker = tracker or InvocationCounterTracker()
        self.refresh = refresh
        #: plain pushes of meters the directory knows without keys (LLS meters) are
        #: accepted; off by default: every unauthenticated push is refused
        self.accept_unauthenticated = accept_unauthenticated

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
                data,
                mrid=sender.mrid,
                ciphered=True,
                system_title=system_title,
                key_role=role,
                invocation_counter=clear.invocation_counter,
                apdu=apdu,
            )
        data = self._parse(apdu)
        known = self.directory.by_logical_device_name(data.logical_device_name)
        if known is not None and known.keys is not None:
            raise PushRejected(
                f"plain push for secured meter {known.mrid}",
                SecurityKind.PLAIN_FOR_SECURED,
                known.mrid,
            )
        if known is None:
            raise PushRejected(
                f"unauthenticated push from unknown meter {data.logical_device_name[:64]!r}: "
                "meters are registered from authenticated pushes only"
            )
        if not self.accept_unauthenticated:
            raise PushRejected(
                f"unauthenticated push from {known.mrid} refused "
                "([hes.push] accept_unauthenticated is off)",
                SecurityKind.VIOLATION,
                known.mrid,
            )
        return replace(data, mrid=known.mrid)

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
        try:
            ts = compat.decode_datetime(clock)
        except compat.BadDateTime as exc:
            raise PushRejected(f"bad notification clock: {exc}") from None
        if len(numbers) == 1:  # alarm / event push
            return PushedData(
                None, ldn, ts, None, None, False, events=(MeterEvent(ts, numbers[0]),)
            )
        return PushedData(None, ldn, ts, Decimal(numbers[0]), Decimal(numbers[1]), False)


#: the registers a data push carries: OBIS -> the PushedData field
_PUSHED_REGISTERS: tuple[tuple[str, str], ...] = (
    ("1.0.1.8.0.255", "import_wh"),
    ("1.0.2.8.0.255", "export_wh"),
)

#: a pushed register reading: (meter mRID, ReadingType, instant UTC) -> kWh
_ReadingKey = tuple[str, str, datetime]


@dataclass(frozen=True)
class PushWrite:
    """What :meth:`MdmPushSink.write` did with one batch."""

    pushes: int
    refused: int
    readings_stored: int  # new rows and rows that superseded a stored version
    readings_published: int
    events_new: int  # meter events and security events not stored before
    unknown_meters: tuple[str, ...] = ()  # known to the directory, not in the MDM
    replays: int = 0  # ciphered pushes the store's counters refused (counted in refused)


def _without_meter_refused(item: PushedData | SecurityEvent) -> PushedData | SecurityEvent:
    """A push that names no known meter is refused (no meter is made from it)."""
    if isinstance(item, SecurityEvent) or item.mrid is not None:
        return item
    return SecurityEvent(
        f"push of {item.logical_device_name[:64]!r} names no known meter",
        item.system_title,
        datetime.now(UTC),
        SecurityKind.VIOLATION,
        None,
        item.apdu,
    )


class MdmPushSink:
    """Stores accepted pushes: +A / -A as register readings, pushed events as
    EndDeviceEvents (once: stable mRIDs); with ``register_unknown`` a meter of the
    directory that authenticated its push but is not in the MDM is registered as
    DISCOVERED (its directory mRID). A refused push is stored
    as a security EndDeviceEvent of its meter, or of the pseudo-asset
    ``UNKNOWN-SYSTEM-TITLE-<hex>`` when no meter has its system title.

    :meth:`write` takes a batch (pushes and refused pushes) in one transaction. With a
    ``publisher`` (hub.headend.HeadEndOutbox), in that transaction: the new events as
    one ``created EndDeviceEvents`` message, and the readings that were newly stored
    or changed a stored value (not those already stored as they are: a re-sent push)
    as one ``created MeterReadings`` message. A rollback stores and publishes nothing.
    ``__call__`` and :meth:`security` write one push."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        utility_code: str,
        publisher: ResultPublisher | None = None,
        *,
        register_unknown: bool = False,
    ) -> None:
        self.uow_factory = uow_factory
        self.utility_code = utility_code
        self.publisher = publisher
        #: a meter that authenticated its push (the directory has its keys) but is not in
        #: the MDM is registered as DISCOVERED and its readings stored; off by default
        #: (its events are stored, its readings are not)
        self.register_unknown = register_unknown
        self._lock = threading.Lock()

    def _utility(self, uow: UnitOfWork) -> int:
        utility = uow.utilities.get(self.utility_code)
        if utility is None or utility.id is None:
            raise ConfigurationError(f"unknown utility {self.utility_code}")
        return utility.id

    def security(self, event: SecurityEvent) -> None:
        """A refused push, stored (and published) as a security EndDeviceEvent."""
        self.write([event])

    def __call__(self, data: PushedData) -> None:
        self.write([data])

    def stored_counters(self) -> dict[bytes, int]:
        """The last push counter the store accepted per system title (to seed the
        listener's tracker at start)."""
        with self.uow_factory() as uow:
            return uow.invocation_counters.last(CounterChannel.PUSH)

    def write(self, items: Sequence[PushedData | SecurityEvent]) -> PushWrite:
        items = [_without_meter_refused(i) for i in items]
        with self._lock, self.uow_factory() as uow:
            checked, replays = self._replays_refused(uow, items)
            pushes = [i for i in checked if isinstance(i, PushedData)]
            refused = [i for i in checked if isinstance(i, SecurityEvent)]
            utility_id = self._utility(uow)
            meters = [self._meter(uow, utility_id, data) for data in pushes]
            readings: dict[_ReadingKey, Decimal] = {}  # a repeated key: the last push wins
            for mrid, data in zip(meters, pushes, strict=True):
                ts = data.ts.astimezone(UTC)
                for obis, field_name in _PUSHED_REGISTERS:
                    wh: Decimal | None = getattr(data, field_name)
                    if wh is not None:
                        readings[(mrid, str(obis_to_reading_type(obis)), ts)] = wh / 1000
            new = (
                self._changed(uow, utility_id, readings) if self.publisher is not None else readings
            )
            stored, unknown = self._store(uow, utility_id, readings)
            events = [e for m, d in zip(meters, pushes, strict=True) for e in self._events(m, d)]
            events += [self._security_event(e) for e in refused]
            if self.publisher is None:
                events_new = len(uow.events.add_new(utility_id, events))
            else:
                events_new = len(self.publisher.record_events(uow, utility_id, events))
            published = 0
            if self.publisher is not None and stored:
                by_meter: dict[str, list[tuple[str, datetime, Decimal, str]]] = {}
                for (mrid, rt, ts), kwh in new.items():
                    if mrid not in unknown:
                        by_meter.setdefault(mrid, []).append((rt, ts, kwh, ""))
                if by_meter:
                    self.publisher.publish_readings(uow, list(by_meter.items()))
                    published = sum(len(rows) for rows in by_meter.values())
            uow.commit()
        for replay in replays:  # after the commit: a batch tried again logs once
            log.warning(
                "push refused from system title %s (against the stored counter): %s",
                replay.system_title.hex() if replay.system_title else "-",
                replay.reason,
            )
        for mrid in sorted(unknown):
            log.warning("pushing meter %s is not in the MDM: its readings were not stored", mrid)
        return PushWrite(
            len(pushes),
            len(refused),
            stored,
            published,
            events_new,
            tuple(sorted(unknown)),
            len(replays),
        )

    @staticmethod
    def _replays_refused(
        uow: UnitOfWork, items: Sequence[PushedData | SecurityEvent]
    ) -> tuple[list[PushedData | SecurityEvent], list[SecurityEvent]]:
        """The ciphered pushes decided against the store's counters, in the batch's
        transaction (their rows stay locked until it ends, so a restarted or a second
        listener cannot accept the same counter): a push whose counter does not go
        forward becomes a replay security event, its data not stored."""
        checked = list(items)
        positions: list[int] = []
        claims: list[CounterClaim] = []
        for i, item in enumerate(items):
            if (
                isinstance(item, PushedData)
                and item.system_title is not None
                and item.invocation_counter is not None
            ):
                positions.append(i)
                claims.append(CounterClaim(item.system_title, item.invocation_counter))
        if not claims:
            return checked, []
        now = datetime.now(UTC)
        decisions = uow.invocation_counters.advance(CounterChannel.PUSH, claims, now)
        replays: list[SecurityEvent] = []
        for i, claim, decision in zip(positions, claims, decisions, strict=True):
            if decision.accepted:
                continue
            data = items[i]
            assert isinstance(data, PushedData)
            replay = SecurityEvent(
                f"replayed or rewound push: invocation counter {claim.invocation_counter} "
                f"of {claim.system_title.hex()} does not go forward (last {decision.last}, "
                "in the store)",
                claim.system_title,
                now,
                SecurityKind.REPLAY,
                data.mrid,
                data.apdu,
            )
            checked[i] = replay
            replays.append(replay)
        return checked, replays

    def _meter(self, uow: UnitOfWork, utility_id: int, data: PushedData) -> str:
        """The push's meter mRID; with ``register_unknown``, a meter that authenticated
        its push and is not in the MDM is registered as DISCOVERED."""
        mrid = data.mrid
        assert mrid is not None  # pushes without a known meter were refused before
        if (
            self.register_unknown
            and data.ciphered
            and uow.devices.find(utility_id, DeviceRef(mrid=mrid)) is None
        ):
            uow.devices.add(
                utility_id,
                EndDevice(
                    mrid,
                    self.utility_code,
                    serial_number=data.logical_device_name,
                    state=DeviceState.DISCOVERED,
                ),
            )
            log.info("meter %s registered (DISCOVERED) from its authenticated push", mrid)
        return mrid

    @staticmethod
    def _events(mrid: str, data: PushedData) -> list[EndDeviceEvent]:
        return end_device_events(mrid, data.events, source="push") if data.events else []

    @staticmethod
    def _security_event(event: SecurityEvent) -> EndDeviceEvent:
        return security_event(
            event.mrid or unknown_sender_mrid(event.system_title),
            event.kind,
            event.at,
            reason=event.reason,
            source="push",
            system_title=event.system_title,
            apdu=event.apdu,
        )

    @staticmethod
    def _changed(
        uow: UnitOfWork, utility_id: int, readings: dict[_ReadingKey, Decimal]
    ) -> dict[_ReadingKey, Decimal]:
        """The readings not stored yet with this value (one query for the batch)."""
        if not readings:
            return {}
        instants = [ts for _, _, ts in readings]
        texts = uow.readings.meter_texts(
            utility_id,
            sorted({mrid for mrid, _, _ in readings}),
            sorted({rt for _, rt, _ in readings}),
            min(instants) - timedelta(microseconds=1),
            max(instants),
        )
        wanted = {(key[0], key[1], key[2].isoformat()): key for key in readings}
        same: set[_ReadingKey] = set()
        try:
            for row in texts.rows:
                key = wanted.get((row.device_mrid, row.reading_type, row.ts))
                if key is not None and not row.quality and Decimal(row.value) == readings[key]:
                    same.add(key)
        finally:
            close = getattr(texts.rows, "close", None)
            if close is not None:
                close()
        return {k: v for k, v in readings.items() if k not in same}

    @staticmethod
    def _store(
        uow: UnitOfWork, utility_id: int, readings: dict[_ReadingKey, Decimal]
    ) -> tuple[int, set[str]]:
        """Stage and apply the batch's readings (one item per meter); returns the rows
        stored or superseded and the meters the MDM does not have."""
        if not readings:
            return 0, set()
        items: dict[str, int] = {}
        rows: list[StagedReading] = []
        for (mrid, rt, ts), kwh in readings.items():
            item = items.setdefault(mrid, len(items) + 1)
            rows.append(StagedReading(item, rt, ts, kwh, ""))
        staging = uow.readings.staging()
        for mrid, item in items.items():
            staging.add_meter(item, DeviceRef(mrid=mrid))
        staging.add_readings(sorted(rows, key=lambda r: (r.item, r.reading_type, r.ts)))
        applied = staging.apply(utility_id)
        if applied.duplicates:  # keys are unique above: a bug if it happens
            raise AmihubError(f"duplicate readings in a push batch: {applied.duplicates}")
        names = {item: mrid for mrid, item in items.items()}
        unknown = {names[item] for item in applied.unknown_items}
        return applied.stats.stored + applied.stats.superseded, unknown


def _always(keys: SecurityKeys) -> Callable[[bytes], SecurityKeys]:
    return lambda _system_title: keys


def _tag_failure(exc: SecurityViolation) -> bool:
    return "tag" in str(exc)


PushHandler = Callable[[PushedData], None]
SecurityHandler = Callable[[SecurityEvent], None]


class PushListener:
    """asyncio TCP listener for WRAPPER-framed pushes; runs in its own thread.

    ``port`` 0 binds any free port (:attr:`port` is the one bound once started). A
    frame announcing more than ``max_frame_bytes`` or with a bad WRAPPER header is
    refused (a security event with the header, one warning line) and its connection
    closed: the stream cannot be trusted past it. A connection silent for
    ``idle_timeout`` seconds is closed. Every refused push gives one warning line
    naming the sender's system title (or ``-``), its address and the reason; never
    key material. ``on_push`` runs in the listener's thread: while it blocks (a full
    writer queue) the listener reads nothing, which TCP passes on to the meters."""

    def __init__(
        self,
        decoder: PushDecoder,
        on_push: PushHandler,
        on_security_event: SecurityHandler,
        host: str = "127.0.0.1",
        port: int = 4059,
        *,
        max_frame_bytes: int = wrapper.MAX_APDU,
        idle_timeout: float | None = None,
    ) -> None:
        self.decoder = decoder
        self.on_push = on_push
        self.on_security_event = on_security_event
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self._loop: asyncio.AbstractEventLoop | None = None  # made by the listener's thread
        self._thread = threading.Thread(target=self._run, name="dlms-push", daemon=True)
        self._ready = threading.Event()
        self._failed: OSError | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = _peer(writer)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(
                        reader.readexactly(wrapper.HEADER_SIZE), self.idle_timeout
                    )
                except TimeoutError:
                    log.info("push connection from %s closed: silent %ss", peer, self.idle_timeout)
                    return
                try:
                    _source, _destination, length = wrapper.parse_header(header)
                except wrapper.FrameError as exc:
                    self._refuse(f"bad WRAPPER header from {peer}: {exc}", None, header, peer)
                    return
                if length > self.max_frame_bytes:
                    self._refuse(
                        f"frame of {length} bytes from {peer} is over the limit of "
                        f"{self.max_frame_bytes} bytes (max_frame_bytes)",
                        None,
                        header,
                        peer,
                    )
                    return
                try:
                    apdu = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                except TimeoutError:
                    log.warning(
                        "push connection from %s closed: a frame of %d bytes not complete "
                        "after %ss",
                        peer,
                        length,
                        self.idle_timeout,
                    )
                    return
                self.handle(apdu, peer)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.warning(
                    "push connection from %s closed in the middle of a frame (%d bytes lost)",
                    peer,
                    len(exc.partial),
                )
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def _refuse(
        self,
        reason: str,
        system_title: bytes | None,
        frame: bytes,
        peer: str,
        kind: SecurityKind = SecurityKind.VIOLATION,
        mrid: str | None = None,
    ) -> None:
        log.warning(
            "push refused from system title %s (%s): %s",
            system_title.hex() if system_title else "-",
            peer,
            reason,
        )
        self.on_security_event(
            SecurityEvent(reason, system_title, datetime.now(UTC), kind, mrid, frame)
        )

    def handle(self, apdu: bytes, peer: str = "-") -> None:
        system_title = None
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            with contextlib.suppress(SecurityViolation):
                system_title = gcm.general_glo_system_title(apdu)
        try:
            data = self.decoder.decode(apdu)
        except PushRejected as exc:
            self._refuse(str(exc), system_title, apdu, peer, exc.kind, exc.mrid)
            return
        except SecurityViolation as exc:
            self._refuse(str(exc), system_title, apdu, peer)
            return
        except (AmihubError, ValueError, IndexError) as exc:  # a field the decoder did not expect
            self._refuse(f"malformed push: {type(exc).__name__}: {exc}", system_title, apdu, peer)
            return
        self.on_push(data)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port, reuse_address=True)
            )
        except OSError as exc:
            self._failed = exc
            self._ready.set()
            loop.close()
            return
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        loop.run_forever()
        self._server.close()
        for w in list(self._writers):
            w.close()
        loop.run_until_complete(self._server.wait_closed())
        tasks = list(asyncio.all_tasks(loop))
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    def start(self) -> None:
        """Bind and listen (in the listener's thread); raises the OSError of the bind."""
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError(f"push listener on {self.host}:{self.port} did not start")
        if self._failed is not None:
            self._thread.join(10)
            raise self._failed

    def stop(self) -> None:
        """Stop listening and close the connections (a frame being read is dropped)."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def __enter__(self) -> PushListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
