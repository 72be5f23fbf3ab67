"""The one contract every SQL store passes: SQLite here, PostgreSQL in
tests/integration/sql. Subclasses provide the ``store_url`` fixture."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import psutil
import pytest
from sqlalchemy import Engine, text

import adapters.sql.readings as readings_module
from adapters.sql import (
    SqlUnitOfWork,
    SqlUnitOfWorkFactory,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from cim_schemas.errors import PayloadInvalid, ReplayConflict, StoreUnavailable
from mdm.model import (
    DeviceRef,
    DeviceState,
    EndDevice,
    EndDeviceEvent,
    IngestStats,
    UsagePoint,
    Utility,
)
from mdm.ports import AppliedMessage, StagedReading, StagingResult, UnitOfWork

T0 = datetime(2024, 3, 31, 0, 0, tzinfo=UTC)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT2 = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"


def q(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


class StoreContract:
    """Shared repository contract. ``store_url`` is a fresh, empty database."""

    @pytest.fixture
    def engine(self, store_url: str) -> Iterator[Engine]:
        engine = make_engine(store_url)
        upgrade(engine)
        yield engine
        engine.dispose()

    @pytest.fixture
    def uow_factory(self, engine: Engine) -> SqlUnitOfWorkFactory:
        return SqlUnitOfWorkFactory(engine)

    @pytest.fixture(params=["one-statement", "staged"])
    def readings_factory(
        self, request: pytest.FixtureRequest, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> SqlUnitOfWorkFactory:
        """Both bulk paths: PostgreSQL's one-statement path for small messages, and the
        staged path (temp tables) with a tiny batch size so that every flush boundary
        is crossed. (SQLite always stages.)"""
        if request.param == "staged":
            monkeypatch.setattr(readings_module, "SMALL_MESSAGE_ROWS", -1)
            return SqlUnitOfWorkFactory(engine, staging_batch_size=3)
        return SqlUnitOfWorkFactory(engine)

    @pytest.fixture
    def utility_id(self, uow_factory: SqlUnitOfWorkFactory) -> int:
        with uow_factory() as uow:
            u = uow.utilities.add(Utility("ACME", "Acme Power"))
            uow.devices.add(u.id or 0, EndDevice("M1", "ACME", serial_number="S-1", name="one"))
            uow.devices.add(u.id or 0, EndDevice("M2", "ACME", serial_number="S-2", name="two"))
            uow.devices.add(u.id or 0, EndDevice("M3", "ACME", serial_number="S-3"))
            uow.commit()
        assert u.id is not None
        return u.id

    def device_id(self, uow: UnitOfWork, utility_id: int, mrid: str) -> int:
        d = uow.devices.find(utility_id, DeviceRef(mrid=mrid))
        assert d is not None
        assert d.id is not None
        return d.id

    # ------------------------------------------------------------ schema

    def test_migrated_to_head(self, engine: Engine) -> None:
        assert current_revision(engine) == head_revision()

    def test_migration_matches_tables(self, engine: Engine) -> None:
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        from adapters.sql.tables import metadata

        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(ctx, metadata) == []

    # ------------------------------------------------------------ unit of work

    def test_rollback_unless_committed(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            uow.utilities.add(Utility("U1", "one"))

        def fail_after_commit() -> None:
            with uow_factory() as uow:
                uow.utilities.add(Utility("U2", "two"))
                uow.commit()
                uow.utilities.add(Utility("U3", "three"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_after_commit()
        with uow_factory() as uow:
            assert [u.code for u in uow.utilities.list()] == ["U2"]
            uow.utilities.add(Utility("U4", "four"))
            uow.rollback()
            assert uow.utilities.get("U4") is None

    def test_outside_with_block(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        uow = uow_factory()
        assert isinstance(uow, SqlUnitOfWork)
        with pytest.raises(RuntimeError, match="outside"):
            uow.utilities.list()

    def test_error_keeps_transaction_usable(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            uow.utilities.add(Utility("U1", "one"))
            with pytest.raises(PayloadInvalid) as info:
                uow.utilities.add(Utility("U1", "again"))
            assert info.value.code == "2007"
            uow.utilities.add(Utility("U2", "two"))
            uow.commit()
        with uow_factory() as uow:
            assert [u.code for u in uow.utilities.list()] == ["U1", "U2"]

    # ------------------------------------------------------------ registry

    def test_usage_points(self, uow_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        with uow_factory() as uow:
            up = uow.usage_points.add(
                utility_id, UsagePoint("UP1", "ACME", name="Main St 1", location="here")
            )
            assert up.id is not None
            assert up.utility_code == "ACME"
            assert uow.usage_points.find(utility_id, DeviceRef(mrid="UP1")) == up
            assert uow.usage_points.find(utility_id, DeviceRef(name="Main St 1")) == up
            assert uow.usage_points.find(utility_id, DeviceRef(mrid="nope")) is None
            with pytest.raises(PayloadInvalid) as info:
                uow.usage_points.add(utility_id, UsagePoint("UP1", "ACME"))
            assert info.value.code == "2007"
            changed = uow.usage_points.update(
                utility_id, UsagePoint("UP1", "ACME", transformer_area="T9")
            )
            assert changed.id == up.id
            assert changed.transformer_area == "T9"
            with pytest.raises(PayloadInvalid) as info:
                uow.usage_points.update(utility_id, UsagePoint("UP404", "ACME"))
            assert info.value.code == "2008"
            uow.usage_points.add(utility_id, UsagePoint("UP2", "ACME"))
            assert [p.mrid for p in uow.usage_points.list(utility_id)] == ["UP1", "UP2"]
            uow.usage_points.delete(utility_id, up.id)
            assert [p.mrid for p in uow.usage_points.list(utility_id)] == ["UP2"]
            with pytest.raises(PayloadInvalid) as info:
                uow.usage_points.delete(utility_id, up.id)
            assert info.value.code == "2008"

    def test_devices(self, uow_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        with uow_factory() as uow:
            m1 = uow.devices.find(utility_id, DeviceRef(mrid="M1"))
            assert m1 is not None
            assert m1.serial_number == "S-1"
            assert m1.utility_code == "ACME"
            assert uow.devices.find(utility_id, DeviceRef(name="one")) == m1
            assert uow.devices.find(utility_id, DeviceRef(name="S-1")) == m1
            assert uow.devices.find(utility_id, DeviceRef(name="missing")) is None
            refs = [DeviceRef(mrid="M2"), DeviceRef(name="S-3"), DeviceRef(mrid="M9")]
            found = uow.devices.find_many(utility_id, refs)
            assert {r: d.mrid for r, d in found.items()} == {refs[0]: "M2", refs[1]: "M3"}
            # a name shared by two devices resolves to nothing
            uow.devices.add(utility_id, EndDevice("M4", "ACME", name="twin"))
            uow.devices.add(utility_id, EndDevice("M5", "ACME", name="twin"))
            assert uow.devices.find(utility_id, DeviceRef(name="twin")) is None
            with pytest.raises(PayloadInvalid) as info:
                uow.devices.add(utility_id, EndDevice("M1", "ACME"))
            assert info.value.code == "2007"
            assert m1.id is not None
            uow.devices.set_state(m1.id, DeviceState.INSTALLED)
            updated = uow.devices.update(
                utility_id, EndDevice("M1", "ACME", firmware_version="2.0", state=m1.state)
            )
            assert updated.firmware_version == "2.0"
            assert [d.mrid for d in uow.devices.list(utility_id)] == ["M1", "M2", "M3", "M4", "M5"]
            uow.devices.delete(utility_id, self.device_id(uow, utility_id, "M5"))
            assert len(uow.devices.list(utility_id)) == 4
            other = uow.utilities.add(Utility("OTHER", "Other"))
            assert other.id is not None
            assert uow.devices.find(other.id, DeviceRef(mrid="M1")) is None

    def test_installation_history(self, uow_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        with uow_factory() as uow:
            up1 = uow.usage_points.add(utility_id, UsagePoint("UP1", "ACME"))
            up2 = uow.usage_points.add(utility_id, UsagePoint("UP2", "ACME"))
            assert up1.id is not None
            assert up2.id is not None
            m1 = self.device_id(uow, utility_id, "M1")
            assert uow.installations.current(m1) is None
            inst = uow.installations.install(m1, up1.id, q(0))
            assert (inst.device_mrid, inst.usage_point_mrid, inst.end) == ("M1", "UP1", None)
            assert uow.installations.current(m1) == inst
            with pytest.raises(PayloadInvalid) as info:
                uow.installations.install(m1, up2.id, q(60))
            assert info.value.code == "2009"
            closed = uow.installations.remove(m1, q(120))
            assert closed.end == q(120)
            with pytest.raises(PayloadInvalid) as info:
                uow.installations.remove(m1, q(180))
            assert info.value.code == "2008"
            with pytest.raises(PayloadInvalid) as info:  # overlaps the closed period
                uow.installations.install(m1, up2.id, q(60))
            assert info.value.code == "2009"
            uow.installations.install(m1, up2.id, q(120))
            assert [
                (i.usage_point_mrid, i.start, i.end) for i in uow.installations.history(m1)
            ] == [
                ("UP1", q(0), q(120)),
                ("UP2", q(120), None),
            ]
            assert uow.installations.devices_at(up1.id, q(60), q(90)) == [(m1, q(0), q(120))]
            assert uow.installations.devices_at(up1.id, q(120), None) == []
            assert uow.installations.devices_at(up2.id, None, None) == [(m1, q(120), None)]
            assert [i.device_mrid for i in uow.installations.current_at_usage_point(up2.id)] == [
                "M1"
            ]
            with pytest.raises(PayloadInvalid) as info:
                uow.usage_points.delete(utility_id, up1.id)
            assert info.value.code == "2009"
            uow.commit()

    def test_one_open_installation_enforced_by_index(
        self, uow_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        with uow_factory() as uow:
            up = uow.usage_points.add(utility_id, UsagePoint("UP1", "ACME"))
            m1 = self.device_id(uow, utility_id, "M1")
            sql = text(
                "INSERT INTO installation (device_id, usage_point_id, start_at) VALUES (:d, :u, :s)"
            )
            conn = uow.connection
            conn.execute(sql, {"d": m1, "u": up.id, "s": "2024-01-01 00:00:00.000000"})
            from sqlalchemy.exc import IntegrityError

            with pytest.raises(IntegrityError):
                conn.execute(sql, {"d": m1, "u": up.id, "s": "2024-02-01 00:00:00.000000"})

    # ------------------------------------------------------------ readings

    def stage(
        self,
        uow: UnitOfWork,
        utility_id: int,
        meters: dict[int, DeviceRef],
        rows: list[StagedReading],
    ) -> StagingResult:
        staging = uow.readings.staging()
        for item, ref in meters.items():
            staging.add_meter(item, ref)
        staging.add_readings(rows)
        return staging.apply(utility_id)

    def test_bulk_store_and_query(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        rows = [
            StagedReading(item, rt, q(15 * k), Decimal(f"{item}.{k}5"), "")
            for item in (1, 2)
            for rt in (RT, RT2)
            for k in range(96)
        ]
        with readings_factory() as uow:
            result = self.stage(
                uow, utility_id, {1: DeviceRef(mrid="M1"), 2: DeviceRef(mrid="M2")}, rows
            )
            assert result.stats == IngestStats(stored=384)
            assert result.unknown_items == []
            assert result.duplicates == []
            uow.commit()
        with readings_factory() as uow:
            m1, m2 = (self.device_id(uow, utility_id, m) for m in ("M1", "M2"))
            assert uow.readings.count() == 384
            # (start, end]: readings are stamped at the end of their interval
            got = list(uow.readings.query([m2, m1], [RT], q(15), q(60)))
            assert [(r.device_mrid, r.reading_type, r.ts) for r in got] == [
                (mrid, RT, q(m)) for mrid in ("M1", "M2") for m in (30, 45, 60)
            ]
            assert got[0].value == Decimal(f"{got[0].device_mrid[1]}.25")
            assert got[0].version == 1
            assert got[0].recorded_at.tzinfo is not None
            everything = list(uow.readings.query([m1], None, None, None))
            assert len(everything) == 192
            assert [r.ts for r in everything[:96]] == [q(15 * k) for k in range(96)]
            assert [(r.reading_type, r.ts) for r in everything] == [
                (rt, q(15 * k)) for rt in (RT, RT2) for k in range(96)
            ]

    def test_edit_supersedes_and_keeps_history(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        meters = {1: DeviceRef(mrid="M1")}
        first = [StagedReading(1, RT, q(15 * k), Decimal("1.50"), "") for k in range(4)]
        with readings_factory() as uow:
            self.stage(uow, utility_id, meters, first)
            uow.commit()
        second = [
            StagedReading(1, RT, q(0), Decimal("1.5"), ""),  # same number: unchanged
            StagedReading(1, RT, q(15), Decimal("2.25"), ""),  # new value
            StagedReading(1, RT, q(30), Decimal("1.50"), "1.4.9"),  # new quality
            StagedReading(1, RT, q(60), Decimal("7"), ""),  # new row
        ]
        with readings_factory() as uow:
            result = self.stage(uow, utility_id, meters, second)
            assert result.stats == IngestStats(stored=1, superseded=2, unchanged=1)
            uow.commit()
        with readings_factory() as uow:
            m1 = self.device_id(uow, utility_id, "M1")
            versions = uow.readings.versions(m1, RT, q(15))
            assert [(v.version, v.value) for v in versions] == [
                (2, Decimal("2.25")),
                (1, Decimal("1.50")),
            ]
            assert versions[0].recorded_at >= versions[1].recorded_at
            quality = uow.readings.versions(m1, RT, q(30))
            assert [(v.version, v.quality) for v in quality] == [(2, "1.4.9"), (1, "")]
            assert [v.version for v in uow.readings.versions(m1, RT, q(0))] == [1]
            assert uow.readings.versions(m1, RT, q(999)) == []
            # a replay of the edit changes nothing
            again = self.stage(uow, utility_id, meters, second)
            assert again.stats == IngestStats(unchanged=4)
            # and a third version stacks on the history
            self.stage(uow, utility_id, meters, [StagedReading(1, RT, q(15), Decimal("3"), "")])
            assert [v.version for v in uow.readings.versions(m1, RT, q(15))] == [3, 2, 1]
            assert uow.readings.count() == 5

    def test_duplicates_write_nothing(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        rows = [
            StagedReading(1, RT, q(0), Decimal("1"), ""),
            StagedReading(1, RT, q(15), Decimal("1"), ""),
            StagedReading(1, RT, q(15), Decimal("2"), ""),
            StagedReading(2, RT, q(0), Decimal("1"), ""),
        ]
        with readings_factory() as uow:
            result = self.stage(
                uow, utility_id, {1: DeviceRef(mrid="M1"), 2: DeviceRef(mrid="M2")}, rows
            )
            assert result.stats == IngestStats()
            dups = result.duplicates
            assert [(d.item, d.reading_type, d.ts, d.count) for d in dups] == [(1, RT, q(15), 2)]
            assert uow.readings.count() == 0
            # the same when some keys exist already (the merge path)
            self.stage(uow, utility_id, {1: DeviceRef(mrid="M1")}, rows[:2])
            result = self.stage(uow, utility_id, {1: DeviceRef(mrid="M1")}, rows[:3])
            assert len(result.duplicates) == 1
            assert uow.readings.count() == 2
            m1 = self.device_id(uow, utility_id, "M1")
            assert [v.value for v in uow.readings.versions(m1, RT, q(15))] == [Decimal("1")]

    def test_two_items_naming_one_meter_are_duplicates(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        rows = [StagedReading(i, RT, q(0), Decimal("1"), "") for i in (1, 2)]
        with readings_factory() as uow:
            result = self.stage(
                uow, utility_id, {1: DeviceRef(mrid="M1"), 2: DeviceRef(name="S-1")}, rows
            )
            assert [(d.item, d.count) for d in result.duplicates] == [(1, 2), (2, 2)]
            assert uow.readings.count() == 0

    def test_unknown_meters(self, readings_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        rows = [
            StagedReading(item, RT, q(15 * k), Decimal("1"), "")
            for item in (1, 2, 3, 4)
            for k in range(3)
        ]
        meters = {1: DeviceRef(mrid="M1"), 2: DeviceRef(mrid="NOPE"), 3: DeviceRef(name="nobody")}
        with readings_factory() as uow:
            result = self.stage(uow, utility_id, meters, rows)  # item 4 has no meter at all
            assert result.unknown_items == [2, 3, 4]
            assert result.stats == IngestStats(stored=3)
            only_unknown = self.stage(uow, utility_id, {1: DeviceRef(mrid="X")}, rows[:3])
            assert only_unknown.unknown_items == [1]
            assert only_unknown.stats == IngestStats()

    def test_name_resolved_meters(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        with readings_factory() as uow:
            uow.devices.add(utility_id, EndDevice("M4", "ACME", name="twin"))
            uow.devices.add(utility_id, EndDevice("M5", "ACME", name="twin"))
            meters = {
                1: DeviceRef(name="one"),  # end_device.name
                2: DeviceRef(name="S-2", name_type="SerialNumber"),  # serial number
                3: DeviceRef(name="twin"),  # ambiguous: unknown
            }
            rows = [StagedReading(i, RT, q(0), Decimal(i), "") for i in (1, 2, 3)]
            result = self.stage(uow, utility_id, meters, rows)
            assert result.unknown_items == [3]
            assert result.stats == IngestStats(stored=2)
            m1, m2 = (self.device_id(uow, utility_id, m) for m in ("M1", "M2"))
            assert [
                (r.device_mrid, r.value) for r in uow.readings.query([m1, m2], None, None, None)
            ] == [("M1", Decimal(1)), ("M2", Decimal(2))]

    def test_quality_text_round_trips(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        odd = "1.4.9,tab\there\\back\nline"
        with readings_factory() as uow:
            result = self.stage(
                uow,
                utility_id,
                {1: DeviceRef(mrid="M1")},
                [
                    StagedReading(1, RT, q(0), Decimal("-0.000"), odd),
                    StagedReading(1, RT, q(15), Decimal("12345678901234567890.123456789"), ""),
                    StagedReading(1, RT, q(30), Decimal("1E+3"), ""),
                ],
            )
            assert result.stats == IngestStats(stored=3)
            m1 = self.device_id(uow, utility_id, "M1")
            got = list(uow.readings.query([m1], None, None, None))
            assert [r.quality for r in got] == [odd, "", ""]
            assert [r.value for r in got] == [
                Decimal(0),
                Decimal("12345678901234567890.123456789"),
                Decimal(1000),
            ]

    def test_reading_types_registered(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        with readings_factory() as uow:
            first = uow.readings.reading_type_id(RT)
            assert uow.readings.reading_type_id(RT) == first
            assert uow.readings.reading_type_id(RT2) != first
            uow.rollback()
            again = uow.readings.reading_type_id(RT2)
            uow.commit()
        with readings_factory() as uow:
            assert uow.readings.reading_type_id(RT2) == again

    def test_timezones_round_trip(
        self, readings_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        cet = timezone(timedelta(hours=1))
        local = datetime(2024, 3, 31, 1, 30, tzinfo=cet)  # 00:30 UTC
        with readings_factory() as uow:
            self.stage(
                uow,
                utility_id,
                {1: DeviceRef(mrid="M1")},
                [StagedReading(1, RT, local, Decimal("1"), "")],
            )
            up1 = uow.usage_points.add(utility_id, UsagePoint("UP1", "ACME"))
            assert up1.id is not None
            m1 = self.device_id(uow, utility_id, "M1")
            uow.installations.install(m1, up1.id, local)
            log_id = uow.messages.start("src", "/soap", "h", 1, local)
            uow.commit()
        with readings_factory() as uow:
            (stored,) = uow.readings.query([m1], None, None, None)
            assert stored.ts == local
            assert stored.ts.utcoffset() == timedelta(0)
            assert stored.ts.isoformat() == "2024-03-31T00:30:00+00:00"
            hist = uow.installations.history(m1)
            assert hist[0].start == local
            assert hist[0].start.tzinfo is not None
            msg = uow.messages.get(log_id)
            assert msg is not None
            assert msg.received_at == local
            assert msg.received_at.utcoffset() == timedelta(0)
            assert next(iter(uow.readings.query([m1], None, q(29), q(30)))).ts == local
            assert list(uow.readings.query([m1], None, q(30), None)) == []
            with pytest.raises(ValueError, match="naive"):
                self.stage(
                    uow,
                    utility_id,
                    {1: DeviceRef(mrid="M1")},
                    [StagedReading(1, RT, datetime(2024, 1, 1), Decimal("1"), "")],
                )

    def test_staging_200k_rows_bounded_memory(self, engine: Engine, utility_id: int) -> None:
        factory = SqlUnitOfWorkFactory(engine, staging_batch_size=10_000)
        meters = 200
        per_meter = 1000
        process = psutil.Process()
        with factory() as uow:
            staging = uow.readings.staging()
            for item in range(1, meters + 1):
                staging.add_meter(item, DeviceRef(mrid="M1" if item == 1 else f"X{item}"))
            gc.collect()
            before = process.memory_info().rss
            peak = before
            for item in range(1, meters + 1):
                staging.add_readings(
                    [StagedReading(item, RT, q(15 * k), Decimal(k), "") for k in range(per_meter)]
                )
                if item % 20 == 0:
                    peak = max(peak, process.memory_info().rss)
            result = staging.apply(utility_id)
            peak = max(peak, process.memory_info().rss)
            assert result.stats == IngestStats(stored=per_meter)
            assert len(result.unknown_items) == meters - 1
        # 200k rows held in Python would take well over 60 MB.
        assert peak - before < 40 * 1024 * 1024, (peak - before) / 2**20

    def test_staging_left_unapplied(self, engine: Engine, utility_id: int) -> None:
        factory = SqlUnitOfWorkFactory(engine, staging_batch_size=2)
        rows = [StagedReading(1, RT, q(15 * k), Decimal(k), "") for k in range(5)]
        with factory() as uow:
            abandoned = uow.readings.staging()
            abandoned.add_readings(rows)  # flushed to a temp table, never applied
            uow.commit()
        for _ in range(2):  # the pooled connection may still hold that temp table
            with factory() as uow:
                first = uow.readings.staging()
                second = uow.readings.staging()  # two stagings in one unit of work
                first.add_meter(1, DeviceRef(mrid="M1"))
                second.add_meter(1, DeviceRef(mrid="M2"))
                first.add_readings(rows)
                second.add_readings(rows[:3])
                assert first.apply(utility_id).stats.total == 5
                assert second.apply(utility_id).stats.total == 3
                uow.commit()
        with factory() as uow:
            assert uow.readings.count() == 8

    def test_staging_spans_no_commit(self, engine: Engine, utility_id: int) -> None:
        factory = SqlUnitOfWorkFactory(engine, staging_batch_size=2)
        with factory() as uow:
            staging = uow.readings.staging()
            staging.add_meter(1, DeviceRef(mrid="M1"))
            staging.add_readings(
                [StagedReading(1, RT, q(15 * k), Decimal(k), "") for k in range(3)]
            )
            uow.commit()
            with pytest.raises(RuntimeError, match="transaction that filled it"):
                staging.apply(utility_id)

    def test_query_streams(self, engine: Engine, utility_id: int) -> None:
        rows = [
            StagedReading(item, RT, q(15 * k), Decimal(k), "")
            for item in (1, 2)
            for k in range(15_000)
        ]
        with SqlUnitOfWorkFactory(engine)() as uow:
            self.stage(uow, utility_id, {1: DeviceRef(mrid="M1"), 2: DeviceRef(mrid="M2")}, rows)
            ids = [self.device_id(uow, utility_id, m) for m in ("M1", "M2")]
            stream = uow.readings.query(ids, [RT], None, None)
            first = next(stream)
            assert (first.device_mrid, first.ts, first.value) == ("M1", q(0), Decimal(0))
            # other statements may run while the stream is open
            assert uow.readings.count() == 30_000
            seen = 1
            last = first
            for reading in stream:
                assert (reading.device_mrid, reading.ts) > (last.device_mrid, last.ts)
                last = reading
                seen += 1
            assert seen == 30_000
            assert (last.device_mrid, last.ts) == ("M2", q(15 * 14_999))
            assert list(uow.readings.query([], None, None, None)) == []
            # more device ids than one statement takes: chunked, still in order
            many = [*range(10**6, 10**6 + 12_000), ids[1], ids[0]]
            assert sum(1 for _ in uow.readings.query(many, None, q(0), q(15))) == 2

    def test_staging_many_rows_all_known(self, engine: Engine, utility_id: int) -> None:
        factory = SqlUnitOfWorkFactory(engine, staging_batch_size=7_000)
        rows = [
            StagedReading(item, RT, q(15 * k), Decimal(k), "")
            for item in (1, 2, 3)
            for k in range(10_000)
        ]
        meters = {1: DeviceRef(mrid="M1"), 2: DeviceRef(mrid="M2"), 3: DeviceRef(mrid="M3")}
        with factory() as uow:
            assert self.stage(uow, utility_id, meters, rows).stats == IngestStats(stored=30_000)
            changed = [r._replace(value=r.value + 1) if r.ts.minute == 0 else r for r in rows]
            result = self.stage(uow, utility_id, meters, changed)
            assert result.stats == IngestStats(superseded=7_500, unchanged=22_500)
            uow.commit()

    # ------------------------------------------------------------ events

    def test_events(self, uow_factory: SqlUnitOfWorkFactory, utility_id: int) -> None:
        with uow_factory() as uow:
            events = [
                EndDeviceEvent("M1", "3.26.0.85", q(0), reason="power down", details={"a": "1"}),
                EndDeviceEvent("M1", "3.26.0.216", q(30), severity="info"),
                EndDeviceEvent("GHOST", "3.26.0.85", q(10), mrid="E-1"),
            ]
            assert uow.events.add_many(utility_id, events) == 3
            m1 = self.device_id(uow, utility_id, "M1")
            assert uow.events.query(utility_id, [m1], None, None) == events[:2]
            assert uow.events.query(utility_id, None, q(5), q(30)) == [events[2]]
            assert len(uow.events.query(utility_id, None, None, None)) == 3

    # ------------------------------------------------------------ message log

    def test_message_log(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            log_id = uow.messages.start("partner", "/soap/readings", "abc", 123, q(0))
            uow.messages.identify(log_id, "MSG-1", "created", "MeterReadings", "C-1")
            uow.messages.transition(log_id, "validated")
            uow.messages.transition(log_id, "mapped", "3 readings")
            uow.messages.finish(log_id, "replied", "OK", b"<reply/>")
            state = uow.messages.find("partner", "MSG-1")
            assert state is not None
            assert state.id == log_id
            assert (state.verb, state.noun, state.state, state.result, state.reply) == (
                "created",
                "MeterReadings",
                "replied",
                "OK",
                b"<reply/>",
            )
            assert uow.messages.get(log_id) == state
            assert uow.messages.find("other", "MSG-1") is None
            steps = uow.messages.lifecycle(log_id)
            assert [(s, d) for s, _, d in steps] == [
                ("received", None),
                ("validated", None),
                ("mapped", "3 readings"),
                ("replied", "OK"),
            ]
            assert all(at.tzinfo is not None for _, at, _ in steps)
            uow.commit()

    def test_message_id_unique_per_source(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            a = uow.messages.start("partner", "/e", "h1", 1, q(0))
            b = uow.messages.start("partner", "/e", "h2", 1, q(1))
            c = uow.messages.start("other", "/e", "h3", 1, q(2))
            uow.messages.identify(a, "MSG-1", "created", "MeterReadings", None)
            uow.messages.identify(c, "MSG-1", "created", "MeterReadings", None)
            with pytest.raises(ReplayConflict):
                uow.messages.identify(b, "MSG-1", "created", "MeterReadings", None)
            # without a MessageID there is no uniqueness, and the transaction still works
            uow.messages.identify(b, None, "get", "MeterReadings", None)
            d = uow.messages.start("partner", "/e", "h4", 1, q(3))
            uow.messages.identify(d, None, "get", "MeterReadings", None)
            uow.commit()
        with pytest.raises(PayloadInvalid), uow_factory() as uow:
            uow.messages.transition(9999, "validated")

    def test_find_many_matches_source_and_message_id_pairs(
        self, uow_factory: SqlUnitOfWorkFactory
    ) -> None:
        """A batch's lookup of MessageIDs seen before: a pair matches only as a pair."""
        with uow_factory() as uow:
            ids = {}
            for n, (source, message_id) in enumerate(
                [("cis", "M-1"), ("cis", "M-2"), ("mdus", "M-3"), ("cis", None)]
            ):
                ids[(source, message_id)] = log_id = uow.messages.start(
                    source, "/e", f"h{n}", 1, q(n)
                )
                uow.messages.identify(log_id, message_id, "created", "MeterReadings", None)
            uow.messages.finish(ids[("cis", "M-2")], "replied", "OK", b"<r/>")
            uow.commit()
        with uow_factory() as uow:
            asked = [("cis", "M-1"), ("cis", "M-2"), ("cis", "M-3"), ("mdus", "M-1"), ("x", "")]
            found = uow.messages.find_many([*asked, ("cis", "M-1")])  # a repeat is harmless
            assert sorted(found) == [("cis", "M-1"), ("cis", "M-2")]
            assert found[("cis", "M-2")].id == ids[("cis", "M-2")]
            assert found[("cis", "M-2")].reply == b"<r/>"
            assert found[("cis", "M-1")] == uow.messages.find("cis", "M-1")
            assert uow.messages.find_many([]) == {}

    def test_applied_messages_logged_at_once(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        def applied(n: int, message_id: str | None) -> AppliedMessage:
            steps = [
                ("received", q(n), None),
                ("validated", q(n + 1), None),
                ("dispatched", q(n + 1), "create MeterReadings (batch)"),
                ("replied", q(n + 2), "OK" if n else "PARTIAL"),
            ]
            return AppliedMessage(
                "partner", "amqp:q", f"h{n}", 10 + n, q(n), message_id, "create",
                "MeterReadings", f"C-{n}", steps[-1][2] or "", b"<reply %d/>" % n, steps,
            )  # fmt: skip

        with uow_factory() as uow:
            entries = [applied(0, "A-1"), applied(1, None), applied(2, "A-2")]
            ids = uow.messages.record_applied_many(entries)
            assert len(set(ids)) == 3
            assert uow.messages.record_applied_many([]) == []
            uow.commit()
        with uow_factory() as uow:
            for log_id, entry in zip(ids, entries, strict=True):
                state = uow.messages.get(log_id)
                assert state is not None
                assert (state.message_id, state.state, state.result, state.reply) == (
                    entry.message_id,
                    "replied",
                    entry.result,
                    entry.reply,
                )
                assert state.content_hash == entry.content_hash
                assert uow.messages.lifecycle(log_id) == list(entry.steps)
            found = uow.messages.find("partner", "A-2")
            assert found is not None
            assert found.id == ids[2]
        # a MessageID claimed meanwhile: recoverable, the whole batch is retried one by one
        with uow_factory() as uow, pytest.raises(StoreUnavailable):
            uow.messages.record_applied_many([applied(5, "A-3"), applied(6, "A-1")])
        with uow_factory() as uow:
            assert uow.messages.find("partner", "A-3") is None

    # ------------------------------------------------------------ dead letters and audit

    def test_dead_letters(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            log_id = uow.messages.start("partner", "/e", "h", 5, q(0))
            body = bytes(range(256))
            first = uow.dead_letters.add(
                source="partner",
                endpoint="/e",
                received_at=q(0),
                error_code="1001",
                reason="not well-formed",
                body=body,
                truncated=False,
                metadata={"content-type": "text/xml"},
                message_log_id=log_id,
            )
            second = uow.dead_letters.add(
                source="sftp",
                endpoint="/in",
                received_at=q(5),
                error_code="3002",
                reason="boom",
                body=b"x" * 10,
                truncated=True,
                metadata={},
                message_log_id=None,
            )
            dl = uow.dead_letters.get(first)
            assert dl is not None
            assert (dl.body, dl.metadata, dl.message_log_id, dl.truncated) == (
                body,
                {"content-type": "text/xml"},
                log_id,
                False,
            )
            assert dl.received_at == q(0)
            assert dl.replay_count == 0
            assert dl.resolved_at is None
            assert [d.id for d in uow.dead_letters.list()] == [second, first]
            uow.dead_letters.mark_replayed(first, resolved=False)
            uow.dead_letters.mark_replayed(first, resolved=True)
            dl = uow.dead_letters.get(first)
            assert dl is not None
            assert dl.replay_count == 2
            assert dl.resolved_at is not None
            assert [d.id for d in uow.dead_letters.list()] == [second]
            assert [d.id for d in uow.dead_letters.list(include_resolved=True, limit=1)] == [second]
            assert uow.dead_letters.get(12345) is None
            uow.commit()

    def test_audit(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            uow.audit.record("alice", "create", "UsagePoint", "UP1", "via CLI")
            uow.audit.record("bob", "delete", "EndDevice", None)
            entries = uow.audit.list()
            assert [e[1:] for e in entries] == [
                ("bob", "delete", "EndDevice", None, None),
                ("alice", "create", "UsagePoint", "UP1", "via CLI"),
            ]
            assert entries[0][0].tzinfo is not None
            assert len(uow.audit.list(limit=1)) == 1

    def test_audit_query(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        """The audit log filtered by time, actors, action, object type and id, paged by
        id (newest first); every filter narrows, none is ignored."""
        from mdm.ports import AuditQuery

        with uow_factory() as uow:
            uow.audit.record("alice", "create", "UsagePoint", "UP1", "via CLI")
            uow.audit.record("bob", "delete", "EndDevice", "M1")
            uow.audit.record("alice", "change", "UsagePoint", "UP2")
            uow.audit.record("carol", "create", "EndDevice", "M1")
            uow.commit()
        with uow_factory() as uow:
            everything = uow.audit.query(AuditQuery())
            assert [(e.actor, e.action) for e in everything] == [
                ("carol", "create"),
                ("alice", "change"),
                ("bob", "delete"),
                ("alice", "create"),
            ]
            ids = [e.id for e in everything]
            assert ids == sorted(ids, reverse=True)
            assert everything[-1].details == "via CLI"
            assert everything[0].at.tzinfo is not None

            def who(**filters: object) -> list[str]:
                found = uow.audit.query(AuditQuery(**filters))  # type: ignore[arg-type]
                return [f"{e.actor}:{e.action}:{e.object_id}" for e in found]

            assert who(actors=frozenset({"alice"})) == ["alice:change:UP2", "alice:create:UP1"]
            assert who(actors=frozenset({"alice", "carol"}), action="create") == [
                "carol:create:M1",
                "alice:create:UP1",
            ]
            assert who(actors=frozenset()) == []  # nobody's entries
            assert who(object_type="EndDevice", object_id="M1") == [
                "carol:create:M1",
                "bob:delete:M1",
            ]
            assert who(object_id="UP2") == ["alice:change:UP2"]
            assert who(before=ids[1]) == ["bob:delete:M1", "alice:create:UP1"]
            assert who(limit=1) == ["carol:create:M1"]
            at = everything[1].at  # alice's change: (start, end]
            assert "alice:change:UP2" in who(end=at)
            assert "alice:change:UP2" not in who(start=at)
            assert who(start=everything[0].at) == []

    def test_read_only_unit_of_work(self, uow_factory: SqlUnitOfWorkFactory) -> None:
        with uow_factory() as uow:
            uow.audit.record("alice", "create", "UsagePoint", "UP1")
            uow.commit()
        with uow_factory.read_only() as uow:
            assert len(uow.audit.list()) == 1
            raw = uow.connection.connection.driver_connection
            if uow.connection.dialect.name == "postgresql":  # no transaction was begun
                assert raw.autocommit
                assert raw.info.transaction_status.name == "IDLE"
            with pytest.raises(RuntimeError, match="nothing to commit"):
                uow.commit()
