"""The ``amihub`` script as an operator runs it (a process, its exit code, its stdout and
stderr): one clear line and exit 2 for an error, exit 3 and a log file for a defect, never
a traceback; failed runs exit 1; output that is not a terminal is never cut."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hes.cli import fleet_manifest, simulated_targets
from hes.simulator.fleet import Fleet, SimulatorThread
from hub.samples import meter_readings_bytes
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters, make_app

SCRIPT = Path(sys.executable).with_name("amihub")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "hub.cli"]
REPO = Path(__file__).resolve().parents[3]
LONG_MRID = "MTR-" + "0123456789" * 9  # wider than 80 columns with the other fields


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMIHUB_")}
    env.pop("COLUMNS", None)  # rich would take it as the width
    env.update(
        {
            "AMIHUB_CONFIG": "",  # empty: no settings file
            "AMIHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "AMIHUB_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
            "TMPDIR": str(tmp_path),  # where a crash log goes
        }
    )
    env.update(extra)
    return env


def amihub(
    tmp_path: Path, *args: str, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        env=env_for(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_clear_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The error is the last line of stderr, there is no traceback, the exit code is 2."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines, "no error line"
    return lines[-1]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with two meters and a day of readings of each."""
    app = make_app(f"sqlite:///{tmp_path / 'store.db'}")
    add_meters(app, "MTR-1", LONG_MRID)
    app.close()
    data = tmp_path / "day.xml"
    data.write_bytes(
        meter_readings_bytes(["MTR-1", LONG_MRID], datetime(2026, 3, 1, tzinfo=UTC), 96)
    )
    done = amihub(tmp_path, "import", str(data))
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_version(tmp_path: Path) -> None:
    done = amihub(tmp_path, "--version")
    assert done.returncode == 0
    assert re.fullmatch(r"amihub \d+\.\d+\.\S+\n", done.stdout)


def test_a_toml_syntax_error_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text('log_level = "INFO"\n[soap\nport = 8080\n')
    line = one_clear_line(amihub(tmp_path, "--config", str(config), "db", "upgrade"))
    assert str(config) in line
    assert "not valid TOML" in line
    assert "line 2" in line
    line = one_clear_line(amihub(tmp_path, "db", "upgrade", AMIHUB_CONFIG=str(config)))
    assert "line 2" in line


def test_amihub_config_naming_a_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "etc" / "amihub.toml"
    line = one_clear_line(amihub(tmp_path, "db", "upgrade", AMIHUB_CONFIG=str(missing)))
    assert f"settings file {missing} (AMIHUB_CONFIG) does not exist" in line
    assert not (tmp_path / "store.db").exists()  # no store made on the defaults


def test_export_into_a_missing_folder(store: Path) -> None:
    target = store / "no-such-folder" / "export.csv"
    done = amihub(
        store,
        "export",
        "--mapping",
        "export-billing-csv",
        "--usage-point",
        "UP-1",
        "--out",
        str(target),
    )
    line = one_clear_line(done)
    assert done.stderr.strip() == line  # the one line, no usage text around it
    assert f"the folder {target.parent} does not exist" in line
    assert not target.parent.exists()


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = amihub(
            tmp_path,
            "serve",
            AMIHUB_SOAP__ENABLED="true",
            AMIHUB_SOAP__PORT=str(port),
            AMIHUB_SOAP__HOST="127.0.0.1",
        )
    line = one_clear_line(done)
    assert line.startswith("error: soap cannot start")
    assert "Address already in use" in line


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_output_piped_into_head(store: Path, fmt: str) -> None:
    """The reader stops after one line (``| head -1``): no traceback, no error log."""
    many = store / "many.xml"
    many.write_bytes(meter_readings_bytes(["MTR-1"], datetime(2026, 4, 1, tzinfo=UTC), 3_000))
    assert amihub(store, "import", str(many)).returncode == 0
    with subprocess.Popen(
        [*COMMAND, "readings", "--meter", "MTR-1", "--format", fmt],
        env=env_for(store),
        cwd=store,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what head does after its lines
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert first.strip()
    assert "Traceback" not in err
    assert "ERROR" not in err
    assert "Exception ignored" not in err  # nothing at the interpreter's exit either
    assert code in (0, 1), err  # 1: the output was cut short by the reader


def test_a_date_outside_the_calendar_is_one_line(store: Path) -> None:
    done = amihub(store, "readings", "--meter", "MTR-1", "--from", "0001-01-01T00:00:00+14:00")
    line = one_clear_line(done)
    assert done.stderr.strip() == line
    assert "--from" in line
    assert "outside the calendar" in line


def test_an_unexpected_error_is_one_line_exit_3_and_a_log(store: Path) -> None:
    """A mapped file with a timestamp at the calendar's edge raised OverflowError in the
    mapping (a defect of its own: issue 12 point 14). Whatever the importer does with it,
    the command line shows no traceback: a refusal (exit 1) once the mapping names the
    line, or exit 3 with the traceback in a log file the line names."""
    data = store / "edge.csv"
    data.write_text(
        "meter,obis,timestamp,dst,value,unit,status\n"
        "SN1001,1-0:1.8.0*255,0001-01-01 00:00:00,S,12345.678,kWh,OK\n"
    )
    done = amihub(store, "import", "--mapping", "register-obis", str(data))
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode in (1, 3), done.stderr
    if done.returncode == 3:
        line = done.stderr.strip().splitlines()[-1]
        logged = re.search(r"the traceback is in (\S+)\)", line)
        assert line.startswith("internal error: OverflowError")
        assert logged is not None
        assert "Traceback" in Path(logged[1]).read_text()


def test_piped_and_redirected_output_is_not_cut(store: Path) -> None:
    out = store / "readings.txt"
    with out.open("w") as f:
        done = subprocess.run(
            [*COMMAND, "readings", "--meter", LONG_MRID],
            env=env_for(store),
            cwd=store,
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "…" not in text
    rows = [line for line in text.splitlines() if LONG_MRID in line]
    assert len(rows) == 97  # 96 quarter-hours and the register, each on one line
    assert all("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0" in r for r in rows[1:])
    piped = amihub(store, "readings", "--meter", LONG_MRID, "--format", "csv")
    assert piped.stdout.splitlines()[1].startswith(f"{LONG_MRID},")


def test_engine_without_a_broker_is_refused(tmp_path: Path) -> None:
    fleet = Fleet.build(1, free_port(), seed=4)
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    done = amihub(
        tmp_path, "engine", AMIHUB_HES__MANIFEST=str(manifest), AMIHUB_HES__SIMULATED_SEED="4"
    )
    line = one_clear_line(done)
    assert "needs RabbitMQ" in line
    assert "[amqp] url" in line


@pytest.fixture
def half_fleet(tmp_path: Path) -> Iterator[tuple[Path, list[str], str]]:
    """A manifest of three simulated meters, one of them at a port nothing listens on."""
    fleet = Fleet.build(3, free_port(), seed=5)
    entries = fleet_manifest(fleet)
    entries[2]["port"] = free_port()
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(entries))
    mrids = [f"MTR-{m.serial}" for m in fleet.meters]
    app = make_app(f"sqlite:///{tmp_path / 'store.db'}")
    add_meters(app, *mrids, install=False)
    app.close()
    with SimulatorThread(fleet):
        yield manifest, mrids, mrids[2]


def test_engine_read_with_a_failed_meter_exits_1(
    tmp_path: Path, half_fleet: tuple[Path, list[str], str]
) -> None:
    manifest, _, dead = half_fleet
    done = amihub(
        tmp_path,
        "engine",
        "read",
        "--hours",
        "1",
        "--no-events",
        AMIHUB_HES__MANIFEST=str(manifest),
        AMIHUB_HES__SIMULATED_SEED="5",
        AMIHUB_HES__TIMEOUT="2",
        AMIHUB_HES__ATTEMPTS="1",
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "    done: 2" in done.stdout
    assert "1 of 3 meter(s) failed or read in part:" in done.stderr
    assert re.search(rf"^  {dead}: \S", done.stderr, re.MULTILINE), done.stderr


def test_hes_read_prints_each_failed_meter_and_says_it_stores_nothing(tmp_path: Path) -> None:
    fleet = Fleet.build(2, free_port(), seed=6)
    with SimulatorThread(fleet):
        done = amihub(
            tmp_path,
            "hes",
            "read",
            "--meters",
            "3",  # the third is not there
            "--base-port",
            str(fleet.base_port),
            "--seed",
            "6",
            "--hours",
            "1",
            "--timeout",
            "2",
        )
    assert done.returncode == 1, done.stderr
    assert "nothing stored" in done.stdout
    assert "1 of 3 meter(s) failed or read in part:" in done.stderr
    failed = re.findall(r"^  (MTR-\S+): (.+)$", done.stderr, re.MULTILINE)
    third = simulated_targets(3, fleet.base_port, 6, "hls")[2].mrid
    assert [m for m, _ in failed] == [third]
    assert failed[0][1].strip()  # and its reason
