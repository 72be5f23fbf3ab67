"""The SFTP service as `amihub serve` runs it: real hub bootstrap, OpenSSH client, audit log."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from sftp_fixtures import make_key, need_openssh_client

from adapters.sftp.service import SftpService
from hub.bootstrap import bootstrap
from hub.errors import ConfigurationError
from hub.settings import Settings, SftpPartnerSettings, SftpSettings
from mappings.load import BUILTIN_DIR
from mdm.model import EndDevice


def test_service_takes_a_drop_and_audits_logins(tmp_path: Path, sqlite_url: str) -> None:
    sftp = need_openssh_client()
    app = bootstrap(Settings(database_url=sqlite_url, default_utility="DEMO"), migrate=True)
    try:
        with app.uow_factory() as uow:
            utility = uow.utilities.get("DEMO")
            assert utility is not None
            assert utility.id is not None
            for n in ("1001", "1002"):
                uow.devices.add(utility.id, EndDevice(f"m-{n}", "DEMO", serial_number=f"SN{n}"))
            uow.commit()
        key = make_key(tmp_path / "partner_key")
        settings = SftpSettings(
            enabled=True,
            port=0,
            host_key=tmp_path / "host_key",
            root=tmp_path / "jails",
            state_dir=tmp_path / "state",
            settle_seconds=0.2,
            poll_interval=0.1,
            partners=[
                SftpPartnerSettings(
                    name="billing", authorized_keys=[key.public_line], mapping="register-obis"
                )
            ],
        )
        service = SftpService(settings, app.uow_factory, default_utility="DEMO")
        service.start()
        try:
            assert (tmp_path / "host_key").exists()  # generated on first start
            host = paramiko.ECDSAKey.from_private_key_file(str(tmp_path / "host_key"))
            known = tmp_path / "known_hosts"
            known.write_text(f"[127.0.0.1]:{service.port} {host.get_name()} {host.get_base64()}\n")
            sample = BUILTIN_DIR / "samples" / "register-obis.csv"
            base = [
                sftp,
                "-F",
                "/dev/null",
                "-b",
                "-",
                "-P",
                str(service.port),
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PasswordAuthentication=no",
                "billing@127.0.0.1",
            ]
            r = subprocess.run(
                [*base[:-1], "-i", str(key.private), base[-1]],
                input=f"cd inbox\nput {sample} reads.csv\n",
                text=True,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert r.returncode == 0, r.stderr
            result = tmp_path / "jails" / "billing" / "outbox" / "reads.csv.result.txt"
            deadline = time.monotonic() + 20
            while not result.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "status: applied" in result.read_text()
            stranger = make_key(tmp_path / "stranger")
            r = subprocess.run(
                [*base[:-1], "-i", str(stranger.private), base[-1]],
                input="ls\n",
                text=True,
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert r.returncode != 0
        finally:
            service.stop()
        with app.uow_factory() as uow:
            assert uow.readings.count() == 6
            audit = [(row[2], row[1]) for row in uow.audit.list()]
        assert ("sftp-session", "billing") in audit
        assert ("sftp-login-refused", "billing") in audit
    finally:
        app.close()


def test_configuration_errors(tmp_path: Path, sqlite_url: str) -> None:
    app = bootstrap(Settings(database_url=sqlite_url), migrate=True)
    try:
        bad = SftpSettings(
            partners=[SftpPartnerSettings(name="x", mapping="nope", authorized_keys=["x"])]
        )
        with pytest.raises(ConfigurationError, match="no mapping named 'nope'"):
            SftpService(bad, app.uow_factory, default_utility="DEMO")
        nokey = SftpSettings(partners=[SftpPartnerSettings(name="x", mapping="register-obis")])
        with pytest.raises(ConfigurationError, match="neither keys nor password"):
            SftpService(nokey, app.uow_factory, default_utility="DEMO")
    finally:
        app.close()
