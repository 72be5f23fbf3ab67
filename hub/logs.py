"""Logging setup: plain text lines, or JSON lines (``log_format = "json"``) carrying the
ids of the request and of the action being logged.

``request_id`` is set by the web front door for each HTTP request (its
``X-Request-ID``, or one made up); ``action_id`` by whoever acts on an operator's
behalf (the control job's mRID, the dead letter replayed). Both are context variables,
so they follow the request's thread and nothing else; :func:`bound` sets them for a
block. A JSON line holds ``ts``, ``level``, ``logger``, ``message``, the two ids when
set, and ``exc`` when an exception is logged.

A log line carries values callers chose (a user name, a MessageID, a path, a request
id): a line feed in one would write a second, forged line. The text format escapes
every control character of its line (``\n`` -> ``\\n``, other C0/C1 controls and the
Unicode line separators as ``\\xNN``/``\\uNNNN``); JSON escapes them itself. Either
cuts a message longer than :data:`MAX_LINE_CHARS`, saying how much was left out. A
traceback that follows a text line is the process's own and keeps its lines.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("amihub_request_id", default=None)
action_id: ContextVar[str | None] = ContextVar("amihub_action_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: longest log line (characters) before a traceback, if any
MAX_LINE_CHARS = 8192


def _escapes() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    table.update({0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\x85"})
    return table


_ESCAPES = _escapes()


def bounded(text: str, max_chars: int = MAX_LINE_CHARS) -> str:
    """``text`` cut to ``max_chars``, saying how much was left out."""
    if len(text) > max_chars:
        return f"{text[:max_chars]}... ({len(text) - max_chars} more characters)"
    return text


def escape(text: str, max_chars: int = MAX_LINE_CHARS) -> str:
    """``text`` on one line, at most about ``max_chars`` characters."""
    return bounded(text, max_chars).translate(_ESCAPES)


@contextmanager
def bound(*, request: str | None = None, action: str | None = None) -> Iterator[None]:
    """Set the request id and/or the action id for the block (restored after it)."""
    tokens = []
    if request is not None:
        tokens.append((request_id, request_id.set(request)))
    if action is not None:
        tokens.append((action_id, action_id.set(action)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": bounded(record.getMessage()),
        }
        req, act = request_id.get(), action_id.get()
        if req is not None:
            entry["request_id"] = req
        if act is not None:
            entry["action_id"] = act
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, with ``[request=... action=...]`` when they are set: one line
    (control characters escaped), bounded, before a traceback."""

    def __init__(self, fmt: str = TEXT_FORMAT, max_chars: int = MAX_LINE_CHARS) -> None:
        super().__init__(fmt)
        self.max_chars = max_chars

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        req, act = request_id.get(), action_id.get()
        if req is not None or act is not None:
            ids = " ".join(
                f"{k}={v}" for k, v in (("request", req), ("action", act)) if v is not None
            )
            line = f"{line} [{ids}]"
        return escape(line, self.max_chars)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Configure the root logger for the process (stderr), as ``logging.basicConfig``
    does: not when it has handlers already (a test runner's, an embedding program's)."""
    root = logging.getLogger()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
