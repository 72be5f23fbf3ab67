"""The sample master-data files and the curl example of docs/master-data.md, as an
operator would use them: ``amihub import`` of the files, and the curl command (taken
from the document) against a real SOAP server."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from mdm.model import DeviceRef
from tests.conftest import unavailable
from tests.integration.cli.test_command_line import REPO, amihub
from tests.integration.soap.conftest import Server
from tests.unit.hub.conftest import make_app

SAMPLES = REPO / "docs" / "samples"
DOC = REPO / "docs" / "master-data.md"


def test_the_sample_files_import_into_a_fresh_store(tmp_path: Path) -> None:
    files = [
        SAMPLES / name
        for name in (
            "usage-point-config.xml",
            "meter-config.xml",
            "master-data-linkage-config.xml",
        )
    ]
    assert amihub(tmp_path, "db", "upgrade").returncode == 0
    done = amihub(tmp_path, "import", *map(str, files))
    assert done.returncode == 0, done.stdout + done.stderr
    app = make_app(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with app.uow_factory() as uow:
            utility = uow.utilities.get(app.settings.default_utility)
            assert utility is not None
            assert utility.id is not None
            meter = uow.devices.find(utility.id, DeviceRef(mrid="MTR-1001"))
            assert meter is not None
            assert meter.id is not None
            assert meter.serial_number == "SN1001"
            assert uow.devices.find(utility.id, DeviceRef(mrid="MTR-1002")) is not None
            assert uow.installations.current(meter.id) is not None
    finally:
        app.close()


def curl_example() -> list[str]:
    """The curl command of docs/master-data.md, as written there."""
    block = re.search(r"```sh\n(curl .*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None, "no curl example in docs/master-data.md"
    return shlex.split(block[1].replace("\\\n", " "))


def test_the_curl_example_creates_a_meter(
    soap_server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        unavailable("curl", "not installed")
    server = soap_server_factory(meters=False)
    command = [
        curl if word == "curl" else word.replace("http://127.0.0.1:8080", server.url)
        for word in curl_example()
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    reply = etree.fromstring(done.stdout)
    assert reply.findtext(".//{*}Reply/{*}Result") == "OK", done.stdout
    with server.app.uow_factory() as uow:
        utility = uow.utilities.get(server.app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        assert uow.devices.find(utility.id, DeviceRef(mrid="MTR-2001")) is not None
