"""The reading client against the meter simulator, over real TCP sockets on free ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cim_schemas.errors import MeterUnreachable, SecurityViolation
from hes.client.session import (
    AssociationRefused,
    ClientIdentity,
    DlmsMeterSession,
    MeterCredentials,
    MeterProtocolError,
    Security,
)
from hes.dlms.acse import AcseDiagnostic
from hes.security import gcm
from hes.simulator.fleet import Addressing, Fleet, SimulatorThread
from hes.simulator.meter import (
    ControlState,
    EventCode,
    SecurityPolicy,
    interval_end,
    interval_index,
)
from tests.conftest import free_port, unavailable

REGISTERS = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.8.1.255", "1.0.1.8.2.255"]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(4, free_port(), seed=11)
    f.meters[3].policy = SecurityPolicy.LOW
    with SimulatorThread(f):
        yield f


def _credentials(fleet: Fleet, i: int, security: Security = Security.HLS) -> MeterCredentials:
    m = fleet.meters[i]
    return MeterCredentials(security, password=m.password, system_title=m.system_title, keys=m.keys)


def _session(
    fleet: Fleet,
    i: int,
    credentials: MeterCredentials | None = None,
    identity: ClientIdentity | None = None,
    timeout: float = 2.0,
) -> DlmsMeterSession:
    ep = fleet.endpoint(i)
    return DlmsMeterSession.connect(
        ep.host,
        ep.port,
        ep.logical_device,
        credentials or _credentials(fleet, i),
        identity,
        timeout,
    )


def test_secured_full_read_matches_the_meter_model(fleet: Fleet) -> None:
    meter = fleet.meters[0]
    s = _session(fleet, 0)
    try:
        s.associate()
        clock = s.read_clock()
        regs = s.read_registers(REGISTERS)
        now = datetime.now(UTC)
        profile = s.read_profile(now - timedelta(days=1), now)
        s.release()
    finally:
        s.close()
    assert abs((clock - datetime.now(UTC)).total_seconds()) < 5
    k = interval_index(now)
    plus_a = regs[0]
    assert (plus_a.scaler, plus_a.unit) == (0, 30)
    assert plus_a.value in {Decimal(meter.energy_wh(k)), Decimal(meter.energy_wh(k + 1))}
    t1 = regs[2]
    assert t1.scaler == 1
    assert t1.value == Decimal(meter.energy_wh(k, 1) // 10 * 10)
    assert profile.columns == ("1.0.1.8.0.255", "1.0.2.8.0.255")
    assert len(profile.rows) == 96
    for row in profile.rows:
        kk = interval_index(row.ts)
        assert row.ts == interval_end(kk)
        assert row.values[0] == Decimal(meter.energy_wh(kk))
    deltas = [
        b.values[0] - a.values[0] for a, b in zip(profile.rows, profile.rows[1:], strict=False)
    ]
    assert all(d > 0 for d in deltas)
    assert fleet.security_events == []


def test_plain_lls_read(fleet: Fleet) -> None:
    s = _session(fleet, 3, _credentials(fleet, 3, Security.LOW))
    try:
        s.associate()
        assert s.read_registers(["1.0.1.8.0.255"])[0].raw > 0
        s.release()
    finally:
        s.close()


def test_public_client_sees_only_identity_and_counter(fleet: Fleet) -> None:
    s = _session(fleet, 0, MeterCredentials(Security.PUBLIC))
    try:
        s.associate()
        assert s.read_data("0.0.42.0.0.255") == fleet.meters[0].logical_device_name.encode()
        assert int(s.read_data("0.0.43.1.0.255")) == 0
        with pytest.raises(MeterProtocolError):
            s.read_registers(["1.0.1.8.0.255"])
    finally:
        s.close()


def test_wrong_password_refused(fleet: Fleet) -> None:
    creds = MeterCredentials(Security.LOW, password=b"wrong")
    s = _session(fleet, 3, creds)
    with pytest.raises(AssociationRefused) as info:
        s.associate()
    s.close()
    assert info.value.diagnostic == AcseDiagnostic.AUTHENTICATION_FAILURE
    assert fleet.security_events == [(fleet.meters[3].serial, "wrong password")]


def test_wrong_keys_refused(fleet: Fleet) -> None:
    m = fleet.meters[1]
    bad = MeterCredentials(
        Security.HLS,
        system_title=m.system_title,
        keys=gcm.SecurityKeys(bytes(16), m.keys.authentication_key),
    )
    s = _session(fleet, 1, bad)
    with pytest.raises(AssociationRefused):
        s.associate()
    s.close()
    assert "deciphering failed" in fleet.security_events[0][1]


def test_lls_refused_where_hls_is_required(fleet: Fleet) -> None:
    s = _session(fleet, 0, _credentials(fleet, 0, Security.LOW))
    with pytest.raises(AssociationRefused):
        s.associate()
    s.close()


def test_unexpected_meter_system_title_is_a_violation(fleet: Fleet) -> None:
    m = fleet.meters[1]
    other = MeterCredentials(Security.HLS, system_title=fleet.meters[2].system_title, keys=m.keys)
    s = _session(fleet, 1, other)
    with pytest.raises(SecurityViolation, match="unexpected system title"):
        s.associate()
    s.close()


def test_bit_flipped_answer_rejected(fleet: Fleet) -> None:
    s = _session(fleet, 2)
    s.associate()
    fleet.meters[2].faults.flip_bit = True
    with pytest.raises(SecurityViolation, match="tag"):
        s.read_registers(["1.0.1.8.0.255"])
    s.close()


def test_bit_flipped_request_rejected_and_never_applied(fleet: Fleet) -> None:
    meter = fleet.meters[2]
    s = _session(fleet, 2)
    s.associate()
    disconnect = bytes.fromhex("c301c10046000060030aff010100")  # class 70, method 1, int8 0
    assert s._counter is not None
    frame = bytearray(
        gcm.glo_cipher(
            disconnect,
            keys=meter.keys,
            system_title=s.identity.system_title,
            invocation_counter=s._counter.next(),
        )
    )
    frame[12] ^= 0x04  # inside the ciphertext
    out = s._exchange_raw(1, bytes(frame))
    assert out == bytes.fromhex("d80105")  # exception: deciphering error
    assert meter.control_state == ControlState.CONNECTED
    assert s.read_control_state() == 1  # the association goes on
    s.close()


def test_replayed_request_rejected(fleet: Fleet) -> None:
    meter = fleet.meters[1]
    s = _session(fleet, 1)
    s.associate()
    assert s._counter is not None
    request = gcm.glo_cipher(
        bytes.fromhex("c001c100030100010800ff0200"),
        keys=meter.keys,
        system_title=s.identity.system_title,
        invocation_counter=s._counter.next(),
    )
    assert s._exchange_raw(1, request)[0] == 0xCC  # glo-get-response
    assert s._exchange_raw(1, request) == bytes.fromhex("d80106")  # replay: counter error
    s.close()


def test_stale_meter_counter_rejected_across_associations(fleet: Fleet) -> None:
    identity = ClientIdentity()
    s = _session(fleet, 1, identity=identity)
    s.associate()
    s.read_clock()
    s.release()
    s.close()
    fleet.meters[1].faults.rewind_counter = True
    s = _session(fleet, 1, identity=identity)
    with pytest.raises(SecurityViolation, match="does not go forward"):
        s.associate()
    s.close()


def test_stale_client_counter_in_aarq_refused(fleet: Fleet) -> None:
    for _ in range(2):
        s = _session(fleet, 0)
        s.associate()
        s.release()
        s.close()
    meter = fleet.meters[0]
    last = meter.client_counter(1)
    assert last >= 6  # counters persisted across associations

    class Rewound(DlmsMeterSession):
        def _read_counter_publicly(self) -> int:
            return last - 3  # an old value, as a replaying attacker would use

    ep = fleet.endpoint(0)
    s = Rewound.connect(ep.host, ep.port, ep.logical_device, _credentials(fleet, 0))
    with pytest.raises(AssociationRefused):
        s.associate()
    s.close()
    assert meter.client_counter(1) == last
    assert "stale client invocation counter" in fleet.security_events[-1][1]


def test_meter_counter_never_repeats(fleet: Fleet) -> None:
    meter = fleet.meters[0]
    seen = []
    for _ in range(3):
        s = _session(fleet, 0)
        s.associate()
        s.read_clock()
        s.release()
        s.close()
        seen.append(meter.counter.value)
    assert seen == sorted(set(seen))


def test_meter_not_answering_times_out(fleet: Fleet) -> None:
    fleet.meters[2].faults.no_answer = True
    started = time.monotonic()
    s = _session(fleet, 2, timeout=0.3)
    with pytest.raises(MeterUnreachable, match="no answer"):
        s.associate()
    assert time.monotonic() - started < 1.5
    s.close()


def test_slow_answer_beyond_timeout(fleet: Fleet) -> None:
    fleet.meters[2].faults.slow_answer_s = 0.5
    s = _session(fleet, 2, _credentials(fleet, 2), timeout=0.2)
    with pytest.raises(MeterUnreachable):
        s.associate()
    s.close()


def test_drop_mid_profile(fleet: Fleet) -> None:
    s = _session(fleet, 1)
    s.associate()
    fleet.meters[1].faults.drop_mid_profile = True
    now = datetime.now(UTC)
    with pytest.raises(MeterUnreachable, match="dropped"):
        s.read_profile(now - timedelta(days=1), now)
    s.close()


def test_outage_leaves_a_gap_and_events(fleet: Fleet) -> None:
    meter = fleet.meters[1]
    now = datetime.now(UTC)
    k = interval_index(now)
    outage = (interval_end(k - 20), interval_end(k - 16))
    meter.faults.outages.append(outage)
    meter.faults.tamper_at = interval_end(k - 10)
    s = _session(fleet, 1)
    s.associate()
    rows = s.read_profile(interval_end(k - 24), interval_end(k - 12)).rows
    events = s.read_event_log()
    s.close()
    assert [r.ts for r in rows] == [
        interval_end(j) for j in range(k - 24, k - 12 + 1) if not k - 20 < j <= k - 16
    ]
    assert [(e.ts, e.code) for e in events] == [
        (outage[0], EventCode.POWER_DOWN),
        (outage[1], EventCode.POWER_UP),
        (interval_end(k - 10), EventCode.TERMINAL_COVER_OPENED),
    ]


def test_disconnect_and_reconnect(fleet: Fleet) -> None:
    meter = fleet.meters[0]
    s = _session(fleet, 0)
    s.associate()
    assert s.read_control_state() == ControlState.CONNECTED
    s.disconnect()
    assert s.read_control_state() == ControlState.DISCONNECTED
    s.disconnect()  # already disconnected: accepted, no second event
    s.reconnect()
    assert s.read_control_state() == ControlState.CONNECTED
    codes = [e.code for e in s.read_event_log()]
    s.close()
    assert codes == [EventCode.DISCONNECTED_REMOTE, EventCode.CONNECTED_REMOTE]
    assert meter.control_state == ControlState.CONNECTED


def test_clock_drift(fleet: Fleet) -> None:
    fleet.meters[1].faults.clock_drift_s = -300
    s = _session(fleet, 1)
    s.associate()
    drift = (s.read_clock() - datetime.now(UTC)).total_seconds()
    s.close()
    assert -302 < drift < -298


def _per_port_fleet() -> tuple[Fleet, SimulatorThread]:
    """Two consecutive free ports are not guaranteed: try a few bases."""
    for _ in range(50):
        f = Fleet.build(2, free_port(), seed=3, addressing=Addressing.PER_PORT)
        if f.base_port + 1 > 65535:
            continue
        sim = SimulatorThread(f)
        try:
            sim.__enter__()
        except OSError:
            continue
        return f, sim
    return unavailable("two consecutive free ports", "50 tries")


def test_per_port_addressing() -> None:
    f, sim = _per_port_fleet()
    try:
        for i in range(2):
            ep = f.endpoint(i)
            assert ep.logical_device == 1
            m = f.meters[i]
            creds = MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys)
            s = DlmsMeterSession.connect(ep.host, ep.port, 1, creds)
            s.associate()
            assert s.read_data("0.0.96.1.0.255") == m.serial.encode()
            s.close()
    finally:
        sim.__exit__(None, None, None)


def test_unknown_logical_device_is_silent(fleet: Fleet) -> None:
    s = DlmsMeterSession.connect(
        "127.0.0.1", fleet.base_port, 99, _credentials(fleet, 0), timeout=0.2
    )
    with pytest.raises(MeterUnreachable):
        s.associate()
    s.close()


def test_malformed_frame_closes_only_that_connection(fleet: Fleet) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", fleet.base_port), timeout=2) as sock:
        sock.sendall(b"\x00\x07\x00\x01\x00\x01\x00\x03abc")  # WRAPPER version 7
        assert sock.recv(100) == b""  # the meter hangs up
    s = _session(fleet, 0)  # the fleet goes on
    s.associate()
    assert s.read_clock() is not None
    s.close()


def test_truncated_aarq_is_refused(fleet: Fleet) -> None:
    from hes.dlms.acse import Aare, AssociationResult

    s = _session(fleet, 0)
    out = s._exchange_raw(1, bytes.fromhex("6036a109060760857405080101"))  # cut short
    assert Aare.decode(out).result == AssociationResult.REJECTED_PERMANENT
    s.close()
    assert fleet.security_events[-1][1] == "malformed AARQ"


def test_simulator_start_failure_is_clean() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        f = Fleet.build(1, port, seed=1)
        with pytest.raises(OSError), SimulatorThread(f):
            pass  # pragma: no cover


def test_counters_survive_a_simulator_restart(tmp_path: Path) -> None:
    from hes.simulator.fleet import COUNTER_RESTART_GAP

    state = tmp_path / "counters.json"
    identity = ClientIdentity()
    f = Fleet.build(1, free_port(), seed=8)
    with SimulatorThread(f):
        s = _session(f, 0, identity=identity)
        s.associate()
        s.read_clock()
        s.close()
    f.save_state(state)
    used = f.meters[0].counter.value
    again = Fleet.build(1, free_port(), seed=8)
    assert again.load_state(state) == 1
    assert again.meters[0].counter.value == used + COUNTER_RESTART_GAP
    assert again.meters[0].client_counter(1) == f.meters[0].client_counter(1)
    with SimulatorThread(again):  # the head-end still trusts it: counters went forward
        s = _session(again, 0, identity=identity)
        s.associate()
        s.read_clock()
        s.close()
