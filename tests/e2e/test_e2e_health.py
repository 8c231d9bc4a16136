"""``status`` and ``health`` against real ``celery beat`` processes, and the metrics a
running beat serves over HTTP, on every backend and the real Redis broker."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from beatsqlalchemy import api, db
from harness.http import free_port, sample
from harness.http import scrape as scrape_metrics
from harness.processes import Cluster, wait_for
from harness.proxy import Proxy

pytestmark = pytest.mark.e2e

#: heartbeats every half second; a beat is gone when unseen for MAX_AGE seconds
HEARTBEAT = 0.5
MAX_AGE = 3.0
#: what one command costs beyond its work: starting Python, Celery and the app
STARTUP = 5.0
TOKEN = "e2e-metrics-token"
BIN = Path(sys.executable).parent


def configure(cluster: Cluster, **settings: Any) -> None:
    cluster.env["E2E_CONF"] = json.dumps({"beat_sqlalchemy_heartbeat_interval": HEARTBEAT, **settings})


def command(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``celery -A e2eapp beatsqlalchemy ARGS`` as an operator (or a probe) runs it."""
    return subprocess.run([str(BIN / "celery"), "-A", "e2eapp", "beatsqlalchemy", *args], cwd=cluster.root,
                          env=cluster.env, capture_output=True, text=True, timeout=60)


def health(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return command(cluster, "health", "--max-age", str(MAX_AGE), *args)


def exits(code: int, run: Callable[[], subprocess.CompletedProcess[str]]) -> Callable[[], Any]:
    """For ``wait_for``: ``run``'s result once it exits with ``code``."""
    return lambda: (lambda done: done if done.returncode == code else None)(run())


def status(cluster: Cluster) -> dict[str, Any]:
    done = command(cluster, "status", "--json", "--max-age", str(MAX_AGE))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def beats_by_pid(found: dict[str, Any]) -> dict[int, str]:
    return {beat["pid"]: beat["state"] for beat in found["beats"]}


def test_health_is_0_with_a_beat_running_and_1_within_max_age_after_kill_9(cluster: Cluster) -> None:
    configure(cluster)
    beat = cluster.beat()
    pid_file = str(cluster.root / "beat-1.pid")
    wait_for(lambda: health(cluster, "--pid-file", pid_file).returncode == 0, 15, "health to exit 0")
    ok = health(cluster, "--pid-file", pid_file)
    assert ok.returncode == 0 and ok.stdout.startswith("healthy: 1 beat(s) alive"), ok.stdout + ok.stderr
    assert health(cluster, "--pid-file", pid_file, "--beat-only").returncode == 0
    beat.kill9()
    killed = time.monotonic()
    failed = wait_for(exits(1, lambda: health(cluster, "--pid-file", pid_file)),
                      MAX_AGE + HEARTBEAT + STARTUP, "health to exit 1")
    assert time.monotonic() - killed <= MAX_AGE + HEARTBEAT + STARTUP
    lines = failed.stdout.splitlines()
    assert any(line.startswith("beats: 0 alive, at least 1 wanted") for line in lines), lines
    assert any(f"beat of {pid_file}" in line and "last seen" in line for line in lines), lines
    assert "Traceback" not in failed.stdout + failed.stderr
    probe = health(cluster, "--pid-file", pid_file, "--beat-only")  # this beat only: one line
    assert probe.returncode == 1 and len(probe.stdout.splitlines()) == 1, probe.stdout
    assert probe.stdout.startswith(f"beat of {pid_file}"), probe.stdout
    usage = health(cluster, "--beat-only")
    assert usage.returncode == 2, usage.stderr
    assert "beat-only: needs --this-beat or --pid-file" in usage.stderr, usage.stderr


def test_health_is_1_while_an_enabled_task_is_overdue(cluster: Cluster, db_url: str) -> None:
    configure(cluster)
    with db.session_factory(db.get_engine(db_url))() as session:
        api.save_task(session, "every-second", task="e2e.record", schedule=1.0, args=["every-second"])
    # no beat: the task falls more than the grace behind
    overdue = wait_for(exits(1, lambda: health(cluster, "--min-beats", "0", "--grace", "1")), 15,
                       "health to see the overdue task")
    assert overdue.stdout.splitlines() == [
        "overdue (enabled, due more than 1s ago): 1: 'every-second' (more than 0)"], overdue.stdout
    cluster.beat()  # catches up: nothing overdue, one beat alive
    wait_for(lambda: health(cluster, "--grace", "1").returncode == 0, 20, "health to exit 0 again")


def test_status_lists_two_running_beats_and_marks_one_gone_after_it_is_killed(cluster: Cluster) -> None:
    configure(cluster)
    first, second = cluster.beat(), cluster.beat()
    pids = {first.pid, second.pid}
    wait_for(lambda: {p for p, s in beats_by_pid(status(cluster)).items() if s == "alive"} == pids, 15,
             "status to list both beats alive")
    found = status(cluster)
    assert {b["host"] for b in found["beats"]} == {socket.gethostname()}
    assert all(b["version"] and b["identity"].count(":") == 2 for b in found["beats"])
    first.kill9()
    wait_for(lambda: beats_by_pid(status(cluster)) == {first.pid: "gone", second.pid: "alive"},
             MAX_AGE + HEARTBEAT + STARTUP * 2, "status to mark the killed beat gone")
    text = command(cluster, "status", "--max-age", str(MAX_AGE)).stdout
    assert re.search(rf"^  gone .* pid {first.pid} ", text, re.MULTILINE), text
    assert re.search(rf"^  alive .* pid {second.pid} ", text, re.MULTILINE), text


def scrape(port: int, token: str | None = TOKEN) -> tuple[int, str]:
    return scrape_metrics(port, token)



def test_a_running_beat_serves_metrics_with_its_token(cluster: Cluster, db_url: str) -> None:
    port = free_port()
    configure(cluster, beat_sqlalchemy_metrics_port=port, beat_sqlalchemy_metrics_token=TOKEN)
    with db.session_factory(db.get_engine(db_url))() as session:
        api.save_task(session, "every-second", task="e2e.record", schedule=1.0, args=["every-second"])
    beat = cluster.beat()
    beat.wait_log(r"metrics served on http://127\.0\.0\.1:\d+/metrics")
    assert scrape(port, None)[0] == 401
    assert scrape(port, "not-the-token")[0] == 401
    sent = wait_for(lambda: (lambda b: b if sample(b, "beatsqlalchemy_runs_sent_total") >= 2 else None)(
        scrape(port)[1]), 15, "two runs sent")
    first = sample(sent, "beatsqlalchemy_runs_sent_total")
    later = wait_for(lambda: (lambda b: b if sample(b, "beatsqlalchemy_runs_sent_total") > first else None)(
        scrape(port)[1]), 10, "the counter to move")
    total = sample(later, "beatsqlalchemy_runs_sent_total")
    assert sample(later, "beatsqlalchemy_run_lateness_seconds_count") == total
    assert sample(later, 'beatsqlalchemy_run_lateness_seconds_bucket{le="+Inf"}') == total
    assert sample(later, 'beatsqlalchemy_run_lateness_seconds_bucket{le="5.0"}') == total  # none late
    assert sample(later, "beatsqlalchemy_beat_up") == 1
    assert "every-second" not in later


def test_beat_with_a_metrics_port_and_no_token_refuses_to_start(cluster: Cluster) -> None:
    configure(cluster, beat_sqlalchemy_metrics_port=free_port())
    beat = cluster.beat(wait=False)
    assert beat.wait_exit(30) != 0
    log = beat.log()
    assert ("beat_sqlalchemy_metrics_token: invalid value None: required when beat_sqlalchemy_metrics_port"
            in log), log
    assert "Traceback" not in log, log


def test_health_fails_in_one_line_within_the_timeout_when_the_database_does_not_answer(
    cluster: Cluster, db_url: str, backend: str,
) -> None:
    if backend == "sqlite":
        pytest.skip("a SQLite file has no server to stop answering")
    parsed = make_url(db_url)
    with Proxy(parsed.port or {"postgresql": 5432}.get(backend, 3306), parsed.host or "127.0.0.1") as proxy:
        proxy.partition()
        started = time.monotonic()
        done = subprocess.run(
            [str(BIN / "beatsqlalchemy"), "--url", proxy.url(db_url), "health", "--timeout", "2"],
            capture_output=True, text=True, timeout=60, cwd=cluster.root,
        )
        took = time.monotonic() - started
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1 and len(output.splitlines()) == 1, output
    assert "database" in output and "Traceback" not in output, output
    assert took < 2 + STARTUP, took
    if parsed.password:
        assert parsed.password not in output
