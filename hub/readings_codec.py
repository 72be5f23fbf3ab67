"""The MeterReadings codec's values as the domain's, and the domain's quality text for it.

The codec (:mod:`cim_schemas.meter_readings`) imports nothing of the domain: it yields
its own chunks and meter names and takes the quality text format as a value. This
module converts one block or one meter at a time (never one reading at a time), and
hands the codec the store's format (:mod:`mdm.qualities`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from cim_schemas.meter_readings import Chunk, MeterName, QualityNote, QualityText
from mdm.commands import MeterItem, ReadingFeedChunk
from mdm.model import DeviceRef
from mdm.ports import ReadingBlock
from mdm.qualities import NOTES, Quality, pack, unpack


def _pack(notes: Sequence[QualityNote], reason: str | None) -> str:
    return pack([Quality(*note) for note in notes], reason)


def _unpack(text: str) -> tuple[Sequence[QualityNote], str | None]:
    found = unpack(text)
    notes = [QualityNote(q.code, q.comment, q.source, q.time_stamp) for q in found.qualities]
    return notes, found.reason


#: the store's quality text (mdm/qualities.py), as the codec reads and writes it
STORED_QUALITIES: Final = QualityText(NOTES, _pack, _unpack)


def device_ref(name: MeterName) -> DeviceRef:
    """The codec's meter name as the domain's reference."""
    if name.mrid is not None:
        return DeviceRef(mrid=name.mrid)
    return DeviceRef(name=name.name, name_type=name.name_type)


def feed(chunks: Iterator[Chunk]) -> Iterator[ReadingFeedChunk]:
    """The codec's chunks as the domain's reading feed."""
    new = tuple.__new__
    for chunk in chunks:
        yield ReadingFeedChunk(
            [new(ReadingBlock, block) for block in chunk.blocks],
            [MeterItem(item, device_ref(name)) for item, name in chunk.meters],
        )
