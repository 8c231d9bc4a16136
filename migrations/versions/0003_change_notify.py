"""PostgreSQL: every statement that writes ``celery_periodic_task`` sends
``NOTIFY beatsqlalchemy_changed``, so that beat learns of a change without a query
(see ``beatsqlalchemy.watch``). Nothing changes on other databases.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# one notification per statement (PostgreSQL folds those of one transaction into one),
# delivered to the listening beats when the transaction commits
_UPGRADE = (
    """CREATE FUNCTION beatsqlalchemy_notify_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('beatsqlalchemy_changed', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER celery_periodic_task_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
ON celery_periodic_task FOR EACH STATEMENT EXECUTE FUNCTION beatsqlalchemy_notify_changed()""",
)
_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS celery_periodic_task_notify ON celery_periodic_task",
    "DROP FUNCTION IF EXISTS beatsqlalchemy_notify_changed()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _DOWNGRADE:
            op.execute(statement)
