"""Events of accepted requests: ``created.MeterReadings`` and the like on the events exchange.

When amihub accepts a create/change/... request (result OK), subscribers hear
about it: an EventMessage with the past-tense verb, the request's payload, a
MessageID derived from the sender and the request's message id (the same on
every redelivery, so a subscriber can drop repeats) and CorrelationID = the
request's MessageID. Routing key ``<verb>.<Noun>``, e.g. ``created.MeterReadings``.

Delivery guarantee: the event is published in the same batch of publisher
confirms as the reply, before the request is acknowledged. If amihub dies
between the commit and the confirm, the broker redelivers the request; the
pipeline answers with the stored reply (nothing applied twice) and the event
is published again. So events of AMQP requests are at-least-once without an
outbox round trip; events that start elsewhere (HES, schedules, other
adapters) go through the outbox (:mod:`adapters.amqp.service`).

The event carries the received Payload as it came: for the common shape of a
request (UTF-8, the envelope namespace as the root's default namespace, one
``<Payload>``, no CDATA, comments or processing instructions) its bytes are
copied into the event next to a new Header, with the root's namespace
declarations, instead of parsing the request again and serialising the tree
(a third of a worker's time per message went there). Any other shape takes the
tree path; both give the same document (a test compares them).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Final
from xml.sax.saxutils import escape

from lxml import etree

from cim_schemas import envelope
from cim_schemas.envelope import Header
from cim_schemas.errors import AmihubError
from cim_schemas.namespaces import MESSAGE_NS
from cim_schemas.values import format_datetime
from cim_schemas.xml import parse_bytes
from hub.messages import Outcome

log = logging.getLogger("amihub.amqp")

#: request verb -> event verb
EVENT_VERBS = {
    "create": "created",
    "created": "created",
    "change": "changed",
    "changed": "changed",
    "cancel": "canceled",
    "canceled": "canceled",
    "close": "closed",
    "closed": "closed",
    "delete": "deleted",
    "deleted": "deleted",
    "execute": "executed",
    "executed": "executed",
}
EVENT_NAMESPACE = uuid.UUID("c5d0f2a4-7e1b-4f7e-9a43-5b8d1e2c3f60")


def event_id(source: str, request_id: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{source}\n{request_id}"))


#: the start of a request whose Payload bytes can be copied: optional UTF-8 declaration,
#: an unprefixed RequestMessage / EventMessage start tag (group 2: its attributes)
_ROOT: Final = re.compile(
    rb"\A\s*(?:<\?xml\s[^?]*?\?>\s*)?<(RequestMessage|EventMessage)(\s[^>]*)?>"
)
_DECLARATION_ENCODING: Final = re.compile(rb"\A\s*<\?xml\s[^?]*encoding\s*=\s*[\"']([^\"']+)")
#: a namespace declaration in a start tag: group 1 the prefix (None: default), 2 the value
_XMLNS: Final = re.compile(rb"""\sxmlns(?::([A-Za-z_][\w.-]*))?\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_DEFAULT_NS: Final = MESSAGE_NS.encode()
_OPEN: Final = b"<Payload>"
_CLOSE: Final = b"</Payload>"
_SHELL_END: Final = b"</EventMessage>"
_EVENT_START: Final = b"<?xml version='1.0' encoding='UTF-8'?>\n<EventMessage xmlns=\"" + (
    _DEFAULT_NS + b'"'
)


def _payload_bytes(body: bytes) -> tuple[bytes, bytes] | None:
    """(the root's namespace declarations but the default, the Payload element) copied
    from the request, or None when its shape needs the tree path."""
    root = _ROOT.match(body)
    if root is None:
        return None
    declared = _DECLARATION_ENCODING.match(body)
    if declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return None
    default: bytes | None = None
    others: list[bytes] = []
    for decl in _XMLNS.finditer(root.group(2) or b""):
        value = decl.group(2) if decl.group(2) is not None else decl.group(3)
        if decl.group(1) is None:
            default = value
        else:
            others.append(decl.group(0))
    if default != _DEFAULT_NS:
        return None
    after = root.end()
    start = body.find(_OPEN, after)
    end = body.rfind(_CLOSE)
    if (
        start < 0
        or end < start
        or body.find(_OPEN, start + 1) >= 0
        or body.find(_CLOSE, start) != end
        # CDATA, comments (the parser dropped them), processing instructions: the tree path
        or _markup(body, b"!", after)
        or _markup(body, b"?", after)
    ):
        return None
    return b"".join(others), body[start : end + len(_CLOSE)]


def _markup(body: bytes, mark: bytes, start: int) -> bool:
    """``<`` followed by ``mark`` after ``start``; the rare byte is searched first (a
    two-byte search starting with the frequent ``<`` is ten times slower)."""
    return body.find(mark, start) >= 0 and body.find(b"<" + mark, start) >= 0


def _text(value: str) -> bytes:
    return escape(value).encode()


def _spliced_event(header: Header, copied: tuple[bytes, bytes]) -> bytes:
    """An EventMessage of ``header`` around the request's own Payload bytes (the Header
    as :func:`cim_schemas.envelope.build_header` renders these fields)."""
    declarations, payload = copied
    assert header.timestamp is not None
    parts = [
        _EVENT_START,
        declarations,
        b"><Header><Verb>",
        _text(header.verb),
        b"</Verb><Noun>",
        _text(header.noun),
        b"</Noun><Timestamp>",
        format_datetime(header.timestamp).encode(),
        b"</Timestamp><Source>",
        _text(header.source or ""),
        b"</Source><MessageID>",
        _text(header.message_id or ""),
        b"</MessageID>",
    ]
    if header.correlation_id is not None:
        parts += [b"<CorrelationID>", _text(header.correlation_id), b"</CorrelationID>"]
    parts += [b"</Header>", payload, _SHELL_END]
    return b"".join(parts)


def build_event(
    body: bytes, outcome: Outcome, source: str, request_id: str | None
) -> tuple[str, bytes, str] | None:
    """(routing key, EventMessage, message id) for an accepted request, or None."""
    if outcome.result != "OK" or not outcome.verb or not outcome.noun:
        return None
    verb = EVENT_VERBS.get(outcome.verb)
    if verb is None:
        return None
    mid = event_id(source, request_id) if request_id else envelope.new_message_id()
    header = Header(
        verb=verb,
        noun=outcome.noun,
        timestamp=envelope.now_utc(),
        source="amihub",
        message_id=mid,
        correlation_id=outcome.message_id,
    )
    copied = _payload_bytes(body)
    if copied is not None:
        return f"{verb}.{outcome.noun}", _spliced_event(header, copied), mid
    return _tree_event(body, header, request_id)


def _tree_event(
    body: bytes, header: Header, request_id: str | None
) -> tuple[str, bytes, str] | None:
    """The event through the tree: parse the request, move its Payload's content."""
    try:
        root = parse_bytes(body, max_bytes=len(body) + 1).getroot()  # size checked before
    except AmihubError as exc:  # validated by the pipeline already: should not happen
        log.warning("no event for %s: %s", request_id, exc)
        return None
    payload = next((e for e in root if etree.QName(e).localname == "Payload"), None)
    content = (
        next((e for e in payload if isinstance(e.tag, str)), None) if payload is not None else None
    )
    if content is None:
        return None
    assert header.message_id is not None
    event = envelope.render_event(header, content)
    return f"{header.verb}.{header.noun}", event, header.message_id
