"""End device groups (mdm/groups.py) and a unique key for stored events.

* ``end_device_group`` and ``end_device_group_member``: named groups of meters;
* ``uq_end_device_event_utility_id_mrid``: an event mRID is stored once per utility
  (partial: events without mRID are not constrained). Rows that would violate it (the
  same event stored twice by two processes before this key existed) are removed first,
  keeping the first stored (lowest id); each removed row is written whole to the audit
  log (action ``dedupe``), so the upgrade never fails and loses nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
CHUNK = 1000


def _dedupe_events() -> int:
    """Remove the later copies of events stored twice (same utility and mRID)."""
    conn = op.get_bind()
    meta = sa.MetaData()
    event = sa.Table("end_device_event", meta, autoload_with=conn)
    audit = sa.Table("audit_log", meta, autoload_with=conn)
    first = (
        sa.select(sa.func.min(event.c.id))
        .where(event.c.mrid.is_not(None))
        .group_by(event.c.utility_id, event.c.mrid)
        .having(sa.func.count() > 1)
    )
    twins = (
        sa.select(event.c.utility_id, event.c.mrid)
        .where(event.c.mrid.is_not(None))
        .group_by(event.c.utility_id, event.c.mrid)
        .having(sa.func.count() > 1)
        .subquery()
    )
    later = [
        int(r.id)
        for r in conn.execute(
            sa.select(event.c.id)
            .join(
                twins,
                sa.and_(twins.c.utility_id == event.c.utility_id, twins.c.mrid == event.c.mrid),
            )
            .where(event.c.id.not_in(first.scalar_subquery()))
            .order_by(event.c.id)
        )
    ]
    now = datetime.now(UTC)
    for start in range(0, len(later), CHUNK):
        chunk = later[start : start + CHUNK]
        rows = conn.execute(sa.select(event).where(event.c.id.in_(chunk)).order_by(event.c.id))
        conn.execute(
            sa.insert(audit),
            [
                {
                    "at": now,
                    "actor": "migration 0004",
                    "action": "dedupe",
                    "object_type": "EndDeviceEvent",
                    "object_id": r.mrid,
                    "details": json.dumps(
                        {
                            k: (v.isoformat() if isinstance(v, datetime) else v)
                            for k, v in r._mapping.items()
                        },
                        default=str,
                    ),
                }
                for r in rows
            ],
        )
        conn.execute(sa.delete(event).where(event.c.id.in_(chunk)))
    return len(later)


def upgrade() -> None:
    op.create_table(
        "end_device_group",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("mrid", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["utility_id"], ["utility.id"], name=op.f("fk_end_device_group_utility_id_utility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_end_device_group")),
        sa.UniqueConstraint("utility_id", "mrid", name=op.f("uq_end_device_group_utility_id_mrid")),
    )
    op.create_index(
        "uq_end_device_group_open_name",
        "end_device_group",
        ["utility_id", "name"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
        sqlite_where=sa.text("closed_at IS NULL"),
    )
    op.create_table(
        "end_device_group_member",
        sa.Column("group_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["end_device_group.id"],
            name=op.f("fk_end_device_group_member_group_id_end_device_group"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["end_device.id"],
            name=op.f("fk_end_device_group_member_device_id_end_device"),
        ),
        sa.PrimaryKeyConstraint("group_id", "device_id", name=op.f("pk_end_device_group_member")),
    )
    op.create_index(
        op.f("ix_end_device_group_member_device_id"), "end_device_group_member", ["device_id"]
    )
    _dedupe_events()
    op.create_index(
        "uq_end_device_event_utility_id_mrid",
        "end_device_event",
        ["utility_id", "mrid"],
        unique=True,
        postgresql_where=sa.text("mrid IS NOT NULL"),
        sqlite_where=sa.text("mrid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_end_device_event_utility_id_mrid", table_name="end_device_event")
    op.drop_index(
        op.f("ix_end_device_group_member_device_id"), table_name="end_device_group_member"
    )
    op.drop_table("end_device_group_member")
    op.drop_index("uq_end_device_group_open_name", table_name="end_device_group")
    op.drop_table("end_device_group")
