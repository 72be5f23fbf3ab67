"""Estimation of missing intervals: the methods and what an estimate carries.

An estimated interval is a new reading (the instant had none) whose ReadingQuality codes
are ``3.5.259`` (known missing read: the absence stays visible) and ``3.8.0`` (estimated
by the MDM) with the method as the estimate's comment; the run's ``vee_finding`` rows
(kind ``estimation``) say which gap was filled, between which readings, and which gaps
were not and why.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from cim_schemas.codes.quality import MDM_ESTIMATED, MDM_KNOWN_MISSING_READ
from mdm.qualities import Quality, pack

#: the ``vee_finding.kind`` of an estimation run's rows
ESTIMATION: Final = "estimation"
#: the row of a gap that was filled
ESTIMATED_CODE: Final = str(MDM_ESTIMATED)
#: the row of a gap that was not (still a known missing read)
NOT_ESTIMATED_CODE: Final = str(MDM_KNOWN_MISSING_READ)


class EstimationMethod(StrEnum):
    #: straight line between the known readings either side of a gap of at most
    #: ``max_intervals`` intervals
    LINEAR = "linear"
    #: linear where it can, and every other gap from the meter's mean of the same local
    #: time of day on days of the same type (weekday / weekend) over the weeks before
    #: the period
    HISTORY = "history"


_COMMENT: Final[dict[EstimationMethod, str]] = {
    EstimationMethod.LINEAR: "linear interpolation",
    EstimationMethod.HISTORY: "same day-type history",
}


def estimated_quality(method: EstimationMethod) -> str:
    """The stored quality text of an estimated reading (mdm/qualities.py)."""
    return pack(
        [
            Quality(NOT_ESTIMATED_CODE),
            Quality(ESTIMATED_CODE, comment=_COMMENT[method], source="MDM"),
        ]
    )
