"""The SOAP front door: one WSGI application serving every service.

::

    HTTP POST /ws/<Service>
      -> body read up to max_body_bytes (refused while reading: 413 + Fault 1003)
      -> hardened parse of the SOAP envelope (cim_schemas.xml: no DTD, no entities)
      -> authentication: WS-Security UsernameToken (text/digest) or HTTP Basic
         (refused: Fault 1010 + audit entry)
      -> the body element must be an operation of this service, and a soapAction,
         when sent, must name that operation in its last segment (ours
         .../<Service>/<Operation> or other implementations' .../<Noun>/<Operation>;
         else Fault 1006)
      -> hub pipeline (validation, authorisation, idempotency, handlers, reply)
      <- the pipeline's reply inside a SOAP envelope (a large reply of the read path
         streamed from its spool, with its Content-Length), or a SOAP Fault

Every Fault the front door answers itself (before the pipeline) is journalled
(:meth:`hub.journal.MessageJournal.refuse`): a message-log row *received* ->
*dead_lettered* with the Fault as its reply, and a dead letter with the error code
and the request body as read (whole up to the limit; an oversize body refused unread
keeps what was read, flagged truncated). The sender is the authenticated user when
known, else ``soap:<client address>``. What never reaches a worker (slow or
incomplete requests, oversize headers: adapters/soap/front.py, cheroot) is not
journalled: docs/soap.md "What is journalled".

The front door does what a SOAP stack would (the operation is known from the body
element and soapAction; faults are rendered here with the service's own
FaultMessage in ``detail``): spyne is not on the request path any more. It cost
about a third of a meter-day get in CPU, and its request context runs a full
``gc.collect()`` every second, which stalls every worker thread (docs/soap.md,
Performance). Our WSDL and XSD files are served as they are (adapters/soap/wsdl.py).
    GET /ws/<Service>?wsdl   our WSDL file, soap:address rewritten for the caller
    GET /xsd/<path>          our XSDs (the WSDLs import them by relative location)

Faults versus FAILED replies: a message refused *as a whole* (not XML, forbidden
XML, too large, not valid against the XSD -- the Fault's detail names the xpath
--, header invalid, no such operation, replay conflict, not authenticated or not
authorised: codes 1001-1008 and 1010) gets a SOAP Fault whose detail is the
``<Noun>FaultMessage``; so does a store outage (3001, Server: retry). A message
that was processed answers with the ``<Noun>ResponseMessage`` whatever its Result:
OK, PARTIAL, or FAILED with item errors (unknown meter 2001, ...) or "not
implemented yet" (1011). No business logic lives here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from lxml import etree

from adapters.soap.auth import AuthenticationFailed, Authenticator
from adapters.soap.catalogue import SERVICES, Operation, ServiceSpec
from adapters.soap.client import CHANNEL
from adapters.soap.wsdl import WsdlStore
from cim_schemas import envelope
from cim_schemas.envelope import Header, Reply
from cim_schemas.errors import AmihubError, ErrorDetail, MessageRejected, RecoverableError
from cim_schemas.xml import parse_bytes
from hub.journal import Audited, MessageJournal
from hub.messages import InboundMessage, Outcome, ReplyRoute
from hub.pipeline import Pipeline
from hub.security import Principal
from mdm.ports import UnitOfWorkFactory

log = logging.getLogger("amihub.soap")

#: async replies (AsyncReplyFlag + http(s) ReplyAddress) go through the SOAP outbox channel
ASYNC_REPLIES: Final = ReplyRoute(CHANNEL, frozenset({"http", "https"}))
access_log = logging.getLogger("amihub.soap.access")

SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
ENVELOPE_HEAD: Final = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
)
ENVELOPE_TAIL: Final = b"</soapenv:Body></soapenv:Envelope>"
XML_TYPE: Final = "text/xml; charset=utf-8"
#: the answer to a call without (valid HTTP Basic) credentials, with HTTP 401
CHALLENGE: Final = 'Basic realm="amihub"'

#: pipeline error codes answered as a SOAP Fault (the message as a whole was refused).
#: 1006 (no route for the verb and noun) is not among them: the front door has already
#: checked that the operation is one this service publishes, so a missing route means
#: the noun's domain is not built yet, answered as a FAILED ResponseMessage.
FAULT_CODES: Final = frozenset(
    {"1001", "1002", "1003", "1004", "1005", "1007", "1008", "1010", "3001", "3002"}
)

Enqueue = Callable[[str, str, str, str, bytes, dict[str, str], str | None], None]


class SoapFault(Exception):
    """A fault to answer: from the front door (``close``: the request may not have been
    read whole, the connection is closed after the answer) or from the pipeline."""

    def __init__(
        self,
        faultcode: str,
        errors: list[ErrorDetail],
        status: str = "500 Internal Server Error",
        *,
        close: bool = True,
        headers: tuple[tuple[str, str], ...] = (),
        journalled: bool = False,
        audited: Audited | None = None,
    ) -> None:
        super().__init__(errors[0].reason)
        self.faultcode = faultcode
        self.errors = errors
        self.status = status
        self.close = close
        self.headers = headers
        #: the pipeline recorded it already (its own refusal, or a retry)
        self.journalled = journalled
        #: the audit entry journalled with the refusal (a refused sender)
        self.audited = audited


def strip_declaration(xml: bytes) -> bytes:
    if xml.startswith(b"<?xml"):
        end = xml.find(b"?>")
        if end != -1:
            return xml[end + 2 :].lstrip()
    return xml


def fault_detail(
    spec: ServiceSpec | None, errors: list[ErrorDetail], namespace: str | None = None
) -> etree._Element:
    reply = Reply("FAILED", tuple(errors))
    if spec is None:
        return envelope.build_fault_message(reply)
    return envelope.build_fault_message(
        reply, noun=spec.noun, style="wrapper", namespace=namespace or spec.namespace
    )


def render_fault(
    faultcode: str,
    errors: list[ErrorDetail],
    spec: ServiceSpec | None,
    namespace: str | None = None,
) -> bytes:
    """A SOAP 1.1 Fault whose detail is the <Noun>FaultMessage of the service (in the
    request's wrapper namespace when the service accepts more than one)."""
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soapenv": SOAP_ENV})
    body = etree.SubElement(env, f"{{{SOAP_ENV}}}Body")
    fault = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soapenv:{faultcode}"
    first = errors[0]
    text = f"{first.code} {first.reason}"
    if first.xpath:
        text += f" (at {first.xpath})"
    etree.SubElement(fault, "faultstring").text = text
    etree.SubElement(fault, "detail").append(fault_detail(spec, errors, namespace))
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


@dataclass
class _Request:
    """What the front door found out about a call."""

    spec: ServiceSpec
    operation: Operation
    principal: Principal
    body: etree._Element
    remote: str
    soap_action: str

    @property
    def namespace(self) -> str:
        """The wrapper namespace the request used (its answer uses it too)."""
        return etree.QName(self.body).namespace or self.spec.namespace


def _enveloped(chunks: Iterator[bytes]) -> tuple[Iterator[bytes], int]:
    """A streamed reply (XML declaration first) inside the SOAP envelope, and the number
    of bytes it takes from the first chunk's declaration on; the chunks are closed when
    the WSGI server closes the returned iterator or reaches its end."""
    first = next(chunks, b"")
    stripped = strip_declaration(first)

    def body() -> Iterator[bytes]:
        try:
            yield ENVELOPE_HEAD
            yield stripped
            yield from chunks
            yield ENVELOPE_TAIL
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    return body(), len(first) - len(stripped)


class SoapGateway:
    """The WSGI application serving every service of :data:`SERVICES`."""

    def __init__(
        self,
        pipeline: Pipeline,
        uow_factory: UnitOfWorkFactory,
        authenticator: Authenticator,
        *,
        max_body_bytes: int,
        public_url: str | None = None,
        enqueue: Enqueue | None = None,
        services: Iterable[ServiceSpec] | None = None,
        journal: MessageJournal | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.uow_factory = uow_factory
        #: records the refusals of the front door (the pipeline records its own)
        self.journal = journal or MessageJournal(uow_factory)
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        self.public_url = public_url.rstrip("/") if public_url else None
        self.enqueue = enqueue
        self.specs = {s.name: s for s in (services or SERVICES.values())}
        self.wsdl = WsdlStore()

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/xsd/") and method in ("GET", "HEAD"):
            return self._xsd(path[len("/xsd/") :], start_response)
        if not path.startswith("/ws/"):
            return self._plain(start_response, "404 Not Found", self._index())
        name = path[len("/ws/") :].strip("/")
        spec = self.specs.get(name)
        if spec is None:
            return self._plain(
                start_response,
                "404 Not Found",
                f"no service {name!r}; services: {', '.join(self.specs)}\n",
            )
        if method in ("GET", "HEAD"):
            if environ.get("QUERY_STRING", "").lower() in ("wsdl", "wsdl="):
                body = self.wsdl.wsdl(spec, self._base_url(environ))
                return self._send(start_response, "200 OK", body, XML_TYPE)
            return self._plain(
                start_response, "200 OK", f"{spec.name}: POST SOAP 1.1 here; WSDL at ?wsdl\n"
            )
        if method != "POST":
            return self._plain(start_response, "405 Method Not Allowed", "POST or GET ?wsdl\n")
        received_at = datetime.now(UTC)
        try:
            request = self._accept(spec, environ)
            chunks, length = self.invoke(request)
        except SoapFault as fault:
            environ["amihub.soap.fault"] = fault.errors[0].code
            body = render_fault(
                fault.faultcode, fault.errors, spec, environ.get("amihub.soap.namespace")
            )
            if not fault.journalled:
                self._journal_refusal(spec, environ, fault, body, received_at)
            return self._send(
                start_response,
                fault.status,
                body,
                XML_TYPE,
                close=fault.close,
                headers=fault.headers,
            )
        start_response("200 OK", [("Content-Type", XML_TYPE), ("Content-Length", str(length))])
        return chunks

    def _accept(self, spec: ServiceSpec, environ: dict[str, Any]) -> _Request:
        remote = str(environ.get("REMOTE_ADDR", "?"))
        data = self._read_body(environ)
        environ["amihub.soap.body"] = data
        try:
            tree = parse_bytes(data, max_bytes=self.max_body_bytes)
        except MessageRejected as exc:
            log.warning("refused input at /ws/%s from %s: %s", spec.name, remote, exc)
            raise SoapFault("Client", exc.errors) from None
        root = tree.getroot()
        if root.tag != f"{{{SOAP_ENV}}}Envelope":
            raise SoapFault(
                "Client",
                [
                    ErrorDetail(
                        "1004",
                        f"{etree.QName(root).localname} is not a SOAP 1.1 Envelope",
                        xpath=f"/{etree.QName(root).localname}",
                    )
                ],
            )
        header_el = root.find(f"{{{SOAP_ENV}}}Header")
        body_el = root.find(f"{{{SOAP_ENV}}}Body")
        children = [c for c in body_el if isinstance(c.tag, str)] if body_el is not None else []
        if len(children) != 1:
            raise SoapFault(
                "Client",
                [
                    ErrorDetail(
                        "1004",
                        "the SOAP Body must hold exactly one element",
                        xpath="/Envelope/Body",
                    )
                ],
            )
        try:
            principal = self.authenticator.authenticate(
                header_el, environ.get("HTTP_AUTHORIZATION")
            )
        except AuthenticationFailed as exc:
            log.warning(
                "refused call to /ws/%s by %s: %s", spec.name, exc.user or remote, exc.reason
            )
            audited = Audited(
                exc.user or remote,
                "soap",
                f"/ws/{spec.name}",
                details=f"{exc.reason} (from {remote})",
            )
            if exc.challenge:  # no credentials, or refused HTTP Basic ones: ask for them
                raise SoapFault(
                    "Client",
                    [ErrorDetail("1010", exc.reason)],
                    "401 Unauthorized",
                    close=False,
                    headers=(("WWW-Authenticate", CHALLENGE),),
                    audited=audited,
                ) from None
            raise SoapFault("Client", [ErrorDetail("1010", exc.reason)], audited=audited) from None
        environ["amihub.user"] = principal.name
        body = children[0]
        operation = spec.operation_for(body.tag)
        if operation is not None:  # faults answer in the namespace the request used
            environ["amihub.soap.namespace"] = etree.QName(body).namespace
        if operation is None:
            local = etree.QName(body).localname
            raise SoapFault(
                "Client",
                [
                    ErrorDetail(
                        "1006",
                        f"{{{etree.QName(body).namespace}}}{local} is not an operation of "
                        f"{spec.name}; its operations take "
                        + ", ".join(f"{{{spec.namespace}}}{op.input}" for op in spec.operations),
                        xpath=f"/Envelope/Body/{local}",
                    )
                ],
            )
        action = str(environ.get("HTTP_SOAPACTION", "")).strip().strip('"')
        if action and not spec.accepts_soap_action(operation.name, action):
            raise SoapFault(
                "Client",
                [
                    ErrorDetail(
                        "1006",
                        f"soapAction {action!r} does not match the operation "
                        f"{operation.name}, whose soapAction is "
                        f"{spec.soap_action(operation.name)!r} (or any whose last segment "
                        f"is {operation.name})",
                    )
                ],
            )
        return _Request(spec, operation, principal, body, remote, action)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = self.max_body_bytes
        stream = environ["wsgi.input"]
        length_text = environ.get("CONTENT_LENGTH") or ""
        too_large = SoapFault(
            "Client",
            [ErrorDetail("1003", f"the request body exceeds the limit of {limit} bytes")],
            status="413 Request Entity Too Large",
        )
        if length_text.strip():
            try:
                length = int(length_text)
            except ValueError:
                length = -1
            if length < 0:  # cheroot hands a negative one on: it would read to the end
                raise SoapFault(
                    "Client",
                    [ErrorDetail("1001", f"bad Content-Length {length_text[:40]!r}")],
                    status="400 Bad Request",
                )
            if length > limit:
                environ["amihub.soap.declared"] = length
                raise too_large  # refused unread
            data = bytes(stream.read(length))
            if len(data) != length:
                environ["amihub.soap.body"] = data
                environ["amihub.soap.declared"] = length
                raise SoapFault("Client", [ErrorDetail("1001", "the request body ended early")])
            return data
        chunks: list[bytes] = []  # chunked transfer: count while reading
        size = 0
        while chunk := stream.read(65536):
            size += len(chunk)
            chunks.append(bytes(chunk))
            if size > limit:  # the head read is kept; the rest is not read
                environ["amihub.soap.body"] = b"".join(chunks)
                environ["amihub.soap.declared"] = size + 1  # at least: more was sent
                raise too_large
        return b"".join(chunks)

    # -- the call --------------------------------------------------------------------------

    def invoke(self, request: _Request) -> tuple[Iterable[bytes], int]:
        """Hand the body to the pipeline; the SOAP envelope of its answer and its length
        (or SoapFault)."""
        spec = request.spec
        body = etree.tostring(request.body)
        message = InboundMessage(
            source=request.principal.name,
            endpoint=f"soap:/ws/{spec.name}",
            body=body,
            principal=request.principal,
            metadata={"remote": request.remote, "operation": request.operation.name},
            async_replies=ASYNC_REPLIES if self.enqueue is not None else None,
            stream_reply=True,
        )
        try:
            outcome = self.pipeline.process(message)
        except RecoverableError as exc:
            log.warning("recoverable failure at /ws/%s: %s", spec.name, exc)
            raise SoapFault(
                "Server",
                [ErrorDetail("3001", f"{exc}; try again later")],
                close=False,
                journalled=True,  # the pipeline recorded the retry
            ) from None
        if outcome.reply_chunks is not None:  # a large answer of the read path
            chunks, declaration = _enveloped(outcome.reply_chunks)
            return chunks, len(ENVELOPE_HEAD) + outcome.reply_size - declaration + len(
                ENVELOPE_TAIL
            )
        if outcome.result == "FAILED" and outcome.errors and outcome.errors[0].code in FAULT_CODES:
            faultcode = "Server" if outcome.errors[0].code.startswith("3") else "Client"
            raise SoapFault(faultcode, outcome.errors, close=False, journalled=True)
        reply = outcome.reply
        if outcome.reply_queued:  # queued with the effect, in the pipeline's transaction
            reply = self._acknowledgement(spec, outcome, request.namespace)
        elif outcome.async_reply and outcome.reply_address and self.enqueue is not None:
            # a duplicate request: its stored reply again
            reply = self._async(spec, outcome, request.namespace)
        parts = [ENVELOPE_HEAD, strip_declaration(reply), ENVELOPE_TAIL]
        return parts, sum(len(p) for p in parts)

    def _async(self, spec: ServiceSpec, outcome: Outcome, namespace: str) -> bytes:
        """Queue the real reply for Reply<Noun> at ReplyAddress; answer an acknowledgement."""
        address = outcome.reply_address or ""
        noun = outcome.noun or spec.noun
        if urlsplit(address).scheme not in ("http", "https"):
            log.warning("ReplyAddress %r is not an http(s) URL: answering synchronously", address)
            return outcome.reply
        assert self.enqueue is not None
        service = f"Reply{noun}"
        self.enqueue(
            address,
            "reply",
            noun,
            service,
            outcome.reply,
            {"service": service, "operation": service, "kind": "reply"},
            outcome.correlation_id,
        )
        return self._acknowledgement(spec, outcome, namespace)

    def _acknowledgement(self, spec: ServiceSpec, outcome: Outcome, namespace: str) -> bytes:
        """The synchronous answer to an async request: accepted, the reply follows."""
        noun = outcome.noun or spec.noun
        ack_header = Header(
            verb="reply",
            noun=noun,
            timestamp=envelope.now_utc(),
            source="amihub",
            message_id=envelope.new_message_id(),
            correlation_id=outcome.correlation_id,
        )
        ack = Reply("OK")  # accepted; the reply itself follows at ReplyAddress
        return envelope.render_response(
            ack_header, ack, style="wrapper", noun=noun, namespace=namespace
        )

    # -- small answers ---------------------------------------------------------------------

    def _journal_refusal(
        self,
        spec: ServiceSpec,
        environ: dict[str, Any],
        fault: SoapFault,
        answer: bytes,
        received_at: datetime,
    ) -> None:
        """A Fault of the front door: row, lifecycle, dead letter with the body as read
        (and the audit entry of a refused sender). The Fault is answered all the same
        when the store cannot take it."""
        remote = str(environ.get("REMOTE_ADDR", "?"))
        metadata = {"remote": remote, "http_status": fault.status.split(" ", 1)[0]}
        action = str(environ.get("HTTP_SOAPACTION", "")).strip()
        if action:
            metadata["soap_action"] = action[:500]
        length = str(environ.get("CONTENT_LENGTH") or "").strip()
        if length:
            metadata["content_length"] = length[:40]
        content_type = str(environ.get("CONTENT_TYPE", "")).strip()
        if content_type:
            metadata["content_type"] = content_type[:200]
        declared = environ.get("amihub.soap.declared")
        try:
            self.journal.refuse(
                InboundMessage(
                    source=str(environ.get("amihub.user") or f"soap:{remote}"),
                    endpoint=f"soap:/ws/{spec.name}",
                    body=bytes(environ.get("amihub.soap.body", b"")),
                    received_at=received_at,
                    metadata=metadata,
                ),
                fault.errors,
                reply=answer,
                declared_size=int(declared) if declared is not None else None,
                audited=fault.audited,
                not_replayable="refused by the SOAP front door before the pipeline: "
                "the sender must send it again, corrected",
            )
        except AmihubError:
            log.exception("could not journal a refused call to /ws/%s", spec.name)

    def _base_url(self, environ: dict[str, Any]) -> str:
        if self.public_url:
            return self.public_url
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or (
            f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        )
        return f"{scheme}://{host}"

    def _xsd(self, relative: str, start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            data = self.wsdl.xsd(relative)
        except FileNotFoundError:
            return self._plain(start_response, "404 Not Found", f"no schema {relative!r}\n")
        return self._send(start_response, "200 OK", data, XML_TYPE)

    def _index(self) -> str:
        lines = ["amihub IEC 61968-9 web services:"]
        lines += [f"  /ws/{name}?wsdl" for name in self.specs]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _plain(start_response: Callable[..., Any], status: str, text: str) -> list[bytes]:
        return SoapGateway._send(start_response, status, text.encode(), "text/plain; charset=utf-8")

    @staticmethod
    def _send(
        start_response: Callable[..., Any],
        status: str,
        body: bytes,
        content_type: str,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> list[bytes]:
        sent = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        if close:
            sent.append(("Connection", "close"))
        start_response(status, sent)
        return [body]


class AccessLog:
    """WSGI middleware: one line per request to ``amihub.soap.access``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        started = time.perf_counter()
        status_holder: list[str] = []

        def recording_start(status: str, headers: Any, exc_info: Any = None) -> Any:
            status_holder.append(status)
            return (
                start_response(status, headers, exc_info)
                if exc_info
                else start_response(status, headers)
            )

        sent = 0
        try:
            for chunk in self.app(environ, recording_start):
                sent += len(chunk)
                yield chunk
        finally:
            access_log.info(
                '%s %s "%s %s%s" %s %d %.1fms%s',
                environ.get("REMOTE_ADDR", "-"),
                environ.get("amihub.user", "-"),
                environ.get("REQUEST_METHOD", "-"),
                environ.get("PATH_INFO", ""),
                "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "",
                status_holder[0].split(" ", 1)[0] if status_holder else "-",
                sent,
                (time.perf_counter() - started) * 1000,
                f" fault={environ['amihub.soap.fault']}" if "amihub.soap.fault" in environ else "",
            )
