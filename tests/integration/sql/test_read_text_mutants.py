"""The read path's reply text with its filters, on SQLite and PostgreSQL: reading types,
the period (start exclusive, end inclusive), the meter's utility. `make mutate` found
the filters of the PostgreSQL statements untested (docs/testing.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hub.bootstrap import App
from hub.samples import RT_15MIN_A_PLUS, RT_A_PLUS_TOTAL
from mdm.model import DeviceRef
from mdm.ports import StagedReading
from tests.unit.hub.conftest import START, add_meters, make_app

Q = timedelta(minutes=15)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/read.db"
    else:
        url = request.getfixturevalue("postgres_url")
    app = make_app(url)
    try:
        add_meters(app, "MTR-1", "MTR-2")
        rows = [
            StagedReading(device, RT_15MIN_A_PLUS, START + Q * k, Decimal(10 * device + k), "")
            for device in (1, 2)
            for k in range(1, 5)
        ]
        rows.append(StagedReading(1, RT_A_PLUS_TOTAL, START + 4 * Q, Decimal("42"), ""))
        with app.uow_factory() as uow:
            staging = uow.readings.staging()
            staging.add_meter(1, DeviceRef(mrid="MTR-1"))
            staging.add_meter(2, DeviceRef(mrid="MTR-2"))
            staging.add_readings(rows)
            staging.apply(1)
            uow.commit()
        yield app
    finally:
        app.close()


def at(k: int) -> str:
    return (START + Q * k).isoformat()


def test_query_text_filters(app: App) -> None:
    with app.uow_factory() as uow:
        found = uow.devices.find_many(1, [DeviceRef(mrid="MTR-1"), DeviceRef(mrid="MTR-2")])
        ids = sorted(d.id for d in found.values() if d.id is not None)

        def text(types: list[str] | None, k0: int | None, k1: int | None) -> list[tuple[str, ...]]:
            start = None if k0 is None else START + Q * k0
            end = None if k1 is None else START + Q * k1
            rows = uow.readings.query_text(ids, types, start, end)
            return [(r.device_mrid, r.reading_type, r.ts, r.value) for r in rows]

        only_15 = text([RT_15MIN_A_PLUS], 1, 3)  # after 1, up to and including 3
        assert only_15 == [
            ("MTR-1", RT_15MIN_A_PLUS, at(2), "12"),
            ("MTR-1", RT_15MIN_A_PLUS, at(3), "13"),
            ("MTR-2", RT_15MIN_A_PLUS, at(2), "22"),
            ("MTR-2", RT_15MIN_A_PLUS, at(3), "23"),
        ]
        assert text([RT_A_PLUS_TOTAL], None, None) == [("MTR-1", RT_A_PLUS_TOTAL, at(4), "42")]
        assert [r[2] for r in text(None, 3, None)] == [at(4), at(4), at(4)]
        assert [r[2] for r in text(None, None, 1)] == [at(1), at(1)]
        assert len(text(None, None, None)) == 9


def test_meter_texts_filters_and_utility(app: App) -> None:
    with app.uow_factory() as uow:
        texts = uow.readings.meter_texts(
            1, ["MTR-2", "NOPE"], [RT_15MIN_A_PLUS], START + Q, START + 3 * Q
        )
        assert texts.found == {"MTR-2"}
        assert [(r.device_mrid, r.ts) for r in texts.rows] == [("MTR-2", at(2)), ("MTR-2", at(3))]
        total = uow.readings.meter_texts(1, ["MTR-1"], [RT_A_PLUS_TOTAL], None, START + 4 * Q)
        assert [(r.reading_type, r.value) for r in total.rows] == [(RT_A_PLUS_TOTAL, "42")]
        other = uow.readings.meter_texts(2, ["MTR-1", "MTR-2"], None, None, None)
        assert other.found == set()  # another utility's meters are not found
        assert list(other.rows) == []


@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_values_are_plain_decimal_text(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path}/v.db"
        if store == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    app = make_app(url)
    try:
        add_meters(app, "MTR-1")
        values = ["1E-10", "1E+3", "1.5", "-0.000001", "7"]
        with app.uow_factory() as uow:
            staging = uow.readings.staging()
            staging.add_meter(1, DeviceRef(mrid="MTR-1"))
            staging.add_readings(
                [
                    StagedReading(1, RT_15MIN_A_PLUS, START + Q * (k + 1), Decimal(v), "")
                    for k, v in enumerate(values)
                ]
            )
            staging.apply(1)
            uow.commit()
        with app.uow_factory() as uow:
            texts = uow.readings.meter_texts(1, ["MTR-1"], None, None, None)
            assert [r.value for r in texts.rows] == [
                "0.0000000001",
                "1000",
                "1.5",
                "-0.000001",
                "7",
            ]
    finally:
        app.close()


def test_meter_records_equal_the_plain_path(app: App) -> None:
    """One meter's readings with their versions as text (the operator API's question):
    the store's own text (one prepared statement on PostgreSQL) equals the plain path's
    (the meter looked up, ``query``, each row written by ``ReadingRecord.of``), with
    every filter, a second version, the limit, an unknown meter and another utility."""
    from adapters.sql.read_text import plain_meter_records
    from adapters.sql.readings import SqlReadingRepository

    with app.uow_factory() as uow:  # a second version of one reading, noted and flagged
        staging = uow.readings.staging()
        staging.add_meter(1, DeviceRef(mrid="MTR-1"))
        staging.add_readings(
            [StagedReading(1, RT_15MIN_A_PLUS, START + 2 * Q, Decimal("1E-7"), "3.8.0")]
        )
        staging.apply(1)
        uow.commit()
    questions: list[tuple[list[str] | None, int | None, int | None]] = [
        (None, None, None),
        ([RT_15MIN_A_PLUS], 1, 3),
        ([RT_A_PLUS_TOTAL], None, 4),
        (None, 3, None),
        (None, None, 1),
        ([RT_15MIN_A_PLUS, RT_A_PLUS_TOTAL], 0, 4),
    ]
    with app.uow_factory() as uow:
        repo = uow.readings
        assert isinstance(repo, SqlReadingRepository)
        for types, k0, k1 in questions:
            start = None if k0 is None else START + Q * k0
            end = None if k1 is None else START + Q * k1
            for limit in (100, 2):
                got = repo.meter_records(1, "MTR-1", types, start, end, limit)
                plain = plain_meter_records(repo, 1, "MTR-1", types, start, end, limit)
                assert got == plain, (types, k0, k1, limit)
                assert got is not None
                assert len(got) <= limit + 1
        everything = repo.meter_records(1, "MTR-1", None, None, None, 100)
        assert everything is not None
        assert len(everything) == 5
        [second] = [r for r in everything if r.version == 2]
        assert (second.ts, second.value, second.quality, second.version) == (
            at(2),
            "0.0000001",
            "3.8.0",
            2,
        )
        assert second.recorded_at.endswith("+00:00")
        assert repo.meter_records(1, "NOPE", None, None, None, 100) is None
        assert repo.meter_records(2, "MTR-1", None, None, None, 100) is None  # another utility
        empty = repo.meter_records(1, "MTR-2", [RT_A_PLUS_TOTAL], None, None, 100)
        assert empty == []  # known, nothing in the period
