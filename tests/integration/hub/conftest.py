"""Fixtures shared by the head-end tests on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.dlms import MeterDirectory
from hes.simulator.fleet import Fleet
from hub.bootstrap import App, bootstrap
from tests.unit.hub.conftest import add_meters
from tests.unit.hub.test_headend_routes import hub_settings, mrids


@pytest.fixture
def two(postgres_url: str, fleet: Fleet) -> Iterator[tuple[App, App]]:
    """Two hub processes' worth of head-ends on one PostgreSQL store (``fleet`` is the
    test module's simulated fleet)."""
    directory = MeterDirectory.from_fleet(fleet)
    first = bootstrap(hub_settings(postgres_url), migrate=True, meters=directory)
    add_meters(first, *mrids(fleet))
    second = bootstrap(hub_settings(postgres_url), meters=directory)
    yield first, second
    second.close()
    first.close()
