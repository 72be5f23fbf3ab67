"""Readings have one way in: StoreMeterReadings through the bus, whose handler calls
``uow.readings.ingest``; the store's two write paths stay inside adapters/sql.

Read from the source (every module of the project's packages and the benchmarks):

* ``.ingest(`` on a reading repository: mdm/handlers.py only;
* the staged path (``.staging()``, ``SqlReadingStaging``) and the direct path
  (``adapters.sql.direct``, ``SqlDirectReadingWriter``, ``KeyConflict``): adapters/sql only
  (the head-end's readings go through the bus too: hub/headend_store.py, hub/push_store.py);
* the words of the old caller-side choice (``direct=``, ``allow_direct``,
  ``FastPathConflict``, ``direct_writer``) nowhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "adapters", "cim_schemas", "mdm", "hes", "mappings", "bench")

#: the head-end's writers that still stage their readings themselves

STORE_PATHS = {"SqlReadingStaging", "SqlDirectReadingWriter", "KeyConflict"}
GONE = {"FastPathConflict", "allow_direct", "direct_writer"}


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            out.append((name, ast.parse(path.read_text(encoding="utf-8"), name)))
    return out


MODULES = _modules()


def _calls(tree: ast.Module, attribute: str) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attribute
    ]


def _names(tree: ast.Module) -> set[str]:
    """Every name, attribute, keyword and imported name the module uses."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            out.add(node.arg)
        elif isinstance(node, ast.ImportFrom):
            out.add(node.module or "")
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_the_scan_sees_the_project() -> None:
    names = {name for name, _ in MODULES}
    assert {"mdm/handlers.py", "adapters/sql/ingest.py", "hub/pipeline.py"} <= names
    assert len(names) > 100


def test_readings_go_in_through_the_handler_only() -> None:
    callers = {
        name
        for name, tree in MODULES
        for line in _calls(tree, "ingest")
        if not name.startswith("adapters/sql/")
    }
    assert callers == {"mdm/handlers.py"}


def test_the_write_paths_stay_in_the_store() -> None:
    outside = {
        f"{name}:{line}"
        for name, tree in MODULES
        if not name.startswith("adapters/sql/")
        for line in _calls(tree, "staging")
    }
    assert outside == set()
    named = {
        name: sorted(_names(tree) & (STORE_PATHS | {"adapters.sql.direct"}))
        for name, tree in MODULES
        if not name.startswith("adapters/sql/")
    }
    assert {name: found for name, found in named.items() if found} == {}


def test_callers_never_choose_a_write_path() -> None:
    found = {name: sorted(_names(tree) & GONE) for name, tree in MODULES}
    assert {name: words for name, words in found.items() if words} == {}
    for name, tree in MODULES:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == (
                "StoreMeterReadings"
            ):
                assert [k.arg for k in node.keywords] in ([], ["feed"], ["utility_id", "feed"]), (
                    name,
                    node.lineno,
                )
