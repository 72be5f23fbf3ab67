"""The one exception tree of amihub, and the published table of error codes.

::

    AmihubError                      root: every error amihub raises on purpose
    +-- RecoverableError             try again later (retry policy looks at this)
    |   +-- StoreUnavailable         database not reachable / serialisation failure
    |   +-- TransportUnavailable     broker, SFTP peer or HTTP peer not reachable
    |   +-- MeterUnreachable         DLMS meter does not answer in time
    +-- PermanentError               the same input will fail the same way: dead-letter it
        +-- MessageRejected          the message as a whole is refused (carries ErrorDetail*)
        |   +-- NotWellFormed        not XML, or XML the hardened parser refuses
        |   +-- InputTooLarge        over the configured size limit
        |   +-- SchemaInvalid        XSD validation failed
        |   +-- NotAnEnvelope        XML but not an IEC 61968-100 message
        |   +-- UnsupportedOperation no route for (verb, noun)
        |   +-- ReplayConflict       MessageID replayed with different content
        +-- NotAuthorised            authentication / permission refused
        +-- ConfigurationError       settings or mapping specs are wrong
        +-- SecurityViolation        bad tag, rewound invocation counter, ...

Driver exceptions (SQLAlchemy, psycopg, kombu, paramiko, gurux) are mapped to
these at the adapter edge; nothing above the adapters sees a driver exception.

Error codes are published in docs/error-codes.md; :data:`ERROR_CODES` is the
source of that table and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypedDict


class ErrorLevel(StrEnum):
    """IEC 61968-100 Reply/Error/level."""

    INFORM = "INFORM"
    WARNING = "WARNING"
    FATAL = "FATAL"
    CATASTROPHIC = "CATASTROPHIC"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    level: ErrorLevel
    title: str
    meaning: str


def _c(code: str, level: ErrorLevel, title: str, meaning: str) -> ErrorCode:
    return ErrorCode(code, level, title, meaning)


_F = ErrorLevel.FATAL
_W = ErrorLevel.WARNING
_C = ErrorLevel.CATASTROPHIC

#: The published table: code -> meaning. Codes are stable; never reuse one.
ERROR_CODES: dict[str, ErrorCode] = {
    e.code: e
    for e in (
        # 1xxx: the message as a whole
        _c("1001", _F, "not well-formed", "The input is not well-formed XML."),
        _c(
            "1002",
            _F,
            "forbidden XML construct",
            "DTD, entity declaration or external reference: refused by the hardened parser.",
        ),
        _c(
            "1003",
            _F,
            "input too large",
            "The input exceeds the configured size limit, or a get asks more meter-days "
            "than `[limits] max_get_meter_days`.",
        ),
        _c(
            "1004",
            _F,
            "not an envelope",
            "The XML root is not an IEC 61968-100 message or a 61968-9 message wrapper.",
        ),
        _c(
            "1005",
            _F,
            "schema invalid",
            "The message does not validate against the envelope or profile XSD; details "
            "name the offending element's path.",
        ),
        _c("1006", _F, "unsupported verb/noun", "No handler is routed for this verb and noun."),
        _c(
            "1007",
            _F,
            "replay conflict",
            "This MessageID was already received from this source with different content.",
        ),
        _c(
            "1008",
            _F,
            "header invalid",
            "A Header field has a value amihub cannot use (e.g. a Timestamp without zone).",
        ),
        _c("1009", _F, "payload missing", "The verb and noun need a Payload and there is none."),
        _c(
            "1010",
            _F,
            "not authorised",
            "The sender is not authenticated, may not use this verb and noun, or names a "
            "ReplyAddress outside its `reply_addresses`.",
        ),
        _c(
            "1011",
            _F,
            "not implemented yet",
            "The noun is recognised but its domain is not built in this release.",
        ),
        _c(
            "1012",
            _F,
            "unknown mapping",
            "The message names an inbound mapping or CIM variant (AMQP header "
            "amihub-mapping, a user's cim_variant) that is not configured.",
        ),
        # 2xxx: items inside the payload
        _c(
            "2001",
            _F,
            "unknown meter",
            "No end device with this mRID or name exists for the utility.",
        ),
        _c(
            "2002",
            _F,
            "unknown usage point",
            "No usage point with this mRID or name exists for the utility.",
        ),
        _c("2003", _F, "bad ReadingType", "The ReadingType is not 18 dot-separated integers."),
        _c(
            "2004",
            _F,
            "duplicate reading",
            "The same meter, ReadingType and timestamp occur more than once in the message.",
        ),
        _c("2005", _F, "bad value", "A reading value is not a decimal number."),
        _c("2006", _F, "bad timestamp", "A timestamp is missing, not ISO 8601, or has no zone."),
        _c("2007", _F, "already exists", "An object with this mRID already exists."),
        _c("2008", _F, "not found", "The object to change, close or delete does not exist."),
        _c(
            "2009",
            _F,
            "invalid state change",
            "The object's state does not allow the requested change "
            "(e.g. installing a meter that is installed elsewhere).",
        ),
        _c("2010", _F, "bad reading quality", "A ReadingQualityType is not system.category.index."),
        _c("2011", _F, "missing identifier", "An item has neither mRID nor Names/name."),
        _c("2012", _W, "no data", "The request matched nothing in the given period."),
        _c("2013", _F, "bad field", "A field has a value outside its allowed set."),
        _c(
            "2014",
            _F,
            "meter unreachable",
            "The head-end could not reach the meter (no answer, refused association); "
            "details say why. The request may be sent again.",
        ),
        _c(
            "2015",
            _F,
            "unknown or empty end device group",
            "No open EndDeviceGroup with this mRID or name exists for the utility, or it "
            "has no member meter (a job or read of a group needs at least one).",
        ),
        # 3xxx: the system
        _c("3001", _C, "store unavailable", "The meter data store could not be reached; retry."),
        _c(
            "3002",
            _C,
            "internal error",
            "An unexpected error; the input is kept in the dead-letter store.",
        ),
    )
}


@dataclass(frozen=True)
class ErrorDetail:
    """One Reply/Error of IEC 61968-100.

    ``xpath`` is where in the input the problem is, as a path of local names; the
    standard's ``Error/xpath`` is an ``xs:QName`` (no path fits), so a reply carries the
    path in ``Error/details`` (cim_schemas.envelope.build_reply). The failed object goes
    into ``Error/ID``: ``object_id`` its value, ``object_kind`` its ``kind`` (``uuid`` for
    an mRID, ``name`` for a Names/name, whose NameType is ``object_id_type``, the
    ``idType``) and ``object_type`` its CIM class (``objectType``: EndDevice,
    UsagePoint, ...).
    """

    code: str
    reason: str
    xpath: str | None = None
    details: str | None = None
    level: ErrorLevel | None = None
    object_id: str | None = None
    object_kind: str | None = None
    object_type: str | None = None
    object_id_type: str | None = None

    @property
    def effective_level(self) -> ErrorLevel:
        if self.level is not None:
            return self.level
        known = ERROR_CODES.get(self.code)
        return known.level if known else ErrorLevel.FATAL

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"unpublished error code {self.code!r}")


class ErrorObject(TypedDict, total=False):
    """The failed object of a Reply/Error (its Error/ID), as keyword arguments of
    :class:`ErrorDetail` and :class:`ItemRejected`."""

    object_id: str
    object_kind: str  # uuid (an mRID) | name (a Names/name)
    object_type: str  # the CIM class: EndDevice, UsagePoint, EndDeviceGroup, ...
    object_id_type: str | None  # the NameType of a name


def by_mrid(mrid: str, object_type: str) -> ErrorObject:
    """An object named by its mRID (Error/ID kind="uuid")."""
    return ErrorObject(
        object_id=mrid, object_kind="uuid", object_type=object_type, object_id_type=None
    )


def by_name(name: str, object_type: str, name_type: str | None = None) -> ErrorObject:
    """An object named by a Names/name (Error/ID kind="name", idType = its NameType)."""
    return ErrorObject(
        object_id=name, object_kind="name", object_type=object_type, object_id_type=name_type
    )


class NamedRef(Protocol):
    """How a message names an object (mdm.model.DeviceRef): mRID, or a name and its
    NameType."""

    @property
    def mrid(self) -> str | None: ...

    @property
    def name(self) -> str | None: ...

    @property
    def name_type(self) -> str | None: ...


def named_object(ref: NamedRef, object_type: str) -> ErrorObject:
    """A reference as the Error/ID of a reply: kind uuid (its mRID) or name (its name,
    idType = its NameType), for an object of the CIM class ``object_type``."""
    if ref.mrid:
        return by_mrid(ref.mrid, object_type)
    return by_name(ref.name or "", object_type, ref.name_type)


class AmihubError(Exception):
    """Root of every error amihub raises on purpose."""


class RecoverableError(AmihubError):
    """The same action may succeed later: retry with backoff."""


class StoreUnavailable(RecoverableError):
    pass


class TransportUnavailable(RecoverableError):
    pass


class MeterUnreachable(RecoverableError):
    pass


class PermanentError(AmihubError):
    """The same input fails the same way every time: refuse it and keep it."""


class MessageRejected(PermanentError):
    """The message as a whole is refused; ``errors`` go into the FAILED reply."""

    default_code = "1005"

    def __init__(
        self,
        reason: str,
        *,
        errors: list[ErrorDetail] | None = None,
        code: str | None = None,
        xpath: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or [ErrorDetail(code or self.default_code, reason, xpath=xpath)]

    @property
    def code(self) -> str:
        return self.errors[0].code


class NotWellFormed(MessageRejected):
    default_code = "1001"


class ForbiddenXml(MessageRejected):
    default_code = "1002"


class InputTooLarge(MessageRejected):
    default_code = "1003"


class NotAnEnvelope(MessageRejected):
    default_code = "1004"


class SchemaInvalid(MessageRejected):
    default_code = "1005"


class UnsupportedOperation(MessageRejected):
    default_code = "1006"


class ReplayConflict(MessageRejected):
    default_code = "1007"


class HeaderInvalid(MessageRejected):
    default_code = "1008"


class UnknownMapping(MessageRejected):
    """The input names an inbound mapping or CIM variant that is not configured."""

    default_code = "1012"


class PayloadInvalid(MessageRejected):
    """Item-level content errors that make the whole message unusable."""

    default_code = "2013"


class NotAuthorised(PermanentError):
    pass


class ConfigurationError(PermanentError):
    pass


class SecurityViolation(PermanentError):
    pass


class ItemRejected(PermanentError):
    """One item of a message cannot be applied; the other items may be."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        object_id: str | None = None,
        object_kind: str | None = None,
        object_type: str | None = None,
        object_id_type: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.object_id = object_id
        self.object_kind = object_kind
        self.object_type = object_type
        self.object_id_type = object_id_type

    def detail(self, xpath: str | None = None) -> ErrorDetail:
        """This rejection as a Reply/Error at ``xpath``, its object in Error/ID."""
        return ErrorDetail(
            self.code,
            self.reason,
            xpath=xpath,
            object_id=self.object_id,
            object_kind=self.object_kind,
            object_type=self.object_type,
            object_id_type=self.object_id_type,
        )


class BatchConflict(AmihubError):
    """Messages of a batch cannot be applied together (e.g. the same reading twice):
    the pipeline processes them one by one instead."""
