"""Validation runs and their findings (the result set of a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class RuleCount:
    """What one rule did in a run."""

    rule: str
    kind: str
    reading_type: str
    readings: int  # readings the rule looked at (its reading type, scope and period)
    findings: int
    meters: int  # meters with at least one finding


@dataclass(frozen=True)
class ValidationRun:
    id: int
    utility_id: int
    kind: str  # "validate" (estimation runs will follow)
    trigger: str  # "demand" (on ingest will follow)
    scope: str  # "all meters", "meter M1", "group G"
    period_start: datetime
    period_end: datetime
    started_at: datetime
    finished_at: datetime | None
    actor: str
    state: str  # running | done
    meters: int = 0  # meters in scope
    readings: int = 0  # readings validated (current versions in period and scope)
    findings: int = 0
    failing_meters: int = 0
    marked: int = 0  # readings given a new version with the findings' qualities
    rules: tuple[RuleCount, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Finding:
    """One finding: a reading (``ts``), a run of readings (``ts`` .. ``ts_end``, zero
    consumption) or a gap of missing intervals (``value`` None)."""

    run_id: int
    device_mrid: str
    reading_type: str
    rule: str
    kind: str
    quality: str
    ts: datetime
    ts_end: datetime
    intervals: int
    value: Decimal | None
    detail: str
