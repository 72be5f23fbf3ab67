"""The SFTP jail's renames and removals, and what a refused key login puts in the
audit, through paramiko's client against the embedded server. `make mutate` found them
untested (docs/testing.md)."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import paramiko
import pytest
from paramiko import SFTPAttributes
from paramiko.sftp import (
    CMD_OPEN,
    SFTP_FLAG_APPEND,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
)
from sftp_fixtures import Sftp, make_key

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


def test_password_logins_refused_for_an_unknown_user_and_a_key_only_account(
    tmp_path: Path,
) -> None:
    """Both are refused like a wrong password, and audited as refused (a bool) with the
    reason: no password for a key-only account is not "unknown user"."""
    from adapters.sftp.server import (
        AuthEvent,
        PartnerAccount,
        SftpServer,
        SftpServerConfig,
        hash_password,
    )

    host = make_key(tmp_path / "host_key")
    accounts = (
        PartnerAccount(username="keys-only", home=tmp_path / "keys-only"),
        # one account with a password, so that the server offers password logins at all
        PartnerAccount(
            username="other", home=tmp_path / "other", password_hash=hash_password("pw")
        ),
    )
    events: list[AuthEvent] = []
    config = SftpServerConfig(host_key=host.private, accounts=accounts, port=0)
    with SftpServer(config, on_auth=events.append) as server:
        for user in ("keys-only", "nobody"):
            transport = paramiko.Transport(("127.0.0.1", server.port))
            try:
                transport.start_client(timeout=10)
                with pytest.raises(paramiko.AuthenticationException):
                    transport.auth_password(user, "pw")
            finally:
                transport.close()
    assert [(e.username, e.method, e.accepted, e.reason) for e in events] == [
        ("keys-only", "password", False, "password login not allowed"),
        ("nobody", "password", False, "unknown user"),
    ]
    assert all(e.accepted is False for e in events)


def test_the_upload_registry_follows_a_file_renamed_while_open(sftp_server: Sftp) -> None:
    """Renamed while still open, an upload stays "open" under its new name (the inbox
    watcher must not take it) and is not "complete by rename" when closed; a closed
    temporary file renamed to its final name is complete at once."""
    inbox = sftp_server.account.folder("inbox")
    uploads = sftp_server.server.uploads
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        sftp = client.open_sftp()
        handle = sftp.open("inbox/open.csv.part", "w")
        handle.write(b"a;b\n")
        handle.flush()
        assert uploads.is_open(inbox / "open.csv.part")
        sftp.posix_rename("inbox/open.csv.part", "inbox/open.csv")
        assert uploads.is_open(inbox / "open.csv")
        assert not uploads.is_open(inbox / "open.csv.part")
        handle.close()
        assert not uploads.is_open(inbox / "open.csv")
        st = (inbox / "open.csv").stat()
        assert not uploads.take_complete(inbox / "open.csv", st.st_size, st.st_mtime_ns)

        sftp.putfo(io.BytesIO(b"c;d\n"), "inbox/done.csv.part")
        sftp.rename("inbox/done.csv.part", "inbox/done.csv")
        st = (inbox / "done.csv").stat()
        assert uploads.take_complete(inbox / "done.csv", st.st_size, st.st_mtime_ns)
        # a rename between two final names completes nothing
        sftp.putfo(io.BytesIO(b"e;f\n"), "inbox/first.csv")
        sftp.rename("inbox/first.csv", "inbox/second.csv")
        st = (inbox / "second.csv").stat()
        assert not uploads.take_complete(inbox / "second.csv", st.st_size, st.st_mtime_ns)
        # a file complete by rename, renamed again: its old name is complete no more
        sftp.putfo(io.BytesIO(b"g;h\n"), "inbox/moved.csv.part")
        sftp.rename("inbox/moved.csv.part", "inbox/moved.csv")
        sftp.rename("inbox/moved.csv", "inbox/moved-again.csv")
        st = (inbox / "moved-again.csv").stat()
        assert not uploads.take_complete(inbox / "moved.csv", st.st_size, st.st_mtime_ns)
        # a rename of an open upload that fails (onto a folder that is not empty): the
        # upload stays open under its own name, and nothing is open under the other
        (inbox / "folder").mkdir()
        (inbox / "folder" / "inside.csv").write_bytes(b"x")
        handle = sftp.open("inbox/held.csv.part", "w")
        handle.write(b"i;j\n")
        handle.flush()
        with pytest.raises(OSError):
            sftp.posix_rename("inbox/held.csv.part", "inbox/folder")
        assert uploads.is_open(inbox / "held.csv.part")
        assert not uploads.is_open(inbox / "folder")
        handle.close()
        assert not uploads.is_open(inbox / "held.csv.part")
        # an open upload renamed onto another open upload's name: open until both close
        first = sftp.open("inbox/one.csv.part", "w")
        second = sftp.open("inbox/two.csv.part", "w")
        sftp.posix_rename("inbox/one.csv.part", "inbox/two.csv.part")
        second.close()
        assert uploads.is_open(inbox / "two.csv.part")
        first.close()
        assert not uploads.is_open(inbox / "two.csv.part")
    finally:
        client.close()


def test_a_file_outside_inbox_cannot_be_opened_for_update(sftp_server: Sftp) -> None:
    """ "r+" sends READ|WRITE only (O_RDWR, no create, truncate or append): still a write."""
    outbox = sftp_server.account.folder("outbox")
    (outbox / "result.csv").write_bytes(b"kept")
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        sftp = client.open_sftp()
        with pytest.raises(PermissionError):
            sftp.open("outbox/result.csv", "r+")
        with pytest.raises(PermissionError):
            sftp.open("outbox/result.csv", "a")
        # the protocol's WRITE alone (O_WRONLY) or APPEND alone, and CREATE or TRUNC
        # without WRITE (a file made empty, or an empty one made), as a client may send them
        for name, flags in [
            ("outbox/result.csv", SFTP_FLAG_WRITE),
            ("outbox/result.csv", SFTP_FLAG_APPEND),
            ("outbox/result.csv", SFTP_FLAG_READ | SFTP_FLAG_TRUNC),
            ("outbox/new.csv", SFTP_FLAG_READ | SFTP_FLAG_CREATE),
        ]:
            with pytest.raises(PermissionError):
                sftp._request(CMD_OPEN, name, flags, SFTPAttributes())
        assert (outbox / "result.csv").read_bytes() == b"kept"
        assert not (outbox / "new.csv").exists()
        sftp.putfo(io.BytesIO(b"one\n"), "inbox/u.csv.part")
        with sftp.open("inbox/u.csv.part", "a") as appended:
            appended.write(b"two\n")
        with sftp.open("inbox/u.csv.part", "r+") as updated:
            updated.write(b"ONE")
        assert (sftp_server.account.folder("inbox") / "u.csv.part").read_bytes() == b"ONE\ntwo\n"
    finally:
        client.close()


def test_what_is_missing_is_no_such_file_and_a_way_out_is_permission_denied(
    sftp_server: Sftp, tmp_path: Path
) -> None:
    home = sftp_server.account.home
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (home / "inbox" / "out").symlink_to(outside)
    (home / ".hidden").write_text("x")
    (home / "inbox" / ".upload.part").write_text("x")
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        sftp = client.open_sftp()
        for call in (
            lambda: sftp.open("outbox/missing.csv"),
            lambda: sftp.lstat("outbox/missing.csv"),
            lambda: sftp.stat("outbox/missing.csv"),
            lambda: sftp.listdir("outbox/missing"),
        ):
            with pytest.raises(FileNotFoundError) as missing:
                call()
            assert missing.value.errno == errno.ENOENT
        for call in (
            lambda: sftp.open("inbox/out/secret.txt"),
            lambda: sftp.listdir("inbox/out"),
            lambda: sftp.stat("inbox/out/secret.txt"),
            lambda: sftp.chmod("inbox/out/secret.txt", 0o600),
        ):
            with pytest.raises(PermissionError) as denied:
                call()
            assert denied.value.errno == errno.EACCES
        # attributes are accepted and ignored inside the jail
        sftp.putfo(io.BytesIO(b"x"), "inbox/mode.csv.part")
        sftp.chmod("inbox/mode.csv.part", 0o777)
        assert (home / "inbox" / "mode.csv.part").stat().st_mode & 0o777 == 0o640
        # dot-files at the jail's root are not listed; elsewhere they are
        assert sorted(sftp.listdir("/")) == ["archive", "error", "inbox", "outbox"]
        assert ".upload.part" in sftp.listdir("inbox")
    finally:
        client.close()
