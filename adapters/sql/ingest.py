"""How the store writes a feed of readings: its one choice between two paths.

:meth:`adapters.sql.readings.SqlReadingRepository.ingest` is the one way readings
go in (``mdm.handlers.store_meter_readings`` calls it for every writer). It picks
the path here, out of sight of its callers, and the result is the same either way:

* the staged path (:class:`adapters.sql.readings.SqlReadingStaging`): rows COPYed
  into a temporary table, meters resolved, duplicates found and versions merged in
  set-based SQL; exact in every case (new, changed, unchanged, repeated readings).
  SQLite always, and PostgreSQL for a small feed (at most ``direct_from_rows``
  readings: one statement over arrays) or one that can be read only once;
* the direct path (:class:`adapters.sql.direct.SqlDirectReadingWriter`): a larger
  feed on PostgreSQL is first COPYed straight into ``reading`` (one write instead of
  two), inside a SAVEPOINT. A reading stored already or repeated makes the COPY fail
  on the primary key: the store rolls back to the savepoint (whatever the transaction
  held before, the message log's rows among them, stays), opens the feed again, and
  runs the staged path, which reports what the plain path reports (unchanged or
  superseded versions, duplicates per item).

Nothing outside adapters/sql reaches either path (tests/unit/test_reading_seam.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from mdm.ports import ReadingFeed, ReadingFeedChunk, StagingResult

if TYPE_CHECKING:
    from adapters.sql.readings import SqlReadingRepository
    from adapters.sql.uow import SqlUnitOfWork

log = logging.getLogger("amihub.store.readings")


def ingest(
    uow: SqlUnitOfWork,
    repo: SqlReadingRepository,
    utility_id: int,
    feed: ReadingFeed,
    direct_from_rows: int | None,
) -> StagingResult:
    """Store ``feed``: the direct path first for a feed of more than ``direct_from_rows``
    readings on PostgreSQL that can be read again, else (and after a conflict) staged.
    ``direct_from_rows`` None: always staged."""
    if (
        direct_from_rows is None
        or not feed.rereadable
        or uow.connection.dialect.name != "postgresql"
    ):
        return staged(repo, utility_id, feed.open())
    from adapters.sql.direct import KeyConflict  # PostgreSQL's driver, imported when used

    chunks = feed.open()
    try:
        head, more = _read_ahead(chunks, direct_from_rows)
        if not more:  # the whole feed is small: the staged path writes it in one statement
            return staged(repo, utility_id, head)
        try:
            return _direct(uow, repo, utility_id, _drain(head, chunks), not feed.queries_store)
        except KeyConflict as conflict:
            log.info("readings: %s; merging instead", conflict)
    finally:
        _close(chunks)
    return staged(repo, utility_id, feed.open())


def staged(
    repo: SqlReadingRepository, utility_id: int, chunks: Iterable[ReadingFeedChunk]
) -> StagingResult:
    """The exact path: every chunk staged, then resolved and merged at once."""
    staging = repo.staging()
    try:
        for chunk in chunks:
            for meter in chunk.meters:
                staging.add_meter(meter.item, meter.ref)
            if chunk.blocks:
                staging.add_readings(chunk.rows())
    finally:
        _close(chunks)
    return staging.apply(utility_id)


def _direct(
    uow: SqlUnitOfWork,
    repo: SqlReadingRepository,
    utility_id: int,
    chunks: Iterator[ReadingFeedChunk],
    background: bool,
) -> StagingResult:
    """The direct path inside a savepoint; raises KeyConflict with nothing of it kept."""
    from adapters.sql.direct import SqlDirectReadingWriter

    savepoint = uow.connection.begin_nested()
    writer = SqlDirectReadingWriter(uow, repo, utility_id, repo.batch_size, background=background)
    try:
        for chunk in chunks:
            writer.add(chunk.blocks, {m.item: m.ref for m in chunk.meters})
        result = writer.finish()
    except BaseException:
        writer.abort()  # its thread quiet before the rollback
        repo.forget()  # reading types registered inside the savepoint are gone with it
        # a failed connection: the unit of work rolls back whole
        with contextlib.suppress(sa_exc.SQLAlchemyError):
            savepoint.rollback()
        raise
    savepoint.commit()
    log.debug("readings: %d stored by the direct path", result.stats.stored)
    return result


def _read_ahead(
    chunks: Iterator[ReadingFeedChunk], rows: int
) -> tuple[list[ReadingFeedChunk], bool]:
    """The first chunks, until they hold more than ``rows`` readings; and whether that
    happened (False: these are all)."""
    head: list[ReadingFeedChunk] = []
    seen = 0
    for chunk in chunks:
        head.append(chunk)
        seen += sum(len(block.readings) for block in chunk.blocks)
        if seen > rows:
            return head, True
    return head, False


def _drain(
    head: list[ReadingFeedChunk], rest: Iterator[ReadingFeedChunk]
) -> Iterator[ReadingFeedChunk]:
    """The chunks read ahead, each let go once handed on, then the rest."""
    head.reverse()
    while head:
        yield head.pop()
    yield from rest


def _close(chunks: Iterable[ReadingFeedChunk]) -> None:
    """End a feed's iterator that may hold its input open (a generator over a file)."""
    if isinstance(chunks, Generator):
        chunks.close()
