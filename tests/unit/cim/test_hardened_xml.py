"""The one hardened parser: DOCTYPE refused before libxml2 sees it, limits, error mapping."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from cim_schemas.errors import ForbiddenXml, InputTooLarge, NotWellFormed, SchemaInvalid
from cim_schemas.schemas import message_schema
from cim_schemas.xml import LimitedReader, iterparse, parse_bytes
from hub.samples import meter_readings_bytes

BAD = meter_readings_bytes(["M"], datetime(2026, 1, 1, tzinfo=UTC), 2).replace(
    b"<m:value>", b"<m:value><m:x/>", 1
)


def events(data: bytes, *, schema: bool = False, limit: int = 1 << 20) -> int:
    reader = LimitedReader(io.BytesIO(data), limit)
    return sum(1 for _ in iterparse(reader, schema=message_schema() if schema else None))


@pytest.mark.parametrize(
    "doc",
    [
        b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
        b'<?xml version="1.0"?>\n<!-- c --><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
        '<!DOCTYPE a SYSTEM "/etc/passwd"><a/>'.encode("utf-16"),
    ],
)
def test_a_doctype_is_refused_before_parsing(doc: bytes) -> None:
    with pytest.raises(ForbiddenXml):
        parse_bytes(doc)
    with pytest.raises(ForbiddenXml):
        events(doc)


def test_size_limit_while_reading() -> None:
    with pytest.raises(InputTooLarge):
        events(b"<a>" + b"x" * 200_000 + b"</a>", limit=100_000)


def test_an_earlier_schema_error_does_not_leak_into_a_later_parse() -> None:
    with pytest.raises(SchemaInvalid):
        events(BAD, schema=True)
    # lxml keeps a per-thread error log: the next failure must be reported as itself
    with pytest.raises(NotWellFormed, match="Premature end"):
        events(b"<a><b>")


def test_an_earlier_schema_error_is_not_taken_for_a_later_syntax_error_with_the_schema() -> None:
    """A document that is not well-formed, streamed with the schema after a schema-invalid
    one in the same thread, was refused with the earlier document's schema error (1005
    and its message) because lxml's per-thread log still held it."""
    mismatched = meter_readings_bytes(["M"], datetime(2026, 1, 1, tzinfo=UTC), 2).replace(
        b"</m:value>", b"</m:valu>", 1
    )
    with pytest.raises(SchemaInvalid):
        events(BAD, schema=True)
    with pytest.raises(NotWellFormed):
        events(mismatched, schema=True)


def test_the_reused_parser_reports_each_document_on_its_own() -> None:
    """parse_bytes keeps one parser a thread: an error names only its own document, a
    good document after a bad one parses, and another thread parses at the same time."""
    import threading

    with pytest.raises(NotWellFormed, match="line 3"):
        parse_bytes(b"<a>\n<b>\n</a>")
    good = meter_readings_bytes(["M"], datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert parse_bytes(good).getroot().tag.endswith("EventMessage")
    with pytest.raises(NotWellFormed, match="line 1"):
        parse_bytes(b"<a><b></a>")
    with pytest.raises(ForbiddenXml):
        parse_bytes(b"<a>&x;</a>")  # the entity is refused, not resolved by a kept state
    roots: list[str] = []

    def other() -> None:
        for _ in range(50):
            roots.append(parse_bytes(good).getroot().tag)

    threads = [threading.Thread(target=other) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(50):
        assert len(parse_bytes(good).getroot()) == 2
    for t in threads:
        t.join()
    assert len(roots) == 150
    assert all(r.endswith("EventMessage") for r in roots)
