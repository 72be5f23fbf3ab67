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
"""

from __future__ import annotations

import logging
import uuid

from lxml import etree

from cim_schemas import envelope
from cim_schemas.envelope import Header
from cim_schemas.xml import parse_bytes
from hub.errors import AmihubError
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


def build_event(
    body: bytes, outcome: Outcome, source: str, request_id: str | None
) -> tuple[str, bytes, str] | None:
    """(routing key, EventMessage, message id) for an accepted request, or None."""
    if outcome.result != "OK" or not outcome.verb or not outcome.noun:
        return None
    verb = EVENT_VERBS.get(outcome.verb)
    if verb is None:
        return None
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
    mid = event_id(source, request_id) if request_id else envelope.new_message_id()
    header = Header(
        verb=verb,
        noun=outcome.noun,
        timestamp=envelope.now_utc(),
        source="amihub",
        message_id=mid,
        correlation_id=outcome.message_id,
    )
    return f"{verb}.{outcome.noun}", envelope.render_event(header, content), mid
