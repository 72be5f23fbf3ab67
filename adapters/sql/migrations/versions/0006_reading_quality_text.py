"""A reading's quality text keeps what arrived with it (mdm/qualities.py).

``reading.quality`` and ``reading_history.quality`` were ``varchar(200)``: enough for
ReadingQualityType codes, not for the codes followed by each ReadingQuality's
``source``, ``comment`` and ``timeStamp`` and a register's ``reason`` as sent. They
become ``text``. On PostgreSQL ``varchar -> text`` is binary coercible (no table
rewrite); SQLite does not enforce the length, and its tables are recreated in batch
mode only to record the type (WITHOUT ROWID kept).

Values need no column: PostgreSQL's ``numeric`` keeps the scale as sent, and SQLite
now stores the same plain text (adapters/sql/types.py ``decimal_text``; values stored
before keep their old text).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
DECIMAL = sa.Numeric().with_variant(sa.String(), "sqlite")


def _reading(name: str, quality: sa.types.TypeEngine[str]) -> sa.Table:
    """The table as 0001 made it (SQLite batch mode copies from this definition)."""
    history = name == "reading_history"
    columns: list[sa.Column[object]] = [
        sa.Column("device_id", ID, nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=False),
        sa.Column("ts", TS, nullable=False),
    ]
    if history:
        columns.append(sa.Column("version", sa.Integer(), nullable=False))
    columns += [
        sa.Column("value", DECIMAL, nullable=False),
        sa.Column("quality", quality, nullable=False),
    ]
    if history:
        columns += [
            sa.Column("recorded_at", TS, nullable=False),
            sa.Column("superseded_at", TS, nullable=False),
        ]
    else:
        columns += [
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("recorded_at", TS, nullable=False),
        ]
    keys = ["device_id", "reading_type_id", "ts"] + (["version"] if history else [])
    return sa.Table(
        name,
        sa.MetaData(),
        *columns,
        sa.PrimaryKeyConstraint(*keys, name=f"pk_{name}"),
        sqlite_with_rowid=False,
    )


def _alter(old: sa.types.TypeEngine[str], new: sa.types.TypeEngine[str]) -> None:
    for name in ("reading", "reading_history"):
        if op.get_context().dialect.name == "sqlite":
            with op.batch_alter_table(
                name,
                copy_from=_reading(name, old),
                recreate="always",
                table_kwargs={"sqlite_with_rowid": False},
            ) as batch:
                batch.alter_column("quality", type_=new, existing_type=old, existing_nullable=False)
        else:
            op.alter_column(name, "quality", type_=new, existing_type=old, existing_nullable=False)


def upgrade() -> None:
    _alter(sa.String(200), sa.Text())


def downgrade() -> None:
    _alter(sa.Text(), sa.String(200))  # fails on PostgreSQL if a longer text is stored
