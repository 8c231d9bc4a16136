"""Setting the console up: password hashes, the refusals of ``beatsqlalchemy web`` and of
``create_app`` without users or a secret, and a host application's own authentication."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
from celery import Celery
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

from beatsqlalchemy.cli import main
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.web.app import create_app
from beatsqlalchemy.web.auth import Users, hash_password

APP_MODULE = "beatsqlalchemy_web_test_app"
SECRET = "s" * 32


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def web_app(app: Celery, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """The test app, importable as ``-A beatsqlalchemy_web_test_app``."""
    module = types.ModuleType(APP_MODULE)
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, APP_MODULE, module)
    yield app


def test_web_password_prints_a_salted_scrypt_hash() -> None:
    first = cli("web-password", "--password", "hunter2")
    second = cli("web-password", "--password", "hunter2")
    assert first.exit_code == second.exit_code == 0
    hashed = first.stdout.strip()
    assert hashed.startswith("scrypt$") and hashed != second.stdout.strip()  # a random salt
    assert "hunter2" not in hashed
    users = Users({"alice": hashed})
    assert users.check("alice", "hunter2")
    assert not users.check("alice", "hunter3") and not users.check("bob", "hunter2")


def test_a_malformed_hash_is_refused_naming_the_user() -> None:
    with pytest.raises(ValidationError, match="alice"):
        Users({"alice": "plain-text-password"})


@pytest.mark.parametrize(("users", "secret", "missing"), [
    (None, SECRET, "beat_sqlalchemy_web_users"), ({"a": "x"}, None, "beat_sqlalchemy_web_secret"),
])
def test_web_refuses_to_start_without_users_and_a_secret(
    web_app: Celery, users: dict[str, str] | None, secret: str | None, missing: str,
) -> None:
    if users:
        web_app.conf.beat_sqlalchemy_web_users = {"a": hash_password("pw")}
    if secret:
        web_app.conf.beat_sqlalchemy_web_secret = secret
    result = cli("-A", APP_MODULE, "web")
    assert result.exit_code == 2
    assert missing in result.stderr and "Traceback" not in result.output
    with pytest.raises(ValidationError, match=missing):
        create_app(web_app)


def test_web_needs_the_app(db_url: str) -> None:
    result = cli("--url", db_url, "web")
    assert result.exit_code == 2 and "web needs the Celery app" in result.stderr


def test_mounted_with_the_host_applications_authentication(db_url: str) -> None:
    def authenticate(request: Request) -> str | None:
        return request.headers.get("x-user")

    host = Starlette(routes=[Mount("/beat", create_app(db_url, secret=SECRET, authenticate=authenticate))])
    client = TestClient(host, base_url="http://127.0.0.1")
    refused = client.get("/beat/tasks")
    assert refused.status_code == 403  # no login page of its own: the host's decides
    page = client.get("/beat/tasks", headers={"x-user": "carol"})
    assert page.status_code == 200 and "carol" in page.text
    assert 'href="http://127.0.0.1/beat/static/console.css' in page.text  # links under the mount
    assert client.get("/beat/login", headers={"x-user": "carol"}).status_code == 200
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("token", ["short", 12345, "   " * 8])
def test_a_health_token_under_16_characters_is_refused(web_app: Celery, db_url: str, token: object) -> None:
    web_app.conf.update(beat_sqlalchemy_web_users={"a": hash_password("pw")},
                        beat_sqlalchemy_web_secret=SECRET, beat_sqlalchemy_web_health_token=token)
    result = cli("-A", APP_MODULE, "web")
    assert result.exit_code == 2 and "beat_sqlalchemy_web_health_token" in result.stderr
    assert str(token) not in result.stderr.replace("beat_sqlalchemy_web_health_token", "")
    with pytest.raises(ValidationError, match="beat_sqlalchemy_web_health_token"):
        create_app(db_url, secret=SECRET, users={"a": hash_password("pw")}, health_token=token)  # type: ignore[arg-type]


def test_health_when_mounted_takes_the_token_or_the_host_applications_user(db_url: str) -> None:
    token = "t" * 24
    app = create_app(db_url, secret=SECRET, authenticate=lambda request: request.headers.get("x-user"),
                     health_token=token)
    host = Starlette(routes=[Mount("/beat", app)])
    client = TestClient(host, base_url="http://127.0.0.1")
    refused = client.get("/beat/health", headers={"authorization": "Bearer " + "t" * 23 + "u"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    by_token = client.get("/beat/health", headers={"authorization": f"Bearer {token}"})
    by_user = client.get("/beat/health", headers={"x-user": "carol"})
    for answer in (by_token, by_user):  # no beat has a heartbeat: unhealthy
        assert answer.status_code == 503 and answer.json()["problems"][0].startswith("beats: 0 alive")
    relaxed = client.get("/beat/health?min_beats=0", headers={"authorization": f"Bearer {token}"})
    assert relaxed.status_code == 200 and relaxed.json()["healthy"] is True
    assert client.get("/beat/tasks", headers={"authorization": f"Bearer {token}"}).status_code == 403


def _token(page: str) -> str:
    marker = 'name="csrf_token" value="'
    assert marker in page, page[:500]
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_a_login_gets_a_new_csrf_token_and_a_removed_user_is_out_at_once(db_url: str) -> None:
    """The token of the page before the login is worthless after it; a session of a user
    no longer in the configuration is refused, though its cookie is still signed."""
    users = {"alice": hash_password("wonderland"), "bob": hash_password("builder")}
    client = TestClient(create_app(db_url, users=users, secret=SECRET), base_url="http://127.0.0.1")
    before = _token(client.get("/login").text)
    logged_in = client.post("/login", data={"name": "alice", "password": "wonderland", "csrf_token": before},
                            follow_redirects=False)
    assert logged_in.status_code == 303
    after = _token(client.get("/tasks").text)
    assert after != before
    assert client.post("/logout", data={"csrf_token": before}).status_code == 403  # the old token
    cookies = dict(client.cookies)
    without_alice = TestClient(create_app(db_url, users={"bob": users["bob"]}, secret=SECRET),
                               base_url="http://127.0.0.1", cookies=cookies)
    assert without_alice.get("/tasks", follow_redirects=False).status_code == 303  # to the login page
    assert client.get("/tasks", follow_redirects=False).status_code == 200  # still in where she is a user
