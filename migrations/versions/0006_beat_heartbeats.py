"""Beat heartbeats: one row per beat process (``beatsqlalchemy_beat``), upserted by the
beat every few seconds, read by ``beatsqlalchemy status`` and ``health``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from beatsqlalchemy.constants import OUTAGE_REASON_LENGTH

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "beatsqlalchemy_beat"


def _utc() -> sa.types.TypeEngine[object]:
    """A naive UTC time (microseconds kept on MySQL/MariaDB), as the models store it."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("identity", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("last_seen", _utc(), nullable=False),
        sa.Column("runs_sent", sa.BigInteger(), nullable=False),
        sa.Column("outage_since", _utc(), nullable=True),
        sa.Column("outage_ended", _utc(), nullable=True),
        sa.Column("outage_reason", sa.String(OUTAGE_REASON_LENGTH), nullable=True),
        sa.PrimaryKeyConstraint("identity", name=op.f(f"pk_{TABLE}")),
        mysql_charset="utf8mb4",
    )
    op.create_index(op.f(f"ix_{TABLE}_last_seen"), TABLE, ["last_seen"])


def downgrade() -> None:
    op.drop_index(op.f(f"ix_{TABLE}_last_seen"), table_name=TABLE)
    op.drop_table(TABLE)
