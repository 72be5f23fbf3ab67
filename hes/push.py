"""Push listener: meters send DataNotification APDUs (plain or general-glo-ciphered).

Protocol logic (:class:`PushDecoder`) is pure; :class:`PushListener` is the asyncio
TCP side (WRAPPER frames). A ciphered push is accepted only if its sender's system
title is known, its tag verifies and its invocation counter goes forward (a replayed
or rewound push is rejected and reported as a security event). A plain push names
its meter by logical device name: it is refused unless the decoder accepts
unauthenticated pushes (``[hes.push] accept_unauthenticated``) and the directory knows
that meter without keys; a plain push of a meter nobody knows is always refused.

Keys: the meter's active keys, then its pending keys (a key change not settled yet:
the meter may already use them); when both fail the tag and the decoder has a
``refresh`` (the directory re-reading a changed key store file), it is called once
and the push tried again with the keys it then gives.

The notification bodies amihub's meters push (and this decoder reads), as IDIS
push setups capture identification, time and then registers or an event:

* data: structure {logical device name, clock, +A (Wh), -A (Wh)};
* alarm / event: structure {logical device name, clock, event code (long-unsigned)},
  the event as the meter also logs it (so a later read of the log is the same event).

The listener hands accepted pushes (:class:`PushedData`) and refused ones
(:class:`SecurityEvent`) to the callbacks it is given; it stores nothing. The
application stores them (:class:`hub.push_store.MdmPushSink`: registers as readings,
events as EndDeviceEvents, refused pushes as security EndDeviceEvents). ``amihub
serve`` runs the listener with ``[hes.push]`` (adapters/dlms/push_service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from cim_schemas.errors import AmihubError, SecurityViolation
from hes.client.session import KeyRole, MeterEvent
from hes.dlms import axdr, compat, wrapper
from hes.meter_events import (
    SecurityKind,
)
from hes.security import gcm
from hes.security.gcm import InvocationCounterTracker, SecurityKeys

log = logging.getLogger(__name__)

DATA_NOTIFICATION = 0x0F


@dataclass(frozen=True)
class KnownMeter:
    mrid: str
    keys: SecurityKeys | None = None
    #: keys of a key change not settled yet (tried when ``keys`` fail the tag)
    pending_keys: SecurityKeys | None = None

    def __repr__(self) -> str:  # never the keys
        return f"KnownMeter({self.mrid})"


class MeterDirectory(Protocol):
    """How the listener finds a pushing meter."""

    def by_system_title(self, system_title: bytes) -> KnownMeter | None: ...

    def by_logical_device_name(self, name: str) -> KnownMeter | None: ...


@dataclass(frozen=True)
class PushedData:
    """One accepted push: registers (a data push) or events (an alarm push)."""

    mrid: str | None  # None only before the decoder named the meter
    logical_device_name: str
    ts: datetime
    import_wh: Decimal | None  # None: an alarm / event push
    export_wh: Decimal | None
    ciphered: bool
    system_title: bytes | None = None
    events: tuple[MeterEvent, ...] = ()
    #: which of the meter's keys verified the push (PENDING: a key change not settled)
    key_role: KeyRole = KeyRole.ACTIVE
    #: a ciphered push's invocation counter (checked again against the store when stored)
    invocation_counter: int | None = None
    #: the frame as received (kept in the security event if the store refuses it)
    apdu: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SecurityEvent:
    reason: str
    system_title: bytes | None
    at: datetime
    kind: SecurityKind = SecurityKind.VIOLATION
    mrid: str | None = None  # the meter concerned, when known
    apdu: bytes | None = None  # the refused frame, kept in the security event


class PushRejected(SecurityViolation):
    """The push was refused; the message says why (recorded as a security event)."""

    def __init__(
        self, message: str, kind: SecurityKind = SecurityKind.VIOLATION, mrid: str | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.mrid = mrid


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


def event_notification(ldn: bytes, ts: datetime, code: int, invoke: int = 1) -> bytes:
    """An alarm / event DataNotification: {logical device name, clock, event code}."""
    body = (
        b"\x02\x03\x09"
        + bytes([len(ldn)])
        + ldn
        + b"\x09\x0c"
        + compat.encode_datetime(ts)
        + b"\x12"
        + code.to_bytes(2, "big")
    )
    return bytes([DATA_NOTIFICATION]) + invoke.to_bytes(4, "big") + b"\x00" + body


class PushDecoder:
    """Verifies and decodes pushes. Thread-safe (the tracker is).

    ``refresh``: called when a push fails the tag with every key the directory gives;
    True when the directory took new keys in (then the push is tried once more)."""

    def __init__(
        self,
        directory: MeterDirectory,
        tracker: InvocationCounterTracker | None = None,
        *,
        refresh: Callable[[], bool] | None = None,
        accept_unauthenticated: bool = False,
    ) -> None:
        self.directory = directory
        self.tracker = tracker or InvocationCounterTracker()
        self.refresh = refresh
        #: plain pushes of meters the directory knows without keys (LLS meters) are
        #: accepted; off by default: every unauthenticated push is refused
        self.accept_unauthenticated = accept_unauthenticated

    def _decipher(self, apdu: bytes, known: KnownMeter) -> tuple[gcm.Deciphered, KeyRole]:
        """Verify with the active keys, then the pending ones (tag failures only)."""
        tried = [(known.keys, KeyRole.ACTIVE), (known.pending_keys, KeyRole.PENDING)]
        failure: SecurityViolation | None = None
        for keys, role in tried:
            if keys is None:
                continue
            try:
                return gcm.general_glo_decipher(apdu, _always(keys)), role
            except SecurityViolation as exc:
                if not _tag_failure(exc):
                    raise
                failure = failure or exc
        assert failure is not None  # known.keys is set
        raise failure

    def _deciphered(
        self, apdu: bytes, system_title: bytes
    ) -> tuple[KnownMeter, gcm.Deciphered, KeyRole]:
        known = self.directory.by_system_title(system_title)
        if known is None or known.keys is None:
            raise PushRejected(
                f"push from unknown system title {system_title.hex()}",
                SecurityKind.UNKNOWN_SENDER,
            )
        try:
            return (known, *self._decipher(apdu, known))
        except SecurityViolation as exc:
            if _tag_failure(exc) and self.refresh is not None and self.refresh():
                again = self.directory.by_system_title(system_title)
                if again is not None and again.keys is not None:
                    known = again
                    try:
                        return (known, *self._decipher(apdu, known))
                    except SecurityViolation as retry:
                        exc = retry
            kind = (
                SecurityKind.AUTHENTICATION_FAILED if _tag_failure(exc) else SecurityKind.VIOLATION
            )
            raise PushRejected(f"push refused: {exc}", kind, known.mrid) from None

    def decode(self, apdu: bytes) -> PushedData:
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            system_title = gcm.general_glo_system_title(apdu)
            sender, clear, role = self._deciphered(apdu, system_title)
            if role is KeyRole.PENDING:
                log.info(
                    "push from %s verified with its pending keys (key change not settled)",
                    sender.mrid,
                )
            try:
                self.tracker.accept(system_title, clear.invocation_counter)
            except SecurityViolation as exc:
                raise PushRejected(
                    f"replayed or rewound push: {exc}", SecurityKind.REPLAY, sender.mrid
                ) from None
            try:  # the system title authenticates, not the name
                data = self._parse(clear.apdu)
            except PushRejected as exc:
                raise PushRejected(str(exc), exc.kind, sender.mrid) from None
            return replace(
                data,
                mrid=sender.mrid,
                ciphered=True,
                system_title=system_title,
                key_role=role,
                invocation_counter=clear.invocation_counter,
                apdu=apdu,
            )
        data = self._parse(apdu)
        known = self.directory.by_logical_device_name(data.logical_device_name)
        if known is not None and known.keys is not None:
            raise PushRejected(
                f"plain push for secured meter {known.mrid}",
                SecurityKind.PLAIN_FOR_SECURED,
                known.mrid,
            )
        if known is None:
            raise PushRejected(
                f"unauthenticated push from unknown meter {data.logical_device_name[:64]!r}: "
                "meters are registered from authenticated pushes only"
            )
        if not self.accept_unauthenticated:
            raise PushRejected(
                f"unauthenticated push from {known.mrid} refused "
                "([hes.push] accept_unauthenticated is off)",
                SecurityKind.VIOLATION,
                known.mrid,
            )
        return replace(data, mrid=known.mrid)

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
        if not isinstance(body, list) or len(body) not in (3, 4):
            raise PushRejected("unexpected notification body")
        name, clock, *values = body
        numbers = [v for v in values if isinstance(v, int)]
        if (
            not isinstance(name, bytes)
            or not isinstance(clock, bytes)
            or len(numbers) != len(values)
        ):
            raise PushRejected("unexpected notification body")
        ldn = name.decode("ascii", "replace")
        try:
            ts = compat.decode_datetime(clock)
        except compat.BadDateTime as exc:
            raise PushRejected(f"bad notification clock: {exc}") from None
        if len(numbers) == 1:  # alarm / event push
            return PushedData(
                None, ldn, ts, None, None, False, events=(MeterEvent(ts, numbers[0]),)
            )
        return PushedData(None, ldn, ts, Decimal(numbers[0]), Decimal(numbers[1]), False)


def _always(keys: SecurityKeys) -> Callable[[bytes], SecurityKeys]:
    return lambda _system_title: keys


def _tag_failure(exc: SecurityViolation) -> bool:
    return "tag" in str(exc)


PushHandler = Callable[[PushedData], None]
SecurityHandler = Callable[[SecurityEvent], None]


class PushListener:
    """asyncio TCP listener for WRAPPER-framed pushes; runs in its own thread.

    ``port`` 0 binds any free port (:attr:`port` is the one bound once started). A
    frame announcing more than ``max_frame_bytes`` or with a bad WRAPPER header is
    refused (a security event with the header, one warning line) and its connection
    closed: the stream cannot be trusted past it. A connection silent for
    ``idle_timeout`` seconds is closed. Every refused push gives one warning line
    naming the sender's system title (or ``-``), its address and the reason; never
    key material. ``on_push`` runs in the listener's thread: while it blocks (a full
    writer queue) the listener reads nothing, which TCP passes on to the meters."""

    def __init__(
        self,
        decoder: PushDecoder,
        on_push: PushHandler,
        on_security_event: SecurityHandler,
        host: str = "127.0.0.1",
        port: int = 4059,
        *,
        max_frame_bytes: int = wrapper.MAX_APDU,
        idle_timeout: float | None = None,
    ) -> None:
        self.decoder = decoder
        self.on_push = on_push
        self.on_security_event = on_security_event
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self._loop: asyncio.AbstractEventLoop | None = None  # made by the listener's thread
        self._thread = threading.Thread(target=self._run, name="dlms-push", daemon=True)
        self._ready = threading.Event()
        self._failed: OSError | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = _peer(writer)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(
                        reader.readexactly(wrapper.HEADER_SIZE), self.idle_timeout
                    )
                except TimeoutError:
                    log.info("push connection from %s closed: silent %ss", peer, self.idle_timeout)
                    return
                try:
                    _source, _destination, length = wrapper.parse_header(header)
                except wrapper.FrameError as exc:
                    self._refuse(f"bad WRAPPER header from {peer}: {exc}", None, header, peer)
                    return
                if length > self.max_frame_bytes:
                    self._refuse(
                        f"frame of {length} bytes from {peer} is over the limit of "
                        f"{self.max_frame_bytes} bytes (max_frame_bytes)",
                        None,
                        header,
                        peer,
                    )
                    return
                try:
                    apdu = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                except TimeoutError:
                    log.warning(
                        "push connection from %s closed: a frame of %d bytes not complete "
                        "after %ss",
                        peer,
                        length,
                        self.idle_timeout,
                    )
                    return
                self.handle(apdu, peer)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.warning(
                    "push connection from %s closed in the middle of a frame (%d bytes lost)",
                    peer,
                    len(exc.partial),
                )
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    def _refuse(
        self,
        reason: str,
        system_title: bytes | None,
        frame: bytes,
        peer: str,
        kind: SecurityKind = SecurityKind.VIOLATION,
        mrid: str | None = None,
    ) -> None:
        log.warning(
            "push refused from system title %s (%s): %s",
            system_title.hex() if system_title else "-",
            peer,
            reason,
        )
        self.on_security_event(
            SecurityEvent(reason, system_title, datetime.now(UTC), kind, mrid, frame)
        )

    def handle(self, apdu: bytes, peer: str = "-") -> None:
        system_title = None
        if apdu[:1] == bytes([gcm.ApduTag.GENERAL_GLO_CIPHERING]):
            with contextlib.suppress(SecurityViolation):
                system_title = gcm.general_glo_system_title(apdu)
        try:
            data = self.decoder.decode(apdu)
        except PushRejected as exc:
            self._refuse(str(exc), system_title, apdu, peer, exc.kind, exc.mrid)
            return
        except SecurityViolation as exc:
            self._refuse(str(exc), system_title, apdu, peer)
            return
        except (AmihubError, ValueError, IndexError) as exc:  # a field the decoder did not expect
            self._refuse(f"malformed push: {type(exc).__name__}: {exc}", system_title, apdu, peer)
            return
        self.on_push(data)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, self.host, self.port, reuse_address=True)
            )
        except OSError as exc:
            self._failed = exc
            self._ready.set()
            loop.close()
            return
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        loop.run_forever()
        self._server.close()
        for w in list(self._writers):
            w.close()
        loop.run_until_complete(self._server.wait_closed())
        tasks = list(asyncio.all_tasks(loop))
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    def start(self) -> None:
        """Bind and listen (in the listener's thread); raises the OSError of the bind."""
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError(f"push listener on {self.host}:{self.port} did not start")
        if self._failed is not None:
            self._thread.join(10)
            raise self._failed

    def stop(self) -> None:
        """Stop listening and close the connections (a frame being read is dropped)."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def __enter__(self) -> PushListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
