"""Run ids unique per deployment and task row; exact names on MySQL/MariaDB.

A table holding the deployment's random id and a random ``run_key`` for each task row
(filled for existing rows, given by the database to rows inserted with plain SQL).
MySQL/MariaDB: every text column is utf8mb4, names compare exactly (binary, no-pad
collation), whatever the database's defaults. The one-schedule check constraint gets the
name the models give it (it had its prefix twice). The run log is unique by run id instead
of by task row id and slot, which a task re-created under a reused row id may share with
the deleted one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

from beatsqlalchemy.models import exact_collation
from beatsqlalchemy.runids import DEPLOYMENT_TABLE, KEY_LENGTH, random_key

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TASKS = "celery_periodic_task"
RUNS = "celery_periodic_task_run"
#: the run log's unique key and task id index before, its unique key after
OLD_UNIQUE, TASK_ID_INDEX, NEW_UNIQUE = (
    "uq_celery_periodic_task_run_periodic_task_id_slot", "ix_celery_periodic_task_run_task_id",
    "uq_celery_periodic_task_run_task_id",
)
KINDS = ("interval", "crontab", "solar", "clocked")
ONE_SCHEDULE = " + ".join(
    f"(CASE WHEN {kind}_id IS NULL THEN 0 ELSE 1 END)" for kind in KINDS
) + " = 1"
#: the check constraint's name as revision 0001 made it, and as the models name it
OLD_CHECK = "ck_celery_periodic_task_ck_celery_periodic_task_one_schedule"
NEW_CHECK = "ck_celery_periodic_task_one_schedule"

#: MySQL/MariaDB: every text column (JSON columns aside): (name, VARCHAR length or None for
#: TEXT, nullable); the ones in EXACT are names compared as identifiers
TEXT_COLUMNS = {
    TASKS: (("name", 200, False), ("task", 200, False), ("queue", 200, True),
            ("exchange", 200, True), ("routing_key", 200, True), ("description", None, False),
            ("source", 16, True), ("schedule_error", None, True), ("misfire_policy", 16, True)),
    "celery_periodic_task_run": (("periodic_task_name", 200, False), ("task_id", 36, False),
                                 ("state", 16, False), ("sent_by", 255, False),
                                 ("claim_token", 32, False), ("started_by", 255, True)),
    "celery_interval_schedule": (("period", 24, False),),
    "celery_crontab_schedule": (("minute", 240, False), ("hour", 96, False),
                                ("day_of_week", 64, False), ("day_of_month", 124, False),
                                ("month_of_year", 64, False), ("timezone", 63, False)),
    "celery_solar_schedule": (("event", 24, False),),
    "celery_clocked_schedule": (),
}
EXACT = frozenset(("name", "task", "queue", "exchange", "routing_key", "periodic_task_name", "task_id"))


def _initial() -> ModuleType:
    """Revision 0001, for its SQLite triggers (a table copied by batch mode loses them)."""
    path = Path(__file__).with_name("0001_initial.py")
    spec = importlib.util.spec_from_file_location("beatsqlalchemy_migration_0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sqlite_copy(add_key: bool) -> None:
    """SQLite cannot add a column with a computed default or rename a constraint: the task
    table is copied (batch mode). Every trigger is dropped first (the schedule tables' ones
    name the task table, which the copy's final rename checks) and created again after."""
    initial = _initial()
    for statement in initial._drop_triggers("sqlite"):
        op.execute(statement)
    with op.batch_alter_table(TASKS, recreate="always") as batch:
        if add_key:
            batch.add_column(sa.Column("run_key", sa.String(KEY_LENGTH), nullable=False,
                                       server_default=random_key()))
        else:
            batch.drop_column("run_key")
        old, new = (OLD_CHECK, NEW_CHECK) if add_key else (NEW_CHECK, OLD_CHECK)
        batch.drop_constraint(op.f(old), type_="check")
        batch.create_check_constraint(op.f(new), sa.text(ONE_SCHEDULE))
    for statement in initial._triggers("sqlite"):
        op.execute(statement)


def _unique_by_run_id(by_run_id: bool) -> None:
    """The run log unique by run id (or, going back, by task row id and slot)."""
    with op.batch_alter_table(RUNS) as batch:  # SQLite: a copy of the table
        if by_run_id:
            batch.drop_constraint(op.f(OLD_UNIQUE), type_="unique")
            batch.drop_index(op.f(TASK_ID_INDEX))
            batch.create_unique_constraint(op.f(NEW_UNIQUE), ["task_id"])
        else:
            batch.drop_constraint(op.f(NEW_UNIQUE), type_="unique")
            batch.create_index(op.f(TASK_ID_INDEX), ["task_id"])
            batch.create_unique_constraint(op.f(OLD_UNIQUE), ["periodic_task_id", "slot"])


def _rename_check(old: str, new: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {TASKS} RENAME CONSTRAINT {old} TO {new}")
        return
    op.drop_constraint(op.f(old), TASKS, type_="check")
    op.create_check_constraint(op.f(new), TASKS, sa.text(ONE_SCHEDULE))


def _utf8mb4(dialect: sa.engine.Dialect) -> None:
    """Every text column utf8mb4 (a latin1 database cannot hold emoji), the names with the
    exact collation; the tables' default character set too, for columns added later."""
    exact = exact_collation(dialect)
    for table, columns in TEXT_COLUMNS.items():
        changes = ["DEFAULT CHARACTER SET utf8mb4"]
        for name, length, nullable in columns:
            kind = "TEXT" if length is None else f"VARCHAR({length})"
            collation = f" COLLATE {exact}" if name in EXACT else ""
            changes.append(f"MODIFY {name} {kind} CHARACTER SET utf8mb4{collation}"
                           f"{'' if nullable else ' NOT NULL'}")
        op.execute(f"ALTER TABLE {table} {', '.join(changes)}")


def upgrade() -> None:
    dialect = op.get_bind().dialect
    if dialect.name in ("mysql", "mariadb"):
        _utf8mb4(dialect)  # first: the tables' new default applies to the columns added below
    deployment = op.create_table(
        DEPLOYMENT_TABLE,
        sa.Column("id", sa.String(KEY_LENGTH), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{DEPLOYMENT_TABLE}")),
        mysql_charset="utf8mb4",
    )
    assert deployment is not None
    # a new one for each database, made by the database (an offline script too)
    op.execute(deployment.insert().from_select(["id"], sa.select(random_key())))
    if dialect.name == "sqlite":
        _sqlite_copy(add_key=True)  # existing rows get a key each from the copy
    else:
        # the default is evaluated for each existing row
        op.add_column(TASKS, sa.Column("run_key", sa.String(KEY_LENGTH), nullable=False,
                                       server_default=random_key()))
        _rename_check(OLD_CHECK, NEW_CHECK)
    _unique_by_run_id(True)


def downgrade() -> None:
    # MySQL/MariaDB: the columns stay utf8mb4 with the exact collation (going back could
    # make two names that differ only in case or accents collide)
    _unique_by_run_id(False)
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_copy(add_key=False)
    else:
        _rename_check(NEW_CHECK, OLD_CHECK)
        op.drop_column(TASKS, "run_key")
    op.drop_table(DEPLOYMENT_TABLE)
