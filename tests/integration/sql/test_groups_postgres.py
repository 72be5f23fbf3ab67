"""End device groups and the events' unique key on a real PostgreSQL; and two
processes' transactions storing the same event at the same time: one row."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from adapters.sql import SqlUnitOfWorkFactory
from mdm.model import EndDeviceEvent
from tests.unit.sql.group_contract import GroupContract

pytestmark = pytest.mark.postgres


class TestPostgresGroups(GroupContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url

    def test_concurrent_add_new_inserts_once(
        self, uow_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        """Connection A inserts the event and holds its transaction open; connection B
        inserting the same event waits on the unique index, then gets nothing back once
        A commits. Exactly one row, and only A publishes it."""
        event = EndDeviceEvent("M1", "3.26.0.85", datetime(2026, 1, 1, tzinfo=UTC), mrid="E-9")
        other: list[list[EndDeviceEvent]] = []
        b_started = threading.Event()

        def second() -> None:
            with uow_factory() as uow_b:
                b_started.set()
                other.append(uow_b.events.add_new(utility_id, [event]))
                uow_b.commit()

        with uow_factory() as uow_a:
            assert uow_a.events.add_new(utility_id, [event]) == [event]
            thread = threading.Thread(target=second)
            thread.start()
            assert b_started.wait(10)
            thread.join(1.0)
            assert thread.is_alive()  # B waits for A's transaction
            uow_a.commit()
        thread.join(10)
        assert not thread.is_alive()
        assert other == [[]]
        with uow_factory() as uow:
            count = uow.connection.execute(
                sa.text("SELECT count(*) FROM end_device_event WHERE mrid = 'E-9'")
            ).scalar_one()
        assert count == 1

    def test_concurrent_add_new_after_rollback(
        self, uow_factory: SqlUnitOfWorkFactory, utility_id: int
    ) -> None:
        """If the first inserter rolls back, the waiting one inserts the event."""
        event = EndDeviceEvent("M1", "3.26.0.85", datetime(2026, 1, 2, tzinfo=UTC), mrid="E-10")
        other: list[list[EndDeviceEvent]] = []

        def second() -> None:
            with uow_factory() as uow_b:
                other.append(uow_b.events.add_new(utility_id, [event]))
                uow_b.commit()

        with uow_factory() as uow_a:
            assert uow_a.events.add_new(utility_id, [event]) == [event]
            thread = threading.Thread(target=second)
            thread.start()
            thread.join(1.0)
            uow_a.rollback()
        thread.join(10)
        assert other == [[event]]
