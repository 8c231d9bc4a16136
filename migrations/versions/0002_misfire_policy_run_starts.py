"""A per-task misfire policy; the run log records which worker started a run, looked up
by Celery task id; tasks from configuration found by index (beat's start-up at any size).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _utc() -> sa.types.TypeEngine[object]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # plain ALTER TABLE (no batch copy): SQLite keeps the table's triggers
    op.add_column("celery_periodic_task", sa.Column("misfire_policy", sa.String(16), nullable=True))
    op.add_column("celery_periodic_task_run", sa.Column("started_at", _utc(), nullable=True))
    op.add_column("celery_periodic_task_run", sa.Column("started_by", sa.String(255), nullable=True))
    op.create_index("ix_celery_periodic_task_run_task_id", "celery_periodic_task_run", ["task_id"])
    op.create_index("ix_celery_periodic_task_source", "celery_periodic_task", ["source"])


def downgrade() -> None:
    op.drop_index("ix_celery_periodic_task_source", table_name="celery_periodic_task")
    op.drop_index("ix_celery_periodic_task_run_task_id", table_name="celery_periodic_task_run")
    with op.batch_alter_table("celery_periodic_task_run", recreate="never") as batch:
        batch.drop_column("started_by")
        batch.drop_column("started_at")
    with op.batch_alter_table("celery_periodic_task", recreate="never") as batch:
        batch.drop_column("misfire_policy")
