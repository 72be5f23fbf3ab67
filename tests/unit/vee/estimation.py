"""Estimation on every SQL store, on generated data over the spring daylight-saving
change (29 March 2026, Berlin: 92 quarter-hours): SQLite in
tests/unit/vee/test_estimation_sqlite.py, PostgreSQL in
tests/integration/sql/test_vee_estimation_postgres.py.

Each test states the gaps it expects (meter, first and last missing instant, how many,
estimated or not) and the exact values written; a gap filled that should not be, or a
value off by a rounding, fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from cim_schemas.errors import PayloadInvalid
from hub.bootstrap import App
from mdm.commands import CreateMeter
from mdm.model import DeviceRef, EndDevice
from mdm.qualities import unpack
from mdm.vee.commands import EstimateReadings
from mdm.vee.estimation import EstimationMethod
from mdm.vee.model import ValidationRun
from tests.unit.hub.conftest import make_app
from tests.unit.vee.contract import (
    AUTUMN,
    AUTUMN_END,
    CTX,
    HISTORY,
    SPRING,
    SPRING_END,
    VeeContract,
    z,
)
from tests.unit.vee.data import PROFILE, REGISTER, Meter, Q

ESTIMATED, MISSING = "3.8.0", "3.5.259"

#: E1: four quarter-hours missing across the change (01:30 and 01:45 CET, then 03:00
#: and 03:15 CEST: consecutive on the UTC grid), between 0.2 and 0.7; and two between
#: 0.1 and 0.2 (thirds: rounded to 6 decimals)
E1 = Meter(
    "E1",
    values={
        z("2026-03-29T00:15"): Decimal("0.2"),
        **{z(f"2026-03-29T{t}"): None for t in ("00:30", "00:45", "01:00", "01:15")},
        z("2026-03-29T01:30"): Decimal("0.7"),
        z("2026-03-30T09:45"): Decimal("0.1"),
        z("2026-03-30T10:00"): None,
        z("2026-03-30T10:15"): None,
        z("2026-03-30T10:30"): Decimal("0.2"),
    },
)
#: E2: six quarter-hours missing, more than the four linear interpolation fills; its
#: register at the next midnight shows 3.0 more than the stored profile adds up to
E2 = Meter(
    "E2",
    values={z("2026-03-29T12:00") + n * Q: None for n in range(6)},
    registers={z("2026-03-29T22:00"): Decimal("3.0")},
)
#: E4: the last two quarter-hours of the period missing, nothing after them (yet)
E4 = Meter("E4", values={SPRING_END - Q: None, SPRING_END: None})
#: E5: the first two of the period missing; their neighbour before it is in the history
E5 = Meter(
    "E5",
    values={SPRING: Decimal("0.4"), SPRING + Q: None, SPRING + 2 * Q: None,
            SPRING + 3 * Q: Decimal("0.1")},
)  # fmt: skip

VALUES = {
    ("E1", z("2026-03-29T00:30")): Decimal("0.3"),
    ("E1", z("2026-03-29T00:45")): Decimal("0.4"),
    ("E1", z("2026-03-29T01:00")): Decimal("0.5"),
    ("E1", z("2026-03-29T01:15")): Decimal("0.6"),
    ("E1", z("2026-03-30T10:00")): Decimal("0.133333"),
    ("E1", z("2026-03-30T10:15")): Decimal("0.166667"),
    ("E5", SPRING + Q): Decimal("0.3"),
    ("E5", SPRING + 2 * Q): Decimal("0.2"),
}

Gaps = set[tuple[str, datetime, datetime, int, str]]

#: E3 has no readings at all: the whole period (188 quarter-hours) is a finding
FIRST_RUN: Gaps = {
    ("E1", z("2026-03-29T00:30"), z("2026-03-29T01:15"), 4, ESTIMATED),
    ("E1", z("2026-03-30T10:00"), z("2026-03-30T10:15"), 2, ESTIMATED),
    ("E2", z("2026-03-29T12:00"), z("2026-03-29T13:15"), 6, MISSING),
    ("E3", SPRING + Q, SPRING_END, 188, MISSING),
    ("E4", SPRING_END - Q, SPRING_END, 2, MISSING),
    ("E5", SPRING + Q, SPRING + 2 * Q, 2, ESTIMATED),
}


def gaps(app: App, run: ValidationRun) -> Gaps:
    with app.uow_factory() as uow:
        found = list(uow.vee.findings(run.id))
    assert {(f.rule, f.kind, f.reading_type) for f in found} <= {("linear", "estimation", PROFILE)}
    assert all(f.value is None for f in found)
    return {(f.device_mrid, f.ts, f.ts_end, f.intervals, f.quality) for f in found}


class EstimationStore:
    """``store_url`` is a fresh, empty database."""

    @pytest.fixture
    def app(self, store_url: str) -> Iterator[App]:
        application = make_app(store_url)
        yield application
        application.close()

    def utility(self, app: App) -> int:
        return VeeContract().utility(app)

    def data(self, app: App) -> None:
        VeeContract().meters(app, [E1, E2, E4, E5], SPRING - HISTORY, SPRING_END)
        uid = self.utility(app)
        with app.uow_factory() as uow:
            app.bus.handle(CreateMeter(uid, EndDevice("E3", "DEFAULT")), uow, CTX)
            uow.commit()

    def estimate(self, app: App, max_intervals: int = 4, **kw: Any) -> ValidationRun:
        uid = self.utility(app)
        with app.uow_factory() as uow:
            run: ValidationRun = app.bus.handle(
                EstimateReadings(uid, SPRING, SPRING_END, (PROFILE,), max_intervals, **kw),
                uow,
                CTX,
            )
            uow.commit()
        return run

    def current(self, app: App, mrid: str, ts: datetime) -> list[Any]:
        uid = self.utility(app)
        with app.uow_factory() as uow:
            device = uow.devices.find(uid, DeviceRef(mrid=mrid))
            assert device is not None
            assert device.id is not None
            return list(uow.readings.versions(device.id, PROFILE, ts))


class EstimationContract(EstimationStore):
    def test_linear_interpolation_across_the_change(self, app: App) -> None:
        self.data(app)
        run = self.estimate(app)
        assert gaps(app, run) == FIRST_RUN
        assert (run.kind, run.trigger, run.state) == ("estimate", "demand", "done")
        assert run.meters == 5
        assert run.readings == 4 * 188 - 6 - 6 - 2 - 2  # present before
        assert run.marked == len(VALUES) == 8  # intervals estimated
        assert run.findings == 6
        assert [(c.rule, c.kind, c.readings, c.findings, c.meters) for c in run.rules] == [
            ("linear", "estimation", 8, 6, 5)
        ]
        for (mrid, ts), value in VALUES.items():
            [only] = self.current(app, mrid, ts)  # a new reading: no earlier version
            assert (only.version, only.value) == (1, value), (mrid, ts)
            quality = unpack(only.quality)
            assert quality.codes == "3.5.259,3.8.0"  # the absence stays visible
            assert quality.qualities[1].comment == "linear interpolation"
        # nothing invented: the long gap, the meter without readings, the open end
        for mrid, ts in (
            ("E2", z("2026-03-29T12:00")),
            ("E3", SPRING + Q),
            ("E4", SPRING_END),
        ):
            assert self.current(app, mrid, ts) == []
        uid = self.utility(app)
        with app.uow_factory() as uow:
            details = {(f.device_mrid, f.ts): f.detail for f in uow.vee.findings(run.id)}
            [latest] = uow.vee.runs(uid)
        assert latest.id == run.id
        assert details[("E1", z("2026-03-29T00:30"))] == "linear interpolation between 0.2 and 0.7"
        assert "more than 4" in details[("E2", z("2026-03-29T12:00"))]
        assert "no reading within 5" in details[("E3", SPRING + Q)]
        assert "no reading after the gap" in details[("E4", SPRING_END - Q)]

    def test_across_the_autumn_change(self, app: App) -> None:
        """25 October 2026: 02:45 CEST, then 02:00 and 02:15 CET (the hour that occurs
        twice) are three consecutive quarter-hours between 0.1 and 0.5."""
        start, end = AUTUMN, AUTUMN_END
        gap = [z("2026-10-25T00:45"), z("2026-10-25T01:00"), z("2026-10-25T01:15")]
        meter = Meter(
            "A1",
            values={z("2026-10-25T00:30"): Decimal("0.1"), **dict.fromkeys(gap),
                    z("2026-10-25T01:30"): Decimal("0.5")},
        )  # fmt: skip
        VeeContract().meters(app, [meter], start - HISTORY, end)
        uid = self.utility(app)
        with app.uow_factory() as uow:
            run: ValidationRun = app.bus.handle(
                EstimateReadings(uid, start, end, (PROFILE,), 4), uow, CTX
            )
            uow.commit()
        assert gaps(app, run) == {("A1", gap[0], gap[-1], 3, ESTIMATED)}
        assert run.readings == 100 - 3  # the day has 100 quarter-hours
        for ts, value in zip(gap, ("0.2", "0.3", "0.4"), strict=True):
            [only] = self.current(app, "A1", ts)
            assert only.value == Decimal(value), ts

    def test_estimating_again_fills_nothing_twice(self, app: App) -> None:
        self.data(app)
        self.estimate(app)
        again = self.estimate(app)
        assert again.marked == 0
        assert gaps(app, again) == {g for g in FIRST_RUN if g[4] == MISSING}
        assert [v.version for v in self.current(app, "E1", z("2026-03-29T00:30"))] == [1]

    def test_a_longer_maximum_fills_the_longer_gap(self, app: App) -> None:
        self.data(app)
        run = self.estimate(app, max_intervals=6, meter=DeviceRef(mrid="E2"))
        assert run.scope == "meter E2"
        assert run.meters == 1
        assert gaps(app, run) == {("E2", z("2026-03-29T12:00"), z("2026-03-29T13:15"), 6,
                                   ESTIMATED)}  # fmt: skip
        assert run.marked == 6
        # 11:45Z is 13:45 CEST (0.425), 13:30Z 15:30 (0.475): sevenths of 0.05
        [first] = self.current(app, "E2", z("2026-03-29T12:00"))
        assert first.value == Decimal("0.432143")

    def test_only_the_meter_asked_for(self, app: App) -> None:
        self.data(app)
        run = self.estimate(app, meter=DeviceRef(mrid="E3"))
        assert gaps(app, run) == {("E3", SPRING + Q, SPRING_END, 188, MISSING)}
        assert run.marked == 0
        assert self.current(app, "E1", z("2026-03-29T00:30")) == []  # other meters untouched

    def test_a_register_is_not_estimated_by_intervals(self, app: App) -> None:
        self.data(app)
        uid = self.utility(app)
        with app.uow_factory() as uow:
            command = EstimateReadings(uid, SPRING, SPRING_END, (REGISTER,), 4)
            with pytest.raises(PayloadInvalid, match="estimation needs an interval reading type"):
                app.bus.handle(command, uow, CTX)
            assert uow.vee.runs(uid) == []


HISTORY_RUN: Gaps = {
    ("E1", z("2026-03-29T00:30"), z("2026-03-29T01:15"), 4, ESTIMATED),  # linear
    ("E1", z("2026-03-30T10:00"), z("2026-03-30T10:15"), 2, ESTIMATED),  # linear
    ("E2", z("2026-03-29T12:00"), z("2026-03-29T13:15"), 6, ESTIMATED),
    ("E3", SPRING + Q, SPRING_END, 188, MISSING),  # no history: nothing invented
    ("E4", SPRING_END - Q, SPRING_END, 2, ESTIMATED),
    ("E5", SPRING + Q, SPRING + 2 * Q, 2, ESTIMATED),  # linear
}


class HistoryContract(EstimationStore):
    """The same data, ``--method history``: the gaps linear interpolation cannot fill
    take the meter's mean of the same local time of day and day type over the four
    weeks before the period, all in CET (winter time)."""

    def test_same_day_type_history_after_the_change(self, app: App) -> None:
        self.data(app)
        run = self.estimate(app, method=EstimationMethod.HISTORY, time_zone="Europe/Berlin")
        with app.uow_factory() as uow:
            found = list(uow.vee.findings(run.id))
        assert {(f.device_mrid, f.ts, f.ts_end, f.intervals, f.quality) for f in found} == (
            HISTORY_RUN
        )
        rules = {f.device_mrid + f.ts.isoformat(): f.rule for f in found}
        assert rules["E2" + z("2026-03-29T12:00").isoformat()] == "history"
        assert rules["E1" + z("2026-03-29T00:30").isoformat()] == "linear"
        assert run.marked == 8 + 6 + 2
        # Sunday 29 March, 12:00Z is 14:00 CEST: the weekends' 14:xx (0.450), not the
        # 13:xx (0.425) that the same UTC time was in winter; 13:00Z is 15:00 (0.475)
        expected = {
            ("E2", z("2026-03-29T12:00")): Decimal("0.45"),
            ("E2", z("2026-03-29T12:45")): Decimal("0.45"),
            ("E2", z("2026-03-29T13:00")): Decimal("0.475"),
            ("E2", z("2026-03-29T13:15")): Decimal("0.475"),
            # Monday 23:45 CEST (weekday 23:xx: 0.275), Tuesday 00:00 (0.100)
            ("E4", SPRING_END - Q): Decimal("0.275"),
            ("E4", SPRING_END): Decimal("0.1"),
            **VALUES,
        }
        for (mrid, ts), value in expected.items():
            [only] = self.current(app, mrid, ts)
            assert only.value == value, (mrid, ts)
        [e2] = self.current(app, "E2", z("2026-03-29T12:00"))
        assert unpack(e2.quality).qualities[1].comment == "same day-type history"
        [e1] = self.current(app, "E1", z("2026-03-29T00:30"))
        assert unpack(e1.quality).qualities[1].comment == "linear interpolation"
        assert self.current(app, "E3", SPRING + Q) == []

    def test_history_scaled_to_the_register_advance(self, app: App) -> None:
        """E2's six history estimates (4 x 0.45 + 2 x 0.475 = 2.75) are scaled to the
        3.0 its register advanced beyond the known intervals: x 3 / 2.75. E4's register
        advanced exactly by its known intervals: its two estimates become 0."""
        self.data(app)
        run = self.estimate(
            app,
            method=EstimationMethod.HISTORY,
            time_zone="Europe/Berlin",
            registers=((PROFILE, REGISTER),),
        )
        with app.uow_factory() as uow:
            found = list(uow.vee.findings(run.id))
        scaled = {(f.device_mrid, f.ts, f.ts_end, f.intervals, f.quality, f.detail)
                  for f in found if f.rule == "history scaled"}  # fmt: skip
        assert scaled == {
            ("E2", SPRING, z("2026-03-29T22:00"), 6, ESTIMATED, scaled_detail(found, "E2")),
            ("E4", z("2026-03-29T22:00"), SPRING_END, 2, ESTIMATED, scaled_detail(found, "E4")),
        }  # fmt: skip
        assert scaled_detail(found, "E2").startswith("scaled by 1.090909 to the register advance")
        assert scaled_detail(found, "E4").startswith("scaled by 0 to the register advance")
        values = {
            ("E2", z("2026-03-29T12:00")): Decimal("0.490909"),
            ("E2", z("2026-03-29T12:45")): Decimal("0.490909"),
            ("E2", z("2026-03-29T13:00")): Decimal("0.518182"),
            ("E2", z("2026-03-29T13:15")): Decimal("0.518182"),
            ("E4", SPRING_END - Q): Decimal(0),
            ("E4", SPRING_END): Decimal(0),
            **VALUES,  # linear: not scaled
        }
        for (mrid, ts), value in values.items():
            [only] = self.current(app, mrid, ts)
            assert only.value == value, (mrid, ts)
        e2 = sum(self.current(app, "E2", z("2026-03-29T12:00") + n * Q)[0].value for n in range(6))
        assert e2 == Decimal("3.000000")


def scaled_detail(found: list[Any], mrid: str) -> str:
    [detail] = [f.detail for f in found if f.rule == "history scaled" and f.device_mrid == mrid]
    return str(detail)
