"""Write readings in a partner's CSV or custom XML layout (the Data File Tool).

::

    rows = rows_from_store(uow, "DEMO", usage_points=["UP1"], start=..., end=...,
                           reading_types=spec.select.reading_types)
    with open("billing.csv", "wb") as out:
        count = write_export(spec, rows, out, tables=catalog.tables)

Rows are written as they come (CSV through the ``csv`` module, XML through
lxml's incremental ``xmlfile``), so an export of any size runs in bounded
memory when its rows are streamed from the store.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, NamedTuple
from zoneinfo import ZoneInfo

from lxml import etree

from cim_schemas.errors import ConfigurationError, PayloadInvalid
from mappings.spec import CodeTable, ExportCsvSpec, ExportField, ExportXmlSpec
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork
from mdm.qualities import NOTES, codes_of, unpack


class ExportRow(NamedTuple):
    meter_mrid: str
    meter_serial: str | None
    meter_name: str | None
    usage_point: str | None
    reading_type: str
    ts: datetime  # aware
    value: Decimal
    quality: str  # the stored quality text: codes, then any notes (mdm/qualities.py)


def is_estimated(quality: str) -> bool:
    """Any ReadingQualityType of category 8 (estimated)."""
    for code in codes_of(quality).split(","):
        parts = code.strip().split(".")
        if len(parts) == 3 and parts[1] == "8":
            return True
    return False


class _Formatter:
    def __init__(
        self,
        f: ExportField,
        default_zone: str,
        decimal_separator: str,
        tables: Mapping[str, CodeTable],
    ) -> None:
        self.f = f
        self.zone = ZoneInfo(f.timezone or default_zone)
        self.decimal = decimal_separator
        self.table = tables.get(f.table) if f.table else None
        if f.field == "obis" and self.table is None:
            raise ConfigurationError(f"no code table named {f.table!r}")
        self._obis: dict[str, str] = {}

    def __call__(self, row: ExportRow) -> str:
        f = self.f
        name = f.field
        if name == "value":
            text = format(row.value, "f")
            return text.replace(".", ",") if self.decimal == "," else text
        if name in {"timestamp", "date", "time"}:
            local = row.ts.astimezone(self.zone)
            if f.format:
                return local.strftime(f.format)
            if name == "date":
                return local.strftime("%Y-%m-%d")
            if name == "time":
                return local.strftime("%H:%M:%S")
            return local.isoformat()
        if name == "obis":
            return self._obis_code(row.reading_type)
        if name == "estimated":
            return f.true_text if is_estimated(row.quality) else f.false_text
        if name == "literal":
            return f.text or ""
        if name.startswith("quality") or name == "reason":
            return _quality_field(name, row.quality)
        value = {
            "meter_mrid": row.meter_mrid,
            "meter_serial": row.meter_serial,
            "meter_name": row.meter_name,
            "usage_point": row.usage_point,
            "reading_type": row.reading_type,
        }[name]
        return value or ""

    def _obis_code(self, reading_type: str) -> str:
        found = self._obis.get(reading_type)
        if found is None:
            assert self.table is not None
            code = self.table.reverse(reading_type)
            if code is None:
                raise PayloadInvalid(
                    f"no OBIS code for ReadingType {reading_type} in code "
                    f"table {self.table.name!r}",
                    code="2003",
                )
            found = self._obis[reading_type] = code
        return found


def _quality_field(name: str, quality: str) -> str:
    """``quality``: the codes (comma-separated); ``quality_comment``, ``quality_source``,
    ``quality_timestamp``: each quality's attribute as it arrived, comma-separated in
    the order of the codes (empty where a quality had none); ``reason``: a register
    reading's reason as it arrived."""
    if name == "quality" or NOTES not in quality:
        return codes_of(quality) if name == "quality" else ""
    found = unpack(quality)
    if name == "reason":
        return found.reason or ""
    attribute = {
        "quality_comment": "comment",
        "quality_source": "source",
        "quality_timestamp": "time_stamp",
    }[name]
    return ",".join(getattr(q, attribute) or "" for q in found.qualities)


def _selected(
    rows: Iterable[ExportRow], reading_types: Sequence[str], estimated: bool
) -> Iterator[ExportRow]:
    wanted = set(reading_types)
    for row in rows:
        if wanted and row.reading_type not in wanted:
            continue
        if not estimated and is_estimated(row.quality):
            continue
        yield row


def write_csv(
    spec: ExportCsvSpec,
    rows: Iterable[ExportRow],
    out: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
) -> int:
    d = spec.csv
    text = io.TextIOWrapper(
        out, encoding=d.encoding, newline="", errors="strict", write_through=True
    )
    try:
        writer = csv.writer(text, delimiter=d.delimiter, lineterminator=d.line_terminator)
        cols = [_Formatter(c, spec.timezone, d.decimal_separator, tables) for c in spec.columns]
        if d.header:
            writer.writerow([c.header for c in spec.columns])
        count = 0
        for row in _selected(rows, spec.select.reading_types, spec.select.estimated):
            writer.writerow([fmt(row) for fmt in cols])
            count += 1
        text.flush()
    finally:
        text.detach()
    return count


def _qname(name: str, namespaces: Mapping[str, str]) -> str:
    prefix, sep, local = name.rpartition(":")
    return f"{{{namespaces[prefix]}}}{local}" if sep else local


def write_xml(
    spec: ExportXmlSpec,
    rows: Iterable[ExportRow],
    out: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
) -> int:
    ns = spec.xml.namespaces
    fields = [(f.path, _Formatter(f, spec.timezone, ".", tables)) for f in spec.fields]
    count = 0
    with etree.xmlfile(out, encoding=spec.xml.encoding) as xf:
        xf.write_declaration()
        with xf.element(_qname(spec.xml.root, ns), nsmap=dict(ns)):
            for row in _selected(rows, spec.select.reading_types, spec.select.estimated):
                record = etree.Element(_qname(spec.xml.record, ns), nsmap=dict(ns))
                for path, fmt in fields:
                    value = fmt(row)
                    if path == ".":
                        record.text = value
                    elif path.startswith("@"):
                        record.set(_qname(path[1:], ns), value)
                    else:
                        etree.SubElement(record, _qname(path, ns)).text = value
                xf.write(record)
                count += 1
    return count


def write_export(
    spec: ExportCsvSpec | ExportXmlSpec,
    rows: Iterable[ExportRow],
    out: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
) -> int:
    """Write the rows the spec selects; return how many were written."""
    if isinstance(spec, ExportCsvSpec):
        return write_csv(spec, rows, out, tables=tables)
    return write_xml(spec, rows, out, tables=tables)


def group_members(uow: UnitOfWork, utility_id: int, groups: Sequence[str]) -> list[str]:
    """The mRIDs of the usage points of the usage point groups (transformer areas, as
    ``UsagePointGroups`` in EndDeviceControls), group by group, each sorted. A group
    without a usage point is refused (2002), naming it."""
    wanted = {g.strip() for g in groups}
    if "" in wanted:
        raise PayloadInvalid("a usage point group needs a name", code="2011")
    members: dict[str, list[str]] = {g: [] for g in wanted}
    for up in uow.usage_points.list(utility_id):
        area = (up.transformer_area or "").strip()
        if area in members:
            members[area].append(up.mrid)
    empty = sorted(g for g, m in members.items() if not m)
    if empty:
        raise PayloadInvalid(
            "no usage point of usage point group (transformer area) "
            + ", ".join(repr(g) for g in empty),
            code="2002",
        )
    out: list[str] = []
    for group in dict.fromkeys(g.strip() for g in groups):
        out += sorted(members[group])
    return out


def rows_from_store(
    uow: UnitOfWork,
    utility: str,
    *,
    usage_points: Sequence[str] = (),
    usage_point_groups: Sequence[str] = (),
    start: datetime | None,
    end: datetime | None,
    reading_types: Sequence[str] | None = None,
) -> Iterator[ExportRow]:
    """Readings of the meters installed at the usage points in the period (start, end],
    each meter only for the time it was installed there, streamed from the store in
    (usage point, meter, type, time) order.

    ``usage_point_groups``: the usage points of these groups (transformer areas) too,
    after the named ones; a usage point named twice is exported once. The groups are
    resolved before the first row, so an unknown group fails before anything is written.
    """
    found = uow.utilities.get(utility)
    if found is None or found.id is None:
        raise ConfigurationError(f"unknown utility {utility!r}")
    if not usage_points and not usage_point_groups:
        raise PayloadInvalid("name usage points or usage point groups to export", code="2011")
    members = group_members(uow, found.id, usage_point_groups) if usage_point_groups else []
    return _rows(
        uow, found.id, list(dict.fromkeys([*usage_points, *members])), start, end, reading_types
    )


def _rows(
    uow: UnitOfWork,
    utility_id: int,
    usage_points: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    reading_types: Sequence[str] | None,
) -> Iterator[ExportRow]:
    for up_mrid in usage_points:
        up = uow.usage_points.find(utility_id, DeviceRef(mrid=up_mrid))
        if up is None or up.id is None:
            raise PayloadInvalid(f"unknown usage point {up_mrid!r}", code="2002")
        for device_id, since, until in uow.installations.devices_at(up.id, start, end):
            history = uow.installations.history(device_id)
            if not history:
                continue
            device = uow.devices.find(utility_id, DeviceRef(mrid=history[0].device_mrid))
            if device is None:
                continue
            lo = max(since, start) if start else since
            hi = min(until, end) if (until and end) else (until or end)
            # the store's period is (lo, hi]: interval readings are stamped at their end
            for r in uow.readings.query([device_id], reading_types or None, lo, hi):
                yield ExportRow(
                    device.mrid,
                    device.serial_number,
                    device.name,
                    up.mrid,
                    r.reading_type,
                    r.ts.astimezone(UTC),
                    r.value,
                    r.quality,
                )
