# mypy: disable-error-code="no-untyped-call"
"""The request consumer: deliveries in batches, the pipeline, replies and dead letters, then acks.

One round (a *batch*: up to ``batch_size`` deliveries, or what arrived within
``batch_wait``)::

    deliveries -> sender (user_id / amihub-partner) -> checks before the pipeline:
                    spoofed partner (1010), routing key (1006), amihub-mapping (1008/1011),
                    too many deliveries (poison)
               -> Pipeline.process_batch (or process, one by one): effect + stored reply
                  committed before it returns; RecoverableError -> retry
               -> publish, one batch of publisher confirms:
                    replies to reply_to (correlation_id = the request's message id),
                    dead letters to the dead-letter exchange (headers say why),
                    retries (a copy with amihub-attempts + 1, after a backoff)
               -> ack every delivery whose publishes are confirmed

Nothing is acknowledged before its effect is committed and its reply and dead
letter are confirmed. A crash or a lost connection anywhere in between leaves
the delivery unacknowledged: the broker delivers it again and the pipeline's
idempotency on (source, MessageID) returns the stored reply without applying
anything twice, so replies are at-least-once with the same message id.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kombu.connection import Connection
from kombu.message import Message
from kombu.messaging import Consumer

from adapters.amqp import headers as hdr
from adapters.amqp.connection import Backoff, reconnecting, retry_backoff, safe_url
from adapters.amqp.events import build_event
from adapters.amqp.identity import Sender, SenderResolver
from adapters.amqp.mapping import MappingGate
from adapters.amqp.publisher import ConfirmingPublisher, Outgoing, Unroutable
from adapters.amqp.topology import Topology
from cim_schemas import envelope
from cim_schemas.envelope import Header, Reply
from cim_schemas.errors import ErrorDetail, RecoverableError, StoreUnavailable
from hub.journal import Audited, MessageJournal
from hub.messages import InboundMessage, Outcome
from hub.pipeline import BatchPlan, Pipeline
from hub.settings import AmqpSettings
from mdm.ports import UnitOfWorkFactory

log = logging.getLogger("amihub.amqp")

#: namespace of the reply message ids (uuid5 of source and request id: stable on redelivery)
REPLY_NAMESPACE = uuid.UUID("6f1b7c2e-6a55-4a8e-9d7e-2b0b1c1f7a10")
#: user_id of amihub's retry copies on in-process transports (no broker validates user ids)
IN_PROCESS_USER = "amihub"


@dataclass
class Delivery:
    """One delivered message and what became of it in this round."""

    message: Message
    body: bytes
    headers: dict[str, Any]
    exchange: str
    routing_key: str  # the partner's routing key (kept across amihub's retries)
    attempts: int  # deliveries before this one
    redelivered: bool
    reply_to: str | None
    amqp_message_id: str | None
    received_at: datetime
    sender: Sender | None = None
    inbound: InboundMessage | None = None
    mapping: str | None = None
    refusal: ErrorDetail | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    #: indexes into the round's publishes this delivery's ack waits for
    publishes: list[int] = field(default_factory=list)
    requeue: bool = False

    @property
    def request_id(self) -> str | None:
        """The request's message id: the AMQP property, else the CIM MessageID."""
        if self.amqp_message_id:
            return self.amqp_message_id
        return self.outcome.message_id if self.outcome else None


@dataclass
class _Round:
    """One batch of deliveries on its way: prepared, completed, then settled (acked)."""

    deliveries: list[Delivery]
    #: the plain deliveries prepared by the pipeline (``Pipeline.prepare_batch``) and the plan
    prepared: list[Delivery] = field(default_factory=list)
    plan: BatchPlan | None = None
    #: the completion failed (publisher connection lost): nothing of it is acknowledged
    failure: BaseException | None = None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any) -> int:
    if value is None:  # the usual case: no such header (an exception costs ~0.6 us)
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class AmqpConsumer:
    """Consumes the request queue until :meth:`stop`; reconnects with backoff."""

    def __init__(
        self,
        pipeline: Pipeline,
        uow_factory: UnitOfWorkFactory,
        settings: AmqpSettings,
        senders: SenderResolver,
        mappings: MappingGate,
        operations: Callable[[], Sequence[tuple[str, str]]],
        *,
        name: str = "amqp",
        journal: MessageJournal | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.uow_factory = uow_factory
        #: records the refusals before the pipeline and the deliveries given up
        self.journal = journal or MessageJournal(uow_factory)
        self.settings = settings
        self.senders = senders
        self.mappings = mappings
        self._operations = operations
        self._operation_set: frozenset[tuple[str, str]] = frozenset()
        self.name = name
        self.topology = Topology.from_settings(settings)
        self.publisher = ConfirmingPublisher(settings, name=f"{name}-replies")
        self.stop_event = threading.Event()
        #: set while consuming (tests and health checks wait on it)
        self.consuming = threading.Event()
        self.batch_size = min(settings.batch_size, settings.prefetch)
        self._buffer: list[Message] = []
        self._first_at = 0.0
        self._own_user: str | None = None
        self._ack_multiple = False
        #: the consuming connection while connected (tests close it to simulate a drop)
        self.connection: Connection | None = None
        #: rounds and deliveries handled (for logs and tests)
        self.rounds = 0
        self.handled = 0

    # -- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        reconnecting(
            f"{self.name}-consumer", self.settings, self.stop_event, self._session, self._cleanup
        )

    def _cleanup(self, connection: Connection) -> None:
        self.consuming.clear()
        self.connection = None
        self._buffer.clear()  # unacknowledged: the broker delivers them again
        self.publisher.close()

    def _session(self, connection: Connection, backoff: Backoff) -> None:
        self.connection = connection
        connection.connect()
        # amihub's own broker user: its retry copies name the partner in amihub-partner
        driver = connection.transport.driver_type
        self._own_user = connection.userid if driver == "amqp" else IN_PROCESS_USER
        # virtual transports (memory) ignore basic.ack's multiple flag
        self._ack_multiple = driver == "amqp"
        if self.settings.declare:
            self.topology.declare(connection)
        channel = connection.channel()
        channel.basic_qos(0, self.settings.prefetch, False)
        consumer = Consumer(
            channel,
            queues=[self.topology.request_queue],
            on_message=self._on_message,
            auto_declare=False,
        )
        consumer.consume()
        backoff.reset()
        committer = _Committer(self) if self.overlapped else None
        limit = min(self.settings.batch_size, self.settings.prefetch)
        # overlapping needs the next round's deliveries while one is unacknowledged
        self.batch_size = max(1, min(limit, self.settings.prefetch // 2)) if committer else limit
        self.consuming.set()
        log.info(
            "%s consuming %s on %s (prefetch %d, batch %d%s)",
            self.name,
            self.settings.request_queue,
            safe_url(connection),
            self.settings.prefetch,
            self.batch_size,
            ", next batch prepared while one is stored" if committer else "",
        )
        try:
            self._loop(connection, committer)
            if committer is not None:  # stopping: finish and acknowledge what is in hand
                committer.close()
                self._settle_finished(committer, block=False)
        finally:
            if committer is not None:
                committer.close()  # after a failure: its rounds stay unacknowledged

    @property
    def overlapped(self) -> bool:
        """The pipeline splits a batch into prepare (CPU) and apply (IO), so the next
        batch is prepared in this thread while a committer thread applies the previous."""
        return hasattr(self.pipeline, "prepare_batch") and hasattr(self.pipeline, "apply_batch")

    def _loop(self, connection: Connection, committer: _Committer | None) -> None:
        last_beat = time.monotonic()
        while not self.stop_event.is_set():
            timeout = self.settings.batch_wait if self._buffer else 0.2
            if self._buffer:
                timeout = max(0.0, self._first_at + self.settings.batch_wait - time.monotonic())
            if committer is not None and committer.busy:
                # come back to acknowledge its round; deliveries wake us earlier, and the
                # next round is queued already, so a late ack only delays the broker's refill
                timeout = min(timeout, 0.02)
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=max(timeout, 0.001))
            if committer is not None:
                self._settle_finished(committer, block=False)
            now = time.monotonic()
            # a partial batch goes after batch_wait, but not while the committer has work:
            # the deliveries that trickle in then make a fuller round (a round has a fixed
            # cost: a transaction, a commit, a wait for confirms)
            if self._buffer and (
                len(self._buffer) >= self.batch_size
                or (
                    now >= self._first_at + self.settings.batch_wait
                    and (committer is None or not committer.busy)
                )
            ):
                batch, self._buffer = self._buffer, []
                if committer is None:
                    self.handle(batch)
                else:
                    work = self._begin(batch)
                    while not committer.submit(work, timeout=0.05):
                        # the committer still holds two rounds: acknowledge what it finished
                        self._settle_finished(committer, block=False)
                        if self.settings.heartbeat:
                            connection.heartbeat_check()
            if self.settings.heartbeat and now - last_beat > 1.0:
                connection.heartbeat_check()
                if committer is None:
                    self.publisher.heartbeat_check()
                last_beat = now

    def _settle_finished(self, committer: _Committer, *, block: bool) -> None:
        for work in committer.finished(block=block):
            if work.failure is not None:
                raise work.failure  # the session ends; its unacknowledged rounds come again
            self._settle(work)

    def _on_message(self, message: Message) -> None:
        if not self._buffer:
            self._first_at = time.monotonic()
        self._buffer.append(message)

    # -- one round ---------------------------------------------------------------------------

    def handle(self, messages: Sequence[Message]) -> None:
        """Process a batch of deliveries end to end (public for tests and benchmarks)."""
        work = self._begin(messages)
        self._complete(work)
        self._settle(work)

    def _begin(self, messages: Sequence[Message]) -> _Round:
        """In the consuming thread, without IO: checks, then the pipeline's prepare."""
        received_at = datetime.now(UTC)  # one clock reading for the round's deliveries
        deliveries = [self._delivery(m, received_at) for m in messages]
        for d in deliveries:
            try:
                self._check(d)
            except Exception as exc:  # a bug on one message: retry it, then dead-letter it
                log.exception("%s: unexpected error checking %s", self.name, d.request_id)
                d.error = exc
        work = _Round(deliveries)
        plain = [
            d for d in deliveries if d.refusal is None and d.error is None and d.mapping is None
        ]
        prepare = getattr(self.pipeline, "prepare_batch", None)
        if prepare is not None and len(plain) > 1 and self.overlapped:
            try:
                work.plan = prepare([d.inbound for d in plain])
                work.prepared = plain
            except Exception:  # a bug in the batch path: the single path still works
                log.exception("%s: prepare_batch failed; one by one", self.name)
        return work

    def _complete(self, work: _Round) -> None:
        self._apply(work)
        self._publish(work)

    def _apply(self, work: _Round) -> None:
        """Apply (store, commit) and refusals; the backoff before retries."""
        deliveries = work.deliveries
        self._process([d for d in deliveries if d.refusal is None and d.error is None], work)
        for d in deliveries:
            if d.refusal is not None and d.outcome is None and d.error is None:
                self._refuse(d)
        self._retry_backoff(deliveries)

    def _publish(self, work: _Round) -> None:
        """Publish replies, events, dead letters and retries and wait for their confirms;
        marks the deliveries to requeue. Raises TransportUnavailable when the publisher's
        connection fails (nothing is acked)."""
        deliveries = work.deliveries
        outgoing: list[Outgoing] = []
        for d in deliveries:
            for item in self._publishes(d):
                d.publishes.append(len(outgoing))
                outgoing.append(item)
        failures = self.publisher.publish(outgoing)  # TransportUnavailable: nothing is acked
        for d in deliveries:
            for index in d.publishes:
                error = failures.get(index)
                if error is None:
                    continue
                if isinstance(error, Unroutable) and outgoing[index].exchange == "":
                    # the reply queue does not exist: the reply stays in the message log
                    log.warning("reply to %s for %s dropped: %s", d.reply_to, d.request_id, error)
                else:
                    d.requeue = True

    def _settle(self, work: _Round) -> None:
        """Acknowledge (or requeue) a completed round, in the consuming thread."""
        deliveries = work.deliveries
        if self._ack_multiple and deliveries and not any(d.requeue for d in deliveries):
            # the round is every delivery not yet settled on this channel up to its last
            # (rounds are completed in order): one ack for all
            deliveries[-1].message.ack(multiple=True)
        else:
            for d in deliveries:
                if d.requeue:
                    d.message.requeue()
                else:
                    d.message.ack()
        self.rounds += 1
        self.handled += len(deliveries)

    def _delivery(self, message: Message, received_at: datetime) -> Delivery:
        headers = dict(message.headers or {})
        info = message.delivery_info
        props = message.properties
        routing_key = _text(headers.get(hdr.ROUTING_KEY) or info.get("routing_key") or "")
        attempts = max(_int(headers.get(hdr.ATTEMPTS)), _int(headers.get(hdr.DELIVERY_COUNT)))
        body = message.body if isinstance(message.body, bytes) else _text(message.body).encode()
        d = Delivery(
            message=message,
            body=body,
            headers=headers,
            exchange=_text(headers.get(hdr.ORIGINAL_EXCHANGE) or info.get("exchange") or ""),
            routing_key=routing_key,
            attempts=attempts,
            redelivered=bool(info.get("redelivered")) or attempts > 0,
            reply_to=props.get("reply_to") or None,
            amqp_message_id=props.get("message_id") or None,
            received_at=received_at,
        )
        user_id = props.get("user_id") or None
        d.sender = self.senders.resolve(user_id, headers, own_user=self._own_user)
        return d

    def _check(self, d: Delivery) -> None:
        """Everything decided before the pipeline: identity, routing key, mapping, attempts."""
        assert d.sender is not None
        metadata = {
            "amqp_exchange": d.exchange,
            "amqp_routing_key": d.routing_key,
            "amqp_redelivered": str(d.redelivered).lower(),
            "amqp_attempts": str(d.attempts + 1),
        }
        if d.amqp_message_id:
            metadata["amqp_message_id"] = d.amqp_message_id
        if d.reply_to:
            metadata["amqp_reply_to"] = d.reply_to
        mapping = d.headers.get(hdr.MAPPING)
        if mapping is not None:
            d.mapping = _text(mapping).strip()
            metadata["amqp_mapping"] = d.mapping
        d.inbound = InboundMessage(
            source=d.sender.source,
            endpoint=f"amqp:{self.settings.request_queue}",
            body=d.body,
            received_at=d.received_at,
            metadata=metadata,
            principal=d.sender.principal,
            message_id=d.amqp_message_id,
            operation=self._operation_of(d),
        )
        if d.attempts >= self.settings.max_attempts:
            d.error = RecoverableError(
                f"delivered {d.attempts} time(s) without completing "
                "(the worker failed, crashed or was killed while processing it)"
            )
            return
        if d.sender.refusal is not None:
            d.refusal = ErrorDetail("1010", d.sender.refusal)
            return
        if not self._routing_key_ok(d):
            ops = ", ".join(f"{v}.{n}" for v, n in self._operations())
            d.refusal = ErrorDetail(
                "1006",
                f"routing key {d.routing_key!r} names no supported operation; "
                f"publish with <verb>.<Noun>: {ops}",
            )
            return
        if d.mapping is not None:
            d.refusal = self.mappings.refusal(d.mapping)

    def _operation_of(self, d: Delivery) -> tuple[str, str] | None:
        """(verb, noun) the routing key names, which the Header must repeat (1006 in the
        pipeline): RabbitMQ's topic permissions on the key then limit what a partner may
        do. None for a message sent straight to the queue (its Header alone says)."""
        if d.exchange == "" and d.routing_key in ("", self.settings.request_queue):
            return None
        verb, dot, noun = d.routing_key.partition(".")
        return (verb, noun) if dot else None

    def _routing_key_ok(self, d: Delivery) -> bool:
        if d.exchange == "" and d.routing_key in ("", self.settings.request_queue):
            return True  # sent straight to the queue: the Header alone says what it is
        verb, dot, noun = d.routing_key.partition(".")
        operations = self._operation_set
        if (verb, noun) not in operations:  # routes may have been added since: ask again
            operations = self._operation_set = frozenset(self._operations())
        return bool(dot) and (verb, noun) in operations

    def _process(self, ds: list[Delivery], work: _Round | None = None) -> None:
        plain = [d for d in ds if d.mapping is None]
        batch_fn = getattr(self.pipeline, "process_batch", None)
        plan = work.plan if work is not None else None
        if (batch_fn is not None or plan is not None) and len(plain) > 1:
            try:
                if work is not None and plan is not None:
                    outcomes = self.pipeline.apply_batch(plan)
                    plain = work.prepared
                else:
                    assert batch_fn is not None
                    outcomes = batch_fn([d.inbound for d in plain])
                for d, outcome in zip(plain, outcomes, strict=True):
                    d.outcome = outcome
                plain = []
            except RecoverableError as exc:
                log.warning("batch of %d failed (%s); one by one", len(plain), exc)
            except Exception:  # a bug in the batch path: the single path still works
                log.exception("%s: process_batch failed; one by one", self.name)
                for d in plain:
                    d.outcome = None
        for d in ds:
            if d.outcome is not None:
                continue
            assert d.inbound is not None
            try:
                if d.mapping is not None:
                    d.outcome = self.mappings.run(d.inbound, d.mapping)
                else:
                    d.outcome = self.pipeline.process(d.inbound)
            except RecoverableError as exc:
                d.error = exc
            except Exception as exc:  # the pipeline catches everything else: a bug, retry
                log.exception("%s: unexpected error processing %s", self.name, d.request_id)
                d.error = exc

    # -- refusals and dead letters amihub writes itself ------------------------------------

    def _refuse(self, d: Delivery) -> None:
        """A refusal before the pipeline, journalled: message log (*received* ->
        *dead_lettered*), dead letter with the body, the audit entry for 1010."""
        assert d.refusal is not None
        assert d.inbound is not None
        detail = d.refusal
        reply = _failed_reply(d, detail)
        audited = (
            Audited(d.inbound.source, d.routing_key or "?", d.amqp_message_id)
            if detail.code == "1010"
            else None
        )
        try:
            journalled = self.journal.refuse(d.inbound, [detail], reply=reply, audited=audited)
        except Exception as exc:  # store down (recoverable) or a bug: retry, then give up
            d.error = exc
            return
        d.outcome = Outcome(
            result="FAILED",
            reply=reply,
            errors=[detail],
            message_log_id=journalled.message_log_id,
            dead_letter_id=journalled.dead_letter_id,
            message_id=d.amqp_message_id,
            correlation_id=d.amqp_message_id,
        )

    def _poison(self, d: Delivery) -> Outcome:
        """Gave up after ``max_attempts``: journalled (row and dead letter) if the store
        can take it, else the dead-letter queue alone keeps it (no ids then)."""
        assert d.inbound is not None
        code = "3001" if isinstance(d.error, StoreUnavailable) else "3002"
        detail = ErrorDetail(
            code,
            f"gave up after {d.attempts + 1} delivery attempt(s): "
            f"{type(d.error).__name__}: {d.error}",
        )
        failed = Outcome(result="FAILED", reply=_failed_reply(d, detail), errors=[detail])
        try:
            journalled = self.journal.refuse(d.inbound, [detail], reply=failed.reply)
        except RecoverableError as exc:
            log.error("dead-letter store unavailable (%s): the dead-letter queue keeps it", exc)
            return failed
        failed.message_log_id = journalled.message_log_id
        failed.dead_letter_id = journalled.dead_letter_id
        return failed

    # -- what to publish -------------------------------------------------------------------

    def _retry_backoff(self, deliveries: Sequence[Delivery]) -> None:
        retries = [
            d.attempts + 1
            for d in deliveries
            if d.error is not None and d.attempts + 1 < self.settings.max_attempts
        ]
        if retries:
            attempt = max(retries)
            delay = retry_backoff(self.settings).delay(attempt)
            log.warning(
                "%s: %d message(s) failed recoverably (attempt %d of %d); retry in %.1f s",
                self.name,
                len(retries),
                attempt,
                self.settings.max_attempts,
                delay,
            )
            self.stop_event.wait(delay)

    def _publishes(self, d: Delivery) -> list[Outgoing]:
        items: list[Outgoing] = []
        if d.outcome is not None:
            outcome = d.outcome
            if d.reply_to:
                items.append(self._reply(d, outcome))
            if not outcome.duplicate or d.redelivered:
                event = self._event(d, outcome)
                if event is not None:
                    items.append(event)
            dead = outcome.dead_letter_id is not None or (
                outcome.duplicate and outcome.result == "FAILED" and d.redelivered
            )
            if dead:
                detail = outcome.errors[0] if outcome.errors else ErrorDetail("3002", "failed")
                items.append(self._dead_letter(d, detail, outcome.dead_letter_id, outcome))
            return items
        if d.error is not None:
            if d.attempts + 1 >= self.settings.max_attempts:
                failed = self._poison(d)
                detail = failed.errors[0]
                items.append(self._dead_letter(d, detail, failed.dead_letter_id, failed))
                if d.reply_to:  # the partner learns it was given up
                    items.append(self._reply(d, failed))
            else:
                items.append(self._retry(d))
        return items

    def _event(self, d: Delivery, outcome: Outcome) -> Outgoing | None:
        assert d.sender is not None
        built = build_event(d.body, outcome, d.sender.source, d.request_id)
        if built is None:
            return None
        routing_key, body, message_id = built
        return Outgoing(
            body=body,
            exchange=self.settings.events_exchange,
            routing_key=routing_key,
            headers={hdr.SOURCE: d.sender.source},
            message_id=message_id,
            correlation_id=outcome.message_id,
            type=routing_key,
        )

    def _reply(self, d: Delivery, outcome: Outcome) -> Outgoing:
        assert d.reply_to is not None
        assert d.sender is not None
        request_id = d.request_id
        reply_id = (
            str(uuid.uuid5(REPLY_NAMESPACE, f"{d.sender.source}\n{request_id}"))
            if request_id
            else str(uuid.uuid4())
        )
        hdrs: dict[str, Any] = {hdr.RESULT: outcome.result}
        if outcome.message_log_id is not None:
            hdrs[hdr.MESSAGE_LOG_ID] = outcome.message_log_id
        if outcome.duplicate:
            hdrs[hdr.DUPLICATE] = True
        return Outgoing(
            body=outcome.reply,
            routing_key=d.reply_to,
            headers=hdrs,
            message_id=reply_id,
            correlation_id=request_id,
            mandatory=True,
            type=f"reply.{outcome.noun}" if outcome.noun else "reply",
        )

    def _dead_letter(
        self,
        d: Delivery,
        detail: ErrorDetail,
        dead_letter_id: int | None,
        outcome: Outcome | None,
    ) -> Outgoing:
        assert d.inbound is not None
        hdrs: dict[str, Any] = {
            k: v for k, v in d.headers.items() if k not in (hdr.ATTEMPTS, hdr.ROUTING_KEY)
        }
        hdrs.update(
            {
                hdr.ERROR_CODE: detail.code,
                hdr.ERROR_REASON: detail.reason[:1000],
                hdr.RESULT: outcome.result if outcome else "FAILED",
                hdr.SOURCE: d.inbound.source,
                hdr.ORIGINAL_EXCHANGE: d.exchange,
                hdr.ORIGINAL_ROUTING_KEY: d.routing_key,
                hdr.ORIGINAL_QUEUE: self.settings.request_queue,
                hdr.FAILED_ATTEMPTS: d.attempts + 1,
                hdr.FAILED_AT: datetime.now(UTC).isoformat(),
                hdr.DEAD_LETTER_STORE: "stored" if dead_letter_id is not None else "unavailable",
            }
        )
        if dead_letter_id is not None:
            hdrs[hdr.DEAD_LETTER_ID] = dead_letter_id
        if outcome is not None and outcome.message_log_id is not None:
            hdrs[hdr.MESSAGE_LOG_ID] = outcome.message_log_id
        if d.reply_to:
            hdrs["amihub-reply-to"] = d.reply_to
        return Outgoing(
            body=d.body,
            exchange=self.settings.dead_letter_exchange,
            routing_key=d.routing_key or self.settings.request_queue,
            headers=hdrs,
            message_id=d.amqp_message_id,
            correlation_id=_text(d.message.properties.get("correlation_id") or "") or None,
            content_type=d.message.content_type or "application/octet-stream",
        )

    def _retry(self, d: Delivery) -> Outgoing:
        """A copy for the next attempt; the sender rides along in amihub-partner."""
        assert d.sender is not None
        hdrs = dict(d.headers)
        hdrs[hdr.ATTEMPTS] = d.attempts + 1
        hdrs[hdr.ROUTING_KEY] = d.routing_key
        hdrs[hdr.ORIGINAL_EXCHANGE] = d.exchange
        hdrs[hdr.PARTNER] = d.sender.source  # the copy is amihub's: keep the sender's name
        return Outgoing(
            body=d.body,
            routing_key=self.settings.request_queue,
            headers=hdrs,
            message_id=d.amqp_message_id,
            content_type=d.message.content_type or "application/xml",
            reply_to=d.reply_to,
            user_id=self._own_user,
        )


class _Committer:
    """Completes rounds in order in two threads: one applies (the pipeline's store and
    commit, refusals), the next publishes (replies, events, dead letters) and waits for
    the confirms. The consuming thread prepares the next round meanwhile (parsing is CPU;
    the store and the broker are waits that release the GIL) and acknowledges the
    finished rounds itself: the consuming channel stays in its thread.

    A round is in one stage at a time, each stage holds one and one waits before it; a
    failure (the publisher's connection) fails every later round, so nothing after it
    is acknowledged.
    """

    def __init__(self, consumer: AmqpConsumer) -> None:
        self._consumer = consumer
        self._todo: queue.Queue[_Round | None] = queue.Queue(maxsize=1)
        self._applied: queue.Queue[_Round | None] = queue.Queue(maxsize=1)
        self._done: queue.Queue[_Round] = queue.Queue()
        self._in_hand = 0  # submitted, not yet taken back with finished()
        self._failure: BaseException | None = None
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._stage,
                args=(self._todo, consumer._apply, self._applied.put, None),
                name=f"{consumer.name}-apply",
                daemon=True,
            ),
            threading.Thread(
                target=self._stage,
                args=(self._applied, consumer._publish, self._done.put, consumer.publisher),
                name=f"{consumer.name}-publish",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> bool:
        return self._in_hand > 0

    def submit(self, work: _Round, timeout: float) -> bool:
        try:
            self._todo.put(work, timeout=timeout)
        except queue.Full:
            return False
        self._in_hand += 1
        return True

    def finished(self, *, block: bool = False) -> list[_Round]:
        """The rounds completed since the last call, in order."""
        out: list[_Round] = []
        while self._in_hand > len(out):
            try:
                out.append(self._done.get(block=block and not out, timeout=1.0))
            except queue.Empty:
                break
        self._in_hand -= len(out)
        return out

    def close(self) -> None:
        """Complete what was submitted, then end the threads."""
        if self._closed:
            return
        self._closed = True
        self._todo.put(None)
        for thread in self._threads:
            thread.join()

    def _stage(
        self,
        source: queue.Queue[_Round | None],
        step: Callable[[_Round], None],
        forward: Callable[[Any], None],
        publisher: ConfirmingPublisher | None,
    ) -> None:
        while True:
            try:
                work = source.get(timeout=1.0)
            except queue.Empty:
                if publisher is not None and self._failure is None:
                    publisher.heartbeat_check()
                continue
            if work is None:
                if publisher is None:
                    forward(None)  # the end, to the next stage
                return
            if self._failure is None:
                try:
                    step(work)
                except BaseException as exc:  # raised in the consuming thread when settled
                    self._failure = exc
            work.failure = self._failure
            forward(work)


def _failed_reply(d: Delivery, detail: ErrorDetail) -> bytes:
    noun = d.routing_key.partition(".")[2]
    header = Header(verb="reply", noun=noun if noun.isidentifier() else "Message")
    return envelope.render_response(header, Reply(result="FAILED", errors=(detail,)))
