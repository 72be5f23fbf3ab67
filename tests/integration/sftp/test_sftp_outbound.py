"""Outbound SFTP push to Debian's OpenSSH server, started by the test on a free port."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sftp_fixtures import KeyPair, make_key, need_sshd

from adapters.sftp.client import PushRefused, PushTarget, RetryPolicy, push_file
from cim_schemas.errors import NotAuthorised, SecurityViolation, TransportUnavailable
from tests.conftest import free_port


@dataclass
class Sshd:
    port: int
    host: KeyPair
    client: KeyPair
    known_hosts: Path
    remote_dir: Path
    start: Callable[[], None]

    def target(self, **changes: object) -> PushTarget:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": getpass.getuser(),
            "known_hosts": self.known_hosts,
            "remote_dir": str(self.remote_dir),
            "private_key": self.client.private,
            "timeout": 10.0,
        }
        values.update(changes)
        return PushTarget(**values)  # type: ignore[arg-type]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    binary = need_sshd()
    if os.geteuid() == 0:
        # sshd's compiled-in privilege separation folder (the Debian service creates it)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    conf_dir = tmp_path / "sshd"
    conf_dir.mkdir()
    host = make_key(conf_dir / "host_key")
    client = make_key(conf_dir / "client_key")
    (conf_dir / "authorized_keys").write_text(client.public_line + "\n", encoding="utf-8")
    port = free_port()
    config = conf_dir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host.private}\n"
        f"PidFile {conf_dir / 'sshd.pid'}\nAuthorizedKeysFile {conf_dir / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        "LogLevel ERROR\n",
        encoding="utf-8",
    )
    remote = tmp_path / "partner-inbox"
    remote.mkdir()
    known = conf_dir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host.public_line}\n", encoding="utf-8")
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        proc = subprocess.Popen(
            [binary, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        _wait_listening(port, proc)

    try:
        yield Sshd(port, host, client, known, remote, start)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


def test_push_lands_under_its_name_via_a_temporary_name(sshd: Sshd, tmp_path: Path) -> None:
    sshd.start()
    local = tmp_path / "export.csv"
    local.write_bytes(b"meter;value\nSN1;1,5\n" * 1000)
    receipt = push_file(sshd.target(), local, remote_name="billing-20261125.csv")
    landed = sshd.remote_dir / "billing-20261125.csv"
    assert landed.read_bytes() == local.read_bytes()
    assert receipt.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert receipt.attempts == 1
    assert receipt.remote_path.endswith("/billing-20261125.csv")
    assert os.listdir(sshd.remote_dir) == ["billing-20261125.csv"]  # no temporary left
    local.write_bytes(b"second version\n")
    push_file(sshd.target(), local, remote_name="billing-20261125.csv")
    assert landed.read_bytes() == b"second version\n"  # replaced atomically


def test_unknown_or_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    sshd.start()
    local = tmp_path / "f.csv"
    local.write_bytes(b"x")
    other = make_key(tmp_path / "other")
    wrong = tmp_path / "known_wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other.public_line}\n", encoding="utf-8")
    with pytest.raises(SecurityViolation, match="host key"):
        push_file(sshd.target(known_hosts=wrong), local, retry=RetryPolicy(attempts=3))
    empty = tmp_path / "known_empty"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SecurityViolation, match="not in"):
        push_file(sshd.target(known_hosts=empty), local)
    assert os.listdir(sshd.remote_dir) == []


def test_wrong_key_is_not_authorised_and_not_retried(sshd: Sshd, tmp_path: Path) -> None:
    sshd.start()
    local = tmp_path / "f.csv"
    local.write_bytes(b"x")
    stranger = make_key(tmp_path / "stranger")
    sleeps: list[float] = []
    with pytest.raises(NotAuthorised):
        push_file(sshd.target(private_key=stranger.private), local, sleep=sleeps.append)
    assert sleeps == []


def test_missing_remote_folder_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    sshd.start()
    local = tmp_path / "f.csv"
    local.write_bytes(b"x")
    with pytest.raises(PushRefused):
        push_file(sshd.target(remote_dir=str(sshd.remote_dir / "nope")), local)


def test_retries_with_backoff_until_the_server_is_up(sshd: Sshd, tmp_path: Path) -> None:
    local = tmp_path / "late.csv"
    local.write_bytes(b"late\n")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            sshd.start()  # the partner's server comes back during the second wait

    receipt = push_file(
        sshd.target(),
        local,
        sleep=sleep,
        retry=RetryPolicy(attempts=5, initial_delay=0.5, jitter=0),
    )
    assert waits == [0.5, 1.0]
    assert receipt.attempts == 3
    assert (sshd.remote_dir / "late.csv").read_bytes() == b"late\n"


def test_gives_up_after_the_last_attempt(tmp_path: Path) -> None:
    local = tmp_path / "f.csv"
    local.write_bytes(b"x")
    known = tmp_path / "known"
    known.write_text("", encoding="utf-8")
    waits: list[float] = []
    target = PushTarget("127.0.0.1", free_port(), "nobody", known, timeout=2)
    with pytest.raises(TransportUnavailable):
        push_file(
            target,
            local,
            sleep=waits.append,
            retry=RetryPolicy(attempts=4, initial_delay=1, max_delay=3, jitter=0),
        )
    assert waits == [1, 2, 3]


def test_an_export_lands_on_the_partners_openssh_server(sshd: Sshd, tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from mappings.export import ExportRow, write_export
    from mappings.load import BUILTIN_DIR, load_dir

    sshd.start()
    catalog = load_dir(BUILTIN_DIR)
    rt = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    rows = [
        ExportRow(
            "m-1",
            "SN1",
            None,
            "UP1",
            rt,
            datetime(2026, 11, 24, 23, tzinfo=UTC),
            Decimal("123.5"),
            "",
        )
    ]
    local = tmp_path / "billing.csv"
    with local.open("wb") as out:
        assert (
            write_export(catalog.export("export-billing-csv"), rows, out, tables=catalog.tables)
            == 1
        )
    receipt = push_file(sshd.target(), local)
    landed = (sshd.remote_dir / "billing.csv").read_bytes().decode("latin-1")
    assert landed.splitlines()[1] == "UP1;SN1;1.0.1.8.0.255;25.11.2026 00:00;123,5;N"
    assert receipt.size == local.stat().st_size
