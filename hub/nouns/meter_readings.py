"""MeterReadings: create/created store readings, streamed.

The MeterReadings codec (:mod:`cim_schemas.meter_readings`) reads the document -- a
parsed tree, or the end events of a streamed file whose elements it frees as it goes
-- into chunks of readings and meter names, checking every reading with the xpath of
every offending element. This route turns the chunks into the domain's feed and hands
it to the bus; meters are resolved by the store in bulk, so an unknown meter is
reported per MeterReading and the rest is stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cim_schemas.errors import BatchConflict, ErrorDetail, PayloadInvalid, named_object
from cim_schemas.meter_readings import MAX_ERRORS, STREAM_TAGS, MeterReadingsReader
from hub.readings_codec import STORED_QUALITIES, device_ref, feed
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.commands import MeterItem, ReadingFeedChunk, StoreMeterReadings
from mdm.model import DeviceRef
from mdm.ports import ReadingBlock, StagingResult, UnitOfWork


def _meter(reader: MeterReadingsReader, item: int) -> DeviceRef | None:
    name = reader.meters.get(item)
    return device_ref(name) if name is not None else None


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
        message_feed = _MessageFeed(self, frame)
        staged: StagingResult = ctx.bus.handle(
            StoreMeterReadings(ctx.utility_id, message_feed), uow, ctx.handler
        )
        extractor = message_feed.extractor
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
            _unknown_meter(frame, _meter(extractor, item), item)
            for item in staged.unknown_items[:MAX_ERRORS]
        )
        return result

    # -- many small messages in one store write (hub.routing.BatchRoute) ----------------

    def prepare(self, frame: MessageFrame) -> _Prepared:
        if frame.payload is None or frame.events is not None:
            raise PayloadInvalid(
                "MeterReadings needs a Payload", code="1009", xpath=f"/{frame.root_name}/Payload"
            )
        extractor = self._reader(frame.payload_xpath, 1 << 62)
        chunks = list(feed(extractor.read_tree(frame.payload)))  # PayloadInvalid with xpaths
        return _Prepared(extractor, chunks)

    def _reader(self, base_xpath: str, chunk_rows: int) -> MeterReadingsReader:
        return MeterReadingsReader(
            base_xpath,
            STORED_QUALITIES,
            self.max_block_readings,
            chunk_rows,
            stamps=self._stamps,
            rt_cache=self._reading_types,
        )

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
                _unknown_meter(frame, _meter(data.extractor, i), i) for i in mine[:MAX_ERRORS]
            )
            results.append(result)
        return results


class _MessageFeed:
    """A message's readings as a :class:`mdm.ports.ReadingFeed`: each :meth:`open` reads
    them with a new reader (a tree walked again, a streamed file parsed again), whose
    meters, counts and errors are those of the last reading."""

    queries_store = False

    def __init__(self, route: StoreMeterReadingsRoute, frame: MessageFrame) -> None:
        self._route = route
        self._frame = frame
        self._opened = False
        self.extractor = self._reader()

    @property
    def rereadable(self) -> bool:
        return self._frame.events is None or self._frame.reread is not None

    def _reader(self) -> MeterReadingsReader:
        return self._route._reader(self._frame.payload_xpath, self._route.chunk_rows)

    def open(self) -> Iterator[ReadingFeedChunk]:
        frame = self._frame
        if self._opened:
            self.extractor = self._reader()
        if frame.events is None:
            assert frame.payload is not None
            chunks = self.extractor.read_tree(frame.payload)
        elif not self._opened:
            chunks = self.extractor.read_events(frame.events)
        elif frame.reread is not None:
            chunks = self.extractor.read_events(frame.reread())
        else:
            raise RuntimeError("a streamed message without reread is read once")
        self._opened = True
        return feed(chunks)


@dataclass(frozen=True)
class _Prepared:
    extractor: MeterReadingsReader
    chunks: list[ReadingFeedChunk]


def _unknown_meter(frame: MessageFrame, ref: DeviceRef | None, item: int) -> ErrorDetail:
    return ErrorDetail(
        "2001",
        f"unknown meter {ref}; its readings were not stored",
        xpath=f"{frame.payload_xpath}/MeterReading[{item}]/Meter",
        **(named_object(ref, "Meter") if ref else {}),
    )
