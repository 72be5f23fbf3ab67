"""Mapping specs: validated on load, errors name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cim_schemas.errors import ConfigurationError
from mappings.check import check_dir
from mappings.load import BUILTIN_DIR, SpecError, key_lines, load_dir, load_spec
from mappings.spec import CodeTable, CsvSpec, XmlSpec, normalise_obis

GOOD_CSV = """\
kind = "csv"
name = "t"

[csv]
delimiter = ";"

[meter]
column = "meter"

[timestamp]
column = "ts"
format = "%d.%m.%Y %H:%M"
timezone = "Europe/Berlin"

[value]
column = "value"
decimal_separator = ","

[reading_type]
fixed = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
"""


def _write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD_CSV))
    assert isinstance(spec, CsvSpec)
    assert spec.csv.delimiter == ";"
    assert spec.value.decimal_separator == ","


def test_typo_in_key_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_CSV.replace('delimiter = ";"', 'delimeter = ";"'))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert isinstance(info.value, ConfigurationError)
    [problem] = info.value.problems
    assert problem.file == str(path)
    assert problem.line == 5
    assert problem.key == "csv.delimeter"
    assert "delimeter" in str(info.value)
    assert f"{path}:5: csv.delimeter: unknown key 'delimeter'" in str(info.value)


def test_typo_in_inline_table_and_array_of_tables(tmp_path: Path) -> None:
    text = GOOD_CSV.replace('column = "meter"', 'column = "meter"\nby = "serail"')
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    [problem] = info.value.problems
    assert (problem.key, problem.line) == ("meter.by", 9)

    export = """\
kind = "export-csv"
name = "e"

[[columns]]
header = "A"
field = "value"

[[columns]]
header = "B"
feild = "value"
"""
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, export, "e.toml"))
    keys = {(p.key, p.line) for p in info.value.problems}
    assert ("columns[1].feild", 10) in keys


def test_bad_values_are_named(tmp_path: Path) -> None:
    text = GOOD_CSV.replace('"Europe/Berlin"', '"Europe/Berlin-ish"').replace(
        'fixed = "0.0.2', 'fixed = "0.2'
    )
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    found = {(p.key, p.line) for p in info.value.problems}
    assert ("timestamp.timezone", 13) in found
    assert ("reading_type.fixed", 20) in found


def test_header_names_need_a_header(tmp_path: Path) -> None:
    text = GOOD_CSV.replace('delimiter = ";"', 'delimiter = ";"\nheader = false')
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    assert {p.key for p in info.value.problems} == {
        "meter.column",
        "timestamp.column",
        "value.column",
    }


def test_not_toml_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, 'kind = "csv"\nname = \n'))
    assert info.value.problems[0].line == 2
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, 'kind = "json"\n'))
    assert info.value.problems[0].key == "kind"


def test_xml_spec_xpath_and_prefix_checked(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "acme-xml.toml").read_text(encoding="utf-8")
    assert isinstance(load_spec(_write(tmp_path, text)), XmlSpec)
    broken = text.replace('xpath = "@time"', 'xpath = "@time[["').replace(
        'xpath = "../@serial"', 'xpath = "../x:serial"'
    )
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, broken))
    assert {p.key for p in info.value.problems} == {"timestamp.xpath", "meter.xpath"}


def test_unknown_code_table(tmp_path: Path) -> None:
    text = GOOD_CSV.replace(
        'fixed = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"', 'column = "obis"\ntable = "nope"'
    )
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    assert [(p.key, p.line) for p in info.value.problems] == [("reading_type.table", 21)]


def test_shipped_specs_check_clean() -> None:
    assert check_dir(BUILTIN_DIR) == []
    catalog = load_dir(BUILTIN_DIR)
    assert {
        "wide-15min-de",
        "register-obis",
        "acme-xml",
        "export-billing-csv",
        "export-profile-xml",
    } <= set(catalog.specs)
    assert "obis" in catalog.tables


def test_check_dir_reports_every_file(tmp_path: Path) -> None:
    _write(tmp_path, GOOD_CSV, "a.toml")
    _write(tmp_path, GOOD_CSV, "b.toml")  # same name "t"
    _write(tmp_path, GOOD_CSV.replace("delimiter", "delimeter"), "c.toml")
    problems = check_dir(tmp_path)
    assert len(problems) == 2
    assert any("b.toml:2: name: mapping 't' is also defined" in p for p in problems)
    assert any("c.toml:5: csv.delimeter: unknown key" in p for p in problems)
    assert check_dir(tmp_path / "missing") != []


def test_code_table_checks_and_obis_forms(tmp_path: Path) -> None:
    table = """\
kind = "code-table"
name = "mine"
keys = "obis"
values = "reading-type"

[codes]
"1-0:1.8.0*255" = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
"1.0.1.8.0.255" = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
"1-0:2.8.0" = "nope"
"""
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, table))
    lines = {(p.line, p.message.split(" ")[-1]) for p in info.value.problems}
    assert (8, "'1-0:1.8.0*255'") in lines
    assert any(p.line == 9 and "18 dot-separated" in p.message for p in info.value.problems)
    assert normalise_obis("1-0:1.8.0*255") == "1.0.1.8.0.255"
    assert normalise_obis("1.8.0") is None
    assert normalise_obis("1.8.0", "1-0") == "1.0.1.8.0.255"
    assert normalise_obis("7-0:3.0.0") == "7.0.3.0.0.255"
    obis = load_dir(BUILTIN_DIR).tables["obis"]
    assert isinstance(obis, CodeTable)
    assert obis.reverse("0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0") == "1.0.1.8.0.255"


def test_key_lines_understands_toml_shapes() -> None:
    text = "a = 1\n[t]\nb.c = 2\nd = { e = 1, f = 2 }\n[[arr]]\nx = 1\n[[arr]]\nx = 2\n"
    lines = key_lines(text)
    assert lines[("a",)] == 1
    assert lines[("t", "b", "c")] == 3
    assert lines[("t", "d", "f")] == 4
    assert lines[("arr", 1, "x")] == 8
