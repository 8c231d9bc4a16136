"""Celery's own message fields at every door: no stored ``headers`` or ``extra_options``
can change a run's task name, task id, serializer, producer, ETA or callbacks.

Every reserved header and every refused option (the parameters of Celery's and kombu's
send path that are not on the allow-list) is tried through the models, update_or_create,
``DatabaseScheduler.add``, the API, the CLI and ``import_tasks``, and written with plain
SQL for beat to read, on every backend.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.app.amqp import AMQP
from celery.app.task import Context, Task
from click.testing import CliRunner
from kombu import Producer
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from beatsqlalchemy import api
from beatsqlalchemy import schedules as sched
from beatsqlalchemy.cli import main as cli_main
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.message_options import OPTION_COLUMNS, OPTIONS, RESERVED_HEADERS, reserved_header
from beatsqlalchemy.models import IntervalSchedule, PeriodicTask
from beatsqlalchemy.schedulers import DatabaseScheduler
from beatsqlalchemy.store import Store

from .test_bad_input import row_counts, stored_state

EXISTING = "existing"
EVERY = {"every": 10, "period": "seconds"}


def celery_headers() -> set[str]:
    """The headers Celery itself writes (protocol 2) or reads into the task request."""
    message = AMQP(Celery(set_as_current=False)).as_task_v2("an-id", "a.task")
    own = {"lang", "task", "argsrepr", "kwargsrepr", "compression"}  # Context._get_custom_headers
    return set(message.headers) | own | {k for k in vars(Context) if not k.startswith("__")}


def send_parameters() -> set[str]:
    """Every keyword of Celery's and kombu's send path (apply_async to Producer.publish)."""
    names: set[str] = set()
    for function in (Task.apply_async, Celery.send_task, AMQP.as_task_v2, Producer.publish):
        names |= {p.name for p in inspect.signature(function).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    source = inspect.getsource(AMQP._create_task_sender)  # send_task_message's own keywords
    start = source.index("def send_task_message(")
    signature = source[start:source.index("):", start)]
    names |= {part.split("=")[0].strip() for part in signature.split("(", 1)[1].split(",")} - {"", "**kwargs"}
    return names - {"self", "body", "args", "kwargs", "name", "message", "producer_or_acquire"} | {
        "args", "kwargs",  # as option names they are refused too
        "content_type", "content_encoding", "mandatory", "immediate", "expiration", "stamped_headers",
        "correlation_id", "user_id", "app_id", "message_id", "type"}


#: every header name a row may not set: Celery's, beat's own, and the reserved prefixes
RESERVED = sorted(celery_headers() | RESERVED_HEADERS | {"x-delay", "X-Delay", "x-match", "_private"})
#: every send keyword not on the allow-list, with a value Celery would take
REFUSED = sorted(send_parameters() - set(OPTIONS))
#: allowed options with values they cannot take
BAD_VALUES: list[tuple[str, Any]] = [
    ("time_limit", -1), ("time_limit", 0), ("time_limit", "60"), ("time_limit", True),
    ("soft_time_limit", [1]), ("ignore_result", "yes"), ("retry", 1),
    ("retry_policy", "fast"), ("retry_policy", {"max_retries": None}), ("retry_policy", {"max_retries": 11}),
    ("retry_policy", {"interval_max": 60}), ("retry_policy", {"retry_errors": []}),
    ("compression", "brotli"), ("compression", "pickle"), ("delivery_mode", 3), ("delivery_mode", True),
    ("queue", ""), ("queue", 5), ("exchange", ["e"]), ("routing_key", "r" * 201), ("priority", 256),
    ("priority", "high"), ("expires", "tomorrow"), ("expires", -5),
]
#: (field, value, what the message must name) of every refused case
CASES: list[tuple[str, dict[str, Any], str]] = (
    [("headers", {key: "x"}, repr(key)) for key in RESERVED]
    + [("extra_options", {key: "x"}, repr(key)) for key in REFUSED]
    + [("extra_options", {key: value}, repr(key)) for key, value in BAD_VALUES]
)


def test_the_lists_cover_celery() -> None:
    """Every header Celery writes or reads is reserved, and the option sweep refuses the
    fields the issue names."""
    assert all(reserved_header(key) for key in celery_headers() | {"celery_beat_task"})
    assert {"task_id", "producer", "connection", "serializer", "eta", "countdown", "link", "link_error",
            "shadow", "headers", "publisher", "exchange_type", "declare"} <= set(REFUSED)
    assert not any(reserved_header(key) for key in ("tenant", "trace-id", "X_custom", "Task", "ID"))


def check(error: ValidationError, field: str, value: dict[str, Any], names: str) -> None:
    message = str(error)
    assert error.field == field and message.startswith(f"{field}: "), message
    assert names in message, (names, message)
    if field == "extra_options" and next(iter(value)) in REFUSED:
        assert "allowed: queue" in message, message


def refused(field: str, value: dict[str, Any], names: str, attempt: Callable[[str, str, dict[str, Any]], Any],
            name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        attempt(name, field, value)
    check(caught.value, field, value, names)


def existing(session: Session) -> None:
    PeriodicTask.update_or_create(session, name=EXISTING, task="tasks.add", interval=EVERY,
                                  headers={"tenant": "a"}, extra_options={"time_limit": 30})


def doors(session: Session, app: Celery) -> dict[str, Callable[[str, str, dict[str, Any]], Any]]:
    """Each door as ``attempt(name, field, value)``: create ``name`` or change EXISTING."""

    def model(name: str, field: str, value: dict[str, Any]) -> None:
        try:
            if name == EXISTING:
                task = session.scalars(select(PeriodicTask).where(PeriodicTask.name == name)).unique().one()
                setattr(task, field, value)
            else:
                session.add(PeriodicTask(name=name, task="t", interval=IntervalSchedule(**EVERY),
                                         **{field: value}))
            session.flush()
        finally:
            session.rollback()

    def options(field: str, value: dict[str, Any]) -> dict[str, Any]:
        """apply_async options as the door takes them (an option with a column of its own
        goes to that column: ``extra_options`` then holds the key)."""
        if field == "headers":
            return {"options": {"headers": value}}
        return {"extra_options": value} if set(value) & {*OPTION_COLUMNS, "expires"} else {"options": value}

    def add(name: str, field: str, value: dict[str, Any]) -> None:
        beat = DatabaseScheduler(app=app)
        try:
            beat.add(name=name, task="t", schedule=timedelta(seconds=10), **options(field, value))
        finally:
            beat.close()

    def api_door(name: str, field: str, value: dict[str, Any]) -> None:
        if name == EXISTING:
            api.update_task(session, name, **options(field, value))
        else:
            api.create_task(session, name, "t", timedelta(seconds=10), **{field: value})

    def imported(name: str, field: str, value: dict[str, Any]) -> None:
        api.import_tasks(session, [{"name": "fine", "task": "t", "interval": EVERY},
                                   {"name": name, "task": "t", "interval": EVERY, field: value}])

    return {
        "model": model,
        "update_or_create": lambda name, field, value: PeriodicTask.update_or_create(
            session, name=name, task="t", interval=EVERY, **{field: value}),
        "scheduler.add": add,
        "api": api_door,
        "import": imported,
    }


@pytest.mark.parametrize("door", ["model", "update_or_create", "scheduler.add", "api", "import"])
def test_reserved_fields_are_refused_at_every_door(
    door: str, engine: Engine, session: Session, app: Celery,
) -> None:
    """Each reserved header and refused option, creating a task and changing one: a
    ValidationError naming the field and the key, and nothing written."""
    attempt = doors(session, app)[door]
    empty = row_counts(engine)
    for field, value, names in CASES:
        refused(field, value, names, attempt, "bad")
        assert row_counts(engine) == empty, (field, value)
    existing(session)
    before = stored_state(engine)
    for field, value, names in CASES:
        refused(field, value, names, attempt, EXISTING)
        assert stored_state(engine) == before, (field, value)


def test_reserved_headers_are_refused_by_the_cli(db_url: str, engine: Engine, session: Session) -> None:
    """``add``/``edit --headers``: one line on stderr naming the key, exit 2, nothing written."""
    existing(session)
    before = stored_state(engine)
    runner = CliRunner()
    for key in RESERVED:
        for args in (["add", "bad", "t", "--every", "5s"], ["edit", EXISTING]):
            result = runner.invoke(cli_main, ["--url", db_url, *args, "--headers", json.dumps({key: "x"})],
                                   catch_exceptions=False)
            lines = result.stderr.strip().splitlines()
            assert result.exit_code == 2 and len(lines) == 1, (key, result.output)
            assert lines[0].startswith("error: headers: ") and f"reserved key {key!r}" in lines[0], lines
    assert stored_state(engine) == before


def test_allowed_options_are_kept(session: Session) -> None:
    """What the allow-list takes is stored as given, from every door."""
    allowed = {"time_limit": 60, "soft_time_limit": 50.5, "ignore_result": True, "retry": True,
               "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                "interval_max": 1},
               "compression": "zlib", "delivery_mode": "persistent", "queue": "q", "exchange": "e",
               "routing_key": "r", "priority": 3, "expires": "2040-01-01T00:00:00+00:00"}
    assert set(allowed) == set(OPTIONS)
    api.create_task(session, "ok", "t", timedelta(seconds=10), extra_options=allowed,
                    headers={"tenant": "a", "trace-id": "1"})
    task = api.get_task(session, "ok")
    assert (task.extra_options, task.headers) == (allowed, {"tenant": "a", "trace-id": "1"})


# -- rows written with plain SQL ------------------------------------------------------------------

def insert(engine: Engine, name: str, interval_id: int, headers: Any = None, options: Any = None) -> None:
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, "
            "extra_options, one_off, enabled, total_run_count, description, needs_recompute) VALUES "
            "(:name, 't', :iid, '[]', '{}', :headers, :options, :no, :yes, 0, '', :no)"),
            {"name": name, "iid": interval_id, "headers": json.dumps(headers or {}),
             "options": None if options is None else json.dumps(options), "no": False, "yes": True})


def test_beat_refuses_plain_sql_rows(engine: Engine, session: Session, app: Celery) -> None:
    """Every reserved header and refused option written with plain SQL: beat marks the
    row broken with the reason (recompute, and a claim of a row edited in place), the
    run log never has a run of it, ``run_now`` refuses it, and a good row keeps running."""
    existing(session)
    interval_id = session.scalars(select(PeriodicTask.interval_id)).one()
    session.rollback()
    for number, (field, value, _names) in enumerate(CASES):
        column = "headers" if field == "headers" else "options"
        insert(engine, f"bad-{number}", interval_id, **{column: value})
    store = Store(engine, "beat-a")
    now = sched.utcnow()
    done, errors, _ = store.recompute(now, 10_000)
    assert done == len(CASES)
    reasons = dict(errors)
    for number, (field, value, names) in enumerate(CASES):
        reason = reasons[f"bad-{number}"]
        assert reason.startswith(f"{field}: ") and names in reason, (value, reason)
    with engine.connect() as connection:
        rows = {r.name: r for r in connection.execute(text(
            "SELECT name, next_run_at, schedule_error FROM celery_periodic_task"))}
    assert all(rows[f"bad-{n}"].next_run_at is None and rows[f"bad-{n}"].schedule_error
               for n in range(len(CASES)))

    # the good row is due now; a good row edited in place (next_run_at set, so not flagged)
    slot = now - timedelta(seconds=1)
    for name, column, value in (("edited-headers", "headers", {"id": "fixed-id-123", "task": "other"}),
                                ("edited-options", "extra_options", {"serializer": "pickle"})):
        insert(engine, name, interval_id)
        store.recompute(now, 100)
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE celery_periodic_task SET {column} = :value, next_run_at = :slot "
                                    "WHERE name = :name"),
                               {"value": json.dumps(value), "slot": slot.replace(tzinfo=None), "name": name})
    with engine.begin() as connection:
        connection.execute(text("UPDATE celery_periodic_task SET next_run_at = :slot WHERE name = :name"),
                           {"slot": slot.replace(tzinfo=None), "name": EXISTING})
    due = [(r.id, r.next_run_at) for r in store.window(now, 1000).due]
    assert len(due) == 3
    result = store.claim(due, now)
    assert [run.name for run in result.runs] == [EXISTING]
    assert {name for name, _ in result.errors} == {"edited-headers", "edited-options"}
    assert "reserved key 'id'" in dict(result.errors)["edited-headers"]
    assert "'serializer' is not an option" in dict(result.errors)["edited-options"]
    assert result.runs[0].options["headers"] == {"tenant": "a", "celery_beat_task": True}
    for name in ("edited-headers", "bad-0"):
        with pytest.raises(ValidationError):
            api.run_now(session, app, name)


def test_beat_schedule_entries_with_reserved_fields_are_skipped(
    session: Session, caplog: pytest.LogCaptureFixture,
) -> None:
    """``beat_schedule`` entries go through the same allow-list: a bad one is logged with
    the key and skipped, the others are installed."""
    every = timedelta(seconds=10)
    entries: dict[str, dict[str, Any]] = {
        "good": {"task": "t", "schedule": every, "options": {"time_limit": 5}},
        "fixed-id": {"task": "t", "schedule": every, "options": {"task_id": "x"}},
        "renamed": {"task": "t", "schedule": every, "options": {"headers": {"task": "other"}}},
    }
    caplog.set_level("ERROR", logger="beatsqlalchemy")
    assert api.install_config_schedule(session, entries) == (1, 0)
    assert session.scalars(select(PeriodicTask.name)).all() == ["good"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "'fixed-id' is invalid" in logged and "'task_id' is not an option" in logged
    assert "'renamed' is invalid" in logged and "reserved key 'task'" in logged
