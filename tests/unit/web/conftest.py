"""The operator interface over real HTTP: a hub over a migrated store reaching simulated
DLMS meters over TCP, its head-end scheduler running, the web server on a free port."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests
from pydantic import SecretStr

from adapters.memory import MemoryAdapter
from adapters.web.service import WebService
from hes.simulator.fleet import Fleet, SimulatorThread
from hub.bootstrap import App
from hub.bootstrap import hes_service as build_hes_service
from hub.messages import Outcome
from hub.samples import meter_readings_bytes
from hub.security import UserSettings
from hub.settings import Settings, load_settings
from hub.web_settings import WebSettings
from tests.conftest import free_port
from tests.unit.hub.test_headend_routes import fleet_app, mrids

PASSWORD = "s3cret-operator"
#: the day of readings loaded for the first meter, (DAY, DAY + 1 day]
DAY = datetime(2026, 3, 2, tzinfo=UTC)


def users() -> list[UserSettings]:
    return [
        UserSettings(name="operator", password=SecretStr(PASSWORD)),
        UserSettings(
            name="viewer",
            password=SecretStr(PASSWORD),
            permissions=["get:*"],
        ),
        UserSettings(
            name="clerk",
            password=SecretStr(PASSWORD),
            permissions=["get:MeterConfig"],
        ),
        UserSettings(
            name="north",
            password=SecretStr(PASSWORD),
            utility="NORTH",
            permissions=["*:*"],
        ),
    ]


def web_settings(url: str) -> Settings:
    settings = load_settings(database_url=url)
    return settings.model_copy(
        update={
            "users": users(),
            "hes": settings.hes.model_copy(
                update={"timeout": 1.0, "attempts": 1, "concurrency": 3, "tick_seconds": 0.2}
            ),
            "web": WebSettings(
                enabled=True, port=0, session_secret=SecretStr("test-secret"), access_log=False
            ),
        }
    )


@dataclass
class Site:
    app: App
    fleet: Fleet
    web: WebService
    url: str

    @property
    def meters(self) -> list[str]:
        return mrids(self.fleet)

    def session(self, user: str = "operator") -> requests.Session:
        s = requests.Session()
        s.auth = (user, PASSWORD)
        return s

    def send(self, body: bytes, source: str = "cis") -> Outcome:
        return MemoryAdapter(self.app.pipeline).request(body, source=source)


def load_day(site: Site) -> None:
    """A day of 15-minute data of the first meter, then a correction of two of its
    intervals: one estimated (3.8.0), one edited (3.7.0), each a second version."""
    meter = site.meters[0]
    first = site.send(meter_readings_bytes([meter], DAY, 96))
    assert first.result == "OK", first.errors
    fix = meter_readings_bytes([meter], DAY, 2, registers=False, seed=99, verb="changed")
    text = fix.decode()
    values = re.findall(r"</m:value></m:IntervalReadings>", text)
    assert len(values) == 2
    text = text.replace(
        "</m:value></m:IntervalReadings>",
        '</m:value><m:ReadingQualities><m:ReadingQualityType ref="3.8.0"/>'
        "</m:ReadingQualities></m:IntervalReadings>",
        1,
    ).replace(
        "</m:value></m:IntervalReadings>",
        '</m:value><m:ReadingQualities><m:ReadingQualityType ref="3.7.0"/>'
        "</m:ReadingQualities></m:IntervalReadings>",
        1,
    )
    changed = site.send(text.encode())
    assert changed.result == "OK", changed.errors


def dead_letter(site: Site) -> Outcome:
    """A readings message naming a meter the MDM does not know: PARTIAL, dead-lettered."""
    outcome = site.send(meter_readings_bytes([site.meters[1], "MTR-UNKNOWN"], DAY, 4))
    assert outcome.result == "PARTIAL"
    assert outcome.dead_letter_id is not None
    return outcome


def start_site(url: str, fleet: Fleet) -> Iterator[Site]:
    app = fleet_app(web_settings(url), fleet)
    hes = build_hes_service(app)
    hes.start()
    web = WebService(app)
    web.start()
    try:
        yield Site(app, fleet, web, f"http://127.0.0.1:{web.port}")
    finally:
        web.stop()
        hes.stop()
        app.close()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=14)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def site(sqlite_url: str, fleet: Fleet) -> Iterator[Site]:
    yield from start_site(sqlite_url, fleet)


def until(check: object, timeout: float = 20.0) -> None:
    """Wait for ``check()`` to be true (polls; fails after ``timeout``)."""
    import time

    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.1)


__all__ = ["DAY", "PASSWORD", "Site", "dead_letter", "load_day", "start_site", "timedelta"]
