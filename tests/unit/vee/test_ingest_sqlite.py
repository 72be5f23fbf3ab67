"""Validation on ingest on SQLite; the checks are in ingest_contract.py."""

from __future__ import annotations

import pytest

from tests.unit.vee.ingest_contract import VeeIngestContract


class TestSqliteIngestValidation(VeeIngestContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url
