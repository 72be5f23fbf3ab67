"""What a real PostgreSQL says about the sessions of a test's database."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Engine


def _plain(url: str | Engine) -> str:
    if isinstance(url, Engine):
        url = url.url.render_as_string(hide_password=False)
    return url.replace("postgresql+psycopg://", "postgresql://")


def lock_waiters(url: str | Engine) -> int:
    """Sessions of this database waiting for a lock (a row, a key another uncommitted
    transaction holds): a race set-up waits for this instead of sleeping."""
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        row: Any = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0])
