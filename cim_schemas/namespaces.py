"""Namespaces, nouns and verbs of IEC 61968-100 and 61968-9 as amihub speaks them.

These are facts of the standards (see docs/cim.md). Nothing here builds state.
"""

from __future__ import annotations

from typing import Final

#: The IEC 61968-100 (edition 1) envelope namespace; what amihub emits.
MESSAGE_NS: Final = "http://iec.ch/TC57/2011/schema/message"
#: The draft spelling with ``www``: accepted on input, rewritten to MESSAGE_NS.
DRAFT_MESSAGE_NS: Final = "http://www.iec.ch/TC57/2011/schema/message"
#: Edition 2 (2022) envelope namespace: recognised, not supported.
EDITION2_MESSAGE_NS: Final = "http://iec.ch/TC57/2021/schema/message"

_BASE: Final = "http://iec.ch/TC57/2011/"

#: The nouns amihub has profiles for (61968-9 part 9 nouns).
NOUNS: Final[tuple[str, ...]] = (
    "MeterReadings",
    "GetMeterReadings",
    "EndDeviceControls",
    "EndDeviceEvents",
    "MeterReadSchedule",
    "MeterConfig",
    "UsagePointConfig",
    "MasterDataLinkageConfig",
    "EndDeviceGroups",
)

#: Nouns that have a ``<Noun>Message`` wrapper namespace of their own (the
#: GetMeterReadings profile travels inside ``GetMeterReadingsMessage`` requests).
WRAPPER_NOUNS: Final[tuple[str, ...]] = tuple(n for n in NOUNS if n != "GetMeterReadings")

#: IEC 61968-100 Header/Verb values.
VERBS: Final[tuple[str, ...]] = (
    "create",
    "created",
    "change",
    "changed",
    "cancel",
    "canceled",
    "close",
    "closed",
    "delete",
    "deleted",
    "get",
    "reply",
    "execute",
    "executed",
)

#: Verbs that ask for something (request messages) ...
REQUEST_VERBS: Final = frozenset(
    {"create", "change", "cancel", "close", "delete", "get", "execute"}
)
#: ... and verbs that tell that something happened (event messages).
EVENT_VERBS: Final = frozenset({"created", "changed", "canceled", "closed", "deleted", "executed"})

#: Namespace of the GetMeterReadings service messages.
GET_METER_READINGS_MESSAGE_NS: Final = _BASE + "GetMeterReadingsMessage"
#: Namespace of the GetEndDeviceEvents service messages (the same request is accepted
#: in the EndDeviceEventsMessage namespace too; each is answered in its own).
GET_END_DEVICE_EVENTS_MESSAGE_NS: Final = _BASE + "GetEndDeviceEventsMessage"


def profile_ns(noun: str) -> str:
    """``http://iec.ch/TC57/2011/<Noun>#``: the namespace of a 61968-9 profile."""
    return f"{_BASE}{noun}#"


def message_ns(noun: str) -> str:
    """``http://iec.ch/TC57/2011/<Noun>Message``: the namespace of a noun's wrappers."""
    return f"{_BASE}{noun}Message"


def noun_of_profile_ns(namespace: str) -> str | None:
    """The noun of a profile namespace, or None if it is not one of ours."""
    if namespace.startswith(_BASE) and namespace.endswith("#"):
        noun = namespace[len(_BASE) : -1]
        return noun if noun in NOUNS else None
    return None


def noun_of_message_ns(namespace: str) -> str | None:
    """The noun of a wrapper namespace (``...MeterConfigMessage`` -> ``MeterConfig``)."""
    if namespace.startswith(_BASE) and namespace.endswith("Message"):
        noun = namespace[len(_BASE) : -len("Message")]
        return noun if noun in NOUNS else None
    return None


def qn(namespace: str, local: str) -> str:
    """Clark notation ``{namespace}local``."""
    return f"{{{namespace}}}{local}"
