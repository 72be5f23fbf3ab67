"""Every store connection carries timeouts ([store] settings; issue 12, point 8): a
statement over its time is cancelled, a session idle inside a transaction is ended by
PostgreSQL, SQLite waits at most its busy timeout."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from adapters.sql.engine import store_engine
from adapters.sql.errors import translate
from cim_schemas.errors import StoreUnavailable
from hub.settings import StoreSettings, load_settings


@pytest.mark.postgres
def test_postgres_connections_carry_the_settings_timeouts(postgres_url: str) -> None:
    engine = store_engine(
        postgres_url, StoreSettings(statement_timeout=0.5, idle_in_transaction_timeout=1.0)
    )
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "1s"
            assert conn.execute(text("SHOW timezone")).scalar() == "UTC"
            started = time.monotonic()
            with pytest.raises(Exception, match="statement timeout") as cancelled:
                conn.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 3
            assert isinstance(translate(cancelled.value), StoreUnavailable)  # retry later
            conn.rollback()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # a transaction is open, then left idle
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            deadline = time.monotonic() + 10
            with engine.connect() as watcher:
                while time.monotonic() < deadline:  # until the server has ended it
                    gone = watcher.execute(
                        text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": pid},
                    ).scalar()
                    watcher.rollback()
                    if gone:
                        break
                    time.sleep(0.1)
            assert gone, "the idle-in-transaction session was not ended"
            with pytest.raises(Exception, match=r"idle-in-transaction|terminat|closed") as ended:
                conn.execute(text("SELECT 1"))
            assert isinstance(translate(ended.value), StoreUnavailable)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_default_store_settings_bound_every_session(postgres_url: str) -> None:
    from hub.bootstrap import bootstrap

    app = bootstrap(load_settings(database_url=postgres_url), migrate=True)
    try:
        with app.engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "5min"
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "2min"
    finally:
        app.close()


def test_sqlite_waits_at_most_its_busy_timeout(sqlite_url: str) -> None:
    engine = store_engine(sqlite_url, StoreSettings(busy_timeout=0.3))
    try:
        with engine.connect() as holder:
            holder.execute(text("CREATE TABLE t (x INTEGER)"))
            holder.commit()
            holder.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock
            with engine.connect() as other:
                started = time.monotonic()
                with pytest.raises(Exception, match="locked"):
                    other.execute(text("INSERT INTO t VALUES (2)"))
                assert time.monotonic() - started < 3
    finally:
        engine.dispose()


def test_store_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIHUB_STORE__STATEMENT_TIMEOUT", "12.5")
    settings = load_settings()
    assert settings.store.statement_timeout == 12.5
    assert settings.store.idle_in_transaction_timeout == 120.0
