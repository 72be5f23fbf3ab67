"""Validation on ingest through the one ingestion seam, on every SQL store: SQLite in
tests/unit/vee/test_ingest_sqlite.py, PostgreSQL in
tests/integration/sql/test_vee_ingest_postgres.py.

A CIM MeterReadings message with a planted spike and gap comes in through the pipeline
(``amihub import``: endpoint ``cli:import``, source ``import``) onto four weeks of stored
history.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any, cast

import pytest
from lxml import etree

from cim_schemas.meter_readings import write_readings
from cim_schemas.namespaces import MESSAGE_NS, profile_ns
from hub.bootstrap import App, bootstrap
from hub.messages import InboundMessage
from hub.readings_codec import STORED_QUALITIES
from hub.settings import load_settings
from hub.vee_settings import VeeSettings
from mdm.commands import CreateMeter
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef, EndDevice
from mdm.vee.commands import ValidateReadings
from tests.unit.vee.data import PROFILE, REGISTER, Meter, Q, store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CTX = HandlerContext(actor="test", now=NOW)
DAY = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # a local midnight (Berlin)
SPIKE = DAY + 40 * Q
GAP = [DAY + 60 * Q, DAY + 61 * Q, DAY + 62 * Q]

RULES: list[dict[str, Any]] = [
    {"name": "missing-15", "kind": "missing", "reading_type": PROFILE},
    {"name": "spike-15", "kind": "spike", "reading_type": PROFILE, "factor": 5},
]


Row = tuple[str, str, str, str, str]


def rows_of(mrid: str, values: dict[datetime, Decimal], rt: str = PROFILE) -> list[Row]:
    return [(mrid, rt, ts.isoformat(), str(v), "") for ts, v in sorted(values.items())]


def message(values: dict[datetime, Decimal] | list[Row], message_id: str = "ingest-1") -> bytes:
    out = io.BytesIO()
    out.write(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<EventMessage xmlns="{MESSAGE_NS}" '
        f'xmlns:m="{profile_ns("MeterReadings")}"><Header><Verb>created</Verb>'
        "<Noun>MeterReadings</Noun><Revision>2.0</Revision>"
        f"<Timestamp>{NOW.isoformat()}</Timestamp><Source>test</Source>"
        f"<MessageID>{message_id}</MessageID></Header><Payload>".encode()
    )
    rows = rows_of("M1", values) if isinstance(values, dict) else values
    with etree.xmlfile(out, encoding="UTF-8") as xf:
        write_readings(xf, iter(rows), STORED_QUALITIES, cast(IO[bytes], out), prefix="m")
    out.write(b"</Payload></EventMessage>\n")
    return out.getvalue()


def day_values() -> dict[datetime, Decimal]:
    values = {DAY + i * Q: Decimal("0.2") for i in range(1, 97)}
    values[SPIKE] = Decimal("9.0")
    for ts in GAP:
        del values[ts]
    return values


class VeeIngestContract:
    """``store_url`` is a fresh, empty database."""

    def app(self, url: str, vee: VeeSettings) -> App:
        settings = load_settings(database_url=url).model_copy(update={"vee": vee})
        return bootstrap(settings, migrate=True)

    @pytest.fixture
    def url(self, store_url: str) -> str:
        return store_url

    def history(self, app: App, *mrids: str) -> int:
        with app.uow_factory() as uow:
            u = uow.utilities.get(app.settings.default_utility)
            assert u is not None
            assert u.id is not None
            meters = [Meter(m) for m in mrids or ("M1",)]
            for m in meters:
                app.bus.handle(CreateMeter(u.id, EndDevice(m.mrid, "DEFAULT")), uow, CTX)
            # four weeks of history through the store's staging (no source: not validated)
            store(uow, u.id, meters, DAY - timedelta(weeks=4), DAY)
            uow.commit()
            return u.id

    def ingest(self, app: App, values: dict[datetime, Decimal] | list[Row]) -> None:
        outcome = app.pipeline.process(
            InboundMessage(source="test", endpoint="cli:import", body=message(values))
        )
        assert outcome.result == "OK", outcome.errors
        assert outcome.counts["stored"] == len(values)

    def findings(self, app: App, run_id: int) -> set[tuple[str, str, datetime, datetime, int]]:
        with app.uow_factory() as uow:
            return {
                (f.device_mrid, f.rule, f.ts, f.ts_end, f.intervals)
                for f in uow.vee.findings(run_id)
            }

    def qualities(self, app: App, uid: int) -> dict[datetime, str]:
        with app.uow_factory() as uow:
            device = uow.devices.find(uid, DeviceRef(mrid="M1"))
            assert device is not None
            assert device.id is not None
            readings = uow.readings.query([device.id], [PROFILE], DAY, DAY + 96 * Q)
            return {r.ts: r.quality for r in readings if r.quality}

    def test_an_import_is_validated_on_ingest_as_an_on_demand_run_would(self, url: str) -> None:
        app = self.app(
            url, VeeSettings(time_zone="Europe/Berlin", on_ingest=["import"], rules=RULES)
        )
        try:
            uid = self.history(app)
            self.ingest(app, day_values())
            with app.uow_factory() as uow:
                runs = uow.vee.runs(uid)
            assert [(r.trigger, r.state) for r in runs] == [("ingest", "done")]
            run = runs[0]
            found = self.findings(app, run.id)
            assert found == {
                ("M1", "spike-15", SPIKE, SPIKE, 1),
                ("M1", "missing-15", GAP[0], GAP[-1], 3),
            }
            assert run.readings == 93
            marked = self.qualities(app, uid)
            assert set(marked) == {SPIKE}
            # an on-demand run over the run's period finds the same; qualities unchanged
            with app.uow_factory() as uow:
                rules = app.settings.vee.rules_for("DEFAULT")
                demand = app.bus.handle(
                    ValidateReadings(uid, "DEFAULT", run.period_start, run.period_end, rules,
                                     meter=DeviceRef(mrid="M1")),
                    uow, CTX,
                )  # fmt: skip
                uow.commit()
            assert self.findings(app, demand.id) == found
            assert self.qualities(app, uid) == marked
        finally:
            app.close()

    def test_a_source_not_enabled_is_not_validated(self, url: str) -> None:
        app = self.app(url, VeeSettings(on_ingest=["soap"], rules=RULES))
        try:
            uid = self.history(app)
            self.ingest(app, day_values())
            with app.uow_factory() as uow:
                assert uow.vee.runs(uid) == []
            assert self.qualities(app, uid) == {}
        finally:
            app.close()

    def test_a_rule_that_cannot_run_refuses_no_reading(self, url: str) -> None:
        broken = [{**RULES[1], "end_device_group": "NO-SUCH-GROUP"}, RULES[0]]
        app = self.app(url, VeeSettings(on_ingest=["import"], rules=broken))
        try:
            uid = self.history(app)
            self.ingest(app, day_values())  # stored: 93 readings, OK
            with app.uow_factory() as uow:
                runs = uow.vee.runs(uid)
            assert len(runs) == 1
            assert {c.rule for c in runs[0].rules} == {"missing-15"}
        finally:
            app.close()

    def test_each_meter_and_reading_type_is_validated_over_what_it_wrote(self, url: str) -> None:
        """M1 writes the day with the faults, M2 the next day (its day between is missing
        but was not written: not this feed's), M3 only a register (its profile is not
        expected of this feed)."""
        app = self.app(
            url, VeeSettings(time_zone="Europe/Berlin", on_ingest=["import"], rules=RULES)
        )
        try:
            uid = self.history(app, "M1", "M2", "M3")
            next_day = {DAY + i * Q: Decimal("0.2") for i in range(97, 193)}
            register = {DAY + 96 * Q: Decimal("5000")}
            self.ingest(
                app,
                rows_of("M1", day_values()) + rows_of("M2", next_day)
                + rows_of("M3", register, REGISTER),
            )  # fmt: skip
            with app.uow_factory() as uow:
                (run,) = uow.vee.runs(uid)
            assert self.findings(app, run.id) == {
                ("M1", "spike-15", SPIKE, SPIKE, 1),
                ("M1", "missing-15", GAP[0], GAP[-1], 3),
            }
            assert (run.period_start, run.period_end) == (DAY + Q - timedelta(microseconds=1),
                                                          DAY + 192 * Q)  # fmt: skip
            assert run.readings == 93 + 96  # the profile readings written, M1's and M2's
            assert run.meters == 3
            counts = {c.rule: (c.findings, c.meters) for c in run.rules}
            assert counts == {"missing-15": (1, 1), "spike-15": (1, 1)}, run.rules
        finally:
            app.close()
