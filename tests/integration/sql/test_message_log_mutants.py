"""The message log's one-statement writes, on SQLite and PostgreSQL: an answered get
(``adapters/sql/answered.py``) and a batch of applied changes
(``adapters/sql/applied.py``), every column and lifecycle step as written, a MessageID
repeated by a get not claimed twice, one claimed already refused for a change. `make
mutate` found ``answered.py`` reached by none of the area's tests (docs/testing.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.sql import tables as t
from adapters.sql.uow import SqlUnitOfWork
from cim_schemas.errors import StoreUnavailable
from hub.bootstrap import App
from mdm.ports import AnsweredMessage, AppliedMessage, MessageLogRepository
from tests.unit.hub.conftest import START, make_app

S = timedelta(seconds=1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/log.db"
    else:
        url = request.getfixturevalue("postgres_url")
    app = make_app(url)
    try:
        yield app
    finally:
        app.close()


def utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def stored(app: App, log_id: int) -> dict[str, Any]:
    """The message_log row as stored, every column the writes set."""
    ml = t.message_log
    with app.engine.connect() as conn:
        row = conn.execute(select(ml).where(ml.c.id == log_id)).mappings().one()
    out = {k: v for k, v in row.items() if k != "id"}
    for k in ("received_at", "updated_at"):
        out[k] = utc(out[k])
    if out["reply"] is not None:
        out["reply"] = bytes(out["reply"])
    return out


def steps_of(app: App, log_id: int) -> list[tuple[str, datetime, str | None]]:
    with app.uow_factory() as uow:
        return [(s, utc(a), d) for s, a, d in uow.messages.lifecycle(log_id)]


def answered(message_id: str | None = "g-1", source: str = "cis") -> AnsweredMessage:
    return AnsweredMessage(
        source=source,
        endpoint="soap:/GetMeterReadings",
        content_hash="h" * 64,
        size=1234,
        received_at=START,
        message_id=message_id,
        verb="get",
        noun="MeterReadings",
        correlation_id="corr-1",
        result="OK",
        steps=(
            ("received", START, None),
            ("validated", START + S, None),
            ("dispatched", START + 2 * S, "get MeterReadings"),
            ("replied", START + 3 * S, "OK; reply of 10 bytes"),
        ),
    )


def record_answered(app: App, entry: AnsweredMessage) -> int:
    with app.uow_factory() as uow:
        log_id = uow.messages.record_answered(entry)
        uow.commit()
    return log_id


def test_an_answered_get_is_logged_with_every_column_and_step(app: App) -> None:
    entry = answered()
    log_id = record_answered(app, entry)
    assert stored(app, log_id) == {
        "source": "cis",
        "message_id": "g-1",
        "endpoint": "soap:/GetMeterReadings",
        "verb": "get",
        "noun": "MeterReadings",
        "correlation_id": "corr-1",
        "content_hash": "h" * 64,
        "size": 1234,
        "state": "replied",
        "result": "OK",
        "reply": None,
        "received_at": START,
        "updated_at": START + 3 * S,
    }
    assert steps_of(app, log_id) == list(entry.steps)


def test_a_repeated_get_does_not_claim_its_message_id_again(app: App) -> None:
    first = record_answered(app, answered())
    again_entry = answered()._replace(
        steps=(
            ("received", START, None),
            ("dispatched", START + S, None),
            ("replied", START + 2 * S, "OK"),
        )
    )
    again = record_answered(app, again_entry)
    assert again != first
    row = stored(app, again)
    assert row["message_id"] is None
    assert (row["source"], row["verb"], row["state"], row["result"]) == (
        "cis",
        "get",
        "replied",
        "OK",
    )
    assert steps_of(app, again) == [
        ("received", START, None),
        ("dispatched", START + S, "MessageID g-1 repeated (already logged for this source)"),
        ("replied", START + 2 * S, "OK"),
    ]
    # the first row keeps its MessageID and its steps
    assert stored(app, first)["message_id"] == "g-1"
    assert steps_of(app, first) == list(answered().steps)
    # a third time, with a dispatched detail: the note follows it
    third = record_answered(app, answered())
    assert steps_of(app, third)[2] == (
        "dispatched",
        START + 2 * S,
        "get MeterReadings; MessageID g-1 repeated (already logged for this source)",
    )


def test_a_message_id_is_claimed_per_source_and_a_get_without_one_is_logged(app: App) -> None:
    record_answered(app, answered())
    other = record_answered(app, answered(source="billing"))
    assert stored(app, other)["message_id"] == "g-1"
    assert steps_of(app, other) == list(answered().steps)
    anonymous = record_answered(app, answered(message_id=None))
    assert stored(app, anonymous)["message_id"] is None
    assert steps_of(app, anonymous) == list(answered().steps)  # no repetition noted


def test_an_answered_message_needs_its_final_step(app: App) -> None:
    msg = "an answered message has at least its final step"
    with app.uow_factory() as uow, pytest.raises(ValueError, match=f"^{msg}$"):
        uow.messages.record_answered(answered()._replace(steps=()))


def applied(message_id: str | None, k: int, n_steps: int = 3) -> AppliedMessage:
    at = START + timedelta(minutes=k)
    steps = [("received", at, None), ("validated", at + S, None), ("dispatched", at + 2 * S, "d")]
    return AppliedMessage(
        source="cis",
        endpoint=f"amqp:q{k}",
        content_hash=f"{k:064d}",
        size=100 + k,
        received_at=at,
        message_id=message_id,
        verb="create",
        noun="MeterReadings",
        correlation_id=None if k % 2 else f"c{k}",
        result="OK" if k % 2 else "PARTIAL",
        reply=f"<reply {k}/>".encode(),
        steps=[*steps[: n_steps - 1], ("replied", at + 3 * S, f"r{k}")],
    )


def record_applied(app: App, entries: list[AppliedMessage]) -> list[int]:
    with app.uow_factory() as uow:
        ids = uow.messages.record_applied_many(entries)
        uow.commit()
    return ids


def test_applied_messages_are_logged_in_order_with_their_replies_and_steps(app: App) -> None:
    entries = [applied("m-1", 1), applied(None, 2, n_steps=1), applied("m-3", 3, n_steps=4)]
    ids = record_applied(app, entries)
    assert len(ids) == len(set(ids)) == 3
    assert ids == sorted(ids)
    for log_id, entry in zip(ids, entries, strict=True):
        assert stored(app, log_id) == {
            "source": "cis",
            "message_id": entry.message_id,
            "endpoint": entry.endpoint,
            "verb": "create",
            "noun": "MeterReadings",
            "correlation_id": entry.correlation_id,
            "content_hash": entry.content_hash,
            "size": entry.size,
            "state": "replied",
            "result": entry.result,
            "reply": entry.reply,
            "received_at": entry.received_at,
            "updated_at": entry.steps[-1][1],
        }
        assert steps_of(app, log_id) == list(entry.steps)
    with app.uow_factory() as uow:
        found = uow.messages.find_many([("cis", "m-1"), ("cis", "m-3"), ("cis", "m-9")])
        assert set(found) == {("cis", "m-1"), ("cis", "m-3")}
        m3 = found[("cis", "m-3")]
        assert (m3.id, m3.verb, m3.noun, m3.state, m3.result, m3.reply) == (
            ids[2],
            "create",
            "MeterReadings",
            "replied",
            "OK",
            b"<reply 3/>",
        )
        assert (m3.content_hash, utc(m3.received_at)) == (
            entries[2].content_hash,
            START + 3 * 60 * S,
        )
        assert uow.messages.record_applied_many([]) == []


def test_a_message_id_claimed_already_is_refused_for_a_retry(app: App) -> None:
    record_applied(app, [applied("m-1", 1)])
    claimed = pytest.raises(StoreUnavailable, match="claimed by another process meanwhile")
    with app.uow_factory() as uow, claimed:
        uow.messages.record_applied_many([applied("m-2", 2), applied("m-1", 3)])
    with app.uow_factory() as uow:
        assert set(uow.messages.find_many([("cis", "m-1"), ("cis", "m-2")])) == {("cis", "m-1")}


def test_an_applied_message_needs_its_final_step(app: App) -> None:
    msg = "an applied message has at least its final step"
    with app.uow_factory() as uow, pytest.raises(ValueError, match=f"^{msg}$"):
        uow.messages.record_applied_many([applied("m-1", 1), applied("m-2", 2)._replace(steps=[])])


@pytest.mark.postgres
def test_a_locked_message_log_is_reported_as_unavailable_saying_what_was_done(
    postgres_url: str,
) -> None:
    """The raw-driver statements map a lock timeout (an OperationalError) to
    StoreUnavailable naming what they were doing."""
    import psycopg

    app = make_app(postgres_url)
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE message_log IN ACCESS EXCLUSIVE MODE")
            cases: list[tuple[str, Callable[[MessageLogRepository], object]]] = [
                ("reading messages", lambda m: m.find_many([("cis", "m-1")])),
                ("logging messages", lambda m: m.record_applied_many([applied("m-1", 1)])),
                ("logging a message", lambda m: m.record_answered(answered())),
            ]
            for doing, call in cases:
                with app.uow_factory() as uow:
                    assert isinstance(uow, SqlUnitOfWork)
                    uow.connection.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
                    with pytest.raises(StoreUnavailable) as refused:
                        call(uow.messages)
                assert str(refused.value).startswith(f"database unavailable while {doing}: ")
                assert "lock timeout" in str(refused.value)
    finally:
        app.close()
