"""Whether a status is healthy: the thresholds of ``beatsqlalchemy health`` and of the web
console's ``GET /health`` (one judgement serves both), the problems they find as lines, and
a status as JSON values."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .exceptions import ValidationError
from .health import BeatInfo, Capped, Status, seconds
from .schedules import as_utc

#: the thresholds a query string may set (``GET /health?min_beats=2``), besides ``this_beat``
COUNT_FIELDS = ("min_beats", "max_overdue", "max_unconfirmed", "max_broken", "max_failing")


@dataclass(frozen=True)
class Thresholds:
    """What makes a status unhealthy. A ``max_*`` of None is not checked; ``this_beat`` (an
    identity) must be alive; ``beat_only`` checks only the beats asked for (a liveness
    probe: an overdue task should not restart every beat)."""

    min_beats: int = 1
    max_overdue: int | None = 0
    max_unconfirmed: int | None = 0
    max_broken: int | None = None
    max_failing: int | None = None
    this_beat: str | None = None
    beat_only: bool = False

    def __post_init__(self) -> None:
        for name in COUNT_FIELDS:
            value = getattr(self, name)
            if value is None and name != "min_beats":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(name, value, "must be a whole number, zero or more")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Thresholds:
        """Thresholds from a query string's values (the defaults where absent)."""
        given: dict[str, Any] = {}
        for name in COUNT_FIELDS:
            text = query.get(name)
            if text is not None:
                try:
                    given[name] = int(text)
                except ValueError:
                    raise ValidationError(name, text, "must be a whole number, zero or more") from None
        if query.get("this_beat"):
            given["this_beat"] = query["this_beat"]
        return cls(**given)


def status_options(query: Mapping[str, str]) -> dict[str, float]:
    """``max_age`` and ``grace`` (seconds) from a query string's values, where given."""
    found: dict[str, float] = {}
    for name in ("max_age", "grace"):
        text = query.get(name)
        if text is not None:
            try:
                found[name] = seconds(name, float(text))
            except ValueError:
                raise ValidationError(name, text, "must be a number of seconds, zero or more") from None
    return found


def overdue_label(status: Status) -> str:
    return f"overdue (enabled, due more than {status.grace:g}s ago)"


def unconfirmed_label(status: Status) -> str:
    return f"unconfirmed claims (older than {status.claim_timeout:g}s)"


BROKEN_LABEL = "broken (enabled, cannot be scheduled)"
FAILING_LABEL = "failing (their latest run failed)"


def finding(label: str, capped: Capped) -> str:
    """``label: count: 'first', 'second', ...``"""
    names = ", ".join(repr(n) for n in capped.names)
    shown = f": {names}{', ...' if capped.count > len(capped.names) else ''}" if capped.names else ""
    return f"{label}: {capped}{shown}"


def when(moment: datetime) -> str:
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


def ago(status: Status, moment: datetime | None) -> str:
    """``2026-01-01 10:00:00 (12s ago)``"""
    if not isinstance(moment, datetime):
        return "-"
    return f"{when(moment)} ({max((status.checked_at - moment).total_seconds(), 0):.0f}s ago)"


def problems(status: Status, thresholds: Thresholds,
             wanted: Iterable[tuple[str, BeatInfo | None]] = ()) -> list[str]:
    """One line per problem, none when healthy: too few beats alive; too many tasks overdue,
    claims unconfirmed, tasks broken or failing; a beat asked for (``this_beat``, or
    ``wanted``: a label and the beat found, if any) not alive; a beat alive in an outage."""
    found = [] if thresholds.beat_only else _schedule_problems(status, thresholds)
    return found + _beat_problems(status, thresholds, list(wanted))


def _schedule_problems(status: Status, thresholds: Thresholds) -> list[str]:
    found: list[str] = []
    if len(status.alive) < thresholds.min_beats:
        found.append(f"beats: {len(status.alive)} alive, at least {thresholds.min_beats} wanted (alive: a "
                     f"heartbeat within {status.max_age:g}s; {len(status.gone)} gone)")
    for label, capped, most in (
        (overdue_label(status), status.overdue, thresholds.max_overdue),
        (unconfirmed_label(status), status.unconfirmed, thresholds.max_unconfirmed),
        (BROKEN_LABEL, status.broken, thresholds.max_broken),
        (FAILING_LABEL, status.failing, thresholds.max_failing),
    ):
        if most is not None and (capped.more or capped.count > most):
            found.append(f"{finding(label, capped)} (more than {most})")
    return found


def _beat_problems(status: Status, thresholds: Thresholds,
                   wanted: list[tuple[str, BeatInfo | None]]) -> list[str]:
    found: list[str] = []
    if thresholds.this_beat is not None:
        wanted.insert(0, (f"beat {thresholds.this_beat}",
                          next((b for b in status.beats if b.identity == thresholds.this_beat), None)))
    for label, beat in wanted:
        if beat is None:
            found.append(f"{label}: no heartbeat recorded")
        elif not beat.alive:
            found.append(f"{label}: last seen {beat.age:.0f}s ago (more than {status.max_age:g}s)")
    checked = [b for _, b in wanted if b is not None] if thresholds.beat_only else status.alive
    for beat in checked:
        if beat.alive and beat.in_outage:
            found.append(f"beat {beat.identity}: database outage since {ago(status, beat.outage_since)}: "
                         f"{beat.outage_reason}")
    return found


def status_to_dict(status: Status) -> dict[str, Any]:
    """A status as JSON values (times in ISO 8601; each beat's ``state``: alive or gone)."""
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    data: dict[str, Any] = plain(dataclasses.asdict(status))
    for beat in data["beats"]:
        beat["state"] = "alive" if beat.pop("alive") else "gone"
    return data
