"""Named entries of the settings (``[[hes.read_schedules]]``, ``[[vee.rules]]``): every
problem of an entry reported with its name, and names unique in their list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError, ValidatorFunctionWrapHandler


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def problem(error: Any) -> str:
    """One pydantic error as ``location: message`` (a ValueError's own text)."""
    ctx = error.get("ctx") or {}
    message = str(ctx["error"]) if error.get("type") == "value_error" else str(error["msg"])
    loc = ".".join(str(p) for p in error.get("loc", ()))
    return f"{loc}: {message}" if loc else message


def validate_named(what: str, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The body of a ``mode="wrap"`` model validator: the entry's problems in one
    ValueError, labelled ``what 'name'``."""
    try:
        return handler(data)
    except ValidationError as exc:
        name = data.get("name") if isinstance(data, dict) else None
        problems = "; ".join(problem(e) for e in exc.errors())
        label = f"{what} {name!r}" if isinstance(name, str) else what
        raise ValueError(f"{label}: {problems}") from None


def unique_names(what: str, why: str) -> Callable[[list[N]], list[N]]:
    """An AfterValidator refusing a name given twice in the list."""

    def check(entries: list[N]) -> list[N]:
        seen: set[str] = set()
        for entry in entries:
            if entry.name in seen:
                raise ValueError(f"{what} {entry.name!r} is defined twice ({why})")
            seen.add(entry.name)
        return entries

    return check
