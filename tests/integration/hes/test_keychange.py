"""Meter key change over real TCP against the simulator: security setup
global_key_transfer, verification by a new association, pending keys settled later."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hes.client.session import (
    AssociationRefused,
    ClientIdentity,
    DlmsMeterSession,
    KeyRole,
    MeterCredentials,
    MeterProtocolError,
    Security,
)
from hes.engine import EnginePolicy, MeterTarget, tcp_sessions
from hes.security.gcm import SecurityKeys
from hes.security.keychange import (
    ChangeKeys,
    KeyChangeOutcome,
    KeyChanger,
    KeyChangeResult,
    SettleKeys,
)
from hes.security.keyfile import KeyStoreFile
from hes.security.keystore import KeyStore
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import MeterState, SecurityPolicy, make_meter
from tests.conftest import free_port

MASTER = bytes(range(32))
SEED = 9


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Three HLS meters and one LLS meter on one shared port."""
    meters = [make_meter(i, SEED) for i in range(3)]
    meters.append(make_meter(3, SEED, SecurityPolicy.LOW))
    f = Fleet(meters, free_port())
    with SimulatorThread(f):
        yield f


def _target(fleet: Fleet, i: int) -> MeterTarget:
    m = fleet.meters[i]
    ep = fleet.endpoint(i)
    creds = (
        MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys)
        if m.policy is SecurityPolicy.HLS_GMAC
        else MeterCredentials(Security.LOW, password=m.password)
    )
    return MeterTarget(f"MTR-{m.serial}", ep.host, ep.port, ep.logical_device, creds)


def _store(fleet: Fleet, path: Path) -> tuple[KeyStore, KeyStoreFile]:
    store = KeyStore(MASTER)
    for m in fleet.meters:
        if m.policy is SecurityPolicy.HLS_GMAC:
            store.put(f"MTR-{m.serial}", m.system_title, m.keys, m.kek)
    file = KeyStoreFile(path)
    file.save(store)
    return store, file


class ListAudit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, KeyChangeResult]] = []

    def record(self, actor: str, action: str, results: Sequence[KeyChangeResult]) -> None:
        self.entries += [(actor, action, r) for r in results]


def _changer(
    store: KeyStore, file: KeyStoreFile, audit: ListAudit, attempts: int = 2
) -> KeyChanger:
    return KeyChanger(
        store,
        file.save,
        tcp_sessions(ClientIdentity()),
        policy=EnginePolicy(concurrency=2, timeout=0.5, attempts=attempts, backoff_base=0.01),
        audit=audit,
    )


def _session(
    fleet: Fleet, i: int, keys: SecurityKeys, pending: SecurityKeys | None = None
) -> DlmsMeterSession:
    m = fleet.meters[i]
    ep = fleet.endpoint(i)
    creds = MeterCredentials(
        Security.HLS, system_title=m.system_title, keys=keys, pending_keys=pending
    )
    return DlmsMeterSession.connect(ep.host, ep.port, ep.logical_device, creds, timeout=0.5)


def _secrets(*meters: MeterState, extra: tuple[SecurityKeys | bytes | None, ...] = ()) -> list[str]:
    out = []
    for m in meters:
        out += [m.keys.encryption_key.hex(), m.keys.authentication_key.hex(), m.kek.hex()]
    for item in extra:
        if isinstance(item, SecurityKeys):
            out += [item.encryption_key.hex(), item.authentication_key.hex()]
        elif item is not None:
            out.append(item.hex())
    return out


def test_change_keys_read_with_the_new_ones_old_ones_refused(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meter = fleet.meters[0]
    old_keys, old_kek = meter.keys, meter.kek
    store, file = _store(fleet, tmp_path / "keys.json")
    audit = ListAudit()
    counter_before = meter.counter.value
    [result] = _changer(store, file, audit).change(ChangeKeys((_target(fleet, 0),), "alice"))
    assert result.outcome is KeyChangeOutcome.CHANGED, result
    assert result.version == 2
    assert result.reason == "new keys verified by a new association"
    # the meter and the store (on disk) agree on the new keys; nothing is pending
    on_disk = file.load(MASTER)
    entry = on_disk.entry(result.mrid)
    assert entry is not None
    assert (entry.keys, entry.kek, entry.version) == (meter.keys, meter.kek, 2)
    assert meter.keys != old_keys
    assert meter.kek != old_kek
    assert on_disk.pending(result.mrid) is None
    # read with the new keys; the meter's counter went on (no reset on a key change)
    session = _session(fleet, 0, entry.keys)
    session.associate()
    session.read_clock()
    session.release()
    session.close()
    assert meter.counter.value > counter_before
    # the old keys are refused
    session = _session(fleet, 0, old_keys)
    with pytest.raises(AssociationRefused, match="AUTHENTICATION_FAILURE"):
        session.associate()
    session.close()
    # the other meters were not touched
    assert fleet.meters[1].key_changes == 0
    assert [(a, action, r.mrid, r.outcome) for a, action, r in audit.entries] == [
        ("alice", "key-change", result.mrid, KeyChangeOutcome.CHANGED)
    ]
    # no key, old or new, in the logs, the audit or the key store file
    text = caplog.text + repr(audit.entries) + (tmp_path / "keys.json").read_text()
    for secret in _secrets(meter, extra=(old_keys, old_kek)):
        assert secret not in text
    assert "key change of MTR-" in caplog.text


def test_a_wrong_kek_leaves_meter_and_store_unchanged(fleet: Fleet, tmp_path: Path) -> None:
    meter = fleet.meters[1]
    keys = meter.keys
    store, file = _store(fleet, tmp_path / "keys.json")
    mrid = f"MTR-{meter.serial}"
    store.put(mrid, meter.system_title, meter.keys, bytes(16))  # not the meter's KEK
    file.save(store)
    audit = ListAudit()
    [result] = _changer(store, file, audit).change(ChangeKeys((_target(fleet, 1),), "bob"))
    assert result.outcome is KeyChangeOutcome.FAILED
    assert "the meter refused the key transfer" in result.reason
    assert "result 3" in result.reason  # read-write-denied
    assert meter.keys == keys
    assert meter.key_changes == 0
    on_disk = file.load(MASTER)
    assert on_disk.get(mrid) == (meter.system_title, keys)
    assert on_disk.version(mrid) == 1
    assert on_disk.pending(mrid) is None
    session = _session(fleet, 1, keys)  # the old keys still work
    session.associate()
    session.release()
    session.close()


def test_answer_lost_after_the_transfer_is_verified_by_a_new_association(
    fleet: Fleet, tmp_path: Path
) -> None:
    meter = fleet.meters[0]
    meter.faults.drop_after_key_transfer = True  # applies the keys, never answers
    store, file = _store(fleet, tmp_path / "keys.json")
    [result] = _changer(store, file, ListAudit()).change(ChangeKeys((_target(fleet, 0),), "carol"))
    assert result.outcome is KeyChangeOutcome.CHANGED, result
    entry = file.load(MASTER).entry(result.mrid)
    assert entry is not None
    assert entry.keys == meter.keys


def test_answer_lost_before_the_meter_applied_drops_the_pending_keys(
    fleet: Fleet, tmp_path: Path
) -> None:
    meter = fleet.meters[0]
    keys = meter.keys
    meter.faults.drop_before_key_transfer = True  # dies on the transfer, keys unchanged
    store, file = _store(fleet, tmp_path / "keys.json")
    [result] = _changer(store, file, ListAudit()).change(ChangeKeys((_target(fleet, 0),), "carol"))
    assert result.outcome is KeyChangeOutcome.FAILED
    assert "answer to the transfer lost" in result.reason
    assert "still uses the old keys" in result.reason
    on_disk = file.load(MASTER)
    assert on_disk.get(result.mrid) == (meter.system_title, keys)
    assert on_disk.pending(result.mrid) is None


def test_connection_dropped_after_the_transfer_is_settled_on_the_next_association(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meter = fleet.meters[2]
    old_keys, old_kek = meter.keys, meter.kek
    meter.faults.silent_after_key_transfer = True  # applies, drops, then no answer at all
    store, file = _store(fleet, tmp_path / "keys.json")
    audit = ListAudit()
    changer = _changer(store, file, audit, attempts=1)
    target = _target(fleet, 2)
    [result] = changer.change(ChangeKeys((target,), "dave"))
    assert result.outcome is KeyChangeOutcome.UNKNOWN, result
    assert "pending keys are kept" in result.reason
    assert meter.key_changes == 1
    # on disk: the old keys still active, the new ones pending (nothing lost)
    on_disk = file.load(MASTER)
    pending = on_disk.pending(result.mrid)
    assert pending is not None
    assert pending.keys == meter.keys
    assert on_disk.get(result.mrid) == (meter.system_title, old_keys)
    assert on_disk.pending_meters() == [result.mrid]
    meter.faults.no_answer = False  # the meter is back
    # a read in between: the active keys are refused, the pending ones taken
    session = _session(fleet, 2, old_keys, pending.keys)
    session.associate()
    assert session.key_role is KeyRole.PENDING
    session.read_clock()
    session.release()
    session.close()
    # the next key-change association settles the store
    reloaded = file.load(MASTER)
    [settled] = _changer(reloaded, file, audit).settle(SettleKeys((target,), "dave"))
    assert settled.outcome is KeyChangeOutcome.CHANGED
    assert settled.version == 2
    after = file.load(MASTER)
    assert after.pending(result.mrid) is None
    entry = after.entry(result.mrid)
    assert entry is not None
    assert (entry.keys, entry.kek) == (meter.keys, meter.kek)
    assert [action for _, action, _ in audit.entries] == ["key-change", "key-settle"]
    # a second change now starts from the settled keys
    [again] = _changer(after, file, audit).change(ChangeKeys((target,), "dave"))
    assert again.outcome is KeyChangeOutcome.CHANGED
    assert again.version == 3
    for secret in _secrets(meter, extra=(old_keys, old_kek, pending.keys, pending.kek)):
        assert secret not in caplog.text + repr(audit.entries)
    assert "unknown" in caplog.text


def test_a_change_settles_an_earlier_unknown_one_first(fleet: Fleet, tmp_path: Path) -> None:
    meter = fleet.meters[0]
    store, file = _store(fleet, tmp_path / "keys.json")
    mrid = f"MTR-{meter.serial}"
    # an earlier run staged keys and crashed before sending them
    store.stage(mrid, SecurityKeys(bytes(16), bytes(16)), None)
    file.save(store)
    audit = ListAudit()
    [result] = _changer(store, file, audit).change(ChangeKeys((_target(fleet, 0),), "erin"))
    assert result.outcome is KeyChangeOutcome.CHANGED
    assert [(action, r.outcome) for _, action, r in audit.entries] == [
        ("key-settle", KeyChangeOutcome.FAILED),  # the meter kept the keys it had
        ("key-change", KeyChangeOutcome.CHANGED),
    ]
    assert result.version == 2
    entry = file.load(MASTER).entry(mrid)
    assert entry is not None
    assert entry.keys == meter.keys


def test_an_lls_meter_is_refused_with_a_clear_error(fleet: Fleet, tmp_path: Path) -> None:
    meter = fleet.meters[3]
    store, file = _store(fleet, tmp_path / "keys.json")
    before = (tmp_path / "keys.json").read_text()
    [result] = _changer(store, file, ListAudit()).change(ChangeKeys((_target(fleet, 3),), "f"))
    assert result.outcome is KeyChangeOutcome.FAILED
    assert result.reason == (
        f"MTR-{meter.serial} uses low authentication: it has no security setup with keys "
        "to change (HLS-GMAC meters only)"
    )
    assert meter.requests == 0  # never contacted
    assert (tmp_path / "keys.json").read_text() == before


def test_an_lls_meter_has_no_security_setup(fleet: Fleet) -> None:
    from hes.security.keywrap import SECURITY_SETUP, KeyId, encode_key_transfer

    meter = fleet.meters[3]
    ep = fleet.endpoint(3)
    session = DlmsMeterSession.connect(
        ep.host,
        ep.port,
        ep.logical_device,
        MeterCredentials(Security.LOW, password=meter.password),
        timeout=0.5,
    )
    session.associate()
    # no security setup in an LLS association: the meter answers an exception response
    with pytest.raises(MeterProtocolError, match="meter exception response d80101"):
        session.invoke(
            64, SECURITY_SETUP, 2, encode_key_transfer(meter.kek, {KeyId.AUTHENTICATION: bytes(16)})
        )
    session.release()
    session.close()
    assert meter.key_changes == 0


def test_meters_unknown_to_the_store_or_without_kek(fleet: Fleet, tmp_path: Path) -> None:
    store = KeyStore(MASTER)
    m1 = fleet.meters[1]
    store.put(f"MTR-{m1.serial}", m1.system_title, m1.keys)  # no KEK recorded
    file = KeyStoreFile(tmp_path / "keys.json")
    results = _changer(store, file, ListAudit()).change(
        ChangeKeys((_target(fleet, 0), _target(fleet, 1)), "g")
    )
    assert [(r.outcome, r.reason) for r in results] == [
        (KeyChangeOutcome.FAILED, f"MTR-{fleet.meters[0].serial} is not in the key store"),
        (
            KeyChangeOutcome.FAILED,
            f"no master key (KEK) of MTR-{m1.serial} in the key store: "
            "new keys cannot be wrapped for it",
        ),
    ]
    assert not (tmp_path / "keys.json").exists()  # nothing staged, nothing written


def test_simulator_state_keeps_changed_keys_across_a_restart(fleet: Fleet, tmp_path: Path) -> None:
    store, file = _store(fleet, tmp_path / "keys.json")
    [result] = _changer(store, file, ListAudit()).change(ChangeKeys((_target(fleet, 0),), "h"))
    assert result.outcome is KeyChangeOutcome.CHANGED
    fleet.save_state(tmp_path / "state.json")
    state = json.loads((tmp_path / "state.json").read_text())
    assert "keys" in state[fleet.meters[0].serial]
    assert "keys" not in state[fleet.meters[1].serial]
    restarted = Fleet([make_meter(i, SEED) for i in range(3)], 0)
    restarted.load_state(tmp_path / "state.json")
    assert restarted.meters[0].keys == fleet.meters[0].keys
    assert restarted.meters[0].kek == fleet.meters[0].kek
    assert restarted.meters[1].keys == fleet.meters[1].keys


def test_a_crash_before_the_store_is_updated_loses_no_key(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meter = fleet.meters[1]
    old_keys, old_kek = meter.keys, meter.kek
    mrid = f"MTR-{meter.serial}"
    store, file = _store(fleet, tmp_path / "keys.json")
    writes: list[int] = []

    def persist_then_die(s: KeyStore) -> None:
        if writes:  # the write after the meter took the new keys: the process dies here
            raise SystemExit("killed")
        writes.append(1)
        file.save(s)

    changer = KeyChanger(
        store,
        persist_then_die,
        tcp_sessions(ClientIdentity()),
        policy=EnginePolicy(concurrency=1, timeout=0.5, attempts=1),
        audit=ListAudit(),
    )
    with pytest.raises(SystemExit):
        changer.change(ChangeKeys((_target(fleet, 1),), "ivan"))
    assert meter.key_changes == 1
    restarted = file.load(MASTER)  # what the next process finds on disk
    assert restarted.get(mrid) == (meter.system_title, old_keys)
    pending = restarted.pending(mrid)
    assert pending is not None
    assert (pending.keys, pending.kek) == (meter.keys, meter.kek)
    audit = ListAudit()
    [settled] = _changer(restarted, file, audit).settle(SettleKeys((_target(fleet, 1),), "ivan"))
    assert settled.outcome is KeyChangeOutcome.CHANGED
    entry = file.load(MASTER).entry(mrid)
    assert entry is not None
    assert entry.keys == meter.keys
    for secret in _secrets(meter, extra=(old_keys, old_kek)):
        assert secret not in caplog.text + repr(audit.entries)
