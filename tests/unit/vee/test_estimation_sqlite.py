"""Estimation on SQLite (the embedded default); the checks are in estimation.py."""

from __future__ import annotations

import pytest

from tests.unit.vee.estimation import EstimationContract, HistoryContract


class TestSqliteEstimation(EstimationContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url


class TestSqliteHistory(HistoryContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url
