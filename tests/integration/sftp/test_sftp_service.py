"""The SFTP service as `amihub serve` runs it: real hub bootstrap, OpenSSH client, audit log."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from sftp_fixtures import make_key, need_openssh_client

from adapters.sftp.service import SftpService
from cim_schemas.errors import ConfigurationError
from hub.bootstrap import bootstrap, sftp_service
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
        service = SftpService(settings, app.uow_factory, bus=app.bus, default_utility="DEMO")
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
            SftpService(bad, app.uow_factory, bus=app.bus, default_utility="DEMO")
        nokey = SftpSettings(partners=[SftpPartnerSettings(name="x", mapping="register-obis")])
        with pytest.raises(ConfigurationError, match="neither keys nor password"):
            SftpService(nokey, app.uow_factory, bus=app.bus, default_utility="DEMO")
    finally:
        app.close()


def test_a_vendor_cim_variant_dropped_over_sftp_is_stored(tmp_path: Path, sqlite_url: str) -> None:
    # the partner's mapping is a cim-variant: its files are CIM messages in that
    # vendor's variant, normalised and applied through the hub pipeline
    app = bootstrap(Settings(database_url=sqlite_url, default_utility="DEMO"), migrate=True)
    try:
        with app.uow_factory() as uow:
            utility = uow.utilities.get("DEMO")
            assert utility is not None
            assert utility.id is not None
            uow.devices.add(utility.id, EndDevice("m-1001", "DEMO", serial_number="SN1001"))
            uow.commit()
        key = make_key(tmp_path / "partner_key")
        settings = SftpSettings(
            enabled=True,
            port=0,
            host_key=tmp_path / "host_key",
            root=tmp_path / "jails",
            state_dir=tmp_path / "state",
            poll_interval=0.05,
            partners=[
                SftpPartnerSettings(
                    name="vendor", authorized_keys=[key.public_line], mapping="cim-vendor-draft"
                ),
                SftpPartnerSettings(
                    name="limited",
                    authorized_keys=[key.public_line],
                    mapping="cim-vendor-draft",
                    permissions=["created:EndDeviceEvents"],
                ),
            ],
        )
        with pytest.raises(ConfigurationError, match="needs the hub pipeline"):
            SftpService(settings, app.uow_factory, bus=app.bus, default_utility="DEMO")
        app.settings = app.settings.model_copy(update={"sftp": settings})
        service = sftp_service(app)  # what `amihub serve` runs for [sftp]: the pipeline wired in
        service.start()
        try:
            host = paramiko.ECDSAKey.from_private_key_file(str(tmp_path / "host_key"))
            sample = BUILTIN_DIR / "samples" / "cim-vendor-draft-message.xml"

            def drop(user: str, name: str) -> str:
                client = paramiko.SSHClient()
                client.get_host_keys().add(f"[127.0.0.1]:{service.port}", host.get_name(), host)
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
                client.connect(
                    "127.0.0.1",
                    service.port,
                    username=user,
                    pkey=paramiko.ECDSAKey.from_private_key_file(str(key.private)),
                    look_for_keys=False,
                    allow_agent=False,
                )
                with client.open_sftp() as sftp:
                    sftp.put(str(sample), f"/inbox/{name}.part")
                    sftp.rename(f"/inbox/{name}.part", f"/inbox/{name}")
                client.close()
                result = tmp_path / "jails" / user / "outbox" / f"{name}.result.txt"
                deadline = time.monotonic() + 20
                while not result.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                return result.read_text()

            report = drop("vendor", "readings.xml")
            assert "status: applied" in report, report
            assert "mapping: cim-vendor-draft (CIM variant)" in report
            assert "stored: 2" in report
            assert list((tmp_path / "jails" / "vendor" / "archive").iterdir())
            refused = drop("limited", "readings.xml")  # may not send MeterReadings
            assert "status: rejected" in refused
            assert "[1010]" in refused
            assert list((tmp_path / "jails" / "limited" / "error").glob("*readings.xml"))
        finally:
            service.stop()
        with app.uow_factory() as uow:
            assert uow.readings.count() == 2
    finally:
        app.close()
