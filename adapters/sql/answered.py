"""The message-log write of an answered read: its row and whole lifecycle at once.

PostgreSQL: one statement (a data-modifying CTE: ``INSERT message_log ... ON
CONFLICT DO NOTHING RETURNING id`` feeding ``INSERT message_lifecycle ... SELECT
FROM (VALUES ...)``) on the raw psycopg connection of the unit of work, in its
transaction. SQLite: the same with two statements.

A MessageID the source already used is not claimed again (the unique index on
``(source, message_id)`` is the idempotency key of changes): the row is written
with ``message_id`` NULL and its *dispatched* step says which MessageID came again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from sqlalchemy import Connection, insert
from sqlalchemy.dialects import sqlite

from adapters.sql import tables as t
from cim_schemas.errors import PermanentError, StoreUnavailable
from mdm.ports import AnsweredMessage, AppliedMessage

_PG_RECORD: Final = """
WITH m AS (
    INSERT INTO message_log (source, message_id, endpoint, verb, noun, correlation_id,
        content_hash, size, state, result, reply, received_at, updated_at)
    VALUES (%(source)s, %(message_id)s, %(endpoint)s, %(verb)s, %(noun)s,
        %(correlation_id)s, %(content_hash)s, %(size)s, %(state)s, %(result)s, NULL,
        %(received_at)s, %(updated_at)s)
    ON CONFLICT (source, message_id) WHERE message_id IS NOT NULL DO NOTHING
    RETURNING id
), steps AS (
    INSERT INTO message_lifecycle (message_log_id, state, at, detail)
    SELECT m.id, s.state, s.at, s.detail
    FROM m, (VALUES {steps}) AS s(n, state, at, detail)
    ORDER BY s.n
)
SELECT id FROM m
"""


@functools.cache
def _pg_sql(n_steps: int) -> str:
    """The statement for ``n_steps`` lifecycle steps (scalar parameters: dumping them
    costs the client half of what arrays do)."""
    rows = ", ".join(
        f"({i}, %(s{i})s::text, %(a{i})s::timestamptz, %(d{i})s::text)" for i in range(n_steps)
    )
    return _PG_RECORD.format(steps=rows)


@contextmanager
def _driver_errors() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailable(f"database unavailable while logging a message: {exc}") from exc
    except psycopg.Error as exc:
        raise PermanentError(f"store error while logging a message: {exc}") from exc


def _unclaimed(entry: AnsweredMessage) -> AnsweredMessage:
    """The entry without its MessageID, the repetition named in the dispatched step."""
    note = f"MessageID {entry.message_id} repeated (already logged for this source)"
    steps = [
        (state, at, f"{detail}; {note}" if detail else note)
        if state == "dispatched"
        else (state, at, detail)
        for state, at, detail in entry.steps
    ]
    return entry._replace(message_id=None, steps=steps)


def log_row(entry: AnsweredMessage | AppliedMessage) -> dict[str, Any]:
    """The message_log columns of a message logged whole (final state from its last step;
    the reply is the caller's: none for an answered get, the stored reply of a change)."""
    last_state, last_at, _ = entry.steps[-1]
    return {
        "source": entry.source,
        "message_id": entry.message_id,
        "endpoint": entry.endpoint,
        "verb": entry.verb,
        "noun": entry.noun,
        "correlation_id": entry.correlation_id,
        "content_hash": entry.content_hash,
        "size": entry.size,
        "state": last_state,
        "result": entry.result,
        "received_at": entry.received_at,
        "updated_at": last_at,
    }


def record_answered(conn: Connection, entry: AnsweredMessage) -> int:
    if not entry.steps:
        raise ValueError("an answered message has at least its final step")
    if conn.dialect.name == "postgresql":
        log_id = _pg(conn, entry)
        if log_id is None:
            log_id = _pg(conn, _unclaimed(entry))
    else:
        log_id = _sqlite(conn, entry)
        if log_id is None:
            log_id = _sqlite(conn, _unclaimed(entry))
    if log_id is None:
        raise PermanentError("the message log refused a row without MessageID")
    return log_id


def _pg(conn: Connection, entry: AnsweredMessage) -> int | None:
    raw: Any = conn.connection.driver_connection
    params = log_row(entry)
    for i, (state, at, detail) in enumerate(entry.steps):
        params[f"s{i}"], params[f"a{i}"], params[f"d{i}"] = state, at, detail
    with _driver_errors(), raw.cursor() as cur:
        cur.execute(_pg_sql(len(entry.steps)), params, prepare=True)
        row = cur.fetchone()
    return int(row[0]) if row else None


def _sqlite(conn: Connection, entry: AnsweredMessage) -> int | None:
    ml = t.message_log
    stmt = (
        sqlite.insert(ml)
        .values(reply=None, **log_row(entry))
        .on_conflict_do_nothing(
            index_elements=[ml.c.source, ml.c.message_id],
            index_where=ml.c.message_id.is_not(None),
        )
        .returning(ml.c.id)
    )
    log_id = conn.execute(stmt).scalar()
    if log_id is None:
        return None
    conn.execute(
        insert(t.message_lifecycle),
        [{"message_log_id": log_id, "state": s, "at": a, "detail": d} for s, a, d in entry.steps],
    )
    return int(log_id)
