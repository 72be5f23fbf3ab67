"""The flat values of the MeterReadings codec: what the readers yield and the writer takes.

Plain named tuples, no behaviour: the hub turns them into the domain's types
(``mdm.ports.ReadingBlock``, ``mdm.model.DeviceRef``) one block or one meter at a
time, never one reading at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

#: one reading of a block: (instant in UTC, exact value, quality text)
BlockReading = tuple[datetime, Decimal, str]


class MeterName(NamedTuple):
    """How a MeterReading names its Meter: the mRID, else the first Names/name (with
    its NameType's name)."""

    mrid: str | None = None
    name: str | None = None
    name_type: str | None = None

    def __str__(self) -> str:
        if self.mrid:
            return self.mrid
        return f"{self.name_type or 'name'}={self.name}"


class Block(NamedTuple):
    """The readings of one MeterReading (``item``, 1-based) and one ReadingType: an
    IntervalBlock's IntervalReadings, or one register Reading."""

    item: int
    reading_type: str  # the 18-field code, checked
    readings: list[BlockReading]


@dataclass(frozen=True)
class Chunk:
    """A slice of a document's readings, ending with complete MeterReadings: every
    block's meter is in ``meters`` of this chunk or an earlier one."""

    blocks: list[Block] = field(default_factory=list)
    meters: list[tuple[int, MeterName]] = field(default_factory=list)


class TextRow(NamedTuple):
    """A reading to render, as text: ``ts`` ISO 8601 with its offset, ``value`` plain
    decimal text (no exponent), ``quality`` the quality text (see :class:`QualityText`).
    Rows come ordered by meter, ReadingType and time (``mdm.ports.ReadingText`` has
    this layout, so the store's rows pass as they are)."""

    device_mrid: str
    reading_type: str
    ts: str
    value: str
    quality: str


class QualityNote(NamedTuple):
    """One ReadingQuality: its ReadingQualityType code and its attributes as sent."""

    code: str
    comment: str | None = None
    source: str | None = None
    time_stamp: str | None = None


@dataclass(frozen=True)
class QualityText:
    """How a reading's qualities are one text: the ReadingQualityType codes joined by
    commas (``""`` = valid), and, when a reading came with more (a ReadingQuality's
    comment, source or timeStamp, a register's reason), ``marker`` then whatever
    ``pack`` makes of it. The store owns the format (``mdm/qualities.py``); the hub
    hands it to the codec, which only ever calls ``pack`` and ``unpack`` for readings
    that carry notes."""

    marker: str
    pack: Callable[[Sequence[QualityNote], str | None], str]
    unpack: Callable[[str], tuple[Sequence[QualityNote], str | None]]
