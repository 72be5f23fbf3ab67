"""The hub pipeline: raw input in, a rendered reply out, every step recorded.

::

    InboundMessage -> size check -> parse (hardened) -> validate (XSD)
        -> header -> idempotency (source, MessageID) -> route (verb, noun)
        -> translator -> commands -> bus -> handlers -> reply
    permanent failure -> FAILED reply + dead letter (input kept whole)
    recoverable failure -> lifecycle "retry", the exception goes back to the adapter

Small messages (up to ``limits.tree_limit_bytes``) are parsed as a tree, so a
schema error names the exact xpath; larger inputs (files) stream through
``iterparse`` with the schema attached and bounded memory. The effect, the
stored reply and the lifecycle steps commit in one transaction: a message is
applied once or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, cast
from urllib.parse import urlsplit

from lxml import etree

from cim_schemas import envelope, schemas
from cim_schemas.envelope import Header, Reply, Style
from cim_schemas.errors import (
    AmihubError,
    ErrorDetail,
    HeaderInvalid,
    InputTooLarge,
    MessageRejected,
    NotAnEnvelope,
    RecoverableError,
    ReplayConflict,
    SchemaInvalid,
    UnknownMapping,
    UnsupportedOperation,
)
from cim_schemas.namespaces import DRAFT_MESSAGE_NS
from cim_schemas.xml import LimitedReader, iterparse, parse_bytes, pull_events
from cim_schemas.xml import content_hash as content_hash_of
from hub.bus import MessageBus
from hub.forwarding import EventForwarder
from hub.journal import DEAD_LETTER_BODY_LIMIT, MessageJournal
from hub.lifecycle import LifecycleRecorder
from hub.lifecycle import MessageLifecycle as S
from hub.messages import InboundMessage, Outcome
from hub.metrics import observe_message
from hub.replies import SPOOL_MEMORY_BYTES, ReplySpool
from hub.reply_templates import ReplyTemplates
from hub.routing import (
    BatchRoute,
    MessageFrame,
    ReplyWriterRoute,
    RouteContext,
    RouteResult,
    RouteTable,
    XmlEvents,
)
from hub.settings import LimitSettings
from hub.variants import VARIANT
from mdm.handlers import HandlerContext
from mdm.ports import (
    AnsweredMessage,
    AppliedMessage,
    MessageConclusion,
    UnitOfWork,
    UnitOfWorkFactory,
)
from mdm.vee.ingest import ingest_source

log = logging.getLogger("amihub.pipeline")

DRAFT_NS_BYTES = DRAFT_MESSAGE_NS.encode()

__all__ = ["DEAD_LETTER_BODY_LIMIT", "BatchPlan", "Pipeline"]

#: a message is tried on the read path when its Verb, in the first bytes, says get
_GET_HINT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Verb>\s*get\s*</")
_HINT_BYTES = 8192


@dataclass
class _Seen:
    """What parsing learnt before a failure: the reply to a refusal echoes it."""

    header: Header | None = None
    style: Style = "envelope"
    namespace: str | None = None


def _variant_of(msg: InboundMessage) -> str | None:
    """The CIM variant of the input: named by the adapter, else by the sender's settings."""
    named = msg.metadata.get(VARIANT)
    if named:
        return named
    return msg.principal.cim_variant if msg.principal is not None else None


#: a batch member: its index in the batch, frame, what its route prepared, the route
_Member = tuple[int, MessageFrame, object, BatchRoute]


@dataclass(frozen=True)
class BatchPlan:
    """A batch prepared without IO (:meth:`Pipeline.prepare_batch`), to be applied."""

    msgs: list[InboundMessage]
    #: per message: the size limit that applies and the content hash
    measured: list[tuple[int, str]]
    #: (route, utility) -> the members applied together
    groups: dict[tuple[int, str], list[_Member]]


def _header_fields(header: Header | None) -> dict[str, Any]:
    """What an Outcome repeats of the request's Header (nothing without one)."""
    if header is None:
        return {}
    return {
        "verb": header.verb,
        "noun": header.noun,
        "message_id": header.message_id,
        "correlation_id": header.message_id,
        "reply_address": header.reply_address,
        "async_reply": bool(header.async_reply_flag),
    }


def _with_transport_id(frame: MessageFrame, msg: InboundMessage) -> MessageFrame:
    """A Header without MessageID takes the transport's message id (idempotency key)."""
    if frame.header.message_id or not msg.message_id:
        return frame
    header = dataclasses.replace(frame.header, message_id=msg.message_id)
    return dataclasses.replace(frame, header=header)


class Pipeline:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        bus: MessageBus,
        routes: RouteTable,
        limits: LimitSettings,
        default_utility: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        forwarder: EventForwarder | None = None,
        journal: MessageJournal | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        #: the one writer of the message log, lifecycle, dead letters and audit
        self.journal = journal or MessageJournal(uow_factory, clock)
        #: accepted inbound events go on to their subscribers, in the effect's transaction
        self.forwarder = forwarder or EventForwarder()
        self.bus = bus
        self.routes = routes
        self.limits = limits
        self.default_utility = default_utility
        self.clock = clock
        self._batch_routes: dict[int, bool] = {}
        self._writer_routes: dict[int, bool] = {}
        #: utility code -> id; utilities are never deleted or renamed, so a hit stays true
        self._utility_ids: dict[str, int] = {}
        #: CIM variant name -> normaliser of a parsed tree (hub/variants.py); None: none
        self.variants: Callable[[str], Callable[[etree._ElementTree], int]] | None = None
        #: read-path replies up to this size are kept in memory, larger ones in a temp file
        self.reply_memory_bytes = SPOOL_MEMORY_BYTES

    # -- entry point -------------------------------------------------------------------

    def process(self, msg: InboundMessage) -> Outcome:
        started = time.perf_counter()
        outcome: Outcome | None = None
        try:
            outcome = self._process(msg)
            return outcome
        finally:
            observe_message(msg, outcome, time.perf_counter() - started)

    def _process(self, msg: InboundMessage) -> Outcome:
        limit, content_hash = self._measure(msg)
        frame = self._frame_of_read(msg, limit)
        if frame is not None:
            answered = self._answer_read(msg, frame, content_hash)
            if answered is not None:
                return answered
        steps = self.journal.begin(msg, content_hash)
        return self._run(msg, steps, limit, content_hash, frame)

    # -- the read path -----------------------------------------------------------------

    def _frame_of_read(self, msg: InboundMessage, limit: int) -> MessageFrame | None:
        """The parsed (and validated) frame of a small message whose Header looks like a
        get, else None. Any refusal is left to the full path, which records it."""
        body = msg.body
        if body is None or msg.replay_of is not None or _variant_of(msg):
            return None
        if msg.size > min(limit, self.limits.tree_limit_bytes):
            return None
        if _GET_HINT.search(body, 0, _HINT_BYTES) is None:
            return None
        try:
            return _with_transport_id(self._parse_tree(body), msg)
        except AmihubError:
            return None

    def _reply_writer(self, header: Header) -> ReplyWriterRoute | None:
        try:
            route = self.routes.get(header.verb, header.noun)
        except AmihubError:
            return None
        known = self._writer_routes.get(id(route))
        if known is None:
            known = self._writer_routes[id(route)] = isinstance(route, ReplyWriterRoute)
        return cast(ReplyWriterRoute, route) if known else None

    def _answer_read(
        self, msg: InboundMessage, frame: MessageFrame, content_hash: str
    ) -> Outcome | None:
        """A get answered in one short transaction: the route writes the reply into a
        spool while the store streams the rows, then the message log gets one finished
        row with its whole lifecycle (one statement) and the transaction commits --
        before the reply is handed back, so every answered get is on record. A get
        changes nothing: no idempotency lookup, no stored reply (its digest instead).
        None (nothing written) when the message is not such a get or anything fails:
        the full path then processes it and records the refusal, exactly as before."""
        header = frame.header
        if header.verb != "get" or (header.async_reply_flag and header.reply_address):
            return None
        principal = msg.principal
        if principal is not None and not principal.may(header.verb, header.noun):
            return None
        if msg.operation is not None and msg.operation != (header.verb, header.noun):
            return None  # refused by the full path (1006)
        route = self._reply_writer(header)
        if route is None:
            return None
        validated_at = self.clock()
        utility_code = self._utility(msg)
        spool = ReplySpool(self.reply_memory_bytes)
        try:
            with self.uow_factory() as uow:
                utility_id = self._utility_ids.get(utility_code)
                if utility_id is None:
                    utility = uow.utilities.get(utility_code)
                    if utility is None or utility.id is None:
                        spool.close()
                        return None
                    utility_id = self._utility_ids[utility_code] = utility.id
                dispatched_at = self.clock()
                ctx = RouteContext(
                    utility_id=utility_id,
                    utility_code=utility_code,
                    handler=HandlerContext(msg.source, dispatched_at, ingest_source(msg.endpoint)),
                    bus=self.bus,
                )
                result = route.write_reply(cast(IO[bytes], spool), frame, ctx, uow)
                replied = f"{result.result}; reply of {spool.size} bytes, {spool.digest}"
                log_id = self.journal.record_answered(
                    uow,
                    AnsweredMessage(
                        source=msg.source,
                        endpoint=msg.endpoint,
                        content_hash=content_hash,
                        size=msg.size,
                        received_at=msg.received_at,
                        message_id=header.message_id,
                        verb=header.verb,
                        noun=header.noun,
                        correlation_id=header.correlation_id,
                        result=result.result,
                        steps=(
                            (S.RECEIVED, msg.received_at, None),
                            (S.VALIDATED, validated_at, None),
                            (S.DISPATCHED, dispatched_at, f"{header.verb} {header.noun}"),
                            (S.REPLIED, self.clock(), replied),
                        ),
                    ),
                )
                uow.commit()
        except AmihubError as exc:  # a refusal or a store failure: the full path records it
            spool.close()
            log.info(
                "get %s %s: %s; processed by the full path", header.noun, header.message_id, exc
            )
            return None
        except Exception:  # a bug on the read path: say so, and answer on the full path
            spool.close()
            log.exception(
                "get %s %s failed on the read path; processed by the full path",
                header.noun,
                header.message_id,
            )
            return None
        outcome = Outcome(
            result=result.result,
            reply=b"",
            errors=result.errors,
            message_log_id=log_id,
            counts=result.counts,
            **_header_fields(header),
        )
        if msg.stream_reply and not spool.in_memory:
            outcome.reply_chunks, outcome.reply_size = spool.chunks(), spool.size
        else:
            outcome.reply = spool.getvalue()
        self._log_outcome(msg, outcome, result)
        return outcome

    def _measure(self, msg: InboundMessage) -> tuple[int, str]:
        """The size limit that applies, and the content hash (of the head, when oversize)."""
        limit = self.limits.max_file_bytes if msg.path else self.limits.max_message_bytes
        # an oversize input is refused unread: its hash covers the head it is kept by
        content_hash = (
            msg.content_hash()
            if msg.size <= limit
            else content_hash_of(msg.head(DEAD_LETTER_BODY_LIMIT)[0])
        )
        return limit, content_hash

    def _run(
        self,
        msg: InboundMessage,
        steps: LifecycleRecorder,
        limit: int,
        content_hash: str,
        frame: MessageFrame | None = None,
    ) -> Outcome:
        """Everything after the message log row exists; never raises but RecoverableError.
        ``frame``: the message already parsed and validated (the read path's try)."""
        size, log_id = msg.size, steps.log_id
        seen = _Seen()
        try:
            if size > limit:
                raise InputTooLarge(f"input of {size} bytes exceeds the limit of {limit} bytes")
            if frame is not None:
                seen.header, seen.style = frame.header, frame.style
                seen.namespace = frame.namespace
                return self._dispatch(msg, frame, steps, content_hash)
            return self._attempt(msg, limit, steps, content_hash, seen)
        except MessageRejected as exc:
            return self._reject(
                msg, steps, exc.errors, seen.header, seen.style, exc, seen.namespace
            )
        except RecoverableError:
            self._retry(steps)
            raise
        except AmihubError as exc:
            detail = ErrorDetail("3002", f"{type(exc).__name__}: {exc}")
            return self._reject(msg, steps, [detail], seen.header, seen.style, exc, seen.namespace)
        except Exception as exc:
            log.exception("internal error on message log %s from %s", log_id, msg.source)
            detail = ErrorDetail(
                "3002",
                f"internal error ({type(exc).__name__}); "
                "the input is kept in the dead-letter store",
            )
            return self._reject(msg, steps, [detail], seen.header, seen.style, exc, seen.namespace)

    def _attempt(
        self,
        msg: InboundMessage,
        limit: int,
        steps: LifecycleRecorder,
        content_hash: str,
        seen: _Seen,
    ) -> Outcome:
        variant = _variant_of(msg)
        with msg.open() as raw:
            reader = LimitedReader(raw, limit)
            if msg.size <= self.limits.tree_limit_bytes:
                frame = self._parse_tree(reader.read_all(), variant)
            elif variant:
                raise InputTooLarge(
                    f"a message in CIM variant {variant!r} is normalised as a whole tree: "
                    f"{msg.size} bytes exceed limits.tree_limit_bytes "
                    f"({self.limits.tree_limit_bytes})"
                )
            else:
                frame = self._parse_stream(reader)
                frame = dataclasses.replace(frame, reread=lambda: self._reread(msg, limit))
            frame = _with_transport_id(frame, msg)
            seen.header, seen.style = frame.header, frame.style
            seen.namespace = frame.namespace
            return self._dispatch(msg, frame, steps, content_hash)

    def _reread(self, msg: InboundMessage, limit: int) -> XmlEvents:
        """A streamed input's events again, from a fresh reading of it (the store may
        read a feed twice); the input is closed when they end."""
        with msg.open() as raw:
            events = self._parse_stream(LimitedReader(raw, limit)).events
            assert events is not None
            yield from events

    # -- parsing -------------------------------------------------------------------------

    def _parse_tree(self, data: bytes, variant: str | None = None) -> MessageFrame:
        tree = parse_bytes(data, max_bytes=self.limits.max_message_bytes)
        if variant:  # the sender's deviations from the standard undone first
            if self.variants is None:
                raise UnknownMapping(f"CIM variant {variant!r} named, but none are configured")
            self.variants(variant)(tree)
        root_name = etree.QName(tree.getroot()).localname
        if envelope.message_style(tree.getroot()) is None:
            raise NotAnEnvelope(
                f"root element {root_name} is not an IEC 61968-100 message "
                "or a 61968-9 message wrapper",
                xpath=f"/{root_name}",
            )
        # rewriting walks every element: only when the draft namespace may be there
        if DRAFT_NS_BYTES in data or data.lstrip()[:1] != b"<":
            schemas.normalise_namespaces(tree)
        problems = schemas.validate(tree)
        if problems:
            errors = [
                ErrorDetail(
                    "1005", p.message, xpath=p.xpath, details=f"line {p.line}" if p.line else None
                )
                for p in problems[:50]
            ]
            raise SchemaInvalid(f"schema invalid: {problems[0].message}", errors=errors)
        parsed = envelope.parse_message(tree.getroot())
        if parsed.kind not in ("request", "event") or parsed.header is None:
            raise NotAnEnvelope(
                f"a {parsed.kind} message is not accepted as input", xpath=f"/{root_name}"
            )
        if parsed.payload is not None:
            wrong = schemas.payload_problems(
                parsed.header.noun, parsed.payload, parsed.payload_xpath
            )
            if wrong:
                raise SchemaInvalid(
                    wrong[0].message,
                    errors=[ErrorDetail("1005", wrong[0].message, xpath=wrong[0].xpath)],
                )
        return MessageFrame(
            header=parsed.header,
            style=parsed.style,
            root_name=root_name,
            request=parsed.request,
            payload=parsed.payload,
            namespace=parsed.namespace if parsed.style == "wrapper" else None,
        )

    def _parse_stream(self, reader: LimitedReader) -> MessageFrame:
        """Read the Header from the first 64 KiB, then stream the whole document with
        the schema attached, delivering only the end events the streaming routes use."""
        root_name: str | None = None
        style: Style | None = None
        namespace: str | None = None
        for event, element in pull_events(reader.peek()):
            if root_name is None:
                root_name = etree.QName(element).localname
                namespace = etree.QName(element).namespace
                style = envelope.message_style(element)
                if style is None:
                    raise NotAnEnvelope(
                        f"root element {root_name} is not an IEC 61968-100 message",
                        xpath=f"/{root_name}",
                    )
            if event == "end" and etree.QName(element).localname == "Header":
                break
        else:
            raise HeaderInvalid(
                "no Header in the first 64 KiB of a message too large to parse whole",
                xpath="/*/Header",
            )
        assert root_name is not None
        assert style is not None
        header = envelope.parse_header(element)
        events = iterparse(
            reader, schema=schemas.message_schema(), events=("end",), tags=self.routes.stream_tags
        )
        return MessageFrame(
            header=header,
            style=style,
            root_name=root_name,
            events=events,
            namespace=namespace if style == "wrapper" else None,
        )

    # -- dispatch ------------------------------------------------------------------------

    def _utility(self, msg: InboundMessage) -> str:
        if msg.principal is not None and msg.principal.utility:
            return msg.principal.utility
        return msg.utility or self.default_utility

    @staticmethod
    def _authorise(msg: InboundMessage, header: Header, *, mapped: bool = False) -> None:
        """The sender may do what the Header says, and the Header says what the transport
        said (a mapped input has no Header of its own: its noun must be the key's)."""
        if mapped:
            if msg.operation is not None and msg.operation[1] != header.noun:
                raise UnsupportedOperation(
                    f"the mapping gives {header.noun} but the message was sent as "
                    f"{'.'.join(msg.operation)}: the routing key must name its noun"
                )
        elif msg.operation is not None and msg.operation != (header.verb, header.noun):
            verb, noun = msg.operation
            raise UnsupportedOperation(
                f"the Header says {header.verb} {header.noun} but the message was sent as "
                f"{verb}.{noun}: the routing key must name the Header's verb and noun",
                xpath="/*/Header/Verb",
            )
        principal = msg.principal
        if principal is not None and not principal.may(header.verb, header.noun):
            raise MessageRejected(
                f"{principal.name} may not {header.verb} {header.noun}",
                code="1010",
                xpath="/*/Header/Verb",
            )
        # amihub calls an http(s) ReplyAddress itself: only the URLs the user is allowed
        # ([[users]] reply_addresses), never one a caller names freely (internal hosts);
        # an sftp:// ReplyAddress names one of the partner's own push targets, which the
        # SFTP adapter's reply route checks ([[sftp.push_targets]] partner)
        address = header.reply_address or ""
        route = msg.async_replies
        scheme = urlsplit(address).scheme
        if (
            principal is not None
            and header.async_reply_flag
            and route is not None
            and scheme in route.schemes
            and scheme in ("http", "https")
            and not principal.may_reply_to(address)
        ):
            raise MessageRejected(
                f"ReplyAddress {address!r} is not among the reply addresses allowed for "
                f"{principal.name} ([[users]] reply_addresses)",
                code="1010",
                xpath="/*/Header/ReplyAddress",
            )

    def _dispatch(
        self,
        msg: InboundMessage,
        frame: MessageFrame,
        steps: LifecycleRecorder,
        content_hash: str,
    ) -> Outcome:
        header = frame.header
        self._authorise(msg, header)
        route = self.routes.get(header.verb, header.noun)
        if frame.events is not None and not route.streaming:
            raise InputTooLarge(
                f"{header.verb} {header.noun} messages are limited to "
                f"{self.limits.tree_limit_bytes} bytes",
                xpath="/*/Payload",
            )
        utility_code = self._utility(msg)
        exchanged: object = None
        exchange = getattr(route, "exchange", None)
        if exchange is not None:  # an ExchangingRoute: no transaction open meanwhile
            with self.uow_factory() as uow:
                duplicate, utility_id = self._earlier_or_utility(
                    uow, msg, header, steps, content_hash, utility_code
                )
            if duplicate is not None:
                return duplicate
            exchanged = exchange(
                frame,
                RouteContext(
                    utility_id,
                    utility_code,
                    HandlerContext(msg.source, self.clock(), ingest_source(msg.endpoint)),
                    self.bus,
                ),
            )
        with self.uow_factory() as uow:
            duplicate, utility_id = self._earlier_or_utility(
                uow, msg, header, steps, content_hash, utility_code
            )
            if duplicate is not None:
                return duplicate
            self.journal.advance(
                uow, steps, (S.VALIDATED, None), (S.DISPATCHED, f"{header.verb} {header.noun}")
            )
            ctx = RouteContext(
                utility_id=utility_id,
                utility_code=utility_code,
                handler=HandlerContext(msg.source, self.clock(), ingest_source(msg.endpoint)),
                bus=self.bus,
                exchanged=exchanged,
            )
            result = route.handle(frame, ctx, uow)
            outcome, conclusion = self._conclude(uow, msg, frame, steps, result)
            self.journal.conclude(uow, [conclusion])
            uow.commit()
        self._after_replay(msg, result.result)
        self._log_outcome(msg, outcome, result)
        return outcome

    def _earlier_or_utility(
        self,
        uow: UnitOfWork,
        msg: InboundMessage,
        header: Header,
        steps: LifecycleRecorder,
        content_hash: str,
        utility_code: str,
    ) -> tuple[Outcome | None, int]:
        """The stored reply of a message seen before (its step committed), else the id of
        the message's utility (MessageRejected 1010 when there is none)."""
        duplicate = self._earlier_reply(uow, msg, header, steps, content_hash)
        if duplicate is not None:
            uow.commit()
            return duplicate, 0
        utility = uow.utilities.get(utility_code)
        if utility is None or utility.id is None:
            raise MessageRejected(f"unknown utility {utility_code!r}", code="1010")
        return None, utility.id

    def _conclude(
        self,
        uow: UnitOfWork,
        msg: InboundMessage,
        frame: MessageFrame,
        steps: LifecycleRecorder,
        result: RouteResult,
    ) -> tuple[Outcome, MessageConclusion]:
        """Render the reply and keep a dead letter unless OK; the caller writes the
        returned conclusion (MessageID claimed, reply stored, replied) with its batch."""
        header = frame.header
        log_id = steps.log_id
        reply = self._render(
            header, frame.style, result.result, result.errors, result.payload, frame.namespace
        )
        outcome = self._applied_outcome(uow, msg, frame, log_id, result, reply)
        conclusion = MessageConclusion(
            log_id=log_id,
            message_id=header.message_id if msg.replay_of is None else None,
            verb=header.verb,
            noun=header.noun,
            correlation_id=header.correlation_id,
            state=steps.plan(S.REPLIED),
            result=result.result,
            reply=reply,
        )
        return outcome, conclusion

    @staticmethod
    def _queue_async_reply(
        uow: UnitOfWork, msg: InboundMessage, header: Header, reply: bytes
    ) -> bool:
        """With AsyncReplyFlag and a ReplyAddress the adapter serves, the reply goes to
        the outbox in the transaction of the effect: it cannot be lost in between."""
        route = msg.async_replies
        address = header.reply_address or ""
        if route is None or not header.async_reply_flag or not address:
            return False
        if urlsplit(address).scheme not in route.schemes:
            return False
        service = f"Reply{header.noun}"  # IEC 61968-9: service and operation Reply<Noun>
        uow.outbox.enqueue(
            channel=route.channel,
            destination=address,
            verb="reply",
            noun=header.noun,
            body=reply,
            headers={"service": service, "operation": service, "kind": "reply"},
            correlation_id=header.message_id,
        )
        return True

    @staticmethod
    def _log_outcome(msg: InboundMessage, outcome: Outcome, result: RouteResult) -> None:
        log.info(
            "%s %s %s from %s: %s %s",
            outcome.verb,
            outcome.noun,
            outcome.message_id,
            msg.source,
            outcome.result,
            _counts(result),
        )

    def _earlier_reply(
        self,
        uow: UnitOfWork,
        msg: InboundMessage,
        header: Header,
        steps: LifecycleRecorder,
        content_hash: str,
    ) -> Outcome | None:
        """The stored reply when (source, MessageID) was processed before with the same
        content (the caller commits); ReplayConflict when the content differs."""
        if not header.message_id or msg.replay_of is not None:
            return None
        earlier = self.journal.earlier(uow, msg.source, header.message_id)
        if earlier is None or earlier.id == steps.log_id:
            return None
        if earlier.content_hash != content_hash:
            raise ReplayConflict(
                f"MessageID {header.message_id} was received from {msg.source} "
                f"at {earlier.received_at.isoformat()} with different content",
                xpath="/*/Header/MessageID",
            )
        if earlier.reply is None:
            return None
        self.journal.finish(uow, steps, S.DUPLICATE, earlier.result, earlier.reply)
        log.info(
            "duplicate %s %s %s from %s: stored reply returned",
            header.verb,
            header.noun,
            header.message_id,
            msg.source,
        )
        return Outcome(
            result=earlier.result or "OK",
            reply=earlier.reply,
            message_log_id=steps.log_id,
            duplicate=True,
            **_header_fields(header),
        )

    # -- inputs that are not CIM messages --------------------------------------------------

    def process_with(
        self,
        msg: InboundMessage,
        noun: str,
        apply: Callable[[UnitOfWork, IO[bytes], str], RouteResult],
    ) -> Outcome:
        """A body or file in another format (CSV, custom XML through a mapping) with the
        same bookkeeping as a CIM message: message log, size limit, idempotency on the
        transport's message id, the effect and a CIM reply (verb reply, ``noun``) in one
        transaction, dead letters. ``apply(uow, stream, utility)`` writes the effect
        (without committing) and returns the result; it raises MessageRejected (e.g.
        PayloadInvalid with one Error per bad line) to refuse the input whole.
        """
        started = time.perf_counter()
        outcome: Outcome | None = None
        try:
            outcome = self._process_with(msg, noun, apply)
            return outcome
        finally:
            observe_message(msg, outcome, time.perf_counter() - started)

    def _process_with(
        self,
        msg: InboundMessage,
        noun: str,
        apply: Callable[[UnitOfWork, IO[bytes], str], RouteResult],
    ) -> Outcome:
        limit, content_hash = self._measure(msg)
        steps = self.journal.begin(msg, content_hash)
        header = Header(verb="create", noun=noun, message_id=msg.message_id)
        frame = MessageFrame(header=header, style="envelope", root_name="RequestMessage")
        try:
            if msg.size > limit:
                raise InputTooLarge(f"input of {msg.size} bytes exceeds the limit of {limit} bytes")
            self._authorise(msg, header, mapped=True)
            with self.uow_factory() as uow, msg.open() as raw:
                duplicate = self._earlier_reply(uow, msg, header, steps, content_hash)
                if duplicate is not None:
                    uow.commit()
                    return duplicate
                self.journal.advance(
                    uow, steps, (S.VALIDATED, None), (S.DISPATCHED, f"{noun} through a mapping")
                )
                reader = cast(IO[bytes], LimitedReader(raw, limit))
                result = apply(uow, reader, self._utility(msg))
                outcome, conclusion = self._conclude(uow, msg, frame, steps, result)
                self.journal.conclude(uow, [conclusion])
                uow.commit()
            self._log_outcome(msg, outcome, result)
            return outcome
        except MessageRejected as exc:
            steps.rolled_back()
            return self._reject(msg, steps, exc.errors, header, "envelope", exc)
        except RecoverableError:
            self._retry(steps)
            raise
        except AmihubError as exc:
            steps.rolled_back()
            detail = ErrorDetail("3002", f"{type(exc).__name__}: {exc}")
            return self._reject(msg, steps, [detail], header, "envelope", exc)

    # -- many small messages, one transaction ---------------------------------------------

    def process_batch(self, msgs: Sequence[InboundMessage]) -> list[Outcome]:
        """Process several messages with one transaction where their route allows it.

        For streams of small messages (AMQP): messages whose route is a
        :class:`~hub.routing.BatchRoute` (MeterReadings create/created) are applied
        together, one store write and one commit for the batch, each with its own
        reply, lifecycle and dead letter. Everything else (a refusal, a MessageID
        seen before, a replay, another noun, readings repeated across messages) is
        processed one by one, exactly as :meth:`process` does. Outcomes come back
        in the order of ``msgs``. The same as :meth:`apply_batch` of
        :meth:`prepare_batch`.
        """
        return self.apply_batch(self.prepare_batch(msgs))

    def prepare_batch(self, msgs: Sequence[InboundMessage]) -> BatchPlan:
        """The CPU half of :meth:`process_batch`, without IO: content hashes, parse, XSD,
        authorisation, route and the route's ``prepare`` (readings extracted and checked).
        An adapter may prepare the next batch while the previous one is applied."""
        measured = [self._measure(m) for m in msgs]
        groups: dict[tuple[int, str], list[_Member]] = {}
        if len(msgs) >= 2:
            claimed: set[tuple[str, str]] = set()
            for i, msg in enumerate(msgs):
                member = self._batch_member(msg, measured[i][0], claimed)
                if member is not None:
                    frame, prepared, route = member
                    key = (id(route), self._utility(msg))
                    groups.setdefault(key, []).append((i, frame, prepared, route))
        return BatchPlan(list(msgs), measured, groups)

    def apply_batch(self, plan: BatchPlan) -> list[Outcome]:
        """The IO half: each group of batch members in one transaction (message-log rows,
        effect, stored replies, commit); the other messages one by one (:meth:`process`).
        The message-log rows of a batch are written in the transaction of its effect: a
        crash before the commit leaves nothing, and the input (unacknowledged) comes again."""
        msgs = plan.msgs
        outcomes: list[Outcome | None] = [None] * len(msgs)
        for (_, utility_code), group in plan.groups.items():
            started = time.perf_counter()
            done = self._dispatch_batch(group, msgs, plan.measured, utility_code)
            each = (time.perf_counter() - started) / max(1, len(done))
            for i, outcome in done.items():
                outcomes[i] = outcome
                observe_message(msgs[i], outcome, each)
        return [o if o is not None else self.process(msgs[i]) for i, o in enumerate(outcomes)]

    def _batchable(self, route: object) -> bool:
        """isinstance against a runtime protocol costs ~20 us: ask once per route."""
        known = self._batch_routes.get(id(route))
        if known is None:
            known = self._batch_routes[id(route)] = isinstance(route, BatchRoute)
        return known

    def _batch_member(
        self, msg: InboundMessage, limit: int, claimed: set[tuple[str, str]]
    ) -> tuple[MessageFrame, object, BatchRoute] | None:
        """Parse and prepare a message for a batch, or None: it goes one by one."""
        if msg.replay_of is not None or msg.body is None or _variant_of(msg):
            return None
        if msg.size > min(limit, self.limits.tree_limit_bytes):
            return None
        try:
            frame = self._parse_tree(msg.body)
            frame = _with_transport_id(frame, msg)
            self._authorise(msg, frame.header)
            route = self.routes.get(frame.header.verb, frame.header.noun)
            if not self._batchable(route):
                return None
            batch_route = cast(BatchRoute, route)
            prepared = batch_route.prepare(frame)
        except AmihubError:
            return None  # refused: process() says why, with a dead letter
        mid = frame.header.message_id
        if mid is not None:
            if (msg.source, mid) in claimed:
                return None  # the same MessageID twice in a batch: the second is a replay
            claimed.add((msg.source, mid))
        return frame, prepared, batch_route

    def _dispatch_batch(
        self,
        group: list[_Member],
        msgs: Sequence[InboundMessage],
        measured: Sequence[tuple[int, str]],
        utility_code: str,
    ) -> dict[int, Outcome]:
        try:
            return self._apply_batch(group, msgs, measured, utility_code)
        except AmihubError as exc:  # BatchConflict among them
            log.info("batch of %d message(s) goes one by one: %s", len(group), exc)
            return {}

    def _apply_batch(
        self,
        group: list[_Member],
        msgs: Sequence[InboundMessage],
        measured: Sequence[tuple[int, str]],
        utility_code: str,
    ) -> dict[int, Outcome]:
        with self.uow_factory() as uow:
            seen_before = self.journal.earlier_many(
                uow,
                [
                    (msgs[i].source, frame.header.message_id)
                    for i, frame, _, _ in group
                    if frame.header.message_id
                ],
            )
            # seen before: process() returns the stored reply, or refuses a replay conflict
            members = [
                m for m in group if (msgs[m[0]].source, m[1].header.message_id) not in seen_before
            ]
            if not members:
                return {}
            utility_id = self._utility_ids.get(utility_code)
            if utility_id is None:
                utility = uow.utilities.get(utility_code)
                if utility is None or utility.id is None:
                    return {}
                utility_id = self._utility_ids[utility_code] = utility.id
            ctx = RouteContext(
                utility_id=utility_id,
                utility_code=utility_code,
                handler=HandlerContext(
                    msgs[members[0][0]].source,
                    self.clock(),
                    ingest_source(msgs[members[0][0]].endpoint),
                ),
                bus=self.bus,
            )
            route = members[0][3]
            results = route.handle_batch([(f, p) for _, f, p, _ in members], ctx, uow)
            # the message-log rows, whole (replied, MessageID claimed, stored reply), with
            # their lifecycles: one write in the transaction of the effect
            at = self.clock()
            replies = [
                _REPLIES.render(frame.header, frame.style, result.result)
                if not result.errors and result.payload is None and frame.namespace is None
                else self._render(
                    frame.header,
                    frame.style,
                    result.result,
                    result.errors,
                    result.payload,
                    frame.namespace,
                )
                for (_, frame, _, _), result in zip(members, results, strict=True)
            ]
            ids = self.journal.record_applied(
                uow,
                [
                    _applied(msgs[i], measured[i][1], frame.header, result.result, reply, at)
                    for (i, frame, _, _), result, reply in zip(
                        members, results, replies, strict=True
                    )
                ],
            )
            done = {
                i: self._applied_outcome(uow, msgs[i], frame, log_id, result, reply)
                for (i, frame, _, _), result, reply, log_id in zip(
                    members, results, replies, ids, strict=True
                )
            }
            uow.commit()
        for (i, _, _, _), result in zip(members, results, strict=True):
            self._log_outcome(msgs[i], done[i], result)
        return done

    def _applied_outcome(
        self,
        uow: UnitOfWork,
        msg: InboundMessage,
        frame: MessageFrame,
        log_id: int,
        result: RouteResult,
        reply: bytes,
    ) -> Outcome:
        """A processed message's outcome, in the transaction of its effect: its dead
        letter unless OK, its async reply queued, an accepted event forwarded to the
        noun's subscribers (:mod:`hub.forwarding`).

        A get answered PARTIAL/FAILED (an unknown meter) is an answer, not an input to
        fix and replay: only changes are kept as dead letters."""
        header = frame.header
        if result.result != "FAILED":
            self.forwarder.forward(uow, header, frame.payload)
        dead_letter_id = None
        if result.result != "OK" and header.verb != "get":
            dead_letter_id = self._dead_letter(uow, msg, log_id, result.errors)
        return Outcome(
            result=result.result,
            reply=reply,
            errors=result.errors,
            message_log_id=log_id,
            dead_letter_id=dead_letter_id,
            reply_queued=self._queue_async_reply(uow, msg, header, reply),
            counts=result.counts,
            **_header_fields(header),
        )

    # -- failure paths -------------------------------------------------------------------

    def _reject(
        self,
        msg: InboundMessage,
        steps: LifecycleRecorder,
        errors: list[ErrorDetail],
        header: Header | None,
        style: Style,
        exc: BaseException,
        namespace: str | None = None,
    ) -> Outcome:
        log_id = steps.log_id
        reply = self._render(header, style, "FAILED", errors, None, namespace)
        with self.uow_factory() as uow:
            if (
                header is not None
                and header.message_id
                and msg.replay_of is None
                and not isinstance(exc, ReplayConflict)
                and self.journal.earlier(uow, msg.source, header.message_id) is None
            ):
                self.journal.identify(
                    uow, steps, header.message_id, header.verb, header.noun, header.correlation_id
                )
            if errors[0].code == "1010":
                self.journal.audit(
                    uow,
                    msg.source,
                    "refused",
                    f"{header.verb if header else '?'} {header.noun if header else '?'}",
                    header.message_id if header else None,
                    f"{errors[0].reason} (at {msg.endpoint})",
                )
            dead_letter_id = self._dead_letter(uow, msg, log_id, errors)
            self.journal.finish(uow, steps, S.DEAD_LETTERED, "FAILED", reply)
            uow.commit()
        log.warning(
            "refused input from %s at %s (message log %s, dead letter %s): %s %s",
            msg.source,
            msg.endpoint,
            log_id,
            dead_letter_id,
            errors[0].code,
            errors[0].reason,
        )
        return Outcome(
            result="FAILED",
            reply=reply,
            errors=errors,
            message_log_id=log_id,
            dead_letter_id=dead_letter_id,
            **_header_fields(header),
        )

    def _dead_letter(
        self, uow: UnitOfWork, msg: InboundMessage, log_id: int, errors: list[ErrorDetail]
    ) -> int:
        variant = _variant_of(msg)  # a replay (without the sender) normalises it too
        return self.journal.dead_letter(
            uow, msg, log_id, errors, {VARIANT: variant} if variant else None
        )

    def _after_replay(self, msg: InboundMessage, result: str) -> None:
        if msg.replay_of is None:
            return
        self.journal.replayed(msg.replay_of, resolved=result == "OK")

    # -- bookkeeping ---------------------------------------------------------------------

    def _retry(self, steps: LifecycleRecorder) -> None:
        self.journal.retry(steps)

    def _render(
        self,
        header: Header | None,
        style: Style,
        result: str,
        errors: list[ErrorDetail],
        payload: etree._Element | None,
        namespace: str | None = None,
    ) -> bytes:
        """The reply; a wrapper answers in ``namespace``, the request's (else the noun's)."""
        noun = header.noun if header else "Message"
        request_header = header or Header(verb="reply", noun=noun)
        reply = Reply(result=result, errors=tuple(errors))
        return envelope.render_response(
            request_header, reply, payload, style=style, noun=noun, namespace=namespace
        )


def _batch_states() -> tuple[str, str, str]:
    """The steps of a batch member after *received*, checked against the transition table."""
    steps = LifecycleRecorder(0)
    return tuple(str(steps.plan(s).value) for s in (S.VALIDATED, S.DISPATCHED, S.REPLIED))  # type: ignore[return-value]


_VALIDATED, _DISPATCHED, _REPLIED = _batch_states()
#: plain replies of batch members (shared by the pipelines of a process: same output)
_REPLIES = ReplyTemplates()
_RECEIVED = str(S.RECEIVED.value)


def _applied(
    msg: InboundMessage, content_hash: str, header: Header, result: str, reply: bytes, at: datetime
) -> AppliedMessage:
    """The message-log row of a batch member, with its whole lifecycle."""
    return AppliedMessage(
        source=msg.source,
        endpoint=msg.endpoint,
        content_hash=content_hash,
        size=msg.size,
        received_at=msg.received_at,
        message_id=header.message_id if msg.replay_of is None else None,
        verb=header.verb,
        noun=header.noun,
        correlation_id=header.correlation_id,
        result=result,
        reply=reply,
        steps=[
            (_RECEIVED, msg.received_at, None),
            (_VALIDATED, at, None),
            (_DISPATCHED, at, f"{header.verb} {header.noun} (batch)"),
            (_REPLIED, at, result),
        ],
    )


def _counts(result: RouteResult) -> str:
    return " ".join(f"{k}={v}" for k, v in result.counts.items())
