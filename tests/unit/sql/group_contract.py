"""End device groups and the stored events' unique key, on every SQL store: SQLite in
tests/unit/sql/test_groups_sqlite.py, PostgreSQL in tests/integration/sql."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from cim_schemas.errors import ItemRejected, PayloadInvalid
from mdm.group_commands import (
    AddGroupMembers,
    ChangeEndDeviceGroup,
    CloseEndDeviceGroup,
    CreateEndDeviceGroup,
    DeleteEndDeviceGroup,
    RemoveGroupMembers,
)
from mdm.group_handlers import GROUP_HANDLERS, GroupChange, UnknownMembers
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef, EndDevice, EndDeviceEvent, Utility
from mdm.ports import UnitOfWork

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CTX = HandlerContext(actor="test", now=NOW)


def run(uow_factory: SqlUnitOfWorkFactory, cmd: object) -> GroupChange:
    with uow_factory() as uow:
        result = GROUP_HANDLERS[type(cmd)](cmd, uow, CTX)
        uow.commit()
    assert isinstance(result, GroupChange)
    return result


def refs(*mrids: str) -> tuple[DeviceRef, ...]:
    return tuple(DeviceRef(mrid=m) for m in mrids)


class GroupContract:
    """``store_url`` is a fresh, empty database."""

    @pytest.fixture
    def engine(self, store_url: str) -> Iterator[Engine]:
        engine = make_engine(store_url)
        upgrade(engine)
        yield engine
        engine.dispose()

    @pytest.fixture
    def uow_factory(self, engine: Engine) -> SqlUnitOfWorkFactory:
        return SqlUnitOfWorkFactory(engine)

    @pytest.fixture
    def utility_id(self, uow_factory: SqlUnitOfWorkFactory) -> int:
        with uow_factory() as uow:
            u = uow.utilities.add(Utility("ACME", "Acme Power"))
            assert u.id is not None
            uow.devices.add(u.id, EndDevice("M1", "ACME", serial_number="S-1", name="one"))
            uow.devices.add(u.id, EndDevice("M2", "ACME", serial_number="S-2", name="two"))
            uow.devices.add(u.id, EndDevice("M3", "ACME", serial_number="S-3"))
            uow.commit()
        return u.id

    def device_id(self, uow: UnitOfWork, utility_id: int, mrid: str) -> int:
        d = uow.devices.find(utility_id, DeviceRef(mrid=mrid))
        assert d is not None
        assert d.id is not None
        return d.id

    def test_group_lifecycle(self, uow_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        made = run(
            uow_factory,
            CreateEndDeviceGroup(
                utility_id, "G-1", "campaign", "firmware 2.1", (DeviceRef(name="one"), *refs("M2"))
            ),
        )
        assert (made.group.name, made.group.members, made.added) == ("campaign", 2, 2)
        with uow_factory() as uow:
            by_name = uow.end_device_groups.find(utility_id, DeviceRef(name="campaign"))
            assert by_name is not None
            assert by_name.id is not None
            assert uow.end_device_groups.members(by_name.id) == ["M1", "M2"]
        added = run(
            uow_factory, AddGroupMembers(utility_id, DeviceRef(mrid="G-1"), refs("M2", "M3"))
        )
        assert (added.added, added.unchanged, added.group.members) == (1, 1, 3)
        removed = run(
            uow_factory, RemoveGroupMembers(utility_id, DeviceRef(name="campaign"), refs("M1"))
        )
        assert (removed.removed, removed.group.members) == (1, 2)
        changed = run(
            uow_factory,
            ChangeEndDeviceGroup(
                utility_id, DeviceRef(mrid="G-1"), name="round 2", members=refs("M1", "M3")
            ),
        )
        assert (changed.added, changed.removed, changed.unchanged) == (1, 1, 1)
        assert changed.group.name == "round 2"
        assert changed.group.description == "firmware 2.1"
        closed = run(uow_factory, CloseEndDeviceGroup(utility_id, DeviceRef(name="round 2")))
        assert closed.group.closed_at is not None
        assert closed.group.members == 2
        with pytest.raises(ItemRejected) as refused:
            run(uow_factory, AddGroupMembers(utility_id, DeviceRef(mrid="G-1"), refs("M2")))
        assert refused.value.code == "2009"
        # the name is free again once the group is closed; the mRID never is
        run(uow_factory, CreateEndDeviceGroup(utility_id, "G-2", "round 2"))
        with pytest.raises(PayloadInvalid) as taken:
            run(uow_factory, CreateEndDeviceGroup(utility_id, "G-1", "other"))
        assert taken.value.code == "2007"
        with pytest.raises(PayloadInvalid, match="already named"):
            run(uow_factory, CreateEndDeviceGroup(utility_id, "G-3", "round 2"))
        with uow_factory() as uow:
            assert [g.mrid for g in uow.end_device_groups.list(utility_id)] == ["G-2"]
            everything = uow.end_device_groups.list(utility_id, include_closed=True)
            assert sorted(g.mrid for g in everything) == ["G-1", "G-2"]
            # a name finds the open group first
            open_one = uow.end_device_groups.find(utility_id, DeviceRef(name="round 2"))
            assert open_one is not None
            assert open_one.mrid == "G-2"
        deleted = run(uow_factory, DeleteEndDeviceGroup(utility_id, DeviceRef(mrid="G-1")))
        assert deleted.removed == 2
        with uow_factory() as uow:
            assert uow.end_device_groups.find(utility_id, DeviceRef(mrid="G-1")) is None
        with pytest.raises(ItemRejected) as gone:
            run(uow_factory, DeleteEndDeviceGroup(utility_id, DeviceRef(mrid="G-1")))
        assert gone.value.code == "2008"

    def test_unknown_meters_change_nothing(
        self, uow_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        with pytest.raises(UnknownMembers) as refused:
            run(
                uow_factory,
                CreateEndDeviceGroup(
                    utility_id, "G-X", "x", members=refs("M1", "NOPE", "GONE", "NOPE")
                ),
            )
        assert refused.value.code == "2001"
        assert [str(r) for r in refused.value.refs] == ["NOPE", "GONE"]
        with uow_factory() as uow:
            assert uow.end_device_groups.list(utility_id, include_closed=True) == []
        run(uow_factory, CreateEndDeviceGroup(utility_id, "G-Y", "y", members=refs("M1")))
        with pytest.raises(UnknownMembers):
            run(uow_factory, AddGroupMembers(utility_id, DeviceRef(mrid="G-Y"), refs("M2", "NOPE")))
        with uow_factory() as uow:
            group = uow.end_device_groups.find(utility_id, DeviceRef(mrid="G-Y"))
            assert group is not None
            assert group.members == 1

    def test_bulk_membership(self, uow_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        """12,000 meters (more than one chunk of ids) in a few statements."""
        with uow_factory() as uow:
            uow.connection.execute(
                sa.insert(
                    sa.table(
                        "end_device",
                        sa.column("utility_id"),
                        sa.column("mrid"),
                        sa.column("kind"),
                        sa.column("state"),
                        sa.column("created_at"),
                        sa.column("updated_at"),
                    )
                ),
                [
                    {
                        "utility_id": utility_id,
                        "mrid": f"B{i:05d}",
                        "kind": "meter",
                        "state": "inventory",
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for i in range(12_000)
                ],
            )
            uow.commit()
        statements: list[str] = []
        engine = uow_factory.engine

        def count(conn: object, cursor: object, stmt: str, *args: object) -> None:
            if "end_device_group_member" in stmt and "INSERT" in stmt:
                statements.append(stmt)

        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            made = run(
                uow_factory,
                CreateEndDeviceGroup(
                    utility_id, "BIG", "big", members=refs(*(f"B{i:05d}" for i in range(12_000)))
                ),
            )
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        assert (made.added, made.group.members) == (12_000, 12_000)
        assert len(statements) == 3  # chunks of 5,000 ids
        removed = run(
            uow_factory,
            RemoveGroupMembers(
                utility_id, DeviceRef(mrid="BIG"), refs(*(f"B{i:05d}" for i in range(0, 12_000, 2)))
            ),
        )
        assert (removed.removed, removed.group.members) == (6_000, 6_000)

    def test_deleting_a_meter_leaves_its_groups(
        self, uow_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        with uow_factory() as uow:
            uow.devices.add(utility_id, EndDevice("M9", "ACME"))
            uow.commit()
        run(uow_factory, CreateEndDeviceGroup(utility_id, "G", "g", members=refs("M1", "M9")))
        with uow_factory() as uow:
            uow.devices.delete(utility_id, self.device_id(uow, utility_id, "M9"))
            group = uow.end_device_groups.find(utility_id, DeviceRef(mrid="G"))
            assert group is not None
            assert group.id is not None
            assert uow.end_device_groups.members(group.id) == ["M1"]
            uow.commit()

    # ------------------------------------------------------------ stored events' key

    def test_event_mrid_stored_once(
        self, uow_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        a = EndDeviceEvent("M1", "3.26.0.85", at, mrid="E-1")
        b = EndDeviceEvent("M1", "3.26.0.216", at + timedelta(minutes=1), mrid="E-2")
        anonymous = EndDeviceEvent("M2", "3.26.0.85", at)
        with uow_factory() as uow:
            assert uow.events.add_new(utility_id, [a, a, anonymous]) == [a, anonymous]
            uow.commit()
        with uow_factory() as uow:
            # the stored one is skipped by the index, the anonymous one is always new
            assert uow.events.add_new(utility_id, [a, b, anonymous]) == [b, anonymous]
            # add_many counts what it inserted
            assert uow.events.add_many(utility_id, [a, b]) == 0
            uow.commit()
        with uow_factory() as uow:
            stored = uow.events.query(utility_id, None, None, None)
        assert sorted(e.mrid or "" for e in stored) == ["", "", "E-1", "E-2"]

    def test_migration_dedupes_events(self, store_url: str) -> None:
        """Events stored twice before 0004 (no key then): the later copies leave for
        the audit log, the upgrade goes through, and the key holds afterwards."""
        engine = make_engine(store_url)
        upgrade(engine, "0003")
        try:
            at = datetime(2026, 1, 1, tzinfo=UTC)
            with engine.begin() as conn:
                uid = conn.execute(
                    sa.text(
                        "INSERT INTO utility (code, name, created_at)"
                        " VALUES ('U', 'u', :at) RETURNING id"
                    ),
                    {"at": at},
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "INSERT INTO end_device_event (utility_id, device_mrid, mrid, event_type,"
                        " created_at, details, recorded_at) VALUES"
                        " (:u, 'M1', :m, '3.26.0.85', :at, '{}', :at)"
                    ),
                    [
                        {"u": uid, "m": m, "at": at}
                        for m in ("E-1", "E-1", "E-2", "E-1", None, None)
                    ],
                )
            upgrade(engine)
            with engine.connect() as conn:
                kept = conn.execute(
                    sa.text("SELECT id, mrid FROM end_device_event ORDER BY id")
                ).all()
                audited = conn.execute(
                    sa.text("SELECT object_id, details FROM audit_log WHERE action = 'dedupe'")
                ).all()
            assert [r.mrid for r in kept] == ["E-1", "E-2", None, None]
            assert kept[0].id == 1  # the first stored copy is kept
            assert [r.object_id for r in audited] == ["E-1", "E-1"]
            assert '"id": 2' in audited[0].details
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO end_device_event (utility_id, device_mrid, mrid, event_type,"
                        " created_at, details, recorded_at) VALUES"
                        " (:u, 'M1', 'E-2', '3.26.0.85', :at, '{}', :at)"
                    ),
                    {"u": uid, "at": at},
                )
        finally:
            engine.dispose()
