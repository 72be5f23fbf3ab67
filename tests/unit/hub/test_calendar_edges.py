"""Timestamps at the edge of the calendar, and undeclared prefixes, through `amihub import`.

``9999-12-31T23:59:59-14:00`` is a valid xs:dateTime whose instant lies after year 9999
in UTC (and ``0001-01-01T00:00:00+14:00`` before year 1): Python cannot convert either.
Each input is refused with a clear error naming the element or the line, on the tree
path and on the streamed path alike; never a 3002 internal error or a traceback.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli import cli
from hub.samples import meter_readings_bytes
from mappings.load import BUILTIN_DIR
from tests.unit.hub.conftest import START, add_meters, make_app, reading_count

SAMPLES = BUILTIN_DIR / "samples"
EDGES = ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00")
#: streamed: any file over 1 KiB; tree: every file here
PATHS = {"tree": "10000000", "stream": "1024"}
INTERNAL_ERROR = re.compile(r"\b3002\b")


def run(*args: str, tree_limit: str = PATHS["tree"]) -> tuple[int, str]:
    runner = CliRunner(env={"COLUMNS": "400", "AMIHUB_LIMITS__TREE_LIMIT_BYTES": tree_limit})
    result = runner.invoke(cli, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output,
        result.exception,
    )
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def store(sqlite_url: str) -> str:
    app = make_app(sqlite_url)
    add_meters(app, "MTR-1")
    app.close()
    return sqlite_url


def cim_file(tmp_path: Path, body: bytes) -> Path:
    body = re.sub(
        rb"<MessageID>[^<]*</MessageID>", f"<MessageID>{uuid.uuid4()}</MessageID>".encode(), body
    )
    # not a random name: one could hold the result codes the tests look for ("33002bcc….xml")
    path = tmp_path / f"input-{len(list(tmp_path.glob('input-*.xml')))}.xml"
    path.write_bytes(body)
    return path


def import_cim(store: str, path: Path, path_kind: str) -> tuple[int, str]:
    return run("--database-url", store, "import", str(path), tree_limit=PATHS[path_kind])


@pytest.mark.parametrize("path_kind", sorted(PATHS))
@pytest.mark.parametrize("edge", EDGES)
def test_cim_reading_timestamp_at_the_calendar_edge(
    store: str, tmp_path: Path, edge: str, path_kind: str
) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 40)
    first = b"2026-03-01T00:15:00+00:00"
    assert first in body
    code, output = import_cim(
        store, cim_file(tmp_path, body.replace(first, edge.encode(), 1)), path_kind
    )
    assert code == 1, output
    assert "FAILED" in output
    assert "2006" in output, output
    assert "outside the range of instants" in output, output
    assert not INTERNAL_ERROR.search(output), output


@pytest.mark.parametrize("path_kind", sorted(PATHS))
def test_cim_header_timestamp_at_the_calendar_edge(
    store: str, tmp_path: Path, path_kind: str
) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 40)
    body = re.sub(
        rb"<Timestamp>[^<]*</Timestamp>", f"<Timestamp>{EDGES[0]}</Timestamp>".encode(), body
    )
    code, output = import_cim(store, cim_file(tmp_path, body), path_kind)
    assert code == 1, output
    assert "1008" in output, output
    assert "outside the range of instants" in output, output


def _undeclared(body: bytes, where: str) -> bytes:
    if where == "header":
        return body.replace(b"<Verb>", b"<zz:Verb>", 1).replace(b"</Verb>", b"</zz:Verb>", 1)
    if where == "root":
        return body.replace(b"<EventMessage ", b"<zz:EventMessage ", 1).replace(
            b"</EventMessage>", b"</zz:EventMessage>"
        )
    if where == "payload":
        return body.replace(b"<Payload>", b"<zz:Payload>", 1).replace(
            b"</Payload>", b"</zz:Payload>"
        )
    if where == "attribute":
        return body.replace(b"<Verb>", b'<Verb zz:x="1">', 1)
    i = body.rfind(b"<m:value>")  # "late": the last reading, far into the stream
    return body[:i] + b'<m:value zz:x="1">' + body[i + len(b"<m:value>") :]


@pytest.mark.parametrize("where", ["header", "root", "payload", "attribute", "late"])
def test_undeclared_prefix_is_1001_on_both_paths(store: str, tmp_path: Path, where: str) -> None:
    body = _undeclared(meter_readings_bytes(["MTR-1"], START, 40), where)
    outputs = {}
    for path_kind in sorted(PATHS):
        code, output = import_cim(store, cim_file(tmp_path, body), path_kind)
        assert code == 1, output
        assert "1001" in output, (path_kind, output)
        assert "Namespace prefix zz" in output, (path_kind, output)
        assert "line 2" in output
        outputs[path_kind] = output
    assert not INTERNAL_ERROR.search("".join(outputs.values()))


# -- the shipped mappings: `amihub import --mapping` -------------------------------------


def _register_obis(edge: str) -> tuple[str, str]:
    lines = (SAMPLES / "register-obis.csv").read_text(encoding="utf-8").splitlines()
    local = {EDGES[0]: "9999-12-31 24:00:00", EDGES[1]: "0001-01-01 00:00:00"}[edge]
    lines[2] = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", local, lines[2], count=1)
    return "\n".join(lines) + "\n", "csv"


def _wide(edge: str) -> tuple[str, str]:
    lines = (SAMPLES / "wide-15min-de.csv").read_text(encoding="latin-1").splitlines()
    day = {EDGES[0]: "31.12.9999", EDGES[1]: "01.01.0001"}[edge]
    lines[2] = re.sub(r"\d\d\.\d\d\.\d{4}", day, lines[2], count=1)
    return "\n".join(lines) + "\n", "csv"


def _acme(edge: str) -> tuple[str, str]:
    text = (SAMPLES / "acme.xml").read_text(encoding="utf-8")
    return text.replace('time="2026-11-24T00:00:00+01:00"', f'time="{edge}"', 1), "xml"


def _acme_local(edge: str) -> tuple[str, str]:  # iso8601 without zone: Europe/Berlin
    local = {EDGES[0]: "9999-12-31T24:00:00", EDGES[1]: "0001-01-01T00:00:00"}[edge]
    text = (SAMPLES / "acme.xml").read_text(encoding="utf-8")
    return text.replace('time="2026-11-24T00:00:00"', f'time="{local}"', 1), "xml"


def _events_xml(edge: str) -> tuple[str, str]:
    text = (SAMPLES / "vendor-events.xml").read_text(encoding="utf-8")
    return text.replace('time="2026-11-24T08:00:00" dst="W"', f'time="{edge}" dst="W"', 1), "xml"


def _events_csv(edge: str) -> tuple[str, str]:
    local = {EDGES[0]: "31.12.9999 24:00:00", EDGES[1]: "01.01.0001 00:00:00"}[edge]
    lines = (SAMPLES / "vendor-events.csv").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("24.11.2026 03:14:02", local)
    return "\n".join(lines) + "\n", "csv"


#: local times (no zone) in Europe/Berlin: 24:00 of 9999-12-31 is after year 9999, local
#: midnight of year 1 before year 1 in UTC
MAPPED = {
    "register-obis": _register_obis,
    "wide-15min-de": _wide,
    "acme-xml": _acme,
    "acme-xml local": _acme_local,
    "vendor-events-xml": _events_xml,
    "vendor-events-csv": _events_csv,
}


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("case", sorted(MAPPED))
def test_mapped_timestamp_at_the_calendar_edge(
    store: str, tmp_path: Path, case: str, edge: str
) -> None:
    text, suffix = MAPPED[case](edge)
    encoding = "latin-1" if case == "wide-15min-de" else "utf-8"
    path = tmp_path / f"edge.{suffix}"
    path.write_text(text, encoding=encoding)
    code, output = run("--database-url", store, "import", "--mapping", case.split()[0], str(path))
    assert code == 1, output
    assert "rejected" in output
    assert "outside the range of instants" in output, output
    assert re.search(r"line \d+", output), output  # the line of the row or element


@pytest.mark.parametrize("where", ["</m:MeterReadings>", "</m:MeterReading>", "<m:value>"])
def test_a_broken_element_is_1001_on_both_paths(store: str, tmp_path: Path, where: str) -> None:
    """With the schema on the streaming parser, libxml2 let a broken element pass (no
    exception, an empty error log) and the streamed file was stored; refused like the
    tree path now, nothing stored."""
    body = meter_readings_bytes(["MTR-1"], START, 40)
    at = body.rfind(where.encode())
    broken = body[:at] + b'<m:ReadingQuality1.5.257"/>' + body[at:]  # as a fuzz run made it
    for path_kind in sorted(PATHS):
        code, output = import_cim(store, cim_file(tmp_path, broken), path_kind)
        assert code == 1, (path_kind, output)
        assert "1001" in output, (path_kind, output)
        assert "not well-formed XML at line 2" in output, (path_kind, output)
        assert not INTERNAL_ERROR.search(output), output
    app = make_app(store)
    try:
        assert reading_count(app) == 0
    finally:
        app.close()
