"""The console readers of ``beatsqlalchemy.listing``: pages by key in next-run and name
order (tasks without a next run last), prefix searches, filters, the overview and the cron
preview, on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest
from celery import Celery
from sqlalchemy import update
from sqlalchemy.orm import Session

from beatsqlalchemy import api, listing
from beatsqlalchemy.exceptions import ValidationError
from beatsqlalchemy.models import PeriodicTask

UTC = timezone.utc


def walk(session: Session, sort: str, size: int, filters: listing.TaskFilters | None = None) -> list[str]:
    """Every task name, page after page."""
    names: list[str] = []
    cursor = None
    while True:
        page = listing.task_page(session, filters, sort, cursor, size)
        names += [t.name for t in page.tasks]
        assert len(page.tasks) <= size
        if page.next_cursor is None:
            return names
        cursor = page.next_cursor


@pytest.fixture
def tasks(session: Session) -> list[str]:
    """Seven tasks: five enabled with next runs (two at the same moment), two disabled."""
    api.save_task(session, "b-every-minute", task="proj.minute", schedule=timedelta(minutes=1))
    api.save_task(session, "a-every-hour", task="proj.hour", schedule=timedelta(hours=1))
    api.save_task(session, "c-every-hour-too", task="proj.hour", schedule=timedelta(hours=1))
    api.save_task(session, "d-cron", task="other.cron", schedule="0 3 * * *")
    api.save_task(session, "e_100%", task="proj.odd", schedule=timedelta(days=1))
    api.save_task(session, "f-off", task="proj.off", schedule=timedelta(minutes=5), enabled=False)
    api.save_task(session, "g-off", task="proj.off", schedule="*/5 * * * *", enabled=False)
    return ["a-every-hour", "b-every-minute", "c-every-hour-too", "d-cron", "e_100%", "f-off", "g-off"]


@pytest.mark.parametrize("size", [1, 2, 3, 50])
def test_pages_by_key_cover_every_task_once(session: Session, tasks: list[str], size: int) -> None:
    assert walk(session, "name", size) == tasks
    by_next = walk(session, "next", size)
    assert sorted(by_next) == tasks
    assert by_next[0] == "b-every-minute" and by_next[-2:] == ["f-off", "g-off"]  # no next run: last
    stored = [api.get_task(session, n).next_run_at for n in by_next[:5]]
    assert stored == sorted(stored)


def test_prefix_searches_and_filters(session: Session, tasks: list[str]) -> None:
    def names(**given: object) -> list[str]:
        return walk(session, "name", 2, listing.TaskFilters.checked(**given))

    assert names(name="a-") == ["a-every-hour"]
    assert names(name="e_1") == ["e_100%"]
    assert names(name="e%") == []  # LIKE characters are literal
    assert names(task="proj.h") == ["a-every-hour", "c-every-hour-too"]
    assert names(enabled="false") == ["f-off", "g-off"]
    assert names(enabled=True, kind="crontab") == ["d-cron"]
    assert names(source="config") == [] and len(names(source="database")) == 7
    assert names(broken="true") == []
    session.execute(update(PeriodicTask).where(PeriodicTask.name.in_(["d-cron", "a-every-hour"]))
                    .values(schedule_error="kwargs: must be a JSON object"))
    session.commit()
    for sort in ("name", "next"):  # broken rows come by id
        broken = walk(session, sort, 1, listing.TaskFilters(broken=True))
        assert broken == ["a-every-hour", "d-cron"]


@pytest.mark.parametrize(("given", "field"), [
    ({"enabled": "maybe"}, "enabled"), ({"kind": "weekly"}, "kind"), ({"source": "yaml"}, "source"),
])
def test_bad_filters_name_their_field(given: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        listing.TaskFilters.checked(**given)
    assert caught.value.field == field


def test_a_bad_cursor_or_sort_is_a_validation_error(session: Session, tasks: list[str]) -> None:
    for cursor in ("not-base64!", "WzFd", "WyJ0IiwgIm5vIGRhdGUiLCAxXQ"):
        with pytest.raises(ValidationError, match="cursor"):
            listing.task_page(session, sort="next", cursor=cursor)
    with pytest.raises(ValidationError, match="sort"):
        listing.task_page(session, sort="random")


def test_overview_counts_runs_and_lists_the_next_ones(
    session: Session, tasks: list[str], app: Celery,
) -> None:
    api.run_now(session, app, "d-cron", sent_by="web:test")
    summary = listing.overview(session)
    assert summary.sent_hour == summary.sent_day == 1
    assert summary.upcoming[0].name == "b-every-minute"
    assert len(summary.upcoming) == 5 and summary.broken == []


def test_next_runs_in_utc_and_in_the_schedules_zone(session: Session) -> None:
    api.save_task(session, "berlin", task="t",
                  crontab={"minute": "0", "hour": "2", "timezone": "Europe/Berlin"})
    runs, error = listing.next_runs(session, "berlin", 3)
    assert error is None and len(runs) == 3
    for utc, local in runs:
        assert utc.utcoffset() == timedelta(0) and local == utc
        assert (local.hour, local.minute, str(local.tzinfo)) == (2, 0, "Europe/Berlin")
        assert utc.hour in (0, 1)  # CEST or CET
    assert all(timedelta(hours=23) <= b[0] - a[0] <= timedelta(hours=25) for a, b in pairwise(runs))


def test_cron_preview() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    preview = listing.cron_preview("30 7 * * mon", "Europe/Berlin", 2, now)
    assert preview.words == "at 07:30 on Monday (Europe/Berlin)"
    assert [utc.isoformat() for utc, _ in preview.runs] == [
        "2026-12-07T06:30:00+00:00", "2026-12-14T06:30:00+00:00"]
    assert listing.cron_preview("61 * * * *", "UTC").errors["cron"].startswith("minute: invalid value")
    assert "timezone" in listing.cron_preview("* * * * *", "Mars/Base").errors
