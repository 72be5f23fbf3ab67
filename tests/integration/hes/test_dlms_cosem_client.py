"""An independent DLMS/COSEM client (the ``dlms-cosem`` package: MIT licence, its own
A-XDR, xDLMS and WRAPPER code, not built on gurux) reads a simulated meter over TCP:
association with a low-level-security password, the energy register with its scaler and
unit, and the clock, each decoded by that client and checked against the meter."""

from __future__ import annotations

import logging
from datetime import UTC, timedelta

import structlog
from dlms_cosem import cosem, enumerations
from dlms_cosem.client import DlmsClient
from dlms_cosem.cosem import Obis
from dlms_cosem.io import BlockingTcpIO, TcpTransport
from dlms_cosem.security import LowLevelSecurityAuthentication
from dlms_cosem.time import datetime_from_bytes
from dlms_cosem.utils import parse_as_dlms_data

from hes.dlms.wrapper import MANAGEMENT_CLIENT
from hes.simulator.cosem import ACTIVE_IMPORT, REGISTER_SCALER
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import SecurityPolicy
from tests.conftest import free_port

# dlms-cosem logs every frame through structlog at debug level
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

REGISTER = enumerations.CosemInterface.REGISTER
CLOCK = enumerations.CosemInterface.CLOCK
WH = 30  # DLMS unit enumeration: active energy, Wh


def test_dlms_cosem_reads_a_register_and_the_clock_of_a_simulated_meter() -> None:
    fleet = Fleet.build(2, free_port(), seed=7, policy=SecurityPolicy.LOW)
    meter = fleet.meters[1]
    endpoint = fleet.endpoint(1)
    client = DlmsClient(
        transport=TcpTransport(
            client_logical_address=MANAGEMENT_CLIENT,
            server_logical_address=endpoint.logical_device,
            io=BlockingTcpIO(endpoint.host, endpoint.port, timeout=10),
        ),
        authentication=LowLevelSecurityAuthentication(secret=meter.password),
        timeout=10,
    )
    energy = Obis.from_string(ACTIVE_IMPORT)
    with SimulatorThread(fleet):
        before = meter.energy_wh(meter.current_interval()) // 10 ** REGISTER_SCALER[ACTIVE_IMPORT]
        with client.session() as session:
            value = parse_as_dlms_data(
                session.get(cosem.CosemAttribute(REGISTER, energy, attribute=2))
            )
            scaler_unit = parse_as_dlms_data(
                session.get(cosem.CosemAttribute(REGISTER, energy, attribute=3))
            )
            clock_raw = session.get(
                cosem.CosemAttribute(CLOCK, Obis.from_string("0.0.1.0.0.255"), attribute=2)
            )
        after = meter.energy_wh(meter.current_interval()) // 10 ** REGISTER_SCALER[ACTIVE_IMPORT]
        meter_time = meter.now()
    assert before <= value <= after  # the meter's own figure (a 15-minute step may pass)
    assert value > 0
    assert scaler_unit == [REGISTER_SCALER[ACTIVE_IMPORT], WH]
    clock = parse_as_dlms_data(clock_raw)
    assert bytes(clock)[9:11] == b"\x00\x00"  # deviation 0: the meter's clock is in UTC
    read_at, _status = datetime_from_bytes(bytes(clock))
    # dlms-cosem returns deviation 0 as a naive datetime (its utc_offset_minutes)
    assert read_at.tzinfo is None
    assert abs(read_at.replace(tzinfo=UTC) - meter_time) < timedelta(seconds=5)
