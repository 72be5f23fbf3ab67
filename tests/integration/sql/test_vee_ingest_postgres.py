"""Validation on ingest on a real PostgreSQL; the checks are in
tests/unit/vee/ingest_contract.py."""

from __future__ import annotations

import pytest

from tests.unit.vee.ingest_contract import VeeIngestContract

pytestmark = pytest.mark.postgres


class TestPostgresIngestValidation(VeeIngestContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url
