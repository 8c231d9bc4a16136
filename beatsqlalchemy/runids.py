"""Run ids: the Celery task id of each run, unique per deployment and per task row, for ever.

A run id is a uuid5 of the deployment id (a random id created with the schedule database,
the one row of ``beatsqlalchemy_deployment``), the task row's id, the row's own random
``run_key`` (created with the row) and the slot. Every beat of one deployment derives the
same id for the same run, so the broker can refuse a second copy; two deployments sharing a
broker, or a task re-created under a reused row id, never derive the same one.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, String, column, select, table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from . import schedules as sched
from .exceptions import DeploymentIdMissing

NAMESPACE = uuid.UUID("6f2b8f52-3c4e-5b7a-9d1e-2a7c0e5b4f10")
DEPLOYMENT_TABLE = "beatsqlalchemy_deployment"
#: the length of a deployment id and of a row's run key: 32 hex digits
KEY_LENGTH = 32

_DEPLOYMENT = table(DEPLOYMENT_TABLE, column("id"))
_READ = select(_DEPLOYMENT.c.id).limit(2)
#: the deployment id of each engine's database, read once (weak: a freed engine's slot is reused)
_known: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def new_key() -> str:
    """A random key of 32 hex digits (a row's run key, a deployment id)."""
    return uuid.uuid4().hex


class random_key(FunctionElement[str]):
    """SQL giving a new random key of 32 hex digits, evaluated per row: the server default
    of ``run_key``, so that rows inserted with plain SQL get one too."""

    type = String(KEY_LENGTH)
    name = "random_key"
    inherit_cache = True


@compiles(random_key)
def _random_key_sqlite(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "lower(hex(randomblob(16)))"


@compiles(random_key, "postgresql")
def _random_key_postgresql(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "replace(CAST(gen_random_uuid() AS VARCHAR), '-', '')"


@compiles(random_key, "mysql", "mariadb")
def _random_key_mysql(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "replace(uuid(), '-', '')"


def run_task_id(deployment: str, task_pk: int, run_key: str, slot: datetime) -> str:
    """The Celery task id of the run of the task row ``task_pk`` (whose run key is
    ``run_key``) for ``slot``: the same wherever and however often it is sent."""
    slot_text = sched.as_utc(slot).isoformat()
    return str(uuid.uuid5(NAMESPACE, f"{deployment}/{task_pk}/{run_key}@{slot_text}"))


def deployment_id(connection: Connection) -> str:
    """The deployment id of the database ``connection`` is on, read on the first call for
    its engine only. Raises DeploymentIdMissing when the table does not hold exactly one."""
    engine = connection.engine
    with _lock:
        known = _known.get(engine)
    if known is not None:
        return known
    ids = list(connection.scalars(_READ))
    if len(ids) != 1 or not isinstance(ids[0], str) or not ids[0].strip():
        raise DeploymentIdMissing(DEPLOYMENT_TABLE, len(ids) if len(ids) != 1 else -1)
    with _lock:
        _known[engine] = ids[0]
    return ids[0]


def forget(engine: Engine) -> None:
    """Read the deployment id again next time (the schema was migrated)."""
    with _lock:
        _known.pop(engine, None)
