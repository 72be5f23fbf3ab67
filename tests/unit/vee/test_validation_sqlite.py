"""Validation rules on SQLite (the embedded default); the checks are in contract.py."""

from __future__ import annotations

import pytest

from tests.unit.vee.contract import VeeContract


class TestSqliteValidation(VeeContract):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url
