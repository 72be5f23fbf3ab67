"""End device groups in the store (``end_device_group``, ``end_device_group_member``).

Membership is written set-based: ``INSERT ... SELECT`` of the devices that are not
members yet (``ON CONFLICT DO NOTHING`` against a concurrent writer), ``DELETE ...
WHERE device_id IN (...)``, a chunk of ids per statement (SQLite limits bound
parameters), never a statement per meter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from adapters.sql import tables as t
from adapters.sql.errors import already_exists, guarded, is_unique_violation, not_found
from adapters.sql.registry import _Repo
from cim_schemas.errors import PayloadInvalid
from mdm.groups import EndDeviceGroup, MrIdList
from mdm.model import DeviceRef

_G = t.end_device_group
_M = t.end_device_group_member
CHUNK = 5_000


def _count() -> Any:
    return (
        select(func.count())
        .select_from(_M)
        .where(_M.c.group_id == _G.c.id)
        .scalar_subquery()
        .label("members")
    )


def _group(row: Any) -> EndDeviceGroup:
    return EndDeviceGroup(
        utility_id=int(row.utility_id),
        mrid=row.mrid,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        closed_at=row.closed_at,
        id=int(row.id),
        members=int(row.members),
    )


class SqlEndDeviceGroupRepository(_Repo):
    def _select(self) -> Any:
        return select(
            _G.c.id,
            _G.c.utility_id,
            _G.c.mrid,
            _G.c.name,
            _G.c.description,
            _G.c.created_at,
            _G.c.closed_at,
            _count(),
        )

    def _get(self, group_id: int) -> EndDeviceGroup:
        row = self._conn.execute(self._select().where(_G.c.id == group_id)).first()
        if row is None:
            raise not_found(f"end device group {group_id} does not exist")
        return _group(row)

    @guarded
    def add(self, group: EndDeviceGroup, at: datetime) -> EndDeviceGroup:
        try:
            with self._conn.begin_nested():
                new_id = self._conn.execute(
                    _G.insert()
                    .values(
                        utility_id=group.utility_id,
                        mrid=group.mrid,
                        name=group.name,
                        description=group.description,
                        created_at=at,
                        updated_at=at,
                    )
                    .returning(_G.c.id)
                ).scalar_one()
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(self._taken(group)) from error
            raise
        return self._get(int(new_id))

    def _taken(self, group: EndDeviceGroup) -> str:
        same_mrid = self._conn.execute(
            select(_G.c.id).where(_G.c.utility_id == group.utility_id, _G.c.mrid == group.mrid)
        ).first()
        if same_mrid is not None:
            return f"end device group mRID {group.mrid!r} is already used"
        return f"an open end device group is already named {group.name!r}"

    @guarded
    def find(self, utility_id: int, ref: DeviceRef) -> EndDeviceGroup | None:
        stmt = self._select().where(_G.c.utility_id == utility_id)
        if ref.mrid:
            row = self._conn.execute(stmt.where(_G.c.mrid == ref.mrid)).first()
        elif ref.name:
            row = self._conn.execute(
                stmt.where(_G.c.name == ref.name).order_by(
                    _G.c.closed_at.is_not(None), _G.c.closed_at.desc(), _G.c.id.desc()
                )
            ).first()
        else:
            raise PayloadInvalid(f"reference {ref!r} has neither mRID nor name", code="2011")
        return _group(row) if row is not None else None

    @guarded
    def list(self, utility_id: int, *, include_closed: bool = False) -> list[EndDeviceGroup]:
        stmt = self._select().where(_G.c.utility_id == utility_id)
        if not include_closed:
            stmt = stmt.where(_G.c.closed_at.is_(None))
        return [_group(r) for r in self._conn.execute(stmt.order_by(_G.c.name, _G.c.id))]

    @guarded
    def update(
        self, group_id: int, name: str, description: str | None, at: datetime
    ) -> EndDeviceGroup:
        try:
            with self._conn.begin_nested():
                done = self._conn.execute(
                    update(_G)
                    .where(_G.c.id == group_id)
                    .values(name=name, description=description, updated_at=at)
                )
        except sa_exc.IntegrityError as error:
            if is_unique_violation(error):
                raise already_exists(
                    f"an open end device group is already named {name!r}"
                ) from error
            raise
        if done.rowcount == 0:
            raise not_found(f"end device group {group_id} does not exist")
        return self._get(group_id)

    @guarded
    def close(self, group_id: int, at: datetime) -> bool:
        done = self._conn.execute(
            update(_G)
            .where(_G.c.id == group_id, _G.c.closed_at.is_(None))
            .values(closed_at=at, updated_at=at)
        )
        return bool(done.rowcount)

    @guarded
    def delete(self, group_id: int) -> None:
        self._conn.execute(delete(_M).where(_M.c.group_id == group_id))
        done = self._conn.execute(delete(_G).where(_G.c.id == group_id))
        if done.rowcount == 0:
            raise not_found(f"end device group {group_id} does not exist")

    @guarded
    def add_members(self, group_id: int, device_ids: Sequence[int], at: datetime) -> int:
        ids = sorted(set(device_ids))
        added = 0
        insert = postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        d = t.end_device
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            not_member: ColumnElement[bool] = ~(
                select(_M.c.device_id)
                .where(_M.c.group_id == group_id, _M.c.device_id == d.c.id)
                .exists()
            )
            rows = select(literal(group_id), d.c.id, literal(at, type_=_M.c.added_at.type)).where(
                d.c.id.in_(chunk), not_member
            )
            stmt = (
                insert(_M)
                .from_select(["group_id", "device_id", "added_at"], rows)
                .on_conflict_do_nothing(index_elements=["group_id", "device_id"])
                .returning(_M.c.device_id)
            )
            added += len(self._conn.execute(stmt).all())
        return added

    @guarded
    def remove_members(self, group_id: int, device_ids: Sequence[int]) -> int:
        ids = sorted(set(device_ids))
        removed = 0
        for start in range(0, len(ids), CHUNK):
            removed += self._conn.execute(
                delete(_M).where(
                    _M.c.group_id == group_id, _M.c.device_id.in_(ids[start : start + CHUNK])
                )
            ).rowcount
        return removed

    @guarded
    def member_ids(self, group_id: int) -> set[int]:
        rows = self._conn.execute(select(_M.c.device_id).where(_M.c.group_id == group_id))
        return {int(r.device_id) for r in rows}

    @guarded
    def members(self, group_id: int) -> MrIdList:
        d = t.end_device
        rows = self._conn.execute(
            select(d.c.mrid)
            .join(_M, _M.c.device_id == d.c.id)
            .where(_M.c.group_id == group_id)
            .order_by(d.c.mrid)
        )
        return [str(r.mrid) for r in rows]
