"""A Celery beat scheduler that keeps periodic tasks and their run state in SQL.

The public surface: the tables (``beatsqlalchemy.models``), the write and read api
(``beatsqlalchemy.api``), the errors (``beatsqlalchemy.exceptions``), beat's scheduler
(``beatsqlalchemy.schedulers.DatabaseScheduler``, loaded by Celery by its path) and the
worker's base task (``beatsqlalchemy.worker.RunOnceTask``). Importing the package imports
``api``, which registers the write core that ``PeriodicTask.update_or_create`` uses, and
``outcomes``, which connects the workers' receivers of Celery's task signals (they record run
outcomes only when the worker's app sets ``beat_sqlalchemy_track_outcomes``).
"""

from __future__ import annotations

from .config import hide_urls_in_celery_reports

# imported by every ``celery`` command (our ``celery beatsqlalchemy`` plug-in) and by beat
hide_urls_in_celery_reports()

# api registers the write core; outcomes connects the workers' receivers (off unless configured)
from . import api, outcomes  # noqa: E402,F401
from .exceptions import (  # noqa: E402
    BeatSQLAlchemyError,
    DeploymentIdMissing,
    MissingPackage,
    PendingChanges,
    SchemaNotReady,
    TaskNotFound,
    ValidationError,
)
from .models import (  # noqa: E402
    Base,
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTaskRun,
    SolarSchedule,
    get_session,
)

__version__ = "1.0.0"
__all__ = [
    "Base",
    "BeatSQLAlchemyError",
    "ClockedSchedule",
    "CrontabSchedule",
    "DeploymentIdMissing",
    "IntervalSchedule",
    "MissingPackage",
    "PendingChanges",
    "PeriodicTask",
    "PeriodicTaskRun",
    "SchemaNotReady",
    "SolarSchedule",
    "TaskNotFound",
    "ValidationError",
    "__version__",
    "api",
    "get_session",
]
