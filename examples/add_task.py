#!/usr/bin/env python
"""Add the task ``sub-perminute`` (tasks.sub every 3 seconds) while beat runs."""

from __future__ import annotations

from datetime import timedelta

from tasks import app

from beatsqlalchemy.schedulers import DatabaseScheduler

if __name__ == "__main__":
    schduler = DatabaseScheduler(app=app)
    schduler.add(**{
        "name": "sub-perminute",
        "task": "tasks.sub",
        "schedule": timedelta(seconds=3),
        "args": (1, 1),
    })
    print("added sub-perminute")
