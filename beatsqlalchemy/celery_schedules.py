"""Internal. The Celery schedule classes our rows turn into, beside Celery's own
``schedule`` and ``solar``: a crontab in a timezone of its own, and a one-off moment."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from celery.schedules import BaseSchedule
from celery.schedules import crontab as celery_crontab

from . import schedules as sched


class ZonedCrontab(celery_crontab):
    """Celery's crontab, evaluated in a timezone of its own instead of the app's."""

    def __init__(self, *args: Any, tz_name: str = "UTC", **kwargs: Any) -> None:
        self.tz_name = tz_name
        super().__init__(*args, **kwargs)

    @property
    def tz(self) -> Any:  # type: ignore[override]
        return sched.zone(self.tz_name)

    def now(self) -> datetime:
        return datetime.now(self.tz)

    def __reduce__(self) -> Any:
        return (
            self.__class__,
            (self._orig_minute, self._orig_hour, self._orig_day_of_week,
             self._orig_day_of_month, self._orig_month_of_year),
            {"tz_name": self.tz_name},
        )



class ClockedCelerySchedule(BaseSchedule):
    """A Celery schedule that is due once, at a fixed moment."""

    def __init__(self, clocked_time: datetime) -> None:
        self.clocked_time = sched.as_utc(clocked_time)
        super().__init__()

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self.clocked_time - sched.utcnow()

    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        return (remaining <= 0, max(remaining, 0.0) or 3600.0)

    def __repr__(self) -> str:
        return f"<clocked: {self.clocked_time.isoformat()}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClockedCelerySchedule) and other.clocked_time == self.clocked_time

    def __hash__(self) -> int:
        return hash(self.clocked_time)
