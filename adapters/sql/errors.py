"""Driver errors -> amihub errors, at the edge of the SQL adapter.

* connection lost / refused, lock timeouts, serialisation failures, deadlocks, a
  statement over ``statement_timeout``, a session ended by
  ``idle_in_transaction_session_timeout`` -> :class:`cim_schemas.errors.StoreUnavailable`
  (recoverable: retry);
* schema missing -> :class:`cim_schemas.errors.ConfigurationError` (run ``amihub`` migrations);
* constraint violations the caller can act on are raised by the repositories as
  :class:`cim_schemas.errors.PayloadInvalid` with a published code (2007 already exists,
  2008 not found, 2009 invalid state change) or
  :class:`cim_schemas.errors.ReplayConflict` (1007); any other integrity or data error
  -> ``PayloadInvalid`` code 2013;
* anything else -> :class:`cim_schemas.errors.PermanentError`, a statement SQLite cannot
  run (``SQLITE_ERROR``: syntax, an unknown or ambiguous column) among them, though
  sqlite3 raises it as an ``OperationalError`` like a locked or unreadable database.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from sqlalchemy import exc as sa_exc

from cim_schemas.errors import (
    AmihubError,
    ConfigurationError,
    PayloadInvalid,
    PermanentError,
    StoreUnavailable,
)

P = ParamSpec("P")
R = TypeVar("R")

ALREADY_EXISTS = "2007"
NOT_FOUND = "2008"
INVALID_STATE = "2009"
BAD_FIELD = "2013"


def already_exists(reason: str) -> PayloadInvalid:
    return PayloadInvalid(reason, code=ALREADY_EXISTS)


def not_found(reason: str) -> PayloadInvalid:
    return PayloadInvalid(reason, code=NOT_FOUND)


def invalid_state(reason: str) -> PayloadInvalid:
    return PayloadInvalid(reason, code=INVALID_STATE)


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    state = getattr(error.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_unique_violation(error: sa_exc.DBAPIError) -> bool:
    if _sqlstate(error) == "23505":
        return True
    return "UNIQUE constraint failed" in str(error.orig)


def translate(error: Exception) -> AmihubError:
    """The amihub error for a driver error (never raises)."""
    if isinstance(error, AmihubError):
        return error
    message = str(getattr(error, "orig", None) or error).strip().splitlines()[0:1]
    text = message[0] if message else type(error).__name__
    if isinstance(error, sa_exc.DBAPIError):
        state = _sqlstate(error)
        if error.connection_invalidated:
            return StoreUnavailable(f"database connection lost: {text}")
        # 57014: a statement cancelled by statement_timeout; 25P03: the session ended by
        # idle_in_transaction_session_timeout ([store] settings): retry later
        if state is not None and (
            state.startswith(("08", "40", "53", "57P")) or state in ("55P03", "57014", "25P03")
        ):
            return StoreUnavailable(f"database unavailable ({state}): {text}")
        if isinstance(error, sa_exc.IntegrityError):
            return PayloadInvalid(f"constraint violated: {text}", code=BAD_FIELD)
        if isinstance(error, sa_exc.DataError):
            return PayloadInvalid(f"value refused by the store: {text}", code=BAD_FIELD)
        if state == "42P01" or "no such table" in text.lower():
            return ConfigurationError(f"the store schema is missing (run migrations): {text}")
        if getattr(error.orig, "sqlite_errorname", None) == "SQLITE_ERROR":
            # SQLite reports a statement it cannot run (a syntax error, an unknown or
            # ambiguous column) as an OperationalError too: a defect, not an outage
            return PermanentError(f"store error: {type(error).__name__}: {text}")
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return StoreUnavailable(f"database unavailable: {text}")
    if isinstance(error, sa_exc.TimeoutError):  # pool exhausted
        return StoreUnavailable(f"no database connection available: {text}")
    return PermanentError(f"store error: {type(error).__name__}: {text}")


@contextmanager
def guard() -> Iterator[None]:
    """Re-raise SQLAlchemy errors as amihub errors."""
    try:
        yield
    except sa_exc.SQLAlchemyError as error:
        raise translate(error) from error


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of :func:`guard`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except sa_exc.SQLAlchemyError as error:
            raise translate(error) from error

    return wrapper
