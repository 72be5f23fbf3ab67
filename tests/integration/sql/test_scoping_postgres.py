"""Utility scoping on a real PostgreSQL (a fresh database per test), with the
PostgreSQL-only optimistic bulk path (adapters/sql/direct.py)."""

from __future__ import annotations

import pytest

from adapters.sql import SqlUnitOfWorkFactory
from tests.unit.sql.scoping_contract import A_REFS, Two, UtilityScopingContract

pytestmark = pytest.mark.postgres


class TestPostgresScoping(UtilityScopingContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url

    @pytest.mark.parametrize("background", [True, False])
    def test_direct_writer_resolves_meters_in_their_utility(
        self, uow_factory: SqlUnitOfWorkFactory, two: Two, background: bool
    ) -> None:
        with uow_factory() as uow:
            writer = uow.readings.direct_writer(two.a, background=background)
            assert writer is not None
            writer.add_rows(self.rows("1"), {item: ref for item, (ref, _) in A_REFS.items()})
            self.assert_written_to_a(uow, two, writer.finish())
