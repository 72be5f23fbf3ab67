"""The message journal (hub/journal.py) is the only module of hub/ and adapters/ that
writes the message log, its lifecycle, dead letters or the audit log: any other call
of a writing method of those repositories fails this test, naming file and line.

The store adapter (adapters/sql) implements the repositories and is not a caller.
Reads (find, get, list, lifecycle) stay free for the operator interface and the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

#: repository attribute of the unit of work -> its writing methods
WRITERS = {
    "messages": {
        "start",
        "identify",
        "transition",
        "finish",
        "record_steps",
        "conclude_many",
        "record_applied_many",
        "record_answered",
    },
    "dead_letters": {"add", "mark_replayed", "dismiss"},
    "audit": {"record"},
}
JOURNAL = ROOT / "hub" / "journal.py"


def writes(path: Path) -> list[str]:
    """``<file>:<line> <repo>.<method>`` for each write call in the file."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method, owner = node.func.attr, node.func.value
        if isinstance(owner, ast.Attribute) and method in WRITERS.get(owner.attr, ()):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {owner.attr}.{method}")
    return found


def sources() -> list[Path]:
    files = [*(ROOT / "hub").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]
    return [p for p in files if "sql" not in p.relative_to(ROOT).parts[:2]]


def test_only_the_journal_writes_the_message_log_dead_letters_and_audit() -> None:
    offenders = [w for path in sources() if path != JOURNAL for w in writes(path)]
    assert offenders == [], "write through hub.journal.MessageJournal instead"


def test_the_guard_sees_the_journals_own_writes() -> None:
    """The check finds what it looks for (else it could pass on nothing)."""
    found = {w.split(" ", 1)[1] for w in writes(JOURNAL)}
    assert {"messages.start", "dead_letters.add", "audit.record"} <= found
    assert len(sources()) > 50
