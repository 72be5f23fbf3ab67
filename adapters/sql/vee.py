"""Validation runs in the store (``uow.vee``): each rule one set-based statement.

Every rule is an ``INSERT INTO vee_finding ... SELECT`` over the current readings of
the period and the run's meters, with window functions where a reading is judged
against its neighbours (``LAG``: gaps, registers; ``ROW_NUMBER``: runs of zeros,
medians). Nothing is read reading by reading into Python. The same statements run on
PostgreSQL and SQLite; the few spellings that differ (epoch seconds, text position,
ordered string aggregation, numeric text on SQLite) come from :class:`_Dialect`.

The run's meters and the readings a finding flags live in temporary tables of the
transaction (``amihub_vee_meter``, ``amihub_vee_flag``); :meth:`mark` turns the flags
into new versions of the readings (the previous one kept in ``reading_history``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.sql.elements import TextClause

from adapters.sql import tables as t
from adapters.sql.errors import guard, guarded
from adapters.sql.registry import _Repo
from adapters.sql.types import UTCDateTime
from mdm.model import DeviceRef
from mdm.vee.estimation import (
    ESTIMATED_CODE,
    ESTIMATION,
    NOT_ESTIMATED_CODE,
    EstimationMethod,
    estimated_quality,
)
from mdm.vee.model import Finding, RuleCount, ValidationRun
from mdm.vee.rules import ValidationRule
from mdm.vee.zones import offset_spans

METER = "amihub_vee_meter"
FLAG = "amihub_vee_flag"
ZONE = "amihub_vee_zone"
MARK = "amihub_vee_mark"
GAP = "amihub_vee_gap"
NUM = "amihub_vee_n"
SPAN = "amihub_vee_span"
FACTOR = "amihub_vee_factor"
_R = t.vee_run
_F = t.vee_finding
_TS = (
    "start",
    "end",
    "now",
    "lookback",
    "future_after",
    "history_start",
    "end_clip",
    "win_lo",
    "win_hi",
)


class _Dialect:
    def __init__(self, name: str) -> None:
        self.pg = name == "postgresql"

    def epoch(self, x: str) -> str:
        if self.pg:
            # date_part gives a double; EXTRACT a numeric, several times slower per row
            return f"CAST(date_part('epoch', {x}) AS BIGINT)"
        return f"CAST(strftime('%s', {x}) AS INTEGER)"

    def ts(self, e: str) -> str:
        if self.pg:
            return f"to_timestamp({e})"
        return f"strftime('%Y-%m-%d %H:%M:%S.000000', {e}, 'unixepoch')"

    def number(self, v: Decimal) -> Decimal | float:
        """A bound number: exact on PostgreSQL; sqlite3 binds no Decimal."""
        return v if self.pg else float(v)

    def num(self, x: str) -> str:
        return x if self.pg else f"CAST({x} AS REAL)"

    def text(self, x: str) -> str:
        return f"CAST({x} AS TEXT)"

    def decimal6(self, x: str) -> str:
        """``x`` rounded to 6 decimals, stored as the value column stores a number
        (NUMERIC; on SQLite its decimal text), without trailing zeros."""
        if self.pg:
            return f"trim_scale(round({x}, 6))"
        digits = f"printf('%.6f', {x})"
        return f"rtrim(rtrim({digits}, '0'), '.')"

    def codes(self, q: str) -> str:
        """The codes of a stored quality text (before the notes: mdm/qualities.py)."""
        pos = f"strpos({q}, chr(30))" if self.pg else f"instr({q}, char(30))"
        return f"CASE WHEN {pos} > 0 THEN substr({q}, 1, {pos} - 1) ELSE {q} END"

    def notes(self, q: str) -> str:
        pos = f"strpos({q}, chr(30))" if self.pg else f"instr({q}, char(30))"
        return f"CASE WHEN {pos} > 0 THEN substr({q}, {pos}) ELSE '' END"

    def temp(self, name: str, columns: str) -> list[str]:
        if self.pg:
            return [
                f"DROP TABLE IF EXISTS {name}",
                f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP",
            ]
        return [f"DROP TABLE IF EXISTS temp.{name}", f"CREATE TEMP TABLE {name} ({columns})"]


def _stmt(sql: str, **params: Any) -> TextClause:
    """A statement whose instants bind as the store's timestamps."""
    stmt = text(sql)
    typed = [bindparam(k, type_=UTCDateTime()) for k in _TS if f":{k}" in sql]
    if typed:
        stmt = stmt.bindparams(*typed)
    return stmt


def _run(row: Any, counts: tuple[RuleCount, ...] = ()) -> ValidationRun:
    return ValidationRun(
        id=int(row.id),
        utility_id=int(row.utility_id),
        kind=row.kind,
        trigger=row.trigger,
        scope=row.scope,
        period_start=row.period_start,
        period_end=row.period_end,
        started_at=row.started_at,
        finished_at=row.finished_at,
        actor=row.actor,
        state=row.state,
        meters=int(row.meters),
        readings=int(row.readings),
        findings=int(row.findings),
        failing_meters=int(row.failing_meters),
        marked=int(row.marked),
        rules=counts or tuple(RuleCount(**c) for c in (row.rules or {}).get("counts", [])),
    )


class SqlValidationStore(_Repo):
    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self._counts: list[RuleCount] = []
        self._counted: dict[tuple[tuple[str, str], ...], int] = {}

    def _d(self) -> _Dialect:
        return _Dialect(self._conn.dialect.name)

    def _exec(self, sql: str, **params: Any) -> Any:
        return self._conn.execute(_stmt(sql), params)

    # -- run --------------------------------------------------------------------------------

    @guarded
    def start_run(
        self,
        utility_id: int,
        start: datetime,
        end: datetime,
        scope: str,
        actor: str,
        now: datetime,
        rules: Sequence[ValidationRule],
        trigger: str = "demand",
    ) -> int:
        config = [
            {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(r).items()}
            for r in rules
        ]
        return self._begin(
            utility_id, "validate", start, end, scope, actor, now, {"rules": config}, trigger
        )

    @guarded
    def start_estimation(
        self,
        utility_id: int,
        start: datetime,
        end: datetime,
        scope: str,
        actor: str,
        now: datetime,
        config: Mapping[str, object],
    ) -> int:
        return self._begin(utility_id, "estimate", start, end, scope, actor, now, dict(config))

    def _begin(
        self,
        utility_id: int,
        kind: str,
        start: datetime,
        end: datetime,
        scope: str,
        actor: str,
        now: datetime,
        config: dict[str, Any],
        trigger: str = "demand",
    ) -> int:
        d = self._d()
        for sql in (
            *d.temp(METER, "device_id BIGINT PRIMARY KEY"),
            *d.temp(
                FLAG,
                "device_id BIGINT, reading_type_id INTEGER, ts "
                + ("TIMESTAMPTZ" if d.pg else "TEXT")
                + ", code VARCHAR(20)",
            ),
        ):
            self._conn.execute(text(sql))
        if d.pg:
            # the rules' estimated costs are high enough for JIT compilation, which cost
            # more (1.8 s a statement, measured) than it saved: off for this transaction
            self._conn.execute(text("SET LOCAL jit = off"))
        run_id = self._conn.execute(
            insert(_R)
            .values(
                utility_id=utility_id,
                kind=kind,
                trigger=trigger,
                scope=scope,
                period_start=start,
                period_end=end,
                started_at=now,
                actor=actor,
                state="running",
                meters=0,
                readings=0,
                findings=0,
                failing_meters=0,
                marked=0,
                rules=json.loads(json.dumps(config, default=str)),
            )
            .returning(_R.c.id)
        ).scalar_one()
        self._counts, self._counted = [], {}
        return int(run_id)

    @guarded
    def select_meters(
        self,
        utility_id: int,
        device_id: int | None,
        group_id: int | None,
        refs: Sequence[DeviceRef] = (),
    ) -> int:
        if refs:  # the meters a feed wrote (validation on ingest): by mRID, else by name
            # the meters of each of the feed's periods in turn: the previous ones go
            self._exec(f"DELETE FROM {METER}")
            mrids = sorted({r.mrid for r in refs if r.mrid})
            names = sorted({r.name for r in refs if not r.mrid and r.name})
            self._conn.execute(
                text(
                    f"INSERT INTO {METER} (device_id) SELECT id FROM end_device "
                    "WHERE utility_id = :u AND (mrid IN :m OR name IN :n)"
                ).bindparams(bindparam("m", expanding=True), bindparam("n", expanding=True)),
                {"u": utility_id, "m": mrids or [""], "n": names or [""]},
            )
        elif device_id is not None:
            self._exec(f"INSERT INTO {METER} (device_id) VALUES (:d)", d=device_id)
        elif group_id is not None:
            self._exec(
                f"INSERT INTO {METER} (device_id) SELECT device_id FROM end_device_group_member "
                "WHERE group_id = :g",
                g=group_id,
            )
        else:
            self._exec(
                f"INSERT INTO {METER} (device_id) SELECT id FROM end_device WHERE utility_id = :u",
                u=utility_id,
            )
        if self._d().pg:
            self._conn.execute(text(f"ANALYZE {METER}"))
        return int(self._exec(f"SELECT count(*) FROM {METER}").scalar_one())

    def _type_id(self, code: str) -> int | None:
        found = self._conn.execute(
            select(t.reading_type.c.id).where(t.reading_type.c.code == code)
        ).scalar()
        return int(found) if found is not None else None

    @guarded
    def count_readings(self, reading_types: Sequence[str], start: datetime, end: datetime) -> int:
        ids = [i for i in (self._type_id(c) for c in reading_types) if i is not None]
        if not ids:
            return 0
        rd = f"rd AS (SELECT s.device_id FROM {METER} s WHERE 1 = 1)"
        total = 0
        for rt in ids:
            total += self._count(rd, {"rt": rt, "start": start, "end": end})
        return total

    # -- rules ------------------------------------------------------------------------------

    @guarded
    def validate(
        self,
        run_id: int,
        rule: ValidationRule,
        start: datetime,
        end: datetime,
        now: datetime,
        group_id: int | None,
    ) -> RuleCount:
        rt = self._type_id(rule.reading_type)
        if rt is None:  # no reading of this type was ever stored
            count = RuleCount(rule.name, rule.kind, rule.reading_type, 0, 0, 0)
            self._counts.append(count)
            return count
        d = self._d()
        params: dict[str, Any] = {
            "run": run_id,
            "rt": rt,
            "rule": rule.name,
            "kind": str(rule.kind),
            "q": rule.quality,
            "start": start,
            "end": end,
            "now": now,
        }
        where = ""
        if group_id is not None:
            where += (
                " AND EXISTS (SELECT 1 FROM end_device_group_member gm "
                "WHERE gm.group_id = :rule_group AND gm.device_id = s.device_id)"
            )
            params["rule_group"] = group_id
        if rule.scope.usage_point_group is not None:
            where += (
                " AND EXISTS (SELECT 1 FROM installation i JOIN usage_point u "
                "ON u.id = i.usage_point_id WHERE i.device_id = s.device_id "
                "AND i.end_at IS NULL AND u.transformer_area = :area)"
            )
            params["area"] = rule.scope.usage_point_group
        rd = f"rd AS (SELECT s.device_id FROM {METER} s WHERE 1 = 1{where})"
        build = getattr(self, f"_{rule.kind}")
        ctes, select_sql, flag_span = build(rule, d, params)
        sql = (
            f"WITH {rd}, {ctes} INSERT INTO vee_finding (run_id, device_id, reading_type_id, "
            "rule, kind, quality, ts, ts_end, intervals, value, detail) " + select_sql
        )
        self._conn.execute(_stmt(sql), params)
        if flag_span:
            self._exec(
                f"INSERT INTO {FLAG} (device_id, reading_type_id, ts, code) "
                "SELECT f.device_id, f.reading_type_id, r.ts, f.quality FROM vee_finding f "
                "JOIN reading r ON r.device_id = f.device_id "
                "AND r.reading_type_id = f.reading_type_id AND r.ts >= f.ts AND r.ts <= f.ts_end "
                "WHERE f.run_id = :run AND f.rule = :rule AND r.ts > :start",
                run=run_id,
                rule=rule.name,
                start=start,
            )
        found = self._exec(
            "SELECT count(*), count(DISTINCT device_id) FROM vee_finding "
            "WHERE run_id = :run AND rule = :rule",
            run=run_id,
            rule=rule.name,
        ).one()
        readings = self._count(rd, params)
        count = RuleCount(
            rule.name, str(rule.kind), rule.reading_type, readings, int(found[0]), int(found[1])
        )
        self._counts.append(count)
        return count

    def _count(self, rd: str, params: dict[str, Any]) -> int:
        """Readings of the rule's type, period and meters: counted once for the rules that
        share them."""
        keys = ("rt", "start", "end", "rule_group", "area")
        given = {k: v for k, v in params.items() if k in keys}
        key = tuple(sorted((k, str(v)) for k, v in given.items()))
        if key not in self._counted:
            self._counted[key] = int(
                self._conn.execute(
                    _stmt(
                        f"WITH {rd} SELECT count(*) FROM reading r "
                        "JOIN rd ON rd.device_id = r.device_id "
                        "WHERE r.reading_type_id = :rt AND r.ts > :start AND r.ts <= :end"
                    ),
                    given,
                ).scalar_one()
            )
        return self._counted[key]

    @staticmethod
    def _readings(alias: str = "r", lower: str = ":start") -> str:
        return (
            f"{alias} AS (SELECT x.device_id, x.ts, x.value, x.quality FROM reading x "
            "JOIN rd ON rd.device_id = x.device_id "
            f"WHERE x.reading_type_id = :rt AND x.ts > {lower} AND x.ts <= :end)"
        )

    @staticmethod
    def _one(value: str, detail: str) -> str:
        """The finding columns of a finding on one reading ``r``."""
        return f"SELECT :run, r.device_id, :rt, :rule, :kind, :q, r.ts, r.ts, 1, {value}, {detail}"

    def _limits(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        v = d.num("r.value")
        parts, detail = [], "CASE"
        if rule.maximum is not None:
            p["max"], p["above"] = d.number(rule.maximum), f"above the maximum {rule.maximum}"
            parts.append(f"{v} > :max")
            detail += f" WHEN {v} > :max THEN :above"
        if rule.minimum is not None:
            p["min"], p["below"] = d.number(rule.minimum), f"below the minimum {rule.minimum}"
            parts.append(f"{v} < :min")
            detail += " WHEN 1 = 1 THEN :below"
        detail += " END"
        return (
            self._readings(),
            self._one("r.value", detail) + f" FROM r WHERE {' OR '.join(parts)}",
            True,
        )

    def _negative(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        p["detail"] = "negative consumption"
        return (
            self._readings(),
            self._one("r.value", ":detail") + f" FROM r WHERE {d.num('r.value')} < 0",
            True,
        )

    def _future(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        after = p["now"] + timedelta(seconds=rule.future_seconds)
        p["future_after"] = max(after, p["start"])
        p["detail"] = f"stamped after the run time {after.isoformat()}"
        r = (
            "r AS (SELECT x.device_id, x.ts, x.value FROM reading x "
            "JOIN rd ON rd.device_id = x.device_id "
            "WHERE x.reading_type_id = :rt AND x.ts > :future_after)"
        )
        return r, self._one("r.value", ":detail") + " FROM r", True

    def _meter_flagged(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        tests = []
        for n, code in enumerate(rule.flag_codes):
            exact = code.count(".") == 2
            p[f"flag{n}"] = f"%,{code},%" if exact else f"%,{code}.%"
            tests.append(f"(',' || c.codes || ',') LIKE :flag{n}")
        p["detail"] = "flagged by the meter: "
        c = (
            f"c AS (SELECT r.device_id, r.ts, r.value, {d.codes('r.quality')} AS codes FROM r "
            "WHERE r.quality <> '')"
        )
        sql = (
            "SELECT :run, c.device_id, :rt, :rule, :kind, :q, c.ts, c.ts, 1, c.value, "
            f":detail || c.codes FROM c WHERE {' OR '.join(tests)}"
        )
        return f"{self._readings()}, {c}", sql, True

    def _missing(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        step = rule.interval_seconds
        assert step is not None
        end_clip = min(p["end"], p["now"])
        start_e = int(p["start"].timestamp()) // step * step
        hi_e = int(end_clip.timestamp()) // step * step + step
        p.update(step=step, lo_e=start_e, hi_e=hi_e, end_clip=end_clip)
        has = (
            "EXISTS (SELECT 1 FROM reading y WHERE y.device_id = rd.device_id "
            "AND y.reading_type_id = :rt AND y.ts <= {bound})"
        )
        ctes = (
            f"{self._readings()}, pts AS ("
            f"SELECT r.device_id, {d.epoch('r.ts')} AS e FROM r WHERE r.ts <= :end_clip "
            f"UNION ALL SELECT rd.device_id, :lo_e FROM rd WHERE {has.format(bound=':start')} "
            f"UNION ALL SELECT rd.device_id, :hi_e FROM rd WHERE {has.format(bound=':end_clip')}"
            "), g AS (SELECT device_id, e, LAG(e) OVER (PARTITION BY device_id ORDER BY e) AS prev "
            "FROM pts)"
        )
        n = "((g.e - g.prev) / :step - 1)"
        sql = (
            f"SELECT :run, g.device_id, :rt, :rule, :kind, :q, {d.ts('g.prev + :step')}, "
            f"{d.ts('g.e - :step')}, {n}, NULL, "
            f"{d.text(n)} || ' missing interval(s)' FROM g WHERE g.e - g.prev >= 2 * :step"
        )
        return ctes, sql, False

    def _zero_run(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        step, most = rule.interval_seconds, rule.max_intervals
        assert step is not None
        assert most is not None
        p.update(step=step, most=most, lookback=p["start"] - timedelta(seconds=step * most))
        ctes = (
            f"{self._readings(lower=':lookback')}, z AS (SELECT r.device_id, r.ts, "
            f"{d.epoch('r.ts')} / :step - ROW_NUMBER() OVER "
            f"(PARTITION BY r.device_id ORDER BY r.ts) AS k FROM r WHERE {d.num('r.value')} = 0), "
            "runs AS (SELECT device_id, min(ts) AS a, max(ts) AS b, count(*) AS n FROM z "
            "GROUP BY device_id, k HAVING count(*) > :most AND max(ts) > :start)"
        )
        sql = (
            "SELECT :run, device_id, :rt, :rule, :kind, :q, a, b, n, NULL, "
            f"{d.text('n')} || ' intervals of zero consumption' FROM runs"
        )
        return ctes, sql, True

    def _spike(self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]) -> tuple[str, str, bool]:
        assert rule.factor is not None
        history_start = p["start"] - timedelta(weeks=rule.weeks)
        p.update(
            history_start=history_start,
            factor=d.number(rule.factor),
            floor=d.number(rule.floor),
            samples=rule.min_samples,
            detail=f"more than {rule.factor} times the median of ",
        )
        if d.pg:  # the local wall-clock time as if it were UTC: its epoch is local seconds
            p["tz"] = rule.time_zone
            local = "CAST(date_part('epoch', x.ts AT TIME ZONE :tz) AS BIGINT)"
            join = ""
        else:  # SQLite knows no zones: the offsets of the span, joined by instant
            spans = offset_spans(ZoneInfo(rule.time_zone), history_start, p["end"])
            for sql in d.temp(ZONE, "lo BIGINT, hi BIGINT, shift BIGINT"):
                self._conn.execute(text(sql))
            self._conn.execute(
                text(f"INSERT INTO {ZONE} (lo, hi, shift) VALUES (:lo, :hi, :offset)"),
                [s._asdict() for s in spans],
            )
            local = f"({d.epoch('x.ts')} + z.shift)"
            join = f" JOIN {ZONE} z ON {d.epoch('x.ts')} >= z.lo AND {d.epoch('x.ts')} < z.hi"
        # one key for the weekday and time of day: local seconds since a Monday 00:00
        # (1970-01-01 was a Thursday, 3 days after one)
        slot = (
            f"SELECT x.device_id, x.ts, x.value, ({local} + 259200) % 604800 AS slot "
            f"FROM {{src}} x{join}"
        )
        hist = (
            "h0 AS (SELECT x.device_id, x.ts, x.value FROM reading x "
            "JOIN rd ON rd.device_id = x.device_id "
            "WHERE x.reading_type_id = :rt AND x.ts > :history_start AND x.ts <= :start)"
        )
        ctes = (
            f"{self._readings()}, {hist}, h AS ({slot.format(src='h0')}), "
            f"hk AS (SELECT device_id, slot, {d.num('value')} AS v, ROW_NUMBER() OVER "
            "(PARTITION BY device_id, slot ORDER BY " + d.num("value") + ") AS rn, "
            "COUNT(*) OVER (PARTITION BY device_id, slot) AS n FROM h), "
            "med AS (SELECT device_id, slot, AVG(v) AS m, MAX(n) AS n FROM hk "
            "WHERE rn = (n + 1) / 2 OR rn = (n + 2) / 2 GROUP BY device_id, slot), "
            f"cur AS ({slot.format(src='r')})"
        )
        v = d.num("cur.value")
        sql = (
            "SELECT :run, cur.device_id, :rt, :rule, :kind, :q, cur.ts, cur.ts, 1, cur.value, "
            f":detail || {d.text('round(med.m, 4)')} FROM cur "
            "JOIN med ON med.device_id = cur.device_id AND med.slot = cur.slot "
            f"WHERE med.n >= :samples AND {v} > :factor * med.m AND {v} > :floor"
        )
        return ctes, sql, True

    def _register_pairs(self, d: _Dialect) -> str:
        """``w``: each register reading of the period with the one before it (the last
        one before the period included)."""
        return (
            f"{self._readings()}, p0 AS (SELECT rd.device_id, (SELECT max(y.ts) FROM reading y "
            "WHERE y.device_id = rd.device_id AND y.reading_type_id = :rt AND y.ts <= :start) "
            "AS ts FROM rd), pr AS (SELECT x.device_id, x.ts, x.value FROM reading x "
            "JOIN p0 ON x.device_id = p0.device_id AND x.ts = p0.ts "
            "WHERE x.reading_type_id = :rt), "
            "s AS (SELECT device_id, ts, value FROM r UNION ALL SELECT device_id, ts, value "
            "FROM pr), w AS (SELECT device_id, ts, value, "
            "LAG(value) OVER (PARTITION BY device_id ORDER BY ts) AS prev, "
            "LAG(ts) OVER (PARTITION BY device_id ORDER BY ts) AS prev_ts FROM s)"
        )

    def _register_backwards(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        v, prev = d.num("w.value"), d.num("w.prev")
        detail = f"'went back from ' || {d.text('w.prev')}"
        if rule.digits is not None:
            modulus = Decimal(10) ** rule.digits
            most = rule.max_rollover_advance
            if most is None:
                most = modulus / 10
            p.update(
                modulus=d.number(modulus),
                most=d.number(most),
                rolled=f"rolled over at {rule.digits} digits from ",
            )
            detail = (
                f"CASE WHEN {v} + :modulus - {prev} <= :most THEN :rolled || "
                f"{d.text('w.prev')} ELSE {detail} END"
            )
        sql = (
            "SELECT :run, w.device_id, :rt, :rule, :kind, :q, w.ts, w.ts, 1, w.value, "
            f"{detail} FROM w WHERE w.ts > :start AND {v} < {prev}"
        )
        return self._register_pairs(d), sql, True

    def _register_vs_profile(
        self, rule: ValidationRule, d: _Dialect, p: dict[str, Any]
    ) -> tuple[str, str, bool]:
        assert rule.profile_reading_type is not None
        assert rule.profile_interval_seconds
        prt = self._type_id(rule.profile_reading_type)
        # the earliest register before the period bounds the profile read, one range for
        # every meter (a meter's quarter-hours before its own first register fall in the
        # group of that register, which has no previous one and is not compared)
        first = self._conn.execute(
            _stmt(
                f"SELECT min((SELECT max(y.ts) FROM reading y WHERE y.device_id = s.device_id "
                f"AND y.reading_type_id = :rt AND y.ts <= :start)) FROM {METER} s"
            ),
            {"rt": p["rt"], "start": p["start"]},
        ).scalar()
        if isinstance(first, str):  # SQLite: the stored text
            first = datetime.fromisoformat(first).replace(tzinfo=UTC)
        p["lookback"] = min(first, p["start"]) if first is not None else p["start"]
        p.update(
            prt=prt if prt is not None else -1,
            pstep=rule.profile_interval_seconds,
            tol=d.number(rule.tolerance),
            pct=d.number(rule.tolerance_percent / 100),
        )
        # one sorted pass: registers and profile of each meter in time order (the profile
        # before a register of the same instant); k, the registers before a row, puts each
        # quarter-hour with the register that closes its interval (prev, ts]
        v, prev = d.num("w.value"), d.num("w.prev")
        ctes = (
            f"{self._readings()}, p0 AS (SELECT rd.device_id, (SELECT max(y.ts) FROM reading y "
            "WHERE y.device_id = rd.device_id AND y.reading_type_id = :rt AND y.ts <= :start) "
            "AS ts FROM rd), pr AS (SELECT x.device_id, x.ts, x.value FROM reading x "
            "JOIN p0 ON x.device_id = p0.device_id AND x.ts = p0.ts "
            "WHERE x.reading_type_id = :rt), "
            "pf AS (SELECT x.device_id, x.ts, x.value FROM reading x "
            "JOIN rd ON rd.device_id = x.device_id WHERE x.reading_type_id = :prt "
            "AND x.ts > :lookback AND x.ts <= :end), "
            "u AS (SELECT device_id, ts, value, 1 AS reg FROM r UNION ALL "
            "SELECT device_id, ts, value, 1 FROM pr UNION ALL "
            "SELECT device_id, ts, value, 0 FROM pf), "
            "g AS (SELECT device_id, ts, value, reg, SUM(reg) OVER (PARTITION BY device_id "
            "ORDER BY ts, reg ROWS UNBOUNDED PRECEDING) - reg AS k FROM u), "
            "per AS (SELECT device_id, k, MAX(CASE WHEN reg = 1 THEN ts END) AS ts, "
            "MAX(CASE WHEN reg = 1 THEN value END) AS value, "
            f"SUM(CASE WHEN reg = 0 THEN {d.num('value')} END) AS total, "
            "SUM(1 - reg) AS n FROM g GROUP BY device_id, k), "
            "w AS (SELECT device_id, ts, value, total, n, "
            "LAG(value) OVER (PARTITION BY device_id ORDER BY k) AS prev, "
            "LAG(ts) OVER (PARTITION BY device_id ORDER BY k) AS prev_ts "
            "FROM per WHERE ts IS NOT NULL), "
            f"cmp AS (SELECT device_id, ts, value, total, {v} - {prev} AS adv, n, "
            f"({d.epoch('w.ts')} - {d.epoch('w.prev_ts')}) / :pstep AS expected FROM w "
            f"WHERE w.ts > :start AND w.prev IS NOT NULL AND {v} >= {prev})"
        )
        sql = (
            "SELECT :run, device_id, :rt, :rule, :kind, :q, ts, ts, 1, value, "
            f"'register advanced ' || {d.text('adv')} || ', the profile sums ' || "
            f"{d.text('total')} FROM cmp WHERE n = expected "
            "AND abs(adv - total) > :tol + :pct * abs(adv)"
        )
        return ctes, sql, True

    # -- estimation -------------------------------------------------------------------------

    @guarded
    def estimate(
        self,
        run_id: int,
        reading_type: str,
        interval_seconds: int,
        method: EstimationMethod,
        max_intervals: int,
        start: datetime,
        end: datetime,
        now: datetime,
        history_weeks: int = 4,
        time_zone: str = "UTC",
        register: str | None = None,
    ) -> RuleCount:
        """Three statements over the period: the gaps (``LAG`` over each meter's instants
        in a window reaching ``max_intervals + 1`` intervals beyond the period, with an
        empty sentinel at either end), the estimated readings (each gap joined to a table
        of 1..n), and a finding per gap."""
        name = str(method)
        rt = self._type_id(reading_type)
        if rt is None:  # the reading type was never stored: nothing to estimate from
            rt = self._conn.execute(
                insert(t.reading_type).values(code=reading_type).returning(t.reading_type.c.id)
            ).scalar_one()
        d = self._d()
        step = interval_seconds
        clip = min(end, now)
        first_e = int(start.timestamp()) // step * step + step
        last_e = int(clip.timestamp()) // step * step
        if last_e < first_e:
            count = RuleCount(name, ESTIMATION, reading_type, 0, 0, 0)
            self._counts.append(count)
            return count
        reach = (max_intervals + 1) * step
        # the grid's integers are written into the statements (PostgreSQL would deduce
        # a different type for one parameter in each place it stands); they come from
        # the period and the settings, never from text
        grid = {
            "step": step,
            "most": max_intervals,
            "first_e": first_e,
            "last_e": last_e,
            "slo": first_e - reach - step,
            "shi": last_e + reach + step,
        }

        def literal(sql: str) -> str:
            return re.sub(r":(step|most|first_e|last_e|slo|shi)\b", lambda m: str(grid[m[1]]), sql)

        p: dict[str, Any] = {
            "run": run_id,
            "rt": rt,
            "win_lo": datetime.fromtimestamp(first_e - reach, UTC),
            "win_hi": datetime.fromtimestamp(last_e + reach, UTC),
            "method": name,
            "between": "linear interpolation between ",
            "kind": ESTIMATION,
            "est": ESTIMATED_CODE,
            "missing": NOT_ESTIMATED_CODE,
            "quality": estimated_quality(EstimationMethod.LINEAR),
            "reach": str(max_intervals + 1),
            "most_text": str(max_intervals),
            "now": now,
        }
        number = "NUMERIC" if d.pg else "TEXT"  # SQLite: the stored decimal text
        for sql in (
            *d.temp(
                GAP,
                f"device_id BIGINT, pe BIGINT, e BIGINT, pv {number}, v {number}, "
                "pknown INTEGER, known INTEGER, a BIGINT, b BIGINT",
            ),
            *d.temp(NUM, "i INTEGER PRIMARY KEY"),
        ):
            self._conn.execute(text(sql))
        history = method == EstimationMethod.HISTORY
        longest = max(max_intervals, (last_e - first_e) // step + 1 if history else 0)
        self._conn.execute(
            text(f"INSERT INTO {NUM} (i) VALUES (:i)"),
            [{"i": i} for i in range(1, longest + 1)],
        )
        # the gaps of each meter that have a missing instant in the period; a and b:
        # their first and last missing instant within it
        self._exec(
            literal(
                f"INSERT INTO {GAP} (device_id, pe, e, pv, v, pknown, known, a, b) "
                f"WITH pts AS (SELECT x.device_id, {d.epoch('x.ts')} AS e, x.value AS v, "
                f"1 AS known FROM reading x JOIN {METER} m ON m.device_id = x.device_id "
                "WHERE x.reading_type_id = :rt AND x.ts >= :win_lo AND x.ts <= :win_hi "
                f"UNION ALL SELECT device_id, :slo, NULL, 0 FROM {METER} "
                f"UNION ALL SELECT device_id, :shi, NULL, 0 FROM {METER}), "
                "g AS (SELECT device_id, e, v, known, "
                "LAG(e) OVER (PARTITION BY device_id ORDER BY e) AS pe, "
                "LAG(v) OVER (PARTITION BY device_id ORDER BY e) AS pv, "
                "LAG(known) OVER (PARTITION BY device_id ORDER BY e) AS pknown FROM pts) "
                "SELECT device_id, pe, e, pv, v, pknown, known, "
                "CASE WHEN pe + :step < :first_e THEN :first_e ELSE pe + :step END, "
                "CASE WHEN e - :step > :last_e THEN :last_e ELSE e - :step END FROM g "
                "WHERE pe IS NOT NULL AND e - pe >= 2 * :step "
                "AND pe + :step <= :last_e AND e - :step >= :first_e"
            ),
            **p,
        )
        fills = "g.pknown = 1 AND g.known = 1 AND (g.e - g.pe) / :step - 1 <= :most"
        n = "((g.e - g.pe) / :step - 1)"
        pv, v = d.num("g.pv"), d.num("g.v")
        value = d.decimal6(f"{pv} + ({v} - {pv}) * k.i / ({n} + 1)")
        at = d.ts("g.pe + k.i * :step")
        # the instant had no current reading; an earlier version (a reading removed
        # since) keeps its number: the estimate is the next one
        done = self._exec(
            literal(
                "INSERT INTO reading (device_id, reading_type_id, ts, value, quality, version, "
                f"recorded_at) SELECT g.device_id, :rt, {at}, {value}, :quality, "
                "COALESCE((SELECT max(h.version) FROM reading_history h WHERE h.device_id = "
                f"g.device_id AND h.reading_type_id = :rt AND h.ts = {at}), 0) + 1, :now "
                f"FROM {GAP} g JOIN {NUM} k ON k.i <= {n} WHERE {fills} "
                "AND g.pe + k.i * :step >= :first_e AND g.pe + k.i * :step <= :last_e"
            ),
            **p,
        )
        estimated = int(done.rowcount)
        detail = (
            "CASE WHEN g.pknown = 1 AND g.known = 1 AND (g.e - g.pe) / :step - 1 <= :most "
            f"THEN :between || {d.text('g.pv')} || ' and ' || "
            f"{d.text('g.v')} "
            "WHEN g.pknown = 0 AND g.known = 0 THEN 'not estimated: no reading within ' || "
            ":reach || ' interval(s) of the period' "
            "WHEN g.pknown = 0 THEN 'not estimated: no reading before the gap within ' || "
            ":reach || ' interval(s)' "
            "WHEN g.known = 0 THEN 'not estimated: no reading after the gap (yet) within ' || "
            ":reach || ' interval(s)' "
            f"ELSE 'not estimated: ' || {d.text(n)} || ' missing interval(s), more than ' || "
            ":most_text END"
        )
        self._exec(
            literal(
                "INSERT INTO vee_finding (run_id, device_id, reading_type_id, rule, kind, quality, "
                "ts, ts_end, intervals, value, detail) SELECT :run, g.device_id, :rt, :lin, "
                f":kind, CASE WHEN {fills} THEN "
                f":est ELSE :missing END, {d.ts('g.a')}, {d.ts('g.b')}, "
                f"(g.b - g.a) / :step + 1, NULL, {detail} FROM {GAP} g"
                + (f" WHERE {fills}" if history else "")
            ),
            lin=str(EstimationMethod.LINEAR),
            **p,
        )
        if history:
            estimated += self._from_history(
                p, literal, fills, start, grid["shi"], history_weeks, time_zone
            )
            reg = self._type_id(register) if register is not None else None
            if reg is not None:
                self._scale(p, literal, reg)
        found = self._exec(
            "SELECT count(*), count(DISTINCT device_id) FROM vee_finding "
            "WHERE run_id = :run AND reading_type_id = :rt",
            run=run_id,
            rt=rt,
        ).one()
        count = RuleCount(name, ESTIMATION, reading_type, estimated, int(found[0]), int(found[1]))
        self._counts.append(count)
        return count

    def _from_history(
        self,
        p: dict[str, Any],
        literal: Callable[[str], str],
        fills: str,
        start: datetime,
        last: int,
        weeks: int,
        time_zone: str,
    ) -> int:
        """The gaps linear interpolation left: each missing instant takes the meter's mean
        of the same local time of day and day type (Monday to Friday / Saturday and
        Sunday) over the ``weeks`` before ``start``; one finding per gap."""
        d = self._d()
        history_start = start - timedelta(weeks=weeks)
        hq = estimated_quality(EstimationMethod.HISTORY)
        q: dict[str, Any] = {
            **p,
            "history_start": history_start,
            "start": start,
            "hquality": hq,
            "hist": str(EstimationMethod.HISTORY),
            "hdetail": f"same day-type history of {weeks} week(s)",
            "none": "not estimated: no history of the same day type and time of day",
            "part": " estimated from same day-type history; the rest has none",
        }
        if d.pg:
            q["tz"] = time_zone
            lx = "CAST(date_part('epoch', x.ts AT TIME ZONE :tz) AS BIGINT)"
            le = "CAST(date_part('epoch', to_timestamp(mi.e) AT TIME ZONE :tz) AS BIGINT)"
            jx = je = ""
        else:  # SQLite knows no zones: the offsets of the span, joined by instant
            spans = offset_spans(
                ZoneInfo(time_zone), history_start, datetime.fromtimestamp(last, UTC)
            )
            for sql in d.temp(ZONE, "lo BIGINT, hi BIGINT, shift BIGINT"):
                self._conn.execute(text(sql))
            self._conn.execute(
                text(f"INSERT INTO {ZONE} (lo, hi, shift) VALUES (:lo, :hi, :offset)"),
                [s._asdict() for s in spans],
            )
            lx = f"({d.epoch('x.ts')} + z.shift)"
            le = "(mi.e + z.shift)"
            jx = f" JOIN {ZONE} z ON {d.epoch('x.ts')} >= z.lo AND {d.epoch('x.ts')} < z.hi"
            je = f" JOIN {ZONE} z ON mi.e >= z.lo AND mi.e < z.hi"

        def slot(local: str) -> str:
            """Seconds of the local day, plus a day for Saturday and Sunday (1970-01-01,
            local epoch day 0, was a Thursday)."""
            return (
                f"({local} % 86400 + CASE WHEN ({local} / 86400 + 3) % 7 >= 5 "
                "THEN 86400 ELSE 0 END)"
            )

        at = d.ts("ml.e")
        ctes = (
            f"h AS (SELECT x.device_id, {lx} AS l, x.value FROM reading x "
            f"JOIN {METER} m ON m.device_id = x.device_id{jx} "
            "WHERE x.reading_type_id = :rt AND x.ts > :history_start AND x.ts <= :start), "
            f"prof AS (SELECT device_id, {slot('l')} AS slot, AVG({d.num('value')}) AS m "
            f"FROM h GROUP BY device_id, {slot('l')}), "
            "mi AS (SELECT g.device_id, g.a + (k.i - 1) * :step AS e FROM "
            f"{GAP} g JOIN {NUM} k ON k.i <= (g.b - g.a) / :step + 1 WHERE NOT ({fills})), "
            f"ml AS (SELECT mi.device_id, mi.e, {le} AS l FROM mi{je})"
        )
        done = self._exec(
            literal(
                "INSERT INTO reading (device_id, reading_type_id, ts, value, quality, version, "
                f"recorded_at) WITH {ctes} SELECT ml.device_id, :rt, {at}, "
                f"{d.decimal6('prof.m')}, :hquality, COALESCE((SELECT max(hv.version) FROM "
                "reading_history hv WHERE hv.device_id = ml.device_id AND "
                f"hv.reading_type_id = :rt AND hv.ts = {at}), 0) + 1, :now FROM ml "
                f"JOIN prof ON prof.device_id = ml.device_id AND prof.slot = {slot('ml.l')}"
            ),
            **q,
        )
        filled = (
            "(SELECT count(*) FROM reading r WHERE r.device_id = g.device_id AND "
            f"r.reading_type_id = :rt AND r.ts >= {d.ts('g.a')} AND r.ts <= {d.ts('g.b')} "
            "AND r.quality = :hquality AND r.recorded_at = :now)"
        )
        n = "((g.b - g.a) / :step + 1)"
        self._exec(
            literal(
                "INSERT INTO vee_finding (run_id, device_id, reading_type_id, rule, kind, "
                "quality, ts, ts_end, intervals, value, detail) SELECT :run, g.device_id, :rt, "
                f":hist, :kind, CASE WHEN {filled} = {n} THEN :est ELSE :missing END, "
                f"{d.ts('g.a')}, {d.ts('g.b')}, {n}, NULL, CASE WHEN {filled} = {n} "
                f"THEN :hdetail WHEN {filled} = 0 THEN :none ELSE {d.text(filled)} || ' of ' "
                f"|| {d.text(n)} || :part END FROM {GAP} g WHERE NOT ({fills})"
            ),
            **q,
        )
        return int(done.rowcount)

    def _scale(self, p: dict[str, Any], literal: Any, reg: int) -> None:
        """The run's history estimates between two register readings ``(t0, t1]`` are
        multiplied by ``(advance - known) / estimated``, where the profile of ``(t0, t1]``
        is complete after estimation and the register's advance is not below the known
        intervals' sum; one finding per span scaled or not."""
        d = self._d()
        hq = estimated_quality(EstimationMethod.HISTORY)
        ts_col = "TIMESTAMPTZ" if d.pg else "TEXT"
        number = "NUMERIC" if d.pg else "REAL"
        for sql in (
            *d.temp(SPAN, f"device_id BIGINT, ts {ts_col}, t0 {ts_col}, t1 {ts_col}"),
            *d.temp(
                FACTOR,
                f"device_id BIGINT, t0 {ts_col}, t1 {ts_col}, n INTEGER, est {number}, "
                f"known {number}, adv {number}, complete INTEGER",
            ),
        ):
            self._conn.execute(text(sql))
        q = {**p, "reg": reg, "hquality": hq}
        mine = "r.reading_type_id = :rt AND r.quality = :hquality AND r.recorded_at = :now"
        self._exec(
            f"INSERT INTO {SPAN} (device_id, ts, t0, t1) SELECT r.device_id, r.ts, "
            "(SELECT max(y.ts) FROM reading y WHERE y.device_id = r.device_id "
            "AND y.reading_type_id = :reg AND y.ts < r.ts), "
            "(SELECT min(y.ts) FROM reading y WHERE y.device_id = r.device_id "
            f"AND y.reading_type_id = :reg AND y.ts >= r.ts) FROM reading r JOIN {METER} m "
            f"ON m.device_id = r.device_id WHERE {mine}",
            **q,
        )
        pv = d.num("x.value")
        self._exec(
            literal(
                f"INSERT INTO {FACTOR} (device_id, t0, t1, n, est, known, adv, complete) "
                "SELECT s.device_id, s.t0, s.t1, count(*), "
                f"(SELECT sum({pv}) FROM reading x WHERE x.device_id = s.device_id "
                "AND x.reading_type_id = :rt AND x.ts > s.t0 AND x.ts <= s.t1 "
                "AND x.quality = :hquality AND x.recorded_at = :now), "
                f"(SELECT sum({pv}) FROM reading x WHERE x.device_id = s.device_id "
                "AND x.reading_type_id = :rt AND x.ts > s.t0 AND x.ts <= s.t1 "
                "AND NOT (x.quality = :hquality AND x.recorded_at = :now)), "
                f"(SELECT {pv} FROM reading x WHERE x.device_id = s.device_id "
                "AND x.reading_type_id = :reg AND x.ts = s.t1) - "
                f"(SELECT {pv} FROM reading x WHERE x.device_id = s.device_id "
                "AND x.reading_type_id = :reg AND x.ts = s.t0), "
                "CASE WHEN (SELECT count(*) FROM reading x WHERE x.device_id = s.device_id "
                "AND x.reading_type_id = :rt AND x.ts > s.t0 AND x.ts <= s.t1) = "
                f"({d.epoch('s.t1')} - {d.epoch('s.t0')}) / :step THEN 1 ELSE 0 END "
                f"FROM {SPAN} s WHERE s.t0 IS NOT NULL AND s.t1 IS NOT NULL "
                "GROUP BY s.device_id, s.t0, s.t1"
            ),
            **q,
        )
        ok = "f.complete = 1 AND f.est > 0 AND f.adv >= COALESCE(f.known, 0)"
        factor = "((f.adv - COALESCE(f.known, 0)) / f.est)"
        value = d.decimal6(f"{d.num('reading.value')} * {factor}")
        self._exec(
            f"UPDATE reading SET value = {value} FROM {SPAN} s JOIN {FACTOR} f "
            "ON f.device_id = s.device_id AND f.t0 = s.t0 AND f.t1 = s.t1 "
            "WHERE reading.device_id = s.device_id AND reading.reading_type_id = :rt "
            f"AND reading.ts = s.ts AND {ok}",
            **q,
        )
        detail = (
            f"CASE WHEN {ok} THEN 'scaled by ' || {d.text(d.decimal6(factor))} || "
            f"' to the register advance ' || {d.text(d.decimal6('f.adv'))} "
            "WHEN f.complete = 0 THEN 'not scaled: the profile between the registers is "
            "not complete' ELSE 'not scaled: the register advance ' || "
            f"{d.text(d.decimal6('f.adv'))} || ' is below the known intervals' END"
        )
        self._exec(
            "INSERT INTO vee_finding (run_id, device_id, reading_type_id, rule, kind, quality, "
            "ts, ts_end, intervals, value, detail) SELECT :run, f.device_id, :rt, :scaled, "
            f":kind, :est, f.t0, f.t1, f.n, NULL, {detail} FROM {FACTOR} f",
            scaled="history scaled",
            **q,
        )

    # -- qualities --------------------------------------------------------------------------

    @guarded
    def mark(self, run_id: int, now: datetime) -> int:
        d = self._d()
        key = "device_id, reading_type_id, ts"
        fresh = (
            f"SELECT DISTINCT f.device_id, f.reading_type_id, f.ts, f.code FROM {FLAG} f "
            "JOIN reading r ON r.device_id = f.device_id AND r.reading_type_id = f.reading_type_id "
            f"AND r.ts = f.ts WHERE (',' || {d.codes('r.quality')} || ',') NOT LIKE "
            "('%,' || f.code || ',%')"
        )
        if d.pg:
            agg = (
                f"SELECT {key}, string_agg(code, ',' ORDER BY code) AS codes "
                f"FROM ({fresh}) a GROUP BY {key}"
            )
        else:
            agg = (
                f"SELECT {key}, group_concat(code, ',') AS codes FROM ({fresh} ORDER BY "
                f"f.device_id, f.reading_type_id, f.ts, f.code) a GROUP BY {key}"
            )
        if d.pg:
            self._conn.execute(text(f"DROP TABLE IF EXISTS {MARK}"))
            self._conn.execute(text(f"CREATE TEMP TABLE {MARK} ON COMMIT DROP AS {agg}"))
        else:
            self._conn.execute(text(f"DROP TABLE IF EXISTS temp.{MARK}"))
            self._conn.execute(text(f"CREATE TEMP TABLE {MARK} AS {agg}"))
        on = "r.device_id = m.device_id AND r.reading_type_id = m.reading_type_id AND r.ts = m.ts"
        self._exec(
            "INSERT INTO reading_history (device_id, reading_type_id, ts, version, value, quality, "
            "recorded_at, superseded_at) SELECT r.device_id, r.reading_type_id, r.ts, r.version, "
            f"r.value, r.quality, r.recorded_at, :now FROM reading r JOIN {MARK} m ON {on}",
            now=now,
        )
        codes = d.codes("reading.quality")
        new = (
            f"CASE WHEN {codes} = '' THEN m.codes ELSE {codes} || ',' || m.codes END "
            f"|| {d.notes('reading.quality')}"
        )
        done = self._exec(
            f"UPDATE reading SET quality = {new}, version = reading.version + 1, "
            f"recorded_at = :now FROM {MARK} m WHERE reading.device_id = m.device_id "
            "AND reading.reading_type_id = m.reading_type_id AND reading.ts = m.ts",
            now=now,
        )
        return int(done.rowcount)

    @guarded
    def finish(
        self, run_id: int, now: datetime, meters: int, readings: int, marked: int
    ) -> ValidationRun:
        found = self._exec(
            "SELECT count(*), count(DISTINCT device_id) FROM vee_finding WHERE run_id = :run",
            run=run_id,
        ).one()
        config = self._conn.execute(select(_R.c.rules).where(_R.c.id == run_id)).scalar_one()
        counts = _merged(self._counts)
        self._conn.execute(
            update(_R)
            .where(_R.c.id == run_id)
            .values(
                finished_at=now,
                state="done",
                meters=meters,
                readings=readings,
                findings=int(found[0]),
                failing_meters=int(found[1]),
                marked=marked,
                rules={**config, "counts": [asdict(c) for c in counts]},
            )
        )
        for name in (METER, FLAG, ZONE, MARK, GAP, NUM, SPAN, FACTOR):
            self._conn.execute(
                text(f"DROP TABLE IF EXISTS {name if self._d().pg else 'temp.' + name}")
            )
        run = self.get_by_id(run_id)
        assert run is not None
        return run

    # -- reads ------------------------------------------------------------------------------

    def get_by_id(self, run_id: int) -> ValidationRun | None:
        row = self._conn.execute(select(_R).where(_R.c.id == run_id)).first()
        return _run(row) if row is not None else None

    @guarded
    def get(self, utility_id: int, run_id: int | None) -> ValidationRun | None:
        stmt = select(_R).where(_R.c.utility_id == utility_id)
        stmt = (
            stmt.where(_R.c.id == run_id) if run_id is not None else stmt.order_by(_R.c.id.desc())
        )
        row = self._conn.execute(stmt.limit(1)).first()
        return _run(row) if row is not None else None

    @guarded
    def runs(self, utility_id: int, limit: int = 50) -> list[ValidationRun]:
        rows = self._conn.execute(
            select(_R).where(_R.c.utility_id == utility_id).order_by(_R.c.id.desc()).limit(limit)
        )
        return [_run(r) for r in rows]

    def findings(self, run_id: int, rule: str | None = None) -> Iterator[Finding]:
        dev, rt = t.end_device, t.reading_type
        stmt = (
            select(_F, dev.c.mrid, rt.c.code)
            .join(dev, dev.c.id == _F.c.device_id)
            .join(rt, rt.c.id == _F.c.reading_type_id)
            .where(_F.c.run_id == run_id)
            .order_by(dev.c.mrid, rt.c.code, _F.c.ts, _F.c.rule)
        )
        if rule is not None:
            stmt = stmt.where(_F.c.rule == rule)
        with guard():
            result = self._conn.execute(stmt.execution_options(yield_per=5000))
            for row in result:
                yield Finding(
                    run_id=run_id,
                    device_mrid=row.mrid,
                    reading_type=row.code,
                    rule=row.rule,
                    kind=row.kind,
                    quality=row.quality,
                    ts=row.ts,
                    ts_end=row.ts_end,
                    intervals=int(row.intervals),
                    value=row.value,
                    detail=row.detail,
                )

    @guarded
    def failing_meters(self, run_id: int, rule: str | None = None) -> list[str]:
        dev = t.end_device
        stmt = (
            select(dev.c.mrid)
            .where(
                dev.c.id.in_(
                    select(_F.c.device_id).where(
                        _F.c.run_id == run_id, *([_F.c.rule == rule] if rule else [])
                    )
                )
            )
            .order_by(dev.c.mrid)
        )
        return [str(m) for m in self._conn.execute(stmt).scalars()]


def _merged(counts: Sequence[RuleCount]) -> tuple[RuleCount, ...]:
    """One count per rule: a rule run over several periods (validation on ingest: the
    feed's periods, each with its own meters) adds their readings; its findings and
    meters are counted over the whole run each time, the last count is the rule's."""
    out: dict[str, RuleCount] = {}
    for c in counts:
        seen = out.get(c.rule)
        out[c.rule] = (
            RuleCount(
                c.rule,
                c.kind,
                c.reading_type,
                seen.readings + c.readings,
                c.findings,
                c.meters,
            )
            if seen
            else c
        )
    return tuple(out.values())
