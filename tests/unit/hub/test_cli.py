"""The operator's command line, on a fresh SQLite store."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import cli
from hub.messages import InboundMessage
from hub.samples import meter_readings_bytes
from tests.unit.hub.conftest import START, add_meters, make_app


@pytest.fixture
def store(sqlite_url: str) -> str:
    app = make_app(sqlite_url)
    add_meters(app, "MTR-1")
    app.close()
    return sqlite_url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_db_upgrade_creates_the_store(sqlite_url: str) -> None:
    code, output = run("--database-url", sqlite_url, "db", "upgrade")
    assert code == 0
    assert "revision" in output


def test_import_readings_and_csv(store: str, tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(meter_readings_bytes(["MTR-1"], START, 8))
    code, output = run("--database-url", store, "import", str(good))
    assert code == 0, output
    assert "good.xml" in output
    assert "OK" in output
    code, output = run(
        "--database-url",
        store,
        "readings",
        "--meter",
        "MTR-1",
        "--from",
        START.isoformat(),
        "--to",
        "2026-03-02",
        "--format",
        "csv",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(output)))
    assert len(rows) == 9
    assert rows[0]["meter"] == "MTR-1"
    assert rows[0]["version"] == "1"


def test_import_of_a_bad_file_reports_and_keeps_it(store: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<not-closed>")
    code, output = run("--database-url", store, "import", str(bad))
    assert code == 1
    assert "1001" in output
    assert bad.exists()
    code, output = run("--database-url", store, "dead-letters", "list")
    assert code == 0
    assert "1001" in output
    code, output = run("--database-url", store, "dead-letters", "show", "1")
    assert code == 0
    assert "<not-closed>" in output
    assert "dead_lettered" in output


def test_dead_letter_replay_from_the_cli(store: str, sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    outcome = app.pipeline.process(
        InboundMessage(source="t", endpoint="t", body=meter_readings_bytes(["NEW-1"], START, 2))
    )
    assert outcome.result == "FAILED"
    code, output = run(
        "--database-url", store, "dead-letters", "replay", str(outcome.dead_letter_id)
    )
    assert code == 1
    assert "2001" in output
    add_meters(app, "NEW-1")
    app.close()
    code, output = run(
        "--database-url", store, "dead-letters", "replay", str(outcome.dead_letter_id)
    )
    assert code == 0, output
    assert "OK" in output


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    code, output = run("--config", str(tmp_path / "missing.toml"), "db", "upgrade")
    assert code == 2
    assert "does not exist" in output
    assert "Traceback" not in output


def test_bad_setting_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIHUB_LIMITS__MAX_MESSAGE_BYTES", "lots")
    code, output = run("db", "upgrade")
    assert code == 2
    assert "limits.max_message_bytes" in output


def test_demo_runs_on_a_fresh_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    code, output = run("demo", "--meters", "2", "--days", "2", "--database-url", url)
    assert code == 0, output
    assert "MTR-0001" in output
    assert "PARTIAL" in output
    assert "v2=" in output
