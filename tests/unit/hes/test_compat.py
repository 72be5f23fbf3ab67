"""hes.dlms.compat: every patch shows stock gurux failing and the patched class working."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gurux_dlms import (
    GXDLMSLongTransaction,
    GXDLMSServer,
    GXReplyData,
    GXServerReply,
)
from gurux_dlms.enums import Conformance, InterfaceType, ObjectType, Unit
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.objects import (
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from hes.dlms import acse, compat
from hes.dlms.compat import (
    CompatDisconnectControl,
    CompatProfileGeneric,
    CompatServer,
    CompatServerReply,
    EntrySelection,
    ProfileSelection,
    RangeSelection,
)
from hes.dlms.wrapper import WrapperFrame, decode

CONFORMANCE = acse.Conformance.SERVER_DEFAULT
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _without(cls: type, *names: str) -> type:
    """A subclass of ``cls`` where the named attributes do not exist (undoes a patch)."""

    def __getattribute__(self: Any, name: str) -> Any:  # noqa: N807
        if name in names:
            raise AttributeError(name)
        return super(sub, self).__getattribute__(name)

    sub = type(f"Stock{cls.__name__}", (cls,), {"__getattribute__": __getattribute__})
    return sub


def _register(value: int = 12345) -> GXDLMSRegister:
    r = GXDLMSRegister("1.0.1.8.0.255")
    compat.set_scaler_unit(r, 0, Unit.ACTIVE_ENERGY)
    r.setDataType(2, compat.data_type("UINT32"))
    r.value = value
    return r


def _rows(selection: ProfileSelection) -> bytes:
    start = T0
    count = 200
    if isinstance(selection, RangeSelection):
        start, count = (
            selection.start,
            int((selection.end - selection.start) / timedelta(minutes=15)) + 1,
        )
    elif isinstance(selection, EntrySelection):
        start = T0 + timedelta(minutes=15) * (selection.from_entry - 1)
        count = selection.to_entry - selection.from_entry + 1
    body = b"".join(
        b"\x02\x02\x09\x0c"
        + compat.encode_datetime(start + timedelta(minutes=15) * i)
        + b"\x06"
        + (1000 + i).to_bytes(4, "big")
        for i in range(count)
    )
    return b"\x01\x81" + bytes([count]) + body if count > 127 else b"\x01" + bytes([count]) + body


def _server(objects: list[Any], cls: type = CompatServer, max_pdu: int = 256) -> Any:
    server = cls()
    compat.prepare_server(server, objects, max_pdu)
    compat.mark_server_associated(server, CONFORMANCE, max_pdu)
    return server


def _client() -> Any:
    client = compat.new_client(1, 1)
    compat.mark_client_associated(client, CONFORMANCE, 256)
    return client


def _run(server: Any, client: Any, build: Any) -> Any:
    """``build(client)`` makes the request frames: the same client must parse the answer."""
    reply = GXReplyData()
    for apdu in compat.client_frames_to_apdus(build(client)):
        out = compat.server_handle_apdu(server, 1, 1, apdu)
        while not compat.client_parse(client, reply, out, 1, 1):
            out = compat.server_handle_apdu(server, 1, 1, compat.client_next_block(client, reply))
    return reply


def _read_profile(client: Any) -> Any:
    return client.read(GXDLMSProfileGeneric("1.0.99.1.0.255"), 2)


def _raw_request(server: Any, apdu: bytes, reply_cls: type = CompatServerReply) -> bytes:
    sr = reply_cls(WrapperFrame(1, 1, apdu).encode())
    server.handleRequest(sr)
    return decode(bytes(sr.reply)).apdu


def _get_apdu(obj: Any, attribute: int) -> bytes:
    return compat.client_frames_to_apdus(_client().read(obj, attribute))[0]


# 1. server reply -------------------------------------------------------------------------


def test_server_reply_accessors() -> None:
    server = _server([_register()])
    with pytest.raises(AttributeError, match="setReply"):  # stock reply
        _raw_request(server, _get_apdu(GXDLMSRegister("1.0.1.8.0.255"), 2), GXServerReply)
    out = _raw_request(server, _get_apdu(GXDLMSRegister("1.0.1.8.0.255"), 2))
    assert out == bytes.fromhex("c401c1000600003039")


# 2. missing server callbacks --------------------------------------------------------------


@pytest.mark.parametrize("missing", ["notifyRead", "getTransaction", "setTransaction"])
def test_server_callbacks(missing: str) -> None:
    long_profile = CompatProfileGeneric("1.0.99.1.0.255", _rows, lambda: 200, 900)
    stock = _server([_register(), long_profile], _without(CompatServer, missing))
    with pytest.raises(compat.GuruxFailure):
        _run(stock, _client(), _read_profile)
    patched = _server(
        [_register(), CompatProfileGeneric("1.0.99.1.0.255", _rows, lambda: 200, 900)]
    )
    assert len(_run(patched, _client(), _read_profile).value) == 200


def test_on_post_read_called_without_arguments() -> None:
    with pytest.raises(TypeError):  # the LN GET handler calls it so
        GXDLMSServer(True, InterfaceType.WRAPPER).onPostRead()
    CompatServer().onPostRead()


# 3. maxReceivePDUSize recursion ----------------------------------------------------------


def test_max_receive_pdu_size_property() -> None:
    with pytest.raises(RecursionError):
        _ = GXDLMSServer(True, InterfaceType.WRAPPER).maxReceivePDUSize
    server = CompatServer()
    server.maxReceivePDUSize = 512
    assert server.maxReceivePDUSize == 512


# 4. initialisation and block transfer ------------------------------------------------------


def test_initialize_needs_object_list() -> None:
    from gurux_dlms.objects import GXDLMSAssociationLogicalName

    stock = CompatServer()
    stock.items.append(GXDLMSAssociationLogicalName())
    stock.items.append(_register())
    with pytest.raises(TypeError):
        stock.initialize()
    server = CompatServer()
    compat.prepare_server(server, [_register()], 256)
    assert server.initialized


def test_long_get_second_block() -> None:
    assert not hasattr(GXDLMSSettings(True, None), "gbtWndowSize")
    assert not hasattr(GXDLMSLongTransaction(None, 0, None), "setData")
    profile = CompatProfileGeneric("1.0.99.1.0.255", _rows, lambda: 200, 900)
    server = _server([profile], max_pdu=256)
    reply = _run(server, _client(), _read_profile)
    assert [int(row[1]) for row in reply.value] == list(range(1000, 1200))
    # without the misspelled alias the second block fails
    server = _server([CompatProfileGeneric("1.0.99.1.0.255", _rows, lambda: 200, 900)])
    del server.settings.gbtWndowSize
    with pytest.raises(compat.GuruxFailure):
        _run(server, _client(), _read_profile)


def test_stock_error_path_appends_a_second_pdu() -> None:
    """Stock reportError appends an error PDU after the half-built block; ours raises."""
    profile = CompatProfileGeneric("1.0.99.1.0.255", _rows, lambda: 200, 900)

    def stock_set_transaction(self: Any, value: Any) -> None:
        self.transaction = value  # a stock GXDLMSLongTransaction: no setData

    stock = type(
        "Stock",
        (CompatServer,),
        {"reportError": GXDLMSServer.reportError, "setTransaction": stock_set_transaction},
    )
    server = _server([profile], stock)
    client = _client()
    reply = GXReplyData()
    out = compat.server_handle_apdu(
        server, 1, 1, compat.client_frames_to_apdus(_read_profile(client))[0]
    )
    compat.client_parse(client, reply, out, 1, 1)
    second = compat.server_handle_apdu(server, 1, 1, compat.client_next_block(client, reply))
    assert len(second) > 256  # over the negotiated PDU size: garbage for a strict client


# 5. association state and conformance ------------------------------------------------------


def test_gurux_conformance_bit_order() -> None:
    assert compat.gurux_conformance(acse.Conformance.GENERAL_BLOCK_TRANSFER) == (
        Conformance.GENERAL_BLOCK_TRANSFER
    )
    assert compat.gurux_conformance(acse.Conformance.ACTION) == Conformance.ACTION
    # the standard's integer taken as gurux flags switches general block transfer on
    assert Conformance(acse.Conformance.SELECTIVE_ACCESS) == Conformance.GENERAL_BLOCK_TRANSFER


def test_server_refuses_get_until_marked_associated() -> None:
    server = CompatServer()
    compat.prepare_server(server, [_register()], 256)
    refused = _raw_request(server, _get_apdu(GXDLMSRegister("1.0.1.8.0.255"), 2))
    assert refused[0] == 0x0E  # confirmed-service-error: not associated
    compat.mark_server_associated(server, CONFORMANCE, 256)
    assert _raw_request(server, _get_apdu(GXDLMSRegister("1.0.1.8.0.255"), 2))[0] == 0xC4


# 6. scaler --------------------------------------------------------------------------------


def test_scaler_is_a_multiplier_in_gurux() -> None:
    server = _server([])
    stock = GXDLMSRegister("1.0.1.8.0.255")
    stock.scaler = -1  # the exponent, as the standard transmits it
    stock.unit = Unit.ACTIVE_ENERGY
    with pytest.raises(ValueError, match="math domain"):
        stock.getValue(server.settings, _event(server, stock, 3))
    stock.scaler = 0
    with pytest.raises(ValueError, match="math domain"):
        stock.getValue(server.settings, _event(server, stock, 3))
    for exponent in (-2, 0, 3):
        r = GXDLMSRegister("1.0.1.8.0.255")
        compat.set_scaler_unit(r, exponent, Unit.ACTIVE_ENERGY)
        encoded = bytes(r.getValue(server.settings, _event(server, r, 3)))
        assert encoded == bytes([0x02, 0x02, 0x0F, exponent & 0xFF, 0x16, 30])
        assert compat.scaler_exponent(r) == exponent
    assert math.isclose(r.scaler, 1000.0, rel_tol=1e-6)


def _event(server: Any, obj: Any, index: int) -> Any:
    from gurux_dlms import ValueEventArgs

    return ValueEventArgs(server, obj, index, 0, None)


# 7. disconnect control --------------------------------------------------------------------


def test_action_path_needs_iterable_event_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from gurux_dlms import ValueEventArgs

    state = {"calls": 0}

    def act(method: int) -> bool:
        state["calls"] += 1
        return True

    server = _server([CompatDisconnectControl(act, lambda: (True, 1))])
    request = compat.client_frames_to_apdus(
        _client().method(GXDLMSDisconnectControl("0.0.96.3.10.255"), 1, 0, compat.data_type("INT8"))
    )[0]
    monkeypatch.delattr(ValueEventArgs, "__iter__")  # stock gurux
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(server, 1, 1, request)
    monkeypatch.undo()
    assert compat.server_handle_apdu(server, 1, 1, request)[:4] == bytes.fromhex("c701c100")
    assert state["calls"] == 1


def test_disconnect_control_methods() -> None:
    state = {"output": True, "control": 1}

    def act(method: int) -> bool:
        state["output"] = method == 2
        state["control"] = 1 if method == 2 else 0
        return True

    client = _client()
    stock = _server([GXDLMSDisconnectControl("0.0.96.3.10.255")])
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(
            stock,
            1,
            1,
            compat.client_frames_to_apdus(
                client.method(
                    GXDLMSDisconnectControl("0.0.96.3.10.255"), 1, 0, compat.data_type("INT8")
                )
            )[0],
        )
    server = _server([CompatDisconnectControl(act, lambda: (state["output"], state["control"]))])
    out = compat.server_handle_apdu(
        server,
        1,
        1,
        compat.client_frames_to_apdus(
            client.method(
                GXDLMSDisconnectControl("0.0.96.3.10.255"), 1, 0, compat.data_type("INT8")
            )
        )[0],
    )
    assert out[:4] == bytes.fromhex("c701c100")
    assert state == {"output": False, "control": 0}
    reply = _run(server, client, lambda c: c.read(GXDLMSDisconnectControl("0.0.96.3.10.255"), 3))
    assert reply.value == 0


# 8. profile generic selective access ------------------------------------------------------


def test_profile_by_range_and_entry() -> None:
    client = _client()
    stock_pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    stock_pg.captureObjects.extend(
        compat.encode_capture_objects(
            [(ObjectType.CLOCK, "0.0.1.0.0.255", 2), (ObjectType.REGISTER, "1.0.1.8.0.255", 2)]
        )
    )
    stock = _server([stock_pg])
    request = GXDLMSProfileGeneric("1.0.99.1.0.255")
    with pytest.raises(compat.GuruxFailure):
        _run(stock, client, lambda c: c.readRowsByRange(request, T0, T0 + timedelta(hours=1)))
    seen: list[ProfileSelection] = []

    def rows(selection: ProfileSelection) -> bytes:
        seen.append(selection)
        return _rows(selection)

    server = _server([CompatProfileGeneric("1.0.99.1.0.255", rows, lambda: 200, 900)])
    by_range = _run(
        server, client, lambda c: c.readRowsByRange(request, T0, T0 + timedelta(hours=1))
    )
    assert len(by_range.value) == 5
    assert compat.decode_datetime(bytes(by_range.value[0][0])) == T0
    assert seen[-1] == RangeSelection(T0, T0 + timedelta(hours=1))
    by_entry = _run(server, client, lambda c: c.readRowsByEntry(request, 3, 2))  # 3 and 4
    assert [int(r[1]) for r in by_entry.value] == [1000, 1001]
    assert seen[-1] == EntrySelection(3, 4)


def test_datetime_codec_deviation() -> None:
    ts = datetime(2026, 7, 1, 12, 30, 15, tzinfo=UTC)
    raw = compat.encode_datetime(ts)
    assert compat.decode_datetime(raw) == ts
    # gurux's deviation is UTC - local in minutes: 14:30 at +02:00 -> 12:30 UTC
    local = bytearray(raw)
    local[5] = 14
    local[9:11] = (-120).to_bytes(2, "big", signed=True)
    assert compat.decode_datetime(bytes(local)) == datetime(2026, 7, 1, 12, 30, 15, tzinfo=UTC)


def test_set_path_needs_ln_parameter_accessors(monkeypatch: pytest.MonkeyPatch) -> None:
    from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters

    register = _register(5)
    server = _server([register])
    request = compat.client_frames_to_apdus(_client().write(_with_value(7), 2))[0]
    monkeypatch.delattr(GXDLMSLNParameters, "isMultipleBlocks")  # stock gurux
    monkeypatch.delattr(GXDLMSLNParameters, "setStatus")
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(server, 1, 1, request)
    monkeypatch.undo()
    assert compat.server_handle_apdu(server, 1, 1, request) == bytes.fromhex("c501c100")
    assert register.value == 7


def _with_value(value: int) -> GXDLMSRegister:
    r = GXDLMSRegister("1.0.1.8.0.255")
    r.setDataType(2, compat.data_type("UINT32"))
    r.value = value
    return r


# 12-15. limiter, activity calendar, image transfer; SET errors ---------------------------

LIMITER_LN = bytes.fromhex("0000110000ff")
CALENDAR_LN = bytes.fromhex("00000d0000ff")
IMAGE_LN = bytes.fromhex("00002c0000ff")


def _apdu(service: int, class_id: int, ln: bytes, index: int, data: bytes = b"") -> bytes:
    head = bytes([service, 0x01, 0xC1]) + class_id.to_bytes(2, "big") + ln + bytes([index])
    if service == 0xC3:  # ACTION: parameters present
        return head + b"\x01" + data
    return head + b"\x00" + data


def test_limiter_thresholds_cannot_be_read_from_stock_gurux() -> None:
    from gurux_dlms.objects import GXDLMSLimiter

    get_normal = _apdu(0xC0, 71, LIMITER_LN, 4)
    stock = GXDLMSLimiter("0.0.17.0.0.255")
    stock.thresholdNormal = 5000  # as after a SET
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(_server([stock]), 1, 1, get_normal)
    written: list[tuple[int, int]] = []
    limiter = compat.CompatLimiter(
        "0.0.17.0.0.255",
        lambda i: b"\x06" + (5000).to_bytes(4, "big") if i == 4 else None,
        lambda i, v: written.append((i, int(v))) is None,
    )
    server = _server([limiter])
    assert compat.server_handle_apdu(server, 1, 1, get_normal) == bytes.fromhex(
        "c401c1000600001388"
    )
    set_normal = _apdu(0xC1, 71, LIMITER_LN, 4, b"\x06" + (7000).to_bytes(4, "big"))
    assert compat.server_handle_apdu(server, 1, 1, set_normal) == bytes.fromhex("c501c100")
    assert written == [(4, 7000)]
    # an attribute the callback does not serve is denied, not answered with junk
    assert compat.server_handle_apdu(server, 1, 1, _apdu(0xC0, 71, LIMITER_LN, 11))[3:5] == (
        b"\x01\x03"
    )


def test_activate_passive_calendar_fails_in_stock_gurux() -> None:
    from gurux_dlms.objects import GXDLMSActivityCalendar

    activate = _apdu(0xC3, 20, CALENDAR_LN, 1, b"\x0f\x00")
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(
            _server([GXDLMSActivityCalendar("0.0.13.0.0.255")]), 1, 1, activate
        )
    calls: list[int] = []
    calendar = compat.CompatActivityCalendar(
        "0.0.13.0.0.255", lambda i: None, lambda i, v: True, lambda m, p: calls.append(m) is None
    )
    assert compat.server_handle_apdu(_server([calendar]), 1, 1, activate) == bytes.fromhex(
        "c701c10000"
    )
    assert calls == [1]


def test_image_transfer_methods_crash_or_check_nothing_in_stock_gurux() -> None:
    from gurux_dlms.objects import GXDLMSImageTransfer

    initiate = _apdu(0xC3, 18, IMAGE_LN, 1, b"\x02\x02\x09\x02v2\x06\x00\x00\x01\x00")
    block = _apdu(0xC3, 18, IMAGE_LN, 2, b"\x02\x02\x06\x00\x00\x00\x00\x09\x04abcd")
    verify = _apdu(0xC3, 18, IMAGE_LN, 3, b"\x0f\x00")
    stock = _server([GXDLMSImageTransfer("0.0.44.0.0.255")])
    assert compat.server_handle_apdu(stock, 1, 1, initiate) == bytes.fromhex("c701c10000")
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(stock, 1, 1, block)
    stock = _server([GXDLMSImageTransfer("0.0.44.0.0.255")])
    compat.server_handle_apdu(stock, 1, 1, initiate)
    # no block arrived, yet the stock meter says the image verified
    assert compat.server_handle_apdu(stock, 1, 1, verify) == bytes.fromhex("c701c10000")
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(stock, 1, 1, _apdu(0xC0, 18, IMAGE_LN, 7))
    calls: list[tuple[int, Any]] = []

    def act(method: int, parameters: Any) -> bool:
        calls.append((method, parameters))
        return method != 3  # the image does not verify

    image = compat.CompatImageTransfer(
        "0.0.44.0.0.255", lambda i: b"\x01\x00" if i == 7 else None, lambda i, v: False, act
    )
    server = _server([image])
    assert compat.server_handle_apdu(server, 1, 1, initiate) == bytes.fromhex("c701c10000")
    assert compat.server_handle_apdu(server, 1, 1, block) == bytes.fromhex("c701c10000")
    assert compat.server_handle_apdu(server, 1, 1, verify)[3] != 0  # refused
    assert compat.server_handle_apdu(server, 1, 1, _apdu(0xC0, 18, IMAGE_LN, 7)) == (
        bytes.fromhex("c401c1000100")
    )
    assert [m for m, _ in calls] == [1, 2, 3]
    assert [int(x) if not isinstance(x, bytearray) else bytes(x) for x in calls[1][1]] == [
        0,
        b"abcd",
    ]


def test_set_error_from_set_value_is_ignored_by_stock_gurux() -> None:
    class NoPreWrite(CompatServer):
        def onPreWrite(self, *args: Any) -> None:  # as before patch 15
            return None

    refuse = _apdu(0xC1, 71, LIMITER_LN, 4, b"\x06\x00\x00\x00\x01")
    stock = compat.CompatLimiter("0.0.17.0.0.255", lambda i: None, lambda i, v: False)
    plain = _server([stock], cls=NoPreWrite)
    # setValue refuses (e.error set), and gurux still answers success
    assert compat.server_handle_apdu(plain, 1, 1, refuse) == bytes.fromhex("c501c100")
    patched = _server([compat.CompatLimiter("0.0.17.0.0.255", lambda i: None, lambda i, v: False)])
    assert compat.server_handle_apdu(patched, 1, 1, refuse) == bytes.fromhex("c501c103")


def test_global_key_transfer_fails_in_stock_gurux() -> None:
    from gurux_dlms.objects import GXDLMSSecuritySetup

    from hes.security.keywrap import KeyId, encode_key_transfer

    kek, new_ak = bytes(range(16)), bytes(range(16, 32))
    transfer = _apdu(
        0xC3,
        64,
        bytes.fromhex("00002b0000ff"),
        2,
        encode_key_transfer(kek, {KeyId.AUTHENTICATION: new_ak}),
    )
    # stock: unwraps with gurux's own settings.kek, which our server never holds
    with pytest.raises(compat.GuruxFailure):
        compat.server_handle_apdu(_server([GXDLMSSecuritySetup("0.0.43.0.0.255")]), 1, 1, transfer)
    calls: list[Any] = []

    def act(method: int, parameters: Any) -> bool:
        calls.append((method, parameters))
        return True

    setup = compat.CompatSecuritySetup("0.0.43.0.0.255", lambda i: None, lambda i, v: False, act)
    server = _server([setup])
    assert compat.server_handle_apdu(server, 1, 1, transfer) == bytes.fromhex("c701c10000")
    [(method, parameters)] = calls
    assert method == 2
    assert [[int(k), bytes(w)] for k, w in parameters] == [
        [2, encode_key_transfer(kek, {KeyId.AUTHENTICATION: new_ak})[-24:]]
    ]
    assert server.settings.kek is None  # no key went into gurux
    assert server.settings.cipher is None
