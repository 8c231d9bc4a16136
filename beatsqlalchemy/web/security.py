"""The console's protections: security headers on every response, a CSRF token per
session checked on every POST, and the gate that lets no request past without a user."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
USER_KEY = "user"
#: the health endpoint: a logged-in session, or the health token as a bearer token
HEALTH_PATH = "/health"
#: who a request with the health token is
HEALTH_USER = "health-token"
#: a host application's authentication: the user name of a request, or None to refuse it
Authenticate = Callable[[Request], Awaitable[str | None] | str | None]

HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Adds ``HEADERS`` to every response (static files may be cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in HEADERS]
                for key, value in HEADERS.items():
                    if not (static and key == "cache-control"):
                        headers.append((key.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def checked_form(request: Request) -> FormData:
    """The POSTed form, its CSRF token checked against the session's (403 otherwise)."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    expected = request.session.get(CSRF_FIELD)
    if not (isinstance(given, str) and isinstance(expected, str)
            and hmac.compare_digest(given.encode(), expected.encode())):
        raise HTTPException(403, "The form's security token is missing or stale: "
                                 "reload the page and try again.")
    return form


def bearer_user(request: Request, token: str | None) -> str | None:
    """``HEALTH_USER`` when the request's ``Authorization: Bearer`` is ``token`` (compared in
    constant time); None otherwise, or when there is no token."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return None
    return HEALTH_USER if hmac.compare_digest(given.strip().encode(), token.encode()) else None


class Gate:
    """No page without a user: the session's (after the login page), or the host
    application's ``authenticate`` hook's; ``/health`` also takes the health token. The
    login page and static files pass."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate | None,
                 health_token: str | None = None) -> None:
        self.app = app
        self.authenticate = authenticate
        self.health_token = health_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = scope["path"][len(scope.get("root_path", "")):] if scope["path"].startswith(
            scope.get("root_path", "")) else scope["path"]
        if path.startswith("/static/") or (self.authenticate is None and path == "/login"):
            await self.app(scope, receive, send)
            return
        user = await self._user(request)
        if user is None and path == HEALTH_PATH:
            user = bearer_user(request, self.health_token)
        if user is None:
            response: Any
            if path == HEALTH_PATH:
                response = JSONResponse({"error": "needs a logged-in session or the health token "
                                                  "(Authorization: Bearer)"}, 401,
                                        headers={"www-authenticate": "Bearer"})
            elif self.authenticate is not None:
                response = PlainTextResponse("Not authenticated by the host application.", 403)
            elif request.method == "GET":
                response = RedirectResponse(request.url_for("login").include_query_params(
                    next=request.url.path + (f"?{request.url.query}" if request.url.query else "")), 303)
            else:
                response = PlainTextResponse("Log in first.", 403)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)

    async def _user(self, request: Request) -> str | None:
        if self.authenticate is None:  # a user removed from the configuration is out at once
            user = request.session.get(USER_KEY)
            users = request.app.state.console.users
            return user if isinstance(user, str) and users is not None and user in users else None
        found = self.authenticate(request)
        if isinstance(found, Awaitable):
            found = await found
        return found
