"""The IEC 61968-100 envelope: typed Header, Request and Reply; parse and render.

Two styles of message carry the same parts:

* ``"envelope"``: the generic 61968-100 roots ``RequestMessage``,
  ``ResponseMessage``, ``EventMessage`` and ``FaultMessage`` in
  :data:`~cim_schemas.namespaces.MESSAGE_NS`; the Header says verb and noun.
* ``"wrapper"``: the 61968-9 web-service bodies ``<Verb><Noun>`` (e.g.
  ``CreatedMeterReadings``), ``<Noun>ResponseMessage`` and ``<Noun>FaultMessage``
  in ``http://iec.ch/TC57/2011/<Noun>Message``; their Header is typed by the
  envelope schema, so its children are in MESSAGE_NS.

Parsing reads children by local name (the XSD checks namespaces and order);
it expects an already validated tree and raises amihub errors only:
:class:`~cim_schemas.errors.NotAnEnvelope` for a root that is no message and
:class:`~cim_schemas.errors.HeaderInvalid` for unusable header fields.
"""

from __future__ import annotations

import base64
import copy
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

from lxml import etree

from cim_schemas.errors import ERROR_CODES, ErrorDetail, ErrorLevel, HeaderInvalid, NotAnEnvelope
from cim_schemas.namespaces import (
    DRAFT_MESSAGE_NS,
    EVENT_VERBS,
    GET_END_DEVICE_EVENTS_MESSAGE_NS,
    GET_METER_READINGS_MESSAGE_NS,
    MESSAGE_NS,
    REQUEST_VERBS,
    VERBS,
    WRAPPER_NOUNS,
    message_ns,
    noun_of_message_ns,
)
from cim_schemas.schemas import local_xpath
from cim_schemas.values import (
    format_bool,
    format_datetime,
    parse_bool,
    parse_datetime,
    parse_int,
)

Kind = Literal["request", "response", "event", "fault"]
Style = Literal["envelope", "wrapper"]

RESULTS: Final = ("OK", "PARTIAL", "FAILED")
ID_KINDS: Final = ("name", "uuid", "transaction", "other")

#: Local names of the generic 61968-100 message roots.
ENVELOPE_ROOTS: Final = frozenset(
    {"RequestMessage", "ResponseMessage", "EventMessage", "FaultMessage"}
)
_ENVELOPE_KIND: Final[dict[str, Kind]] = {
    "RequestMessage": "request",
    "ResponseMessage": "response",
    "EventMessage": "event",
    "FaultMessage": "fault",
}
_MESSAGE_NAMESPACES: Final = frozenset({MESSAGE_NS, DRAFT_MESSAGE_NS})
# Longest first so "Canceled" wins over "Cancel" and "Created" over "Create".
_VERB_PREFIXES: Final = tuple(sorted(VERBS, key=len, reverse=True))


def _m(local: str) -> str:
    return "{" + MESSAGE_NS + "}" + local


# -- the parts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayDetection:
    nonce: str
    created: datetime


@dataclass(frozen=True)
class Header:
    """IEC 61968-100 Header. ``timestamp`` is aware (its offset as sent)."""

    verb: str
    noun: str
    revision: str | None = None
    timestamp: datetime | None = None
    source: str | None = None
    async_reply_flag: bool | None = None
    reply_address: str | None = None
    ack_required: bool | None = None
    user_id: str | None = None
    organization: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    comment: str | None = None
    context: str | None = None
    replay_detection: ReplayDetection | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}; one of {', '.join(VERBS)}")
        if not self.noun:
            raise ValueError("a Header needs a noun")
        if self.timestamp is not None and self.timestamp.utcoffset() is None:
            raise ValueError("Header timestamp must be timezone-aware")

    def property(self, name: str) -> str | None:
        """The first Property value with this Name (e.g. ``MessageIndex``)."""
        for key, value in self.properties:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class RequestID:
    """Request/ID (and Reply/ID): a value with idType, idAuthority, kind, objectType."""

    value: str
    id_type: str | None = None
    id_authority: str | None = None
    kind: str | None = None  # name | uuid | transaction | other
    object_type: str | None = None


@dataclass(frozen=True)
class RequestInfo:
    """IEC 61968-100 Request. ``get`` is the profile's Get element (e.g.
    ``{.../GetMeterReadings#}GetMeterReadings``) or None."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    options: tuple[tuple[str, str | None], ...] = ()
    ids: tuple[RequestID, ...] = ()
    get: etree._Element | None = field(default=None, compare=False, repr=False)

    def option(self, name: str) -> str | None:
        for key, value in self.options:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class PeerErrorDetail(ErrorDetail):
    """A Reply/Error received from a peer: its code is theirs, not from our table."""

    def __post_init__(self) -> None:  # no check against ERROR_CODES
        return None


@dataclass(frozen=True)
class Reply:
    """IEC 61968-100 Reply: Result (OK | PARTIAL | FAILED) and Error*.

    Each error renders as Error{code, level, reason, details?, ID?}: the ErrorDetail's
    ``xpath`` goes into details (Error/xpath is an xs:QName in the standard), its
    ``object_id`` is the Error's ID (with kind, objectType, idType).
    """

    result: str
    errors: tuple[ErrorDetail, ...] = ()
    ids: tuple[RequestID, ...] = ()
    operation_id: int | None = None

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"Reply result must be one of {RESULTS}, not {self.result!r}")


@dataclass(frozen=True)
class Operation:
    operation_id: int
    noun: str
    verb: str
    element_operation: bool | None = None
    elements: tuple[etree._Element, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class OperationSet:
    enforce_msg_sequence: bool | None = None
    enforce_transactional_integrity: bool | None = None
    operations: tuple[Operation, ...] = ()


@dataclass(frozen=True)
class ParsedMessage:
    """A message, parsed down to its payload element.

    ``payload`` is the profile element (e.g. ``{...MeterReadings#}MeterReadings``)
    or None; ``payload_xpath`` is its xpath in local names. A Compressed payload
    is in ``compressed`` (base64-decoded, still compressed as ``payload_format``
    says); an OperationSet in ``operation_set``.
    """

    kind: Kind
    style: Style
    root_name: str
    namespace: str
    header: Header | None
    request: RequestInfo | None = None
    reply: Reply | None = None
    payload: etree._Element | None = field(default=None, compare=False, repr=False)
    payload_xpath: str | None = None
    operation_set: OperationSet | None = None
    compressed: bytes | None = None
    payload_format: str | None = None

    @property
    def verb(self) -> str | None:
        return self.header.verb if self.header else None

    @property
    def noun(self) -> str | None:
        return self.header.noun if self.header else None


# -- parsing ------------------------------------------------------------------------------


def _local(el: etree._Element) -> str:
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def _children(el: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    for child in el:
        tag = child.tag
        if isinstance(tag, str):
            yield tag.rpartition("}")[2], child


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _header_field(el: etree._Element, what: str, exc: ValueError) -> HeaderInvalid:
    return HeaderInvalid(f"Header {what}: {exc}", xpath=local_xpath(el))


#: the longest Header values amihub keeps (its store's columns: message log, outbox,
#: head-end jobs); longer ones refuse the message (1008) instead of being cut: a
#: MessageID is the idempotency key, a ReplyAddress a destination
HEADER_MAX_CHARS: Final = {"MessageID": 200, "CorrelationID": 200, "Noun": 100, "ReplyAddress": 500}


def parse_header(element: etree._Element) -> Header:
    """Parse a Header element (of either style). Raises HeaderInvalid."""
    values: dict[str, Any] = {}
    props: list[tuple[str, str]] = []
    for name, child in _children(element):
        try:
            if name in (
                "Verb",
                "Noun",
                "Revision",
                "Context",
                "Source",
                "ReplyAddress",
                "MessageID",
                "CorrelationID",
                "Comment",
            ):
                values[name] = _text(child)
                longest = HEADER_MAX_CHARS.get(name)
                if longest is not None and len(values[name]) > longest:
                    raise ValueError(
                        f"{len(values[name])} characters long; amihub keeps at most {longest}"
                    )
            elif name == "Timestamp":
                values[name] = parse_datetime(child.text)
            elif name in ("AsyncReplyFlag", "AckRequired"):
                values[name] = parse_bool(child.text)
            elif name == "User":
                for sub_name, sub in _children(child):
                    if sub_name in ("UserID", "Organization"):
                        values[sub_name] = _text(sub)
            elif name == "ReplayDetection":
                nonce, created = "", None
                for sub_name, sub in _children(child):
                    if sub_name == "Nonce":
                        nonce = _text(sub)
                    elif sub_name == "Created":
                        created = parse_datetime(sub.text)
                if created is None:
                    raise ValueError("ReplayDetection without Created")
                values[name] = ReplayDetection(nonce, created)
            elif name == "Property":
                key, value = "", ""
                for sub_name, sub in _children(child):
                    if sub_name == "Name":
                        key = _text(sub)
                    elif sub_name == "Value":
                        value = sub.text or ""
                props.append((key, value))
        except ValueError as exc:
            raise _header_field(child, name, exc) from None
    verb = values.get("Verb", "")
    noun = values.get("Noun", "")
    if verb not in VERBS:
        where = element.find(_m("Verb"))
        raise HeaderInvalid(
            f"Header Verb {verb!r} is not an IEC 61968-100 verb",
            xpath=local_xpath(where) if where is not None else local_xpath(element) + "/Verb",
        )
    if not noun:
        raise HeaderInvalid("Header has no Noun", xpath=local_xpath(element) + "/Noun")
    return Header(
        verb=verb,
        noun=noun,
        revision=values.get("Revision"),
        timestamp=values.get("Timestamp"),
        source=values.get("Source"),
        async_reply_flag=values.get("AsyncReplyFlag"),
        reply_address=values.get("ReplyAddress"),
        ack_required=values.get("AckRequired"),
        user_id=values.get("UserID"),
        organization=values.get("Organization"),
        message_id=values.get("MessageID"),
        correlation_id=values.get("CorrelationID"),
        comment=values.get("Comment"),
        context=values.get("Context"),
        replay_detection=values.get("ReplayDetection"),
        properties=tuple(props),
    )


def _parse_id(el: etree._Element) -> RequestID:
    return RequestID(
        value=_text(el),
        id_type=el.get("idType"),
        id_authority=el.get("idAuthority"),
        kind=el.get("kind"),
        object_type=el.get("objectType"),
    )


def parse_request(element: etree._Element) -> RequestInfo:
    """Parse a Request element (generic or GetMeterReadings style)."""
    start = end = None
    options: list[tuple[str, str | None]] = []
    ids: list[RequestID] = []
    get: etree._Element | None = None
    for name, child in _children(element):
        try:
            if name == "StartTime":
                start = parse_datetime(child.text)
            elif name == "EndTime":
                end = parse_datetime(child.text)
            elif name == "Option":
                key, value = "", None
                for sub_name, sub in _children(child):
                    if sub_name == "Name":
                        key = _text(sub)
                    elif sub_name == "Value":
                        value = sub.text or ""
                options.append((key, value))
            elif name == "ID":
                ids.append(_parse_id(child))
            elif get is None:
                get = child
        except ValueError as exc:
            raise HeaderInvalid(f"Request {name}: {exc}", xpath=local_xpath(child)) from None
    return RequestInfo(start, end, tuple(options), tuple(ids), get)


def error_details_text(err: ErrorDetail) -> str | None:
    """Error/details of a reply: the path where the problem is (``ErrorDetail.xpath``;
    the standard types Error/xpath as xs:QName, which no path is), then the details."""
    if err.xpath and err.details:
        return f"{err.xpath} ({err.details})"
    return err.xpath or err.details


def _split_details(text: str | None) -> tuple[str | None, str | None]:
    """Inverse of :func:`error_details_text`: (xpath, details)."""
    if not text or not text.startswith("/"):
        return None, text
    path, sep, rest = text.partition(" (")
    if sep and rest.endswith(")"):
        return path, rest[:-1]
    if " " in text:
        return None, text
    return text, None


def _parse_error(el: etree._Element) -> ErrorDetail:
    values: dict[str, str] = {}
    object_id = kind = object_type = id_type = None
    for name, child in _children(el):
        if name in ("code", "level", "reason", "details", "xpath"):
            values[name] = _text(child)
        elif name == "ID":
            object_id = _text(child)
            kind, object_type, id_type = (
                child.get("kind"),
                child.get("objectType"),
                child.get("idType"),
            )
        elif name == "object" and object_id is None:
            mrid = child.find(_m("mRID"))
            object_id = _text(mrid) if mrid is not None else None
            object_type = child.get("objectType")
    xpath, details = _split_details(values.get("details"))
    code = values.get("code", "")
    level_text = values.get("level")
    level = ErrorLevel(level_text) if level_text and level_text in ErrorLevel.__members__ else None
    known = ERROR_CODES.get(code)
    if known is not None and level == known.level:
        level = None  # the published default: keep ErrorDetail as we would build it
    cls = ErrorDetail if known is not None else PeerErrorDetail
    return cls(
        code=code,
        reason=values.get("reason", ""),
        xpath=xpath or values.get("xpath"),  # a peer's Error/xpath is a QName
        details=details,
        level=level,
        object_id=object_id,
        object_kind=kind,
        object_type=object_type,
        object_id_type=id_type,
    )


def parse_reply(element: etree._Element) -> Reply:
    """Parse a Reply element."""
    result = "FAILED"
    errors: list[ErrorDetail] = []
    ids: list[RequestID] = []
    operation_id: int | None = None
    for name, child in _children(element):
        if name == "Result":
            result = _text(child)
        elif name == "Error":
            errors.append(_parse_error(child))
        elif name == "ID":
            ids.append(_parse_id(child))
        elif name == "operationId":
            try:
                operation_id = parse_int(child.text)
            except ValueError as exc:
                raise HeaderInvalid(f"Reply operationId: {exc}", xpath=local_xpath(child)) from None
    if result not in RESULTS:
        raise HeaderInvalid(
            f"Reply Result {result!r} is not OK, PARTIAL or FAILED",
            xpath=local_xpath(element) + "/Result",
        )
    return Reply(result, tuple(errors), tuple(ids), operation_id)


def _parse_operation_set(el: etree._Element) -> OperationSet:
    enforce_seq = enforce_tx = None
    ops: list[Operation] = []
    try:
        for name, child in _children(el):
            if name == "enforceMsgSequence":
                enforce_seq = parse_bool(child.text)
            elif name == "enforceTransactionalIntegrity":
                enforce_tx = parse_bool(child.text)
            elif name == "Operation":
                op_id, noun, verb, element_op = 0, "", "", None
                elements: list[etree._Element] = []
                for sub_name, sub in _children(child):
                    if sub_name == "operationId":
                        op_id = parse_int(sub.text)
                    elif sub_name == "noun":
                        noun = _text(sub)
                    elif sub_name == "verb":
                        verb = _text(sub)
                    elif sub_name == "elementOperation":
                        element_op = parse_bool(sub.text)
                    else:
                        elements.append(sub)
                ops.append(Operation(op_id, noun, verb, element_op, tuple(elements)))
    except ValueError as exc:
        raise HeaderInvalid(f"OperationSet: {exc}", xpath=local_xpath(el)) from None
    return OperationSet(enforce_seq, enforce_tx, tuple(ops))


@dataclass(frozen=True)
class _RootInfo:
    kind: Kind
    style: Style
    verb: str | None  # from the element name (wrappers only)
    noun: str | None


def _split_wrapper(local: str, namespace: str) -> _RootInfo | None:
    if namespace == GET_END_DEVICE_EVENTS_MESSAGE_NS:
        if local == "GetEndDeviceEvents":
            return _RootInfo("request", "wrapper", "get", "EndDeviceEvents")
        if local == "EndDeviceEventsResponseMessage":
            return _RootInfo("response", "wrapper", None, "EndDeviceEvents")
        if local == "EndDeviceEventsFaultMessage":
            return _RootInfo("fault", "wrapper", None, "EndDeviceEvents")
        return None
    ns_noun = noun_of_message_ns(namespace)
    if ns_noun is None:
        return None
    if namespace == GET_METER_READINGS_MESSAGE_NS:
        if local == "GetMeterReadings":
            return _RootInfo("request", "wrapper", "get", "MeterReadings")
        if local == "MeterReadingsResponseMessage":
            return _RootInfo("response", "wrapper", None, "MeterReadings")
        if local == "MeterReadingsFaultMessage":
            return _RootInfo("fault", "wrapper", None, "MeterReadings")
        return None
    if local == ns_noun + "ResponseMessage":
        return _RootInfo("response", "wrapper", None, ns_noun)
    if local == ns_noun + "FaultMessage":
        return _RootInfo("fault", "wrapper", None, ns_noun)
    if local.endswith(ns_noun):
        prefix = local[: -len(ns_noun)]
        for verb in _VERB_PREFIXES:
            if prefix == verb.capitalize():
                kind: Kind = "event" if verb in EVENT_VERBS else "request"
                return _RootInfo(kind, "wrapper", verb, ns_noun)
    return None


def _root_info(root: etree._Element) -> _RootInfo | None:
    tag = root.tag
    if not isinstance(tag, str):
        return None
    qname = etree.QName(root)
    namespace, local = qname.namespace or "", qname.localname
    if namespace in _MESSAGE_NAMESPACES:
        kind = _ENVELOPE_KIND.get(local)
        return _RootInfo(kind, "envelope", None, None) if kind else None
    return _split_wrapper(local, namespace)


def is_message_root(element: etree._Element) -> bool:
    """True for a 61968-100 message root or one of our 61968-9 wrappers."""
    return _root_info(element) is not None


def message_style(element: etree._Element) -> Style | None:
    """ "envelope" for a 61968-100 message root, "wrapper" for a 61968-9 wrapper, else None."""
    info = _root_info(element)
    return info.style if info else None


def parse_message(root: etree._Element) -> ParsedMessage:
    """Parse a (validated) message root into its typed parts.

    Raises NotAnEnvelope for a root that is no message, HeaderInvalid for bad
    header fields or a wrapper whose Header disagrees with its element name.
    """
    info = _root_info(root)
    qname = etree.QName(root) if isinstance(root.tag, str) else None
    root_name = qname.localname if qname else "?"
    if info is None or qname is None:
        raise NotAnEnvelope(
            f"root element {root_name} is not an IEC 61968-100 message or a 61968-9 wrapper",
            xpath=f"/{root_name}",
        )
    header = request = reply = None
    payload_el: etree._Element | None = None
    for name, child in _children(root):
        if name == "Header" and header is None:
            header = parse_header(child)
        elif name == "Request" and request is None:
            request = parse_request(child)
        elif name == "Reply" and reply is None:
            reply = parse_reply(child)
        elif name == "Payload" and payload_el is None:
            payload_el = child
    if header is None and info.kind != "fault":
        raise HeaderInvalid(f"{root_name} has no Header", xpath=f"/{root_name}/Header")
    if info.kind in ("response", "fault") and reply is None:
        raise HeaderInvalid(f"{root_name} has no Reply", xpath=f"/{root_name}/Reply")
    if header is not None and info.style == "wrapper":
        if info.noun is not None and header.noun != info.noun:
            raise HeaderInvalid(
                f"Header Noun {header.noun!r} disagrees with the element {root_name}",
                xpath=f"/{root_name}/Header/Noun",
            )
        if info.verb is not None and header.verb != info.verb:
            raise HeaderInvalid(
                f"Header Verb {header.verb!r} disagrees with the element {root_name}",
                xpath=f"/{root_name}/Header/Verb",
            )
    payload: etree._Element | None = None
    payload_xpath = operation_set = compressed = payload_format = None
    if payload_el is not None:
        wrapper_ns = qname.namespace or ""
        for name, child in _children(payload_el):
            ns = etree.QName(child).namespace
            own = ns in _MESSAGE_NAMESPACES or ns == wrapper_ns
            if own and name == "OperationSet":
                operation_set = _parse_operation_set(child)
            elif own and name == "Compressed":
                try:
                    compressed = base64.b64decode(
                        "".join((child.text or "").split()), validate=True
                    )
                except ValueError as exc:
                    raise HeaderInvalid(
                        f"Compressed payload is not base64: {exc}", xpath=local_xpath(child)
                    ) from None
            elif own and name == "Format":
                payload_format = _text(child)
            elif payload is None and not own:
                payload = child
                payload_xpath = f"/{root_name}/Payload/{name}"
    return ParsedMessage(
        kind=info.kind,
        style=info.style,
        root_name=root_name,
        namespace=qname.namespace or "",
        header=header,
        request=request,
        reply=reply,
        payload=payload,
        payload_xpath=payload_xpath,
        operation_set=operation_set,
        compressed=compressed,
        payload_format=payload_format,
    )


# -- rendering ----------------------------------------------------------------------------


#: random version-4 UUIDs drawn per thread, 256 at a time (see :func:`new_message_id`)
_IDS_AT_ONCE: Final = 256
_ids = threading.local()


def _forget_ids() -> None:
    """A forked child must not hand out the ids its parent drew."""
    global _ids
    _ids = threading.local()


os.register_at_fork(after_in_child=_forget_ids)


def new_message_id() -> str:
    """A random (version 4) UUID, as ``uuid.uuid4()``. The random bytes come from
    ``os.urandom`` 256 ids at a time: one call each released the GIL in the thread
    that renders a batch of replies, which then waits for another thread to give it
    back (the AMQP worker's threads wait ~1.8 ms on average for it, seen with strace)."""
    pool: list[str] | None = getattr(_ids, "pool", None)
    if not pool:
        data = os.urandom(16 * _IDS_AT_ONCE)
        pool = _ids.pool = [
            str(uuid.UUID(bytes=data[i : i + 16], version=4)) for i in range(0, len(data), 16)
        ]
    return pool.pop()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def reply_header(request: Header, *, source: str | None = None) -> Header:
    """The Header of the answer to ``request``: Verb reply, same Noun, a new
    MessageID, CorrelationID = the request's MessageID, Timestamp now (UTC)."""
    return Header(
        verb="reply",
        noun=request.noun,
        revision=request.revision,
        timestamp=now_utc(),
        source=source,
        message_id=new_message_id(),
        correlation_id=request.message_id,
        context=request.context,
    )


def _sub(parent: etree._Element, tag: str, text: str | None) -> None:
    if text is not None:
        etree.SubElement(parent, tag).text = text


def _new(tag: str, parent: etree._Element | None) -> etree._Element:
    """A SubElement of ``parent``, or a standalone element declaring its namespaces."""
    if parent is not None:
        return etree.SubElement(parent, tag)
    ns = tag[1:].partition("}")[0]
    nsmap: dict[str | None, str] = {None: ns}
    if ns != MESSAGE_NS:
        nsmap["msg"] = MESSAGE_NS
    return etree.Element(tag, nsmap=nsmap)  # type: ignore[arg-type]


def build_header(
    header: Header, tag: str = _m("Header"), parent: etree._Element | None = None
) -> etree._Element:
    """A Header element; its children are in MESSAGE_NS (typed by the envelope)."""
    el = _new(tag, parent)
    _sub(el, _m("Verb"), header.verb)
    _sub(el, _m("Noun"), header.noun)
    _sub(el, _m("Revision"), header.revision)
    if header.replay_detection is not None:
        rd = etree.SubElement(el, _m("ReplayDetection"))
        _sub(rd, _m("Nonce"), header.replay_detection.nonce)
        _sub(rd, _m("Created"), format_datetime(header.replay_detection.created))
    _sub(el, _m("Context"), header.context)
    if header.timestamp is not None:
        _sub(el, _m("Timestamp"), format_datetime(header.timestamp))
    _sub(el, _m("Source"), header.source)
    if header.async_reply_flag is not None:
        _sub(el, _m("AsyncReplyFlag"), format_bool(header.async_reply_flag))
    _sub(el, _m("ReplyAddress"), header.reply_address)
    if header.ack_required is not None:
        _sub(el, _m("AckRequired"), format_bool(header.ack_required))
    if header.user_id is not None:
        user = etree.SubElement(el, _m("User"))
        _sub(user, _m("UserID"), header.user_id)
        _sub(user, _m("Organization"), header.organization)
    _sub(el, _m("MessageID"), header.message_id)
    _sub(el, _m("CorrelationID"), header.correlation_id)
    _sub(el, _m("Comment"), header.comment)
    for key, value in header.properties:
        prop = etree.SubElement(el, _m("Property"))
        _sub(prop, _m("Name"), key)
        _sub(prop, _m("Value"), value)
    return el


def _id_element(parent: etree._Element, tag: str, rid: RequestID) -> None:
    el = etree.SubElement(parent, tag)
    el.text = rid.value
    for attr, value in (
        ("idType", rid.id_type),
        ("idAuthority", rid.id_authority),
        ("kind", rid.kind),
        ("objectType", rid.object_type),
    ):
        if value is not None:
            el.set(attr, value)


def build_request(
    request: RequestInfo,
    tag: str = _m("Request"),
    child_ns: str = MESSAGE_NS,
    parent: etree._Element | None = None,
) -> etree._Element:
    """A Request element. ``child_ns`` is MESSAGE_NS for the generic RequestType,
    the GetMeterReadingsMessage namespace for that service's own request type."""
    el = _new(tag, parent)
    c = "{" + child_ns + "}"
    if request.start_time is not None:
        _sub(el, c + "StartTime", format_datetime(request.start_time))
    if request.end_time is not None:
        _sub(el, c + "EndTime", format_datetime(request.end_time))
    for key, value in request.options:
        opt = etree.SubElement(el, c + "Option")
        _sub(opt, _m("Name"), key)
        _sub(opt, _m("Value"), value)
    for rid in request.ids:
        _id_element(el, c + "ID", rid)
    if request.get is not None:
        get = request.get
        el.append(copy.deepcopy(get) if get.getparent() is not None else get)
    return el


def build_reply(
    reply: Reply, tag: str = _m("Reply"), parent: etree._Element | None = None
) -> etree._Element:
    """A Reply element with Result and Error{code, level, reason, details?, ID?}.

    As the official IEC 61968-100 Message.xsd has it: Error/xpath is an xs:QName, so the
    path where the problem is goes into Error/details (:func:`error_details_text`) and
    the failed object into Error/ID with its kind, objectType and idType.
    """
    el = _new(tag, parent)
    _sub(el, _m("Result"), reply.result)
    for err in reply.errors:
        e = etree.SubElement(el, _m("Error"))
        _sub(e, _m("code"), err.code)
        _sub(e, _m("level"), str(err.effective_level))
        _sub(e, _m("reason"), err.reason)
        _sub(e, _m("details"), error_details_text(err))
        if err.object_id is not None:
            _id_element(
                e,
                _m("ID"),
                RequestID(
                    err.object_id,
                    id_type=err.object_id_type,
                    kind=err.object_kind,
                    object_type=err.object_type,
                ),
            )
    for rid in reply.ids:
        _id_element(el, _m("ID"), rid)
    if reply.operation_id is not None:
        _sub(el, _m("operationId"), str(reply.operation_id))
    return el


def wrapper_namespace(verb: str | None, noun: str) -> str | None:
    """The wrapper namespace for a verb and noun, or None if we have no wrapper.

    ``get MeterReadings`` (and its answer) live in GetMeterReadingsMessage.
    """
    if noun == "MeterReadings" and verb == "get":
        return GET_METER_READINGS_MESSAGE_NS
    if noun in WRAPPER_NOUNS:
        return message_ns(noun)
    return None


def _root(tag: str, default_ns: str) -> etree._Element:
    nsmap: dict[str | None, str] = {None: default_ns}
    if default_ns != MESSAGE_NS:
        nsmap["msg"] = MESSAGE_NS
    return etree.Element(tag, nsmap=nsmap)  # type: ignore[arg-type]


def _payload(parent: etree._Element, tag: str, payload: etree._Element | None) -> None:
    if payload is not None:
        etree.SubElement(parent, tag).append(payload)


def _tostring(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def build_request_message(
    header: Header,
    request: RequestInfo | None = None,
    payload: etree._Element | None = None,
    *,
    style: Style = "envelope",
) -> etree._Element:
    """``RequestMessage`` or the ``<Verb><Noun>`` wrapper (e.g. GetMeterReadings)."""
    if header.verb not in REQUEST_VERBS:
        raise ValueError(f"{header.verb!r} is not a request verb")
    ns = wrapper_namespace(header.verb, header.noun) if style == "wrapper" else None
    if ns is None:
        root = _root(_m("RequestMessage"), MESSAGE_NS)
        build_header(header, _m("Header"), parent=root)
        if request is not None:
            build_request(request, parent=root)
        _payload(root, _m("Payload"), payload)
        return root
    w = "{" + ns + "}"
    local = (
        "GetMeterReadings"
        if ns == GET_METER_READINGS_MESSAGE_NS
        else (header.verb.capitalize() + header.noun)
    )
    root = _root(w + local, ns)
    build_header(header, w + "Header", parent=root)
    if request is not None:
        child_ns = ns if ns == GET_METER_READINGS_MESSAGE_NS else MESSAGE_NS
        build_request(request, w + "Request", child_ns, parent=root)
    _payload(root, w + "Payload", payload)
    return root


def render_request(
    header: Header,
    request: RequestInfo | None = None,
    payload: etree._Element | None = None,
    *,
    style: Style = "envelope",
) -> bytes:
    """Render a request (verb create/change/cancel/close/delete/get/execute)."""
    return _tostring(build_request_message(header, request, payload, style=style))


def build_event_message(
    header: Header, payload: etree._Element, *, style: Style = "envelope"
) -> etree._Element:
    """``EventMessage`` or the ``<Verb><Noun>`` wrapper (e.g. CreatedMeterReadings)."""
    if header.verb not in EVENT_VERBS:
        raise ValueError(f"{header.verb!r} is not an event verb")
    ns = wrapper_namespace(header.verb, header.noun) if style == "wrapper" else None
    if ns is None:
        root = _root(_m("EventMessage"), MESSAGE_NS)
        build_header(header, _m("Header"), parent=root)
        _payload(root, _m("Payload"), payload)
        return root
    w = "{" + ns + "}"
    root = _root(w + header.verb.capitalize() + header.noun, ns)
    build_header(header, w + "Header", parent=root)
    _payload(root, w + "Payload", payload)
    return root


def render_event(header: Header, payload: etree._Element, *, style: Style = "envelope") -> bytes:
    """Render an event (verb created/changed/canceled/closed/deleted/executed)."""
    return _tostring(build_event_message(header, payload, style=style))


def _response_parts(
    header: Header, style: Style, noun: str | None, namespace: str | None
) -> tuple[Header, str | None, str]:
    response_header = header if header.verb == "reply" else reply_header(header)
    noun = noun or response_header.noun
    ns = None
    if style == "wrapper":
        ns = namespace or wrapper_namespace(header.verb, noun)
    return response_header, ns, noun


def build_response_message(
    header: Header,
    reply: Reply,
    payload: etree._Element | None = None,
    *,
    style: Style = "envelope",
    noun: str | None = None,
    namespace: str | None = None,
) -> etree._Element:
    """``ResponseMessage`` or ``<Noun>ResponseMessage``.

    ``header`` is the request's Header (the answer's header is derived with
    :func:`reply_header`) or an already made reply header (verb ``reply``).
    A wrapper for a noun we have no wrapper for falls back to the envelope.
    """
    response_header, ns, noun = _response_parts(header, style, noun, namespace)
    if ns is None:
        root = _root(_m("ResponseMessage"), MESSAGE_NS)
        build_header(response_header, _m("Header"), parent=root)
        build_reply(reply, _m("Reply"), parent=root)
        _payload(root, _m("Payload"), payload)
        return root
    w = "{" + ns + "}"
    root = _root(w + noun + "ResponseMessage", ns)
    build_header(response_header, w + "Header", parent=root)
    build_reply(reply, w + "Reply", parent=root)
    _payload(root, w + "Payload", payload)
    return root


def render_response(
    header: Header,
    reply: Reply,
    payload: etree._Element | None = None,
    *,
    style: Style = "envelope",
    noun: str | None = None,
    namespace: str | None = None,
) -> bytes:
    """Render the answer to a request (see :func:`build_response_message`)."""
    return _tostring(
        build_response_message(header, reply, payload, style=style, noun=noun, namespace=namespace)
    )


def build_fault_message(
    reply: Reply,
    *,
    noun: str | None = None,
    style: Style = "envelope",
    namespace: str | None = None,
) -> etree._Element:
    """``FaultMessage`` or ``<Noun>FaultMessage``: just the Reply."""
    ns = None
    if style == "wrapper" and noun:
        ns = namespace or wrapper_namespace(None, noun)
    if ns is None or noun is None:
        root = _root(_m("FaultMessage"), MESSAGE_NS)
        build_reply(reply, _m("Reply"), parent=root)
        return root
    w = "{" + ns + "}"
    root = _root(w + noun + "FaultMessage", ns)
    build_reply(reply, w + "Reply", parent=root)
    return root


def render_fault(
    reply: Reply,
    *,
    noun: str | None = None,
    style: Style = "envelope",
    namespace: str | None = None,
) -> bytes:
    """Render a fault (SOAP Fault detail): ``FaultMessage`` or ``<Noun>FaultMessage``."""
    return _tostring(build_fault_message(reply, noun=noun, style=style, namespace=namespace))


@contextmanager
def response_writer(
    out: IO[bytes],
    header: Header,
    reply: Reply,
    *,
    style: Style = "envelope",
    noun: str | None = None,
    namespace: str | None = None,
) -> Iterator[Any]:
    """Write a response incrementally; yields the lxml ``xmlfile`` writer positioned
    inside Payload, so a large payload (e.g. a meter-year of readings, see
    :func:`cim_schemas.meter_readings.write_readings`) is written
    with bounded memory.
    """
    response_header, ns, noun = _response_parts(header, style, noun, namespace)
    if ns is None:
        root_tag, ns_used = _m("ResponseMessage"), MESSAGE_NS
        header_tag, reply_tag, payload_tag = _m("Header"), _m("Reply"), _m("Payload")
    else:
        w = "{" + ns + "}"
        root_tag, ns_used = w + noun + "ResponseMessage", ns
        header_tag, reply_tag, payload_tag = w + "Header", w + "Reply", w + "Payload"
    nsmap: dict[str | None, str] = {None: ns_used}
    if ns_used != MESSAGE_NS:
        nsmap["msg"] = MESSAGE_NS
    xmlfile: Any = etree.xmlfile  # lxml-stubs does not describe the incremental writer
    with xmlfile(out, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element(root_tag, nsmap=nsmap):
            xf.write(build_header(response_header, header_tag))
            xf.write(build_reply(reply, reply_tag))
            with xf.element(payload_tag):
                yield xf
