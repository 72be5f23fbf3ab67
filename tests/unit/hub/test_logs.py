"""Log lines are one line each and bounded (issue 12, point 12)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from hub.logs import TextFormatter, escape


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("amihub.soap", logging.WARNING, __file__, 1, message, args, None)


def test_control_characters_are_escaped() -> None:
    line = TextFormatter("%(name)s: %(message)s").format(
        record("refused call by %s", "eve\n2026-01-01 INFO amihub: fake\r\x1b[31m\x00\u2028")
    )
    assert "\n" not in line
    assert "\r" not in line
    assert line == (
        "amihub.soap: refused call by eve\\n2026-01-01 INFO amihub: fake\\r\\x1b[31m\\x00\\u2028"
    )


def test_a_long_line_is_cut_and_says_so() -> None:
    line = TextFormatter("%(message)s", max_chars=100).format(record("%s", "x" * 1000))
    assert line == "x" * 100 + "... (900 more characters)"
    assert escape("a\tb") == "a\\tb"


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        rec = logging.LogRecord(
            "amihub", logging.ERROR, __file__, 1, "failed:\n%s", ("x",), sys.exc_info()
        )
    text = TextFormatter("%(message)s").format(rec)
    first, *rest = text.splitlines()
    assert first == "failed:\\nx"
    assert rest[0] == "Traceback (most recent call last):"


def test_every_process_logs_through_it(tmp_path: Path) -> None:
    """``amihub serve`` refusing a call by a user whose name has a line feed: the
    server's stderr keeps one line for the refusal."""
    import requests

    from tests.conftest import free_port
    from tests.integration.soap.test_bad_input import envelope, get_body

    port = free_port()
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path}/amihub.db"\n'
        f"[soap]\nenabled = true\nport = {port}\nthreads = 2\n"
        '[[users]]\nname = "cis"\npassword = "cis-secret"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        text=True,
    )
    try:
        import time

        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/ws/GetMeterReadings?wsdl", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.2)
        forged = "eve\n2026-12-01 00.00.00,000 INFO amihub.soap all is well"  # no colon (Basic)
        response = requests.post(
            f"http://127.0.0.1:{port}/ws/GetMeterReadings",
            data=envelope(get_body()),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            auth=(forged, "x"),
            timeout=10,
        )
        assert b"1010" in response.content
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "all is well" in output
    for line in output.splitlines():
        assert not line.startswith("2026-12-01"), output
    assert "by eve\\n2026-12-01 00.00.00,000 INFO amihub.soap all is well" in output
