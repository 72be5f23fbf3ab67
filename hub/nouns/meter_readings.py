"""MeterReadings: create/created store readings, streamed; get answers from the store.

The reading extractor consumes lxml ``end`` events, so the same code serves a
message parsed as a tree (``etree.iterwalk``) and a file streamed with
``iterparse`` (elements freed as they pass: memory stays bounded). Readings are
checked here (timestamp with zone, decimal value, ReadingType and quality codes)
with the xpath of every offending element; meters are resolved by the store in
bulk, so an unknown meter is reported per MeterReading and the rest is stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Final, cast

from lxml import etree

from cim_schemas.codes.quality import ReadingQualityType
from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.errors import BatchConflict, ErrorDetail, PayloadInvalid, named_object
from cim_schemas.namespaces import profile_ns
from hub.routing import MessageFrame, RouteContext, RouteResult, XmlEvents
from mdm.commands import MeterItem, ReadingFeedChunk, StoreMeterReadings
from mdm.model import DeviceRef
from mdm.ports import ReadingBlock, StagingResult, UnitOfWork
from mdm.qualities import Quality, pack

NS: Final = "{" + profile_ns("MeterReadings") + "}"
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

STREAM_TAGS: Final = (T_METER_READING, T_BLOCK, T_INTERVAL, T_READING)
MAX_ERRORS: Final = 100


class _Invalid(Exception):
    """A content error; ``where`` is appended to the xpath of the element it concerns."""

    def __init__(self, code: str, reason: str, where: str = "") -> None:
        self.code = code
        self.reason = reason
        self.where = where


def parse_timestamp(text: str | None) -> datetime:
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
    if text is None:
        raise _Invalid("2005", "value missing", "/value")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise _Invalid("2005", f"value {text!r} is not a decimal number", "/value") from None
    if not value.is_finite():
        raise _Invalid("2005", f"value {text!r} is not a finite number", "/value")
    return value


def meter_ref(element: etree._Element | None) -> DeviceRef | None:
    """A Meter/EndDevice/UsagePoint element to a reference: mRID, else first Names/name."""
    if element is None:
        return None
    mrid = element.findtext(T_MRID)
    if mrid and mrid.strip():
        return DeviceRef(mrid=mrid.strip())
    names = element.find(T_NAMES)
    if names is not None:
        name = names.findtext(T_NAME)
        if name and name.strip():
            name_type = names.find(T_NAME_TYPE)
            kind = name_type.findtext(T_NAME) if name_type is not None else None
            return DeviceRef(name=name.strip(), name_type=kind)
    return None


def _stamp(stamps: dict[str, datetime], text: str) -> datetime:
    ts = parse_timestamp(text)
    if len(stamps) > 100_000:
        stamps.clear()
    stamps[text] = ts
    return ts


@dataclass
class ReadingExtractor:
    """Turns MeterReadings end events into feed chunks; collects content errors.

    Hot path: one event per IntervalReading, no string building unless there is
    an error (xpaths are made from the positions then). Elements are freed per
    IntervalBlock and MeterReading in stream mode, so memory holds at most one
    block (``max_block_readings``) plus one chunk of rows.
    """

    base_xpath: str
    free_elements: bool
    max_block_readings: int
    chunk_rows: int
    errors: list[ErrorDetail] = field(default_factory=list)
    meters: dict[int, DeviceRef] = field(default_factory=dict)
    readings_seen: int = 0
    #: caches shared by the extractors of one route: a fleet's messages repeat the same
    #: instants and ReadingTypes (plain dicts: safe under the GIL, cleared when large)
    stamps: dict[str, datetime] = field(default_factory=dict)
    rt_cache: dict[str, str] = field(default_factory=dict)

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
        """The stored quality text of a reading: its codes, and (mdm/qualities.py) each
        ReadingQuality's comment, source and timeStamp and a register's reason, as sent."""
        codes: list[str] = []
        noted: list[etree._Element] = []  # ReadingQualities with more than their type
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
                noted.append(rq)
        if not noted and reason is None:  # the common case: the codes only
            return ",".join(codes)
        qualities = [
            Quality(code, rq.findtext(T_COMMENT), rq.findtext(T_SOURCE), rq.findtext(T_TS))
            for code, rq in zip(codes, element.iterchildren(T_QUALITIES), strict=True)
        ]
        return pack(qualities, reason)

    def _free(self, element: etree._Element) -> None:
        """Stream mode: drop what was read, so memory stays bounded.

        Only earlier siblings of the same kind go: a MeterReading's Meter (which
        follows its IntervalBlocks and precedes its Readings) must survive until
        the MeterReading ends.
        """
        if self.free_elements:
            element.clear()
            previous = element.getprevious()
            while previous is not None and previous.tag == element.tag:
                before = previous.getprevious()
                element.getparent().remove(previous)  # type: ignore[union-attr]
                previous = before

    def tree_chunk(self, payload: etree._Element) -> ReadingFeedChunk | None:
        """The readings of a parsed MeterReadings element in one chunk, without per-element
        Python work: a block's timestamps and values come as two lists of texts (lxml's
        tag-filtered iteration), so a meter-day costs a few calls instead of a loop over
        96 elements and their children. Only the regular shape: interval blocks with one
        timestamp and one value per reading, no quality codes, no register Readings.
        Anything else (or any error) is None, and :meth:`chunks` reads the same tree with
        the exact xpath of every error. Nothing of this extractor changes unless the chunk
        is returned."""
        if payload.tag != NS + "MeterReadings":
            return None
        stamps = self.stamps
        blocks: list[ReadingBlock] = []
        meters: list[MeterItem] = []
        seen = 0
        limit = self.max_block_readings
        try:
            for item, mr in enumerate(payload.iterchildren(T_METER_READING), 1):
                if mr.find(T_READING) is not None:
                    return None
                ref = meter_ref(mr.find(T_METER))
                if ref is None:
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
                    blocks.append(ReadingBlock(item, rt, list(zip(when, values, repeat("")))))
                    seen += size
                meters.append(MeterItem(item, ref))
        except (_Invalid, InvalidOperation, ValueError):
            return None
        self.meters.update((m.item, m.ref) for m in meters)
        self.readings_seen += seen
        return ReadingFeedChunk(blocks, meters)

    def _mr_xpath(self, item: int) -> str:
        return f"{self.base_xpath}/MeterReading[{item}]"

    def chunks(self, events: XmlEvents) -> Iterator[ReadingFeedChunk]:
        item = 1  # position of the MeterReading being read
        block = 1  # position of the IntervalBlock inside it
        interval = 1  # position of the IntervalReading inside the block
        register = 1
        pending: list[tuple[datetime, Decimal, str]] = []  # the open block's readings
        blocks: list[ReadingBlock] = []
        in_chunk = 0  # readings in ``blocks``
        meters: list[MeterItem] = []
        append = pending.append
        # a fleet's files repeat the same instants for every meter: parse each text once
        stamps = self.stamps
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
                        if len(stamps) > 100_000:
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
                    blocks.append(ReadingBlock(item, rt, pending))
                    in_chunk += len(pending)
                    self.readings_seen += len(pending)
                pending = []
                append = pending.append
                block += 1
                interval = 1
                self._free(el)
            elif tag == T_READING:
                try:
                    rt = self._reading_type(el.find(T_READING_TYPE))
                    ts = parse_timestamp(el.findtext(T_TS))
                    value = parse_value(el.findtext(T_VALUE))
                    quality = self._quality(el, el.findtext(T_REASON))
                except _Invalid as exc:
                    self._error(exc, f"{self._mr_xpath(item)}/Readings[{register}]")
                else:
                    blocks.append(ReadingBlock(item, rt, [(ts, value, quality)]))
                    in_chunk += 1
                    self.readings_seen += 1
                register += 1
                self._free(el)
            elif tag == T_METER_READING:
                ref = meter_ref(el.find(T_METER))
                if ref is None:
                    self._error(
                        _Invalid("2011", "MeterReading names no Meter (mRID or Names/name)"),
                        f"{self._mr_xpath(item)}/Meter",
                    )
                else:
                    self.meters[item] = ref
                    meters.append(MeterItem(item, ref))
                item += 1
                block = interval = register = 1
                self._free(el)
                # chunks end with complete MeterReadings: every row's meter is known
                if in_chunk >= self.chunk_rows:
                    yield ReadingFeedChunk(blocks, meters)
                    blocks, meters, in_chunk = [], [], 0
        if self.errors:
            raise PayloadInvalid(
                f"{len(self.errors)} invalid reading(s): {self.errors[0].reason}",
                errors=list(self.errors),
            )
        yield ReadingFeedChunk(blocks, meters)


@dataclass
class StoreMeterReadingsRoute:
    """create / created MeterReadings: store readings (bulk, any size)."""

    max_block_readings: int = 200_000
    chunk_rows: int = 50_000
    noun: str = "MeterReadings"
    verbs: frozenset[str] = frozenset({"create", "created", "change", "changed"})
    streaming: bool = True
    stream_tags: tuple[str, ...] = STREAM_TAGS
    _stamps: dict[str, datetime] = field(default_factory=dict)
    _reading_types: dict[str, str] = field(default_factory=dict)

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        if frame.events is None and frame.payload is None:
            raise PayloadInvalid(
                "MeterReadings needs a Payload", code="1009", xpath=f"/{frame.root_name}/Payload"
            )
        feed = _MessageFeed(self, frame)
        staged: StagingResult = ctx.bus.handle(
            StoreMeterReadings(ctx.utility_id, feed), uow, ctx.handler
        )
        extractor = feed.extractor
        if staged.duplicates:
            errors = [
                ErrorDetail(
                    "2004",
                    f"reading for {extractor.meters.get(d.item, '?')} "
                    f"{d.reading_type} at {d.ts.isoformat()} occurs {d.count} times",
                    xpath=f"{frame.payload_xpath}/MeterReading[{d.item}]",
                )
                for d in staged.duplicates[:MAX_ERRORS]
            ]
            raise PayloadInvalid(
                f"{len(staged.duplicates)} duplicate reading(s) in the message; nothing stored",
                errors=errors,
            )
        result = RouteResult(
            applied=staged.stats.total,
            counts={
                "readings": extractor.readings_seen,
                "stored": staged.stats.stored,
                "superseded": staged.stats.superseded,
                "unchanged": staged.stats.unchanged,
                "unknown_meters": len(staged.unknown_items),
            },
        )
        result.errors.extend(
            _unknown_meter(frame, extractor.meters.get(item), item)
            for item in staged.unknown_items[:MAX_ERRORS]
        )
        return result

    # -- many small messages in one store write (hub.routing.BatchRoute) ----------------

    def prepare(self, frame: MessageFrame) -> _Prepared:
        if frame.payload is None or frame.events is not None:
            raise PayloadInvalid(
                "MeterReadings needs a Payload", code="1009", xpath=f"/{frame.root_name}/Payload"
            )
        extractor = ReadingExtractor(
            frame.payload_xpath,
            False,
            self.max_block_readings,
            chunk_rows=1 << 62,
            stamps=self._stamps,
            rt_cache=self._reading_types,
        )
        fast = extractor.tree_chunk(frame.payload)
        if fast is not None:
            return _Prepared(extractor, [fast])
        events = etree.iterwalk(frame.payload, events=("end",), tag=STREAM_TAGS)
        chunks = list(extractor.chunks(events))  # raises PayloadInvalid with xpaths
        return _Prepared(extractor, chunks)

    def handle_batch(
        self,
        prepared: Sequence[tuple[MessageFrame, object]],
        ctx: RouteContext,
        uow: UnitOfWork,
    ) -> list[RouteResult]:
        """One store write for all: items are numbered on after each other message's."""
        offsets: list[int] = []
        feed: list[ReadingFeedChunk] = []
        offset = 0
        for _frame, data in prepared:
            assert isinstance(data, _Prepared)
            offsets.append(offset)
            for chunk in data.chunks:
                feed.append(
                    ReadingFeedChunk(
                        [
                            ReadingBlock(b.item + offset, b.reading_type, b.readings)
                            for b in chunk.blocks
                        ],
                        [MeterItem(m.item + offset, m.ref) for m in chunk.meters],
                    )
                )
            offset += len(data.extractor.meters)
        staged: StagingResult = ctx.bus.handle(
            StoreMeterReadings(ctx.utility_id, feed), uow, ctx.handler
        )
        if staged.duplicates:
            raise BatchConflict(f"{len(staged.duplicates)} reading(s) repeat in the batch")
        unknown = set(staged.unknown_items)
        results = []
        for (frame, data), start in zip(prepared, offsets, strict=True):
            assert isinstance(data, _Prepared)
            count = len(data.extractor.meters)
            mine = sorted(i - start for i in unknown if start < i <= start + count)
            gone = set(mine)
            lost = sum(len(b.readings) for c in data.chunks for b in c.blocks if b.item in gone)
            seen = data.extractor.readings_seen
            result = RouteResult(
                applied=seen - lost,
                counts={
                    "readings": seen,
                    "unknown_meters": len(mine),
                    "batch_stored": staged.stats.stored,
                    "batch_superseded": staged.stats.superseded,
                    "batch_unchanged": staged.stats.unchanged,
                },
            )
            result.errors.extend(
                _unknown_meter(frame, data.extractor.meters.get(i), i) for i in mine[:MAX_ERRORS]
            )
            results.append(result)
        return results


class _MessageFeed:
    """A message's readings as a :class:`mdm.ports.ReadingFeed`: each :meth:`open` reads
    them with a new extractor (a tree walked again, a streamed file parsed again), whose
    meters, counts and errors are those of the last reading."""

    queries_store = False

    def __init__(self, route: StoreMeterReadingsRoute, frame: MessageFrame) -> None:
        self._route = route
        self._frame = frame
        self._opened = False
        self.extractor = self._extractor()

    @property
    def rereadable(self) -> bool:
        return self._frame.events is None or self._frame.reread is not None

    def _extractor(self) -> ReadingExtractor:
        route = self._route
        return ReadingExtractor(
            self._frame.payload_xpath,
            self._frame.events is not None,
            route.max_block_readings,
            route.chunk_rows,
            stamps=route._stamps,
            rt_cache=route._reading_types,
        )

    def open(self) -> Iterator[ReadingFeedChunk]:
        frame = self._frame
        events: XmlEvents
        if frame.events is None:
            assert frame.payload is not None
            events = etree.iterwalk(frame.payload, events=("end",), tag=STREAM_TAGS)
        elif not self._opened:
            events = frame.events
        elif frame.reread is not None:
            events = frame.reread()
        else:
            raise RuntimeError("a streamed message without reread is read once")
        if self._opened:
            self.extractor = self._extractor()
        self._opened = True
        return self.extractor.chunks(events)


@dataclass(frozen=True)
class _Prepared:
    extractor: ReadingExtractor
    chunks: list[ReadingFeedChunk]


def _unknown_meter(frame: MessageFrame, ref: DeviceRef | None, item: int) -> ErrorDetail:
    return ErrorDetail(
        "2001",
        f"unknown meter {ref}; its readings were not stored",
        xpath=f"{frame.payload_xpath}/MeterReading[{item}]/Meter",
        **(named_object(ref, "Meter") if ref else {}),
    )
