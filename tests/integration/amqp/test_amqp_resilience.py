"""Crashes, dropped connections and several workers, on RabbitMQ and PostgreSQL.

The stream: 100 meters x 2 days x 50 readings = 200 CreateMeterReadings
messages carrying 10,000 readings, each with its own MessageID and reply_to
(the cost is per message: AMIHUB_TEST_STREAM_MESSAGES=10000 sends 10,000
messages of one reading each, which takes minutes until the pipeline batches).
"Exactly once" is checked in the store itself: 10,000 reading rows all at
version 1, no superseded history, and one *replied* message-log row per
MessageID (a redelivery shows as a *duplicate* row, never as a second apply).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest
from kombu import Exchange, Queue
from kombu.connection import Connection

from adapters.amqp.topology import Topology
from hub.bootstrap import App
from tests.integration.amqp.conftest import Start, Workers, delete_topology, wait_for
from tests.unit.amqp.partner import Partner, Received, readings_request, unique_settings
from tests.unit.hub.conftest import add_meters, make_app, reading_count

#: messages in the stream (AMIHUB_TEST_STREAM_MESSAGES=10000 for 10,000 one-reading messages;
#: slower: the cost is per message)
#: CI runs the issue's stream of 10,000 readings messages; a developer's run, 200 of them
_ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MESSAGES = int(os.environ.get("AMIHUB_TEST_STREAM_MESSAGES", "10000" if _ON_CI else "200"))
METERS = [f"K{n:03d}" for n in range(min(100, MESSAGES))]
DAYS = -(-MESSAGES // len(METERS))
PER_MESSAGE = 10_000 // (len(METERS) * DAYS)
TOTAL = len(METERS) * DAYS * PER_MESSAGE  # 10,000 readings (200 messages by default)
#: each test's own timeout: the 200-message stream fits the global 120 s; 10,000 messages
#: took 72 s (two workers) to over 120 s (SIGKILL and restart) on a loaded 2-core machine
TIMEOUT = 120 if MESSAGES <= 1_000 else 420
#: every wait of a test draws on one budget that ends before its timeout, so a stalled
#: stream fails naming what it waited for, never by pytest-timeout's traceback
BUDGET = TIMEOUT - 30

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.timeout(TIMEOUT)]


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        """Seconds left (at least 1), at most ``cap``."""
        left = max(1.0, self.end - time.monotonic())
        return left if cap is None else min(cap, left)


@pytest.fixture
def budget() -> Budget:
    return Budget(BUDGET)


@pytest.fixture
def pg_app(postgres_url: str) -> Iterator[App]:
    app = make_app(postgres_url)
    add_meters(app, *METERS)
    yield app
    app.close()


def publish_stream(partner: Partner) -> set[str]:
    sent = set()
    for day in range(DAYS):
        for meter in METERS:
            sent.add(partner.send(readings_request(meter, day, intervals=PER_MESSAGE)))
    return sent


def assert_exactly_once(url: str, messages: int) -> dict[str, int]:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows, max_version = conn.execute("SELECT count(*), max(version) FROM reading").fetchone()  # type: ignore[misc]
        (history,) = conn.execute("SELECT count(*) FROM reading_history").fetchone()  # type: ignore[misc]
        states = dict(
            conn.execute("SELECT state, count(*) FROM message_log GROUP BY state").fetchall()
        )
        (distinct,) = conn.execute(  # type: ignore[misc]
            "SELECT count(DISTINCT message_id) FROM message_log WHERE state = 'replied'"
        ).fetchone()
    assert rows == TOTAL
    assert max_version == 1
    assert history == 0
    assert states.get("replied") == messages
    assert distinct == messages
    return states


def collect_replies(partner: Partner, sent: set[str]) -> set[str]:
    seen: set[str] = set()
    while seen != sent:
        got = partner.replies(len(sent), timeout=5)
        if not got:
            break
        seen |= {r.properties["correlation_id"] for r in got}
        assert all(r.headers["amihub-result"] == "OK" for r in got)
    return seen


def test_worker_killed_with_sigkill_mid_stream(
    amqp_url: str, postgres_url: str, pg_app: App, workers: Workers, budget: Budget
) -> None:
    settings = unique_settings(amqp_url, prefetch=20, batch_size=20)
    partner = Partner(settings)
    try:
        Topology.from_settings(settings).declare(partner.connection)
        events = f"{settings.request_queue}.events"
        subscriber = Queue(events, Exchange(settings.events_exchange, type="topic"), "created.#")
        subscriber(partner.channel).declare()
        sent = publish_stream(partner)
        worker = workers.start(settings, postgres_url)
        wait_for(
            lambda: reading_count(pg_app) >= TOTAL // 4, budget.left(), "a quarter of the readings"
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        stored_at_kill = reading_count(pg_app)
        assert stored_at_kill < TOTAL, "the worker finished before it was killed"
        workers.start(settings, postgres_url)
        wait_for(
            lambda: reading_count(pg_app) == TOTAL, budget.left(), "every reading after the restart"
        )
        wait_for(lambda: partner.depth(settings.request_queue) == 0, budget.left(30), "every ack")
        assert collect_replies(partner, sent) == sent
        assert_exactly_once(postgres_url, len(sent))
        # every accepted request's event survived the kill (at least once, stable ids)
        got: list[Received] = []

        def an_event_for_every_request() -> bool:  # published after the commit: they trail
            got.extend(partner.get(events, 2 * len(sent), timeout=0.5))
            return len({e.properties["correlation_id"] for e in got}) == len(sent)

        wait_for(an_event_for_every_request, budget.left(60), "an event for every request")
        assert len({e.properties["message_id"] for e in got}) == len(sent)
    finally:
        workers.stop_all()
        partner.channel.queue_delete(events)
        delete_topology(partner)
        partner.close()


def close_connections_of(port: int) -> int:
    """Close, on the broker, the connection whose client port is ``port``."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "peer_port"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    closed = 0
    for line in out.splitlines():
        pid, _, peer = line.partition("\t")
        if peer.strip() == str(port):
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid.strip(), "test: dropped"],
                capture_output=True,
                check=True,
            )
            closed += 1
    return closed


def client_port(connection: Connection) -> int:
    sock = connection._connection.sock  # the live py-amqp connection, never a new one
    return int(sock.getsockname()[1])


def test_broker_closes_the_connection_mid_stream(
    pg_app: App, rabbit: Start, postgres_url: str, budget: Budget
) -> None:
    service, partner = rabbit(pg_app, prefetch=20, batch_size=20)
    sent = publish_stream(partner)
    closed: list[Connection] = []
    for target in (TOTAL // 4, TOTAL // 2):
        wait_for(lambda t=target: reading_count(pg_app) >= t, budget.left(), "progress")
        wait_for(
            lambda: (
                service.consumer.consuming.is_set() and service.consumer.connection not in closed
            ),
            budget.left(30),
            "a live connection",
        )
        connection = service.consumer.connection
        assert connection is not None
        assert close_connections_of(client_port(connection)) == 1
        closed.append(connection)
    wait_for(lambda: reading_count(pg_app) == TOTAL, budget.left(), "every reading")
    wait_for(
        lambda: partner.depth(service.settings.request_queue) == 0, budget.left(30), "every ack"
    )
    assert collect_replies(partner, sent) == sent
    assert_exactly_once(postgres_url, len(sent))


def test_two_workers_share_the_queue(
    amqp_url: str, postgres_url: str, pg_app: App, workers: Workers, budget: Budget
) -> None:
    settings = unique_settings(amqp_url, prefetch=20, batch_size=20)
    partner = Partner(settings)
    try:
        Topology.from_settings(settings).declare(partner.connection)
        workers.start(settings, postgres_url, workers=2)

        def consumers() -> int:
            _, _, count = partner.channel.queue_declare(settings.request_queue, passive=True)
            return int(count)

        wait_for(lambda: consumers() == 2, budget.left(60), "two consumers on the queue")
        sent = publish_stream(partner)
        wait_for(lambda: reading_count(pg_app) == TOTAL, budget.left(), "every reading")
        wait_for(lambda: partner.depth(settings.request_queue) == 0, budget.left(30), "every ack")
        assert collect_replies(partner, sent) == sent
        states = assert_exactly_once(postgres_url, len(sent))
        assert states.get("duplicate", 0) == 0
    finally:
        workers.stop_all()
        delete_topology(partner)
        partner.close()


def test_outbox_publisher_survives_a_closed_connection(
    pg_app: App, rabbit: Start, postgres_url: str
) -> None:
    cis = {"name": "cis", "events": ["created.EndDeviceEvents"]}
    service, partner = rabbit(pg_app, partners=[cis], outbox_batch=50)
    queue = service.settings.partners[0].queue_name
    assert service.dispatcher is not None

    def enqueue(first: int, count: int) -> None:
        with pg_app.uow_factory() as uow:
            for n in range(first, first + count):
                uow.outbox.enqueue(
                    channel="amqp",
                    destination="created.EndDeviceEvents",
                    verb="created",
                    noun="EndDeviceEvents",
                    body=f"<e n='{n}'/>".encode(),
                )
            uow.commit()
        assert service.dispatcher is not None
        service.dispatcher.wake()

    enqueue(0, 100)
    wait_for(lambda: service.outbox_publisher.published >= 100, 30, "the first events")
    connection = service.outbox_publisher._connection
    assert connection is not None
    assert close_connections_of(client_port(connection)) == 1
    enqueue(100, 100)
    got = partner.get(queue, 200, timeout=30)
    assert {e.body for e in got} == {f"<e n='{n}'/>".encode() for n in range(200)}
    with pg_app.uow_factory() as uow:
        wait_for(lambda: uow.outbox.pending_count("amqp") == 0, 10, "the outbox drained")
