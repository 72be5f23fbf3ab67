"""A running head-end and a running push listener follow the key store file: after
`keys change` (the procedure, in this process, writing the file as the command does)
they read and accept pushes under the new keys without a restart; a broken key store
file written while they run leaves the old keys in use with an error logged. Real TCP
against the simulator."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.dlms import DlmsHeadEnd, MeterDirectory, directory_from_settings
from hes.cli import fleet_manifest
from hes.client.session import ClientIdentity, KeyRole
from hes.controls import CLOCK_SET, ControlCommand, ControlJobs
from hes.dlms.wrapper import WrapperFrame
from hes.engine import EnginePolicy, tcp_sessions
from hes.push import PushDecoder, PushedData, PushListener, SecurityEvent, notification
from hes.security import gcm
from hes.security.gcm import SecurityKeys
from hes.security.keychange import ChangeKeys, KeyChangeOutcome, KeyChanger, LogKeyAudit
from hes.security.keyfile import KeyStoreFile
from hes.security.keystore import KeyStore
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import MeterState, make_meter
from hub.bootstrap import App, bootstrap
from hub.settings import Settings, load_settings
from tests.conftest import free_port
from tests.waiting import wait_until

MASTER = bytes(range(32))
SEED = 11


@dataclass
class Setup:
    fleet: Fleet
    settings: Settings
    file: KeyStoreFile


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str) -> Iterator[Setup]:
    """Three HLS meters on one port, their manifest and their key store file."""
    fleet = Fleet([make_meter(i, SEED) for i in range(3)], free_port())
    (tmp_path / "fleet.json").write_text(json.dumps(fleet_manifest(fleet)))
    store = KeyStore(MASTER)
    for m in fleet.meters:
        store.put(f"MTR-{m.serial}", m.system_title, m.keys, m.kek)
    file = KeyStoreFile(tmp_path / "keys.json")
    file.save(store)
    settings = load_settings(database_url=sqlite_url)
    settings = settings.model_copy(
        update={
            "hes": settings.hes.model_copy(
                update={
                    "manifest": tmp_path / "fleet.json",
                    "keystore": file.path,
                    "master_key": SecretStr(MASTER.hex()),
                    "timeout": 1.0,
                    "attempts": 1,
                    "concurrency": 2,
                }
            )
        }
    )
    with SimulatorThread(fleet):
        yield Setup(fleet, settings, file)


@pytest.fixture
def app(setup: Setup) -> Iterator[App]:
    """`amihub serve`'s in-process head-end, built from [hes] manifest / keystore."""
    application = bootstrap(setup.settings, migrate=True)
    yield application
    application.close()


def mrid(m: MeterState) -> str:
    return f"MTR-{m.serial}"


def change_keys(setup: Setup, *meters: MeterState) -> None:
    """What `amihub keys change --meter ...` does: the store from the file, the meters
    changed, the file rewritten (atomically) by the procedure."""
    store = setup.file.load(MASTER)
    directory = MeterDirectory.from_manifest(setup.settings.hes.manifest or Path(), keystore=store)
    changer = KeyChanger(
        store,
        setup.file.save,
        tcp_sessions(ClientIdentity(b"KEYSCLI1")),
        policy=EnginePolicy(concurrency=2, timeout=1.0, attempts=1),
        audit=LogKeyAudit(),
    )
    results = changer.change(ChangeKeys(tuple(directory[mrid(m)] for m in meters), "ops"))
    assert [r.outcome for r in results] == [KeyChangeOutcome.CHANGED] * len(meters), results


def read(headend: DlmsHeadEnd, *meters: MeterState) -> list[str]:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    got = headend.read([mrid(m) for m in meters], end - timedelta(hours=1), end)
    return [f"{r.outcome} {r.error or ''}".strip() for r in got]


def secrets_of(*keys: SecurityKeys | bytes) -> list[str]:
    out = []
    for k in keys:
        if isinstance(k, SecurityKeys):
            out += [k.encryption_key.hex(), k.authentication_key.hex()]
        else:
            out.append(k.hex())
    return out


def test_a_running_headend_reads_a_meter_after_its_keys_changed(
    app: App, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headend = app.headend
    assert isinstance(headend, DlmsHeadEnd)
    directory = headend.directory
    assert directory.watch is not None
    m0, m1, m2 = setup.fleet.meters
    old0, old1 = m0.keys, m1.keys
    assert read(headend, m0, m1) == ["done", "done"]

    change_keys(setup, m0)
    assert m0.keys != old0
    assert m0.key_changes == 1
    # at once (within the second): the meter refuses the old keys, the directory looks
    # at the file before giving up and the read goes on with the new keys
    assert read(headend, m0) == ["done"]
    assert directory[mrid(m0)].credentials.keys == m0.keys
    assert directory.watch.reloads == 1

    # without a refusal: the file is looked at again after a second
    change_keys(setup, m1)
    assert directory.watch.view.targets[mrid(m1)].credentials.keys == old1
    watch = directory.watch
    wait_until(
        lambda: directory[mrid(m1)].credentials.keys == m1.keys, 5, "the file looked at again"
    )
    assert watch.reloads == 2
    assert read(headend, m0, m1, m2) == ["done", "done", "done"]
    assert "key store" in caplog.text
    assert "changed: re-read" in caplog.text
    for secret in secrets_of(old0, old1, m0.keys, m1.keys, m0.kek, m1.kek, MASTER):
        assert secret not in caplog.text


def test_a_control_job_with_a_target_taken_before_the_change(app: App, setup: Setup) -> None:
    """A job's target (its credentials) taken before the key change: the meter refuses
    them, the head-end's sessions look at the file and go on with the new keys."""
    headend = app.headend
    assert isinstance(headend, DlmsHeadEnd)
    m0 = setup.fleet.meters[0]
    target = headend.directory[mrid(m0)]
    change_keys(setup, m0)
    assert target.credentials.keys != m0.keys
    jobs = ControlJobs(headend.sessions, headend.policy)
    jobs.submit(ControlCommand(CLOCK_SET, (target,), None, "test"))
    [job] = jobs.run_due()
    assert [o.ok for o in job.outcomes] == [True], job.outcomes
    # without following the file, the same job fails: the meter refuses the old keys
    fixed = ControlJobs(tcp_sessions(ClientIdentity(b"OTHERHE1")), headend.policy)
    fixed.submit(ControlCommand(CLOCK_SET, (target,), None, "test"))
    [refused] = fixed.run_due()
    assert [o.ok for o in refused.outcomes] == [False]


@dataclass
class Pushes:
    got: list[PushedData]
    refused: list[SecurityEvent]

    def wait(self, pushes: int, refused: int = 0) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if len(self.got) >= pushes and len(self.refused) >= refused:
                return
            time.sleep(0.01)
        raise AssertionError(f"{len(self.got)} pushes, {len(self.refused)} refused")


@pytest.fixture
def listener(setup: Setup) -> Iterator[tuple[Pushes, int]]:
    """A running push listener whose decoder finds keys in the directory of [hes]."""
    directory = directory_from_settings(setup.settings.hes)
    assert directory is not None
    pushes = Pushes([], [])
    port = free_port()
    decoder = PushDecoder(directory, refresh=directory.refresh)
    with PushListener(decoder, pushes.got.append, pushes.refused.append, port=port):
        yield pushes, port


def old_key_push(m: MeterState, keys: SecurityKeys) -> bytes:
    """A push ciphered with ``keys`` (e.g. a meter's old ones), counter going forward."""
    apdu = notification(m.logical_device_name.encode(), datetime(2026, 1, 1, tzinfo=UTC), 1, 2)
    ciphered = gcm.general_glo_cipher(
        apdu, keys=keys, system_title=m.system_title, invocation_counter=m.next_counter()
    )
    return WrapperFrame(1, 102, ciphered).encode()


def test_a_running_push_listener_accepts_pushes_under_the_new_keys(
    setup: Setup, listener: tuple[Pushes, int]
) -> None:
    pushes, port = listener
    fleet = setup.fleet
    m0 = fleet.meters[0]
    old = m0.keys
    fleet.send_push(fleet.push_frame(0), "127.0.0.1", port)
    pushes.wait(1)
    change_keys(setup, m0)
    # at once: the new keys fail the old ones' tag, the directory re-reads the file
    fleet.send_push(fleet.push_frame(0), "127.0.0.1", port)
    pushes.wait(2)
    assert [(p.mrid, p.key_role) for p in pushes.got] == [(mrid(m0), KeyRole.ACTIVE)] * 2
    # the old keys are refused now (a frame forged with them, counter going forward)
    fleet.send_push(old_key_push(m0, old), "127.0.0.1", port)
    pushes.wait(2, 1)
    [refused] = pushes.refused
    assert refused.mrid == mrid(m0)
    assert "tag" in refused.reason
    assert refused.kind.name == "AUTHENTICATION_FAILED"


def test_a_push_under_pending_keys_is_accepted(
    setup: Setup, listener: tuple[Pushes, int], app: App
) -> None:
    """The meter applied the new keys, the answer was lost: the store holds them as
    pending. Pushes under them are accepted (not counted as settling: see docs) and
    the running head-end reads the meter with them."""
    pushes, port = listener
    fleet = setup.fleet
    m2 = fleet.meters[2]
    old = m2.keys
    m2.faults.silent_after_key_transfer = True  # applies, drops, then no answer
    store = setup.file.load(MASTER)
    changer = KeyChanger(
        store,
        setup.file.save,
        tcp_sessions(ClientIdentity(b"KEYSCLI1")),
        policy=EnginePolicy(concurrency=1, timeout=0.5, attempts=1),
        audit=LogKeyAudit(),
    )
    directory = MeterDirectory.from_manifest(setup.settings.hes.manifest or Path(), keystore=store)
    [result] = changer.change(ChangeKeys((directory[mrid(m2)],), "ops"))
    assert result.outcome is KeyChangeOutcome.UNKNOWN, result
    m2.faults.silent_after_key_transfer = False
    m2.faults.no_answer = False  # the meter is back, with the new keys
    assert m2.keys != old
    assert setup.file.load(MASTER).pending_meters() == [mrid(m2)]

    fleet.send_push(fleet.push_frame(2), "127.0.0.1", port)
    pushes.wait(1)
    [push] = pushes.got
    assert (push.mrid, push.key_role) == (mrid(m2), KeyRole.PENDING)
    headend = app.headend
    assert isinstance(headend, DlmsHeadEnd)
    assert read(headend, m2) == ["done"]
    assert setup.file.load(MASTER).pending_meters() == [mrid(m2)]  # still to settle


def test_a_broken_key_store_file_keeps_the_old_keys_with_an_error(
    app: App, setup: Setup, listener: tuple[Pushes, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headend = app.headend
    assert isinstance(headend, DlmsHeadEnd)
    pushes, port = listener
    fleet = setup.fleet
    m0, m1, _ = fleet.meters
    good = setup.file.path.read_text()
    setup.file.path.write_text(good[: len(good) // 2])  # half a file, written in place
    watch = headend.directory.watch
    assert watch is not None
    # once its interval has passed the watch looks at the file again and refuses it
    wait_until(lambda: (watch.check(), watch.failures == 1)[1], 5, "the half file refused")
    assert read(headend, m0, m1) == ["done", "done"]  # the old keys, still in use
    fleet.send_push(fleet.push_frame(0), "127.0.0.1", port)
    pushes.wait(1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors, caplog.text
    assert all("JSONDecodeError" in e and "previous keys stay in use" in e for e in errors)
    assert str(setup.file.path) in errors[0]
    # a record tampered with (valid JSON): refused the same way
    data = json.loads(good)
    ciphertext = data["meters"][mrid(m1)]["ciphertext"]
    data["meters"][mrid(m1)]["ciphertext"] = ciphertext[:-4] + (
        "AAAA" if ciphertext[-4:] != "AAAA" else "BBBB"
    )
    setup.file.path.write_text(json.dumps(data))
    wait_until(lambda: (watch.check(), watch.failures == 2)[1], 5, "the tampered file refused")
    assert read(headend, m1) == ["done"]
    assert f"key record of {mrid(m1)} does not decrypt" in caplog.text
    assert headend.directory.watch is not None
    assert headend.directory.watch.reloads == 0
    # a good file again, then a key change: taken in
    setup.file.save(KeyStore.loads(good, MASTER))
    change_keys(setup, m1)
    assert read(headend, m1) == ["done"]
    for secret in secrets_of(*(m.keys for m in fleet.meters), MASTER):
        assert secret not in caplog.text
