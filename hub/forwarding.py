"""Events out of amihub: the one writer of EventMessages into the outbox.

Whatever leaves amihub as an event is written here, into the outbox, in the
transaction of the effect it tells about, and delivered by the outbox
dispatchers (:mod:`hub.outbox`) after the commit. A process that dies between
the commit and the delivery delivers the event after its restart; a rollback
writes neither the effect nor the event.

Two kinds of event:

* **accepted inbound events**: a partner's ``created``/``changed`` message (a
  CIS sending CreatedMeterReadings, a system sending CreatedEndDeviceEvents),
  once applied, goes on to the SOAP subscribers of its noun (``[soap]
  subscribers.<Noun>``, service ``Send<Noun>``). The pipeline calls
  :meth:`EventForwarder.forward` from its conclusion, whatever adapter the message
  came through (SOAP, AMQP, SFTP, the command line); a duplicate is answered from
  the message log and forwards nothing again.
* **events amihub raises itself**: what the head-end read, meter events and
  control outcomes (:mod:`hub.headend`), as ``created <Noun>`` to the AMQP events
  exchange (``[amqp] enabled`` and ``outbox``) and to the SOAP subscribers:
  :meth:`EventForwarder.raise_created`.

Requests that arrived over AMQP additionally get their event on the AMQP events
exchange from the AMQP adapter, published with the reply before the request is
acknowledged (``adapters/amqp/events.py``): a crash before the acknowledgement
redelivers the request, which is answered from the message log and published
again, so that path cannot lose an event either.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from lxml import etree

from cim_schemas import envelope
from cim_schemas.envelope import Header
from hub.settings import Settings
from mdm.ports import UnitOfWork

#: inbound verbs whose accepted messages go on to the noun's subscribers
FORWARDED_VERBS: Final = frozenset({"created", "changed"})


def operation_name(verb: str, noun: str) -> str:
    """IEC 61968-9 operation names: ``created`` + ``MeterReadings`` -> CreatedMeterReadings."""
    return f"{verb[:1].upper()}{verb[1:]}{noun}"


@dataclass(frozen=True)
class EventForwarder:
    """Writes events into the outbox in the caller's transaction (see the module text)."""

    #: noun -> SOAP subscriber URLs (Send<Noun>)
    soap_subscribers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: amihub's own events also go to the AMQP events exchange
    amqp: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> EventForwarder:
        return cls(
            soap_subscribers={
                noun: tuple(urls) for noun, urls in settings.soap.subscribers.items() if urls
            },
            amqp=settings.amqp.enabled and settings.amqp.outbox,
        )

    def subscribers(self, noun: str) -> tuple[str, ...]:
        return self.soap_subscribers.get(noun, ())

    def forward(self, uow: UnitOfWork, header: Header, payload: etree._Element | None) -> int:
        """An accepted inbound event to the SOAP subscribers of its noun; returns the
        outbox items written. Only ``created``/``changed`` messages with a payload."""
        if header.verb not in FORWARDED_VERBS or payload is None:
            return 0
        urls = self.subscribers(header.noun)
        if not urls:
            return 0
        event_header = _header(header.verb, header.noun, correlation_id=header.message_id)
        body = envelope.render_event(event_header, copy.deepcopy(payload), style="wrapper")
        service = f"Send{header.noun}"
        for url in urls:
            uow.outbox.enqueue(
                channel="soap",
                destination=url,
                verb=header.verb,
                noun=header.noun,
                body=body,
                headers={
                    "service": service,
                    "operation": operation_name(header.verb, header.noun),
                    "kind": "event",
                },
                correlation_id=event_header.message_id,
            )
        return len(urls)

    def raise_created(
        self,
        uow: UnitOfWork,
        noun: str,
        payload: Callable[[], etree._Element],
        *,
        amqp_destination: str,
        soap_service: str,
        correlation_id: str | None,
    ) -> int:
        """One ``created <noun>`` EventMessage of amihub's own, for the AMQP events
        exchange and each SOAP subscriber (one Header: the same MessageID on every
        channel); returns the outbox items written."""
        urls = self.subscribers(noun)
        if not self.amqp and not urls:
            return 0
        header = _header("created", noun, correlation_id=correlation_id)
        written = 0
        if self.amqp:
            uow.outbox.enqueue(
                channel="amqp",
                destination=amqp_destination,
                verb="created",
                noun=noun,
                body=envelope.render_event(header, payload()),
                headers={"kind": "event"},
                correlation_id=correlation_id,
            )
            written += 1
        for url in urls:
            uow.outbox.enqueue(
                channel="soap",
                destination=url,
                verb="created",
                noun=noun,
                body=envelope.render_event(header, payload(), style="wrapper"),
                headers={
                    "service": soap_service,
                    "operation": operation_name("created", noun),
                    "kind": "event",
                },
                correlation_id=correlation_id,
            )
            written += 1
        return written

    def raises(self, noun: str) -> bool:
        """Whether an event of amihub's own about ``noun`` goes anywhere."""
        return self.amqp or bool(self.subscribers(noun))


def _header(verb: str, noun: str, *, correlation_id: str | None) -> Header:
    return Header(
        verb=verb,
        noun=noun,
        timestamp=envelope.now_utc(),
        source="amihub",
        message_id=envelope.new_message_id(),
        correlation_id=correlation_id,
    )
