"""Keys, accounts and the embedded server for the SFTP tests (real peers, no mocks)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from adapters.sftp.server import (
    AuthEvent,
    PartnerAccount,
    SftpServer,
    SftpServerConfig,
    hash_password,
)
from tests.conftest import unavailable

SFTP_BIN = shutil.which("sftp")
SSHD_BIN = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
PASSWORD = "correct horse battery staple"


def need_openssh_client() -> str:
    if SFTP_BIN is None:
        unavailable("OpenSSH client (sftp)", "not installed: run `make tools`")
    return SFTP_BIN


def need_sshd() -> str:
    if SSHD_BIN is None:
        unavailable("OpenSSH server (sshd)", "not installed: run `make tools`")
    return SSHD_BIN


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public_line: str
    key: paramiko.PKey


def make_key(path: Path) -> KeyPair:
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(path))
    os.chmod(path, 0o600)
    return KeyPair(path, f"{key.get_name()} {key.get_base64()}", key)


@dataclass
class Sftp:
    server: SftpServer
    account: PartnerAccount
    client_key: KeyPair
    known_hosts: Path
    events: list[AuthEvent] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def paramiko_client(
        self, *, password: str | None = None, key: paramiko.PKey | None = None
    ) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            "127.0.0.1",
            self.port,
            username=self.account.username,
            password=password,
            pkey=key,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        return client

    def openssh(
        self, batch: str, *, key: Path | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                need_openssh_client(),
                "-F",
                "/dev/null",
                "-b",
                "-",
                "-P",
                str(self.port),
                "-i",
                str(key or self.client_key.private),
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "ConnectTimeout=10",
                f"{self.account.username}@127.0.0.1",
            ],
            input=batch,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            check=False,
        )


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[Sftp]:
    keys = tmp_path / "keys"
    keys.mkdir()
    host = make_key(keys / "host_key")
    client = make_key(keys / "client_key")
    account = PartnerAccount(
        username="billing",
        home=tmp_path / "partners" / "billing",
        authorized_keys=(client.public_line,),
        password_hash=hash_password(PASSWORD),
        mapping="register-obis",
        utility="DEMO",
    )
    events: list[AuthEvent] = []
    config = SftpServerConfig(host_key=host.private, accounts=(account,), port=0)
    server = SftpServer(config, on_auth=events.append)
    port = server.start()
    known = keys / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host.public_line}\n", encoding="utf-8")
    try:
        yield Sftp(server, account, client, known, events)
    finally:
        server.stop()
