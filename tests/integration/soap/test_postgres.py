"""The SOAP services on a real PostgreSQL store (outbox claimed with SKIP LOCKED)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.soap.conftest import SOAP_ENV, Receiver, Server, header, zeep_client
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


def test_text_rows_are_the_stored_readings_on_postgres(postgres_url: str) -> None:
    """The read path's rows, formatted by PostgreSQL (to_char, numeric::text), equal the
    stored readings formatted by Python: awkward values, microseconds, qualities, a
    register; through the prepared (short period) and the streamed (open period) paths."""
    from datetime import timedelta
    from decimal import Decimal

    from hub.nouns.get_meter_readings import as_text
    from hub.samples import RT_15MIN_A_PLUS, RT_A_PLUS_TOTAL
    from mdm.model import DeviceRef
    from mdm.ports import StagedReading
    from tests.unit.hub.conftest import START, add_meters, make_app

    app = make_app(postgres_url)
    try:
        add_meters(app, "MTR-1", "MTR-2")
        values = ["0.000001", "-12.5", "1000", "123456789.123456789", "0", "1E-10", "1.50"]
        rows = [
            StagedReading(
                1 + i % 2,
                RT_15MIN_A_PLUS,
                START + timedelta(minutes=15 * (i + 1), microseconds=7 if i == 3 else 0),
                Decimal(v),
                "1.4.9,2.5.259" if i == 2 else "",
            )
            for i, v in enumerate(values)
        ]
        rows.append(
            StagedReading(1, RT_A_PLUS_TOTAL, START + timedelta(hours=3), Decimal("42"), "")
        )
        with app.uow_factory() as uow:
            staging = uow.readings.staging()
            staging.add_meter(1, DeviceRef(mrid="MTR-1"))
            staging.add_meter(2, DeviceRef(mrid="MTR-2"))
            staging.add_readings(rows)
            staging.apply(1)
            uow.commit()
        with app.uow_factory() as uow:
            found = uow.devices.find_many(1, [DeviceRef(mrid="MTR-1"), DeviceRef(mrid="MTR-2")])
            ids = [d.id for d in found.values() if d.id is not None]
            for start, end in ((START, START + timedelta(days=1)), (None, None)):
                expected = list(as_text(uow.readings.query(ids, None, start, end)))
                assert len(expected) == len(rows)
                assert list(uow.readings.query_text(ids, None, start, end)) == expected
                texts = uow.readings.meter_texts(1, ["MTR-2", "MTR-1", "NOPE"], None, start, end)
                assert texts.found == {"MTR-1", "MTR-2"}
                assert list(texts.rows) == expected
            awkward = uow.readings.meter_texts(
                1, ['M"1', "M\\2", "M,{3}", " NULL "], None, None, None
            )
            assert awkward.found == set()
            assert list(awkward.rows) == []
            by_type = uow.readings.meter_texts(1, ["MTR-1"], [RT_A_PLUS_TOTAL], None, None)
            assert [(r.ts, r.value) for r in by_type.rows] == [
                ((START + timedelta(hours=3)).isoformat(), "42")
            ]
    finally:
        app.close()


def test_meter_year_over_soap_is_streamed_on_postgres(
    soap_server_factory: Callable[..., Server], postgres_url: str
) -> None:
    """35,040 values in one reply, sent from the spool with its Content-Length, valid
    against our XSD, and logged with the digest of what was sent."""
    import hashlib
    from datetime import timedelta

    from lxml import etree

    from adapters.memory import MemoryAdapter
    from cim_schemas import schemas
    from hub.samples import meter_readings_bytes
    from tests.unit.hub.conftest import START

    server = soap_server_factory(database_url=postgres_url)
    stored = MemoryAdapter(server.app.pipeline).request(
        meter_readings_bytes(["MTR-1"], START, 35_040, registers=False)
    )
    assert stored.ok, stored.errors
    end = START + timedelta(days=365)
    devices = (
        "<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice><p:TimeSchedule><p:scheduleInterval>"
        f"<p:end>{end.isoformat()}</p:end><p:start>{START.isoformat()}</p:start>"
        "</p:scheduleInterval></p:TimeSchedule>"
    )
    response = post(server, envelope(get_body(devices=devices)))
    assert response.status_code == 200, response.text[:500]
    assert "chunked" not in response.headers.get("Transfer-Encoding", "")
    assert int(response.headers["Content-Length"]) == len(response.content) > 3_000_000
    body = etree.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    reply = etree.fromstring(etree.tostring(body[0]))
    assert schemas.validate(reply) == []
    assert len(reply.findall(".//{*}IntervalReadings")) == 35_040
    with server.app.uow_factory() as uow:
        row = uow.messages.find("cis", reply.findtext("{*}Header/{*}CorrelationID") or "")
        assert row is not None
        steps = uow.messages.lifecycle(row.id)
    # the log keeps the digest of the reply as the pipeline wrote it (with its XML
    # declaration, which the SOAP envelope drops)
    inner = response.content.split(b"<soapenv:Body>", 1)[1].rsplit(b"</soapenv:Body>", 1)[0]
    written = b"<?xml version='1.0' encoding='UTF-8'?>\n" + inner
    assert steps[-1][2] == (
        f"OK; reply of {len(written)} bytes, sha256:{hashlib.sha256(written).hexdigest()}"
    )


def test_text_array_literals_survive_the_round_trip(postgres_url: str) -> None:
    """mRIDs go to PostgreSQL as one text[] literal: quotes, backslashes, commas,
    braces and spaces come back as they were."""
    import psycopg

    from adapters.sql.read_text import text_array

    values = ['M"1', "M\\2", "M,{3}", " NULL ", "NULL", "", "é"]
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT %s::text[]", [text_array(values)]).fetchone()
    assert row is not None
    assert row[0] == values
