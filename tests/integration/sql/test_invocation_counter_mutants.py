"""The invocation counter store on SQLite and PostgreSQL: an update stays in its channel
and says when it happened. `make mutate` found both untested (docs/testing.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from mdm.security_counters import MAX_COUNTER, CounterChannel, CounterClaim, CounterDecision

A = bytes.fromhex("414d480000000001")
PUSH, RESPONSE = CounterChannel.PUSH, CounterChannel.RESPONSE
T1 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlUnitOfWorkFactory]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/counters.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine: Engine = make_engine(url)
    upgrade(engine)
    try:
        yield SqlUnitOfWorkFactory(engine)
    finally:
        engine.dispose()


def advance(
    factory: SqlUnitOfWorkFactory, channel: CounterChannel, n: int, at: datetime
) -> CounterDecision:
    with factory() as uow:
        (decision,) = uow.invocation_counters.advance(channel, [CounterClaim(A, n)], at)
        uow.commit()
    return decision


def test_an_update_stays_in_its_channel_and_is_dated(factory: SqlUnitOfWorkFactory) -> None:
    assert advance(factory, PUSH, 5, T1).accepted
    assert advance(factory, RESPONSE, 100, T1).accepted
    # decided against this channel's row (5), not the other's (100), and stored there
    assert advance(factory, PUSH, 9, T2) == CounterDecision(True, 5)
    with factory() as uow:
        counters = uow.invocation_counters
        assert counters.last(PUSH) == {A: 9}
        assert counters.last(RESPONSE) == {A: 100}
        assert counters.last(PUSH, changed_since=T2) == {A: 9}
        assert counters.last(RESPONSE, changed_since=T2) == {}
        assert counters.last(PUSH, changed_since=T2 + timedelta(seconds=1)) == {}


def test_more_titles_than_a_statement_names(factory: SqlUnitOfWorkFactory) -> None:
    # CHUNK (1000) system titles a statement: 2001 need three
    titles = [bytes.fromhex(f"414d48{i:010x}") for i in range(2001)]
    with factory() as uow:
        first = uow.invocation_counters.advance(PUSH, [CounterClaim(t, 5) for t in titles], T1)
        uow.commit()
    assert all(d.accepted for d in first)
    with factory() as uow:
        again = uow.invocation_counters.advance(PUSH, [CounterClaim(t, 4) for t in titles], T2)
        uow.commit()
    assert [d.last for d in again] == [5] * len(titles)
    assert not any(d.accepted for d in again)


def test_a_claim_is_checked_when_made() -> None:
    assert CounterClaim(A, 0).invocation_counter == 0
    assert CounterClaim(A, MAX_COUNTER).invocation_counter == MAX_COUNTER
    with pytest.raises(ValueError) as caught:
        CounterClaim(b"", 1)
    assert str(caught.value) == "counter claim: system title (empty) is 0 bytes, not 8"
    with pytest.raises(ValueError, match=r"is outside 0\.\.4294967295$"):
        CounterClaim(A, -1)


def test_an_update_leaves_the_other_channels_lower_counter(
    factory: SqlUnitOfWorkFactory,
) -> None:
    assert advance(factory, PUSH, 5, T1).accepted
    assert advance(factory, RESPONSE, 3, T1).accepted
    assert advance(factory, PUSH, 9, T2).accepted
    with factory() as uow:
        assert uow.invocation_counters.last(RESPONSE) == {A: 3}
