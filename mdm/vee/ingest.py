"""Validation on ingest: the rules enabled for a source run over what a feed touched.

``mdm.handlers.store_meter_readings`` (the one way readings go in) stores the feed, then,
in the same transaction, runs the rules enabled on ingest for the feed's source (the
``HandlerContext.source``: soap, amqp, sftp, import, headend, push) over the meters and
reading types the feed wrote, for the period its readings span: a run with trigger
``ingest``, its findings and the qualities put on the readings exactly as an on-demand
run over the same period and meters (the same store methods). Findings never refuse a
reading: the readings are stored first, whatever validation finds.

The touched ranges are collected as the store reads the feed, a block at a time: each
block's first and last instant (``min``/``max`` over its tuples, in C), its meter and
reading type; no reading becomes a Python object here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cim_schemas.errors import ItemRejected
from mdm.model import DeviceRef
from mdm.ports import ReadingFeed, ReadingFeedChunk, UnitOfWork
from mdm.vee.model import ValidationRun
from mdm.vee.rules import ValidationRule

log = logging.getLogger("amihub.vee")

#: where readings come in (``HandlerContext.source``)
INGEST_SOURCES = ("soap", "amqp", "sftp", "import", "headend", "push")

#: (utility code, source) -> the rules to run on ingest (enabled, applying to the utility)
IngestRules = Callable[[str, str], tuple[ValidationRule, ...]]

_PREFIXES = {
    "soap": "soap",
    "amqp": "amqp",
    "sftp": "sftp",
    "cli": "import",
    "headend": "headend",
    "push": "push",
}


def ingest_source(endpoint: str) -> str:
    """The source of an endpoint or sender name (``soap:/ws/..`` -> soap, ``amqp:q`` ->
    amqp, ``sftp:user/inbox`` -> sftp, ``cli:import`` -> import); '' when none."""
    head = endpoint.split(":", 1)[0]
    return _PREFIXES.get(head, "")


@dataclass
class Touched:
    """What a feed wrote: per meter item and reading type, its first and last instant."""

    ranges: dict[tuple[int, str], tuple[datetime, datetime]] = field(default_factory=dict)
    meters: dict[int, DeviceRef] = field(default_factory=dict)

    def add(self, chunk: ReadingFeedChunk) -> None:
        for meter in chunk.meters:
            self.meters[meter.item] = meter.ref
        ranges = self.ranges
        for block in chunk.blocks:
            if not block.readings:
                continue
            first, last = min(block.readings)[0], max(block.readings)[0]
            key = (block.item, block.reading_type)
            seen = ranges.get(key)
            if seen is not None:
                first, last = min(first, seen[0]), max(last, seen[1])
            ranges[key] = (first, last)


class TouchedFeed:
    """A feed that notes what the store reads of it (each time it is opened: the same)."""

    def __init__(self, feed: ReadingFeed, touched: Touched) -> None:
        self._feed = feed
        self.touched = touched
        self.rereadable = feed.rereadable
        self.queries_store = feed.queries_store

    def open(self) -> Iterator[ReadingFeedChunk]:
        for chunk in self._feed.open():
            self.touched.add(chunk)
            yield chunk


#: a period ``(start, end]`` begins just before the first instant written
_BEFORE = timedelta(microseconds=1)
#: more distinct periods than this in one feed: validated as one, their union
MAX_PERIODS = 16


def _periods(
    by_meter: dict[tuple[DeviceRef, str], tuple[datetime, datetime]], types: tuple[str, ...]
) -> dict[tuple[datetime, datetime], list[DeviceRef]]:
    """The meters that wrote one of ``types``, grouped by the period ``(start, end]``
    their readings of those types span; more than MAX_PERIODS periods: one, the union."""
    spans: dict[DeviceRef, tuple[datetime, datetime]] = {}
    for (ref, rt), (first, last) in by_meter.items():
        if rt in types:
            seen = spans.get(ref)
            spans[ref] = (min(first, seen[0]), max(last, seen[1])) if seen else (first, last)
    groups: dict[tuple[datetime, datetime], list[DeviceRef]] = {}
    for ref, (first, last) in spans.items():
        groups.setdefault((first - _BEFORE, last), []).append(ref)
    if len(groups) > MAX_PERIODS:
        start = min(s for s, _ in groups)
        end = max(e for _, e in groups)
        return {(start, end): list(spans)}
    return groups


def _utility_code(uow: UnitOfWork, utility_id: int) -> str | None:
    return next((u.code for u in uow.utilities.list() if u.id == utility_id), None)


def validate_on_ingest(
    uow: UnitOfWork,
    actor: str,
    now: datetime,
    source: str,
    utility_id: int,
    touched: Touched,
    unknown_items: list[int],
    ingest_rules: IngestRules,
) -> ValidationRun | None:
    """Run the rules enabled on ingest for ``source`` over what was written; None when
    none apply or nothing was written."""
    code = _utility_code(uow, utility_id)
    if code is None or not touched.ranges:
        return None
    unknown = set(unknown_items)
    ranges = {k: v for k, v in touched.ranges.items() if k[0] not in unknown}
    types = {rt for _, rt in ranges}
    rules = [
        r
        for r in ingest_rules(code, source)
        if r.applies_to(code) and (r.reading_type in types or r.profile_reading_type in types)
    ]
    if not rules:
        return None
    # per meter and reading type, the instants written (items naming one meter merged)
    by_meter: dict[tuple[DeviceRef, str], tuple[datetime, datetime]] = {}
    for (item, rt), (first, last) in ranges.items():
        ref = touched.meters.get(item)
        if ref is None:
            continue
        seen = by_meter.get((ref, rt))
        by_meter[ref, rt] = (min(first, seen[0]), max(last, seen[1])) if seen else (first, last)
    if not by_meter:
        return None
    from mdm.vee.handlers import resolve_rule_groups  # the handlers import this module

    # a rule that cannot run (its group gone or closed) is left out, with a warning:
    # validation never refuses readings that were valid input
    rule_groups: dict[str, int | None] = {}
    for rule in list(rules):
        try:
            rule_groups.update(resolve_rule_groups(uow, utility_id, [rule]))
        except ItemRejected as exc:
            log.warning("validation on ingest: rule %r left out: %s", rule.name, exc)
            rules.remove(rule)
    if not rules:
        return None
    refs = list(dict.fromkeys(ref for ref, _ in by_meter))
    start = min(first for first, _ in by_meter.values()) - _BEFORE
    end = max(last for _, last in by_meter.values())
    scope = f"ingest from {source}: {len(refs)} meter(s)"
    run_id = uow.vee.start_run(utility_id, start, end, scope, actor, now, rules, trigger="ingest")
    readings = 0
    for rt in dict.fromkeys(r.reading_type for r in rules):
        for (s, e), group in _periods(by_meter, (rt,)).items():
            uow.vee.select_meters(utility_id, None, None, refs=group)
            readings += uow.vee.count_readings([rt], s, e)
    for rule in rules:
        kinds = (rule.reading_type, rule.profile_reading_type or rule.reading_type)
        for (s, e), group in _periods(by_meter, kinds).items():
            uow.vee.select_meters(utility_id, None, None, refs=group)
            uow.vee.validate(run_id, rule, s, e, now, rule_groups[rule.name])
    meters = uow.vee.select_meters(utility_id, None, None, refs=refs)
    marked = uow.vee.mark(run_id, now)
    run = uow.vee.finish(run_id, now, meters, readings, marked)
    uow.audit.record(
        actor,
        "validate",
        "ValidationRun",
        str(run_id),
        f"on ingest from {source}, ({start.isoformat()}, {end.isoformat()}]: "
        f"{run.readings} reading(s), {run.findings} finding(s), "
        f"{run.failing_meters} meter(s) failing",
    )
    return run
