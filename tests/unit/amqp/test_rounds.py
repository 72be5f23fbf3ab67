"""Rounds overlap: the next one is prepared while one is stored; acks wait for the commit
(the broker's own count of unacknowledged deliveries: tests/integration/amqp/
test_ack_after_commit.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from hub.bootstrap import App
from hub.messages import InboundMessage, Outcome
from hub.pipeline import BatchPlan, Pipeline
from tests.unit.amqp.conftest import Start
from tests.unit.amqp.partner import readings_request
from tests.unit.hub.conftest import add_meters, reading_count
from tests.waiting import wait_until


class HeldPipeline:
    """The real pipeline; the first round's apply waits until the test releases it."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.prepared = 0
        self.applied = 0
        self.second_prepared = threading.Event()
        self.release = threading.Event()

    def process(self, msg: InboundMessage) -> Outcome:
        return self.pipeline.process(msg)

    def process_batch(self, msgs: Sequence[InboundMessage]) -> list[Outcome]:
        return self.pipeline.process_batch(msgs)

    def prepare_batch(self, msgs: Sequence[InboundMessage]) -> BatchPlan:
        plan = self.pipeline.prepare_batch(msgs)
        self.prepared += 1
        if self.prepared == 2:
            self.second_prepared.set()
        return plan

    def apply_batch(self, plan: BatchPlan) -> list[Outcome]:
        if self.applied == 0:
            assert self.release.wait(10)
        outcomes = self.pipeline.apply_batch(plan)
        self.applied += 1
        return outcomes


def test_the_next_round_is_prepared_while_one_is_stored_and_nothing_is_acked_early(
    start_service: Start, hub_app: App
) -> None:
    held = HeldPipeline(hub_app.pipeline)
    hub_app.pipeline = held  # type: ignore[assignment]
    meters = [f"R{i}" for i in range(10)]
    add_meters(hub_app, *meters)
    service, partner = start_service(prefetch=20, batch_size=5, batch_wait=0.5)
    assert service.consumer.overlapped
    for meter in meters:
        partner.send(readings_request(meter, intervals=4))
    # round 2 is prepared while round 1 waits to be stored
    assert held.second_prepared.wait(10)
    assert held.applied == 0
    assert service.consumer.handled == 0  # nothing acknowledged
    assert partner.replies(1, timeout=0.3) == []  # nothing published
    assert reading_count(hub_app) == 0
    held.release.set()
    replies = partner.replies(10)
    assert sorted(r.headers["amihub-result"] for r in replies) == ["OK"] * 10
    assert reading_count(hub_app) == 10 * 4
    wait_until(lambda: service.consumer.handled == 10, 5, "10 deliveries settled")
    assert held.prepared >= 2
    assert service.consumer.rounds >= 2
