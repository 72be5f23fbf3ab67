"""Plain replies (a Result, no Error, no Payload) rendered from a template.

A batch of small messages answers each one; building and serialising a
ResponseMessage tree for each costs more than the rest of its bookkeeping. The
reply of an envelope-style request without errors differs from the next only
in its Timestamp, MessageID and CorrelationID, so it is rendered once per shape
(noun, Revision, Context, with or without CorrelationID, result) by
:func:`cim_schemas.envelope.render_response` with marker values, and then filled
in. The bytes are those :func:`~cim_schemas.envelope.render_response` gives for
the reply header (a test compares them); anything else is rendered as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from xml.sax.saxutils import escape

from cim_schemas import envelope
from cim_schemas.envelope import Header, Reply, Style
from cim_schemas.values import format_datetime

_TIMESTAMP: Final = datetime(1999, 12, 31, 23, 59, 58, tzinfo=UTC)
_MESSAGE_ID: Final = "amihubTemplateMessageId0e1f"
_CORRELATION_ID: Final = "amihubTemplateCorrelationId7c2d"
#: shapes kept at most (Revision and Context come from partners)
MAX_SHAPES: Final = 256

_Key = tuple[str, str | None, str | None, bool, str]
#: the template cut at its three fields, and the order of the fields in it
_Template = tuple[tuple[bytes, ...], tuple[str, ...]]


def reply_header(request: Header, timestamp: datetime, message_id: str) -> Header:
    """What :func:`cim_schemas.envelope.reply_header` makes, with these two values."""
    return Header(
        verb="reply",
        noun=request.noun,
        revision=request.revision,
        timestamp=timestamp,
        message_id=message_id,
        correlation_id=request.message_id,
        context=request.context,
    )


class ReplyTemplates:
    def __init__(self) -> None:
        self._shapes: dict[_Key, _Template | None] = {}

    def render(self, request: Header, style: Style, result: str) -> bytes:
        """The reply (no Error, no Payload) to ``request``: a new MessageID, Timestamp now."""
        template = self._template(request, style, result) if style == "envelope" else None
        if template is None:  # as the pipeline renders any reply
            reply = Reply(result=result)
            return envelope.render_response(request, reply, None, style=style, noun=request.noun)
        timestamp = envelope.now_utc()
        message_id = envelope.new_message_id()
        parts, order = template
        values = {
            "timestamp": format_datetime(timestamp).encode(),
            "message_id": escape(message_id).encode(),
            "correlation_id": escape(request.message_id or "").encode(),
        }
        out = [parts[0]]
        for name, part in zip(order, parts[1:], strict=True):
            out += [values[name], part]
        return b"".join(out)

    def _template(self, request: Header, style: Style, result: str) -> _Template | None:
        key = (
            request.noun,
            request.revision,
            request.context,
            request.message_id is not None,
            result,
        )
        try:
            return self._shapes[key]
        except KeyError:
            pass
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        marked = Header(
            verb=request.verb,
            noun=request.noun,
            revision=request.revision,
            context=request.context,
            message_id=_CORRELATION_ID if request.message_id is not None else None,
        )
        header = reply_header(marked, _TIMESTAMP, _MESSAGE_ID)
        rendered = envelope.render_response(header, Reply(result=result), None, style=style)
        markers = {
            "timestamp": format_datetime(_TIMESTAMP).encode(),
            "message_id": _MESSAGE_ID.encode(),
        }
        if request.message_id is not None:
            markers["correlation_id"] = _CORRELATION_ID.encode()
        template: _Template | None = None
        if all(rendered.count(m) == 1 for m in markers.values()):
            order = tuple(sorted(markers, key=lambda name: rendered.index(markers[name])))
            parts: list[bytes] = []
            rest = rendered
            for name in order:
                head, _, rest = rest.partition(markers[name])
                parts.append(head)
            parts.append(rest)
            template = (tuple(parts), order)
        self._shapes[key] = template
        return template
