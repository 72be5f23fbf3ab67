"""``amihub demo``: the embedded default end to end, on a fresh SQLite store.

Creates a utility with usage points and meters, installs the meters, imports a
generated month of 15-minute data as a CIM MeterReadings message through the
real pipeline, sends a correction (a new version supersedes the old one) and a
message naming an unknown meter (PARTIAL, kept as a dead letter), and shows
what was stored.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.memory import MemoryAdapter
from hub.bootstrap import App, bootstrap
from hub.errors import AmihubError
from hub.messages import InboundMessage
from hub.samples import (
    RT_15MIN_A_PLUS,
    linkage,
    meter_config,
    meter_readings_bytes,
    usage_point_config,
    write_meter_readings,
)
from hub.settings import Settings
from mdm.commands import QueryMeterReadings
from mdm.handlers import HandlerContext, ReadingQueryResult
from mdm.model import DeviceRef

DEMO_DB = "amihub-demo.db"


def _master_data(app: App, meters: int, start: datetime, console: Console) -> list[str]:
    """The CIS side: usage points, meters and their installation, as CIM messages."""
    hub = MemoryAdapter(app.pipeline)
    ups = [
        {
            "mrid": f"UP-{n:04d}",
            "name": f"Demo street {n}",
            "kind": "electricity",
            "location": f"Demo street {n}, Springfield",
            "transformer_area": f"TA-{(n - 1) // 3 + 1}",
        }
        for n in range(1, meters + 1)
    ]
    devices = [
        {
            "mrid": f"MTR-{n:04d}",
            "serial": f"SN{n:08d}",
            "name": f"MTR-{n:04d}",
            "manufacturer": "amihub",
            "model": "SIM-3P",
        }
        for n in range(1, meters + 1)
    ]
    steps = [
        ("UsagePointConfig create", hub.request(usage_point_config("create", ups), source="cis")),
        ("MeterConfig create", hub.request(meter_config("create", devices), source="cis")),
    ]
    for up, device in zip(ups, devices, strict=True):
        steps.append(
            (
                f"MasterDataLinkageConfig create {device['mrid']} at {up['mrid']}",
                hub.request(linkage("create", device["mrid"], up["mrid"], start), source="cis"),
            )
        )
    for what, outcome in steps[:3]:
        console.print(f"{what}: {outcome.result}")
    failed = [(w, o) for w, o in steps if not o.ok]
    if failed:
        raise AmihubError(f"demo master data failed: {failed[0][0]}: {failed[0][1].errors}")
    return [d["mrid"] for d in devices]


def run_demo(
    settings: Settings,
    *,
    meters: int,
    days: int,
    database_url: str | None,
    console: Console,
    progress_console: Console,
) -> None:
    url = database_url or f"sqlite:///{DEMO_DB}"
    if database_url is None:
        Path(DEMO_DB).unlink(missing_ok=True)
    settings = settings.model_copy(update={"database_url": url})
    # the demo tells its own story; the pipeline's per-message log lines are for services
    logging.getLogger("amihub").setLevel(logging.WARNING)
    app = bootstrap(settings, migrate=True)
    try:
        _run(app, meters, days, console, progress_console)
    finally:
        app.close()


def _run(app: App, meters: int, days: int, console: Console, progress_console: Console) -> None:
    start = (datetime.now(UTC) - timedelta(days=days)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    console.rule("amihub demo: embedded default (SQLite, in-process)")
    console.print(f"store: {app.settings.database_url}")
    mrids = _master_data(app, meters, start, console)
    console.print(f"{meters} usage points and {meters} meters, installed from {start.date()}")

    intervals = days * 96
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "month.xml"
        with Progress(console=progress_console, transient=True) as progress:
            task = progress.add_task("generating a month of 15-minute data", total=None)
            with path.open("w", encoding="utf-8") as f:
                written = write_meter_readings(f, mrids, start, intervals, seed=7)
            progress.update(task, description="importing through the hub pipeline")
            t0 = time.perf_counter()
            outcome = app.pipeline.process(
                InboundMessage(source="demo-headend", endpoint="cli:demo", path=path)
            )
            elapsed = time.perf_counter() - t0
    console.print(
        f"import of {written:,} readings ({path.name}): {outcome.result} in "
        f"{elapsed:.2f} s ({written / elapsed:,.0f} readings/s) {outcome.counts}"
    )

    # a correction: the first interval of meter 1 is re-sent with another value
    correction = meter_readings_bytes(mrids[:1], start, 1, registers=False, seed=99, verb="changed")
    fix = app.pipeline.process(
        InboundMessage(source="demo-headend", endpoint="cli:demo", body=correction)
    )
    console.print(f"correction for {mrids[0]}: {fix.result} {fix.counts}")

    # a message naming an unknown meter next to a known one: PARTIAL + dead letter
    mixed = meter_readings_bytes(
        [mrids[1], "MTR-UNKNOWN"], start + timedelta(days=days), 4, registers=False
    )
    partial = app.pipeline.process(
        InboundMessage(source="demo-headend", endpoint="cli:demo", body=mixed)
    )
    for e in partial.errors:
        console.print(f"{partial.result}: error {e.code} at {e.xpath}: {e.reason}")
    console.print(f"(kept as dead letter {partial.dead_letter_id}: `amihub dead-letters list`)")

    _show(app, mrids, start, days, console)


def _show(app: App, mrids: list[str], start: datetime, days: int, console: Console) -> None:
    ctx = HandlerContext(actor="demo", now=datetime.now(UTC))
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        table = Table(
            "meter",
            "readings",
            "kWh in period",
            "peak 15-min kWh",
            "first",
            "last",
            title=f"15-minute +A energy, {days} days",
        )
        for mrid in mrids:
            result: ReadingQueryResult = app.bus.handle(
                QueryMeterReadings(
                    utility.id,
                    meters=(DeviceRef(mrid=mrid),),
                    reading_types=(RT_15MIN_A_PLUS,),
                    start=start,
                    end=start + timedelta(days=days + 1),
                ),
                uow,
                ctx,
            )
            values = [(r.ts, r.value) for r in result.readings]
            total = sum((v for _, v in values), Decimal(0))
            peak = max((v for _, v in values), default=Decimal(0))
            table.add_row(
                mrid,
                f"{len(values):,}",
                f"{total:.2f}",
                f"{peak:.4f}",
                values[0][0].isoformat() if values else "",
                values[-1][0].isoformat() if values else "",
            )
        console.print(table)
        meter_id = uow.devices.find(utility.id, DeviceRef(mrid=mrids[0]))
        assert meter_id is not None
        assert meter_id.id is not None
        versions = uow.readings.versions(
            meter_id.id, RT_15MIN_A_PLUS, start + timedelta(minutes=15)
        )
        console.print(
            f"versions of {mrids[0]} at {(start + timedelta(minutes=15)).isoformat()}: "
            + ", ".join(f"v{v.version}={v.value}" for v in versions)
        )
        day = Table("interval end (UTC)", "kWh", title=f"{mrids[0]}, first 4 hours")
        first = app.bus.handle(
            QueryMeterReadings(
                utility.id,
                meters=(DeviceRef(mrid=mrids[0]),),
                reading_types=(RT_15MIN_A_PLUS,),
                start=start,
                end=start + timedelta(hours=4),
            ),
            uow,
            ctx,
        )
        for r in first.readings:
            day.add_row(r.ts.strftime("%Y-%m-%d %H:%M"), f"{r.value} " + "#" * int(r.value * 40))
        console.print(day)
