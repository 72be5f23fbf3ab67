from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.amqp.service import AmqpService
from hub.bootstrap import App, amqp_service
from tests.unit.amqp.partner import Partner, unique_settings
from tests.unit.hub.conftest import add_meters, make_app

Start = Callable[..., tuple[AmqpService, Partner]]


@pytest.fixture
def hub_app(sqlite_url: str) -> Iterator[App]:
    app = make_app(sqlite_url)
    add_meters(app, "MTR-1", "MTR-2")
    yield app
    app.close()


@pytest.fixture
def start_service(hub_app: App) -> Iterator[Start]:
    """Starts the AMQP service on memory:// (names unique to the test) and a partner."""
    started: list[tuple[AmqpService, Partner]] = []

    def start(
        app: App | None = None, *, url: str = "memory://", **overrides: Any
    ) -> tuple[AmqpService, Partner]:
        target = app or hub_app
        settings = unique_settings(url, **overrides)
        target.settings = target.settings.model_copy(update={"amqp": settings})
        service = amqp_service(target)  # as amihub serve builds it: mappings importer included
        service.start()
        assert service.wait_consuming(10), "the consumer did not start"
        partner = Partner(settings)
        started.append((service, partner))
        return service, partner

    yield start
    for service, partner in started:
        partner.close()
        service.stop()
