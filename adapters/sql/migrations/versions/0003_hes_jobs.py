"""Head-end jobs: control jobs and read schedules, with a lease (mdm/hes_jobs.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hes_job",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("utility_id", ID, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("mrid", sa.String(200), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("control_type", sa.String(30), nullable=True),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("start_at", TS, nullable=True),
        sa.Column("end_at", TS, nullable=True),
        sa.Column("recurrence_seconds", sa.Integer(), nullable=True),
        sa.Column("recurrence_pattern", sa.String(200), nullable=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("last_run_at", TS, nullable=True),
        sa.Column("last_outcome", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["utility_id"], ["utility.id"], name=op.f("fk_hes_job_utility_id_utility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hes_job")),
        sa.UniqueConstraint(
            "utility_id", "kind", "mrid", name=op.f("uq_hes_job_utility_id_kind_mrid")
        ),
    )
    op.create_index(op.f("ix_hes_job_state_due_at"), "hes_job", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_hes_job_state_due_at"), table_name="hes_job")
    op.drop_table("hes_job")
