"""Column types that behave the same on SQLite and PostgreSQL.

* :class:`UTCDateTime` -- timezone-aware UTC in, timezone-aware UTC out. PostgreSQL
  stores ``timestamptz``; SQLite stores the UTC instant as ISO text
  ``YYYY-MM-DD HH:MM:SS.ffffff`` (sortable, comparable as text).
* :class:`ExactDecimal` -- ``NUMERIC`` on PostgreSQL (which keeps the scale as sent:
  ``0.2250`` stays ``0.2250``); on SQLite the same plain decimal text
  (:func:`decimal_text`: digits and scale as sent, no exponent), so that both stores
  give back the value as it arrived. Two values are the same reading value when
  their numbers are equal (``1.5`` after ``1.50`` changes nothing and keeps
  ``1.50``; adapters/sql/readings.py compares SQLite's texts without trailing zeros).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

#: The text form of a UTC instant on SQLite (SQLAlchemy's own SQLite storage format).
SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def sqlite_ts(ts: datetime) -> str:
    """The SQLite storage text of an aware instant."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts!r}: amihub stores timezone-aware UTC instants")
    return ts.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")[:26]


def decimal_text(value: Decimal) -> str:
    """Plain decimal text with the scale as sent, as PostgreSQL's ``numeric::text``
    gives it: ``0.2250`` -> ``0.2250``, ``1.5E+3`` -> ``1500``, ``-0.0`` -> ``0.0``."""
    text = str(value)
    if "E" in text or "e" in text or text.startswith("-0"):
        if not value.is_finite():
            raise ValueError(f"not a finite decimal: {value!r}")
        if value.is_zero():
            value = abs(value)
        text = format(value, "f")
    elif not value.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return text


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: amihub stores timezone-aware UTC instants")
        utc = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a SQLite expression
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL, plain decimal text with its scale on SQLite."""

    impl = Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            value = Decimal(str(value))
        if dialect.name == "sqlite":
            return decimal_text(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(str(value))


#: characters a COPY text field must escape
COPY_SPECIALS = ("\\", "\t", "\n", "\r")


def copy_text(value: str) -> str:
    """A value as a field of PostgreSQL's COPY text format (escaped only when needed)."""
    if not any(c in value for c in COPY_SPECIALS):
        return value
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def fit(value: str, column: Any) -> str:
    """``value`` cut to what a ``String(n)`` column holds (the end marked with ``…``):
    for log columns (audit actor, message-log source) whose input may be longer; keys
    (MessageID, mRIDs) are bounded at the edge instead, never truncated."""
    length = getattr(column.type, "length", None)
    if length is None or len(value) <= length:
        return value
    return value[: length - 1] + "…"
