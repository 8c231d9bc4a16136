"""``create_app``: the console as an ASGI application, to serve standalone
(``beatsqlalchemy web``) or to mount in a Starlette or FastAPI application."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..config import BeatConfig, web_health_token
from ..db import get_engine, redact
from ..exceptions import ValidationError
from ..migrate import ensure_schema
from ..sessions import engine_for
from . import views
from .auth import Users
from .security import HEALTH_PATH, Authenticate, Gate, SecurityHeaders

SESSION_COOKIE = "beatsqlalchemy_session"
#: a session lasts this long without a new login (seconds)
SESSION_MAX_AGE = 12 * 3600


def templates() -> Jinja2Templates:
    """The console's templates (package data), autoescaped."""
    env = Environment(loader=PackageLoader("beatsqlalchemy.web", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = views.when
    env.filters["relative"] = views.relative
    env.filters["clock"] = views.clock
    return Jinja2Templates(env=env)


async def error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return views.render(request, "error.html", exc.status_code, code=exc.status_code, detail=exc.detail)


def create_app(
    app_or_url: Celery | str, *, users: Mapping[str, str] | None = None, secret: str | None = None,
    authenticate: Authenticate | None = None, engine_options: dict[str, Any] | None = None,
    https_only: bool = False, health_token: str | None = None,
) -> Starlette:
    """The console on a Celery app's database (run-now sends through its broker) or on a
    database URL (run-now is then unavailable).

    ``users`` ({name: hash from ``beatsqlalchemy web-password``}) and ``secret`` (signing
    the session cookie) default to the app's ``beat_sqlalchemy_web_users`` and
    ``beat_sqlalchemy_web_secret``. A host application may pass ``authenticate`` instead
    of users: called with each request, it returns the user's name, or None to refuse it.
    The secret is always required (it also keys each session's CSRF token). Behind HTTPS,
    ``https_only`` marks the session cookie ``Secure``. ``GET /health`` answers a logged-in
    session, or ``Authorization: Bearer <health_token>`` (default: the app's
    ``beat_sqlalchemy_web_health_token``; none: sessions only)."""
    config = BeatConfig.from_app(app_or_url) if isinstance(app_or_url, Celery) else None
    if config is not None:
        engine = engine_for(app_or_url)  # type: ignore[arg-type]
        users = config.web_users if users is None else users
        secret = config.web_secret if secret is None else secret
        health_token = config.web_health_token if health_token is None else health_token
    else:
        engine = get_engine(str(app_or_url), engine_options or {})
        ensure_schema(engine)
    health_token = web_health_token(health_token)
    if not secret or not isinstance(secret, str) or len(secret) < 16:
        raise ValidationError("beat_sqlalchemy_web_secret", "<hidden>" if secret else secret,
                              "the web console needs a secret of at least 16 characters to sign its sessions")
    if authenticate is None and not users:
        raise ValidationError("beat_sqlalchemy_web_users", users,
                              "the web console needs users (beatsqlalchemy web-password makes their hashes), "
                              "or an authenticate hook when mounted")
    console = views.Console(
        engine=engine, celery_app=app_or_url if isinstance(app_or_url, Celery) else None,
        users=Users(users) if users and authenticate is None else None, templates=templates(),
        database=redact(engine.url.render_as_string(hide_password=False)),
        claim_timeout=config.claim_timeout if config is not None else 30.0,
    )
    routes = [
        Route("/", views.overview, name="overview"),
        Route("/tasks", views.tasks, name="tasks"),
        Route("/tasks/new", views.new_task, methods=["GET", "POST"], name="new_task"),
        Route("/tasks/action", views.task_action, methods=["POST"], name="task_action"),
        Route("/tasks/delete", views.delete_tasks, methods=["POST"], name="delete_tasks"),
        Route("/task", views.task_page, name="task_page"),
        Route("/task/edit", views.edit_task, methods=["GET", "POST"], name="edit_task"),
        Route("/preview/cron", views.cron_preview, name="cron_preview"),
        Route(HEALTH_PATH, views.health_check, name="health"),
        Route("/login", views.login, methods=["GET", "POST"], name="login"),
        Route("/logout", views.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(packages=[("beatsqlalchemy.web", "static")]), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                   max_age=SESSION_MAX_AGE, same_site="strict", https_only=https_only),
        Middleware(Gate, authenticate=authenticate, health_token=health_token),
    ]
    web = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: error_page})
    web.state.console = console
    return web
