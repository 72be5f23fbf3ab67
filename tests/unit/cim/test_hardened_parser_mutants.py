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
    # an empty-element root is whole: the end-tag check is for streams with the schema
    assert _events(b"<a/>") == [("start", "a"), ("end", "a")]
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


# -- the re-run's survivors (docs/testing.md, parser) -----------------------------------


def _sample() -> bytes:
    from datetime import UTC, datetime

    from hub.samples import meter_readings_bytes

    return meter_readings_bytes(["M"], datetime(2026, 1, 1, tzinfo=UTC), 2)


def test_a_syntax_error_reports_libxml2s_message_and_no_line_when_there_is_none() -> None:
    with pytest.raises(NotWellFormed) as caught:
        parse_bytes(b"<a>\n<b>\n</a>")
    assert str(caught.value) == (
        "not well-formed XML at line 3: "
        "Opening and ending tag mismatch: b line 2 and a, line 3, column 5"
    )
    # an empty stream: libxml2 gives line 0, which is no line
    with pytest.raises(NotWellFormed) as empty:
        _events(b"")
    assert str(empty.value) == "not well-formed XML: no element found"


UNDECLARED = b"<a>\n\n<x:b/></a>"
UNDECLARED_MESSAGE = (
    "not well-formed XML at line 3: Namespace prefix x on b is not defined, line 3, column 5"
)


def test_an_undeclared_prefix_is_not_well_formed_in_the_head_and_the_stream() -> None:
    from cim_schemas.xml import pull_events

    with pytest.raises(NotWellFormed) as head:
        list(pull_events(UNDECLARED))
    assert str(head.value) == UNDECLARED_MESSAGE
    with pytest.raises(NotWellFormed) as stream:
        _events(UNDECLARED)
    assert str(stream.value) == UNDECLARED_MESSAGE


def test_a_utf16_prolog_cut_in_the_middle_of_a_character_is_still_checked() -> None:
    """The scanned prefix can end inside a UTF-16 code unit: the odd byte is ignored, not
    an error escaping the parser's own errors."""
    from cim_schemas.errors import ForbiddenXml
    from cim_schemas.xml import check_prolog

    with pytest.raises(ForbiddenXml) as caught:
        check_prolog("<!DOCTYPE a><a/>".encode("utf-16") + b"x")
    assert str(caught.value) == "DOCTYPE declarations are not accepted (no DTD, no entities)"


PROLOG_TOO_LONG = "the prolog (what comes before the root element) is longer than 65536 bytes"


@pytest.mark.parametrize(
    "prolog",
    [
        b"<?pi " + b"x" * 70_000 + b"?>",  # a processing instruction longer than the scan
        b" " * 70_000,  # white space only, as far as the scan goes
        b"<!---->" * 10_000,  # many comments
        # a markup whose "<" is the last byte scanned
        b"<!--" + b"x" * (65_535 - 7) + b"-->",
    ],
)
def test_a_prolog_longer_than_the_scan_is_refused_on_both_paths(prolog: bytes) -> None:
    from cim_schemas.errors import ForbiddenXml

    doc = prolog + b'<!DOCTYPE a SYSTEM "/etc/hostname"><a/>'
    with pytest.raises(ForbiddenXml) as whole:
        parse_bytes(doc)
    assert str(whole.value) == PROLOG_TOO_LONG
    with pytest.raises(ForbiddenXml) as streamed:
        _events(doc)
    assert str(streamed.value) == PROLOG_TOO_LONG


def test_a_prolog_that_ends_the_document_or_text_before_the_root_go_to_libxml2() -> None:
    """Only a DOCTYPE after text is the prolog check's "content before the root element";
    text alone, or a prolog with nothing after, is libxml2's error as it says it."""
    for doc, column in ((b"junk<a/>", 1), (b"<!-- <!DOCTYPE a> -->", 22)):
        with pytest.raises(NotWellFormed) as caught:
            parse_bytes(doc)
        assert str(caught.value) == (
            f"not well-formed XML at line 1: Start tag expected, '<' not found, "
            f"line 1, column {column}"
        )


def test_a_doctype_the_prolog_check_cannot_read_opens_no_file(tmp_path: Any) -> None:
    """UTF-16 without a byte order mark (libxml2 reads the encoding from the declaration):
    the prolog check does not see the DOCTYPE, and libxml2's tree parser would read the
    SYSTEM file as the external subset even with load_dtd=False, so an existing file and
    a missing one gave different errors (found by make mutate; docs/testing.md). Now no
    file is read and the DOCTYPE is refused after parsing, the same for both."""
    from cim_schemas.errors import ForbiddenXml

    existing = tmp_path / "subset.dtd"
    existing.write_text("not a DTD\n")
    for target in (existing, tmp_path / "missing.dtd"):
        doc = (f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a SYSTEM "{target}"><a/>').encode(
            "utf-16-le"
        )
        with pytest.raises(ForbiddenXml) as caught:
            parse_bytes(doc)
        assert str(caught.value) == (
            "DOCTYPE declarations are not accepted (no DTD, no entities)"
        ), target
        with pytest.raises(ForbiddenXml):
            _events(doc)


class _Trickle(io.RawIOBase):
    """A source that gives at most ``step`` bytes a read, as a socket or pipe does."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self._data, self._step, self._at = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        size = self._step if n is None or n < 0 else min(n, self._step)
        out = self._data[self._at : self._at + size]
        self._at += len(out)
        return out


def test_the_limited_reader_peeks_exactly_the_scanned_prefix_of_a_trickling_source() -> None:
    data = b"<a>" + b"z" * 200_000 + b"</a>"
    reader = LimitedReader(_Trickle(data, 1000), 1 << 20)
    assert reader.peek() == data[:65536]
    assert reader.size == 65536
    assert reader.read_all() == data
    assert reader.sha256 == hashlib.sha256(data).hexdigest()


def test_the_limited_reader_never_gives_more_than_asked() -> None:
    data = b"<a>" + b"z" * 200_000 + b"</a>"
    reader = LimitedReader(io.BytesIO(data), 1 << 20)
    assert reader.read(0) == b""
    assert reader.read() == data[:65536]  # a read without size: the peeked prefix
    assert reader.read(0) == b""
    assert reader.read(10) == data[65536:65546]
    assert reader.size < 65536 + 1000  # read as asked, not all at once
    buffer = bytearray(7)
    assert reader.readinto(buffer) == 7
    assert bytes(buffer) == data[65546:65553]


def test_the_limited_reader_takes_its_limit_and_not_a_byte_more() -> None:
    from cim_schemas.errors import InputTooLarge

    data = b"<a>" + b"z" * 100_000 + b"</a>"
    assert LimitedReader(io.BytesIO(data), len(data)).read_all() == data
    with pytest.raises(InputTooLarge) as caught:
        LimitedReader(io.BytesIO(data), len(data) - 1).read_all()
    assert str(caught.value) == f"input exceeds the size limit of {len(data) - 1} bytes"


@pytest.mark.parametrize(
    "tail",
    [b"", b"\n", b"  <!-- end -->\n<?done?>\n"],
)
def test_a_whole_message_streamed_with_the_schema_may_end_in_white_space_comments_and_pis(
    tail: bytes,
) -> None:
    from cim_schemas.schemas import message_schema

    good = _sample().rstrip() + tail
    assert _events(good, schema=message_schema(), events=("end",))[-1][1].endswith("EventMessage")


def test_a_message_with_a_prefixed_root_is_whole_and_cut_short_it_is_not() -> None:
    from cim_schemas.schemas import message_schema

    good = _sample().rstrip()
    prefixed = (
        good.replace(b"<EventMessage xmlns=", b"<msg:EventMessage xmlns:msg=", 1)
        .replace(b"</EventMessage>", b"</msg:EventMessage>")
        .replace(b"<Header>", b"<msg:Header>")
        .replace(b"</Header>", b"</msg:Header>")
        .replace(b"<Payload>", b"<msg:Payload>")
        .replace(b"</Payload>", b"</msg:Payload>")
    )
    for tag in (b"Verb", b"Noun", b"Revision", b"Timestamp", b"Source", b"MessageID"):
        prefixed = prefixed.replace(b"<" + tag + b">", b"<msg:" + tag + b">").replace(
            b"</" + tag + b">", b"</msg:" + tag + b">"
        )
    assert _events(prefixed, schema=message_schema(), events=("end",))[-1] == (
        "end",
        "{http://iec.ch/TC57/2011/schema/message}EventMessage",
    )
    cut = prefixed[: prefixed.rindex(b"</msg:EventMessage>")] + b"<!-- c -->\n"
    with pytest.raises(NotWellFormed) as caught:
        _events(cut, schema=message_schema())
    assert str(caught.value).startswith("not well-formed XML at line ")
    assert "Premature end of data in tag EventMessage" in str(caught.value)


def test_the_head_of_a_document_keeps_the_depth_limit() -> None:
    """pull_events (the Header read before streaming) keeps libxml2's depth limit (no
    huge_tree), as the other paths do."""
    from cim_schemas.xml import pull_events

    with pytest.raises(NotWellFormed) as deep:
        list(pull_events(b"<a>" * 300))
    assert str(deep.value).startswith("not well-formed XML at line 1: Excessive depth")


def test_the_stream_keeps_the_depth_limit_and_leaves_no_comment_or_pi_in_the_tree() -> None:
    from cim_schemas.xml import iterparse

    with pytest.raises(NotWellFormed) as deep:
        _events(b"<a>" * 300 + b"</a>" * 300)
    assert str(deep.value).startswith("not well-formed XML at line 1: Excessive depth")
    reader = LimitedReader(io.BytesIO(b"<a><!--c--><?pi x?><b/><!--d--></a>"), 1 << 20)
    ends = [el for event, el in iterparse(reader, events=("end",))]
    root = ends[-1]
    assert [child.tag for child in root] == ["b"]  # what a reader of the tree walks
