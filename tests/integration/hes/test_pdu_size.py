"""The simulator honours the client's max receive PDU size, ciphered APDUs included
(issue 12, point 21): over real TCP, a client that proposes 512 bytes reads a day's
profile (GET with data blocks) and never receives a longer APDU."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hes.client.session import DlmsMeterSession, MeterCredentials, Security
from hes.client.transport import TcpTransport
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import SecurityPolicy
from tests.conftest import free_port


class RecordingTransport(TcpTransport):
    """The real TCP transport, noting the length of every APDU received."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.received: list[int] = []

    def receive(self, client: int) -> bytes:
        apdu = super().receive(client)
        self.received.append(len(apdu))
        return apdu


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(2, free_port(), seed=21)
    f.meters[1].policy = SecurityPolicy.LOW
    with SimulatorThread(f):
        yield f


@pytest.mark.parametrize(("index", "security"), [(0, Security.HLS), (1, Security.LOW)])
def test_no_apdu_over_the_proposed_max_receive_pdu(
    fleet: Fleet, index: int, security: Security
) -> None:
    meter = fleet.meters[index]
    ep = fleet.endpoint(index)
    transport = RecordingTransport(ep.host, ep.port, ep.logical_device, timeout=5.0)
    credentials = MeterCredentials(
        security, password=meter.password, system_title=meter.system_title, keys=meter.keys
    )
    session = DlmsMeterSession(transport, credentials, max_receive_pdu=512)
    now = datetime.now(UTC)
    try:
        session.associate()
        profile = session.read_profile(now - timedelta(days=1), now)
        session.release()
    finally:
        session.close()
    assert len(profile.rows) >= 95
    assert max(transport.received) <= 512, transport.received
    assert max(transport.received) > 400  # the blocks were filled up to the limit
