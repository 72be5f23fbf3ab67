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
