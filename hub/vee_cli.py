"""``amihub vee``: validation runs on demand, their findings, and the failing meters as
an end device group (docs/vee.md). The commands run through the bus of the app the
bootstrap builds (``hub.cli._app``), as every other command does.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from cim_schemas.errors import ConfigurationError
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork
from mdm.vee.commands import EstimateReadings, SaveFailingMeters, ValidateReadings
from mdm.vee.estimation import EstimationMethod
from mdm.vee.model import ValidationRun
from mdm.vee.rules import RuleKind

if TYPE_CHECKING:
    from hub.bootstrap import App


@contextmanager
def _store(
    ctx: click.Context, utility: str | None, *, migrate: bool = False
) -> Iterator[tuple[App, UnitOfWork, int, str]]:
    from hub.cli import _app

    with _app(ctx, migrate=migrate) as app, app.uow_factory() as uow:
        code = utility or app.settings.default_utility
        found = uow.utilities.get(code)
        if found is None or found.id is None:
            raise ConfigurationError(f"unknown utility {code!r}")
        yield app, uow, found.id, code


def _context() -> HandlerContext:
    import getpass

    return HandlerContext(actor=f"cli:{getpass.getuser()}", now=datetime.now(UTC))


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at is not None else ""


utility_option = click.option(
    "--utility", help="Utility code (default: the configured default utility)."
)


@click.group()
def vee() -> None:
    """Validation and estimation of readings: rules ([[vee.rules]]), runs and their
    findings."""


@vee.command("rules")
@utility_option
@click.pass_context
def rules(ctx: click.Context, utility: str | None) -> None:
    """The configured rules and where they apply."""
    from hub.cli import console, out

    settings = ctx.obj["settings"]
    code = utility or settings.default_utility
    table = Table("name", "kind", "reading type", "quality", "applies to", "on")
    configured = settings.vee.rules_for(code)
    for r in configured:
        where = [
            f"{k} {v}"
            for k, v in (
                ("utility", r.scope.utility),
                ("group", r.scope.end_device_group),
                ("area", r.scope.usage_point_group),
            )
            if v
        ]
        table.add_row(
            escape(r.name),
            str(r.kind),
            r.reading_type,
            r.quality,
            escape(", ".join(where) or "everywhere"),
            "yes" if r.enabled else "no",
        )
    out.print(table)
    console.print(f"{len(configured)} rule(s)")


@vee.command("validate")
@click.option(
    "--from", "start", required=True, help="Start (ISO 8601; UTC if no offset), exclusive."
)
@click.option("--to", "end", required=True, help="End (ISO 8601; UTC if no offset), inclusive.")
@click.option("--meter", help="Only this meter (mRID).")
@click.option("--group", help="Only the members of this end device group (mRID or name).")
@click.option("--rule", "only", multiple=True, help="Only this rule (repeatable).")
@utility_option
@click.pass_context
def validate(
    ctx: click.Context,
    start: str,
    end: str,
    meter: str | None,
    group: str | None,
    only: tuple[str, ...],
    utility: str | None,
) -> None:
    """Validate the stored readings of (--from, --to] with the configured rules; the run
    is recorded with its counts, its findings with `amihub vee findings`."""
    from hub.cli import _parse_when

    if meter and group:
        raise click.UsageError("name --meter or --group, not both")
    begin, finish = _parse_when(start, "--from"), _parse_when(end, "--to")
    assert begin is not None
    assert finish is not None
    with _store(ctx, utility, migrate=True) as (app, uow, utility_id, code):
        run: ValidationRun = app.bus.handle(
            ValidateReadings(
                utility_id,
                code,
                begin,
                finish,
                app.settings.vee.rules_for(code),
                meter=DeviceRef(mrid=meter) if meter else None,
                group=group,
                only=only,
            ),
            uow,
            _context(),
        )
        uow.commit()
    _print_run(run)


@vee.command("estimate")
@click.option(
    "--from", "start", required=True, help="Start (ISO 8601; UTC if no offset), exclusive."
)
@click.option("--to", "end", required=True, help="End (ISO 8601; UTC if no offset), inclusive.")
@click.option("--meter", help="Only this meter (mRID).")
@click.option("--group", help="Only the members of this end device group (mRID or name).")
@click.option(
    "--method",
    type=click.Choice([str(m) for m in EstimationMethod]),
    default=str(EstimationMethod.LINEAR),
    show_default=True,
    help="How a gap is filled: linear (short gaps between known readings), history "
    "(linear where it can, else the same day type's history).",
)
@click.option(
    "--max-intervals",
    type=int,
    help="The longest gap filled, in intervals (default: vee.linear_max_intervals).",
)
@click.option(
    "--reading-type",
    "reading_types",
    multiple=True,
    help="Interval reading type to fill (repeatable; default: vee.estimate_reading_types, "
    "else those of the enabled 'missing' rules).",
)
@utility_option
@click.pass_context
def estimate(
    ctx: click.Context,
    start: str,
    end: str,
    meter: str | None,
    group: str | None,
    method: str,
    max_intervals: int | None,
    reading_types: tuple[str, ...],
    utility: str | None,
) -> None:
    """Estimate the missing intervals of (--from, --to] between known readings; the run
    is recorded with its counts, what was (and was not) estimated with `amihub vee
    findings --run N`."""
    from hub.cli import _parse_when

    if meter and group:
        raise click.UsageError("name --meter or --group, not both")
    begin, finish = _parse_when(start, "--from"), _parse_when(end, "--to")
    assert begin is not None
    assert finish is not None
    with _store(ctx, utility, migrate=True) as (app, uow, utility_id, code):
        settings = app.settings.vee
        run: ValidationRun = app.bus.handle(
            EstimateReadings(
                utility_id,
                begin,
                finish,
                reading_types or settings.estimated_types(code),
                settings.linear_max_intervals if max_intervals is None else max_intervals,
                EstimationMethod(method),
                meter=DeviceRef(mrid=meter) if meter else None,
                group=group,
                history_weeks=settings.history_weeks,
                time_zone=settings.utility_time_zones.get(code, settings.time_zone),
                registers=tuple(
                    (r.profile_reading_type, r.reading_type)
                    for r in settings.rules_for(code)
                    if r.kind == RuleKind.REGISTER_VS_PROFILE
                    and r.applies_to(code)
                    and r.profile_reading_type is not None
                ),
            ),
            uow,
            _context(),
        )
        uow.commit()
    _print_estimation(run)


def _print_estimation(run: ValidationRun) -> None:
    from hub.cli import console, out

    table = Table("method", "reading type", "intervals estimated", "findings", "meters")
    for c in run.rules:
        table.add_row(
            escape(c.rule), c.reading_type, str(c.readings), str(c.findings), str(c.meters)
        )
    out.print(table)
    console.print(
        f"estimation run {run.id} ({escape(run.scope)}, ({run.period_start.isoformat()}, "
        f"{run.period_end.isoformat()}]): {run.meters} meter(s), {run.readings} reading(s) "
        f"present, {run.marked} interval(s) estimated, {run.findings} finding(s) "
        "(`amihub vee findings --run " + str(run.id) + "`)"
    )


def _print_run(run: ValidationRun) -> None:
    from hub.cli import console, out

    table = Table("rule", "kind", "reading type", "readings", "findings", "meters")
    for c in run.rules:
        table.add_row(
            escape(c.rule), c.kind, c.reading_type, str(c.readings), str(c.findings), str(c.meters)
        )
    out.print(table)
    console.print(
        f"validation run {run.id} ({escape(run.scope)}, ({run.period_start.isoformat()}, "
        f"{run.period_end.isoformat()}]): {run.meters} meter(s), {run.readings} reading(s), "
        f"{run.findings} finding(s), {run.failing_meters} meter(s) failing, "
        f"{run.marked} reading(s) given a quality"
    )


@vee.command("runs")
@click.option("--limit", default=50, show_default=True)
@utility_option
@click.pass_context
def runs(ctx: click.Context, limit: int, utility: str | None) -> None:
    """The validation and estimation runs, newest first."""
    from hub.cli import out

    with _store(ctx, utility) as (_, uow, utility_id, _code):
        found = uow.vee.runs(utility_id, limit)
    table = Table(
        "run",
        "kind",
        "started (UTC)",
        "scope",
        "from",
        "to",
        "meters",
        "readings",
        "findings",
        "failing",
    )
    for r in found:
        table.add_row(
            str(r.id),
            r.kind,
            _when(r.started_at),
            escape(r.scope),
            r.period_start.isoformat(),
            r.period_end.isoformat(),
            str(r.meters),
            str(r.readings),
            str(r.findings),
            str(r.failing_meters),
        )
    out.print(table)


@vee.command("findings")
@click.option("--run", "run_id", type=int, help="The run (default: the latest).")
@click.option("--rule", help="Only this rule's findings.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True
)
@utility_option
@click.pass_context
def findings(
    ctx: click.Context, run_id: int | None, rule: str | None, fmt: str, utility: str | None
) -> None:
    """The findings of a validation or estimation run (its result set)."""
    from hub.cli import console, out

    with _store(ctx, utility) as (_, uow, utility_id, _code):
        run = uow.vee.get(utility_id, run_id)
        if run is None:
            which = f"run {run_id}" if run_id is not None else "run yet"
            raise ConfigurationError(f"no validation {which} for this utility")
        rows = uow.vee.findings(run.id, rule)
        columns = [
            "run", "meter", "reading_type", "rule", "kind", "quality", "from", "to",
            "intervals", "value", "detail",
        ]  # fmt: skip
        if fmt == "csv":
            writer = csv.writer(sys.stdout)
            writer.writerow(columns)
            for f in rows:
                writer.writerow(_row(f))
            return
        table = Table(*columns[1:])
        shown = 0
        for f in rows:
            table.add_row(*(escape(v) for v in _row(f)[1:]))
            shown += 1
        out.print(table)
        what = "estimation" if run.kind == "estimate" else "validation"
        console.print(f"{shown} finding(s) of {what} run {run.id}")


def _row(f: Any) -> list[str]:
    return [
        str(f.run_id),
        f.device_mrid,
        f.reading_type,
        f.rule,
        f.kind,
        f.quality,
        f.ts.isoformat(),
        f.ts_end.isoformat(),
        str(f.intervals),
        "" if f.value is None else str(f.value),
        f.detail,
    ]


@vee.command("group")
@click.argument("name")
@click.option("--run", "run_id", type=int, required=True, help="The validation run.")
@click.option("--rule", help="Only the meters failing this rule.")
@click.option("--mrid", help="The group's mRID (default: its name).")
@click.option("--description", help="What the group is for.")
@utility_option
@click.pass_context
def group(
    ctx: click.Context,
    name: str,
    run_id: int,
    rule: str | None,
    mrid: str | None,
    description: str | None,
    utility: str | None,
) -> None:
    """Save the meters failing a run as end device group NAME (`amihub groups`)."""
    from hub.cli import console

    with _store(ctx, utility) as (app, uow, utility_id, _code):
        change = app.bus.handle(
            SaveFailingMeters(utility_id, run_id, mrid or name, name, rule, description),
            uow,
            _context(),
        )
        uow.commit()
    console.print(
        f"group {escape(change.group.describe())} created: {change.group.members} meter(s) "
        f"failing validation run {run_id}"
    )
