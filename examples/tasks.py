"""The example Celery app: three small tasks and a beat schedule kept in SQL.

Run it with no server at all (a filesystem broker and the SQLite default)::

    cd examples
    celery -A tasks worker -l INFO
    celery -A tasks beat -S beatsqlalchemy -l INFO

``BROKER_URL`` and ``BEAT_SQLALCHEMY_URL`` in the environment point it elsewhere, e.g.
``BROKER_URL=redis://127.0.0.1:6379/0`` and
``BEAT_SQLALCHEMY_URL=postgresql+psycopg://postgres@127.0.0.1/beat``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery

HERE = Path(__file__).resolve().parent
#: where the filesystem broker keeps its messages (``EXAMPLE_DATA_DIR`` overrides it)
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR") or HERE / ".data")
BROKER_URL = os.environ.get("BROKER_URL", "filesystem://")


def filesystem_transport_options(data_dir: Path) -> dict[str, Any]:
    """Transport options of kombu's filesystem broker: one folder for messages
    (written by beat, read by the worker) and one for its exchange tables."""
    messages = data_dir / "broker" / "messages"
    control = data_dir / "broker" / "control"
    for folder in (messages, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(messages),
        "data_folder_out": str(messages),
        "control_folder": str(control),
        "store_processed": False,
        "polling_interval": 0.2,
    }


app = Celery("tasks", broker=BROKER_URL)
app.conf.update(
    beat_sqlalchemy_url=os.environ.get("BEAT_SQLALCHEMY_URL", "sqlite:///celerybeat-schedule.sqlite3"),
    beat_schedule={
        "add-every-5-seconds": {
            "task": "tasks.add",
            "schedule": timedelta(seconds=5),
            "args": (16, 16),
        },
    },
    broker_connection_retry_on_startup=True,
    timezone="UTC",
)
if BROKER_URL.startswith("filesystem:"):
    app.conf.broker_transport_options = filesystem_transport_options(DATA_DIR)


@app.task
def add(x: int, y: int) -> int:
    """x + y"""
    return x + y


@app.task
def sub(x: int, y: int) -> int:
    """x - y"""
    return x - y


@app.task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return what it was called with."""
    return {"args": list(args), "kwargs": kwargs}
