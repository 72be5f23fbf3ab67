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
from mdm.vee.commands import EstimateReadings, SaveFailingMeters, ValidateReadings
from mdm.vee.model import ValidationRun
from mdm.vee.rules import RuleKind, ValidationRule, check_reading_type, interval_seconds


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


def _check_period(cmd: ValidateReadings | EstimateReadings) -> None:
    if cmd.end <= cmd.start:
        raise PayloadInvalid(
            f"the period end {cmd.end.isoformat()} is not after its start {cmd.start.isoformat()}",
            code="2013",
        )


def _scope(
    uow: UnitOfWork, cmd: ValidateReadings | EstimateReadings
) -> tuple[int | None, int | None, str]:
    """The run's meter or group (resolved before anything is written) and its scope text."""
    if cmd.meter is not None:
        device = uow.devices.find(cmd.utility_id, cmd.meter)
        if device is None or device.id is None:
            raise ItemRejected("2001", f"unknown meter {cmd.meter}")
        return device.id, None, f"meter {device.mrid}"
    if cmd.group is not None:
        return None, _group_id(uow, cmd.utility_id, cmd.group, "--group"), f"group {cmd.group}"
    return None, None, "all meters"


def validate_readings(cmd: ValidateReadings, uow: UnitOfWork, ctx: HandlerContext) -> ValidationRun:
    _check_period(cmd)
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
    device_id, group_id, scope = _scope(uow, cmd)
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


def estimate_readings(cmd: EstimateReadings, uow: UnitOfWork, ctx: HandlerContext) -> ValidationRun:
    """One transaction: the run, the estimated readings and the findings of every gap
    (filled or not) are committed together or not at all."""
    _check_period(cmd)
    if cmd.max_intervals < 1:
        raise PayloadInvalid(
            f"the longest gap to estimate is {cmd.max_intervals} interval(s): at least 1",
            code="2013",
        )
    if cmd.history_weeks < 1:
        raise PayloadInvalid(f"history of {cmd.history_weeks} week(s): at least 1", code="2013")
    if not cmd.reading_types:
        raise ConfigurationError(
            "no reading type to estimate: name one (--reading-type), set "
            "vee.estimate_reading_types or configure a 'missing' rule"
        )
    steps: dict[str, int] = {}
    for code in dict.fromkeys(cmd.reading_types):
        problems = check_reading_type(RuleKind.MISSING, code, "reading type")
        step = interval_seconds(code) if not problems else None
        if step is None:
            why = "; ".join(problems).replace("a missing rule", "estimation")
            raise PayloadInvalid(why or f"reading type {code!r}: no measuring period", code="2013")
        steps[code] = step
    device_id, group_id, scope = _scope(uow, cmd)
    config: dict[str, object] = {
        "estimation": {
            "method": str(cmd.method),
            "max_intervals": cmd.max_intervals,
            "history_weeks": cmd.history_weeks,
            "time_zone": cmd.time_zone,
            "reading_types": list(steps),
        }
    }
    run_id = uow.vee.start_estimation(
        cmd.utility_id, cmd.start, cmd.end, scope, ctx.actor, ctx.now, config
    )
    meters = uow.vee.select_meters(cmd.utility_id, device_id, group_id)
    readings = uow.vee.count_readings(list(steps), cmd.start, cmd.end)
    estimated = 0
    for code, step in steps.items():
        count = uow.vee.estimate(
            run_id,
            code,
            step,
            cmd.method,
            cmd.max_intervals,
            cmd.start,
            cmd.end,
            ctx.now,
            cmd.history_weeks,
            cmd.time_zone,
            dict(cmd.registers).get(code),
        )
        estimated += count.readings
    run = uow.vee.finish(run_id, ctx.now, meters, readings, estimated)
    uow.audit.record(
        ctx.actor,
        "estimate",
        "ValidationRun",
        str(run_id),
        f"{scope}, ({cmd.start.isoformat()}, {cmd.end.isoformat()}], {cmd.method}: "
        f"{estimated} interval(s) estimated, {run.findings} finding(s)",
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
    EstimateReadings: estimate_readings,
    SaveFailingMeters: save_failing_meters,
}
