"""Fuzzing the CIM reader through the pipeline, on the tree path and on the streamed path:
real messages (MeterReadings, master data, events) with byte-level edits or with odd
texts in their fields. Whatever arrives, the outcome is a reply amihub made on purpose:
never 3002 (an internal error is an exception that is not amihub's)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.messages import InboundMessage
from hub.samples import (
    end_device_events,
    linkage,
    meter_config,
    meter_readings_bytes,
    usage_point_config,
)
from tests.unit.fuzz.strategies import mutated, odd_texts
from tests.unit.hub.conftest import START, add_meters, make_app

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
SEEDS = [
    meter_readings_bytes(["MTR-1"], START, 3),
    meter_readings_bytes(["MTR-1", "MTR-2"], START, 2, verb="changed"),
    meter_config("create", [{"mrid": "M-9", "serial": "SN9"}]),
    usage_point_config("create", [{"mrid": "UP-9"}]),
    linkage("create", "MTR-1", "UP-MTR-1", SINCE),
    end_device_events(
        "created", [{"meter": "MTR-1", "type": "3.26.0.85", "at": START, "mrid": "EV-1"}]
    ),
]
_TEXT = re.compile(rb">([^<]+)<")


@st.composite
def odd_fields(draw: st.DrawFn) -> bytes:
    """A seed with one to three of its text fields replaced by odd texts."""
    seed = draw(st.sampled_from(SEEDS))
    spans = [m.span(1) for m in _TEXT.finditer(seed)]
    if draw(st.booleans()):  # half of the time: the timestamps and numbers only
        spans = [(lo, hi) for lo, hi in spans if seed[lo : lo + 1].isdigit()] or spans
    chosen = sorted(
        set(draw(st.lists(st.integers(0, len(spans) - 1), min_size=1, max_size=3))),
        reverse=True,
    )
    out = seed
    for i in chosen:
        lo, hi = spans[i]
        text = escape(draw(odd_texts)).encode("utf-8", "replace")
        out = out[:lo] + text + out[hi:]
    return out


class Reader:
    """One store per test (not per example): an app for the tree path (any input is
    parsed whole) and one streaming every input over 256 bytes."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.apps = {
            "tree": make_app(url, tree_limit_bytes=10_000_000),
            "stream": make_app(url, tree_limit_bytes=256),
        }
        add_meters(self.apps["tree"], "MTR-1", "MTR-2")

    def check(self, data: bytes) -> None:
        # a fresh MessageID per try, so that no input is taken for a replay
        data = re.sub(
            rb"(<(?:\w+:)?MessageID>)[^<]*", rb"\g<1>" + uuid.uuid4().bytes.hex().encode(), data
        )
        path = self.tmp / "in.xml"
        path.write_bytes(data)
        for kind, app in self.apps.items():
            outcome = app.pipeline.process(InboundMessage(source="fuzz", endpoint="t", path=path))
            codes = [e.code for e in outcome.errors]
            assert "3002" not in codes, (kind, outcome.errors, data[:3000])

    def close(self) -> None:
        for app in self.apps.values():
            app.close()


@pytest.fixture
def reader(tmp_path: Path, sqlite_url: str) -> Iterator[Reader]:
    r = Reader(tmp_path, sqlite_url)
    yield r
    r.close()


def test_cim_reader_odd_fields(reader: Reader) -> None:
    @settings(max_examples=60)
    @given(odd_fields())
    def run(data: bytes) -> None:
        reader.check(data)

    run()


def test_cim_reader_byte_edits(reader: Reader) -> None:
    @settings(max_examples=60)
    @given(mutated(SEEDS, max_edits=3))
    def run(data: bytes) -> None:
        reader.check(data)

    run()
