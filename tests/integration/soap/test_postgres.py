"""The SOAP services on a real PostgreSQL store (outbox claimed with SKIP LOCKED)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.soap.conftest import Receiver, Server, header, zeep_client
from tests.integration.soap.test_bad_input import envelope, fault_of, get_body, post
from tests.integration.soap.test_delivery import async_get, send_readings, wait_for

pytestmark = pytest.mark.postgres


def test_receive_get_async_reply_and_events_on_postgres(
    soap_server_factory: Callable[..., Server], postgres_url: str, receiver: Receiver
) -> None:
    server = soap_server_factory(
        database_url=postgres_url,
        subscribers={"MeterReadings": [f"{receiver.url}/ws/SendMeterReadings"]},
    )
    send_readings(server)
    async_get(server, f"{receiver.url}/ws/ReplyMeterReadings")
    wait_for(lambda: len(receiver.received) >= 2)
    assert sorted(p for p, _, _ in receiver.received) == [
        "/ws/ReplyMeterReadings",
        "/ws/SendMeterReadings",
    ]
    client, _ = zeep_client(server, "GetMeterReadings")
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}, {"mRID": "NOPE"}]}},
    )
    assert response.Reply.Result == "PARTIAL"
    assert (
        len(response.Payload.MeterReadings.MeterReading[0].IntervalBlocks[0].IntervalReadings) == 96
    )


def test_refusals_are_audited_on_postgres(
    soap_server_factory: Callable[..., Server], postgres_url: str
) -> None:
    server = soap_server_factory(database_url=postgres_url)
    _, _, errors = fault_of(post(server, envelope(get_body()), auth=("cis", "wrong")))
    assert errors[0][0] == "1010"
    with server.app.uow_factory() as uow:
        assert any(action == "refused" for _, _, action, _, _, _ in uow.audit.list(10))
