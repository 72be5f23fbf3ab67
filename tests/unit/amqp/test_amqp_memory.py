"""The AMQP adapter on kombu's in-process memory transport (no broker): the embedded default."""

from __future__ import annotations

from lxml import etree

from hub.bootstrap import App
from tests.unit.amqp.conftest import Start
from tests.unit.amqp.partner import readings_request
from tests.unit.hub.conftest import reading_count


def result_of(body: bytes) -> tuple[str, list[str]]:
    root = etree.fromstring(body)
    result = root.find(".//{*}Reply/{*}Result")
    codes = [e.text or "" for e in root.iterfind(".//{*}Reply/{*}Error/{*}code")]
    assert result is not None
    return result.text or "", codes


def test_create_meter_readings_replies_ok_and_stores(start_service: Start, hub_app: App) -> None:
    _, partner = start_service()
    mid = partner.send(readings_request("MTR-1"))
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    assert reply.properties["correlation_id"] == mid
    assert reply.headers["amihub-result"] == "OK"
    assert reading_count(hub_app) == 96
