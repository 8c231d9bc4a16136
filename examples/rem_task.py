#!/usr/bin/env python
"""Remove the task ``sub-perminute`` added by add_task.py; beat stops sending it."""

from __future__ import annotations

from tasks import app

from beatsqlalchemy.schedulers import DatabaseScheduler

if __name__ == "__main__":
    schduler = DatabaseScheduler(app=app)
    removed = schduler.remove("sub-perminute")
    print("removed sub-perminute" if removed else "there was no sub-perminute to remove")
