"""The run id beat derives for a stored task row, computed the way a test can see it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select

from beatsqlalchemy.models import Deployment
from beatsqlalchemy.runids import run_task_id
from beatsqlalchemy.store import TASKS


def task_id_of(engine: Engine, task_pk: int, slot: datetime) -> str:
    """The Celery task id of the run of row ``task_pk`` for ``slot``: from the database's
    deployment id and the row's run key, read with plain queries."""
    with engine.connect() as connection:
        deployment = connection.execute(select(Deployment.id)).scalar_one()
        key = connection.execute(select(TASKS.c.run_key).where(TASKS.c.id == task_pk)).scalar_one()
    return run_task_id(deployment, task_pk, key, slot)
