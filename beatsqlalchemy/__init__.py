"""A Celery beat scheduler that keeps periodic tasks and their run state in SQL."""

from __future__ import annotations

__version__ = "1.0.0"
__all__ = ["__version__"]
