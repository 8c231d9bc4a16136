"""Celery configuration read with ``app.config_from_object('settings')`` (see addtask.py).

``BEAT_SQLAlchemy_URL`` is the spelling of the original beatsqlalchemy; ``beat_sqlalchemy_url``
works the same. ``BEAT_SQLALCHEMY_URL`` in the environment picks the database.
"""

from __future__ import annotations

import os

BEAT_SQLAlchemy_URL = os.environ.get("BEAT_SQLALCHEMY_URL", "sqlite:///celerybeat-schedule.sqlite3")
