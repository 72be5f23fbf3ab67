"""The embedded SFTP server tells nothing about which user names exist: a real user with
keys only, a real user with keys and a password, and an unknown name are offered the same
authentication methods (paramiko's ``auth_none`` and OpenSSH's ``ssh -v``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from sftp_fixtures import make_key

from adapters.sftp.server import (
    AuthEvent,
    PartnerAccount,
    SftpServer,
    SftpServerConfig,
    hash_password,
)
from tests.conftest import unavailable

USERS = ("billing", "meters", "mallory")  # keys + password, keys only, unknown


@pytest.fixture
def two_accounts(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    host = make_key(tmp_path / "host_key")
    client = make_key(tmp_path / "client_key")
    accounts = (
        PartnerAccount(
            username="billing",
            home=tmp_path / "billing",
            authorized_keys=(client.public_line,),
            password_hash=hash_password("secret"),
            mapping="register-obis",
            utility="DEMO",
        ),
        PartnerAccount(
            username="meters",
            home=tmp_path / "meters",
            authorized_keys=(client.public_line,),
            mapping="register-obis",
            utility="DEMO",
        ),
    )
    events: list[AuthEvent] = []
    server = SftpServer(
        SftpServerConfig(host_key=host.private, accounts=accounts, port=0), on_auth=events.append
    )
    port = server.start()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host.public_line}\n", encoding="utf-8")
    try:
        yield port, known
    finally:
        server.stop()


def offered_by_auth_none(port: int, user: str) -> list[str]:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_none(user)
        return sorted(refused.value.allowed_types)
    finally:
        transport.close()


def test_every_user_name_is_offered_the_same_methods(two_accounts: tuple[int, Path]) -> None:
    port, _ = two_accounts
    offered = {user: offered_by_auth_none(port, user) for user in USERS}
    assert offered["billing"] == ["password", "publickey"]
    assert offered["meters"] == offered["billing"]  # a key-only account looks the same
    assert offered["mallory"] == offered["billing"]  # and so does a name that is not there


def test_openssh_sees_the_same_methods_for_a_real_and_an_unknown_user(
    two_accounts: tuple[int, Path], tmp_path: Path
) -> None:
    ssh = shutil.which("ssh")
    if ssh is None:
        unavailable("OpenSSH client (ssh)", "not installed: run `make tools`")
    port, known = two_accounts
    offered: dict[str, list[str]] = {}
    for user in USERS:
        done = subprocess.run(
            [
                ssh,
                "-v",
                "-F",
                "/dev/null",
                "-p",
                str(port),
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "PreferredAuthentications=none",
                "-o",
                "ConnectTimeout=10",
                f"{user}@127.0.0.1",
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0  # nobody gets in without a secret
        offered[user] = re.findall(r"Authentications that can continue: (\S+)", done.stderr)
    assert offered["billing"] == ["publickey,password"]
    assert offered["meters"] == offered["billing"]
    assert offered["mallory"] == offered["billing"]
