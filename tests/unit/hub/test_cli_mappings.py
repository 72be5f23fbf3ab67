"""`amihub import --mapping`, `amihub export`, `amihub mappings check|list`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from adapters.memory import MemoryAdapter
from hub.cli import cli
from hub.samples import linkage, meter_config, usage_point_config
from mappings.load import BUILTIN_DIR
from tests.unit.hub.conftest import make_app

SAMPLES = BUILTIN_DIR / "samples"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    runner = CliRunner(env={"COLUMNS": "250", **(env or {})})
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def installed_meters(url: str) -> None:
    app = make_app(url)
    hub = MemoryAdapter(app.pipeline)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert hub.request(usage_point_config("create", [{"mrid": "UP-1"}, {"mrid": "UP-2"}])).ok
    assert hub.request(
        meter_config(
            "create", [{"mrid": "M-1", "serial": "SN1001"}, {"mrid": "M-2", "serial": "SN1002"}]
        )
    ).ok
    assert hub.request(linkage("create", "M-1", "UP-1", since)).ok
    assert hub.request(linkage("create", "M-2", "UP-2", since)).ok
    app.close()


def test_import_with_a_mapping_then_export(sqlite_url: str, tmp_path: Path) -> None:
    installed_meters(sqlite_url)
    code, output = run(
        "--database-url",
        sqlite_url,
        "import",
        "--mapping",
        "register-obis",
        str(SAMPLES / "register-obis.csv"),
    )
    assert code == 0, output
    assert "applied" in output
    out = tmp_path / "billing.csv"
    code, output = run(
        "--database-url",
        sqlite_url,
        "export",
        "--mapping",
        "export-billing-csv",
        "--usage-point",
        "UP-1",
        "--usage-point",
        "UP-2",
        "--from",
        "2026-01-01",
        "--to",
        "2027-01-01",
        "--out",
        str(out),
    )
    assert code == 0, output
    text = out.read_bytes()  # the layout says latin-1, as the billing system expects
    assert "Zählpunkt".encode("latin-1") in text
    assert b"UP-1;SN1001;1.0.1.8.0.255;25.10.2026 00:00;12345,678" in text
    assert b"SN1002" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_rejected_mapped_file_applies_nothing(sqlite_url: str, tmp_path: Path) -> None:
    installed_meters(sqlite_url)
    bad = tmp_path / "bad.csv"
    lines = (SAMPLES / "register-obis.csv").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("2026-10-25", "2026-13-45")
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, output = run(
        "--database-url", sqlite_url, "import", "--mapping", "register-obis", str(bad)
    )
    assert code == 1
    assert "line 3" in output
    assert "rejected" in output
    code, output = run(
        "--database-url", sqlite_url, "readings", "--meter", "M-1", "--format", "csv"
    )
    assert output.strip().splitlines() == [
        "meter,reading_type,timestamp,value,quality,version,notes"
    ]


def test_mappings_check_and_list(tmp_path: Path) -> None:
    code, output = run("mappings", "check", str(BUILTIN_DIR))
    assert code == 0, output
    spec = (BUILTIN_DIR / "register-obis.toml").read_text()
    (tmp_path / "typo.toml").write_text(spec.replace("[csv]", '[csv]\ndelimeter = ";"', 1))
    code, output = run("mappings", "check", str(tmp_path))
    assert code == 1
    assert "typo.toml:" in output
    assert "delimeter" in output
    code, output = run("mappings", "list")
    assert "register-obis" in output


def test_export_by_usage_point_group(sqlite_url: str, tmp_path: Path) -> None:
    app = make_app(sqlite_url)
    hub = MemoryAdapter(app.pipeline)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert hub.request(
        usage_point_config(
            "create",
            [
                {"mrid": "UP-1", "transformer_area": "TR-7"},
                {"mrid": "UP-2", "transformer_area": "TR-9"},
            ],
        )
    ).ok
    assert hub.request(
        meter_config(
            "create", [{"mrid": "M-1", "serial": "SN1001"}, {"mrid": "M-2", "serial": "SN1002"}]
        )
    ).ok
    assert hub.request(linkage("create", "M-1", "UP-1", since)).ok
    assert hub.request(linkage("create", "M-2", "UP-2", since)).ok
    app.close()
    # the mapping folder: the shipped specs, and a billing layout whose default
    # selection is transformer area TR-9
    folder = tmp_path / "specs"
    folder.mkdir()
    for spec in BUILTIN_DIR.glob("*.toml"):
        (folder / spec.name).write_bytes(spec.read_bytes())
    billing = (BUILTIN_DIR / "export-billing-csv.toml").read_text(encoding="utf-8")
    billing = billing.replace('name = "export-billing-csv"', 'name = "billing-tr9"')
    billing = billing.replace("[select]", '[select]\nusage_point_groups = ["TR-9"]')
    (folder / "billing-tr9.toml").write_text(billing, encoding="utf-8")
    base = ["--database-url", sqlite_url]
    env = {"AMIHUB_MAPPINGS_DIR": str(folder)}
    code, output = run(
        *base, "import", "--mapping", "register-obis", str(SAMPLES / "register-obis.csv"), env=env
    )
    assert code == 0, output

    def export(*args: str) -> tuple[int, str, bytes]:
        out = tmp_path / "out.csv"
        out.unlink(missing_ok=True)
        code, output = run(*base, "export", *args, "--out", str(out), env=env)
        return code, output, out.read_bytes() if out.exists() else b""

    code, output, text = export("--mapping", "export-billing-csv", "--group", "TR-7")
    assert code == 0, output
    assert b"UP-1;SN1001" in text
    assert b"SN1002" not in text
    code, output, text = export("--mapping", "billing-tr9")  # the mapping's own groups
    assert code == 0, output
    assert b"UP-2;SN1002" in text
    assert b"SN1001" not in text
    code, output, text = export("--mapping", "export-billing-csv", "--group", "TR-NONE")
    assert code == 2
    assert "TR-NONE" in output
    assert text == b""
    assert not list(tmp_path.glob(".*.tmp"))
    code, output, text = export("--mapping", "export-billing-csv")
    assert code == 2
    assert "--usage-point or --group" in output
