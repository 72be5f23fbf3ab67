"""The MeterReadings codec: readings in and out of the IEC 61968-9 MeterReadings profile.

Every reader and writer of MeterReadings readings in amihub uses this package; it is
pure (no IO but the streams it is handed) and imports nothing of the hub or the domain:
it yields and takes its own small values (:mod:`.values`), which the hub turns into the
domain's.

Reading (:mod:`.reader`)::

    reader = MeterReadingsReader("/CreatedMeterReadings/Payload/MeterReadings", qualities)
    for chunk in reader.read_tree(payload):        # a parsed MeterReadings element
        ...                                        # chunk.blocks, chunk.meters
    for chunk in reader.read_events(events):       # iterparse(..., tags=STREAM_TAGS)
        ...

Writing (:mod:`.writer`)::

    count = write_readings(xf, rows, qualities, raw=out)   # into an lxml xmlfile
    element, count = render_readings(rows, qualities)      # the same, as a tree

Each has its fast path inside (a regular tree read in a few calls per block; reply
text written as bytes between the writer's flushes) and falls back to, or equals, the
exact path; ``tests/unit/fuzz/test_meter_readings_codec.py`` generates documents and
rows to show it. The whole profile as typed objects (events, pending calculations,
ReadingType definitions) is :mod:`cim_schemas.profiles.meter_readings`.
"""

from cim_schemas.meter_readings.reader import (
    MAX_ERRORS,
    STREAM_TAGS,
    MeterReadingsReader,
    XmlEvents,
)
from cim_schemas.meter_readings.values import (
    Block,
    BlockReading,
    Chunk,
    MeterName,
    QualityNote,
    QualityText,
    TextRow,
)
from cim_schemas.meter_readings.writer import (
    Row,
    is_interval,
    render_readings,
    value_text,
    write_readings,
)

__all__ = [
    "MAX_ERRORS",
    "STREAM_TAGS",
    "Block",
    "BlockReading",
    "Chunk",
    "MeterName",
    "MeterReadingsReader",
    "QualityNote",
    "QualityText",
    "Row",
    "TextRow",
    "XmlEvents",
    "is_interval",
    "render_readings",
    "value_text",
    "write_readings",
]
