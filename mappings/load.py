"""Load mapping specs and code tables from TOML, with errors that give file, line and key.

``load_spec(path)`` reads one file; ``load_dir(path)`` reads a folder into a
:class:`Catalog` and resolves the code tables the specs name. Built-in tables
are always there: ``obis``, ``obis-15min`` and ``obis-60min`` generated from
:mod:`cim_schemas.codes.reading_type`, and the tables shipped in
``mappings/specs``; a folder's own table of the same name replaces one.
Every problem becomes a :class:`SpecProblem`; a :class:`SpecError`
(a :class:`cim_schemas.errors.ConfigurationError`) carries them all.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cim_schemas.errors import ConfigurationError
from mappings.spec import (
    KINDS,
    AnySpec,
    CimVariantSpec,
    CodeTable,
    CsvEventsSpec,
    CsvSpec,
    ExportCsvSpec,
    ExportXmlSpec,
    Loc,
    XmlEventsSpec,
    XmlSpec,
)

BUILTIN_DIR = Path(__file__).parent / "specs"

Spec = (
    CsvSpec
    | CsvEventsSpec
    | XmlSpec
    | XmlEventsSpec
    | ExportCsvSpec
    | ExportXmlSpec
    | CimVariantSpec
)

_ADAPTER: TypeAdapter[Spec | CodeTable] = TypeAdapter(AnySpec)


@dataclass(frozen=True)
class SpecProblem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpecError(ConfigurationError):
    """One or more mapping spec files are wrong; ``problems`` names file, line and key."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------- key -> line

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_TABLE_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_KEYVAL_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_INLINE_KEY_RE = re.compile(rf"[{{,]\s*({_KEY})\s*=")


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(_KEY, dotted)
    return [p[1:-1] if p[:1] in {'"', "'"} else p for p in parts]


def key_lines(text: str) -> dict[Loc, int]:
    """Map each key path (as pydantic reports it) to the 1-based line that defines it.

    Understands tables, arrays of tables (their index becomes part of the path),
    dotted keys and the first level of inline tables. Good enough for finding a
    key in a hand-written spec; the TOML parser has already checked the syntax.
    """
    lines: dict[Loc, int] = {}
    current: tuple[str | int, ...] = ()
    array_counts: dict[tuple[str | int, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0] if '"' not in raw and "'" not in raw else raw
        m = _TABLE_RE.match(line)
        if m:
            path = tuple(_split_key(m.group(2)))
            if m.group(1) == "[[":
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                current = (*path, index)
            else:
                current = path
            lines.setdefault(current, number)
            if current[-1:] and isinstance(current[-1], int):
                lines.setdefault(current[:-1], number)
            continue
        m = _KEYVAL_RE.match(line)
        if m:
            key = (*current, *_split_key(m.group(1)))
            lines.setdefault(key, number)
            rest = line[m.end() :]
            for inner in _INLINE_KEY_RE.finditer(rest):
                lines.setdefault((*key, *_split_key(inner.group(1))), number)
    return lines


def find_line(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the longest prefix of ``loc`` that the file defines."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _loc_text(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- loading


def _clean_loc(loc: tuple[Any, ...], kind: str | None) -> Loc:
    """Drop the discriminator tag pydantic puts first (``('csv', 'csv', 'delimeter')``)."""
    items = tuple(x for x in loc if isinstance(x, str | int))
    if kind is not None and items[:1] == (kind,):
        items = items[1:]
    return items


def _problems_from_validation(
    exc: ValidationError, name: str, lines: dict[Loc, int], kind: str | None
) -> list[SpecProblem]:
    out: list[SpecProblem] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]), kind)
        key = _loc_text(loc)
        if err["type"] == "extra_forbidden":
            message = f"unknown key {str(loc[-1])!r}" if loc else "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"]
        line = find_line(lines, loc)
        if err["type"] == "missing":
            line = find_line(lines, loc[:-1])
        out.append(SpecProblem(name, line, key, message))
    return out


def parse_spec_text(text: str, name: str) -> tuple[Spec | CodeTable, dict[Loc, int]]:
    """Parse and validate one spec; cross-file checks (tables) are left to the caller."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise SpecError(
            [SpecProblem(name, int(m.group(1)) if m else None, "", f"not valid TOML: {exc}")]
        ) from exc
    lines = key_lines(text)
    kind = data.get("kind")
    if kind not in KINDS:
        raise SpecError(
            [
                SpecProblem(
                    name,
                    find_line(lines, ("kind",)),
                    "kind",
                    f"kind must be one of {', '.join(KINDS)}; got {kind!r}",
                )
            ]
        )
    try:
        spec = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise SpecError(_problems_from_validation(exc, name, lines, str(kind))) from exc
    return spec, lines


def _cross(
    spec: Spec | CodeTable, lines: dict[Loc, int], name: str, tables: dict[str, CodeTable] | None
) -> list[SpecProblem]:
    return [
        SpecProblem(name, find_line(lines, loc), _loc_text(loc), message)
        for loc, message in spec.cross_check(tables)
    ]


def cim_tables() -> dict[str, CodeTable]:
    """The OBIS tables of :mod:`cim_schemas.codes.reading_type` (the one source of truth).

    ``obis``: registers and instantaneous values; ``obis-15min`` / ``obis-60min``: the
    same OBIS codes read from a 15- or 60-minute load profile (interval deltas).
    """
    from cim_schemas.codes.reading_type import obis_table

    names = {None: "obis", 15: "obis-15min", 60: "obis-60min"}
    codes: dict[str, dict[str, str]] = {name: {} for name in names.values()}
    for row in obis_table():
        name = names.get(row.interval_minutes)
        if name is not None:
            codes[name].setdefault(row.obis, str(row.reading_type))
    return {
        name: CodeTable(
            kind="code-table",
            name=name,
            description="built in: cim_schemas.codes.reading_type",
            keys="obis",
            values="reading-type",
            codes=table,
        )
        for name, table in codes.items()
    }


def builtin_tables() -> dict[str, CodeTable]:
    """The OBIS tables of cim_schemas, then the code tables shipped in ``mappings/specs``."""
    tables = cim_tables()
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        spec, _ = parse_spec_text(path.read_text(encoding="utf-8"), str(path))
        if isinstance(spec, CodeTable):
            tables[spec.name] = spec
    return tables


def load_spec(path: str | Path, tables: dict[str, CodeTable] | None = None) -> Spec | CodeTable:
    """Load one spec file; table names are checked against ``tables`` (default: built-in)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecProblem(str(p), None, "", f"cannot read: {exc}")]) from exc
    spec, lines = parse_spec_text(text, str(p))
    known = builtin_tables() if tables is None else tables
    if isinstance(spec, CodeTable):
        known = {**known, spec.name: spec}
    problems = _cross(spec, lines, str(p), known)
    if problems:
        raise SpecError(problems)
    return spec


@dataclass
class Catalog:
    """The specs and code tables of one folder (plus the built-in tables)."""

    specs: dict[str, Spec] = field(default_factory=dict)
    tables: dict[str, CodeTable] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def inbound(self, name: str) -> CsvSpec | XmlSpec:
        spec = self.specs.get(name)
        if not isinstance(spec, CsvSpec | XmlSpec):
            raise ConfigurationError(f"no inbound mapping named {name!r}")
        return spec

    def events(self, name: str) -> CsvEventsSpec | XmlEventsSpec:
        spec = self.specs.get(name)
        if not isinstance(spec, CsvEventsSpec | XmlEventsSpec):
            raise ConfigurationError(f"no event mapping named {name!r}")
        return spec

    def variant(self, name: str) -> CimVariantSpec:
        spec = self.specs.get(name)
        if not isinstance(spec, CimVariantSpec):
            raise ConfigurationError(f"no CIM variant named {name!r}")
        return spec

    def export(self, name: str) -> ExportCsvSpec | ExportXmlSpec:
        spec = self.specs.get(name)
        if not isinstance(spec, ExportCsvSpec | ExportXmlSpec):
            raise ConfigurationError(f"no export mapping named {name!r}")
        return spec


def scan_dir(path: str | Path) -> tuple[Catalog, list[SpecProblem]]:
    """Load every ``*.toml`` of a folder; return what loaded and every problem found."""
    folder = Path(path)
    problems: list[SpecProblem] = []
    builtin = folder.resolve() == BUILTIN_DIR.resolve()
    catalog = Catalog(tables=cim_tables() if builtin else builtin_tables())
    if not folder.is_dir():
        return catalog, [SpecProblem(str(folder), None, "", "not a folder")]
    parsed: list[tuple[Path, Spec | CodeTable, dict[Loc, int]]] = []
    own_tables: dict[str, Path] = {}  # a folder's table replaces a built-in one of its name
    for file in sorted(folder.glob("*.toml")):
        try:
            spec, lines = parse_spec_text(file.read_text(encoding="utf-8"), str(file))
        except SpecError as exc:
            problems += exc.problems
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(SpecProblem(str(file), None, "", f"cannot read: {exc}"))
            continue
        parsed.append((file, spec, lines))
        if isinstance(spec, CodeTable):
            if spec.name in own_tables:
                problems.append(
                    SpecProblem(
                        str(file),
                        find_line(lines, ("name",)),
                        "name",
                        f"code table {spec.name!r} is also defined in {own_tables[spec.name]}",
                    )
                )
            own_tables[spec.name] = file
            catalog.tables[spec.name] = spec
    for file, spec, lines in parsed:
        found = _cross(spec, lines, str(file), catalog.tables)
        problems += found
        if found or isinstance(spec, CodeTable):
            continue
        if spec.name in catalog.specs:
            problems.append(
                SpecProblem(
                    str(file),
                    find_line(lines, ("name",)),
                    "name",
                    f"mapping {spec.name!r} is also defined in {catalog.files[spec.name]}",
                )
            )
            continue
        catalog.specs[spec.name] = spec
        catalog.files[spec.name] = file
    return catalog, problems


def load_dir(path: str | Path) -> Catalog:
    """Load a folder of specs; raise :class:`SpecError` listing every problem."""
    catalog, problems = scan_dir(path)
    if problems:
        raise SpecError(problems)
    return catalog
