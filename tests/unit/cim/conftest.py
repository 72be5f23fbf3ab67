"""Fixtures of the cim_schemas tests: golden files and a validity check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from cim_schemas import schemas
from cim_schemas.xml import parse_bytes

DATA = Path(__file__).parent / "data"


@pytest.fixture
def golden() -> Callable[[str], etree._ElementTree]:
    """Parse a golden file with the hardened parser (draft namespace normalised)."""

    def load(name: str) -> etree._ElementTree:
        tree = parse_bytes((DATA / name).read_bytes())
        schemas.normalise_namespaces(tree)
        return tree

    return load


@pytest.fixture
def assert_valid() -> Callable[[bytes | etree._Element], etree._Element]:
    """Validate rendered output against our XSDs; return its (re-parsed) root."""

    def check(doc: bytes | etree._Element) -> etree._Element:
        data = doc if isinstance(doc, bytes) else etree.tostring(doc)
        tree = parse_bytes(data)
        problems = schemas.validate(tree)
        assert problems == [], problems
        return tree.getroot()

    return check
