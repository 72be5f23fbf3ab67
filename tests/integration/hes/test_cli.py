"""hes.cli: the read command against a simulated fleet, and the manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from hes.cli import fleet_manifest, hes
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import SecurityPolicy
from tests.conftest import free_port


def test_read_command_reads_the_fleet() -> None:
    fleet = Fleet.build(3, free_port(), seed=2)
    with SimulatorThread(fleet):
        result = CliRunner().invoke(
            hes,
            [
                "read",
                "--meters",
                "3",
                "--base-port",
                str(fleet.base_port),
                "--seed",
                "2",
                "--hours",
                "2",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "done: 3" in result.output
    # 4 registers + 8 intervals x 2 channels per meter
    assert "60 readings from 3 meters" in result.output
    assert "nothing stored" in result.output  # hes read is a trial read


def test_read_command_reports_refusals() -> None:
    fleet = Fleet.build(2, free_port(), seed=2, policy=SecurityPolicy.HLS_GMAC)
    with SimulatorThread(fleet):
        result = CliRunner().invoke(
            hes,
            [
                "read",
                "--meters",
                "2",
                "--base-port",
                str(fleet.base_port),
                "--seed",
                "2",
                "--security",
                "low",
                "--hours",
                "1",
            ],
        )
    assert result.exit_code == 1  # failed meters: the run failed
    assert "failed: 2" in result.output
    # each failed meter with its reason, and that nothing was stored
    assert "2 of 2 meter(s) failed or read in part:" in result.output
    assert len(re.findall(r"^  MTR-\S+: \S", result.output, re.MULTILINE)) == 2
    assert "nothing stored" in result.output


def test_manifest_has_no_keys(tmp_path: Path) -> None:
    fleet = Fleet.build(2, 4059, seed=2)
    manifest = fleet_manifest(fleet)
    assert manifest[1]["logical_device"] == 2
    text = json.dumps(manifest)
    assert fleet.meters[0].keys.encryption_key.hex() not in text
