"""Non-CIM bodies through a named mapping, with the pipeline's bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.memory import MemoryAdapter
from hub.mapped import mapping_importer
from hub.messages import InboundMessage, Outcome
from hub.samples import linkage, meter_config, usage_point_config
from mappings.load import BUILTIN_DIR, load_dir
from tests.unit.hub.conftest import make_app, reading_count

SAMPLE = (BUILTIN_DIR / "samples" / "register-obis.csv").read_bytes()


def test_a_mapped_body_is_applied_replied_and_idempotent(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    hub = MemoryAdapter(app.pipeline)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert hub.request(usage_point_config("create", [{"mrid": "UP-1"}, {"mrid": "UP-2"}])).ok
    assert hub.request(
        meter_config(
            "create", [{"mrid": "M-1", "serial": "SN1001"}, {"mrid": "M-2", "serial": "SN1002"}]
        )
    ).ok
    assert hub.request(linkage("create", "M-1", "UP-1", since)).ok
    assert hub.request(linkage("create", "M-2", "UP-2", since)).ok
    run = mapping_importer(app.pipeline, load_dir(BUILTIN_DIR))

    def send(body: bytes, message_id: str) -> Outcome:
        return run(
            InboundMessage(source="partner", endpoint="t", body=body, message_id=message_id),
            "register-obis",
        )

    first = send(SAMPLE, "csv-1")
    assert first.result == "OK", first.errors
    stored = reading_count(app)
    assert stored > 0
    assert b"<Result>OK</Result>" in first.reply
    again = send(SAMPLE, "csv-1")
    assert again.duplicate
    assert reading_count(app) == stored

    lines = SAMPLE.decode().splitlines()
    lines[2] = lines[2].replace("2026-10-25", "2026-13-45")
    bad = send(("\n".join(lines) + "\n").encode(), "csv-2")
    assert bad.result == "FAILED"
    assert "line 3" in bad.errors[0].reason
    assert bad.dead_letter_id is not None
    assert reading_count(app) == stored
    app.close()
