"""Declarative mapping specs: what a partner's file looks like, as validated data.

A spec is a TOML file with a ``kind``:

- ``csv``: inbound CSV, one reading per row or wide rows (one column per interval);
- ``xml``: inbound custom XML, records and fields found by XPath;
- ``export-csv`` / ``export-xml``: outbound layouts (the Data File Tool);
- ``code-table``: a shared code table (OBIS -> ReadingType, vendor codes -> ...).

Every model forbids unknown keys, so a typo such as ``delimeter`` is refused
and named. Checks that span several keys (a column named by header text in a
file without a header, a table that does not exist, an XPath that does not
compile) are in :meth:`SpecBase.cross_check`, which returns (key path, message)
pairs so the loader can name the key and its line. See docs/mappings.md.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

READING_TYPE_RE = re.compile(r"^\d+(\.\d+){17}$")
QUALITY_RE = re.compile(r"^\d+\.\d+\.\d+$")
EVENT_TYPE_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_OBIS_RE = re.compile(
    r"^\s*(?:(\d{1,3})-(\d{1,3}):)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[.*&](\d{1,3}))?\s*$"
)
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_PREFIX_RE = re.compile(r"(?<![:\w.-])([A-Za-z_][\w.-]*):(?![:])")

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

#: A column: 1-based index, or the header text when the file has a header.
ColumnRef = Annotated[int, Field(ge=1)] | str


def normalise_obis(code: str, default_ab: str | None = None) -> str | None:
    """``1-0:1.8.0*255``, ``1.0.1.8.0.255``, ``1.8.0`` (with a default A-B) -> ``1.0.1.8.0.255``."""
    text = code.strip()
    parts = text.split(".")
    if "-" not in text and ":" not in text and len(parts) == 6 and all(p.isdigit() for p in parts):
        return ".".join(str(int(p)) for p in parts)
    m = _OBIS_RE.match(text)
    if not m:
        return None
    a, b, c, d, e, f = m.groups()
    if a is None:
        if default_ab is None:
            return None
        a, _, b = default_ab.partition("-")
    return ".".join(str(int(x)) for x in (a, b, c, d, e, f or "255"))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- shared pieces


class Policy(_Model):
    """What to do with a file whose lines are fine but whose meters are partly unknown."""

    #: ``reject``: nothing of the file is applied (default); ``skip``: readings of
    #: known meters are applied, the unknown ones reported line by line.
    unknown_meters: Literal["reject", "skip"] = "reject"


class ValueRules(_Model):
    decimal_separator: Literal[".", ","] = "."
    thousands_separator: Literal["", ".", ",", " ", "'"] = ""
    #: Every value is multiplied by this (e.g. "0.001" for Wh in the file and kWh stored).
    scale: Decimal = Decimal(1)

    def parse(self, text: str) -> Decimal:
        """Raise ValueError for anything that is not a plain decimal number."""
        return self.parser()(text)

    def parser(self) -> Callable[[str], Decimal]:
        """A fast parse function for these rules (readers call it for every value)."""
        thousands = self.thousands_separator
        comma = self.decimal_separator == ","
        scale = self.scale
        scaled = scale != 1
        number = _NUMBER_RE.fullmatch

        def parse(text: str) -> Decimal:
            t = text.strip()
            if thousands:
                t = t.replace(thousands, "")
            if comma:
                if "." in t:
                    raise ValueError(f"{text!r} is not a number with a decimal comma")
                t = t.replace(",", ".")
            elif "," in t:
                raise ValueError(f"{text!r} is not a number with a decimal point")
            # what the pattern allows is exactly what Decimal reads from ASCII without
            # underscores and finds finite; Decimal first (faster), the pattern as the judge
            if t.isascii() and "_" not in t:
                try:
                    value = Decimal(t)
                except ArithmeticError:
                    value = None
                if value is not None and value.is_finite():
                    return value * scale if scaled else value
            if number(t) is None:
                raise ValueError(f"{text!r} is not a decimal number")
            return Decimal(t) * scale if scaled else Decimal(t)

        if thousands or comma or scaled:
            return parse

        def parse_plain(text: str) -> Decimal:  # the common case, the same answers
            if text.isascii() and "_" not in text:
                try:
                    value = Decimal(text)  # surrounding whitespace is allowed, as above
                except ArithmeticError:
                    return parse(text)
                if value.is_finite():
                    return value
            return parse(text)

        return parse_plain


class TimestampRules(_Model):
    #: ``iso8601`` or a strptime format such as ``%d.%m.%Y %H:%M``. A time of
    #: ``24:00`` is read as 00:00 of the next day. An offset in the text (``%z``
    #: or ISO 8601 with offset) wins over ``timezone``.
    format: str = "iso8601"
    #: IANA zone of local times without an offset.
    timezone: str = "UTC"
    #: How a local time that occurs twice (the autumn DST hour) is resolved:
    #: ``order``: first occurrence per meter and reading type is the earlier (summer)
    #: instant, the second the later; ``flag``: a DST flag field says (see ``dst_flags``);
    #: ``refuse``: the line is an error. A local time that does not exist (the spring
    #: hour) is always an error of its line.
    repeated_hour: Literal["order", "flag", "refuse"] = "order"
    #: Text of the DST flag field -> summer or winter time (for ``repeated_hour = "flag"``).
    dst_flags: dict[str, Literal["summer", "winter"]] = Field(default_factory=dict)


class MeterRules(_Model):
    #: What the field identifies: a device by serial number, mRID or name, or a usage point.
    by: Literal["serial", "mrid", "name", "usage_point"] = "serial"
    #: NameType sent with a name (the store matches Names/name with this type).
    name_type: str | None = None


class UnitRules(_Model):
    #: Unit text in the file -> factor to the stored unit, e.g. {kWh = "1", Wh = "0.001"}.
    factors: dict[str, Decimal]


class ReadingTypeRules(_Model):
    #: A fixed 18-field ReadingType for every reading of the file.
    fixed: str | None = None
    #: Code table translating the field (OBIS or vendor codes); without it the
    #: field holds 18-field ReadingType codes.
    table: str | None = None
    #: A-B groups assumed for short OBIS codes such as ``1.8.0`` (e.g. "1-0").
    obis_default_ab: str | None = None


class QualityRules(_Model):
    #: Flag text in the file -> comma-separated ReadingQualityType codes ("" = valid).
    codes: dict[str, str] = Field(default_factory=dict)
    #: ``error``: an unlisted flag is an error of its line; ``valid``: treat it as valid.
    unknown: Literal["error", "valid"] = "error"


def _zone_problem(loc: Loc, zone: str) -> list[Problem]:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return [(loc, f"unknown IANA time zone {zone!r}")]
    return []


def _format_problem(loc: Loc, fmt: str) -> list[Problem]:
    if fmt == "iso8601":
        return []
    if "%" not in fmt:
        return [(loc, f"format {fmt!r} has no strptime directive (or use 'iso8601')")]
    try:
        datetime(2026, 1, 2, 3, 4, 5).strftime(fmt)
    except ValueError as exc:
        return [(loc, f"bad format {fmt!r}: {exc}")]
    return []


def _rules_problems(rules: TimestampRules, loc: Loc, has_flag_field: bool) -> list[Problem]:
    out = _zone_problem((*loc, "timezone"), rules.timezone)
    out += _format_problem((*loc, "format"), rules.format)
    if rules.repeated_hour == "flag":
        if not has_flag_field:
            out.append(((*loc, "repeated_hour"), "repeated_hour = 'flag' needs a DST flag field"))
        if not rules.dst_flags:
            out.append(((*loc, "dst_flags"), "repeated_hour = 'flag' needs dst_flags"))
    return out


def _reading_type_problems(
    rt: ReadingTypeRules, loc: Loc, has_field: bool, tables: dict[str, CodeTable] | None
) -> list[Problem]:
    out: list[Problem] = []
    if rt.fixed is not None:
        if has_field or rt.table:
            out.append((loc, "give either a fixed ReadingType or a field (with a table), not both"))
        if not READING_TYPE_RE.match(rt.fixed):
            out.append(((*loc, "fixed"), f"{rt.fixed!r} is not 18 dot-separated integers"))
    elif not has_field:
        out.append((loc, "give a fixed ReadingType or a field to read it from"))
    if rt.table is not None and tables is not None:
        table = tables.get(rt.table)
        if table is None:
            out.append(((*loc, "table"), f"no code table named {rt.table!r}"))
        elif table.values != "reading-type":
            out.append(((*loc, "table"), f"code table {rt.table!r} does not give ReadingTypes"))
    if rt.obis_default_ab is not None and not re.fullmatch(r"\d{1,3}-\d{1,3}", rt.obis_default_ab):
        out.append(((*loc, "obis_default_ab"), "expected A-B such as '1-0'"))
    return out


def _quality_problems(q: QualityRules, loc: Loc) -> list[Problem]:
    out: list[Problem] = []
    for flag, codes in q.codes.items():
        for code in filter(None, (c.strip() for c in codes.split(","))):
            if not QUALITY_RE.match(code):
                out.append(((*loc, "codes", flag), f"{code!r} is not system.category.index"))
    return out


# --------------------------------------------------------------------------- code tables


class CodeTable(_Model):
    kind: Literal["code-table"]
    name: str = Field(min_length=1)
    description: str = ""
    #: How keys are compared: ``obis`` (normalised to A.B.C.D.E.F) or ``text`` (as written).
    keys: Literal["obis", "text"] = "text"
    #: What the values are (checked on load).
    values: Literal["reading-type", "end-device-event-type", "reading-quality", "text"]
    codes: dict[str, str]
    _norm: dict[str, str] | None = PrivateAttr(default=None)

    def normalise_key(self, key: str, default_ab: str | None = None) -> str | None:
        if self.keys == "obis":
            return normalise_obis(key, default_ab)
        return key.strip()

    def lookup(self, key: str, default_ab: str | None = None) -> str | None:
        norm = self.normalise_key(key, default_ab)
        if norm is None:
            return None
        return self._normalised().get(norm)

    def reverse(self, value: str) -> str | None:
        """The first key giving ``value`` (e.g. ReadingType -> OBIS for exports)."""
        for k, v in self._normalised().items():
            if v == value:
                return k
        return None

    def _normalised(self) -> dict[str, str]:
        if self._norm is None:
            norm: dict[str, str] = {}
            for k, v in self.codes.items():
                nk = self.normalise_key(k)
                if nk is not None:
                    norm.setdefault(nk, v)
            self._norm = norm
        return self._norm

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        checker = {
            "reading-type": (READING_TYPE_RE, "18 dot-separated integers"),
            "end-device-event-type": (EVENT_TYPE_RE, "type.domain.subDomain.eventOrAction"),
            "reading-quality": (QUALITY_RE, "system.category.index"),
        }.get(self.values)
        out: list[Problem] = []
        seen: dict[str, str] = {}
        for key, value in self.codes.items():
            norm = self.normalise_key(key)
            if norm is None:
                out.append((("codes", key), f"{key!r} is not an OBIS code"))
            elif norm in seen:
                out.append((("codes", key), f"{key!r} is the same code as {seen[norm]!r}"))
            else:
                seen[norm] = key
            if checker and not checker[0].match(value):
                out.append((("codes", key), f"{value!r} is not {checker[1]}"))
        return out


# --------------------------------------------------------------------------- inbound CSV


def _dialect_problems(d: CsvDialect, refs: list[tuple[Loc, ColumnRef]]) -> list[Problem]:
    out: list[Problem] = []
    try:
        codecs.lookup(d.encoding)
    except LookupError:
        out.append((("csv", "encoding"), f"unknown encoding {d.encoding!r}"))
    if d.delimiter in {"\n", "\r", d.quotechar}:
        out.append((("csv", "delimiter"), "delimiter must differ from quotechar and newline"))
    if not d.header:
        for loc, ref in refs:
            if isinstance(ref, str):
                out.append(
                    (
                        loc,
                        f"column {ref!r} is a header name but csv.header is false; "
                        "give a 1-based column number",
                    )
                )
    return out


class CsvDialect(_Model):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    #: ``minimal``: quoted fields may occur; ``none``: quote characters are data.
    quoting: Literal["minimal", "none"] = "minimal"
    #: Python codec name: utf-8 (a BOM is skipped), latin-1, cp1252, utf-16, ...
    encoding: str = "utf-8"
    header: bool = True
    #: Lines before the header (or the data) to skip, e.g. a preamble.
    skip_lines: int = Field(default=0, ge=0)
    #: Expected number of columns on every row (default: the header's, or the first row's).
    columns: int | None = Field(default=None, ge=1)


class CsvMeter(MeterRules):
    column: ColumnRef


class CsvTimestamp(TimestampRules):
    column: ColumnRef
    #: A separate time column, joined to ``column`` with one space before parsing.
    time_column: ColumnRef | None = None
    #: Column with the DST flag (for ``repeated_hour = "flag"``).
    dst_column: ColumnRef | None = None


class CsvWide(_Model):
    """Wide rows: one row per meter (and reading type) and local day, one column per interval."""

    date_column: ColumnRef
    date_format: str = "%Y-%m-%d"
    timezone: str = "UTC"
    #: First interval value column; the next ones follow it.
    first_column: ColumnRef
    interval_minutes: int = Field(default=15, ge=1, le=1440)
    #: Whether a value's timestamp is its interval's end (CIM IntervalReading) or start.
    label: Literal["end", "start"] = "end"
    #: ``after_each_value``: every value column is followed by its quality flag column.
    flags: Literal["none", "after_each_value"] = "none"


class CsvValue(ValueRules):
    #: Value column (long rows only; wide rows take ``wide.first_column``).
    column: ColumnRef | None = None


class CsvUnit(UnitRules):
    column: ColumnRef


class CsvReadingType(ReadingTypeRules):
    column: ColumnRef | None = None


class CsvQuality(QualityRules):
    #: Flag column (long rows; wide rows with ``flags = "after_each_value"`` need none).
    column: ColumnRef | None = None


class CsvSpec(_Model):
    kind: Literal["csv"]
    name: str = Field(min_length=1)
    description: str = ""
    csv: CsvDialect = CsvDialect()
    meter: CsvMeter
    timestamp: CsvTimestamp | None = None
    wide: CsvWide | None = None
    value: CsvValue = CsvValue()
    unit: CsvUnit | None = None
    reading_type: CsvReadingType
    quality: CsvQuality | None = None
    policy: Policy = Policy()

    def column_refs(self) -> list[tuple[Loc, ColumnRef]]:
        refs: list[tuple[Loc, ColumnRef]] = [(("meter", "column"), self.meter.column)]
        if self.timestamp:
            refs.append((("timestamp", "column"), self.timestamp.column))
            if self.timestamp.time_column is not None:
                refs.append((("timestamp", "time_column"), self.timestamp.time_column))
            if self.timestamp.dst_column is not None:
                refs.append((("timestamp", "dst_column"), self.timestamp.dst_column))
        if self.wide:
            refs.append((("wide", "date_column"), self.wide.date_column))
            refs.append((("wide", "first_column"), self.wide.first_column))
        if self.value.column is not None:
            refs.append((("value", "column"), self.value.column))
        if self.unit:
            refs.append((("unit", "column"), self.unit.column))
        if self.reading_type.column is not None:
            refs.append((("reading_type", "column"), self.reading_type.column))
        if self.quality and self.quality.column is not None:
            refs.append((("quality", "column"), self.quality.column))
        return refs

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out = _dialect_problems(self.csv, self.column_refs())
        if (self.timestamp is None) == (self.wide is None):
            out.append(
                (
                    ("timestamp",),
                    "give [timestamp] (one reading per row) or [wide] "
                    "(one column per interval), exactly one",
                )
            )
        if self.timestamp is not None:
            if self.value.column is None:
                out.append((("value", "column"), "one reading per row needs value.column"))
            out += _rules_problems(
                self.timestamp, ("timestamp",), self.timestamp.dst_column is not None
            )
        if self.wide is not None:
            w = self.wide
            if self.value.column is not None:
                out.append(
                    (
                        ("value", "column"),
                        "wide rows take values from wide.first_column; remove value.column",
                    )
                )
            out += _zone_problem(("wide", "timezone"), w.timezone)
            out += _format_problem(("wide", "date_format"), w.date_format)
            if 1440 % w.interval_minutes:
                out.append((("wide", "interval_minutes"), "must divide a day (1440 minutes)"))
            if (
                self.quality is not None
                and self.quality.column is not None
                and w.flags == "after_each_value"
            ):
                out.append(
                    (("quality", "column"), "flags follow each value; remove quality.column")
                )
        if self.quality is not None:
            has_flags = self.quality.column is not None or (
                self.wide is not None and self.wide.flags == "after_each_value"
            )
            if not has_flags:
                out.append((("quality", "column"), "give the column of the quality flags"))
            out += _quality_problems(self.quality, ("quality",))
        elif self.wide is not None and self.wide.flags == "after_each_value":
            out.append((("wide", "flags"), "flags after each value need a [quality] table"))
        out += _reading_type_problems(
            self.reading_type, ("reading_type",), self.reading_type.column is not None, tables
        )
        return out


class CsvEvent(_Model):
    """The event columns of a ``csv-events`` file."""

    #: Column with the event code.
    column: ColumnRef
    #: Code table (values end-device-event-type) translating vendor codes; without it
    #: the column holds EndDeviceEventType codes (type.domain.subDomain.eventOrAction).
    table: str | None = None
    reason_column: ColumnRef | None = None
    severity_column: ColumnRef | None = None


class CsvEventsSpec(_Model):
    """Inbound CSV of end device events (a vendor's event log export)."""

    kind: Literal["csv-events"]
    name: str = Field(min_length=1)
    description: str = ""
    csv: CsvDialect = CsvDialect()
    meter: CsvMeter
    timestamp: CsvTimestamp
    event: CsvEvent
    policy: Policy = Policy()

    def column_refs(self) -> list[tuple[Loc, ColumnRef]]:
        refs: list[tuple[Loc, ColumnRef]] = [
            (("meter", "column"), self.meter.column),
            (("timestamp", "column"), self.timestamp.column),
            (("event", "column"), self.event.column),
        ]
        for loc, ref in (
            (("timestamp", "time_column"), self.timestamp.time_column),
            (("timestamp", "dst_column"), self.timestamp.dst_column),
            (("event", "reason_column"), self.event.reason_column),
            (("event", "severity_column"), self.event.severity_column),
        ):
            if ref is not None:
                refs.append((loc, ref))
        return refs

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out = _dialect_problems(self.csv, self.column_refs())
        out += _rules_problems(
            self.timestamp, ("timestamp",), self.timestamp.dst_column is not None
        )
        out += _event_problems(self.meter.by, self.event.table, tables)
        return out


# --------------------------------------------------------------------------- inbound XML


class XmlLayout(_Model):
    #: Prefix -> namespace URI, used in ``record`` and every XPath.
    namespaces: dict[str, str] = Field(default_factory=dict)
    #: The record element (``prefix:Local`` or ``Local``); each one holds one reading.
    record: str
    #: Refuse files larger than this many bytes (streaming keeps memory bounded anyway).
    max_bytes: int = Field(default=4 * 1024**3, ge=1)

    def record_tag(self) -> str:
        prefix, sep, local = self.record.rpartition(":")
        if not sep:
            return local
        return f"{{{self.namespaces[prefix]}}}{local}"


class XmlMeter(MeterRules):
    xpath: str


class XmlTimestamp(TimestampRules):
    xpath: str
    dst_xpath: str | None = None


class XmlValue(ValueRules):
    xpath: str


class XmlUnit(UnitRules):
    xpath: str


class XmlReadingType(ReadingTypeRules):
    xpath: str | None = None


class XmlQuality(QualityRules):
    xpath: str


def xpath_problem(loc: Loc, expr: str, namespaces: dict[str, str]) -> list[Problem]:
    try:
        compiled = etree.XPath(expr, namespaces=namespaces)
        compiled(etree.Element("probe"))
    except etree.XPathError as exc:
        return [(loc, f"bad XPath {expr!r}: {exc}")]
    return []


class XmlSpec(_Model):
    kind: Literal["xml"]
    name: str = Field(min_length=1)
    description: str = ""
    xml: XmlLayout
    meter: XmlMeter
    timestamp: XmlTimestamp
    value: XmlValue
    unit: XmlUnit | None = None
    reading_type: XmlReadingType
    quality: XmlQuality | None = None
    policy: Policy = Policy()

    def xpaths(self) -> list[tuple[Loc, str]]:
        out: list[tuple[Loc, str]] = [
            (("meter", "xpath"), self.meter.xpath),
            (("timestamp", "xpath"), self.timestamp.xpath),
            (("value", "xpath"), self.value.xpath),
        ]
        if self.timestamp.dst_xpath:
            out.append((("timestamp", "dst_xpath"), self.timestamp.dst_xpath))
        if self.unit:
            out.append((("unit", "xpath"), self.unit.xpath))
        if self.reading_type.xpath:
            out.append((("reading_type", "xpath"), self.reading_type.xpath))
        if self.quality:
            out.append((("quality", "xpath"), self.quality.xpath))
        return out

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out: list[Problem] = []
        prefix, sep, _ = self.xml.record.rpartition(":")
        if sep and prefix not in self.xml.namespaces:
            out.append((("xml", "record"), f"prefix {prefix!r} is not in xml.namespaces"))
        for loc, expr in self.xpaths():
            out += xpath_problem(loc, expr, self.xml.namespaces)
        out += _rules_problems(self.timestamp, ("timestamp",), self.timestamp.dst_xpath is not None)
        out += _reading_type_problems(
            self.reading_type, ("reading_type",), self.reading_type.xpath is not None, tables
        )
        if self.quality:
            out += _quality_problems(self.quality, ("quality",))
        return out


class XmlEvent(_Model):
    """The event fields of an ``xml-events`` record (XPaths relative to the record)."""

    #: XPath of the event code.
    xpath: str
    #: Code table (values end-device-event-type) translating vendor codes; without it
    #: the field holds EndDeviceEventType codes (type.domain.subDomain.eventOrAction).
    table: str | None = None
    reason_xpath: str | None = None
    severity_xpath: str | None = None


class XmlEventsSpec(_Model):
    """Inbound custom XML of end device events (a vendor's event log), one per record."""

    kind: Literal["xml-events"]
    name: str = Field(min_length=1)
    description: str = ""
    xml: XmlLayout
    meter: XmlMeter
    timestamp: XmlTimestamp
    event: XmlEvent
    policy: Policy = Policy()

    def xpaths(self) -> list[tuple[Loc, str]]:
        out: list[tuple[Loc, str]] = [
            (("meter", "xpath"), self.meter.xpath),
            (("timestamp", "xpath"), self.timestamp.xpath),
            (("event", "xpath"), self.event.xpath),
        ]
        for loc, expr in (
            (("timestamp", "dst_xpath"), self.timestamp.dst_xpath),
            (("event", "reason_xpath"), self.event.reason_xpath),
            (("event", "severity_xpath"), self.event.severity_xpath),
        ):
            if expr:
                out.append((loc, expr))
        return out

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out: list[Problem] = []
        prefix, sep, _ = self.xml.record.rpartition(":")
        if sep and prefix not in self.xml.namespaces:
            out.append((("xml", "record"), f"prefix {prefix!r} is not in xml.namespaces"))
        for loc, expr in self.xpaths():
            out += xpath_problem(loc, expr, self.xml.namespaces)
        out += _rules_problems(self.timestamp, ("timestamp",), self.timestamp.dst_xpath is not None)
        out += _event_problems(self.meter.by, self.event.table, tables)
        return out


def _event_problems(
    meter_by: str, name: str | None, tables: dict[str, CodeTable] | None
) -> list[Problem]:
    """What an event spec (CSV or XML) may not say: meters by usage point (events belong
    to devices), a code table that is missing or gives no EndDeviceEventTypes."""
    out: list[Problem] = []
    if meter_by == "usage_point":
        out.append((("meter", "by"), "events belong to devices: by serial, mrid or name"))
    return out + _event_table_problems(name, tables)


def _event_table_problems(name: str | None, tables: dict[str, CodeTable] | None) -> list[Problem]:
    if name is None or tables is None:
        return []
    table = tables.get(name)
    if table is None:
        return [(("event", "table"), f"no code table named {name!r}")]
    if table.values != "end-device-event-type":
        return [(("event", "table"), f"code table {name!r} does not give EndDeviceEventTypes")]
    return []


# --------------------------------------------------------------------------- outbound exports

ExportFieldName = Literal[
    "meter_mrid",
    "meter_serial",
    "meter_name",
    "usage_point",
    "reading_type",
    "obis",
    "timestamp",
    "date",
    "time",
    "value",
    "quality",
    "quality_comment",
    "quality_source",
    "quality_timestamp",
    "reason",
    "estimated",
    "literal",
]


class ExportField(_Model):
    field: ExportFieldName
    #: strftime format for timestamp/date/time (default ISO 8601).
    format: str | None = None
    #: Zone timestamps are written in (default: the export's timezone).
    timezone: str | None = None
    #: Code table for ``obis`` (ReadingType -> key reversed).
    table: str | None = None
    #: Text for ``literal``.
    text: str | None = None
    #: Texts written for ``estimated`` (any quality of category 8).
    true_text: str = "Y"
    false_text: str = "N"


class ExportColumn(ExportField):
    header: str


class ExportCsvDialect(_Model):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    decimal_separator: Literal[".", ","] = "."
    encoding: str = "utf-8"
    header: bool = True
    line_terminator: Literal["\n", "\r\n"] = "\r\n"


class ExportSelect(_Model):
    """Defaults for what is exported; the export command may narrow or override them."""

    reading_types: list[str] = Field(default_factory=list)
    usage_point_groups: list[str] = Field(default_factory=list)
    #: Include estimated readings (quality category 8).
    estimated: bool = True


def _export_field_problems(
    f: ExportField, loc: Loc, default_zone: str, tables: dict[str, CodeTable] | None
) -> list[Problem]:
    out: list[Problem] = []
    if f.timezone:
        out += _zone_problem((*loc, "timezone"), f.timezone)
    if f.format and f.field in {"timestamp", "date", "time"}:
        out += _format_problem((*loc, "format"), f.format)
    if f.field == "literal" and f.text is None:
        out.append(((*loc, "text"), "a literal field needs text"))
    if f.field == "obis":
        if f.table is None:
            out.append(((*loc, "table"), "an obis field needs the code table to reverse"))
        elif tables is not None and f.table not in tables:
            out.append(((*loc, "table"), f"no code table named {f.table!r}"))
    return out


class ExportCsvSpec(_Model):
    kind: Literal["export-csv"]
    name: str = Field(min_length=1)
    description: str = ""
    timezone: str = "UTC"
    csv: ExportCsvDialect = ExportCsvDialect()
    select: ExportSelect = ExportSelect()
    columns: list[ExportColumn] = Field(min_length=1)

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out = _zone_problem(("timezone",), self.timezone)
        try:
            codecs.lookup(self.csv.encoding)
        except LookupError:
            out.append((("csv", "encoding"), f"unknown encoding {self.csv.encoding!r}"))
        for i, col in enumerate(self.columns):
            out += _export_field_problems(col, ("columns", i), self.timezone, tables)
        for rt in self.select.reading_types:
            if not READING_TYPE_RE.match(rt):
                out.append((("select", "reading_types"), f"{rt!r} is not a ReadingType"))
        return out


class ExportXmlNode(ExportField):
    #: Where the value goes, relative to the record: ``prefix:Child``, ``@attr`` or ``.`` (text).
    path: str


class ExportXmlLayout(_Model):
    namespaces: dict[str, str] = Field(default_factory=dict)
    root: str
    record: str
    encoding: str = "UTF-8"


class ExportXmlSpec(_Model):
    kind: Literal["export-xml"]
    name: str = Field(min_length=1)
    description: str = ""
    timezone: str = "UTC"
    xml: ExportXmlLayout
    select: ExportSelect = ExportSelect()
    fields: list[ExportXmlNode] = Field(min_length=1)

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out = _zone_problem(("timezone",), self.timezone)
        for key in ("root", "record"):
            prefix, sep, _ = getattr(self.xml, key).rpartition(":")
            if sep and prefix not in self.xml.namespaces:
                out.append((("xml", key), f"prefix {prefix!r} is not in xml.namespaces"))
        for i, f in enumerate(self.fields):
            out += _export_field_problems(f, ("fields", i), self.timezone, tables)
            prefix, sep, _ = f.path.lstrip("@").rpartition(":")
            if sep and prefix not in self.xml.namespaces:
                out.append((("fields", i, "path"), f"prefix {prefix!r} is not in xml.namespaces"))
        return out


# --------------------------------------------------------------------------- CIM variants


class CimRename(_Model):
    #: Local name in the vendor's document.
    element: str = Field(alias="from")
    #: Local name of the standard.
    to: str
    #: Only under a parent of this local name (default: anywhere).
    parent: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CimReorder(_Model):
    #: Local name of the parent whose children are put in order.
    parent: str
    #: The children's local names in the order of the standard's xs:sequence;
    #: children not listed keep their relative order after the listed ones.
    children: list[str] = Field(min_length=1)


class CimVariantSpec(_Model):
    """How a vendor's IEC 61968-9 documents differ from the standard, undone before parsing."""

    kind: Literal["cim-variant"]
    name: str = Field(min_length=1)
    description: str = ""
    #: Vendor namespace URI -> standard namespace URI (drafts, older editions).
    namespaces: dict[str, str] = Field(default_factory=dict)
    rename: list[CimRename] = Field(default_factory=list)
    reorder: list[CimReorder] = Field(default_factory=list)
    #: Local names of vendor elements to remove (with their content).
    drop: list[str] = Field(default_factory=list)

    def cross_check(self, tables: dict[str, CodeTable] | None = None) -> list[Problem]:
        out: list[Problem] = []
        for uri, target in self.namespaces.items():
            if not uri or not target:
                out.append((("namespaces", uri), "namespace URIs must not be empty"))
        for i, r in enumerate(self.reorder):
            if len(set(r.children)) != len(r.children):
                out.append((("reorder", i, "children"), "a child is listed twice"))
        names = re.compile(r"^[A-Za-z_][\w.-]*$")
        for i, rn in enumerate(self.rename):
            for key, value in (("from", rn.element), ("to", rn.to)):
                if not names.match(value):
                    out.append((("rename", i, key), f"{value!r} is not an XML local name"))
        return out


InboundSpec = CsvSpec | XmlSpec
EventsSpec = CsvEventsSpec | XmlEventsSpec
ExportSpec = ExportCsvSpec | ExportXmlSpec
AnySpec = Annotated[
    CsvSpec
    | CsvEventsSpec
    | XmlSpec
    | XmlEventsSpec
    | ExportCsvSpec
    | ExportXmlSpec
    | CimVariantSpec
    | CodeTable,
    Field(discriminator="kind"),
]
KINDS = (
    "csv",
    "csv-events",
    "xml",
    "xml-events",
    "export-csv",
    "export-xml",
    "cim-variant",
    "code-table",
)
