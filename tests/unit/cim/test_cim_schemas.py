"""The driver schema: loading, caching, the package-only resolver, xpaths, namespaces."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from cim_schemas import schemas
from cim_schemas.namespaces import (
    DRAFT_MESSAGE_NS,
    MESSAGE_NS,
    NOUNS,
    WRAPPER_NOUNS,
    message_ns,
    noun_of_message_ns,
    noun_of_profile_ns,
    profile_ns,
)
from cim_schemas.xml import parse_bytes

Golden = Callable[[str], etree._ElementTree]


def test_message_schema_is_built_once_and_cached() -> None:
    assert schemas.message_schema() is schemas.message_schema()


def test_importing_the_package_builds_no_schema() -> None:
    import subprocess
    import sys

    code = (
        "import cim_schemas.schemas as s, cim_schemas.envelope;"
        "import cim_schemas.profiles.meter_readings, cim_schemas.codes.reading_type;"
        "print(len(s._cache))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_every_xsd_file_compiles_on_its_own() -> None:
    for name in ["message.xsd", *(f"profiles/{n}.xsd" for n in NOUNS)]:
        assert isinstance(schemas.load_schema(name), etree.XMLSchema)
    for noun in [*WRAPPER_NOUNS, "GetMeterReadings"]:
        assert isinstance(schemas.load_schema(f"messages/{noun}Message.xsd"), etree.XMLSchema)


def test_resolver_refuses_locations_outside_the_package() -> None:
    with pytest.raises(FileNotFoundError):
        schemas.read_xsd("../xml.py")
    with pytest.raises(FileNotFoundError):
        schemas.read_xsd("/etc/passwd")
    resolver = schemas._PackageResolver()
    with pytest.raises(etree.XMLSchemaParseError):
        resolver.resolve("http://example.com/evil.xsd", "", None)
    with pytest.raises(etree.XMLSchemaParseError):
        resolver.resolve("file:///etc/passwd", "", None)


def test_namespaces_helpers() -> None:
    assert profile_ns("MeterReadings") == "http://iec.ch/TC57/2011/MeterReadings#"
    assert message_ns("EndDeviceControls") == "http://iec.ch/TC57/2011/EndDeviceControlsMessage"
    assert noun_of_profile_ns(profile_ns("MeterConfig")) == "MeterConfig"
    assert noun_of_message_ns(message_ns("MeterConfig")) == "MeterConfig"
    assert noun_of_profile_ns("http://example.com/x#") is None
    assert DRAFT_MESSAGE_NS.replace("www.", "") == MESSAGE_NS


def test_golden_files_validate(golden: Golden) -> None:
    for name in (
        "created_meter_readings.xml",
        "draft_namespace_request.xml",
        "get_meter_readings.xml",
        "verb_mismatch.xml",
        "end_device_events_fault.xml",
    ):
        assert schemas.validate(golden(name)) == [], name


def test_error_xpath_names_the_element_in_a_default_namespace(golden: Golden) -> None:
    problems = schemas.validate(golden("schema_invalid_event.xml"))
    assert len(problems) == 1
    problem = problems[0]
    assert problem.xpath == (
        "/EventMessage/Payload/MeterReadings/MeterReading/IntervalBlocks/IntervalReadings[2]/timeStamp"
    )
    assert problem.line is not None
    assert problem.line > 1
    assert "dateTime" in problem.message


def test_error_xpath_names_the_element_with_prefixes() -> None:
    doc = b"""<m:CreatedMeterConfig xmlns:m="http://iec.ch/TC57/2011/MeterConfigMessage"
        xmlns:msg="http://iec.ch/TC57/2011/schema/message"><m:Header><msg:Verb>created</msg:Verb>
        <msg:Noun>MeterConfig</msg:Noun><msg:Unknown/></m:Header></m:CreatedMeterConfig>"""
    problems = schemas.validate(parse_bytes(doc))
    assert problems[0].xpath == "/CreatedMeterConfig/Header/Unknown"
    assert all(isinstance(p, schemas.SchemaError) for p in problems)


def test_lax_payload_is_validated_against_the_loaded_profile() -> None:
    doc = b"""<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>
        <Verb>create</Verb><Noun>MeterConfig</Noun></Header><Payload>
        <MeterConfig xmlns="http://iec.ch/TC57/2011/MeterConfig#"><Meter><serialNumber>1</serialNumber>
        <mRID>too-late</mRID></Meter></MeterConfig></Payload></RequestMessage>"""
    problems = schemas.validate(parse_bytes(doc))
    assert [p.xpath for p in problems] == ["/RequestMessage/Payload/MeterConfig/Meter/mRID"]


def test_unknown_payload_namespace_is_accepted_lax() -> None:
    doc = b"""<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>
        <Verb>created</Verb><Noun>Thing</Noun></Header><Payload>
        <Thing xmlns="urn:example:thing"><a/></Thing></Payload></EventMessage>"""
    assert schemas.validate(parse_bytes(doc)) == []


def test_draft_namespace_is_rewritten_in_place() -> None:
    doc = b"""<RequestMessage xmlns="http://www.iec.ch/TC57/2011/schema/message"><Header>
        <Verb>get</Verb><Noun>MeterReadings</Noun></Header></RequestMessage>"""
    tree = parse_bytes(doc)
    assert schemas.validate(tree) != []
    assert schemas.normalise_namespaces(tree) is True
    assert tree.getroot().tag == "{http://iec.ch/TC57/2011/schema/message}RequestMessage"
    assert schemas.validate(tree) == []
    assert schemas.normalise_namespaces(tree) is False


def test_validate_accepts_an_element() -> None:
    doc = b"""<FaultMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Reply>
        <Result>FAILED</Result></Reply></FaultMessage>"""
    assert schemas.validate(parse_bytes(doc).getroot()) == []


def test_local_xpath_indexes_only_repeated_names() -> None:
    root = etree.fromstring(b"<a><b/><c/><c><d/></c></a>")
    d = root[2][0]
    assert schemas.local_xpath(d) == "/a/c[2]/d"
    assert schemas.local_xpath(root[0]) == "/a/b"


def test_streaming_validation_with_the_cached_schema() -> None:
    from pathlib import Path

    from cim_schemas.errors import SchemaInvalid
    from cim_schemas.xml import LimitedReader, iterparse

    data = Path(__file__).parent / "data"
    with (data / "created_meter_readings.xml").open("rb") as f:
        reader = LimitedReader(f, 1 << 20)
        ends = [el for ev, el in iterparse(reader, schema=schemas.message_schema()) if ev == "end"]
    assert etree.QName(ends[-1]).localname == "CreatedMeterReadings"
    with (data / "schema_invalid_event.xml").open("rb") as f, pytest.raises(SchemaInvalid):
        for _ in iterparse(LimitedReader(f, 1 << 20), schema=schemas.message_schema()):
            pass
