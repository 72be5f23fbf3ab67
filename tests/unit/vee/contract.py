"""Validation rules on every SQL store, on generated data with faults planted at known
places, over daylight-saving days: SQLite in tests/unit/vee/test_validation_sqlite.py,
PostgreSQL in tests/integration/sql/test_vee_postgres.py.

Each test states the findings it expects (meter, rule, first instant, last instant,
intervals) and compares the run's whole result set with them: a rule that finds
nothing, or too much, fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hub.bootstrap import App
from hub.vee_settings import VeeSettings
from mdm.commands import CreateMeter, CreateUsagePoint, InstallMeter
from mdm.group_commands import CreateEndDeviceGroup
from mdm.handlers import HandlerContext
from mdm.model import DeviceRef, EndDevice, UsagePoint
from mdm.ports import StagedReading
from mdm.qualities import unpack
from mdm.vee.commands import SaveFailingMeters, ValidateReadings
from mdm.vee.model import ValidationRun
from tests.unit.hub.conftest import make_app
from tests.unit.vee.data import (
    BERLIN,
    POWER_FAILURE,
    PROFILE,
    REGISTER,
    Meter,
    Q,
    local_midnight,
    store,
    usual,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CTX = HandlerContext(actor="test", now=NOW)
SPRING = local_midnight(date(2026, 3, 29))  # 2026-03-28T23:00Z; that day has 92 quarter-hours
SPRING_END = local_midnight(date(2026, 3, 31))  # 2026-03-30T22:00Z
AUTUMN = local_midnight(date(2026, 10, 25))  # 2026-10-24T22:00Z; that day has 100
AUTUMN_END = local_midnight(date(2026, 10, 26))  # 2026-10-25T23:00Z
HISTORY = timedelta(weeks=4)
FUTURE = datetime(2027, 1, 5, tzinfo=UTC)


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


RULES: list[dict[str, Any]] = [
    {"name": "missing-15", "kind": "missing", "reading_type": PROFILE},
    {"name": "high-15", "kind": "limits", "reading_type": PROFILE, "maximum": 5},
    {"name": "off-15", "kind": "limits", "reading_type": PROFILE, "maximum": "0.2",
     "enabled": False},
    {"name": "m1-high", "kind": "limits", "reading_type": PROFILE, "maximum": "0.4",
     "end_device_group": "ONLY-M1"},
    {"name": "spike-15", "kind": "spike", "reading_type": PROFILE, "factor": 5},
    {"name": "zero-15", "kind": "zero_run", "reading_type": PROFILE, "max_intervals": 8},
    {"name": "negative-15", "kind": "negative", "reading_type": PROFILE},
    {"name": "flagged-15", "kind": "meter_flagged", "reading_type": PROFILE},
    {"name": "future-15", "kind": "future", "reading_type": PROFILE},
    {"name": "register-back", "kind": "register_backwards", "reading_type": REGISTER,
     "digits": 6},
    {"name": "register-profile", "kind": "register_vs_profile", "reading_type": REGISTER,
     "profile_reading_type": PROFILE, "tolerance": "0.01"},
]  # fmt: skip

Expected = set[tuple[str, str, datetime, datetime, int]]


def spring_meters() -> list[Meter]:
    m2 = Meter("M2", values={z(f"2026-03-29T01:{m:02d}"): None for m in (0, 15, 30, 45)})
    m3 = Meter(
        "M3",
        values={z("2026-03-29T00:45"): Decimal("9.5")},
        register_start=Decimal("999300.0"),
        register_digits=6,
    )
    zeros: dict[datetime, Decimal | None] = {
        z("2026-03-30T10:00") + n * Q: Decimal(0) for n in range(10)
    }
    zeros[z("2026-03-30T14:00")] = Decimal("-0.5")
    m4 = Meter("M4", values=zeros, registers={z("2026-03-29T22:00"): Decimal(-200)})
    m5 = Meter(
        "M5",
        qualities={z("2026-03-30T03:00"): POWER_FAILURE},
        registers={z("2026-03-30T22:00"): Decimal(1)},
    )
    return [Meter("M1"), m2, m3, m4, m5]


def spring_expected() -> Expected:
    one = [
        ("M3", "high-15", "2026-03-29T00:45"),
        ("M3", "spike-15", "2026-03-29T00:45"),
        ("M3", "register-back", "2026-03-29T22:00"),  # the rollover at 10**6
        ("M4", "negative-15", "2026-03-30T14:00"),
        ("M4", "register-back", "2026-03-29T22:00"),
        ("M4", "register-profile", "2026-03-30T22:00"),  # advance after the fault
        ("M5", "flagged-15", "2026-03-30T03:00"),
        ("M5", "register-profile", "2026-03-30T22:00"),
    ]
    found: Expected = {(m, r, z(ts), z(ts), 1) for m, r, ts in one}
    found.add(("M2", "missing-15", z("2026-03-29T01:00"), z("2026-03-29T01:45"), 4))
    found.add(("M4", "zero-15", z("2026-03-30T10:00"), z("2026-03-30T12:15"), 10))
    found.add(("M5", "future-15", FUTURE, FUTURE, 1))
    ts = SPRING + Q
    while ts <= SPRING_END:  # the group's rule: M1 only, above 0.4
        if usual(ts) > Decimal("0.4"):
            found.add(("M1", "m1-high", ts, ts, 1))
        ts += Q
    return found


def result_set(app: App, run: ValidationRun) -> Expected:
    with app.uow_factory() as uow:
        return {
            (f.device_mrid, f.rule, f.ts, f.ts_end, f.intervals) for f in uow.vee.findings(run.id)
        }


class VeeContract:
    """``store_url`` is a fresh, empty database."""

    @pytest.fixture
    def app(self, store_url: str) -> Iterator[App]:
        application = make_app(store_url)
        yield application
        application.close()

    def utility(self, app: App) -> int:
        with app.uow_factory() as uow:
            u = uow.utilities.get(app.settings.default_utility)
            assert u is not None
            assert u.id is not None
            return u.id

    def meters(
        self,
        app: App,
        meters: list[Meter],
        start: datetime,
        end: datetime,
        zone: ZoneInfo = BERLIN,
        extra: list[StagedReading] | None = None,
    ) -> int:
        uid = self.utility(app)
        with app.uow_factory() as uow:
            for m in meters:
                app.bus.handle(CreateMeter(uid, EndDevice(m.mrid, "DEFAULT")), uow, CTX)
            n = store(uow, uid, meters, start, end, zone, extra)
            uow.commit()
        return n

    def validate(self, app: App, start: datetime, end: datetime, settings: VeeSettings,
                 **kw: Any) -> ValidationRun:  # fmt: skip
        uid = self.utility(app)
        with app.uow_factory() as uow:
            run: ValidationRun = app.bus.handle(
                ValidateReadings(uid, "DEFAULT", start, end, settings.rules_for("DEFAULT"), **kw),
                uow,
                CTX,
            )
            uow.commit()
        return run

    def spring(self, app: App) -> int:
        future = [StagedReading(5, PROFILE, FUTURE, Decimal("0.1"), "")]
        n = self.meters(app, spring_meters(), SPRING - HISTORY, SPRING_END, extra=future)
        uid = self.utility(app)
        with app.uow_factory() as uow:
            app.bus.handle(
                CreateEndDeviceGroup(uid, "ONLY-M1", "only M1", None,
                                     (DeviceRef(mrid="M1"),)), uow, CTX)  # fmt: skip
            uow.commit()
        return n

    def test_every_rule_finds_exactly_what_was_planted(self, app: App) -> None:
        self.spring(app)
        settings = VeeSettings(time_zone="Europe/Berlin", rules=RULES)
        run = self.validate(app, SPRING, SPRING_END, settings)
        assert result_set(app, run) == spring_expected()
        assert run.meters == 5
        # 5 meters x 188 quarter-hours (92 + 96) and 2 registers each, M2 without 4
        assert run.readings == 5 * 188 - 4 + 5 * 2
        assert run.findings == len(spring_expected())
        assert run.failing_meters == 5
        counts = {c.rule: (c.findings, c.meters) for c in run.rules}
        assert counts["missing-15"] == (1, 1)
        assert "off-15" not in counts  # switched off
        assert counts["m1-high"][1] == 1
        uid = self.utility(app)
        with app.uow_factory() as uow:
            [again] = uow.vee.runs(uid)
            assert again.id == run.id
            assert again.state == "done"
            assert again.findings == run.findings
            details = {(f.device_mrid, f.rule): f for f in uow.vee.findings(run.id)}
        assert details[("M3", "register-back")].detail.startswith("rolled over at 6 digits")
        assert details[("M4", "register-back")].detail.startswith("went back from")
        assert details[("M2", "missing-15")].value is None
        assert details[("M2", "missing-15")].quality == "3.5.259"
        assert details[("M4", "zero-15")].quality == "3.6.1"
        assert details[("M3", "high-15")].value == Decimal("9.5")

    def test_a_finding_is_a_new_version_with_the_quality(self, app: App) -> None:
        self.spring(app)
        settings = VeeSettings(rules=[r for r in RULES if r["name"] in (
            "high-15", "spike-15", "flagged-15", "zero-15")])  # fmt: skip
        run = self.validate(app, SPRING, SPRING_END, settings)
        assert run.marked == 1 + 1 + 10  # M3's spike (two findings, one version), M5, M4
        uid = self.utility(app)
        with app.uow_factory() as uow:
            m3 = uow.devices.find(uid, DeviceRef(mrid="M3"))
            m5 = uow.devices.find(uid, DeviceRef(mrid="M5"))
            assert m3 is not None
            assert m3.id is not None
            assert m5 is not None
            assert m5.id is not None
            spike = uow.readings.versions(m3.id, PROFILE, z("2026-03-29T00:45"))
            flagged = uow.readings.versions(m5.id, PROFILE, z("2026-03-30T03:00"))
            clean = uow.readings.versions(m3.id, PROFILE, z("2026-03-29T01:00"))
        assert [(v.version, v.quality, v.value) for v in spike] == [
            (2, "3.5.0", Decimal("9.5")),  # limits and spike: one code, once
            (1, "", Decimal("9.5")),  # the original stays visible
        ]
        assert [v.version for v in clean] == [1]
        new = unpack(flagged[0].quality)
        assert new.codes == "1.2.32,3.6.0"
        assert new.qualities[0].comment == "power failure"  # the meter's note kept
        assert new.qualities[1].comment is None
        assert flagged[1].quality == POWER_FAILURE
        # validating again finds the same, and adds no version
        again = self.validate(app, SPRING, SPRING_END, settings)
        assert again.id != run.id
        assert again.findings == run.findings
        assert again.marked == 0

    def test_scope_one_meter_or_a_group(self, app: App) -> None:
        self.spring(app)
        settings = VeeSettings(rules=RULES)
        run = self.validate(app, SPRING, SPRING_END, settings, meter=DeviceRef(mrid="M4"))
        assert run.meters == 1
        assert run.scope == "meter M4"
        assert {f[0] for f in result_set(app, run)} == {"M4"}
        assert result_set(app, run) == {f for f in spring_expected() if f[0] == "M4"}
        run = self.validate(app, SPRING, SPRING_END, settings, group="ONLY-M1")
        assert run.meters == 1
        assert result_set(app, run) == {f for f in spring_expected() if f[0] == "M1"}

    def test_failing_meters_become_a_group(self, app: App) -> None:
        self.spring(app)
        run = self.validate(app, SPRING, SPRING_END, VeeSettings(rules=RULES[:2]))
        uid = self.utility(app)
        with app.uow_factory() as uow:
            change = app.bus.handle(SaveFailingMeters(uid, run.id, "FAIL-1", "failing"), uow, CTX)
            uow.commit()
            assert change.group.members == 2
            assert uow.end_device_groups.members(change.group.id) == ["M2", "M3"]
            rule = app.bus.handle(
                SaveFailingMeters(uid, run.id, "FAIL-2", "missing", rule="missing-15"), uow, CTX
            )
            assert uow.end_device_groups.members(rule.group.id) == ["M2"]

    def test_autumn_day_of_100_quarter_hours(self, app: App) -> None:
        """The second 02:15 and 02:30 (CET) of 25 October are missing; a spike at the
        first 02:30 (CEST) is judged against the Sundays' 02:30."""
        m1 = Meter("M1", values={z("2026-10-25T00:30"): Decimal("3.0")})
        m2 = Meter("M2", values={z("2026-10-25T01:15"): None, z("2026-10-25T01:30"): None})
        self.meters(app, [m1, m2], AUTUMN - HISTORY, AUTUMN_END)
        settings = VeeSettings(time_zone="Europe/Berlin", rules=[RULES[0], RULES[4]])
        run = self.validate(app, AUTUMN, AUTUMN_END, settings)
        assert run.readings == 2 * 100 - 2
        assert result_set(app, run) == {
            ("M2", "missing-15", z("2026-10-25T01:15"), z("2026-10-25T01:30"), 2),
            ("M1", "spike-15", z("2026-10-25T00:30"), z("2026-10-25T00:30"), 1),
        }

    def test_spike_in_the_utility_time_zone(self, app: App) -> None:
        """Sao Paulo, 4 November 2018: midnight did not exist (00:00 -> 01:00, -03 -> -02).
        The medians are taken by local weekday and time of day: 0.70 at 15:15 local is
        below 1.5 x 0.475 (15:xx), 0.80 at 16:15 is above 1.5 x 0.100 (16:xx). Taken an
        hour off (by the offset before the change) the first would be a spike too."""
        sp = ZoneInfo("America/Sao_Paulo")
        day = datetime(2018, 11, 4, 1, 0, tzinfo=sp).astimezone(UTC)  # the first instant
        end = datetime(2018, 11, 5, tzinfo=sp).astimezone(UTC)
        spike = datetime(2018, 11, 4, 16, 15, tzinfo=sp).astimezone(UTC)
        fine = datetime(2018, 11, 4, 15, 15, tzinfo=sp).astimezone(UTC)
        meter = Meter("M1", values={fine: Decimal("0.70"), spike: Decimal("0.80")})
        self.meters(app, [meter], day - HISTORY, end, zone=sp)
        rule = {"name": "spike", "kind": "spike", "reading_type": PROFILE, "factor": "1.5"}
        settings = VeeSettings(utility_time_zones={"DEFAULT": "America/Sao_Paulo"}, rules=[rule])
        run = self.validate(app, day, end, settings)
        assert result_set(app, run) == {("M1", "spike", spike, spike, 1)}
        utc = VeeSettings(rules=[rule])  # the same data read in UTC: wrong slots
        assert ("M1", "spike", fine, fine, 1) in result_set(app, self.validate(app, day, end, utc))

    def test_rule_of_a_usage_point_group(self, app: App) -> None:
        """A rule for one transformer area sees only the meters installed there."""
        self.spring(app)
        uid = self.utility(app)
        with app.uow_factory() as uow:
            for up, area, meter in (("UP-1", "TA-1", "M1"), ("UP-3", "TA-2", "M3")):
                point = UsagePoint(up, "DEFAULT", transformer_area=area)
                app.bus.handle(CreateUsagePoint(uid, point), uow, CTX)
                app.bus.handle(
                    InstallMeter(uid, DeviceRef(mrid=meter), DeviceRef(mrid=up), SPRING - HISTORY),
                    uow,
                    CTX,
                )
            uow.commit()
        rule = {**RULES[3], "name": "ta1-high", "usage_point_group": "TA-1"}
        del rule["end_device_group"]
        run = self.validate(app, SPRING, SPRING_END, VeeSettings(rules=[rule]))
        m1 = {(m, "ta1-high", a, b, n) for m, r, a, b, n in spring_expected() if r == "m1-high"}
        assert result_set(app, run) == m1
        [count] = run.rules
        assert count.readings == 188  # M1's quarter-hours only
