"""Stream a custom XML file through an :class:`~mappings.spec.XmlSpec` (readings) or an
:class:`~mappings.spec.XmlEventsSpec` (end device events) into batches.

The file goes through the hardened parser of :mod:`cim_schemas.xml` (no DTD, no
entities, size limit while reading). Each record element is read with the
spec's XPaths when it ends, then cleared; elements that only held records are
cleared and dropped when they end, so memory stays bounded by one record and
its enclosing elements, whatever the file size. XPaths may look up to
ancestors (``../@serial``) and to their earlier children (``../md:Serial``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import IO, Any, cast

from lxml import etree

from cim_schemas.xml import LimitedReader, iterparse
from mappings.rows import (
    BAD_FIELD,
    BAD_VALUE,
    Batch,
    EventBatch,
    EventRow,
    EventTypeResolver,
    FieldError,
    FileRejected,
    LineError,
    MeterKeys,
    QualityResolver,
    ReadingTypeResolver,
    SourceRow,
    TimeResolver,
    UnitResolver,
)
from mappings.spec import CodeTable, XmlEventsSpec, XmlLayout, XmlSpec

DEFAULT_BATCH = 5000
_DONE = "{urn:amihub:mappings:internal}done"


def _text(result: Any) -> str | None:
    if isinstance(result, list):
        if not result:
            return None
        result = result[0]
    if isinstance(result, etree._Element):
        return "".join(str(t) for t in result.itertext())
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else repr(result)
    return str(result)


def _drop_done_siblings(element: etree._Element) -> None:
    parent = element.getparent()
    if parent is None:
        return
    prev = element.getprevious()
    while prev is not None:
        before = prev.getprevious()
        if prev.get(_DONE) is not None:
            parent.remove(prev)
        prev = before


def _field_reader(
    record: etree._Element, number: int, line: int | None, errors: list[LineError]
) -> Callable[[str, etree.XPath | None], str | None]:
    """A record's field by its XPath (None: not mapped); an XPath that fails is an
    error of the record, named by field and line."""

    def get(name: str, path: etree.XPath | None) -> str | None:
        if path is None:
            return None
        try:
            return _text(path(record))
        except etree.XPathError as exc:
            errors.append(LineError(number, name, BAD_FIELD, f"XPath failed: {exc}", line))
            return None

    return get


class _Fields:
    def __init__(self, spec: XmlSpec, tables: Mapping[str, CodeTable]) -> None:
        ns = spec.xml.namespaces

        def xp(expr: str | None) -> etree.XPath | None:
            return etree.XPath(expr, namespaces=ns) if expr else None

        self.spec = spec
        self.meter = xp(spec.meter.xpath)
        self.ts = xp(spec.timestamp.xpath)
        self.dst = xp(spec.timestamp.dst_xpath)
        self.value = xp(spec.value.xpath)
        self.unit_xp = xp(spec.unit.xpath) if spec.unit else None
        self.rt_xp = xp(spec.reading_type.xpath)
        self.q_xp = xp(spec.quality.xpath) if spec.quality else None
        self.meter_key = MeterKeys(spec.meter)
        self.parse_value = spec.value.parser()
        self.reading_type = ReadingTypeResolver(spec.reading_type, tables)
        self.quality = QualityResolver(spec.quality)
        self.unit = UnitResolver(spec.unit)
        self.time = TimeResolver(spec.timestamp)

    def read(self, record: etree._Element, number: int, batch: Batch) -> None:
        errors = batch.errors
        n_err = len(errors)
        line = record.sourceline if isinstance(record.sourceline, int) else None
        get = _field_reader(record, number, line, errors)

        def fail(name: str, exc: FieldError | ValueError, code: str = BAD_FIELD) -> None:
            if isinstance(exc, FieldError):
                code, message = exc.code, exc.message
            else:
                message = str(exc)
            errors.append(LineError(number, name, code, message, line))

        meter = rt = None
        try:
            meter = self.meter_key(get("meter", self.meter))
        except FieldError as e:
            fail("meter", e)
        try:
            rt = self.reading_type(get("reading_type", self.rt_xp))
        except FieldError as e:
            fail("reading_type", e)
        factor = Decimal(1)
        try:
            factor = self.unit(get("unit", self.unit_xp))
        except FieldError as e:
            fail("unit", e)
        value = None
        raw_value = get("value", self.value)
        try:
            value = self.parse_value(raw_value or "") * factor
        except ValueError as e:
            fail("value", e, BAD_VALUE)
        quality = ""
        try:
            quality = self.quality(get("quality", self.q_xp))
        except FieldError as e:
            fail("quality", e)
        if meter is None or rt is None:
            return
        ts = None
        try:
            ts = self.time.instant(
                get("timestamp", self.ts) or "",
                meter=meter,
                reading_type=rt,
                flag=get("dst", self.dst),
            )
        except FieldError as e:
            fail("timestamp", e)
        if len(errors) == n_err and ts is not None and value is not None:
            batch.rows.append(SourceRow(number, meter, rt, ts, value, quality))


def _records(layout: XmlLayout, source: IO[bytes]) -> Iterator[etree._Element]:
    """Each record element when it ends; cleared (with what held it) once the caller
    asks for the next one. Raise FileRejected if the file has none."""
    record_tag = layout.record_tag()
    reader = LimitedReader(source, layout.max_bytes)
    found = False
    for event, element in iterparse(cast(IO[bytes], reader)):
        if event != "end":
            continue
        if element.tag == record_tag:
            found = True
            yield element
            element.clear()
            element.set(_DONE, "1")
            _drop_done_siblings(element)
        elif any(child.get(_DONE) is not None for child in element):
            # an element that held records: done with it and its other children
            element.clear()
            element.set(_DONE, "1")
            _drop_done_siblings(element)
    if not found:
        raise FileRejected(f"no {layout.record} records in the file")


def read_xml(
    spec: XmlSpec,
    source: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[Batch]:
    """Yield batches; raise NotWellFormed / ForbiddenXml / InputTooLarge / FileRejected."""
    fields = _Fields(spec, tables)
    batch = Batch()
    for number, element in enumerate(_records(spec.xml, source), 1):
        batch.lines += 1
        fields.read(element, number, batch)
        if len(batch.rows) >= batch_size or len(batch.errors) >= batch_size:
            yield batch
            batch = Batch()
    if batch.rows or batch.errors or batch.lines:
        yield batch


class _EventFields:
    """The fields of one ``xml-events`` record: meter, time (DST as for readings), the
    vendor's event code through the code table, reason and severity."""

    def __init__(self, spec: XmlEventsSpec, tables: Mapping[str, CodeTable]) -> None:
        ns = spec.xml.namespaces

        def xp(expr: str | None) -> etree.XPath | None:
            return etree.XPath(expr, namespaces=ns) if expr else None

        self.meter = xp(spec.meter.xpath)
        self.ts = xp(spec.timestamp.xpath)
        self.dst = xp(spec.timestamp.dst_xpath)
        self.code = xp(spec.event.xpath)
        self.reason = xp(spec.event.reason_xpath)
        self.severity = xp(spec.event.severity_xpath)
        self.meter_key = MeterKeys(spec.meter)
        self.event_type = EventTypeResolver(tables[spec.event.table] if spec.event.table else None)
        self.time = TimeResolver(spec.timestamp)

    def read(self, record: etree._Element, number: int, batch: EventBatch) -> None:
        errors = batch.errors
        n_err = len(errors)
        line = record.sourceline if isinstance(record.sourceline, int) else None
        get = _field_reader(record, number, line, errors)

        def optional(name: str, path: etree.XPath | None) -> str | None:
            return (get(name, path) or "").strip() or None

        meter = event = ts = None
        try:
            meter = self.meter_key(get("meter", self.meter))
        except FieldError as e:
            errors.append(LineError(number, "meter", e.code, e.message, line))
        try:
            event = self.event_type(get("event", self.code))
        except FieldError as e:
            errors.append(LineError(number, "event", e.code, e.message, line))
        if meter is not None and event is not None:
            try:  # per meter and event type, as the CSV event logs
                ts = self.time.instant(
                    get("timestamp", self.ts) or "",
                    meter=meter,
                    reading_type=event,
                    flag=get("dst", self.dst),
                )
            except FieldError as e:
                errors.append(LineError(number, "timestamp", e.code, e.message, line))
        reason = optional("reason", self.reason)
        severity = optional("severity", self.severity)
        if len(errors) == n_err and meter is not None and event is not None and ts is not None:
            batch.rows.append(EventRow(number, meter, event, ts, reason, severity))


def read_xml_events(
    spec: XmlEventsSpec,
    source: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[EventBatch]:
    """Yield batches of end device events and per-record errors (an ``xml-events`` file);
    raise NotWellFormed / ForbiddenXml / InputTooLarge / FileRejected."""
    fields = _EventFields(spec, tables)
    batch = EventBatch()
    for number, element in enumerate(_records(spec.xml, source), 1):
        batch.lines += 1
        fields.read(element, number, batch)
        if len(batch.rows) >= batch_size or len(batch.errors) >= batch_size:
            yield batch
            batch = EventBatch()
    if batch.rows or batch.errors or batch.lines:
        yield batch
