"""The importer on PostgreSQL: the direct bulk path for new data, the staged path after a
conflict (stored or repeated readings), and the same results either way."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from mappings.importer import ImportFile, ImportResult, import_file
from mappings.load import BUILTIN_DIR, Catalog, load_dir
from mdm.model import DeviceRef, EndDevice, UsagePoint, Utility
from tests.bus import BUS

pytestmark = pytest.mark.postgres

PLUS_A = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # 1-0:1.8.0*255 through the obis table
METERS = [f"SN{n}" for n in range(1001, 1006)]
HEAD = "meter,obis,timestamp,dst,value,unit,status\n"
FALLBACK = "merging instead"  # the store's log: the direct path gave way
DIRECT = "stored by the direct path"


@pytest.fixture
def store(postgres_url: str) -> Iterator[SqlUnitOfWorkFactory]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    # small writer batches: a file of 5 x 96 readings takes several of them, and the
    # direct path from 100 readings on (the store's default: larger feeds only)
    factory = SqlUnitOfWorkFactory(engine, staging_batch_size=100, direct_from_rows=100)
    with factory() as uow:
        utility = uow.utilities.add(Utility("DEMO", "Demo utility"))
        assert utility.id is not None
        for serial in METERS:
            uow.devices.add(utility.id, EndDevice(f"m-{serial}", "DEMO", serial_number=serial))
        uow.commit()
    yield factory
    engine.dispose()


@pytest.fixture
def catalog() -> Catalog:
    return load_dir(BUILTIN_DIR)


def _stamp(k: int) -> str:
    return f"{datetime(2026, 1, 15) + timedelta(minutes=15 * k):%Y-%m-%d %H:%M:%S}"


def _value(n: int, k: int, bump: int = 0) -> str:
    return f"{1000 + n * 100 + k + bump}.5"


def write_long(
    path: Path,
    meters: list[str],
    *,
    per_meter: int = 96,
    time_major: bool = False,
    bump_from: int | None = None,
    extra: str = "",
) -> Path:
    """Register reads (winter day), meter by meter or, with ``time_major``, time by time."""
    keys = [(n, k) for n in range(len(meters)) for k in range(per_meter)]
    if time_major:
        keys.sort(key=lambda nk: (nk[1], nk[0]))
    with path.open("w", encoding="utf-8") as f:
        f.write(HEAD)
        for n, k in keys:
            bump = 1 if bump_from is not None and k >= bump_from else 0
            f.write(f"{meters[n]},1-0:1.8.0*255,{_stamp(k)},W,{_value(n, k, bump)},kWh,OK\n")
        f.write(extra)
    return path


def run(
    store: SqlUnitOfWorkFactory, catalog: Catalog, path: Path, mapping: str = "register-obis"
) -> ImportResult:
    return import_file(store, ImportFile(path, mapping, "DEMO"), catalog, bus=BUS)


def stored(store: SqlUnitOfWorkFactory, serial: str, k: int) -> tuple[Decimal, int] | None:
    """Value and version of a meter's reading at quarter-hour ``k``."""
    with store() as uow:
        utility = uow.utilities.get("DEMO")
        assert utility is not None
        assert utility.id is not None
        device = uow.devices.find(utility.id, DeviceRef(mrid=f"m-{serial}"))
        assert device is not None
        assert device.id is not None
        local = datetime(2026, 1, 15) + timedelta(minutes=15 * k)
        ts = (local - timedelta(hours=1)).replace(tzinfo=UTC)  # CET = UTC+1
        versions = uow.readings.versions(device.id, PLUS_A, ts)
    return (versions[0].value, versions[0].version) if versions else None


def count(store: SqlUnitOfWorkFactory) -> int:
    with store() as uow:
        return uow.readings.count()


def test_new_file_takes_the_direct_path_then_a_replay_merges(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    path = write_long(tmp_path / "reads.csv", METERS)
    first = run(store, catalog, path)
    assert first.applied, first.report()
    assert first.stats.stored == first.readings == 5 * 96
    assert FALLBACK not in caplog.text  # new readings: the direct path, whole
    assert DIRECT in caplog.text
    assert count(store) == 5 * 96
    assert stored(store, "SN1003", 7) == (Decimal("1207.5"), 1)

    again = run(store, catalog, path)  # stored keys: the fast path gives way
    assert FALLBACK in caplog.text
    assert again.applied
    assert (again.stats.stored, again.stats.superseded, again.stats.unchanged) == (0, 0, 480)
    assert count(store) == 5 * 96


def test_changed_and_new_readings_fall_back_and_are_versioned(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    assert run(store, catalog, write_long(tmp_path / "a.csv", METERS, per_meter=48)).applied
    assert FALLBACK not in caplog.text
    assert DIRECT in caplog.text
    caplog.clear()
    # the same 48 quarter-hours (the last 8 with new values) and 48 new ones
    result = run(store, catalog, write_long(tmp_path / "b.csv", METERS, bump_from=40))
    assert FALLBACK in caplog.text
    assert result.applied, result.report()
    assert (result.stats.stored, result.stats.superseded, result.stats.unchanged) == (
        5 * 48,
        5 * 8,
        5 * 40,
    )
    assert stored(store, "SN1001", 41) == (Decimal("1042.5"), 2)
    assert stored(store, "SN1001", 39) == (Decimal("1039.5"), 1)
    assert stored(store, "SN1005", 95) == (Decimal("1496.5"), 1)  # new, bumped too
    assert count(store) == 5 * 96


def test_a_reading_twice_in_the_file_falls_back_and_is_refused(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    twice = f"SN1001,1-0:1.8.0*255,{_stamp(3)},W,9.5,kWh,OK\n"
    result = run(store, catalog, write_long(tmp_path / "dup.csv", METERS, extra=twice))
    assert FALLBACK in caplog.text
    assert not result.applied
    assert [d.count for d in result.duplicates] == [2]
    assert "occurs 2 times in the file" in result.report()
    assert count(store) == 0  # the direct path's batches were rolled back


def test_time_ordered_file_gives_the_same_result(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # every meter appears in every writer batch: only a key stored already stops the
    # direct path (the primary key), not a meter met in an earlier batch
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    result = run(store, catalog, write_long(tmp_path / "t.csv", METERS, time_major=True))
    assert FALLBACK not in caplog.text
    assert DIRECT in caplog.text
    assert result.applied, result.report()
    assert result.stats.stored == 5 * 96
    assert count(store) == 5 * 96
    assert stored(store, "SN1004", 95) == (Decimal("1395.5"), 1)


def test_new_readings_between_stored_ones_stay_on_the_direct_path(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    even = tmp_path / "even.csv"
    odd = tmp_path / "odd.csv"
    lines = write_long(tmp_path / "all.csv", METERS).read_text(encoding="utf-8").splitlines()
    body = lines[1:]
    even.write_text(HEAD + "".join(f"{x}\n" for x in body[0::2]), encoding="utf-8")
    odd.write_text(HEAD + "".join(f"{x}\n" for x in body[1::2]), encoding="utf-8")
    assert run(store, catalog, even).applied
    caplog.clear()
    result = run(store, catalog, odd)  # every new key lies between two stored ones
    assert FALLBACK not in caplog.text
    assert DIRECT in caplog.text
    assert result.applied, result.report()
    assert result.stats.stored == 5 * 48
    assert count(store) == 5 * 96
    assert stored(store, "SN1002", 7) == (Decimal("1107.5"), 1)


def test_a_stored_key_in_a_late_batch_rolls_back_the_earlier_ones(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    every = write_long(tmp_path / "every.csv", METERS).read_text(encoding="utf-8")
    last = tmp_path / "last.csv"  # the last meter's readings only, the same values
    last.write_text(HEAD + "".join(x for x in every.splitlines(True) if x.startswith("SN1005")))
    assert run(store, catalog, last).applied
    result = run(store, catalog, write_long(tmp_path / "all.csv", METERS, bump_from=90))
    assert FALLBACK in caplog.text  # the last meter's keys are stored: merged instead
    assert result.applied, result.report()
    assert (result.stats.stored, result.stats.superseded, result.stats.unchanged) == (
        4 * 96,
        6,
        90,
    )
    assert stored(store, "SN1005", 95) == (Decimal("1496.5"), 2)
    assert count(store) == 5 * 96


@pytest.mark.parametrize("policy", ["reject", "skip"])
def test_unknown_meter_on_the_direct_path(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    policy: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    spec = (BUILTIN_DIR / "register-obis.toml").read_text(encoding="utf-8")
    spec = spec.replace('name = "register-obis"', 'name = "obis-policy"')
    spec += f'\n[policy]\nunknown_meters = "{policy}"\n'
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "obis-policy.toml").write_text(spec, encoding="utf-8")
    own = load_dir(folder)
    path = write_long(tmp_path / "u.csv", [METERS[0], "SN-NOPE", METERS[1]])
    result = run(store, own, path, "obis-policy")
    assert FALLBACK not in caplog.text
    assert DIRECT in caplog.text
    assert [(u.code, u.first_line, u.last_line, u.readings) for u in result.unknown_meters] == [
        ("2001", 98, 193, 96)
    ]
    if policy == "reject":
        assert not result.applied
        assert count(store) == 0
    else:
        assert result.applied
        assert result.stats.stored == 2 * 96
        assert result.skipped_readings == 96
        assert count(store) == 2 * 96


def test_wide_file_on_the_direct_path(
    store: SqlUnitOfWorkFactory,
    catalog: Catalog,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
    head = "Zählernummer;Datum;" + ";".join(f"W{i:03d}" for i in range(1, 101)) + "\n"
    rows = [
        f"{serial};{day:02d}.01.2026;" + ";".join(["0,250"] * 96 + [""] * 4) + "\n"
        for day in (15, 16)
        for serial in METERS
    ]
    path = tmp_path / "wide.csv"
    path.write_bytes((head + "".join(rows)).encode("latin-1"))
    result = run(store, catalog, path, "wide-15min-de")
    assert result.applied, result.report()
    assert result.stats.stored == 2 * 5 * 96
    assert count(store) == 2 * 5 * 96


def test_usage_points_resolved_while_the_direct_path_writes(
    postgres_url: str, catalog: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # usage points are resolved through the store as they appear; the writer's batches go
    # to the same connection meanwhile: they must take turns (5,760 readings: several
    # batches, usage points still being met when the first ones are written)
    engine = make_engine(postgres_url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine, staging_batch_size=100, direct_from_rows=100)
    ups = [f"UP{n:03d}" for n in range(60)]
    with factory() as uow:
        utility = uow.utilities.add(Utility("DEMO", "Demo utility"))
        assert utility.id is not None
        for up_name in ups:
            up = uow.usage_points.add(utility.id, UsagePoint(up_name, "DEMO"))
            dev = uow.devices.add(utility.id, EndDevice(f"m-{up_name}", "DEMO"))
            assert up.id is not None
            assert dev.id is not None
            uow.installations.install(dev.id, up.id, datetime(2026, 1, 1, tzinfo=UTC))
        uow.commit()
    spec = (
        'kind = "csv"\nname = "by-up"\n[meter]\ncolumn = "up"\nby = "usage_point"\n'
        '[timestamp]\ncolumn = "ts"\n[value]\ncolumn = "v"\n'
        f'[reading_type]\nfixed = "{PLUS_A}"\n'
    )
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "by-up.toml").write_text(spec, encoding="utf-8")
    own = load_dir(folder)
    start = datetime(2026, 1, 15, tzinfo=UTC)
    path = tmp_path / "ups.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("up,ts,v\n")
        for n, up_name in enumerate(ups):
            for k in range(96):
                f.write(f"{up_name},{(start + timedelta(minutes=15 * k)).isoformat()},{n}.{k}\n")
    try:
        caplog.set_level(logging.DEBUG, logger="amihub.store.readings")
        result = import_file(factory, ImportFile(path, "by-up", "DEMO"), own, bus=BUS)
        assert FALLBACK not in caplog.text
        assert DIRECT in caplog.text
        assert result.applied, result.report()
        assert result.stats.stored == 60 * 96
        with factory() as uow:
            assert uow.readings.count() == 60 * 96
    finally:
        engine.dispose()
