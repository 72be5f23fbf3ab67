"""Reading a MeterReadings profile as flat readings: a parsed tree, or a stream of events.

One reader, two inputs (:class:`MeterReadingsReader`):

* :meth:`~MeterReadingsReader.read_tree` takes a parsed ``MeterReadings`` element. Its
  fast path reads a regular document (interval blocks of timeStamp + value, no quality
  codes, no register Readings) with a few lxml calls per block instead of a loop over
  its elements; anything else, or any error, is read again by the exact path, which
  names the xpath of every offending element. The fast path changes nothing unless it
  succeeds, and gives what the exact path gives (tests/unit/fuzz/test_meter_readings_codec.py).
* :meth:`~MeterReadingsReader.read_events` takes ``end`` events of a streamed document
  (``cim_schemas.xml.iterparse(..., tags=STREAM_TAGS)``) and frees the elements per
  IntervalBlock and MeterReading, so memory holds at most one block
  (``max_block_readings``) and one chunk (``chunk_rows``) whatever the file size.

Both yield :class:`~cim_schemas.meter_readings.values.Chunk` s ending with complete
MeterReadings, in the same cuts. Readings are checked here: timestamp with zone (kept
as the UTC instant), finite decimal value, ReadingType and ReadingQualityType codes, a
Meter named by mRID or Names/name; up to :data:`MAX_ERRORS` errors are collected with
their xpaths and raised together as :class:`~cim_schemas.errors.PayloadInvalid` after
the last element (nothing is half-read: the caller applies nothing then). The input is
expected schema-valid (the pipeline validates first).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Final, cast

from lxml import etree

from cim_schemas.codes.quality import ReadingQualityType
from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.errors import ErrorDetail, PayloadInvalid
from cim_schemas.meter_readings.values import (
    Block,
    BlockReading,
    Chunk,
    MeterName,
    QualityNote,
    QualityText,
)
from cim_schemas.namespaces import profile_ns

NS: Final = "{" + profile_ns("MeterReadings") + "}"
T_ROOT: Final = NS + "MeterReadings"
T_METER_READING: Final = NS + "MeterReading"
T_BLOCK: Final = NS + "IntervalBlocks"
T_INTERVAL: Final = NS + "IntervalReadings"
T_READING: Final = NS + "Readings"
T_READING_TYPE: Final = NS + "ReadingType"
T_TS: Final = NS + "timeStamp"
T_VALUE: Final = NS + "value"
T_QUALITIES: Final = NS + "ReadingQualities"
T_QUALITY_TYPE: Final = NS + "ReadingQualityType"
T_REASON: Final = NS + "reason"
T_COMMENT: Final = NS + "comment"
T_SOURCE: Final = NS + "source"
T_METER: Final = NS + "Meter"
T_MRID: Final = NS + "mRID"
T_NAMES: Final = NS + "Names"
T_NAME: Final = NS + "name"
T_NAME_TYPE: Final = NS + "NameType"

#: the elements whose ``end`` events the reader consumes (for a tag-filtered iterparse)
STREAM_TAGS: Final = (T_METER_READING, T_BLOCK, T_INTERVAL, T_READING)
#: errors collected before the reader stops listing them
MAX_ERRORS: Final = 100
#: parsed timestamps kept per reader family before the cache starts again
_STAMPS_KEPT: Final = 100_000

XmlEvents = Iterable[tuple[str, etree._Element]]


class _Invalid(Exception):
    """A content error; ``where`` is appended to the xpath of the element it concerns."""

    def __init__(self, code: str, reason: str, where: str = "") -> None:
        self.code = code
        self.reason = reason
        self.where = where


def parse_timestamp(text: str | None) -> datetime:
    """An ``xs:dateTime`` with zone as an aware UTC instant; 2006 otherwise."""
    if not text:
        raise _Invalid("2006", "timestamp missing", "/timeStamp")
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Invalid("2006", f"timestamp {text!r} is not ISO 8601", "/timeStamp") from None
    if ts.tzinfo is None:
        raise _Invalid("2006", f"timestamp {text!r} has no zone offset", "/timeStamp")
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise _Invalid(
            "2006",
            f"timestamp {text!r} is outside the range of instants (years 0001-9999 in UTC)",
            "/timeStamp",
        ) from None


def parse_value(text: str | None) -> Decimal:
    """A finite decimal number (surrounding blanks allowed); 2005 otherwise."""
    if text is None:
        raise _Invalid("2005", "value missing", "/value")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise _Invalid("2005", f"value {text!r} is not a decimal number", "/value") from None
    if not value.is_finite():
        raise _Invalid("2005", f"value {text!r} is not a finite number", "/value")
    return value


def meter_name(element: etree._Element | None) -> MeterName | None:
    """A Meter element's name: its mRID, else its first Names/name; None without one."""
    if element is None:
        return None
    mrid = element.findtext(T_MRID)
    if mrid and mrid.strip():
        return MeterName(mrid=mrid.strip())
    names = element.find(T_NAMES)
    if names is not None:
        name = names.findtext(T_NAME)
        if name and name.strip():
            name_type = names.find(T_NAME_TYPE)
            kind = name_type.findtext(T_NAME) if name_type is not None else None
            return MeterName(name=name.strip(), name_type=kind)
    return None


def _stamp(stamps: dict[str, datetime], text: str) -> datetime:
    ts = parse_timestamp(text)
    if len(stamps) > _STAMPS_KEPT:
        stamps.clear()
    stamps[text] = ts
    return ts


@dataclass
class MeterReadingsReader:
    """Reads one MeterReadings document (tree or stream) into chunks of flat readings.

    ``base_xpath`` is the xpath of the MeterReadings element (errors are named from it);
    ``qualities`` the store's quality text, for readings whose ReadingQualities carry
    more than their code. After reading, ``meters`` holds every MeterReading's meter by
    item and ``readings_seen`` how many readings were read.
    """

    base_xpath: str
    qualities: QualityText
    max_block_readings: int = 200_000
    chunk_rows: int = 50_000
    errors: list[ErrorDetail] = field(default_factory=list)
    meters: dict[int, MeterName] = field(default_factory=dict)
    readings_seen: int = 0
    #: caches shared by the readers of one route: a fleet's messages repeat the same
    #: instants and ReadingTypes (plain dicts: safe under the GIL, cleared when large)
    stamps: dict[str, datetime] = field(default_factory=dict)
    rt_cache: dict[str, str] = field(default_factory=dict)

    # -- the interface ----------------------------------------------------------------------

    def read_tree(self, payload: etree._Element) -> Iterator[Chunk]:
        """The readings of a parsed MeterReadings element: the fast path when the document
        is regular, else the exact path (the same chunks, or the same errors)."""
        fast = self._tree_fast(payload)
        if fast is not None:
            yield from fast
            return
        events = etree.iterwalk(payload, events=("end",), tag=STREAM_TAGS)
        yield from self._read(events, free=False)

    def read_events(self, events: XmlEvents) -> Iterator[Chunk]:
        """The readings of a streamed document's ``end`` events (``STREAM_TAGS``); the
        elements read are freed as the reader goes."""
        return self._read(events, free=True)

    # -- checks -----------------------------------------------------------------------------

    def _error(self, exc: _Invalid, xpath: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(ErrorDetail(exc.code, exc.reason, xpath=xpath + exc.where))

    def _reading_type(self, element: etree._Element | None) -> str:
        code = element.get("ref") if element is not None else None
        if not code:
            raise _Invalid("2003", "ReadingType ref missing", "/ReadingType")
        known = self.rt_cache.get(code)
        if known is None:
            try:
                known = str(ReadingType.parse(code))
            except ValueError as exc:
                raise _Invalid("2003", f"ReadingType {code!r}: {exc}", "/ReadingType") from None
            self.rt_cache[code] = known
        return known

    def _quality(self, element: etree._Element, reason: str | None = None) -> str:
        """The quality text of a reading: its codes, and (``qualities.pack``) each
        ReadingQuality's comment, source and timeStamp and a register's reason, as sent."""
        codes: list[str] = []
        noted = False  # a ReadingQualities with more than its type
        for n, rq in enumerate(element.iterchildren(T_QUALITIES), 1):
            qt = rq.find(T_QUALITY_TYPE)
            code = qt.get("ref") if qt is not None else None
            try:
                codes.append(str(ReadingQualityType.parse(code or "")))
            except ValueError as exc:
                raise _Invalid(
                    "2010",
                    f"ReadingQualityType {code!r}: {exc}",
                    f"/ReadingQualities[{n}]/ReadingQualityType",
                ) from None
            if len(rq) > 1:
                noted = True
        if not noted and reason is None:  # the common case: the codes only
            return ",".join(codes)
        notes = [
            QualityNote(code, rq.findtext(T_COMMENT), rq.findtext(T_SOURCE), rq.findtext(T_TS))
            for code, rq in zip(codes, element.iterchildren(T_QUALITIES), strict=True)
        ]
        return self.qualities.pack(notes, reason)

    # -- the fast path (trees) --------------------------------------------------------------

    def _tree_fast(self, payload: etree._Element) -> list[Chunk] | None:
        """The regular shape read without per-element Python work: a block's timestamps
        and values come as two lists of texts (lxml's tag-filtered iteration), so a
        meter-day costs a few calls instead of a loop over 96 elements and their children.
        Only interval blocks with one timestamp and one value per reading, no quality
        codes, no register Readings, every MeterReading with its Meter. Anything else (or
        any error) is None, and nothing of this reader has changed then. The chunks are
        cut where the exact path cuts them."""
        if payload.tag != T_ROOT:
            return None
        stamps = self.stamps
        chunks: list[Chunk] = []
        blocks: list[Block] = []
        meters: list[tuple[int, MeterName]] = []
        in_chunk = seen = 0
        limit = self.max_block_readings
        new = tuple.__new__
        try:
            for item, mr in enumerate(payload.iterchildren(T_METER_READING), 1):
                if mr.find(T_READING) is not None:
                    return None
                name = meter_name(mr.find(T_METER))
                if name is None:
                    return None
                for block in mr.iterchildren(T_BLOCK):
                    times = [e.text for e in block.iter(T_TS)]
                    texts = [e.text for e in block.iter(T_VALUE)]
                    size = len(times)
                    # every child but the last (ReadingType) a reading (so a timeStamp each:
                    # at most one a reading, by the schema), as many values, no quality
                    # codes (their timeStamps would count too); the parser joins an
                    # element's text into one node
                    if (
                        size >= limit
                        or len(texts) != size
                        or len(block) != size + 1
                        or block[size].tag != T_READING_TYPE
                        or next(block.iter(T_QUALITIES), None) is not None
                        or None in times
                        or None in texts
                    ):
                        return None
                    times_, texts_ = cast(list[str], times), cast(list[str], texts)
                    joined = "".join(texts_)
                    if "n" in joined or "N" in joined:  # NaN, Infinity: not finite
                        return None
                    rt = self._reading_type(block.find(T_READING_TYPE))
                    found = list(map(stamps.get, times_))  # a fleet repeats its instants
                    when = (
                        cast(list[datetime], found)
                        if None not in found
                        else [w or _stamp(stamps, t) for w, t in zip(found, times_, strict=True)]
                    )
                    values = list(map(Decimal, texts_))  # surrounding blanks allowed, as strip
                    readings: list[BlockReading] = list(zip(when, values, repeat("")))
                    blocks.append(new(Block, (item, rt, readings)))
                    in_chunk += size
                    seen += size
                meters.append((item, name))
                if in_chunk >= self.chunk_rows:
                    chunks.append(Chunk(blocks, meters))
                    blocks, meters, in_chunk = [], [], 0
        except (_Invalid, InvalidOperation, ValueError):
            return None
        chunks.append(Chunk(blocks, meters))
        for chunk in chunks:
            self.meters.update(chunk.meters)
        self.readings_seen += seen
        return chunks

    # -- the exact path (trees and streams) -------------------------------------------------

    def _mr_xpath(self, item: int) -> str:
        return f"{self.base_xpath}/MeterReading[{item}]"

    def _free(self, element: etree._Element) -> None:
        """Stream mode: drop what was read, so memory stays bounded.

        Only earlier siblings of the same kind go: a MeterReading's Meter (which
        follows its IntervalBlocks and precedes its Readings) must survive until
        the MeterReading ends.
        """
        element.clear()
        previous = element.getprevious()
        while previous is not None and previous.tag == element.tag:
            before = previous.getprevious()
            element.getparent().remove(previous)  # type: ignore[union-attr]
            previous = before

    def _read(self, events: XmlEvents, *, free: bool) -> Iterator[Chunk]:
        """Hot path: one event per IntervalReading, no string building unless there is
        an error (xpaths are made from the positions then)."""
        item = 1  # position of the MeterReading being read
        block = 1  # position of the IntervalBlock inside it
        interval = 1  # position of the IntervalReading inside the block
        register = 1
        pending: list[BlockReading] = []  # the open block's readings
        blocks: list[Block] = []
        in_chunk = 0  # readings in ``blocks``
        meters: list[tuple[int, MeterName]] = []
        append = pending.append
        new = tuple.__new__
        # a fleet's files repeat the same instants for every meter: parse each text once
        stamps = self.stamps
        release = self._free if free else None
        for _event, el in events:
            tag = el.tag
            if tag == T_INTERVAL:
                ts_text = value_text = None
                quality = ""
                for child in el:
                    ctag = child.tag
                    if ctag == T_TS:
                        ts_text = child.text
                    elif ctag == T_VALUE:
                        value_text = child.text
                    elif ctag == T_QUALITIES and not quality:
                        quality = "?"
                try:
                    if quality:
                        quality = self._quality(el)
                    ts = stamps.get(ts_text or "")
                    if ts is None:
                        ts = parse_timestamp(ts_text)
                        if len(stamps) > _STAMPS_KEPT:
                            stamps.clear()
                        stamps[ts_text or ""] = ts
                    append((ts, parse_value(value_text), quality))
                except _Invalid as exc:
                    self._error(
                        exc,
                        f"{self._mr_xpath(item)}/IntervalBlocks[{block}]"
                        f"/IntervalReadings[{interval}]",
                    )
                interval += 1
                if interval > self.max_block_readings:
                    raise PayloadInvalid(
                        f"IntervalBlock has more than {self.max_block_readings} readings",
                        code="2013",
                        xpath=f"{self._mr_xpath(item)}/IntervalBlocks[{block}]",
                    )
            elif tag == T_BLOCK:
                try:
                    rt = self._reading_type(el.find(T_READING_TYPE))
                except _Invalid as exc:
                    self._error(exc, f"{self._mr_xpath(item)}/IntervalBlocks[{block}]")
                else:
                    blocks.append(new(Block, (item, rt, pending)))
                    in_chunk += len(pending)
                    self.readings_seen += len(pending)
                pending = []
                append = pending.append
                block += 1
                interval = 1
                if release is not None:
                    release(el)
            elif tag == T_READING:
                try:
                    rt = self._reading_type(el.find(T_READING_TYPE))
                    ts = parse_timestamp(el.findtext(T_TS))
                    value = parse_value(el.findtext(T_VALUE))
                    quality = self._quality(el, el.findtext(T_REASON))
                except _Invalid as exc:
                    self._error(exc, f"{self._mr_xpath(item)}/Readings[{register}]")
                else:
                    blocks.append(new(Block, (item, rt, [(ts, value, quality)])))
                    in_chunk += 1
                    self.readings_seen += 1
                register += 1
                if release is not None:
                    release(el)
            elif tag == T_METER_READING:
                name = meter_name(el.find(T_METER))
                if name is None:
                    self._error(
                        _Invalid("2011", "MeterReading names no Meter (mRID or Names/name)"),
                        f"{self._mr_xpath(item)}/Meter",
                    )
                else:
                    self.meters[item] = name
                    meters.append((item, name))
                item += 1
                block = interval = register = 1
                if release is not None:
                    release(el)
                # chunks end with complete MeterReadings: every row's meter is known
                if in_chunk >= self.chunk_rows:
                    yield Chunk(blocks, meters)
                    blocks, meters, in_chunk = [], [], 0
        if self.errors:
            raise PayloadInvalid(
                f"{len(self.errors)} invalid reading(s): {self.errors[0].reason}",
                errors=list(self.errors),
            )
        yield Chunk(blocks, meters)
