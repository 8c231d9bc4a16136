"""A per-task misfire policy, and the run log looked up by Celery task id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE (no batch copy): SQLite keeps the table's triggers
    op.add_column("celery_periodic_task", sa.Column("misfire_policy", sa.String(16), nullable=True))
    op.create_index("ix_celery_periodic_task_run_task_id", "celery_periodic_task_run", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_celery_periodic_task_run_task_id", table_name="celery_periodic_task_run")
    with op.batch_alter_table("celery_periodic_task", recreate="never") as batch:
        batch.drop_column("misfire_policy")
