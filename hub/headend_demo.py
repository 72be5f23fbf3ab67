"""The head-end part of ``make demo``: a simulated fleet read into the MDM store.

``read_simulated_fleet(uow_factory, utility_code)`` starts N simulated meters
(HLS-GMAC, one shared port on loopback), registers them as installed end devices
if the MDM does not know them yet (mRID ``MTR-<serial>``), reads registers and the
last day's load profile with the reading engine, stores everything and returns
the run report. The hub's ``demo`` command calls it and shows the data.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from cim_schemas.errors import ConfigurationError
from hes.client.session import ClientIdentity, MeterCredentials, Security
from hes.engine import EnginePolicy, MeterTarget, ReadCommand, ReadingEngine, RunReport
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index
from hub.headend_store import MdmReadingSink
from mdm.model import DeviceRef, DeviceState, EndDevice
from mdm.ports import UnitOfWorkFactory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_fleet(uow_factory: UnitOfWorkFactory, utility_code: str, fleet: Fleet) -> int:
    """Add the fleet's meters the MDM does not know; returns how many were added."""
    added = 0
    with uow_factory() as uow:
        utility = uow.utilities.get(utility_code)
        if utility is None or utility.id is None:
            raise ConfigurationError(f"unknown utility {utility_code}")
        for m in fleet.meters:
            mrid = f"MTR-{m.serial}"
            if uow.devices.find(utility.id, DeviceRef(mrid=mrid)) is None:
                uow.devices.add(
                    utility.id,
                    EndDevice(
                        mrid,
                        utility_code,
                        serial_number=m.serial,
                        name=m.logical_device_name,
                        manufacturer="amihub simulator",
                        state=DeviceState.INSTALLED,
                    ),
                )
                added += 1
        uow.commit()
    return added


def read_simulated_fleet(
    uow_factory: UnitOfWorkFactory,
    utility_code: str,
    *,
    meters: int = 20,
    seed: int = 1,
    hours: int = 24,
) -> RunReport:
    fleet = Fleet.build(meters, _free_port(), seed)
    register_fleet(uow_factory, utility_code, fleet)
    targets = tuple(
        MeterTarget(
            f"MTR-{m.serial}",
            *_endpoint(fleet, i),
            MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys),
        )
        for i, m in enumerate(fleet.meters)
    )
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    engine = ReadingEngine(
        MdmReadingSink(uow_factory, utility_code),
        policy=EnginePolicy(concurrency=8),
        identity=ClientIdentity(),
    )
    with SimulatorThread(fleet):
        return engine.run(ReadCommand(targets, end - timedelta(hours=hours), end, read_events=True))


def _endpoint(fleet: Fleet, index: int) -> tuple[str, int, int]:
    ep = fleet.endpoint(index)
    return ep.host, ep.port, ep.logical_device
