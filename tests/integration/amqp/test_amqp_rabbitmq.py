"""The AMQP adapter against the real RabbitMQ: bad input, identity, topology, confirms, outbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.amqp.service import event_destination
from hub.bootstrap import App
from tests.integration.amqp.broker import list_queues
from tests.integration.amqp.conftest import Start, wait_for
from tests.unit.amqp.partner import get_meter_readings_request, readings_request
from tests.unit.amqp.test_amqp_memory import assert_dead_lettered, result_of
from tests.unit.hub.conftest import add_meters, make_app, reading_count
from tests.waiting import wait_until

pytestmark = pytest.mark.rabbitmq


def test_create_meter_readings_round_trip(rabbit: Start, sqlite_app: App) -> None:
    service, partner = rabbit(sqlite_app)
    mid = partner.send(readings_request("MTR-1"))
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    assert reply.properties["correlation_id"] == mid
    assert reply.properties["content_type"] == "application/xml"
    assert reading_count(sqlite_app) == 96
    wait_for(lambda: partner.depth(service.settings.request_queue) == 0, 5, "the ack")


def test_malformed_xml(rabbit: Start, sqlite_app: App) -> None:
    _, partner = rabbit(sqlite_app)
    partner.send(b"<RequestMessage><Header><Verb>create</Verb>")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1001"])
    assert_dead_lettered(partner, sqlite_app, "1001")


def test_unknown_routing_key(rabbit: Start, sqlite_app: App) -> None:
    _, partner = rabbit(sqlite_app)
    partner.send(readings_request("MTR-1"), routing_key="delete.Everything")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1006"])
    dead = assert_dead_lettered(partner, sqlite_app, "1006")
    assert dead.routing_key == "delete.Everything"
    assert reading_count(sqlite_app) == 0


def test_refusals_before_the_pipeline_are_journalled(rabbit: Start, sqlite_app: App) -> None:
    """Refused by the consumer's checks (routing key, mapping header, a spoofed partner):
    dead-lettered on RabbitMQ and journalled -- a row received -> dead_lettered, the
    dead letter with the body, the audit entry of a refused sender."""
    _, partner = rabbit(sqlite_app)
    body = readings_request("MTR-1")
    partner.send(body, routing_key="delete.Everything")
    partner.send(b"meter;value", headers={"amihub-mapping": "no-such-mapping"})
    partner.send(body, headers={"amihub-partner": "someone-else"})
    replies = partner.replies(3)
    codes = sorted(result_of(r.body)[1][0] for r in replies)
    assert codes == ["1006", "1010", "1012"]
    letters = {d.headers["amihub-error-code"]: d for d in partner.dead_letters(3)}
    assert sorted(letters) == codes
    with sqlite_app.uow_factory() as uow:
        for code, dead in letters.items():
            stored = uow.dead_letters.get(int(dead.headers["amihub-dead-letter-id"]))
            assert stored is not None
            assert stored.body == dead.body
            assert stored.message_log_id == int(dead.headers["amihub-message-log-id"])
            steps = [s for s, _, _ in uow.messages.lifecycle(stored.message_log_id)]
            assert steps == ["received", "dead_lettered"], code
            row = uow.messages.get(stored.message_log_id)
            assert row is not None
            assert (row.state, row.result) == ("dead_lettered", "FAILED")
            assert stored.endpoint == f"amqp:{sqlite_app.settings.amqp.request_queue}"
        audited = [a for a in uow.audit.list(20) if a[2] == "refused"]
    assert len(audited) == 1  # the spoofed partner
    assert reading_count(sqlite_app) == 0


def test_payload_too_large(rabbit: Start, tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path}/small.db", max_message_bytes=4000, tree_limit_bytes=4000)
    try:
        add_meters(app, "MTR-1")
        _, partner = rabbit(app)
        partner.send(readings_request("MTR-1"))
        [reply] = partner.replies()
        assert result_of(reply.body) == ("FAILED", ["1003"])
        assert_dead_lettered(partner, app, "1003")
    finally:
        app.close()


def test_mapping_header_naming_no_mapping(rabbit: Start, sqlite_app: App) -> None:
    _, partner = rabbit(sqlite_app)
    partner.send(b'{"meter": "MTR-1"}', headers={"amihub-mapping": "no-such-mapping"})
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["1012"])
    assert_dead_lettered(partner, sqlite_app, "1012")


def test_no_reply_to_is_processed(rabbit: Start, sqlite_app: App) -> None:
    service, partner = rabbit(sqlite_app)
    partner.send(readings_request("MTR-1"), reply=False)
    wait_for(lambda: reading_count(sqlite_app) == 96, 10, "the readings")
    wait_for(lambda: partner.depth(service.settings.request_queue) == 0, 5, "the ack")
    assert partner.replies(timeout=0.3) == []


def test_reply_to_a_missing_queue_does_not_block(rabbit: Start, sqlite_app: App) -> None:
    """A mandatory reply the broker returns is logged; the request is still acked."""
    service, partner = rabbit(sqlite_app)
    partner.reply_queue = "amihub-test-no-such-queue"
    partner.send(readings_request("MTR-1"))
    partner.reply_queue = f"{service.settings.request_queue}.replies"
    partner.send(readings_request("MTR-2"))
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    wait_for(lambda: partner.depth(service.settings.request_queue) == 0, 5, "the acks")
    assert reading_count(sqlite_app) == 192


def test_user_id_validated_by_rabbitmq_names_the_partner(rabbit: Start, sqlite_app: App) -> None:
    from hub.security import UserSettings

    sqlite_app.settings = sqlite_app.settings.model_copy(
        update={"users": [UserSettings(name="guest", permissions=["create:MeterReadings"])]}
    )
    _, partner = rabbit(sqlite_app)
    partner.send(readings_request("MTR-1"), user_id="guest")
    partner.send(readings_request("MTR-2"))  # no user_id: anonymous, refused
    replies = partner.replies(2)
    assert sorted(r.headers["amihub-result"] for r in replies) == ["FAILED", "OK"]


def test_quorum_queues(rabbit: Start, sqlite_app: App, amqp_url: str) -> None:
    service, partner = rabbit(sqlite_app, quorum=True)
    partner.send(readings_request("MTR-1"))
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    types = list_queues(amqp_url, "type")  # in the vhost of the URL
    assert types[service.settings.request_queue] == ["quorum"]
    assert types[service.settings.dead_letter_queue] == ["quorum"]


def test_outbox_events_with_batched_confirms(rabbit: Start, sqlite_app: App) -> None:
    service, partner = rabbit(
        sqlite_app,
        partners=[{"name": "cis", "events": ["created.MeterReadings"]}],
        outbox_batch=200,
    )
    queue = service.settings.partners[0].queue_name
    with sqlite_app.uow_factory() as uow:
        for n in range(500):
            uow.outbox.enqueue(
                channel="amqp",
                destination=event_destination("created", "MeterReadings"),
                verb="created",
                noun="MeterReadings",
                body=f"<e n='{n}'/>".encode(),
            )
        uow.commit()
    assert service.dispatcher is not None
    service.dispatcher.wake()
    events = partner.get(queue, 500, timeout=20)
    assert len(events) == 500
    assert len({e.properties["message_id"] for e in events}) == 500
    publisher = service.outbox_publisher
    assert publisher.published == 500
    assert publisher.batches <= 5  # one wait for confirms per batch of 200, not 500 round trips

    def drained() -> bool:
        with sqlite_app.uow_factory() as uow:
            return uow.outbox.pending_count("amqp") == 0

    wait_until(drained, 10, "every published event marked sent in the outbox")


def test_partner_guide_create_get_and_events(rabbit: Start, sqlite_app: App) -> None:
    """What docs/amqp.md tells a partner: publish, read the reply and the events queue."""
    from hub.security import UserSettings

    sqlite_app.settings = sqlite_app.settings.model_copy(
        update={"users": [UserSettings(name="guest", permissions=["create:*", "get:*"])]}
    )
    cis = {"name": "cis", "events": ["created.MeterReadings"]}
    service, partner = rabbit(sqlite_app, partners=[cis])
    events_queue = service.settings.partners[0].queue_name
    # 1. CreateMeterReadings: reply on the partner's queue, event on its events queue
    create_id = partner.send(readings_request("MTR-1"), "create.MeterReadings", user_id="guest")
    [created] = partner.replies()
    assert created.properties["correlation_id"] == create_id
    assert result_of(created.body) == ("OK", [])
    [event] = partner.get(events_queue)
    assert event.routing_key == "created.MeterReadings"
    # 2. GetMeterReadings: the readings come back in the reply's Payload
    get = get_meter_readings_request(
        "MTR-1", "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", "get-1"
    )
    get_id = partner.send(get, "get.MeterReadings", user_id="guest")
    [answer] = partner.replies()
    assert answer.properties["correlation_id"] == get_id
    assert result_of(answer.body) == ("OK", [])
    assert answer.body.count(b"<IntervalReadings>") == 96
    assert partner.get(events_queue, timeout=0.3) == []  # a get is no event


def test_recoverable_failure_retried_through_rabbitmq(rabbit: Start, sqlite_app: App) -> None:
    """The retry copy carries amihub's own user_id (RabbitMQ checks it) and the partner."""
    from hub.security import UserSettings
    from tests.unit.amqp.test_amqp_memory import FlakyPipeline, message_id_of

    sqlite_app.settings = sqlite_app.settings.model_copy(
        update={"users": [UserSettings(name="guest", permissions=["create:*"])]}
    )
    flaky = FlakyPipeline(sqlite_app.pipeline, failures=2)
    sqlite_app.pipeline = flaky  # type: ignore[assignment]
    _, partner = rabbit(sqlite_app, max_attempts=5)
    body = readings_request("MTR-1")
    mid = partner.send(body, user_id="guest")
    [reply] = partner.replies()
    assert result_of(reply.body) == ("OK", [])
    assert reply.properties["correlation_id"] == mid
    assert flaky.calls == 3
    with sqlite_app.uow_factory() as uow:
        assert uow.messages.find("guest", message_id_of(body)) is not None


def test_poison_message_dead_lettered_on_rabbitmq(rabbit: Start, sqlite_app: App) -> None:
    from tests.unit.amqp.test_amqp_memory import FlakyPipeline

    sqlite_app.pipeline = FlakyPipeline(sqlite_app.pipeline, failures=99)  # type: ignore[assignment]
    _, partner = rabbit(sqlite_app, max_attempts=3)
    partner.send(readings_request("MTR-1"))
    dead = assert_dead_lettered(partner, sqlite_app, "3001")
    assert dead.headers["amihub-failed-attempts"] == 3
    assert dead.routing_key == "create.MeterReadings"
    [reply] = partner.replies()
    assert result_of(reply.body) == ("FAILED", ["3001"])


def test_a_vendor_cim_variant_named_in_the_mapping_header(rabbit: Start, tmp_path: Path) -> None:
    from hub.mapped import mapping_importer
    from mappings.load import BUILTIN_DIR, load_dir

    app = make_app(f"sqlite:///{tmp_path}/variant.db")
    try:
        add_meters(app, "m-1001")
        _, partner = rabbit(app, importer=mapping_importer(app.pipeline, load_dir(BUILTIN_DIR)))
        body = (BUILTIN_DIR / "samples" / "cim-vendor-draft-message.xml").read_bytes()
        # the message is a created MeterReadings: its routing key says so
        partner.send(body, "created.MeterReadings", headers={"amihub-mapping": "cim-vendor-draft"})
        [reply] = partner.replies()
        assert result_of(reply.body) == ("OK", [])
        assert reading_count(app) == 2
        partner.send(body, headers={"amihub-mapping": "cim-vendor-drafty"})  # a typo
        [reply] = partner.replies()
        assert result_of(reply.body) == ("FAILED", ["1012"])
        assert b"cim-vendor-drafty" in reply.body
        assert_dead_lettered(partner, app, "1012")
        assert reading_count(app) == 2
    finally:
        app.close()
