"""``[vee]``: validation rules (mdm/vee/rules.py), checked when the settings are read.

```toml
[vee]
time_zone = "Europe/Berlin"            # local days and weekdays (spikes)
utility_time_zones = { ACME = "America/Sao_Paulo" }

[[vee.rules]]
name = "15-min too high"
kind = "limits"
reading_type = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
maximum = 25
utility = "ACME"                       # optional: one utility
end_device_group = "industrial"        # optional: one end device group (mRID or name)
usage_point_group = "TA-7"             # optional: one transformer area
enabled = true
```

A rule that cannot work is refused when the settings are read, with the rule's place
and name in the message (``vee.rules.2: rule 'peaks': reading_type: ReadingType
'0.0.2' has 3 fields, not 18``; ``... minimum 10 is above maximum 5``). Whether a
group exists can only be checked against the store: a run refuses a rule whose group
does not exist before it writes anything.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from hub.named_entries import unique_names, validate_named
from mdm.recurrence import zone_of
from mdm.vee.rules import (
    DEFAULT_FLAG_CODES,
    DEFAULT_QUALITY,
    RuleKind,
    RuleScope,
    ValidationRule,
    check_flag_code,
    check_quality,
    check_reading_type,
    interval_seconds,
)

MAX_NAME = 100

#: where readings come in (mdm.vee.ingest.INGEST_SOURCES)
IngestSource = Literal["soap", "amqp", "sftp", "import", "headend", "push"]

#: the settings each kind needs, and those it may take
_NEEDS: dict[RuleKind, tuple[str, ...]] = {
    RuleKind.LIMITS: (),
    RuleKind.SPIKE: ("factor",),
    RuleKind.ZERO_RUN: ("max_intervals",),
    RuleKind.REGISTER_VS_PROFILE: ("profile_reading_type",),
}
_TAKES: dict[RuleKind, frozenset[str]] = {
    RuleKind.MISSING: frozenset(),
    RuleKind.LIMITS: frozenset({"minimum", "maximum"}),
    RuleKind.SPIKE: frozenset({"factor", "weeks", "min_samples", "floor", "time_zone"}),
    RuleKind.ZERO_RUN: frozenset({"max_intervals"}),
    RuleKind.NEGATIVE: frozenset(),
    RuleKind.REGISTER_BACKWARDS: frozenset({"digits", "max_rollover_advance"}),
    RuleKind.REGISTER_VS_PROFILE: frozenset(
        {"profile_reading_type", "tolerance", "tolerance_percent"}
    ),
    RuleKind.METER_FLAGGED: frozenset({"flag_codes"}),
    RuleKind.FUTURE: frozenset({"future_seconds"}),
}
_PARAMETERS = frozenset().union(*_TAKES.values())


class VeeRuleSettings(BaseModel):
    """One ``[[vee.rules]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: RuleKind
    reading_type: str
    enabled: bool = True
    #: the ReadingQuality a finding puts on the reading (default: the kind's, rules.py)
    quality: str | None = None
    utility: str | None = None
    end_device_group: str | None = None
    usage_point_group: str | None = None
    #: the sources whose readings this rule validates on ingest (None: ``[vee]
    #: on_ingest``; []: never on ingest)
    on_ingest: list[IngestSource] | None = None
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    factor: Decimal | None = None
    weeks: int | None = Field(default=None, ge=1, le=52)
    min_samples: int | None = Field(default=None, ge=1)
    floor: Decimal | None = None
    max_intervals: int | None = Field(default=None, ge=1)
    digits: int | None = Field(default=None, ge=1, le=15)
    max_rollover_advance: Decimal | None = Field(default=None, gt=0)
    profile_reading_type: str | None = None
    tolerance: Decimal | None = Field(default=None, ge=0)
    tolerance_percent: Decimal | None = Field(default=None, ge=0, le=100)
    flag_codes: tuple[str, ...] | None = None
    future_seconds: int | None = Field(default=None, ge=0)
    #: the zone of local weekdays and times of day (default: the utility's, [vee])
    time_zone: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _named(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Every problem of an entry is reported with the rule's name."""
        return validate_named("rule", data, handler)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems: list[str] = []
        if not self.name.strip() or self.name != self.name.strip() or len(self.name) > MAX_NAME:
            problems.append(f"name must be 1 to {MAX_NAME} characters without outer blanks")
        problems += check_reading_type(self.kind, self.reading_type)
        if self.quality is not None:
            problems += check_quality(self.kind, self.quality)
        given = {k for k in _PARAMETERS if getattr(self, k) is not None}
        for key in sorted(given - _TAKES[self.kind]):
            problems.append(f"{key} is not a setting of a {self.kind} rule")
        for key in _NEEDS.get(self.kind, ()):
            if getattr(self, key) is None:
                problems.append(f"a {self.kind} rule needs {key}")
        problems += self._limits()
        if self.time_zone is not None:
            try:
                zone_of(self.time_zone)
            except ValueError as exc:
                problems.append(f"time_zone: {exc}")
        if self.flag_codes is not None:
            if not self.flag_codes:
                problems.append("flag_codes is empty")
            for code in self.flag_codes:
                if not check_flag_code(code):
                    problems.append(
                        f"flag_codes {code!r} is not a meter's or head-end's quality "
                        "(1.category[.index] or 2.category[.index])"
                    )
        if self.profile_reading_type is not None:
            problems += self._profile()
        if problems:
            raise ValueError(f"rule {self.name!r}: {'; '.join(problems)}")
        return self

    def _limits(self) -> list[str]:
        problems: list[str] = []
        if self.kind == RuleKind.LIMITS:
            if self.minimum is None and self.maximum is None:
                problems.append("a limits rule needs minimum, maximum or both")
            if (
                self.minimum is not None
                and self.maximum is not None
                and self.minimum >= self.maximum
            ):
                problems.append(
                    f"minimum {self.minimum} is not below maximum {self.maximum}: "
                    "the limits contradict each other"
                )
        if self.factor is not None and self.factor <= 1:
            problems.append(
                f"factor {self.factor} must be more than 1 (a spike is above its median)"
            )
        if self.floor is not None and self.floor < 0:
            problems.append(f"floor {self.floor} is negative")
        if (
            self.min_samples is not None
            and self.weeks is not None
            and self.min_samples > self.weeks
        ):
            problems.append(
                f"min_samples {self.min_samples} is more than weeks {self.weeks}: "
                "a weekday's time of day has one reading a week"
            )
        if self.max_rollover_advance is not None and self.digits is None:
            problems.append("max_rollover_advance needs digits (where the register rolls over)")
        if (
            self.max_rollover_advance is not None
            and self.digits is not None
            and self.max_rollover_advance >= Decimal(10) ** self.digits
        ):
            problems.append(
                f"max_rollover_advance {self.max_rollover_advance} is not below "
                f"10**digits ({Decimal(10) ** self.digits})"
            )
        return problems

    def _profile(self) -> list[str]:
        from cim_schemas.codes.reading_type import ReadingType

        assert self.profile_reading_type is not None
        problems = check_reading_type(
            RuleKind.MISSING, self.profile_reading_type, "profile_reading_type"
        )
        if problems or check_reading_type(self.kind, self.reading_type):
            return problems
        register = ReadingType.parse(self.reading_type)
        profile = ReadingType.parse(self.profile_reading_type)
        for field in ("commodity", "flow_direction", "unit", "multiplier", "tou"):
            if getattr(register, field) != getattr(profile, field):
                problems.append(
                    f"profile_reading_type {self.profile_reading_type!r}: its {field} "
                    f"{getattr(profile, field)} is not the register's {getattr(register, field)}"
                )
        return problems

    def rule(self, default_zone: str) -> ValidationRule:
        weeks = self.weeks or 4
        profile = self.profile_reading_type
        return ValidationRule(
            name=self.name,
            kind=self.kind,
            reading_type=self.reading_type,
            quality=self.quality or str(DEFAULT_QUALITY[self.kind]),
            scope=RuleScope(self.utility, self.end_device_group, self.usage_point_group),
            enabled=self.enabled,
            interval_seconds=interval_seconds(self.reading_type),
            minimum=self.minimum,
            maximum=self.maximum,
            factor=self.factor,
            weeks=weeks,
            min_samples=self.min_samples or min(2, weeks),
            floor=self.floor or Decimal(0),
            max_intervals=self.max_intervals,
            digits=self.digits,
            max_rollover_advance=self.max_rollover_advance,
            profile_reading_type=profile,
            profile_interval_seconds=interval_seconds(profile) if profile else None,
            tolerance=self.tolerance or Decimal(0),
            tolerance_percent=self.tolerance_percent or Decimal(0),
            flag_codes=self.flag_codes or DEFAULT_FLAG_CODES,
            future_seconds=self.future_seconds or 0,
            time_zone=self.time_zone or default_zone,
        )


def _zone(name: str) -> str:
    zone_of(name)  # ValueError naming it
    return name


Zone = Annotated[str, AfterValidator(_zone)]


def _interval_type(code: str) -> str:
    """An interval reading type (one with a measuring period): ValueError naming it."""
    problems = check_reading_type(RuleKind.MISSING, code, "estimate_reading_types")
    if problems:
        raise ValueError("; ".join(problems).replace("a missing rule", "estimation"))
    return code


class VeeSettings(BaseModel):
    """``[vee]``: validation, estimation and editing (docs/vee.md)."""

    model_config = ConfigDict(extra="forbid")

    #: the zone of local days and weekdays, unless the utility or the rule has its own
    time_zone: Zone = "UTC"
    #: utility code -> its zone
    utility_time_zones: dict[str, Zone] = Field(default_factory=dict)
    rules: Annotated[
        list[VeeRuleSettings], AfterValidator(unique_names("rule", "rules are named"))
    ] = Field(default_factory=list)
    #: estimation: the longest gap (in intervals of its reading type) that linear
    #: interpolation fills; longer ones are findings
    linear_max_intervals: int = Field(default=4, ge=1, le=2976)
    #: estimation from history: the weeks before the period whose same day type
    #: (weekday / weekend) and local time of day give a missing interval its value
    history_weeks: int = Field(default=4, ge=1, le=52)
    #: the interval reading types ``amihub vee estimate`` fills (default: those of the
    #: enabled ``missing`` rules of the utility)
    estimate_reading_types: list[Annotated[str, AfterValidator(_interval_type)]] = Field(
        default_factory=list
    )
    #: the sources whose readings every enabled rule validates on ingest (a rule's own
    #: ``on_ingest`` overrides): soap, amqp, sftp, import, headend, push
    on_ingest: list[IngestSource] = Field(default_factory=list)

    def ingest_rules(self, utility: str, source: str) -> tuple[ValidationRule, ...]:
        """The enabled rules of the utility that validate ``source``'s readings on ingest."""
        zone = self.utility_time_zones.get(utility, self.time_zone)
        return tuple(
            r.rule(zone)
            for r in self.rules
            if source in (self.on_ingest if r.on_ingest is None else r.on_ingest)
        )

    def rules_for(self, utility: str) -> tuple[ValidationRule, ...]:
        """Every configured rule (disabled ones too), in the utility's zone by default."""
        zone = self.utility_time_zones.get(utility, self.time_zone)
        return tuple(r.rule(zone) for r in self.rules)

    def estimated_types(self, utility: str) -> tuple[str, ...]:
        """The reading types estimation fills for the utility."""
        if self.estimate_reading_types:
            return tuple(dict.fromkeys(self.estimate_reading_types))
        return tuple(
            dict.fromkeys(
                r.reading_type
                for r in self.rules_for(utility)
                if r.kind == RuleKind.MISSING and r.applies_to(utility)
            )
        )
