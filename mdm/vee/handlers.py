"""Handlers of the VEE commands (mdm/vee/commands.py).

A validation run is one transaction: the run row, every rule's findings and the new
versions of the flagged readings are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cim_schemas.errors import ConfigurationError, ItemRejected, PayloadInvalid
from mdm.group_commands import CreateEndDeviceGroup
from mdm.group_handlers import GroupChange, create_end_device_group
from mdm.handling import Handler, HandlerContext
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork
from mdm.vee.commands import SaveFailingMeters, ValidateReadings
from mdm.vee.model import ValidationRun
from mdm.vee.rules import ValidationRule


def _group_id(uow: UnitOfWork, utility_id: int, name: str, what: str) -> int:
    """An open end device group named by mRID, else by name."""
    group = uow.end_device_groups.find(utility_id, DeviceRef(mrid=name))
    if group is None:
        group = uow.end_device_groups.find(utility_id, DeviceRef(name=name))
    if group is None or group.id is None:
        raise ItemRejected("2008", f"{what}: no end device group {name!r}")
    if not group.is_open:
        raise ItemRejected("2009", f"{what}: end device group {group.describe()} is closed")
    return group.id


def resolve_rule_groups(
    uow: UnitOfWork, utility_id: int, rules: Sequence[ValidationRule]
) -> dict[str, int | None]:
    """Each rule's end device group id (None: no group); refused when one is unusable."""
    groups: dict[str, int | None] = {}
    for rule in rules:
        name = rule.scope.end_device_group
        what = f"vee rule {rule.name!r} end_device_group"
        groups[rule.name] = _group_id(uow, utility_id, name, what) if name else None
    return groups


def validate_readings(cmd: ValidateReadings, uow: UnitOfWork, ctx: HandlerContext) -> ValidationRun:
    if cmd.end <= cmd.start:
        raise PayloadInvalid(
            f"the period end {cmd.end.isoformat()} is not after its start {cmd.start.isoformat()}",
            code="2013",
        )
    known = {r.name for r in cmd.rules}
    unknown = [n for n in cmd.only if n not in known]
    if unknown:
        raise ConfigurationError(
            f"no [[vee.rules]] named {', '.join(repr(n) for n in unknown)} "
            f"(configured: {', '.join(sorted(known)) or 'none'})"
        )
    rules = [
        r
        for r in cmd.rules
        if r.applies_to(cmd.utility_code) and (not cmd.only or r.name in cmd.only)
    ]
    if not rules:
        raise ConfigurationError(
            f"no enabled [[vee.rules]] apply to utility {cmd.utility_code!r}: nothing to validate"
        )
    device_id = group_id = None
    scope = "all meters"
    if cmd.meter is not None:
        device = uow.devices.find(cmd.utility_id, cmd.meter)
        if device is None or device.id is None:
            raise ItemRejected("2001", f"unknown meter {cmd.meter}")
        device_id, scope = device.id, f"meter {device.mrid}"
    elif cmd.group is not None:
        group_id = _group_id(uow, cmd.utility_id, cmd.group, "--group")
        scope = f"group {cmd.group}"
    # every rule's group is resolved before anything is written
    rule_groups = resolve_rule_groups(uow, cmd.utility_id, rules)
    run_id = uow.vee.start_run(cmd.utility_id, cmd.start, cmd.end, scope, ctx.actor, ctx.now, rules)
    meters = uow.vee.select_meters(cmd.utility_id, device_id, group_id)
    for rule in rules:
        uow.vee.validate(run_id, rule, cmd.start, cmd.end, ctx.now, rule_groups[rule.name])
    readings = uow.vee.count_readings(
        list(dict.fromkeys(r.reading_type for r in rules)), cmd.start, cmd.end
    )
    marked = uow.vee.mark(run_id, ctx.now)
    run = uow.vee.finish(run_id, ctx.now, meters, readings, marked)
    uow.audit.record(
        ctx.actor,
        "validate",
        "ValidationRun",
        str(run_id),
        f"{scope}, ({cmd.start.isoformat()}, {cmd.end.isoformat()}]: {run.readings} reading(s), "
        f"{run.findings} finding(s), {run.failing_meters} meter(s) failing",
    )
    return run


def save_failing_meters(
    cmd: SaveFailingMeters, uow: UnitOfWork, ctx: HandlerContext
) -> GroupChange:
    run = uow.vee.get(cmd.utility_id, cmd.run_id)
    if run is None:
        raise ItemRejected("2008", f"no validation run {cmd.run_id}")
    mrids = uow.vee.failing_meters(cmd.run_id, cmd.rule)
    if not mrids:
        what = f" of rule {cmd.rule!r}" if cmd.rule else ""
        raise ItemRejected("2008", f"validation run {cmd.run_id} has no findings{what}: no group")
    rule = f", rule {cmd.rule}" if cmd.rule else ""
    description = cmd.description or (
        f"meters failing validation run {cmd.run_id}{rule} "
        f"({run.period_start.isoformat()}, {run.period_end.isoformat()}]"
    )
    return create_end_device_group(
        CreateEndDeviceGroup(
            cmd.utility_id,
            cmd.mrid,
            cmd.name,
            description,
            tuple(DeviceRef(mrid=m) for m in mrids),
        ),
        uow,
        ctx,
    )


VEE_HANDLERS: dict[type[Any], Handler] = {
    ValidateReadings: validate_readings,
    SaveFailingMeters: save_failing_meters,
}
