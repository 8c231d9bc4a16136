"""Internal. Names and limits shared across the layers (tables, api, store, beat, worker,
broker): a leaf module, importing nothing of the package."""

from __future__ import annotations

SCHEDULE_KINDS = ("interval", "crontab", "solar", "clocked")
NAME_LENGTH = 200
#: what a task does with runs it missed (beat down, database out): see ``schedules.on_time``
MISFIRE_POLICIES = ("catch_up", "skip")
#: the longest description, in bytes: a TEXT column on MySQL/MariaDB
DESCRIPTION_BYTES = 65_535
#: deepest nesting of arrays and objects accepted in a JSON field
JSON_DEPTH = 100
#: ``source`` of tasks installed from the app's ``beat_schedule``
CONFIG_SOURCE = "config"
#: ``source`` of tasks created in the database (the column holds NULL)
DATABASE_SOURCE = "database"

#: the states of a run in ``celery_periodic_task_run``: claimed by beat, then sent to the
#: broker; abandoned (claimed by a beat that died before sending) or skipped (a misfire
#: the task's policy did not send)
CLAIMED, SENT, ABANDONED, SKIPPED = "claimed", "sent", "abandoned", "skipped"

#: the header beat puts on every run it publishes (``RunOnceTask`` checks only those)
BEAT_HEADER = "celery_beat_task"

#: the longest outage reason a beat's heartbeat row keeps (``beatsqlalchemy_beat``)
OUTAGE_REASON_LENGTH = 255
#: beats whose heartbeat has not been seen for this long (seconds) are deleted by the others
BEAT_RETENTION = 86_400.0
#: what happened to a beat run on the worker (``celery_periodic_task_run.outcome``): started
#: and not finished yet, or how it ended (``beatsqlalchemy.outcomes`` records them)
STARTED, SUCCEEDED, FAILED, RETRIED = "started", "succeeded", "failed", "retried"
REVOKED, EXPIRED, REJECTED, IGNORED, UNKNOWN = "revoked", "expired", "rejected", "ignored", "unknown"
#: outcomes that end a run badly (they count in ``consecutive_failures``)
FAILURES = (FAILED, REJECTED, UNKNOWN)
#: the longest error kept for a run: exception type and first line of its message
ERROR_LENGTH = 500
#: the task columns the workers write (outcomes); writers through the api are refused
OUTCOME_COLUMNS = ("last_outcome", "last_outcome_at", "last_success_at", "consecutive_failures")
#: ``request`` attribute: the outcome tracker's verdict on whether this is the first start
#: of the run (``RunOnceTask`` uses it instead of writing the start a second time)
FIRST_START = "beatsqlalchemy_first_start"
