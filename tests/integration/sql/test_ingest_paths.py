"""The store's two write paths give the same results on PostgreSQL.

``uow.readings.ingest`` (through the bus: StoreMeterReadings) chooses inside the store
between the direct path (COPY straight into ``reading``, in a savepoint, undone on a
stored or repeated key and merged instead) and the staged path (the plain one). Every
step below runs once with the direct path off (``direct_from_rows=None``) for utility
PLAIN, once with it tried on every feed (``direct_from_rows=0``) for utility FAST,
both with the same meters, on the same database; the step's result (stats, unknown
items, duplicates), the stored rows and their versions (``reading`` and
``reading_history``) must be equal. The log shows which path the FAST run took, so
no step passes by never leaving the plain path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from mappings.importer import ImportFile, ImportResult, import_file
from mappings.load import BUILTIN_DIR, load_dir
from mdm.commands import StoreMeterReadings
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef, EndDevice, Utility
from mdm.ports import MeterItem, ReadingBlock, ReadingFeedChunk, StagingResult
from tests.bus import BUS

pytestmark = pytest.mark.postgres

RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
START = datetime(2026, 3, 1, tzinfo=UTC)
METERS = [f"M{n:02d}" for n in range(8)]
DIRECT = "stored by the direct path"
FALLBACK = "merging instead"
CTX = HandlerContext(actor="test", now=START)


@dataclass(frozen=True)
class Store:
    engine: Engine
    plain: SqlUnitOfWorkFactory
    fast: SqlUnitOfWorkFactory
    ids: dict[str, int]


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    # small writer batches: a feed takes several, so a conflict can come in a later one
    plain = SqlUnitOfWorkFactory(engine, staging_batch_size=100, direct_from_rows=None)
    fast = SqlUnitOfWorkFactory(engine, staging_batch_size=100, direct_from_rows=0)
    ids: dict[str, int] = {}
    with plain() as uow:
        for code in ("PLAIN", "FAST"):
            utility = uow.utilities.add(Utility(code, code))
            assert utility.id is not None
            ids[code] = utility.id
            for mrid in METERS:
                serial = f"SN{mrid[1:]}"
                uow.devices.add(utility.id, EndDevice(mrid, code, serial_number=serial))
            # a name two devices share, the serial number of one of them
            uow.devices.add(
                utility.id, EndDevice("X1", code, serial_number="SHARED", name="SHARED")
            )
            uow.devices.add(utility.id, EndDevice("X2", code, name="SHARED"))
        uow.commit()
    yield Store(engine, plain, fast, ids)
    engine.dispose()


def q(k: int) -> datetime:
    return START + timedelta(minutes=15 * k)


#: (item, meter, [(quarter-hour, value)]); meter None: the item names no meter
Item = tuple[int, DeviceRef | None, list[tuple[int, str]]]


def chunks(items: list[Item], per_chunk: int = 3) -> list[ReadingFeedChunk]:
    """Chunks of ``per_chunk`` MeterReadings, each with its meters (as the route makes)."""
    out = []
    for i in range(0, len(items), per_chunk):
        part = items[i : i + per_chunk]
        out.append(
            ReadingFeedChunk(
                [
                    ReadingBlock(item, RT, [(q(k), Decimal(v), "") for k, v in readings])
                    for item, _, readings in part
                    if readings
                ],
                [MeterItem(item, ref) for item, ref, _ in part if ref is not None],
            )
        )
    return out


def day(meters: list[str], first: int, count: int, bump: str = "") -> list[Item]:
    return [
        (n, DeviceRef(mrid=m), [(k, f"{n}{k}.5{bump}") for k in range(first, first + count)])
        for n, m in enumerate(meters, 1)
    ]


def snapshot(engine: Engine, utility_id: int) -> tuple[list[Any], list[Any]]:
    """Current rows and history rows of a utility's meters, without the recording times."""
    with engine.connect() as conn:
        current = conn.execute(
            text(
                "SELECT d.mrid, r.reading_type_id, r.ts, r.value, r.quality, r.version "
                "FROM reading r JOIN end_device d ON d.id = r.device_id "
                "WHERE d.utility_id = :u ORDER BY 1, 2, 3"
            ),
            {"u": utility_id},
        ).all()
        history = conn.execute(
            text(
                "SELECT d.mrid, h.reading_type_id, h.ts, h.version, h.value, h.quality "
                "FROM reading_history h JOIN end_device d ON d.id = h.device_id "
                "WHERE d.utility_id = :u ORDER BY 1, 2, 3, 4"
            ),
            {"u": utility_id},
        ).all()
    return [tuple(r) for r in current], [tuple(r) for r in history]


def both(
    store: Store, items: list[Item], caplog: pytest.LogCaptureFixture
) -> tuple[StagingResult, str]:
    """The feed stored for PLAIN (plain path) and FAST (direct path tried); the results,
    stored rows and versions equal; FAST's result and what its store logged."""
    results = {}
    log = ""
    for code, factory in (("PLAIN", store.plain), ("FAST", store.fast)):
        caplog.clear()
        with factory() as uow, caplog.at_level("DEBUG", logger="amihub.store.readings"):
            result = BUS.handle(StoreMeterReadings(store.ids[code], chunks(items)), uow, CTX)
            if not result.duplicates:
                uow.commit()
        results[code] = result
        if code == "PLAIN":
            assert DIRECT not in caplog.text
            assert FALLBACK not in caplog.text
        log = caplog.text
    assert results["FAST"] == results["PLAIN"]
    plain, fast = (
        snapshot(store.engine, store.ids["PLAIN"]),
        snapshot(store.engine, store.ids["FAST"]),
    )
    assert fast == plain
    return results["FAST"], log


def test_new_resent_overlapping_and_repeated_readings(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # new: eight meters, a meter unknown to the store, one without a Meter, one with a
    # Meter and no readings
    new = [
        *day(METERS, 0, 40),
        (9, DeviceRef(mrid="NOT-THERE"), [(0, "1"), (1, "2")]),
        (10, None, [(0, "3")]),
        (11, DeviceRef(mrid=METERS[0]), []),
        (12, DeviceRef(name="SHARED"), [(0, "4"), (1, "5")]),  # the unique serial number
    ]
    result, log = both(store, new, caplog)
    assert (result.stats.stored, result.stats.superseded, result.stats.unchanged) == (322, 0, 0)
    assert result.unknown_items == [9, 10]
    assert DIRECT in log
    assert FALLBACK not in log

    # re-sent: every key stored already, all unchanged
    result, log = both(store, new, caplog)
    assert (result.stats.stored, result.stats.superseded, result.stats.unchanged) == (0, 0, 322)
    assert result.unknown_items == [9, 10]
    assert FALLBACK in log

    # overlapping: the last 10 stored quarter-hours (8 of them with new values, 2 the
    # same) and 20 new ones, for half of the meters
    overlap = day(METERS[:4], 30, 30)
    for _, _, readings in overlap:
        readings[:] = [(k, v if k < 32 or k >= 40 else f"{v}1") for k, v in readings]
    result, log = both(store, overlap, caplog)
    assert (result.stats.stored, result.stats.superseded, result.stats.unchanged) == (
        4 * 20,
        4 * 8,
        4 * 2,
    )
    assert FALLBACK in log

    # new readings between stored ones stay on the direct path
    result, log = both(store, day(METERS, 100, 10), caplog)
    assert result.stats.stored == 80
    assert DIRECT in log
    assert FALLBACK not in log

    # repeats inside one message: a time twice in one MeterReading, and one meter named
    # by two MeterReadings at the same times (new times: the COPY meets its own rows)
    repeats = [
        (1, DeviceRef(mrid=METERS[0]), [(200, "1"), (201, "2"), (200, "3")]),
        (2, DeviceRef(mrid=METERS[1]), [(200, "1"), (201, "2")]),
        (3, DeviceRef(name=f"SN{METERS[1][1:]}"), [(201, "5"), (202, "6")]),
        (4, DeviceRef(mrid=METERS[2]), [(200, "1")]),
    ]
    result, log = both(store, repeats, caplog)
    assert result.duplicates
    assert [(d.item, d.ts, d.count) for d in result.duplicates] == [
        (1, q(200), 2),
        (2, q(201), 2),
        (3, q(201), 2),
    ]
    assert FALLBACK in log


def test_a_mapping_csv_file_gives_the_same_result(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = load_dir(BUILTIN_DIR)
    head = "meter,obis,timestamp,dst,value,unit,status\n"

    def line(serial: str, k: int, value: str) -> str:
        ts = datetime(2026, 1, 15) + timedelta(minutes=15 * k)
        return f"{serial},1-0:1.8.0*255,{ts:%Y-%m-%d %H:%M:%S},W,{value},kWh,OK\n"

    serials = [f"SN{m[1:]}" for m in METERS]

    def write(name: str, lines: list[str]) -> Path:
        path = tmp_path / name
        path.write_text(head + "".join(lines), encoding="utf-8")
        return path

    def run(path: Path) -> tuple[ImportResult, str]:
        results: dict[str, ImportResult] = {}
        log = ""
        for code, factory in (("PLAIN", store.plain), ("FAST", store.fast)):
            caplog.clear()
            with caplog.at_level("DEBUG", logger="amihub.store.readings"):
                results[code] = import_file(
                    factory, ImportFile(path, "register-obis", code), catalog, bus=BUS
                )
            log = caplog.text
        plain, fast = results["PLAIN"], results["FAST"]
        assert (fast.applied, fast.stats, fast.unknown_meters, fast.duplicates) == (
            plain.applied,
            plain.stats,
            plain.unknown_meters,
            plain.duplicates,
        )
        assert snapshot(store.engine, store.ids["FAST"]) == snapshot(
            store.engine, store.ids["PLAIN"]
        )
        return fast, log

    first = write(
        "first.csv", [line(s, k, f"{n}{k}.5") for n, s in enumerate(serials) for k in range(48)]
    )
    result, log = run(first)
    assert result.applied
    assert result.stats.stored == 8 * 48
    assert DIRECT in log

    result, log = run(first)  # re-sent
    assert result.applied
    assert result.stats.unchanged == 8 * 48
    assert FALLBACK in log

    changed = write(
        "changed.csv",
        [line(s, k, f"{n}{k}.75") for n, s in enumerate(serials) for k in range(40, 60)],
    )
    result, log = run(changed)
    assert result.applied
    assert (result.stats.stored, result.stats.superseded) == (8 * 12, 8 * 8)
    assert FALLBACK in log

    twice = write(
        "twice.csv",
        [line(s, k, "1.5") for s in serials for k in range(70, 80)] + [line(serials[3], 75, "2")],
    )
    result, log = run(twice)
    assert not result.applied
    assert [(d.count, d.meter.ref.name) for d in result.duplicates] == [(2, serials[3])]
    assert FALLBACK in log
