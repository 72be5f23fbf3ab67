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
from tests.bus import BUS

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
        store,
        ImportFile(SAMPLES / "vendor-events.csv", "vendor-events-csv", "DEMO"),
        catalog,
        bus=BUS,
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
    result = apply_file(store, ImportFile(path, "vendor-events-csv", "DEMO"), catalog, bus=BUS)
    assert not result.applied
    assert "[2001] line 3: unknown meter SerialNumber=SN9" in result.report()
    path.write_text(HEAD + "SN1001;24.11.2026 03:12:45;PF;a\nSN1001;bad;PF;b\n", encoding="utf-8")
    result = apply_file(store, ImportFile(path, "vendor-events-csv", "DEMO"), catalog, bus=BUS)
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


# --------------------------------------------------------------------------- xml-events

XML_HEAD = '<?xml version="1.0"?>\n<ev:EventLog xmlns:ev="urn:example:acme:events:1">\n'


def test_xml_sample_applies_with_dst_flags(store: SqlUnitOfWorkFactory, catalog: Catalog) -> None:
    result = apply_file(
        store,
        ImportFile(SAMPLES / "vendor-events.xml", "vendor-events-xml", "DEMO"),
        catalog,
        bus=BUS,
    )
    assert isinstance(result, EventImportResult)
    assert result.applied, result.report()
    assert (result.lines, result.events, result.stored) == (4, 4, 4)
    with store() as uow:
        events = {
            (e.device_mrid, e.event_type, e.created_at, e.reason, e.severity)
            for e in uow.events.query(1, None, None, None)
        }
    assert events == {
        # the repeated autumn hour told apart by the DST flag
        ("m-1001", "3.26.0.85", datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "Netzausfall", "major"),
        (
            "m-1001",
            "26.26.0.216",
            datetime(2026, 10, 25, 1, 10, tzinfo=UTC),
            "Netz wieder da",
            None,
        ),
        ("m-1001", "0.31.26.68", datetime(2026, 11, 24, 7, 0, tzinfo=UTC), None, None),
        (
            "m-1002",
            "3.12.29.212",
            datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
            "Klemmendeckel offen",
            "critical",
        ),
    }


def test_xml_bad_records_are_named_and_nothing_is_stored(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    path = tmp_path / "events.xml"
    path.write_text(
        XML_HEAD
        + '<ev:Device serial="SN1001">\n'
        + '<ev:Event code="PF" time="2026-11-24T03:12:45" dst="W"/>\n'
        + '<ev:Event code="XX" time="2026-11-24T03:14:02" dst="W"/>\n'  # record 2, line 5
        + '<ev:Event code="PR" time="2026-03-29T02:30:00" dst="S"/>\n'  # spring gap, line 6
        + '<ev:Event code="PR" time="2026-07-01T12:00:00" dst="W"/>\n'  # flag vs zone, line 7
        + "</ev:Device>\n</ev:EventLog>\n",
        encoding="utf-8",
    )
    result = apply_file(store, ImportFile(path, "vendor-events-xml", "DEMO"), catalog, bus=BUS)
    assert not result.applied
    report = result.report()
    assert "record 2 (line 5), event: event code 'XX' is not in code table 'vendor-events'" in (
        report
    )
    assert "record 3 (line 6), timestamp: 2026-03-29 02:30 does not exist in Europe/Berlin" in (
        report
    )
    assert "record 4 (line 7), timestamp: DST flag says winter time" in report
    assert "errors: 3" in report
    assert stored_events(store) == []


def test_xml_events_unknown_meter_and_not_well_formed(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    from cim_schemas.errors import NotWellFormed

    path = tmp_path / "unknown.xml"
    path.write_text(
        XML_HEAD
        + '<ev:Device serial="SN9999"><ev:Event code="PF" time="2026-11-24T03:00:00" dst="W"/>'
        + "</ev:Device></ev:EventLog>\n",
        encoding="utf-8",
    )
    result = apply_file(store, ImportFile(path, "vendor-events-xml", "DEMO"), catalog, bus=BUS)
    assert not result.applied
    assert "[2001]" in result.report()
    assert stored_events(store) == []
    broken = tmp_path / "broken.xml"
    broken.write_text(XML_HEAD + '<ev:Device serial="SN1001"><ev:Event', encoding="utf-8")
    with pytest.raises(NotWellFormed):
        apply_file(store, ImportFile(broken, "vendor-events-xml", "DEMO"), catalog, bus=BUS)
    assert stored_events(store) == []


def test_xml_events_spec_checks(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "vendor-events-xml.toml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        text.replace('xpath = "@code"', 'xpath = "@code]["')
        .replace('table = "vendor-events"', 'table = "nope"')
        .replace('by = "serial"', 'by = "usage_point"'),
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as caught:
        load_dir(tmp_path)
    text_of = "\n".join(str(p) for p in caught.value.problems)
    assert "event.xpath: bad XPath '@code]['" in text_of
    assert "event.table: no code table named 'nope'" in text_of
    assert "meter.by: events belong to devices" in text_of
    typo = tmp_path / "typo.toml"
    bad.unlink()
    typo.write_text(text.replace("reason_xpath", "reason_xpth"), encoding="utf-8")
    with pytest.raises(SpecError, match="reason_xpth"):
        load_spec(typo)
