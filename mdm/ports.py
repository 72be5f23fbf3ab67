"""The ports of the meter data domain: what handlers need from storage.

Handlers only see these protocols. ``adapters.sql`` implements them on
SQLAlchemy Core for SQLite (embedded default) and PostgreSQL (COPY for bulk).
Every method runs inside the unit of work's one transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import NamedTuple, Protocol, Self

from mdm.groups import EndDeviceGroupRepository
from mdm.hes_jobs import HeadEndJobRepository
from mdm.model import (
    DeviceRef,
    DeviceState,
    EndDevice,
    EndDeviceEvent,
    IngestStats,
    Installation,
    StoredReading,
    UsagePoint,
    Utility,
)
from mdm.security_counters import InvocationCounterRepository
from mdm.vee.ports import ValidationStore


class StagedReading(NamedTuple):
    """A reading as a message carries it, before its meter is resolved.

    ``item`` is the 1-based position of the MeterReading in the message: it ties
    the reading to the meter reference of the same item (:class:`MeterItem`)
    and to the xpath reported when that meter is unknown.
    """

    item: int
    reading_type: str  # the 18-field code, already checked
    ts: datetime  # aware, UTC
    value: Decimal
    quality: str  # comma-separated ReadingQualityType codes, "" = valid


class ReadingText(NamedTuple):
    """A stored reading as reply text, for read paths that render without converting:
    ``ts`` in ISO 8601 as ``datetime.isoformat()`` writes an aware UTC instant
    (``2026-01-01T00:15:00+00:00``), ``value`` as plain decimal text (no exponent)."""

    device_mrid: str
    reading_type: str
    ts: str
    value: str
    quality: str


class ReadingRecord(NamedTuple):
    """A stored reading as text with its version and when that version was recorded: what
    the operator API answers. ``ts`` and ``recorded_at`` as :class:`ReadingText` writes
    instants (``datetime.isoformat()`` of an aware UTC instant), ``value`` as plain
    decimal text."""

    device_mrid: str
    reading_type: str
    ts: str
    value: str
    quality: str
    version: int
    recorded_at: str

    @classmethod
    def of(cls, r: StoredReading) -> ReadingRecord:
        """The record of a stored reading (the plain path: what the store's own text
        must equal)."""
        return cls(
            r.device_mrid,
            r.reading_type,
            r.ts.astimezone(UTC).isoformat(),
            plain_decimal(r.value),
            r.quality,
            int(r.version),
            r.recorded_at.astimezone(UTC).isoformat(),
        )


def plain_decimal(value: Decimal) -> str:
    """A decimal as plain text with the scale it has (``1.50``), never an exponent."""
    text = str(value)
    return format(value, "f") if "E" in text or "e" in text else text


class MeterTexts(NamedTuple):
    """Meters asked by mRID: the mRIDs found, and their readings as text (streamed:
    iterate to the end or close it)."""

    found: set[str]
    rows: Iterator[ReadingText]


#: (instant UTC, value, quality) of one reading inside a :class:`ReadingBlock`
BlockReading = tuple[datetime, Decimal, str]


class ReadingBlock(NamedTuple):
    """Readings of one MeterReading item and one ReadingType, as an IntervalBlock
    carries them: the bulk paths format them without a tuple per reading."""

    item: int
    reading_type: str
    readings: list[BlockReading]

    def rows(self) -> list[StagedReading]:
        new = tuple.__new__
        item, rt = self.item, self.reading_type
        return [new(StagedReading, (item, rt, ts, v, q)) for ts, v, q in self.readings]


@dataclass(frozen=True)
class DuplicateReading:
    item: int
    reading_type: str
    ts: datetime
    count: int


@dataclass(frozen=True)
class StagingResult:
    stats: IngestStats
    unknown_items: list[int] = field(default_factory=list)  # items whose meter is unknown
    duplicates: list[DuplicateReading] = field(default_factory=list)  # nothing written if any


@dataclass(frozen=True)
class MeterItem:
    """The meter named by the ``item``-th MeterReading of a message."""

    item: int
    ref: DeviceRef


@dataclass(frozen=True)
class ReadingFeedChunk:
    """A slice of a reading stream: blocks of readings and the meters they belong to.

    A block's meter is named in its chunk or in an earlier one (a MeterReading's
    readings and its Meter travel in the same chunk)."""

    blocks: list[ReadingBlock] = field(default_factory=list)
    meters: list[MeterItem] = field(default_factory=list)

    def rows(self) -> list[StagedReading]:
        return [row for block in self.blocks for row in block.rows()]


class ReadingFeed(Protocol):
    """Readings on their way to the store, as chunks, bounded in memory whatever the size.

    :meth:`open` reads them from the start. The store may open a feed more than once
    when :attr:`rereadable` (it chooses how to write inside its adapter, and may start
    over); every opening gives the same chunks, and a content error in the input is
    raised from the iterator (after the last chunk at the latest), each time."""

    @property
    def rereadable(self) -> bool:
        """:meth:`open` may be called again (the input is a file, a tree, a list)."""
        ...

    @property
    def queries_store(self) -> bool:
        """Reading the chunks queries the unit of work (usage points resolved by time):
        the store then writes between chunks, never beside them."""
        ...

    def open(self) -> Iterator[ReadingFeedChunk]: ...


@dataclass(frozen=True)
class ReadingChunks:
    """A feed of chunks at hand: a list (or tuple) can be read again, any other
    iterable (a generator) once."""

    chunks: Iterable[ReadingFeedChunk]
    queries_store: bool = False

    @property
    def rereadable(self) -> bool:
        return isinstance(self.chunks, Collection)

    def open(self) -> Iterator[ReadingFeedChunk]:
        return iter(self.chunks)


def reading_feed(feed: ReadingFeed | Iterable[ReadingFeedChunk]) -> ReadingFeed:
    """``feed`` as a :class:`ReadingFeed` (chunks at hand wrapped in :class:`ReadingChunks`)."""
    if isinstance(feed, Iterable):
        return ReadingChunks(feed)
    return feed


class UtilityRepository(Protocol):
    def get(self, code: str) -> Utility | None: ...
    def add(self, utility: Utility) -> Utility: ...
    def list(self) -> list[Utility]: ...


class UsagePointRepository(Protocol):
    def find(self, utility_id: int, ref: DeviceRef) -> UsagePoint | None: ...
    def add(self, utility_id: int, usage_point: UsagePoint) -> UsagePoint: ...
    def update(self, utility_id: int, usage_point: UsagePoint) -> UsagePoint: ...
    def delete(self, utility_id: int, usage_point_id: int) -> None: ...
    def list(self, utility_id: int) -> list[UsagePoint]: ...


class EndDeviceRepository(Protocol):
    def find(self, utility_id: int, ref: DeviceRef) -> EndDevice | None: ...
    def find_many(
        self, utility_id: int, refs: Sequence[DeviceRef]
    ) -> dict[DeviceRef, EndDevice]: ...
    def held_elsewhere(self, utility_id: int, mrids: Sequence[str]) -> set[str]:
        """Which of ``mrids`` are meters of another utility than ``utility_id``."""
        ...

    def add(self, utility_id: int, device: EndDevice) -> EndDevice: ...
    def update(self, utility_id: int, device: EndDevice) -> EndDevice: ...
    def set_state(self, device_id: int, state: DeviceState) -> None: ...
    def delete(self, utility_id: int, device_id: int) -> None: ...
    def list(self, utility_id: int) -> list[EndDevice]: ...


class InstallationRepository(Protocol):
    def current(self, device_id: int) -> Installation | None:
        """The open installation of a device, if it is installed."""
        ...

    def current_at_usage_point(self, usage_point_id: int) -> list[Installation]: ...

    def install(self, device_id: int, usage_point_id: int, start: datetime) -> Installation: ...

    def remove(self, device_id: int, end: datetime) -> Installation:
        """Close the open installation of the device at ``end``."""
        ...

    def history(self, device_id: int) -> list[Installation]: ...

    def devices_at(
        self, usage_point_id: int, start: datetime | None, end: datetime | None
    ) -> list[tuple[int, datetime, datetime | None]]:
        """(device_id, installed from, installed until) overlapping the period."""
        ...


class ReadingRepository(Protocol):
    def ingest(self, utility_id: int, feed: ReadingFeed) -> StagingResult:
        """Store a feed of readings (any number, bounded memory), the one way in.

        Meters are resolved in bulk (mRID; else a unique name, else a unique serial
        number, of the utility); readings of unknown meters are left out and their
        items reported. New readings are stored, readings whose value or quality
        changed supersede the stored version (kept in the history), identical ones
        are counted unchanged. If a reading occurs twice in the feed, nothing is
        written and the duplicates are reported. How it is written (a direct bulk
        copy, or staging and a set-based merge) is the store's own choice; the result
        is the same either way. Content errors raised by the feed propagate."""
        ...

    def reading_type_id(self, code: str) -> int:
        """Id of a ReadingType code, registering it on first use."""
        ...

    def query(
        self,
        device_ids: Sequence[int],
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> Iterator[StoredReading]:
        """Current versions with ``start < ts <= end``, ordered by device, reading type and
        time; streamed. Interval readings are stamped at the end of their interval, so
        the period (00:00, 24:00] holds exactly one day of them."""
        ...

    def query_text(
        self,
        device_ids: Sequence[int],
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> Iterator[ReadingText]:
        """What :meth:`query` returns, as text for a reply (no per-row type conversion
        where the store can produce the text itself); streamed, same order."""
        ...

    def meter_texts(
        self,
        utility_id: int,
        mrids: Sequence[str],
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> MeterTexts:
        """:meth:`query_text` for meters named by mRID, with the meter lookup in the same
        statement where the store allows it (one round trip)."""
        ...

    def meter_records(
        self,
        utility_id: int,
        mrid: str,
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
    ) -> list[ReadingRecord] | None:
        """One meter's current readings with their versions, as text (the operator API's
        commonest question): what :meth:`query` answers for the meter, each as
        :meth:`ReadingRecord.of` writes it, in the same order, at most ``limit + 1`` (more
        than ``limit`` tells the caller the period is too long). None: no meter ``mrid``
        in the utility. Where the store can write the text itself it does, in one
        statement (no per-reading datetime or Decimal)."""
        ...

    def versions(self, device_id: int, reading_type: str, ts: datetime) -> list[StoredReading]:
        """Every version of one reading, newest first."""
        ...

    def count(self) -> int: ...


class EventRepository(Protocol):
    def add_many(self, utility_id: int, events: Sequence[EndDeviceEvent]) -> int:
        """Store the events; returns how many were inserted. An mRID names one event of
        the utility: one already stored (or repeated in ``events``) is not stored again."""
        ...

    def add_new(self, utility_id: int, events: Sequence[EndDeviceEvent]) -> list[EndDeviceEvent]:
        """Store the events whose mRID is not stored yet for the utility (and not
        repeated in ``events``); return those. Events without mRID are always new."""
        ...

    def query(
        self,
        utility_id: int,
        device_ids: Sequence[int] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> list[EndDeviceEvent]: ...


class MessageState(NamedTuple):
    id: int
    source: str
    message_id: str | None
    verb: str | None
    noun: str | None
    content_hash: str
    state: str
    result: str | None
    reply: bytes | None
    received_at: datetime


class MessageConclusion(NamedTuple):
    log_id: int
    message_id: str | None
    verb: str
    noun: str
    correlation_id: str | None
    state: str
    result: str | None
    reply: bytes | None


class AppliedMessage(NamedTuple):
    """A message applied in a batch, logged in the transaction of its effect: its row
    (final state, MessageID claimed, stored reply) and whole lifecycle in one write.
    ``steps`` are (state, at, detail); the last one is the row's state."""

    source: str
    endpoint: str
    content_hash: str
    size: int
    received_at: datetime
    message_id: str | None
    verb: str
    noun: str
    correlation_id: str | None
    result: str
    reply: bytes
    steps: Sequence[tuple[str, datetime, str | None]]


class AnsweredMessage(NamedTuple):
    """A message answered without changing anything (a get), logged once it is answered:
    its row and its whole lifecycle in one write. ``steps`` are (state, at, detail)."""

    source: str
    endpoint: str
    content_hash: str
    size: int
    received_at: datetime
    message_id: str | None
    verb: str
    noun: str
    correlation_id: str | None
    result: str
    steps: Sequence[tuple[str, datetime, str | None]]


class MessageLogRepository(Protocol):
    """One row a message (source, MessageID unique) and one row a lifecycle step."""

    def find(self, source: str, message_id: str) -> MessageState | None: ...
    def get(self, log_id: int) -> MessageState | None: ...
    def start(
        self, source: str, endpoint: str, content_hash: str, size: int, received_at: datetime
    ) -> int: ...
    def identify(
        self, log_id: int, message_id: str | None, verb: str, noun: str, correlation_id: str | None
    ) -> None: ...
    def transition(self, log_id: int, state: str, detail: str | None = None) -> None: ...
    def finish(self, log_id: int, state: str, result: str | None, reply: bytes | None) -> None: ...
    def lifecycle(self, log_id: int) -> list[tuple[str, datetime, str | None]]: ...

    # bulk forms, for batches of small messages (one statement each, whatever the count)
    def find_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], MessageState]:
        """(source, message_id) -> the logged message, for the keys that are logged."""
        ...

    def record_steps(self, steps: Sequence[tuple[int, str, str | None]]) -> None:
        """(log id, state, detail) lifecycle steps of several messages."""
        ...

    def conclude_many(self, rows: Sequence[MessageConclusion]) -> None:
        """identify + finish for several messages; a MessageID claimed meanwhile by
        another process raises StoreUnavailable (the batch is retried one by one)."""
        ...

    def record_applied_many(self, entries: Sequence[AppliedMessage]) -> list[int]:
        """Log messages applied together, rows and lifecycles, in one statement where the
        store allows it; their ids in order. A MessageID claimed meanwhile by another
        process raises StoreUnavailable (the batch is retried one by one)."""
        ...

    def record_answered(self, entry: AnsweredMessage) -> int:
        """Log a finished read (no stored reply: its digest is in the last step's detail)
        in one statement where the store allows it; returns the log id. A MessageID the
        source already used is not claimed again: the row keeps message_id NULL and its
        *dispatched* step names the repeated MessageID."""
        ...


class DeadLetter(NamedTuple):
    id: int
    source: str
    endpoint: str
    received_at: datetime
    error_code: str
    reason: str
    body: bytes
    truncated: bool
    metadata: dict[str, str]
    message_log_id: int | None
    replay_count: int
    resolved_at: datetime | None


class DeadLetterRepository(Protocol):
    def add(
        self,
        *,
        source: str,
        endpoint: str,
        received_at: datetime,
        error_code: str,
        reason: str,
        body: bytes,
        truncated: bool,
        metadata: dict[str, str],
        message_log_id: int | None,
    ) -> int: ...
    def get(self, dead_letter_id: int) -> DeadLetter | None: ...
    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]: ...
    def mark_replayed(self, dead_letter_id: int, resolved: bool) -> None: ...
    def dismiss(self, dead_letter_id: int, at: datetime) -> bool:
        """Mark an open dead letter resolved without replaying it; False: none open."""
        ...


AuditEntry = tuple[datetime, str, str, str, str | None, str | None]


class AuditRecord(NamedTuple):
    """One entry of the audit log, with its id (the order entries were written in)."""

    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    details: str | None


@dataclass(frozen=True)
class AuditQuery:
    """Which audit entries: ``start < at <= end``, by actor (any of ``actors``; None:
    anyone), action, object type and object id (exact), written before entry ``before``
    (the page after one ending there), at most ``limit``, newest first."""

    start: datetime | None = None
    end: datetime | None = None
    actors: frozenset[str] | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    before: int | None = None
    limit: int = 100


#: what :meth:`AuditRepository.query` answers (a name: the class's ``list`` hides the type)
AuditRecords = list[AuditRecord]


class AuditRepository(Protocol):
    def record(
        self,
        actor: str,
        action: str,
        object_type: str,
        object_id: str | None,
        details: str | None = None,
    ) -> None: ...
    def list(
        self, limit: int = 100
    ) -> list[tuple[datetime, str, str, str, str | None, str | None]]: ...
    def query(self, query: AuditQuery) -> AuditRecords:
        """The entries the query selects, newest first (by id), at most ``query.limit``."""
        ...


class UnitOfWork(Protocol):
    """One database transaction. ``with uow:`` rolls back unless :meth:`commit` was called."""

    utilities: UtilityRepository
    usage_points: UsagePointRepository
    devices: EndDeviceRepository
    installations: InstallationRepository
    readings: ReadingRepository
    events: EventRepository
    messages: MessageLogRepository
    dead_letters: DeadLetterRepository
    audit: AuditRepository
    outbox: OutboxRepository
    hes_jobs: HeadEndJobRepository
    end_device_groups: EndDeviceGroupRepository
    invocation_counters: InvocationCounterRepository
    vee: ValidationStore

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...

    def read_only(self) -> UnitOfWork:
        """A unit of work for reads of one statement each, without a transaction where
        the store allows it (fewer round trips); nothing to commit. Not for streamed
        reads (:meth:`ReadingRepository.query`)."""
        ...


class OutboxItem(NamedTuple):
    id: int
    channel: str  # "soap" | "amqp" | "sftp": which dispatcher delivers it
    destination: str  # URL, routing key, partner name...
    verb: str
    noun: str
    body: bytes
    headers: dict[str, str]
    correlation_id: str | None
    attempts: int
    created_at: datetime


class OutboxRepository(Protocol):
    """The transactional outbox: what must leave amihub is written in the same
    transaction as the change it reports, and delivered afterwards."""

    def enqueue(
        self,
        *,
        channel: str,
        destination: str,
        verb: str,
        noun: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> int: ...

    def claim_due(self, channel: str, now: datetime, limit: int) -> list[OutboxItem]:
        """Pending items whose time has come, oldest first; locked against other
        dispatchers until this transaction ends (SKIP LOCKED on PostgreSQL)."""
        ...

    def mark_sent(self, item_id: int, at: datetime) -> None: ...

    def mark_failed(self, item_id: int, error: str, retry_at: datetime | None) -> None:
        """Count the attempt; ``retry_at`` None means give up (state ``dead``)."""
        ...

    def pending_count(self, channel: str | None = None) -> int: ...
