"""``amihub vee`` against a real store (SQLite): a run on demand, its findings as CSV and
table, the failing meters saved as a group; and bad input: settings that do not parse,
name an unknown reading type or contradict themselves, bad options. Exit code 2 and
one line, never a traceback; nothing recorded."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hub.cli import cli
from tests.unit.hub.conftest import make_app
from tests.unit.vee.contract import (
    RULES,
    SPRING,
    SPRING_END,
    VeeContract,
    spring_expected,
)


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env={"COLUMNS": "250", **(env or {})}).invoke(
        cli, list(args), catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def toml(rules: list[dict[str, Any]], head: str = "") -> str:
    out = [head]
    for rule in rules:
        out.append("[[vee.rules]]")
        out += [f"{k} = {json.dumps(v)}" for k, v in rule.items()]
    return "\n".join(out) + "\n"


@pytest.fixture(autouse=True)
def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--config`` sets AMIHUB_CONFIG for the process: an empty settings file by default,
    and whatever a command set is undone after the test."""
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    monkeypatch.setenv("AMIHUB_CONFIG", str(empty))


@pytest.fixture
def store(sqlite_url: str) -> str:
    app = make_app(sqlite_url)
    VeeContract().spring(app)
    app.close()
    return sqlite_url


def test_validate_findings_and_group(store: str, tmp_path: Path) -> None:
    config = tmp_path / "amihub.toml"
    rules = [r for r in RULES if r["name"] != "future-15"]  # "now" is the clock here
    config.write_text(toml(rules, '[vee]\ntime_zone = "Europe/Berlin"'), encoding="utf-8")
    base = ["--config", str(config), "--database-url", store, "vee"]
    code, out, err = run(*base, "validate", "--from", SPRING.isoformat(), "--to",
                         SPRING_END.isoformat())  # fmt: skip
    assert code == 0, err
    expected = {f for f in spring_expected() if f[1] != "future-15"}
    assert "validation run 1 (all meters, " in err
    assert f"5 meter(s), 946 reading(s), {len(expected)} finding(s), 5 meter(s) failing" in err
    assert "missing-15" in out

    code, out, err = run(*base, "findings", "--format", "csv")
    assert code == 0, err
    found = list(csv.DictReader(io.StringIO(out)))
    assert {
        (
            r["meter"],
            r["rule"],
            datetime.fromisoformat(r["from"]),
            datetime.fromisoformat(r["to"]),
            int(r["intervals"]),
        )
        for r in found
    } == expected
    gap = next(r for r in found if r["rule"] == "missing-15")
    assert (gap["value"], gap["quality"], gap["detail"]) == ("", "3.5.259", "4 missing interval(s)")

    code, out, err = run(*base, "findings", "--run", "1", "--rule", "zero-15")
    assert code == 0, err
    assert "M4" in out
    assert "10 intervals of zero consumption" in out
    assert "1 finding(s) of validation run 1" in err

    code, _, err = run(*base, "group", "failing-2026-03", "--run", "1", "--rule", "missing-15")
    assert code == 0, err
    assert "failing-2026-03 created: 1 meter(s)" in err
    code, out, _ = run("--database-url", store, "groups", "show", "failing-2026-03")
    assert out.split() == ["M2"]

    code, out, err = run(*base, "runs")
    assert code == 0, err
    assert "all meters" in out

    code, out, err = run(*base, "rules")
    assert code == 0, err
    assert "register-profile" in out
    assert "group ONLY-M1" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (toml([{**RULES[1], "reading_type": "0.0.2.4.1.1.12"}]),
         "vee.rules.0: Value error, rule 'high-15': reading_type: ReadingType "
         "'0.0.2.4.1.1.12' has 7 fields, not 18"),
        (toml([{**RULES[1], "reading_type": "0.0.99.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"}]),
         "rule 'high-15': reading_type '0.0.99.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0': "
         "measuringPeriod 99 is not a known measuring period"),
        (toml([{**RULES[1], "minimum": 7}]),
         "rule 'high-15': minimum 7 is not below maximum 5: the limits contradict each other"),
        (toml([{**RULES[4], "factor": "0.5"}]),
         "rule 'spike-15': factor 0.5 must be more than 1"),
        (toml([{**RULES[0], "maximum": 3}]),
         "rule 'missing-15': maximum is not a setting of a missing rule"),
        (toml([RULES[0], RULES[0]]), "rule 'missing-15' is defined twice"),
        (toml([{**RULES[9], "reading_type": RULES[0]["reading_type"]}]),
         "a register_backwards rule needs a register"),
        (toml([RULES[0]], '[vee]\ntime_zone = "Europe/Berln"'),
         "vee.time_zone: Value error, 'Europe/Berln' is not a known IANA time zone"),
        ("[[vee.rules]\nname = 'x'\n", "is not valid TOML"),
        (toml([{**RULES[1], "maximun": 3}]), "rule 'high-15': maximun: Extra inputs"),
    ],
)  # fmt: skip
def test_bad_rule_settings(store: str, tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text(content, encoding="utf-8")
    code, _, err = run("--config", str(config), "--database-url", store, "vee", "validate",
                       "--from", SPRING.isoformat(), "--to", SPRING_END.isoformat())  # fmt: skip
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert "internal error" not in err
    code, out, _ = run("--config", str(tmp_path / "empty.toml"), "--database-url", store,
                       "vee", "runs")  # fmt: skip
    assert code == 0
    assert "all meters" not in out  # nothing recorded


def test_bad_rule_in_the_environment(store: str) -> None:
    period = ["--from", SPRING.isoformat(), "--to", SPRING_END.isoformat()]
    code, _, err = run("--database-url", store, "vee", "validate", *period,
                       env={"AMIHUB_VEE__RULES": '[{"name": "x"'})  # fmt: skip
    assert code == 2
    assert "invalid settings" in err
    assert "EnvSettingsSource" in err
    assert "Traceback" not in err
    assert "internal error" not in err
    bad = json.dumps([{**RULES[0], "reading_type": "energy"}])
    code, _, err = run("--database-url", store, "vee", "validate", *period,
                       env={"AMIHUB_VEE__RULES": bad})  # fmt: skip
    assert code == 2
    assert "rule 'missing-15': reading_type: ReadingType 'energy' has 1 fields" in err


def test_bad_options_and_references(store: str, tmp_path: Path) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text(toml(RULES[:2]), encoding="utf-8")
    base = ["--config", str(config), "--database-url", store, "vee"]
    period = ["--from", SPRING.isoformat(), "--to", SPRING_END.isoformat()]
    cases = [
        (["validate", "--from", "yesterday", "--to", "2026-03-30"], "'yesterday' is not an ISO"),
        (["validate", *period, "--meter", "M1", "--group", "G"], "not both"),
        (["validate", *period, "--meter", "NOPE"], "unknown meter NOPE"),
        (["validate", *period, "--group", "NOPE"], "--group: no end device group 'NOPE'"),
        (["validate", *period, "--rule", "nosuch"], "no [[vee.rules]] named 'nosuch'"),
        (["validate", "--from", SPRING_END.isoformat(), "--to", SPRING.isoformat()],
         "is not after its start"),
        (["findings", "--run", "99"], "no validation run 99"),
        (["group", "G", "--run", "99"], "no validation run 99"),
    ]  # fmt: skip
    for args, message in cases:
        code, _, err = run(*base, *args)
        assert code == 2, args
        assert message in err, (args, err)
        assert "Traceback" not in err
        assert "internal error" not in err
    # a rule naming a group the store does not have: refused before anything is written
    config.write_text(toml([{**RULES[1], "end_device_group": "NOPE"}]), encoding="utf-8")
    code, _, err = run(*base, "validate", *period)
    assert code == 2
    assert "vee rule 'high-15' end_device_group: no end device group 'NOPE'" in err
    code, out, _ = run(*base, "runs")
    assert "all meters" not in out
