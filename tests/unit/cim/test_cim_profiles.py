"""Every 61968-9 profile: render -> validate against our XSDs -> parse -> equal."""

from __future__ import annotations

import io
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import IO, Any, cast

import pytest
from lxml import etree

from cim_schemas import envelope as env
from cim_schemas.errors import PayloadInvalid
from cim_schemas.meter_readings import Row, value_text, write_readings
from cim_schemas.profiles import (
    MODULES,
    codec,
    parse_profile,
    render_profile,
)
from cim_schemas.profiles import end_device_controls as edc
from cim_schemas.profiles import end_device_events as ede
from cim_schemas.profiles import get_meter_readings as gmr
from cim_schemas.profiles import master_data_linkage_config as mdlc
from cim_schemas.profiles import meter_config as mc
from cim_schemas.profiles import meter_read_schedule as mrs
from cim_schemas.profiles import meter_readings as mr
from cim_schemas.profiles import usage_point_config as upc
from cim_schemas.profiles.common import (
    ConfigurationEvent,
    DateTimeInterval,
    IdentifiedObject,
    Name,
    NameType,
    NameTypeAuthority,
    Status,
)
from cim_schemas.xml import parse_bytes
from hub.readings_codec import STORED_QUALITIES

Golden = Callable[[str], etree._ElementTree]
Valid = Callable[[bytes | etree._Element], etree._Element]

PLUS8 = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 1, tzinfo=PLUS8)
RT_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_REG = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
BY_NAME = IdentifiedObject(
    names=(
        Name(
            "LGZ1030012345678",
            NameType("MeterUniqueID", "unique id", NameTypeAuthority("LGZ", "maker")),
        ),
    )
)
BY_MRID = IdentifiedObject("UP-000042")
BOTH = IdentifiedObject("MTR-7", (Name("SN-7"), Name("7", NameType("SerialNumber"))))


def meter_readings_sample() -> mr.MeterReadings:
    quality = mr.ReadingQuality("3.8.0", comment="estimated", source="MDM", time_stamp=T0)
    return mr.MeterReadings(
        meter_readings=(
            mr.MeterReading(
                meter=mr.Meter(
                    names=BY_NAME.names,
                    serial_number="12345678",
                    status=Status("installed", T0, "new", "ok"),
                ),
                usage_point=BY_MRID,
                interval_blocks=(
                    mr.IntervalBlock(
                        RT_15,
                        (
                            mr.IntervalReading(T0 + timedelta(minutes=15), Decimal("0.1250")),
                            mr.IntervalReading(
                                T0 + timedelta(minutes=30),
                                Decimal("1E+2"),
                                reported_date_time=T0 + timedelta(hours=1),
                                source="HES",
                                reading_qualities=(quality, mr.ReadingQuality("1.4.9")),
                                time_period=DateTimeInterval(T0, T0 + timedelta(minutes=30)),
                            ),
                            mr.IntervalReading(T0 + timedelta(minutes=45)),  # no value
                        ),
                        mr.PendingCalculation(RT_15, True, 1, 2, Decimal("0.5"), 3),
                    ),
                ),
                readings=(
                    mr.Reading(
                        RT_REG,
                        T0,
                        Decimal("6519.0955"),
                        reason="billing",
                        reported_date_time=T0,
                        source="meter",
                        reading_qualities=(quality,),
                        time_period=DateTimeInterval(end=T0),
                    ),
                ),
                end_device_events=(
                    mr.EndDeviceEvent(
                        "3.26.0.85",
                        "ev-1",
                        T0,
                        "iss",
                        "trk",
                        "r",
                        "high",
                        "u",
                        (("phase", "L1"), ("count", None)),
                        (Name("e"),),
                    ),
                ),
                values_interval=DateTimeInterval(T0, T0 + timedelta(days=1)),
                is_coincident_trigger=False,
            ),
            mr.MeterReading(meter=mr.Meter(mrid="MTR-2")),
        ),
        reading_types=(mr.CodeDefinition(RT_15, "15-min +A", (Name("A+ 15"),)),),
        reading_quality_types=(mr.CodeDefinition("3.8.0"),),
    )


def samples() -> dict[str, Any]:
    return {
        "MeterReadings": meter_readings_sample(),
        "GetMeterReadings": gmr.GetMeterReadings(
            end_devices=(BY_NAME, BOTH),
            end_device_groups=(IdentifiedObject("G1"),),
            reading_types=(IdentifiedObject(RT_15),),
            time_schedules=(DateTimeInterval(T0, T0 + timedelta(days=1)),),
            usage_points=(BY_MRID,),
            usage_point_groups=(IdentifiedObject(names=(Name("feeder-9"),)),),
        ),
        "EndDeviceControls": edc.EndDeviceControls(
            (
                edc.EndDeviceControl(
                    "3.31.0.23",
                    mrid="ctl-1",
                    dr_program_level=2,
                    dr_program_mandatory=True,
                    issuer_id="CIS",
                    issuer_tracking_id="T-9",
                    price_signal=edc.FloatQuantity(Decimal("12.5"), "k", "W"),
                    reason="non-payment",
                    end_device_groups=(IdentifiedObject("grp"),),
                    end_devices=(BY_NAME, BY_MRID),
                    primary_device_timing=edc.EndDeviceTiming(
                        Decimal(900), False, "start", DateTimeInterval(T0, None)
                    ),
                    secondary_device_timing=edc.EndDeviceTiming(duration_indefinite=True),
                    usage_point_groups=(IdentifiedObject("upg"),),
                    usage_points=(BOTH,),
                ),
                edc.EndDeviceControl("3.31.0.18", end_devices=(IdentifiedObject("M"),)),
                edc.EndDeviceControl(
                    "3.11.0.24",
                    end_device_action=edc.EndDeviceAction(
                        "image=AMH-3.1.0.img version=AMH-3.1.0 sha256=" + "ab" * 32,
                        Decimal(15),
                        False,
                        T0 + timedelta(hours=2),
                    ),
                    end_devices=(IdentifiedObject("M"),),
                ),
                edc.EndDeviceControl(
                    "3.20.0.24",
                    end_device_action=edc.EndDeviceAction(command="calendar=TOU-2027"),
                    end_devices=(IdentifiedObject("M"),),
                ),
            )
        ),
        "EndDeviceEvents": ede.EndDeviceEvents(
            (
                ede.EndDeviceEvent(
                    "3.26.0.85",
                    mrid="ev",
                    created_date_time=T0,
                    issuer_id="HES",
                    issuer_tracking_id="42",
                    reason="power lost",
                    severity="high",
                    user_id="hes",
                    assets=BY_NAME,
                    details=(("duration", "120"),),
                    names=(Name("evt"),),
                    usage_point=BY_MRID,
                ),
                ede.EndDeviceEvent("26.26.0.216", assets=IdentifiedObject("MTR-1")),
            )
        ),
        "MeterReadSchedule": mrs.MeterReadSchedule(
            end_devices=(BY_MRID,),
            end_device_groups=(IdentifiedObject("g"),),
            reading_types=(IdentifiedObject(RT_REG),),
            time_schedules=(
                mrs.TimeSchedule(
                    "s1", False, Decimal(60), "daily", Decimal(86400), DateTimeInterval(T0, None)
                ),
                mrs.TimeSchedule(),
            ),
            usage_points=(BOTH,),
            usage_point_groups=(IdentifiedObject("u"),),
        ),
        "MeterConfig": mc.MeterConfig(
            (
                mc.Meter(
                    mrid="MTR-1",
                    amr_system="HES-EAST",
                    form_number="2S",
                    is_virtual=False,
                    lot_number="L7",
                    serial_number="12345678",
                    status=Status("inventory"),
                    time_zone_offset=Decimal(480),
                    configuration_events=ConfigurationEvent(T0, T0, "delivery"),
                    asset_model=mc.AssetModel("E450", "2.1", (Name("Landis+Gyr"),)),
                    meter_multipliers=(mc.MeterMultiplier("ctRatio", Decimal(40)),),
                    names=BY_NAME.names,
                    usage_point=BY_MRID,
                ),
                mc.Meter(names=(Name("only-by-name"),)),
            )
        ),
        "UsagePointConfig": upc.UsagePointConfig(
            (
                upc.UsagePoint(
                    mrid="UP-1",
                    is_sdp=True,
                    is_virtual=False,
                    read_cycle="monthly",
                    service_priority="normal",
                    status=Status("active"),
                    configuration_events=ConfigurationEvent(effective_date_time=T0),
                    names=(Name("TA-12", NameType("TransformerArea")),),
                    service_category="electricity",
                    usage_point_location=IdentifiedObject("LOC-1"),
                ),
                upc.UsagePoint(mrid="UP-2"),
            )
        ),
        "MasterDataLinkageConfig": mdlc.MasterDataLinkageConfig(
            configuration_event=ConfigurationEvent(T0, T0 + timedelta(hours=1), "install"),
            end_devices=(IdentifiedObject("COMM-1"),),
            meters=(BY_NAME,),
            service_locations=(IdentifiedObject("SL-1"),),
            usage_points=(BY_MRID,),
        ),
    }


def _in_a_message(noun: str, element: etree._Element, style: env.Style) -> bytes:
    if noun == "GetMeterReadings":
        header = env.Header(verb="get", noun="MeterReadings", message_id="g")
        return env.render_request(header, env.RequestInfo(get=element), style=style)
    header = env.Header(verb="created", noun=noun, message_id="e")
    return env.render_event(header, element, style=style)


def _payload(noun: str, root: etree._Element) -> etree._Element:
    msg = env.parse_message(root)
    element = msg.request.get if noun == "GetMeterReadings" and msg.request else msg.payload
    assert element is not None
    return element


@pytest.mark.parametrize("style", ["envelope", "wrapper"])
@pytest.mark.parametrize("noun", list(MODULES))
def test_round_trip(noun: str, style: env.Style, assert_valid: Valid) -> None:
    obj = samples()[noun]
    pair = codec(noun)
    assert isinstance(obj, pair.type)
    element = pair.render(obj)
    root = assert_valid(_in_a_message(noun, element, style))
    assert pair.parse(_payload(noun, root)) == obj
    # the generic entry points agree
    assert parse_profile(render_profile(obj)) == obj


@pytest.mark.parametrize("noun", list(MODULES))
def test_empty_profile_round_trip(noun: str, assert_valid: Valid) -> None:
    pair = codec(noun)
    obj = pair.type()
    root = assert_valid(_in_a_message(noun, pair.render(obj), "wrapper"))
    assert pair.parse(_payload(noun, root)) == obj


@pytest.mark.parametrize("noun", list(MODULES))
def test_parse_refuses_another_root(noun: str) -> None:
    with pytest.raises(PayloadInvalid):
        codec(noun).parse(etree.Element("{urn:x}Other"))


def test_golden_created_meter_readings(golden: Golden) -> None:
    msg = env.parse_message(golden("created_meter_readings.xml").getroot())
    assert msg.payload is not None
    readings = mr.parse_meter_readings(msg.payload)
    (reading,) = readings.meter_readings
    assert reading.meter is not None
    assert reading.meter.mrid is None
    assert reading.meter.ref.name("MeterUniqueID") == "LGZ1030012345678"
    assert str(reading.meter.ref) == "MeterUniqueID=LGZ1030012345678"
    assert reading.usage_point == IdentifiedObject("UP-000042")
    (block,) = reading.interval_blocks
    assert block.reading_type == RT_15
    first, second = block.interval_readings
    assert first.time_stamp == datetime(2026, 2, 28, 16, 15, tzinfo=UTC)
    assert first.time_stamp is not None
    assert first.time_stamp.utcoffset() == timedelta(hours=8)
    assert first.value == Decimal("0.1250")
    assert str(first.value) == "0.1250"  # exact, trailing zero kept
    assert second.reading_qualities == (mr.ReadingQuality("1.4.9"),)
    assert reading.readings == (mr.Reading(RT_REG, T0, Decimal("6519.0955")),)


def test_render_keeps_the_offset_and_the_exact_value() -> None:
    el = mr.render_meter_readings(meter_readings_sample())
    xml = etree.tostring(el).decode()
    assert "<timeStamp>2026-03-01T00:15:00+08:00</timeStamp>" in xml
    assert "<value>0.1250</value>" in xml
    assert "<value>100</value>" in xml  # 1E+2 rendered without exponent
    assert 'xmlns="http://iec.ch/TC57/2011/MeterReadings#"' in xml
    assert xml.count("xmlns") == 1


def _event_with(value_xml: str) -> etree._Element:
    data = f"""<MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading>
      <IntervalBlocks><IntervalReadings>{value_xml}</IntervalReadings>
      <ReadingType ref="{RT_15}"/></IntervalBlocks></MeterReading></MeterReadings>"""
    return parse_bytes(data.encode()).getroot()


@pytest.mark.parametrize(
    ("value_xml", "code", "xpath_end"),
    [
        ("<value>12,5</value>", "2005", "/IntervalReadings/value"),
        ("<value>NaN</value>", "2005", "/IntervalReadings/value"),
        ("<timeStamp>2026-03-01T00:15:00</timeStamp>", "2006", "/IntervalReadings/timeStamp"),
        ("<timeStamp>tomorrow</timeStamp>", "2006", "/IntervalReadings/timeStamp"),
    ],
)
def test_unusable_values_raise_payload_invalid_with_xpath(
    value_xml: str, code: str, xpath_end: str
) -> None:
    with pytest.raises(PayloadInvalid) as info:
        mr.parse_meter_readings(_event_with(value_xml))
    assert info.value.code == code
    xpath = info.value.errors[0].xpath
    assert xpath is not None
    assert xpath == "/MeterReadings/MeterReading/IntervalBlocks" + xpath_end


def test_naive_datetime_is_not_rendered() -> None:
    block = mr.IntervalBlock(RT_15, (mr.IntervalReading(datetime(2026, 1, 1), Decimal(1)),))
    with pytest.raises(ValueError, match="naive"):
        mr.render_meter_readings(mr.MeterReadings((mr.MeterReading(interval_blocks=(block,)),)))


def _day(n: int) -> mr.MeterReadings:
    readings = tuple(
        mr.IntervalReading(T0 + timedelta(minutes=15 * i), Decimal(i) / 100) for i in range(n)
    )
    block = mr.IntervalBlock(RT_15, readings)
    return mr.MeterReadings((mr.MeterReading(meter=mr.Meter(mrid="M"), interval_blocks=(block,)),))


def test_meter_readings_render_speed_96_values(assert_valid: Valid) -> None:
    day = _day(96)
    mr.render_meter_readings(day)  # warm up (template built on first use)
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        mr.render_meter_readings(day)
    per_call = (time.perf_counter() - start) / rounds
    print(f"\nrender_meter_readings: 96 values in {per_call * 1e6:.0f} us")
    element = mr.render_meter_readings(day)
    header = env.Header(verb="reply", noun="MeterReadings", message_id="r")
    root = assert_valid(env.render_response(header, env.Reply("OK"), element, style="wrapper"))
    assert mr.parse_meter_readings(_payload("MeterReadings", root)) == day


def test_meter_year_is_streamed_with_bounded_memory(assert_valid: Valid) -> None:
    values = 35_040

    def year() -> Iterator[Row]:
        for i in range(values):
            ts = (T0 + timedelta(minutes=15 * i)).isoformat()
            yield "MTR-1", RT_15, ts, value_text(Decimal(i) / 1000), ""

    class Sink(io.RawIOBase):
        """Counts what is written and keeps the last chunk only."""

        size = 0

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.size += len(b)
            return len(b)

    request = env.Header(verb="get", noun="MeterReadings", message_id="y")
    sink = Sink()
    tracemalloc.start()
    try:
        with env.response_writer(sink, request, env.Reply("OK"), style="wrapper") as xf:  # type: ignore[arg-type]
            write_readings(xf, year(), STORED_QUALITIES, raw=cast(IO[bytes], sink))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\nmeter-year reply: {sink.size} bytes written, peak Python memory {peak} bytes")
    assert sink.size > 3_000_000
    assert peak < sink.size / 4

    # and the same, kept this time, is a valid message with every value
    out = io.BytesIO()
    with env.response_writer(out, request, env.Reply("OK"), style="wrapper") as xf:
        write_readings(xf, year(), STORED_QUALITIES, raw=out)
    root = assert_valid(out.getvalue())
    parsed = mr.parse_meter_readings(_payload("MeterReadings", root))
    assert len(parsed.meter_readings[0].interval_blocks[0].interval_readings) == values


def test_identified_object_helpers() -> None:
    ref = IdentifiedObject.by_name("SN-1", "SerialNumber")
    assert ref.name() == "SN-1"
    assert ref.name("SerialNumber") == "SN-1"
    assert ref.name("Other") is None
    assert ref.name_type == "SerialNumber"
    assert ref.identified
    assert not IdentifiedObject().identified
    assert str(IdentifiedObject("M-1")) == "M-1"


def test_end_device_control_schedule() -> None:
    control = samples()["EndDeviceControls"].end_device_controls[0]
    assert control.scheduled_at == T0
    assert edc.EndDeviceControl("3.31.0.18").scheduled_at is None


def test_get_meter_readings_end_device_by_serial_number_round_trips() -> None:
    from cim_schemas.profiles.common import Name
    from cim_schemas.profiles.get_meter_readings import (
        EndDeviceRef,
        GetMeterReadings,
        parse_get_meter_readings,
        render_get_meter_readings,
    )

    get = GetMeterReadings(
        end_devices=(EndDeviceRef("M-1", (Name("one"),), "SN-1"), EndDeviceRef(None, (), "SN-2"))
    )
    element = render_get_meter_readings(get)
    first = element[0]
    assert [c.tag.rpartition("}")[2] for c in first] == ["mRID", "serialNumber", "Names"]
    assert parse_get_meter_readings(element) == get
