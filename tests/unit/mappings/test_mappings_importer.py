"""The importer against the real SQL store on SQLite: all or nothing, per-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from cim_schemas.errors import ConfigurationError, NotWellFormed
from mappings.importer import ImportFile, import_file
from mappings.load import BUILTIN_DIR, Catalog, load_dir, parse_spec_text
from mappings.rows import FileRejected
from mdm.model import DeviceRef, EndDevice, UsagePoint, Utility
from tests.bus import BUS

SAMPLES = BUILTIN_DIR / "samples"
PLUS_A = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


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
        up = uow.usage_points.add(utility.id, UsagePoint("UP1", "DEMO"))
        dev = uow.devices.find(utility.id, DeviceRef(mrid="m-1001"))
        assert dev is not None
        assert dev.id is not None
        assert up.id is not None
        uow.installations.install(dev.id, up.id, datetime(2026, 1, 1, tzinfo=UTC))
        uow.commit()
    yield factory
    engine.dispose()


@pytest.fixture
def catalog() -> Catalog:
    return load_dir(BUILTIN_DIR)


def count(factory: SqlUnitOfWorkFactory) -> int:
    with factory() as uow:
        return uow.readings.count()


def test_samples_apply(store: SqlUnitOfWorkFactory, catalog: Catalog) -> None:
    for mapping, name, expected in (
        ("wide-15min-de", "wide-15min-de.csv", 576),
        ("register-obis", "register-obis.csv", 6),
        ("acme-xml", "acme.xml", 3),
    ):
        result = import_file(store, ImportFile(SAMPLES / name, mapping, "DEMO"), catalog, bus=BUS)
        assert result.applied, result.report()
        assert result.readings == expected
        assert result.stats.total == expected
    # acme.xml re-reads SN1002's +A register of 24 Nov with a new value: superseded
    assert result.stats.superseded == 1
    assert count(store) == 584
    again = import_file(
        store, ImportFile(SAMPLES / "acme.xml", "acme-xml", "DEMO"), catalog, bus=BUS
    )
    assert again.stats.unchanged == 3
    assert count(store) == 584


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "in.csv"
    path.write_text(text, encoding="utf-8")
    return path


HEAD = "meter,obis,timestamp,dst,value,unit,status\n"


def test_bad_line_applies_nothing(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    path = _csv(
        tmp_path,
        HEAD
        + "SN1001,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
        + "SN1001,1-0:1.8.0*255,2026-11-24 00:15:00,W,2,kWh,OK\n"
        + "SN1001,1-0:1.8.0*255,2026-11-31 00:30:00,W,3,kWh,OK\n",
    )
    result = import_file(store, ImportFile(path, "register-obis", "DEMO"), catalog, bus=BUS)
    assert not result.applied
    assert [(e.line, e.code) for e in result.errors] == [(4, "2006")]
    assert "line 4, column 'timestamp'" in result.report()
    assert count(store) == 0


def test_unknown_meter_all_or_nothing_by_default(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    path = _csv(
        tmp_path,
        HEAD
        + "SN1001,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
        + "SN9999,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
        + "SN9999,1-0:1.8.0*255,2026-11-24 01:00:00,W,2,kWh,OK\n",
    )
    result = import_file(store, ImportFile(path, "register-obis", "DEMO"), catalog, bus=BUS)
    assert not result.applied
    [unknown] = result.unknown_meters
    assert (unknown.first_line, unknown.last_line, unknown.readings) == (3, 4, 2)
    assert "line 3: unknown meter SerialNumber=SN9999 (2 readings on lines 3-4)" in (
        result.report()
    )
    assert count(store) == 0


def test_unknown_meter_skipped_when_the_policy_says_so(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    text = (BUILTIN_DIR / "register-obis.toml").read_text(encoding="utf-8")
    spec, _ = parse_spec_text(
        text.replace('name = "register-obis"', 'name = "lenient"')
        + '\n[policy]\nunknown_meters = "skip"\n',
        "lenient.toml",
    )
    catalog.specs["lenient"] = spec  # type: ignore[assignment]
    path = _csv(
        tmp_path,
        HEAD
        + "SN1001,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
        + "SN9999,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n",
    )
    result = import_file(store, ImportFile(path, "lenient", "DEMO"), catalog, bus=BUS)
    assert result.applied
    assert result.status == "applied with skipped meters"
    assert (result.stats.stored, result.skipped_readings) == (1, 1)
    assert count(store) == 1


def test_duplicate_reading_in_file_applies_nothing(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    row = "SN1001,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
    result = import_file(
        store,
        ImportFile(_csv(tmp_path, HEAD + row + row), "register-obis", "DEMO"),
        catalog,
        bus=BUS,
    )
    assert not result.applied
    assert result.duplicates[0].count == 2
    assert "[2004]" in result.report()
    assert count(store) == 0


def test_usage_point_resolved_to_installed_meter(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    spec, _ = parse_spec_text(
        """
kind = "csv"
name = "by-up"
[meter]
column = "up"
by = "usage_point"
[timestamp]
column = "ts"
[value]
column = "v"
[reading_type]
fixed = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
""",
        "by-up.toml",
    )
    catalog.specs["by-up"] = spec  # type: ignore[assignment]
    path = _csv(
        tmp_path,
        "up,ts,v\nUP1,2026-11-24T00:00:00+00:00,7.5\n"
        "UP1,2025-06-01T00:00:00+00:00,1\nUP9,2026-11-24T00:00:00+00:00,1\n",
    )
    result = import_file(store, ImportFile(path, "by-up", "DEMO"), catalog, bus=BUS)
    assert not result.applied
    assert [(u.first_line, u.code) for u in result.unknown_meters] == [(3, "2001"), (4, "2002")]
    path.write_text("up,ts,v\nUP1,2026-11-24T00:00:00+00:00,7.5\n", encoding="utf-8")
    result = import_file(store, ImportFile(path, "by-up", "DEMO"), catalog, bus=BUS)
    assert result.applied, result.report()
    with store() as uow:
        dev = uow.devices.find(1, DeviceRef(mrid="m-1001"))
        assert dev is not None
        assert dev.id is not None
        [stored] = list(uow.readings.query([dev.id], None, None, None))
    assert (stored.reading_type, stored.value) == (PLUS_A, Decimal("7.5"))


def test_file_level_problems_raise(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FileRejected):
        import_file(store, ImportFile(empty, "register-obis", "DEMO"), catalog, bus=BUS)
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<md:MeterData xmlns:md='urn:example:acme:meterdata:1'><md:Meter>")
    with pytest.raises(NotWellFormed):
        import_file(store, ImportFile(broken, "acme-xml", "DEMO"), catalog, bus=BUS)
    with pytest.raises(ConfigurationError):
        import_file(store, ImportFile(SAMPLES / "acme.xml", "acme-xml", "NOPE"), catalog, bus=BUS)
    with pytest.raises(ConfigurationError):
        import_file(store, ImportFile(SAMPLES / "acme.xml", "no-such", "DEMO"), catalog, bus=BUS)
    assert count(store) == 0


def test_error_list_is_capped(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    bad = "".join(
        f"SN1001,1-0:1.8.0*255,2026-11-24 00:{i % 60:02d}:00,W,x,kWh,OK\n" for i in range(50)
    )
    path = _csv(tmp_path, HEAD + bad)
    result = import_file(
        store, ImportFile(path, "register-obis", "DEMO"), catalog, max_errors=10, bus=BUS
    )
    assert (len(result.errors), result.error_count) == (10, 50)
    assert "... 40 more line errors" in result.report()


def test_progress_is_reported_per_batch(
    store: SqlUnitOfWorkFactory, catalog: Catalog, tmp_path: Path
) -> None:
    from mappings.importer import ImportProgress

    rows = "".join(
        f"SN1001,1-0:1.8.0*255,2026-11-{d:02d} {h:02d}:00:00,W,{h},kWh,OK\n"
        for d in range(1, 29)
        for h in range(24)
    )
    path = _csv(tmp_path, HEAD + rows)
    seen: list[ImportProgress] = []
    result = import_file(
        store, ImportFile(path, "register-obis", "DEMO"), catalog, progress=seen.append, bus=BUS
    )
    assert result.applied
    assert seen
    assert seen[-1].readings == 28 * 24
    assert seen[-1].bytes_read == path.stat().st_size
