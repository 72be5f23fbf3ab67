"""Invocation counters accepted per meter system title and channel (mdm/security_counters.py).

A replayed or rewound ciphered frame is refused even after a restart, and two
processes on one store cannot both accept the same counter.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "invocation_counter",
        sa.Column("system_title", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("last_counter", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("system_title", "channel", name=op.f("pk_invocation_counter")),
    )
    op.create_index(
        op.f("ix_invocation_counter_channel_updated_at"),
        "invocation_counter",
        ["channel", "updated_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_invocation_counter_channel_updated_at"), table_name="invocation_counter")
    op.drop_table("invocation_counter")
