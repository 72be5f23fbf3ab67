"""Streaming CSV and XML readers: rows, per-line errors, DST, encodings, bad files."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cim_schemas.errors import ForbiddenXml, NotWellFormed
from mappings.csv_reader import read_csv
from mappings.load import BUILTIN_DIR, load_dir, parse_spec_text
from mappings.rows import Batch, FileRejected, LineError, SourceRow
from mappings.spec import CsvSpec, XmlSpec
from mappings.xml_reader import read_xml

CATALOG = load_dir(BUILTIN_DIR)
TABLES = CATALOG.tables
SAMPLES = BUILTIN_DIR / "samples"
PLUS_A = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
MINUS_A = "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
PROFILE = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def csv_spec(body: str) -> CsvSpec:
    spec, _ = parse_spec_text(f'kind = "csv"\nname = "t"\n{body}', "t.toml")
    assert isinstance(spec, CsvSpec)
    assert spec.cross_check(TABLES) == []
    return spec


LONG = """
[csv]
delimiter = ";"
[meter]
column = "meter"
[timestamp]
column = "ts"
format = "%d.%m.%Y %H:%M"
timezone = "Europe/Berlin"
{ts_extra}
[value]
column = "value"
decimal_separator = ","
[reading_type]
fixed = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
"""


def read_all(batches: Iterator[Batch]) -> tuple[list[SourceRow], list[LineError]]:
    rows: list[SourceRow] = []
    errors: list[LineError] = []
    for b in batches:
        rows += b.rows
        errors += b.errors
    return rows, errors


def run_csv(
    spec: CsvSpec, data: bytes, batch_size: int = 5000
) -> tuple[list[SourceRow], list[LineError]]:
    return read_all(read_csv(spec, io.BytesIO(data), tables=TABLES, batch_size=batch_size))


def test_long_rows_with_decimal_comma_and_local_time() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    data = b"meter;ts;value\nSN1;24.11.2026 00:15;1,5\nSN1;01.07.2026 12:00;-0,25\n"
    rows, errors = run_csv(spec, data)
    assert errors == []
    assert [(r.line, r.ts, r.value) for r in rows] == [
        (2, utc(2026, 11, 23, 23, 15), Decimal("1.5")),
        (3, utc(2026, 7, 1, 10, 0), Decimal("-0.25")),
    ]
    assert rows[0].meter.ref.name == "SN1"
    assert rows[0].reading_type == PROFILE


def test_bad_date_on_line_n_is_named_with_its_column() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    data = (
        b"meter;ts;value\nSN1;24.11.2026 00:15;1\nSN1;24.11.2026 00:30;1\n"
        b"SN1;31.11.2026 00:45;1\nSN1;24.11.2026 01:00;1,2,3\n"
    )
    rows, errors = run_csv(spec, data)
    assert len(rows) == 2
    assert [(e.line, e.field, e.code) for e in errors] == [
        (4, "column 'ts'", "2006"),
        (5, "column 'value'", "2005"),
    ]
    assert str(errors[0]).startswith("line 4, column 'ts': '31.11.2026 00:45' does not match")


def test_wrong_column_count_and_missing_meter() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    data = b"meter;ts;value\nSN1;24.11.2026 00:15\n;24.11.2026 00:15;1\n"
    _, errors = run_csv(spec, data)
    assert [(e.line, e.code, e.message) for e in errors] == [
        (2, "2013", "2 columns, expected 3"),
        (3, "2011", "no meter identifier"),
    ]


def test_24_00_is_midnight_of_next_day() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    rows, _ = run_csv(spec, b"meter;ts;value\nSN1;24.11.2026 24:00;1\n")
    assert rows[0].ts == utc(2026, 11, 24, 23, 0)


def test_autumn_hour_by_order_and_spring_gap_refused() -> None:
    spec = csv_spec(LONG.format(ts_extra='repeated_hour = "order"'))
    data = (
        b"meter;ts;value\n"
        b"SN1;25.10.2026 02:15;1\nSN2;25.10.2026 02:15;5\n"  # first time each: summer
        b"SN1;25.10.2026 02:15;2\n"  # second time for SN1: winter
        b"SN1;25.10.2026 02:15;3\n"  # third: error
        b"SN1;29.03.2026 02:30;4\n"
    )  # does not exist
    rows, errors = run_csv(spec, data)
    assert [(r.meter.ref.name, r.ts) for r in rows] == [
        ("SN1", utc(2026, 10, 25, 0, 15)),
        ("SN2", utc(2026, 10, 25, 0, 15)),
        ("SN1", utc(2026, 10, 25, 1, 15)),
    ]
    assert [(e.line, e.code) for e in errors] == [(5, "2006"), (6, "2006")]
    assert "third time" in errors[0].message
    assert "does not exist in Europe/Berlin" in errors[1].message


def test_autumn_hour_refused_when_the_mapping_says_so() -> None:
    spec = csv_spec(LONG.format(ts_extra='repeated_hour = "refuse"'))
    _, errors = run_csv(spec, b"meter;ts;value\nSN1;25.10.2026 02:15;1\nSN1;25.10.2026 03:15;1\n")
    assert [e.line for e in errors] == [2]


def test_register_sample_dst_flag_units_quality_and_obis() -> None:
    spec = CATALOG.inbound("register-obis")
    with (SAMPLES / "register-obis.csv").open("rb") as fh:
        rows, errors = read_all(read_csv(spec, fh, tables=TABLES))
    assert errors == []
    assert [r.ts for r in rows[2:4]] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]
    assert rows[1].reading_type == MINUS_A
    assert rows[4].quality == "2.8.0"
    assert rows[5].value == Decimal("2000.500")  # Wh -> kWh
    assert rows[5].reading_type == PLUS_A


def test_dst_flag_must_agree_and_be_known() -> None:
    spec = CATALOG.inbound("register-obis")
    assert isinstance(spec, CsvSpec)
    data = (
        b"meter,obis,timestamp,dst,value,unit,status\n"
        b"SN1,1-0:1.8.0*255,2026-07-01 00:00:00,W,1,kWh,OK\n"
        b"SN1,1-0:1.8.0*255,2026-07-01 00:00:00,X,1,kWh,OK\n"
        b"SN1,1-0:9.9.9*255,2026-07-01 00:00:00,S,1,kWh,OK\n"
        b"SN1,1-0:1.8.0*255,2026-07-01 00:00:00,S,1,MWh,??\n"
    )
    _, errors = run_csv(spec, data)
    assert [(e.line, e.code) for e in errors] == [
        (2, "2006"),
        (3, "2006"),
        (4, "2003"),
        (5, "2013"),
    ]
    assert "summer time" in errors[0].message


def test_wide_sample_day_lengths_follow_dst() -> None:
    spec = CATALOG.inbound("wide-15min-de")
    assert isinstance(spec, CsvSpec)
    with (SAMPLES / "wide-15min-de.csv").open("rb") as fh:
        rows, errors = read_all(read_csv(spec, fh, tables=TABLES, batch_size=50))
    assert errors == []
    per_line: dict[int, list[SourceRow]] = {}
    for r in rows:
        per_line.setdefault(r.line, []).append(r)
    assert [len(per_line[n]) for n in sorted(per_line)] == [92, 100, 96] * 2
    autumn = per_line[3]
    assert autumn[0].ts == utc(2026, 10, 24, 22, 15)  # 00:15 CEST ends the first interval
    assert autumn[-1].ts == utc(2026, 10, 25, 23, 0)  # 24:00 CET
    assert len({r.ts for r in autumn}) == 100
    assert per_line[2][0].value == Decimal("0.250")


def test_wide_rows_with_flags_and_bad_shapes() -> None:
    spec = csv_spec("""
[csv]
delimiter = ","
header = false
[meter]
column = 1
[wide]
date_column = 2
date_format = "%Y-%m-%d"
timezone = "Europe/Berlin"
first_column = 3
interval_minutes = 360
label = "start"
flags = "after_each_value"
[quality]
codes = { "" = "", E = "2.8.0" }
[reading_type]
fixed = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
""")
    data = b"M1,2026-11-24,1,,2,E,3,,4,\nM1,2026-11-25,1,,2,X,3,,4,\nM1,2026-11-26,1,,2,,3,,4,,5,\n"
    rows, errors = run_csv(spec, data)
    assert [(r.ts, r.quality) for r in rows] == [
        (utc(2026, 11, 23, 23), ""),
        (utc(2026, 11, 24, 5), "2.8.0"),
        (utc(2026, 11, 24, 11), ""),
        (utc(2026, 11, 24, 17), ""),
    ]
    assert [(e.line, e.field, e.code) for e in errors] == [
        (2, "column 6", "2010"),
        (3, None, "2013"),
    ]


def test_wide_row_without_room_for_the_autumn_day() -> None:
    spec = CATALOG.inbound("wide-15min-de")
    assert isinstance(spec, CsvSpec)
    head = ";".join(["Zählernummer", "Datum"] + [f"W{i:03d}" for i in range(1, 97)])
    row = ";".join(["SN1", "25.10.2026"] + ["1"] * 96)
    _, errors = run_csv(spec, f"{head}\n{row}\n".encode("latin-1"))
    assert [e.line for e in errors] == [2]
    assert "100 intervals" in errors[0].message


def test_bom_and_latin1_and_wrong_encoding() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    data = "meter;ts;value\nZähler1;24.11.2026 00:15;1\n"
    rows, errors = run_csv(spec, b"\xef\xbb\xbf" + data.encode())
    assert errors == []
    assert rows[0].meter.ref.name == "Zähler1"
    latin = csv_spec(
        LONG.format(ts_extra="").replace('delimiter = ";"', 'delimiter = ";"\nencoding = "latin-1"')
    )
    rows, _ = run_csv(latin, data.encode("latin-1"))
    assert rows[0].meter.ref.name == "Zähler1"
    with pytest.raises(FileRejected, match="not valid utf-8"):
        run_csv(spec, data.encode("latin-1"))


def test_empty_file_header_only_and_missing_header_column() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    for data in (b"", b"\n\n", "\ufeff".encode()):
        with pytest.raises(FileRejected, match="empty file"):
            run_csv(spec, data)
    with pytest.raises(FileRejected, match="no data rows after the header"):
        run_csv(spec, b"meter;ts;value\n")
    with pytest.raises(FileRejected, match="no column 'value'"):
        run_csv(spec, b"meter;ts;wert\nSN1;24.11.2026 00:15;1\n")


def test_quoted_multiline_field_keeps_line_numbers() -> None:
    spec = csv_spec(LONG.format(ts_extra=""))
    data = b'meter;ts;value\n"S\nN1";24.11.2026 00:15;1\nSN2;bad;1\n'
    rows, errors = run_csv(spec, data)
    assert rows[0].line == 2
    assert errors[0].line == 4


def test_csv_memory_is_bounded(tmp_path: Path) -> None:
    spec = csv_spec(
        LONG.format(ts_extra="")
        .replace("[reading_type]", "[reading_type]")
        .replace('timezone = "Europe/Berlin"', 'timezone = "UTC"')
    )
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("meter;ts;value\n")
        for i in range(20_000):
            f.write(f"SN{i % 100};{(i // 100) % 28 + 1:02d}.11.2026 {i % 24:02d}:00;{i},5\n")
    tracemalloc.start()
    count = 0
    with path.open("rb") as fh:
        for batch in read_csv(spec, fh, tables=TABLES, batch_size=1000):
            count += len(batch.rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20_000
    assert peak < 3 * 1024 * 1024, peak  # 20,000 SourceRows kept would take ~8 MB


# --------------------------------------------------------------------------- XML


def xml_spec() -> XmlSpec:
    spec = CATALOG.inbound("acme-xml")
    assert isinstance(spec, XmlSpec)
    return spec


def run_xml(data: bytes) -> tuple[list[SourceRow], list[LineError]]:
    return read_all(read_xml(xml_spec(), io.BytesIO(data), tables=TABLES))


def test_xml_sample() -> None:
    rows, errors = run_xml((SAMPLES / "acme.xml").read_bytes())
    assert errors == []
    assert [(r.line, r.meter.ref.name, r.reading_type, r.ts, r.value, r.quality) for r in rows] == [
        (1, "SN1001", PLUS_A, utc(2026, 11, 23, 23), Decimal("12400.5"), ""),
        (2, "SN1001", MINUS_A, utc(2026, 11, 23, 23), Decimal("18.25"), ""),
        (3, "SN1002", PLUS_A, utc(2026, 11, 23, 23), Decimal("2001.000"), "2.8.0"),
    ]


def test_xml_record_errors_name_record_line_and_field() -> None:
    v1 = '<md:Value unit="kWh">1</md:Value></md:Reading>'
    data = f"""<md:MeterData xmlns:md="urn:example:acme:meterdata:1">
<md:Meter serial="SN1">
<md:Reading obis="1.8.0" time="2026-11-24T00:00:00">{v1}
<md:Reading obis="1-0:1.8.0*255" time="2026-13-24T00:00:00">{v1}
<md:Reading obis="1-0:1.8.0*255" time="2026-11-24T00:00:00">
<md:Value unit="kWh">x</md:Value></md:Reading>
</md:Meter>
<md:Meter>
<md:Reading obis="1-0:1.8.0*255" time="2026-11-24T00:00:00">{v1}
</md:Meter>
</md:MeterData>""".encode()
    rows, errors = run_xml(data)
    assert rows == []
    assert [(e.line, e.source_line, e.field, e.code) for e in errors] == [
        (1, 3, "reading_type", "2003"),
        (2, 4, "timestamp", "2006"),
        (3, 5, "value", "2005"),
        (4, 9, "meter", "2011"),
    ]
    assert str(errors[1]).startswith("record 2 (line 4), timestamp:")


def test_xml_not_well_formed_empty_doctype_and_no_records() -> None:
    with pytest.raises(NotWellFormed):
        run_xml(b'<md:MeterData xmlns:md="urn:example:acme:meterdata:1"><md:Meter>')
    with pytest.raises(NotWellFormed):
        run_xml(b"")
    with pytest.raises(ForbiddenXml):
        run_xml(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    with pytest.raises(FileRejected, match="no md:Reading records"):
        run_xml(b'<md:MeterData xmlns:md="urn:example:acme:meterdata:1"/>')


def test_xml_memory_is_bounded() -> None:
    def stream() -> Iterator[bytes]:
        yield b'<md:MeterData xmlns:md="urn:example:acme:meterdata:1">'
        for m in range(50):
            yield f'<md:Meter serial="SN{m}"><md:Info>x</md:Info>'.encode()
            for h in range(200):
                yield (
                    f'<md:Reading obis="1-0:1.8.0*255" time="2026-11-{h % 28 + 1:02d}T'
                    f'{h % 24:02d}:00:00Z"><md:Value unit="kWh">{h}</md:Value>'
                    f"</md:Reading>"
                ).encode()
            yield b"</md:Meter>"
        yield b"</md:MeterData>"

    class Chunks(io.RawIOBase):
        def __init__(self) -> None:
            self.it = stream()
            self.buf = b""

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            while len(self.buf) < len(b):
                try:
                    self.buf += next(self.it)
                except StopIteration:
                    break
            n = min(len(b), len(self.buf))
            b[:n] = self.buf[:n]
            self.buf = self.buf[n:]
            return n

    tracemalloc.start()
    count = 0
    for batch in read_xml(xml_spec(), io.BufferedReader(Chunks()), tables=TABLES, batch_size=1000):
        count += len(batch.rows)
        assert batch.errors == []
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 10_000
    assert peak < 3 * 1024 * 1024, peak


# --------------------------------------------------------------------------- fast path


def _both_paths(
    monkeypatch: pytest.MonkeyPatch, spec: CsvSpec, data: bytes
) -> tuple[tuple[list[SourceRow], list[LineError]], tuple[list[SourceRow], list[LineError]]]:
    """Read ``data`` with the per-row fast path and with the full path only."""
    from mappings import csv_reader

    def run() -> tuple[list[SourceRow], list[LineError]]:
        return read_all(read_csv(spec, io.BytesIO(data), tables=TABLES, batch_size=7))

    fast = run()
    with monkeypatch.context() as m:
        m.setattr(csv_reader._RowEngine, "_make_fast", lambda self: self._row_full)
        full = run()
    return fast, full


def test_fast_path_reads_and_reports_like_the_full_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long = CATALOG.inbound("register-obis")
    assert isinstance(long, CsvSpec)
    head = "meter,obis,timestamp,dst,value,unit,status\n"
    lines = [
        "SN1,1-0:1.8.0*255,2026-10-25 02:30:00,S,1.5,kWh,OK",
        "SN1,1-0:1.8.0*255,2026-10-25 02:30:00,W,1.6,Wh,E",
        "SN1,1-0:1.8.0*255,2026-10-25 02:30:00,X,1.7,kWh,OK",  # bad DST flag
        "SN2,1-0:2.8.0*255,2026-03-29 02:30:00,S,2,kWh,OK",  # spring gap
        "SN2,1-0:2.8.0*255,2026-07-01 00:00:00,S,NaN,kWh,OK",  # bad value
        "SN2,1-0:2.8.0*255,2026-07-01 00:15:00,S,1_0,kWh,??",  # bad value and flag
        "SN2,9-9:9.9.9*255,2026-07-01 00:30:00,S,3,kWh,OK",  # unknown OBIS
        ",1-0:1.8.0*255,2026-07-01 00:45:00,S,3,kWh,OK",  # no meter
        "SN3,1-0:1.8.0*255,2026-07-01 24:00:00,S, 4.25 ,kvarh,C",
        "SN3,1-0:1.8.0*255,2026-07-01 00:15:00,S,5,MWh,OK",  # unknown unit
        "SN3,1-0:1.8.0*255,2026-07-01 00:15:00,S,١٢,kWh,OK",  # other digits: as before
        "SN3,1-0:1.8.0*255,2026-07-01 00:30:00,S,6",  # short row
    ]
    data = (head + "\n".join(lines * 3) + "\n").encode()
    fast, full = _both_paths(monkeypatch, long, data)
    assert fast == full
    assert len(fast[0]) == 3 * 4
    assert len(fast[1]) >= 3 * 8

    wide = CATALOG.inbound("wide-15min-de")
    assert isinstance(wide, CsvSpec)
    data = (SAMPLES / "wide-15min-de.csv").read_bytes()
    bad = data + "SN1001;32.01.2026;1\nSN1001;01.02.2026;x;1,5\n".encode("latin-1")
    for sample in (data, bad):
        fast, full = _both_paths(monkeypatch, wide, sample)
        assert fast == full


# ---------------------------------------------------- split lines vs the csv module

OBIS_HEAD = "meter,obis,timestamp,dst,value,unit,status"
GOOD = "SN1001,1-0:1.8.0*255,2026-11-24 00:00:00,W,{v},kWh,OK"
SPLIT_CASES = {
    "plain with blank and blank-looking lines": "\n".join(
        [OBIS_HEAD, GOOD.format(v=1), "", "   ", ",,,,,,", GOOD.format(v=2), GOOD.format(v=3)]
    )
    + "\n",
    "CRLF": "\r\n".join([OBIS_HEAD, GOOD.format(v=1), GOOD.format(v=2), ""]),
    "no line break at the end": "\n".join([OBIS_HEAD, GOOD.format(v=1), GOOD.format(v=2)]),
    "errors with their lines": "\n".join(
        [
            OBIS_HEAD,
            GOOD.format(v=1),
            "SN1001,1-0:1.8.0*255,2026-11-31 00:00:00,W,1,kWh,OK",
            "SN1001,1-0:1.8.0*255",
            GOOD.format(v="x"),
            GOOD.format(v=4),
        ]
    )
    + "\n",
    "a quoted field (multi-line) half way": "\n".join(
        [OBIS_HEAD, GOOD.format(v=1), GOOD.format(v=2)]
        + [GOOD.format(v=n) for n in range(3, 12)]
        + ['"SN1001",1-0:1.8.0*255,"2026-11-24\n01:00:00",W,5,kWh,OK', GOOD.format(v=6)]
        + [GOOD.format(v="bad"), GOOD.format(v=7)]
    )
    + "\n",
    "a lone CR half way": "\n".join(
        [OBIS_HEAD] + [GOOD.format(v=n) for n in range(1, 9)] + [GOOD.format(v=9) + "\r"]
    )
    + GOOD.format(v=10)
    + "\n",
    "NUL": "\n".join([OBIS_HEAD, GOOD.format(v=1), GOOD.format(v="1\x002")]) + "\n",
}


def _outcome(text: str) -> object:
    spec = load_dir(BUILTIN_DIR).inbound("register-obis")
    assert isinstance(spec, CsvSpec)
    try:
        batches = list(
            read_csv(spec, io.BytesIO(text.encode()), tables=load_dir(BUILTIN_DIR).tables)
        )
    except FileRejected as exc:
        return f"rejected: {exc}"
    return (
        [tuple(r) for b in batches for r in b.rows],
        [str(e) for b in batches for e in b.errors],
        sum(b.lines for b in batches),
    )


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
@pytest.mark.parametrize("block", [7, 61, 1 << 20])
def test_split_lines_read_as_the_csv_module_does(
    case: str, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mappings.csv_reader as reader

    text = SPLIT_CASES[case]
    monkeypatch.setattr(reader, "SPLIT_BLOCK", block)
    split = _outcome(text)

    def csv_only(
        d: object, t: object, header_reader: Iterator[list[str]], last_line: int
    ) -> Iterator[tuple[int, int, list[str]]]:
        for row in header_reader:
            first, last_line = last_line + 1, header_reader.line_num  # type: ignore[attr-defined]
            yield first, last_line, row

    monkeypatch.setattr(reader, "_data_rows", csv_only)
    assert split == _outcome(text)
    if case == "errors with their lines":
        assert isinstance(split, tuple)
        assert split[1][0].startswith("line 3, column 'timestamp'")
        assert split[1][1] == "line 4: 2 columns, expected 7"
