"""RunOnceTask's decisions that need no broker: which deliveries it checks, and what it does
when the database cannot answer (the end-to-end tests run it on a real worker)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from beatsqlalchemy.db import get_engine
from beatsqlalchemy.worker import first_start, is_first_delivery


def request(**fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {"celery_beat_task": True, "headers": None, "retries": 0, "delivery_info": {}}
    return SimpleNamespace(**{**base, **fields})


def test_only_first_deliveries_of_beat_runs_are_checked() -> None:
    assert is_first_delivery(request())
    assert is_first_delivery(request(celery_beat_task=None, headers={"celery_beat_task": True}))
    assert not is_first_delivery(request(celery_beat_task=None))  # called from elsewhere
    assert not is_first_delivery(request(retries=1))  # a retry reuses the task id
    assert not is_first_delivery(request(delivery_info={"redelivered": True}))  # worker lost mid-run


def test_a_database_that_cannot_answer_lets_the_run_go_ahead(caplog: pytest.LogCaptureFixture) -> None:
    engine = get_engine("postgresql+psycopg://beat:secret@127.0.0.1:1/nowhere")
    caplog.set_level(logging.WARNING, logger="beatsqlalchemy")
    assert first_start(engine, "00000000-0000-5000-8000-000000000000", "worker-1") is True
    [line] = [r.getMessage() for r in caplog.records]
    assert "could not check whether run 00000000-0000-5000-8000-000000000000 started" in line
    assert "secret" not in line
