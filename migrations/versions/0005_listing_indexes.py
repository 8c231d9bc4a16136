"""Indexes of the consoles' task listings: enabled tasks by next run then id (paged by key),
the Celery task a row sends (searched by prefix), and the broken rows (a partial index on
PostgreSQL and SQLite).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TASKS = "celery_periodic_task"
INDEXES = {
    "ix_celery_periodic_task_enabled_next_run_at_id": ["enabled", "next_run_at", "id"],
    "ix_celery_periodic_task_task": ["task"],
    "ix_celery_periodic_task_broken": ["id"],
}
BROKEN = sa.text("schedule_error IS NOT NULL")


def upgrade() -> None:
    for name, columns in INDEXES.items():
        where = {"postgresql_where": BROKEN, "sqlite_where": BROKEN} if name.endswith("_broken") else {}
        op.create_index(name, TASKS, columns, **where)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name=TASKS)
