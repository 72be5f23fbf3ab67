"""``[[hes.read_schedules]]`` on PostgreSQL: created, changed, removed next to a hub
schedule; two processes starting at once write each schedule once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hes.simulator.fleet import Fleet, SimulatorThread
from hub.bootstrap import App
from hub.configured_schedules import SyncReport, sync_read_schedules
from tests.conftest import free_port
from tests.postgres import lock_waiters
from tests.unit.hub.test_configured_schedules import (
    created_updated_removed,
    daily,
    entry,
    rows,
    set_area,
    sync,
)
from tests.unit.hub.test_headend_routes import mrids
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=22)
    with SimulatorThread(f):
        yield f


def test_configured_schedules_created_changed_removed_on_postgres(
    two: tuple[App, App], fleet: Fleet
) -> None:
    created_updated_removed(two[0], fleet)


class HeldCommit:
    """A unit of work whose commit waits: the first process has written its rows but not
    committed them when the second starts (its statements then wait for the first)."""

    def __init__(self, uow: Any, written: threading.Event) -> None:
        self.uow = uow
        self.written = written

    def __enter__(self) -> Any:
        self.uow.__enter__()
        real = self.uow.commit

        def commit() -> None:
            self.written.set()
            # the race is on only once the other process waits on our rows
            wait_until(lambda: lock_waiters(self.uow.engine) == 1, 20, "the other one waiting")
            real()

        self.uow.commit = commit
        return self.uow

    def __exit__(self, *exc: Any) -> Any:
        return self.uow.__exit__(*exc)


@pytest.mark.timeout(90)
def test_two_processes_starting_at_once_write_each_schedule_once(
    two: tuple[App, App], fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    first_app, second_app = two
    set_area(first_app, "TA-1", *mrids(fleet)[:2])
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)

    def at_once(entries: list[Any], when: datetime) -> tuple[SyncReport, SyncReport]:
        written = threading.Event()
        reports: dict[str, SyncReport] = {}
        failures: list[BaseException] = []

        def first() -> None:
            try:
                reports["first"] = sync_read_schedules(
                    lambda: HeldCommit(first_app.uow_factory(), written),
                    entries,
                    default_utility=first_app.settings.default_utility,
                    addressable=lambda m: m in mrids(fleet),
                    now=when,
                )
            except BaseException as exc:  # reported below
                failures.append(exc)
                written.set()

        def second() -> None:
            written.wait(30)
            try:
                reports["second"] = sync(second_app, entries, when)
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        return reports["first"], reports["second"]

    for round_ in range(2):
        names = sorted([f"DAILY-{round_}", f"AREA-{round_}"])
        entries = [
            daily(name=f"DAILY-{round_}"),
            entry(name=f"AREA-{round_}", areas=["TA-1"], period=3600, at="00:05"),
        ]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="amihub.hes.schedules"):
            first, second = at_once(entries, now)
        assert (first.created, second.created, second.unchanged) == (names, [], names)
        # the first insert waited for the other's commit, failed on the unique key and was
        # read again; by then the other's rows were committed and seen as they are
        assert caplog.text.count("inserted by another process meanwhile") == 1
        assert {n: rows(first_app)[n].state for n in names} == dict.fromkeys(names, "active")

        changed = [daily(name=f"DAILY-{round_}", at="03:00"), entries[1]]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="amihub.hes.schedules"):
            first, second = at_once(changed, now + timedelta(hours=1))
        assert (first.updated, second.updated) == ([f"DAILY-{round_}"], [])
        assert second.unchanged == names
        assert "changed by another process meanwhile" in caplog.text
        row = rows(first_app)[f"DAILY-{round_}"]
        assert row.due_at == datetime(2026, 11, 26, 2, 0, tzinfo=UTC)  # 03:00 CET

        first, second = at_once([], now + timedelta(hours=2))
        assert (first.cancelled, second.cancelled) == (names, [])
        assert {n: rows(first_app)[n].state for n in names} == dict.fromkeys(names, "cancelled")
    assert len([n for n in rows(first_app) if n.startswith(("DAILY-", "AREA-"))]) == 4
