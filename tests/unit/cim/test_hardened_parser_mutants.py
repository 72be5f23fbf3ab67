"""The hardened parser as each thread builds it, the syntax error it reports, and the
limited reader as a stream. `make mutate` found these untested (docs/testing.md)."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cim_schemas.xml import LimitedReader, parse_bytes
from hub.errors import NotWellFormed


def in_a_new_thread(job: Callable[[], Any]) -> Any:
    """Run ``job`` where parse_bytes builds its parser afresh (one parser a thread)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(job())
        except Exception as exc:  # handed back to the test
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


def test_a_new_threads_parser_drops_comments_and_processing_instructions() -> None:
    root = in_a_new_thread(lambda: parse_bytes(b"<a><!--c--><?pi x?><b/></a>").getroot())
    assert [child.tag for child in root] == ["b"]


def test_a_new_threads_parser_keeps_the_depth_limit() -> None:
    deep = b"<a>" * 300 + b"</a>" * 300
    error = in_a_new_thread(lambda: parse_bytes(deep))
    assert isinstance(error, NotWellFormed)
    assert "Excessive depth" in str(error)


def test_a_syntax_error_says_where() -> None:
    with pytest.raises(NotWellFormed) as caught:
        parse_bytes(b"<a>\n<b>\n</a>")
    assert str(caught.value).startswith(
        "not well-formed XML at line 3: Opening and ending tag mismatch"
    )


def test_the_limited_reader_is_a_readable_stream() -> None:
    data = b"<a>" + b"x" * 300_000 + b"</a>"
    reader = LimitedReader(io.BytesIO(data), 1 << 20)
    assert reader.readable()
    buffer = bytearray(10)
    assert reader.readinto(buffer) == 10
    assert bytes(buffer) == data[:10]
    reader.drain()
    assert reader.size == len(data)
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert reader.read() == b""
