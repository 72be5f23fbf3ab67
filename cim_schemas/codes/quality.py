"""ReadingQualityType codes of IEC 61968-9: ``system.category.index``.

system: 0 n/a, 1 end device, 2 head-end (MDC), 3 MDM, 4 other, 5 external.
category: 0 valid, 1 diagnostics, 2 power quality, 3 tamper, 4 data
collection, 5 reasonability, 6 validation, 7 edited, 8 estimated,
10 questionable, 11 derived, 12 projected. index: the specific condition
within the category (0 = the category in general).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

SYSTEMS: Final[dict[int, str]] = {
    0: "not applicable",
    1: "end device",
    2: "head-end",
    3: "MDM",
    4: "other",
    5: "external",
}

CATEGORIES: Final[dict[int, str]] = {
    0: "valid",
    1: "diagnostics",
    2: "power quality",
    3: "tamper",
    4: "data collection",
    5: "reasonability",
    6: "validation",
    7: "edited",
    8: "estimated",
    10: "questionable",
    11: "derived",
    12: "projected",
}

_CODE: Final = re.compile(r"(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, order=True)
class ReadingQualityType:
    """A reading quality code; ``str()`` gives ``system.category.index``."""

    system: int
    category: int
    index: int

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(
                f"ReadingQualityType system {self.system} is not one of {sorted(SYSTEMS)}"
            )
        if self.category not in CATEGORIES:
            raise ValueError(
                f"ReadingQualityType category {self.category} is not one of {sorted(CATEGORIES)}"
            )
        if self.index < 0:
            raise ValueError(f"ReadingQualityType index {self.index} is negative")

    @classmethod
    def parse(cls, code: str) -> ReadingQualityType:
        """Parse ``system.category.index``; ValueError says what is wrong."""
        m = _CODE.fullmatch(code.strip())
        if m is None:
            raise ValueError(f"ReadingQualityType {code!r} is not system.category.index")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.system}.{self.category}.{self.index}"

    @property
    def is_valid(self) -> bool:
        return self.category == 0

    @property
    def is_estimated(self) -> bool:
        return self.category == 8

    def describe(self) -> str:
        """E.g. ``MDM: estimated`` or ``end device: data collection (index 9)``."""
        named = _NAMES.get(str(self))
        if named:
            return named
        text = f"{SYSTEMS[self.system]}: {CATEGORIES[self.category]}"
        return text if self.index == 0 else f"{text} (index {self.index})"


def is_valid_code(code: str) -> bool:
    try:
        ReadingQualityType.parse(code)
    except ValueError:
        return False
    return True


#: Data is valid (no quality issue); the absence of any quality means the same.
VALID: Final = ReadingQualityType(0, 0, 0)
#: Validated by the meter (end device) / the head-end / the MDM.
DEVICE_VALID: Final = ReadingQualityType(1, 0, 0)
HES_VALIDATED: Final = ReadingQualityType(2, 0, 1)
MDM_VALIDATED: Final = ReadingQualityType(3, 0, 1)
#: Flags raised by the meter.
DEVICE_DIAGNOSTICS: Final = ReadingQualityType(1, 1, 0)
DEVICE_POWER_QUALITY: Final = ReadingQualityType(1, 2, 0)
DEVICE_TAMPER: Final = ReadingQualityType(1, 3, 0)
METER_CLOCK_CHANGED: Final = ReadingQualityType(1, 4, 9)
DEVICE_QUESTIONABLE: Final = ReadingQualityType(1, 10, 0)
#: Head-end (data collection) flags.
HES_DATA_COLLECTION: Final = ReadingQualityType(2, 4, 0)
HES_KNOWN_MISSING_READ: Final = ReadingQualityType(2, 5, 259)
HES_ESTIMATED: Final = ReadingQualityType(2, 8, 0)
HES_QUESTIONABLE: Final = ReadingQualityType(2, 10, 0)
#: MDM validation, editing and estimation (VEE).
MDM_KNOWN_MISSING_READ: Final = ReadingQualityType(3, 5, 259)
MDM_VALIDATION_FAILED: Final = ReadingQualityType(3, 6, 0)
MDM_ZERO_USAGE: Final = ReadingQualityType(3, 6, 1)
MDM_EDITED: Final = ReadingQualityType(3, 7, 0)
MDM_ESTIMATED: Final = ReadingQualityType(3, 8, 0)
MDM_QUESTIONABLE: Final = ReadingQualityType(3, 10, 0)
MDM_DERIVED: Final = ReadingQualityType(3, 11, 0)
MDM_PROJECTED: Final = ReadingQualityType(3, 12, 0)

_NAMES: Final[dict[str, str]] = {
    "0.0.0": "valid",
    "1.4.9": "end device: meter clock changed",
    "2.5.259": "head-end: known missing read",
    "3.0.1": "MDM: validated",
    "3.5.259": "MDM: known missing read",
    "3.6.1": "MDM: validation, zero usage",
    "3.8.0": "MDM: estimated",
}
