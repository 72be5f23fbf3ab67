"""The ONE module of patches over gurux-dlms (1.0.203), and the only place `Any` lives.

gurux's client side is solid; its server side is half-finished (see the shared
DEPENDENCIES.md). The simulator uses gurux's server classes for the xDLMS data
services (GET normal / next block, SET, ACTION dispatch and A-XDR encoding of
the COSEM objects). Association (ACSE) and all ciphering are ours
(:mod:`hes.dlms.acse`, :mod:`hes.security.gcm`), so no gurux security code runs.

Every patch below has a docstring saying what it fixes, and a test in
``tests/unit/hes/test_compat.py`` that shows the stock class failing and the
patched one working. Patches are subclasses or explicit helper functions: no
global monkeypatching, so importing this module changes nothing in gurux.

Patches:

1. :class:`CompatServerReply`: the server calls ``setReply``, ``getConnectionInfo``,
   ``getCount``/``setCount`` that GXServerReply does not have.
2. :class:`CompatServer`: the server (and its LN command handler) calls
   ``notifyRead``, ``onPostRead()`` without arguments, ``getTransaction``,
   ``setTransaction``, ``notifyConnected`` that do not exist.
3. :class:`CompatServer` ``maxReceivePDUSize``: the stock property recurses forever.
4. :func:`prepare_server`: ``initialize()`` needs the association's object list
   filled first, and a GET-next-block reads the misspelled ``settings.gbtWndowSize``.
5. :func:`mark_server_associated` / :func:`mark_client_associated`: gurux's own
   AARQ/AARE path is bound to its unsafe ciphering; after our ACSE accepted an
   association, these put gurux's settings into the associated state.
6. :func:`set_scaler_unit`: gurux's Register ``scaler`` is the multiplier 10^x,
   not the exponent the standard transmits; an exponent <= 0 crashes the server.
7. :class:`CompatDisconnectControl`: the disconnect control has no server
   handler (methods 1/2 fail); ours changes output/control state through a callback.
8. :class:`CompatProfileGeneric`: profile reads by range / by entry crash inside
   the library; ours encodes the buffer from a callback, selective access decoded here.
9. :func:`install_value_event_args_iter` (the one global patch, idempotent): the
   server's ACTION path calls ``list(e)`` on a single ValueEventArgs (meaning
   ``[e]``) and every method call dies in a TypeError.
10. :func:`install_ln_parameters_accessors` (global, idempotent): the SET path calls
    ``p.isMultipleBlocks()`` and ``p.setStatus()`` that GXDLMSLNParameters lacks:
    every SET (e.g. clock synchronisation) fails.
11. :func:`server_handle_apdu`: gurux's handleRequest works on WRAPPER frames and
   swallows its own exceptions (``receivedData.size(0)`` on an int); this turns
   it into APDU in, APDU out, and raises :class:`GuruxFailure` instead.
12. :class:`CompatLimiter`: GXDLMSLimiter cannot answer a GET of its thresholds or
   durations (no data type: the server fails), so ours encodes them from a callback.
13. :class:`CompatActivityCalendar`: GXDLMSActivityCalendar has no server handler for
   activate_passive_calendar (method 1): every call fails.
14. :class:`CompatImageTransfer`: GXDLMSImageTransfer's image_block_transfer crashes
   (``longValue()`` on an int, assignment into bytes), image_verify accepts any image
   without checking it, and GET image_to_activate_info fails after an initiate;
   ours hands every attribute and method to callbacks.
15. :meth:`CompatServer.onPreWrite`: gurux's SET path ignores the error a ``setValue``
   reports (a refused write is answered success); objects answered by callbacks
   (12-14) write in onPreWrite, whose error gurux does answer.
16. :class:`CompatSecuritySetup`: GXDLMSSecuritySetup's global_key_transfer (method 2)
   unwraps with gurux's own settings.kek (absent on our server: every call fails),
   throws the unwrapped keys away, then ``applyKeys`` unwraps them again into gurux's
   cipher settings; ours hands the method to a callback and applies nothing in gurux.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gurux_dlms import (
    GXByteBuffer,
    GXDLMSClient,
    GXDLMSLongTransaction,
    GXDLMSServer,
    GXReplyData,
    GXServerReply,
)
from gurux_dlms.enums import (
    AccessMode,
    Authentication,
    DataType,
    ErrorCode,
    InterfaceType,
    MethodAccessMode,
    ObjectType,
    SourceDiagnostic,
)
from gurux_dlms.objects import (
    GXDLMSActivityCalendar,
    GXDLMSAssociationLogicalName,
    GXDLMSDisconnectControl,
    GXDLMSImageTransfer,
    GXDLMSLimiter,
    GXDLMSObject,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
    GXDLMSSecuritySetup,
)

from cim_schemas.errors import PermanentError
from hes.dlms.wrapper import WrapperFrame, decode

GuruxObject = Any  # a gurux COSEM object: untyped library, kept inside hes.dlms


class GuruxFailure(RuntimeError):
    """gurux could not handle or produce an APDU."""


# --- 1. server reply ------------------------------------------------------------------


class CompatServerReply(GXServerReply):  # type: ignore[misc]
    """Adds the accessors GXDLMSServer.handleRequest/handleCommand call but
    GXServerReply 1.0.203 does not define (``setReply``, ``getConnectionInfo``,
    ``getCount``, ``setCount``): without them every request dies in an
    AttributeError that handleRequest then swallows."""

    def setReply(self, value: Any) -> None:  # noqa: N802 (gurux's name)
        self.reply = value

    def getConnectionInfo(self) -> Any:  # noqa: N802
        return self.connectionInfo

    def getCount(self) -> int:  # noqa: N802
        return int(self.count)

    def setCount(self, value: int) -> None:  # noqa: N802
        self.count = value


class CompatLongTransaction(GXDLMSLongTransaction):  # type: ignore[misc]
    """GET-next-block calls ``transaction.setData(bb)``, which GXDLMSLongTransaction
    lacks: every second block of a long GET failed (and gurux then appended an error
    PDU to the half-sent block)."""

    def setData(self, value: Any) -> None:  # noqa: N802
        self.data = value


# --- 2./3. server ---------------------------------------------------------------------


class CompatServer(GXDLMSServer):  # type: ignore[misc]
    """GXDLMSServer with the callbacks its own code calls but never defined.

    * ``notifyRead()``, ``onPostRead()`` (called with no arguments),
      ``getTransaction``/``setTransaction`` (the LN handler's GET path and block
      transfer), ``notifyConnected``: missing in 1.0.203;
    * ``maxReceivePDUSize``: the stock property getter returns itself (RecursionError);
      here it is the server's PDU size in the settings;
    * access rights: everything readable, every method allowed (the simulator
      decides access before gurux sees a request).
    """

    def __init__(self) -> None:
        super().__init__(True, InterfaceType.WRAPPER)

    # the missing callbacks
    def notifyRead(self, *args: Any) -> None:  # noqa: N802
        return None

    def onPreRead(self, *args: Any) -> None:  # noqa: N802
        return None

    def onPostRead(self, *args: Any) -> None:  # noqa: N802
        return None

    def onPreWrite(self, *args: Any) -> None:  # noqa: N802
        """Patch 15: gurux ignores ``e.error`` set by ``setValue`` (a refused write is
        answered success); an error set here, before ``setValue``, is answered."""
        for e in args[0] if args else ():
            if isinstance(e.target, _Delegated):
                e.target.setValue(self.settings, e)
                e.handled = True

    def onPostWrite(self, *args: Any) -> None:  # noqa: N802
        return None

    def onPreAction(self, *args: Any) -> None:  # noqa: N802
        return None

    def onPostAction(self, *args: Any) -> None:  # noqa: N802
        return None

    def getTransaction(self) -> Any:  # noqa: N802
        return self.transaction

    def setTransaction(self, value: Any) -> None:  # noqa: N802
        if value is not None and not isinstance(value, CompatLongTransaction):
            value.__class__ = CompatLongTransaction
        self.transaction = value

    def reportError(self, command: Any, error: Any) -> Any:  # noqa: N802
        """Stock: called from handleRequest's catch-all, appends an error PDU to the
        half-built reply (two PDUs in one frame). Here: clear, and let it surface."""
        self.replyData.clear()
        self.transaction = None
        raise GuruxFailure(f"gurux server failed handling command {command!r}")

    def notifyConnected(self, *args: Any) -> None:  # noqa: N802
        return None

    def onConnected(self, *args: Any) -> None:  # noqa: N802
        return None

    def onDisconnected(self, *args: Any) -> None:  # noqa: N802
        return None

    def onInvalidConnection(self, *args: Any) -> None:  # noqa: N802
        return None

    def onFindObject(self, *args: Any) -> None:  # noqa: N802
        return None

    def isTarget(self, *args: Any) -> bool:  # noqa: N802
        return True

    def onValidateAuthentication(self, *args: Any) -> Any:  # noqa: N802
        return SourceDiagnostic.NONE

    def onGetAttributeAccess(self, *args: Any) -> Any:  # noqa: N802
        return AccessMode.READ_WRITE

    def onGetMethodAccess(self, *args: Any) -> Any:  # noqa: N802
        return MethodAccessMode.ACCESS

    # the recursing property
    def getMaxReceivePDUSize(self) -> int:  # noqa: N802
        return int(self.settings.maxServerPDUSize)

    def setMaxReceivePDUSize(self, value: int) -> None:  # noqa: N802
        self.settings.maxServerPDUSize = value

    maxReceivePDUSize = property(getMaxReceivePDUSize, setMaxReceivePDUSize)  # noqa: N815


# --- 9. ACTION path -----------------------------------------------------------------------


def _value_event_args_iter(self: Any) -> Any:
    return iter([self])


def install_value_event_args_iter() -> None:
    """Make ``list(ValueEventArgs)`` the one-element list gurux's ACTION handler meant.

    GXDLMSLNCommandHandler.handleMethodRequest calls ``server.onPreAction(list(e))``
    on one ValueEventArgs: TypeError (not iterable), so no method can be invoked on
    a gurux server. Installed once on the class (the only global patch here)."""
    from gurux_dlms import ValueEventArgs

    if getattr(ValueEventArgs, "__iter__", None) is not _value_event_args_iter:
        ValueEventArgs.__iter__ = _value_event_args_iter


def _is_multiple_blocks(self: Any) -> bool:
    return bool(self.multipleBlocks)


def _set_status(self: Any, value: Any) -> None:
    self.status = value


def install_ln_parameters_accessors() -> None:
    """Add ``isMultipleBlocks`` / ``setStatus`` to GXDLMSLNParameters.

    GXDLMSLNCommandHandler.handleSetRequestNormal calls both; the class only has
    the plain attributes, so every SET fails in an AttributeError."""
    from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters

    if getattr(GXDLMSLNParameters, "isMultipleBlocks", None) is not _is_multiple_blocks:
        GXDLMSLNParameters.isMultipleBlocks = _is_multiple_blocks
    if getattr(GXDLMSLNParameters, "setStatus", None) is not _set_status:
        GXDLMSLNParameters.setStatus = _set_status


# --- 4. initialisation ------------------------------------------------------------------


def prepare_server(server: CompatServer, objects: list[GuruxObject], max_pdu: int) -> None:
    """Add the objects and initialise the server.

    Fixes: ``initialize()`` appends the whole collection as ONE item to an empty
    association object list (TypeError), so the association LN's object list is
    filled here first; and GET-next-block reads ``settings.gbtWndowSize``
    (misspelled, AttributeError), so that attribute is set to the real window size.
    """
    association = GXDLMSAssociationLogicalName()
    server.items.append(association)
    for obj in objects:
        server.items.append(obj)
    for obj in list(server.items):
        association.objectList.append(obj)
    server.maxReceivePDUSize = max_pdu
    install_value_event_args_iter()
    install_ln_parameters_accessors()
    server.initialize()
    server.settings.gbtWndowSize = server.settings.gbtWindowSize


# --- 5. association state ---------------------------------------------------------------


def gurux_conformance(conformance: int) -> Any:
    """The standard's 24-bit conformance block (bit 0 = MSB) -> gurux's Conformance flags,
    which number the bits the other way round (bit 0 = 0x1)."""
    from gurux_dlms.enums import Conformance

    reversed_bits = int(f"{conformance & 0xFFFFFF:024b}"[::-1], 2)
    return Conformance(reversed_bits)


def mark_server_associated(server: CompatServer, conformance: int, max_pdu: int) -> None:
    """Our ACSE accepted the association: tell gurux's server so (negotiated
    conformance and PDU size, DLMS connected). gurux's own AARQ path would need
    its cipher object, which never checks tags."""
    from gurux_dlms.ConnectionState import ConnectionState

    server.settings.negotiatedConformance = gurux_conformance(conformance)
    server.settings.maxPduSize = max_pdu
    server.settings.connected = server.settings.connected | ConnectionState.DLMS


def mark_client_associated(client: GXDLMSClient, conformance: int, max_pdu: int) -> None:
    """Our ACSE (and HLS pass 3/4) established the association: put gurux's
    client into the associated state so ``read``/``readRowsBy*``/``method``
    build requests with the negotiated conformance and PDU size."""
    from gurux_dlms.ConnectionState import ConnectionState

    client.settings.negotiatedConformance = gurux_conformance(conformance)
    client.settings.maxPduSize = max_pdu
    client.settings.connected = client.settings.connected | ConnectionState.DLMS


def new_client(client_address: int, server_address: int) -> GXDLMSClient:
    """A plain LN WRAPPER client: gurux never ciphers and never authenticates here."""
    return GXDLMSClient(
        True, client_address, server_address, Authentication.NONE, None, InterfaceType.WRAPPER
    )


# --- 6. scaler -------------------------------------------------------------------------


def set_scaler_unit(register: GXDLMSRegister, exponent: int, unit: int) -> None:
    """Set the scaler as the standard means it (10^exponent).

    gurux stores ``scaler`` as the multiplier and sends ``floor(log10(scaler))``:
    assigning the exponent itself sends the wrong scaler (and crashes for 0 or
    a negative exponent: math domain error). Even 10.0**3 is sent as 2, because
    log10(1000.0) computes to 2.9999999999999996: the multiplier is nudged up."""
    register.scaler = 10.0**exponent * (1 + 1e-9)
    register.unit = unit


def scaler_exponent(register: GXDLMSRegister) -> int:
    """The exponent of a register read with gurux's client (it stores 10^x)."""
    return round(math.log10(register.scaler))


# --- 7. disconnect control ---------------------------------------------------------------


class CompatDisconnectControl(GXDLMSDisconnectControl):  # type: ignore[misc]
    """GXDLMSDisconnectControl has no ``invoke``: remote_disconnect (1) and
    remote_reconnect (2) fail in the server. ``on_action(method) -> ok`` does
    the state change; the new output/control state are read back from it."""

    def __init__(self, on_action: Callable[[int], bool], state: Callable[[], tuple[bool, int]]):
        super().__init__("0.0.96.3.10.255")
        self._on_action = on_action
        self._state = state

    def invoke(self, settings: Any, e: Any) -> None:
        if e.index not in (1, 2) or not self._on_action(int(e.index)):
            e.error = ErrorCode.READ_WRITE_DENIED

    def getValue(self, settings: Any, e: Any) -> Any:  # noqa: N802
        output, control = self._state()
        self.outputState = output
        self.controlState = control
        return super().getValue(settings, e)


# --- 12-14. limiter, activity calendar, image transfer --------------------------------

#: attribute -> its A-XDR encoding (type tag included), or None: access denied
ReadAttribute = Callable[[int], bytes | None]
#: (attribute, value gurux decoded) -> accepted
WriteAttribute = Callable[[int, Any], bool]
#: (method, parameters gurux decoded) -> accepted
InvokeMethod = Callable[[int, Any], bool]


class _Delegated:
    """Attributes 2.. and the methods of a COSEM object answered by callbacks.

    The values are encoded by the owner (the simulator), so gurux's own
    per-class encoders, data types and method handlers are never used."""

    def _delegate(self, read: ReadAttribute, write: WriteAttribute, act: InvokeMethod) -> None:
        self._read = read
        self._write = write
        self._act = act

    def getValue(self, settings: Any, e: Any) -> Any:  # noqa: N802
        if e.index == 1:
            e.byteArray = True
            ln: str = getattr(self, "logicalName", "")
            return b"\x09\x06" + bytes(int(x) for x in ln.split("."))
        raw = self._read(int(e.index))
        if raw is None:
            e.error = ErrorCode.READ_WRITE_DENIED
            return None
        e.byteArray = True
        return raw

    def setValue(self, settings: Any, e: Any) -> None:  # noqa: N802
        if e.index == 1 or not self._write(int(e.index), e.value):
            e.error = ErrorCode.READ_WRITE_DENIED

    def invoke(self, settings: Any, e: Any) -> None:
        if not self._act(int(e.index), e.parameters):
            e.error = ErrorCode.READ_WRITE_DENIED


def _no_method(method: int, parameters: Any) -> bool:
    return False


class CompatLimiter(_Delegated, GXDLMSLimiter):  # type: ignore[misc]
    """Limiter (class 71): stock GET of threshold_active/normal/emergency and the
    min over/under durations fails (gurux has no data type for them)."""

    def __init__(self, ln: str, read: ReadAttribute, write: WriteAttribute) -> None:
        GXDLMSLimiter.__init__(self, ln)
        self._delegate(read, write, _no_method)


class CompatActivityCalendar(_Delegated, GXDLMSActivityCalendar):  # type: ignore[misc]
    """Activity calendar (class 20): stock activate_passive_calendar (method 1) fails."""

    def __init__(
        self, ln: str, read: ReadAttribute, write: WriteAttribute, act: InvokeMethod
    ) -> None:
        GXDLMSActivityCalendar.__init__(self, ln)
        self._delegate(read, write, act)


class CompatImageTransfer(_Delegated, GXDLMSImageTransfer):  # type: ignore[misc]
    """Image transfer (class 18): stock image_block_transfer crashes, image_verify
    verifies nothing, image_to_activate_info cannot be read."""

    def __init__(
        self, ln: str, read: ReadAttribute, write: WriteAttribute, act: InvokeMethod
    ) -> None:
        GXDLMSImageTransfer.__init__(self, ln)
        self._delegate(read, write, act)


class CompatSecuritySetup(_Delegated, GXDLMSSecuritySetup):  # type: ignore[misc]
    """Security setup (class 64): stock global_key_transfer unwraps with a KEK our
    server never holds (``settings.kek`` None: TypeError) and throws the keys away;
    after a successful method 2 the command handler then calls ``applyKeys``, which
    unwraps again into gurux's own cipher settings. Ours: the callback does the
    transfer, ``applyKeys`` does nothing (gurux never holds a key)."""

    def __init__(
        self, ln: str, read: ReadAttribute, write: WriteAttribute, act: InvokeMethod
    ) -> None:
        GXDLMSSecuritySetup.__init__(self, ln)
        self._delegate(read, write, act)

    def applyKeys(self, settings: Any, e: Any) -> None:  # noqa: N802
        """The keys were applied by the callback; nothing goes into gurux's settings."""


# --- 8. profile generic -------------------------------------------------------------------


@dataclass(frozen=True)
class RangeSelection:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class EntrySelection:
    from_entry: int  # 1-based
    to_entry: int  # 0 = last


ProfileSelection = RangeSelection | EntrySelection | None


def encode_datetime(ts: datetime) -> bytes:
    """COSEM date-time (12 bytes), UTC with deviation 0."""
    ts = ts.astimezone(UTC)
    return (
        ts.year.to_bytes(2, "big")
        + bytes(
            [
                ts.month,
                ts.day,
                ts.isoweekday(),
                ts.hour,
                ts.minute,
                ts.second,
                ts.microsecond // 10000,
            ]
        )
        + b"\x00\x00\x00"
    )


class BadDateTime(PermanentError, ValueError):
    """A COSEM date-time that is no instant (wrong length, month 13, year 10218, ...).
    A ValueError too, for the gurux callbacks of the simulator that catch those."""


def decode_datetime(raw: bytes) -> datetime:
    """COSEM date-time (12 bytes) -> aware UTC datetime (deviation applied if given)."""
    if len(raw) != 12:
        raise BadDateTime(f"a COSEM date-time is 12 bytes, not {len(raw)}")
    year = int.from_bytes(raw[0:2], "big")
    hundredths = raw[8] if raw[8] != 0xFF else 0
    second = raw[7] if raw[7] != 0xFF else 0
    try:
        ts = datetime(year, raw[2], raw[3], raw[5], raw[6], second, hundredths * 10000, tzinfo=UTC)
        deviation = int.from_bytes(raw[9:11], "big", signed=True)
        if deviation != -0x8000:  # 0x8000 = not specified: take as UTC
            ts += timedelta(minutes=deviation)  # deviation = UTC - local, in minutes
    except (ValueError, OverflowError) as exc:
        raise BadDateTime(f"not a valid COSEM date-time {raw.hex()}: {exc}") from None
    return ts


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, bytes | bytearray):
        return decode_datetime(bytes(value))
    if hasattr(value, "value") and isinstance(value.value, datetime):
        dt: datetime = value.value
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    raise ValueError(f"not a date-time: {value!r}")


def parse_selection(selector: int, parameters: Any) -> ProfileSelection:
    """gurux's decoded selective-access parameters -> our selection."""
    if not selector:
        return None
    if selector == 1:
        return RangeSelection(_as_datetime(parameters[1]), _as_datetime(parameters[2]))
    if selector == 2:
        return EntrySelection(int(parameters[0]), int(parameters[1]))
    raise ValueError(f"unsupported selector {selector}")


class CompatProfileGeneric(GXDLMSProfileGeneric):  # type: ignore[misc]
    """Profile generic whose buffer (attribute 2) is ours.

    gurux's server crashes on reads by range and by entry (and would need the
    whole buffer as objects in memory). ``rows(selection) -> encoded array``
    returns the A-XDR array of the selected rows; gurux's block transfer sends it.
    """

    def __init__(
        self,
        ln: str,
        rows: Callable[[ProfileSelection], bytes],
        entries: Callable[[], int],
        capture_period: int,
    ) -> None:
        super().__init__(ln)
        self._rows = rows
        self._entries = entries
        self.capturePeriod = capture_period

    def getValue(self, settings: Any, e: Any) -> Any:  # noqa: N802
        if e.index == 2:
            try:
                selection = parse_selection(int(e.selector or 0), e.parameters)
            except (ValueError, TypeError, IndexError):
                e.error = ErrorCode.OTHER_REASON
                return None
            e.byteArray = True
            return self._rows(selection)
        if e.index == 7:
            self.entriesInUse = self._entries()
            self.profileEntries = self.entriesInUse
        return super().getValue(settings, e)


def encode_capture_objects(objects: list[tuple[int, str, int]]) -> list[tuple[Any, Any]]:
    """(class id, logical name, attribute) -> gurux capture object pairs."""
    from gurux_dlms.objects import GXDLMSCaptureObject

    out: list[tuple[Any, Any]] = []
    for class_id, ln, attribute in objects:
        obj = GXDLMSObject(ObjectType(class_id), ln)
        out.append((obj, GXDLMSCaptureObject(attribute, 0)))
    return out


# --- 9. APDU in, APDU out ------------------------------------------------------------------


def server_handle_apdu(
    server: CompatServer, client: int, logical_device: int, apdu: bytes
) -> bytes:
    """Run one plain xDLMS request APDU through gurux's server, return the response APDU.

    handleRequest works on frames, catches its own exceptions and then crashes in
    its error path (``receivedData.size(0)`` on an int); any failure here becomes
    :class:`GuruxFailure` so the session can answer or drop the association."""
    sr = CompatServerReply(WrapperFrame(client, logical_device, apdu).encode())
    try:
        server.handleRequest(sr)
    except Exception as exc:  # gurux raises bare Exception/TypeError/...
        raise GuruxFailure(f"gurux server failed: {exc!r}") from exc
    reply = sr.reply
    if not reply:
        raise GuruxFailure("gurux server gave no reply")
    return decode(bytes(reply)).apdu


def client_parse(
    client: GXDLMSClient, reply: GXReplyData, apdu: bytes, source: int, destination: int
) -> bool:
    """Feed one response APDU to gurux's client; True when the reply is complete."""
    frame = WrapperFrame(source, destination, apdu).encode()
    try:
        client.getData(GXByteBuffer(frame), reply)
    except Exception as exc:
        raise GuruxFailure(f"gurux client failed to parse: {exc!r}") from exc
    return not reply.isMoreData()


def client_frames_to_apdus(frames: Any) -> list[bytes]:
    """gurux builds WRAPPER frames; we send APDUs (maybe ciphered) in our own frames."""
    return [decode(bytes(f)).apdu for f in frames or []]


def client_next_block(client: GXDLMSClient, reply: GXReplyData) -> bytes:
    """The GET-next-block request APDU (gurux returns one frame here, not a list)."""
    return decode(bytes(client.receiverReady(reply))).apdu


def data_type(name: str) -> Any:
    return getattr(DataType, name)
