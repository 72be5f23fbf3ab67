"""Validation rules on a real PostgreSQL; the checks are in tests/unit/vee/contract.py."""

from __future__ import annotations

import pytest

from tests.unit.vee.contract import VeeContract

pytestmark = pytest.mark.postgres


class TestPostgresValidation(VeeContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url
