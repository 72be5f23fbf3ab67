"""Undo a vendor's deviations from the IEC 61968-9 profiles before the hub parses a message.

Real head-ends send documents that are almost the standard: a draft namespace
(``http://www.iec.ch/TC57/2011/...``), an element out of its xs:sequence place
(``Meter`` before ``IntervalBlocks``), a vendor name for a standard element, an
extension element the schema does not allow. A ``cim-variant`` spec lists
these; :func:`normalise` rewrites a parsed tree so it validates::

    tree = cim_schemas.xml.parse_bytes(body)           # hardened parser, as always
    normalise(catalog.variant("vendor-x"), tree)       # in place
    body = etree.tostring(tree)                        # or go on with the tree

Order of the steps: namespaces, drop, rename, reorder (names in ``drop``,
``rename`` and ``reorder`` are local names, so they need no namespace).
"""

from __future__ import annotations

from lxml import etree

from mappings.spec import CimVariantSpec


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return None, tag


def normalise(spec: CimVariantSpec, tree: etree._ElementTree | etree._Element) -> int:
    """Rewrite the tree in place; return the number of changes made."""
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    changes = 0
    ns_map = spec.namespaces
    drop = set(spec.drop)
    renames = [(r.element, r.to, r.parent) for r in spec.rename]
    original_nsmap = dict(root.nsmap)
    orders = {r.parent: {name: i for i, name in enumerate(r.children)} for r in spec.reorder}

    if ns_map:
        for el in root.iter(tag=etree.Element):
            uri, local = _split(el.tag)
            if uri in ns_map:
                el.tag = f"{{{ns_map[uri]}}}{local}"
                changes += 1
            for raw in list(el.attrib):
                name = raw.decode() if isinstance(raw, bytes) else raw
                a_uri, a_local = _split(name)
                if a_uri in ns_map:
                    el.attrib[f"{{{ns_map[a_uri]}}}{a_local}"] = el.attrib.pop(name)
                    changes += 1
    if drop:
        doomed = [
            el
            for el in root.iter(tag=etree.Element)
            if _split(el.tag)[1] in drop and el is not root
        ]
        for el in doomed:
            parent = el.getparent()
            if parent is not None:
                _remove_keeping_tail(parent, el)
                changes += 1
    if renames:
        for el in root.iter(tag=etree.Element):
            uri, local = _split(el.tag)
            parent = el.getparent()
            parent_local = _split(parent.tag)[1] if parent is not None else None
            for old, new, only_under in renames:
                if local == old and (only_under is None or only_under == parent_local):
                    el.tag = f"{{{uri}}}{new}" if uri else new
                    changes += 1
                    break
    if orders:
        for el in list(root.iter(tag=etree.Element)):  # moving children: iterate a copy
            order = orders.get(_split(el.tag)[1])
            if order is None or len(el) < 2:
                continue
            children = [c for c in el if isinstance(c.tag, str)]
            ranked = sorted(
                enumerate(children),
                key=lambda p: (order.get(_split(p[1].tag)[1], len(order)), p[0]),
            )
            new_order = [c for _, c in ranked]
            if new_order != children:
                for child in new_order:
                    el.append(child)  # append moves an element: the order is rebuilt
                changes += 1
    if ns_map:
        # declare the standard URIs under the vendor's prefixes at the top, drop the old ones
        top = {p: ns_map.get(u, u) for p, u in original_nsmap.items() if p is not None}
        etree.cleanup_namespaces(root, top_nsmap=top)
    return changes


def _remove_keeping_tail(parent: etree._Element, el: etree._Element) -> None:
    tail = el.tail
    previous = el.getprevious()
    parent.remove(el)
    if tail and tail.strip():
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
