from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from hub.bootstrap import App, bootstrap
from hub.settings import load_settings
from mdm.commands import CreateMeter, CreateUsagePoint, InstallMeter
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef, EndDevice, UsagePoint

START = datetime(2026, 3, 1, tzinfo=UTC)


def make_app(url: str, **limits: int) -> App:
    settings = load_settings(database_url=url)
    if limits:
        settings = settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})
    return bootstrap(settings, migrate=True)


def add_meters(app: App, *mrids: str, install: bool = True) -> None:
    ctx = HandlerContext(actor="test", now=datetime.now(UTC))
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        for mrid in mrids:
            app.bus.handle(
                CreateMeter(
                    utility.id,
                    EndDevice(
                        mrid=mrid,
                        utility_code=utility.code,
                        serial_number=f"SN-{mrid}",
                        name=f"name-{mrid}",
                    ),
                ),
                uow,
                ctx,
            )
            if install:
                up = f"UP-{mrid}"
                app.bus.handle(
                    CreateUsagePoint(utility.id, UsagePoint(mrid=up, utility_code=utility.code)),
                    uow,
                    ctx,
                )
                app.bus.handle(
                    InstallMeter(utility.id, DeviceRef(mrid=mrid), DeviceRef(mrid=up), START),
                    uow,
                    ctx,
                )
        uow.commit()


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    application = make_app(sqlite_url)
    add_meters(application, "MTR-1", "MTR-2")
    yield application
    application.close()


def reading_count(app: App) -> int:
    with app.uow_factory() as uow:
        return uow.readings.count()
