"""The invocation counter store (``uow.invocation_counters``) on SQLite and PostgreSQL:
decisions in order, the stored counter only going forward, and two transactions given
the same counter: the second waits for the first and is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from mdm.security_counters import CounterChannel, CounterClaim, CounterDecision

A = bytes.fromhex("414d480000000001")
B = bytes.fromhex("414d480000000002")
PUSH = CounterChannel.PUSH
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/counters.db"
    else:
        url = request.getfixturevalue("postgres_url")
    e = make_engine(url)
    upgrade(e)
    try:
        yield e
    finally:
        e.dispose()


def advance(factory: SqlUnitOfWorkFactory, *claims: tuple[bytes, int]) -> list[CounterDecision]:
    with factory() as uow:
        decided = uow.invocation_counters.advance(
            PUSH, [CounterClaim(st, c) for st, c in claims], AT
        )
        uow.commit()
    return decided


def test_decisions_in_order_and_the_stored_counter_goes_forward_only(engine: Engine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    first = advance(factory, (A, 5), (A, 7), (A, 6), (B, 3))
    assert first == [
        CounterDecision(True, None),
        CounterDecision(True, 5),
        CounterDecision(False, 7),  # behind an earlier claim of the same call
        CounterDecision(True, None),
    ]
    with factory() as uow:
        assert uow.invocation_counters.last(PUSH) == {A: 7, B: 3}
        assert uow.invocation_counters.last(PUSH, [B]) == {B: 3}
        assert uow.invocation_counters.last(CounterChannel.RESPONSE) == {}  # channels apart
    second = advance(factory, (A, 7), (B, 2), (B, 4), (A, 8))
    assert second == [
        CounterDecision(False, 7),  # the same counter again: a replay
        CounterDecision(False, 3),  # rewound
        CounterDecision(True, 3),
        CounterDecision(True, 7),
    ]
    with factory() as uow:
        assert uow.invocation_counters.last(PUSH) == {A: 8, B: 4}
    # a rolled-back decision leaves the stored counters as they were
    with factory() as uow:
        assert uow.invocation_counters.advance(PUSH, [CounterClaim(A, 100)], AT)[0].accepted
        uow.rollback()
    assert advance(factory, (A, 9)) == [CounterDecision(True, 8)]


def test_bad_claims_are_named() -> None:
    with pytest.raises(ValueError, match=r"system title 414d48 is 3 bytes, not 8"):
        CounterClaim(b"AMH", 1)
    with pytest.raises(ValueError, match=r"of 414d480000000001: invocation counter -1 is outside"):
        CounterClaim(A, -1)
    with pytest.raises(ValueError, match=r"invocation counter 4294967296 is outside 0\.\."):
        CounterClaim(A, 2**32)


@pytest.mark.parametrize("known", [False, True], ids=["new system title", "stored row"])
def test_two_transactions_given_one_counter_accept_it_once(engine: Engine, known: bool) -> None:
    """The second transaction waits for the first (a row lock on PostgreSQL, the write
    lock on SQLite) and, once the first commits, is refused."""
    factory = SqlUnitOfWorkFactory(engine)
    if known:
        advance(factory, (A, 10))
    second: list[CounterDecision] = []
    failure: list[BaseException] = []

    def other_process() -> None:
        try:
            second.extend(advance(factory, (A, 11)))
        except BaseException as exc:  # reported by the test below
            failure.append(exc)

    with factory() as uow:
        assert uow.invocation_counters.advance(PUSH, [CounterClaim(A, 11)], AT)[0].accepted
        thread = threading.Thread(target=other_process)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the second decision did not wait for the first"
        uow.commit()
    thread.join(30)
    assert not failure, failure
    assert second == [CounterDecision(False, 11)]
    with factory() as uow:
        assert uow.invocation_counters.last(PUSH) == {A: 11}
