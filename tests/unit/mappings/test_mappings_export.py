"""Exports: CSV and XML layouts from the store, and a round trip back in."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from cim_schemas.errors import PayloadInvalid
from mappings.csv_reader import read_csv
from mappings.export import ExportRow, is_estimated, rows_from_store, write_export
from mappings.importer import ImportFile, import_file
from mappings.load import BUILTIN_DIR, Catalog, load_dir, parse_spec_text
from mappings.spec import CsvSpec, ExportCsvSpec, ExportXmlSpec, XmlSpec
from mappings.xml_reader import read_xml
from mdm.model import DeviceRef, EndDevice, UsagePoint, Utility
from tests.bus import BUS

SAMPLES = BUILTIN_DIR / "samples"


@pytest.fixture
def catalog() -> Catalog:
    return load_dir(BUILTIN_DIR)


@pytest.fixture
def store(sqlite_url: str, catalog: Catalog) -> Iterator[SqlUnitOfWorkFactory]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        utility = uow.utilities.add(Utility("DEMO", "Demo utility"))
        assert utility.id is not None
        for n in ("1001", "1002"):
            uow.devices.add(utility.id, EndDevice(f"m-{n}", "DEMO", serial_number=f"SN{n}"))
        for n, up_mrid in (("1001", "UP1"), ("1002", "UP2")):
            up = uow.usage_points.add(utility.id, UsagePoint(up_mrid, "DEMO"))
            dev = uow.devices.find(utility.id, DeviceRef(mrid=f"m-{n}"))
            assert dev is not None
            assert dev.id is not None
            assert up.id is not None
            uow.installations.install(dev.id, up.id, datetime(2026, 1, 1, tzinfo=UTC))
        uow.commit()
    for mapping, name in (
        ("register-obis", "register-obis.csv"),
        ("wide-15min-de", "wide-15min-de.csv"),
    ):
        assert import_file(
            factory, ImportFile(SAMPLES / name, mapping, "DEMO"), catalog, bus=BUS
        ).applied
    yield factory
    engine.dispose()


def test_billing_csv_export(store: SqlUnitOfWorkFactory, catalog: Catalog) -> None:
    spec = catalog.export("export-billing-csv")
    out = io.BytesIO()
    with store() as uow:
        rows = rows_from_store(uow, "DEMO", usage_points=["UP1", "UP2"], start=None, end=None)
        count = write_export(spec, rows, out, tables=catalog.tables)
    text = out.getvalue().decode("latin-1")
    lines = text.split("\r\n")
    assert count == 6  # the profile readings are not selected
    assert lines[0] == "Zählpunkt;Zählernummer;OBIS;Zeit;Wert;Ersatzwert"
    assert lines[1] == "UP1;SN1001;1.0.1.8.0.255;25.10.2026 00:00;12345,678;N"
    # estimated; the value's text as the file gave it (12350.000)
    assert "UP1;SN1001;1.0.1.8.0.255;26.10.2026 00:00;12350,000;J" in lines
    # Wh -> kWh: 2000500 x 0.001, the scale of the product (Wh resolution) kept
    assert "UP2;SN1002;1.0.1.8.0.255;24.11.2026 00:00;2000,500;N" in lines


def test_xml_export_round_trips_through_an_inbound_spec(
    store: SqlUnitOfWorkFactory, catalog: Catalog
) -> None:
    spec = catalog.export("export-profile-xml")
    assert isinstance(spec, ExportXmlSpec)
    out = io.BytesIO()
    start = datetime(2026, 11, 23, 23, tzinfo=UTC)
    end = datetime(2026, 11, 24, 23, tzinfo=UTC)  # (start, end]: the day's 96 interval ends
    with store() as uow:
        exported = list(rows_from_store(uow, "DEMO", usage_points=["UP1"], start=start, end=end))
    assert write_export(spec, iter(exported), out, tables=catalog.tables) == 96
    assert out.getvalue().startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<md:MeterData")
    back, _ = parse_spec_text(
        """
kind = "xml"
name = "profile-back"
[xml]
namespaces = { md = "urn:example:acme:meterdata:1" }
record = "md:Reading"
[meter]
xpath = "@meter"
[timestamp]
xpath = "@time"
[value]
xpath = "md:Value"
[reading_type]
xpath = "@obis"
table = "obis-15min"
""",
        "back.toml",
    )
    assert isinstance(back, XmlSpec)
    rows = [
        r for b in read_xml(back, io.BytesIO(out.getvalue()), tables=catalog.tables) for r in b.rows
    ]
    assert [(r.ts, r.value, r.reading_type) for r in rows] == [
        (e.ts, e.value, e.reading_type) for e in exported
    ]


def test_csv_export_round_trips_through_an_inbound_spec(catalog: Catalog) -> None:
    export, _ = parse_spec_text(
        """
kind = "export-csv"
name = "e"
timezone = "Europe/Berlin"
[csv]
delimiter = ";"
decimal_separator = ","
[[columns]]
header = "meter"
field = "meter_serial"
[[columns]]
header = "ts"
field = "timestamp"
format = "%d.%m.%Y %H:%M"
[[columns]]
header = "value"
field = "value"
""",
        "e.toml",
    )
    assert isinstance(export, ExportCsvSpec)
    rt = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    rows = [
        ExportRow(
            "m",
            "SN1",
            None,
            None,
            rt,
            datetime(2026, 10, 25, h, 30, tzinfo=UTC),
            Decimal(f"{h}.25"),
            "",
        )
        for h in range(4)
    ]  # across the autumn change
    out = io.BytesIO()
    write_export(export, rows, out, tables=catalog.tables)
    inbound, _ = parse_spec_text(
        f"""
kind = "csv"
name = "i"
[csv]
delimiter = ";"
[meter]
column = "meter"
[timestamp]
column = "ts"
format = "%d.%m.%Y %H:%M"
timezone = "Europe/Berlin"
[value]
column = "value"
decimal_separator = ","
[reading_type]
fixed = "{rt}"
""",
        "i.toml",
    )
    assert isinstance(inbound, CsvSpec)
    back = [
        r
        for b in read_csv(inbound, io.BytesIO(out.getvalue()), tables=catalog.tables)
        for r in b.rows
    ]
    assert [(r.ts, r.value) for r in back] == [(r.ts, r.value) for r in rows]


def test_reading_type_without_obis_code_is_refused(catalog: Catalog) -> None:
    spec = catalog.export("export-billing-csv")
    assert isinstance(spec, ExportCsvSpec)
    odd = "0.0.0.1.1.1.12.0.0.0.0.9.0.0.0.3.72.0"
    row = ExportRow("m", "SN1", None, None, odd, datetime(2026, 1, 1, tzinfo=UTC), Decimal(1), "")
    spec = spec.model_copy(
        update={"select": spec.select.model_copy(update={"reading_types": [odd]})}
    )
    with pytest.raises(PayloadInvalid, match="no OBIS code"):
        write_export(spec, [row], io.BytesIO(), tables=catalog.tables)


def test_estimated_flag() -> None:
    assert is_estimated("2.8.0")
    assert is_estimated("1.4.9,3.8.1")
    assert not is_estimated("")
    assert not is_estimated("1.4.9")


# ------------------------------------------------------------------ usage point groups

GROUP_CSV = "meter,obis,timestamp,dst,value,unit,status\n" + "".join(
    f"SN{n},1-0:1.8.0*255,2026-11-24 00:00:00,W,{n}.5,kWh,OK\n" for n in (1001, 1002, 1003)
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def grouped(
    request: pytest.FixtureRequest, catalog: Catalog, tmp_path: Path
) -> Iterator[SqlUnitOfWorkFactory]:
    """UP1 and UP2 in transformer area TR-7, UP3 in TR-9, UP4 in none; one reading each."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = make_engine(url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        utility = uow.utilities.add(Utility("DEMO", "Demo utility"))
        assert utility.id is not None
        for n, up_mrid, area in (
            ("1001", "UP1", "TR-7"),
            ("1002", "UP2", "TR-7"),
            ("1003", "UP3", "TR-9"),
            ("1004", "UP4", None),
        ):
            dev = uow.devices.add(utility.id, EndDevice(f"m-{n}", "DEMO", serial_number=f"SN{n}"))
            up = uow.usage_points.add(
                utility.id, UsagePoint(up_mrid, "DEMO", transformer_area=area)
            )
            assert dev.id is not None
            assert up.id is not None
            uow.installations.install(dev.id, up.id, datetime(2026, 1, 1, tzinfo=UTC))
        uow.commit()
    path = tmp_path / "reads.csv"
    path.write_text(GROUP_CSV, encoding="utf-8")
    assert import_file(factory, ImportFile(path, "register-obis", "DEMO"), catalog, bus=BUS).applied
    yield factory
    engine.dispose()


def _exported(factory: SqlUnitOfWorkFactory, **select: list[str]) -> list[tuple[str | None, str]]:
    with factory() as uow:
        rows = rows_from_store(uow, "DEMO", start=None, end=None, **select)
        return [(r.usage_point, str(r.value)) for r in rows]


def test_export_selected_by_usage_point_group(grouped: SqlUnitOfWorkFactory) -> None:
    assert _exported(grouped, usage_point_groups=["TR-7"]) == [("UP1", "1001.5"), ("UP2", "1002.5")]
    # named usage points first, then the groups' members; UP1 only once
    assert _exported(grouped, usage_points=["UP1"], usage_point_groups=["TR-9", "TR-7"]) == [
        ("UP1", "1001.5"),
        ("UP3", "1003.5"),
        ("UP2", "1002.5"),
    ]


def test_unknown_usage_point_group_is_refused_before_any_row(
    grouped: SqlUnitOfWorkFactory,
) -> None:
    with grouped() as uow, pytest.raises(PayloadInvalid) as caught:
        rows_from_store(uow, "DEMO", usage_point_groups=["TR-7", "TR-X"], start=None, end=None)
    assert caught.value.errors[0].code == "2002"
    assert "'TR-X'" in str(caught.value)
    with grouped() as uow, pytest.raises(PayloadInvalid, match="name usage points or"):
        rows_from_store(uow, "DEMO", start=None, end=None)


NOTES_EXPORT = """
kind = "export-csv"
name = "export-notes"
timezone = "UTC"

[csv]
delimiter = ";"
header = true

[[columns]]
header = "meter"
field = "meter_mrid"

[[columns]]
header = "value"
field = "value"

[[columns]]
header = "quality"
field = "quality"

[[columns]]
header = "comment"
field = "quality_comment"

[[columns]]
header = "source"
field = "quality_source"

[[columns]]
header = "stamp"
field = "quality_timestamp"

[[columns]]
header = "reason"
field = "reason"

[[columns]]
header = "estimated"
field = "estimated"
true_text = "J"
false_text = "N"
"""


def test_export_gives_back_the_notes_and_the_value_text(
    store: SqlUnitOfWorkFactory, catalog: Catalog
) -> None:
    """ReadingQuality comment/source/timeStamp, a register's reason and the value's text
    as it arrived (0.2250 stays 0.2250) reach the export (issue 12, point 6)."""
    from mdm.ports import StagedReading
    from mdm.qualities import Quality, pack

    rt = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    at = datetime(2026, 12, 1, tzinfo=UTC)
    quality = pack(
        [Quality("3.8.0", "gap; filled", "MDM", "2026-12-01T01:00:00+01:00"), Quality("1.4.9")],
        "billing",
    )
    with store() as uow:
        utility = uow.utilities.get("DEMO")
        assert utility is not None
        assert utility.id is not None
        staging = uow.readings.staging()
        staging.add_meter(1, DeviceRef(mrid="m-1001"))
        staging.add_readings(
            [
                StagedReading(1, rt, at, Decimal("0.2250"), quality),
                StagedReading(1, rt, at.replace(day=2), Decimal("7.10"), ""),
            ]
        )
        assert staging.apply(utility.id).stats.stored == 2
        uow.commit()
    spec, _ = parse_spec_text(NOTES_EXPORT, "export-notes")
    assert isinstance(spec, ExportCsvSpec)
    out = io.BytesIO()
    with store() as uow:
        rows = rows_from_store(uow, "DEMO", usage_points=["UP1"], start=None, end=None)
        write_export(spec, rows, out, tables=catalog.tables)
    lines = out.getvalue().decode().splitlines()
    assert (
        'm-1001;0.2250;3.8.0,1.4.9;"gap; filled,";MDM,;2026-12-01T01:00:00+01:00,;billing;J'
        in lines
    )
    assert "m-1001;7.10;;;;;;N" in lines
    assert is_estimated(quality)
