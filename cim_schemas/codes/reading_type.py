"""ReadingType codes of IEC 61968-9 (18 dot-separated integers) and OBIS mapping.

``macroPeriod.aggregate.measuringPeriod.accumulation.flowDirection.commodity.
measurementKind.interharmonicNumerator.interharmonicDenominator.
argumentNumerator.argumentDenominator.tou.cpp.consumptionTier.phases.
multiplier.unit.currency``

Only the enumeration values amihub uses are named here (for ``describe()``);
any integer parses. The OBIS table maps the IEC 62056 (DLMS/COSEM) registers
and profile channels amihub reads to ReadingTypes and back.
"""

from __future__ import annotations

import re
from dataclasses import astuple, dataclass, fields
from functools import cache
from typing import Final

FIELD_NAMES: Final = (
    "macroPeriod",
    "aggregate",
    "measuringPeriod",
    "accumulation",
    "flowDirection",
    "commodity",
    "measurementKind",
    "interharmonicNumerator",
    "interharmonicDenominator",
    "argumentNumerator",
    "argumentDenominator",
    "tou",
    "cpp",
    "consumptionTier",
    "phases",
    "multiplier",
    "unit",
    "currency",
)

_INT: Final = re.compile(r"-?\d+")

MEASURING_PERIODS: Final[dict[int, str]] = {
    1: "10-min",
    2: "15-min",
    3: "1-min",
    4: "24-hour",
    5: "30-min",
    6: "5-min",
    7: "60-min",
    10: "2-min",
    14: "3-min",
    31: "20-min",
}
#: Minutes of the fixed measuring periods.
PERIOD_MINUTES: Final[dict[int, int]] = {
    1: 10, 2: 15, 3: 1, 4: 1440, 5: 30, 6: 5, 7: 60, 10: 2, 14: 3, 31: 20,
}  # fmt: skip
MACRO_PERIODS: Final[dict[int, str]] = {8: "billing-period", 11: "daily", 13: "monthly"}
ACCUMULATIONS: Final[dict[int, str]] = {
    1: "bulk",
    2: "continuous cumulative",
    3: "cumulative",
    4: "delta",
    6: "indicating",
    9: "summation",
    12: "instantaneous",
}
FLOW_DIRECTIONS: Final[dict[int, str]] = {1: "forward", 4: "net", 19: "reverse"}
COMMODITIES: Final[dict[int, str]] = {
    1: "electricity",
    2: "electricity (primary metered)",
    7: "natural gas",
    9: "potable water",
    10: "steam",
    12: "heating fluid",
    13: "cooling fluid",
}
MEASUREMENT_KINDS: Final[dict[int, str]] = {
    4: "current",
    8: "demand",
    12: "energy",
    15: "frequency",
    37: "power",
    38: "power factor",
    54: "voltage",
}
PHASES: Final[dict[int, str]] = {
    128: "phase A",
    64: "phase B",
    32: "phase C",
    129: "phase A-N",
    65: "phase B-N",
    33: "phase C-N",
    224: "phases ABC",
    225: "phases ABCN",
}
MULTIPLIERS: Final[dict[int, str]] = {-3: "m", 0: "", 3: "k", 6: "M", 9: "G"}
UNITS: Final[dict[int, str]] = {
    5: "A",
    29: "V",
    33: "Hz",
    38: "W",
    61: "VA",
    63: "VAr",
    71: "VAh",
    72: "Wh",
    73: "VArh",
}


@dataclass(frozen=True, order=True)
class ReadingType:
    """An IEC 61968-9 ReadingType; ``str()`` gives the 18-field code."""

    macro_period: int = 0
    aggregate: int = 0
    measuring_period: int = 0
    accumulation: int = 0
    flow_direction: int = 0
    commodity: int = 0
    measurement_kind: int = 0
    interharmonic_numerator: int = 0
    interharmonic_denominator: int = 0
    argument_numerator: int = 0
    argument_denominator: int = 0
    tou: int = 0
    cpp: int = 0
    consumption_tier: int = 0
    phases: int = 0
    multiplier: int = 0
    unit: int = 0
    currency: int = 0

    @classmethod
    def parse(cls, code: str) -> ReadingType:
        """Parse the 18-field code; ValueError names the field that is wrong."""
        parts = code.strip().split(".")
        if len(parts) != len(FIELD_NAMES):
            raise ValueError(
                f"ReadingType {code!r} has {len(parts)} fields, not {len(FIELD_NAMES)}"
            )
        values: list[int] = []
        for position, (name, part) in enumerate(zip(FIELD_NAMES, parts, strict=True), 1):
            if _INT.fullmatch(part) is None:
                raise ValueError(
                    f"ReadingType {code!r}: field {position} ({name}) {part!r} is not an integer"
                )
            value = int(part)
            if value < 0 and name != "multiplier":
                raise ValueError(
                    f"ReadingType {code!r}: field {position} ({name}) {part!r} is negative"
                )
            values.append(value)
        return cls(*values)

    def __str__(self) -> str:
        return ".".join(str(v) for v in astuple(self))

    @property
    def code(self) -> str:
        return str(self)

    @property
    def interval_minutes(self) -> int | None:
        """Minutes of the measuring period (15 for a 15-min profile), or None."""
        return PERIOD_MINUTES.get(self.measuring_period)

    def _flow_label(self) -> str:
        if self.commodity in (1, 2) and self.unit in (38, 72):
            return {1: "+A", 19: "-A", 4: "net A"}.get(self.flow_direction, "")
        if self.commodity in (1, 2) and self.unit in (63, 73):
            return {1: "+R", 19: "-R", 4: "net R"}.get(self.flow_direction, "")
        return FLOW_DIRECTIONS.get(self.flow_direction, "")

    def describe(self) -> str:
        """Human text, e.g. ``15-min delta +A energy kWh``."""
        words: list[str] = []
        if self.macro_period:
            words.append(MACRO_PERIODS.get(self.macro_period, f"macro-period {self.macro_period}"))
        if self.measuring_period:
            words.append(
                MEASURING_PERIODS.get(self.measuring_period, f"period {self.measuring_period}")
            )
        if self.accumulation:
            words.append(ACCUMULATIONS.get(self.accumulation, f"accumulation {self.accumulation}"))
        flow = self._flow_label() if self.flow_direction else ""
        if flow:
            words.append(flow)
        if self.commodity not in (0, 1, 2):
            words.append(COMMODITIES.get(self.commodity, f"commodity {self.commodity}"))
        if self.measurement_kind:
            words.append(
                MEASUREMENT_KINDS.get(self.measurement_kind, f"kind {self.measurement_kind}")
            )
        if self.phases:
            words.append(PHASES.get(self.phases, f"phases {self.phases}"))
        if self.tou:
            words.append(f"rate {self.tou}")
        if self.cpp:
            words.append(f"critical peak {self.cpp}")
        if self.consumption_tier:
            words.append(f"tier {self.consumption_tier}")
        if self.unit:
            prefix = MULTIPLIERS.get(self.multiplier, f"10^{self.multiplier} ")
            words.append(prefix + UNITS.get(self.unit, f"unit {self.unit}"))
        return " ".join(words) if words else "unspecified"


def field_names() -> tuple[str, ...]:
    """The Python field names, in code order."""
    return tuple(f.name for f in fields(ReadingType))


# -- common ReadingTypes ------------------------------------------------------------------

#: +A / -A active energy registers, kWh.
A_PLUS_REGISTER: Final = ReadingType(
    accumulation=1, flow_direction=1, commodity=1, measurement_kind=12, multiplier=3, unit=72
)
A_MINUS_REGISTER: Final = ReadingType(
    accumulation=1, flow_direction=19, commodity=1, measurement_kind=12, multiplier=3, unit=72
)
#: 15-minute +A consumption (delta), kWh.
A_PLUS_15MIN: Final = ReadingType(
    measuring_period=2,
    accumulation=4,
    flow_direction=1,
    commodity=1,
    measurement_kind=12,
    multiplier=3,
    unit=72,
)


# -- OBIS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObisMapping:
    """One row of the OBIS table. ``interval_minutes`` is set for profile channels
    (the captured register's OBIS read from a 15-min or 60-min load profile)."""

    obis: str
    reading_type: ReadingType
    interval_minutes: int | None = None


_ENERGY: Final = {  # OBIS C -> (flowDirection, unit)
    1: (1, 72),  # +A
    2: (19, 72),  # -A
    3: (1, 73),  # +R
    4: (19, 73),  # -R
}
_PERIOD_OF: Final = {15: 2, 60: 7}


def _rows() -> list[ObisMapping]:
    rows: list[ObisMapping] = []
    for c, (flow, unit) in _ENERGY.items():
        for rate in range(5):
            rt = ReadingType(
                accumulation=1,
                flow_direction=flow,
                commodity=1,
                measurement_kind=12,
                tou=rate,
                multiplier=3,
                unit=unit,
            )
            rows.append(ObisMapping(f"1.0.{c}.8.{rate}.255", rt))
        for minutes, period in _PERIOD_OF.items():
            rt = ReadingType(
                measuring_period=period,
                accumulation=4,
                flow_direction=flow,
                commodity=1,
                measurement_kind=12,
                multiplier=3,
                unit=unit,
            )
            rows.append(ObisMapping(f"1.0.{c}.8.0.255", rt, minutes))
    # instantaneous active power import / export total (kW)
    for c, flow in ((1, 1), (2, 19)):
        rt = ReadingType(
            accumulation=12,
            flow_direction=flow,
            commodity=1,
            measurement_kind=37,
            multiplier=3,
            unit=38,
        )
        rows.append(ObisMapping(f"1.0.{c}.7.0.255", rt))
    # per phase: L1, L2, L3 = C offsets 20, 40, 60
    for offset, phase, phase_n in ((20, 128, 129), (40, 64, 65), (60, 32, 33)):
        power = ReadingType(
            accumulation=12,
            flow_direction=1,
            commodity=1,
            measurement_kind=37,
            phases=phase,
            multiplier=3,
            unit=38,
        )
        current = ReadingType(
            accumulation=12, commodity=1, measurement_kind=4, phases=phase, unit=5
        )
        voltage = ReadingType(
            accumulation=12, commodity=1, measurement_kind=54, phases=phase_n, unit=29
        )
        rows.append(ObisMapping(f"1.0.{offset + 1}.7.0.255", power))
        rows.append(ObisMapping(f"1.0.{offset + 11}.7.0.255", current))
        rows.append(ObisMapping(f"1.0.{offset + 12}.7.0.255", voltage))
    return rows


@cache
def obis_table() -> tuple[ObisMapping, ...]:
    """The OBIS <-> ReadingType table (built on first use)."""
    return tuple(_rows())


@cache
def _by_obis() -> dict[tuple[str, int | None], ReadingType]:
    return {(row.obis, row.interval_minutes): row.reading_type for row in obis_table()}


@cache
def _by_reading_type() -> dict[ReadingType, ObisMapping]:
    return {row.reading_type: row for row in obis_table()}


def normalise_obis(obis: str) -> str:
    """Accept ``1-0:1.8.0.255``, ``1.0.1.8.0.255`` and 5-group forms (``.255`` added)."""
    parts = re.split(r"[.:\-*]", obis.strip())
    if len(parts) == 5:
        parts.append("255")
    if len(parts) != 6 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise ValueError(f"OBIS code {obis!r} is not six groups A.B.C.D.E.F of 0..255")
    return ".".join(str(int(p)) for p in parts)


def obis_to_reading_type(obis: str, *, interval_minutes: int | None = None) -> ReadingType:
    """The ReadingType of an OBIS register, or of a profile channel when
    ``interval_minutes`` (15 or 60) says the value comes from a load profile.

    Raises KeyError for an OBIS code (and interval) not in the table.
    """
    key = (normalise_obis(obis), interval_minutes)
    try:
        return _by_obis()[key]
    except KeyError:
        where = f" in a {interval_minutes}-min profile" if interval_minutes else ""
        raise KeyError(f"no ReadingType for OBIS {key[0]}{where}") from None


def reading_type_to_obis(reading_type: ReadingType | str) -> ObisMapping:
    """The OBIS register (and profile interval) for a ReadingType; KeyError if unknown."""
    rt = ReadingType.parse(reading_type) if isinstance(reading_type, str) else reading_type
    try:
        return _by_reading_type()[rt]
    except KeyError:
        raise KeyError(f"no OBIS code for ReadingType {rt} ({rt.describe()})") from None
