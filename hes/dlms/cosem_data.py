"""A-XDR encoding of the COSEM values the control jobs write, and the activity calendar.

Pure functions, no IO, no gurux: the client encodes SET / ACTION parameters with
these, and the simulator encodes its attribute values with the same ones. Values
decoded by gurux (server side: ``bytearray``, ``GXUInt32`` ...) or by
:mod:`hes.dlms.axdr` (client side) are read back with :meth:`ActivityCalendar.parts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time
from typing import Any

from hes.dlms import compat
from hes.security.gcm import encode_length

NOT_SPECIFIED = b"\xff" * 12  # a date-time with every field "not specified"
TARIFF_SCRIPT = "0.0.10.0.100.255"  # tariffication script table


def octet_string(value: bytes) -> bytes:
    return b"\x09" + encode_length(len(value)) + value


def unsigned(value: int) -> bytes:
    return b"\x11" + (value & 0xFF).to_bytes(1, "big")


def long_unsigned(value: int) -> bytes:
    return b"\x12" + (value & 0xFFFF).to_bytes(2, "big")


def double_long_unsigned(value: int) -> bytes:
    return b"\x06" + (value & 0xFFFFFFFF).to_bytes(4, "big")


def enum(value: int) -> bytes:
    return b"\x16" + (value & 0xFF).to_bytes(1, "big")


def boolean(value: bool) -> bytes:
    return b"\x03" + (b"\x01" if value else b"\x00")


def integer(value: int) -> bytes:
    return b"\x0f" + (value & 0xFF).to_bytes(1, "big")


def structure(*items: bytes) -> bytes:
    return b"\x02" + encode_length(len(items)) + b"".join(items)


def array(items: Sequence[bytes]) -> bytes:
    return b"\x01" + encode_length(len(items)) + b"".join(items)


def date_time(ts: datetime | None) -> bytes:
    """COSEM date-time as an octet-string; None: not specified."""
    return octet_string(NOT_SPECIFIED if ts is None else compat.encode_datetime(ts))


def parse_date_time(raw: bytes) -> datetime | None:
    return None if raw == NOT_SPECIFIED else compat.decode_datetime(raw)


def logical_name(obis: str) -> bytes:
    return octet_string(bytes(int(x) for x in obis.split(".")))


def _b(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise ValueError(f"expected an octet-string, got {value!r}")
    return bytes(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected an array or structure, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class Season:
    name: bytes
    start: datetime
    week: bytes


@dataclass(frozen=True)
class Week:
    name: bytes
    days: tuple[int, int, int, int, int, int, int]  # day_id Monday..Sunday


@dataclass(frozen=True)
class DayAction:
    start: time
    selector: int  # script selector: the tariff (rate) switched to
    script: str = TARIFF_SCRIPT


@dataclass(frozen=True)
class Day:
    day_id: int
    actions: tuple[DayAction, ...]


@dataclass(frozen=True)
class ActivityCalendar:
    """One calendar (the active or the passive set of attributes of class 20)."""

    name: bytes
    seasons: tuple[Season, ...] = ()
    weeks: tuple[Week, ...] = ()
    days: tuple[Day, ...] = ()

    def encode(self) -> tuple[bytes, bytes, bytes, bytes]:
        """calendar_name, season_profile, week_profile_table, day_profile_table."""
        return (
            octet_string(self.name),
            array(
                [
                    structure(octet_string(s.name), date_time(s.start), octet_string(s.week))
                    for s in self.seasons
                ]
            ),
            array(
                [
                    structure(octet_string(w.name), *(unsigned(d) for d in w.days))
                    for w in self.weeks
                ]
            ),
            array(
                [
                    structure(
                        unsigned(d.day_id),
                        array(
                            [
                                structure(
                                    octet_string(
                                        bytes([a.start.hour, a.start.minute, a.start.second, 0])
                                    ),
                                    logical_name(a.script),
                                    long_unsigned(a.selector),
                                )
                                for a in d.actions
                            ]
                        ),
                    )
                    for d in self.days
                ]
            ),
        )

    def with_part(self, part: int, value: Any) -> ActivityCalendar:
        """This calendar with one part (0 name, 1 seasons, 2 weeks, 3 days) replaced by a
        decoded value (gurux's or :mod:`hes.dlms.axdr`'s); ValueError if malformed."""
        try:
            if part == 0:
                return replace(self, name=_b(value))
            if part == 1:
                seasons = []
                for item in _list(value):
                    name, start, week = _list(item)
                    at = parse_date_time(_b(start))
                    if at is None:
                        raise ValueError("season start not specified")
                    seasons.append(Season(_b(name), at, _b(week)))
                return replace(self, seasons=tuple(seasons))
            if part == 2:
                weeks = []
                for item in _list(value):
                    name, *days = _list(item)
                    if len(days) != 7:
                        raise ValueError("a week profile has 7 days")
                    d = tuple(int(x) for x in days)
                    weeks.append(Week(_b(name), (d[0], d[1], d[2], d[3], d[4], d[5], d[6])))
                return replace(self, weeks=tuple(weeks))
            if part == 3:
                days_out = []
                for item in _list(value):
                    day_id, schedule = _list(item)
                    actions = []
                    for action in _list(schedule):
                        start, script, selector = _list(action)
                        hh, mm, ss = _b(start)[:3]
                        actions.append(
                            DayAction(
                                time(hh, mm, ss),
                                int(selector),
                                ".".join(str(x) for x in _b(script)),
                            )
                        )
                    days_out.append(Day(int(day_id), tuple(actions)))
                return replace(self, days=tuple(days_out))
        except (TypeError, IndexError) as exc:
            raise ValueError(f"malformed calendar part {part}: {exc}") from exc
        raise ValueError(f"no calendar part {part}")
