"""The ``beatsqlalchemy`` command, also ``celery -A proj beatsqlalchemy``: manage periodic
tasks (list, show, add, edit, enable, disable, remove, run, export, import) and the schema.

Invalid input prints one line naming the field and the value and exits 2; a task that
does not exist exits 1; so does a database or broker error. Never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
from celery.app.utils import find_app
from sqlalchemy.exc import SQLAlchemyError

from . import api, checks, describe, health, migrate
from .config import DEFAULT_URL, URL_ALIASES, URL_ENV, BeatConfig, resolve_url
from .converters import parse_duration as parse_duration  # re-exported: the tests' name
from .db import database_error, get_engine, redact, session_factory
from .exceptions import SchemaNotReady, TaskNotFound, ValidationError
from .migrate import ensure_schema
from .schedules import as_utc, checked_utc, in_app_timezone, split_cron, zone
from .validators import as_datetime
from .web.auth import hash_password

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from .models import PeriodicTask

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- errors: one line, no traceback ------------------------------------------------------

class InputError(click.ClickException):
    """Invalid input: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Failure(InputError):
    """A missing task, or a database or broker error: one line on stderr, exit code 1."""

    exit_code = 1


def _one_line(exc: click.UsageError) -> InputError:
    """Click's usage error (usage, hint, message) as a single line."""
    message = exc.format_message().strip().rstrip(".")
    if exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return InputError(message)


class _OneLineUsage(click.Command):
    """Usage errors as one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None


class Command(_OneLineUsage):
    """A command whose usage errors are one line."""


class Group(_OneLineUsage, click.Group):
    """A group whose commands are ``Command`` and whose usage errors are one line."""

    command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None


def handle_errors(func: F) -> F:
    """Turn the package's errors into one-line messages with the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except ValidationError as exc:
            raise InputError(str(exc)) from None
        except (TaskNotFound, SchemaNotReady) as exc:
            raise Failure(str(exc)) from None
        except SQLAlchemyError as exc:
            obj = click.get_current_context().find_object(Context)
            where = f"database {obj.url_shown} " if obj is not None else "database "
            raise Failure(f"{where}failed: {database_error(exc)}") from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # never a traceback
            raise Failure(f"{type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]


# -- where the database and the app come from ---------------------------------------------

def load_app(name: str) -> Celery:
    """The Celery app named ``module``, ``module:attribute`` or ``module.attribute``."""
    try:
        app: Any = find_app(name)
    except Exception as exc:
        raise InputError(f"app: cannot load the Celery app {name!r}: {type(exc).__name__}: {exc}") from None
    if not hasattr(app, "conf"):
        raise InputError(f"app: {name!r} is not a Celery app")
    return app  # type: ignore[no-any-return]


class Context:
    """What the group options resolve to: the database (``--url``, else the app's
    configuration, else ``BEAT_SQLALCHEMY_URL``, else the SQLite default) and the app."""

    def __init__(self, url: str | None, app: str | Celery | None) -> None:
        self._url = url
        self._app_ref = app
        self._app: Celery | None = None
        self._engine: Engine | None = None

    def app(self, needed_for: str | None = None) -> Celery | None:
        """The Celery app; with ``needed_for``, an InputError when none was given."""
        if self._app is None and self._app_ref is not None:
            self._app = load_app(self._app_ref) if isinstance(self._app_ref, str) else self._app_ref
        if self._app is None and needed_for:
            raise InputError(f"app: {needed_for} needs the Celery app; pass -A/--app "
                             "(for example: beatsqlalchemy -A proj.celery:app ...)")
        return self._app

    def config(self) -> Any:
        app = self.app()
        return None if app is None else BeatConfig.from_app(app)

    def url(self) -> tuple[str, dict[str, Any]]:
        if self._url:
            return self._url, {}
        config = self.config()
        if config is not None:
            return config.url, dict(config.engine_options)
        return resolve_url(), {}

    @property
    def url_shown(self) -> str:
        try:
            return redact(self.url()[0])
        except click.ClickException:
            return "<unknown>"

    def _default_database(self, url: str, read_only: bool) -> None:
        """Nothing names a database: say which one is used (on stderr), and for a command
        that only reads, refuse to create the default SQLite file."""
        app = self.app()
        named = self._url or os.environ.get(URL_ENV) or (
            app is not None and any(app.conf.get(key) for key in URL_ALIASES))
        if named or url != DEFAULT_URL:
            return
        path = os.path.abspath(url.removeprefix("sqlite:///"))
        how = "the default: set --url, -A or BEAT_SQLALCHEMY_URL"
        if read_only and not os.path.exists(path):
            raise Failure(f"no database at sqlite:///{path} ({how}); nothing was created")
        click.echo(f"database: sqlite:///{path} ({how})", err=True)

    def engine(self, read_only: bool = False, answer_timeout: float | None = None) -> Engine:
        """The engine, without checking the schema (for the migration commands); with
        ``read_only``, a default database that does not exist is not created; with
        ``answer_timeout``, a database that does not answer within it fails."""
        if self._engine is None:
            url, options = self.url()
            self._default_database(url, read_only)
            try:
                self._engine = get_engine(url, options, answer_timeout=answer_timeout)
            except ValidationError as exc:  # names the URL, redacted
                raise InputError(str(exc)) from None
            except Exception as exc:  # a missing driver
                raise InputError(f"url: invalid value {redact(url)!r}: {exc}") from None
        return self._engine

    @contextmanager
    def session(self, read_only: bool = False, answer_timeout: float | None = None) -> Iterator[Session]:
        """A session on a database whose schema is current (created on SQLite, unless
        ``read_only`` and the default database does not exist)."""
        engine = self.engine(read_only, answer_timeout)
        config = self.config()
        ensure_schema(engine, config.create_schema if config is not None and not self._url else None)
        # a crontab given without a timezone takes the app's (UTC without -A)
        with in_app_timezone(self.app()), session_factory(engine)() as session:
            yield session


pass_context = click.make_pass_decorator(Context)

GROUP_HELP = """Manage the periodic tasks of beatsqlalchemy, and its schema.

The database is the one given with --url, else the one in the app's configuration
({app}), else the BEAT_SQLALCHEMY_URL environment variable, else
sqlite:///celerybeat-schedule.sqlite3.

\b
Examples:
  {prog} --url postgresql+psycopg://beat@db/celery upgrade
  {prog_app} list
  {prog_app} add cleanup tasks.cleanup --every 10m
  {prog_app} disable cleanup
"""


@click.group(cls=Group, context_settings=CONTEXT_SETTINGS, help=GROUP_HELP.format(
    app="-A", prog="beatsqlalchemy", prog_app="beatsqlalchemy -A proj"))
@click.option("--url", metavar="URL", help="Database URL (wins over the app's configuration and "
              "the BEAT_SQLALCHEMY_URL environment variable).")
@click.option("-A", "--app", metavar="MODULE[:APP]",
              help="A Celery app whose configuration names the database; `run` and "
              "`import --from-app` need it.")
@click.pass_context
def main(ctx: click.Context, url: str | None, app: str | None) -> None:
    ctx.obj = Context(url, app)


@click.group("beatsqlalchemy", cls=Group, context_settings=CONTEXT_SETTINGS,
             help=GROUP_HELP.format(app="celery -A", prog="celery beatsqlalchemy",
                                    prog_app="celery -A proj beatsqlalchemy"))
@click.option("--url", metavar="URL", help="Database URL (wins over the app's configuration and "
              "the BEAT_SQLALCHEMY_URL environment variable).")
@click.pass_context
def celery_command(ctx: click.Context, url: str | None) -> None:
    """``celery -A proj beatsqlalchemy ...``: the app is the one celery loaded."""
    parent_app = getattr(ctx.obj, "app", None)  # celery's CLIContext
    ctx.obj = Context(url, parent_app)


def command(name: str | None = None, **settings: Any) -> Callable[[F], F]:
    """A command of both groups, with one-line errors."""

    def decorate(func: F) -> F:
        cmd = click.command(name, cls=Command, context_settings=CONTEXT_SETTINGS, **settings)(
            handle_errors(func)
        )
        main.add_command(cmd)
        celery_command.add_command(cmd)
        return cmd  # type: ignore[return-value]

    return decorate


# -- formatting ----------------------------------------------------------------------------

def _when(moment: datetime | None) -> str:
    if isinstance(moment, str):  # a stored value that cannot be read
        return f"unreadable: {moment!r}"
    return "-" if moment is None else as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


def _iso(moment: datetime | None) -> str | None:
    """A time as ISO text; a stored value that cannot be read, as its text."""
    return moment.isoformat() if isinstance(moment, datetime) else moment


def _task_json(session: Session, task: PeriodicTask) -> dict[str, Any]:
    data = api.task_to_dict(task)
    next_run, error = api.next_run_or_error(task)
    data["next_run_at"] = None if next_run is None else next_run.isoformat()
    data["schedule_error"] = error
    return data


def _outcome(task: PeriodicTask) -> str:
    """How the task's latest run ended on a worker, with its failures in a row."""
    if not task.last_outcome:
        return "-"
    failures = task.consecutive_failures or 0
    return f"{task.last_outcome} ({failures} in a row)" if failures else task.last_outcome


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# -- schema ------------------------------------------------------------------------------

@command()
@click.argument("revision", default="head")
@pass_context
def upgrade(obj: Context, revision: str) -> None:
    """Create or upgrade the tables (to REVISION, default head).

    \b
    Example:
      beatsqlalchemy --url postgresql+psycopg://beat@db/celery upgrade
    """
    engine = obj.engine()
    migrate.upgrade(engine, revision)
    click.echo(_schema_state(engine))


@command()
@click.argument("revision")
@pass_context
def downgrade(obj: Context, revision: str) -> None:
    """Downgrade the tables to REVISION ('base' removes them all).

    \b
    Example:
      beatsqlalchemy --url postgresql+psycopg://beat@db/celery downgrade base
    """
    engine = obj.engine()
    migrate.downgrade(engine, revision)
    click.echo(_schema_state(engine))


def _schema_state(engine: Engine) -> str:
    """Which revision the database is at, or that it holds none of our tables."""
    current = migrate.current_revision(engine)
    state = f"is at revision {current}" if current else "has no beatsqlalchemy tables (empty)"
    return f"{redact(str(engine.url))} {state}"


@command()
@pass_context
def current(obj: Context) -> None:
    """Show the schema revision of the database and the newest one available.

    \b
    Example:
      beatsqlalchemy -A proj current
    """
    engine = obj.engine(read_only=True)
    click.echo(f"current: {migrate.current_revision(engine) or 'none'}")
    click.echo(f"head:    {migrate.head_revision()}")


# -- reading -----------------------------------------------------------------------------

@command("list")
@click.option("--enabled/--disabled", "enabled", default=None, help="Only enabled (or disabled) tasks.")
@click.option("--task", "task_name", metavar="TASK", help="Only tasks that send this Celery task.")
@click.option("--name", "pattern", metavar="PATTERN",
              help="Only names matching this pattern (* and ?, case-insensitive).")
@click.option("--limit", type=int, help="At most this many tasks.")
@click.option("--offset", type=int, default=0, show_default=True, help="Skip this many tasks first.")
@click.option("--page", type=int, help="Page number, from 1 (with --size).")
@click.option("--size", type=int, help="Tasks per page (default 50).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@pass_context
def list_(obj: Context, enabled: bool | None, task_name: str | None, pattern: str | None,
          limit: int | None, offset: int, page: int | None, size: int | None, as_json: bool) -> None:
    """List periodic tasks, sorted by name: name, Celery task, schedule in plain words,
    enabled, last run, next run (UTC), total runs, source (config or database) and how the
    latest run ended on a worker (with the failures in a row).

    \b
    Examples:
      beatsqlalchemy list
      beatsqlalchemy list --disabled --name 'report-*'
      beatsqlalchemy list --page 2 --size 20
      beatsqlalchemy list --json
    """
    with obj.session(read_only=True) as session:
        tasks = api.list_tasks(session, enabled=enabled, task=task_name, name=pattern, limit=limit,
                               offset=offset, page=page, size=size)
        if as_json:
            _echo_json([_task_json(session, t) for t in tasks])
            return
        if not tasks:
            click.echo("no periodic tasks")
            return
        rows = [["NAME", "TASK", "SCHEDULE", "ENABLED", "LAST RUN (UTC)", "NEXT RUN (UTC)", "RUNS",
                 "SOURCE", "LAST OUTCOME"]]
        for task in tasks:
            next_run, error = api.next_run_or_error(task)
            rows.append([
                task.name, task.task, describe.task(task), "yes" if task.enabled else "no",
                _when(task.last_run_at), "error" if error else _when(next_run),
                str(task.total_run_count), task.source or api.DATABASE_SOURCE, _outcome(task),
            ])
        click.echo(_table(rows))


@command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_context
def show(obj: Context, name: str, as_json: bool) -> None:
    """Show one task: its schedule, options, run state, next runs and recent runs.

    \b
    Examples:
      beatsqlalchemy show nightly-report
      beatsqlalchemy show nightly-report --json
    """
    with obj.session(read_only=True) as session:
        task = api.get_task(session, name)
        data = _task_json(session, task)
        recent = api.runs(session, name=name, limit=5)
        upcoming: list[datetime] = []
        if data["schedule_error"] is None:
            try:
                upcoming = api.upcoming(session, name, 3)
            except ValidationError:
                upcoming = []
        if as_json:
            data["upcoming"] = [moment.isoformat() for moment in upcoming]
            data["recent_runs"] = [api.run_to_dict(run) for run in recent]
            _echo_json(data)
            return
        kind = next((k for k in ("interval", "crontab", "solar", "clocked") if k in data), None)
        options = {k: data[k] for k in ("queue", "exchange", "routing_key", "priority", "expires",
                                          "expire_seconds", "start_time") if data[k] is not None}
        if task.headers:
            options["headers"] = task.headers
        if isinstance(task.extra_options, dict):
            options.update(task.extra_options)
        elif task.extra_options is not None:  # written with plain SQL: shown as stored
            options["extra_options"] = task.extra_options
        lines = [
            ("name", task.name), ("task", task.task), ("source", data["source"]),
            ("schedule", data["schedule"]),
            (kind or "schedule", json.dumps(data[kind]) if kind else "-"),
            ("enabled", "yes" if task.enabled else "no"), ("one-off", "yes" if task.one_off else "no"),
            ("args", json.dumps(task.args)), ("kwargs", json.dumps(task.kwargs)),
            ("options", json.dumps(options) if options else "-"),
            ("misfire", task.misfire_policy or "default"),
            ("description", task.description or "-"),
            ("last run", _when(task.last_run_at) + (" UTC" if task.last_run_at else "")),
            ("next run", (_when(upcoming[0]) + " UTC") if upcoming else "-"),
            ("total runs", str(task.total_run_count)),
            ("outcome", _outcome(task) + (f" at {_when(task.last_outcome_at)} UTC"
                                               if task.last_outcome_at else "")),
            ("succeeded", _when(task.last_success_at) + (" UTC" if task.last_success_at else "")),
        ]
        if data["schedule_error"]:
            lines.append(("error", data["schedule_error"]))
        if len(upcoming) > 1:
            lines.append(("then", ", ".join(_when(m) for m in upcoming[1:])))
        width = max(len(label) for label, _ in lines) + 2
        for label, value in lines:
            click.echo(f"{label + ':':<{width}}{value}")
        if recent:
            click.echo("recent runs (UTC):")
            click.echo(_table([["  SLOT", "STATE", "TASK ID", "SENT BY", "OUTCOME", "RUNTIME", "WORKER",
                                "ERROR"]] + [
                [f"  {_when(run.slot)}", run.state, run.task_id, run.sent_by, run.outcome or "-",
                 "-" if run.runtime is None else f"{run.runtime:.3f}s", run.worker or "-", run.error or "-"]
                for run in recent
            ]))


# -- writing -----------------------------------------------------------------------------

def _crontab_timezone(tz: str | None, current: Any = None) -> dict[str, str]:
    """The ``timezone`` of a new ``--cron``: ``--tz``, else the crontab's own on edit (only
    the options given change), else none: the write path gives it the app's."""
    if tz is not None:
        return {"timezone": tz}
    if current is not None and getattr(current, "kind", None) == "crontab":
        return {"timezone": str(current.timezone)}
    return {}


#: why ``--tz`` is refused with other schedules: the same words for ``add`` and ``edit``
_TZ_APPLIES = "--tz applies to a crontab (--cron, or --tz alone on edit) and to a naive --at time"


def _schedule(every: str | None, cron: str | None, tz: str | None, at: str | None,
              solar: tuple[str, str, str] | None, current: Any = None) -> dict[str, Any]:
    """The schedule keyword for ``save_task`` from the schedule options (or {}). An
    option given empty counts as given (and is refused by its parser)."""
    given = [flag for flag, value in (("--every", every), ("--cron", cron), ("--at", at),
                                      ("--solar", solar)) if value is not None]
    if len(given) > 1:
        raise ValidationError("schedule", " ".join(given), "give only one of --every, --cron, --at, --solar")
    if tz is not None:
        if not tz.strip():
            raise ValidationError("timezone", tz, "must not be empty")
        zone(tz)
        if every is not None or solar is not None:
            raise ValidationError("timezone", tz, f"{_TZ_APPLIES}, not to {given[0]}")
    if every is not None:
        return {"interval": parse_duration(every)}
    if cron is not None:
        return {"crontab": {**split_cron(cron), **_crontab_timezone(tz, current)}}
    if at is not None:
        moment = _parse_at(at, tz)
        return {"clocked": {"clocked_time": as_datetime("at", moment)}}
    if solar is not None:
        event, latitude, longitude = solar
        return {"solar": {"event": event, "latitude": latitude, "longitude": longitude}}
    if tz is not None:
        if current is None or getattr(current, "kind", None) != "crontab":
            raise ValidationError("timezone", tz, f"{_TZ_APPLIES}; this task has no crontab: give --cron too")
        fields = {key: getattr(current, key) for key in current.identity}
        return {"crontab": {**fields, "timezone": tz}}
    return {}


def _parse_at(value: str, tz: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError("at", value, "not an ISO 8601 date and time (2030-01-31T09:00)") from None
    if moment.tzinfo is not None and tz is not None:
        raise ValidationError("timezone", tz, f"{_TZ_APPLIES}; --at {value} has its own UTC offset")
    if tz is not None:
        moment = moment.replace(tzinfo=zone(tz))
    checked_utc("at", moment, value)
    return moment


def _expires(value: str) -> dict[str, Any]:
    text = value.strip()
    if text.lower() in ("", "none"):
        return {"expires": None, "expire_seconds": None}
    if text.isascii() and text.isdigit():
        return {"expires": None, "expire_seconds": int(text)}
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError("expires", value, "seconds, or an ISO 8601 date and time") from None
    checked_utc("expires", moment, value)
    return {"expires": moment, "expire_seconds": None}


def _fields(obj: Context, options: dict[str, Any], current: Any = None) -> dict[str, Any]:
    """``save_task`` keywords for the options given on the command line."""
    fields = _schedule(options.pop("every"), options.pop("cron"), options.pop("tz"),
                       options.pop("at"), options.pop("solar"), current)
    one_off = options.pop("one_off")
    if one_off is not None:
        fields["one_off"] = one_off
    expires = options.pop("expires")
    if expires is not None:
        fields.update(_expires(expires))
    for key in ("args", "kwargs", "headers"):
        value = options.pop(key)
        if value is not None:
            fields[key] = value  # JSON text, validated by the model
    for key in ("queue", "exchange", "routing_key"):
        value = options.pop(key)
        if value is not None:
            fields[key] = value or None  # "" clears it
    for key in ("priority", "description", "enabled", "start_time", "task"):
        value = options.pop(key, None)
        if value is not None:
            fields[key] = value
    misfire = options.pop("misfire_policy", None)
    if misfire is not None:
        fields["misfire_policy"] = None if misfire == "default" else misfire
    return fields


def task_options(func: F) -> F:
    """The options ``add`` and ``edit`` share."""
    decorators = [
        click.option("--every", metavar="DURATION", help="Run every DURATION: 30s, 5m, 2h, 1d, 1h30m."),
        click.option("--cron", metavar="'M H DOM MON DOW'",
                     help="Run on a crontab, for example '*/5 * * * *' or '30 7 * * mon'."),
        click.option("--tz", metavar="ZONE", help="IANA timezone of --cron (default: the app's "
                     "timezone, else UTC), or of a naive --at time."),
        click.option("--at", metavar="ISO-DATETIME",
                     help="Run once at this time (naive means UTC, or --tz); implies --one-off."),
        click.option("--solar", nargs=3, metavar="EVENT LAT LON",
                     help="Run at a solar event (sunrise, sunset, solar_noon, dawn_civil, ...)."),
        click.option("--args", metavar="JSON", help="Positional arguments, a JSON array."),
        click.option("--kwargs", metavar="JSON", help="Keyword arguments, a JSON object."),
        click.option("--queue", metavar="QUEUE", help="Queue to send to ('' clears it)."),
        click.option("--exchange", metavar="EXCHANGE", help="Exchange to send to ('' clears it)."),
        click.option("--routing-key", metavar="KEY", help="Routing key ('' clears it)."),
        click.option("--headers", metavar="JSON", help="Message headers, a JSON object."),
        click.option("--priority", type=int, metavar="N", help="Message priority, 0-255."),
        click.option("--expires", metavar="SECONDS|ISO-DATETIME",
                     help="Each message expires SECONDS after it is sent; or stop sending the "
                     "task after ISO-DATETIME ('none' clears it)."),
        click.option("--start-time", metavar="ISO-DATETIME", help="Do not run before this time."),
        click.option("--one-off/--no-one-off", "one_off", default=None,
                     help="Disable the task after its next run."),
        click.option("--enabled/--disabled", "enabled", default=None, help="Enable or disable the task."),
        click.option("--misfire-policy", type=click.Choice(["catch_up", "skip", "default"]),
                     help="Runs missed while beat was down: send one catch-up run (catch_up), "
                     "none (skip: a run more than beat_sqlalchemy_misfire_grace seconds late is "
                     "dropped), or follow the configuration (default)."),
        click.option("--description", metavar="TEXT", help="A description."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _summary(session: Session, task: PeriodicTask) -> str:
    next_run, error = api.next_run_or_error(task)
    if error:
        state = f"cannot be scheduled: {error}"
    elif not task.enabled:
        state = "disabled"
    else:
        state = f"next run {_when(next_run)} UTC" if next_run else "no further runs"
    return f"{task.name!r} ({task.task}): {describe.task(task)}; {state}"


@command()
@click.argument("name")
@click.argument("task")
@task_options
@pass_context
def add(obj: Context, /, name: str, task: str, **options: Any) -> None:
    """Add the periodic task NAME, which sends the Celery task TASK on one schedule:
    --every, --cron, --at or --solar.

    \b
    Examples:
      beatsqlalchemy add heartbeat tasks.ping --every 30s
      beatsqlalchemy add report tasks.report --cron '30 7 * * mon' --tz Europe/Berlin \\
          --kwargs '{"format": "pdf"}' --queue reports
      beatsqlalchemy add launch tasks.launch --at 2030-01-31T09:00:00Z
      beatsqlalchemy add lights tasks.lights_on --solar sunset 52.52 13.405 --disabled
    """
    fields = _fields(obj, options)
    if not any(kind in fields for kind in ("interval", "crontab", "clocked", "solar")):
        raise InputError("schedule: missing; give one of --every, --cron, --at, --solar "
                         f"(see '{click.get_current_context().command_path} --help')")
    with obj.session() as session:
        saved = api.create_task(session, name, task, **fields)
        click.echo(f"added {_summary(session, saved)}")


@command()
@click.argument("name")
@click.option("--task", metavar="TASK", help="The Celery task to send.")
@task_options
@pass_context
def edit(obj: Context, /, name: str, **options: Any) -> None:
    """Change the periodic task NAME: only the options given change. A new schedule
    (--every, --cron, --at, --solar) replaces the old one; --tz alone moves a crontab
    to another timezone.

    \b
    Examples:
      beatsqlalchemy edit heartbeat --every 1m
      beatsqlalchemy edit report --tz America/New_York --priority 5
      beatsqlalchemy edit report --args '[1, 2]' --queue ''
    """
    with obj.session() as session:
        existing = api.get_task(session, name)
        fields = _fields(obj, options, existing.schedule_row)
        if not fields:
            raise InputError(f"nothing to change; give at least one option (see "
                             f"'{click.get_current_context().command_path} --help')")
        source = existing.source
        saved = api.update_task(session, name, **fields)
        click.echo(f"changed {_summary(session, saved)}")
        if source == api.CONFIG_SOURCE and set(fields) - {"enabled", "description"}:
            click.echo(f"note: {name!r} comes from beat_schedule, which sets its task, schedule, "
                       "args, kwargs and options again when beat starts", err=True)


def names_command(act: Callable[[Session, tuple[str, ...]], None]) -> Callable[..., None]:
    """Register ``act`` as the command named after it, taking NAME... and acting on them in
    one session (enable, disable, remove); its docstring is the command's help."""

    @click.argument("names", nargs=-1, required=True, metavar="NAME...")
    @pass_context
    def run(obj: Context, names: tuple[str, ...]) -> None:
        with obj.session() as session:
            act(session, names)

    run.__doc__ = act.__doc__
    command(act.__name__)(run)
    return act


@names_command
def enable(session: Session, names: tuple[str, ...]) -> None:
    """Enable tasks; each runs next at its next slot (no stale catch-up).

    \b
    Example:
      beatsqlalchemy enable report heartbeat
    """
    for task in api.enable_tasks(session, names):
        click.echo(f"enabled {_summary(session, task)}")


@names_command
def disable(session: Session, names: tuple[str, ...]) -> None:
    """Disable tasks: a running beat stops sending them within its sync interval.

    Example (enable turns them on again): beatsqlalchemy disable report heartbeat
    """
    for task in api.disable_tasks(session, names):
        click.echo(f"disabled {task.name!r}")


@names_command
def remove(session: Session, names: tuple[str, ...]) -> None:
    """Delete tasks. All or nothing: if one name does not exist, none is deleted.

    \b
    Example:
      beatsqlalchemy remove report heartbeat
    """
    from_config = {t.name for t in api.get_tasks(session, names) if t.source == api.CONFIG_SOURCE}
    for name in api.delete_tasks(session, names):
        click.echo(f"removed {name!r}")
        if name in from_config:
            click.echo(f"note: {name!r} comes from beat_schedule; beat installs it again when "
                       "it starts unless it is removed from beat_schedule (or use `disable`)",
                       err=True)


@command()
@click.argument("name")
@pass_context
def run(obj: Context, name: str) -> None:
    """Send one run of NAME now, through the app's broker (needs -A/--app), whether the
    task is enabled or not. The run is recorded in the run log and counted; the next
    scheduled run does not move.

    \b
    Examples:
      beatsqlalchemy -A proj run nightly-report
      celery -A proj beatsqlalchemy run nightly-report
    """

    app = obj.app(needed_for="run")
    assert app is not None
    with obj.session() as session:
        task_name = api.get_task(session, name).task
        try:
            sent = api.run_now(session, app, name, sent_by=api.default_sender("cli"))
        except (ValidationError, TaskNotFound, SQLAlchemyError):
            raise
        except Exception as exc:  # the broker's
            broker = redact(str(app.conf.broker_url or "amqp://localhost//"))
            raise Failure(f"could not send {name!r} through the broker {broker}: "
                          f"{type(exc).__name__}: {exc}") from None
        click.echo(f"sent {name!r} ({task_name}) as task id {sent.task_id}")


# -- export and import -------------------------------------------------------------------

@command("export")
@pass_context
def export_(obj: Context) -> None:
    """Print every task's definition as JSON (no run state), sorted by name; `import`
    reads it back.

    \b
    Examples:
      beatsqlalchemy export > tasks.json
      beatsqlalchemy --url postgresql+psycopg://beat@db/celery import tasks.json
    """
    with obj.session(read_only=True) as session:
        _echo_json(api.export_tasks(session))


@command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"), required=False)
@click.option("--from-app", is_flag=True,
              help="Install the app's beat_schedule instead, as beat does when it starts.")
@pass_context
def import_(obj: Context, file: IO[str] | None, from_app: bool) -> None:
    """Create or update the tasks in FILE (JSON written by `export`; '-' reads stdin), in
    one transaction: nothing is written if one entry is invalid. Tasks not in FILE are
    left alone.

    \b
    Examples:
      beatsqlalchemy import tasks.json
      beatsqlalchemy export | beatsqlalchemy --url sqlite:///copy.sqlite3 import -
      beatsqlalchemy -A proj import --from-app
    """
    see = f"(see '{click.get_current_context().command_path} --help')"
    if file is not None and from_app:
        raise InputError(f"file: give a FILE or --from-app, not both {see}")
    if file is None and not from_app:
        raise InputError(f"file: missing; give a FILE ('-' reads stdin) or --from-app {see}")
    if from_app:
        _install_from_app(obj)
        return
    assert file is not None
    try:
        entries = json.load(file)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"file: invalid value {file.name!r}: not valid JSON: {exc}") from None
    with obj.session() as session:
        created, updated = api.import_tasks(session, entries)
    click.echo(f"imported {created + updated} task(s): {created} created, {updated} updated")


def _install_from_app(obj: Context) -> None:
    app = obj.app(needed_for="import --from-app")
    assert app is not None
    entries = {**api.default_entries(app), **(app.conf.beat_schedule or {})}
    errors: list[str] = []
    with obj.session() as session:
        installed, retired = api.install_config_schedule(
            session, entries, BeatConfig.from_app(app).remove_missing_config_tasks, errors=errors,
        )
    click.echo(f"installed {installed} task(s) from beat_schedule, retired {retired}")
    if errors:
        for message in errors[:-1]:
            click.echo(f"error: {message}", err=True)
        raise InputError(errors[-1])


# -- the web console --------------------------------------------------------------------------

#: the addresses ``web`` binds without asking: this machine only
LOOPBACK_NAMES = ("localhost",)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host in LOOPBACK_NAMES


def _web_app_module() -> Any:
    """``beatsqlalchemy.web.app``, loaded when ``web`` runs: it needs the ``web`` extra
    (Starlette, Jinja2, uvicorn), which beat and the other commands never import."""
    try:
        return importlib.import_module("beatsqlalchemy.web.app")
    except ImportError as exc:
        raise InputError(f"web: the web console needs the web extra: pip install 'beatsqlalchemy[web]' "
                         f"({exc})") from None


@command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port.")
@pass_context
def web(obj: Context, host: str, port: int) -> None:
    """Serve the web console (needs -A/--app: its configuration names the users,
    beat_sqlalchemy_web_users, and the session secret, beat_sqlalchemy_web_secret).

    \b
    Examples:
      beatsqlalchemy -A proj web
      celery -A proj beatsqlalchemy web --port 8080
    """
    app = obj.app(needed_for="web")
    assert app is not None
    if obj._url:
        raise InputError("url: web serves the database of the app's configuration; drop --url")
    config = BeatConfig.from_app(app)
    if not config.web_users or not config.web_secret:
        raise InputError("web: set beat_sqlalchemy_web_users (hashes from `beatsqlalchemy web-password`) "
                         "and beat_sqlalchemy_web_secret in the app's configuration first; "
                         "the console serves no page without a login")
    if not _loopback(host):  # allowed: it has users (refused above without)
        click.echo(f"web: listening on {host}, beyond this machine: serve it behind HTTPS", err=True)
    console = _web_app_module().create_app(app)
    uvicorn = importlib.import_module("uvicorn")
    click.echo(f"web console on http://{host}:{port}/ for database {obj.url_shown}", err=True)
    uvicorn.run(console, host=host, port=port, log_level="warning", server_header=False)


@command("web-password")
@click.option("--password", metavar="TEXT", help="The password (asked when not given; "
              "BEAT_SQLALCHEMY_WEB_PASSWORD is read too).", envvar="BEAT_SQLALCHEMY_WEB_PASSWORD")
def web_password(password: str | None) -> None:
    """Print the hash of a password for beat_sqlalchemy_web_users.

    \b
    Example:
      beatsqlalchemy web-password
      # app.conf.beat_sqlalchemy_web_users = {"alice": "<the printed hash>"}
    """
    if password is None:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    click.echo(hash_password(password))
# -- beat health: status and health --------------------------------------------------------

#: the database bound of status and health without an app (``beat_sqlalchemy_database_timeout``)
DEFAULT_TIMEOUT = 5.0


def _status_options(func: F) -> F:
    """The thresholds status and health share."""
    for option in reversed((
        click.option("--max-age", type=float, default=health.MAX_AGE, show_default=True, metavar="SECONDS",
                     help="A beat is alive when its last heartbeat is at most this old."),
        click.option("--grace", type=float, default=health.GRACE, show_default=True, metavar="SECONDS",
                     help="An enabled task is overdue when its next run is further in the past."),
        click.option("--claim-timeout", type=float, metavar="SECONDS",
                     help="A claim is unconfirmed when older (default: the app's "
                     "beat_sqlalchemy_claim_timeout, else 30)."),
        click.option("--timeout", type=float, metavar="SECONDS",
                     help="Fail when the database does not answer within this (default: the app's "
                     "beat_sqlalchemy_database_timeout, else 5)."),
    )):
        func = option(func)
    return func


def _read_status(obj: Context, max_age: float, grace: float, claim_timeout: float | None,
                 timeout: float | None) -> health.Status:
    """The status, or a Failure when the database does not answer within ``timeout``."""
    config = obj.config()
    if timeout is None:
        timeout = config.database_timeout if config is not None else DEFAULT_TIMEOUT
    if claim_timeout is None:
        claim_timeout = config.claim_timeout if config is not None else 30.0
    health.seconds("timeout", timeout)
    found: list[health.Status] = []
    failed: list[BaseException] = []

    def read() -> None:
        try:
            with obj.session(read_only=True, answer_timeout=timeout or None) as session:
                found.append(api.status(session, max_age=max_age, grace=grace, claim_timeout=claim_timeout))
        except BaseException as exc:  # raised in the caller's thread below
            failed.append(exc)

    worker = threading.Thread(target=read, name="beatsqlalchemy-status", daemon=True)
    worker.start()
    worker.join(timeout or None)
    if failed:
        raise failed[0]
    if not found:
        raise Failure(f"database {obj.url_shown} did not answer within {timeout:g}s")
    return found[0]


def _outage(beat: health.BeatInfo, status: health.Status) -> str:
    if beat.outage_since is None:
        return ""
    if beat.outage_ended is None:
        return f"; database outage since {checks.ago(status, beat.outage_since)}: {beat.outage_reason}"
    seconds = (beat.outage_ended - beat.outage_since).total_seconds()
    return f"; last outage {_when(beat.outage_since)}, {seconds:.0f}s: {beat.outage_reason}"


@command("status")
@_status_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_context
def status_(obj: Context, max_age: float, grace: float, claim_timeout: float | None,
            timeout: float | None, as_json: bool) -> None:
    """Show the beats (alive or gone, from their heartbeats), tasks overdue, claims never
    confirmed as sent, broken tasks and failing tasks. Counts stop at 1000 ("1000+").

    \b
    Examples:
      beatsqlalchemy -A proj status
      celery -A proj beatsqlalchemy status --json
    """
    status = _read_status(obj, max_age, grace, claim_timeout, timeout)
    if as_json:
        _echo_json(checks.status_to_dict(status))
        return
    click.echo(f"beats: {len(status.alive)} alive, {len(status.gone)} gone "
               f"(alive: seen within {status.max_age:g}s)")
    for beat in status.beats:
        state = "alive" if beat.alive else "gone "
        click.echo(f"  {state}  {beat.identity}  host {beat.host} pid {beat.pid}  "
                   f"v{beat.version}  started {_when(beat.started_at)}  last seen "
                   f"{checks.ago(status, beat.last_seen)}  runs sent {beat.runs_sent}{_outage(beat, status)}")
    click.echo(checks.finding(checks.overdue_label(status), status.overdue))
    click.echo(checks.finding(checks.unconfirmed_label(status), status.unconfirmed))
    click.echo(checks.finding(checks.BROKEN_LABEL, status.broken))
    click.echo(checks.finding(checks.FAILING_LABEL, status.failing))


def _pid_file_beat(status: health.Status, path: str) -> tuple[str, health.BeatInfo | None]:
    """The beat whose host and pid are this container's and the pid file's."""
    try:
        with open(path, encoding="utf-8") as file:
            pid = int(file.read().strip())
    except (OSError, ValueError) as exc:
        raise Failure(f"pid-file: cannot read a pid from {path!r}: {exc}") from None
    host = socket.gethostname()
    mine = [b for b in status.beats if b.host == host and b.pid == pid]
    return f"beat of {path} (host {host}, pid {pid})", max(mine, key=lambda b: b.last_seen, default=None)


@command("health")
@_status_options
@click.option("--min-beats", type=int, default=1, show_default=True, help="Fewer beats alive is a problem.")
@click.option("--max-overdue", type=int, default=0, show_default=True,
              help="More overdue tasks is a problem.")
@click.option("--max-unconfirmed", type=int, default=0, show_default=True,
              help="More claims unconfirmed past the claim timeout is a problem.")
@click.option("--max-broken", type=int, help="More broken tasks is a problem (default: not checked).")
@click.option("--max-failing", type=int, help="More failing tasks (their latest run failed on a worker) is a "
              "problem (default: not checked; needs beat_sqlalchemy_track_outcomes on the workers).")
@click.option("--this-beat", metavar="IDENTITY", help="This beat (beat_sqlalchemy_identity) must be alive.")
@click.option("--pid-file", metavar="PATH", help="The beat of this host whose pid is in PATH (celery beat "
              "--pidfile) must be alive.")
@click.option("--beat-only", is_flag=True, help="Check only the beat of --this-beat or --pid-file (a "
              "liveness probe: an overdue task should not restart every beat).")
@pass_context
def health_(obj: Context, max_age: float, grace: float, claim_timeout: float | None, timeout: float | None,
            min_beats: int, max_overdue: int, max_unconfirmed: int, max_broken: int | None,
            max_failing: int | None, this_beat: str | None, pid_file: str | None, beat_only: bool) -> None:
    """Exit 0 when healthy; otherwise print one line per problem and exit 1 (for
    Kubernetes probes and cron monitors). A database that does not answer within
    --timeout is a problem too.

    \b
    Examples:
      beatsqlalchemy -A proj health
      celery -A proj beatsqlalchemy health --pid-file /run/celerybeat.pid --beat-only
      beatsqlalchemy -A proj health --min-beats 2 --max-overdue 10 --grace 300
    """
    if beat_only and this_beat is None and pid_file is None:
        raise InputError("beat-only: needs --this-beat or --pid-file (see 'health --help')")
    thresholds = checks.Thresholds(
        min_beats=min_beats, max_overdue=max_overdue, max_unconfirmed=max_unconfirmed, max_broken=max_broken,
        max_failing=max_failing, this_beat=this_beat, beat_only=beat_only)
    status = _read_status(obj, max_age, grace, claim_timeout, timeout)
    problems = checks.problems(status, thresholds, [_pid_file_beat(status, pid_file)] if pid_file else [])
    if problems:
        for line in problems:
            click.echo(line)
        raise SystemExit(1)
    click.echo(f"healthy: {len(status.alive)} beat(s) alive, {status.overdue} overdue, "
               f"{status.unconfirmed} unconfirmed")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
