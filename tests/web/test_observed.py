"""What the console shows of what happened, against a real ``celery -A webapp beatsqlalchemy
web`` process, on SQLite and on PostgreSQL: ``GET /health`` (the health token or a session;
200 with a real beat alive, 503 soon after it is killed -9, the same problems as the
``health`` command), the beats from their heartbeats on the overview, and the outcomes a
real worker records in the run log, on the task page and in the list."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from beatsqlalchemy import api, db
from beatsqlalchemy.cli import main
from beatsqlalchemy.constants import ERROR_LENGTH
from beatsqlalchemy.health import BeatInfo
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import Store
from harness.helpers import stored
from harness.processes import OUTCOMES_APP, CeleryProcess, Cluster, wait_for

from .conftest import Console

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("_console_logs")]
expect = pytest.importorskip("playwright.sync_api").expect

#: beats of these tests write a heartbeat this often (seconds)
HEARTBEAT = 0.5


def get_health(console: Console, query: str = "", token: str | None = None,
               ) -> tuple[int, dict[str, Any], Any]:
    """``GET /health`` with an HTTP client: the status code, the JSON body, the headers."""
    request = urllib.request.Request(f"{console.url}/health{query}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


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


# -- GET /health -------------------------------------------------------------------------------------

def test_health_needs_the_token_or_a_session(console: Console, page: Any, anonymous: Any) -> None:
    for token in (None, "", console.health_token[:-1] + "x", "Basic " + console.health_token):
        status, body, headers = get_health(console, token=token)
        assert status == 401 and headers["www-authenticate"] == "Bearer", (token, body)
        assert "status" not in body and "needs a logged-in session or the health token" in body["error"]
    refused = anonymous.request.get("/health", max_redirects=0)
    assert refused.status == 401  # no login page for a probe
    status, body, _ = get_health(console, token=console.health_token)
    assert status in (200, 503) and set(body) == {"healthy", "problems", "status"}
    assert page.request.get("/health").status == status  # a logged-in session


def test_health_with_a_real_beat_then_killed(console: Console, keep_processes: Any, tmp_path: Path) -> None:
    token = console.health_token
    status, body, _ = get_health(console, token=token)
    assert (status, body["healthy"]) == (503, False)
    assert body["problems"][0].startswith("beats: 0 alive, at least 1 wanted"), body
    cluster = cluster_of(keep_processes, tmp_path, console, "health")
    beat = cluster.beat()
    identity = beat_of(console, beat).identity

    status, body, _ = wait_for(lambda: (lambda found: found if found[0] == 200 else None)(
        get_health(console, token=token)), 15, "a healthy answer with the beat running")
    assert body["healthy"] is True and body["problems"] == []
    [shown] = [b for b in body["status"]["beats"] if b["identity"] == identity]
    assert shown["state"] == "alive" and shown["pid"] == beat.pid
    status, body, _ = get_health(console, f"?this_beat={identity}&min_beats=2", token)
    assert status == 503 and body["problems"] == [
        "beats: 1 alive, at least 2 wanted (alive: a heartbeat within 30s; 0 gone)"], body
    for query, field in (("?max_age=-1", "max_age"), ("?min_beats=two", "min_beats"),
                         ("?max_failing=-3", "max_failing")):
        status, body, _ = get_health(console, query, token)
        assert status == 400 and body["error"].startswith(f"{field}: invalid value"), body

    beat.kill9()
    killed = time.monotonic()
    status, body, _ = wait_for(lambda: (lambda found: found if found[0] == 503 else None)(
        get_health(console, "?max_age=2", token)), 10, "an unhealthy answer after the beat is killed")
    assert time.monotonic() - killed <= 2 + HEARTBEAT + 1.5
    assert body["problems"][0].startswith("beats: 0 alive, at least 1 wanted (alive: a heartbeat within 2s;")
    # the same judgement as the health command's
    command = CliRunner().invoke(main, ["--url", console.db_url, "health", "--max-age", "2"])
    assert command.exit_code == 1
    assert command.stdout.splitlines() == body["problems"]


# -- the overview, the task page and the list -------------------------------------------------------

def test_beats_failing_tasks_and_outcomes_in_the_browser(
    page: Any, console: Console, keep_processes: Any, tmp_path: Path, screenshots: Path,
) -> None:
    Store(console.engine, "test").heartbeat({  # a beat gone for ten minutes
        "identity": "old-beat", "host": "retired-host", "pid": 4242, "version": "0.9",
        "started_at": utcnow() - timedelta(days=1), "last_seen": utcnow() - timedelta(minutes=10),
        "runs_sent": 17, "outage_since": None, "outage_ended": None, "outage_reason": None,
    })
    cluster = cluster_of(keep_processes, tmp_path, console, "outcomes")
    good, bad = "sync-inventory", "charge-cards"
    with db.session_factory(console.engine)() as session:
        api.save_task(session, good, task="e2e.record", schedule=timedelta(seconds=1), args=[good],
                      queue=cluster.queue)
        api.save_task(session, bad, task="e2e.fail", schedule=timedelta(seconds=1), args=[bad],
                      queue=cluster.queue)
    worker = cluster.worker()
    beat = cluster.beat()
    me = beat_of(console, beat)

    def summary() -> bool:
        ok, failing = stored(console.engine, good), stored(console.engine, bad)
        return bool(ok and failing and ok.last_outcome == "succeeded" and failing.consecutive_failures >= 2)

    wait_for(summary, 30, "a success and two failures recorded by the worker")
    beat.stop()
    worker.stop()
    failures = stored(console.engine, bad).consecutive_failures  # type: ignore[union-attr]

    page.set_viewport_size({"width": 1360, "height": 900})
    page.goto("/")
    mine = page.locator(f"tr[data-beat='{me.identity}']")
    expect(mine.locator(".pill")).to_have_text(re.compile("alive|gone"))
    expect(mine).to_contain_text(me.host)
    expect(mine).to_contain_text(str(beat.pid))
    old = page.locator("tr[data-beat='old-beat']")
    expect(old.locator(".pill")).to_have_text("gone")
    expect(old).to_contain_text("retired-host")
    expect(old.locator("td.num").last).to_have_text("17")
    expect(page.locator(".failing li")).to_have_count(1)
    expect(page.locator(".failing li")).to_contain_text(f"{bad}{failures} failed in a row; last failed")
    expect(page.locator("[data-test=failing] .value")).to_have_text("1")
    page.screenshot(path=str(screenshots / "web-console-overview.png"), full_page=True)

    page.goto(f"/task?name={bad}")
    expect(page.locator("[data-test=failures]")).to_have_text(str(failures))
    expect(page.locator("[data-test=last-outcome] .pill")).to_have_text("failed")
    expect(page.locator("[data-test=last-success]")).to_have_text("never")
    first = page.locator("table.log tbody tr").filter(has_text="failed").first
    expect(first.locator("td.error")).to_contain_text("KeyError: 'no such account xxx")
    full = first.locator("td.error span").get_attribute("title")  # the whole error the run log keeps
    assert full is not None and full.startswith("KeyError: 'no such account x") and len(full) == ERROR_LENGTH
    expect(first).to_contain_text(f"{cluster.queue}@")
    page.screenshot(path=str(screenshots / "web-console-task.png"), full_page=True)

    page.goto(f"/task?name={good}")
    expect(page.locator("[data-test=last-outcome] .pill")).to_have_text("succeeded")
    expect(page.locator("[data-test=last-success]")).to_contain_text("UTC")
    expect(page.locator("[data-test=failures]")).to_have_text("0")
    done = page.locator("table.log tbody tr").filter(has_text="succeeded").first
    expect(done.locator("td.num")).to_have_text(re.compile(r"^\d+\.\d{3} s$"))
    expect(done).to_contain_text(f"{cluster.queue}@")

    page.goto("/tasks?sort=name")
    expect(page.locator(f"tr[data-name='{bad}'] .pill.outcome")).to_have_text("failed")
    expect(page.locator(f"tr[data-name='{good}'] .pill.outcome")).to_have_text("succeeded")
