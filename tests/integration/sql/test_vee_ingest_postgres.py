"""Validation on ingest on a real PostgreSQL; the checks are in
tests/unit/vee/ingest_contract.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from hub.vee_settings import VeeSettings
from mdm.commands import CreateMeter
from mdm.model import EndDevice
from tests.unit.vee.data import PROFILE
from tests.unit.vee.ingest_contract import (
    CTX,
    DAY,
    RULES,
    VeeIngestContract,
    day_values,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


class TestPostgresIngestValidation(VeeIngestContract):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url


HISTORY_METERS = 500
SCAN_RULES: list[dict[str, Any]] = [
    *RULES,
    {"name": "high-15", "kind": "limits", "reading_type": PROFILE, "maximum": 5},
    {"name": "zero-15", "kind": "zero_run", "reading_type": PROFILE, "max_intervals": 8},
    {"name": "negative-15", "kind": "negative", "reading_type": PROFILE},
    {"name": "flagged-15", "kind": "meter_flagged", "reading_type": PROFILE},
]


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _scans(url: str) -> tuple[int, int]:
    """Rows of the reading table read by sequential scans, and entries read from its
    indexes, once no other connection is open (a connection's counts reach the
    statistics when it closes)."""
    with psycopg.connect(_plain(url)) as conn:
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
                == (True,)
            ),
            30,
            "the other connections closed",
        )
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT t.seq_tup_read, (SELECT coalesce(sum(i.idx_tup_read), 0) "
            "FROM pg_stat_user_indexes i WHERE i.relid = t.relid) "
            "FROM pg_stat_user_tables t WHERE t.relname = 'reading'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


HISTORY_SQL = (
    "INSERT INTO reading (device_id, reading_type_id, ts, value, quality, version, recorded_at) "
    "SELECT d.id, rt.id, ts, 0.2, '', 1, now() FROM end_device d CROSS JOIN reading_type rt "
    "CROSS JOIN generate_series(%s::timestamptz + interval '15 minutes', %s::timestamptz, "
    "interval '15 minutes') ts WHERE d.mrid LIKE 'H%%' AND rt.code = %s"
)


def test_a_small_feed_is_validated_without_reading_the_whole_table(postgres_url: str) -> None:
    """Four weeks of history of 500 meters (1,344,000 readings), then one meter's day:
    the ingest and its validation (six rules) read the reading table by index only,
    never by a sequential scan, and a small part of it (PostgreSQL's own counters for
    the table and its index). Measured: 65,758 index entries read, the same with 100
    and 300 meters of history (the spike rule's median history, 65,281 of them); with
    30 meters (80,640 readings) PostgreSQL chose sequential scans, cheaper there."""
    contract = VeeIngestContract()
    settings = VeeSettings(on_ingest=["import"], rules=SCAN_RULES)
    app = contract.app(postgres_url, settings)
    try:
        uid = contract.history(app)  # M1, through the store (registers the reading type)
        with app.uow_factory() as uow:
            for n in range(2, HISTORY_METERS + 1):
                app.bus.handle(CreateMeter(uid, EndDevice(f"H{n}", "DEFAULT")), uow, CTX)
            uow.commit()
    finally:
        app.close()
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        conn.execute(HISTORY_SQL, (DAY - timedelta(weeks=4), DAY, PROFILE))
        stored = conn.execute("SELECT count(*) FROM reading").fetchone()
        assert stored is not None
        assert stored[0] >= HISTORY_METERS * 4 * 7 * 96
        conn.execute("ANALYZE")
    before = _scans(postgres_url)
    app = contract.app(postgres_url, settings)
    try:
        contract.ingest(app, day_values())
        with app.uow_factory() as uow:
            (run,) = uow.vee.runs(uid)
        assert run.trigger == "ingest"
        assert run.findings == 3  # the spike (also above 5) and the gap
    finally:
        app.close()
    seq, idx = _scans(postgres_url)
    print(f"reading rows read: {seq - before[0]} by scans, {idx - before[1]} by index")
    assert seq == before[0]  # never a sequential scan
    # by index, the meter's own history and day, not the other meters'
    assert 0 < idx - before[1] < stored[0] // 10
