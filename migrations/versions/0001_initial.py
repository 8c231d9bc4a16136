"""The periodic-task tables, the run log, and the triggers that flag plain-SQL edits.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KINDS = ("interval", "crontab", "solar", "clocked")


def _utc() -> sa.types.TypeEngine[object]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "celery_interval_schedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("every", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(24), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_celery_interval_schedule"),
        sa.UniqueConstraint("every", "period", name="uq_celery_interval_schedule_every_period"),
    )
    op.create_table(
        "celery_crontab_schedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("minute", sa.String(240), nullable=False),
        sa.Column("hour", sa.String(96), nullable=False),
        sa.Column("day_of_week", sa.String(64), nullable=False),
        sa.Column("day_of_month", sa.String(124), nullable=False),
        sa.Column("month_of_year", sa.String(64), nullable=False),
        sa.Column("timezone", sa.String(63), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_celery_crontab_schedule"),
        sa.UniqueConstraint(
            "minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone",
            name="uq_celery_crontab_schedule_fields",
        ),
    )
    op.create_table(
        "celery_solar_schedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event", sa.String(24), nullable=False),
        sa.Column("latitude", sa.Numeric(9, 6), nullable=False),
        sa.Column("longitude", sa.Numeric(9, 6), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_celery_solar_schedule"),
        sa.UniqueConstraint(
            "event", "latitude", "longitude", name="uq_celery_solar_schedule_event_latitude_longitude"
        ),
    )
    op.create_table(
        "celery_clocked_schedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("clocked_time", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_celery_clocked_schedule"),
        sa.UniqueConstraint("clocked_time", name="uq_celery_clocked_schedule_clocked_time"),
    )
    one_schedule = " + ".join(
        f"(CASE WHEN {kind}_id IS NULL THEN 0 ELSE 1 END)" for kind in KINDS
    ) + " = 1"
    op.create_table(
        "celery_periodic_task",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        *[
            sa.Column(
                f"{kind}_id", sa.Integer(),
                sa.ForeignKey(
                    f"celery_{kind}_schedule.id",
                    name=f"fk_celery_periodic_task_{kind}_id_celery_{kind}_schedule",
                ),
                nullable=True,
            )
            for kind in KINDS
        ],
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(200), nullable=True),
        sa.Column("exchange", sa.String(200), nullable=True),
        sa.Column("routing_key", sa.String(200), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("expires", _utc(), nullable=True),
        sa.Column("expire_seconds", sa.Integer(), nullable=True),
        sa.Column("one_off", sa.Boolean(), nullable=False),
        sa.Column("start_time", _utc(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_run_at", _utc(), nullable=True),
        sa.Column("total_run_count", sa.Integer(), nullable=False),
        sa.Column("date_changed", _utc(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("next_run_at", _utc(), nullable=True),
        sa.Column("extra_options", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(16), nullable=True),
        sa.Column("needs_recompute", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("schedule_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_celery_periodic_task"),
        sa.UniqueConstraint("name", name="uq_celery_periodic_task_name"),
        sa.CheckConstraint(one_schedule, name="ck_celery_periodic_task_one_schedule"),
    )
    with op.batch_alter_table("celery_periodic_task") as batch:
        batch.create_index("ix_celery_periodic_task_enabled_next_run_at", ["enabled", "next_run_at"])
        batch.create_index("ix_celery_periodic_task_needs_recompute", ["needs_recompute"])
        for kind in KINDS:
            batch.create_index(f"ix_celery_periodic_task_{kind}_id", [f"{kind}_id"])
    op.create_table(
        "celery_periodic_task_run",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("periodic_task_id", sa.Integer(), nullable=False),
        sa.Column("periodic_task_name", sa.String(200), nullable=False),
        sa.Column("slot", _utc(), nullable=False),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sent_by", sa.String(255), nullable=False),
        sa.Column("claim_token", sa.String(32), nullable=False),
        sa.Column("claimed_at", _utc(), nullable=False),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_celery_periodic_task_run"),
        sa.UniqueConstraint(
            "periodic_task_id", "slot", name="uq_celery_periodic_task_run_periodic_task_id_slot"
        ),
    )
    with op.batch_alter_table("celery_periodic_task_run") as batch:
        batch.create_index("ix_celery_periodic_task_run_state_claimed_at", ["state", "claimed_at"])
        batch.create_index(
            "ix_celery_periodic_task_run_periodic_task_name_slot", ["periodic_task_name", "slot"]
        )
        batch.create_index("ix_celery_periodic_task_run_claimed_at", ["claimed_at"])
    for statement in _triggers(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in _drop_triggers(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table("celery_periodic_task_run")
    op.drop_table("celery_periodic_task")
    for kind in reversed(KINDS):
        op.drop_table(f"celery_{kind}_schedule")


# A write made through beatsqlalchemy sets next_run_at itself. Any other INSERT of an
# enabled task that leaves next_run_at empty, any UPDATE of a task that changes a column its schedule
# depends on (or touches a row beat found broken) without setting next_run_at, and any
# UPDATE of a schedule row flag the affected tasks; beat recomputes them at its next sync.
# Other columns (args, queue, ...) need no flag: beat reads them when it claims a run.
SCHEDULE_COLUMNS = (*(f"{kind}_id" for kind in KINDS), "enabled", "start_time", "one_off")


def _same(operator: str, joiner: str) -> str:
    """SQL saying that no schedule column changed, with a null-safe ``operator``."""
    return joiner.join(f"NEW.{c} {operator} OLD.{c}" for c in SCHEDULE_COLUMNS)


def _triggers(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            """CREATE FUNCTION beatsqlalchemy_task_changed() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.next_run_at IS NULL AND NEW.enabled THEN NEW.needs_recompute := true; END IF;
    ELSIF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at
          AND NEW.needs_recompute IS NOT DISTINCT FROM OLD.needs_recompute
          AND (OLD.schedule_error IS NOT NULL
               OR ROW(NEW.interval_id, NEW.crontab_id, NEW.solar_id, NEW.clocked_id, NEW.enabled,
                      NEW.start_time, NEW.one_off)
                  IS DISTINCT FROM ROW(OLD.interval_id, OLD.crontab_id, OLD.solar_id, OLD.clocked_id,
                                       OLD.enabled, OLD.start_time, OLD.one_off)) THEN
        NEW.needs_recompute := true;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql""",
            """CREATE TRIGGER celery_periodic_task_changed BEFORE INSERT OR UPDATE
ON celery_periodic_task FOR EACH ROW EXECUTE FUNCTION beatsqlalchemy_task_changed()""",
            """CREATE FUNCTION beatsqlalchemy_schedule_changed() RETURNS trigger AS $$
BEGIN
    EXECUTE format('UPDATE celery_periodic_task SET needs_recompute = true WHERE %I = $1',
                   TG_ARGV[0]) USING NEW.id;
    RETURN NULL;
END $$ LANGUAGE plpgsql""",
            *[
                f"""CREATE TRIGGER celery_{kind}_schedule_changed AFTER UPDATE
ON celery_{kind}_schedule FOR EACH ROW EXECUTE FUNCTION beatsqlalchemy_schedule_changed('{kind}_id')"""
                for kind in KINDS
            ],
        ]
    if dialect in ("mysql", "mariadb"):
        return [
            """CREATE TRIGGER celery_periodic_task_inserted BEFORE INSERT ON celery_periodic_task
FOR EACH ROW SET NEW.needs_recompute = IF(NEW.next_run_at IS NULL AND NEW.enabled, 1, NEW.needs_recompute)""",
            """CREATE TRIGGER celery_periodic_task_updated BEFORE UPDATE ON celery_periodic_task
FOR EACH ROW SET NEW.needs_recompute = IF(
    NEW.next_run_at <=> OLD.next_run_at AND NEW.needs_recompute <=> OLD.needs_recompute
    AND (OLD.schedule_error IS NOT NULL OR NOT (""" + _same("<=>", " AND ") + """)),
    1, NEW.needs_recompute)""",
            *[
                f"""CREATE TRIGGER celery_{kind}_schedule_updated AFTER UPDATE ON celery_{kind}_schedule
FOR EACH ROW UPDATE celery_periodic_task SET needs_recompute = 1 WHERE {kind}_id = NEW.id"""
                for kind in KINDS
            ],
        ]
    return [  # SQLite: AFTER triggers, as NEW cannot be assigned
        """CREATE TRIGGER celery_periodic_task_inserted AFTER INSERT ON celery_periodic_task
WHEN NEW.next_run_at IS NULL AND NEW.enabled AND NOT NEW.needs_recompute
BEGIN UPDATE celery_periodic_task SET needs_recompute = 1 WHERE id = NEW.id; END""",
        """CREATE TRIGGER celery_periodic_task_updated AFTER UPDATE ON celery_periodic_task
WHEN NEW.next_run_at IS OLD.next_run_at AND NEW.needs_recompute IS OLD.needs_recompute
    AND (OLD.schedule_error IS NOT NULL OR NOT (""" + _same("IS", " AND ") + """))
BEGIN UPDATE celery_periodic_task SET needs_recompute = 1 WHERE id = NEW.id; END""",
        *[
            f"""CREATE TRIGGER celery_{kind}_schedule_updated AFTER UPDATE ON celery_{kind}_schedule
BEGIN UPDATE celery_periodic_task SET needs_recompute = 1 WHERE {kind}_id = NEW.id; END"""
            for kind in KINDS
        ],
    ]


def _drop_triggers(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS celery_periodic_task_changed ON celery_periodic_task",
            *[f"DROP TRIGGER IF EXISTS celery_{kind}_schedule_changed ON celery_{kind}_schedule"
              for kind in KINDS],
            "DROP FUNCTION IF EXISTS beatsqlalchemy_task_changed()",
            "DROP FUNCTION IF EXISTS beatsqlalchemy_schedule_changed()",
        ]
    names = ["celery_periodic_task_inserted", "celery_periodic_task_updated"]
    names += [f"celery_{kind}_schedule_updated" for kind in KINDS]
    return [f"DROP TRIGGER IF EXISTS {name}" for name in names]
