"""The AMQP adapter on kombu's in-process memory transport (no broker): the embedded default."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree

from adapters.amqp.client import AmqpClient
from adapters.amqp.mapping import MappingGate
from adapters.amqp.service import event_destination, queue_destination
from cim_schemas.errors import StoreUnavailable
from hub.bootstrap import App
from hub.messages import InboundMessage, Outcome
from hub.pipeline import Pipeline
from hub.security import UserSettings
from tests.unit.amqp.conftest import Start
from tests.unit.amqp.partner import Partner, Received, readings_request
from tests.unit.hub.conftest import add_meters, make_app, reading_count


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


def test_no_reply_to_is_processed_without_reply(start_service: Start, hub_app: App) -> None:
    service, partner = start_service()
    partner.send(readings_request("MTR-1"), reply=False)
    deadline = time.monotonic() + 10
    while service.consumer.handled < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reading_count(hub_app) == 96
    assert partner.replies(timeout=0.3) == []
    assert partner.depth(service.settings.request_queue) == 0


def test_redelivered_message_is_not_applied_twice(start_service: Start, hub_app: App) -> None:
    _, partner = start_service()
    body = readings_request("MTR-1")
    first = partner.send(body, message_id="req-1")
    second = partner.send(body, message_id="req-1")
    replies = partner.replies(2)
    assert [r.properties["correlation_id"] for r in replies] == [first, second]
    assert replies[0].body == replies[1].body  # the stored reply
    assert replies[1].headers.get("amihub-duplicate") is True
    # the same reply message id both times: a partner can drop the second
    assert replies[0].properties["message_id"] == replies[1].properties["message_id"]
    assert reading_count(hub_app) == 96
    with hub_app.uow_factory() as uow:
        assert uow.messages.find("amqp", message_id_of(body)) is not None


def message_id_of(body: bytes) -> str:
    found = etree.fromstring(body).find(".//{*}Header/{*}MessageID")
    assert found is not None
    return found.text or ""


def assert_dead_lettered(partner: Partner, hub_app: App, code: str) -> Received:
    [dead] = partner.dead_letters()
    assert dead.headers["amihub-error-code"] == code
    assert dead.headers["amihub-error-reason"]
    assert dead.headers["amihub-dead-letter-store"] == "stored"
    with hub_app.uow_factory() as uow:
        stored = uow.dead_letters.get(int(dead.headers["amihub-dead-letter-id"]))
    assert stored is not None
    assert stored.error_code == code
    assert stored.body == dead.body
    # journalled: the message-log row named in the headers ends dead-lettered
    assert stored.message_log_id is not None
    assert int(dead.headers["amihub-message-log-id"]) == stored.message_log_id
    with hub_app.uow_factory() as uow:
        row = uow.messages.get(stored.message_log_id)
        steps = [state for state, _, _ in uow.messages.lifecycle(stored.message_log_id)]
    assert row is not None
    assert (row.state, row.result) == ("dead_lettered", "FAILED")
    assert steps[0] == "received"
    assert steps[-1] == "dead_lettered"
    return dead


def test_malformed_xml_fails_and_is_dead_lettered(start_service: Start, hub_app: App) -> None:
    _, partner = start_service()
    mid = partner.send(b"<RequestMessage><Header>", message_id="bad-1")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1001"])
    assert reply.properties["correlation_id"] == mid
    dead = assert_dead_lettered(partner, hub_app, "1001")
    assert dead.headers["amihub-original-routing-key"] == "create.MeterReadings"
    assert dead.properties["message_id"] == mid


def test_unknown_routing_key_is_refused(start_service: Start, hub_app: App) -> None:
    _, partner = start_service()
    partner.send(readings_request("MTR-1"), routing_key="frobnicate.Widgets")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1006"])
    assert_dead_lettered(partner, hub_app, "1006")
    assert reading_count(hub_app) == 0


@pytest.mark.parametrize(
    "key", ["create.MeterConfig", "created.MeterReadings", "get.MeterReadings"]
)
def test_a_routing_key_other_than_the_headers_operation_is_refused(
    start_service: Start, hub_app: App, key: str
) -> None:
    """The Header says create MeterReadings: any other supported key is refused (1006),
    in the batch path and one by one alike, and nothing is stored."""
    _, partner = start_service()
    for n in range(3):  # a round of several: the batch path
        partner.send(readings_request("MTR-1", day=n), routing_key=key)
    replies = partner.replies(3)
    assert [result_of(r.body) for r in replies] == [("FAILED", ["1006"])] * 3
    dead = partner.dead_letters(3)
    assert len(dead) == 3
    assert all(key in d.headers["amihub-error-reason"] for d in dead)
    assert reading_count(hub_app) == 0
    partner.send(readings_request("MTR-1"), routing_key="create.MeterReadings")
    [ok] = partner.replies()
    assert result_of(ok.body) == ("OK", [])


def test_message_straight_to_the_queue_is_accepted(start_service: Start, hub_app: App) -> None:
    service, partner = start_service()
    partner.send(readings_request("MTR-1"), routing_key=service.settings.request_queue, exchange="")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])


def test_payload_too_large_is_refused(start_service: Start, tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path}/small.db", max_message_bytes=4000, tree_limit_bytes=4000)
    add_meters(app, "MTR-1")
    try:
        _, partner = start_service(app)
        partner.send(readings_request("MTR-1"))
        [reply] = partner.replies()
        assert result_of(reply.body) == ("FAILED", ["1003"])
        assert_dead_lettered(partner, app, "1003")
        assert reading_count(app) == 0
    finally:
        app.close()


def test_mapping_header_naming_no_mapping_is_refused(start_service: Start, hub_app: App) -> None:
    _, partner = start_service()
    partner.send(
        b"meter;time;kWh\nMTR-1;2026-03-01 00:15;1.5\n", headers={"amihub-mapping": "nope"}
    )
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1012"])
    assert "nope" in assert_dead_lettered(partner, hub_app, "1012").headers["amihub-error-reason"]


def test_a_body_in_a_mapped_format_is_applied(start_service: Start, hub_app: App) -> None:
    _, partner = start_service()
    csv = (
        b"meter,obis,timestamp,dst,value,unit,status\n"
        b"SN-MTR-1,1-0:1.8.0*255,2026-10-25 00:00:00,S,12345.678,kWh,OK\n"
    )
    partner.send(csv, headers={"amihub-mapping": "register-obis"})
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    assert reading_count(hub_app) == 1
    partner.send(b"x", headers={"amihub-mapping": "register-obis"})
    [refused] = partner.replies()
    assert result_of(refused.body)[0] == "FAILED"
    assert reading_count(hub_app) == 1


def test_a_mapped_body_under_another_nouns_key_is_refused(
    start_service: Start, hub_app: App
) -> None:
    """Readings in a mapping's format published as create.MeterConfig: 1006."""
    _, partner = start_service()
    csv = (
        b"meter,obis,timestamp,dst,value,unit,status\n"
        b"SN-MTR-1,1-0:1.8.0*255,2026-10-25 00:00:00,S,12345.678,kWh,OK\n"
    )
    partner.send(csv, "create.MeterConfig", headers={"amihub-mapping": "register-obis"})
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1006"])
    assert reading_count(hub_app) == 0
    partner.send(csv, "created.MeterReadings", headers={"amihub-mapping": "register-obis"})
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    assert reading_count(hub_app) == 1


def test_mapping_importer_hook_receives_the_body(hub_app: App) -> None:
    seen: list[tuple[bytes, str]] = []

    def importer(msg: InboundMessage, name: str) -> Outcome:
        assert msg.body is not None
        seen.append((msg.body, name))
        return Outcome(result="OK", reply=b"<ok/>")

    gate = MappingGate(importer=importer, names=lambda: frozenset({"csv-x"}))
    assert gate.refusal("csv-x") is None
    assert gate.refusal("other") is not None
    gate.run(InboundMessage(source="p", endpoint="amqp:q", body=b"a;b"), "csv-x")
    assert seen == [(b"a;b", "csv-x")]


def with_users(app: App, *users: UserSettings) -> App:
    app.settings = app.settings.model_copy(update={"users": list(users)})
    return app


def test_partner_without_permission_gets_failed_reply_and_audit(
    start_service: Start, hub_app: App
) -> None:
    with_users(hub_app, UserSettings(name="cis", permissions=["get:MeterReadings"]))
    _, partner = start_service()
    partner.send(readings_request("MTR-1"), user_id="cis")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1010"])
    assert_dead_lettered(partner, hub_app, "1010")
    with hub_app.uow_factory() as uow:
        audit = uow.audit.list()
    assert any(a[1] == "cis" and a[2] == "refused" for a in audit)
    assert reading_count(hub_app) == 0


def test_partner_with_permission_is_the_source(start_service: Start, hub_app: App) -> None:
    with_users(hub_app, UserSettings(name="mdc", permissions=["create:MeterReadings"]))
    _, partner = start_service()
    body = readings_request("MTR-1")
    partner.send(body, user_id="mdc")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    with hub_app.uow_factory() as uow:
        assert uow.messages.find("mdc", message_id_of(body)) is not None


def test_unknown_sender_is_refused_when_users_are_configured(
    start_service: Start, hub_app: App
) -> None:
    with_users(hub_app, UserSettings(name="mdc"))
    _, partner = start_service()
    partner.send(readings_request("MTR-1"))  # no user_id
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1010"])


def test_partner_header_from_a_non_relay_is_refused(start_service: Start, hub_app: App) -> None:
    with_users(hub_app, UserSettings(name="mdc"), UserSettings(name="cis"))
    _, partner = start_service()
    partner.send(readings_request("MTR-1"), user_id="cis", headers={"amihub-partner": "mdc"})
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1010"])
    assert "relay" in assert_dead_lettered(partner, hub_app, "1010").headers["amihub-error-reason"]


def test_relay_user_names_the_partner(start_service: Start, hub_app: App) -> None:
    with_users(hub_app, UserSettings(name="mdc", permissions=["create:*"]))
    _, partner = start_service(relay_users=["gateway"])
    body = readings_request("MTR-1")
    partner.send(body, user_id="gateway", headers={"amihub-partner": "mdc"})
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    with hub_app.uow_factory() as uow:
        assert uow.messages.find("mdc", message_id_of(body)) is not None


class FlakyPipeline:
    """The real pipeline behind a store that is down for the first ``failures`` calls."""

    def __init__(self, pipeline: Pipeline, failures: int) -> None:
        self.pipeline = pipeline
        self.failures = failures
        self.calls = 0

    def process(self, msg: InboundMessage) -> Outcome:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailable("the store is down (test)")
        return self.pipeline.process(msg)


def test_recoverable_failure_is_retried(start_service: Start, hub_app: App) -> None:
    flaky = FlakyPipeline(hub_app.pipeline, failures=2)
    hub_app.pipeline = flaky  # type: ignore[assignment]
    _, partner = start_service(max_attempts=5)
    body = readings_request("MTR-1")
    mid = partner.send(body)
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    assert reply.properties["correlation_id"] == mid
    assert flaky.calls == 3
    assert reading_count(hub_app) == 96
    assert partner.dead_letters(timeout=0.2) == []
    with hub_app.uow_factory() as uow:  # the retried copy kept the sender's name
        assert uow.messages.find("amqp", message_id_of(body)) is not None


def test_retried_copy_keeps_the_partner(start_service: Start, hub_app: App) -> None:
    with_users(hub_app, UserSettings(name="mdc", permissions=["create:*"]))
    hub_app.pipeline = FlakyPipeline(hub_app.pipeline, failures=1)  # type: ignore[assignment]
    _, partner = start_service()
    body = readings_request("MTR-1")
    partner.send(body, user_id="mdc")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    with hub_app.uow_factory() as uow:
        assert uow.messages.find("mdc", message_id_of(body)) is not None


def test_keeps_failing_goes_to_dead_letters(start_service: Start, hub_app: App) -> None:
    flaky = FlakyPipeline(hub_app.pipeline, failures=100)
    hub_app.pipeline = flaky  # type: ignore[assignment]
    _, partner = start_service(max_attempts=3)
    mid = partner.send(readings_request("MTR-1"), reply=True)
    dead = assert_dead_lettered(partner, hub_app, "3001")
    assert flaky.calls == 3
    assert dead.headers["amihub-failed-attempts"] == 3
    assert dead.properties["message_id"] == mid
    assert "StoreUnavailable" in dead.headers["amihub-error-reason"]
    [reply] = partner.replies()  # the partner learns it was given up
    assert result_of(reply.body) == ("FAILED", ["3001"])
    assert reply.properties["correlation_id"] == mid


def test_message_delivered_too_often_is_dead_lettered_unprocessed(
    start_service: Start, hub_app: App
) -> None:
    """Quorum queues count deliveries (x-delivery-count), crashes included."""
    flaky = FlakyPipeline(hub_app.pipeline, failures=0)
    hub_app.pipeline = flaky  # type: ignore[assignment]
    _, partner = start_service(max_attempts=3)
    partner.send(readings_request("MTR-1"), headers={"x-delivery-count": 3})
    dead = assert_dead_lettered(partner, hub_app, "3002")
    assert "delivered 3 time(s)" in dead.headers["amihub-error-reason"]
    assert flaky.calls == 0
    assert reading_count(hub_app) == 0


def test_many_messages_are_handled_in_batches(start_service: Start, hub_app: App) -> None:
    service, partner = start_service(batch_size=50, batch_wait=0.2)
    add_meters(hub_app, *(f"B{i}" for i in range(40)))
    for i in range(40):
        partner.send(readings_request(f"B{i}", intervals=4))
    replies = partner.replies(40)
    assert len(replies) == 40
    assert all(r.headers["amihub-result"] == "OK" for r in replies)
    assert service.consumer.rounds < 40
    assert reading_count(hub_app) == 160


def test_outbox_events_reach_partner_queues(start_service: Start, hub_app: App) -> None:
    service, partner = start_service(
        partners=[{"name": "cis", "events": ["created.*"]}, {"name": "other", "events": ["x.y"]}]
    )
    cis_queue = service.settings.partners[0].queue_name
    with hub_app.uow_factory() as uow:
        for n in range(3):
            uow.outbox.enqueue(
                channel="amqp",
                destination=event_destination("created", "MeterReadings"),
                verb="created",
                noun="MeterReadings",
                body=f"<event n='{n}'/>".encode(),
                headers={"amihub-utility": "DEFAULT"},
                correlation_id=f"c{n}",
            )
        uow.outbox.enqueue(
            channel="amqp",
            destination=queue_destination(partner.reply_queue),
            verb="reply",
            noun="MeterReadings",
            body=b"<async-reply/>",
            correlation_id="req-9",
        )
        uow.commit()
    assert service.dispatcher is not None
    service.dispatcher.wake()
    events = partner.get(cis_queue, 3)
    assert [e.body for e in events] == [f"<event n='{n}'/>".encode() for n in range(3)]
    assert events[0].routing_key == "created.MeterReadings"
    assert events[0].properties["type"] == "created.MeterReadings"
    assert events[0].properties["correlation_id"] == "c0"
    [reply] = partner.replies()
    assert reply.body == b"<async-reply/>"
    assert partner.depth(service.settings.partners[1].queue_name) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with hub_app.uow_factory() as uow:
            if uow.outbox.pending_count("amqp") == 0:
                break
        time.sleep(0.05)
    with hub_app.uow_factory() as uow:
        assert uow.outbox.pending_count("amqp") == 0


def test_accepted_request_is_published_as_an_event(start_service: Start, hub_app: App) -> None:
    service, partner = start_service(partners=[{"name": "cis", "events": ["created.*"]}])
    queue = service.settings.partners[0].queue_name
    body = readings_request("MTR-1")
    partner.send(body, message_id="req-7")
    partner.send(b"<broken", message_id="req-8")  # FAILED: no event
    partner.replies(2)
    [event] = partner.get(queue, 1)
    assert event.routing_key == "created.MeterReadings"
    root = etree.fromstring(event.body)
    assert etree.QName(root).localname == "EventMessage"
    assert root.findtext(".//{*}Header/{*}Verb") == "created"
    assert root.findtext(".//{*}Header/{*}CorrelationID") == message_id_of(body)
    assert len(root.findall(".//{*}IntervalReadings")) == 96
    assert event.properties["message_id"] == root.findtext(".//{*}Header/{*}MessageID")
    # a partner resending the same message gets the stored reply, subscribers no second event
    partner.send(body, message_id="req-7")
    partner.replies(1)
    assert partner.get(queue, 1, timeout=0.3) == []


class BatchingPipeline:
    """The real pipeline with a ``process_batch`` (as the pipeline owner is adding it)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.batches: list[int] = []

    def process(self, msg: InboundMessage) -> Outcome:
        return self.pipeline.process(msg)

    def process_batch(self, msgs: list[InboundMessage]) -> list[Outcome]:
        self.batches.append(len(msgs))
        return [self.pipeline.process(m) for m in msgs]


def test_deliveries_go_to_process_batch_when_there_is_one(
    start_service: Start, hub_app: App
) -> None:
    batching = BatchingPipeline(hub_app.pipeline)
    hub_app.pipeline = batching  # type: ignore[assignment]
    add_meters(hub_app, *(f"B{i}" for i in range(30)))
    _, partner = start_service(batch_size=30, batch_wait=0.3)
    for i in range(30):
        partner.send(readings_request(f"B{i}", intervals=4))
    assert len(partner.replies(30)) == 30
    assert sum(batching.batches) == 30
    assert max(batching.batches) > 1


def test_client_request_reply_in_process(start_service: Start, hub_app: App) -> None:
    """What ``amihub demo`` can use: the service and a client on memory://, no broker."""
    service, _ = start_service()
    with AmqpClient(service.settings) as client:
        ok = client.request(readings_request("MTR-1"), "create.MeterReadings", timeout=10)
        bad = client.request(b"<nope/>", "create.MeterReadings", timeout=10)
    assert ok.result == "OK"
    assert result_of(ok.body) == ("OK", [])
    assert bad.result == "FAILED"
    assert reading_count(hub_app) == 96


def test_unreachable_broker_backs_off_and_stops(hub_app: App) -> None:
    """Nothing listens on the port: the consumer retries with backoff and stops on request."""
    from adapters.amqp.service import AmqpService
    from tests.conftest import free_port
    from tests.unit.amqp.partner import unique_settings

    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    hub_app.settings = hub_app.settings.model_copy(
        update={"amqp": unique_settings(url, outbox=False, connect_timeout=1.0)}
    )
    service = AmqpService(hub_app)
    service.start()
    assert not service.wait_consuming(0.5)
    t0 = time.monotonic()
    service.stop()
    assert time.monotonic() - t0 < 3
