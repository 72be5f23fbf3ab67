"""Utility scoping on every SQL store: SQLite in tests/unit/sql/test_scoping_sqlite.py,
PostgreSQL in tests/integration/sql/test_scoping_postgres.py.

Two utilities hold look-alike data: the same device, usage point, group, job and
event mRIDs, the same names and serial numbers, and each has things the other does
not. Every query that takes a utility is asked from utility A and must answer with
A's rows only; removing any ``utility_id`` filter from the store makes one of these
tests fail on both stores (docs/testing.md lists the mutations).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

import adapters.sql.readings as readings_module
from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from cim_schemas.errors import PayloadInvalid, PermanentError
from mdm.groups import EndDeviceGroup
from mdm.hes_jobs import HeadEndJob, JobKind
from mdm.model import DeviceRef, EndDevice, EndDeviceEvent, UsagePoint, Utility
from mdm.ports import StagedReading, StagingResult, UnitOfWork

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def q(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@dataclass(frozen=True)
class Two:
    a: int  # utility ACME: devices M1 (one, S-1), M2 (two, S-2), M3 (serial S-3)
    b: int  # utility OTHER: M1 (one, S-1), B2 (two, S-3), B-ONLY (b-only), B3 (serial S-B)


#: references from utility A: which of A's devices each must resolve to (None: unknown)
A_REFS: dict[int, tuple[DeviceRef, str | None]] = {
    1: (DeviceRef(mrid="M1"), "M1"),  # the mRID exists in both utilities
    2: (DeviceRef(name="two"), "M2"),  # the name exists in both
    3: (DeviceRef(name="S-3"), "M3"),  # the serial number exists in both
    4: (DeviceRef(mrid="B-ONLY"), None),  # B's only
    5: (DeviceRef(name="b-only"), None),  # B's name
    6: (DeviceRef(name="S-B"), None),  # B's serial number (another device than item 5's:
    # resolved in B, items 5 and 6 would not look like two items naming one meter, which
    # sends PostgreSQL's one-statement path to the staged one)
}


def device_id(uow: UnitOfWork, utility_id: int, mrid: str) -> int:
    d = uow.devices.find(utility_id, DeviceRef(mrid=mrid))
    assert d is not None
    assert d.id is not None
    return d.id


def job(utility_id: int, mrid: str) -> HeadEndJob:
    return HeadEndJob(
        utility_id=utility_id,
        kind=JobKind.CONTROL,
        mrid=mrid,
        spec={"of": utility_id},
        targets=("M1",),
        due_at=T0,
        created_at=T0,
    )


class UtilityScopingContract:
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

    @pytest.fixture(params=["one-statement", "staged"])
    def readings_factory(
        self, request: pytest.FixtureRequest, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> SqlUnitOfWorkFactory:
        """PostgreSQL's one-statement path for small messages and the staged path (temp
        tables); SQLite always stages."""
        if request.param == "staged":
            monkeypatch.setattr(readings_module, "SMALL_MESSAGE_ROWS", -1)
            return SqlUnitOfWorkFactory(engine, staging_batch_size=3)
        return SqlUnitOfWorkFactory(engine)

    @pytest.fixture
    def two(self, uow_factory: SqlUnitOfWorkFactory) -> Two:
        with uow_factory() as uow:
            a = uow.utilities.add(Utility("ACME", "Acme Power")).id
            b = uow.utilities.add(Utility("OTHER", "Other Power")).id
            assert a is not None
            assert b is not None
            for dev in (
                EndDevice("M1", "ACME", serial_number="S-1", name="one"),
                EndDevice("M2", "ACME", serial_number="S-2", name="two"),
                EndDevice("M3", "ACME", serial_number="S-3"),
            ):
                uow.devices.add(a, dev)
            for dev in (
                EndDevice("M1", "OTHER", serial_number="S-1", name="one"),
                EndDevice("B2", "OTHER", serial_number="S-3", name="two"),
                EndDevice("B-ONLY", "OTHER", name="b-only"),
                EndDevice("B3", "OTHER", serial_number="S-B"),
            ):
                uow.devices.add(b, dev)
            uow.usage_points.add(a, UsagePoint("UP1", "ACME", name="Main St 1"))
            uow.usage_points.add(b, UsagePoint("UP1", "OTHER", name="Main St 1"))
            uow.usage_points.add(b, UsagePoint("UPB", "OTHER", name="Elm St"))
            uow.commit()
        return Two(a, b)

    # ------------------------------------------------------------ end devices

    def test_devices_found_in_their_utility_only(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with uow_factory() as uow:
            assert [d.mrid for d in uow.devices.list(two.a)] == ["M1", "M2", "M3"]
            assert [d.mrid for d in uow.devices.list(two.b)] == ["B-ONLY", "B2", "B3", "M1"]
            a_m1 = uow.devices.find(two.a, DeviceRef(mrid="M1"))
            b_m1 = uow.devices.find(two.b, DeviceRef(mrid="M1"))
            assert a_m1 is not None
            assert b_m1 is not None
            assert (a_m1.utility_code, b_m1.utility_code) == ("ACME", "OTHER")
            assert a_m1.id != b_m1.id
            found = uow.devices.find_many(two.a, [ref for ref, _ in A_REFS.values()])
            assert {ref: d.mrid for ref, d in found.items()} == {
                ref: mrid for ref, mrid in A_REFS.values() if mrid is not None
            }
            assert all(d.utility_code == "ACME" for d in found.values())
            assert uow.devices.find(two.a, DeviceRef(name="one")) == a_m1

    def test_device_update_and_delete_stay_in_their_utility(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with uow_factory() as uow:
            b_m1 = uow.devices.find(two.b, DeviceRef(mrid="M1"))
            b_only = device_id(uow, two.b, "B-ONLY")
            assert b_m1 is not None
            updated = uow.devices.update(two.a, EndDevice("M1", "ACME", firmware_version="9"))
            assert updated.id == device_id(uow, two.a, "M1")
            assert uow.devices.find(two.b, DeviceRef(mrid="M1")) == b_m1  # untouched
            with pytest.raises(PermanentError, match="does not exist"):
                uow.devices.update(two.a, EndDevice("B-ONLY", "ACME", firmware_version="9"))
            with pytest.raises(PermanentError, match="does not exist"):
                uow.devices.update(two.a, EndDevice("B-ONLY", "ACME", id=b_only))
            with pytest.raises(PermanentError, match="does not exist"):
                uow.devices.delete(two.a, b_only)
            assert [d.mrid for d in uow.devices.list(two.b)] == ["B-ONLY", "B2", "B3", "M1"]
            assert uow.devices.find(two.b, DeviceRef(mrid="B-ONLY")) is not None

    # ------------------------------------------------------------ usage points

    def test_usage_points_found_in_their_utility_only(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with uow_factory() as uow:
            assert [p.mrid for p in uow.usage_points.list(two.a)] == ["UP1"]
            assert [p.mrid for p in uow.usage_points.list(two.b)] == ["UP1", "UPB"]
            a_up1 = uow.usage_points.find(two.a, DeviceRef(mrid="UP1"))
            b_up1 = uow.usage_points.find(two.b, DeviceRef(mrid="UP1"))
            assert a_up1 is not None
            assert b_up1 is not None
            assert a_up1.utility_code == "ACME"
            assert a_up1.id != b_up1.id
            assert uow.usage_points.find(two.a, DeviceRef(name="Main St 1")) == a_up1
            assert uow.usage_points.find(two.a, DeviceRef(mrid="UPB")) is None
            assert uow.usage_points.find(two.a, DeviceRef(name="Elm St")) is None

    def test_usage_point_update_and_delete_stay_in_their_utility(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with uow_factory() as uow:
            b_up1 = uow.usage_points.find(two.b, DeviceRef(mrid="UP1"))
            upb = uow.usage_points.find(two.b, DeviceRef(mrid="UPB"))
            assert b_up1 is not None
            assert upb is not None
            assert upb.id is not None
            uow.usage_points.update(two.a, UsagePoint("UP1", "ACME", location="here"))
            assert uow.usage_points.find(two.b, DeviceRef(mrid="UP1")) == b_up1  # untouched
            with pytest.raises(PermanentError, match="does not exist"):
                uow.usage_points.update(two.a, UsagePoint("UPB", "ACME", location="here"))
            with pytest.raises(PermanentError, match="does not exist"):
                uow.usage_points.update(two.a, UsagePoint("UPB", "ACME", id=upb.id))
            with pytest.raises(PermanentError, match="does not exist"):
                uow.usage_points.delete(two.a, upb.id)
            assert uow.usage_points.find(two.b, DeviceRef(mrid="UPB")) == upb

    # ------------------------------------------------------------ events

    def test_events_stored_and_queried_per_utility(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        mine = [
            EndDeviceEvent("M1", "3.26.0.85", q(0), mrid="E-1"),
            EndDeviceEvent("B-ONLY", "3.26.0.85", q(1), mrid="E-2"),  # not A's device
        ]
        theirs = [
            EndDeviceEvent("M1", "3.26.0.216", q(2), mrid="E-1"),  # same event mRID
            EndDeviceEvent("B-ONLY", "3.26.0.216", q(3), mrid="E-3"),
        ]
        with uow_factory() as uow:
            assert uow.events.add_new(two.b, theirs) == theirs
            assert uow.events.add_new(two.a, mine) == mine  # E-1 is B's, not A's
            uow.commit()
        with uow_factory() as uow:
            a_m1, b_m1 = device_id(uow, two.a, "M1"), device_id(uow, two.b, "M1")
            b_only = device_id(uow, two.b, "B-ONLY")
            assert uow.events.query(two.a, None, None, None) == mine
            assert uow.events.query(two.b, None, None, None) == theirs
            assert uow.events.query(two.a, [a_m1], None, None) == mine[:1]
            assert uow.events.query(two.b, [b_m1, b_only], None, None) == theirs
            # A's event naming B-ONLY is kept without a device: it is not B's device's
            assert uow.events.query(two.a, [b_m1, b_only], None, None) == []
            assert uow.events.query(two.a, None, q(1), q(5)) == mine[1:]

    # ------------------------------------------------------------ end device groups

    def test_groups_found_in_their_utility_only(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with uow_factory() as uow:
            groups = uow.end_device_groups
            a_g1 = groups.add(EndDeviceGroup(two.a, "G1", "North"), T0)
            b_g1 = groups.add(EndDeviceGroup(two.b, "G1", "South"), T0)
            groups.add(EndDeviceGroup(two.b, "GX", "North"), T0)  # A's name, B's group
            groups.add(EndDeviceGroup(two.b, "GB", "Bee"), T0)
            assert groups.find(two.a, DeviceRef(mrid="G1")) == a_g1
            assert groups.find(two.b, DeviceRef(mrid="G1")) == b_g1
            assert groups.find(two.a, DeviceRef(name="North")) == a_g1
            assert groups.find(two.a, DeviceRef(mrid="GB")) is None
            assert groups.find(two.a, DeviceRef(name="Bee")) is None
            assert [g.mrid for g in groups.list(two.a)] == ["G1"]
            assert [g.mrid for g in groups.list(two.b, include_closed=True)] == [
                "GB",
                "GX",
                "G1",
            ]

    def test_a_taken_group_name_is_reported_in_its_utility(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        """A's name is taken; the mRID is free in A (only B uses it): the refusal names
        the name, not the mRID."""
        with uow_factory() as uow:
            uow.end_device_groups.add(EndDeviceGroup(two.a, "G1", "North"), T0)
            uow.end_device_groups.add(EndDeviceGroup(two.b, "GB", "Bee"), T0)
            with pytest.raises(PayloadInvalid) as refused:
                uow.end_device_groups.add(EndDeviceGroup(two.a, "GB", "North"), T0)
            assert str(refused.value) == "an open end device group is already named 'North'"
            again = uow.end_device_groups.add(EndDeviceGroup(two.a, "GB", "Bee"), T0)
            assert again.utility_id == two.a

    # ------------------------------------------------------------ head-end jobs

    def test_jobs_found_in_their_utility_only(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with uow_factory() as uow:
            a_j1 = uow.hes_jobs.add(job(two.a, "J1"))
            b_j1 = uow.hes_jobs.add(job(two.b, "J1"))
            b_jb = uow.hes_jobs.add(job(two.b, "JB"))
            assert uow.hes_jobs.get(two.a, JobKind.CONTROL, "J1") == a_j1
            assert uow.hes_jobs.get(two.b, JobKind.CONTROL, "J1") == b_j1
            assert uow.hes_jobs.get(two.a, JobKind.CONTROL, "JB") is None
            assert uow.hes_jobs.list(two.a) == [a_j1]
            assert uow.hes_jobs.list(two.b) == [b_j1, b_jb]
            assert uow.hes_jobs.list() == [a_j1, b_j1, b_jb]

    # ------------------------------------------------------------ readings written

    def rows(self, value: str) -> list[StagedReading]:
        return [
            StagedReading(item, RT, q(15 * k), Decimal(f"{value}{item}.{k}"), "")
            for item in A_REFS
            for k in (1, 2)
        ]

    def assert_written_to_a(self, uow: UnitOfWork, two: Two, result: StagingResult) -> None:
        assert result.unknown_items == [4, 5, 6]
        assert result.stats.stored == 6
        for mrid in ("M1", "M2", "M3"):
            got = list(uow.readings.query([device_id(uow, two.a, mrid)], None, None, None))
            assert len(got) == 2, mrid
        for mrid in ("M1", "B2", "B-ONLY", "B3"):
            assert list(uow.readings.query([device_id(uow, two.b, mrid)], None, None, None)) == []

    def test_staged_readings_resolve_meters_in_their_utility(
        self, readings_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        with readings_factory() as uow:
            staging = uow.readings.staging()
            for item, (ref, _) in A_REFS.items():
                staging.add_meter(item, ref)
            staging.add_readings(self.rows("1"))
            result = staging.apply(two.a)
            self.assert_written_to_a(uow, two, result)

    # ------------------------------------------------------------ readings read

    def test_meter_texts_read_their_utility_only(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two
    ) -> None:
        """GetMeterReadings' lookup: which meters exist and their readings, for A. B has
        readings on its own M1 and on B-ONLY."""
        for utility, value in ((two.a, "1"), (two.b, "2")):
            refs = {1: DeviceRef(mrid="M1"), 4: DeviceRef(mrid="B-ONLY")}
            with uow_factory() as uow:
                staging = uow.readings.staging()
                for item, ref in refs.items():
                    staging.add_meter(item, ref)
                staging.add_readings([r for r in self.rows(value) if r.item in refs])
                staging.apply(utility)
                uow.commit()
        wanted = ["M1", "M2", "B-ONLY"]
        # a short period is fetched whole on PostgreSQL, an open one streamed
        for start, end in ((q(0), q(60)), (None, None)):
            with uow_factory() as uow:
                texts = uow.readings.meter_texts(two.a, wanted, None, start, end)
                rows = list(texts.rows)
            assert texts.found == {"M1", "M2"}, (start, end)
            assert [(r[0], r[3]) for r in rows] == [("M1", "11.1"), ("M1", "11.2")], (start, end)
            with uow_factory() as uow:
                texts = uow.readings.meter_texts(two.b, wanted, None, start, end)
                rows = list(texts.rows)
            assert texts.found == {"M1", "B-ONLY"}
            assert [(r[0], r[3]) for r in rows] == [
                ("M1", "21.1"),
                ("M1", "21.2"),
                ("B-ONLY", "24.1"),
                ("B-ONLY", "24.2"),
            ]
