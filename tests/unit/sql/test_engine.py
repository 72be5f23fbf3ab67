"""Engines, URLs, migrations and the driver-error mapping (no server needed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from adapters.sql import (
    SqlUnitOfWorkFactory,
    current_revision,
    head_revision,
    make_engine,
    normalise_url,
    upgrade,
)
from adapters.sql.engine import POOL_SIZE
from adapters.sql.errors import guard, translate
from adapters.sql.migrate import MIGRATIONS
from cim_schemas.errors import (
    ConfigurationError,
    PayloadInvalid,
    PermanentError,
    StoreUnavailable,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_urls_are_normalised(url: str, expected: str) -> None:
    assert normalise_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize("url", ["postgresql+psycopg2://u@h/db", "mysql://u@h/db"])
def test_unsupported_urls_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        make_engine(url)


def test_make_engine_connects_nothing() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    assert "Current Checked out connections: 0" in engine.pool.status()
    assert f"Current Overflow: -{POOL_SIZE}" in engine.pool.status()  # none ever opened
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_unreachable_server_is_store_unavailable() -> None:
    engine = make_engine(
        "postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    with pytest.raises(StoreUnavailable), SqlUnitOfWorkFactory(engine)() as uow:
        uow.utilities.list()
    engine.dispose()


def test_sqlite_pragmas(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    engine.dispose()


def test_migrations_programmatic(sqlite_url: str) -> None:
    assert current_revision(sqlite_url) is None
    upgrade(sqlite_url)
    assert current_revision(sqlite_url) == head_revision()
    upgrade(sqlite_url)  # idempotent
    assert current_revision(sqlite_url) == head_revision()
    upgrade(sqlite_url, "0001")  # nothing to do: already past it
    assert current_revision(sqlite_url) == head_revision()


def test_migrations_ship_with_the_package() -> None:
    names = {p.name for p in MIGRATIONS.iterdir()}
    assert {"env.py", "script.py.mako", "__init__.py", "versions"} <= names
    assert (MIGRATIONS / "versions" / "0001_initial.py").is_file()


def test_missing_schema_is_configuration_error(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with (
        pytest.raises(ConfigurationError, match="migrations"),
        SqlUnitOfWorkFactory(engine)() as uow,
    ):
        uow.utilities.list()
    engine.dispose()


def test_locked_sqlite_is_store_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/locked.db"
    upgrade(url)
    engine = make_engine(url, sqlite_busy_timeout=0.1)
    blocker = sqlite3.connect(f"{tmp_path}/locked.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable), SqlUnitOfWorkFactory(engine)() as uow:
            uow.utilities.list()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        engine.dispose()


def _wrapped(kind: type[sa_exc.DBAPIError], orig: Exception) -> sa_exc.DBAPIError:
    return kind("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _wrapped(sa_exc.OperationalError, psycopg.errors.SerializationFailure("x")),
            StoreUnavailable,
        ),
        (_wrapped(sa_exc.OperationalError, psycopg.errors.DeadlockDetected("x")), StoreUnavailable),
        (_wrapped(sa_exc.OperationalError, psycopg.errors.LockNotAvailable("x")), StoreUnavailable),
        (_wrapped(sa_exc.OperationalError, psycopg.errors.AdminShutdown("x")), StoreUnavailable),
        (
            _wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")),
            StoreUnavailable,
        ),
        (_wrapped(sa_exc.ProgrammingError, psycopg.errors.UndefinedTable("x")), ConfigurationError),
        (_wrapped(sa_exc.IntegrityError, psycopg.errors.UniqueViolation("x")), PayloadInvalid),
        (_wrapped(sa_exc.DataError, psycopg.errors.NumericValueOutOfRange("x")), PayloadInvalid),
        (_wrapped(sa_exc.ProgrammingError, psycopg.errors.SyntaxError("x")), PermanentError),
        (sa_exc.TimeoutError("pool"), StoreUnavailable),
    ],
)
def test_driver_errors_are_mapped(error: Exception, expected: type[Exception]) -> None:
    assert type(translate(error)) is expected


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT nonsense FROM utility",  # unknown column
        "SELECT id FROM utility, end_device",  # ambiguous column
        "SELEC 1",  # syntax
    ],
)
def test_a_statement_sqlite_cannot_run_is_permanent_not_unavailable(
    sqlite_url: str, statement: str
) -> None:
    """sqlite3 raises a defective statement as an OperationalError, as it does a locked
    database: the first is a defect (permanent), only the second is worth a retry."""
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with pytest.raises(PermanentError) as raised, guard(), engine.connect() as conn:
        conn.execute(text(statement))
    assert not isinstance(raised.value, StoreUnavailable)
    assert "store error: OperationalError" in str(raised.value)
    engine.dispose()
