"""A fleet of simulated meters behind asyncio TCP listeners (DLMS WRAPPER).

Two addressings, the same code:

* ``shared`` (default): ONE listening port for the whole fleet; the WRAPPER
  destination wPort selects the meter (wPort = meter index + 1, up to 65,534
  meters a port), like logical devices behind a gateway. This is what scales
  to 10,000 meters on a 2-core machine: one socket to accept on, no fd or
  ephemeral-port pressure from 10,000 listeners, and an idle meter costs only
  its small :class:`MeterState` (its gurux server is built per association).
* ``per-port``: meter i listens on base_port + i with wPort 1, as a real
  meter with its own IP/port would; fine for tens or hundreds of meters.

The DLMS work per request is CPU-bound and short (well under a millisecond),
so it runs inline on the event loop: one core serves the fleet while the
reading engine uses the other. More cores: run several simulator processes on
disjoint index ranges.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from hes.dlms import wrapper
from hes.dlms.wrapper import WrapperFrame
from hes.push import event_notification, notification
from hes.security import gcm
from hes.security.gcm import InvocationCounter, SecurityKeys
from hes.simulator.meter import MeterState, SecurityPolicy, interval_end, make_meter
from hes.simulator.session import ServerSession

log = logging.getLogger(__name__)

#: a restarted meter resumes its own counter this far beyond the last saved value:
#: state is saved every 10 s, and no meter sends 10,000 APDUs in 10 s
COUNTER_RESTART_GAP = 10_000

PUSH_CLIENT = 0x66  # the head-end's push destination SAP (IDIS uses 102)


class Addressing(StrEnum):
    SHARED = "shared"
    PER_PORT = "per-port"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    logical_device: int


@dataclass
class Fleet:
    meters: list[MeterState]
    base_port: int
    host: str = "127.0.0.1"
    addressing: Addressing = Addressing.SHARED
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    security_events: list[tuple[str, str]] = field(default_factory=list)  # (serial, reason)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set, repr=False)

    @classmethod
    def build(
        cls,
        count: int,
        base_port: int,
        seed: int = 1,
        policy: SecurityPolicy = SecurityPolicy.HLS_GMAC,
        addressing: Addressing = Addressing.SHARED,
        host: str = "127.0.0.1",
    ) -> Fleet:
        if addressing is Addressing.SHARED and count > 0xFFFE:
            raise ValueError("one shared port addresses at most 65,534 meters")
        return cls([make_meter(i, seed, policy) for i in range(count)], base_port, host, addressing)

    def endpoint(self, index: int) -> Endpoint:
        if self.addressing is Addressing.SHARED:
            return Endpoint(self.host, self.base_port, index + 1)
        return Endpoint(self.host, self.base_port + index, wrapper.MANAGEMENT_LOGICAL_DEVICE)

    def _meter_for(self, port: int, logical_device: int) -> MeterState | None:
        if self.addressing is Addressing.SHARED:
            index = logical_device - 1
        else:
            if logical_device != wrapper.MANAGEMENT_LOGICAL_DEVICE:
                return None
            index = port - self.base_port
        return self.meters[index] if 0 <= index < len(self.meters) else None

    # --- push ---
    def push_frame(self, index: int, *, ciphered: bool = True, at: datetime | None = None) -> bytes:
        """The WRAPPER frame of one DataNotification of meter ``index`` (its registers at
        the last interval end), general-glo-ciphered with the meter's keys and counter."""
        meter = self.meters[index]
        k = meter.current_interval(at or self.now())
        apdu = notification(
            meter.logical_device_name.encode(),
            interval_end(k),
            meter.energy_wh(k),
            meter.export_wh(k),
        )
        if ciphered:
            apdu = gcm.general_glo_cipher(
                apdu,
                keys=meter.keys,
                system_title=meter.system_title,
                invocation_counter=meter.next_counter(),
            )
        return WrapperFrame(wrapper.MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, apdu).encode()

    def alarm_frame(
        self, index: int, code: int, *, ciphered: bool = True, at: datetime | None = None
    ) -> bytes:
        """An alarm push of meter ``index``: the event ``code`` is logged by the meter (its
        event log has it too) and pushed as {logical device name, clock, code}."""
        meter = self.meters[index]
        ts = (at or self.now()).replace(microsecond=0)
        with meter.lock:
            meter.events.append((ts, code))
        apdu = event_notification(meter.logical_device_name.encode(), ts, code)
        if ciphered:
            apdu = gcm.general_glo_cipher(
                apdu,
                keys=meter.keys,
                system_title=meter.system_title,
                invocation_counter=meter.next_counter(),
            )
        return WrapperFrame(wrapper.MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, apdu).encode()

    @staticmethod
    def send_push(frame: bytes, host: str, port: int) -> None:
        """Deliver a push frame to a head-end listener (blocking, for tests and the demo)."""
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(frame)

    def _security_event(self, serial: str, reason: str) -> None:
        self.security_events.append((serial, reason))

    # --- IO ---
    async def _connection(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sessions: dict[int, ServerSession] = {}
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(wrapper.HEADER_SIZE)
                source, destination, length = wrapper.parse_header(header)
                apdu = await reader.readexactly(length)
                meter = self._meter_for(port, destination)
                if meter is None:
                    continue  # no such logical device: silence, as a gateway would
                faults = meter.faults
                meter.requests += 1
                if faults.no_answer:
                    continue
                session = sessions.get(destination)
                if session is None:
                    session = ServerSession(
                        meter,
                        destination,
                        self.now,
                        functools.partial(self._security_event, meter.serial),
                    )
                    sessions[destination] = session
                try:
                    out = session.handle(source, apdu)
                except Exception:  # a simulator bug must not kill the fleet: log, drop
                    log.exception("meter %s: request %s failed", meter.serial, apdu[:16].hex())
                    break
                if faults.drop_mid_profile and session.block_number >= 2:
                    break  # the meter goes away in the middle of a block transfer
                if session.objects.drop_requested:
                    break
                if out is None:
                    continue
                if faults.slow_answer_s:
                    await asyncio.sleep(faults.slow_answer_s)
                writer.write(WrapperFrame(destination, source, out).encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, wrapper.FrameError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def close_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def start(self) -> list[asyncio.Server]:
        ports = (
            [self.base_port]
            if self.addressing is Addressing.SHARED
            else [self.base_port + i for i in range(len(self.meters))]
        )
        servers: list[asyncio.Server] = []
        try:
            for port in ports:
                servers.append(
                    await asyncio.start_server(
                        functools.partial(self._connection, port),
                        self.host,
                        port,
                        backlog=1024,
                        reuse_address=True,
                    )
                )
        except OSError:
            for server in servers:
                server.close()
                await server.wait_closed()
            raise
        return servers

    # --- state across restarts ---
    def save_state(self, path: Path) -> None:
        """Invocation counters of every meter (its own, and the last accepted per client),
        and the keys of meters whose keys were changed (simulation only: in clear)."""
        state: dict[str, dict[str, object]] = {}
        for m in self.meters:
            state[m.serial] = {
                "counter": m.counter.value,
                "clients": {str(k): v for k, v in m.client_counters.items()},
            }
            if m.key_changes:
                ek, ak = m.keys.encryption_key, m.keys.authentication_key
                state[m.serial]["keys"] = [ek.hex(), ak.hex(), m.kek.hex()]
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)

    def load_state(self, path: Path) -> int:
        """Resume counters; each meter's own counter jumps by COUNTER_RESTART_GAP so no value
        used after the last save can repeat. Returns how many meters were restored."""
        if not path.exists():
            return 0
        state = json.loads(path.read_text())
        restored = 0
        for m in self.meters:
            saved = state.get(m.serial)
            if saved is None:
                continue
            m.counter = InvocationCounter(int(saved["counter"]) + COUNTER_RESTART_GAP)
            m.client_counters = {int(k): int(v) for k, v in saved["clients"].items()}
            if "keys" in saved:  # changed by a key transfer before the restart
                ek, ak, kek = (bytes.fromhex(x) for x in saved["keys"])
                m.keys, m.kek, m.key_changes = SecurityKeys(ek, ak), kek, 1
            restored += 1
        return restored

    async def serve_forever(self, state: Path | None = None, save_every_s: float = 10.0) -> None:
        servers = await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), save_every_s)
                if state is not None:
                    self.save_state(state)
        finally:
            for s in servers:
                s.close()
            if state is not None:
                self.save_state(state)


class SimulatorThread:
    """Runs a fleet's listeners on an event loop in a background thread (tests, demo)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dlms-simulator", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._servers = self._loop.run_until_complete(self.fleet.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            for server in self._servers:
                server.close()
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        for s in self._servers:
            s.close()
        self._loop.run_until_complete(self._shutdown())
        self._loop.close()

    async def _shutdown(self) -> None:
        self.fleet.close_connections()
        await asyncio.sleep(0)
        for s in self._servers:
            await s.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            self._thread.join(10)
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
