"""Classes every profile shares (Names, intervals, status), and value helpers.

The classes are public API (IdentifiedObject, Name, NameType, DateTimeInterval,
Status, ConfigurationEvent); the helpers are for the profile modules.

Each profile has its own namespace, so the helpers take the namespace prefix
``"{ns}"`` and build tags from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from lxml import etree

from cim_schemas.errors import PayloadInvalid
from cim_schemas.schemas import local_xpath
from cim_schemas.values import (
    format_bool,
    format_datetime,
    format_decimal,
    parse_bool,
    parse_datetime,
    parse_decimal,
    parse_int,
)

# -- shared classes -----------------------------------------------------------------------


@dataclass(frozen=True)
class NameTypeAuthority:
    name: str
    description: str | None = None


@dataclass(frozen=True)
class NameType:
    """Kind of name, e.g. ``MeterUniqueID`` or ``SerialNumber``."""

    name: str
    description: str | None = None
    name_type_authority: NameTypeAuthority | None = None


@dataclass(frozen=True)
class Name:
    name: str
    name_type: NameType | None = None


@dataclass(frozen=True)
class IdentifiedObject:
    """A reference to a device, usage point, group...: by mRID and/or Names.

    STANDARDS: a device may be named only by Names/name (with a NameType such
    as ``MeterUniqueID``); resolvers must accept both.
    """

    mrid: str | None = None
    names: tuple[Name, ...] = ()

    @classmethod
    def by_name(cls, name: str, name_type: str | None = None) -> IdentifiedObject:
        return cls(names=(Name(name, NameType(name_type) if name_type else None),))

    def name(self, name_type: str | None = None) -> str | None:
        """The first Names/name (of this NameType, if given)."""
        for n in self.names:
            if name_type is None or (n.name_type is not None and n.name_type.name == name_type):
                return n.name
        return None

    @property
    def name_type(self) -> str | None:
        """The NameType/name of the first name."""
        if self.names and self.names[0].name_type is not None:
            return self.names[0].name_type.name
        return None

    @property
    def identified(self) -> bool:
        return bool(self.mrid) or any(n.name for n in self.names)

    def __str__(self) -> str:
        if self.mrid:
            return self.mrid
        return f"{self.name_type or 'name'}={self.name()}"


@dataclass(frozen=True)
class DateTimeInterval:
    """CIM DateTimeInterval (in XML: end before start)."""

    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Status:
    value: str | None = None
    date_time: datetime | None = None
    reason: str | None = None
    remark: str | None = None


@dataclass(frozen=True)
class ConfigurationEvent:
    created_date_time: datetime | None = None
    effective_date_time: datetime | None = None
    reason: str | None = None


# -- parse helpers ------------------------------------------------------------------------


def children(el: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """(Clark tag, child) for element children only."""
    for child in el:
        tag = child.tag
        if isinstance(tag, str):
            yield tag, child


def invalid(el: etree._Element, code: str, message: str) -> PayloadInvalid:
    return PayloadInvalid(message, code=code, xpath=local_xpath(el))


def _what(el: etree._Element) -> str:
    return etree.QName(el).localname


def text(el: etree._Element) -> str:
    return (el.text or "").strip()


def dt(el: etree._Element) -> datetime:
    try:
        return parse_datetime(el.text)
    except ValueError as exc:
        raise invalid(el, "2006", f"{_what(el)}: {exc}") from None


def dec(el: etree._Element, code: str = "2005") -> Decimal:
    try:
        return parse_decimal(el.text)
    except ValueError as exc:
        raise invalid(el, code, f"{_what(el)}: {exc}") from None


def integer(el: etree._Element) -> int:
    try:
        return parse_int(el.text)
    except ValueError as exc:
        raise invalid(el, "2013", f"{_what(el)}: {exc}") from None


def boolean(el: etree._Element) -> bool:
    try:
        return parse_bool(el.text)
    except ValueError as exc:
        raise invalid(el, "2013", f"{_what(el)}: {exc}") from None


def ref(el: etree._Element) -> str:
    """The ``ref`` attribute of a reference element (ReadingType, ...Type)."""
    value = el.get("ref")
    if value is None:
        raise invalid(el, "2013", f"{_what(el)} has no ref attribute")
    return value.strip()


def parse_name(el: etree._Element, ns: str) -> Name:
    name = ""
    name_type: NameType | None = None
    for tag, child in children(el):
        if tag == ns + "name":
            name = text(child)
        elif tag == ns + "NameType":
            nt_name, nt_desc = "", None
            authority: NameTypeAuthority | None = None
            for t2, c2 in children(child):
                if t2 == ns + "name":
                    nt_name = text(c2)
                elif t2 == ns + "description":
                    nt_desc = text(c2)
                elif t2 == ns + "NameTypeAuthority":
                    a_name, a_desc = "", None
                    for t3, c3 in children(c2):
                        if t3 == ns + "name":
                            a_name = text(c3)
                        elif t3 == ns + "description":
                            a_desc = text(c3)
                    authority = NameTypeAuthority(a_name, a_desc)
            name_type = NameType(nt_name, nt_desc, authority)
    return Name(name, name_type)


def parse_identified(el: etree._Element, ns: str) -> IdentifiedObject:
    mrid: str | None = None
    names: list[Name] = []
    for tag, child in children(el):
        if tag == ns + "mRID":
            mrid = text(child)
        elif tag == ns + "Names":
            names.append(parse_name(child, ns))
    return IdentifiedObject(mrid, tuple(names))


def parse_interval(el: etree._Element, ns: str) -> DateTimeInterval:
    start = end = None
    for tag, child in children(el):
        if tag == ns + "start":
            start = dt(child)
        elif tag == ns + "end":
            end = dt(child)
    return DateTimeInterval(start, end)


def parse_status(el: etree._Element, ns: str) -> Status:
    value = reason = remark = None
    date_time = None
    for tag, child in children(el):
        if tag == ns + "value":
            value = text(child)
        elif tag == ns + "dateTime":
            date_time = dt(child)
        elif tag == ns + "reason":
            reason = text(child)
        elif tag == ns + "remark":
            remark = text(child)
    return Status(value, date_time, reason, remark)


def parse_configuration_event(el: etree._Element, ns: str) -> ConfigurationEvent:
    created = effective = None
    reason = None
    for tag, child in children(el):
        if tag == ns + "createdDateTime":
            created = dt(child)
        elif tag == ns + "effectiveDateTime":
            effective = dt(child)
        elif tag == ns + "reason":
            reason = text(child)
    return ConfigurationEvent(created, effective, reason)


# -- render helpers -----------------------------------------------------------------------


def root(tag: str, ns: str) -> etree._Element:
    """The profile root element, declaring the profile namespace as default."""
    return etree.Element(ns + tag, nsmap={None: ns[1:-1]})  # type: ignore[dict-item]


def sub(parent: etree._Element, tag: str) -> etree._Element:
    return etree.SubElement(parent, tag)


def sub_text(parent: etree._Element, tag: str, value: str | None) -> None:
    if value is not None:
        etree.SubElement(parent, tag).text = value


def sub_dt(parent: etree._Element, tag: str, value: datetime | None) -> None:
    if value is not None:
        etree.SubElement(parent, tag).text = format_datetime(value)


def sub_dec(parent: etree._Element, tag: str, value: Decimal | None) -> None:
    if value is not None:
        etree.SubElement(parent, tag).text = format_decimal(value)


def sub_int(parent: etree._Element, tag: str, value: int | None) -> None:
    if value is not None:
        etree.SubElement(parent, tag).text = str(value)


def sub_bool(parent: etree._Element, tag: str, value: bool | None) -> None:
    if value is not None:
        etree.SubElement(parent, tag).text = format_bool(value)


def sub_ref(parent: etree._Element, tag: str, value: str) -> None:
    etree.SubElement(parent, tag).set("ref", value)


def render_name(parent: etree._Element, tag: str, name: Name, ns: str) -> None:
    el = etree.SubElement(parent, tag)
    sub_text(el, ns + "name", name.name)
    nt = name.name_type
    if nt is not None:
        nte = etree.SubElement(el, ns + "NameType")
        sub_text(nte, ns + "description", nt.description)
        sub_text(nte, ns + "name", nt.name)
        if nt.name_type_authority is not None:
            auth = etree.SubElement(nte, ns + "NameTypeAuthority")
            sub_text(auth, ns + "description", nt.name_type_authority.description)
            sub_text(auth, ns + "name", nt.name_type_authority.name)


def render_names(parent: etree._Element, names: tuple[Name, ...], ns: str) -> None:
    for name in names:
        render_name(parent, ns + "Names", name, ns)


def render_identified(
    parent: etree._Element, tag: str, obj: IdentifiedObject, ns: str
) -> etree._Element:
    el = etree.SubElement(parent, tag)
    sub_text(el, ns + "mRID", obj.mrid)
    render_names(el, obj.names, ns)
    return el


def render_interval(parent: etree._Element, tag: str, value: DateTimeInterval, ns: str) -> None:
    el = etree.SubElement(parent, tag)
    sub_dt(el, ns + "end", value.end)
    sub_dt(el, ns + "start", value.start)


def render_status(parent: etree._Element, tag: str, value: Status, ns: str) -> None:
    el = etree.SubElement(parent, tag)
    sub_dt(el, ns + "dateTime", value.date_time)
    sub_text(el, ns + "reason", value.reason)
    sub_text(el, ns + "remark", value.remark)
    sub_text(el, ns + "value", value.value)


def render_configuration_event(
    parent: etree._Element, tag: str, value: ConfigurationEvent, ns: str
) -> None:
    el = etree.SubElement(parent, tag)
    sub_dt(el, ns + "createdDateTime", value.created_date_time)
    sub_dt(el, ns + "effectiveDateTime", value.effective_date_time)
    sub_text(el, ns + "reason", value.reason)


def expect_root(el: etree._Element, ns: str, local: str) -> None:
    if el.tag != ns + local:
        raise invalid(el, "2013", f"expected {{{ns[1:-1]}}}{local}, got {el.tag}")
