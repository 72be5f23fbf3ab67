"""Vendor event logs: codes through a code table, all or nothing into the store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from mappings.csv_reader import read_csv_events
from mappings.importer import EventImportResult, ImportFile, apply_file
from mappings.load import BUILTIN_DIR, Catalog, SpecError, load_dir, load_spec
from mdm.model import EndDevice, Utility

SAMPLES = BUILTIN_DIR / "samples"
HEAD = "Zähler;Zeit;Code;Text\n"


@pytest.fixture
def catalog() -> Catalog:
    return load_dir(BUILTIN_DIR)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[SqlUnitOfWorkFactory]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        utility = uow.utilities.add(Utility("DEMO", "Demo utility"))
        assert utility.id is not None
        for n in ("1001", "1002"):
            uow.devices.add(utility.id, EndDevice(f"m-{n}", "DEMO", serial_number=f"SN{n}"))
        uow.commit()
    yield factory
    engine.dispose()


def stored_events(store: SqlUnitOfWorkFactory) -> list[tuple[str, str, datetime, str | None]]:
    with store() as uow:
        return [
            (e.device_mrid, e.event_type, e.created_at, e.reason)
            for e in uow.events.query(1, None, None, None)
        ]


def test_reader_translates_vendor_codes(catalog: Catalog) -> None:
    spec = catalog.events("vendor-events-csv")
    data = (
        HEAD + "SN1;24.11.2026 03:12:45;PF;Netzausfall\nSN1;24.11.2026 03:14:02;XX;?\n"
        "SN1;29.03.2026 02:30:00;PR;\n"
    ).encode()
    rows, errors = [], []
    for batch in read_csv_events(spec, io.BytesIO(data), tables=catalog.tables):
        rows += batch.rows
        errors += batch.errors
    assert [(r.event_type, r.ts, r.reason) for r in rows] == [
        ("3.26.0.85", datetime(2026, 11, 24, 2, 12, 45, tzinfo=UTC), "Netzausfall")
    ]
    assert [(e.line, e.field, e.code) for e in errors] == [
        (3, "column 'Code'", "2013"),
        (4, "column 'Zeit'", "2006"),
    ]


def test_sample_applies(store: SqlUnitOfWorkFactory, catalog: Catalog) -> None:
    result = apply_file(
        store, ImportFile(SAMPLES / "vendor-events.csv", "vendor-events-csv", "DEMO"), catalog
    )
    assert isinstance(result, EventImportResult)
    assert result.applied, result.report()
    assert result.stored == 3
    events = stored_events(store)
    assert (
        "m-1002",
        "3.12.29.212",
        datetime(2026, 11, 24, 8, tzinfo=UTC),
        "Klemmendeckel offen",
    ) in events


def test_unknown_meter_or_bad_line_stores_nothing(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    path = tmp_path / "ev.csv"
    path.write_text(
        HEAD + "SN1001;24.11.2026 03:12:45;PF;a\nSN9;24.11.2026 03:12:45;PF;b\n", encoding="utf-8"
    )
    result = apply_file(store, ImportFile(path, "vendor-events-csv", "DEMO"), catalog)
    assert not result.applied
    assert "[2001] line 3: unknown meter SerialNumber=SN9" in result.report()
    path.write_text(HEAD + "SN1001;24.11.2026 03:12:45;PF;a\nSN1001;bad;PF;b\n", encoding="utf-8")
    result = apply_file(store, ImportFile(path, "vendor-events-csv", "DEMO"), catalog)
    assert not result.applied
    assert "line 3, column 'Zeit'" in result.report()
    assert stored_events(store) == []


def test_events_spec_checks(tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    text = (BUILTIN_DIR / "vendor-events-csv.toml").read_text(encoding="utf-8")
    path.write_text(
        text.replace('table = "vendor-events"', 'table = "obis"').replace(
            'by = "serial"', 'by = "usage_point"'
        ),
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert {p.key for p in info.value.problems} == {"event.table", "meter.by"}
