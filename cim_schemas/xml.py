"""The one hardened XML parser of amihub.

Every XML input, from any adapter, is parsed here: no DTD is loaded, no entity
is resolved, nothing is fetched from the network, and input beyond a size limit
is refused while it is read (never buffered first). A document that declares a
DOCTYPE at all is refused: IEC 61968-100 messages never need one, and refusing
it closes entity-expansion and external-entity attacks at the root.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Iterator
from typing import IO, Any, Final, cast

from lxml import etree

from cim_schemas.errors import ForbiddenXml, InputTooLarge, NotWellFormed

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
PROLOG_SCAN_BYTES: Final = 64 * 1024


def _parser() -> etree.XMLParser:
    """This thread's parser for whole documents (:func:`parse_bytes`): a parser's first
    parse builds its libxml2 context (~18 us of a 12 KB message's ~95 us), so each
    thread keeps one (a parser must not be used by two threads at once)."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _new_parser()
    return parser


_local = threading.local()


def _new_parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    parser.resolvers.add(_NothingResolver())
    return parser


class _NothingResolver(etree.Resolver):
    """Every external resource libxml2 asks for (a DOCTYPE's external subset) is empty.

    libxml2's tree parser reads a DOCTYPE's SYSTEM file even with ``load_dtd=False``,
    before :func:`_refuse_doctype` can refuse the document: a DOCTYPE that
    :func:`check_prolog` does not see (UTF-16 without a byte order mark) would make
    the parse a file-existence oracle. With this resolver no file is opened."""

    def resolve(self, system_url: str, public_id: str, context: Any = None) -> Any:
        return self.resolve_string("", context, base_url=None)


class LimitedReader(io.RawIOBase):
    """A read-only stream that counts and hashes what passes, and stops at a limit.

    Its first read takes up to 64 KiB and checks the prolog for a DOCTYPE before
    any byte reaches the parser.
    """

    def __init__(self, source: IO[bytes], max_bytes: int) -> None:
        super().__init__()
        self._source = source
        self._max = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()
        self._pending: bytes | None = None

    def readable(self) -> bool:
        return True

    def _take(self, n: int) -> bytes:
        chunk = self._source.read(n)
        if not chunk:
            return b""
        self.size += len(chunk)
        if self.size > self._max:
            raise InputTooLarge(f"input exceeds the size limit of {self._max} bytes")
        self._sha.update(chunk)
        return chunk

    def peek(self) -> bytes:
        """The first 64 KiB (prolog checked), without consuming them."""
        if self._pending is None:
            head = b""
            while len(head) < PROLOG_SCAN_BYTES:
                more = self._take(PROLOG_SCAN_BYTES - len(head))
                if not more:
                    break
                head += more
            check_prolog(head)
            self._pending = head
        return self._pending

    def read_all(self) -> bytes:
        chunks = [self.read()]
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def read(self, n: int | None = -1) -> bytes:
        want = 65536 if n is None or n < 0 else n
        if self._pending is None:
            self.peek()
        if self._pending:
            out, self._pending = self._pending[:want], self._pending[want:]
            return out
        return self._take(want)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read the rest (to finish the hash) without keeping it."""
        while self.read(1 << 20):
            pass

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_PROLOG_ITEM = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->", re.DOTALL)


def check_prolog(prefix: bytes) -> None:
    """Refuse a DOCTYPE before libxml2 sees the document.

    Scans the prolog (XML declaration, comments, processing instructions) of the
    first bytes; UTF-16 input is decoded first. Runs before parsing, because
    libxml2 reads an external subset before any element event is raised.
    """
    if prefix.startswith((b"\xff\xfe", b"\xfe\xff")):
        prefix = prefix.decode("utf-16", errors="ignore").encode("utf-8")
    elif prefix.startswith(b"\xef\xbb\xbf"):
        prefix = prefix[3:]
    pos = 0
    while True:
        m = _PROLOG_ITEM.match(prefix, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
    if prefix[pos : pos + 9].upper() == b"<!DOCTYPE":
        raise ForbiddenXml("DOCTYPE declarations are not accepted (no DTD, no entities)")
    if len(prefix) >= PROLOG_SCAN_BYTES and (
        pos == len(prefix) or prefix[pos : pos + 2] in (b"<", b"<!", b"<?")
    ):
        # the prolog goes on past what was scanned (a comment or processing instruction
        # of 64 KiB, or markup whose "<" is the last byte scanned): a DOCTYPE behind it
        # would reach libxml2, which reads an external subset before any check after
        # parsing could refuse it
        raise ForbiddenXml(
            f"the prolog (what comes before the root element) is longer than "
            f"{PROLOG_SCAN_BYTES} bytes"
        )
    # (a DOCTYPE has a "!": the one-byte search spares upper-casing the whole prefix)
    if (
        b"!" in prefix
        and b"<!DOCTYPE" in prefix.upper()
        and pos < len(prefix)
        and prefix[pos : pos + 1] != b"<"
    ):
        raise NotWellFormed("not well-formed XML: content before the root element")


def _refuse_doctype(tree: etree._ElementTree) -> None:
    info = tree.docinfo
    if info.internalDTD is not None or info.externalDTD is not None or info.doctype:
        raise ForbiddenXml("DOCTYPE declarations are not accepted (no DTD, no entities)")


def _syntax_error(exc: etree.XMLSyntaxError) -> NotWellFormed:
    line = getattr(exc, "lineno", None) or (exc.position[0] if exc.position else None)
    msg = exc.msg or str(exc)
    where = f" at line {line}" if line else ""
    return NotWellFormed(f"not well-formed XML{where}: {msg}")


def _namespace_error(errors: Any) -> NotWellFormed | None:
    """The first undeclared-prefix error of a parser's log, as the tree parser reports it.

    libxml2 reports an undeclared namespace prefix as a recoverable error: a streaming
    parser goes on (giving the element a name without namespace) and raises only when
    the document is closed, so the streaming paths look for it themselves."""
    for entry in errors or ():
        if entry.domain_name == "NAMESPACE":
            where = f" at line {entry.line}" if entry.line else ""
            return NotWellFormed(
                f"not well-formed XML{where}: {entry.message}, line {entry.line}, "
                f"column {entry.column}"
            )
    return None


def parse_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._ElementTree:
    """Parse a whole document held in memory. Raises the amihub errors only."""
    if len(data) > max_bytes:
        raise InputTooLarge(f"input of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise NotWellFormed("empty input: not XML")
    check_prolog(data[:PROLOG_SCAN_BYTES])
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        if "entity" in (exc.msg or "").lower():
            raise ForbiddenXml(f"entity reference refused: {exc.msg}") from exc
        raise _syntax_error(exc) from exc
    tree = root.getroottree()
    _refuse_doctype(tree)
    return tree


def pull_events(head: bytes) -> Iterator[tuple[str, etree._Element]]:
    """('start'|'end', element) events of the beginning of a document (e.g. to read its
    Header before streaming the rest). Incomplete input is fine: events stop where it does."""
    check_prolog(head[:PROLOG_SCAN_BYTES])
    parser = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        parser.feed(head)
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from exc
    undeclared = _namespace_error(parser.feed_error_log)
    if undeclared is not None:
        raise undeclared
    try:
        yield from parser.read_events()  # type: ignore[misc]
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from exc


def iterparse(
    source: IO[bytes] | io.RawIOBase,
    *,
    tags: tuple[str, ...] | None = None,
    schema: etree.XMLSchema | None = None,
    events: tuple[str, ...] = ("start", "end"),
) -> Iterator[tuple[str, etree._Element]]:
    """Stream ('start'|'end', element) events of a document with the same hardening.

    ``source`` should be a :class:`LimitedReader` so the size limit holds. The
    first start event checks for a DOCTYPE. Errors are amihub errors.
    """
    kwargs: dict[str, Any] = {
        "events": events,
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
        "collect_ids": False,
    }
    if tags:
        kwargs["tag"] = tags
    if schema is not None:
        kwargs["schema"] = schema
    checked = False
    # with a schema, libxml2 lets some syntax errors pass (see _WellFormed): a bare
    # parse of the same bytes checks well-formedness beside it
    well_formed = _WellFormed() if schema is not None else None
    read = source if well_formed is None else _Tee(source, well_formed)
    events_of = etree.iterparse(read, **kwargs)
    try:
        for event, element in events_of:
            if not checked:
                _refuse_doctype(element.getroottree())
                checked = True
            if well_formed is not None and well_formed.error is not None:
                raise well_formed.error  # before the events of what libxml2 recovered
            yield event, element
        if well_formed is not None:
            well_formed.close()  # a document cut short: libxml2 with a schema just stops
            if well_formed.error is not None:
                raise well_formed.error
    except etree.XMLSyntaxError as exc:
        from cim_schemas.errors import SchemaInvalid

        if well_formed is not None and well_formed.error is not None:
            raise _syntax_error(well_formed.error) from exc  # not well-formed comes first
        # the exception's error log is lxml's per thread, with entries of earlier parses
        # (a schema error of the document before would pass for this one's): the
        # parser's own log holds this parse's only; its last entry caused the exception
        errors: Any = events_of.error_log  # lxml-stubs: no last_error on _ErrorLog
        last: Any = errors.last_error if errors else None
        # an undeclared prefix seen before: the document is not well-formed, whatever
        # the validator says of the unqualified element it made of it (as on the tree path)
        undeclared = _namespace_error(events_of.error_log)
        if undeclared is not None:
            raise undeclared from exc
        if schema is not None and last is not None and last.domain_name == "SCHEMASV":
            raise SchemaInvalid(f"schema invalid: {last.message}", xpath=last.path) from exc
        if "entity" in (exc.msg or "").lower():
            raise ForbiddenXml(f"entity reference refused: {exc.msg}") from exc
        raise _syntax_error(exc) from exc


class _NoTree:
    """A parser target that builds nothing (no callbacks but ``close``)."""

    def close(self) -> None:
        return None


class _WellFormed:
    """A bare parse of the bytes the streaming parser reads, for well-formedness only.

    With a schema on the streaming parser, libxml2 lets a syntax error pass: an
    element broken like ``<m:ReadingQuality1.5.257"/>`` anywhere in the document ends
    ``iterparse`` with no exception and an empty error log, with elements made of what
    it recovered, and the document would be taken. This parser builds no tree and
    calls back nothing (about a sixth of the validating parse's time); its first
    error refuses the document (as the tree path does, code 1001). The same holds for a
    document cut short, at which the validating parser's events simply stop: this
    parser's ``close`` says "Premature end of data"."""

    def __init__(self) -> None:
        self._parser = etree.XMLParser(
            target=cast(Any, _NoTree()),  # lxml-stubs: a target needs no callbacks
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
        )
        self._parser.resolvers.add(_NothingResolver())
        self.error: etree.XMLSyntaxError | None = None

    def feed(self, data: bytes) -> None:
        if self.error is None:
            try:
                self._parser.feed(data)
            except etree.XMLSyntaxError as exc:
                self.error = exc

    def close(self) -> None:
        if self.error is None:
            try:
                self._parser.close()
            except etree.XMLSyntaxError as exc:
                self.error = exc


class _Tee:
    """What the streaming parser reads, fed to the well-formedness parser as well."""

    def __init__(self, source: IO[bytes] | io.RawIOBase, well_formed: _WellFormed) -> None:
        self._source = source
        self._well_formed = well_formed

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n) or b""
        if data:
            self._well_formed.feed(data)
        return data
