"""Lexical forms of the XSD simple types our profiles use, and their Python values.

``parse_*`` raise :class:`ValueError` with a short reason; callers turn that
into the amihub error with the element's xpath.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

_DATETIME: Final = re.compile(
    r"-?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?P<frac>\.\d+)?(?P<zone>Z|[+-]\d\d:\d\d)?"
)
_DECIMAL: Final = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_datetime(text: str | None) -> datetime:
    """An xs:dateTime with a zone (Z or +hh:mm) -> an aware datetime keeping its offset.

    Fractions beyond microseconds are truncated. A dateTime without zone is
    refused: amihub stores instants, and a local time without offset is not one.
    """
    if text is None:
        raise ValueError("missing dateTime")
    s = text.strip()
    m = _DATETIME.fullmatch(s)
    if m is None:
        raise ValueError(f"not an xs:dateTime: {s!r}")
    if m.group("zone") is None:
        raise ValueError(f"dateTime without zone: {s!r}")
    frac = m.group("frac")
    if frac is not None and len(frac) > 7:
        s = s[: m.start("frac") + 7] + s[m.end("frac") :]
    try:
        value = datetime.fromisoformat(s)
    except ValueError as exc:
        raise ValueError(f"not a valid dateTime: {text.strip()!r} ({exc})") from None
    check_instant(value, s)
    return value


def check_instant(value: datetime, text: str) -> None:
    """Refuse an aware datetime whose instant falls outside years 1-9999 in UTC
    (``9999-12-31T23:59:59-14:00``): Python cannot convert it, and amihub stores instants."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"dateTime {text!r} is outside the range of instants (years 0001-9999 in UTC)"
        ) from None


def format_datetime(value: datetime) -> str:
    """An aware datetime -> xs:dateTime (its own offset kept; UTC as +00:00)."""
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime cannot be rendered: {value!r}")
    return value.isoformat()


def parse_decimal(text: str | None) -> Decimal:
    """A decimal number (as real systems send it, e.g. ``6519.0955``); exact."""
    if text is None:
        raise ValueError("missing number")
    s = text.strip()
    if _DECIMAL.fullmatch(s) is None:
        raise ValueError(f"not a decimal number: {s!r}")
    try:
        return Decimal(s)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"not a decimal number: {s!r}") from None


def format_decimal(value: Decimal) -> str:
    """A Decimal -> a plain (no exponent) decimal string."""
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    s = str(value)
    if "E" in s or "e" in s:
        s = format(value, "f")
    return s


def parse_int(text: str | None) -> int:
    if text is None:
        raise ValueError("missing integer")
    s = text.strip()
    if not re.fullmatch(r"[+-]?\d+", s):
        raise ValueError(f"not an integer: {s!r}")
    return int(s)


def parse_bool(text: str | None) -> bool:
    """xs:boolean: true, false, 1, 0."""
    s = (text or "").strip()
    if s in ("true", "1"):
        return True
    if s in ("false", "0"):
        return False
    raise ValueError(f"not an xs:boolean: {s!r}")


def format_bool(value: bool) -> str:
    return "true" if value else "false"
