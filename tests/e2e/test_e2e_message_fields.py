"""Celery's own message fields with a real beat, a real worker and Redis: a row written
with plain SQL whose headers or extra_options try to set the task name, the task id, the
ETA or the serializer is never sent; a healthy task keeps running; fixing the row is
enough for it to run as itself.
"""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import Engine
from test_e2e_beat import EFFECT, schedule_id, sql, task_row

from harness.processes import Cluster

pytestmark = pytest.mark.e2e

FIXED_ID = "fixed-id-123"
HOSTILE_HEADERS = {"task": "e2e.other", "id": FIXED_ID, "eta": "2099-01-01T00:00:00+00:00"}


def insert(engine: Engine, name: str, interval_id: int, headers: dict[str, str],
           options: dict[str, str] | None = None) -> None:
    sql(engine, "INSERT INTO celery_periodic_task (name, task, interval_id, args, kwargs, headers, "
        "extra_options, one_off, enabled, total_run_count, description) VALUES (:name, 'e2e.record', "
        ":iid, :args, '{}', :headers, :options, :no, :yes, 0, '')",
        name=name, iid=interval_id, args=json.dumps([name]), headers=json.dumps(headers),
        options=None if options is None else json.dumps(options), no=False, yes=True)


def test_stored_fields_never_change_what_a_run_is(cluster: Cluster, engine: Engine) -> None:
    one_second = schedule_id(engine, "interval", every=1, period="seconds")
    insert(engine, "healthy", one_second, {"tenant": "a"})
    insert(engine, "hostile", one_second, HOSTILE_HEADERS)
    insert(engine, "pickled", one_second, {}, {"serializer": "pickle", "countdown": 3600})
    worker = cluster.worker()
    beat = cluster.beat()

    beat.wait_log(r"task 'hostile' cannot be scheduled and is skipped: headers: .*reserved key 'task'",
                  timeout=EFFECT + 15)
    beat.wait_log(r"task 'pickled' cannot be scheduled and is skipped: extra_options: .*'serializer' is "
                  "not an option", timeout=EFFECT + 5)
    runs = cluster.wait_runs("healthy", 4, timeout=4 + EFFECT + 15)
    assert all(run.task == "e2e.record" and run.id != FIXED_ID for run in runs)
    assert task_row(engine, "hostile")["schedule_error"].startswith("headers: ")
    assert task_row(engine, "pickled")["schedule_error"].startswith("extra_options: ")
    log = worker.log()
    assert FIXED_ID not in log and "e2e.other" not in log and "2099-01-01" not in log, "a hostile run arrived"
    assert not cluster.records("hostile") and not cluster.records("pickled")
    assert beat.log().count("task 'hostile' cannot be scheduled") == 1, "reported once, not every tick"

    # fixing the row is enough: it runs as itself, with a task id of its own
    fixed = time.time()
    sql(engine, "UPDATE celery_periodic_task SET headers = '{}' WHERE name = 'hostile'")
    first = cluster.wait_runs("hostile", 2, timeout=2 + EFFECT + 15)
    assert first[0].t >= fixed and {r.task for r in first} == {"e2e.record"}
    assert FIXED_ID not in {r.id for r in first} and len({r.id for r in first}) == 2
    assert task_row(engine, "hostile")["schedule_error"] is None
    assert not cluster.records("pickled") and beat.alive() and worker.alive()
