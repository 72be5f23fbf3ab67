"""Fixtures of the head-end integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Engine]:
    """A migrated SQLite store of the test's own."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()
