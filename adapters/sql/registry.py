"""Repositories for the registry (utilities, usage points, devices, installations),
events, the message log, dead letters and the audit log."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ColumnElement

from adapters.sql import tables as t
from adapters.sql.errors import (
    already_exists,
    guarded,
    invalid_state,
    is_unique_violation,
    not_found,
)
from adapters.sql.types import fit
from cim_schemas.errors import PayloadInvalid, ReplayConflict, StoreUnavailable
from mdm.model import (
    DeviceKind,
    DeviceRef,
    DeviceState,
    EndDevice,
    EndDeviceEvent,
    Installation,
    ServiceCategory,
    UsagePoint,
    UsagePointStatus,
    Utility,
)
from mdm.ports import (
    AnsweredMessage,
    AppliedMessage,
    AuditQuery,
    AuditRecord,
    AuditRecords,
    DeadLetter,
    MessageConclusion,
    MessageState,
)

if TYPE_CHECKING:
    from adapters.sql.uow import SqlUnitOfWork


_T = TypeVar("_T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Repo:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    @property
    def _conn(self) -> Connection:
        return self._uow.connection


# --------------------------------------------------------------------------- utilities


class SqlUtilityRepository(_Repo):
    @guarded
    def get(self, code: str) -> Utility | None:
        row = self._conn.execute(
            select(t.utility.c.id, t.utility.c.code, t.utility.c.name).where(
                t.utility.c.code == code
            )
        ).first()
        return Utility(row.code, row.name, row.id) if row else None

    @guarded
    def add(self, utility: Utility) -> Utility:
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(
                    insert(t.utility)
                    .values(code=utility.code, name=utility.name, created_at=utcnow())
                    .returning(t.utility.c.id)
                ).scalar_one()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(f"utility {utility.code!r} already exists") from error
            raise
        return Utility(utility.code, utility.name, int(new_id))

    @guarded
    def list(self) -> list[Utility]:
        rows = self._conn.execute(
            select(t.utility.c.id, t.utility.c.code, t.utility.c.name).order_by(t.utility.c.code)
        )
        return [Utility(r.code, r.name, r.id) for r in rows]


def _utility_code(conn: Connection, utility_id: int) -> str:
    code = conn.execute(
        select(t.utility.c.code).where(t.utility.c.id == utility_id)
    ).scalar_one_or_none()
    if code is None:
        raise not_found(f"utility id {utility_id} does not exist")
    return str(code)


def _ref_filter(table: Any, ref: DeviceRef, *, serial: bool) -> ColumnElement[bool]:
    if ref.mrid:
        return table.c.mrid == ref.mrid  # type: ignore[no-any-return]
    if ref.name:
        if serial:
            return or_(table.c.name == ref.name, table.c.serial_number == ref.name)
        return table.c.name == ref.name  # type: ignore[no-any-return]
    raise PayloadInvalid(f"reference {ref!r} has neither mRID nor name", code="2011")


# --------------------------------------------------------------------------- usage points

_UP_COLS = (
    t.usage_point.c.id,
    t.usage_point.c.mrid,
    t.usage_point.c.name,
    t.usage_point.c.service_category,
    t.usage_point.c.location,
    t.usage_point.c.transformer_area,
    t.usage_point.c.status,
    t.utility.c.code.label("utility_code"),
)


def _usage_point(row: Any) -> UsagePoint:
    return UsagePoint(
        mrid=row.mrid,
        utility_code=row.utility_code,
        service_category=ServiceCategory(row.service_category),
        name=row.name,
        location=row.location,
        transformer_area=row.transformer_area,
        status=UsagePointStatus(row.status),
        id=row.id,
    )


def _up_values(up: UsagePoint) -> dict[str, Any]:
    return {
        "mrid": up.mrid,
        "name": up.name,
        "service_category": ServiceCategory(up.service_category).value,
        "location": up.location,
        "transformer_area": up.transformer_area,
        "status": UsagePointStatus(up.status).value,
    }


class SqlUsagePointRepository(_Repo):
    def _select(self, utility_id: int) -> Any:
        return (
            select(*_UP_COLS)
            .join(t.utility, t.utility.c.id == t.usage_point.c.utility_id)
            .where(t.usage_point.c.utility_id == utility_id)
        )

    @guarded
    def find(self, utility_id: int, ref: DeviceRef) -> UsagePoint | None:
        rows = self._conn.execute(
            self._select(utility_id)
            .where(_ref_filter(t.usage_point, ref, serial=False))
            .order_by(t.usage_point.c.id)
            .limit(2)
        ).all()
        if len(rows) != 1:  # none, or a name that is not unique
            return None
        return _usage_point(rows[0])

    @guarded
    def add(self, utility_id: int, usage_point: UsagePoint) -> UsagePoint:
        now = utcnow()
        code = _utility_code(self._conn, utility_id)
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(
                    insert(t.usage_point)
                    .values(
                        utility_id=utility_id,
                        created_at=now,
                        updated_at=now,
                        **_up_values(usage_point),
                    )
                    .returning(t.usage_point.c.id)
                ).scalar_one()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(f"usage point {usage_point.mrid!r} already exists") from error
            raise
        return _with(usage_point, id=int(new_id), utility_code=code)

    @guarded
    def update(self, utility_id: int, usage_point: UsagePoint) -> UsagePoint:
        up = t.usage_point
        where = (
            up.c.id == usage_point.id
            if usage_point.id is not None
            else (up.c.mrid == usage_point.mrid)
        )
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(
                    update(up)
                    .where(up.c.utility_id == utility_id, where)
                    .values(updated_at=utcnow(), **_up_values(usage_point))
                    .returning(up.c.id)
                ).scalar_one_or_none()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(f"usage point {usage_point.mrid!r} already exists") from error
            raise
        if new_id is None:
            raise not_found(f"usage point {usage_point.mrid!r} does not exist")
        return _with(
            usage_point, id=int(new_id), utility_code=_utility_code(self._conn, utility_id)
        )

    @guarded
    def delete(self, utility_id: int, usage_point_id: int) -> None:
        used = self._conn.execute(
            select(func.count())
            .select_from(t.installation)
            .where(t.installation.c.usage_point_id == usage_point_id)
        ).scalar_one()
        if used:
            raise invalid_state(
                f"usage point {usage_point_id} has installations and cannot be deleted"
            )
        result = self._conn.execute(
            delete(t.usage_point).where(
                t.usage_point.c.utility_id == utility_id, t.usage_point.c.id == usage_point_id
            )
        )
        if result.rowcount == 0:
            raise not_found(f"usage point {usage_point_id} does not exist")

    @guarded
    def list(self, utility_id: int) -> list[UsagePoint]:
        rows = self._conn.execute(self._select(utility_id).order_by(t.usage_point.c.mrid))
        return [_usage_point(r) for r in rows]


def _with(obj: _T, **changes: Any) -> _T:
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


# --------------------------------------------------------------------------- end devices

_DEV_COLS = (
    t.end_device.c.id,
    t.end_device.c.mrid,
    t.end_device.c.serial_number,
    t.end_device.c.kind,
    t.end_device.c.name,
    t.end_device.c.manufacturer,
    t.end_device.c.model,
    t.end_device.c.firmware_version,
    t.end_device.c.state,
    t.utility.c.code.label("utility_code"),
)


def _device(row: Any) -> EndDevice:
    return EndDevice(
        mrid=row.mrid,
        utility_code=row.utility_code,
        serial_number=row.serial_number,
        kind=DeviceKind(row.kind),
        name=row.name,
        manufacturer=row.manufacturer,
        model=row.model,
        firmware_version=row.firmware_version,
        state=DeviceState(row.state),
        id=row.id,
    )


def _dev_values(d: EndDevice) -> dict[str, Any]:
    return {
        "mrid": d.mrid,
        "serial_number": d.serial_number,
        "kind": DeviceKind(d.kind).value,
        "name": d.name,
        "manufacturer": d.manufacturer,
        "model": d.model,
        "firmware_version": d.firmware_version,
        "state": DeviceState(d.state).value,
    }


class SqlEndDeviceRepository(_Repo):
    """Devices. A name reference matches ``name`` first, then ``serial_number``;
    a name that matches more than one device resolves to nothing."""

    def _select(self, utility_id: int) -> Any:
        return (
            select(*_DEV_COLS)
            .join(t.utility, t.utility.c.id == t.end_device.c.utility_id)
            .where(t.end_device.c.utility_id == utility_id)
        )

    @guarded
    def find(self, utility_id: int, ref: DeviceRef) -> EndDevice | None:
        return self.find_many(utility_id, [ref]).get(ref)

    @guarded
    def find_many(self, utility_id: int, refs: Sequence[DeviceRef]) -> dict[DeviceRef, EndDevice]:
        found: dict[DeviceRef, EndDevice] = {}
        d = t.end_device
        mrids = sorted({r.mrid for r in refs if r.mrid})
        for start in range(0, len(mrids), 500):
            chunk = mrids[start : start + 500]
            by_mrid = {
                row.mrid: _device(row)
                for row in self._conn.execute(self._select(utility_id).where(d.c.mrid.in_(chunk)))
            }
            for ref in refs:
                if ref.mrid in by_mrid:
                    found[ref] = by_mrid[ref.mrid]
        names = sorted({r.name for r in refs if not r.mrid and r.name})
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            by_name: dict[str, list[EndDevice]] = {}
            by_serial: dict[str, list[EndDevice]] = {}
            rows = self._conn.execute(
                self._select(utility_id).where(
                    or_(d.c.name.in_(chunk), d.c.serial_number.in_(chunk))
                )
            )
            for row in rows:
                dev = _device(row)
                if dev.name in chunk:
                    by_name.setdefault(dev.name, []).append(dev)
                if dev.serial_number in chunk:
                    by_serial.setdefault(dev.serial_number, []).append(dev)
            for ref in refs:
                if ref.mrid or not ref.name or ref.name not in chunk:
                    continue
                for candidates in (by_name.get(ref.name, []), by_serial.get(ref.name, [])):
                    if len(candidates) == 1:
                        found[ref] = candidates[0]
                        break
        return found

    @guarded
    def held_elsewhere(self, utility_id: int, mrids: Sequence[str]) -> set[str]:
        d = t.end_device
        wanted = sorted(set(mrids))
        held: set[str] = set()
        for start in range(0, len(wanted), 500):
            rows = self._conn.execute(
                select(d.c.mrid).where(
                    d.c.utility_id != utility_id, d.c.mrid.in_(wanted[start : start + 500])
                )
            )
            held.update(row.mrid for row in rows)
        return held

    @guarded
    def add(self, utility_id: int, device: EndDevice) -> EndDevice:
        now = utcnow()
        code = _utility_code(self._conn, utility_id)
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(
                    insert(t.end_device)
                    .values(
                        utility_id=utility_id, created_at=now, updated_at=now, **_dev_values(device)
                    )
                    .returning(t.end_device.c.id)
                ).scalar_one()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(f"end device {device.mrid!r} already exists") from error
            raise
        return _with(device, id=int(new_id), utility_code=code)

    @guarded
    def update(self, utility_id: int, device: EndDevice) -> EndDevice:
        d = t.end_device
        where = d.c.id == device.id if device.id is not None else d.c.mrid == device.mrid
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(
                    update(d)
                    .where(d.c.utility_id == utility_id, where)
                    .values(updated_at=utcnow(), **_dev_values(device))
                    .returning(d.c.id)
                ).scalar_one_or_none()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(f"end device {device.mrid!r} already exists") from error
            raise
        if new_id is None:
            raise not_found(f"end device {device.mrid!r} does not exist")
        return _with(device, id=int(new_id), utility_code=_utility_code(self._conn, utility_id))

    @guarded
    def set_state(self, device_id: int, state: DeviceState) -> None:
        result = self._conn.execute(
            update(t.end_device)
            .where(t.end_device.c.id == device_id)
            .values(state=DeviceState(state).value, updated_at=utcnow())
        )
        if result.rowcount == 0:
            raise not_found(f"end device {device_id} does not exist")

    @guarded
    def delete(self, utility_id: int, device_id: int) -> None:
        conn = self._conn
        for table in (t.installation, t.reading):
            used = conn.execute(
                select(table.c.device_id).where(table.c.device_id == device_id).limit(1)
            ).first()
            if used is not None:
                raise invalid_state(
                    f"end device {device_id} has {table.name} rows and cannot be deleted"
                )
        conn.execute(
            update(t.end_device_event)
            .where(t.end_device_event.c.device_id == device_id)
            .values(device_id=None)
        )
        conn.execute(
            delete(t.end_device_group_member).where(
                t.end_device_group_member.c.device_id == device_id
            )
        )
        result = conn.execute(
            delete(t.end_device).where(
                t.end_device.c.utility_id == utility_id, t.end_device.c.id == device_id
            )
        )
        if result.rowcount == 0:
            raise not_found(f"end device {device_id} does not exist")

    @guarded
    def list(self, utility_id: int) -> list[EndDevice]:
        rows = self._conn.execute(self._select(utility_id).order_by(t.end_device.c.mrid))
        return [_device(r) for r in rows]


# --------------------------------------------------------------------------- installations


class SqlInstallationRepository(_Repo):
    """Installation history. At most one open installation per device (checked here
    and by the partial unique index ``uq_installation_open_device``); periods of one
    device never overlap."""

    def _select(self) -> Any:
        i = t.installation
        return (
            select(
                i.c.id,
                i.c.device_id,
                i.c.start_at,
                i.c.end_at,
                t.end_device.c.mrid.label("device_mrid"),
                t.usage_point.c.mrid.label("usage_point_mrid"),
            )
            .join(t.end_device, t.end_device.c.id == i.c.device_id)
            .join(t.usage_point, t.usage_point.c.id == i.c.usage_point_id)
        )

    @staticmethod
    def _installation(row: Any) -> Installation:
        return Installation(row.device_mrid, row.usage_point_mrid, row.start_at, row.end_at)

    @guarded
    def current(self, device_id: int) -> Installation | None:
        i = t.installation
        row = self._conn.execute(
            self._select().where(i.c.device_id == device_id, i.c.end_at.is_(None))
        ).first()
        return self._installation(row) if row else None

    @guarded
    def current_at_usage_point(self, usage_point_id: int) -> list[Installation]:
        i = t.installation
        rows = self._conn.execute(
            self._select()
            .where(i.c.usage_point_id == usage_point_id, i.c.end_at.is_(None))
            .order_by(i.c.start_at, i.c.id)
        )
        return [self._installation(r) for r in rows]

    @guarded
    def install(self, device_id: int, usage_point_id: int, start: datetime) -> Installation:
        i = t.installation
        conn = self._conn
        if conn.dialect.name == "postgresql":  # serialise installs of one device
            conn.execute(
                select(t.end_device.c.id).where(t.end_device.c.id == device_id).with_for_update()
            )
        open_row = self.current(device_id)
        if open_row is not None:
            raise invalid_state(
                f"end device {open_row.device_mrid!r} is installed at usage point "
                f"{open_row.usage_point_mrid!r} since {open_row.start.isoformat()}"
            )
        overlap = conn.execute(
            select(i.c.id).where(i.c.device_id == device_id, i.c.end_at > start).limit(1)
        ).first()
        if overlap is not None:
            raise invalid_state(
                f"end device {device_id} was installed elsewhere after {start.isoformat()}"
            )
        try:
            with conn.begin_nested():
                new_id = conn.execute(
                    insert(i)
                    .values(device_id=device_id, usage_point_id=usage_point_id, start_at=start)
                    .returning(i.c.id)
                ).scalar_one()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise invalid_state(f"end device {device_id} is already installed") from error
            raise not_found(
                f"end device {device_id} or usage point {usage_point_id} does not exist"
            ) from error
        row = conn.execute(self._select().where(i.c.id == new_id)).one()
        return self._installation(row)

    @guarded
    def remove(self, device_id: int, end: datetime) -> Installation:
        i = t.installation
        row = self._conn.execute(
            self._select().where(i.c.device_id == device_id, i.c.end_at.is_(None))
        ).first()
        if row is None:
            raise not_found(f"end device {device_id} is not installed")
        if end < row.start_at:
            raise invalid_state(
                f"removal at {end.isoformat()} is before the installation "
                f"at {row.start_at.isoformat()}"
            )
        self._conn.execute(update(i).where(i.c.id == row.id).values(end_at=end))
        return Installation(row.device_mrid, row.usage_point_mrid, row.start_at, end)

    @guarded
    def history(self, device_id: int) -> list[Installation]:
        i = t.installation
        rows = self._conn.execute(
            self._select().where(i.c.device_id == device_id).order_by(i.c.start_at, i.c.id)
        )
        return [self._installation(r) for r in rows]

    @guarded
    def devices_at(
        self, usage_point_id: int, start: datetime | None, end: datetime | None
    ) -> list[tuple[int, datetime, datetime | None]]:
        i = t.installation
        conds: list[ColumnElement[bool]] = [i.c.usage_point_id == usage_point_id]
        if end is not None:
            conds.append(i.c.start_at < end)
        if start is not None:
            conds.append(or_(i.c.end_at.is_(None), i.c.end_at > start))
        rows = self._conn.execute(
            select(i.c.device_id, i.c.start_at, i.c.end_at)
            .where(and_(*conds))
            .order_by(i.c.start_at, i.c.id)
        )
        return [(int(r.device_id), r.start_at, r.end_at) for r in rows]


# --------------------------------------------------------------------------- events


class SqlEventRepository(_Repo):
    """End device events. An event of a device the utility does not know is kept
    with ``device_id`` NULL (its mRID is stored) rather than lost."""

    def _insert(self, utility_id: int, events: Sequence[EndDeviceEvent]) -> list[int]:
        """Insert; an event whose mRID the utility already stored (index
        ``uq_end_device_event_utility_id_mrid``) is skipped by the database (ON CONFLICT
        DO NOTHING), so two processes storing one event insert it once. Returns the
        positions in ``events`` of the rows inserted."""
        if not events:
            return []
        d = t.end_device
        e = t.end_device_event
        mrids = sorted({x.device_mrid for x in events})
        ids: dict[str, int] = {}
        for start in range(0, len(mrids), 500):
            chunk = mrids[start : start + 500]
            for row in self._conn.execute(
                select(d.c.id, d.c.mrid).where(d.c.utility_id == utility_id, d.c.mrid.in_(chunk))
            ):
                ids[row.mrid] = int(row.id)
        # one row per mRID (the first), so each inserted row names its event
        first: dict[str, int] = {}
        keep = [
            i for i, x in enumerate(events) if x.mrid is None or first.setdefault(x.mrid, i) == i
        ]
        now = utcnow()
        insert_ = pg_insert if self._conn.dialect.name == "postgresql" else sqlite_insert
        stmt = (
            insert_(e)
            .on_conflict_do_nothing(
                index_elements=[e.c.utility_id, e.c.mrid], index_where=e.c.mrid.is_not(None)
            )
            .returning(e.c.id, e.c.mrid)
        )
        rows = [
            {
                "utility_id": utility_id,
                "device_id": ids.get(x.device_mrid),
                "device_mrid": x.device_mrid,
                "mrid": x.mrid,
                "event_type": x.event_type,
                "created_at": x.created_at,
                "reason": x.reason,
                "severity": x.severity,
                "details": dict(x.details),
                "recorded_at": now,
            }
            for x in (events[i] for i in keep)
        ]
        inserted: set[str] = set()
        for start in range(0, len(rows), 1_000):
            for row in self._conn.execute(stmt, rows[start : start + 1_000]):
                if row.mrid is not None:
                    inserted.add(str(row.mrid))
        return [i for i in keep if events[i].mrid is None or events[i].mrid in inserted]

    @guarded
    def add_many(self, utility_id: int, events: Sequence[EndDeviceEvent]) -> int:
        """Store the events; returns how many were inserted (an mRID the utility already
        stored, or repeated in ``events``, is not inserted again)."""
        return len(self._insert(utility_id, events))

    @guarded
    def add_new(self, utility_id: int, events: Sequence[EndDeviceEvent]) -> list[EndDeviceEvent]:
        """Only the events not stored yet (by mRID), decided by the unique index in the
        insert itself: of two processes storing the same event, one inserts it and the
        other gets nothing back (it waits for the first one's transaction on PostgreSQL)."""
        return [events[i] for i in self._insert(utility_id, events)]

    @guarded
    def query(
        self,
        utility_id: int,
        device_ids: Sequence[int] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[EndDeviceEvent]:
        """Events with ``start <= created_at < end``, oldest first."""
        e = t.end_device_event
        stmt = select(e).where(e.c.utility_id == utility_id)
        if start is not None:
            stmt = stmt.where(e.c.created_at >= start)
        if end is not None:
            stmt = stmt.where(e.c.created_at < end)
        stmt = stmt.order_by(e.c.created_at, e.c.id)
        if device_ids is None:
            rows = list(self._conn.execute(stmt))
        else:  # chunks: SQLite limits bound parameters
            ids = sorted(set(device_ids))
            rows = [
                row
                for i in range(0, len(ids), 5_000)
                for row in self._conn.execute(stmt.where(e.c.device_id.in_(ids[i : i + 5_000])))
            ]
            rows.sort(key=lambda r: (r.created_at, r.id))
        return [event_from_row(r) for r in rows]


def event_from_row(r: Any) -> EndDeviceEvent:
    """An EndDeviceEvent of a row joined with its device's mRID (``device_mrid``)."""
    return EndDeviceEvent(
        device_mrid=r.device_mrid,
        event_type=r.event_type,
        created_at=r.created_at,
        reason=r.reason,
        severity=r.severity,
        mrid=r.mrid,
        details={str(k): str(v) for k, v in (r.details or {}).items()},
    )


# --------------------------------------------------------------------------- message log

_ML = t.message_log


def _message_state(row: Any) -> MessageState:
    return MessageState(
        id=int(row.id),
        source=row.source,
        message_id=row.message_id,
        verb=row.verb,
        noun=row.noun,
        content_hash=row.content_hash,
        state=row.state,
        result=row.result,
        reply=bytes(row.reply) if row.reply is not None else None,
        received_at=row.received_at,
    )


class SqlMessageLogRepository(_Repo):
    """One row a message; (source, message_id) unique when message_id is set."""

    _cols = (
        _ML.c.id,
        _ML.c.source,
        _ML.c.message_id,
        _ML.c.verb,
        _ML.c.noun,
        _ML.c.content_hash,
        _ML.c.state,
        _ML.c.result,
        _ML.c.reply,
        _ML.c.received_at,
    )

    @guarded
    def find_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], MessageState]:
        if not keys:
            return {}
        wanted = set(keys)
        rows: Any
        if self._conn.dialect.name == "postgresql":  # one indexed join (adapters/sql/applied.py)
            from adapters.sql.applied import find_logged

            rows = find_logged(self._conn, sorted(wanted))
        else:
            rows = self._conn.execute(
                select(*self._cols).where(
                    _ML.c.source.in_({s for s, _ in wanted}),
                    _ML.c.message_id.in_({m for _, m in wanted}),
                )
            )
        found = {}
        for row in rows:
            key = (row.source, row.message_id)
            if key in wanted:
                found[key] = _message_state(row)
        return found

    @guarded
    def record_steps(self, steps: Sequence[tuple[int, str, str | None]]) -> None:
        if not steps:
            return
        now = utcnow()
        self._conn.execute(
            insert(t.message_lifecycle),
            [{"message_log_id": i, "state": s, "at": now, "detail": d} for i, s, d in steps],
        )
        last = {i: s for i, s, _ in steps}
        self._conn.execute(
            update(_ML)
            .where(_ML.c.id == bindparam("b_id"))
            .values(state=bindparam("b_state"), updated_at=now),
            [{"b_id": i, "b_state": s} for i, s in last.items()],
        )

    @guarded
    def conclude_many(self, rows: Sequence[MessageConclusion]) -> None:
        if not rows:
            return
        now = utcnow()
        # no savepoint: a unique violation aborts the transaction, retried whole
        try:
            self._conn.execute(
                update(_ML)
                .where(_ML.c.id == bindparam("b_id"))
                .values(
                    message_id=bindparam("b_message_id"),
                    verb=bindparam("b_verb"),
                    noun=bindparam("b_noun"),
                    correlation_id=bindparam("b_correlation_id"),
                    state=bindparam("b_state"),
                    result=bindparam("b_result"),
                    reply=bindparam("b_reply"),
                    updated_at=now,
                ),
                [
                    {
                        "b_id": r.log_id,
                        "b_message_id": r.message_id,
                        "b_verb": r.verb,
                        "b_noun": r.noun,
                        "b_correlation_id": r.correlation_id,
                        "b_state": r.state,
                        "b_result": r.result,
                        "b_reply": r.reply,
                    }
                    for r in rows
                ],
            )
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise StoreUnavailable(
                    "a MessageID of the batch was claimed by another process meanwhile; retry"
                ) from error
            raise
        self._conn.execute(
            insert(t.message_lifecycle),
            [
                {"message_log_id": r.log_id, "state": r.state, "at": now, "detail": r.result}
                for r in rows
            ],
        )

    @guarded
    def record_applied_many(self, entries: Sequence[AppliedMessage]) -> list[int]:
        """One statement on PostgreSQL (adapters/sql/applied.py)."""
        from adapters.sql.applied import record_applied_many

        return record_applied_many(self._conn, entries)

    @guarded
    def record_answered(self, entry: AnsweredMessage) -> int:
        """One statement on PostgreSQL (adapters/sql/answered.py)."""
        from adapters.sql.answered import record_answered

        return record_answered(self._conn, entry)

    @guarded
    def find(self, source: str, message_id: str) -> MessageState | None:
        row = self._conn.execute(
            select(*self._cols).where(_ML.c.source == source, _ML.c.message_id == message_id)
        ).first()
        return _message_state(row) if row else None

    @guarded
    def get(self, log_id: int) -> MessageState | None:
        row = self._conn.execute(select(*self._cols).where(_ML.c.id == log_id)).first()
        return _message_state(row) if row else None

    @guarded
    def start(
        self, source: str, endpoint: str, content_hash: str, size: int, received_at: datetime
    ) -> int:
        log_id = self._conn.execute(
            insert(_ML)
            .values(
                source=source,
                endpoint=endpoint,
                content_hash=content_hash,
                size=size,
                state="received",
                received_at=received_at,
                updated_at=received_at,
            )
            .returning(_ML.c.id)
        ).scalar_one()
        self._conn.execute(
            insert(t.message_lifecycle).values(
                message_log_id=log_id, state="received", at=received_at, detail=None
            )
        )
        return int(log_id)

    @guarded
    def identify(
        self,
        log_id: int,
        message_id: str | None,
        verb: str,
        noun: str,
        correlation_id: str | None,
    ) -> None:
        """Raises ReplayConflict (1007) if (source, message_id) is already logged."""
        try:
            with self._conn.begin_nested():
                result = self._conn.execute(
                    update(_ML)
                    .where(_ML.c.id == log_id)
                    .values(
                        message_id=message_id,
                        verb=verb,
                        noun=noun,
                        correlation_id=correlation_id,
                        updated_at=utcnow(),
                    )
                )
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise ReplayConflict(
                    f"MessageID {message_id!r} was already received from this source",
                    code="1007",
                ) from error
            raise
        if result.rowcount == 0:
            raise not_found(f"message log {log_id} does not exist")

    @guarded
    def transition(self, log_id: int, state: str, detail: str | None = None) -> None:
        now = utcnow()
        result = self._conn.execute(
            update(_ML).where(_ML.c.id == log_id).values(state=state, updated_at=now)
        )
        if result.rowcount == 0:
            raise not_found(f"message log {log_id} does not exist")
        self._conn.execute(
            insert(t.message_lifecycle).values(
                message_log_id=log_id, state=state, at=now, detail=detail
            )
        )

    @guarded
    def finish(self, log_id: int, state: str, result: str | None, reply: bytes | None) -> None:
        now = utcnow()
        updated = self._conn.execute(
            update(_ML)
            .where(_ML.c.id == log_id)
            .values(state=state, result=result, reply=reply, updated_at=now)
        )
        if updated.rowcount == 0:
            raise not_found(f"message log {log_id} does not exist")
        self._conn.execute(
            insert(t.message_lifecycle).values(
                message_log_id=log_id, state=state, at=now, detail=result
            )
        )

    @guarded
    def lifecycle(self, log_id: int) -> list[tuple[str, datetime, str | None]]:
        lc = t.message_lifecycle
        rows = self._conn.execute(
            select(lc.c.state, lc.c.at, lc.c.detail)
            .where(lc.c.message_log_id == log_id)
            .order_by(lc.c.id)
        )
        return [(r.state, r.at, r.detail) for r in rows]


# --------------------------------------------------------------------------- dead letters

_DL = t.dead_letter


def _dead_letter(row: Any) -> DeadLetter:
    meta = row._mapping[_DL.c["metadata"]]
    return DeadLetter(
        id=int(row.id),
        source=row.source,
        endpoint=row.endpoint,
        received_at=row.received_at,
        error_code=row.error_code,
        reason=row.reason,
        body=bytes(row.body),
        truncated=bool(row.truncated),
        metadata={str(k): str(v) for k, v in (meta or {}).items()},
        message_log_id=int(row.message_log_id) if row.message_log_id is not None else None,
        replay_count=int(row.replay_count),
        resolved_at=row.resolved_at,
    )


class SqlDeadLetterRepository(_Repo):
    @guarded
    def add(
        self,
        *,
        source: str,
        endpoint: str,
        received_at: datetime,
        error_code: str,
        reason: str,
        body: bytes,
        truncated: bool,
        metadata: dict[str, str],
        message_log_id: int | None,
    ) -> int:
        values: dict[str, Any] = {
            "source": source,
            "endpoint": endpoint,
            "received_at": received_at,
            "error_code": error_code,
            "reason": reason,
            "body": bytes(body),
            "truncated": truncated,
            "metadata": dict(metadata),
            "message_log_id": message_log_id,
            "replay_count": 0,
            "resolved_at": None,
        }
        new_id = self._conn.execute(insert(_DL).values(values).returning(_DL.c.id)).scalar_one()
        return int(new_id)

    @guarded
    def get(self, dead_letter_id: int) -> DeadLetter | None:
        row = self._conn.execute(select(_DL).where(_DL.c.id == dead_letter_id)).first()
        return _dead_letter(row) if row else None

    @guarded
    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        stmt = select(_DL)
        if not include_resolved:
            stmt = stmt.where(_DL.c.resolved_at.is_(None))
        rows = self._conn.execute(
            stmt.order_by(_DL.c.received_at.desc(), _DL.c.id.desc()).limit(limit)
        )
        return [_dead_letter(r) for r in rows]

    @guarded
    def mark_replayed(self, dead_letter_id: int, resolved: bool) -> None:
        values: dict[str, Any] = {"replay_count": _DL.c.replay_count + 1}
        if resolved:
            values["resolved_at"] = utcnow()
        result = self._conn.execute(update(_DL).where(_DL.c.id == dead_letter_id).values(values))
        if result.rowcount == 0:
            raise not_found(f"dead letter {dead_letter_id} does not exist")

    @guarded
    def dismiss(self, dead_letter_id: int, at: datetime) -> bool:
        result = self._conn.execute(
            update(_DL)
            .where(_DL.c.id == dead_letter_id, _DL.c.resolved_at.is_(None))
            .values(resolved_at=at)
        )
        return bool(result.rowcount)


# --------------------------------------------------------------------------- audit


class SqlAuditRepository(_Repo):
    @guarded
    def record(
        self,
        actor: str,
        action: str,
        object_type: str,
        object_id: str | None,
        details: str | None = None,
    ) -> None:
        # what the columns hold: an over-long value (a refused caller's user name) is
        # kept truncated, never lost with the whole entry
        a = t.audit_log.c
        self._conn.execute(
            insert(t.audit_log).values(
                at=utcnow(),
                actor=fit(actor, a.actor),
                action=fit(action, a.action),
                object_type=fit(object_type, a.object_type),
                object_id=fit(object_id, a.object_id) if object_id is not None else None,
                details=details,
            )
        )

    @guarded
    def list(
        self, limit: int = 100
    ) -> list[tuple[datetime, str, str, str, str | None, str | None]]:
        a = t.audit_log
        rows = self._conn.execute(select(a).order_by(a.c.id.desc()).limit(limit))
        return [(r.at, r.actor, r.action, r.object_type, r.object_id, r.details) for r in rows]

    @guarded
    def query(self, query: AuditQuery) -> AuditRecords:
        a = t.audit_log
        stmt = select(a).order_by(a.c.id.desc()).limit(query.limit)
        if query.start is not None:
            stmt = stmt.where(a.c.at > query.start)
        if query.end is not None:
            stmt = stmt.where(a.c.at <= query.end)
        if query.actors is not None:
            if not query.actors:
                return []
            stmt = stmt.where(a.c.actor.in_(sorted(query.actors)))
        for column, value in (
            (a.c.action, query.action),
            (a.c.object_type, query.object_type),
            (a.c.object_id, query.object_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if query.before is not None:
            stmt = stmt.where(a.c.id < query.before)
        return [
            AuditRecord(int(r.id), r.at, r.actor, r.action, r.object_type, r.object_id, r.details)
            for r in self._conn.execute(stmt)
        ]
