"""CIM variants: a vendor's namespace drafts and element placement undone."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from cim_schemas.xml import parse_bytes
from mappings.cim_variant import normalise
from mappings.load import BUILTIN_DIR, SpecError, load_dir, load_spec

MR = "http://iec.ch/TC57/2011/MeterReadings#"


def test_vendor_draft_sample_is_normalised() -> None:
    spec = load_dir(BUILTIN_DIR).variant("cim-vendor-draft")
    tree = parse_bytes((BUILTIN_DIR / "samples" / "cim-vendor-draft.xml").read_bytes())
    assert normalise(spec, tree) > 0
    root = tree.getroot()
    assert root.tag == f"{{{MR}}}MeterReadings"
    [reading] = root
    assert [etree.QName(c).localname for c in reading] == ["IntervalBlocks", "Meter"]
    assert reading.findtext(f"{{{MR}}}Meter/{{{MR}}}mRID") == "m-1001"
    interval = reading.find(f"{{{MR}}}IntervalBlocks/{{{MR}}}IntervalReadings")
    assert interval is not None
    assert [etree.QName(c).localname for c in interval] == ["timeStamp", "value"]
    text = etree.tostring(tree).decode()
    assert "www.iec.ch" not in text
    assert "VendorInfo" not in text
    assert "urn:example:vendor" not in text
    # a second pass finds nothing left to do
    assert normalise(spec, tree) == 0


def test_unlisted_children_keep_their_order_after_the_listed(tmp_path: Path) -> None:
    path = tmp_path / "v.toml"
    path.write_text(
        'kind = "cim-variant"\nname = "v"\n[[reorder]]\nparent = "P"\nchildren = ["a", "b"]\n',
        encoding="utf-8",
    )
    spec = load_dir(tmp_path).variant("v")
    root = etree.fromstring(b"<P><x/><b/><y/><a/></P>")
    normalise(spec, root)
    assert [c.tag for c in root] == ["a", "b", "x", "y"]


def test_variant_spec_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "v.toml"
    path.write_text(
        'kind = "cim-variant"\nname = "v"\n[[rename]]\nfrom = "a b"\nto = "B"\n'
        '[[reorder]]\nparent = "P"\nchildren = ["a", "a"]\nfoo = 1\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [(p.line, p.key) for p in info.value.problems] == [(9, "reorder[0].foo")]
    path.write_text(
        'kind = "cim-variant"\nname = "v"\n[[rename]]\nfrom = "a b"\nto = "B"\n'
        '[[reorder]]\nparent = "P"\nchildren = ["a", "a"]\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [(p.line, p.key) for p in info.value.problems] == [
        (8, "reorder[0].children"),
        (4, "rename[0].from"),
    ]
