"""``amihub mappings check DIR``: validate a folder of mapping specs and code tables."""

from __future__ import annotations

from pathlib import Path

from mappings.load import scan_dir


def check_dir(path: str | Path) -> list[str]:
    """Every problem of the folder's ``*.toml`` files as ``file:line: key: message``; [] = fine."""
    _, problems = scan_dir(path)
    return [str(p) for p in problems]
