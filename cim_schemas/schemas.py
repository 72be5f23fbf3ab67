"""Loading our XSDs and validating messages against them.

One driver schema (``xsd/all.xsd``) imports every namespace amihub speaks, so a
single compiled :class:`lxml.etree.XMLSchema` validates any of our messages:
the generic IEC 61968-100 envelope (its payload validated lax against the
loaded profiles) and every 61968-9 message wrapper. It is built on first use
and cached; its files are read from this package only (a resolver refuses any
other location, and the network is never used).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lxml import etree

from cim_schemas.namespaces import (
    DRAFT_MESSAGE_NS,
    MESSAGE_NS,
    NOUNS,
    noun_of_profile_ns,
    profile_ns,
)

DRIVER: Final = "all.xsd"

_lock = threading.Lock()
_cache: dict[str, etree.XMLSchema] = {}


@dataclass(frozen=True)
class SchemaError:
    """One XSD validation problem.

    ``xpath`` names the offending element with local names, e.g.
    ``/CreatedMeterReadings/Payload/MeterReadings/MeterReading/IntervalBlocks[2]``.
    """

    xpath: str | None
    line: int | None
    message: str


def _xsd_root() -> Path:
    # The files ship as package data next to this module (see pyproject.toml).
    return Path(__file__).resolve().parent / "xsd"


def read_xsd(relative: str) -> bytes:
    """The bytes of one of our XSD files (``relative`` to ``cim_schemas/xsd``)."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or not parts[-1].endswith(".xsd"):
        raise FileNotFoundError(f"not one of our schema files: {relative!r}")
    return _xsd_root().joinpath(*parts).read_bytes()


_PKG_URL: Final = "amihub-xsd:/"


class _PackageResolver(etree.Resolver):
    """Resolves schemaLocation references to our package files, and nothing else."""

    def resolve(self, system_url: str, public_id: str, context: Any = None) -> Any:
        url = system_url or ""
        if url.startswith(_PKG_URL):
            relative = url[len(_PKG_URL) :]
        else:
            raise etree.XMLSchemaParseError(f"schema location outside cim_schemas: {url!r}")
        relative = _normalise_path(relative)
        return self.resolve_string(read_xsd(relative), context, base_url=_PKG_URL + relative)


def _normalise_path(path: str) -> str:
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise etree.XMLSchemaParseError(f"schema location escapes the package: {path!r}")
            out.pop()
        else:
            out.append(part)
    return "/".join(out)


def load_schema(relative: str = DRIVER) -> etree.XMLSchema:
    """Compile one of our XSDs (uncached; prefer :func:`message_schema`)."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True
    )
    parser.resolvers.add(_PackageResolver())
    doc = etree.fromstring(read_xsd(relative), parser, base_url=_PKG_URL + relative)
    return etree.XMLSchema(doc.getroottree())


def message_schema() -> etree.XMLSchema:
    """The one cached schema that validates any amihub message (built on first use).

    lxml schemas are safe to share between threads for validation.
    """
    schema = _cache.get(DRIVER)
    if schema is None:
        with _lock:
            schema = _cache.get(DRIVER)
            if schema is None:
                schema = load_schema(DRIVER)
                _cache[DRIVER] = schema
    return schema


def validate(tree: etree._ElementTree | etree._Element) -> list[SchemaError]:
    """Validate a message; return its problems (empty list: valid).

    Run :func:`normalise_namespaces` first for input that may use the draft
    envelope namespace.
    """
    doc = tree.getroottree() if isinstance(tree, etree._Element) else tree
    schema = message_schema()
    if schema.validate(doc):
        return []
    entries: Any = schema.error_log
    return [
        SchemaError(
            xpath=_friendly_path(doc, str(e.path)) if e.path else None,
            line=int(e.line) if e.line else None,
            message=str(e.message),
        )
        for e in entries
    ]


#: profiles a message of a noun may carry besides its own (a get of MeterReadings
#: sends its query as the GetMeterReadings profile)
_OTHER_PAYLOADS: Final[dict[str, frozenset[str]]] = {
    "MeterReadings": frozenset({"GetMeterReadings"})
}


def payload_problems(noun: str, payload: etree._Element, xpath: str | None) -> list[SchemaError]:
    """The Payload's profile element checked against the Header's noun.

    The envelope validates its Payload lax: an element of a namespace we have no
    profile for (another vendor's draft, a typo in the namespace) passes the XSD
    unchecked, and a route looking for its own profile would find nothing and
    answer OK with nothing applied. Refuse it instead, naming what was expected.
    """
    name = etree.QName(payload)
    found = noun_of_profile_ns(name.namespace or "")
    if noun not in NOUNS:
        return []  # routing refuses an unknown noun with its own code
    allowed = {noun} | _OTHER_PAYLOADS.get(noun, frozenset())
    if found is not None and found == name.localname and found in allowed:
        return []
    expected = " or ".join(f"{{{profile_ns(n)}}}{n}" for n in sorted(allowed))
    return [
        SchemaError(
            xpath=xpath,
            line=_line(payload),
            message=(
                f"Payload element {{{name.namespace or ''}}}{name.localname} is not "
                f"a profile of the noun {noun}: expected {expected}"
            ),
        )
    ]


def _line(element: etree._Element) -> int | None:
    line: object = element.sourceline  # the stubs type it loosely
    return line if isinstance(line, int) else None


# -- xpaths -----------------------------------------------------------------------------

_STEP: Final = re.compile(r"^(?:(?P<prefix>[^:\[\]]+):)?(?P<name>[^:\[\]]+)(?:\[(?P<n>\d+)\])?$")


def local_xpath(element: etree._Element) -> str:
    """An xpath of local names, with ``[n]`` only where a name repeats among siblings."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [
                c for c in parent if isinstance(c.tag, str) and etree.QName(c).localname == name
            ]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/" + "/".join(reversed(steps))


def _friendly_path(doc: etree._ElementTree, path: str) -> str:
    """Turn libxml2's node path (``/*/*[2]/m:Header``) into :func:`local_xpath` form."""
    element = _follow(doc, path)
    return local_xpath(element) if element is not None else path


def _follow(doc: etree._ElementTree, path: str) -> etree._Element | None:
    steps = path.strip("/").split("/")
    if not steps or not steps[0]:
        return None
    current: etree._Element | None = None
    for step in steps:
        m = _STEP.match(step)
        if m is None:
            return None
        name, index = m.group("name"), int(m.group("n") or 1)
        if current is None:
            candidates = [doc.getroot()]
        else:
            children = [c for c in current if isinstance(c.tag, str)]
            if name == "*":
                candidates = children
            else:
                candidates = [c for c in children if etree.QName(c).localname == name]
        if len(candidates) < index:
            return None
        current = candidates[index - 1]
    return current


# -- namespaces -------------------------------------------------------------------------


def normalise_namespaces(tree: etree._ElementTree | etree._Element) -> bool:
    """Rewrite the draft (``www``) envelope namespace to the standard one, in place.

    Returns True if anything was rewritten. Prefixes are kept; only elements in
    the draft namespace are renamed, so a draft-namespace message then validates.
    """
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    draft = "{" + DRAFT_MESSAGE_NS + "}"
    changed = False
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and tag.startswith(draft):
            el.tag = "{" + MESSAGE_NS + "}" + tag[len(draft) :]
            changed = True
    if changed:
        etree.cleanup_namespaces(root)
    return changed
