"""Code tables: ReadingType and OBIS, EndDevice event/control types, reading qualities."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cim_schemas.codes import event_type as et
from cim_schemas.codes import quality as q
from cim_schemas.codes.reading_type import (
    A_MINUS_REGISTER,
    A_PLUS_15MIN,
    A_PLUS_REGISTER,
    FIELD_NAMES,
    ReadingType,
    field_names,
    normalise_obis,
    obis_table,
    obis_to_reading_type,
    reading_type_to_obis,
)

# -- ReadingType --------------------------------------------------------------------------


def test_reading_type_has_the_18_fields_in_order() -> None:
    assert len(FIELD_NAMES) == 18
    assert field_names()[0] == "macro_period"
    assert field_names()[-1] == "currency"
    assert [n.lower() for n in FIELD_NAMES] == [n.replace("_", "") for n in field_names()]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "15-min delta +A energy kWh"),
        ("0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "bulk +A energy kWh"),
        ("0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0", "bulk -A energy kWh"),
        ("0.0.7.4.19.1.12.0.0.0.0.0.0.0.0.3.73.0", "60-min delta -R energy kVArh"),
        ("0.0.0.1.1.1.12.0.0.0.0.2.0.0.0.3.72.0", "bulk +A energy rate 2 kWh"),
        ("0.0.0.12.0.1.54.0.0.0.0.0.0.0.129.0.29.0", "instantaneous voltage phase A-N V"),
        ("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0", "unspecified"),
    ],
)
def test_parse_str_describe(code: str, text: str) -> None:
    rt = ReadingType.parse(code)
    assert str(rt) == code
    assert rt.code == code
    assert rt.describe() == text


def test_known_constants() -> None:
    assert str(A_PLUS_REGISTER) == "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert str(A_MINUS_REGISTER) == "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert str(A_PLUS_15MIN) == "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert A_PLUS_15MIN.interval_minutes == 15
    assert A_PLUS_REGISTER.interval_minutes is None


def test_negative_multiplier_is_allowed() -> None:
    rt = ReadingType.parse("0.0.0.12.0.1.4.0.0.0.0.0.0.0.128.-3.5.0")
    assert rt.multiplier == -3
    assert rt.describe().endswith("mA")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72", "17 fields, not 18"),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0.0", "19 fields"),
        ("0.0.x.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", r"field 3 \(measuringPeriod\) 'x'"),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3..0", r"field 17 \(unit\) ''"),
        ("0.0.2.4.-1.1.12.0.0.0.0.0.0.0.0.3.72.0", r"field 5 \(flowDirection\) '-1' is negative"),
        ("", "1 fields"),
    ],
)
def test_parse_errors_name_the_field(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReadingType.parse(code)


# -- OBIS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obis", "code"),
    [
        ("1.0.1.8.0.255", "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"),
        ("1.0.2.8.0.255", "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0"),
        ("1.0.1.8.1.255", "0.0.0.1.1.1.12.0.0.0.0.1.0.0.0.3.72.0"),
        ("1.0.2.8.4.255", "0.0.0.1.19.1.12.0.0.0.0.4.0.0.0.3.72.0"),
        ("1.0.3.8.0.255", "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.73.0"),
        ("1.0.4.8.0.255", "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.73.0"),
        ("1-0:1.7.0.255", "0.0.0.12.1.1.37.0.0.0.0.0.0.0.0.3.38.0"),
        ("1.0.32.7.0", "0.0.0.12.0.1.54.0.0.0.0.0.0.0.129.0.29.0"),
        ("1.0.71.7.0.255", "0.0.0.12.0.1.4.0.0.0.0.0.0.0.32.0.5.0"),
        ("1.0.41.7.0.255", "0.0.0.12.1.1.37.0.0.0.0.0.0.0.64.3.38.0"),
    ],
)
def test_obis_registers(obis: str, code: str) -> None:
    rt = obis_to_reading_type(obis)
    assert str(rt) == code
    assert reading_type_to_obis(rt).obis == normalise_obis(obis)


@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize(("minutes", "period"), [(15, 2), (60, 7)])
def test_obis_profile_channels(c: int, minutes: int, period: int) -> None:
    rt = obis_to_reading_type(f"1.0.{c}.8.0.255", interval_minutes=minutes)
    assert (rt.measuring_period, rt.accumulation) == (period, 4)
    assert rt.interval_minutes == minutes
    back = reading_type_to_obis(str(rt))
    assert (back.obis, back.interval_minutes) == (f"1.0.{c}.8.0.255", minutes)


def test_obis_table_is_a_bijection() -> None:
    table = obis_table()
    assert len({row.reading_type for row in table}) == len(table)
    assert len({(row.obis, row.interval_minutes) for row in table}) == len(table)
    for row in table:
        assert obis_to_reading_type(row.obis, interval_minutes=row.interval_minutes) == (
            row.reading_type
        )


def test_obis_unknown_and_malformed() -> None:
    with pytest.raises(KeyError, match=r"1\.0\.99\.99\.0\.255"):
        obis_to_reading_type("1.0.99.99.0.255")
    with pytest.raises(KeyError, match="30-min"):
        obis_to_reading_type("1.0.1.8.0.255", interval_minutes=30)
    with pytest.raises(ValueError, match="six groups"):
        normalise_obis("1.0.1.8")
    with pytest.raises(ValueError, match="six groups"):
        normalise_obis("1.0.1.8.0.256")
    with pytest.raises(KeyError, match="no OBIS"):
        reading_type_to_obis("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0")


# -- EndDeviceEventType / EndDeviceControlType --------------------------------------------


def test_standard_codes() -> None:
    assert str(et.REMOTE_DISCONNECT) == "3.31.0.23"
    assert str(et.REMOTE_CONNECT) == "3.31.0.18"
    assert str(et.POWER_FAILURE) == "3.26.0.85"
    assert str(et.POWER_RESTORED) == "26.26.0.216"
    assert str(et.COVER_REMOVED) == "3.12.29.212"
    assert str(et.SWITCH_DISCONNECTED) == "0.31.26.68"
    assert str(et.SWITCH_CONNECTED) == "0.31.26.42"
    assert isinstance(et.REMOTE_DISCONNECT, et.EndDeviceControlType)
    assert isinstance(et.POWER_FAILURE, et.EndDeviceEventType)


def test_control_and_event_codes_are_all_distinct() -> None:
    controls = [v for v in vars(et).values() if type(v) is et.EndDeviceControlType]
    events = [v for v in vars(et).values() if type(v) is et.EndDeviceEventType]
    assert len(controls) >= 7
    assert len(events) >= 12
    assert len(set(controls)) == len(controls)
    assert len(set(events)) == len(events)


def test_event_type_parse_and_describe() -> None:
    code = et.EndDeviceControlType.parse(" 3.31.0.23 ")
    assert code == et.REMOTE_DISCONNECT
    assert code.describe() == "electric meter RCD switch: disconnect"
    assert et.COVER_REMOVED.describe() == "electric meter security (subdomain 29): removed"
    assert et.EndDeviceEventType.parse("9.99.0.999").describe() == (
        "device type 9 domain 99: event/action 999"
    )
    assert et.is_valid_code("3.26.0.85")
    assert not et.is_valid_code("3.26.0")


@pytest.mark.parametrize(
    ("code", "message"),
    [("3.31.23", "3 fields, not 4"), ("3.31.x.23", "field subDomain 'x'"), ("", "1 fields")],
)
def test_event_type_errors(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        et.EndDeviceEventType.parse(code)


@pytest.fixture
def vendor_codes() -> Iterator[None]:
    et.clear_vendor_codes()
    yield
    et.clear_vendor_codes()


@pytest.mark.usefixtures("vendor_codes")
def test_vendor_code_hook() -> None:
    assert et.from_vendor_code("LGZ", "47") is None
    et.register_vendor_code("LGZ", "47", et.COVER_REMOVED)
    assert et.from_vendor_code("lgz", "47") == et.COVER_REMOVED
    assert et.from_vendor_code("ITRON", "47") is None
    assert et.from_vendor_code("ITRON", "3.26.0.85") == et.POWER_FAILURE


# -- ReadingQualityType -------------------------------------------------------------------


def test_quality_constants() -> None:
    assert str(q.MDM_VALIDATED) == "3.0.1"
    assert str(q.MDM_ESTIMATED) == "3.8.0"
    assert str(q.METER_CLOCK_CHANGED) == "1.4.9"
    assert str(q.MDM_ZERO_USAGE) == "3.6.1"
    assert str(q.HES_KNOWN_MISSING_READ) == "2.5.259"
    assert str(q.VALID) == "0.0.0"
    assert q.VALID.is_valid
    assert q.MDM_ESTIMATED.is_estimated
    assert q.MDM_ESTIMATED.describe() == "MDM: estimated"
    assert q.ReadingQualityType.parse("2.4.7").describe() == "head-end: data collection (index 7)"
    assert q.ReadingQualityType.parse("1.3.0").describe() == "end device: tamper"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("3.8", "system.category.index"),
        ("a.b.c", "system.category.index"),
        ("9.0.0", "system 9"),
        ("3.9.0", "category 9"),
    ],
)
def test_quality_errors(code: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        q.ReadingQualityType.parse(code)
    assert not q.is_valid_code(code)
