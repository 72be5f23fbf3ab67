"""UsagePointConfig, MeterConfig and MasterDataLinkageConfig through the pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from adapters.memory import MemoryAdapter
from hub.bootstrap import App
from hub.samples import linkage, meter_config, usage_point_config
from mdm.model import DeviceRef, DeviceState, ServiceCategory, UsagePointStatus
from tests.unit.hub.conftest import make_app

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    application = make_app(sqlite_url)
    yield application
    application.close()


@pytest.fixture
def hub(app: App) -> MemoryAdapter:
    return MemoryAdapter(app.pipeline)


def test_create_change_close_usage_points(app: App, hub: MemoryAdapter) -> None:
    created = hub.request(
        usage_point_config(
            "create",
            [
                {
                    "mrid": "UP-1",
                    "name": "Main street 1",
                    "kind": "gas",
                    "location": "Main street 1",
                    "transformer_area": "TA-7",
                },
                {"mrid": "UP-2", "kind": "water"},
            ],
            style="wrapper",
        )
    )
    assert created.result == "OK", created.errors
    changed = hub.request(
        usage_point_config("change", [{"mrid": "UP-2", "kind": "heat", "name": "Boiler room"}])
    )
    assert changed.result == "OK", changed.errors
    closed = hub.request(
        usage_point_config("close", [{"mrid": "UP-1", "effective": T1.isoformat()}])
    )
    assert closed.result == "OK", closed.errors
    with app.uow_factory() as uow:
        up1 = uow.usage_points.find(1, DeviceRef(mrid="UP-1"))
        up2 = uow.usage_points.find(1, DeviceRef(mrid="UP-2"))
    assert up1 is not None
    assert up2 is not None
    assert (up1.service_category, up1.name, up1.location, up1.transformer_area, up1.status) == (
        ServiceCategory.GAS,
        "Main street 1",
        "Main street 1",
        "TA-7",
        UsagePointStatus.CLOSED,
    )
    assert (up2.service_category, up2.name) == (ServiceCategory.HEAT, "Boiler room")


def test_per_item_errors_are_partial_with_xpaths(app: App, hub: MemoryAdapter) -> None:
    hub.request(usage_point_config("create", [{"mrid": "UP-1"}]))
    outcome = hub.request(
        usage_point_config(
            "create",
            [
                {"mrid": "UP-1"},  # exists
                {"mrid": "UP-3", "kind": "plasma"},  # bad kind
                {"mrid": "UP-4"},
            ],
        )
    )
    assert outcome.result == "PARTIAL"
    base = "/RequestMessage/Payload/UsagePointConfig"
    assert [(e.code, e.xpath) for e in outcome.errors] == [
        ("2007", f"{base}/UsagePoint[1]"),
        ("2013", f"{base}/UsagePoint[2]"),
    ]
    with app.uow_factory() as uow:
        assert [u.mrid for u in uow.usage_points.list(1)] == ["UP-1", "UP-4"]


def test_meter_lifecycle_install_and_remove(app: App, hub: MemoryAdapter) -> None:
    assert hub.request(usage_point_config("create", [{"mrid": "UP-1"}, {"mrid": "UP-2"}])).ok
    meter = hub.request(
        meter_config(
            "create",
            [
                {
                    "mrid": "M-1",
                    "serial": "SN1",
                    "name": "M one",
                    "manufacturer": "ACME",
                    "model": "X3",
                }
            ],
        )
    )
    assert meter.result == "OK", meter.errors
    install = hub.request(linkage("create", "M-1", "UP-1", T0))
    assert install.result == "OK", install.errors
    again = hub.request(linkage("create", "M-1", "UP-2", T0))
    assert again.result == "FAILED"
    assert again.errors[0].code == "2009"
    assert "already installed at usage point UP-1" in again.errors[0].reason
    # a meter that is installed cannot be closed or deleted
    assert hub.request(meter_config("close", [{"mrid": "M-1"}])).errors[0].code == "2009"
    removed = hub.request(linkage("close", "M-1", "UP-1", T1, style="wrapper"))
    assert removed.result == "OK", removed.errors
    moved = hub.request(linkage("create", "M-1", "UP-2", T1))
    assert moved.result == "OK", moved.errors
    with app.uow_factory() as uow:
        device = uow.devices.find(1, DeviceRef(mrid="M-1"))
        assert device is not None
        assert device.id is not None
        history = uow.installations.history(device.id)
    assert device.state is DeviceState.INSTALLED
    assert (device.serial_number, device.manufacturer, device.model) == ("SN1", "ACME", "X3")
    assert [(h.usage_point_mrid, h.start, h.end) for h in history] == [
        ("UP-1", T0, T1),
        ("UP-2", T1, None),
    ]


def test_install_before_the_previous_removal_is_refused(app: App, hub: MemoryAdapter) -> None:
    hub.request(usage_point_config("create", [{"mrid": "UP-1"}, {"mrid": "UP-2"}]))
    hub.request(meter_config("create", [{"mrid": "M-1"}]))
    hub.request(linkage("create", "M-1", "UP-1", T0))
    hub.request(linkage("close", "M-1", "UP-1", T1))
    overlap = hub.request(linkage("create", "M-1", "UP-2", T0))
    assert overlap.result == "FAILED"
    assert overlap.errors[0].code == "2009"


def test_unknown_objects_and_deletes(app: App, hub: MemoryAdapter) -> None:
    missing = hub.request(linkage("create", "M-X", "UP-X", T0))
    assert missing.result == "FAILED"
    assert missing.errors[0].code == "2001"
    assert missing.errors[0].xpath == "/RequestMessage/Payload/MasterDataLinkageConfig/Meter[1]"
    hub.request(meter_config("create", [{"mrid": "M-2"}]))
    assert hub.request(meter_config("change", [{"mrid": "M-2", "serial": "NEW"}])).ok
    assert hub.request(meter_config("delete", [{"mrid": "M-2"}])).ok
    gone = hub.request(meter_config("delete", [{"mrid": "M-2"}]))
    assert gone.errors[0].code == "2001"


def test_wrapper_whose_header_disagrees_is_refused(hub: MemoryAdapter) -> None:
    body = usage_point_config("create", [{"mrid": "UP-9"}], style="wrapper").replace(
        b"<msg:Verb>create</msg:Verb>", b"<msg:Verb>delete</msg:Verb>"
    )
    outcome = hub.request(body)
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "1008"
