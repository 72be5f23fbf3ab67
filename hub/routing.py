"""Routes: which translator handles a (verb, noun), and the frame it receives."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol, runtime_checkable

from lxml import etree

from cim_schemas.envelope import Header, RequestInfo, Style
from cim_schemas.errors import ErrorDetail, UnsupportedOperation
from hub.bus import MessageBus
from mdm.handlers import HandlerContext
from mdm.ports import UnitOfWork

XmlEvents = Iterator[tuple[str, etree._Element]]


@dataclass(frozen=True)
class MessageFrame:
    """A parsed message, up to where its route takes over.

    Tree mode: ``payload`` is the profile element (or None) and ``events`` is None.
    Stream mode: ``events`` yields the rest of the document (payload included)
    and ``payload`` is None; only streaming routes accept stream mode.
    ``reread`` (stream mode) parses the input again from the start and yields the
    same events as ``events`` (the file closed when they end), for a store that
    reads a feed twice.
    """

    header: Header
    style: Style
    root_name: str  # local name of the root, for xpaths: RequestMessage, CreatedMeterReadings...
    request: RequestInfo | None = None
    payload: etree._Element | None = None
    events: XmlEvents | None = None
    #: the root's namespace when it is a wrapper: the reply answers in the same one
    #: (GetEndDeviceEvents is accepted in two, docs/soap.md)
    namespace: str | None = None
    reread: Callable[[], XmlEvents] | None = None

    @property
    def payload_xpath(self) -> str:
        return f"/{self.root_name}/Payload/{self.header.noun}"


@dataclass(frozen=True)
class RouteContext:
    utility_id: int
    utility_code: str
    handler: HandlerContext
    bus: MessageBus
    #: what the route's :meth:`ExchangingRoute.exchange` returned (run before the
    #: transaction ``handle`` gets); None for other routes
    exchanged: object = None


@dataclass
class RouteResult:
    errors: list[ErrorDetail] = field(default_factory=list)
    applied: int = 0  # items applied (readings stored, objects created...)
    payload: etree._Element | None = None  # profile element for the reply
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def result(self) -> str:
        if not self.errors:
            return "OK"
        return "PARTIAL" if self.applied else "FAILED"


class Route(Protocol):
    noun: str
    verbs: frozenset[str]
    #: accepts stream mode (files larger than the tree limit); a streaming route also
    #: names the elements whose end events it consumes in ``stream_tags``
    streaming: bool

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult: ...


class ExchangingRoute(Route, Protocol):
    """A route that talks to the outside world (meters, the head-end's engines) before
    its effect is written: the pipeline calls :meth:`exchange` with no transaction of
    its own open, then ``handle`` in the transaction of the effect and the reply, with
    the exchange's result in ``ctx.exchanged``. A duplicate message is answered from
    the message log before ``exchange`` runs."""

    def exchange(self, frame: MessageFrame, ctx: RouteContext) -> object: ...


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            for verb in route.verbs:
                self._routes[(verb, route.noun)] = route

    @property
    def stream_tags(self) -> tuple[str, ...]:
        """The elements streaming routes consume, for a tag-filtered iterparse."""
        routes = {id(r): r for r in self._routes.values()}.values()
        tags = {t for r in routes if r.streaming for t in getattr(r, "stream_tags", ())}
        return tuple(sorted(tags))

    def get(self, verb: str, noun: str) -> Route:
        try:
            return self._routes[(verb, noun)]
        except KeyError:
            known = ", ".join(sorted(f"{v} {n}" for v, n in self._routes))
            raise UnsupportedOperation(
                f"no handler for verb {verb!r} and noun {noun!r}; supported: {known}",
                xpath="/*/Header",
            ) from None

    def operations(self) -> list[tuple[str, str]]:
        return sorted(self._routes)


@runtime_checkable
class BatchRoute(Route, Protocol):
    """A route that can apply several small messages in one store write.

    ``prepare`` checks and extracts one message outside any transaction (raising
    MessageRejected like ``handle`` would); ``handle_batch`` applies prepared
    messages of one utility together and returns one result per message, in order.
    """

    def prepare(self, frame: MessageFrame) -> object: ...

    def handle_batch(
        self, prepared: Sequence[tuple[MessageFrame, object]], ctx: RouteContext, uow: UnitOfWork
    ) -> list[RouteResult]: ...


@runtime_checkable
class ReplyWriterRoute(Route, Protocol):
    """A read route (verb get) that writes its reply itself, incrementally, to ``out``
    (bounded memory); the pipeline's read path uses it (docs/soap.md, Performance).
    The result carries the Result, errors and counts, no payload element."""

    def write_reply(
        self, out: IO[bytes], frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork
    ) -> RouteResult: ...
