"""The SOAP server under abuse (issue 12, points 7 and 9-13), over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hub.bootstrap import ensure_utility
from hub.errors import ConfigurationError
from hub.settings import load_settings
from tests.integration.soap.conftest import Server
from tests.integration.soap.test_bad_input import envelope, fault_of, get_body, post


def test_a_cross_utility_read_is_answered_unknown_and_audited(server: Server) -> None:
    """north (utility NORTH) asks for DEFAULT's MTR-1: unknown to it (2001, nothing
    told), and the audit log has the refused read as it has refused writes."""
    ensure_utility(server.app.uow_factory, "NORTH", "North utility")
    response = post(
        server,
        envelope(get_body(devices="<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>")),
        auth=("north", "north-secret"),
    )
    assert response.status_code == 200, response.text[:300]
    assert b"<msg:code>2001</msg:code>" in response.content
    with server.app.uow_factory() as uow:
        entries = [e for e in uow.audit.list(20) if e[2] == "refused"]
    assert [(e[1], e[3], e[4]) for e in entries] == [("north", "get MeterReadings", "MTR-1")]
    assert "not a meter of utility NORTH" in (entries[0][5] or "")
    response = post(  # a meter that exists nowhere is not an audited refusal
        server,
        envelope(get_body(devices="<p:EndDevice><p:mRID>NOPE</p:mRID></p:EndDevice>")),
        auth=("north", "north-secret"),
    )
    assert b"<msg:code>2001</msg:code>" in response.content
    with server.app.uow_factory() as uow:
        assert len([e for e in uow.audit.list(20) if e[2] == "refused"]) == 1


def test_a_user_with_an_empty_password_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="user 'cis' has an empty password"):
        load_settings(users=[{"name": "cis", "password": ""}])
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path}/amihub.db"\n'
        "[soap]\nenabled = true\nport = 0\n"
        '[[users]]\nname = "ok"\npassword = "secret"\n'
        '[[users]]\nname = "cis"\npassword = "  "\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "user 'cis' has an empty password" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "amihub.db").exists()


def _period(days: int) -> str:
    from datetime import timedelta

    from tests.unit.hub.conftest import START

    end = START + timedelta(days=days)
    return (
        "<p:TimeSchedule><p:scheduleInterval>"
        f"<p:end>{end.isoformat()}</p:end><p:start>{START.isoformat()}</p:start>"
        "</p:scheduleInterval></p:TimeSchedule>"
    )


def test_a_get_over_the_meter_days_limit_gets_a_fault_naming_it(
    soap_server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMIHUB_LIMITS__MAX_GET_METER_DAYS", "10")
    server = soap_server_factory()
    two = "<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>" + (
        "<p:EndDevice><p:mRID>MTR-2</p:mRID></p:EndDevice>"
    )
    assert post(server, envelope(get_body(devices=two + _period(5)))).status_code == 200
    for devices, asked in ((two + _period(6), "12"), (two, "732")):  # no period: 366 days each
        response = post(server, envelope(get_body(devices=devices)))
        faultcode, text, errors = fault_of(response)
        assert faultcode.endswith("Client")
        assert errors[0][0] == "1003"
        assert f"asks {asked} meter-days" in text
        assert "[limits] max_get_meter_days" in text
        assert "at most 10 " in text
    with server.app.uow_factory() as uow:  # refused as any refusal: dead-lettered
        assert [d.error_code for d in uow.dead_letters.list()] == ["1003", "1003"]
