"""Engines for the meter data store: SQLite (embedded default) and PostgreSQL.

``make_engine`` connects nothing: the first connection opens lazily.

SQLite: WAL journal, ``foreign_keys=ON``, a busy timeout, and ``BEGIN IMMEDIATE``
transactions (pysqlite's own transaction handling is switched off so that
SAVEPOINTs work and so that two writers queue on the busy timeout instead of
failing on a lock upgrade).

PostgreSQL: psycopg 3 (``postgresql+psycopg://``); ``postgresql://`` and
``postgres://`` URLs are accepted and normalised; the session time zone is UTC.

Every connection carries a ``statement_timeout`` and an
``idle_in_transaction_session_timeout`` (``[store]`` settings; SQLite: the busy
timeout), so that no request holds a worker, a backend or its locks for ever: a
statement over its time is cancelled (mapped to StoreUnavailable, retry later), a
session left idle inside a transaction is ended by the server.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from cim_schemas.errors import ConfigurationError

if TYPE_CHECKING:
    from hub.settings import StoreSettings

DEFAULT_SQLITE_BUSY_TIMEOUT_S = 30.0
#: PostgreSQL: longest statement (s); one FETCH of a streamed read is one statement
DEFAULT_STATEMENT_TIMEOUT_S = 300.0
#: PostgreSQL: longest a session may sit idle inside a transaction (s)
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S = 120.0
#: PostgreSQL connections kept open per process: the default [soap] threads (16) plus
#: the outbox dispatcher and a margin (SQLAlchemy's default of 5 made them churn)
POOL_SIZE = 20


def normalise_url(url: str | URL) -> URL:
    """``postgresql://`` / ``postgres://`` -> ``postgresql+psycopg://``; other drivers refused."""
    u = make_url(url) if isinstance(url, str) else url
    backend, _, driver = u.drivername.partition("+")
    if backend in {"postgresql", "postgres"}:
        if driver not in {"", "psycopg"}:
            raise ConfigurationError(
                f"PostgreSQL driver {driver!r} is not supported: use postgresql+psycopg://"
            )
        return u.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in {"", "pysqlite"}:
            raise ConfigurationError(f"SQLite driver {driver!r} is not supported")
        return u
    raise ConfigurationError(f"unsupported database URL scheme {u.drivername!r}")


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_S,
    idle_in_transaction_timeout: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_S,
    **kwargs: Any,
) -> Engine:
    """An engine for ``url``; extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    Timeouts in seconds, 0: none (migrations)."""
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u, echo=echo, busy_timeout=sqlite_busy_timeout, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    # QueuePool closes a connection handed back while it already keeps pool_size idle
    # ones: with more concurrent users than that (a SOAP server's worker threads) every
    # few requests cost a new PostgreSQL backend. Connections open lazily, so keeping
    # up to POOL_SIZE costs nothing at low concurrency.
    kwargs.setdefault("pool_size", POOL_SIZE)
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault(
        "options",
        pg_options(
            statement_timeout=statement_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
        ),
    )
    connect_args.setdefault("connect_timeout", 10)
    return create_engine(u, echo=echo, connect_args=connect_args, **kwargs)


def _register_sqlite_adapters() -> None:
    """Dates and times handed to sqlite3 as they are (raw SQL, executemany) are stored
    as ISO 8601 text, as sqlite3's default adapters did: those are deprecated since
    Python 3.12 (a DeprecationWarning on every use) and go away later."""
    sqlite3.register_adapter(datetime, lambda v: v.isoformat(" "))
    sqlite3.register_adapter(date, lambda v: v.isoformat())


def pg_options(*, statement_timeout: float, idle_in_transaction_timeout: float) -> str:
    """libpq ``options``: UTC and the session's timeouts (in ms; 0 = none)."""
    return (
        "-c timezone=UTC"
        f" -c statement_timeout={round(statement_timeout * 1000)}"
        f" -c idle_in_transaction_session_timeout={round(idle_in_transaction_timeout * 1000)}"
    )


def store_engine(url: str | URL, store: StoreSettings, **kwargs: Any) -> Engine:
    """:func:`make_engine` with the ``[store]`` settings' timeouts."""
    return make_engine(
        url,
        sqlite_busy_timeout=store.busy_timeout,
        statement_timeout=store.statement_timeout,
        idle_in_transaction_timeout=store.idle_in_transaction_timeout,
        **kwargs,
    )


def _sqlite_engine(u: URL, *, echo: bool, busy_timeout: float, **kwargs: Any) -> Engine:
    _register_sqlite_adapters()
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", busy_timeout)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(u, echo=echo, connect_args=connect_args, **kwargs)
    in_memory = u.database in {None, "", ":memory:"} or "mode=memory" in str(u)
    busy_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Take transaction control away from pysqlite: we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA temp_store=FILE")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
