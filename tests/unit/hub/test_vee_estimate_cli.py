"""``amihub vee estimate`` against a real store (SQLite): a run on demand, what it
estimated (and did not) with ``amihub vee findings --run N``; and bad input: exit code 2
and one clear line, never a traceback, nothing written."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import sqlalchemy

from tests.unit.hub.conftest import make_app
from tests.unit.hub.test_vee_cli import run, toml
from tests.unit.vee.contract import RULES, SPRING, SPRING_END
from tests.unit.vee.data import PROFILE, REGISTER
from tests.unit.vee.estimation import FIRST_RUN, EstimationStore

PERIOD = ["--from", SPRING.isoformat(), "--to", SPRING_END.isoformat()]


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    monkeypatch.setenv("AMIHUB_CONFIG", str(empty))


@pytest.fixture
def store(sqlite_url: str) -> str:
    app = make_app(sqlite_url)
    EstimationStore().data(app)
    app.close()
    return sqlite_url


def estimated(store: str) -> int:
    """Readings carrying the estimated quality."""
    engine = sqlalchemy.create_engine(store)
    try:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM reading WHERE quality LIKE '%3.8.0%'"
            return int(conn.execute(sqlalchemy.text(query)).scalar_one())
    finally:
        engine.dispose()


def test_estimate_then_findings(store: str, tmp_path: Path) -> None:
    config = tmp_path / "amihub.toml"
    # the reading type comes from the 'missing' rule; the maximum from [vee]
    config.write_text(toml([RULES[0]], "[vee]\nlinear_max_intervals = 4"), encoding="utf-8")
    base = ["--config", str(config), "--database-url", store, "vee"]
    code, out, err = run(*base, "estimate", *PERIOD)
    assert code == 0, err
    assert "estimation run 1 (all meters, " in err
    assert "5 meter(s), 736 reading(s) present, 8 interval(s) estimated, 6 finding(s)" in err
    assert "linear" in out

    code, out, err = run(*base, "findings", "--run", "1", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["meter"], r["from"], r["to"], int(r["intervals"]), r["quality"]) for r in rows} == {
        (m, a.isoformat(), b.isoformat(), n, q) for m, a, b, n, q in FIRST_RUN
    }
    assert {(r["rule"], r["kind"], r["reading_type"]) for r in rows} == {
        ("linear", "estimation", PROFILE)
    }
    code, out, err = run(*base, "findings", "--run", "1")
    assert code == 0, err
    assert "6 finding(s) of estimation run 1" in err
    code, out, _ = run(*base, "runs")
    assert code == 0
    assert "estimate" in out
    assert estimated(store) == 8


def test_estimate_from_history(store: str, tmp_path: Path) -> None:
    """The utility's zone gives the local day type and time of day."""
    config = tmp_path / "amihub.toml"
    head = '[vee]\nhistory_weeks = 4\nutility_time_zones = { DEFAULT = "Europe/Berlin" }'
    # the register_vs_profile rule pairs the profile with its register: scaling
    register = [r for r in RULES if r["name"] == "register-profile"]
    config.write_text(toml([RULES[0], *register], head), encoding="utf-8")
    base = ["--config", str(config), "--database-url", store, "vee"]
    code, out, err = run(*base, "estimate", *PERIOD, "--method", "history")
    assert code == 0, err
    assert "16 interval(s) estimated, 8 finding(s)" in err
    code, out, err = run(*base, "findings", "--run", "1", "--format", "csv")
    assert code == 0, err
    rules = {(r["meter"], r["rule"], r["quality"]) for r in csv.DictReader(io.StringIO(out))}
    assert ("E2", "history", "3.8.0") in rules
    assert ("E3", "history", "3.5.259") in rules
    assert ("E2", "history scaled", "3.8.0") in rules
    assert estimated(store) == 16


def test_bad_input(store: str, tmp_path: Path) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text(toml([RULES[0]]), encoding="utf-8")
    base = ["--config", str(config), "--database-url", store, "vee"]
    cases = [
        (["estimate", "--from", "yesterday", "--to", "2026-03-30"], "'yesterday' is not an ISO"),
        (["estimate", "--from", SPRING_END.isoformat(), "--to", SPRING.isoformat()],
         "is not after its start"),
        (["estimate", *PERIOD, "--meter", "E1", "--group", "G"], "not both"),
        (["estimate", *PERIOD, "--meter", "NOPE"], "unknown meter NOPE"),
        (["estimate", *PERIOD, "--group", "NOPE"], "--group: no end device group 'NOPE'"),
        (["estimate", *PERIOD, "--max-intervals", "0"], "at least 1"),
        (["estimate", *PERIOD, "--method", "guess"], "Invalid value for '--method': 'guess'"),
        (["estimate", *PERIOD, "--reading-type", REGISTER],
         "estimation needs an interval reading type"),
        (["estimate", *PERIOD, "--reading-type", "energy"], "has 1 fields, not 18"),
    ]  # fmt: skip
    for args, message in cases:
        code, _, err = run(*base, *args)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        # one line says what is wrong (click's usage errors add its usage lines)
        assert [line for line in err.splitlines() if message in line] == [
            line for line in err.splitlines() if "rror" in line
        ], err
        assert "Traceback" not in err
        assert "internal error" not in err
    # no reading type named nor configured
    empty = ["--config", str(tmp_path / "empty.toml"), "--database-url", store, "vee"]
    code, _, err = run(*empty, "estimate", *PERIOD)
    assert code == 2
    assert "no reading type to estimate" in err
    assert "Traceback" not in err
    # a setting that is not an interval reading type: refused when read
    config.write_text(f'[vee]\nestimate_reading_types = ["{REGISTER}"]\n', encoding="utf-8")
    code, _, err = run(*base, "estimate", *PERIOD)
    assert code == 2
    assert "estimate_reading_types" in err
    assert "estimation needs an interval reading type" in err
    # nothing was written
    code, out, _ = run(*empty, "runs")
    assert code == 0
    assert "all meters" not in out
    assert estimated(store) == 0
