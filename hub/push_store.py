"""Pushes into the MDM: the application's side of ``hes.push``.

:class:`hes.push.PushListener` verifies and decodes what meters push and hands the
results over as plain values (:class:`hes.push.PushedData`,
:class:`hes.push.SecurityEvent`); :class:`MdmPushSink` stores them (the push service,
adapters/dlms/push_service.py, batches them through adapters/dlms/push_writer.py):
the registers as readings through :class:`mdm.commands.StoreMeterReadings` on the
bus, pushed events as EndDeviceEvents (hes.meter_events: CIM codes, stable mRIDs),
refused pushes as security EndDeviceEvents, a batch in one transaction; with a
publisher, the new events and the readings newly stored or changed are published
through the outbox in that transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cim_schemas.codes.reading_type import obis_to_reading_type
from cim_schemas.errors import ConfigurationError
from hes.meter_events import SecurityKind, end_device_events, security_event, unknown_sender_mrid
from hes.push import PushedData, SecurityEvent
from hub.bus import MessageBus
from hub.headend_store import ACTOR, ResultPublisher, reading_feed, store_readings
from mdm.commands import QueryMeterReadings
from mdm.handlers import HANDLERS, HandlerContext, ReadingQueryResult
from mdm.model import DeviceRef, DeviceState, EndDevice, EndDeviceEvent
from mdm.ports import UnitOfWork, UnitOfWorkFactory
from mdm.security_counters import CounterChannel, CounterClaim

log = logging.getLogger("hes.push")


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
        bus: MessageBus | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.bus = bus or MessageBus(HANDLERS)
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

    def _changed(
        self, uow: UnitOfWork, utility_id: int, readings: dict[_ReadingKey, Decimal]
    ) -> dict[_ReadingKey, Decimal]:
        """The readings not stored yet with this value (one query for the batch)."""
        if not readings:
            return {}
        instants = [ts for _, _, ts in readings]
        found: ReadingQueryResult = self.bus.handle(
            QueryMeterReadings(
                utility_id,
                meters=tuple(DeviceRef(mrid=m) for m in sorted({m for m, _, _ in readings})),
                reading_types=tuple(sorted({rt for _, rt, _ in readings})),
                start=min(instants) - timedelta(microseconds=1),
                end=max(instants),
                as_text=True,
            ),
            uow,
            HandlerContext(actor=ACTOR, now=datetime.now(UTC), source="push"),
        )
        wanted = {(key[0], key[1], key[2].isoformat()): key for key in readings}
        same: set[_ReadingKey] = set()
        try:
            for row in found.texts:
                key = wanted.get((row.device_mrid, row.reading_type, row.ts))
                if key is not None and not row.quality and Decimal(row.value) == readings[key]:
                    same.add(key)
        finally:
            close = getattr(found.texts, "close", None)
            if close is not None:
                close()
        return {k: v for k, v in readings.items() if k not in same}

    def _store(
        self, uow: UnitOfWork, utility_id: int, readings: dict[_ReadingKey, Decimal]
    ) -> tuple[int, set[str]]:
        """``StoreMeterReadings`` of the batch's readings (one item per meter); returns
        the rows stored or superseded and the meters the MDM does not have."""
        if not readings:
            return 0, set()
        by_meter: dict[str, list[tuple[str, datetime, Decimal, str]]] = {}
        for (mrid, rt, ts), kwh in sorted(readings.items()):
            by_meter.setdefault(mrid, []).append((rt, ts, kwh, ""))
        meters = list(by_meter.items())
        applied = store_readings(self.bus, uow, utility_id, reading_feed(meters), "a push batch")
        unknown = {meters[item - 1][0] for item in applied.unknown_items}
        return applied.stats.stored + applied.stats.superseded, unknown
