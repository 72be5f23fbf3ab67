"""get MeterReadings naming EndDeviceGroups on PostgreSQL: the SQLite checks again (the
read path's text rows come from PostgreSQL here), the member limit, and a group of
1,000 meters streamed with its readings in order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hub.bootstrap import App
from hub.messages import InboundMessage
from hub.samples import end_device_groups, meter_readings_bytes
from tests.unit.hub.conftest import START, add_meters, make_app
from tests.unit.hub.test_get_meter_readings_groups import (
    BASE,
    by_mrid,
    group_get,
    group_get_checks,
    prepare,
    send,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(postgres_url: str) -> Iterator[App]:
    application = make_app(postgres_url)
    yield application
    application.close()


def test_a_group_get_on_postgres(app: App) -> None:
    group_get_checks(app)


def test_groups_over_the_member_limit_on_postgres(postgres_url: str) -> None:
    application = make_app(postgres_url, max_group_meters=2)
    try:
        prepare(application)
        outcome = send(application, group_get(by_mrid("G-1")))
        assert outcome.result == "FAILED"
        assert [(e.code, e.xpath, e.object_id) for e in outcome.errors] == [
            ("2013", f"{BASE}/EndDeviceGroup[1]", "G-1")
        ]
    finally:
        application.close()


def test_a_group_of_a_thousand_meters_streams_from_postgres(app: App) -> None:
    meters = [f"MTR-{n:05d}" for n in range(1000)]
    add_meters(app, *meters, install=False)
    for start in range(0, 1000, 250):
        loaded = send(
            app, meter_readings_bytes(meters[start : start + 250], START, 96, registers=False)
        )
        assert loaded.result == "OK", loaded.errors
    made = send(app, end_device_groups("create", [{"mrid": "ALL", "devices": meters}]))
    assert made.result == "OK", made.errors
    app.pipeline.reply_memory_bytes = 64 * 1024
    outcome = app.pipeline.process(
        InboundMessage(
            source="cis", endpoint="t", body=group_get(by_mrid("ALL")), stream_reply=True
        )
    )
    assert outcome.result == "OK", outcome.errors
    assert outcome.counts["readings"] == 96_000
    assert outcome.reply_chunks is not None
    data = b"".join(outcome.reply_chunks)
    assert len(data) == outcome.reply_size > 9_000_000
    mrids = [part.split(b"</mRID>", 1)[0].decode() for part in data.split(b"<Meter><mRID>")[1:]]
    assert mrids == meters  # each member once, in order
