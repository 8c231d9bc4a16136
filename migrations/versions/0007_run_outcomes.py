"""Run outcomes recorded by the workers.

The run log gets what a worker recorded of each beat run (outcome, worker, finish time,
runtime, retries, a short error); each task its latest outcome, when, its latest success and
how many runs in a row failed. PostgreSQL: the change notification (revision 0003) is no
longer sent for updates of those task columns alone, so the workers' writes never wake beat
(a later revision adding a column to the task table must name it in the trigger too).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TASKS = "celery_periodic_task"
RUNS = "celery_periodic_task_run"
#: the task columns the workers write (``beatsqlalchemy.constants.OUTCOME_COLUMNS``)
OUTCOME_COLUMNS = ("last_outcome", "last_outcome_at", "last_success_at", "consecutive_failures")
RUN_COLUMNS = ("outcome", "worker", "finished_at", "runtime", "retries", "error")
TRIGGER = "celery_periodic_task_notify"
_EVERY_WRITE = "INSERT OR UPDATE OR DELETE OR TRUNCATE"


def _datetime() -> sa.types.TypeEngine[object]:
    # as ``models.UTCDateTime`` stores it: microseconds on MySQL/MariaDB
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _notify_on(events: str) -> None:
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TASKS}")
    op.execute(f"CREATE TRIGGER {TRIGGER} AFTER {events} ON {TASKS} FOR EACH STATEMENT "
               "EXECUTE FUNCTION beatsqlalchemy_notify_changed()")


def upgrade() -> None:
    with op.batch_alter_table(RUNS, recreate="never") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(255), nullable=True))
        batch.add_column(sa.Column("finished_at", _datetime(), nullable=True))
        batch.add_column(sa.Column("runtime", sa.Double(), nullable=True))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("error", sa.String(500), nullable=True))
    with op.batch_alter_table(TASKS, recreate="never") as batch:
        batch.add_column(sa.Column("last_outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("last_outcome_at", _datetime(), nullable=True))
        batch.add_column(sa.Column("last_success_at", _datetime(), nullable=True))
        batch.add_column(sa.Column("consecutive_failures", sa.Integer(), nullable=False,
                                   server_default=sa.text("0")))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        columns = [c["name"] for c in sa.inspect(bind).get_columns(TASKS) if c["name"] not in OUTCOME_COLUMNS]
        _notify_on(f"INSERT OR DELETE OR TRUNCATE OR UPDATE OF {', '.join(columns)}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _notify_on(_EVERY_WRITE)
    # SQLite 3.35+ drops a plain column in place (no copy: the triggers stay)
    for table, columns in ((TASKS, OUTCOME_COLUMNS), (RUNS, RUN_COLUMNS)):
        for name in columns:
            op.drop_column(table, name)
