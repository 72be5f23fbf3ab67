"""Commands of VEE: frozen dataclasses, one intent each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mdm.model import DeviceRef
from mdm.vee.estimation import EstimationMethod
from mdm.vee.rules import ValidationRule


@dataclass(frozen=True)
class ValidateReadings:
    """Validate the current readings of ``(start, end]`` with the rules that apply to the
    utility: of one meter, of an end device group's members, or of every meter."""

    utility_id: int
    utility_code: str
    start: datetime
    end: datetime
    rules: tuple[ValidationRule, ...]
    meter: DeviceRef | None = None
    group: str | None = None  # an end device group's mRID or name
    only: tuple[str, ...] = ()  # rule names (empty: every enabled rule)


@dataclass(frozen=True)
class EstimateReadings:
    """Estimate the missing intervals of ``(start, end]`` of these interval reading types:
    of one meter, of an end device group's members, or of every meter. A gap is filled
    only between two known readings of the same meter and reading type, and only when
    it is at most ``max_intervals`` long; every other gap is a finding."""

    utility_id: int
    start: datetime
    end: datetime
    reading_types: tuple[str, ...]
    max_intervals: int
    method: EstimationMethod = EstimationMethod.LINEAR
    meter: DeviceRef | None = None
    group: str | None = None
    history_weeks: int = 4  # history: the weeks before the period
    time_zone: str = "UTC"  # history: local days and times of day
    #: history: profile reading type -> its register; the history estimates between two
    #: registers are scaled so that the profile adds up to the register's advance
    registers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SaveFailingMeters:
    """The meters with findings in a run become an end device group (a re-read or an
    export can target it)."""

    utility_id: int
    run_id: int
    mrid: str
    name: str
    rule: str | None = None
    description: str | None = None
