"""``amihub serve`` as the systemd unit runs it: the [web] server started beside the
other services from the settings (environment here), answering until SIGTERM, its
log lines JSON with ``log_format = "json"``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import free_port


def test_amihub_serve_runs_the_web_server(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AMIHUB_CONFIG": "",  # no settings file: the environment only
        "AMIHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "AMIHUB_LOG_FORMAT": "json",
        "AMIHUB_WEB__ENABLED": "true",
        "AMIHUB_WEB__PORT": str(port),
        "AMIHUB_WEB__SESSION_SECRET": "same-on-every-process",
        "AMIHUB_USERS": json.dumps([{"name": "op", "password": "pw"}]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = requests.get(f"{url}/readyz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert ready is not None, proc.stderr.read() if proc.stderr else ""
        assert ready.status_code == 200, ready.text
        meters = requests.get(f"{url}/api/meters", auth=("op", "pw"), timeout=10)
        assert meters.json() == {"meters": []}
        assert requests.get(f"{url}/api/meters", timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(x["message"].startswith("operator interface at ") for x in lines), err
    assert any(x["message"] == "stopped web" for x in lines), err
    access = [x for x in lines if x["logger"] == "amihub.web.access"]
    assert access
    assert all("request_id" in x for x in access)
