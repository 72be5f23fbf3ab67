"""The outbox table: rows written with the change they report, delivered afterwards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from adapters.sql import tables as t
from adapters.sql.errors import guarded
from adapters.sql.registry import _Repo, utcnow
from mdm.ports import OutboxItem

_O = t.outbox


class SqlOutboxRepository(_Repo):
    @guarded
    def enqueue(
        self,
        *,
        channel: str,
        destination: str,
        verb: str,
        noun: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> int:
        now = utcnow()
        new_id = self._conn.execute(
            insert(_O)
            .values(
                channel=channel,
                destination=destination,
                verb=verb,
                noun=noun,
                body=bytes(body),
                headers=dict(headers or {}),
                correlation_id=correlation_id,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .returning(_O.c.id)
        ).scalar_one()
        return int(new_id)

    @guarded
    def claim_due(self, channel: str, now: datetime, limit: int) -> list[OutboxItem]:
        stmt = (
            select(_O)
            .where(_O.c.channel == channel, _O.c.state == "pending", _O.c.next_attempt_at <= now)
            .order_by(_O.c.id)
            .limit(limit)
        )
        if self._conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return [
            OutboxItem(
                id=int(r.id),
                channel=r.channel,
                destination=r.destination,
                verb=r.verb,
                noun=r.noun,
                body=bytes(r.body),
                headers=dict(r.headers or {}),
                correlation_id=r.correlation_id,
                attempts=int(r.attempts),
                created_at=r.created_at,
            )
            for r in self._conn.execute(stmt)
        ]

    @guarded
    def mark_sent(self, item_id: int, at: datetime) -> None:
        self._conn.execute(
            update(_O)
            .where(_O.c.id == item_id)
            .values(state="sent", sent_at=at, attempts=_O.c.attempts + 1)
        )

    @guarded
    def mark_failed(self, item_id: int, error: str, retry_at: datetime | None) -> None:
        values: dict[str, Any] = {"attempts": _O.c.attempts + 1, "last_error": error[:2000]}
        if retry_at is None:
            values["state"] = "dead"
        else:
            values["next_attempt_at"] = retry_at
        self._conn.execute(update(_O).where(_O.c.id == item_id).values(values))

    @guarded
    def pending_count(self, channel: str | None = None) -> int:
        stmt = select(func.count()).select_from(_O).where(_O.c.state == "pending")
        if channel is not None:
            stmt = stmt.where(_O.c.channel == channel)
        return int(self._conn.execute(stmt).scalar_one())
