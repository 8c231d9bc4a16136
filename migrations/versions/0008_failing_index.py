"""An index of the failing tasks (``consecutive_failures`` one or more), read by
``api.failing_tasks``, ``status``, ``health`` and the console's overview: a partial index on
PostgreSQL and SQLite, a plain one on MySQL/MariaDB.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TASKS = "celery_periodic_task"
NAME = "ix_celery_periodic_task_failing"
FAILING = sa.text("consecutive_failures >= 1")


def upgrade() -> None:
    columns = [sa.text("consecutive_failures DESC"), sa.text("last_outcome_at DESC"), "name"]
    op.create_index(NAME, TASKS, columns, postgresql_where=FAILING, sqlite_where=FAILING)


def downgrade() -> None:
    op.drop_index(NAME, table_name=TASKS)
