"""The ``amihub`` command line: operators' entry to the hub, store and demo."""

from __future__ import annotations

import contextlib
import csv
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cim_schemas.errors import AmihubError, ConfigurationError
from hub.console import make_console
from hub.settings import Settings, load_settings

console = make_console(stderr=True)
out = make_console()
log = logging.getLogger("amihub.cli")


def _setup_logging(level: str, log_format: str = "text") -> None:
    from hub.logs import setup_logging

    setup_logging(level, log_format)


@contextmanager
def _app(ctx: click.Context, *, migrate: bool = False) -> Iterator[Any]:
    from hub.bootstrap import bootstrap

    settings: Settings = ctx.obj["settings"]
    app = bootstrap(settings, migrate=migrate)
    try:
        yield app
    finally:
        app.close()


class _CompositionRoot:
    """hub.bootstrap, imported when a command asks it for its wiring (the head-end's
    commands: adapters/dlms/wiring.py), not before (it imports the store's driver)."""

    def __getattr__(self, name: str) -> Any:
        import hub.bootstrap

        return getattr(hub.bootstrap, name)


def _parse_when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time", param_hint=option
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise click.BadParameter(
            f"{value!r} is outside the calendar once converted to UTC", param_hint=option
        ) from None
    return when


#: commands that live with their package, imported only when used (gurux, paramiko...):
#: a click command, or a function of the composition root returning one (the commands
#: that live in adapters: the root imports them)
LAZY_COMMANDS: dict[str, str] = {
    "engine": "hub.bootstrap:engine_command",
    "hes": "hes.cli:hes",
    "simulate": "hes.cli:simulate",
    "keys": "hub.bootstrap:keys_command",
    "groups": "hub.groups_cli:groups",
    "vee": "hub.vee_cli:vee",
}


class AmihubGroup(click.Group):
    """Loads package commands lazily; turns amihub errors into one clear line and
    exit code 2, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib

            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command) and callable(command):
                command = command()  # the root's function for an adapter's command
            if not isinstance(command, click.Command):
                raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:  # a value of an option: one line, as for errors
            fail(exc.format_message())
        except (click.exceptions.Exit, click.ClickException, click.Abort, BrokenPipeError):
            raise  # click's own exits and usage errors (exit 2); a closed pipe: main()
        except AmihubError as exc:
            fail(str(exc))
        except OSError as exc:  # a file or folder that is not there, a port in use, ...
            fail(_os_error(exc))
        except Exception as exc:
            crashed(exc)


def fail(message: str, code: int = 2) -> NoReturn:
    """The project's errors: one clear line on stderr, exit code 2, never a traceback."""
    console.print(f"[red]error:[/red] {escape(message)}")  # "[hes] ..." shown as is
    sys.exit(code)


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {what}"
    return what


def crashed(exc: BaseException) -> NoReturn:
    """An unexpected error (a defect): one line, exit code 3, the traceback in a log file
    the line names (and in the log at DEBUG)."""
    import tempfile
    import traceback

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    detail = "".join(traceback.format_exception(exc))
    where = "the log (at DEBUG)"
    try:
        fd, name = tempfile.mkstemp(prefix=f"amihub-crash-{stamp}-", suffix=".log")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(f"amihub {_version()} {' '.join(sys.argv)}\n{detail}")
        where = name
    except OSError:
        pass
    log.debug("internal error:\n%s", detail)
    summary = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    console.print(
        f"[red]internal error:[/red] {escape(summary)} (a defect; the traceback is in {where})"
    )
    sys.exit(3)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amihub")
    except PackageNotFoundError:
        return "unknown"


@click.group(cls=AmihubGroup)
@click.version_option(package_name="amihub", prog_name="amihub", message="%(prog)s %(version)s")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: amihub.toml, or $AMIHUB_CONFIG).",
)
@click.option(
    "--database-url",
    envvar="AMIHUB_DATABASE_URL",
    help="SQLAlchemy URL of the store (default sqlite:///amihub.db).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None, database_url: str | None) -> None:
    """amihub: smart-metering head-end, meter data management and IEC 61968-9 hub."""
    import os

    if config is not None:
        if not config.exists():
            raise ConfigurationError(f"settings file {config} does not exist")
        os.environ["AMIHUB_CONFIG"] = str(config)
    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    settings = load_settings(**overrides)
    _setup_logging(settings.log_level, settings.log_format)
    ctx.obj = {"settings": settings, "root": _CompositionRoot()}


@cli.group()
def db() -> None:
    """The meter data store."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the store's tables to the newest revision."""
    from hub.bootstrap import store_revision

    with _app(ctx, migrate=True) as app:
        console.print(f"store at revision {store_revision(app.settings)}")


@cli.command("import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--source",
    default="cli",
    show_default=True,
    help="Sender name recorded in the message log (idempotency is per source).",
)
@click.option("--utility", help="Utility code (default: the configured default utility).")
@click.option(
    "--mapping",
    help="Name of an inbound mapping (CSV, custom XML, event log) for non-CIM files; "
    "see `amihub mappings list`.",
)
@click.pass_context
def import_(
    ctx: click.Context,
    files: tuple[Path, ...],
    source: str,
    utility: str | None,
    mapping: str | None,
) -> None:
    """Import CIM XML request or event messages (MeterReadings, master data), or any
    file with --mapping. Each file is applied whole or not at all."""
    from hub.messages import InboundMessage

    if mapping is not None:
        _import_mapped(ctx, files, mapping, utility, source)
        return
    failed = 0
    table = Table(
        "file", "verb noun", "result", "readings", "stored", "superseded", "unchanged", "errors"
    )
    with (
        _app(ctx, migrate=True) as app,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("importing", total=len(files))
        for path in files:
            progress.update(task, description=f"importing {path.name}")
            outcome = app.pipeline.process(
                InboundMessage(
                    source=source, endpoint="cli:import", path=path.resolve(), utility=utility
                )
            )
            c = outcome.counts
            table.add_row(
                path.name,
                f"{outcome.verb or '?'} {outcome.noun or '?'}",
                outcome.result,
                str(c.get("readings", "")),
                str(c.get("stored", "")),
                str(c.get("superseded", "")),
                str(c.get("unchanged", "")),
                "\n".join(f"{e.code} {e.xpath or ''} {e.reason}" for e in outcome.errors[:5]),
            )
            failed += outcome.result != "OK"
            progress.advance(task)
    out.print(table)
    if failed:
        console.print(
            f"[yellow]{failed} of {len(files)} file(s) not fully applied; "
            "see `amihub dead-letters list`[/yellow]"
        )
        sys.exit(1)


def _catalog(settings: Settings) -> Any:
    from mappings.load import BUILTIN_DIR, load_dir

    return load_dir(settings.mappings_dir or BUILTIN_DIR)


def _import_mapped(
    ctx: click.Context, files: tuple[Path, ...], mapping: str, utility: str | None, source: str
) -> None:
    from mappings.importer import ImportFile, ImportProgress, apply_file, import_file

    settings: Settings = ctx.obj["settings"]
    catalog = _catalog(settings)
    failed = 0
    table = Table(
        "file",
        "mapping",
        "status",
        "lines",
        "readings",
        "stored",
        "superseded",
        "unchanged",
        "errors",
    )
    with (
        _app(ctx, migrate=True) as app,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        for path in files:
            task = progress.add_task(f"importing {path.name}", total=path.stat().st_size)

            def advance(p: ImportProgress, task: Any = task) -> None:
                progress.update(task, completed=p.bytes_read)

            command = ImportFile(path, mapping, utility or settings.default_utility, source)
            result: Any
            if getattr(catalog.specs.get(mapping), "kind", None) in ("csv-events", "xml-events"):
                result = apply_file(app.uow_factory, command, catalog, bus=app.bus)
            else:
                result = import_file(
                    app.uow_factory, command, catalog, bus=app.bus, progress=advance
                )
            stats = getattr(result, "stats", None)
            errors = result.report().splitlines()
            table.add_row(
                path.name,
                mapping,
                result.status,
                str(getattr(result, "lines", "")),
                str(getattr(result, "readings", "")),
                str(stats.stored if stats else ""),
                str(stats.superseded if stats else ""),
                str(stats.unchanged if stats else ""),
                "\n".join(line.strip() for line in errors if line.startswith("  "))[:800],
            )
            failed += not result.applied
    out.print(table)
    if failed:
        console.print(
            f"[yellow]{failed} of {len(files)} file(s) rejected: nothing of them "
            "was applied[/yellow]"
        )
        sys.exit(1)


@cli.group()
def mappings() -> None:
    """Declarative mappings for CSV, custom XML and exports."""


@mappings.command("check")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def mappings_check(folder: Path) -> None:
    """Validate every mapping spec of a folder; problems name file, line and key."""
    from mappings.check import check_dir

    problems = check_dir(folder)
    for problem in problems:
        out.print(problem, markup=False)
    if problems:
        sys.exit(1)
    out.print(f"{folder}: all mapping specs are valid")


@mappings.command("list")
@click.pass_context
def mappings_list(ctx: click.Context) -> None:
    """The mappings in use (the configured folder, or the shipped examples)."""
    catalog = _catalog(ctx.obj["settings"])
    table = Table("name", "kind", "description")
    for spec in sorted(catalog.specs.values(), key=lambda x: x.name):
        table.add_row(spec.name, spec.kind, getattr(spec, "description", "") or "")
    out.print(table)


@cli.command()
@click.option("--mapping", required=True, help="Name of an export mapping (CSV or XML layout).")
@click.option(
    "--usage-point",
    "usage_points",
    multiple=True,
    help="Usage point mRID (repeatable).",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Usage point group = transformer area (repeatable); default: the mapping's "
    "select.usage_point_groups when no usage point is named.",
)
@click.option("--from", "start", help="Start (ISO 8601; UTC if no offset), exclusive.")
@click.option("--to", "end", help="End (ISO 8601; UTC if no offset), inclusive.")
@click.option("--reading-type", "reading_types", multiple=True, help="ReadingType filter.")
@click.option("--utility", help="Utility code (default: the configured default utility).")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (written under a temporary name, then renamed).",
)
@click.option(
    "--push",
    "push_to",
    metavar="TARGET",
    help="Then push the file to this [[sftp.push_targets]] entry (a partner's SFTP server).",
)
@click.pass_context
def export(
    ctx: click.Context,
    mapping: str,
    usage_points: tuple[str, ...],
    groups: tuple[str, ...],
    start: str | None,
    end: str | None,
    reading_types: tuple[str, ...],
    utility: str | None,
    out_path: Path,
    push_to: str | None,
) -> None:
    """Export readings of usage points or usage point groups with an export mapping
    (the Data File Tool); with --push, deliver the file to a partner's SFTP server."""
    from mappings.export import rows_from_store, write_export

    settings: Settings = ctx.obj["settings"]
    target = settings.sftp.push_target(push_to) if push_to is not None else None
    catalog = _catalog(settings)
    spec = catalog.export(mapping)
    if not usage_points and not groups:
        groups = tuple(spec.select.usage_point_groups)
    if not usage_points and not groups:
        raise click.UsageError(
            f"name --usage-point or --group (the mapping {mapping!r} selects no usage_point_groups)"
        )
    if not out_path.parent.is_dir():
        raise click.BadParameter(f"the folder {out_path.parent} does not exist", param_hint="--out")
    what = ", ".join([*usage_points, *(f"group {g}" for g in groups)])
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with (
        _app(ctx) as app,
        app.uow_factory() as uow,
        Progress(
            TextColumn("{task.description}"),
            TextColumn("{task.completed} rows"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task(f"exporting {what}", total=None)

        def counted(rows: Any) -> Any:
            for n, row in enumerate(rows, 1):
                if n % 5000 == 0:
                    progress.update(task, completed=n)
                yield row

        rows = rows_from_store(
            uow,
            utility or settings.default_utility,
            usage_points=list(usage_points),
            usage_point_groups=list(groups),
            start=_parse_when(start, "--from"),
            end=_parse_when(end, "--to"),
            reading_types=list(reading_types) or None,
        )
        try:
            with tmp.open("wb") as f:
                written = write_export(spec, counted(rows), f, tables=catalog.tables)
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing half-written is left behind
            raise
    tmp.replace(out_path)
    out.print(f"{written} row(s) written to {out_path}")
    if target is not None:
        _push_export(ctx, target, out_path)


def _push_export(ctx: click.Context, target: Any, path: Path) -> None:
    """Push an export to a configured target and record the receipt in the audit log."""
    from hub.bootstrap import push_export

    with console.status(f"pushing {path.name} to {target.name}"):
        receipt = push_export(target, path)
    with _app(ctx) as app, app.uow_factory() as uow:
        app.message_journal.audit(
            uow,
            "cli",
            "sftp-push",
            "PushTarget",
            target.name,
            f"{receipt.remote_path} on {receipt.target}: {receipt.size} bytes, "
            f"sha256 {receipt.sha256}, {receipt.attempts} attempt(s)",
        )
        uow.commit()
    out.print(
        f"pushed to {target.name} ({receipt.target}): {receipt.remote_path}, "
        f"{receipt.size} bytes, sha256 {receipt.sha256}"
    )


@cli.command()
@click.option("--meter", "meters", multiple=True, required=True, help="Meter mRID (repeatable).")
@click.option("--from", "start", help="Start (ISO 8601; UTC if no offset).")
@click.option("--to", "end", help="End (ISO 8601; UTC if no offset).")
@click.option("--reading-type", "reading_types", multiple=True, help="ReadingType code filter.")
@click.option("--utility", help="Utility code (default: the configured default utility).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv"]), default="table", show_default=True
)
@click.pass_context
def readings(
    ctx: click.Context,
    meters: tuple[str, ...],
    start: str | None,
    end: str | None,
    reading_types: tuple[str, ...],
    utility: str | None,
    fmt: str,
) -> None:
    """Show stored readings of meters (current versions)."""
    from mdm.commands import QueryMeterReadings
    from mdm.handlers import HandlerContext, ReadingQueryResult
    from mdm.model import DeviceRef
    from mdm.qualities import NOTES, codes_of

    with _app(ctx) as app, app.uow_factory() as uow:
        code = utility or app.settings.default_utility
        util = uow.utilities.get(code)
        if util is None or util.id is None:
            raise ConfigurationError(f"unknown utility {code!r}")
        result: ReadingQueryResult = app.bus.handle(
            QueryMeterReadings(
                util.id,
                meters=tuple(DeviceRef(mrid=m) for m in meters),
                reading_types=reading_types,
                start=_parse_when(start, "--from"),
                end=_parse_when(end, "--to"),
            ),
            uow,
            HandlerContext(actor="cli", now=datetime.now(UTC)),
        )
        for ref in result.unknown_meters:
            console.print(f"[yellow]unknown meter {ref}[/yellow]")
        if fmt == "csv":
            writer = csv.writer(sys.stdout)
            writer.writerow(
                ["meter", "reading_type", "timestamp", "value", "quality", "version", "notes"]
            )
            # the rows stream from an open cursor: closed here, before the store, also when
            # the reader goes away (``| head``: BrokenPipeError)
            rows = result.readings
            try:
                for r in rows:
                    codes, _, notes = r.quality.partition(NOTES)  # mdm/qualities.py
                    row = [r.device_mrid, r.reading_type, r.ts.isoformat(), r.value, codes]
                    writer.writerow([*row, r.version, notes])
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()
            return
        table = Table("meter", "reading type", "timestamp (UTC)", "value", "quality", "v")
        shown = 0
        for r in result.readings:
            table.add_row(
                r.device_mrid,
                r.reading_type,
                r.ts.isoformat(),
                str(r.value),
                codes_of(r.quality),
                str(r.version),
            )
            shown += 1
        out.print(table)
        console.print(f"{shown} reading(s)")


@cli.group("dead-letters")
def dead_letters() -> None:
    """Inputs that failed permanently, kept whole for an operator."""


@dead_letters.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved ones.")
@click.option("--limit", default=100, show_default=True)
@click.pass_context
def dead_letters_list(ctx: click.Context, include_resolved: bool, limit: int) -> None:
    """List dead letters, newest first."""
    with _app(ctx) as app, app.uow_factory() as uow:
        rows = uow.dead_letters.list(include_resolved=include_resolved, limit=limit)
    table = Table(
        "id", "received (UTC)", "source", "endpoint", "code", "reason", "replays", "resolved"
    )
    for d in rows:
        table.add_row(
            str(d.id),
            d.received_at.isoformat(timespec="seconds"),
            d.source,
            d.endpoint,
            d.error_code,
            d.reason[:100],
            str(d.replay_count),
            d.resolved_at.isoformat(timespec="seconds") if d.resolved_at else "",
        )
    out.print(table)


@dead_letters.command("show")
@click.argument("dead_letter_id", type=int)
@click.option("--body/--no-body", default=True, help="Print the kept input.")
@click.pass_context
def dead_letters_show(ctx: click.Context, dead_letter_id: int, body: bool) -> None:
    """Show one dead letter and its kept input."""
    with _app(ctx) as app, app.uow_factory() as uow:
        d = uow.dead_letters.get(dead_letter_id)
        lifecycle = uow.messages.lifecycle(d.message_log_id) if d and d.message_log_id else []
    if d is None:
        raise ConfigurationError(f"no dead letter {dead_letter_id}")
    out.print(f"dead letter {d.id}: {d.error_code} {d.reason}")
    out.print(f"source {d.source}  endpoint {d.endpoint}  received {d.received_at.isoformat()}")
    out.print(f"metadata {d.metadata}  replays {d.replay_count}  resolved {d.resolved_at}")
    for state, at, detail in lifecycle:
        out.print(f"  {at.isoformat()}  {state}  {detail or ''}")
    if body:
        note = " (truncated: the original was larger)" if d.truncated else ""
        out.print(f"--- input, {len(d.body)} bytes{note} ---")
        sys.stdout.flush()
        sys.stdout.buffer.write(d.body + b"\n")


@dead_letters.command("replay")
@click.argument("dead_letter_id", type=int)
@click.pass_context
def dead_letters_replay(ctx: click.Context, dead_letter_id: int) -> None:
    """Run a dead letter through the pipeline again (after fixing its cause)."""
    from hub.replay import replay

    with _app(ctx) as app:
        outcome = replay(app, dead_letter_id)
    out.print(f"replay of dead letter {dead_letter_id}: {outcome.result}")
    for e in outcome.errors:
        out.print(f"  {e.code} {e.xpath or ''} {e.reason}")
    if outcome.result != "OK":
        sys.exit(1)


@cli.command()
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes; AMQP consumers share the request queue (see docs/amqp.md).",
)
@click.pass_context
def serve(ctx: click.Context, workers: int) -> None:
    """Run the adapters enabled in the settings until stopped (SIGINT/SIGTERM)."""
    from hub.serve import run_services

    with _app(ctx, migrate=True) as app:
        if workers > 1:
            from hub.bootstrap import serve_workers

            sys.exit(serve_workers(workers, {"AMIHUB_DATABASE_URL": app.settings.database_url}))
        run_services(app)


@cli.command()
@click.option("--meters", default=6, show_default=True, help="How many meters.")
@click.option("--days", default=30, show_default=True, help="Days of 15-minute data.")
@click.option(
    "--database-url",
    "demo_url",
    default=None,
    help="Store for the demo (default: a fresh SQLite file amihub-demo.db).",
)
@click.pass_context
def demo(ctx: click.Context, meters: int, days: int, demo_url: str | None) -> None:
    """The embedded default end to end: utility, usage points, meters, a month of data."""
    from hub.demo import run_demo

    run_demo(
        ctx.obj["settings"],
        meters=meters,
        days=days,
        database_url=demo_url,
        console=out,
        progress_console=console,
    )


def main() -> None:
    """The ``amihub`` script. Errors are one line (exit 2; a defect: exit 3, see
    :func:`crashed`); output piped into a reader that stops early (``| head``) ends
    quietly."""
    try:
        cli.main(prog_name="amihub")
    except BrokenPipeError:
        _quiet_pipe()
        sys.exit(1)
    except AmihubError as exc:  # raised outside a command (e.g. while parsing arguments)
        fail(str(exc))
    except Exception as exc:
        crashed(exc)
    finally:
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            _quiet_pipe()


def _quiet_pipe() -> None:
    """The reader closed the pipe: send what is still buffered to /dev/null, so that
    Python's flush at exit does not print a traceback either."""
    import os

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    main()
