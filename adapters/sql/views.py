"""The operator interface's read models on SQLAlchemy Core (mdm/views.py).

Each method is one or a few set-based statements on a connection of its own (no unit
of work: nothing here is part of a change, except a dead letter's dismissal, which
commits itself).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    func,
    literal,
    or_,
    select,
    text,
)

from adapters.sql import tables as t
from adapters.sql.errors import guard
from adapters.sql.registry import event_from_row
from cim_schemas.codes import event_type as et
from mdm.model import EndDeviceEvent
from mdm.views import RelayState, SearchHit, StoreFigures

_RELAY = {str(et.REMOTE_CONNECTED): "connected", str(et.REMOTE_DISCONNECTED): "disconnected"}
#: the security events the head-end raises (association refused, bad tag, replay, ...)
SECURITY_TYPES = sorted(str(getattr(et, name)) for name in dir(et) if name.startswith("SECURITY_"))


def _like(value: str) -> str:
    escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SqlOperatorViews:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def search(self, utility_id: int, text_: str, limit: int = 25) -> list[SearchHit]:
        needle = text_.strip()
        if not needle:
            return []
        pattern = _like(needle)
        d, u, i = t.end_device, t.usage_point, t.installation
        open_inst = and_(i.c.end_at.is_(None))
        meters = (
            select(
                literal("meter").label("kind"),
                d.c.mrid,
                d.c.name,
                d.c.serial_number,
                d.c.state,
                u.c.mrid.label("linked"),
            )
            .select_from(
                d.outerjoin(i, and_(i.c.device_id == d.c.id, open_inst)).outerjoin(
                    u, u.c.id == i.c.usage_point_id
                )
            )
            .where(
                d.c.utility_id == utility_id,
                or_(
                    func.lower(d.c.mrid).like(pattern, escape="\\"),
                    func.lower(d.c.name).like(pattern, escape="\\"),
                    func.lower(d.c.serial_number).like(pattern, escape="\\"),
                ),
            )
            .limit(limit)
        )
        points = (
            select(
                literal("usage_point").label("kind"),
                u.c.mrid,
                u.c.name,
                literal(None).label("serial_number"),
                u.c.status.label("state"),
                d.c.mrid.label("linked"),
            )
            .select_from(
                u.outerjoin(i, and_(i.c.usage_point_id == u.c.id, open_inst)).outerjoin(
                    d, d.c.id == i.c.device_id
                )
            )
            .where(
                u.c.utility_id == utility_id,
                or_(
                    func.lower(u.c.mrid).like(pattern, escape="\\"),
                    func.lower(u.c.name).like(pattern, escape="\\"),
                ),
            )
            .limit(limit)
        )
        with guard(), self.engine.connect() as conn:
            rows = [*conn.execute(meters).all(), *conn.execute(points).all()]
        lowered = needle.lower()
        hits = []
        for kind, mrid, name, serial, state, linked in rows:
            matched = next(
                (
                    label
                    for label, value in (("mrid", mrid), ("name", name), ("serial_number", serial))
                    if value is not None and lowered in str(value).lower()
                ),
                "mrid",
            )
            hits.append(SearchHit(kind, mrid, name, serial, state, linked, matched))

        def rank(hit: SearchHit) -> tuple[int, str]:
            exact = lowered in {
                str(v).lower() for v in (hit.mrid, hit.name, hit.serial_number) if v is not None
            }
            return (0 if exact else 1, hit.mrid)

        return sorted(hits, key=rank)[:limit]

    def relay_states(self, utility_id: int, device_mrids: list[str]) -> dict[str, RelayState]:
        if not device_mrids:
            return {}
        e = t.end_device_event
        latest = (
            select(
                e.c.device_mrid,
                e.c.event_type,
                e.c.created_at,
                e.c.details,
                func.row_number()
                .over(
                    partition_by=e.c.device_mrid,
                    order_by=(e.c.created_at.desc(), e.c.id.desc()),
                )
                .label("n"),
            )
            .where(
                e.c.utility_id == utility_id,
                e.c.device_mrid.in_(device_mrids),
                e.c.event_type.in_(list(_RELAY)),
            )
            .subquery()
        )
        query = select(
            latest.c.device_mrid, latest.c.event_type, latest.c.created_at, latest.c.details
        ).where(latest.c.n == 1)
        with guard(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            mrid: RelayState(mrid, _RELAY[etype], at, (details or {}).get("job"))
            for mrid, etype, at, details in rows
        }

    def job_events(self, utility_id: int, job_mrid: str) -> list[EndDeviceEvent]:
        e = t.end_device_event
        query = (
            select(
                e.c.device_mrid,
                e.c.event_type,
                e.c.created_at,
                e.c.reason,
                e.c.severity,
                e.c.mrid,
                e.c.details,
            )
            .where(e.c.utility_id == utility_id, e.c.details["job"].as_string() == job_mrid)
            .order_by(e.c.created_at, e.c.id)
        )
        with guard(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [event_from_row(r) for r in rows]

    def device_job_ids(self, utility_id: int, device_mrid: str, limit: int = 20) -> list[str]:
        e = t.end_device_event
        job = e.c.details["job"].as_string()
        query = (
            select(job, func.max(e.c.created_at).label("last"))
            .where(e.c.utility_id == utility_id, e.c.device_mrid == device_mrid, job.is_not(None))
            .group_by(job)
            .order_by(text("last DESC"))
            .limit(limit)
        )
        with guard(), self.engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(query)]

    def figures(self) -> StoreFigures:
        m, o, j, e, dl = t.message_log, t.outbox, t.hes_job, t.end_device_event, t.dead_letter
        with guard(), self.engine.connect() as conn:
            messages: dict[tuple[str, str, str, str], int] = {}
            for endpoint, verb, noun, result, count in conn.execute(
                select(m.c.endpoint, m.c.verb, m.c.noun, m.c.result, func.count()).group_by(
                    m.c.endpoint, m.c.verb, m.c.noun, m.c.result
                )
            ):
                interface = str(endpoint).partition(":")[0] or "unknown"
                key = (interface, verb or "", noun or "", result or "none")
                messages[key] = messages.get(key, 0) + int(count)
            outbox = {
                (str(ch), str(st)): int(n)
                for ch, st, n in conn.execute(
                    select(o.c.channel, o.c.state, func.count())
                    .where(o.c.state != "sent")
                    .group_by(o.c.channel, o.c.state)
                )
            }
            jobs = {
                (str(k), str(s)): int(n)
                for k, s, n in conn.execute(
                    select(j.c.kind, j.c.state, func.count()).group_by(j.c.kind, j.c.state)
                )
            }
            security = {
                str(tp): int(n)
                for tp, n in conn.execute(
                    select(e.c.event_type, func.count())
                    .where(e.c.event_type.in_(SECURITY_TYPES))
                    .group_by(e.c.event_type)
                )
            }
            open_dl = int(
                conn.execute(
                    select(func.count()).select_from(dl).where(dl.c.resolved_at.is_(None))
                ).scalar_one()
            )
            readings = self._reading_count(conn)
        return StoreFigures(messages, outbox, jobs, security, open_dl, readings)

    @staticmethod
    def _reading_count(conn: Any) -> int:
        if conn.dialect.name == "postgresql":
            # an exact count of a large table is a sequential scan: the planner's figure
            estimate = conn.execute(
                text("SELECT reltuples::bigint FROM pg_class WHERE relname = 'reading'")
            ).scalar()
            if estimate is not None and int(estimate) >= 0:
                return int(estimate)
        return int(conn.execute(select(func.count()).select_from(t.reading)).scalar_one())

    def ping(self) -> None:
        with guard(), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
