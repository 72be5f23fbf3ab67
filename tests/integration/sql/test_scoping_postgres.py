"""Utility scoping on a real PostgreSQL (a fresh database per test), with the
PostgreSQL-only direct path of the store's ingest (adapters/sql/direct.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from adapters.sql import SqlUnitOfWorkFactory
from mdm.ports import MeterItem, ReadingBlock, ReadingChunks, ReadingFeedChunk
from tests.unit.sql.scoping_contract import A_REFS, Two, UtilityScopingContract

pytestmark = pytest.mark.postgres


class TestPostgresScoping(UtilityScopingContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url

    @pytest.mark.parametrize("queries_store", [False, True])
    def test_direct_path_resolves_meters_in_their_utility(
        self, engine: Engine, two: Two, queries_store: bool, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The direct path (every feed of a reading or more takes it first), its batches
        written in the writer's thread or, for a feed that queries the store, between
        the chunks."""
        factory = SqlUnitOfWorkFactory(engine, direct_from_rows=0)
        chunk = ReadingFeedChunk(
            [
                ReadingBlock(r.item, r.reading_type, [(r.ts, r.value, r.quality)])
                for r in self.rows("1")
            ],
            [MeterItem(item, ref) for item, (ref, _) in A_REFS.items()],
        )
        with factory() as uow, caplog.at_level("DEBUG", logger="amihub.store.readings"):
            result = uow.readings.ingest(two.a, ReadingChunks([chunk], queries_store=queries_store))
            self.assert_written_to_a(uow, two, result)
        assert "6 stored by the direct path" in caplog.text
