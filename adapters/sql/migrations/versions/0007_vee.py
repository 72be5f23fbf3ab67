"""Validation runs and their findings (mdm/vee, docs/vee.md).

* ``vee_run``: a run of the validation rules over a period and scope, with its counts;
* ``vee_finding``: the run's result set, one row a finding (a reading, a run of zero
  readings, or a gap of missing intervals).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
DECIMAL = sa.Numeric().with_variant(sa.String(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "vee_run",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("period_end", TS, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("meters", sa.Integer(), nullable=False),
        sa.Column("readings", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.Column("failing_meters", sa.Integer(), nullable=False),
        sa.Column("marked", sa.BigInteger(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["utility_id"], ["utility.id"], name=op.f("fk_vee_run_utility_id_utility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vee_run")),
    )
    op.create_index(op.f("ix_vee_run_utility_id_id"), "vee_run", ["utility_id", "id"])
    op.create_table(
        "vee_finding",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("quality", sa.String(20), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("ts_end", TS, nullable=False),
        sa.Column("intervals", sa.Integer(), nullable=False),
        sa.Column("value", DECIMAL, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["vee_run.id"], name=op.f("fk_vee_finding_run_id_vee_run")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vee_finding")),
    )
    op.create_index(op.f("ix_vee_finding_run_id_rule"), "vee_finding", ["run_id", "rule"])
    op.create_index(
        op.f("ix_vee_finding_device_id_reading_type_id_ts"),
        "vee_finding",
        ["device_id", "reading_type_id", "ts"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_vee_finding_device_id_reading_type_id_ts"), table_name="vee_finding")
    op.drop_index(op.f("ix_vee_finding_run_id_rule"), table_name="vee_finding")
    op.drop_table("vee_finding")
    op.drop_index(op.f("ix_vee_run_utility_id_id"), table_name="vee_run")
    op.drop_table("vee_run")
