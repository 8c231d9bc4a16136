"""The console's pages and actions. Each reads or writes in a worker thread (never on the
event loop) through ``beatsqlalchemy.listing`` (reads) and ``beatsqlalchemy.api`` (every
write); a ValidationError is shown on the field it names, with what was typed kept."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .. import api, checks, describe, health, listing
from ..constants import CONFIG_SOURCE, SCHEDULE_KINDS
from ..db import database_error, redact, session_factory
from ..exceptions import TaskNotFound, ValidationError
from ..models import PeriodicTask
from ..schedules import as_utc, utcnow
from . import forms
from .auth import FAILED_LOGIN_DELAY, Users
from .security import USER_KEY, checked_form, csrf_token

T = TypeVar("T")
FLASH_KEY = "flash"
#: actions per row and in bulk (delete asks first)
ACTIONS = ("enable", "disable", "run", "delete")


@dataclass
class Console:
    """What the pages work on: the database, the Celery app (for run-now), the users."""

    engine: Engine
    celery_app: Celery | None
    users: Users | None
    templates: Jinja2Templates
    database: str
    claim_timeout: float = 30.0

    def read(self, work: Callable[[Session], T]) -> T:
        """``work`` in a new session, in this (worker) thread."""
        with session_factory(self.engine)() as session:
            return work(session)


def console_of(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


async def in_thread(request: Request, work: Callable[[Session], T]) -> T:
    """``work`` in a session, in a worker thread; a database error is a 503 page."""
    console = console_of(request)
    try:
        return await run_in_threadpool(console.read, work)
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"The database {console.database} failed: {database_error(exc)}") from None


def flash(request: Request, text: str, kind: str = "ok") -> None:
    request.session.setdefault(FLASH_KEY, []).append([kind, text])


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    context.update(
        request=request, csrf_token=csrf_token(request), user=getattr(request.state, "user", None),
        messages=request.session.pop(FLASH_KEY, []), database=console.database,
        can_run=console.celery_app is not None, login=console.users is not None,
        kinds=SCHEDULE_KINDS, now=utcnow(),
    )
    return console.templates.TemplateResponse(request, template, context, status_code=status)


def back(request: Request, route: str, **query: str) -> RedirectResponse:
    url = str(request.url_for(route))
    if query:
        url += "?" + urlencode(query)
    return RedirectResponse(url, 303)


# -- login ----------------------------------------------------------------------------------

def _local_path(target: str | None) -> str | None:
    """A path on this site to go back to after login (never another host)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


async def login(request: Request) -> Response:
    console = console_of(request)
    target = _local_path(request.query_params.get("next"))
    if request.method == "GET":
        return render(request, "login.html", next=target or "", error=None, name="")
    form = await checked_form(request)
    target = _local_path(str(form.get("next", "")))
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    ok = console.users is not None and await run_in_threadpool(console.users.check, name, password)
    if not ok:
        await asyncio.sleep(FAILED_LOGIN_DELAY)
        return render(request, "login.html", 401, next=target or "", name=name,
                      error="Wrong user name or password.")
    request.session.clear()  # a new session: a token seen before the login is worthless after it
    request.session[USER_KEY] = name
    csrf_token(request)
    return RedirectResponse(target or str(request.url_for("overview")), 303)


async def logout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    return back(request, "login")


# -- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """A task as a listing shows it."""

    name: str
    task: str
    schedule: str
    kind: str
    enabled: bool
    next_run: datetime | None
    error: str | None
    last_run: datetime | None
    total_runs: int
    source: str
    one_off: bool
    #: what the workers recorded (``beat_sqlalchemy_track_outcomes``): how its latest run
    #: ended and when, its latest success, how many runs in a row failed
    last_outcome: str | None = None
    last_outcome_at: datetime | None = None
    last_success_at: datetime | None = None
    failures: int = 0


def _moment(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None  # an unreadable stored value: none


def row(task: PeriodicTask) -> Row:
    next_run, error = api.next_run_or_error(task)
    return Row(task.name, task.task, describe.task(task), getattr(task.schedule_row, "kind", "-"),
               bool(task.enabled), next_run, error, _moment(task.last_run_at), task.total_run_count,
               task.source or api.DATABASE_SOURCE, bool(task.one_off), task.last_outcome,
               _moment(task.last_outcome_at), _moment(task.last_success_at), task.consecutive_failures or 0)


async def overview(request: Request) -> Response:
    claim_timeout = console_of(request).claim_timeout

    def work(session: Session) -> dict[str, Any]:
        summary = listing.overview(session)
        return {"summary": summary, "upcoming": [row(t) for t in summary.upcoming],
                "health": api.status(session, claim_timeout=claim_timeout),
                "failing": api.failing_tasks(session, limit=listing.BROKEN_SHOWN),
                "estimate": listing.estimated_task_count(session)}

    return render(request, "overview.html", **await in_thread(request, work))


async def tasks(request: Request) -> Response:
    query = request.query_params
    raw = {key: query.get(key, "") for key in ("enabled", "source", "kind", "broken", "q", "task", "sort")}
    sort = raw["sort"] or "next"
    try:
        filters = listing.TaskFilters.checked(raw["enabled"], raw["source"], raw["kind"], raw["broken"],
                                              raw["q"], raw["task"])
    except ValidationError as exc:
        return render(request, "tasks.html", 400, rows=[], next_url=None, raw=raw, error=str(exc),
                      estimate=None, first_url=None)

    def work(session: Session) -> tuple[list[Row], str | None, int | None]:
        page = listing.task_page(session, filters, sort, query.get("after") or None,
                                 int(query.get("size") or api.DEFAULT_PAGE_SIZE))
        return [row(t) for t in page.tasks], page.next_cursor, listing.estimated_task_count(session)

    try:
        rows, cursor, estimate = await in_thread(request, work)
    except (ValidationError, ValueError) as exc:
        return render(request, "tasks.html", 400, rows=[], next_url=None, raw=raw, error=str(exc),
                      estimate=None, first_url=None)
    kept = {k: v for k, v in raw.items() if v}
    next_url = f"{request.url_for('tasks')}?{urlencode({**kept, 'after': cursor})}" if cursor else None
    first_url = f"{request.url_for('tasks')}?{urlencode(kept)}" if query.get("after") else None
    return render(request, "tasks.html", rows=rows, next_url=next_url, first_url=first_url, raw=raw,
                  error=None, estimate=estimate)


def _name(request: Request) -> str:
    name = request.query_params.get("name")
    if not name:
        raise HTTPException(404, "No task named.")
    return name


async def task_page(request: Request) -> Response:
    name = _name(request)

    def work(session: Session) -> dict[str, Any]:
        task = api.get_task(session, name)
        runs, runs_error = listing.next_runs(session, name, 10)
        return {
            "row": row(task), "data": api.task_to_dict(task), "zone": listing.task_zone(task),
            "next_runs": runs, "next_error": runs_error, "options": api.send_options(task)
            if runs_error is None else None, "log": api.runs(session, name=name, limit=50),
        }

    try:
        context = await in_thread(request, work)
    except TaskNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return render(request, "task.html", **context)


async def cron_preview(request: Request) -> Response:
    query = request.query_params
    preview = await run_in_threadpool(listing.cron_preview, query.get("cron", ""),
                                      query.get("timezone", "") or "UTC", 5)
    return JSONResponse({
        "words": preview.words, "errors": preview.errors,
        "runs": [{"utc": utc.strftime("%Y-%m-%d %H:%M UTC"), "local": local.strftime("%Y-%m-%d %H:%M %Z")}
                 for utc, local in preview.runs],
    })


async def health_check(request: Request) -> Response:
    """The status as JSON (``healthy``, ``problems``, ``status``): 200 when healthy, 503
    otherwise or when the database fails; the thresholds of ``beatsqlalchemy health`` from
    the query string (``?min_beats=2&max_failing=0``), 400 when one is bad."""
    console = console_of(request)
    try:
        thresholds = checks.Thresholds.from_query(request.query_params)
        options = checks.status_options(request.query_params)
    except ValidationError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    try:
        status = await in_thread(request, lambda s: api.status(
            s, max_age=options.get("max_age", health.MAX_AGE), grace=options.get("grace", health.GRACE),
            claim_timeout=console.claim_timeout))
    except HTTPException as exc:
        return JSONResponse({"healthy": False, "problems": [exc.detail]}, 503)
    problems = checks.problems(status, thresholds)
    body = {"healthy": not problems, "problems": problems, "status": checks.status_to_dict(status)}
    return JSONResponse(body, 503 if problems else 200)


# -- writing --------------------------------------------------------------------------------------

def _form_page(request: Request, fields: dict[str, Any], *, creating: bool, source: str | None,
               errors: dict[str, str] | None = None, status: int = 200) -> Response:
    return render(request, "form.html", status, fields=fields, errors=errors or {}, creating=creating,
                  config_owned=source == CONFIG_SOURCE, owned=forms.CONFIG_OWNED, periods=forms.PERIODS,
                  events=forms.SOLAR_EVENTS, misfire_choices=forms.MISFIRE_CHOICES)


async def new_task(request: Request) -> Response:
    if request.method == "GET":
        return _form_page(request, forms.blank(request.query_params.get("kind")), creating=True, source=None)
    fields = forms.typed(await checked_form(request))

    def work(session: Session) -> str:
        values = forms.save_keywords(fields, None)
        return api.create_task(session, fields["name"], values.pop("task"), **values).name

    return await _save(request, fields, work, creating=True, source=None)


async def edit_task(request: Request) -> Response:
    name = _name(request)
    try:
        stored, source = await in_thread(request, lambda s: _edit_fields(s, name))
    except TaskNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    if request.method == "GET":
        return _form_page(request, stored, creating=False, source=source)
    typed = forms.typed(await checked_form(request))
    # a task from the configuration: only enabled is taken; its other fields are shown as stored
    fields = {**stored, "enabled": typed["enabled"]} if source == CONFIG_SOURCE else {**typed, "name": name}

    def work(session: Session) -> str:
        current = api.get_task(session, name).source
        return api.update_task(session, name, **forms.save_keywords(fields, current)).name

    return await _save(request, fields, work, creating=False, source=source)


def _edit_fields(session: Session, name: str) -> tuple[dict[str, Any], str | None]:
    task = api.get_task(session, name)
    return forms.from_task(task), task.source


async def _save(request: Request, fields: dict[str, Any], work: Callable[[Session], str], *,
                creating: bool, source: str | None) -> Response:
    try:
        saved = await in_thread(request, work)
    except ValidationError as exc:
        field = forms.error_field(exc.field)
        return _form_page(request, fields, creating=creating, source=source,
                          errors={field: str(exc)}, status=400)
    except TaskNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    flash(request, f"Saved {saved!r}.")
    return back(request, "task_page", name=saved)


def _names(form: FormData) -> list[str]:
    names = [str(n) for n in form.getlist("names") if str(n)]
    if not names:
        raise HTTPException(400, "No task was selected.")
    return names


async def task_action(request: Request) -> Response:
    """Enable, disable or run now one or more tasks; delete asks first."""
    form = await checked_form(request)
    action = str(form.get("action", ""))
    names = _names(form)
    if action not in ACTIONS:
        raise HTTPException(400, f"Unknown action {action!r}.")
    if action == "delete":
        return render(request, "confirm.html", names=names)
    console = console_of(request)
    try:
        if action == "run":
            for name in names:
                task_id = await in_thread(request, functools.partial(_run_now, console=console, name=name))
                flash(request, f"Sent {name!r} (task id {task_id}).")
        else:
            write = api.enable_tasks if action == "enable" else api.disable_tasks
            await in_thread(request, lambda s: write(s, names))
            flash(request, f"{action.capitalize()}d {', '.join(map(repr, names))}.")
    except (ValidationError, TaskNotFound) as exc:
        flash(request, str(exc), "error")
    except _BrokerError as exc:
        flash(request, str(exc), "error")
    return RedirectResponse(_local_path(str(form.get("back", ""))) or str(request.url_for("tasks")), 303)


class _BrokerError(Exception):
    """The broker refused or could not be reached (its URL redacted)."""


def _run_now(session: Session, console: Console, name: str) -> str:
    if console.celery_app is None:
        raise ValidationError("run", name, "run now needs the Celery app (start the console with -A)")
    try:
        return api.run_now(session, console.celery_app, name, sent_by=api.default_sender("web")).task_id
    except (ValidationError, TaskNotFound, SQLAlchemyError):
        raise
    except Exception as exc:  # the broker's
        broker = redact(str(console.celery_app.conf.broker_url or "amqp://localhost//"))
        raise _BrokerError(f"could not send {name!r} through the broker {broker}: "
                           f"{type(exc).__name__}: {exc}") from None


async def delete_tasks(request: Request) -> Response:
    """Delete the tasks named, once confirmed."""
    form = await checked_form(request)
    names = _names(form)
    if form.get("confirm") != "yes":
        return render(request, "confirm.html", names=names)
    try:
        deleted = await in_thread(request, lambda s: api.delete_tasks(s, names, missing_ok=True))
        flash(request, f"Deleted {', '.join(map(repr, deleted)) or 'nothing'}.")
    except ValidationError as exc:
        flash(request, str(exc), "error")
    return back(request, "tasks")


def when(moment: datetime | None) -> str:
    """A time in UTC for the pages."""
    if not isinstance(moment, datetime):
        return "—"
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(moment: datetime | None, day: datetime | None = None) -> str:
    """``HH:MM:SS`` when on the same UTC day as ``day`` (a run's slot), else as ``when``."""
    if isinstance(moment, datetime) and isinstance(day, datetime):
        moment = as_utc(moment)
        if moment.date() == as_utc(day).date():
            return moment.strftime("%H:%M:%S")
    return when(moment)


def relative(moment: datetime | None) -> str:
    """``in 5 s``, ``3 min ago``."""
    if not isinstance(moment, datetime):
        return ""
    seconds = (as_utc(moment) - utcnow()).total_seconds()
    size = abs(seconds)
    steps = ((90, "s", 1), (5400, "min", 60), (129600, "h", 3600), (float("inf"), "d", 86400))
    for limit, unit, div in steps:
        if size < limit:
            amount = f"{size / div:.0f} {unit}"
            break
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"
