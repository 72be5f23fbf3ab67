"""The transactional outbox: delivered after commit, retried with backoff, dead-lettered."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from cim_schemas.errors import ConfigurationError, TransportUnavailable
from hub.bootstrap import App
from hub.outbox import OutboxDispatcher, RetryPolicy
from mdm.ports import OutboxItem
from tests.unit.hub.conftest import make_app


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now


def enqueue(app: App, n: int, *, commit: bool = True) -> None:
    with app.uow_factory() as uow:
        for i in range(n):
            uow.outbox.enqueue(
                channel="test",
                destination=f"dest-{i}",
                verb="created",
                noun="MeterReadings",
                body=f"<m{i}/>".encode(),
                headers={"k": "v"},
                correlation_id=f"c{i}",
            )
        if commit:
            uow.commit()


def test_only_committed_items_are_delivered_once(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    enqueue(app, 2, commit=False)  # rolled back: never delivered
    enqueue(app, 3)
    sent: list[OutboxItem] = []
    dispatcher = OutboxDispatcher(app.uow_factory, "test", send=sent.append)
    assert dispatcher.run_once() == 3
    assert dispatcher.run_once() == 0
    assert [i.destination for i in sent] == ["dest-0", "dest-1", "dest-2"]
    assert sent[0].headers == {"k": "v"}
    assert sent[0].correlation_id == "c0"
    with app.uow_factory() as uow:
        assert uow.outbox.pending_count("test") == 0


def test_retry_with_backoff_then_dead_letter(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    enqueue(app, 1)
    clock = Clock()
    calls: list[int] = []

    def flaky(item: OutboxItem) -> None:
        calls.append(item.attempts)
        raise TransportUnavailable("peer down")

    policy = RetryPolicy(max_attempts=3, first_delay=10, jitter=0)
    dispatcher = OutboxDispatcher(app.uow_factory, "test", send=flaky, policy=policy, clock=clock)
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0  # not due yet: backoff
    clock.now += timedelta(seconds=10)
    assert dispatcher.run_once() == 1
    clock.now += timedelta(seconds=19)
    assert dispatcher.run_once() == 0  # second delay is 20 s
    clock.now += timedelta(seconds=1)
    assert dispatcher.run_once() == 1
    assert calls == [0, 1, 2]
    clock.now += timedelta(days=1)
    assert dispatcher.run_once() == 0  # dead: never again
    with app.uow_factory() as uow:
        dead = uow.dead_letters.list()
    assert len(dead) == 1
    assert dead[0].body == b"<m0/>"
    assert "peer down" in dead[0].reason


def test_permanent_error_is_not_retried(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    enqueue(app, 1)

    def refuse(item: OutboxItem) -> None:
        raise ConfigurationError("no such subscriber")

    dispatcher = OutboxDispatcher(app.uow_factory, "test", send=refuse, clock=Clock())
    dispatcher.run_once()
    with app.uow_factory() as uow:
        assert uow.outbox.pending_count() == 0
        assert len(uow.dead_letters.list()) == 1


def test_pending_items_survive_a_restart(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    enqueue(app, 2)
    app.close()
    restarted = make_app(sqlite_url)
    sent: list[OutboxItem] = []
    OutboxDispatcher(restarted.uow_factory, "test", send=sent.append).run_once()
    assert len(sent) == 2


def test_batch_sender_and_background_thread(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    delivered = threading.Event()
    seen: list[int] = []

    def batch(items: Sequence[OutboxItem]) -> dict[int, Exception]:
        seen.extend(i.id for i in items)
        if len(seen) >= 4:
            delivered.set()
        return {}

    dispatcher = OutboxDispatcher(app.uow_factory, "test", send_batch=batch, poll_interval=0.05)
    dispatcher.start()
    try:
        enqueue(app, 4)
        dispatcher.wake()
        assert delivered.wait(5)
    finally:
        dispatcher.stop()
    assert sorted(seen) == sorted(set(seen))


@pytest.mark.postgres
def test_two_dispatchers_on_postgres_deliver_each_item_once(postgres_url: str) -> None:
    app = make_app(postgres_url)
    enqueue(app, 200)
    sent: list[int] = []
    lock = threading.Lock()

    def send(item: OutboxItem) -> None:
        with lock:
            sent.append(item.id)

    dispatchers = [
        OutboxDispatcher(app.uow_factory, "test", send=send, batch_size=10) for _ in range(2)
    ]
    threads = [
        threading.Thread(target=lambda d=d: [d.run_once() for _ in range(15)]) for d in dispatchers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(set(sent))
    assert len(sent) == 200
    app.close()


def test_an_async_reply_is_queued_with_the_effect(sqlite_url: str) -> None:
    """AsyncReplyFlag + ReplyAddress: the reply is in the outbox in the transaction of
    the effect (nothing can be lost in between); a refused message queues nothing."""
    from hub.messages import InboundMessage, ReplyRoute
    from hub.samples import meter_readings_bytes
    from tests.unit.hub.conftest import START, add_meters

    app = make_app(sqlite_url)
    add_meters(app, "MTR-1")
    route = ReplyRoute("test", frozenset({"http", "https"}))
    asked = b"<AsyncReplyFlag>true</AsyncReplyFlag><ReplyAddress>%s</ReplyAddress>"

    def message(address: bytes, meter: str = "MTR-1") -> InboundMessage:
        body = meter_readings_bytes([meter], START, 4).replace(
            b"</Source>", b"</Source>" + asked % address, 1
        )
        return InboundMessage(source="cis", endpoint="t", body=body, async_replies=route)

    queued = app.pipeline.process(message(b"https://cis.example/ws/ReplyMeterReadings"))
    assert queued.reply_queued
    sent: list[OutboxItem] = []
    OutboxDispatcher(app.uow_factory, "test", send=sent.append).run_once()
    assert [(i.destination, i.verb, i.noun, i.headers["service"]) for i in sent] == [
        (
            "https://cis.example/ws/ReplyMeterReadings",
            "reply",
            "MeterReadings",
            "ReplyMeterReadings",
        )
    ]
    assert sent[0].body == queued.reply
    assert sent[0].correlation_id == queued.message_id
    # an address the adapter does not serve: answered synchronously, nothing queued
    assert not app.pipeline.process(message(b"queue:cis.replies")).reply_queued
    # a message refused whole (not XML) is answered at once and queues nothing
    broken = app.pipeline.process(
        InboundMessage(source="cis", endpoint="t", body=b"<broken", async_replies=route)
    )
    assert not broken.reply_queued
    with app.uow_factory() as uow:
        assert uow.outbox.pending_count("test") == 0
    app.close()
