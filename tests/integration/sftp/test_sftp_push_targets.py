"""Outbound SFTP as configuration: ``[[sftp.push_targets]]`` (host, port, user, key file,
remote folder, pinned host key) used by ``amihub export --push TARGET`` and by the
delivery of replies to a partner's CIM messages, against Debian's OpenSSH sshd."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree
from sftp_fixtures import make_key
from test_sftp_outbound import Sshd, sshd

from hub.bootstrap import bootstrap, sftp_service
from hub.settings import (
    Settings,
    SftpPartnerSettings,
    SftpPushTargetSettings,
    SftpSettings,
    load_settings,
)
from mappings.load import BUILTIN_DIR
from mdm.model import EndDevice
from tests.bus import BUS
from tests.unit.hub.test_cli_mappings import SAMPLES, installed_meters

__all__ = ["sshd"]  # the fixture, used by name

SCRIPT = Path(sys.executable).with_name("amihub")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "hub.cli"]
REPO = Path(__file__).resolve().parents[3]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def target_toml(sshd: Sshd, *, name: str = "billing-out", host_key: str | None = None) -> str:
    return (
        "[[sftp.push_targets]]\n"
        f'name = "{name}"\n'
        'host = "127.0.0.1"\n'
        f"port = {sshd.port}\n"
        f'user = "{getpass.getuser()}"\n'
        f'key_file = "{sshd.client.private}"\n'
        f'remote_dir = "{sshd.remote_dir}"\n'
        f'host_key = "{host_key or sshd.host.public_line}"\n'
        "timeout = 10\n"
        "attempts = 2\n"
        "retry_delay = 0.1\n"
    )


def export(tmp_path: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMIHUB_")}
    env.update(
        {
            "AMIHUB_CONFIG": str(config),
            "AMIHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "AMIHUB_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
        }
    )
    return subprocess.run(
        [
            *COMMAND,
            "export",
            "--mapping",
            "export-billing-csv",
            "--usage-point",
            "UP-1",
            "--from",
            "2026-01-01",
            "--to",
            "2027-01-01",
            "--out",
            str(tmp_path / "billing.csv"),
            *extra,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def store_with_readings(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    installed_meters(url)
    app = bootstrap(load_settings(database_url=url), migrate=False)
    try:
        from mappings.importer import ImportFile, import_file
        from mappings.load import load_dir

        result = import_file(
            app.uow_factory,
            ImportFile(SAMPLES / "register-obis.csv", "register-obis", "DEFAULT", "tests"),
            load_dir(BUILTIN_DIR),
            bus=BUS,
        )
        assert result.applied
    finally:
        app.close()
    return tmp_path


def test_export_push_to_a_configured_target(sshd: Sshd, store_with_readings: Path) -> None:
    tmp_path = store_with_readings
    sshd.start()
    config = tmp_path / "amihub.toml"
    config.write_text(target_toml(sshd), encoding="utf-8")
    done = export(tmp_path, config, "--push", "billing-out")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    landed = sshd.remote_dir / "billing.csv"
    assert landed.read_bytes() == (tmp_path / "billing.csv").read_bytes()
    assert b"UP-1;SN1001;1.0.1.8.0.255" in landed.read_bytes()
    assert os.listdir(sshd.remote_dir) == ["billing.csv"]  # no temporary name left
    assert "pushed to billing-out" in done.stdout
    app = bootstrap(load_settings(database_url=f"sqlite:///{tmp_path / 'store.db'}"))
    try:
        with app.uow_factory() as uow:
            rows = uow.audit.list(limit=10)
    finally:
        app.close()
    # (at, actor, action, object type, object id, details)
    assert any(r[2] == "sftp-push" and r[4] == "billing-out" for r in rows)


def test_export_push_refuses_a_server_whose_host_key_is_not_the_pinned_one(
    sshd: Sshd, store_with_readings: Path
) -> None:
    tmp_path = store_with_readings
    sshd.start()
    other = make_key(tmp_path / "other_host_key")
    config = tmp_path / "amihub.toml"
    config.write_text(target_toml(sshd, host_key=other.public_line), encoding="utf-8")
    done = export(tmp_path, config, "--push", "billing-out")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "host key" in done.stderr.strip().splitlines()[-1]
    assert os.listdir(sshd.remote_dir) == []


def test_export_push_to_an_unknown_target_is_refused_before_exporting(
    sshd: Sshd, store_with_readings: Path
) -> None:
    tmp_path = store_with_readings
    config = tmp_path / "amihub.toml"
    config.write_text(target_toml(sshd), encoding="utf-8")
    done = export(tmp_path, config, "--push", "nobody")
    assert done.returncode == 2
    assert "no [[sftp.push_targets]] named 'nobody' (billing-out)" in done.stderr
    assert not (tmp_path / "billing.csv").exists()


def test_replies_of_a_partners_cim_messages_are_pushed_to_its_server(
    sshd: Sshd, tmp_path: Path, sqlite_url: str
) -> None:
    """A CIM message dropped by the partner asks for an asynchronous reply to
    sftp://vendor-out/: the reply goes through the outbox to the partner's sshd. A
    ReplyAddress naming another partner's target is refused (the item dead-lettered)."""
    sshd.start()
    app = bootstrap(Settings(database_url=sqlite_url, default_utility="DEMO"), migrate=True)
    try:
        with app.uow_factory() as uow:
            utility = uow.utilities.get("DEMO")
            assert utility is not None
            assert utility.id is not None
            uow.devices.add(utility.id, EndDevice("m-1001", "DEMO", serial_number="SN1001"))
            uow.commit()
        key = make_key(tmp_path / "partner_key")

        def target(name: str, partner: str) -> SftpPushTargetSettings:
            return SftpPushTargetSettings(
                name=name,
                partner=partner,
                host="127.0.0.1",
                port=sshd.port,
                user=getpass.getuser(),
                key_file=sshd.client.private,
                remote_dir=str(sshd.remote_dir),
                host_key=sshd.host.public_line,
                timeout=10,
            )

        settings = SftpSettings(
            enabled=True,
            port=0,
            host_key=tmp_path / "host_key",
            root=tmp_path / "jails",
            state_dir=tmp_path / "state",
            poll_interval=0.05,
            settle_seconds=0,
            partners=[
                SftpPartnerSettings(
                    name=name, authorized_keys=[key.public_line], mapping="cim-vendor-draft"
                )
                for name in ("vendor", "other")
            ],
            push_targets=[target("vendor-out", "vendor"), target("other-out", "other")],
        )
        app.settings = app.settings.model_copy(update={"sftp": settings})
        service = sftp_service(app)
        service.start()
        try:
            sample = (BUILTIN_DIR / "samples" / "cim-vendor-draft-message.xml").read_bytes()

            def drop(name: str, message_id: str, address: str) -> None:
                body = sample.replace(
                    b"<msg:MessageID>vendor-draft-0001</msg:MessageID>",
                    b"<msg:AsyncReplyFlag>true</msg:AsyncReplyFlag>"
                    + f"<msg:ReplyAddress>{address}</msg:ReplyAddress>".encode()
                    + f"<msg:MessageID>{message_id}</msg:MessageID>".encode(),
                )
                inbox = tmp_path / "jails" / "vendor" / "inbox"
                (inbox / f".{name}.part").write_bytes(body)
                (inbox / f".{name}.part").rename(inbox / name)

            drop("readings.xml", "vendor-async-1", "sftp://vendor-out/")
            wait_until(lambda: bool(os.listdir(sshd.remote_dir)), 30, "the pushed reply")
            [name] = os.listdir(sshd.remote_dir)
            assert name == "reply-MeterReadings-vendor-async-1.xml"
            reply = etree.fromstring((sshd.remote_dir / name).read_bytes())
            assert reply.findtext(".//{*}Reply/{*}Result") == "OK"
            assert reply.findtext(".//{*}Header/{*}CorrelationID") == "vendor-async-1"

            drop("sneaky.xml", "vendor-async-2", "sftp://other-out/stolen.xml")

            def dead() -> bool:
                with app.uow_factory() as uow:
                    return any(
                        d.source == "outbox:sftp:vendor"
                        for d in uow.dead_letters.list(include_resolved=True, limit=20)
                    )

            wait_until(dead, 30, "the refused reply in the dead letters")
            assert os.listdir(sshd.remote_dir) == [name]  # nothing pushed to other-out
        finally:
            service.stop()
    finally:
        app.close()
