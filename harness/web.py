"""A real ``celery -A webapp beatsqlalchemy web`` process for the web console's tests and
benchmark: a small Celery app module configured from the environment (database, broker,
users, secret, one ``beat_schedule`` entry), served on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from harness.processes import START_TIMEOUT, CeleryProcess, Processes, app_module, wait_for
from harness.proxy import _free_port

USER, PASSWORD = "admin", "correct horse battery staple"
#: the task the app's ``beat_schedule`` defines (source "config")
CONFIG_TASK = "config-owned-report"
#: its ``beat_schedule``: one task, with a queue
CONFIG_ENTRY = {"task": "reports.build", "schedule": 3600.0, "args": [1, 2], "options": {"queue": "reports"}}
WEB_APP_MODULE = app_module(
    "The Celery app the web console's tests serve.", "WEB", imports=("json",), settings=(
        '    beat_sqlalchemy_web_users=json.loads(os.environ["WEB_USERS"]),\n'
        '    beat_sqlalchemy_web_secret=os.environ["WEB_SECRET"],\n'
        '    beat_sqlalchemy_web_health_token=os.environ["WEB_HEALTH_TOKEN"],\n'
        f"    beat_schedule={{{CONFIG_TASK!r}: {CONFIG_ENTRY!r}}},\n"
    ))


class ConsoleServer(Processes):
    """The console on ``db_url`` (run-now through ``broker_url``), logged in as USER."""

    def __init__(self, root: Path, db_url: str, broker_url: str, password_hash: str) -> None:
        super().__init__(root)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        #: the bearer token of ``GET /health`` (beat_sqlalchemy_web_health_token)
        self.health_token = os.urandom(16).hex()
        (root / "webapp.py").write_text(WEB_APP_MODULE, encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if k != "BEAT_SQLALCHEMY_URL"}
        self.env.update(
            WEB_BROKER_URL=broker_url, WEB_DB_URL=db_url, WEB_QUEUE="web-default", WEB_SYNC_INTERVAL="0.5",
            WEB_USERS=json.dumps({USER: password_hash}), WEB_SECRET=os.urandom(24).hex(),
            WEB_HEALTH_TOKEN=self.health_token,
            PYTHONUNBUFFERED="1",
        )

    def serve(self) -> CeleryProcess:
        """Start the console and wait until it answers."""
        process = self.start("web", ["-A", "webapp", "beatsqlalchemy", "web", "--port", str(self.port)],
                             self.root, self.env)
        process.wait_log(r"web console on http://127\.0\.0\.1")
        wait_for(lambda: self._answers(process), START_TIMEOUT, "the web console to answer")
        return process

    def _answers(self, process: CeleryProcess) -> bool:
        if not process.alive():
            raise AssertionError(f"the web console exited: {process.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
            return False
