"""What validation needs from the store (``uow.vee``): set-based work over ranges.

The store runs each rule as SQL over the period (window functions; never reading by
reading through Python objects) and writes the findings and the new versions of the
flagged readings in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from mdm.model import DeviceRef
from mdm.vee.estimation import EstimationMethod
from mdm.vee.model import Finding, RuleCount, ValidationRun
from mdm.vee.rules import ValidationRule


class ValidationStore(Protocol):
    def start_run(
        self,
        utility_id: int,
        start: datetime,
        end: datetime,
        scope: str,
        actor: str,
        now: datetime,
        rules: Sequence[ValidationRule],
        trigger: str = "demand",
    ) -> int:
        """Record a run (state ``running``; ``trigger`` demand or ingest); its id."""
        ...

    def start_estimation(
        self,
        utility_id: int,
        start: datetime,
        end: datetime,
        scope: str,
        actor: str,
        now: datetime,
        config: Mapping[str, object],
    ) -> int:
        """Record an estimation run (kind ``estimate``, state ``running``); its id."""
        ...

    def select_meters(
        self,
        utility_id: int,
        device_id: int | None,
        group_id: int | None,
        refs: Sequence[DeviceRef] = (),
    ) -> int:
        """The meters of this run (one meter, a group's members, the meters ``refs`` names
        by mRID or name, or every meter of the utility), kept for the rules of the run;
        how many."""
        ...

    def validate(
        self,
        run_id: int,
        rule: ValidationRule,
        start: datetime,
        end: datetime,
        now: datetime,
        group_id: int | None,
    ) -> RuleCount:
        """Run one rule over the period ``(start, end]`` for the run's meters (those in
        the rule's group, when ``group_id``) and record its findings."""
        ...

    def estimate(
        self,
        run_id: int,
        reading_type: str,
        interval_seconds: int,
        method: EstimationMethod,
        max_intervals: int,
        start: datetime,
        end: datetime,
        now: datetime,
        history_weeks: int = 4,
        time_zone: str = "UTC",
        register: str | None = None,
    ) -> RuleCount:
        """Fill the gaps of ``(start, end]`` (clipped at ``now``) of the run's meters that
        lie between two known readings and are at most ``max_intervals`` long, as new
        readings with the estimated quality; record a finding for each gap filled and
        each gap not filled (no reading before or after it, too long, no readings at
        all). With ``history``, the gaps linear interpolation does not fill take the
        meter's mean of the same local time of day and day type (weekday / weekend, in
        ``time_zone``) over the ``history_weeks`` before ``start``, scaled between two
        readings of ``register`` so that the profile adds up to its advance. ``readings``
        of the count: the intervals estimated."""
        ...

    def count_readings(self, reading_types: Sequence[str], start: datetime, end: datetime) -> int:
        """Current readings of these types in the period, of the run's meters."""
        ...

    def mark(self, run_id: int, now: datetime) -> int:
        """Give every reading with a finding of the run its findings' qualities, as a new
        version (the previous one kept in the history); how many readings."""
        ...

    def finish(
        self, run_id: int, now: datetime, meters: int, readings: int, marked: int
    ) -> ValidationRun: ...

    def get(self, utility_id: int, run_id: int | None) -> ValidationRun | None:
        """A run of the utility (None: its latest)."""
        ...

    def runs(self, utility_id: int, limit: int = 50) -> list[ValidationRun]:
        """Newest first."""
        ...

    def findings(self, run_id: int, rule: str | None = None) -> Iterator[Finding]:
        """The run's findings by meter, reading type and time; streamed."""
        ...

    def failing_meters(self, run_id: int, rule: str | None = None) -> list[str]:
        """mRIDs of the meters with a finding in the run."""
        ...
