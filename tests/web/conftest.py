"""Fixtures of the web console's browser tests: one real ``celery -A webapp beatsqlalchemy
web`` process per backend (SQLite, PostgreSQL) on a database of its own and the Redis
broker, one Debian Chromium driven by Playwright for the module, and a logged-in page per
test whose every request is recorded (none may leave 127.0.0.1).

Chromium is Debian's (``apt-get install -y chromium``; ``.ci/run`` installs it): Playwright
downloads no browser here. Without it the tests are skipped (failed under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from beatsqlalchemy import api, db, migrate
from beatsqlalchemy.health import BeatInfo
from beatsqlalchemy.web.auth import hash_password
from harness.processes import OUTCOMES_APP, CeleryProcess, Cluster, wait_for
from harness.servers import REDIS_URL, flushed_redis, new_database, unavailable
from harness.web import CONFIG_ENTRY, CONFIG_TASK, PASSWORD, USER, ConsoleServer

CHROMIUM = os.environ.get("BEAT_TEST_CHROMIUM", "/usr/bin/chromium")
#: the web console's tests run on these backends (one server each)
WEB_BACKENDS = ("sqlite", "postgresql")
#: the hosts a page may ask anything of
LOCAL_HOSTS = ("127.0.0.1",)
#: the password in the console's database URL (on the servers: ignored by their local trust)
DATABASE_PASSWORD = "pw-that-must-never-show"


class Console(ConsoleServer):
    """The server under test, with its backend and database."""

    backend: str
    db_url: str
    broker_url: str

    @property
    def engine(self) -> Engine:
        return db.get_engine(self.db_url)


def install_config_entry(engine: Engine) -> None:
    """Write the app's ``beat_schedule`` entry as beat does (source "config")."""
    with db.session_factory(engine)() as session:
        api.install_config_schedule(session, {CONFIG_TASK: CONFIG_ENTRY})


@pytest.fixture(scope="module", params=WEB_BACKENDS)
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    backend = str(request.param)
    db_url = new_database(backend, "web", tmp_path_factory)
    if backend != "sqlite":  # the server trusts local users: any password is accepted, and must never show
        db_url = make_url(db_url).set(password=DATABASE_PASSWORD).render_as_string(hide_password=False)
    migrate.upgrade(db.get_engine(db_url))
    broker_url = flushed_redis(REDIS_URL)
    server = Console(tmp_path_factory.mktemp(f"web-{backend}"), db_url, broker_url, hash_password(PASSWORD))
    server.backend, server.db_url, server.broker_url = backend, db_url, broker_url
    install_config_entry(server.engine)
    try:
        server.serve()
        yield server
    finally:
        server.stop_all()


CONSOLE_KEY = pytest.StashKey[Console]()
#: lines of the console's log shown in the report of a failed test
LOG_TAIL = 100


@pytest.fixture
def _console_logs(request: pytest.FixtureRequest, console: Console) -> None:
    request.node.stash[CONSOLE_KEY] = console


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """The console's log goes into the report of a failed test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    server = item.stash.get(CONSOLE_KEY, None)
    if report.failed and server is not None:
        for title, text in server.logs():
            report.sections.append((f"log of {title}", "\n".join(text.splitlines()[-LOG_TAIL:])))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    playwright = sync_api.sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def logged_in(browser: Any, console: Console) -> dict[str, Any]:
    """The storage state of a session logged in through the login page."""
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=name]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/")
    state: dict[str, Any] = context.storage_state()
    context.close()
    return state


class Recorder:
    """Every request a browser context makes."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, request: Any) -> None:
        self.urls.append(request.url)

    def foreign(self) -> list[str]:
        """The requests to any host but 127.0.0.1."""
        return [url for url in self.urls if urlsplit(url).scheme not in ("data", "about", "blob")
                and urlsplit(url).hostname not in LOCAL_HOSTS]


@pytest.fixture
def requests_made() -> Recorder:
    return Recorder()


def _context(browser: Any, console: Console, recorder: Recorder, state: dict[str, Any] | None) -> Any:
    context = browser.new_context(base_url=console.url, storage_state=state)
    context.set_default_timeout(10_000)
    context.on("request", recorder)
    return context


@pytest.fixture
def page(browser: Any, console: Console, logged_in: dict[str, Any], requests_made: Recorder) -> Iterator[Any]:
    """A logged-in page; at the end, no request may have left 127.0.0.1."""
    context = _context(browser, console, requests_made, logged_in)
    yield context.new_page()
    context.close()
    assert requests_made.foreign() == []


@pytest.fixture
def anonymous(browser: Any, console: Console, requests_made: Recorder) -> Iterator[Any]:
    """A page without a session; at the end, no request may have left 127.0.0.1."""
    context = _context(browser, console, requests_made, None)
    yield context.new_page()
    context.close()
    assert requests_made.foreign() == []


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: ``BEAT_WEB_SCREENSHOTS`` (the README's come from docs/), else
    the test's directory."""
    target = Path(os.environ.get("BEAT_WEB_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


# -- beats and workers for the console to show ------------------------------------------------

#: beats of the console's tests write a heartbeat this often (seconds)
HEARTBEAT = 0.5


def cluster_of(keep_processes: Any, tmp_path: Path, console: Console, name: str) -> Cluster:
    """Beat and a worker of the e2e app tracking outcomes, heartbeats every ``HEARTBEAT``."""
    cluster = keep_processes(Cluster(tmp_path, console.broker_url, console.db_url, name))
    (cluster.root / "e2eapp.py").write_text(OUTCOMES_APP, encoding="utf-8")
    cluster.env["E2E_CONF"] = json.dumps({"beat_sqlalchemy_heartbeat_interval": HEARTBEAT})
    return cluster


def beat_of(console: Console, process: CeleryProcess) -> BeatInfo:
    """The heartbeat row of a beat process (waits for its first heartbeat)."""
    def found() -> BeatInfo | None:
        with db.session_factory(console.engine)() as session:
            return next((b for b in api.status(session).beats if b.pid == process.pid), None)

    return wait_for(found, 15, f"a heartbeat of the beat of pid {process.pid}")
