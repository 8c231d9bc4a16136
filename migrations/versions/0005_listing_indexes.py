"""Indexes of the consoles' task listings: by next run then id (paged by key), and by the
Celery task a row sends (searched by prefix).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TASKS = "celery_periodic_task"
INDEXES = {
    "ix_celery_periodic_task_next_run_at_id": ["next_run_at", "id"],
    "ix_celery_periodic_task_task": ["task"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, TASKS, columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name=TASKS)
