"""Idempotency of changes through the pipeline (``Pipeline._earlier_reply``): a repeated
MessageID answered with the stored reply is logged as a duplicate with the first
message's result and reply; a MessageID reused with other content is refused saying
when and from whom it came first. Mutants of `make mutate` (docs/testing.md)."""

from __future__ import annotations

import logging

import pytest

from adapters.memory import MemoryAdapter
from hub.bootstrap import App
from hub.samples import meter_readings_bytes
from tests.unit.hub.conftest import START


def test_a_duplicate_is_logged_with_the_first_result_and_reply(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="amihub.pipeline")
    adapter = MemoryAdapter(app.pipeline)
    body = meter_readings_bytes(["MTR-1"], START, 4, message_id="dup-1")
    first = adapter.request(body, source="hes-a")
    again = adapter.request(body, source="hes-a")
    assert (first.result, again.duplicate) == ("OK", True)
    assert again.message_log_id not in (None, first.message_log_id)
    with app.uow_factory() as uow:
        row = uow.messages.get(again.message_log_id or 0)
    assert row is not None
    assert (row.state, row.result, row.reply) == ("duplicate", "OK", first.reply)
    assert (again.verb, again.noun, again.message_id, again.correlation_id) == (
        first.verb,
        first.noun,
        "dup-1",
        "dup-1",
    )
    said = [r.getMessage() for r in caplog.records if r.name == "amihub.pipeline"]
    assert "duplicate created MeterReadings dup-1 from hes-a: stored reply returned" in said


def test_a_duplicate_of_a_partial_message_is_partial(app: App) -> None:
    adapter = MemoryAdapter(app.pipeline)
    body = meter_readings_bytes(["MTR-1", "NOPE"], START, 4, message_id="dup-3")
    first = adapter.request(body, source="hes-a")
    again = adapter.request(body, source="hes-a")
    assert (first.result, again.result, again.duplicate) == ("PARTIAL", "PARTIAL", True)
    assert again.reply == first.reply


def test_a_message_id_reused_with_other_content_names_the_first_arrival(app: App) -> None:
    adapter = MemoryAdapter(app.pipeline)
    first = adapter.request(
        meter_readings_bytes(["MTR-1"], START, 4, message_id="dup-2"), source="hes-a"
    )
    with app.uow_factory() as uow:
        logged = uow.messages.get(first.message_log_id or 0)
    assert logged is not None
    outcome = adapter.request(
        meter_readings_bytes(["MTR-2"], START, 4, message_id="dup-2"), source="hes-a"
    )
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "1007"
    assert outcome.errors[0].reason == (
        f"MessageID dup-2 was received from hes-a at {logged.received_at.isoformat()} "
        "with different content"
    )
