"""Utility scoping on SQLite (the embedded default)."""

from __future__ import annotations

import pytest

from tests.unit.sql.scoping_contract import UtilityScopingContract


class TestSqliteScoping(UtilityScopingContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url
