"""Run the store's Alembic migrations from code (no alembic.ini needed).

from adapters.sql.migrate import upgrade, current_revision
upgrade("sqlite:///var/amihub.db")       # or postgresql://...
current_revision("sqlite:///var/amihub.db")  # -> "0001" (head)
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from adapters.sql.engine import make_engine
from adapters.sql.errors import guard

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _engine(target: str | URL | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    # no statement timeouts: building an index over a large table may take long
    return make_engine(target, statement_timeout=0, idle_in_transaction_timeout=0), True


#: pg_advisory_xact_lock key: processes that start together migrate one after the other.
MIGRATION_LOCK = 0x616D6968  # "amih"


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Bring the schema at ``target`` (URL or engine) up to ``revision``.

    Safe to call from several processes at once: on PostgreSQL they queue on an
    advisory lock, on SQLite on the write lock (``BEGIN IMMEDIATE``)."""
    engine, owned = _engine(target)
    try:
        with guard(), engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
    finally:
        if owned:
            engine.dispose()


def downgrade(target: str | URL | Engine, revision: str) -> None:
    engine, owned = _engine(target)
    try:
        with guard(), engine.connect() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
            conn.commit()
    finally:
        if owned:
            engine.dispose()


def current_revision(target: str | URL | Engine) -> str | None:
    """The revision the schema at ``target`` is at (None: not migrated)."""
    engine, owned = _engine(target)
    try:
        with guard(), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if owned:
            engine.dispose()
