"""The store contract on SQLite (the embedded default)."""

from __future__ import annotations

import pytest

from tests.unit.sql.contract import StoreContract


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url
