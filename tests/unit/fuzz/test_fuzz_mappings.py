"""Fuzzing every shipped inbound mapping through what `amihub import --mapping` calls
(mappings.importer.import_file / apply_file, on a store with the samples' meters), and
the CIM variant through the pipeline: the shipped samples with byte-level edits or odd
texts in their fields (CSV cells, XML attributes and texts). A file is applied or
rejected with line errors; the only exceptions allowed out are amihub's own."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cim_schemas.errors import AmihubError
from hub.bootstrap import App
from hub.messages import InboundMessage
from hub.variants import VARIANT
from mappings.importer import ImportFile, apply_file, import_file
from mappings.load import BUILTIN_DIR, load_dir
from tests.bus import BUS
from tests.unit.fuzz.strategies import mutated, odd_texts
from tests.unit.hub.conftest import make_app
from tests.unit.hub.test_cli_mappings import installed_meters

SAMPLES = BUILTIN_DIR / "samples"
CATALOG = load_dir(BUILTIN_DIR)
#: inbound mapping -> (its sample, text encoding, field separator pattern)
MAPPINGS: dict[str, tuple[str, str]] = {
    "register-obis": ("register-obis.csv", "utf-8"),
    "wide-15min-de": ("wide-15min-de.csv", "latin-1"),
    "acme-xml": ("acme.xml", "utf-8"),
    "vendor-events-csv": ("vendor-events.csv", "utf-8"),
    "vendor-events-xml": ("vendor-events.xml", "utf-8"),
}
_CSV_FIELD = re.compile(rb"(?<=[,;\n])([^,;\n]+)")
_XML_FIELD = re.compile(rb'(?<==")([^"]*)|(?<=>)([^<]+)(?=<)')


def test_every_shipped_inbound_mapping_is_fuzzed() -> None:
    inbound = {
        name
        for name, spec in CATALOG.specs.items()
        if getattr(spec, "kind", "") in ("csv", "xml", "csv-events", "xml-events")
    }
    variants = {
        name for name, spec in CATALOG.specs.items() if getattr(spec, "kind", "") == "cim-variant"
    }
    assert inbound == set(MAPPINGS)
    assert variants == {"cim-vendor-draft"}


@st.composite
def odd_fields(draw: st.DrawFn, seed: bytes, encoding: str, xml: bool) -> bytes:
    pattern = _XML_FIELD if xml else _CSV_FIELD
    spans = [m.span(1) if m.group(1) is not None else m.span(2) for m in pattern.finditer(seed)]
    chosen = sorted(
        set(draw(st.lists(st.integers(0, len(spans) - 1), min_size=1, max_size=3))),
        reverse=True,
    )
    out = seed
    for i in chosen:
        lo, hi = spans[i]
        text = draw(odd_texts)
        if xml:
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        out = out[:lo] + text.encode(encoding, "replace") + out[hi:]
    return out


class Importer:
    def __init__(self, tmp: Path, url: str) -> None:
        installed_meters(url)
        self.tmp = tmp
        self.app: App = make_app(url)

    def check(self, mapping: str, data: bytes) -> None:
        path = self.tmp / f"in-{uuid.uuid4().hex[:8]}"
        path.write_bytes(data)
        command = ImportFile(path, mapping, self.app.settings.default_utility, "fuzz")
        result: Any
        try:
            if CATALOG.specs[mapping].kind in ("csv-events", "xml-events"):  # type: ignore[union-attr]
                result = apply_file(self.app.uow_factory, command, CATALOG, bus=BUS)
            else:
                result = import_file(self.app.uow_factory, command, CATALOG, bus=BUS)
        except AmihubError:
            return
        finally:
            path.unlink()
        result.report()  # the report names the lines: it must render, whatever they hold


@pytest.fixture
def importer(tmp_path: Path, sqlite_url: str) -> Iterator[Importer]:
    i = Importer(tmp_path, sqlite_url)
    yield i
    i.app.close()


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_mapping_odd_fields(importer: Importer, mapping: str) -> None:
    sample, encoding = MAPPINGS[mapping]
    seed = (SAMPLES / sample).read_bytes()

    @settings(max_examples=40)
    @given(odd_fields(seed, encoding, sample.endswith(".xml")))
    def run(data: bytes) -> None:
        importer.check(mapping, data)

    run()


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_mapping_byte_edits(importer: Importer, mapping: str) -> None:
    seed = (SAMPLES / MAPPINGS[mapping][0]).read_bytes()

    @settings(max_examples=25)
    @given(mutated([seed], max_edits=3))
    def run(data: bytes) -> None:
        importer.check(mapping, data)

    run()


def test_cim_variant_through_the_pipeline(importer: Importer) -> None:
    seed = (SAMPLES / "cim-vendor-draft-message.xml").read_bytes()

    @settings(max_examples=50)
    @given(st.one_of(odd_fields(seed, "utf-8", True), mutated([seed], max_edits=3)))
    def run(data: bytes) -> None:
        data = re.sub(rb"(<(?:\w+:)?MessageID>)[^<]*", rb"\g<1>" + uuid.uuid4().hex.encode(), data)
        outcome = importer.app.pipeline.process(
            InboundMessage(
                source="vendor",
                endpoint="t",
                body=data,
                metadata={VARIANT: "cim-vendor-draft"},
            )
        )
        assert "3002" not in [e.code for e in outcome.errors], outcome.errors

    run()
