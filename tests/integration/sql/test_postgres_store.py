"""The store contract on a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import pytest

from tests.unit.sql.contract import StoreContract

pytestmark = pytest.mark.postgres


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url
