"""``amihub groups`` against a real store: SQLite here, PostgreSQL in
tests/integration/hub/test_groups_cli_postgres.py (the same checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import cli
from tests.unit.hub.conftest import add_meters, make_app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def groups_cli_checks(store: str, tmp_path: Path) -> None:
    app = make_app(store)
    add_meters(app, "MTR-1", "MTR-2", "MTR-3", install=False)  # serials SN-MTR-n
    app.close()
    wave = tmp_path / "wave1.txt"
    wave.write_text("# firmware wave 1\nMTR-1\n\nSN-MTR-2\n", encoding="utf-8")
    code, _, err = run(
        "--database-url", store, "groups", "create", "wave 1", "--mrid", "FW-1",
        "--description", "firmware 2.1", "--meters-file", str(wave),
    )  # fmt: skip
    assert code == 0, err
    assert "group wave 1 (FW-1) created: 2 added; 2 meter(s)" in err

    bad = tmp_path / "bad.txt"
    bad.write_text("MTR-3\nMTR-NOPE\nMTR-1\nGHOST\n", encoding="utf-8")
    code, _, err = run(
        "--database-url", store, "groups", "add", "wave 1", "--meters-file", str(bad)
    )
    assert code == 2
    assert f"{bad}:2: unknown meter MTR-NOPE" in err
    assert f"{bad}:4: unknown meter GHOST" in err
    assert "2 unknown meter(s)" in err
    assert "nothing changed" in err
    assert "Traceback" not in err
    code, out, _ = run("--database-url", store, "groups", "show", "FW-1")
    assert out.split() == ["MTR-1", "MTR-2"]  # nothing applied

    code, _, err = run(
        "--database-url", store, "groups", "add", "FW-1", "--meter", "MTR-3", "--meter", "MTR-1"
    )
    assert code == 0, err
    assert "1 added, 0 removed, 1 unchanged; 3 meter(s)" in err
    code, _, err = run("--database-url", store, "groups", "remove", "wave 1", "--meter", "MTR-2")
    assert code == 0, err
    code, out, err = run("--database-url", store, "groups", "show", "wave 1")
    assert out.split() == ["MTR-1", "MTR-3"]
    assert "open, 2 meter(s)" in err
    assert "firmware 2.1" in err

    code, _, err = run("--database-url", store, "groups", "create", "wave 1")
    assert code == 2
    assert "already" in err
    code, out, _ = run("--database-url", store, "groups", "list")
    assert "FW-1" in out
    assert "wave 1" in out
    code, _, err = run("--database-url", store, "groups", "close", "FW-1")
    assert code == 0, err
    code, out, _ = run("--database-url", store, "groups", "list")
    assert "FW-1" not in out
    code, out, _ = run("--database-url", store, "groups", "list", "--all")
    assert "FW-1" in out
    code, _, err = run("--database-url", store, "groups", "add", "FW-1", "--meter", "MTR-2")
    assert code == 2
    assert "was closed" in err
    code, _, err = run("--database-url", store, "groups", "show", "NO-SUCH")
    assert code == 2
    assert "no end device group" in err

    not_text = tmp_path / "binary.txt"
    not_text.write_bytes(b"\xff\xfe\x00")
    code, _, err = run(
        "--database-url", store, "groups", "create", "x", "--meters-file", str(not_text)
    )
    assert code == 2
    assert "is not UTF-8 text" in err


def test_groups_cli_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    groups_cli_checks(sqlite_url, tmp_path)


def test_groups_appear_in_the_help() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "groups" in out


@pytest.mark.parametrize("command", ["create", "add", "remove", "list", "show", "close"])
def test_every_groups_command_has_help(command: str) -> None:
    code, out, _ = run("groups", command, "--help")
    assert code == 0
    assert "Usage" in out
