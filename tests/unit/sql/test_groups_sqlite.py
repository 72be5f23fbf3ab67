"""End device groups and the events' unique key on SQLite (the embedded default)."""

from __future__ import annotations

import pytest

from tests.unit.sql.group_contract import GroupContract


class TestSqliteGroups(GroupContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url
