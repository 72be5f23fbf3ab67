"""Inbound SFTP: the embedded server with OpenSSH's sftp client and paramiko, the inbox
watcher, and files applied to the SQLite store all or nothing."""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from sftp_fixtures import PASSWORD, Sftp, make_key

from adapters.sftp.inbox import (
    InboxFile,
    InboxWatcher,
    Outcome,
    import_handler,
)
from adapters.sftp.server import SftpServer, SftpServerConfig
from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from cim_schemas.errors import StoreUnavailable
from hub.journal import MessageJournal
from mappings.importer import import_file
from mappings.load import BUILTIN_DIR, load_dir
from mdm.model import EndDevice, Utility
from tests.bus import BUS

GOOD = (BUILTIN_DIR / "samples" / "register-obis.csv").read_bytes()
HEAD = b"meter,obis,timestamp,dst,value,unit,status\n"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[SqlUnitOfWorkFactory]:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        utility = uow.utilities.add(Utility("DEMO", "Demo utility"))
        assert utility.id is not None
        for n in ("1001", "1002"):
            uow.devices.add(utility.id, EndDevice(f"m-{n}", "DEMO", serial_number=f"SN{n}"))
        uow.commit()
    yield factory
    engine.dispose()


def readings(store: SqlUnitOfWorkFactory) -> int:
    with store() as uow:
        return uow.readings.count()


def watcher_for(
    sftp: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path, settle: float = 0.0
) -> InboxWatcher:
    run = functools.partial(import_file, store, catalog=load_dir(BUILTIN_DIR), bus=BUS)
    return InboxWatcher(
        [sftp.account],
        import_handler(run),
        state_dir=tmp_path / "state",
        journal=MessageJournal(store),
        uploads=sftp.server.uploads,
        settle_seconds=settle,
    )


def folder(sftp: Sftp, name: str) -> list[str]:
    return sorted(os.listdir(sftp.account.folder(name)))


# --------------------------------------------------------------------------- OpenSSH client


def test_openssh_upload_temp_name_then_rename_is_applied_and_result_picked_up(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    local = tmp_path / "reads.csv"
    local.write_bytes(GOOD)
    watcher = watcher_for(sftp_server, store, tmp_path)
    r = sftp_server.openssh(f"cd inbox\nput {local} reads.csv.part\n")
    assert r.returncode == 0, r.stderr
    assert watcher.poll_once() == []  # a temporary name is never taken
    r = sftp_server.openssh("cd inbox\nrename reads.csv.part reads.csv\n")
    assert r.returncode == 0, r.stderr
    [done] = watcher.poll_once()
    assert done.status == "applied"
    assert readings(store) == 6
    assert folder(sftp_server, "inbox") == []
    [archived] = folder(sftp_server, "archive")
    assert archived.endswith("_reads.csv")
    assert folder(sftp_server, "outbox") == ["reads.csv.result.txt"]
    pick = tmp_path / "pick"
    pick.mkdir()
    r = sftp_server.openssh(
        "cd outbox\nget reads.csv.result.txt\nrm reads.csv.result.txt\n", cwd=pick
    )
    assert r.returncode == 0, r.stderr
    result = (pick / "reads.csv.result.txt").read_text()
    assert "status: applied" in result
    assert "stored: 6" in result
    assert folder(sftp_server, "outbox") == []
    assert [e.method for e in sftp_server.events] == ["session"] * 3


def test_openssh_bad_line_goes_to_error_with_report_and_nothing_applied(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    local = tmp_path / "bad.csv"
    local.write_bytes(
        HEAD
        + b"SN1001,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
        + b"SN1001,1-0:1.8.0*255,2026-11-31 00:00:00,W,2,kWh,OK\n"
    )
    r = sftp_server.openssh(f"cd inbox\nput {local}\n")
    assert r.returncode == 0, r.stderr
    [done] = watcher_for(sftp_server, store, tmp_path).poll_once()
    assert done.status == "refused"
    assert readings(store) == 0
    stored, report = folder(sftp_server, "error")
    assert report == stored + ".error.txt"
    text = (sftp_server.account.folder("error") / report).read_text()
    assert "status: rejected" in text
    assert "line 3, column 'timestamp'" in text
    assert (sftp_server.account.folder("outbox") / "bad.csv.result.txt").read_text() == text


def test_openssh_wrong_key_refused_and_reported(sftp_server: Sftp, tmp_path: Path) -> None:
    stranger = make_key(tmp_path / "stranger")
    r = sftp_server.openssh("ls\n", key=stranger.private)
    assert r.returncode != 0
    assert "Permission denied" in r.stderr
    refused = [e for e in sftp_server.events if not e.accepted]
    assert refused
    assert refused[0].username == "billing"
    assert refused[0].method == "publickey"
    assert "key not authorised" in refused[0].reason
    assert refused[0].remote.startswith("127.0.0.1:")


def test_openssh_cannot_leave_the_jail(sftp_server: Sftp, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(tmp_path, sftp_server.account.folder("outbox") / "escape")
    local = tmp_path / "x.csv"
    local.write_bytes(GOOD)
    r = sftp_server.openssh(
        "cd ../../..\npwd\nls\n"
        f"-get outbox/escape/secret.txt {tmp_path}/got.txt\n"
        f"-put {local} ../../x.csv\n"
        f"-put {local} /outbox/x.csv\n"
        "-symlink /etc/passwd inbox/passwd\n"
        "-mkdir inbox/sub\n"
    )
    assert r.returncode == 0, r.stderr
    assert "Remote working directory: /" in r.stdout
    assert not (tmp_path / "got.txt").exists()
    assert not (tmp_path.parent / "x.csv").exists()
    assert not (sftp_server.account.home / "x.csv").exists()
    assert not (sftp_server.account.folder("outbox") / "x.csv").exists()
    assert folder(sftp_server, "inbox") == []
    assert r.stderr.count("denied") + r.stderr.count("Permission") >= 4, r.stderr


# --------------------------------------------------------------------------- paramiko client


def test_paramiko_password_login_and_traversal(sftp_server: Sftp) -> None:
    client = sftp_server.paramiko_client(password=PASSWORD)
    try:
        sftp = client.open_sftp()
        assert sorted(sftp.listdir("/../..")) == ["archive", "error", "inbox", "outbox"]
        assert sftp.normalize("inbox/../../../etc") == "/etc"
        with pytest.raises(OSError, match="No such file"):
            sftp.stat("/etc/passwd")  # that is <jail>/etc/passwd
        for bad in ("../../../../tmp/evil.csv", "/archive/evil.csv", "/evil.csv"):
            with pytest.raises(PermissionError):
                sftp.open(bad, "wb")
        with sftp.open("/inbox/../inbox/ok.csv", "wb") as f:
            f.write(GOOD)
        with pytest.raises(PermissionError):
            sftp.rename("/inbox/ok.csv", "/archive/ok.csv")
        with pytest.raises(PermissionError):
            sftp.symlink("/inbox/ok.csv", "/inbox/link.csv")
        with pytest.raises(PermissionError):
            sftp.remove("/archive")
    finally:
        client.close()
    assert (sftp_server.account.folder("inbox") / "ok.csv").read_bytes() == GOOD


def test_paramiko_wrong_password_and_unknown_user_are_audited(sftp_server: Sftp) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        sftp_server.paramiko_client(password="wrong")
    transport = paramiko.Transport(("127.0.0.1", sftp_server.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password("mallory", "x")
    finally:
        transport.close()
    refused = [(e.username, e.method, e.reason) for e in sftp_server.events if not e.accepted]
    assert ("billing", "password", "wrong password") in refused
    assert ("mallory", "password", "unknown user") in refused


def test_paramiko_key_login(sftp_server: Sftp) -> None:
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        assert "inbox" in client.open_sftp().listdir(".")
    finally:
        client.close()


def test_half_uploaded_file_is_never_processed(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    watcher = watcher_for(sftp_server, store, tmp_path)
    client = sftp_server.paramiko_client(password=PASSWORD)
    sftp = client.open_sftp()
    f = sftp.open("/inbox/half.csv", "wb")
    f.write(GOOD[: len(GOOD) // 2])
    f.flush()
    assert watcher.poll_once() == []  # open for writing: not taken
    # the connection drops in the middle of the upload
    transport = client.get_transport()
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    client.close()
    deadline = time.monotonic() + 10
    while folder(sftp_server, "inbox") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watcher.poll_once() == []
    assert folder(sftp_server, "inbox") == []
    # the server writes the error report under a temporary name, then renames it
    while len(folder(sftp_server, "error")) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    partial, report = folder(sftp_server, "error")
    assert partial.endswith("_half.csv")
    assert "incomplete upload" in (sftp_server.account.folder("error") / report).read_text()
    assert readings(store) == 0


# --------------------------------------------------------------------------- the watcher


def test_same_checksum_twice_is_not_applied_twice(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    watcher = watcher_for(sftp_server, store, tmp_path)
    inbox = sftp_server.account.folder("inbox")
    (inbox / "a.csv").write_bytes(GOOD)
    assert [p.status for p in watcher.poll_once()] == ["applied"]
    (inbox / "b.csv").write_bytes(GOOD)
    [dup] = watcher.poll_once()
    assert dup.status == "duplicate"
    assert dup.result_file is not None
    result = dup.result_file.read_text()
    assert "status: duplicate" in result
    assert "a.csv at" in result
    # the ledger survives a restart
    again = watcher_for(sftp_server, store, tmp_path)
    (inbox / "c.csv").write_bytes(GOOD)
    assert [p.status for p in again.poll_once()] == ["duplicate"]
    assert readings(store) == 6


def test_a_duplicate_does_not_overwrite_the_applied_files_report(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    """The same file uploaded again under the same name: the applied file's report stays
    at outbox/<name>.result.txt, the duplicate's goes under its stamped name."""
    watcher = watcher_for(sftp_server, store, tmp_path)
    inbox = sftp_server.account.folder("inbox")
    outbox = sftp_server.account.folder("outbox")
    (inbox / "reads.csv").write_bytes(GOOD)
    [first] = watcher.poll_once()
    assert first.status == "applied"
    (inbox / "reads.csv").write_bytes(GOOD)
    [dup] = watcher.poll_once()
    assert dup.status == "duplicate"
    assert "status: applied" in (outbox / "reads.csv.result.txt").read_text()
    assert dup.result_file is not None
    assert dup.result_file.parent == outbox
    assert dup.result_file.name.endswith("_reads.csv.result.txt")
    assert "status: duplicate" in dup.result_file.read_text()
    assert readings(store) == 6


def test_settling_time_for_files_written_without_the_server(
    tmp_path: Path, sftp_server: Sftp, store: SqlUnitOfWorkFactory
) -> None:
    now = [100.0]
    seen: list[str] = []

    def handler(item: InboxFile) -> Outcome:
        seen.append(item.name)
        return Outcome(True, "ok\n")

    watcher = InboxWatcher(
        [sftp_server.account],
        handler,
        state_dir=tmp_path / "st",
        journal=MessageJournal(store),
        settle_seconds=5,
        clock=lambda: now[0],
    )
    path = sftp_server.account.folder("inbox") / "slow.csv"
    path.write_bytes(b"part one")
    assert watcher.poll_once() == []
    now[0] += 3
    with path.open("ab") as f:
        f.write(b" and two")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert watcher.poll_once() == []  # changed: the clock starts again
    now[0] += 4
    assert watcher.poll_once() == []
    now[0] += 2
    assert [p.name for p in watcher.poll_once()] == ["slow.csv"]
    assert seen == ["slow.csv"]


def test_renamed_from_a_temporary_name_is_taken_without_settling(
    tmp_path: Path, sftp_server: Sftp, store: SqlUnitOfWorkFactory
) -> None:
    now = [100.0]
    seen: list[str] = []

    def handler(item: InboxFile) -> Outcome:
        seen.append(item.name)
        return Outcome(True, "ok\n")

    watcher = InboxWatcher(
        [sftp_server.account],
        handler,
        state_dir=tmp_path / "st",
        journal=MessageJournal(store),
        uploads=sftp_server.server.uploads,
        settle_seconds=5,
        clock=lambda: now[0],
    )
    client = sftp_server.paramiko_client(key=sftp_server.client_key.key)
    try:
        with client.open_sftp() as sftp:
            with sftp.open("/inbox/quick.csv.part", "wb") as f:
                f.write(b"quick")
            sftp.rename("/inbox/quick.csv.part", "/inbox/quick.csv")
            with sftp.open("/inbox/plain.csv", "wb") as f:  # final name: it settles
                f.write(b"plain")
            with sftp.open("/inbox/again.csv.part", "wb") as f:
                f.write(b"again")
            sftp.rename("/inbox/again.csv.part", "/inbox/again.csv")
            with sftp.open("/inbox/again.csv", "ab") as f:  # written again: it settles
                f.write(b"\n")
    finally:
        client.close()
    assert [p.name for p in watcher.poll_once()] == ["quick.csv"]
    now[0] += 5
    assert sorted(p.name for p in watcher.poll_once()) == ["again.csv", "plain.csv"]
    assert sorted(seen) == ["again.csv", "plain.csv", "quick.csv"]


def test_store_down_leaves_the_file_for_a_retry_and_crash_recovery(
    tmp_path: Path, sftp_server: Sftp, store: SqlUnitOfWorkFactory
) -> None:
    calls: list[str] = []

    def flaky(item: InboxFile) -> Outcome:
        calls.append(item.sha256)
        if len(calls) == 1:
            raise StoreUnavailable("database restarting")
        return Outcome(True, "ok\n")

    inbox = sftp_server.account.folder("inbox")
    (inbox / "r.csv").write_bytes(GOOD)
    now = [0.0]
    watcher = InboxWatcher(
        [sftp_server.account],
        flaky,
        state_dir=tmp_path / "st",
        settle_seconds=0,
        retry_delay=5,
        journal=MessageJournal(store),
        clock=lambda: now[0],
    )
    assert [p.status for p in watcher.poll_once()] == ["retry"]
    assert folder(sftp_server, "inbox") == ["r.csv"]
    assert folder(sftp_server, "outbox") == []
    now[0] += 2
    assert watcher.poll_once() == []  # backing off (5 s, up to half taken off: 2.5 to 5)
    now[0] += 3
    assert [p.status for p in watcher.poll_once()] == ["applied"]
    # a file left in the work folder by a crash goes back to the inbox on start
    work = tmp_path / "st" / "work" / "billing"
    (work / "left.csv").write_bytes(b"x")
    InboxWatcher(
        [sftp_server.account], flaky, state_dir=tmp_path / "st", journal=MessageJournal(store)
    )
    assert "left.csv" in folder(sftp_server, "inbox")


def test_handler_crash_and_empty_file_go_to_error(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    inbox = sftp_server.account.folder("inbox")
    (inbox / "empty.csv").write_bytes(b"")
    [done] = watcher_for(sftp_server, store, tmp_path).poll_once()
    assert done.status == "refused"
    report = (sftp_server.account.folder("outbox") / "empty.csv.result.txt").read_text()
    assert "empty file" in report
    assert "[2013]" in report

    def broken(item: InboxFile) -> Outcome:
        raise RuntimeError("bug")

    (inbox / "x.csv").write_bytes(b"data")
    watcher = InboxWatcher(
        [sftp_server.account],
        broken,
        state_dir=tmp_path / "st2",
        journal=MessageJournal(store),
        settle_seconds=0,
    )
    [done] = watcher.poll_once()
    assert done.status == "refused"
    assert (
        "internal error [3002]"
        in (sftp_server.account.folder("outbox") / "x.csv.result.txt").read_text()
    )


def test_two_watchers_share_the_message_log_as_the_idempotency_record(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    run = functools.partial(import_file, store, catalog=load_dir(BUILTIN_DIR), bus=BUS)
    inbox = sftp_server.account.folder("inbox")

    def watcher(state: str) -> InboxWatcher:  # two processes with their own state folders
        return InboxWatcher(
            [sftp_server.account],
            import_handler(run),
            state_dir=tmp_path / state,
            journal=MessageJournal(store),
            settle_seconds=0,
        )

    (inbox / "a.csv").write_bytes(GOOD)
    [done] = watcher("one").poll_once()
    assert done.status == "applied"
    (inbox / "b.csv").write_bytes(GOOD)
    [dup] = watcher("two").poll_once()
    assert dup.status == "duplicate"
    with store() as uow:
        logged = uow.messages.find("sftp:billing", f"sha256:{done.sha256}")
        assert logged is not None
        steps = [state for state, _, _ in uow.messages.lifecycle(logged.id)]
        duplicate = uow.messages.get(logged.id + 1)
        assert duplicate is not None
        dup_steps = uow.messages.lifecycle(duplicate.id)
    assert (logged.state, logged.result, logged.verb, logged.noun) == (
        "replied",
        "OK",
        "create",
        "MeterReadings",
    )
    assert steps == ["received", "validated", "dispatched", "replied"]
    assert logged.reply is not None
    assert logged.reply.startswith(b"a.csv at ")
    assert b"status: applied" in logged.reply  # the result file the partner got
    assert (duplicate.source, duplicate.message_id, duplicate.state) == (
        "sftp:billing",
        None,
        "duplicate",
    )
    assert [s for s, _, _ in dup_steps] == ["received", "duplicate"]
    assert f"message log {logged.id}" in (dup_steps[-1][2] or "")


def test_a_refused_file_is_journalled_with_a_dead_letter_and_may_come_again(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    """A refused file: its row dead-lettered, a dead letter with the code and the file
    kept; the same content sent again after the cause is fixed is applied."""
    unknown = HEAD + b"SN9999,1-0:1.8.0*255,2026-11-24 00:00:00,W,1,kWh,OK\n"
    inbox = sftp_server.account.folder("inbox")
    (inbox / "u.csv").write_bytes(unknown)
    [refused] = watcher_for(sftp_server, store, tmp_path).poll_once()
    assert refused.status == "refused"
    with store() as uow:
        [letter] = uow.dead_letters.list()
        assert letter.message_log_id is not None
        row = uow.messages.get(letter.message_log_id)
        steps = [s for s, _, _ in uow.messages.lifecycle(letter.message_log_id)]
    assert (letter.source, letter.endpoint) == ("sftp:billing", "sftp:billing/inbox")
    assert letter.error_code == "2001"  # unknown meter
    assert letter.body == unknown
    assert not letter.truncated
    assert letter.metadata["path"] == str(refused.moved_to)
    assert "not_replayable" in letter.metadata
    assert row is not None
    assert (row.state, row.result, row.message_id) == ("dead_lettered", "FAILED", None)
    assert steps == ["received", "dead_lettered"]
    with store() as uow:  # the cause fixed: the meter exists now
        utility = uow.utilities.get("DEMO")
        assert utility is not None
        assert utility.id is not None
        uow.devices.add(utility.id, EndDevice("m-9999", "DEMO", serial_number="SN9999"))
        uow.commit()
    (inbox / "u.csv").write_bytes(unknown)
    [again] = watcher_for(sftp_server, store, tmp_path).poll_once()
    assert again.status == "applied"
    assert readings(store) == 1


def test_a_redelivered_file_is_recognised_through_the_message_log_after_a_restart(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    """OpenSSH's sftp client drops a file; amihub "restarts" (a new watcher with a new
    state folder: nothing in memory or on disk carries over); the partner sends the same
    file again under another name: a duplicate, found in the message log."""
    local = tmp_path / "reads.csv"
    local.write_bytes(GOOD)
    r = sftp_server.openssh(
        f"cd inbox\nput {local} reads.csv.part\nrename reads.csv.part reads.csv\n"
    )
    assert r.returncode == 0, r.stderr
    [first] = watcher_for(sftp_server, store, tmp_path / "before").poll_once()
    assert first.status == "applied"
    r = sftp_server.openssh(
        f"cd inbox\nput {local} again.csv.part\nrename again.csv.part again.csv\n"
    )
    assert r.returncode == 0, r.stderr
    restarted = watcher_for(sftp_server, store, tmp_path / "after")
    [again] = restarted.poll_once()
    assert again.status == "duplicate"
    assert again.result_file is not None
    assert "reads.csv at" in again.result_file.read_text()
    assert readings(store) == 6
    assert not (tmp_path / "after" / "state" / "checksums.jsonl").exists()  # no ledger file


def test_an_earlier_json_lines_ledger_is_read_into_the_message_log_once(
    sftp_server: Sftp, store: SqlUnitOfWorkFactory, tmp_path: Path
) -> None:
    import hashlib
    import json

    state = tmp_path / "state"
    state.mkdir()
    sha = hashlib.sha256(GOOD).hexdigest()
    ledger = state / "checksums.jsonl"
    entry = {"partner": "billing", "sha256": sha, "description": "old.csv at 2026-01-01"}
    ledger.write_text(json.dumps(entry) + "\n")
    watcher = watcher_for(sftp_server, store, tmp_path)
    assert not ledger.exists()
    assert (state / "checksums.jsonl.migrated").exists()
    (sftp_server.account.folder("inbox") / "new.csv").write_bytes(GOOD)
    [dup] = watcher.poll_once()
    assert dup.status == "duplicate"
    assert dup.result_file is not None
    assert "old.csv at 2026-01-01" in dup.result_file.read_text()
    assert readings(store) == 0  # applied before the upgrade, not again


def test_password_guessing_is_cut_off(sftp_server: Sftp) -> None:
    transport = paramiko.Transport(("127.0.0.1", sftp_server.port))
    try:
        transport.start_client(timeout=10)
        for _ in range(6):
            with pytest.raises(paramiko.AuthenticationException):
                transport.auth_password("billing", "guess")
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            transport.auth_password("billing", PASSWORD)
    finally:
        transport.close()
    refused = [e for e in sftp_server.events if not e.accepted]
    assert len(refused) == 6
    assert refused[-1].reason.endswith("6 refused attempts: connection closed")
    assert not any(e.accepted for e in sftp_server.events)


def test_upload_over_the_account_limit_is_refused_and_quarantined(
    sftp_server: Sftp, tmp_path: Path
) -> None:
    small = dataclasses.replace(sftp_server.account, home=tmp_path / "small", max_upload_bytes=100)
    config = SftpServerConfig(
        host_key=sftp_server.server.config.host_key, accounts=(small,), port=0
    )
    with SftpServer(config) as server:
        known = tmp_path / "known"
        known.write_text(
            sftp_server.known_hosts.read_text().replace(
                f"[127.0.0.1]:{sftp_server.port}", f"[127.0.0.1]:{server.port}"
            )
        )
        client = paramiko.SSHClient()
        client.load_host_keys(str(known))
        client.connect(
            "127.0.0.1",
            server.port,
            username=small.username,
            password=PASSWORD,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        try:
            sftp = client.open_sftp()

            def upload() -> None:
                with sftp.open("/inbox/big.csv", "wb") as f:
                    f.write(b"x" * 1000)

            with pytest.raises(OSError):
                upload()
            sftp.close()
        finally:
            client.close()
        assert os.listdir(small.folder("inbox")) == []
        names = sorted(os.listdir(small.folder("error")))
        assert len(names) == 2
        assert (
            "larger than the limit of 100 bytes" in (small.folder("error") / names[1]).read_text()
        )
