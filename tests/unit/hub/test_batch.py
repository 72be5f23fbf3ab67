"""Pipeline.process_batch: many small messages, one transaction, per-message replies."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hub.bootstrap import App
from hub.messages import InboundMessage
from hub.samples import meter_readings_bytes, usage_point_config
from tests.unit.hub.conftest import START, add_meters, make_app, reading_count

MR = "/EventMessage/Payload/MeterReadings"


def msg(body: bytes, source: str = "partner") -> InboundMessage:
    return InboundMessage(source=source, endpoint="test:batch", body=body)


def day(meter: str, offset_days: int = 0, *, seed: int = 1, message_id: str | None = None) -> bytes:
    start = START + timedelta(days=offset_days)
    return meter_readings_bytes([meter], start, 96, seed=seed, message_id=message_id)


def lifecycle(app: App, log_id: int | None) -> list[tuple[str, str | None]]:
    with app.uow_factory() as uow:
        return [(s, d) for s, _, d in uow.messages.lifecycle(log_id or 0)]


def run_mixed_batch(app: App) -> None:
    meters = [f"B{n}" for n in range(5)]
    add_meters(app, *meters, install=False)
    earlier = day("B0", 9, message_id="seen-before")
    assert app.pipeline.process(msg(earlier)).ok
    batch = [
        *(msg(day(m)) for m in meters),
        msg(b"<not-xml"),
        msg(usage_point_config("create", [{"mrid": "UP-B"}])),
        msg(meter_readings_bytes(["B1", "NOBODY"], START + timedelta(days=3), 4)),
        msg(earlier),  # replayed MessageID: the stored reply
    ]
    outcomes = app.pipeline.process_batch(batch)
    assert [o.result for o in outcomes] == ["OK"] * 5 + ["FAILED", "OK", "PARTIAL", "OK"]
    assert outcomes[5].errors[0].code == "1001"
    assert outcomes[7].errors[0].code == "2001"
    assert (
        outcomes[7].errors[0].xpath == "/EventMessage/Payload/MeterReadings/MeterReading[2]/Meter"
    )
    assert outcomes[8].duplicate
    assert outcomes[0].counts["readings"] == 97
    assert reading_count(app) == 97 + 5 * 97 + 5
    assert lifecycle(app, outcomes[0].message_log_id) == [
        ("received", None),
        ("validated", None),
        ("dispatched", "created MeterReadings (batch)"),
        ("replied", "OK"),
    ]
    assert outcomes[7].dead_letter_id is not None
    assert outcomes[5].dead_letter_id is not None
    assert outcomes[0].reply != outcomes[1].reply


def test_a_mixed_batch_on_sqlite(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    run_mixed_batch(app)
    app.close()


@pytest.mark.postgres
def test_a_mixed_batch_on_postgres(postgres_url: str) -> None:
    app = make_app(postgres_url)
    run_mixed_batch(app)
    app.close()


def test_readings_repeated_across_messages_go_one_by_one(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    add_meters(app, "R1", install=False)
    first, second = day("R1", seed=1), day("R1", seed=2)  # same keys, other values
    outcomes = app.pipeline.process_batch([msg(first), msg(second)])
    assert [o.result for o in outcomes] == ["OK", "OK"]
    assert outcomes[1].counts["superseded"] == 97  # applied after the first, as one by one
    with app.uow_factory() as uow:
        steps = [s for s, _, _ in uow.messages.lifecycle(outcomes[0].message_log_id or 0)]
    assert steps == ["received", "validated", "dispatched", "replied"]
    app.close()


def test_the_same_message_id_twice_in_one_batch(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    add_meters(app, "D1", install=False)
    body = day("D1", message_id="twice")
    outcomes = app.pipeline.process_batch([msg(body), msg(body)])
    assert [o.duplicate for o in outcomes] == [False, True]
    assert reading_count(app) == 97
    app.close()


@pytest.mark.postgres
def test_a_resent_batch_is_merged_inside_the_store_on_postgres(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch larger than the store's one-statement size takes the direct path; sent
    again under new MessageIDs its keys are stored: the store rolls back to its savepoint
    and merges, the batch stays one batch and every message is logged once."""
    app = make_app(postgres_url)
    meters = [f"RS{n:02d}" for n in range(60)]  # 60 x 97 readings: over 5,000
    add_meters(app, *meters, install=False)
    caplog.set_level("DEBUG", logger="amihub.store.readings")
    first = app.pipeline.process_batch([msg(day(m)) for m in meters])
    assert [o.result for o in first] == ["OK"] * 60
    assert f"{60 * 97} stored by the direct path" in caplog.text
    caplog.clear()
    again = app.pipeline.process_batch([msg(day(m)) for m in meters])  # new MessageIDs
    assert [o.result for o in again] == ["OK"] * 60
    assert "merging instead" in caplog.text
    assert again[0].counts["batch_unchanged"] == 60 * 97
    assert again[0].counts["batch_stored"] == 0
    assert reading_count(app) == 60 * 97
    assert lifecycle(app, again[5].message_log_id) == [
        ("received", None),
        ("validated", None),
        ("dispatched", "created MeterReadings (batch)"),
        ("replied", "OK"),
    ]
    app.close()
