"""The push writer on a real SQLite store: a locked store delays pushes without losing
them; a batch refused for good is written push by push and what fails is named."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.dlms.push_writer import PushWriter
from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from hes.push import PushedData, SecurityEvent
from hub.push_store import MdmPushSink
from mdm.model import EndDevice, Utility
from tests.waiting import wait_until

TS = datetime(2026, 3, 1, 12, 15, tzinfo=UTC)


def push(i: int, at: datetime = TS) -> PushedData:
    return PushedData(f"MTR-{i}", f"AMI{i}", at, Decimal(1000 + i), Decimal(i), True)


def store(tmp_path: Path, busy_timeout: float) -> tuple[str, SqlUnitOfWorkFactory]:
    path = tmp_path / "amihub.db"
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout=busy_timeout)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        for i in range(3):
            uow.devices.add(u.id, EndDevice(f"MTR-{i}", "ACME"))
        uow.commit()
    return str(path), factory


def stored(factory: SqlUnitOfWorkFactory) -> int:
    with factory() as uow:
        return uow.readings.count()


def test_a_locked_store_delays_pushes_and_loses_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, factory = store(tmp_path, busy_timeout=0.05)
    writer = PushWriter(
        MdmPushSink(factory, "ACME"), batch_size=10, batch_wait=0.05, retry_delay=0.1
    )
    locked = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert locked.wait(5)
    caplog.set_level(logging.WARNING, logger="amihub.hes.push")
    writer.start()
    try:
        for i in range(3):
            writer.submit(push(i))
        writer.submit(SecurityEvent("replayed or rewound push", b"AMH\x00\x00\x00\x00\x09", TS))
        deadline = time.monotonic() + 5
        while not any("not stored yet" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the writer never met the lock"
            time.sleep(0.02)
        wait_until(  # a few more attempts while the store stays locked
            lambda: sum("not stored yet" in r.getMessage() for r in caplog.records) >= 2,
            10,
            "a second attempt",
        )
        assert writer.totals.pushes == 0
    finally:
        release.set()
        holder.join()
        writer.stop()
    assert (writer.totals.pushes, writer.totals.refused, writer.totals.dropped) == (3, 1, 0)
    assert stored(factory) == 6
    retries = [r.getMessage() for r in caplog.records if "not stored yet" in r.getMessage()]
    assert len(retries) >= 2
    assert retries[0].startswith("4 push(es) not stored yet (StoreUnavailable: database")


def test_a_refused_batch_is_written_push_by_push(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, factory = store(tmp_path, busy_timeout=5)
    writer = PushWriter(MdmPushSink(factory, "NO-SUCH-UTILITY"), batch_wait=0.05)
    caplog.set_level(logging.WARNING, logger="amihub.hes.push")
    writer.start()
    writer.submit(push(0))
    writer.submit(push(1, TS + timedelta(minutes=15)))
    writer.stop()
    assert writer.totals.dropped == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "a batch of 2 pushes was refused (ConfigurationError: unknown utility "
        "NO-SUCH-UTILITY): writing them one by one"
    )
    assert lines[1:] == [
        "push of MTR-0 at 2026-03-01T12:15:00+00:00 not stored: ConfigurationError: "
        "unknown utility NO-SUCH-UTILITY",
        "push of MTR-1 at 2026-03-01T12:30:00+00:00 not stored: ConfigurationError: "
        "unknown utility NO-SUCH-UTILITY",
    ]
    assert stored(factory) == 0
