"""The web console in a real browser (Debian's Chromium, driven by Playwright) against a
real ``celery -A webapp beatsqlalchemy web`` process, on SQLite and on PostgreSQL: log in,
create tasks through the forms, see errors on their fields, act on tasks (a real beat and
the real Redis broker see the effect), config-owned fields, CSRF, and no request that
leaves 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from beatsqlalchemy import api, db
from beatsqlalchemy.models import PeriodicTaskRun
from harness.helpers import stored
from harness.processes import Cluster
from harness.reader import QueueReader
from harness.web import CONFIG_ENTRY, CONFIG_TASK, PASSWORD, USER

from .conftest import DATABASE_PASSWORD, Console, Recorder, install_config_entry

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("_console_logs")]
expect = pytest.importorskip("playwright.sync_api").expect


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def save(console: Console, name: str, **fields: Any) -> None:
    """Create or change a task through the api (what the test starts from)."""
    with db.session_factory(console.engine)() as session:
        api.save_task(session, name, **fields)


def choose_kind(page: Any, label: str) -> None:
    page.locator("label.kind-choice", has_text=label).click()


def fill_new_task(page: Any, name: str, task: str, **fields: str) -> None:
    page.goto("/tasks/new")
    page.fill("input[name=name]", name)
    page.fill("input[name=task]", task)
    for key, value in fields.items():
        page.fill(f"[name={key}]", value)


def csrf_of(page: Any) -> str:
    return str(page.locator("input[name=csrf_token]").first.input_value())


# -- login --------------------------------------------------------------------------------------

def test_a_page_without_a_session_goes_to_the_login(anonymous: Any, console: Console) -> None:
    page = anonymous
    page.goto("/tasks?sort=name")
    assert page.url.startswith(f"{console.url}/login?next=")
    for user, password in ((USER, "wrong password"), ("nobody", PASSWORD)):
        page.fill("input[name=name]", user)
        page.fill("input[name=password]", password)
        started = time.monotonic()
        page.click("button[type=submit]")
        expect(page.locator(".flash.error")).to_have_text("Wrong user name or password.")
        assert time.monotonic() - started >= 1.0  # a failed login waits
        assert page.locator("input[name=name]").input_value() == user
    page.fill("input[name=name]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/tasks\?sort=name$"))
    expect(page.locator("h1")).to_have_text("Tasks")
    cookie = next(c for c in page.context.cookies() if c["name"] == "beatsqlalchemy_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_security_headers_and_no_database_password(page: Any, console: Console) -> None:
    response = page.goto("/")
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    for path in ("/", "/tasks", f"/task?name={CONFIG_TASK}", f"/task/edit?name={CONFIG_TASK}"):
        page.goto(path)
        assert DATABASE_PASSWORD not in page.content()
        if console.backend != "sqlite":
            expect(page.locator(".db")).to_contain_text(":***@")
    assert not any(DATABASE_PASSWORD in text for _, text in console.logs())


#: realistic tasks for the screenshots
SAMPLE_TASKS: dict[str, dict[str, Any]] = {
    "nightly-report": {"task": "reports.nightly",
                       "crontab": {"minute": "0", "hour": "2", "timezone": "Europe/Berlin"},
                       "kwargs": {"format": "pdf"}, "queue": "reports", "priority": 5,
                       "description": "The nightly PDF report"},
    "cleanup-sessions": {"task": "accounts.cleanup_sessions", "schedule": timedelta(minutes=15)},
    "sync-inventory": {"task": "shop.sync_inventory", "schedule": timedelta(seconds=30), "queue": "sync"},
    "weekly-digest": {"task": "mail.weekly_digest",
                      "crontab": {"minute": "30", "hour": "7", "day_of_week": "mon",
                                  "timezone": "America/New_York"}},
    "year-end-close": {"task": "ledger.close_year", "clocked": {"clocked_time": "2027-01-01T00:00:00+00:00"}},
    "legacy-import": {"task": "imports.legacy", "schedule": timedelta(hours=6), "enabled": False},
}


# -- every page, air-gapped (screenshots of the overview and a task: test_what_happened.py) ----------------

def test_every_page_asks_nothing_of_another_host(
    page: Any, console: Console, requests_made: Recorder, screenshots: Path,
) -> None:
    for name, fields in SAMPLE_TASKS.items():
        save(console, name, **fields)
    name = "nightly-report"
    page.goto(f"/task?name={name}")
    for _ in range(2):
        page.click("[data-test=run]")
        expect(page.locator(".flash")).to_contain_text(f"Sent '{name}'")
    page.set_viewport_size({"width": 1360, "height": 900})
    page.goto("/")
    expect(page.locator("h1")).to_have_text("Overview")
    page.goto("/tasks?sort=next")
    page.screenshot(path=str(screenshots / "web-console.png"), full_page=False)
    page.goto(f"/task?name={name}")
    expect(page.locator("table.next-runs tbody tr")).to_have_count(10)
    page.goto(f"/task/edit?name={name}")
    expect(page.locator("[data-words]")).to_have_text("at 02:00 (Europe/Berlin)")
    page.goto("/tasks/new?kind=solar")
    expect(page.locator("fieldset[data-kind=solar]")).to_be_visible()
    assert any(url.endswith("/static/console.css") for url in requests_made.urls)
    assert any("/preview/cron?" in url for url in requests_made.urls)
    assert requests_made.foreign() == []


# -- creating tasks ------------------------------------------------------------------------------

def test_create_an_interval_and_a_crontab_task_and_see_them_listed(page: Any, console: Console) -> None:
    prefix = unique("created")
    every, cron = f"{prefix}-every", f"{prefix}-cron"
    fill_new_task(page, every, "proj.tasks.ping")
    choose_kind(page, "Every")
    page.fill("input[name=every]", "10")
    page.select_option("select[name=period]", "seconds")
    page.click("button:has-text('Create task')")
    expect(page.locator(".flash")).to_contain_text(f"Saved '{every}'")

    fill_new_task(page, cron, "proj.tasks.report", kwargs='{"format": "pdf"}')
    choose_kind(page, "Crontab")
    expect(page.locator("fieldset[data-kind=interval]")).to_be_hidden()
    page.fill("input[name=cron]", "30 7 * * mon-fri")
    page.fill("input[name=timezone]", "Europe/Berlin")
    words = page.locator("[data-words]")
    expect(words).to_have_text("at 07:30, Monday through Friday (Europe/Berlin)")
    expect(page.locator("[data-runs] li")).to_have_count(5)
    assert "CET" in page.locator("[data-runs] li").first.inner_text()
    page.fill("input[name=cron]", "61 7 * * *")  # the preview says what is wrong as you type
    expect(words).to_contain_text("minute")
    page.fill("input[name=cron]", "30 7 * * mon-fri")
    page.click("button:has-text('Create task')")
    expect(page.locator(".flash")).to_contain_text(f"Saved '{cron}'")
    expect(page.locator("table.next-runs tbody tr")).to_have_count(10)

    page.goto(f"/tasks?q={prefix}&sort=name")
    rows = page.locator("table.tasks tbody tr")
    expect(rows).to_have_count(2)
    for name in (cron, every):
        task = stored(console.engine, name)
        assert task is not None and task.next_run_at is not None
        shown = rows.filter(has_text=name).locator("time")
        expect(shown).to_have_text(task.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    expect(rows.filter(has_text=cron)).to_contain_text("at 07:30, Monday through Friday (Europe/Berlin)")
    expect(rows.filter(has_text=every)).to_contain_text("every 10 seconds")
    saved = stored(console.engine, cron)
    assert saved is not None and saved.kwargs == {"format": "pdf"} and saved.crontab is not None
    assert saved.crontab.timezone == "Europe/Berlin"


BAD_INPUT = [
    pytest.param("crontab", "cron", "61 * * * *", "minute", id="cron-minute-61"),
    pytest.param("interval", "kwargs", '{"retries": 3,}', "kwargs", id="invalid-json-kwargs"),
    pytest.param("crontab", "timezone", "Mars/Olympus_Mons", "timezone", id="unknown-timezone"),
]


@pytest.mark.parametrize(("kind", "field", "typed", "named"), BAD_INPUT)
def test_bad_input_is_shown_on_its_field_kept_and_nothing_is_written(
    page: Any, console: Console, screenshots: Path, kind: str, field: str, typed: str, named: str,
) -> None:
    name = unique("bad")
    fill_new_task(page, name, "proj.tasks.bad")
    choose_kind(page, {"crontab": "Crontab", "interval": "Every"}[kind])
    page.fill(f"[name={field}]", typed)
    page.click("button:has-text('Create task')")
    error = page.locator(f"label.field:has([name={field}]) .field-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(f"{named}: invalid value")
    assert page.locator(".field-error").count() == 1
    assert page.locator(f"[name={field}]").input_value() == typed  # what was typed is kept
    assert page.locator("input[name=name]").input_value() == name
    assert page.locator("input[name=task]").input_value() == "proj.tasks.bad"
    assert stored(console.engine, name) is None
    if field == "cron":
        expect(page.locator("[data-words]")).to_contain_text("minute")
        page.screenshot(path=str(screenshots / "web-console-form-error.png"), full_page=True)


# -- actions --------------------------------------------------------------------------------------

def test_disable_in_the_browser_stops_a_running_beat_within_a_second(
    page: Any, console: Console, keep_processes: Any, tmp_path: Path,
) -> None:
    cluster = keep_processes(Cluster(tmp_path, console.broker_url, console.db_url, unique("webq")))
    name = unique("tick")
    save(console, name, task="e2e.record", schedule=timedelta(seconds=1), args=["tick"], queue=cluster.queue)
    with QueueReader(console.broker_url, cluster.queue) as reader:
        beat = cluster.beat()
        reader.wait(2, timeout=15, what="runs of the task before it is disabled")
        page.goto(f"/task?name={name}")
        page.click("[data-test=disable]")
        expect(page.locator(".flash")).to_contain_text(f"Disabled '{name}'")
        disabled_at = time.time()
        time.sleep(2.5)
        # only this task's: the other tests' tasks without a queue go to the app's default, this one
        late = [m for m in reader.received(since=disabled_at + 1.0) if m.task == "e2e.record"]
    assert late == [], f"beat still sent {len(late)} run(s) more than a second after the disable"
    assert beat.alive() and "Traceback" not in beat.log()  # the console's write never broke beat
    task = stored(console.engine, name)
    assert task is not None and not task.enabled


def _messages(broker_url: str, queue: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message waiting in ``queue`` on Redis (all its priority lists), with its list."""
    client = redis.Redis.from_url(broker_url)
    try:
        found = []
        for key in client.keys(f"{queue}*"):
            if key.decode().split("\x06\x16")[0] != queue:
                continue
            for raw in client.lrange(key, 0, -1):
                found.append((key.decode(), json.loads(raw)))
        return found
    finally:
        client.close()


def test_run_now_reaches_the_redis_broker_with_the_queue_and_priority(page: Any, console: Console) -> None:
    name, queue = unique("manual"), unique("webq")
    save(console, name, task="reports.build", schedule=timedelta(hours=1), queue=queue, priority=7,
         kwargs={"why": "by hand"}, enabled=False)
    page.goto(f"/tasks?q={name}")
    page.locator("table.tasks tbody tr", has_text=name).locator("[data-test=run]").click()
    flash = page.locator(".flash").filter(has_text=f"Sent '{name}'")
    expect(flash).to_be_visible()
    task_id = re.search(r"task id ([0-9a-f-]+)", flash.inner_text()).group(1)  # type: ignore[union-attr]
    messages = [m for m in _messages(console.broker_url, queue) if m[1]["headers"]["id"] == task_id]
    assert len(messages) == 1, "the run is not in the task's queue on the broker"
    _, message = messages[0]
    assert message["headers"]["task"] == "reports.build"
    assert message["properties"]["priority"] == 7
    assert message["properties"]["delivery_info"]["routing_key"] == queue
    with console.engine.connect() as connection:
        run = connection.execute(select(PeriodicTaskRun.sent_by, PeriodicTaskRun.state)
                                 .where(PeriodicTaskRun.task_id == task_id)).one()
    assert run.state == "sent" and run.sent_by.startswith("web:")


def test_bulk_delete_asks_first(page: Any, console: Console) -> None:
    prefix = unique("bulk")
    names = [f"{prefix}-{n}" for n in range(3)]
    for name in names:
        save(console, name, task="proj.tasks.bulk", schedule=timedelta(minutes=5))
    page.goto(f"/tasks?q={prefix}&sort=name")
    for name in names[:2]:
        page.locator(f"input[form=bulk][value='{name}']").check()
    expect(page.locator("[data-selected]")).to_have_text("2")
    page.click("button[form=bulk][value=disable]")
    expect(page.locator(".flash")).to_contain_text("Disabled")
    assert [stored(console.engine, n).enabled for n in names] == [False, False, True]  # type: ignore[union-attr]
    page.fill("input[name=q]", prefix)
    page.select_option("select[name=enabled]", "false")
    page.click("button:has-text('Apply')")
    expect(page.locator("table.tasks tbody tr")).to_have_count(2)
    expect(page.locator("table.tasks tbody")).not_to_contain_text(names[2])
    for name in names[:2]:
        page.locator(f"input[form=bulk][value='{name}']").check()
    page.click("button[form=bulk][value=delete]")
    expect(page.locator("h1")).to_have_text("Delete 2 tasks?")
    assert all(stored(console.engine, n) is not None for n in names)  # nothing deleted yet
    page.click("button:has-text('Delete')")
    expect(page.locator(".flash")).to_contain_text("Deleted")
    assert [stored(console.engine, n) is None for n in names] == [True, True, False]


def test_config_owned_fields_cannot_be_changed(page: Any, console: Console) -> None:
    install_config_entry(console.engine)
    page.goto(f"/task/edit?name={CONFIG_TASK}")
    expect(page.locator(".flash.note")).to_contain_text("beat_schedule")
    for field in ("task", "every", "args", "kwargs", "queue", "priority", "headers"):
        expect(page.locator(f"[name={field}]").first).to_be_disabled()
    expect(page.locator("input[name=enabled]")).to_be_enabled()
    page.uncheck("input[name=enabled]")
    page.click("button:has-text('Save')")
    expect(page.locator(".flash")).to_contain_text(f"Saved '{CONFIG_TASK}'")
    task = stored(console.engine, CONFIG_TASK)
    assert task is not None and not task.enabled  # enabled stays editable

    page.goto(f"/task/edit?name={CONFIG_TASK}")
    forged = page.request.post(f"/task/edit?name={CONFIG_TASK}", form={
        "csrf_token": csrf_of(page), "task": "evil.task", "kind": "interval", "every": "5",
        "period": "seconds", "args": "[9]", "queue": "elsewhere", "enabled": "on",
    })
    assert forged.ok
    task = stored(console.engine, CONFIG_TASK)
    assert task is not None and task.enabled
    assert (task.task, task.args, task.queue) == (CONFIG_ENTRY["task"], CONFIG_ENTRY["args"], "reports")
    assert task.interval is not None and (task.interval.every, task.interval.period) == (1, "hours")


def test_a_change_without_the_csrf_token_is_refused(page: Any, console: Console) -> None:
    name = unique("guarded")
    save(console, name, task="proj.tasks.guarded", schedule=timedelta(minutes=1))
    page.goto("/tasks")
    for form in ({"names": name, "action": "disable"},
                 {"names": name, "action": "disable", "csrf_token": "not-the-token"}):
        answer = page.request.post("/tasks/action", form=form)
        assert answer.status == 403
    answer = page.request.post("/tasks/delete", form={"names": name, "confirm": "yes"})
    assert answer.status == 403
    answer = page.request.post("/tasks/new", form={"name": unique("forged"), "task": "x", "kind": "interval"})
    assert answer.status == 403
    # changes by POST only
    assert page.request.get(f"/tasks/action?names={name}&action=disable").status == 405
    task = stored(console.engine, name)
    assert task is not None and task.enabled
