"""``amihub demo``: the embedded default end to end, on a fresh SQLite store.

Creates a utility with usage points and meters, installs the meters, imports a
generated month of 15-minute data as a CIM MeterReadings message through the
real pipeline, sends a correction (a new version supersedes the old one) and a
message naming an unknown meter (PARTIAL, kept as a dead letter), and shows
what was stored. Then the head-end: a small simulated DLMS fleet on a free port is
read through the engine (CIM MeterReadSchedule) into the same store, and a remote
disconnect and reconnect (CIM EndDeviceControls) run against it as control jobs,
their results shown as EndDeviceEvents.
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

from cim_schemas.errors import AmihubError
from cim_schemas.xml import parse_bytes
from hub.bootstrap import App, bootstrap, fleet_directory, memory_adapter
from hub.messages import InboundMessage
from hub.samples import (
    RT_15MIN_A_PLUS,
    RT_A_PLUS_TOTAL,
    end_device_controls,
    get_end_device_events,
    linkage,
    meter_config,
    meter_read_schedule,
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
    hub = memory_adapter(app)
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
    _head_end(app, console)


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


# -- the head-end: a simulated DLMS fleet read and switched through the hub ----------------


def _head_end(app: App, console: Console) -> None:
    """A 3-meter simulated fleet (HLS-GMAC, over TCP on a free port): registered as CIM
    MeterConfig, read by create MeterReadSchedule, disconnected and reconnected by
    create EndDeviceControls; the control jobs' results are EndDeviceEvents."""
    import socket

    from hes.simulator.fleet import Fleet, SimulatorThread

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    fleet = Fleet.build(3, port, seed=1)
    directory = fleet_directory(fleet)
    console.rule("head-end: simulated DLMS/COSEM meters (security suite 0, HLS-GMAC)")
    with SimulatorThread(fleet):
        hes_app = bootstrap(app.settings, meters=directory)
        try:
            _head_end_steps(hes_app, list(directory), port, console)
        finally:
            hes_app.close()


def _head_end_steps(app: App, meters: list[str], port: int, console: Console) -> None:
    hub = memory_adapter(app)
    devices = [{"mrid": m, "serial": m.removeprefix("MTR-"), "name": m} for m in meters]
    created = hub.request(meter_config("create", devices), source="cis")
    console.print(f"{len(meters)} meters on 127.0.0.1:{port}: MeterConfig create {created.result}")

    end = datetime.now(UTC)
    read = hub.request(meter_read_schedule(meters, end - timedelta(hours=6), end), source="cis")
    console.print(f"MeterReadSchedule create (read now, last 6 hours): {read.result} {read.counts}")
    ctx = HandlerContext(actor="demo", now=end)
    table = Table("meter", "+A register kWh", "15-min values", "kWh in 6 h", title="read over DLMS")
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        for mrid in meters:
            found: ReadingQueryResult = app.bus.handle(
                QueryMeterReadings(
                    utility.id,
                    meters=(DeviceRef(mrid=mrid),),
                    start=end - timedelta(hours=7),
                    end=end + timedelta(minutes=1),
                ),
                uow,
                ctx,
            )
            rows = list(found.readings)
            register = [r.value for r in rows if r.reading_type == RT_A_PLUS_TOTAL]
            profile = [r.value for r in rows if r.reading_type == RT_15MIN_A_PLUS]
            table.add_row(
                mrid,
                f"{register[-1]:.3f}" if register else "-",
                str(len(profile)),
                f"{sum(profile, Decimal(0)):.3f}",
            )
    console.print(table)

    assert app.headend is not None
    for verb, code in (("disconnect", "3.31.0.23"), ("reconnect", "3.31.0.18")):
        order = hub.request(
            end_device_controls("create", [{"type": code, "devices": meters[:1]}]), source="cis"
        )
        console.print(
            f"EndDeviceControls create {code} (remote {verb}) {meters[0]}: {order.result}"
        )
        for report in app.headend.run_due():
            for r in report.results:
                console.print(
                    f"  job {report.request.job_id[:8]}: {report.state}; EndDeviceEvent "
                    f"{r.event_type} for {r.device_mrid} {r.detail}"
                )
    answer = hub.request(get_end_device_events(meters[:1]), source="cis")
    events = Table("created (UTC)", "EndDeviceEventType", "reason", title=f"events of {meters[0]}")
    for ev in parse_bytes(answer.reply).getroot().iter(f"{_EDE}EndDeviceEvent"):
        kind = ev.find(f"{_EDE}EndDeviceEventType")
        events.add_row(
            (ev.findtext(f"{_EDE}createdDateTime") or "")[:19],
            kind.get("ref", "") if kind is not None else "",
            ev.findtext(f"{_EDE}reason") or "",
        )
    console.print(events)


_EDE = "{http://iec.ch/TC57/2011/EndDeviceEvents#}"
