"""The hardened parser as each thread builds it, the syntax error it reports, and the
limited reader as a stream. `make mutate` found these untested (docs/testing.md)."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cim_schemas.errors import NotWellFormed
from cim_schemas.xml import LimitedReader, parse_bytes


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


def _events(data: bytes, **kwargs: Any) -> list[tuple[str, str]]:
    from cim_schemas.xml import iterparse

    reader = LimitedReader(io.BytesIO(data), 1 << 20)
    return [(event, el.tag) for event, el in iterparse(reader, **kwargs)]


# a DOCTYPE after more than the 64 KiB of prolog check_prolog scans: the parser's own check
LATE_DOCTYPE = b"<!--" + b"x" * 70_000 + b'-->\n<!DOCTYPE a SYSTEM "file:///etc/passwd">\n<a/>'


def test_a_doctype_past_the_scanned_prolog_is_refused_by_the_stream() -> None:
    from cim_schemas.errors import ForbiddenXml
    from cim_schemas.xml import iterparse

    with pytest.raises(ForbiddenXml) as caught:
        for _ in iterparse(LimitedReader(io.BytesIO(LATE_DOCTYPE), 1 << 20)):
            pass
    assert str(caught.value) == (
        "the prolog (what comes before the root element) is longer than 65536 bytes"
    )


def test_a_doctype_past_the_scanned_prolog_is_refused_by_parse_bytes() -> None:
    """A prolog longer than the scan is refused before libxml2 could read a late
    DOCTYPE's external subset (a local file: found by make mutate, docs/testing.md)."""
    from cim_schemas.errors import ForbiddenXml

    with pytest.raises(ForbiddenXml) as caught:
        parse_bytes(LATE_DOCTYPE)
    assert str(caught.value) == (
        "the prolog (what comes before the root element) is longer than 65536 bytes"
    )


def test_the_stream_drops_comments_and_pis_and_keeps_the_tags_asked_for() -> None:
    doc = b"<a><!--c--><?pi x?><b/><c/></a>"
    assert _events(doc, events=("end",)) == [("end", "b"), ("end", "c"), ("end", "a")]
    assert _events(doc, events=("end",), tags=("c",)) == [("end", "c")]


def test_stream_errors_are_told_apart() -> None:
    from datetime import UTC, datetime

    from cim_schemas.errors import SchemaInvalid
    from cim_schemas.schemas import message_schema
    from hub.samples import meter_readings_bytes

    good = meter_readings_bytes(["M"], datetime(2026, 1, 1, tzinfo=UTC), 2)
    bad = good.replace(b"<m:value>", b"<m:value><m:x/>", 1)
    with pytest.raises(SchemaInvalid) as invalid:
        _events(bad, schema=message_schema())
    assert str(invalid.value).startswith("schema invalid: ")
    (detail,) = invalid.value.errors
    assert detail.code == "1005"
    with pytest.raises(NotWellFormed) as broken:
        _events(good[: len(good) // 2])
    assert str(broken.value).startswith("not well-formed XML")
    # an undefined entity is refused; lxml's stream reports it as "no element found"
    with pytest.raises(NotWellFormed):
        _events(b"<a>&x;</a>")


def test_parse_bytes_limits_and_empty_input() -> None:
    from cim_schemas.errors import ForbiddenXml, InputTooLarge

    doc = b"<a/>"
    assert parse_bytes(doc, max_bytes=len(doc)).getroot().tag == "a"
    with pytest.raises(InputTooLarge) as large:
        parse_bytes(doc, max_bytes=3)
    assert str(large.value) == "input of 4 bytes exceeds the limit of 3 bytes"
    with pytest.raises(NotWellFormed) as empty:
        parse_bytes(b"  \n")
    assert str(empty.value) == "empty input: not XML"
    with pytest.raises(ForbiddenXml) as entity:
        parse_bytes(b"<a>&x;</a>")
    assert str(entity.value).startswith("entity reference refused: ")


def test_a_document_cut_short_is_not_well_formed_with_a_schema_too() -> None:
    """libxml2 streaming with a schema raises nothing at a premature end; the wrapper
    checks the end itself (found while writing the tests for make mutate)."""
    from datetime import UTC, datetime

    from cim_schemas.schemas import message_schema
    from hub.samples import meter_readings_bytes

    good = meter_readings_bytes(["M"], datetime(2026, 1, 1, tzinfo=UTC), 2)
    with pytest.raises(NotWellFormed):
        _events(good[: len(good) // 2], schema=message_schema())


def test_read_all_and_the_head_of_a_document() -> None:
    from cim_schemas.xml import pull_events

    data = b"<a>" + b"y" * (3 << 20) + b"</a>"
    assert LimitedReader(io.BytesIO(data), 8 << 20).read_all() == data
    events = [(e, el.tag) for e, el in pull_events(b"<a><!--c--><b/><c")]  # cut: fine
    assert events == [("start", "a"), ("start", "b"), ("end", "b")]
    with pytest.raises(NotWellFormed) as caught:
        list(pull_events(b"<a>\n<b></a>"))
    assert str(caught.value).startswith("not well-formed XML at line 2: ")


DOCTYPE = b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>'


@pytest.mark.parametrize(
    "prefix",
    [
        DOCTYPE,
        b'<?xml version="1.0"?>\n<!-- c -->\n<?pi x?>\t' + DOCTYPE,
        b"\xef\xbb\xbf" + DOCTYPE,  # UTF-8 byte order mark
        b"\xef\xbb\xbf<!-- c -->" + DOCTYPE,
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a><a/>'.encode("utf-16"),
        "<!DOCTYPE a><a/>".encode("utf-16-be").join([b"\xfe\xff", b""]),
        b"<!doctype a><a/>",
    ],
)
def test_the_prolog_check_itself_refuses_a_doctype(prefix: bytes) -> None:
    from cim_schemas.errors import ForbiddenXml
    from cim_schemas.xml import check_prolog

    with pytest.raises(ForbiddenXml) as caught:
        check_prolog(prefix)
    assert str(caught.value) == "DOCTYPE declarations are not accepted (no DTD, no entities)"


def test_the_prolog_check_lets_documents_through_and_refuses_text_before_the_root() -> None:
    from cim_schemas.xml import check_prolog

    for fine in (
        b"<a/>",
        b'<?xml version="1.0"?>\n<!-- ! --><a>x</a>',
        b"<a><![CDATA[<!DOCTYPE x>]]></a>",  # the word inside an element
        b"\xef\xbb\xbf<a/>",
    ):
        check_prolog(fine)
    with pytest.raises(NotWellFormed) as caught:
        check_prolog(b"junk <!DOCTYPE a><a/>")
    assert str(caught.value) == "not well-formed XML: content before the root element"
