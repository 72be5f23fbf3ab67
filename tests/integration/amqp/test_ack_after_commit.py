"""Acknowledged after the commit, as the broker counts it: while the pipeline holds a
round before storing it, RabbitMQ holds every delivery unacknowledged."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from hub.bootstrap import App
from hub.messages import InboundMessage, Outcome
from hub.pipeline import BatchPlan, Pipeline
from tests.integration.amqp.broker import ready_and_unacked
from tests.integration.amqp.conftest import Start
from tests.unit.amqp.partner import readings_request
from tests.unit.hub.conftest import reading_count
from tests.waiting import wait_until

pytestmark = pytest.mark.rabbitmq


class HeldPipeline:
    """The real pipeline; whatever stores (and commits) waits until the test releases it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.entered = threading.Event()
        self.release = threading.Event()

    def _hold(self) -> None:
        self.entered.set()
        assert self.release.wait(60)

    def process(self, msg: InboundMessage) -> Outcome:
        self._hold()
        return self.pipeline.process(msg)

    def process_batch(self, msgs: Sequence[InboundMessage]) -> list[Outcome]:
        self._hold()
        return self.pipeline.process_batch(msgs)

    def prepare_batch(self, msgs: Sequence[InboundMessage]) -> BatchPlan:
        return self.pipeline.prepare_batch(msgs)  # no IO: parsing and checks only

    def apply_batch(self, plan: BatchPlan) -> list[Outcome]:
        self._hold()
        return self.pipeline.apply_batch(plan)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("batch_size", [1, 4], ids=["one-by-one", "batched"])
def test_deliveries_stay_unacknowledged_until_committed(
    rabbit: Start, sqlite_app: App, amqp_url: str, batch_size: int
) -> None:
    held = HeldPipeline(sqlite_app.pipeline)
    sqlite_app.pipeline = held  # type: ignore[assignment]
    service, partner = rabbit(sqlite_app, prefetch=20, batch_size=batch_size, batch_wait=0.2)
    queue = service.settings.request_queue
    for day in range(4):
        partner.send(readings_request("MTR-1", day, intervals=4))
    seen: list[tuple[int, int]] = []

    def broker_counts(expected: tuple[int, int]) -> bool:
        seen.append(ready_and_unacked(amqp_url, queue))
        return seen[-1] == expected

    try:
        assert held.entered.wait(30), "the pipeline was never called"
        # nothing is stored yet: the broker must still hold all four deliveries, unacknowledged
        wait_until(lambda: broker_counts((0, 4)), 30, "4 unacknowledged deliveries")
        assert reading_count(sqlite_app) == 0
        assert service.consumer.handled == 0
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (ready, unacked) seen: {seen}") from None
    finally:
        held.release.set()
    replies = partner.replies(4, timeout=30)
    assert sorted(r.headers["amihub-result"] for r in replies) == ["OK"] * 4
    assert reading_count(sqlite_app) == 4 * 4
    wait_until(lambda: broker_counts((0, 0)), 30, "every delivery acknowledged")
