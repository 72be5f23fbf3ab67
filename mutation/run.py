"""`make mutate`: mutmut over the security- and data-critical areas (docs/testing.md).

Each area of ``mutation/areas.toml`` runs in a directory of its own under
``build/mutate/<area>``: links to the packages and the tests, and the project's
pyproject.toml with a ``[tool.mutmut]`` section naming the area's files and its tests
(mutmut reads its configuration from the working directory and keeps its copy of the
tree, ``mutants/``, and its results there). So each area runs only the tests meant for
it, and its results stay when another area runs. Then mutmut runs the area's
functions (mutant-name patterns) with one worker, and the score per area and every
surviving mutant with its diff go to stdout and ``build/mutate/report.md``.

    python mutation/run.py                 # every area
    python mutation/run.py dst parser      # some areas
    python mutation/run.py --report-only   # the report of the last runs
    python mutation/run.py --resume dst    # on after an interruption (sources unchanged)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AREAS = ROOT / "mutation" / "areas.toml"
WORK = ROOT / "build" / "mutate"
PACKAGES = ["hub", "adapters", "cim_schemas", "mdm", "hes", "mappings"]
#: copied next to the packages: what the tests read besides the code
ALSO = ["tests", "docs", "README.md"]
LINKED = PACKAGES + ALSO

#: mutmut's exit codes of a mutant's test run, as mutmut.stats.status_by_exit_code
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "caught by type check",
    None: "not checked",
}
COLUMNS = ["killed", "timeout", "survived", "no tests", "not checked", "other"]


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def prepare(name: str, area: dict[str, Any]) -> Path:
    """The area's directory: links to the tree, pyproject.toml with its [tool.mutmut]."""
    where = WORK / name
    where.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = where / entry
        if not link.is_symlink():
            link.symlink_to(ROOT / entry)
    section = (
        "\n[tool.mutmut]\n"
        f"source_paths = {toml_list(PACKAGES)}\n"
        f"only_mutate = {toml_list(area['files'])}\n"
        f"also_copy = {toml_list(ALSO)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(area['tests'])}\n"
    )
    text = (ROOT / "pyproject.toml").read_text() + section
    target = where / "pyproject.toml"
    if not target.exists() or target.read_text() != text:  # unchanged keeps mutmut's cache
        target.write_text(text)
    return where


def run(name: str, area: dict[str, Any], *, resume: bool = False) -> float:
    where = prepare(name, area)
    mutmut = Path(sys.executable).parent / "mutmut"
    names = area["patterns"]
    if resume:  # only the mutants an interrupted run did not get to
        names = sorted(k for k, (s, _) in results(name, area).items() if s == "not checked")
        if not names:
            return 0.0
    print(f"== {name}: {area['title']} ({len(names)} names)", flush=True)
    start, used = time.monotonic(), _cpu()
    # the venv's own mutmut with the patterns of mutation/areas.toml
    done = subprocess.run(  # noqa: S603
        [str(mutmut), "run", "--max-children", "1", *names],
        cwd=where,
        check=False,
    )
    seconds, cpu = time.monotonic() - start, _cpu() - used
    if done.returncode != 0:
        raise SystemExit(f"mutmut failed on area {name} (exit {done.returncode})")
    if not resume:
        (where / "seconds").write_text(f"{seconds:.0f} s ({cpu:.0f} s CPU)\n")
    return seconds


def _cpu() -> float:
    """CPU seconds of the finished child processes (mutmut and its forks)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _matches(key: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(key, p) for p in patterns)


def results(name: str, area: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """mutant name -> (status, file), for the mutants of the area's patterns."""
    out: dict[str, tuple[str, str]] = {}
    for path in area["files"]:
        meta = WORK / name / "mutants" / (path + ".meta")
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for key, code in codes.items():
            if _matches(key, area["patterns"]):
                out[key] = (STATUS.get(code, "other"), path)
    return out


def diff(name: str, key: str, path: str) -> str:
    """The mutant's diff, as ``mutmut show`` prints it (in-process: one start, not one a mutant)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = Path.cwd()
    os.chdir(WORK / name)
    try:
        return str(get_diff_for_mutant(key, path=path))
    finally:
        os.chdir(here)


def report(areas: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# mutmut over the critical areas",
        "",
        "| area | killed | timeout | survived | no tests | not checked | other | total "
        "| score (of those tried) | run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    survivors: list[tuple[str, str, str]] = []
    total: Counter[str] = Counter()
    for name, area in areas.items():
        status = results(name, area)
        if not status:
            continue
        counts = Counter(s if s in COLUMNS else "other" for s, _ in status.values())
        total.update(counts)
        tested = sum(counts.values()) - counts["not checked"]
        score = 100 * (counts["killed"] + counts["timeout"]) / max(tested, 1)
        took_file = WORK / name / "seconds"
        took = took_file.read_text().strip() if took_file.exists() else ""
        cells = " | ".join(str(counts[c]) for c in COLUMNS)
        lines.append(f"| {name} | {cells} | {sum(counts.values())} | {score:.1f} % | {took} |")
        survivors += [
            (name, key, path)
            for key, (s, path) in sorted(status.items())
            if s in ("survived", "no tests")
        ]
    tested = sum(total.values()) - total["not checked"]
    if tested:
        score = 100 * (total["killed"] + total["timeout"]) / tested
        cells = " | ".join(str(total[c]) for c in COLUMNS)
        lines.append(f"| **all** | {cells} | {sum(total.values())} | {score:.1f} % | |")
    lines += ["", f"## Surviving mutants ({len(survivors)})", ""]
    for name, key, path in survivors:
        lines += [f"### {key} ({name})", "", "```diff", diff(name, key, path), "```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", help="areas of mutation/areas.toml (default: all)")
    parser.add_argument("--report-only", action="store_true", help="no run, the last results")
    parser.add_argument(
        "--resume", action="store_true", help="run only the mutants an interrupted run left"
    )
    args = parser.parse_args()
    areas: dict[str, dict[str, Any]] = tomllib.loads(AREAS.read_text())["areas"]
    unknown = set(args.areas) - set(areas)
    if unknown:
        raise SystemExit(f"unknown areas {sorted(unknown)}; known: {sorted(areas)}")
    chosen = {n: areas[n] for n in args.areas} if args.areas else areas  # in the order given
    os.environ.setdefault("CI", "true")  # a missing PostgreSQL or RabbitMQ fails, never skips
    if not args.report_only:
        for name, area in chosen.items():
            run(name, area, resume=args.resume)
    text = report(areas)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "report.md").write_text(text)
    print(text)
    print(f"written to {(WORK / 'report.md').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
