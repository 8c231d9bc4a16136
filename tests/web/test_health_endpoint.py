"""``GET /health`` of a real ``celery -A webapp beatsqlalchemy web`` process, on SQLite and
on PostgreSQL: the health token or a session, 200 with a real beat alive, 503 soon after it
is killed -9, and the same problems as the ``health`` command."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from beatsqlalchemy.cli import main
from harness.processes import wait_for

from .conftest import HEARTBEAT, Console, beat_of, cluster_of

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("_console_logs")]
expect = pytest.importorskip("playwright.sync_api").expect

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
