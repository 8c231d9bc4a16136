"""Declarative models of the periodic-task tables, with validation at every write.

The tables, their column types and their checks: mapper events on these models (not on
the Session class) validate every ORM insert or update of a task or a schedule row, from
any session, and compute ``next_run_at``. Writing tasks by name lives in
``beatsqlalchemy.api``; ``PeriodicTask.update_or_create`` is a door onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from celery import current_app
from celery.exceptions import ImproperlyConfigured
from celery.schedules import BaseSchedule
from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_schedule
from celery.schedules import solar as celery_solar
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    select,
    text,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    object_session,
    relationship,
    validates,
)
from sqlalchemy.types import TypeDecorator

from . import schedules as sched
from .celery_schedules import ClockedCelerySchedule, ZonedCrontab
from .constants import (
    CONFIG_SOURCE,
    DATABASE_SOURCE,
    DESCRIPTION_BYTES,
    ERROR_LENGTH,
    NAME_LENGTH,
    OUTAGE_REASON_LENGTH,
    OUTCOME_COLUMNS,
    SCHEDULE_KINDS,
)
from .exceptions import ValidationError
from .message_options import check_headers, check_options
from .runids import DEPLOYMENT_TABLE, KEY_LENGTH, new_key, random_key
from .sessions import open_session
from .validators import (
    as_bool,
    as_datetime,
    as_id,
    as_int,
    as_json,
    as_misfire_policy,
    as_name,
    as_primary_key,
    as_text,
    check_free_id,
    check_length,
    check_required,
)

__all__ = [
    "NAMING_CONVENTION",
    "SCHEDULE_MODELS",
    "Base",
    "BeatRecord",
    "ClockedSchedule",
    "CrontabSchedule",
    "Deployment",
    "ExactString",
    "IntervalSchedule",
    "PeriodicTask",
    "PeriodicTaskRun",
    "ScheduleMixin",
    "SolarSchedule",
    "StoredJSON",
    "StoredNumeric",
    "UTCDateTime",
    "Unreadable",
    "exact_collation",
    "get_session",
]


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



#: why a stored value is ``Unreadable``
UNREADABLE = ("stored value cannot be read as its column's type (a date and time in the years 1 to "
              "9999, JSON, a number)")


class Unreadable(str):
    """A stored value that cannot be read as its column's type (text in a date column
    on SQLite, ``infinity`` on PostgreSQL, a zero date on MariaDB, invalid JSON), kept as
    its text: the row it is in is shown as broken instead of failing the whole read."""

    __slots__ = ()


#: what a driver's or SQLAlchemy's conversion of a stored value may raise
_CONVERSION_ERRORS = (ValueError, TypeError, ArithmeticError, LookupError)


class _Lenient(TypeDecorator[Any]):
    """A column type whose stored values that do not convert are read as ``Unreadable``."""

    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        process = super().result_processor(dialect, coltype)
        if process is None:
            return None

        def lenient(value: Any) -> Any:
            try:
                return process(value)
            except _CONVERSION_ERRORS:
                return Unreadable(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)

        return lenient


class UTCDateTime(_Lenient):
    """Stored as naive UTC (microseconds kept on MySQL), read back as aware UTC; a stored
    value that is no such time is read as ``Unreadable``."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":  # text parsed below: SQLAlchemy's parser refuses more
            return dialect.type_descriptor(_SQLiteDateTime())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return sched.as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else _stored_utc(value)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if self._unwrapped_dialect_impl(dialect).result_processor(dialect, coltype) is not None:
            return super().result_processor(dialect, coltype)
        return _read_utc  # what every supported driver gives: one call per value


def _stored_utc(value: Any) -> datetime:
    """A stored time (a datetime, or text: SQLite; a zero date on MySQL; infinity on
    PostgreSQL) as aware UTC; ValueError or TypeError when it is none."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if type(value) is not datetime:
        raise TypeError(value)
    return sched.as_utc(value)


def _read_utc(value: Any) -> datetime | Unreadable | None:
    """A stored time as aware UTC; ``Unreadable`` when it is none (see UTCDateTime)."""
    if type(value) is datetime and value.tzinfo is None:  # the common case, first
        return value.replace(tzinfo=sched.UTC)
    if value is None:
        return None
    try:
        return _stored_utc(value)
    except _CONVERSION_ERRORS:
        return Unreadable(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)


class _SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME written as SQLAlchemy does, read as the stored text."""

    def result_processor(self, dialect: Dialect, coltype: Any) -> None:
        return None


class StoredJSON(_Lenient):
    """JSON whose stored text, when not valid JSON, is read as ``Unreadable``."""

    impl = JSON
    cache_ok = True


class StoredNumeric(_Lenient):
    """A decimal number; a stored value that is none is read as ``Unreadable``."""

    impl = Numeric
    cache_ok = True


#: what turning one stored row into a schedule or a message may raise when a value the
#: database let through is unusable (plain SQL), beside ValidationError
ROW_ERRORS = (ValueError, TypeError, ArithmeticError, LookupError, AttributeError, ImproperlyConfigured)


def row_error(table: str, pk: Any, exc: Exception) -> ValidationError:
    """``exc``, raised while reading the row ``pk`` of ``table``, as a ValidationError."""
    if isinstance(exc, ValidationError):
        return exc
    return ValidationError(table, pk, f"row cannot be read: {type(exc).__name__}: {exc}")


def readable(field: str, value: Any) -> Any:
    """``value``, or a ValidationError naming ``field`` when it was stored unreadable."""
    if type(value) is Unreadable:
        raise ValidationError(field, str(value), UNREADABLE)
    return value


def exact_collation(dialect: Dialect) -> str:
    """The utf8mb4 collation of MySQL/MariaDB that compares as PostgreSQL and SQLite do:
    binary (case and accents count) and without padding (trailing spaces count)."""
    if getattr(dialect, "is_mariadb", False):
        return "utf8mb4_nopad_bin"  # MariaDB 10.2+
    if (dialect.server_version_info or (0,)) >= (8, 0, 17):
        return "utf8mb4_0900_bin"
    return "utf8mb4_bin"  # older MySQL: the only binary one, which ignores trailing spaces


class ExactString(TypeDecorator[str]):
    """A name compared exactly on every database (a task's name, its Celery task, its
    routing): on MySQL/MariaDB a utf8mb4 column with the ``exact_collation``, instead of
    the database's default (case-, accent- and trailing-space-insensitive, maybe latin1)."""

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        length = self.length
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(
                mysql.VARCHAR(length, charset="utf8mb4", collation=exact_collation(dialect))
            )
        return dialect.type_descriptor(String(length))


class Base(DeclarativeBase):
    """Declarative base with the constraint naming convention the migrations use."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# -- schedule tables ----------------------------------------------------------------

class ScheduleMixin:
    """What the four schedule tables share: their Celery object and their spec."""

    kind: ClassVar[str]
    #: columns that identify an equal schedule (equal schedules share a row)
    identity: ClassVar[tuple[str, ...]]

    id: Mapped[int] = mapped_column(Integer, primary_key=True)

    @validates("id")
    def _id(self, key: str, value: Any) -> int | None:
        return as_primary_key(self, value)

    @staticmethod
    def spec_of(row: Any) -> sched.Spec:
        """The schedule spec of a row of this table: this model's instance, or a row read
        with a Core statement (beat's store): the one builder of both."""
        raise NotImplementedError

    def spec(self) -> sched.Spec:
        return self.spec_of(self)

    def check(self) -> None:
        """Checks that span several fields (the single-field ones run on assignment)."""
        check_required(self)  # type: ignore[arg-type]

    def check_unique(self, session: Session) -> None:
        """A new or changed row may not equal a stored one (they are shared): a
        ValidationError naming the kind, not the database's unique violation."""
        key = dict(zip(self.identity, self.key(), strict=True))
        with session.no_autoflush:
            found = session.scalars(select(type(self)).filter_by(**key)).first()
        if found is not None and found is not self:
            raise ValidationError(self.kind, key, f"an equal {self.kind} schedule exists (id {found.id}): "
                                  "use that row")

    @property
    def schedule(self) -> BaseSchedule:
        raise NotImplementedError

    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.identity)


class IntervalSchedule(ScheduleMixin, Base):
    """Run every ``every`` ``period`` (days, hours, minutes, seconds, microseconds)."""

    __tablename__ = "celery_interval_schedule"
    __table_args__ = (UniqueConstraint("every", "period"),)
    kind = "interval"
    identity = ("every", "period")

    every: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(24))

    @validates("every")
    def _every(self, _key: str, value: Any) -> int:
        return sched.check_every(value, self.period)

    @validates("period")
    def _period(self, _key: str, value: Any) -> str:
        period = sched.check_period(value)
        if self.every is not None:
            sched.check_every(self.every, period)
        return period

    @staticmethod
    def spec_of(row: Any) -> sched.Interval:
        return sched.Interval(sched.interval_delta(row.every, row.period))

    @property
    def schedule(self) -> celery_schedule:
        return celery_schedule(self.spec_of(self).every)

    def __str__(self) -> str:
        unit = self.period[:-1] if self.every == 1 else self.period
        return f"every {self.every} {unit}"


class CrontabSchedule(ScheduleMixin, Base):
    """A crontab evaluated in its own IANA timezone."""

    __tablename__ = "celery_crontab_schedule"
    __table_args__ = (
        UniqueConstraint(
            "minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone",
            name="uq_celery_crontab_schedule_fields",
        ),
    )
    kind = "crontab"
    identity = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")

    minute: Mapped[str] = mapped_column(String(240), default="*")
    hour: Mapped[str] = mapped_column(String(96), default="*")
    day_of_week: Mapped[str] = mapped_column(String(64), default="*")
    day_of_month: Mapped[str] = mapped_column(String(124), default="*")
    month_of_year: Mapped[str] = mapped_column(String(64), default="*")
    timezone: Mapped[str] = mapped_column(String(63), default="UTC")

    def __init__(self, **fields: Any) -> None:
        for name in self.identity:
            if name not in fields:  # a crontab given without a timezone: the app's
                fields[name] = sched.app_timezone() if name == "timezone" else "*"
        super().__init__(**fields)
        self.check()

    @validates("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
    def _field(self, key: str, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        sched.check_cron_field(key, value)
        return check_length(CrontabSchedule, key, str(value).strip())

    @validates("timezone")
    def _timezone(self, _key: str, value: Any) -> str:
        sched.zone(value if isinstance(value, str) else repr(value))
        return check_length(CrontabSchedule, "timezone", str(value))

    def check(self) -> None:
        """A crontab that never fires (Feb 31st) is refused."""
        super().check()
        reason = sched.never_fires(self.spec_of(self))
        if reason is not None:
            expression = " ".join(str(getattr(self, name)) for name in sched.CRON_ORDER)
            raise ValidationError("crontab", expression, reason)

    @staticmethod
    def spec_of(row: Any) -> sched.Cron:
        return sched.Cron.parse(
            row.minute, row.hour, row.day_of_week, row.day_of_month, row.month_of_year, row.timezone,
        )

    @property
    def schedule(self) -> celery_crontab:
        return ZonedCrontab(
            minute=self.minute, hour=self.hour, day_of_week=self.day_of_week,
            day_of_month=self.day_of_month, month_of_year=self.month_of_year,
            tz_name=self.timezone,
        )

    def __str__(self) -> str:
        return (
            f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} "
            f"{self.day_of_week} ({self.timezone})"
        )


class SolarSchedule(ScheduleMixin, Base):
    """At a solar event (sunrise, sunset, ...) at a latitude and longitude."""

    __tablename__ = "celery_solar_schedule"
    __table_args__ = (UniqueConstraint("event", "latitude", "longitude"),)
    kind = "solar"
    identity = ("event", "latitude", "longitude")

    event: Mapped[str] = mapped_column(String(24))
    latitude: Mapped[Decimal] = mapped_column(StoredNumeric(9, 6))
    longitude: Mapped[Decimal] = mapped_column(StoredNumeric(9, 6))

    @validates("event")
    def _event(self, _key: str, value: Any) -> str:
        return sched.solar_event(value)

    @validates("latitude", "longitude")
    def _coordinate(self, key: str, value: Any) -> Decimal:
        return sched.coordinate(key, value)

    @staticmethod
    def spec_of(row: Any) -> sched.Solar:
        return sched.solar_spec(row.event, row.latitude, row.longitude)

    @property
    def schedule(self) -> celery_solar:
        sched.require_ephem()
        return celery_solar(self.event, float(self.latitude), float(self.longitude))

    def __str__(self) -> str:
        return f"{self.event} at ({self.latitude}, {self.longitude})"


class ClockedSchedule(ScheduleMixin, Base):
    """Once, at ``clocked_time`` (a task using it must be ``one_off``)."""

    __tablename__ = "celery_clocked_schedule"
    __table_args__ = (UniqueConstraint("clocked_time"),)
    kind = "clocked"
    identity = ("clocked_time",)

    clocked_time: Mapped[datetime] = mapped_column(UTCDateTime())

    @validates("clocked_time")
    def _clocked_time(self, _key: str, value: Any) -> datetime:
        moment = as_datetime("clocked_time", value)
        if moment is None:
            raise ValidationError("clocked_time", value, "is required")
        return moment

    @staticmethod
    def spec_of(row: Any) -> sched.Clocked:
        return sched.Clocked(sched.as_utc(readable("clocked_time", row.clocked_time)))

    @property
    def schedule(self) -> ClockedCelerySchedule:
        return ClockedCelerySchedule(self.clocked_time)

    def __str__(self) -> str:
        return f"once at {self.clocked_time.isoformat()}"


SCHEDULE_MODELS: dict[str, type[ScheduleMixin]] = {
    m.kind: m for m in (IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule)
}


# -- the task table -----------------------------------------------------------------

class _WritePath:
    """Where ``PeriodicTask.update_or_create`` finds the write core. The core lives in
    ``beatsqlalchemy.api``, which imports this module, so this module cannot import it:
    api registers its ``upsert`` here when it is imported, and the package ``__init__``
    imports api, so importing any module of the package registers it."""

    upsert: Callable[[Session, str | None, dict[str, Any], bool], tuple[PeriodicTask, bool]] | None = None


WRITE_PATH = _WritePath()


_ONE_SCHEDULE = " + ".join(
    f"(CASE WHEN {kind}_id IS NULL THEN 0 ELSE 1 END)" for kind in SCHEDULE_KINDS
) + " = 1"

#: columns whose change can move a task's next run (the ORM recomputes it on flush)
SCHEDULE_COLUMNS = (
    "interval_id", "crontab_id", "solar_id", "clocked_id", "interval", "crontab", "solar",
    "clocked", "enabled", "start_time", "one_off",
)


class PeriodicTask(Base):
    """A task Celery beat sends on a schedule; ``next_run_at`` says when, in UTC."""

    __tablename__ = "celery_periodic_task"
    __table_args__ = (
        CheckConstraint(_ONE_SCHEDULE, name="one_schedule"),
        Index(None, "enabled", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(ExactString(NAME_LENGTH), unique=True)
    task: Mapped[str] = mapped_column(ExactString(NAME_LENGTH))
    interval_id: Mapped[int | None] = mapped_column(ForeignKey(IntervalSchedule.id), index=True)
    crontab_id: Mapped[int | None] = mapped_column(ForeignKey(CrontabSchedule.id), index=True)
    solar_id: Mapped[int | None] = mapped_column(ForeignKey(SolarSchedule.id), index=True)
    clocked_id: Mapped[int | None] = mapped_column(ForeignKey(ClockedSchedule.id), index=True)
    args: Mapped[list[Any]] = mapped_column(StoredJSON, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(StoredJSON, default=dict)
    queue: Mapped[str | None] = mapped_column(ExactString(NAME_LENGTH))
    exchange: Mapped[str | None] = mapped_column(ExactString(NAME_LENGTH))
    routing_key: Mapped[str | None] = mapped_column(ExactString(NAME_LENGTH))
    headers: Mapped[dict[str, Any]] = mapped_column(StoredJSON, default=dict)
    priority: Mapped[int | None] = mapped_column(Integer)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expire_seconds: Mapped[int | None] = mapped_column(Integer)
    one_off: Mapped[bool] = mapped_column(Boolean, default=False)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    total_run_count: Mapped[int] = mapped_column(Integer, default=0)
    date_changed: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=sched.utcnow, onupdate=sched.utcnow
    )
    description: Mapped[str] = mapped_column(Text, default="")
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: apply_async options that have no column of their own (time_limit, ...)
    extra_options: Mapped[dict[str, Any] | None] = mapped_column(StoredJSON)
    #: "config" for tasks installed from the app's ``beat_schedule``
    source: Mapped[str | None] = mapped_column(String(16), index=True)
    #: set by the triggers when a plain-SQL write changed the task's schedule; beat recomputes it
    needs_recompute: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
    #: why beat could not schedule this row (cleared when the row is fixed)
    schedule_error: Mapped[str | None] = mapped_column(Text)
    #: runs missed by more than the grace time: "catch_up" sends one, "skip" sends none;
    #: None follows the configuration (catch up, except crontabs past Celery's
    #: ``beat_cron_starting_deadline``)
    misfire_policy: Mapped[str | None] = mapped_column(String(16))
    #: a random key of this row, part of its run ids (see ``beatsqlalchemy.runids``): a task
    #: re-created under a reused row id never gets the ids of the one deleted
    run_key: Mapped[str] = mapped_column(String(KEY_LENGTH), default=new_key, server_default=random_key())
    #: how its latest run ended on a worker, when, its latest success, and how many runs in a
    #: row failed: the workers' own (``beatsqlalchemy.outcomes``), written with the run log
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_outcome_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    interval: Mapped[IntervalSchedule | None] = relationship(lazy="joined")
    crontab: Mapped[CrontabSchedule | None] = relationship(lazy="joined")
    solar: Mapped[SolarSchedule | None] = relationship(lazy="joined")
    clocked: Mapped[ClockedSchedule | None] = relationship(lazy="joined")

    def __init__(self, **fields: Any) -> None:
        fields.setdefault("args", [])
        fields.setdefault("kwargs", {})
        fields.setdefault("headers", {})
        fields.setdefault("enabled", True)
        fields.setdefault("one_off", False)
        fields.setdefault("description", "")
        fields.setdefault("total_run_count", 0)
        super().__init__(**fields)

    @validates("name", "task")
    def _name(self, key: str, value: Any) -> str:
        return as_name(key, value) or ""

    @validates("id")
    def _primary_key(self, key: str, value: Any) -> int | None:
        return as_primary_key(self, value)

    @validates("interval_id", "crontab_id", "solar_id", "clocked_id")
    def _schedule_id(self, key: str, value: Any) -> int | None:
        return as_id(key, value)

    @validates("total_run_count")
    def _total_run_count(self, key: str, value: Any) -> int:
        count = as_int(key, value, 0, sched.INT32_MAX)
        if count is None:
            raise ValidationError(key, value, "is required")
        return count

    @validates("source")
    def _source(self, key: str, value: Any) -> str | None:
        if value is None or value == DATABASE_SOURCE:
            return None  # the column holds NULL for tasks created in the database
        if value == CONFIG_SOURCE:
            return CONFIG_SOURCE
        raise ValidationError(key, value, f"must be {CONFIG_SOURCE!r} or {DATABASE_SOURCE!r}")

    @validates("schedule_error")
    def _schedule_error(self, key: str, value: Any) -> None:
        if value is not None:
            raise ValidationError(key, value, "is beat's own: it says why beat cannot schedule "
                                  "the row, and is cleared when the row is fixed")

    @validates("run_key")
    def _run_key(self, key: str, value: Any) -> None:
        raise ValidationError(key, value, "is beat's own: a random key given to the row when it is "
                              "created, from which its run ids are derived")

    @validates(*OUTCOME_COLUMNS)
    def _outcome(self, key: str, value: Any) -> None:
        raise ValidationError(key, value, "is the workers' own: it says how the task's runs ended, "
                              "recorded by the workers (beat_sqlalchemy_track_outcomes)")

    @validates("queue", "exchange", "routing_key")
    def _route(self, key: str, value: Any) -> str | None:
        return as_name(key, value, optional=True)

    @validates("args")
    def _args(self, _key: str, value: Any) -> list[Any]:
        return as_json("args", [] if value is None else value, list)  # type: ignore[no-any-return]

    @validates("kwargs")
    def _object(self, key: str, value: Any) -> dict[str, Any]:
        return as_json(key, {} if value is None else value, dict)  # type: ignore[no-any-return]

    @validates("headers")
    def _headers(self, key: str, value: Any) -> dict[str, Any]:
        headers: dict[str, Any] = as_json(key, {} if value is None else value, dict)
        check_headers(headers)
        return headers

    @validates("extra_options")
    def _extra_options(self, key: str, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        options: dict[str, Any] = as_json(key, value, dict)
        check_options(options)
        return options

    @validates("priority")
    def _priority(self, key: str, value: Any) -> int | None:
        return as_int(key, value, 0, 255)

    @validates("expire_seconds")
    def _expire_seconds(self, key: str, value: Any) -> int | None:
        return as_int(key, value, 0, sched.INT32_MAX)

    @validates("expires", "start_time", "last_run_at", "next_run_at", "date_changed")
    def _moment(self, key: str, value: Any) -> datetime | None:
        return as_datetime(key, value)

    @validates("one_off", "enabled", "needs_recompute")
    def _flag(self, key: str, value: Any) -> bool:
        return as_bool(key, value)

    @validates("misfire_policy")
    def _misfire_policy(self, key: str, value: Any) -> str | None:
        return as_misfire_policy(key, value)

    @validates("description")
    def _description(self, key: str, value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValidationError(key, value, "must be a string")
        if len(value) > DESCRIPTION_BYTES // 4 and len(value.encode("utf-8", "replace")) > DESCRIPTION_BYTES:
            raise ValidationError(key, value, f"longer than {DESCRIPTION_BYTES:,} bytes (UTF-8), what "
                                  "every supported database can store")
        return as_text(key, value)

    # -- derived ----------------------------------------------------------------

    @property
    def schedule_row(self) -> ScheduleMixin | None:
        """The one schedule row this task uses."""
        for kind in SCHEDULE_KINDS:
            row = getattr(self, kind)
            if row is not None:
                return row  # type: ignore[no-any-return]
        return None

    @property
    def schedule(self) -> BaseSchedule:
        """The Celery schedule object (``crontab``, ``schedule``, ``solar`` or clocked)."""
        row = self.schedule_row
        if row is None:
            raise ValidationError("schedule", None, "the task has no schedule")
        return row.schedule

    def validate(self) -> None:
        """Checks that span several fields; the single-field ones run on assignment."""
        state = sa_inspect(self)
        # Until the flush syncs foreign keys, a changed relationship is what counts (a
        # schedule set to None still has its old id), and a changed id where the
        # relationship did not change (the old row is still loaded)
        rows, by_id = [], []
        for kind in SCHEDULE_KINDS:
            relationship_changed = state.attrs[kind].history.has_changes()
            if state.attrs[f"{kind}_id"].history.has_changes() and not relationship_changed:
                by_id.append(kind)
                if getattr(self, f"{kind}_id") is not None:
                    rows.append(kind)
            elif getattr(self, kind) is not None or (
                    getattr(self, f"{kind}_id") is not None and not relationship_changed):
                rows.append(kind)
        if len(rows) != 1:
            raise ValidationError("schedule", rows or None, "a task needs exactly one of interval, "
                                  "crontab, solar or clocked")
        check_required(self)
        kind = rows[0]
        session = state.session
        if (kind in by_id or getattr(self, kind) is None) and session is not None:  # given by id alone
            with session.no_autoflush:
                if session.get(SCHEDULE_MODELS[kind], getattr(self, f"{kind}_id")) is None:
                    raise ValidationError(f"{kind}_id", getattr(self, f"{kind}_id"),
                                          f"no {kind} schedule has this id")
        if (self.enabled and self.expires is not None and self.expires <= sched.utcnow()
                and (state.attrs.expires.history.has_changes() or state.attrs.enabled.history.has_changes())):
            raise ValidationError("expires", self.expires.isoformat(), "is in the past: the task would "
                                  "never run (give a later time, or none)")
        if self.expires is not None and self.expire_seconds is not None:
            raise ValidationError("expires", self.expires, "set expires or expire_seconds, not both")
        if rows[0] == "clocked" and not self.one_off:
            raise ValidationError("one_off", self.one_off, "a clocked task must be one_off")

    def compute_next_run(self, now: datetime | None = None) -> datetime | None:
        """When this task runs next (None when disabled or finished)."""
        row = self.schedule_row
        if not self.enabled or row is None:
            return None
        return sched.first_run(row.spec(), now or sched.utcnow(), readable("last_run_at", self.last_run_at),
                               readable("start_time", self.start_time))

    def read_error(self) -> ValidationError | None:
        """The first stored value of this task or its schedule that cannot be read
        (written with plain SQL), as the error naming it; None when all can."""
        rows: list[Any] = [self, self.schedule_row]
        for row in rows:
            if row is None:
                continue
            for key in row.__mapper__.columns.keys():  # noqa: SIM118 (names, not columns)
                value = row.__dict__.get(key)
                if type(value) is Unreadable:
                    return ValidationError(key, str(value), UNREADABLE)
        return None

    def __repr__(self) -> str:
        return f"<PeriodicTask {self.name!r} ({self.task})>"

    # -- the seed's API ---------------------------------------------------------

    @classmethod
    def update_or_create(
        cls, session: Session | None = None, name: str | None = None,
        defaults: dict[str, Any] | None = None, *, session_obj: Session | None = None,
        commit: bool = True, **fields: Any,
    ) -> tuple[PeriodicTask, bool]:
        """Create the task called ``name`` or update it with ``fields`` and ``defaults``;
        returns ``(task, created)``. Schedules may be given as rows, dicts, JSON strings,
        Celery schedule objects, timedeltas or (crontab) 5-field cron strings.

        A door onto ``beatsqlalchemy.api``'s write path (``WRITE_PATH``); commits unless
        ``commit=False`` (then it flushes, in the caller's transaction)."""
        session = session or session_obj
        if session is None:
            raise TypeError("update_or_create() needs a session (positional or session_obj=)")
        if WRITE_PATH.upsert is None:  # pragma: no cover (the package __init__ imports api)
            raise RuntimeError("beatsqlalchemy.api is not imported: import beatsqlalchemy")
        return WRITE_PATH.upsert(session, name, {**(defaults or {}), **fields}, commit)


class PeriodicTaskRun(Base):
    """One claimed run of a task: which slot, which Celery task id, who sent it."""

    __tablename__ = "celery_periodic_task_run"
    __table_args__ = (
        # a run is logged once; its id differs from that of a deleted task whose row id was reused
        UniqueConstraint("task_id"),
        Index(None, "state", "claimed_at"),
        Index(None, "periodic_task_name", "slot"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    periodic_task_id: Mapped[int] = mapped_column(Integer)
    periodic_task_name: Mapped[str] = mapped_column(ExactString(NAME_LENGTH))
    slot: Mapped[datetime] = mapped_column(UTCDateTime())
    task_id: Mapped[str] = mapped_column(ExactString(36))
    state: Mapped[str] = mapped_column(String(16))
    sent_by: Mapped[str] = mapped_column(String(255))
    claim_token: Mapped[str] = mapped_column(String(32))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: when a worker started the run, and which (``beatsqlalchemy.worker.RunOnceTask``)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_by: Mapped[str | None] = mapped_column(String(255))
    #: what the workers recorded (``beatsqlalchemy.outcomes``): the outcome of the latest
    #: attempt, which worker ran it, when it finished, its runtime in seconds, how many
    #: retries came before it, and on failure the exception type and first line (never args)
    outcome: Mapped[str | None] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(255))
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    runtime: Mapped[float | None] = mapped_column(Double)
    retries: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))


class Deployment(Base):
    """The one row naming this schedule database: its random id, created with the database,
    is part of every run id, so that deployments sharing a broker never share a run id."""

    __tablename__ = DEPLOYMENT_TABLE

    id: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)


class BeatRecord(Base):
    """One beat process, as its heartbeats record it: who and where it is, when it was
    last seen, how many runs it sent, and its current (or last) database outage."""

    __tablename__ = "beatsqlalchemy_beat"

    #: ``beat_sqlalchemy_identity`` (``host:pid:random`` by default)
    identity: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    runs_sent: Mapped[int] = mapped_column(BigInteger)
    #: when the current (or, with ``outage_ended``, the last) database outage began
    outage_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outage_ended: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: the outage's database error, one line without secrets
    outage_reason: Mapped[str | None] = mapped_column(String(OUTAGE_REASON_LENGTH))


# MySQL/MariaDB: the tables hold any Unicode text (emoji included) whatever the database's
# default character set; ExactString columns also compare exactly
for _table in Base.metadata.tables.values():
    for _dialect in ("mysql", "mariadb"):
        _table.dialect_options[_dialect]["charset"] = "utf8mb4"


# -- validation on every ORM write of our rows -----------------------------------------
#
# Mapper-level events on our models only: any session (ours, the host application's, an
# admin library's) that inserts or updates a task or a schedule row runs these checks, and
# a flush of the host application's own models runs none of our code.

#: ``session.info`` key: the transaction in which rows of ours were last flushed (the api
#: refuses to commit a transaction holding the caller's flushed changes)
WRITTEN_IN = "beatsqlalchemy.written_in"


def _written(row: Any) -> Session | None:
    """Note that ``row`` is flushed in its session's current transaction."""
    session = object_session(row)
    if session is not None:
        session.info[WRITTEN_IN] = session.get_transaction()
    return session


def _deleting(_mapper: Any, _connection: Any, row: Any) -> None:
    _written(row)


def _check_schedule_row(_mapper: Any, _connection: Any, row: ScheduleMixin) -> None:
    """A schedule row is complete, takes a free id and equals no stored row."""
    session = _written(row)
    if session is None:  # pragma: no cover (a flush always has its session)
        return
    if sa_inspect(row).pending:
        check_free_id(session, row)
    row.check()
    row.check_unique(session)


def _check_task_insert(_mapper: Any, _connection: Any, task: PeriodicTask) -> None:
    """A new task is validated and gets its ``next_run_at``."""
    session = _written(task)
    if session is not None:
        check_free_id(session, task)
    task.validate()
    _schedule(task)


def _check_task_update(_mapper: Any, _connection: Any, task: PeriodicTask) -> None:
    """A changed task is validated; a change of its schedule moves ``next_run_at``."""
    _written(task)
    task.validate()
    # a writer that clears next_run_at of an enabled task gets it computed again
    # (beat's window never reads NULL: the task would never run)
    cleared = task.enabled and task.next_run_at is None and task.schedule_error is None
    if cleared or _schedule_changed(task):
        _schedule(task)


def _schedule(task: PeriodicTask) -> None:
    session = object_session(task)
    if session is None:  # pragma: no cover
        task.next_run_at = task.compute_next_run()
    else:
        with session.no_autoflush:
            task.next_run_at = task.compute_next_run()
    task.schedule_error = None


for _model in SCHEDULE_MODELS.values():
    event.listen(_model, "before_insert", _check_schedule_row)
    event.listen(_model, "before_update", _check_schedule_row)
    event.listen(_model, "before_delete", _deleting)
event.listen(PeriodicTask, "before_delete", _deleting)
event.listen(PeriodicTask, "before_insert", _check_task_insert)
event.listen(PeriodicTask, "before_update", _check_task_update)


def _schedule_changed(task: PeriodicTask) -> bool:
    state = sa_inspect(task)
    if state.attrs.next_run_at.history.has_changes():
        return False  # the writer set next_run_at itself
    return any(state.attrs[name].history.has_changes() for name in SCHEDULE_COLUMNS)


def get_session(app: Any = None) -> Session:
    """A session on the database configured for ``app`` (the current Celery app when
    none is given); on the SQLite default the tables are created on first use."""
    return open_session(app or current_app._get_current_object())


# -- indexes of the consoles' listings (``beatsqlalchemy.listing``, migration 0005) -----------
#: tasks paged by next run then id (enabled ones; a filter on ``enabled`` included)
Index("ix_celery_periodic_task_enabled_next_run_at_id", PeriodicTask.enabled, PeriodicTask.next_run_at,
      PeriodicTask.id)
#: the broken rows (PostgreSQL and SQLite: only those; MySQL/MariaDB have no partial index)
Index("ix_celery_periodic_task_broken", PeriodicTask.id,
      postgresql_where=PeriodicTask.schedule_error.is_not(None),
      sqlite_where=PeriodicTask.schedule_error.is_not(None))
#: tasks found by a prefix of the Celery task they send
Index("ix_celery_periodic_task_task", PeriodicTask.task)
#: the failing tasks, most failures first (PostgreSQL and SQLite: only those; migration 0008)
Index("ix_celery_periodic_task_failing", PeriodicTask.consecutive_failures.desc(),
      PeriodicTask.last_outcome_at.desc(), PeriodicTask.name,
      postgresql_where=PeriodicTask.consecutive_failures >= 1,
      sqlite_where=PeriodicTask.consecutive_failures >= 1)
