"""The pipeline on a real PostgreSQL server: COPY staging, versions, idempotency, streaming."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from hub.bootstrap import App
from hub.messages import InboundMessage
from hub.samples import RT_15MIN_A_PLUS, meter_readings_bytes, write_meter_readings
from mdm.commands import QueryMeterReadings
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef
from tests.unit.hub.conftest import START, add_meters, make_app, reading_count

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_app(postgres_url: str) -> Iterator[App]:
    app = make_app(postgres_url, tree_limit_bytes=64 * 1024)
    add_meters(app, "PG-1", "PG-2")
    yield app
    app.close()


def test_stream_partial_version_and_duplicate_on_postgres(pg_app: App, tmp_path: Path) -> None:
    meters = [f"PGS{n:03d}" for n in range(40)]
    add_meters(pg_app, *meters, install=False)
    path = tmp_path / "month.xml"
    with path.open("w") as f:
        written = write_meter_readings(f, [*meters, "NOT-THERE"], START, 96 * 2)
    outcome = pg_app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=path))
    assert outcome.result == "PARTIAL"
    assert outcome.errors[0].code == "2001"
    per_meter = 96 * 2 + 1
    assert outcome.counts["stored"] == written - per_meter
    assert reading_count(pg_app) == written - per_meter

    again = pg_app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=path))
    assert again.duplicate
    assert reading_count(pg_app) == written - per_meter

    adapter = MemoryAdapter(pg_app.pipeline)
    fix = adapter.request(
        meter_readings_bytes(["PGS000"], START, 2, registers=False, seed=5, verb="changed")
    )
    assert fix.counts == {
        "readings": 2,
        "stored": 0,
        "superseded": 2,
        "unchanged": 0,
        "unknown_meters": 0,
    }
    with pg_app.uow_factory() as uow:
        device = uow.devices.find(1, DeviceRef(mrid="PGS000"))
        assert device is not None
        assert device.id is not None
        versions = uow.readings.versions(device.id, RT_15MIN_A_PLUS, START + timedelta(minutes=15))
    assert [v.version for v in versions] == [2, 1]


def test_query_by_meter_and_usage_point_on_postgres(pg_app: App) -> None:
    MemoryAdapter(pg_app.pipeline).request(meter_readings_bytes(["PG-1", "PG-2"], START, 96))
    ctx = HandlerContext(actor="t", now=START)
    with pg_app.uow_factory() as uow:
        by_meter = list(
            pg_app.bus.handle(
                QueryMeterReadings(
                    1,
                    meters=(DeviceRef(mrid="PG-1"),),
                    reading_types=(RT_15MIN_A_PLUS,),
                    start=START,
                    end=START + timedelta(hours=6),
                ),
                uow,
                ctx,
            ).readings
        )
        by_up = pg_app.bus.handle(
            QueryMeterReadings(
                1,
                usage_points=(DeviceRef(mrid="UP-PG-2"), DeviceRef(mrid="UP-NONE")),
                start=START,
                end=START + timedelta(days=1),
            ),
            uow,
            ctx,
        )
        up_rows = list(by_up.readings)
    assert len(by_meter) == 24
    assert [r.ts for r in by_meter] == sorted(r.ts for r in by_meter)
    assert len(up_rows) == 97
    assert {r.device_mrid for r in up_rows} == {"PG-2"}
    assert by_up.unknown_usage_points == [DeviceRef(mrid="UP-NONE")]


def test_bad_input_leaves_postgres_unchanged(pg_app: App) -> None:
    adapter = MemoryAdapter(pg_app.pipeline)
    bad = meter_readings_bytes(["PG-1"], START, 4).replace(b"<m:value>", b"<m:value>x", 1)
    outcome = adapter.request(bad)
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2005"
    assert reading_count(pg_app) == 0
    with pg_app.uow_factory() as uow:
        assert uow.dead_letters.get(outcome.dead_letter_id or 0) is not None


def test_bulk_fast_path_and_its_fallbacks(
    pg_app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stream mode on PostgreSQL COPYs new readings straight into the table; a re-send
    and a duplicate fall back, inside the store, to the exact merge path (the file read
    again) with nothing left behind and the message logged once."""
    caplog.set_level("DEBUG", logger="amihub.store.readings")
    meters = [f"FP{n:03d}" for n in range(60)]
    add_meters(pg_app, *meters, install=False)
    first = tmp_path / "first.xml"
    with first.open("w") as f:
        written = write_meter_readings(f, meters, START, 96)
    new = pg_app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=first))
    assert new.result == "OK", new.errors
    assert new.counts["stored"] == written
    assert reading_count(pg_app) == written
    assert f"{written} stored by the direct path" in caplog.text
    caplog.clear()

    # the same readings again under another MessageID: the fast path meets stored keys,
    # rolls back, and the merge path finds them unchanged
    resend = tmp_path / "resend.xml"
    with resend.open("w") as f:
        write_meter_readings(f, meters, START, 96)
    again = pg_app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=resend))
    assert again.result == "OK", again.errors
    assert again.counts["unchanged"] == written
    assert again.counts["stored"] == 0
    assert "merging instead" in caplog.text
    with pg_app.uow_factory() as uow:
        states = [s for s, _, _ in uow.messages.lifecycle(again.message_log_id or 0)]
    assert states == ["received", "validated", "dispatched", "replied"]
    caplog.clear()

    # the same meter twice in one message (new times): the fast path's COPY meets the
    # repeated key, and the merge path reports the duplicates
    dup = tmp_path / "dup.xml"
    with dup.open("w") as f:
        write_meter_readings(f, [*meters, meters[0]], START + timedelta(days=1), 96)
    refused = pg_app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=dup))
    assert refused.result == "FAILED"
    assert refused.errors[0].code == "2004"
    assert "merging instead" in caplog.text
    assert reading_count(pg_app) == written
    with pg_app.uow_factory() as uow:
        states = [s for s, _, _ in uow.messages.lifecycle(refused.message_log_id or 0)]
    assert states == ["received", "dead_lettered"]  # refused: the effect rolled back whole


def test_a_file_in_time_order_stays_on_the_fast_path(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every meter in every batch (day by day): the stored-key probe looks at each
    meter's own period, so later batches do not trip on earlier ones."""
    app = make_app(postgres_url, tree_limit_bytes=64 * 1024, ingest_batch_rows=500)
    meters = [f"TO{n:02d}" for n in range(20)]
    add_meters(app, *meters, install=False)

    def fragment(meter: str, day: int) -> bytes:
        body = meter_readings_bytes([meter], START + timedelta(days=day), 96, registers=False)
        return body[body.index(b"<m:MeterReading>") : body.rindex(b"</m:MeterReading>") + 17]

    frame = meter_readings_bytes(["X"], START, 1, registers=False)
    head = frame[: frame.index(b"<m:MeterReading>")]
    tail = frame[frame.rindex(b"</m:MeterReading>") + 17 :]
    path = tmp_path / "days.xml"
    path.write_bytes(head + b"".join(fragment(m, d) for d in range(3) for m in meters) + tail)
    with caplog.at_level("DEBUG", logger="amihub.store.readings"):
        outcome = app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=path))
    assert outcome.ok, outcome.errors
    assert outcome.counts["stored"] == 20 * 96 * 3
    assert f"{20 * 96 * 3} stored by the direct path" in caplog.text
    assert "merging instead" not in caplog.text
    app.close()


def test_a_bad_reading_late_in_a_big_file_stores_nothing(postgres_url: str, tmp_path: Path) -> None:
    """The fast path writes batches in the background while the file is parsed; a bad
    value near the end stops it, the writer is quiet, and the rollback leaves nothing."""
    app = make_app(postgres_url, tree_limit_bytes=64 * 1024, ingest_batch_rows=500)
    meters = [f"BL{n:02d}" for n in range(30)]
    add_meters(app, *meters, install=False)
    path = tmp_path / "late.xml"
    with path.open("w") as f:
        write_meter_readings(f, meters, START, 96, registers=False)
    body = path.read_bytes()
    cut = body.rindex(b"<m:value>")
    path.write_bytes(body[:cut] + b"<m:value>not-a-number" + body[cut + 9 :])
    outcome = app.pipeline.process(InboundMessage(source="hes", endpoint="t", path=path))
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2005"
    assert reading_count(app) == 0
    again = app.pipeline.process(
        InboundMessage(source="hes", endpoint="t", body=meter_readings_bytes(meters[:1], START, 4))
    )
    assert again.ok  # the store is usable after the rollback
    app.close()
