"""The SFTP jail's renames and removals, and what a refused key login puts in the
audit, through paramiko's client against the embedded server. `make mutate` found them
untested (docs/testing.md)."""

from __future__ import annotations

import errno
import io

import paramiko
import pytest
from sftp_fixtures import Sftp

KEY_TYPE = "ecdsa-sha2-nistp256"


def test_a_refused_key_is_audited_with_its_fingerprint(sftp_server: Sftp) -> None:
    other = paramiko.ECDSAKey.generate(bits=256)
    with pytest.raises(paramiko.AuthenticationException):
        sftp_server.paramiko_client(key=other)
    transport = paramiko.Transport(("127.0.0.1", sftp_server.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_publickey("mallory", other)
    finally:
        transport.close()
    refused = [(e.username, e.method, e.reason) for e in sftp_server.events if not e.accepted]
    assert (
        "billing",
        "publickey",
        f"key not authorised ({KEY_TYPE} {other.fingerprint})",
    ) in refused
    assert ("mallory", "publickey", "unknown user") in refused
    with pytest.raises(paramiko.AuthenticationException):
        sftp_server.paramiko_client(password="wrong")
    logins = [e for e in sftp_server.events if e.method != "session"]
    assert {e.method for e in logins} == {"publickey", "password"}
    assert all(e.accepted is False for e in logins)  # a bool in the audit, not just falsy
    assert all(e.remote.startswith("127.0.0.1") for e in sftp_server.events)


def test_rename_does_not_overwrite_and_posix_rename_does(sftp_server: Sftp) -> None:
    inbox = sftp_server.account.folder("inbox")
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        sftp = client.open_sftp()
        sftp.putfo(io.BytesIO(b"first"), "inbox/a.csv.part")
        sftp.putfo(io.BytesIO(b"second"), "inbox/b.csv.part")
        assert (inbox / "b.csv.part").stat().st_mode & 0o777 == 0o640  # new uploads
        with pytest.raises(OSError):  # SSH_FX_FAILURE: the target exists
            sftp.rename("inbox/a.csv.part", "inbox/b.csv.part")
        assert (inbox / "a.csv.part").read_bytes() == b"first"
        assert (inbox / "b.csv.part").read_bytes() == b"second"
        sftp.posix_rename("inbox/a.csv.part", "inbox/b.csv.part")
        assert not (inbox / "a.csv.part").exists()
        assert (inbox / "b.csv.part").read_bytes() == b"first"
        with pytest.raises(PermissionError):  # only within inbox/
            sftp.posix_rename("inbox/b.csv.part", "outbox/b.csv.part")
        assert (inbox / "b.csv.part").read_bytes() == b"first"
        with pytest.raises(FileNotFoundError):
            sftp.posix_rename("inbox/missing.part", "inbox/c.part")
    finally:
        client.close()


def test_a_file_is_removed_from_inbox_only(sftp_server: Sftp) -> None:
    inbox = sftp_server.account.folder("inbox")
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        sftp = client.open_sftp()
        sftp.putfo(io.BytesIO(b"oops"), "inbox/wrong.csv.part")
        sftp.remove("inbox/wrong.csv.part")
        assert not (inbox / "wrong.csv.part").exists()
        with pytest.raises(FileNotFoundError) as missing:
            sftp.remove("inbox/wrong.csv.part")
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(PermissionError):  # the folder itself is no file of an area
            sftp.remove("inbox")
        assert inbox.is_dir()
    finally:
        client.close()
