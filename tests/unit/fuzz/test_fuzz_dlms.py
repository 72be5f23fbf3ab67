"""Fuzzing the head-end's decoders of what meters send: A-XDR data, GET responses and
pushes (plain and general-glo-ciphered under the meter's real keys, so the body parser
behind the tag is reached). Seeded with real messages of the simulated meters. The only
exceptions allowed out are amihub's own (cim_schemas.errors.AmihubError)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cim_schemas.errors import AmihubError
from hes.dlms import axdr
from hes.push import KnownMeter, PushDecoder, event_notification, notification
from hes.security import gcm
from hes.simulator.fleet import Fleet
from hes.simulator.meter import default_calendar
from tests.unit.fuzz.strategies import mutated

AT = datetime(2026, 11, 24, 13, 15, tzinfo=UTC)
STAMP = bytes.fromhex("07ea0b18020d0f0000000000")
ROW = b"\x02\x04\x09\x0c" + STAMP + bytes.fromhex("11000600112afc0600000000")
FLEET = Fleet.build(2, 1, seed=3)
METER = FLEET.meters[0]
PLAIN_PUSHES = [
    notification(METER.logical_device_name.encode(), AT, 12_345_678, 910),
    event_notification(METER.logical_device_name.encode(), AT, 40),
]
#: the A-XDR data meters answer: profile rows, registers, the activity calendar, pushes
AXDR_SEEDS = [
    bytes.fromhex("0102") + ROW + ROW,
    bytes.fromhex("0600112afc"),
    bytes.fromhex("0202 0f00 1621".replace(" ", "")),
    *default_calendar().encode(),
    *(p[6:] for p in PLAIN_PUSHES),
]
GET_SEEDS = [
    bytes.fromhex("c40181 00".replace(" ", "")) + AXDR_SEEDS[0],
    bytes.fromhex("c4018101 03".replace(" ", "")),
    bytes.fromhex("c40281 00 00000001 00".replace(" ", "")) + bytes([len(ROW)]) + ROW,
]
DEEP = b"\x01\x01" * 1000 + b"\x00"  # 1,000 levels in 2 KB


def _only_ours(call: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(AmihubError):
        call(*args)


@settings(max_examples=400)
@given(mutated(AXDR_SEEDS))
@example(DEEP)
def test_axdr_decode(data: bytes) -> None:
    _only_ours(axdr.decode_all, data)


@settings(max_examples=300)
@given(mutated(GET_SEEDS))
def test_get_response(data: bytes) -> None:
    try:
        response = axdr.parse_get_response(data)
    except AmihubError:
        return
    _only_ours(axdr.decode_all, response.data)


class _Directory:
    def by_system_title(self, system_title: bytes) -> KnownMeter | None:
        if system_title == METER.system_title:
            return KnownMeter(f"MTR-{METER.serial}", METER.keys)
        return None

    def by_logical_device_name(self, name: str) -> KnownMeter | None:
        return None


_counter = iter(range(1, 10**9))


def _ciphered(apdu: bytes) -> bytes:
    return gcm.general_glo_cipher(
        apdu, keys=METER.keys, system_title=METER.system_title, invocation_counter=next(_counter)
    )


@settings(max_examples=300)
@given(mutated(PLAIN_PUSHES), st.booleans())
@example(PLAIN_PUSHES[0][:6] + DEEP, False)
@example(PLAIN_PUSHES[0][:6] + DEEP, True)
def test_push_decoder(apdu: bytes, cipher: bool) -> None:
    decoder = PushDecoder(_Directory())  # type: ignore[arg-type]
    _only_ours(decoder.decode, _ciphered(apdu) if cipher else apdu)


@settings(max_examples=200)
@given(mutated([_ciphered(PLAIN_PUSHES[0]), _ciphered(PLAIN_PUSHES[1])]))
def test_push_decoder_ciphered_frame(apdu: bytes) -> None:
    """Edits to the ciphered frame itself (header, lengths, system title, tag)."""
    _only_ours(PushDecoder(_Directory()).decode, apdu)  # type: ignore[arg-type]
