"""Our XSD files and how schema locations are resolved: only package files, never a
path that leaves the package. `make mutate` found these untested (docs/testing.md)."""

from __future__ import annotations

import pytest
from lxml import etree

from cim_schemas import schemas


def test_read_xsd_reads_our_files_however_the_path_is_written() -> None:
    plain = schemas.read_xsd(schemas.DRIVER)
    assert b"schema" in plain
    for written in (f"./{schemas.DRIVER}", f"/{schemas.DRIVER}", f".\\{schemas.DRIVER}"):
        assert schemas.read_xsd(written) == plain


@pytest.mark.parametrize(
    "relative", ["", ".", "../all.xsd", "sub/../../all.xsd", "..\\all.xsd", "all.txt", "xsd/"]
)
def test_read_xsd_refuses_what_is_not_one_of_our_schema_files(relative: str) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        schemas.read_xsd(relative)
    assert str(caught.value) == f"not one of our schema files: {relative!r}"


def test_a_schema_location_is_normalised_inside_the_package() -> None:
    assert schemas._normalise_path("a/./b/../c.xsd") == "a/c.xsd"
    assert schemas._normalise_path("//a//b.xsd") == "a/b.xsd"
    assert schemas._normalise_path("a/b/../../c.xsd") == "c.xsd"
    for escaping in ("../c.xsd", "a/../../c.xsd"):
        with pytest.raises(etree.XMLSchemaParseError) as caught:
            schemas._normalise_path(escaping)
        assert str(caught.value) == f"schema location escapes the package: {escaping!r}"


def test_a_fresh_compile_validates_as_the_cached_schema() -> None:
    fresh = schemas.load_schema()
    assert isinstance(fresh, etree.XMLSchema)
    assert fresh is not schemas.message_schema()


def _payload(xml: bytes) -> etree._Element:
    return etree.fromstring(b"<P>\n" + xml + b"</P>")[0]


def test_the_payload_must_be_a_profile_of_the_header_noun() -> None:
    from cim_schemas.namespaces import profile_ns

    ns = profile_ns("MeterReadings").encode()
    get_ns = profile_ns("GetMeterReadings").encode()
    events_ns = profile_ns("EndDeviceEvents").encode()
    own = _payload(b'<MeterReadings xmlns="' + ns + b'"/>')
    query = _payload(b'<GetMeterReadings xmlns="' + get_ns + b'"/>')
    assert schemas.payload_problems("MeterReadings", own, "/x") == []
    assert schemas.payload_problems("MeterReadings", query, "/x") == []  # a get's query
    assert schemas.payload_problems("EndDeviceEvents", query, "/x") != []
    for wrong in (
        _payload(b'<EndDeviceEvents xmlns="' + events_ns + b'"/>'),  # another noun's profile
        _payload(b'<EndDeviceEvents xmlns="' + ns + b'"/>'),  # its namespace, another name
        _payload(b"<MeterReadings/>"),  # no namespace
    ):
        (problem,) = schemas.payload_problems("MeterReadings", wrong, "/EventMessage/Payload")
        qname = etree.QName(wrong)
        assert problem == schemas.SchemaError(
            xpath="/EventMessage/Payload",
            line=2,
            message=(
                f"Payload element {{{qname.namespace or ''}}}{qname.localname} is not a "
                "profile of the noun MeterReadings: expected "
                f"{{{profile_ns('GetMeterReadings')}}}GetMeterReadings or "
                f"{{{profile_ns('MeterReadings')}}}MeterReadings"
            ),
        )


def test_a_path_that_leads_nowhere_is_reported_as_libxml2_wrote_it() -> None:
    doc = etree.fromstring(b"<a><b/><b/></a>").getroottree()
    assert schemas._friendly_path(doc, "/*/*[2]") == "/a/b[2]"
    assert schemas._friendly_path(doc, "/*/*[3]") == "/*/*[3]"
    assert schemas._friendly_path(doc, "") == ""


def test_the_draft_namespace_is_rewritten_from_an_element_too() -> None:
    """normalise_namespaces takes a tree or its root element, as validate does."""
    from cim_schemas.xml import parse_bytes

    doc = b"""<RequestMessage xmlns="http://www.iec.ch/TC57/2011/schema/message"><Header>
        <Verb>get</Verb><Noun>MeterReadings</Noun></Header></RequestMessage>"""
    root = parse_bytes(doc).getroot()
    assert schemas.normalise_namespaces(root) is True
    assert root.tag == "{http://iec.ch/TC57/2011/schema/message}RequestMessage"
    assert schemas.validate(root) == []


FAULT = b"""<FaultMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Reply>
        <Result>FAILED</Result></Reply></FaultMessage>"""


def test_validate_names_the_element_of_a_root_given_and_no_line_where_there_is_none() -> None:
    from cim_schemas.xml import parse_bytes

    bad = parse_bytes(FAULT.replace(b"FAILED", b"MAYBE")).getroot()
    ((xpath, line, message),) = [(p.xpath, p.line, p.message) for p in schemas.validate(bad)]
    assert (xpath, line) == ("/FaultMessage/Reply/Result", 2)
    assert "'MAYBE' is not an element of the set" in message
    # an element added in memory has no source line: None, not libxml2's 0
    root = parse_bytes(FAULT).getroot()
    etree.SubElement(root, "{http://iec.ch/TC57/2011/schema/message}Bogus")
    assert schemas.validate(root) == [
        schemas.SchemaError(
            xpath="/FaultMessage/Bogus",
            line=None,
            message="Element '{http://iec.ch/TC57/2011/schema/message}Bogus': "
            "This element is not expected.",
        )
    ]


@pytest.mark.parametrize("url", ["", "http://example.com/evil.xsd", "file:///etc/passwd"])
def test_the_resolver_names_a_location_it_refuses(url: str) -> None:
    with pytest.raises(etree.XMLSchemaParseError) as caught:
        schemas._PackageResolver().resolve(url, "", None)
    assert str(caught.value) == f"schema location outside cim_schemas: {url!r}"
