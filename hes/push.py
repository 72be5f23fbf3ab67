"""Push listener: meters send DataNotification APDUs (plain or general-glo-ciphered).

Protocol logic (:class:`PushDecoder`) is pure; :class:`PushListener` is the asyncio
TCP side (WRAPPER frames). A ciphered push is accepted only if its sender's system
title is known, its tag verifies and its invocation counter goes forward (a replayed
or rewound push is rejected and reported as a security event). A plain push names
its meter by logical device name; an unknown one is handed on as *discovered*.

The notification body amihub's meters push (and this decoder reads) is the
structure {logical device name, clock, +A (Wh), -A (Wh)}, as IDIS push setups
capture identification, time and registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.dlms import axdr, compat, wrapper
from hes.security import gcm
from hes.security.gcm import InvocationCounterTracker, SecurityKeys
from hub.errors import ConfigurationError, SecurityViolation
from mdm.model import DeviceRef, DeviceState, EndDevice
from mdm.ports import StagedReading, UnitOfWorkFactory

log = logging.getLogger(__name__)

DATA_NOTIFICATION = 0x0F


@dataclass(frozen=True)
class KnownMeter:
    mrid: str
    keys: SecurityKeys | None = None


class MeterDirectory(Protocol):
    """How the listener finds a pushing meter."""

    def by_system_title(self, system_title: bytes) -> KnownMeter | None: ...

    def by_logical_device_name(self, name: str) -> KnownMeter | None: ...


@dataclass(frozen=True)
class PushedData:
    """One accepted push."""

    mrid: str | None  # None: a meter nobody knows (discovered)
    logical_device_name: str
    ts: datetime
    import_wh: Decimal
    export_wh: Decimal
    ciphered: bool
    system_title: bytes | None = None


@dataclass(frozen=True)
class SecurityEvent:
    reason: str
    system_title: bytes | None
    at: datetime


class PushRejected(SecurityViolation):
    """The push was refused; ``reason`` says why (recorded as a security event)."""


def notification(
    ldn: bytes, ts: datetime, import_wh: int, export_wh: int, invoke: int = 1
) -> bytes:
    """A DataNotification APDU as the simulated meters send it (no date-time field)."""
    body = (
        b"\x02\x04\x09"
        + bytes([len(ldn)])
        + ldn
        + b"\x09\x0c"
        + compat.encode_datetime(ts)
        + b"\x06"
        + import_wh.to_bytes(4, "big")
        + b"\x06"
        + export_wh.to_bytes(4, "big")
    )
    return bytes([DATA_NOTIFICATION]) + invoke.to_bytes(4, "big") + b"\x00" + body


class PushDecoder:
    """Verifies and decodes pushes. Thread-safe (the tracker is)."""

    def __init__(
        self, directory: MeterDirectory, tracker: InvocationCounterTracker | None = None
    ) -> None:
        self.directory = directory
        self.tracker = tracker or InvocationCounterTracker()

    def decode(self, apdu: bytes) -> PushedData:
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            system_title = gcm.general_glo_system_title(apdu)
            known = self.directory.by_system_title(system_title)
            if known is None or known.keys is None:
                raise PushRejected(f"push from unknown system title {system_title.hex()}")
            keys = known.keys
            clear = gcm.general_glo_decipher(apdu, lambda _st: keys)
            try:
                self.tracker.accept(system_title, clear.invocation_counter)
            except SecurityViolation as exc:
                raise PushRejected(f"replayed or rewound push: {exc}") from None
            data = self._parse(clear.apdu)  # the system title authenticates, not the name
            return PushedData(
                known.mrid,
                data.logical_device_name,
                data.ts,
                data.import_wh,
                data.export_wh,
                True,
                system_title,
            )
        data = self._parse(apdu)
        known = self.directory.by_logical_device_name(data.logical_device_name)
        if known is not None and known.keys is not None:
            raise PushRejected(f"plain push for secured meter {known.mrid}")
        return PushedData(
            known.mrid if known else None,
            data.logical_device_name,
            data.ts,
            data.import_wh,
            data.export_wh,
            False,
        )

    @staticmethod
    def _parse(apdu: bytes) -> PushedData:
        if len(apdu) < 6 or apdu[0] != DATA_NOTIFICATION:
            raise PushRejected("not a DataNotification")
        pos = 5
        if apdu[pos] == 0x0C:  # optional date-time
            pos += 13
        elif apdu[pos] == 0x00:
            pos += 1
        else:
            raise PushRejected("bad DataNotification date-time")
        try:
            body = axdr.decode_all(apdu[pos:])
        except axdr.AxdrError as exc:
            raise PushRejected(f"bad notification body: {exc}") from None
        if (
            not isinstance(body, list)
            or len(body) != 4
            or not isinstance(body[0], bytes)
            or not isinstance(body[1], bytes)
            or not isinstance(body[2], int)
            or not isinstance(body[3], int)
        ):
            raise PushRejected("unexpected notification body")
        return PushedData(
            None,
            body[0].decode("ascii", "replace"),
            compat.decode_datetime(body[1]),
            Decimal(body[2]),
            Decimal(body[3]),
            False,
        )


class MdmPushSink:
    """Stores accepted pushes: +A / -A as register readings of known meters; a meter
    nobody knows is registered as DISCOVERED (mRID ``DISCOVERED-<logical device name>``)."""

    def __init__(self, uow_factory: UnitOfWorkFactory, utility_code: str) -> None:
        self.uow_factory = uow_factory
        self.utility_code = utility_code
        self._lock = threading.Lock()

    def __call__(self, data: PushedData) -> None:
        with self._lock, self.uow_factory() as uow:
            utility = uow.utilities.get(self.utility_code)
            if utility is None or utility.id is None:
                raise ConfigurationError(f"unknown utility {self.utility_code}")
            mrid = data.mrid
            if mrid is None:
                mrid = f"DISCOVERED-{data.logical_device_name}"
                if uow.devices.find(utility.id, DeviceRef(mrid=mrid)) is None:
                    uow.devices.add(
                        utility.id,
                        EndDevice(
                            mrid,
                            self.utility_code,
                            serial_number=data.logical_device_name,
                            state=DeviceState.DISCOVERED,
                        ),
                    )
            staging = uow.readings.staging()
            staging.add_meter(1, DeviceRef(mrid=mrid))
            staging.add_readings(
                [
                    StagedReading(1, str(obis_to_reading_type(obis)), data.ts, wh / 1000, "")
                    for obis, wh in (
                        ("1.0.1.8.0.255", data.import_wh),
                        ("1.0.2.8.0.255", data.export_wh),
                    )
                ]
            )
            staging.apply(utility.id)
            uow.commit()


PushHandler = Callable[[PushedData], None]
SecurityHandler = Callable[[SecurityEvent], None]


class PushListener:
    """asyncio TCP listener for WRAPPER-framed pushes; runs in its own thread."""

    def __init__(
        self,
        decoder: PushDecoder,
        on_push: PushHandler,
        on_security_event: SecurityHandler,
        host: str = "127.0.0.1",
        port: int = 4059,
    ) -> None:
        self.decoder = decoder
        self.on_push = on_push
        self.on_security_event = on_security_event
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dlms-push", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(wrapper.HEADER_SIZE)
                _source, _destination, length = wrapper.parse_header(header)
                apdu = await reader.readexactly(length)
                self.handle(apdu)
        except (asyncio.IncompleteReadError, ConnectionError, wrapper.FrameError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def handle(self, apdu: bytes) -> None:
        system_title = None
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            with contextlib.suppress(SecurityViolation):
                system_title = gcm.general_glo_system_title(apdu)
        try:
            data = self.decoder.decode(apdu)
        except SecurityViolation as exc:
            log.warning("push rejected: %s", exc)
            self.on_security_event(SecurityEvent(str(exc), system_title, datetime.now(UTC)))
            return
        self.on_push(data)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, self.host, self.port, reuse_address=True)
        )
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for w in list(self._writers):
            w.close()
        self._loop.run_until_complete(self._server.wait_closed())
        tasks = [t for t in asyncio.all_tasks(self._loop)]
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> PushListener:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
