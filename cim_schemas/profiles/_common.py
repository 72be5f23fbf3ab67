"""Former name of :mod:`cim_schemas.profiles.common`; kept so existing imports work."""

from cim_schemas.profiles.common import (
    ConfigurationEvent,
    DateTimeInterval,
    IdentifiedObject,
    Name,
    NameType,
    NameTypeAuthority,
    Status,
)

__all__ = [
    "ConfigurationEvent",
    "DateTimeInterval",
    "IdentifiedObject",
    "Name",
    "NameType",
    "NameTypeAuthority",
    "Status",
]
