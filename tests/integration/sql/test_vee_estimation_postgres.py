"""Estimation on a real PostgreSQL; the checks are in tests/unit/vee/estimation.py."""

from __future__ import annotations

import pytest

from tests.unit.vee.estimation import EstimationContract, HistoryContract

pytestmark = pytest.mark.postgres


class TestPostgresEstimation(EstimationContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url


class TestPostgresHistory(HistoryContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url
