"""The meter data store: registry, versioned readings, events, message log,
dead letters and audit log.

Written by hand to mirror adapters/sql/tables.py at this revision (frozen: it
does not import the live table definitions); tests/unit/sql/test_migrations.py
checks that autogenerate finds no difference.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The column types of this revision (see adapters/sql/types.py).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)  # timestamptz; UTC ISO text on SQLite
DECIMAL = sa.Numeric().with_variant(sa.String(), "sqlite")  # canonical text on SQLite


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, autoincrement=True, nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*(columns or ("id",)), name=op.f(f"pk_{table}"))


def _ix(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns))


def upgrade() -> None:
    op.create_table(
        "utility",
        _id(),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        _pk("utility"),
        sa.UniqueConstraint("code", name=op.f("uq_utility_code")),
    )
    op.create_table(
        "usage_point",
        _id(),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("mrid", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("service_category", sa.String(20), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("transformer_area", sa.String(100), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        _fk("usage_point", "utility_id", "utility"),
        _pk("usage_point"),
        sa.UniqueConstraint("utility_id", "mrid", name=op.f("uq_usage_point_utility_id_mrid")),
    )
    _ix("usage_point", "utility_id", "name")
    op.create_table(
        "end_device",
        _id(),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("mrid", sa.String(100), nullable=False),
        sa.Column("serial_number", sa.String(100), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("manufacturer", sa.String(100), nullable=True),
        sa.Column("model", sa.String(100), nullable=True),
        sa.Column("firmware_version", sa.String(100), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        _fk("end_device", "utility_id", "utility"),
        _pk("end_device"),
        sa.UniqueConstraint("utility_id", "mrid", name=op.f("uq_end_device_utility_id_mrid")),
    )
    _ix("end_device", "utility_id", "name")
    _ix("end_device", "utility_id", "serial_number")
    op.create_table(
        "installation",
        _id(),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("usage_point_id", ID, nullable=False),
        sa.Column("start_at", TS, nullable=False),
        sa.Column("end_at", TS, nullable=True),
        _fk("installation", "device_id", "end_device"),
        _fk("installation", "usage_point_id", "usage_point"),
        _pk("installation"),
    )
    _ix("installation", "device_id", "start_at")
    _ix("installation", "usage_point_id", "start_at")
    op.create_index(
        "uq_installation_open_device",
        "installation",
        ["device_id"],
        unique=True,
        postgresql_where=sa.text("end_at IS NULL"),
        sqlite_where=sa.text("end_at IS NULL"),
    )
    op.create_table(
        "reading_type",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.String(120), nullable=False),
        _pk("reading_type"),
        sa.UniqueConstraint("code", name=op.f("uq_reading_type_code")),
    )
    op.create_table(
        "reading",
        sa.Column("device_id", ID, nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("value", DECIMAL, nullable=False),
        sa.Column("quality", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        _pk("reading", "device_id", "reading_type_id", "ts"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "reading_history",
        sa.Column("device_id", ID, nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", DECIMAL, nullable=False),
        sa.Column("quality", sa.String(200), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("superseded_at", TS, nullable=False),
        _pk("reading_history", "device_id", "reading_type_id", "ts", "version"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "end_device_event",
        _id(),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=True),
        sa.Column("device_mrid", sa.String(100), nullable=False),
        sa.Column("mrid", sa.String(100), nullable=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("severity", sa.String(32), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        _fk("end_device_event", "device_id", "end_device"),
        _fk("end_device_event", "utility_id", "utility"),
        _pk("end_device_event"),
    )
    _ix("end_device_event", "device_id", "created_at")
    _ix("end_device_event", "utility_id", "created_at")
    op.create_table(
        "message_log",
        _id(),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("verb", sa.String(32), nullable=True),
        sa.Column("noun", sa.String(100), nullable=True),
        sa.Column("correlation_id", sa.String(200), nullable=True),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("result", sa.String(32), nullable=True),
        sa.Column("reply", sa.LargeBinary(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        _pk("message_log"),
    )
    _ix("message_log", "received_at")
    _ix("message_log", "correlation_id")
    op.create_index(
        "uq_message_log_source_message_id",
        "message_log",
        ["source", "message_id"],
        unique=True,
        postgresql_where=sa.text("message_id IS NOT NULL"),
        sqlite_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_table(
        "message_lifecycle",
        _id(),
        sa.Column("message_log_id", ID, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        _fk("message_lifecycle", "message_log_id", "message_log"),
        _pk("message_lifecycle"),
    )
    _ix("message_lifecycle", "message_log_id", "id")
    op.create_table(
        "dead_letter",
        _id(),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("error_code", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("message_log_id", ID, nullable=True),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        _fk("dead_letter", "message_log_id", "message_log"),
        _pk("dead_letter"),
    )
    _ix("dead_letter", "resolved_at", "received_at")
    _ix("dead_letter", "message_log_id")
    op.create_table(
        "audit_log",
        _id(),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("object_type", sa.String(100), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        _pk("audit_log"),
    )
    _ix("audit_log", "at")


def downgrade() -> None:
    for table in (
        "audit_log",
        "dead_letter",
        "message_lifecycle",
        "message_log",
        "end_device_event",
        "reading_history",
        "reading",
        "reading_type",
        "installation",
        "end_device",
        "usage_point",
        "utility",
    ):
        op.drop_table(table)
