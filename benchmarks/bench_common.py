"""What the benchmark scripts share, without SQLAlchemy: a child process of
``bench_alternatives.py`` holds in memory only what the scheduler it measures imports."""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

#: the line prefix a child process prints its JSON result after (read by both parents)
RESULT_MARK = "BENCH-RESULT "
BACKEND_ALIASES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql",
                   "pg": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
#: the tasks are due between now + OFFSET and now + OFFSET + SPREAD: nothing is due
#: (or inside beat's 10 s window) while the benchmark runs
OFFSET = timedelta(hours=1)
SPREAD = timedelta(days=1)
#: the interval the change test switches a task to (not among the random ones)
PROBE_EVERY = (5, "seconds")
#: the tasks the change test edits, through the API and through plain SQL
CHANGE_TASKS = {"api": "bench.task.0000001", "sql": "bench.task.0000002"}
INTERVALS = [(1, "minutes"), (2, "minutes"), (5, "minutes"), (10, "minutes"), (15, "minutes"),
             (30, "minutes"), (1, "hours"), (2, "hours"), (3, "hours"), (6, "hours"),
             (12, "hours"), (1, "days")]


def proc_status_mb(key: str, pid: int | str = "self") -> float | None:
    """A memory line of /proc/<pid>/status (VmHWM, VmRSS) in MB, of this process by
    default; None off Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def peak_rss_mb() -> float:
    """Peak RSS of this process image.

    ``ru_maxrss`` of a child started by a larger parent reports the parent's peak
    too (Linux keeps the maximum across ``exec``), so where /proc is available its
    ``VmHWM`` (the same high-water mark, for this image only) is used instead.
    """
    hwm = proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def crontab_rows() -> list[dict[str, str]]:
    """A few hundred distinct, realistic crontabs in four timezones."""
    rows = []
    for minute in ("0", "5", "15", "30", "45", "*/5", "*/15"):
        for hour in ("*", "0", "3", "9", "12", "18", "9-17", "*/2"):
            for day_of_week in ("*", "1-5"):
                for tz in ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"):
                    rows.append({"minute": minute, "hour": hour, "day_of_week": day_of_week,
                                 "day_of_month": "*", "month_of_year": "*", "timezone": tz})
    return rows


def spawn_writer(script: Path, config: dict[str, Any]) -> subprocess.Popen[str]:
    """``script --writer CONFIG`` in another process; returns once it said it is ready."""
    writer = subprocess.Popen(
        [sys.executable, str(script), "--writer", json.dumps(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout is not None
    ready = writer.stdout.readline().strip()
    if ready != "READY":
        raise RuntimeError(f"writer did not start: {ready!r}")
    return writer


def parse_sizes(value: str) -> list[int]:
    """``1000,10k,1m`` -> [1000, 10000, 1000000]."""
    sizes = []
    for part in value.split(","):
        part = part.strip().lower()
        if part:
            scale = {"k": 1000, "m": 1_000_000}.get(part[-1], 1)
            sizes.append(int(float(part.rstrip("km")) * scale))
    return sizes


def parse_backends(value: str) -> list[str]:
    try:
        return [BACKEND_ALIASES[b.strip().lower()] for b in value.split(",") if b.strip()]
    except KeyError as exc:
        raise argparse.ArgumentTypeError(f"unknown backend {exc}; use sqlite, postgresql, mysql") from exc
