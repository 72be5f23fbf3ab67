"""Validation rules of VEE (validation, estimation, editing): what each rule checks.

A rule is named, switchable and applies to one ReadingType, optionally only to one
utility, one end device group or one usage point group (a transformer area). The
settings (``[[vee.rules]]``, hub/vee_settings.py) build them; the store runs them
set-based over a period (adapters/sql/vee.py). Each finding is a row of the run's
result set and, where a reading exists, a ReadingQuality on that reading (a new
version of it: docs/vee.md).

The ReadingQuality codes (``system.category.index``, cim_schemas/codes/quality.py):
system 3 (MDM), category 5 (reasonability: the value on its own or against the meter's
history) or 6 (validation: the value against other data). STANDARDS.md names
``x.5.259`` (known missing read) and ``3.6.1`` (zero usage); the other rules default to
the category in general (index 0) and name themselves in the finding row; a rule's
``quality`` setting may give a more specific code of the same categories.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final

from cim_schemas.codes.quality import (
    MDM_KNOWN_MISSING_READ,
    MDM_ZERO_USAGE,
    ReadingQualityType,
)
from cim_schemas.codes.reading_type import ACCUMULATIONS, PERIOD_MINUTES, ReadingType


class RuleKind(StrEnum):
    """What a rule checks."""

    #: intervals of the profile that have no reading (x.5.259 known missing read)
    MISSING = "missing"
    #: values above ``maximum`` or below ``minimum``
    LIMITS = "limits"
    #: values more than ``factor`` times the meter's median of the same weekday and time
    #: of day (local time) over the ``weeks`` before the period
    SPIKE = "spike"
    #: more than ``max_intervals`` consecutive intervals of zero consumption (3.6.1)
    ZERO_RUN = "zero_run"
    #: negative consumption
    NEGATIVE = "negative"
    #: a register lower than its previous reading; with ``digits``: a rollover at
    #: 10**digits when the advance through it is at most ``max_rollover_advance``
    REGISTER_BACKWARDS = "register_backwards"
    #: a register's advance differs from the sum of the profile over the same period by
    #: more than the tolerance
    REGISTER_VS_PROFILE = "register_vs_profile"
    #: readings the meter (or head-end) flagged with one of ``flag_codes``
    METER_FLAGGED = "meter_flagged"
    #: readings stamped later than the run's time plus ``future_seconds``
    FUTURE = "future"


REASONABILITY: Final = ReadingQualityType(3, 5, 0)
VALIDATION: Final = ReadingQualityType(3, 6, 0)

#: the ReadingQuality a finding of each kind puts on its reading, unless configured
DEFAULT_QUALITY: Final[dict[RuleKind, ReadingQualityType]] = {
    RuleKind.MISSING: MDM_KNOWN_MISSING_READ,
    RuleKind.LIMITS: REASONABILITY,
    RuleKind.SPIKE: REASONABILITY,
    RuleKind.ZERO_RUN: MDM_ZERO_USAGE,
    RuleKind.NEGATIVE: REASONABILITY,
    RuleKind.FUTURE: REASONABILITY,
    RuleKind.REGISTER_BACKWARDS: VALIDATION,
    RuleKind.REGISTER_VS_PROFILE: VALIDATION,
    RuleKind.METER_FLAGGED: VALIDATION,
}

#: kinds that need an interval (profile) reading type: a measuring period
INTERVAL_KINDS: Final = frozenset(
    {RuleKind.MISSING, RuleKind.SPIKE, RuleKind.ZERO_RUN, RuleKind.NEGATIVE}
)
#: kinds that need a register: bulk / cumulative accumulation, no measuring period
REGISTER_KINDS: Final = frozenset({RuleKind.REGISTER_BACKWARDS, RuleKind.REGISTER_VS_PROFILE})
REGISTER_ACCUMULATIONS: Final = frozenset({1, 2, 3, 9})
#: meter flags checked by default: every end device code but "valid" (1.0.x)
DEFAULT_FLAG_CODES: Final = ("1.1", "1.2", "1.3", "1.4", "1.10")


@dataclass(frozen=True)
class RuleScope:
    """Where a rule applies, beyond its reading type (None: everywhere)."""

    utility: str | None = None
    end_device_group: str | None = None  # mRID or name
    usage_point_group: str | None = None  # transformer area


@dataclass(frozen=True)
class ValidationRule:
    name: str
    kind: RuleKind
    reading_type: str
    quality: str
    scope: RuleScope = RuleScope()
    enabled: bool = True
    #: the profile's interval (seconds), for the kinds of INTERVAL_KINDS
    interval_seconds: int | None = None
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    factor: Decimal | None = None
    weeks: int = 4
    min_samples: int = 2
    #: a spike is never below this value (a median of 0 would flag any consumption)
    floor: Decimal = Decimal(0)
    max_intervals: int | None = None
    digits: int | None = None
    max_rollover_advance: Decimal | None = None
    profile_reading_type: str | None = None
    profile_interval_seconds: int | None = None
    tolerance: Decimal = Decimal(0)
    tolerance_percent: Decimal = Decimal(0)
    flag_codes: tuple[str, ...] = DEFAULT_FLAG_CODES
    future_seconds: int = 0
    time_zone: str = "UTC"

    def applies_to(self, utility_code: str) -> bool:
        return self.enabled and self.scope.utility in (None, utility_code)


def interval_seconds(code: str) -> int | None:
    """Seconds of the measuring period of a reading type code (None: not a profile)."""
    minutes = PERIOD_MINUTES.get(ReadingType.parse(code).measuring_period)
    return minutes * 60 if minutes is not None else None


def check_reading_type(kind: RuleKind, code: str, key: str = "reading_type") -> list[str]:
    """What makes ``code`` unusable for a rule of ``kind`` (empty: usable)."""
    try:
        rt = ReadingType.parse(code)
    except ValueError as exc:
        return [f"{key}: {exc}"]
    problems: list[str] = []
    if rt.measuring_period and rt.measuring_period not in PERIOD_MINUTES:
        problems.append(
            f"{key} {code!r}: measuringPeriod {rt.measuring_period} is not a known measuring "
            f"period ({', '.join(str(p) for p in sorted(PERIOD_MINUTES))})"
        )
    if rt.accumulation not in ACCUMULATIONS:
        problems.append(
            f"{key} {code!r}: accumulation {rt.accumulation} is not a known accumulation "
            f"({', '.join(str(a) for a in sorted(ACCUMULATIONS))})"
        )
    if problems:
        return problems
    if kind in INTERVAL_KINDS and not rt.measuring_period:
        problems.append(f"{key} {code!r}: a {kind} rule needs an interval reading type")
    if kind in REGISTER_KINDS and (
        rt.measuring_period or rt.accumulation not in REGISTER_ACCUMULATIONS
    ):
        problems.append(
            f"{key} {code!r}: a {kind} rule needs a register (bulk or cumulative, "
            "no measuring period)"
        )
    return problems


def check_quality(kind: RuleKind, code: str) -> list[str]:
    """A finding's quality must be the MDM's reasonability or validation (3.5.x, 3.6.x)."""
    try:
        q = ReadingQualityType.parse(code)
    except ValueError as exc:
        return [f"quality: {exc}"]
    if q.system != 3 or q.category not in (5, 6):
        return [
            f"quality {code!r}: a validation finding is an MDM reasonability (3.5.x) or "
            "validation (3.6.x) code"
        ]
    return []


def check_flag_code(code: str) -> bool:
    """``system.category`` or ``system.category.index`` of a meter's own quality."""
    parts = code.split(".")
    return 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts) and parts[0] in ("1", "2")
