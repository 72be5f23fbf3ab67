"""``amihub groups``: end device groups (named groups of meters) for operators.

A meters file holds one meter a line: its mRID, name or serial number; blank lines
and lines starting with ``#`` are skipped. A file naming a meter the utility does not
know changes nothing: every such line is listed (file:line) and the command exits 2.
A group is named by its mRID or its name. The commands run through the bus of the app
the bootstrap builds (``hub.cli._app``), as every other command does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from cim_schemas.errors import ConfigurationError, ItemRejected
from mdm.group_commands import (
    AddGroupMembers,
    CloseEndDeviceGroup,
    CreateEndDeviceGroup,
    RemoveGroupMembers,
)
from mdm.group_handlers import GroupChange
from mdm.groups import EndDeviceGroup
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork

if TYPE_CHECKING:
    from hub.bootstrap import App


@contextmanager
def _store(ctx: click.Context, utility: str | None) -> Iterator[tuple[App, UnitOfWork, int]]:
    from hub.cli import _app

    with _app(ctx) as app, app.uow_factory() as uow:
        code = utility or app.settings.default_utility
        found = uow.utilities.get(code)
        if found is None or found.id is None:
            raise ConfigurationError(f"unknown utility {code!r}")
        yield app, uow, found.id


def _context() -> HandlerContext:
    import getpass

    return HandlerContext(actor=f"cli:{getpass.getuser()}", now=datetime.now(UTC))


def read_meters_file(path: Path) -> list[tuple[int, str]]:
    """(line number, meter) for each meter line of the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not UTF-8 text: {exc}", param_hint="--meters-file"
        ) from None
    meters = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if value and not value.startswith("#"):
            meters.append((number, value))
    return meters


def _resolve(
    uow: UnitOfWork, utility_id: int, meters_file: Path | None, meters: tuple[str, ...]
) -> tuple[DeviceRef, ...]:
    """The meters named (mRID first, else name or serial number), as mRID references;
    any unknown one: listed with where it was named, and exit 2 (nothing applied)."""
    named: list[tuple[str, str]] = [("--meter", m) for m in meters]
    if meters_file is not None:
        named += [(f"{meters_file}:{n}", m) for n, m in read_meters_file(meters_file)]
    if not named:
        return ()
    values = list(dict.fromkeys(m for _, m in named))
    by_mrid = uow.devices.find_many(utility_id, [DeviceRef(mrid=v) for v in values])
    rest = [v for v in values if DeviceRef(mrid=v) not in by_mrid]
    by_name = uow.devices.find_many(utility_id, [DeviceRef(name=v) for v in rest])
    found: dict[str, str] = {}
    for v in values:
        device = by_mrid.get(DeviceRef(mrid=v)) or by_name.get(DeviceRef(name=v))
        if device is not None:
            found[v] = device.mrid
    unknown = [(where, m) for where, m in named if m not in found]
    if unknown:
        from hub.cli import console

        for where, meter in unknown:
            console.print(f"{escape(where)}: unknown meter {escape(meter)}")
        console.print(
            f"[red]error:[/red] {len(unknown)} unknown meter(s) (not a meter mRID, name or "
            "serial number of the utility): nothing changed"
        )
        sys.exit(2)
    return tuple(DeviceRef(mrid=m) for m in dict.fromkeys(found[v] for v in values))


def _group(uow: UnitOfWork, utility_id: int, group: str) -> DeviceRef:
    """A group by mRID, else by name (the open one of that name)."""
    if uow.end_device_groups.find(utility_id, DeviceRef(mrid=group)) is not None:
        return DeviceRef(mrid=group)
    return DeviceRef(name=group)


def _print_change(verb: str, change: GroupChange) -> None:
    from hub.cli import console

    g = change.group
    parts = [f"{change.added} added"] if verb in ("created", "changed") else []
    if verb == "changed" or change.removed:
        parts.append(f"{change.removed} removed")
    if change.unchanged:
        parts.append(f"{change.unchanged} unchanged")
    detail = f": {', '.join(parts)}" if parts else ""
    console.print(f"group {escape(g.describe())} {verb}{detail}; {g.members} meter(s)")


meters_file_option = click.option(
    "--meters-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Meters, one a line (mRID, name or serial number; # comments).",
)
meter_option = click.option("--meter", "meters", multiple=True, help="A meter (repeatable).")
utility_option = click.option(
    "--utility", help="Utility code (default: the configured default utility)."
)


@click.group()
def groups() -> None:
    """End device groups: named groups of meters, targets of controls and reads."""


@groups.command("create")
@click.argument("name")
@click.option("--mrid", help="The group's mRID (default: its name).")
@click.option("--description", help="What the group is for.")
@meters_file_option
@meter_option
@utility_option
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    mrid: str | None,
    description: str | None,
    meters_file: Path | None,
    meters: tuple[str, ...],
    utility: str | None,
) -> None:
    """Create group NAME with the meters of --meters-file / --meter."""
    with _store(ctx, utility) as (app, uow, utility_id):
        members = _resolve(uow, utility_id, meters_file, meters)
        change = app.bus.handle(
            CreateEndDeviceGroup(utility_id, mrid or name, name, description, members),
            uow,
            _context(),
        )
        uow.commit()
    _print_change("created", change)


@groups.command("add")
@click.argument("group")
@meters_file_option
@meter_option
@utility_option
@click.pass_context
def add(
    ctx: click.Context,
    group: str,
    meters_file: Path | None,
    meters: tuple[str, ...],
    utility: str | None,
) -> None:
    """Add meters to GROUP (mRID or name); members already in it are left as they are."""
    _change_members(ctx, AddGroupMembers, group, meters_file, meters, utility)


@groups.command("remove")
@click.argument("group")
@meters_file_option
@meter_option
@utility_option
@click.pass_context
def remove(
    ctx: click.Context,
    group: str,
    meters_file: Path | None,
    meters: tuple[str, ...],
    utility: str | None,
) -> None:
    """Remove meters from GROUP (mRID or name)."""
    _change_members(ctx, RemoveGroupMembers, group, meters_file, meters, utility)


def _change_members(
    ctx: click.Context,
    command: type[AddGroupMembers] | type[RemoveGroupMembers],
    group: str,
    meters_file: Path | None,
    meters: tuple[str, ...],
    utility: str | None,
) -> None:
    with _store(ctx, utility) as (app, uow, utility_id):
        members = _resolve(uow, utility_id, meters_file, meters)
        if not members:
            raise click.UsageError("name meters with --meters-file or --meter")
        change = app.bus.handle(
            command(utility_id, _group(uow, utility_id, group), members), uow, _context()
        )
        uow.commit()
    _print_change("changed", change)


@groups.command("close")
@click.argument("group")
@utility_option
@click.pass_context
def close(ctx: click.Context, group: str, utility: str | None) -> None:
    """Close GROUP: kept with its members, no longer a target; its name is free again."""
    with _store(ctx, utility) as (app, uow, utility_id):
        change = app.bus.handle(
            CloseEndDeviceGroup(utility_id, _group(uow, utility_id, group)), uow, _context()
        )
        uow.commit()
    _print_change("closed", change)


@groups.command("list")
@click.option("--all", "include_closed", is_flag=True, help="Include closed groups.")
@utility_option
@click.pass_context
def list_(ctx: click.Context, include_closed: bool, utility: str | None) -> None:
    """The groups, with their member counts."""
    from hub.cli import console, out

    with _store(ctx, utility) as (_, uow, utility_id):
        found = uow.end_device_groups.list(utility_id, include_closed=include_closed)
    table = Table("mRID", "name", "meters", "created (UTC)", "closed (UTC)", "description")
    for g in found:
        table.add_row(
            escape(g.mrid),
            escape(g.name),
            str(g.members),
            _when(g.created_at),
            _when(g.closed_at),
            escape(g.description or ""),
        )
    out.print(table)
    console.print(f"{len(found)} group(s)")


@groups.command("show")
@click.argument("group")
@utility_option
@click.pass_context
def show(ctx: click.Context, group: str, utility: str | None) -> None:
    """GROUP (mRID or name) and its meters, one mRID a line on stdout."""
    from hub.cli import console

    with _store(ctx, utility) as (_, uow, utility_id):
        found = uow.end_device_groups.find(utility_id, _group(uow, utility_id, group))
        if found is None or found.id is None:
            raise ItemRejected("2008", f"no end device group {group!r}")
        members = uow.end_device_groups.members(found.id)
    _describe(console, found)
    for mrid in members:
        click.echo(mrid)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at is not None else ""


def _describe(console: Any, g: EndDeviceGroup) -> None:
    state = f"closed {_when(g.closed_at)}" if g.closed_at is not None else "open"
    console.print(f"group {escape(g.describe())}: {state}, {g.members} meter(s)")
    if g.description:
        console.print(f"  {escape(g.description)}")
