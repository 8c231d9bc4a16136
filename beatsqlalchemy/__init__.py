"""A Celery beat scheduler that keeps periodic tasks and their run state in SQL."""

from __future__ import annotations

from .config import hide_urls_in_celery_reports

# imported by every ``celery`` command (our ``celery beatsqlalchemy`` plug-in) and by beat
hide_urls_in_celery_reports()

__version__ = "1.0.0"
__all__ = ["__version__"]
