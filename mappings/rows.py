"""What the streaming readers yield, and the field rules they share.

A reader turns a file into :class:`Batch` es of :class:`SourceRow` (a reading
with its line and the meter as the file names it) and :class:`LineError` (a
line that could not be read, naming line and column or field). A problem with
the file as a whole (not decodable, not well-formed, empty) raises
:class:`FileRejected` or :class:`cim_schemas.errors.NotWellFormed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

from cim_schemas.errors import PayloadInvalid
from mappings.spec import (
    EVENT_TYPE_RE,
    READING_TYPE_RE,
    CodeTable,
    MeterRules,
    QualityRules,
    ReadingTypeRules,
    TimestampRules,
    UnitRules,
)
from mdm.model import DeviceRef

#: Entries kept by the per-file caches of parsed fields (cleared when full).
CACHE_SIZE = 65536
#: The same for caches keyed by meter (a file may name 100,000 meters; each entry
#: holds a DeviceRef): a meter's rows usually come together, so a small cache hits.
METER_CACHE_SIZE = 8192

#: NameType sent for a meter identified by serial number when the spec names none.
SERIAL_NAME_TYPE = "SerialNumber"

# error codes of cim_schemas.errors.ERROR_CODES used per line
BAD_VALUE = "2005"
BAD_TIMESTAMP = "2006"
BAD_READING_TYPE = "2003"
BAD_QUALITY = "2010"
MISSING_ID = "2011"
BAD_FIELD = "2013"
UNKNOWN_METER = "2001"
UNKNOWN_USAGE_POINT = "2002"


class FileRejected(PayloadInvalid):
    """The file as a whole cannot be read (encoding, empty, missing header column)."""


class MeterKey(NamedTuple):
    """The meter as the file names it: a device, or a usage point to resolve at the time."""

    kind: Literal["device", "usage_point"]
    ref: DeviceRef

    def __str__(self) -> str:
        return f"usage point {self.ref}" if self.kind == "usage_point" else f"meter {self.ref}"


class SourceRow(NamedTuple):
    """One reading read from a file, before its meter is resolved."""

    line: int  # CSV: line the row starts on; XML: record number
    meter: MeterKey
    reading_type: str
    ts: datetime  # aware, UTC
    value: Decimal
    quality: str


@dataclass(frozen=True)
class LineError:
    line: int  # CSV: line; XML: record number
    field: str | None  # column header / "column N" (CSV) or field name (XML)
    code: str  # cim_schemas.errors.ERROR_CODES
    message: str
    source_line: int | None = None  # XML: line of the record element

    def __str__(self) -> str:
        if self.source_line is not None:
            where = f"record {self.line} (line {self.source_line})"
        else:
            where = f"line {self.line}"
        if self.field:
            where += f", {self.field}"
        return f"{where}: {self.message}"


@dataclass
class Batch:
    rows: list[SourceRow] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0  # lines or records consumed for this batch


class EventRow(NamedTuple):
    """One end device event read from a file, before its meter is resolved."""

    line: int
    meter: MeterKey
    event_type: str  # EndDeviceEventType code
    ts: datetime  # aware, UTC
    reason: str | None
    severity: str | None


@dataclass
class EventBatch:
    rows: list[EventRow] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    lines: int = 0


class FieldError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MeterKeys:
    """:func:`meter_key` with a cache: a file names the same meters again and again."""

    def __init__(self, rules: MeterRules) -> None:
        self.rules = rules
        self._cache: dict[str, MeterKey] = {}

    def __call__(self, text: str | None) -> MeterKey:
        raw = text or ""
        found = self._cache.get(raw)
        if found is None:
            found = meter_key(self.rules, raw)
            if len(self._cache) >= METER_CACHE_SIZE:
                self._cache.clear()
            self._cache[raw] = found
        return found


def meter_key(rules: MeterRules, text: str | None) -> MeterKey:
    value = (text or "").strip()
    if not value:
        raise FieldError(MISSING_ID, "no meter identifier")
    if rules.by == "mrid":
        return MeterKey("device", DeviceRef(mrid=value))
    if rules.by == "serial":
        return MeterKey(
            "device", DeviceRef(name=value, name_type=rules.name_type or SERIAL_NAME_TYPE)
        )
    if rules.by == "name":
        return MeterKey("device", DeviceRef(name=value, name_type=rules.name_type))
    if rules.name_type:
        return MeterKey("usage_point", DeviceRef(name=value, name_type=rules.name_type))
    return MeterKey("usage_point", DeviceRef(mrid=value))


class EventTypeResolver:
    """Vendor event code (through a table) or EndDeviceEventType code -> the code."""

    def __init__(self, table: CodeTable | None) -> None:
        self.table = table
        self._cache: dict[str, str] = {}

    def __call__(self, text: str | None) -> str:
        raw = text or ""
        found = self._cache.get(raw)
        if found is None:
            code = raw.strip()
            if not code:
                raise FieldError(BAD_FIELD, "no event code")
            if self.table is not None:
                looked_up = self.table.lookup(code)
                if looked_up is None:
                    raise FieldError(
                        BAD_FIELD, f"event code {code!r} is not in code table {self.table.name!r}"
                    )
                found = looked_up
            elif EVENT_TYPE_RE.match(code):
                found = code
            else:
                raise FieldError(BAD_FIELD, f"{code!r} is not type.domain.subDomain.eventOrAction")
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[raw] = found
        return found


class ReadingTypeResolver:
    def __init__(self, rules: ReadingTypeRules, tables: Mapping[str, CodeTable]) -> None:
        self.fixed = rules.fixed
        self.table = tables[rules.table] if rules.table else None
        self.default_ab = rules.obis_default_ab
        self._cache: dict[str, str] = {}

    def __call__(self, text: str | None) -> str:
        if self.fixed is not None:
            return self.fixed
        raw = text or ""
        found = self._cache.get(raw)
        if found is None:
            found = self._resolve(raw)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[raw] = found
        return found

    def _resolve(self, text: str) -> str:
        code = text.strip()
        if not code:
            raise FieldError(BAD_READING_TYPE, "no reading type code")
        if self.table is not None:
            found = self.table.lookup(code, self.default_ab)
            if found is None:
                raise FieldError(
                    BAD_READING_TYPE, f"{code!r} is not in code table {self.table.name!r}"
                )
            return found
        if not READING_TYPE_RE.match(code):
            raise FieldError(BAD_READING_TYPE, f"{code!r} is not 18 dot-separated integers")
        return code


class QualityResolver:
    def __init__(self, rules: QualityRules | None) -> None:
        self.codes = {
            k.strip(): ",".join(c.strip() for c in v.split(",") if c.strip())
            for k, v in (rules.codes.items() if rules else ())
        }
        self.unknown_valid = rules is None or rules.unknown == "valid"

    def __call__(self, text: str | None) -> str:
        found = self.codes.get(text) if text is not None else None
        if found is not None:
            return found
        flag = (text or "").strip()
        found = self.codes.get(flag)
        if found is not None:
            return found
        if self.unknown_valid or (not flag and not self.codes):
            return ""
        raise FieldError(BAD_QUALITY, f"quality flag {flag!r} is not in the quality codes")


class UnitResolver:
    def __init__(self, rules: UnitRules | None) -> None:
        self.factors = {k.strip(): v for k, v in rules.factors.items()} if rules else None

    def __call__(self, text: str | None) -> Decimal:
        if self.factors is None:
            return Decimal(1)
        unit = (text or "").strip()
        if unit not in self.factors:
            raise FieldError(BAD_FIELD, f"unit {unit!r} is not one of {sorted(self.factors)}")
        return self.factors[unit]


def out_of_range(text: str) -> FieldError:
    return FieldError(
        BAD_TIMESTAMP,
        f"{text.strip()!r} is outside the range of instants (years 0001-9999 in UTC)",
    )


def parse_local(text: str, fmt: str) -> datetime:
    """Parse with ``fmt`` (or ISO 8601); ``24:00`` means 00:00 of the next day."""
    t = text.strip()
    if not t:
        raise FieldError(BAD_TIMESTAMP, "no timestamp")
    try:
        return _parse(t, fmt)
    except ValueError:
        if "24:00" in t:
            try:
                return _parse(t.replace("24:00", "00:00", 1), fmt) + timedelta(days=1)
            except ValueError:
                pass
            except OverflowError:  # 24:00 of 9999-12-31
                raise out_of_range(t) from None
        raise FieldError(
            BAD_TIMESTAMP,
            f"{t!r} does not match the format {'ISO 8601' if fmt == 'iso8601' else fmt!r}",
        ) from None


def _parse(text: str, fmt: str) -> datetime:
    if fmt == "iso8601":
        return datetime.fromisoformat(text)
    return datetime.strptime(text, fmt)


def parse_date(text: str, fmt: str) -> date:
    t = text.strip()
    try:
        return datetime.strptime(t, fmt).date()
    except ValueError:
        raise FieldError(BAD_TIMESTAMP, f"{t!r} is not a date in the format {fmt!r}") from None


class TimeResolver:
    """Local wall-clock time -> UTC instant, with the DST rules of the spec.

    ``order``: the first time a repeated (autumn) local time is seen for a meter
    and reading type it is the earlier, summer-time instant; the second time the
    later one; a third time is an error. Only repeated local times are
    remembered, so memory stays small whatever the file size.
    """

    def __init__(self, rules: TimestampRules) -> None:
        self.rules = rules
        self.zone = ZoneInfo(rules.timezone)
        self.flags = {k.strip().lower(): v for k, v in rules.dst_flags.items()}
        self._seen: dict[tuple[MeterKey, str, datetime], int] = {}
        #: (text, flag) -> UTC instant, for times that do not depend on the meter
        self.cache: dict[tuple[str, str | None], datetime] = {}

    def cached(self, text: str, flag: str | None = None) -> datetime | None:
        """The instant of a time seen before that does not depend on the meter, or None."""
        return self.cache.get((text, flag))

    def instant(
        self, text: str, *, meter: MeterKey, reading_type: str, flag: str | None = None
    ) -> datetime:
        try:
            return self._instant(text, meter=meter, reading_type=reading_type, flag=flag)
        except OverflowError:  # a time whose instant is before year 1 or after 9999 in UTC
            raise out_of_range(text) from None

    def _instant(
        self, text: str, *, meter: MeterKey, reading_type: str, flag: str | None = None
    ) -> datetime:
        key = (text, flag)
        found = self.cache.get(key)
        if found is not None:
            return found
        parsed = parse_local(text, self.rules.format)
        if parsed.tzinfo is not None:
            result = parsed.astimezone(UTC)
        else:
            result = self.local_to_utc(parsed, meter=meter, reading_type=reading_type, flag=flag)
            if self.rules.repeated_hour == "order" and self._ambiguous(parsed):
                return result  # depends on how often it was seen: never cached
        if len(self.cache) >= CACHE_SIZE:
            self.cache.clear()
        self.cache[key] = result
        return result

    def _ambiguous(self, naive: datetime) -> bool:
        early = naive.replace(tzinfo=self.zone, fold=0)
        return early.utcoffset() != naive.replace(tzinfo=self.zone, fold=1).utcoffset()

    def local_to_utc(
        self, naive: datetime, *, meter: MeterKey, reading_type: str, flag: str | None = None
    ) -> datetime:
        zone = self.zone
        early = naive.replace(tzinfo=zone, fold=0)
        late = naive.replace(tzinfo=zone, fold=1)
        early_utc = early.astimezone(UTC)
        if early_utc.astimezone(zone).replace(tzinfo=None) != naive:
            raise FieldError(
                BAD_TIMESTAMP,
                f"{naive:%Y-%m-%d %H:%M} does not exist in "
                f"{self.rules.timezone} (skipped by the DST change)",
            )
        ambiguous = early.utcoffset() != late.utcoffset()
        mode = self.rules.repeated_hour
        if mode == "flag":
            season = self._season(flag)
            if ambiguous:
                return early_utc if season == "summer" else late.astimezone(UTC)
            actual = "summer" if early.dst() else "winter"
            if season != actual:
                raise FieldError(
                    BAD_TIMESTAMP,
                    f"DST flag says {season} time but "
                    f"{naive:%Y-%m-%d %H:%M} is {actual} time in "
                    f"{self.rules.timezone}",
                )
            return early_utc
        if not ambiguous:
            return early_utc
        if mode == "refuse":
            raise FieldError(
                BAD_TIMESTAMP,
                f"{naive:%Y-%m-%d %H:%M} occurs twice in "
                f"{self.rules.timezone} (DST change) and the "
                "mapping refuses repeated hours",
            )
        key = (meter, reading_type, naive)
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        if count == 1:
            return early_utc
        if count == 2:
            return late.astimezone(UTC)
        raise FieldError(
            BAD_TIMESTAMP,
            f"{naive:%Y-%m-%d %H:%M} occurs a third time for {meter} and this reading type",
        )

    def _season(self, flag: str | None) -> str:
        text = (flag or "").strip()
        season = self.flags.get(text.lower())
        if season is None:
            raise FieldError(
                BAD_TIMESTAMP, f"DST flag {text!r} is not one of {sorted(self.rules.dst_flags)}"
            )
        return season


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants of local midnight of ``day`` and of the next day."""
    out: list[datetime] = []
    try:
        days = (day, day + timedelta(days=1))
    except OverflowError:
        raise out_of_range(day.isoformat()) from None
    for d in days:
        naive = datetime(d.year, d.month, d.day)
        aware = naive.replace(tzinfo=zone)
        try:
            utc = aware.astimezone(UTC)
        except OverflowError:
            raise out_of_range(day.isoformat()) from None
        if utc.astimezone(zone).replace(tzinfo=None) != naive:
            raise FieldError(BAD_TIMESTAMP, f"local midnight of {d} does not exist in {zone.key}")
        out.append(utc)
    return out[0], out[1]
