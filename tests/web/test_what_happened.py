"""What happened, in a real browser against a real ``celery -A webapp beatsqlalchemy web``
process, on SQLite and on PostgreSQL: the beats from their heartbeats on the overview (a real
beat alive, one gone), the failing tasks beside the broken rows, and the outcomes a real worker
records in the run log, on the task page and as a badge in the list. A database of its own:
no beat of another test shows."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beatsqlalchemy import api, db
from beatsqlalchemy.constants import ERROR_LENGTH
from beatsqlalchemy.schedules import utcnow
from beatsqlalchemy.store import Store
from harness.helpers import stored
from harness.processes import wait_for

from .conftest import Console, beat_of, cluster_of

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("_console_logs")]
expect = pytest.importorskip("playwright.sync_api").expect


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

    def summary() -> bool:
        ok, failing = stored(console.engine, good), stored(console.engine, bad)
        return bool(ok and failing and ok.last_outcome == "succeeded" and failing.consecutive_failures >= 2)

    wait_for(summary, 30, "a success and two failures recorded by the worker")
    wait_for(lambda: beat_of(console, beat).runs_sent >= 2, 10, "a heartbeat with the runs sent")
    beat.stop()
    worker.stop()  # what the pages show stays put; the beat stays alive for 30 s (max_age)
    failures = stored(console.engine, bad).consecutive_failures  # type: ignore[union-attr]
    me = beat_of(console, beat)

    page.set_viewport_size({"width": 1360, "height": 900})
    page.goto("/")
    mine = page.locator(f"tr[data-beat='{me.identity}']")
    expect(mine.locator(".pill")).to_have_text("alive")
    expect(mine).to_contain_text(me.host)
    expect(mine.locator("td.num")).to_have_text([str(beat.pid), str(me.runs_sent)])
    expect(page.locator("[data-test=beats-alive] .value")).to_have_text("1")
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
